//! Tracking metrics: tracks against ground truth, per class and overall.
//!
//! CLEAR MOT ([`clear`]: MOTA, MOTP, ID switches, fragmentations, MT/PT/ML) and the identity
//! measures ([`identity`]: IDF1, IDP, IDR) are py-motmetrics 1.4's, with pairs allowed at
//! IoU ≥ `iou_threshold` (0.5, as MOTChallenge) and MOTP its IoU-distance value, the mean
//! 1 − IoU of the matches (lower is better); HOTA ([`hota`]: DetA, AssA, LocA) is
//! TrackEval 1.3's. Both are reproduced to the assignment tie rules ([`lsap`]), and each
//! reference's own IoU formula is used, in f64, on the boxes as read (f32).
//!
//! - **Classes**: names compare case-insensitively with spaces as `_` and `person` ≡
//!   `pedestrian` ([`class_key`]). A class is scored on the ground-truth rows of that class
//!   against the predicted rows of that class. By default the classes are those of the
//!   ground truth (KITTI's benchmark classes are `--classes car,pedestrian`); predicted
//!   classes absent from the ground truth are then not scored. When some row on either side
//!   has no class (a MOTChallenge results file, a `gt.txt` without a class column), the
//!   evaluation is class-agnostic: one class `all`, where `classes` restricts the rows that
//!   do have a class.
//! - **Ignored rows** (KITTI `DontCare`, MOTChallenge ground truth with `consider` = 0, on
//!   either side) are dropped before scoring; there is no DontCare-region suppression.
//! - **Overall** combines the classes class-consistently: counts are summed over classes
//!   (motmetrics' OVERALL over per-class accumulators; MOTP = Σ (1 − IoU) / Σ matches), HOTA
//!   is TrackEval's `combine_classes_det_averaged` (AssA, AssRe, AssPr and LocA weighted by
//!   each class's true positives per α).
//! - A row with track id −1 that is not ignored is an error: detections are not tracks.

pub mod clear;
pub mod hota;
pub mod identity;
mod lsap;
pub mod noisy;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::trackfile::TrackRow;
use clear::{ClearAccumulator, ClearCounts};
use hota::{HotaCounts, HotaFrame};
use identity::{IdentityAccumulator, IdentityCounts};

/// What to score and how.
#[derive(Debug, Clone, PartialEq)]
pub struct EvalOptions {
    /// The least IoU of a match for CLEAR and identity measures (HOTA uses its own α).
    pub iou_threshold: f64,
    /// Classes to score; `None`: those of the ground truth.
    pub classes: Option<Vec<String>>,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            iou_threshold: 0.5,
            classes: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("IoU threshold {0} is outside (0, 1]")]
    IouThreshold(f64),
    #[error(
        "the {side} has a row with no track id (-1) in frame {frame} (0-based): \
         evaluate tracks, not untracked detections"
    )]
    Untracked { side: &'static str, frame: u64 },
    #[error("the {side} has track id {id} twice in frame {frame} (0-based)")]
    DuplicateId {
        side: &'static str,
        frame: u64,
        id: i64,
    },
    #[error("class `{name}` is in neither the ground truth nor the predictions (classes there: {known})")]
    UnknownClass { name: String, known: String },
}

/// The metrics of one class, or of all classes combined.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TrackMetrics {
    // CLEAR MOT (py-motmetrics).
    pub mota: f64,
    /// Mean 1 − IoU of the matches (motmetrics' `motp` for IoU distance).
    pub motp: f64,
    pub precision: f64,
    pub recall: f64,
    pub num_matches: u64,
    pub id_switches: u64,
    pub fragmentations: u64,
    pub num_false_positives: u64,
    pub num_misses: u64,
    /// Matches plus switches.
    pub num_detections: u64,
    /// Ground-truth boxes.
    pub num_gt: u64,
    /// Predicted boxes.
    pub num_pred: u64,
    pub num_unique_objects: u64,
    pub mostly_tracked: u64,
    pub partially_tracked: u64,
    pub mostly_lost: u64,
    pub num_transfer: u64,
    pub num_ascend: u64,
    pub num_migrate: u64,
    // Identity (py-motmetrics).
    pub idf1: f64,
    pub idp: f64,
    pub idr: f64,
    pub idtp: u64,
    pub idfp: u64,
    pub idfn: u64,
    // HOTA (TrackEval), means over α.
    pub hota: f64,
    pub deta: f64,
    pub assa: f64,
    pub loca: f64,
    pub detre: f64,
    pub detpr: f64,
    pub assre: f64,
    pub asspr: f64,
    pub owta: f64,
    /// HOTA, LocA and their product at α = 0.05.
    pub hota0: f64,
    pub loca0: f64,
    pub hotaloca0: f64,
}

impl TrackMetrics {
    pub fn from_counts(clear: &ClearCounts, identity: &IdentityCounts, hota: &HotaCounts) -> Self {
        let h = hota.summary();
        TrackMetrics {
            mota: clear.mota(),
            motp: clear.motp(),
            precision: clear.precision(),
            recall: clear.recall(),
            num_matches: clear.num_matches,
            id_switches: clear.num_switches,
            fragmentations: clear.num_fragmentations,
            num_false_positives: clear.num_false_positives,
            num_misses: clear.num_misses,
            num_detections: clear.num_detections(),
            num_gt: clear.num_objects,
            num_pred: clear.num_predictions,
            num_unique_objects: clear.num_unique_objects,
            mostly_tracked: clear.mostly_tracked,
            partially_tracked: clear.partially_tracked,
            mostly_lost: clear.mostly_lost,
            num_transfer: clear.num_transfer,
            num_ascend: clear.num_ascend,
            num_migrate: clear.num_migrate,
            idf1: identity.idf1(),
            idp: identity.idp(),
            idr: identity.idr(),
            idtp: identity.idtp,
            idfp: identity.idfp(),
            idfn: identity.idfn(),
            hota: h.hota,
            deta: h.deta,
            assa: h.assa,
            loca: h.loca,
            detre: h.detre,
            detpr: h.detpr,
            assre: h.assre,
            asspr: h.asspr,
            owta: h.owta,
            hota0: h.hota0,
            loca0: h.loca0,
            hotaloca0: h.hotaloca0,
        }
    }
}

/// The counts behind one class's metrics; they combine into the overall ones.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClassCounts {
    pub clear: ClearCounts,
    pub identity: IdentityCounts,
    pub hota: HotaCounts,
}

impl ClassCounts {
    pub fn metrics(&self) -> TrackMetrics {
        TrackMetrics::from_counts(&self.clear, &self.identity, &self.hota)
    }

    /// Classes combined (see the module doc).
    pub fn combine(parts: &[ClassCounts]) -> ClassCounts {
        let mut out = ClassCounts::default();
        for part in parts {
            out.clear.add(&part.clear);
            out.identity.add(&part.identity);
        }
        let hota: Vec<HotaCounts> = parts.iter().map(|p| p.hota.clone()).collect();
        out.hota = HotaCounts::combine(&hota);
        out
    }
}

/// Metrics per class (by [`class_key`], `all` when class-agnostic) and overall.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EvalReport {
    pub overall: TrackMetrics,
    pub classes: BTreeMap<String, TrackMetrics>,
}

/// The name a class is compared by: lower case, spaces as `_`, `person` as `pedestrian`.
pub fn class_key(name: &str) -> String {
    let key: String = name
        .trim()
        .chars()
        .map(|c| {
            if c.is_whitespace() {
                '_'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    if key == "person" {
        "pedestrian".to_string()
    } else {
        key
    }
}

/// The key of the single class of a class-agnostic evaluation.
pub const ALL_CLASSES: &str = "all";

/// Scores `pred` against `gt` (see the module doc for what is compared with what).
pub fn evaluate(
    gt: &[TrackRow],
    pred: &[TrackRow],
    options: &EvalOptions,
) -> Result<EvalReport, EvalError> {
    let threshold = options.iou_threshold;
    if !(threshold > 0.0 && threshold <= 1.0) {
        return Err(EvalError::IouThreshold(threshold));
    }
    let gt = Side::new("ground truth", gt)?;
    let pred = Side::new("predictions", pred)?;
    let agnostic = gt.has_classless || pred.has_classless;

    let requested: Option<Vec<String>> = options.classes.as_ref().map(|names| {
        let mut keys: Vec<String> = names.iter().map(|n| class_key(n)).collect();
        keys.sort();
        keys.dedup();
        keys
    });
    if let Some(keys) = &requested {
        for key in keys {
            if !gt.classes.contains_key(key) && !pred.classes.contains_key(key) {
                let mut known: Vec<&str> = gt
                    .classes
                    .keys()
                    .chain(pred.classes.keys())
                    .map(String::as_str)
                    .collect();
                known.sort_unstable();
                known.dedup();
                return Err(EvalError::UnknownClass {
                    name: key.clone(),
                    known: if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    },
                });
            }
        }
    }

    let mut classes = BTreeMap::new();
    let mut parts = Vec::new();
    if agnostic {
        let keep = |row: &&Scored| match (&requested, &row.class) {
            (Some(keys), Some(class)) => keys.binary_search(class).is_ok(),
            _ => true,
        };
        let gt_rows: Vec<&Scored> = gt.rows.iter().filter(keep).collect();
        let pred_rows: Vec<&Scored> = pred.rows.iter().filter(keep).collect();
        let counts = score_class(&gt_rows, &pred_rows, threshold)?;
        classes.insert(ALL_CLASSES.to_string(), counts.metrics());
        parts.push(counts);
    } else {
        let keys: Vec<String> = match requested {
            Some(keys) => keys,
            None => gt.classes.keys().cloned().collect(),
        };
        for key in keys {
            let gt_rows = gt.of_class(&key);
            let pred_rows = pred.of_class(&key);
            let counts = score_class(&gt_rows, &pred_rows, threshold)?;
            classes.insert(key, counts.metrics());
            parts.push(counts);
        }
    }
    Ok(EvalReport {
        overall: ClassCounts::combine(&parts).metrics(),
        classes,
    })
}

/// A row that is scored: its class key and box in f64.
#[derive(Debug)]
struct Scored {
    side: &'static str,
    frame: u64,
    id: i64,
    class: Option<String>,
    /// x1, y1, x2, y2.
    corners: [f64; 4],
}

struct Side {
    rows: Vec<Scored>,
    /// Class key → rows.
    classes: BTreeMap<String, usize>,
    has_classless: bool,
}

impl Side {
    fn new(side: &'static str, rows: &[TrackRow]) -> Result<Side, EvalError> {
        let mut out = Side {
            rows: Vec::with_capacity(rows.len()),
            classes: BTreeMap::new(),
            has_classless: false,
        };
        let mut keys: HashMap<&str, String> = HashMap::new();
        for row in rows.iter().filter(|r| !r.ignore) {
            if row.id < 0 {
                return Err(EvalError::Untracked {
                    side,
                    frame: row.frame,
                });
            }
            let class = row
                .class
                .as_deref()
                .map(|name| keys.entry(name).or_insert_with(|| class_key(name)).clone());
            match &class {
                Some(key) => *out.classes.entry(key.clone()).or_default() += 1,
                None => out.has_classless = true,
            }
            let b = &row.box_in_image;
            out.rows.push(Scored {
                side,
                frame: row.frame,
                id: row.id,
                class,
                corners: [b.x1 as f64, b.y1 as f64, b.x2 as f64, b.y2 as f64],
            });
        }
        Ok(out)
    }

    fn of_class(&self, key: &str) -> Vec<&Scored> {
        self.rows
            .iter()
            .filter(|r| r.class.as_deref() == Some(key))
            .collect()
    }
}

/// One frame of one class: ids and boxes in row order.
#[derive(Debug, Default)]
struct FrameRows<'a> {
    gt: Vec<&'a Scored>,
    pred: Vec<&'a Scored>,
}

/// CLEAR, identity and HOTA counts of one class.
fn score_class(gt: &[&Scored], pred: &[&Scored], threshold: f64) -> Result<ClassCounts, EvalError> {
    let mut frames: BTreeMap<u64, FrameRows> = BTreeMap::new();
    for row in gt {
        frames.entry(row.frame).or_default().gt.push(row);
    }
    for row in pred {
        frames.entry(row.frame).or_default().pred.push(row);
    }
    // motmetrics' iou_matrix(max_iou = 1 − threshold): pairs further than that are NaN.
    let max_distance = 1.0 - threshold;

    let mut clear = ClearAccumulator::default();
    let mut identity = IdentityAccumulator::default();
    let mut gt_index: HashMap<i64, usize> = HashMap::new();
    let mut pred_index: HashMap<i64, usize> = HashMap::new();
    // Per frame, for HOTA: dense ids and the IoU matrix, stored back to back.
    let mut hota_gt_ids: Vec<usize> = Vec::new();
    let mut hota_pred_ids: Vec<usize> = Vec::new();
    let mut hota_similarity: Vec<f64> = Vec::new();
    let mut hota_spans: Vec<[usize; 3]> = Vec::new();
    let (mut gt_ids, mut pred_ids, mut distances) = (Vec::new(), Vec::new(), Vec::new());

    for (&frame, rows) in &frames {
        for (side_rows, ids) in [(&rows.gt, &mut gt_ids), (&rows.pred, &mut pred_ids)] {
            ids.clear();
            ids.extend(side_rows.iter().map(|r| r.id));
            let mut sorted = ids.clone();
            sorted.sort_unstable();
            if let Some(pair) = sorted.windows(2).find(|w| w[0] == w[1]) {
                return Err(EvalError::DuplicateId {
                    side: side_rows[0].side,
                    frame,
                    id: pair[0],
                });
            }
        }
        distances.clear();
        let start = [
            hota_gt_ids.len(),
            hota_pred_ids.len(),
            hota_similarity.len(),
        ];
        for g in &rows.gt {
            for p in &rows.pred {
                let d = 1.0 - motmetrics_iou(&g.corners, &p.corners);
                distances.push(if d > max_distance { f64::NAN } else { d });
                hota_similarity.push(hota::box_iou(&g.corners, &p.corners));
            }
        }
        clear.update(&gt_ids, &pred_ids, &distances);
        identity.update(&gt_ids, &pred_ids, &distances);
        for id in &gt_ids {
            let next = gt_index.len();
            hota_gt_ids.push(*gt_index.entry(*id).or_insert(next));
        }
        for id in &pred_ids {
            let next = pred_index.len();
            hota_pred_ids.push(*pred_index.entry(*id).or_insert(next));
        }
        hota_spans.push(start);
    }

    let mut hota_frames = Vec::with_capacity(hota_spans.len());
    for (k, start) in hota_spans.iter().enumerate() {
        let end = hota_spans.get(k + 1).copied().unwrap_or([
            hota_gt_ids.len(),
            hota_pred_ids.len(),
            hota_similarity.len(),
        ]);
        hota_frames.push(HotaFrame {
            gt_ids: &hota_gt_ids[start[0]..end[0]],
            pred_ids: &hota_pred_ids[start[1]..end[1]],
            similarity: &hota_similarity[start[2]..end[2]],
        });
    }
    Ok(ClassCounts {
        clear: clear.counts(),
        identity: identity.counts(),
        hota: hota::eval_sequence(&hota_frames, gt_index.len(), pred_index.len()),
    })
}

/// motmetrics' `boxiou` on (x, y, w, h) boxes made from the corners.
fn motmetrics_iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let rect = |r: &[f64; 4]| {
        let (x, y, w, h) = (r[0], r[1], r[2] - r[0], r[3] - r[1]);
        ([x, y], [x + w, y + h])
    };
    let (a_min, a_max) = rect(a);
    let (b_min, b_max) = rect(b);
    let mut intersection = 1.0;
    let mut a_volume = 1.0;
    let mut b_volume = 1.0;
    for k in 0..2 {
        let lo = a_min[k].max(b_min[k]);
        let hi = a_max[k].min(b_max[k]);
        intersection *= (hi - lo).max(0.0);
        a_volume *= (a_max[k] - a_min[k]).max(0.0);
        b_volume *= (b_max[k] - b_min[k]).max(0.0);
    }
    if intersection == 0.0 {
        return 0.0;
    }
    intersection / (a_volume + b_volume - intersection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::BoxXyxy;
    use std::sync::Arc;

    fn row(frame: u64, id: i64, class: &str, x: f32) -> TrackRow {
        TrackRow {
            frame,
            id,
            class: (!class.is_empty()).then(|| Arc::from(class)),
            box_in_image: BoxXyxy::new(x, 0.0, x + 10.0, 10.0),
            score: 1.0,
            ignore: class == "DontCare",
        }
    }

    #[test]
    fn class_keys_alias_person_and_pedestrian() {
        assert_eq!(class_key("Pedestrian"), "pedestrian");
        assert_eq!(class_key("person"), "pedestrian");
        assert_eq!(class_key("traffic light"), "traffic_light");
        assert_eq!(class_key("Traffic_light"), "traffic_light");
    }

    #[test]
    fn scores_per_class_and_overall() {
        let gt = [
            row(0, 1, "Car", 0.0),
            row(0, 2, "Pedestrian", 50.0),
            row(0, -1, "DontCare", 100.0),
            row(1, 1, "Car", 1.0),
            row(1, 2, "Pedestrian", 51.0),
        ];
        let pred = [
            row(0, 7, "car", 0.0),
            row(0, 8, "person", 50.0),
            row(0, 9, "DontCare", 100.0),
            row(1, 7, "car", 1.0),
            row(1, 9, "car", 51.0),
        ];
        let report = evaluate(&gt, &pred, &EvalOptions::default()).unwrap();
        let names: Vec<&str> = report.classes.keys().map(String::as_str).collect();
        assert_eq!(names, ["car", "pedestrian"]);
        let car = &report.classes["car"];
        assert_eq!(
            (car.num_matches, car.num_false_positives, car.num_misses),
            (2, 1, 0)
        );
        assert_eq!(car.mota, 0.5);
        let ped = &report.classes["pedestrian"];
        assert_eq!((ped.num_matches, ped.num_misses), (1, 1));
        assert_eq!(report.overall.num_gt, 4);
        assert_eq!(report.overall.num_matches, 3);
        assert_eq!(report.overall.mota, 1.0 - 2.0 / 4.0);
        assert_eq!(report.overall.motp, 0.0);
    }

    #[test]
    fn classless_predictions_are_scored_against_every_class() {
        let gt = [row(0, 1, "Car", 0.0), row(0, 2, "Pedestrian", 50.0)];
        let pred = [row(0, 7, "", 0.0), row(0, 8, "", 50.0)];
        let report = evaluate(&gt, &pred, &EvalOptions::default()).unwrap();
        assert_eq!(report.classes.keys().collect::<Vec<_>>(), ["all"]);
        assert_eq!(report.overall.num_matches, 2);
        let only_cars = EvalOptions {
            classes: Some(vec!["CAR".into()]),
            ..EvalOptions::default()
        };
        let report = evaluate(&gt, &pred, &only_cars).unwrap();
        assert_eq!(report.overall.num_gt, 1);
        assert_eq!(report.overall.num_false_positives, 1);
    }

    #[test]
    fn bad_options_and_rows_are_errors() {
        let gt = [row(0, 1, "Car", 0.0)];
        let bad_iou = EvalOptions {
            iou_threshold: 0.0,
            ..EvalOptions::default()
        };
        assert!(matches!(
            evaluate(&gt, &gt, &bad_iou),
            Err(EvalError::IouThreshold(_))
        ));
        let unknown = EvalOptions {
            classes: Some(vec!["tram".into()]),
            ..EvalOptions::default()
        };
        let err = evaluate(&gt, &gt, &unknown).unwrap_err();
        assert_eq!(
            err.to_string(),
            "class `tram` is in neither the ground truth nor the predictions (classes there: car)"
        );
        let untracked = [row(3, -1, "Car", 0.0)];
        assert!(matches!(
            evaluate(&gt, &untracked, &EvalOptions::default()),
            Err(EvalError::Untracked { frame: 3, .. })
        ));
        let twice = [row(0, 4, "Car", 0.0), row(0, 4, "Car", 5.0)];
        assert!(matches!(
            evaluate(&gt, &twice, &EvalOptions::default()),
            Err(EvalError::DuplicateId { id: 4, .. })
        ));
    }

    #[test]
    fn an_empty_prediction_misses_everything() {
        let gt = [row(0, 1, "Car", 0.0), row(1, 1, "Car", 0.0)];
        let report = evaluate(&gt, &[], &EvalOptions::default()).unwrap();
        let m = report.overall;
        assert_eq!(
            (m.num_misses, m.mota, m.idf1, m.hota, m.loca),
            (2, 0.0, 0.0, 0.0, 1.0)
        );
        assert!(m.motp.is_nan());
    }
}
