//! Importers from other tools' calibration files into [`Calibration`].
//!
//! OpenCV FileStorage YAML (`%YAML:1.0`, `!!opencv-matrix` `camera_matrix` and
//! `distortion_coefficients`), ROS `camera_info` YAML (the calibration file of
//! camera_calibration_parsers, or a `rostopic echo` of the message with `K`/`D`), and KITTI
//! calibration text (`calib_cam_to_cam.txt` with `P_rect_02`/`S_rect_02`, or an
//! object-benchmark `calib/*.txt` with `P2`). None of them records the mounting: KITTI files
//! get the KITTI rig's (1.65 m, level); YAML files get [`ASSUMED_YAML_MOUNTING_HEIGHT_M`] level
//! unless they carry `camera_height_m` / `camera_pitch_deg`, flagged as assumed.

use super::{CalibError, Calibration, Distortion, Intrinsics, Mounting};
use serde_yaml::Value;
use std::path::Path;

/// KITTI's camera 2 sits 1.65 m above the road, level (Geiger et al., IJRR 2013).
pub const KITTI_CAMERA_HEIGHT_M: f64 = 1.65;
/// KITTI object-benchmark files have no image size; their images are (about) this size.
pub const KITTI_IMAGE_SIZE: (u32, u32) = (1242, 375);
/// Mounting height assumed for YAML files that do not state one: a car windscreen camera.
pub const ASSUMED_YAML_MOUNTING_HEIGHT_M: f64 = 1.3;

impl Calibration {
    /// Reads any supported format, chosen by extension and content ([`load_any`]).
    pub fn load(path: &Path) -> Result<Self, CalibError> {
        load_any(path)
    }
}

/// Reads `path`, choosing the format by extension, then by content.
pub fn load_any(path: &Path) -> Result<Calibration, CalibError> {
    let text = std::fs::read_to_string(path).map_err(|source| CalibError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let origin = path.display().to_string();
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    match ext.as_str() {
        "toml" => super::toml_format::parse(&text, &origin),
        "yaml" | "yml" => parse_yaml(&text, &origin),
        "txt" => parse_kitti(&text, &origin),
        _ => match sniff(&text) {
            Some(Format::Toml) => super::toml_format::parse(&text, &origin),
            Some(Format::Yaml) => parse_yaml(&text, &origin),
            Some(Format::Kitti) => parse_kitti(&text, &origin),
            None => Err(CalibError::UnknownFormat {
                path: path.to_path_buf(),
                reason: format!("extension `{ext}` and no recognisable keys"),
            }),
        },
    }
}

enum Format {
    Toml,
    Yaml,
    Kitti,
}

fn sniff(text: &str) -> Option<Format> {
    let has_line = |prefix: &str| text.lines().any(|l| l.trim_start().starts_with(prefix));
    if has_line("P_rect_0") || has_line("P2:") {
        Some(Format::Kitti)
    } else if has_line("camera_matrix") || has_line("K:") || has_line("k:") {
        Some(Format::Yaml)
    } else if has_line("[intrinsics]") {
        Some(Format::Toml)
    } else {
        None
    }
}

/// OpenCV FileStorage or ROS `camera_info` YAML (told apart by OpenCV's header and tags).
pub fn parse_yaml(text: &str, origin: &str) -> Result<Calibration, CalibError> {
    let is_opencv = text.trim_start().starts_with("%YAML") || text.contains("!!opencv-matrix");
    let format = if is_opencv {
        "OpenCV FileStorage YAML"
    } else {
        "ROS camera_info YAML"
    };
    // OpenCV writes `%YAML:1.0`, which is not a valid YAML directive; drop directive lines.
    let body: String = text
        .lines()
        .filter(|l| !l.starts_with('%'))
        .collect::<Vec<_>>()
        .join("\n");
    let doc: Value = serde_yaml::from_str(&body).map_err(|e| CalibError::Parse {
        origin: origin.to_string(),
        format,
        message: e.to_string(),
    })?;
    let yaml = YamlDoc {
        doc: untag(&doc),
        origin,
    };
    let size = (
        yaml.size(&["image_width", "width"])?,
        yaml.size(&["image_height", "height"])?,
    );
    let k = yaml.numbers(&["camera_matrix", "K", "k"])?;
    if k.len() != 9 {
        return Err(yaml.invalid(
            "camera_matrix",
            &format!("{} values", k.len()),
            "expected a 3x3 matrix (9 values)",
        ));
    }
    if k[1] != 0.0 || k[3] != 0.0 || k[6] != 0.0 || k[7] != 0.0 || k[8] != 1.0 {
        return Err(yaml.invalid(
            "camera_matrix",
            &format!("{k:?}"),
            "expected [fx 0 cx; 0 fy cy; 0 0 1] (skew is not supported)",
        ));
    }
    let intrinsics = Intrinsics {
        fx: k[0],
        fy: k[4],
        cx: k[2],
        cy: k[5],
    };
    let model = yaml.string("distortion_model");
    let coefficients = match yaml.find(&["distortion_coefficients", "D", "d"]) {
        Some(_) => yaml.numbers(&["distortion_coefficients", "D", "d"])?,
        None => vec![],
    };
    let distortion = yaml.distortion(model.as_deref(), &coefficients)?;
    let height_m = yaml.optional_number("camera_height_m")?;
    let pitch_deg = yaml.optional_number("camera_pitch_deg")?;
    let mut mounting = Mounting::level(height_m.unwrap_or(ASSUMED_YAML_MOUNTING_HEIGHT_M));
    mounting.pitch_deg = pitch_deg.unwrap_or(0.0);
    let name = yaml
        .string("camera_name")
        .unwrap_or_else(|| format.to_string());
    let cal = Calibration::new(origin, &name, size, intrinsics, distortion, mounting)?;
    Ok(if height_m.is_none() {
        cal.with_assumed_mounting()
    } else {
        cal
    })
}

/// Strips YAML tags (`!!opencv-matrix`) at every level.
fn untag(value: &Value) -> Value {
    match value {
        Value::Tagged(tagged) => untag(&tagged.value),
        Value::Mapping(map) => {
            Value::Mapping(map.iter().map(|(k, v)| (untag(k), untag(v))).collect())
        }
        Value::Sequence(seq) => Value::Sequence(seq.iter().map(untag).collect()),
        other => other.clone(),
    }
}

struct YamlDoc<'a> {
    doc: Value,
    origin: &'a str,
}

impl YamlDoc<'_> {
    fn find<'s, 'k>(&'s self, keys: &[&'k str]) -> Option<(&'k str, &'s Value)> {
        keys.iter().find_map(|k| self.doc.get(*k).map(|v| (*k, v)))
    }

    fn missing(&self, keys: &[&str]) -> CalibError {
        CalibError::MissingField {
            origin: self.origin.to_string(),
            field: keys[0].to_string(),
            hint: if keys.len() > 1 {
                format!(" (or {})", keys[1..].join(", "))
            } else {
                String::new()
            },
        }
    }

    fn invalid(&self, field: &str, value: &str, reason: &str) -> CalibError {
        invalid(self.origin, field, value, reason)
    }

    fn size(&self, keys: &[&str]) -> Result<u32, CalibError> {
        let (key, value) = self.find(keys).ok_or_else(|| self.missing(keys))?;
        value
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| {
                self.invalid(
                    key,
                    &yaml_text(value),
                    "must be a positive number of pixels",
                )
            })
    }

    fn string(&self, key: &str) -> Option<String> {
        self.doc
            .get(key)
            .and_then(|v| v.as_str())
            .map(str::to_string)
    }

    fn optional_number(&self, key: &str) -> Result<Option<f64>, CalibError> {
        match self.doc.get(key) {
            None => Ok(None),
            Some(v) => number(v)
                .map(Some)
                .ok_or_else(|| self.invalid(key, &yaml_text(v), "must be a number")),
        }
    }

    /// A matrix as `{rows, cols, data: [...]}` (OpenCV, ROS file) or a bare list (ROS message).
    fn numbers(&self, keys: &[&str]) -> Result<Vec<f64>, CalibError> {
        let (key, value) = self.find(keys).ok_or_else(|| self.missing(keys))?;
        let list = match value.get("data") {
            Some(data) => data,
            None => value,
        };
        let items = list.as_sequence().ok_or_else(|| {
            self.invalid(
                key,
                &yaml_text(value),
                "expected a list or a matrix with `data`",
            )
        })?;
        items
            .iter()
            .enumerate()
            .map(|(n, item)| {
                number(item).ok_or_else(|| {
                    self.invalid(
                        &format!("{key}.data[{n}]"),
                        &yaml_text(item),
                        "must be a number",
                    )
                })
            })
            .collect()
    }

    fn distortion(&self, model: Option<&str>, d: &[f64]) -> Result<Distortion, CalibError> {
        ros_distortion(self.origin, model, d)
    }
}

/// A ROS `distortion_model` and its `D` coefficients as a [`Distortion`].
fn ros_distortion(origin: &str, model: Option<&str>, d: &[f64]) -> Result<Distortion, CalibError> {
    let model = model.unwrap_or("plumb_bob");
    let coefficient = |n: usize| d.get(n).copied().unwrap_or(0.0);
    match model {
        "plumb_bob" | "radtan" | "radial_tangential" | "rational_polynomial" => {
            if let Some(n) = (5..d.len()).find(|n| d[*n] != 0.0) {
                return Err(invalid(origin,
                    &format!("distortion_coefficients.data[{n}]"),
                    &d[n].to_string(),
                    "only k1 k2 p1 p2 k3 are supported (rational/thin-prism terms must be 0); recalibrate without them",
                ));
            }
            if d.iter().all(|c| *c == 0.0) {
                return Ok(Distortion::None);
            }
            Ok(Distortion::RadialTangential {
                k1: coefficient(0),
                k2: coefficient(1),
                p1: coefficient(2),
                p2: coefficient(3),
                k3: coefficient(4),
            })
        }
        "equidistant" | "fisheye" => {
            if d.len() > 4 && d[4..].iter().any(|c| *c != 0.0) {
                return Err(invalid(
                    origin,
                    "distortion_coefficients",
                    &format!("{d:?}"),
                    "the fisheye model has 4 coefficients k1..k4",
                ));
            }
            Ok(Distortion::Fisheye {
                k1: coefficient(0),
                k2: coefficient(1),
                k3: coefficient(2),
                k4: coefficient(3),
            })
        }
        other => Err(invalid(
            origin,
            "distortion_model",
            other,
            "expected plumb_bob, rational_polynomial or equidistant",
        )),
    }
}

fn invalid(origin: &str, field: &str, value: &str, reason: &str) -> CalibError {
    CalibError::InvalidField {
        origin: origin.to_string(),
        field: field.to_string(),
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// A camera from the fields of a ROS `CameraInfo` or a `foxglove.CameraCalibration` message
/// (an MCAP file's calibration topic): image size, row-major K, distortion model and D. The
/// mounting is not in the message: level at [`ASSUMED_YAML_MOUNTING_HEIGHT_M`], flagged as
/// assumed (`--camera-height` / `--camera-pitch` set it).
pub fn from_camera_info(
    origin: &str,
    size: (u32, u32),
    k: &[f64],
    distortion_model: &str,
    d: &[f64],
) -> Result<Calibration, CalibError> {
    if k.len() != 9 || k[1] != 0.0 || k[3] != 0.0 || k[6] != 0.0 || k[7] != 0.0 || k[8] != 1.0 {
        return Err(invalid(
            origin,
            "K",
            &format!("{k:?}"),
            "expected [fx 0 cx; 0 fy cy; 0 0 1] (9 values, no skew)",
        ));
    }
    let intrinsics = Intrinsics {
        fx: k[0],
        fy: k[4],
        cx: k[2],
        cy: k[5],
    };
    let model = match distortion_model {
        "" => None,
        // Foxglove's name for OpenCV's fisheye model.
        "kannala_brandt" => Some("equidistant"),
        other => Some(other),
    };
    let distortion = ros_distortion(origin, model, d)?;
    let mounting = Mounting::level(ASSUMED_YAML_MOUNTING_HEIGHT_M);
    Ok(Calibration::new(
        origin,
        "camera_info",
        size,
        intrinsics,
        distortion,
        mounting,
    )?
    .with_assumed_mounting())
}

fn number(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        // OpenCV writes floats like `1.` and `.5`; take any string Rust can read as f64.
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn yaml_text(value: &Value) -> String {
    serde_yaml::to_string(value)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into())
}

/// KITTI calibration text: `P_rect_02` (+ `S_rect_02`) or the object benchmark's `P2`.
pub fn parse_kitti(text: &str, origin: &str) -> Result<Calibration, CalibError> {
    let values = |key: &str| -> Option<Result<Vec<f64>, CalibError>> {
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))?;
        let rest = &line.trim_start()[key.len() + 1..];
        Some(
            rest.split_whitespace()
                .map(|t| {
                    t.parse::<f64>().map_err(|_| CalibError::InvalidField {
                        origin: origin.to_string(),
                        field: key.to_string(),
                        value: t.to_string(),
                        reason: "not a number".into(),
                    })
                })
                .collect(),
        )
    };
    let (key, p) = match (values("P_rect_02"), values("P2")) {
        (Some(p), _) => ("P_rect_02", p?),
        (None, Some(p)) => ("P2", p?),
        (None, None) => {
            return Err(CalibError::MissingField {
                origin: origin.to_string(),
                field: "P_rect_02".into(),
                hint: " (or P2): expected a KITTI calib_cam_to_cam.txt or object calib/*.txt"
                    .into(),
            })
        }
    };
    let invalid = |reason: &str| CalibError::InvalidField {
        origin: origin.to_string(),
        field: key.to_string(),
        value: format!("{p:?}"),
        reason: reason.to_string(),
    };
    if p.len() != 12 {
        return Err(invalid("expected a 3x4 projection matrix (12 values)"));
    }
    if p[1] != 0.0 || p[4] != 0.0 || p[8] != 0.0 || p[9] != 0.0 || p[10] != 1.0 {
        return Err(invalid("expected [fx 0 cx tx; 0 fy cy ty; 0 0 1 tz]"));
    }
    let size = match values("S_rect_02") {
        Some(s) => {
            let s = s?;
            match s[..] {
                [w, h] if w > 0.0 && h > 0.0 => (w.round() as u32, h.round() as u32),
                _ => {
                    return Err(CalibError::InvalidField {
                        origin: origin.to_string(),
                        field: "S_rect_02".into(),
                        value: format!("{s:?}"),
                        reason: "expected `width height`".into(),
                    })
                }
            }
        }
        None => KITTI_IMAGE_SIZE,
    };
    let intrinsics = Intrinsics {
        fx: p[0],
        fy: p[5],
        cx: p[2],
        cy: p[6],
    };
    // P = K [I | t]: camera 2's centre sits at −t in the reference camera 0's frame, which is
    // the frame KITTI's labels use; the offsets make lateral/longitudinal match the labels.
    let tz = p[11];
    let tx = (p[3] - p[2] * tz) / p[0];
    let mut mounting = Mounting::level(KITTI_CAMERA_HEIGHT_M);
    mounting.lateral_offset_m = -tx;
    mounting.longitudinal_offset_m = -tz;
    Calibration::new(
        origin,
        "KITTI rectified camera 2",
        size,
        intrinsics,
        Distortion::None,
        mounting,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENCV: &str = "%YAML:1.0
---
calibration_time: \"Tue 12 Mar 2024 10:02:11 CET\"
nframes: 25
image_width: 1280
image_height: 720
board_width: 9
board_height: 6
square_size: 2.5000000372529030e-02
flags: 0
camera_matrix: !!opencv-matrix
   rows: 3
   cols: 3
   dt: d
   data: [ 9.1234567890000002e+02, 0., 6.4012345000000002e+02, 0.,
       9.1087654320000004e+02, 3.5898765400000001e+02, 0., 0., 1. ]
distortion_coefficients: !!opencv-matrix
   rows: 1
   cols: 5
   dt: d
   data: [ -3.1234500000000002e-01, 1.0234500000000000e-01,
       1.2345000000000001e-04, -2.3456000000000000e-04,
       -1.3456000000000000e-02 ]
avg_reprojection_error: 2.8123450000000001e-01
";

    #[test]
    fn opencv_filestorage_yaml_with_header_and_tags() {
        let cal = parse_yaml(OPENCV, "cam.yml").unwrap();
        assert_eq!(cal.image_size(), (1280, 720));
        assert!((cal.intrinsics().fx - 912.3456789).abs() < 1e-9);
        assert!((cal.intrinsics().cy - 358.987654).abs() < 1e-9);
        assert!(
            matches!(cal.distortion(), Distortion::RadialTangential { k3, .. } if (k3 + 0.013456).abs() < 1e-12)
        );
        assert!(cal.mounting_is_assumed());
    }

    #[test]
    fn opencv_without_image_size_names_the_field() {
        let text = OPENCV.replace("image_width: 1280\n", "");
        let err = parse_yaml(&text, "cam.yml").unwrap_err().to_string();
        assert!(err.contains("image_width"), "{err}");
    }
}
