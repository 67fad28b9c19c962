//! Which sinks a run writes to, as data ([`SinkSpec`]), and the factories that build them
//! on the sink thread (sinks need not be `Send`: a window is tied to its thread).

use std::path::{Path, PathBuf};

use super::{Sink, SinkError};
use crate::drive::{DriveManifest, FrameFileFormat};
use crate::source::FfmpegConfig;

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
        /// The score map shown at start (`--explain`; `e` toggles it).
        explain: bool,
    },
    Video {
        path: PathBuf,
        /// The latency HUD drawn into the video.
        hud: bool,
        /// Which ffmpeg encodes it (as the CLI read `$LOOKOUT_FFMPEG`).
        ffmpeg: FfmpegConfig,
    },
    Frames {
        dir: PathBuf,
    },
    Jsonl {
        path: PathBuf,
        /// fsync the file when the run ends; false where the caller syncs what it keeps
        /// (`lookout batch` syncs a drive's files when it commits them, and never syncs a
        /// stopped drive's, which it discards).
        sync: bool,
    },
    /// Confirmed tracks per frame in a MOTChallenge or KITTI tracking file.
    Tracks {
        path: PathBuf,
        format: crate::trackfile::TrackFormat,
    },
    /// The run as one MCAP file: images, calibration, annotations, detections, latency.
    Mcap {
        path: PathBuf,
        /// JPEG (shared with a JPEG drive) or lossless PNG images.
        image_format: FrameFileFormat,
        /// Adds `/camera/calibration` (scaled to the frames).
        calibration: Option<crate::calib::Calibration>,
        /// The `lookout` metadata record: version, model, weights hash, command line.
        metadata: std::collections::BTreeMap<String, String>,
    },
    /// The same channels live to the clients of a Foxglove WebSocket server (already bound,
    /// served on a thread of the pipeline's).
    Foxglove {
        hub: crate::live::LiveHub,
        calibration: Option<crate::calib::Calibration>,
    },
    /// Frames into a drive folder; `source` is the description stored in its manifest.
    Record {
        dir: PathBuf,
        source: String,
        frame_format: FrameFileFormat,
        /// A calibration file copied into the drive.
        calibration: Option<PathBuf>,
        /// The frames are anonymised before they get here; the manifest says how.
        privacy: Option<crate::drive::PrivacyNote>,
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
        SinkSpec::Window {
            title,
            hud,
            explain,
        } => Box::new(
            WindowSink::open(&title, ctx.width, ctx.height)?
                .with_hud(hud)
                .with_explain(explain),
        ),
        SinkSpec::Video { path, hud, ffmpeg } => Box::new(
            VideoSink::create_configured(&ffmpeg, &path, ctx.width, ctx.height, ctx.fps)?
                .with_hud(hud),
        ),
        SinkSpec::Frames { dir } => Box::new(FramesSink::create(&dir)?),
        SinkSpec::Jsonl { path, sync } => Box::new(JsonlSink::create(&path)?.synced(sync)),
        SinkSpec::Mcap {
            path,
            image_format,
            calibration,
            metadata,
        } => Box::new(super::mcap::McapSink::create(
            &path,
            image_format,
            calibration.as_ref(),
            &metadata,
            (ctx.width, ctx.height),
        )?),
        SinkSpec::Foxglove { hub, calibration } => Box::new(super::live::LiveSink::new(
            hub,
            calibration.as_ref(),
            (ctx.width, ctx.height),
        )?),
        SinkSpec::Tracks { path, format } => {
            Box::new(super::tracks::TracksSink::create(&path, format)?)
        }
        SinkSpec::Record {
            dir,
            source,
            frame_format,
            calibration,
            privacy,
        } => {
            let mut manifest =
                DriveManifest::new(&source, ctx.width, ctx.height, ctx.fps, frame_format);
            manifest.privacy = privacy;
            let calibration = match calibration {
                Some(path) => Some((calibration_file_name(&path)?, path)),
                None => None,
            };
            manifest.calibration = calibration.as_ref().map(|(name, _)| name.clone());
            let sink = RecordSink::create(&dir, manifest)?;
            // The folder is empty until `create`; the manifest already names the copy.
            if let Some((name, path)) = calibration {
                std::fs::copy(&path, dir.join(name)).map_err(|source| {
                    SinkError::CopyCalibration {
                        sink: "record",
                        from: path.clone(),
                        into: dir.clone(),
                        source,
                    }
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
        .ok_or_else(|| SinkError::CalibrationName {
            sink: "record",
            path: path.to_path_buf(),
        })
}
