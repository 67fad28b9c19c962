//! Which sinks a run writes to, as data ([`SinkSpec`]), and the factories that build them
//! on the sink thread (sinks need not be `Send`: a window is tied to its thread).

use std::path::{Path, PathBuf};

use super::{Sink, SinkError};
use crate::drive::{DriveManifest, FrameFileFormat};

/// What the sink thread knows when it builds the sinks: the first frame's size and the
/// source's nominal rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SinkContext {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

/// Builds one sink on the sink thread.
pub type SinkFactory = Box<dyn FnOnce(&SinkContext) -> Result<Box<dyn Sink>, SinkError> + Send>;

/// One output of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum SinkSpec {
    Window {
        title: String,
        /// The latency HUD shown at start (`h` toggles it).
        hud: bool,
    },
    Video {
        path: PathBuf,
        /// The latency HUD drawn into the video.
        hud: bool,
    },
    Frames {
        dir: PathBuf,
    },
    Jsonl {
        path: PathBuf,
    },
    /// Frames into a drive folder; `source` is the description stored in its manifest.
    Record {
        dir: PathBuf,
        source: String,
        frame_format: FrameFileFormat,
        /// A calibration file copied into the drive.
        calibration: Option<PathBuf>,
    },
}

impl SinkSpec {
    /// Whether the sink shows or stores the annotated picture (the render stage draws then).
    pub fn needs_pixels(&self) -> bool {
        matches!(
            self,
            SinkSpec::Window { .. } | SinkSpec::Video { .. } | SinkSpec::Frames { .. }
        )
    }

    /// A factory the pipeline calls on its sink thread.
    pub fn factory(self) -> SinkFactory {
        Box::new(move |ctx: &SinkContext| build(self, ctx))
    }
}

fn build(spec: SinkSpec, ctx: &SinkContext) -> Result<Box<dyn Sink>, SinkError> {
    use super::{frames::FramesSink, jsonl::JsonlSink, record::RecordSink};
    use super::{video::VideoSink, window::WindowSink};
    Ok(match spec {
        SinkSpec::Window { title, hud } => {
            Box::new(WindowSink::open(&title, ctx.width, ctx.height)?.with_hud(hud))
        }
        SinkSpec::Video { path, hud } => {
            Box::new(VideoSink::create(&path, ctx.width, ctx.height, ctx.fps)?.with_hud(hud))
        }
        SinkSpec::Frames { dir } => Box::new(FramesSink::create(&dir)?),
        SinkSpec::Jsonl { path } => Box::new(JsonlSink::create(&path)?),
        SinkSpec::Record {
            dir,
            source,
            frame_format,
            calibration,
        } => {
            let mut manifest =
                DriveManifest::new(&source, ctx.width, ctx.height, ctx.fps, frame_format);
            let calibration = match calibration {
                Some(path) => Some((calibration_file_name(&path)?, path)),
                None => None,
            };
            manifest.calibration = calibration.as_ref().map(|(name, _)| name.clone());
            let sink = RecordSink::create(&dir, manifest)?;
            // The folder is empty until `create`; the manifest already names the copy.
            if let Some((name, path)) = calibration {
                std::fs::copy(&path, dir.join(name)).map_err(|e| SinkError::Failed {
                    sink: "record",
                    message: format!(
                        "copying calibration {} into {}: {e}",
                        path.display(),
                        dir.display()
                    ),
                })?;
            }
            Box::new(sink)
        }
    })
}

/// The name a calibration file gets inside a drive folder (its own file name).
fn calibration_file_name(path: &Path) -> Result<String, SinkError> {
    let reserved = [
        crate::drive::MANIFEST_FILE,
        crate::drive::INDEX_FILE,
        crate::drive::FRAMES_DIR,
    ];
    path.file_name()
        .and_then(|n| n.to_str())
        .filter(|n| !reserved.contains(n))
        .map(str::to_string)
        .ok_or_else(|| SinkError::Failed {
            sink: "record",
            message: format!(
                "calibration {} needs a plain UTF-8 file name other than drive.toml or index.csv",
                path.display()
            ),
        })
}
