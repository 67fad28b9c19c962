//! Scores [`estimate_distance`] on KITTI ground truth: the labels' 2D boxes go in, their 3D
//! location comes out as the reference.
//!
//! Reads object-benchmark labels (`type trunc occ alpha x1 y1 x2 y2 h w l x y z ry`) and
//! tracking labels (the same after `frame track_id`). The reference is the location's `z`
//! (distance ahead of the reference camera), or the ground distance `hypot(x, z)`.

use super::{estimate_distance, Calibration, DistanceMethod};
use crate::types::BoxXyxy;
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why a label file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    #[error("cannot read KITTI label file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("KITTI label file {path}, line {line}: {reason}")]
    Format {
        path: PathBuf,
        line: usize,
        reason: String,
    },
}

/// One KITTI ground-truth object.
#[derive(Debug, Clone, PartialEq)]
pub struct KittiLabel {
    /// Frame number (tracking labels; 0 for the object benchmark).
    pub frame: u32,
    /// Track id (tracking labels; −1 for the object benchmark and DontCare).
    pub track_id: i64,
    pub class: String,
    pub truncation: f64,
    pub occlusion: i64,
    pub box_in_image: BoxXyxy,
    /// Bottom centre of the 3D box in the reference camera frame (x right, y down, z ahead), m.
    pub location: [f64; 3],
    /// 3D box height, width, length, m.
    pub dimensions: [f64; 3],
}

/// Reads a KITTI object or tracking label file (told apart by the column count).
pub fn read_kitti_labels(path: &Path) -> Result<Vec<KittiLabel>, LabelError> {
    let text = std::fs::read_to_string(path).map_err(|source| LabelError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_kitti_labels(&text, path)
}

/// Parses label text; `path` names the file in errors.
pub fn parse_kitti_labels(text: &str, path: &Path) -> Result<Vec<KittiLabel>, LabelError> {
    let mut labels = vec![];
    for (n, line) in text.lines().enumerate() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.is_empty() {
            continue;
        }
        let bad = |reason: String| LabelError::Format {
            path: path.to_path_buf(),
            line: n + 1,
            reason,
        };
        // Object: 15 columns (16 with a score); tracking: 17 (18 with a score).
        let (frame, track_id, rest) = match fields.len() {
            15 | 16 => (0, -1, &fields[..]),
            17 | 18 => {
                let frame = fields[0]
                    .parse()
                    .map_err(|_| bad(format!("frame `{}` is not a number", fields[0])))?;
                let track = fields[1]
                    .parse()
                    .map_err(|_| bad(format!("track id `{}` is not a number", fields[1])))?;
                (frame, track, &fields[2..])
            }
            count => {
                return Err(bad(format!(
                    "{count} columns; expected 15 (object benchmark) or 17 (tracking)"
                )))
            }
        };
        let num = |i: usize| -> Result<f64, LabelError> {
            rest[i]
                .parse()
                .map_err(|_| bad(format!("column {} `{}` is not a number", i + 1, rest[i])))
        };
        labels.push(KittiLabel {
            frame,
            track_id,
            class: rest[0].to_string(),
            truncation: num(1)?,
            occlusion: num(2)? as i64,
            box_in_image: BoxXyxy::new(
                num(4)? as f32,
                num(5)? as f32,
                num(6)? as f32,
                num(7)? as f32,
            ),
            dimensions: [num(8)?, num(9)?, num(10)?],
            location: [num(11)?, num(12)?, num(13)?],
        });
    }
    Ok(labels)
}

/// What the estimate is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reference {
    /// The label's z: distance ahead of the camera.
    Z,
    /// The ground distance hypot(x, z).
    Ground,
}

/// Which labels are scored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalFilter {
    pub max_distance_m: f64,
    pub max_truncation: f64,
    pub max_occlusion: i64,
    pub reference: Reference,
}

impl Default for EvalFilter {
    fn default() -> Self {
        Self {
            max_distance_m: 50.0,
            max_truncation: 0.3,
            max_occlusion: 1,
            reference: Reference::Z,
        }
    }
}

/// Error statistics of one group of objects.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorStats {
    pub count: usize,
    pub median_rel_error: f64,
    pub p90_rel_error: f64,
    /// Median signed relative error (estimate − truth) / truth: the bias.
    pub median_signed_rel_error: f64,
}

/// The result of an evaluation, serialised as `lookout eval distance --json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DistanceEvalReport {
    pub overall: ErrorStats,
    pub per_class: BTreeMap<String, ErrorStats>,
    /// How often each method decided, by name.
    pub per_method: BTreeMap<String, usize>,
    /// Labels that passed the filter but got no estimate.
    pub no_estimate: usize,
}

/// Runs the estimator on every label that passes `filter`, in frames of the calibration's size.
pub fn evaluate(
    cal: &Calibration,
    labels: &[KittiLabel],
    filter: &EvalFilter,
) -> DistanceEvalReport {
    let (image_w, image_h) = cal.image_size();
    let mut errors: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut per_method: BTreeMap<String, usize> = BTreeMap::new();
    let mut no_estimate = 0;
    for label in labels.iter().filter(|l| passes(l, filter)) {
        let truth = match filter.reference {
            Reference::Z => label.location[2],
            Reference::Ground => label.location[0].hypot(label.location[2]),
        };
        let Some(est) = estimate_distance(cal, &label.box_in_image, &label.class, image_w, image_h)
        else {
            no_estimate += 1;
            continue;
        };
        let estimate = match filter.reference {
            Reference::Z => est.distance_m,
            Reference::Ground => est.distance_m.hypot(est.lateral_m),
        };
        *per_method.entry(method_name(est.method)).or_default() += 1;
        errors
            .entry(label.class.clone())
            .or_default()
            .push((estimate - truth) / truth);
    }
    let all: Vec<f64> = errors.values().flatten().copied().collect();
    DistanceEvalReport {
        overall: stats(&all),
        per_class: errors.iter().map(|(k, v)| (k.clone(), stats(v))).collect(),
        per_method,
        no_estimate,
    }
}

fn method_name(method: DistanceMethod) -> String {
    method.name().to_string()
}

fn passes(label: &KittiLabel, filter: &EvalFilter) -> bool {
    label.class != "DontCare"
        && label.location[2] > 0.0
        && label.location[2] <= filter.max_distance_m
        && label.truncation <= filter.max_truncation
        && label.occlusion <= filter.max_occlusion
}

fn stats(signed: &[f64]) -> ErrorStats {
    let mut abs: Vec<f64> = signed.iter().map(|e| e.abs()).collect();
    let mut sorted_signed = signed.to_vec();
    ErrorStats {
        count: signed.len(),
        median_rel_error: quantile(&mut abs, 0.5),
        p90_rel_error: quantile(&mut abs, 0.9),
        median_signed_rel_error: quantile(&mut sorted_signed, 0.5),
    }
}

/// Linear-interpolated quantile; NaN for an empty list.
fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let pos = q * (values.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    values[lo] + (values[hi] - values[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_object_and_tracking_lines() {
        let text = "Car 0.00 0 1.85 387.63 181.54 423.81 203.12 1.67 1.87 3.69 -16.53 2.39 58.49 1.57\n\
                    3 7 Pedestrian 0 1 -2.5 1106.1 166.5 1204.4 323.8 1.71 0.76 0.97 6.30 1.65 8.45 -1.90\n";
        let labels = parse_kitti_labels(text, Path::new("l.txt")).unwrap();
        assert_eq!(labels[0].class, "Car");
        assert_eq!(labels[0].location[2], 58.49);
        assert_eq!(
            (labels[1].frame, labels[1].track_id, labels[1].occlusion),
            (3, 7, 1)
        );
        let err = parse_kitti_labels("Car 0 0\n", Path::new("l.txt")).unwrap_err();
        assert!(err.to_string().contains("line 1"), "{err}");
    }

    #[test]
    fn quantiles_interpolate() {
        let mut v = vec![3.0, 1.0, 2.0, 4.0];
        assert_eq!(quantile(&mut v, 0.5), 2.5);
        assert!(quantile(&mut [], 0.5).is_nan());
    }
}
