//! Where finished frames go: a window, a video file, a frames folder, a JSON-lines log,
//! a track file, a drive recording; which of them a run writes to ([`SinkSpec`]); and their one error
//! type, [`SinkError`].
//!
//! Every sink implements [`Sink`]. A sink is built on the thread that runs it (the
//! pipeline passes a factory), so sinks that hold non-`Send` handles (a minifb window) are
//! fine. `write` returns [`SinkControl::Quit`] when the user asks to stop (window closed,
//! `q`/Esc); `finish` flushes and closes files, and is called exactly once at the end.

pub mod channels;
pub mod frames;
pub mod jsonl;
pub mod live;
pub mod mcap;
pub mod record;
pub mod spec;
pub mod tracks;
pub mod video;
pub mod window;

use std::cell::{Cell, Ref, RefCell};
use std::path::PathBuf;
use std::process::ExitStatus;

use image::RgbImage;

use crate::drive::DriveError;
use crate::types::{DetectedFrame, Frame, HudStats};

pub use frames::FramesSink;
pub use jsonl::{JsonlRecord, JsonlSink};
pub use live::LiveSink;
pub use mcap::McapSink;
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
    /// The source frame as JPEG, encoded on first use and shared by every sink that stores
    /// it (a JPEG drive, the MCAP file, the live server).
    pub jpeg: &'a SourceJpeg,
}

/// The source frame of the frame being written as JPEG, encoded at most once per frame
/// and quality however many sinks ask (`--record` and `--mcap` together encode once).
/// The buffer is reused between frames.
#[derive(Debug, Default)]
pub struct SourceJpeg {
    bytes: RefCell<Vec<u8>>,
    /// The frame (`seq`) and quality `bytes` holds.
    holds: Cell<Option<(u64, u8)>>,
}

impl SourceJpeg {
    /// The JPEG of `frame` at `quality`, encoded now unless it already is.
    pub fn get(&self, frame: &Frame, quality: u8) -> std::io::Result<Ref<'_, Vec<u8>>> {
        if self.holds.get() != Some((frame.seq, quality)) {
            self.holds.set(None);
            let mut bytes = self.bytes.borrow_mut();
            crate::imageio::encode_jpeg_into(
                frame.image.as_raw(),
                frame.width(),
                frame.height(),
                quality,
                &mut bytes,
            )?;
            self.holds.set(Some((frame.seq, quality)));
        }
        Ok(self.bytes.borrow())
    }
}

/// Whether the run goes on after a sink has taken a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SinkControl {
    Continue,
    /// The user asked to stop (window closed, `q` or Esc).
    Quit,
}

/// Why a sink could not take a frame, start or finish. Every message names the sink (it
/// starts with `{sink}:`), the file or program and what to do; the underlying error, where
/// there is one, is the [`std::error::Error::source`], which the CLI prints after it.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{sink}: cannot create {}; check that the folder exists and is writable", path.display())]
    Create {
        sink: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{sink}: writing {} failed; check the free space and permissions there", path.display())]
    Write {
        sink: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{sink}: cannot write {}: folder {} does not exist; create it or pick another path", path.display(), folder.display())]
    NoFolder {
        sink: &'static str,
        path: PathBuf,
        folder: PathBuf,
    },

    #[error("{sink}: encoding frame {seq} as {format} failed")]
    Encode {
        sink: &'static str,
        seq: u64,
        format: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{sink}: frame {seq}: its record does not serialise to JSON")]
    Serialise {
        sink: &'static str,
        seq: u64,
        #[source]
        source: serde_json::Error,
    },

    #[error("{sink}: frame {seq} arrived without annotated pixels; the pipeline must render frames when a {sink} sink is in the run")]
    NoPixels { sink: &'static str, seq: u64 },

    #[error("{sink}: write after finish: the {what} is already closed")]
    Closed {
        sink: &'static str,
        /// What was closed: `window`, `video`, `drive`.
        what: &'static str,
    },

    #[error("{sink}: frame size {width}x{height} must be positive")]
    BadSize {
        sink: &'static str,
        width: u32,
        height: u32,
    },

    #[error("{sink}: frame rate {fps} must be a positive number")]
    BadRate { sink: &'static str, fps: f64 },

    #[error("{sink}: frame {seq} is {width}x{height} but {} is being encoded at {expected_width}x{expected_height}; a video holds one frame size", path.display())]
    FrameSize {
        sink: &'static str,
        path: PathBuf,
        seq: u64,
        width: u32,
        height: u32,
        expected_width: u32,
        expected_height: u32,
    },

    #[error("{sink}: ffmpeg not found (looked for `{looked_for}`): install ffmpeg (apt-get install -y ffmpeg) or set LOOKOUT_FFMPEG to its path")]
    FfmpegMissing {
        sink: &'static str,
        looked_for: String,
    },

    #[error("{sink}: cannot start {}; install ffmpeg (apt-get install -y ffmpeg) or set LOOKOUT_FFMPEG to its path", program.display())]
    FfmpegStart {
        sink: &'static str,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// ffmpeg ended unsuccessfully; `stderr_tail` is its last lines (its own reason).
    #[error("{sink}: ffmpeg writing {} exited with {status} after {frames} frames: {stderr_tail}", path.display())]
    FfmpegExited {
        sink: &'static str,
        path: PathBuf,
        status: ExitStatus,
        frames: u64,
        stderr_tail: String,
    },

    #[error("{sink}: ffmpeg writing {} could not be waited for after {frames} frames", path.display())]
    FfmpegWait {
        sink: &'static str,
        path: PathBuf,
        frames: u64,
        #[source]
        source: std::io::Error,
    },

    #[error("{sink}: piping frames to ffmpeg for {} failed", path.display())]
    FfmpegPipe {
        sink: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{sink}: cannot open a window on display {display:?}; run without --show, or start an X server (e.g. Xvfb) and set DISPLAY")]
    WindowOpen {
        sink: &'static str,
        display: String,
        #[source]
        source: minifb::Error,
    },

    #[error("{sink}: lost the connection to X display {display:?} (the X server ended or the connection broke); the window is closed")]
    DisplayLost { sink: &'static str, display: String },

    #[error("{sink}: the window's thread ended unexpectedly")]
    WindowGone { sink: &'static str },

    #[error("{sink}: cannot draw the frame in the window")]
    WindowDraw {
        sink: &'static str,
        #[source]
        source: minifb::Error,
    },

    #[error("{sink}: recording into drive {} failed", dir.display())]
    Drive {
        sink: &'static str,
        dir: PathBuf,
        #[source]
        source: DriveError,
    },

    #[error("{sink}: calibration {} needs a plain UTF-8 file name other than drive.toml, index.csv or frames", path.display())]
    CalibrationName { sink: &'static str, path: PathBuf },

    #[error("{sink}: copying calibration {} into {} failed", from.display(), into.display())]
    CopyCalibration {
        sink: &'static str,
        from: PathBuf,
        into: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{sink}: writing {} failed; check the free space and permissions there (a file cut short still replays up to its last complete chunk)", path.display())]
    Mcap {
        sink: &'static str,
        path: PathBuf,
        #[source]
        source: ::mcap::McapError,
    },

    #[error("{sink}: the calibration does not fit the {width}x{height} frames")]
    Calibration {
        sink: &'static str,
        width: u32,
        height: u32,
        #[source]
        source: crate::calib::CalibError,
    },

    /// The track file (`--save-tracks`) could not be written; the source names it.
    #[error("tracks: writing the track file failed; check the free space and permissions there")]
    Tracks(#[from] crate::trackfile::TrackFileError),
}

impl SinkError {
    /// The sink the error is about (`window`, `video`, `frames`, `jsonl`, `record`, …).
    pub fn sink(&self) -> &'static str {
        match self {
            SinkError::Tracks(_) => "tracks",
            SinkError::Create { sink, .. }
            | SinkError::Write { sink, .. }
            | SinkError::NoFolder { sink, .. }
            | SinkError::Encode { sink, .. }
            | SinkError::Serialise { sink, .. }
            | SinkError::NoPixels { sink, .. }
            | SinkError::Closed { sink, .. }
            | SinkError::BadSize { sink, .. }
            | SinkError::BadRate { sink, .. }
            | SinkError::FrameSize { sink, .. }
            | SinkError::FfmpegMissing { sink, .. }
            | SinkError::FfmpegStart { sink, .. }
            | SinkError::FfmpegExited { sink, .. }
            | SinkError::FfmpegWait { sink, .. }
            | SinkError::FfmpegPipe { sink, .. }
            | SinkError::WindowOpen { sink, .. }
            | SinkError::WindowDraw { sink, .. }
            | SinkError::DisplayLost { sink, .. }
            | SinkError::WindowGone { sink, .. }
            | SinkError::Drive { sink, .. }
            | SinkError::CalibrationName { sink, .. }
            | SinkError::Mcap { sink, .. }
            | SinkError::Calibration { sink, .. }
            | SinkError::CopyCalibration { sink, .. } => sink,
        }
    }

    /// The message and every cause after it on one line (`a: b: c`), for the log lines of
    /// sinks that can only warn (a `Drop` that finishes a file).
    pub fn with_causes(&self) -> String {
        let mut text = self.to_string();
        let mut cause = std::error::Error::source(self);
        while let Some(e) = cause {
            text.push_str(": ");
            text.push_str(&e.to_string());
            cause = e.source();
        }
        text
    }
}

impl<'a> SinkFrame<'a> {
    /// The annotated pixels, or an error saying that `sink` needs them: the pipeline must
    /// render whenever a window, video or frames sink is part of the run.
    pub fn require_annotated(&self, sink: &'static str) -> Result<&RgbImage, SinkError> {
        self.annotated.ok_or(SinkError::NoPixels {
            sink,
            seq: self.detected.frame.seq,
        })
    }

    /// The source frame as JPEG at `quality` ([`SourceJpeg`]), for `sink`.
    pub fn source_jpeg(
        &self,
        sink: &'static str,
        quality: u8,
    ) -> Result<Ref<'a, Vec<u8>>, SinkError> {
        let frame = &self.detected.frame;
        self.jpeg
            .get(frame, quality)
            .map_err(|source| SinkError::Encode {
                sink,
                seq: frame.seq,
                format: "jpeg",
                source,
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
