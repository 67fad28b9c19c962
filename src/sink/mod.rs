//! Where finished frames go: a window, a video file, a frames folder, a JSON-lines log,
//! a drive recording.
//!
//! Every sink implements [`Sink`]. A sink is built on the thread that runs it (the
//! pipeline passes a factory), so sinks that hold non-`Send` handles (a minifb window) are
//! fine. `write` returns [`SinkControl::Quit`] when the user asks to stop (window closed,
//! `q`/Esc); `finish` flushes and closes files, and is called exactly once at the end.

pub mod frames;
pub mod jsonl;
pub mod record;
pub mod spec;
pub mod video;
pub mod window;

use image::RgbImage;

use crate::types::{DetectedFrame, HudStats};

pub use frames::FramesSink;
pub use jsonl::{JsonlRecord, JsonlSink};
pub use record::RecordSink;
pub use spec::{SinkContext, SinkFactory, SinkSpec};
pub use video::VideoSink;
pub use window::{display_available, WindowSink};

/// One frame as sinks see it.
#[derive(Debug, Clone, Copy)]
pub struct SinkFrame<'a> {
    pub detected: &'a DetectedFrame,
    /// The frame with boxes and labels drawn; `None` when no sink of the run needs pixels.
    pub annotated: Option<&'a RgbImage>,
    pub hud: &'a HudStats,
}

/// Whether the run goes on after a sink has taken a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkControl {
    Continue,
    /// The user asked to stop (window closed, `q` or Esc).
    Quit,
}

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: {message}")]
    Failed { sink: &'static str, message: String },
}

impl SinkError {
    pub fn failed(sink: &'static str, message: impl Into<String>) -> SinkError {
        SinkError::Failed {
            sink,
            message: message.into(),
        }
    }
}

impl SinkFrame<'_> {
    /// The annotated pixels, or an error saying that `sink` needs them: the pipeline must
    /// render whenever a window, video or frames sink is part of the run.
    pub fn require_annotated(&self, sink: &'static str) -> Result<&RgbImage, SinkError> {
        self.annotated.ok_or_else(|| {
            SinkError::failed(
                sink,
                format!(
                    "frame {} arrived without annotated pixels; the pipeline must render frames when a {sink} sink is in the run",
                    self.detected.frame.seq
                ),
            )
        })
    }
}

/// A destination for finished frames.
pub trait Sink {
    /// Short name for metrics and errors (`window`, `video`, `jsonl`, …).
    fn name(&self) -> &'static str;
    /// Takes one frame; may block (a paused window).
    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError>;
    /// Flushes and closes; the output is complete and valid afterwards.
    fn finish(&mut self) -> Result<(), SinkError>;
}
