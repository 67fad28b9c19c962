//! Frame sources: cameras, video files and network streams, recorded drives, MCAP files,
//! KITTI raw folders, image sequences and a synthetic test pattern (load and soak runs), all behind one blocking [`FrameSource`] trait.
//!
//! The `--source` string is parsed once into a typed [`SourceSpec`] ([`SourceSpec::parse`]);
//! [`open_with`] turns a spec into a source, with the [`FfmpegConfig`] the CLI read from the
//! environment (nothing in `source` reads environment variables). Sources never spawn
//! threads (the pipeline owns those); video and streams run an `ffmpeg` child process.
//! Every source decodes into buffers from the pipeline's frame pool
//! ([`FrameSource::use_pool`]). Live sources stamp frames with the time this process
//! produced them; replays (drives, KITTI raw) also carry their recorded times in `pts_ns`
//! so that the pipeline can pace them.

pub mod camera;
pub mod convert;
mod drive;
mod error;
pub mod ffmpeg;
pub mod images;
pub mod kitti;
pub mod mcap;
mod spec;
pub mod synthetic;

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

pub use crate::redact::mask_credentials;
pub use camera::{list_cameras, CameraDevice, CameraFormat, CameraMode, PixelFormat};
pub use drive::{DriveReader, DriveStats};
pub use error::SourceError;
pub use ffmpeg::{FfmpegConfig, StreamOptions};
pub(crate) use spec::list_images;
pub use spec::{SourceOptions, SourceSpec};

use crate::types::{Frame, FramePool};

/// What a source can say about itself; `ended_early`/`skipped_frames` are final once
/// [`FrameSource::next_frame`] has returned `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SourceInfo {
    /// Human-readable, credentials masked (`rtsp://user:***@host/...`).
    pub description: String,
    pub nominal_fps: Option<f64>,
    pub frame_count: Option<u64>,
    /// Frame size `(width, height)` in pixels, when known.
    pub size: Option<(u32, u32)>,
    pub live: bool,
    /// The input stopped before its announced end (truncated file, decoder error, lost camera).
    pub ended_early: bool,
    /// Frames that were announced but could not be delivered (missing or corrupt files).
    pub skipped_frames: u64,
    /// Why the input ended early or what was skipped, for the end-of-run report.
    pub note: Option<String>,
}

/// A blocking producer of frames; it owns no threads.
pub trait FrameSource: Send {
    /// The next frame, `Ok(None)` at the end of the input.
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError>;

    fn info(&self) -> SourceInfo;

    /// A camera calibration file that came with the input (drive or KITTI folder).
    fn calibration_path(&self) -> Option<PathBuf> {
        None
    }

    /// A camera calibration carried inside the input (an MCAP file's calibration topic).
    fn embedded_calibration(&self) -> Option<crate::calib::Calibration> {
        None
    }

    /// Decode into buffers from `pool` from now on (the pipeline returns every frame's
    /// buffer to it when the frame is done). Every source of this module takes them; one
    /// that ignores the pool allocates a buffer per frame.
    fn use_pool(&mut self, pool: FramePool) {
        let _ = pool;
    }

    /// Give up waiting (return `Ok(None)` soon, well within a second) once `stop` is set:
    /// a source that blocks (a stalled stream, a slow live rate) watches it while it waits.
    /// The pipeline hands it the run's stop flag before the first frame.
    fn watch_stop(&mut self, stop: Arc<AtomicBool>) {
        let _ = stop;
    }
}

/// Opens the source a spec names, running the `ffmpeg` and `ffprobe` the OS finds for
/// video and streams; [`open_with`] takes the configured ones.
pub fn open(spec: &SourceSpec) -> Result<Box<dyn FrameSource>, SourceError> {
    open_with(spec, &FfmpegConfig::default())
}

/// Opens the source a spec names; video files and streams run the binaries
/// `ffmpeg_config` names (resolved only for them).
pub fn open_with(
    spec: &SourceSpec,
    ffmpeg_config: &FfmpegConfig,
) -> Result<Box<dyn FrameSource>, SourceError> {
    open_with_stop(spec, ffmpeg_config, &Arc::new(AtomicBool::new(false)))
}

/// [`open_with`], giving up with [`SourceError::Stopped`] when `stop` is set while a stream
/// is being probed; the source then watches `stop` ([`FrameSource::watch_stop`]).
pub fn open_with_stop(
    spec: &SourceSpec,
    ffmpeg_config: &FfmpegConfig,
    stop: &Arc<AtomicBool>,
) -> Result<Box<dyn FrameSource>, SourceError> {
    let mut source: Box<dyn FrameSource> = match spec {
        SourceSpec::Camera {
            index,
            format,
            size,
            fps,
            retry_secs,
        } => {
            let request = camera::ModeRequest {
                format: *format,
                size: *size,
                fps: *fps,
            };
            Box::new(camera::CameraSource::open(*index, request, *retry_secs)?)
        }
        SourceSpec::Video(path) => Box::new(ffmpeg::VideoSource::open_file_with(
            &ffmpeg_config.tools()?,
            path,
        )?),
        SourceSpec::Stream { url, options } => Box::new(ffmpeg::VideoSource::open_stream_until(
            &ffmpeg_config.tools()?,
            url,
            *options,
            stop,
        )?),
        SourceSpec::Drive(dir) => Box::new(DriveReader::open(dir)?),
        SourceSpec::KittiRaw(dir) => Box::new(kitti::open_kitti_raw(dir)?),
        SourceSpec::Mcap { path, topic } => {
            Box::new(mcap::McapSource::open(path, topic.as_deref())?)
        }
        SourceSpec::Images { paths, fps } => {
            Box::new(images::ImageSequence::new(paths.clone(), *fps, "images")?)
        }
        SourceSpec::Synthetic(spec) => Box::new(synthetic::SyntheticSource::new(*spec)),
    };
    source.watch_stop(stop.clone());
    Ok(source)
}
