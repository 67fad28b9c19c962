//! lookout's own calibration format: TOML, `version = 1`, documented in `calibration/README.md`.
//!
//! Tables: `[image]` (the size the intrinsics refer to), `[intrinsics]` (fx, fy, cx, cy in
//! pixels), `[distortion]` (`model = "none" | "radial_tangential" | "fisheye"` and its
//! coefficients) and `[mounting]` (height above the road, pitch/roll/yaw, offsets). Every field
//! is read as optional first so that a missing one is reported by its dotted name.

use super::model::distortion_fields;
use super::{CalibError, Calibration, Distortion, Intrinsics, Mounting};
use serde::Deserialize;

/// The format version this build reads and writes.
pub const VERSION: i64 = 1;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    version: Option<i64>,
    name: Option<String>,
    notes: Option<String>,
    image: Option<RawImage>,
    intrinsics: Option<RawIntrinsics>,
    distortion: Option<RawDistortion>,
    mounting: Option<RawMounting>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawImage {
    width: Option<i64>,
    height: Option<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIntrinsics {
    fx: Option<f64>,
    fy: Option<f64>,
    cx: Option<f64>,
    cy: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDistortion {
    model: Option<String>,
    k1: Option<f64>,
    k2: Option<f64>,
    k3: Option<f64>,
    k4: Option<f64>,
    p1: Option<f64>,
    p2: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMounting {
    height_m: Option<f64>,
    pitch_deg: Option<f64>,
    roll_deg: Option<f64>,
    yaw_deg: Option<f64>,
    lateral_offset_m: Option<f64>,
    longitudinal_offset_m: Option<f64>,
}

/// Parses lookout TOML text; `origin` names the file in errors.
pub fn parse(text: &str, origin: &str) -> Result<Calibration, CalibError> {
    let raw: RawFile = toml::from_str(text).map_err(|e| CalibError::Parse {
        origin: origin.to_string(),
        format: "lookout TOML",
        message: e.message().to_string(),
    })?;
    let missing = |field: &str, hint: &str| CalibError::MissingField {
        origin: origin.to_string(),
        field: field.to_string(),
        hint: hint.to_string(),
    };
    let version = raw.version.ok_or_else(|| {
        missing(
            "version",
            &format!(" (write `version = {VERSION}` at the top)"),
        )
    })?;
    if version != VERSION {
        return Err(CalibError::UnknownVersion {
            origin: origin.to_string(),
            version,
            supported: VERSION,
        });
    }
    let image = raw
        .image
        .ok_or_else(|| missing("image", " (table [image] with width, height)"))?;
    let size = (
        pixels(image.width, "image.width", origin)?,
        pixels(image.height, "image.height", origin)?,
    );
    let i = raw
        .intrinsics
        .ok_or_else(|| missing("intrinsics", " (table [intrinsics] with fx, fy, cx, cy)"))?;
    let need = |v: Option<f64>, field: &str| v.ok_or_else(|| missing(field, ""));
    let intrinsics = Intrinsics {
        fx: need(i.fx, "intrinsics.fx")?,
        fy: need(i.fy, "intrinsics.fy")?,
        cx: need(i.cx, "intrinsics.cx")?,
        cy: need(i.cy, "intrinsics.cy")?,
    };
    let distortion = match raw.distortion {
        None => Distortion::None,
        Some(d) => distortion_from_raw(d, origin)?,
    };
    let m = raw
        .mounting
        .ok_or_else(|| missing("mounting", " (table [mounting] with at least height_m)"))?;
    let mounting = Mounting {
        height_m: need(m.height_m, "mounting.height_m")?,
        pitch_deg: m.pitch_deg.unwrap_or(0.0),
        roll_deg: m.roll_deg.unwrap_or(0.0),
        yaw_deg: m.yaw_deg.unwrap_or(0.0),
        lateral_offset_m: m.lateral_offset_m.unwrap_or(0.0),
        longitudinal_offset_m: m.longitudinal_offset_m.unwrap_or(0.0),
    };
    let _notes = raw.notes;
    let name = raw.name.unwrap_or_default();
    Calibration::new(origin, &name, size, intrinsics, distortion, mounting)
}

fn pixels(value: Option<i64>, field: &str, origin: &str) -> Result<u32, CalibError> {
    let value = value.ok_or_else(|| CalibError::MissingField {
        origin: origin.to_string(),
        field: field.to_string(),
        hint: String::new(),
    })?;
    u32::try_from(value)
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| CalibError::InvalidField {
            origin: origin.to_string(),
            field: field.to_string(),
            value: value.to_string(),
            reason: "must be a positive number of pixels".into(),
        })
}

fn distortion_from_raw(d: RawDistortion, origin: &str) -> Result<Distortion, CalibError> {
    let model = d.model.as_deref().unwrap_or("radial_tangential");
    let z = |v: Option<f64>| v.unwrap_or(0.0);
    let unused = |field: &str, value: Option<f64>| match value {
        Some(v) if v != 0.0 => Err(CalibError::InvalidField {
            origin: origin.to_string(),
            field: format!("distortion.{field}"),
            value: v.to_string(),
            reason: format!("the {model} model has no coefficient {field}; remove it"),
        }),
        _ => Ok(()),
    };
    match model {
        "none" => Ok(Distortion::None),
        "radial_tangential" | "plumb_bob" => {
            unused("k4", d.k4)?;
            Ok(Distortion::RadialTangential {
                k1: z(d.k1),
                k2: z(d.k2),
                p1: z(d.p1),
                p2: z(d.p2),
                k3: z(d.k3),
            })
        }
        "fisheye" | "equidistant" => {
            unused("p1", d.p1)?;
            unused("p2", d.p2)?;
            Ok(Distortion::Fisheye {
                k1: z(d.k1),
                k2: z(d.k2),
                k3: z(d.k3),
                k4: z(d.k4),
            })
        }
        other => Err(CalibError::InvalidField {
            origin: origin.to_string(),
            field: "distortion.model".into(),
            value: format!("\"{other}\""),
            reason: "expected \"none\", \"radial_tangential\" or \"fisheye\"".into(),
        }),
    }
}

impl Calibration {
    /// This calibration in lookout's TOML format ([`write`]).
    pub fn to_toml(&self) -> String {
        write(self)
    }
}

/// Writes `cal` as lookout TOML, commented, with full-precision numbers.
pub fn write(cal: &Calibration) -> String {
    let (w, h) = cal.image_size();
    let i = cal.intrinsics();
    let m = cal.mounting();
    let mut out = String::new();
    out.push_str("# lookout camera calibration (format: calibration/README.md)\n");
    out.push_str(&format!("version = {VERSION}\n"));
    out.push_str(&format!("name = {}\n", toml_string(cal.name())));
    let assumed = if cal.mounting_is_assumed() {
        "; mounting ASSUMED (the source had none): measure and edit [mounting]"
    } else {
        ""
    };
    out.push_str(&format!(
        "notes = {}\n\n",
        toml_string(&format!("converted from {}{assumed}", cal.origin()))
    ));
    out.push_str("# The image size the intrinsics refer to; other sizes of the same aspect ratio are scaled.\n");
    out.push_str(&format!("[image]\nwidth = {w}\nheight = {h}\n\n"));
    out.push_str("# Pinhole intrinsics, pixels.\n");
    out.push_str(&format!(
        "[intrinsics]\nfx = {:?}\nfy = {:?}\ncx = {:?}\ncy = {:?}\n\n",
        i.fx, i.fy, i.cx, i.cy
    ));
    let distortion = cal.distortion();
    out.push_str("# Lens distortion on normalised coordinates: none | radial_tangential (k1 k2 p1 p2 k3) | fisheye (k1..k4).\n");
    out.push_str(&format!(
        "[distortion]\nmodel = \"{}\"\n",
        distortion.model_name()
    ));
    for (field, value) in distortion_fields(&distortion) {
        out.push_str(&format!("{field} = {value:?}\n"));
    }
    out.push_str("\n# Camera height above the road (m); pitch positive = looking down; roll, yaw in degrees;\n");
    out.push_str(
        "# offsets: camera position right of / ahead of the vehicle's reference point (m).\n",
    );
    out.push_str(&format!(
        "[mounting]\nheight_m = {:?}\npitch_deg = {:?}\nroll_deg = {:?}\nyaw_deg = {:?}\nlateral_offset_m = {:?}\nlongitudinal_offset_m = {:?}\n",
        m.height_m, m.pitch_deg, m.roll_deg, m.yaw_deg, m.lateral_offset_m, m.longitudinal_offset_m
    ));
    out
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
version = 1
name = "test cam"
[image]
width = 1280
height = 720
[intrinsics]
fx = 1000.0
fy = 1000.0
cx = 640.0
cy = 360.0
[distortion]
model = "radial_tangential"
k1 = -0.1
k2 = 0.01
[mounting]
height_m = 1.3
pitch_deg = 2.0
"#;

    #[test]
    fn parses_and_round_trips() {
        let cal = parse(GOOD, "good.toml").unwrap();
        assert_eq!(cal.image_size(), (1280, 720));
        assert_eq!(cal.mounting().pitch_deg, 2.0);
        assert!(matches!(cal.distortion(), Distortion::RadialTangential { k1, .. } if k1 == -0.1));
        let again = parse(&cal.to_toml(), "good.toml").unwrap();
        assert_eq!(again.intrinsics(), cal.intrinsics());
        assert_eq!(again.distortion(), cal.distortion());
        assert_eq!(again.mounting(), cal.mounting());
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (GOOD.replace("fy = 1000.0\n", ""), "intrinsics.fy"),
            (GOOD.replace("fx = 1000.0", "fx = -5.0"), "intrinsics.fx"),
            (GOOD.replace("fx = 1000.0", "fx = nan"), "intrinsics.fx"),
            (GOOD.replace("height_m = 1.3\n", ""), "mounting.height_m"),
            (
                GOOD.replace("version = 1", "version = 7"),
                "unknown version 7",
            ),
            (GOOD.replace("version = 1", ""), "version"),
            (
                GOOD.replace("\"radial_tangential\"", "\"kb8\""),
                "distortion.model",
            ),
            (GOOD.replace("width = 1280", "width = 0"), "image.width"),
            (GOOD.replace("k2 = 0.01", "kk2 = 0.01"), "kk2"),
        ];
        for (text, needle) in cases {
            let err = parse(&text, "bad.toml").unwrap_err().to_string();
            assert!(
                err.contains(needle) && err.contains("bad.toml"),
                "{needle}: {err}"
            );
        }
    }
}
