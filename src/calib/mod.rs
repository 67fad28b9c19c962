//! Camera calibration: intrinsics, lens distortion and mounting, and box → distance.
//!
//! [`Calibration`] is the one validated camera model every source format becomes: lookout's
//! own TOML ([`toml_format`]), OpenCV FileStorage YAML, ROS `camera_info` YAML and KITTI
//! calibration text ([`import`]). [`distance`] turns a detection box into a distance along the
//! road, [`undistort`] builds a remap table for showing undistorted frames, and [`eval`]
//! scores the distance estimator on KITTI ground-truth labels.

pub mod distance;
pub mod eval;
pub mod import;
mod model;
pub mod toml_format;
pub mod undistort;

pub use distance::{estimate_distance, DistanceEstimate, DistanceMethod};
pub use model::{Calibration, Distortion, Intrinsics, Mounting};

use std::path::PathBuf;

/// Why a calibration could not be read or used; messages name the file and the field.
#[derive(Debug, thiserror::Error)]
pub enum CalibError {
    #[error("cannot read calibration file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("calibration {origin}: cannot parse as {format}: {message}")]
    Parse {
        origin: String,
        format: &'static str,
        message: String,
    },
    #[error("calibration {origin}: missing field `{field}`{hint}")]
    MissingField {
        origin: String,
        field: String,
        hint: String,
    },
    #[error("calibration {origin}: field `{field}` = {value} is invalid: {reason}")]
    InvalidField {
        origin: String,
        field: String,
        value: String,
        reason: String,
    },
    #[error(
        "calibration {origin}: unknown version {version}; this lookout reads version {supported}"
    )]
    UnknownVersion {
        origin: String,
        version: i64,
        supported: i64,
    },
    #[error(
        "calibration {origin} is for {cal_width}x{cal_height} but the stream is {width}x{height}: \
         the aspect ratios differ, so the intrinsics cannot be scaled; calibrate at this resolution"
    )]
    AspectMismatch {
        origin: String,
        cal_width: u32,
        cal_height: u32,
        width: u32,
        height: u32,
    },
    #[error("undistort table is for {table_width}x{table_height} frames but got {width}x{height}; build a RemapTable for this size")]
    FrameSize {
        table_width: u32,
        table_height: u32,
        width: u32,
        height: u32,
    },
    #[error("calibration file {path}: cannot tell its format ({reason}); use .toml, .yaml/.yml (OpenCV or ROS) or .txt (KITTI)")]
    UnknownFormat { path: PathBuf, reason: String },
}
