//! The drive format: a recorded run that replays like a camera.
//!
//! A drive is a folder with `drive.toml` (the [`DriveManifest`]), `frames/NNNNNNNN.jpg|png`
//! and `index.csv` (`seq,capture_mono_ns,capture_wall_ns,pts_ns,file`). [`DriveWriter`] writes
//! each frame file completely (temporary name, then rename) before appending and flushing its
//! index line, so a crash or kill leaves a valid drive with every frame written so far.
//! `source::DriveReader` replays one as a frame source, skipping and counting torn index
//! lines, missing or corrupt frames, and refusing paths outside the drive; this module
//! knows the format only.

pub mod index;
mod writer;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use index::{IndexEntry, INDEX_HEADER};
pub use writer::DriveWriter;

use crate::civil::rfc3339_utc;
use crate::redact::mask_credentials;

/// The manifest version this code writes and reads.
pub const DRIVE_FORMAT_VERSION: u32 = 1;
pub const MANIFEST_FILE: &str = "drive.toml";
/// Also accepted when reading (hand-made drives).
pub const MANIFEST_JSON_FILE: &str = "drive.json";
pub const INDEX_FILE: &str = "index.csv";
pub const FRAMES_DIR: &str = "frames";
pub const DEFAULT_JPEG_QUALITY: u8 = 95;

#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("drive folder {} already exists and is not empty; record into a new folder", dir.display())]
    NotEmpty { dir: PathBuf },

    /// The cause is the `source` (printed after this message by error-chain printers).
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{} is not a drive: it has no drive.toml or drive.json", dir.display())]
    NoManifest { dir: PathBuf },

    #[error("drive manifest {}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },

    #[error("drive {} has format version {version}; this lookout reads version {DRIVE_FORMAT_VERSION}", path.display())]
    Version { path: PathBuf, version: u32 },

    #[error("frame {seq} is {width}x{height} but drive {} records {expected_width}x{expected_height}; record each size into its own drive", dir.display())]
    FrameSize {
        dir: PathBuf,
        seq: u64,
        width: u32,
        height: u32,
        expected_width: u32,
        expected_height: u32,
    },

    #[error("frame {seq} comes after frame {last} in drive {}; frames must be written in increasing seq order", dir.display())]
    SeqOrder { dir: PathBuf, seq: u64, last: u64 },

    #[error("encoding frame {seq} as {format}: {reason}")]
    Encode {
        seq: u64,
        format: &'static str,
        reason: String,
    },

    #[error("drive {} stopped taking frames after an index write failed; its first {frames} frames are valid", dir.display())]
    Broken { dir: PathBuf, frames: u64 },
}

impl DriveError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> DriveError {
        DriveError::Io {
            what: what.into(),
            source,
        }
    }
}

/// How frame files are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FrameFileFormat {
    /// Lossy, small; quality from the manifest.
    Jpg,
    /// Lossless, large.
    Png,
}

impl FrameFileFormat {
    pub fn extension(self) -> &'static str {
        match self {
            FrameFileFormat::Jpg => "jpg",
            FrameFileFormat::Png => "png",
        }
    }

    /// The `format` of a `foxglove.CompressedImage` in this format.
    pub fn foxglove_name(self) -> &'static str {
        match self {
            FrameFileFormat::Jpg => "jpeg",
            FrameFileFormat::Png => "png",
        }
    }
}

/// When a drive was created: RFC 3339 text as written, or Unix seconds in hand-made drives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Created {
    Unix(i64),
    Rfc3339(String),
}

/// `drive.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DriveManifest {
    pub version: u32,
    pub created: Created,
    /// What was recorded, credentials masked.
    pub source: String,
    pub width: u32,
    pub height: u32,
    /// Nominal frame rate of the source (the index has the real times).
    pub fps: f64,
    pub frame_format: FrameFileFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jpeg_quality: Option<u8>,
    /// File name of a calibration copied into the drive folder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calibration: Option<String>,
    /// Frames written, set when the writer finishes (absent after a crash; the index counts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frame_count: Option<u64>,
    /// Set when the frames were anonymised before they were written (`--privacy`): no raw
    /// frame is in the drive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub privacy: Option<PrivacyNote>,
}

/// How an anonymised drive's frames were covered, so that a reader knows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyNote {
    /// `blur` or `pixelate`.
    pub method: String,
    /// The `--privacy-classes` list.
    pub classes: String,
    /// Detections from this score were covered (`--privacy-conf`).
    pub min_score: f32,
    /// The padding around each box, as a fraction of its size.
    pub margin: f32,
    /// The detector that found them.
    pub model: String,
}

impl DriveManifest {
    /// A version-1 manifest created now; `source` is masked before it is stored.
    pub fn new(
        source: &str,
        width: u32,
        height: u32,
        fps: f64,
        frame_format: FrameFileFormat,
    ) -> Self {
        Self {
            version: DRIVE_FORMAT_VERSION,
            created: Created::Rfc3339(rfc3339_utc(crate::types::wall_now_ns())),
            source: mask_credentials(source),
            width,
            height,
            fps,
            frame_format,
            jpeg_quality: (frame_format == FrameFileFormat::Jpg).then_some(DEFAULT_JPEG_QUALITY),
            calibration: None,
            frame_count: None,
            privacy: None,
        }
    }

    /// Checks the fields a reader or writer relies on.
    pub fn validate(&self, path: &Path) -> Result<(), DriveError> {
        let bad = |reason: String| DriveError::Manifest {
            path: path.to_path_buf(),
            reason,
        };
        if self.version != DRIVE_FORMAT_VERSION {
            return Err(DriveError::Version {
                path: path.to_path_buf(),
                version: self.version,
            });
        }
        if self.width == 0 || self.height == 0 {
            return Err(bad(format!(
                "frame size {}x{} must be positive",
                self.width, self.height
            )));
        }
        if !(self.fps.is_finite() && self.fps > 0.0) {
            return Err(bad(format!("fps {} must be a positive number", self.fps)));
        }
        if let Some(q) = self.jpeg_quality.filter(|q| !(1..=100).contains(q)) {
            return Err(bad(format!("jpeg_quality {q} must be 1..=100")));
        }
        if let Some(name) = &self.calibration {
            if !is_plain_file_name(name) {
                return Err(bad(format!(
                    "calibration `{name}` must be a file name inside the drive folder"
                )));
            }
        }
        Ok(())
    }

    fn to_toml(&self) -> Result<String, DriveError> {
        toml::to_string(self).map_err(|e| DriveError::Manifest {
            path: PathBuf::from(MANIFEST_FILE),
            reason: format!("cannot serialise: {e}"),
        })
    }
}

/// A single normal path component: no separators, not `.`/`..`, not empty.
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Writes `contents` to `path` through a temporary file and a rename, so that readers see
/// the old or the new file, never half of one.
pub(crate) fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let file_name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let result = std::fs::write(&tmp, contents).and_then(|()| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_through_toml_and_masks_the_source() {
        let manifest = DriveManifest::new(
            "rtsp://cam:hunter2@10.0.0.9/live",
            1280,
            720,
            25.0,
            FrameFileFormat::Jpg,
        );
        assert_eq!(manifest.source, "rtsp://cam:***@10.0.0.9/live");
        let text = manifest.to_toml().unwrap();
        assert!(text.contains("version = 1"), "{text}");
        assert!(text.contains("frame_format = \"jpg\""), "{text}");
        let back: DriveManifest = toml::from_str(&text).unwrap();
        assert_eq!(back, manifest);
        back.validate(Path::new("drive.toml")).unwrap();
    }

    #[test]
    fn unix_created_and_bad_fields_are_handled() {
        let text = "version = 1\ncreated = 1700000000\nsource = \"x\"\nwidth = 4\nheight = 2\nfps = 10.0\nframe_format = \"png\"\n";
        let manifest: DriveManifest = toml::from_str(text).unwrap();
        assert_eq!(manifest.created, Created::Unix(1_700_000_000));
        manifest.validate(Path::new("d")).unwrap();

        let future = DriveManifest {
            version: 2,
            ..manifest.clone()
        };
        let err = future.validate(Path::new("d/drive.toml")).unwrap_err();
        assert!(err.to_string().contains("format version 2"), "{err}");

        let escaping = DriveManifest {
            calibration: Some("../calib.txt".into()),
            ..manifest
        };
        assert!(escaping.validate(Path::new("d")).is_err());
    }
}
