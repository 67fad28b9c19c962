//! `lookout calib show` and `lookout eval distance`: flags, and the functions that run them.
//!
//! `calib show` prints a parsed calibration (fields of view, principal point, horizon row for
//! the given pitch) or converts it to lookout TOML; `eval distance` scores the distance
//! estimator on KITTI ground-truth boxes and prints per-class relative errors.

use crate::calib::eval::{evaluate, read_kitti_labels, DistanceEvalReport, EvalFilter, Reference};
use crate::calib::{Calibration, Distortion};
use anyhow::Context;
use std::path::PathBuf;

/// Mounting flags shared by both commands (they override what the file says, in any format).
#[derive(Debug, Clone, clap::Args)]
pub struct MountingOverrideArgs {
    /// Camera height above the road in metres (overrides the file; KITTI files default to 1.65).
    #[arg(long, value_name = "METRES")]
    pub camera_height: Option<f64>,
    /// Camera pitch in degrees, positive = looking down (overrides the file; default level).
    #[arg(long, value_name = "DEGREES", allow_hyphen_values = true)]
    pub camera_pitch: Option<f64>,
}

impl MountingOverrideArgs {
    /// Loads `path` and applies the overrides.
    pub fn load(&self, path: &std::path::Path) -> anyhow::Result<Calibration> {
        let cal = Calibration::load(path)?;
        Ok(cal.with_mounting_override(self.camera_height, self.camera_pitch)?)
    }
}

/// `lookout calib show FILE`
#[derive(Debug, Clone, clap::Args)]
pub struct CalibShowArgs {
    /// Calibration file: lookout TOML, OpenCV FileStorage or ROS camera_info YAML, KITTI calib .txt.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    #[command(flatten)]
    pub mounting: MountingOverrideArgs,
    /// Show the intrinsics scaled to this stream size, WIDTHxHEIGHT (same aspect ratio).
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub image_size: Option<(u32, u32)>,
    /// Print the calibration as lookout TOML instead (to convert another format).
    #[arg(long)]
    pub toml: bool,
}

/// `lookout eval distance --calib FILE --labels LABELS...`
#[derive(Debug, Clone, clap::Args)]
pub struct EvalDistanceArgs {
    /// Calibration of the camera the labels were made with (any supported format).
    #[arg(long, value_name = "FILE")]
    pub calib: PathBuf,
    /// KITTI label files, object (`label_2/*.txt`) or tracking (`label_02/*.txt`) format.
    #[arg(long, value_name = "KITTI_LABEL_FILE", required = true, num_args = 1..)]
    pub labels: Vec<PathBuf>,
    /// Score only objects at most this far ahead (label z), metres.
    #[arg(long, default_value_t = 50.0, value_name = "METRES")]
    pub max_distance: f64,
    /// Score only objects truncated at most this much (KITTI's 0..1 truncation).
    #[arg(long, default_value_t = 0.3)]
    pub max_truncation: f64,
    /// Score only objects occluded at most this much (KITTI's 0 visible .. 3 unknown).
    #[arg(long, default_value_t = 1)]
    pub max_occlusion: i64,
    /// Reference distance: the label's z (ahead) or the ground distance hypot(x, z).
    #[arg(long, value_enum, default_value_t = Reference::Z)]
    pub reference: Reference,
    #[command(flatten)]
    pub mounting: MountingOverrideArgs,
    /// Print JSON: {"overall": {count, median_rel_error, p90_rel_error, ...}, "per_class": {...}}.
    #[arg(long)]
    pub json: bool,
}

fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let (w, h) = text
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("`{text}` is not WIDTHxHEIGHT, e.g. 1280x720"))?;
    let w: u32 = w
        .trim()
        .parse()
        .map_err(|_| format!("bad width in `{text}`"))?;
    let h: u32 = h
        .trim()
        .parse()
        .map_err(|_| format!("bad height in `{text}`"))?;
    Ok((w, h))
}

/// Runs `lookout calib show`.
pub fn run_calib_show(args: &CalibShowArgs) -> anyhow::Result<()> {
    let mut cal = args.mounting.load(&args.file)?;
    if let Some((w, h)) = args.image_size {
        cal = cal.for_image_size(w, h)?;
    }
    if args.toml {
        print!("{}", cal.to_toml());
    } else {
        print!("{}", describe(&cal));
    }
    Ok(())
}

/// The human-readable summary `calib show` prints.
pub fn describe(cal: &Calibration) -> String {
    let (w, h) = cal.image_size();
    let i = cal.intrinsics();
    let m = cal.mounting();
    let (hfov, vfov) = cal.fov_deg();
    // Rows as they appear in the camera's own (distorted) image.
    let horizon = cal.distort_pixel(cal.intrinsics().cx, cal.horizon_row()).1;
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!("calibration:     {}", cal.origin()));
    if !cal.name().is_empty() {
        line(format!("name:            {}", cal.name()));
    }
    line(format!("image size:      {w}x{h}"));
    line(format!(
        "focal length:    fx {:.3} px, fy {:.3} px",
        i.fx, i.fy
    ));
    line(format!(
        "principal point: ({:.2}, {:.2}) px, {:+.1} / {:+.1} px from the image centre",
        i.cx,
        i.cy,
        i.cx - w as f64 / 2.0,
        i.cy - h as f64 / 2.0
    ));
    line(format!(
        "field of view:   {hfov:.1}° horizontal, {vfov:.1}° vertical"
    ));
    line(format!(
        "distortion:      {}",
        describe_distortion(&cal.distortion())
    ));
    let assumed = if cal.mounting_is_assumed() {
        " (ASSUMED: the file has none; pass --camera-height/--camera-pitch)"
    } else {
        ""
    };
    line(format!(
        "mounting:        {:.3} m above the road, pitch {:+.2}°, roll {:+.2}°, yaw {:+.2}°{assumed}",
        m.height_m, m.pitch_deg, m.roll_deg, m.yaw_deg
    ));
    if m.lateral_offset_m != 0.0 || m.longitudinal_offset_m != 0.0 {
        line(format!(
            "offsets:         camera {:+.3} m right, {:+.3} m ahead of the vehicle reference point",
            m.lateral_offset_m, m.longitudinal_offset_m
        ));
    }
    let where_ = if horizon < 0.0 || horizon > h as f64 {
        " (outside the image)"
    } else {
        ""
    };
    line(format!(
        "horizon row:     {horizon:.1} px at the principal column{where_}"
    ));
    for ahead in [10.0, 20.0, 50.0] {
        if let Some((_, v)) = cal.pixel_from_level([0.0, m.height_m, ahead]) {
            line(format!("road at {ahead:>3.0} m:   row {v:.1}"));
        }
    }
    out
}

fn describe_distortion(d: &Distortion) -> String {
    match *d {
        Distortion::None => "none (rectified / pinhole)".into(),
        Distortion::RadialTangential { k1, k2, p1, p2, k3 } => {
            format!("radial-tangential k1 {k1:.6} k2 {k2:.6} p1 {p1:.6} p2 {p2:.6} k3 {k3:.6}")
        }
        Distortion::Fisheye { k1, k2, k3, k4 } => {
            format!("fisheye k1 {k1:.6} k2 {k2:.6} k3 {k3:.6} k4 {k4:.6}")
        }
    }
}

/// Runs the evaluation behind `lookout eval distance` and returns its report.
pub fn eval_distance(args: &EvalDistanceArgs) -> anyhow::Result<DistanceEvalReport> {
    let cal = args.mounting.load(&args.calib)?;
    let mut labels = vec![];
    for path in &args.labels {
        labels.extend(
            read_kitti_labels(path).with_context(|| "reading ground truth for eval distance")?,
        );
    }
    let filter = EvalFilter {
        max_distance_m: args.max_distance,
        max_truncation: args.max_truncation,
        max_occlusion: args.max_occlusion,
        reference: args.reference,
    };
    Ok(evaluate(&cal, &labels, &filter))
}

/// Runs `lookout eval distance` and prints a table or JSON.
pub fn run_eval_distance(args: &EvalDistanceArgs) -> anyhow::Result<()> {
    let report = eval_distance(args)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", format_report(&report));
    }
    Ok(())
}

/// The table `eval distance` prints without `--json`.
pub fn format_report(report: &DistanceEvalReport) -> String {
    let mut out = format!(
        "{:<16} {:>6} {:>10} {:>10} {:>10}\n",
        "class", "count", "median", "p90", "bias"
    );
    let row = |name: &str, s: &crate::calib::eval::ErrorStats| {
        format!(
            "{:<16} {:>6} {:>9.1}% {:>9.1}% {:>+9.1}%\n",
            name,
            s.count,
            100.0 * s.median_rel_error,
            100.0 * s.p90_rel_error,
            100.0 * s.median_signed_rel_error
        )
    };
    for (class, stats) in &report.per_class {
        out.push_str(&row(class, stats));
    }
    out.push_str(&row("overall", &report.overall));
    let methods: Vec<String> = report
        .per_method
        .iter()
        .map(|(m, n)| format!("{m} {n}"))
        .collect();
    out.push_str(&format!("methods: {}", methods.join(", ")));
    if report.no_estimate > 0 {
        out.push_str(&format!("; no estimate for {}", report.no_estimate));
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Show {
        #[command(flatten)]
        args: CalibShowArgs,
    }

    #[derive(Parser)]
    struct Eval {
        #[command(flatten)]
        args: EvalDistanceArgs,
    }

    #[test]
    fn flags_parse_with_defaults() {
        let show = Show::parse_from([
            "x",
            "cam.toml",
            "--camera-pitch",
            "-1.5",
            "--image-size",
            "640x360",
        ]);
        assert_eq!(show.args.mounting.camera_pitch, Some(-1.5));
        assert_eq!(show.args.image_size, Some((640, 360)));
        let eval = Eval::parse_from([
            "x", "--calib", "c.txt", "--labels", "a.txt", "b.txt", "--json",
        ]);
        assert_eq!(eval.args.labels.len(), 2);
        assert_eq!(eval.args.max_distance, 50.0);
        assert_eq!(eval.args.reference, Reference::Z);
        assert!(eval.args.json);
    }

    #[test]
    fn describe_shows_the_horizon_for_the_given_pitch() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("calibration/kitti-2011_09_26-cam2.toml");
        let show = Show::parse_from(["x", path.to_str().unwrap(), "--camera-pitch", "1.0"]);
        let cal = show.args.mounting.load(&show.args.file).unwrap();
        let text = describe(&cal);
        let horizon = 172.854 - 721.5377 * 1f64.to_radians().tan();
        assert!(
            text.contains(&format!("horizon row:     {horizon:.1} px")),
            "{text}"
        );
        assert!(text.contains("field of view:   81.4° horizontal"), "{text}");
    }

    #[test]
    fn eval_distance_reports_per_class_json() {
        let (Some(calib), Some(labels)) = (
            crate::fixtures::require("kitti/tracking/calib_2011_09_26_cam2.txt"),
            crate::fixtures::require("kitti/tracking/label_02/0000.txt"),
        ) else {
            return;
        };
        let eval = Eval::parse_from([
            "x",
            "--calib",
            calib.to_str().unwrap(),
            "--labels",
            labels.to_str().unwrap(),
        ]);
        let report = eval_distance(&eval.args).unwrap();
        let json = serde_json::to_value(&report).unwrap();
        assert!(json["overall"]["count"].as_u64().unwrap() > 400, "{json}");
        assert!(
            json["per_class"]["Car"]["p90_rel_error"].is_number(),
            "{json}"
        );
        let table = format_report(&report);
        assert!(
            table.contains("overall") && table.contains("Van"),
            "{table}"
        );
    }
}
