//! `--precision int8`'s activation ranges: calibrated on images (`--calibration-images`) and
//! kept in a small JSON file next to the weights, `<weights>.int8.json`, which later runs
//! read. The file names the weights by SHA-256, so ranges are never applied to other
//! weights, and holds one range per quantizable convolution in plan order with the
//! convolution's shape (checked against the plan).
//!
//! Calibration runs the f32 executor on every image (letterboxed to the detector's input
//! size, as inference does) and keeps, per convolution, the smallest and largest input value
//! seen ([`crate::detect::cpu::int8::Calibration`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::cpu::int8::ActRange;
use super::cpu::ConvSpec;
use super::error::{DetectError, Result};

/// What the file's `format` field says.
const FORMAT: &str = "lookout int8 activation ranges";
const VERSION: u32 = 1;

/// Where the ranges of `weights` live: beside them, `<weights>.int8.json`.
pub fn ranges_path(weights: &Path) -> PathBuf {
    let mut name = weights.as_os_str().to_os_string();
    name.push(".int8.json");
    PathBuf::from(name)
}

/// The SHA-256 of a file, hex (read in pieces, not whole into memory).
pub fn file_sha256(path: &Path) -> std::io::Result<String> {
    let mut hasher = Sha256::new();
    std::io::copy(&mut std::fs::File::open(path)?, &mut hasher)?;
    Ok(format!("{:x}", hasher.finalize()))
}

/// The SHA-256 of the weights file, hex.
pub fn weights_digest(weights: &Path) -> Result<String> {
    file_sha256(weights).map_err(|cause| DetectError::Io {
        path: weights.to_path_buf(),
        cause,
    })
}

/// The ranges file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangesFile {
    pub format: String,
    pub version: u32,
    /// `yolox-nano`, …
    pub model: String,
    pub weights_sha256: String,
    /// Input size the calibration images were letterboxed to.
    pub imgsz: usize,
    /// The calibration images (file names).
    pub images: Vec<String>,
    /// Per quantizable convolution, in plan order.
    pub layers: Vec<LayerRange>,
}

/// One convolution's calibrated input range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRange {
    /// `3x3/2 32→64`.
    pub conv: String,
    pub min: f32,
    pub max: f32,
}

/// How a convolution is named in the file.
pub fn describe(spec: &ConvSpec) -> String {
    format!(
        "{0}x{0}/{1} {2}→{3}",
        spec.kernel, spec.stride, spec.c_in, spec.c_out
    )
}

impl RangesFile {
    pub fn new(
        model: &str,
        weights_sha256: String,
        imgsz: usize,
        images: &[PathBuf],
        layers: &[(ConvSpec, ActRange)],
    ) -> Self {
        Self {
            format: FORMAT.into(),
            version: VERSION,
            model: model.into(),
            weights_sha256,
            imgsz,
            images: images
                .iter()
                .map(|p| {
                    p.file_name()
                        .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
                })
                .collect(),
            layers: layers
                .iter()
                .map(|(spec, r)| LayerRange {
                    conv: describe(spec),
                    min: r.lo,
                    max: r.hi,
                })
                .collect(),
        }
    }

    /// Writes the file (to a temporary beside it, then renamed: a reader never sees half a
    /// file).
    pub fn write(&self, path: &Path) -> Result<()> {
        let unwritable = |e: std::io::Error| {
            DetectError::Config(format!(
                "cannot write the int8 ranges to {}: {e}; copy the weights to a writable \
                 folder and calibrate there",
                path.display()
            ))
        };
        let text = serde_json::to_string_pretty(self).expect("ranges serialize");
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        std::fs::write(&tmp, text + "\n").map_err(unwritable)?;
        std::fs::rename(&tmp, path).map_err(unwritable)
    }

    /// Reads the ranges for `model` with weights of digest `sha256` from `path`.
    pub fn read(path: &Path, model: &str, sha256: &str) -> Result<Self> {
        let recalibrate = "run once with --calibration-images DIR (a few dozen images like \
                           the ones you will run on) to calibrate";
        let bad = |why: String| {
            Err(DetectError::Config(format!(
                "--precision int8: {}: {why}; {recalibrate}",
                path.display()
            )))
        };
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return bad("no activation ranges for these weights".into())
            }
            Err(e) => return bad(format!("cannot read it ({e})")),
        };
        let file: RangesFile = match serde_json::from_str(&text) {
            Ok(f) => f,
            Err(e) => return bad(format!("not an int8 ranges file ({e})")),
        };
        if file.format != FORMAT || file.version != VERSION {
            return bad(format!(
                "format `{}` version {}, expected `{FORMAT}` version {VERSION}",
                file.format, file.version
            ));
        }
        if file.model != model || file.weights_sha256 != sha256 {
            return bad(format!(
                "made for other weights ({} {}…), these are {model} {}…",
                file.model,
                &file.weights_sha256.get(..12).unwrap_or(""),
                &sha256[..12]
            ));
        }
        if let Some(l) = file
            .layers
            .iter()
            .find(|l| !(l.min.is_finite() && l.max.is_finite() && l.min <= l.max))
        {
            return bad(format!(
                "layer {} has the range {}..{}",
                l.conv, l.min, l.max
            ));
        }
        Ok(file)
    }

    /// The ranges in plan order.
    pub fn ranges(&self) -> Vec<ActRange> {
        self.layers
            .iter()
            .map(|l| ActRange {
                lo: l.min,
                hi: l.max,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ranges_file_round_trips_and_refuses_other_weights() {
        let dir = tempfile::tempdir().unwrap();
        let weights = dir.path().join("m.pth");
        std::fs::write(&weights, b"weights").unwrap();
        let sha = weights_digest(&weights).unwrap();
        let path = ranges_path(&weights);
        assert_eq!(path, dir.path().join("m.pth.int8.json"));
        let spec = ConvSpec::new(16, 32, 3, 2, 1, true);
        let file = RangesFile::new(
            "yolox-nano",
            sha.clone(),
            416,
            &[dir.path().join("a.jpg")],
            &[(spec, ActRange { lo: -0.25, hi: 7.5 })],
        );
        file.write(&path).unwrap();
        let back = RangesFile::read(&path, "yolox-nano", &sha).unwrap();
        assert_eq!(back, file);
        assert_eq!(back.layers[0].conv, "3x3/2 16→32");
        assert_eq!(back.ranges(), [ActRange { lo: -0.25, hi: 7.5 }]);
        let other = "0".repeat(64);
        let err = RangesFile::read(&path, "yolox-nano", &other)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("made for other weights") && err.contains("--calibration-images"),
            "{err}"
        );
        let err = RangesFile::read(&dir.path().join("none.json"), "yolox-nano", &sha)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no activation ranges"), "{err}");
        std::fs::write(&path, "{").unwrap();
        let err = RangesFile::read(&path, "yolox-nano", &sha)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not an int8 ranges file"), "{err}");
    }
}
