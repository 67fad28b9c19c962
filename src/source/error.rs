//! The one error type of `source`: every message names the file, device or stream (with
//! credentials masked) and says what to do. An underlying error (I/O, the drive format) is
//! the variant's `source`, not repeated in its message: error-chain printers (the CLI's
//! `{:#}`) print each cause once.

use std::path::PathBuf;

use crate::drive::DriveError;

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no such file: {}; check the path given to --source", path.display())]
    NoSuchFile { path: PathBuf },

    #[error("don't know how to read {}: {reason}; expected a video file (mp4, mkv, mov, avi, webm, ...), an image folder or glob, a drive folder (drive.toml), a KITTI raw folder (image_02/data) or camera:N", path.display())]
    UnknownKind { path: PathBuf, reason: String },

    #[error("no images in {what}: expected .jpg/.jpeg/.png files")]
    NoImages { what: String },

    #[error("bad source `{spec}`: {reason}")]
    BadSpec { spec: String, reason: String },

    #[error("no camera found: {detail}; use --source FILE|DRIVE to read a video or a recorded drive instead")]
    NoCamera { detail: String },

    #[error("permission denied on camera device {node}: add your user to the group owning it (usually `video`: sudo usermod -aG video $USER, then log in again) or use --source FILE|DRIVE")]
    CameraPermission { node: String },

    #[error("camera {index}: {message}")]
    Camera { index: u32, message: String },

    #[error("{program} not found (looked for `{looked_for}`): install ffmpeg (apt-get install -y ffmpeg) or set {env_var} to its path")]
    FfmpegMissing {
        program: &'static str,
        looked_for: String,
        env_var: &'static str,
    },

    #[error("{program} failed on {source_desc}: {message}")]
    Ffmpeg {
        program: &'static str,
        source_desc: String,
        message: String,
    },

    #[error("{source_desc} did not answer within {secs} s (--stream-timeout); check the URL and that the server is up, or raise --stream-timeout")]
    StreamTimeout { source_desc: String, secs: f64 },

    #[error("stopped while opening {source_desc}")]
    Stopped { source_desc: String },

    #[error("{source_desc} has no video stream; pass a file or URL that carries video")]
    NoVideoStream { source_desc: String },

    /// The cause is the `source` (printed after this message by error-chain printers).
    #[error("reading {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("KITTI raw folder {}: {reason}", path.display())]
    Kitti { path: PathBuf, reason: String },

    /// An MCAP file that cannot be replayed; `reason` says why and what to do.
    #[error("MCAP file {} {reason}", path.display())]
    Mcap { path: PathBuf, reason: String },

    #[error(transparent)]
    Drive(#[from] DriveError),
}
