//! CLEAR MOT counts as py-motmetrics 1.4 `MOTAccumulator.update` makes them, frame by frame.
//!
//! Per frame: (1) each object whose last matched hypothesis is present and within the
//! threshold keeps it (a MATCH); (2) the remaining pairs are assigned by minimum total
//! distance, maximising the number of pairs first (motmetrics' "expensive edges" for
//! do-not-pair entries); a pair whose object was last matched to another hypothesis is a
//! SWITCH, otherwise a MATCH; (3) unassigned objects are misses, unassigned hypotheses false
//! positives. Fragmentations count, per object, the runs of misses between its first and last
//! tracked frame. MOTP is motmetrics' for IoU distance: the mean of 1 − IoU over matches and
//! switches (lower is better).

use std::collections::{HashMap, HashSet};

use serde::Serialize;

use super::lsap::Lsap;

/// Event counts of one or more accumulators (sums combine classes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ClearCounts {
    pub num_matches: u64,
    pub num_switches: u64,
    pub num_false_positives: u64,
    pub num_misses: u64,
    /// Ground-truth boxes (motmetrics' `num_objects`).
    pub num_objects: u64,
    /// Predicted boxes (motmetrics' `num_predictions`).
    pub num_predictions: u64,
    pub num_unique_objects: u64,
    pub num_fragmentations: u64,
    pub num_transfer: u64,
    pub num_ascend: u64,
    pub num_migrate: u64,
    pub mostly_tracked: u64,
    pub partially_tracked: u64,
    pub mostly_lost: u64,
    /// Σ (1 − IoU) over matches and switches.
    pub distance_sum: f64,
}

impl ClearCounts {
    pub fn add(&mut self, other: &ClearCounts) {
        self.num_matches += other.num_matches;
        self.num_switches += other.num_switches;
        self.num_false_positives += other.num_false_positives;
        self.num_misses += other.num_misses;
        self.num_objects += other.num_objects;
        self.num_predictions += other.num_predictions;
        self.num_unique_objects += other.num_unique_objects;
        self.num_fragmentations += other.num_fragmentations;
        self.num_transfer += other.num_transfer;
        self.num_ascend += other.num_ascend;
        self.num_migrate += other.num_migrate;
        self.mostly_tracked += other.mostly_tracked;
        self.partially_tracked += other.partially_tracked;
        self.mostly_lost += other.mostly_lost;
        self.distance_sum += other.distance_sum;
    }

    /// Matches plus switches.
    pub fn num_detections(&self) -> u64 {
        self.num_matches + self.num_switches
    }

    /// 1 − (misses + switches + false positives) / ground-truth boxes (NaN or −∞ without
    /// ground truth, as motmetrics).
    pub fn mota(&self) -> f64 {
        1.0 - (self.num_misses + self.num_switches + self.num_false_positives) as f64
            / self.num_objects as f64
    }

    /// Mean 1 − IoU of the matched pairs.
    pub fn motp(&self) -> f64 {
        self.distance_sum / self.num_detections() as f64
    }

    pub fn precision(&self) -> f64 {
        let detections = self.num_detections() as f64;
        detections / (self.num_false_positives as f64 + detections)
    }

    pub fn recall(&self) -> f64 {
        self.num_detections() as f64 / self.num_objects as f64
    }
}

/// What one ground-truth object went through.
#[derive(Debug, Default, Clone, Copy)]
struct ObjectHistory {
    occurrences: u64,
    tracked: u64,
    /// Tracked at its latest occurrence.
    tracked_last: bool,
    /// A run of misses began after a tracked occurrence and has not yet been closed.
    gap_open: bool,
    fragmentations: u64,
}

/// motmetrics' `MOTAccumulator` for one sequence (and one class).
#[derive(Debug, Default)]
pub struct ClearAccumulator {
    /// Object → the hypothesis it was last matched to (`m`).
    hypothesis_of: HashMap<i64, i64>,
    /// Hypothesis → the object it was last matched to (`res_m`).
    object_of: HashMap<i64, i64>,
    /// Objects matched at least once (`last_match`).
    matched_objects: HashSet<i64>,
    /// Hypotheses matched at least once (`hypHistory`).
    matched_hypotheses: HashSet<i64>,
    objects: HashMap<i64, ObjectHistory>,
    counts: ClearCounts,
    lsap: Lsap,
    work: Vec<f64>,
    pairs: Vec<(usize, usize)>,
    object_done: Vec<bool>,
    hypothesis_done: Vec<bool>,
}

impl ClearAccumulator {
    /// One frame: object ids, hypothesis ids (each unique in the frame) and the row-major
    /// `objects × hypotheses` distances, NaN for pairs that may not match.
    pub fn update(&mut self, object_ids: &[i64], hypothesis_ids: &[i64], distances: &[f64]) {
        let (no, nh) = (object_ids.len(), hypothesis_ids.len());
        debug_assert_eq!(distances.len(), no * nh);
        self.object_done.clear();
        self.object_done.resize(no, false);
        self.hypothesis_done.clear();
        self.hypothesis_done.resize(nh, false);

        if no * nh > 0 {
            // 1. Keep last matches that are still possible.
            for (i, o) in object_ids.iter().enumerate() {
                let Some(&previous) = self.hypothesis_of.get(o) else {
                    continue;
                };
                let Some(j) =
                    (0..nh).find(|&j| !self.hypothesis_done[j] && hypothesis_ids[j] == previous)
                else {
                    continue;
                };
                let d = distances[i * nh + j];
                if d.is_finite() {
                    self.object_done[i] = true;
                    self.hypothesis_done[j] = true;
                    self.counts.num_matches += 1;
                    self.counts.distance_sum += d;
                    self.matched_objects.insert(*o);
                    self.matched_hypotheses.insert(previous);
                }
            }

            // 2. Assign the rest.
            self.work.clear();
            self.work.extend_from_slice(distances);
            for i in 0..no {
                for j in 0..nh {
                    if self.object_done[i] || self.hypothesis_done[j] {
                        self.work[i * nh + j] = f64::NAN;
                    }
                }
            }
            motmetrics_assignment(&mut self.lsap, &mut self.work, no, nh, &mut self.pairs);
            for &(i, j) in &self.pairs {
                let d = distances[i * nh + j];
                let (o, h) = (object_ids[i], hypothesis_ids[j]);
                let switch = self.hypothesis_of.get(&o).is_some_and(|&prev| prev != h);
                if switch && !self.matched_hypotheses.contains(&h) {
                    self.counts.num_ascend += 1;
                }
                let transfer = self.object_of.get(&h).is_some_and(|&prev| prev != o);
                if transfer {
                    if !self.matched_objects.contains(&o) {
                        self.counts.num_migrate += 1;
                    }
                    self.counts.num_transfer += 1;
                }
                self.matched_hypotheses.insert(h);
                self.matched_objects.insert(o);
                if switch {
                    self.counts.num_switches += 1;
                } else {
                    self.counts.num_matches += 1;
                }
                self.counts.distance_sum += d;
                self.object_done[i] = true;
                self.hypothesis_done[j] = true;
                self.hypothesis_of.insert(o, h);
                self.object_of.insert(h, o);
            }
        }

        // 3. and 4. Misses and false positives; each object's history.
        for (i, o) in object_ids.iter().enumerate() {
            let history = self.objects.entry(*o).or_default();
            history.occurrences += 1;
            if self.object_done[i] {
                history.tracked += 1;
                if history.gap_open {
                    history.fragmentations += 1;
                    history.gap_open = false;
                }
            } else {
                self.counts.num_misses += 1;
                if history.tracked_last {
                    history.gap_open = true;
                }
            }
            history.tracked_last = self.object_done[i];
        }
        self.counts.num_false_positives +=
            self.hypothesis_done.iter().filter(|d| !**d).count() as u64;
        self.counts.num_objects += no as u64;
        self.counts.num_predictions += nh as u64;
    }

    /// The counts so far, with the per-object ones (fragmentations, mostly tracked/lost).
    pub fn counts(&self) -> ClearCounts {
        let mut counts = self.counts;
        counts.num_unique_objects = self.objects.len() as u64;
        for history in self.objects.values() {
            counts.num_fragmentations += history.fragmentations;
            let ratio = history.tracked as f64 / history.occurrences as f64;
            if ratio >= 0.8 {
                counts.mostly_tracked += 1;
            } else if ratio >= 0.2 {
                counts.partially_tracked += 1;
            } else {
                counts.mostly_lost += 1;
            }
        }
        counts
    }
}

/// motmetrics' `linear_sum_assignment` with SciPy: NaN entries become an expensive finite
/// edge (`2·r·c + 1`, `c` = 1 + the largest |distance|, `r` = min(rows, cols)), so that the
/// most pairs are made first and the least total distance among those; pairs on NaN entries
/// are dropped. `costs` is overwritten.
pub(crate) fn motmetrics_assignment(
    lsap: &mut Lsap,
    costs: &mut [f64],
    rows: usize,
    cols: usize,
    pairs: &mut Vec<(usize, usize)>,
) {
    pairs.clear();
    if costs.is_empty() {
        return;
    }
    let valid = costs.iter().filter(|c| c.is_finite()).count();
    if valid == 0 {
        return;
    }
    let mut invalid = std::mem::take(pairs);
    if valid < costs.len() {
        let largest = costs
            .iter()
            .filter(|c| c.is_finite())
            .fold(0.0f64, |m, c| m.max(c.abs()));
        let c = largest + 1.0;
        let expensive = (2 * rows.min(cols)) as f64 * c + 1.0;
        for (k, cost) in costs.iter_mut().enumerate() {
            if !cost.is_finite() {
                *cost = expensive;
                invalid.push((k / cols, k % cols));
            }
        }
    }
    lsap.solve(costs, rows, cols, pairs);
    if !invalid.is_empty() {
        invalid.sort_unstable();
        pairs.retain(|pair| invalid.binary_search(pair).is_err());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: f64 = f64::NAN;

    #[test]
    fn an_id_switch_and_a_fragmentation() {
        let mut acc = ClearAccumulator::default();
        acc.update(&[1, 2], &[10, 20], &[0.1, NAN, NAN, 0.2]);
        // Object 1 is now covered by hypothesis 20 only: a switch; object 2 is missed.
        acc.update(&[1, 2], &[20], &[0.3, NAN]);
        // Object 2 found again by 20, its last match: a match after a miss, a fragmentation.
        acc.update(&[1, 2], &[30, 20], &[NAN, NAN, NAN, 0.1]);
        let c = acc.counts();
        assert_eq!(c.num_matches, 3);
        assert_eq!(c.num_switches, 1);
        assert_eq!(c.num_transfer, 1);
        assert_eq!(c.num_misses, 2);
        assert_eq!(c.num_false_positives, 1);
        assert_eq!(c.num_fragmentations, 1);
        assert_eq!(c.num_objects, 6);
        assert_eq!(c.num_predictions, 5);
        assert!((c.motp() - 0.7 / 4.0).abs() < 1e-12);
        assert!((c.mota() - (1.0 - 4.0 / 6.0)).abs() < 1e-12);
    }

    #[test]
    fn previous_matches_win_over_a_cheaper_assignment() {
        let mut acc = ClearAccumulator::default();
        acc.update(&[1], &[10], &[0.4]);
        acc.update(&[1], &[10, 20], &[0.45, 0.0]);
        let c = acc.counts();
        assert_eq!(
            (c.num_matches, c.num_switches, c.num_false_positives),
            (2, 0, 1)
        );
    }

    /// Regression: motmetrics' NaN handling (expensive edges, then dropped) and SciPy's ties
    /// (`tests/data/track_eval/lsap_scipy.json`, from scripts/track-eval-reference).
    #[test]
    fn assignments_with_forbidden_pairs_match_motmetrics() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/track_eval/lsap_scipy.json"
        );
        let cases: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        let cases = cases["motmetrics"].as_array().unwrap();
        assert!(cases.len() >= 100);
        let mut pairs = Vec::new();
        for case in cases {
            let rows = case["rows"].as_u64().unwrap() as usize;
            let cols = case["cols"].as_u64().unwrap() as usize;
            let mut cost: Vec<f64> = case["cost"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap_or(NAN))
                .collect();
            let expected: Vec<(usize, usize)> = case["pairs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    (
                        p[0].as_u64().unwrap() as usize,
                        p[1].as_u64().unwrap() as usize,
                    )
                })
                .collect();
            let shown = format!("{cost:?} {rows}x{cols}");
            motmetrics_assignment(&mut Lsap::default(), &mut cost, rows, cols, &mut pairs);
            assert_eq!(pairs, expected, "{shown}");
        }
    }

    #[test]
    fn the_most_pairs_come_before_the_least_distance() {
        let mut pairs = Vec::new();
        let mut costs = [0.0, 0.4, 0.1, NAN];
        motmetrics_assignment(&mut Lsap::default(), &mut costs, 2, 2, &mut pairs);
        assert_eq!(pairs, vec![(0, 1), (1, 0)]);
    }
}
