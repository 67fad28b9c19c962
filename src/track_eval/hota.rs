//! HOTA (DetA, AssA, LocA and their recall/precision parts) as TrackEval 1.3's
//! `HOTA.eval_sequence`, at the 19 thresholds α = 0.05, 0.10, …, 0.95 (`np.arange(0.05,
//! 0.99, 0.05)`); reported values are means over α.
//!
//! Two passes over the sequence: the first sums, for every (gt id, predicted id) pair, the
//! per-frame similarity normalised as a Jaccard index, which gives each pair a global
//! alignment score; the second matches each frame by the largest Σ alignment × IoU (not plain
//! IoU) and counts, per α, true positives with IoU ≥ α and how often each id pair was matched.
//! Classes combine as TrackEval's `combine_classes_det_averaged`: counts summed, AssA,
//! AssRe, AssPr and LocA weighted by each class's true positives.

use std::collections::HashMap;

use super::lsap::Lsap;

/// The number of α thresholds.
pub const ALPHAS: usize = 19;

/// α as NumPy's `arange(0.05, 0.99, 0.05)` computes it: `0.05 + i · 0.05`.
pub fn alphas() -> [f64; ALPHAS] {
    std::array::from_fn(|i| 0.05 + i as f64 * 0.05)
}

/// TrackEval's per-α results of a sequence (or of classes combined).
#[derive(Debug, Clone, PartialEq)]
pub struct HotaCounts {
    pub tp: [f64; ALPHAS],
    pub fn_: [f64; ALPHAS],
    pub fp: [f64; ALPHAS],
    pub ass_a: [f64; ALPHAS],
    pub ass_re: [f64; ALPHAS],
    pub ass_pr: [f64; ALPHAS],
    pub loc_a: [f64; ALPHAS],
}

impl Default for HotaCounts {
    /// An empty sequence: nothing matched, LocA 1 (TrackEval's convention).
    fn default() -> Self {
        HotaCounts {
            tp: [0.0; ALPHAS],
            fn_: [0.0; ALPHAS],
            fp: [0.0; ALPHAS],
            ass_a: [0.0; ALPHAS],
            ass_re: [0.0; ALPHAS],
            ass_pr: [0.0; ALPHAS],
            loc_a: [1.0; ALPHAS],
        }
    }
}

/// Summary values: means over α, and the values at α = 0.05 (`HOTA(0)`, `LocA(0)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HotaSummary {
    pub hota: f64,
    pub deta: f64,
    pub assa: f64,
    pub loca: f64,
    pub detre: f64,
    pub detpr: f64,
    pub assre: f64,
    pub asspr: f64,
    pub owta: f64,
    pub hota0: f64,
    pub loca0: f64,
    pub hotaloca0: f64,
}

impl HotaCounts {
    /// Combines classes: TrackEval's `combine_classes_det_averaged`.
    pub fn combine(parts: &[HotaCounts]) -> HotaCounts {
        let mut out = HotaCounts::default();
        for a in 0..ALPHAS {
            let tp: f64 = parts.iter().map(|p| p.tp[a]).sum();
            out.tp[a] = tp;
            out.fn_[a] = parts.iter().map(|p| p.fn_[a]).sum();
            out.fp[a] = parts.iter().map(|p| p.fp[a]).sum();
            out.ass_re[a] = parts.iter().map(|p| p.ass_re[a] * p.tp[a]).sum::<f64>() / tp.max(1.0);
            out.ass_pr[a] = parts.iter().map(|p| p.ass_pr[a] * p.tp[a]).sum::<f64>() / tp.max(1.0);
            out.ass_a[a] = parts.iter().map(|p| p.ass_a[a] * p.tp[a]).sum::<f64>() / tp.max(1.0);
            let loc: f64 = parts.iter().map(|p| p.loc_a[a] * p.tp[a]).sum();
            out.loc_a[a] = loc.max(1e-10) / tp.max(1e-10);
        }
        out
    }

    /// TrackEval's `_compute_final_fields`, then means over α.
    pub fn summary(&self) -> HotaSummary {
        let mut det_re = [0.0; ALPHAS];
        let mut det_pr = [0.0; ALPHAS];
        let mut det_a = [0.0; ALPHAS];
        let mut hota = [0.0; ALPHAS];
        let mut owta = [0.0; ALPHAS];
        for a in 0..ALPHAS {
            let (tp, fn_, fp) = (self.tp[a], self.fn_[a], self.fp[a]);
            det_re[a] = tp / (tp + fn_).max(1.0);
            det_pr[a] = tp / (tp + fp).max(1.0);
            det_a[a] = tp / (tp + fn_ + fp).max(1.0);
            hota[a] = (det_a[a] * self.ass_a[a]).sqrt();
            owta[a] = (det_re[a] * self.ass_a[a]).sqrt();
        }
        let mean = |values: &[f64; ALPHAS]| values.iter().sum::<f64>() / ALPHAS as f64;
        HotaSummary {
            hota: mean(&hota),
            deta: mean(&det_a),
            assa: mean(&self.ass_a),
            loca: mean(&self.loc_a),
            detre: mean(&det_re),
            detpr: mean(&det_pr),
            assre: mean(&self.ass_re),
            asspr: mean(&self.ass_pr),
            owta: mean(&owta),
            hota0: hota[0],
            loca0: self.loc_a[0],
            hotaloca0: hota[0] * self.loc_a[0],
        }
    }
}

/// One frame of a sequence for HOTA: gt and predicted ids as dense indices (0..num ids) and
/// the row-major `gt × pred` IoU.
#[derive(Debug, Clone, Copy)]
pub struct HotaFrame<'a> {
    pub gt_ids: &'a [usize],
    pub pred_ids: &'a [usize],
    pub similarity: &'a [f64],
}

/// TrackEval's `HOTA.eval_sequence`.
pub fn eval_sequence(
    frames: &[HotaFrame<'_>],
    num_gt_ids: usize,
    num_pred_ids: usize,
) -> HotaCounts {
    let mut res = HotaCounts::default();
    let num_gt_dets: usize = frames.iter().map(|f| f.gt_ids.len()).sum();
    let num_pred_dets: usize = frames.iter().map(|f| f.pred_ids.len()).sum();
    if num_pred_dets == 0 {
        res.fn_ = [num_gt_dets as f64; ALPHAS];
        return res;
    }
    if num_gt_dets == 0 {
        res.fp = [num_pred_dets as f64; ALPHAS];
        return res;
    }
    res.loc_a = [0.0; ALPHAS];
    let eps = f64::EPSILON;

    // Pass 1: global alignment of id pairs.
    let mut potential: HashMap<(usize, usize), f64> = HashMap::new();
    let mut gt_id_count = vec![0.0f64; num_gt_ids];
    let mut pred_id_count = vec![0.0f64; num_pred_ids];
    let mut col_sums = Vec::new();
    let mut row_sums = Vec::new();
    for frame in frames {
        let (ng, np) = (frame.gt_ids.len(), frame.pred_ids.len());
        let sim = frame.similarity;
        col_sums.clear();
        col_sums.extend((0..np).map(|t| (0..ng).map(|g| sim[g * np + t]).sum::<f64>()));
        row_sums.clear();
        row_sums.extend((0..ng).map(|g| sim[g * np..(g + 1) * np].iter().sum::<f64>()));
        for g in 0..ng {
            for t in 0..np {
                let s = sim[g * np + t];
                let denominator = col_sums[t] + row_sums[g] - s;
                if denominator > eps && s != 0.0 {
                    *potential
                        .entry((frame.gt_ids[g], frame.pred_ids[t]))
                        .or_default() += s / denominator;
                }
            }
        }
        for &g in frame.gt_ids {
            gt_id_count[g] += 1.0;
        }
        for &t in frame.pred_ids {
            pred_id_count[t] += 1.0;
        }
    }
    let alignment = |g: usize, t: usize| -> f64 {
        match potential.get(&(g, t)) {
            Some(&p) => p / (gt_id_count[g] + pred_id_count[t] - p),
            None => 0.0,
        }
    };

    // Pass 2: per-frame matching by alignment × similarity.
    let alphas = alphas();
    let mut matches: HashMap<(usize, usize), [u32; ALPHAS]> = HashMap::new();
    let mut lsap = Lsap::default();
    let mut cost = Vec::new();
    let mut pairs = Vec::new();
    for frame in frames {
        let (ng, np) = (frame.gt_ids.len(), frame.pred_ids.len());
        if ng == 0 {
            res.fp.iter_mut().for_each(|fp| *fp += np as f64);
            continue;
        }
        if np == 0 {
            res.fn_.iter_mut().for_each(|f| *f += ng as f64);
            continue;
        }
        let sim = frame.similarity;
        cost.clear();
        for g in 0..ng {
            for t in 0..np {
                let score = alignment(frame.gt_ids[g], frame.pred_ids[t]) * sim[g * np + t];
                cost.push(-score);
            }
        }
        lsap.solve(&cost, ng, np, &mut pairs);
        for (a, alpha) in alphas.iter().enumerate() {
            let mut matched = 0usize;
            let mut similarity_sum = 0.0;
            for &(g, t) in &pairs {
                let s = sim[g * np + t];
                if s >= alpha - eps {
                    matched += 1;
                    similarity_sum += s;
                    matches
                        .entry((frame.gt_ids[g], frame.pred_ids[t]))
                        .or_insert([0; ALPHAS])[a] += 1;
                }
            }
            res.tp[a] += matched as f64;
            res.fn_[a] += (ng - matched) as f64;
            res.fp[a] += (np - matched) as f64;
            if matched > 0 {
                res.loc_a[a] += similarity_sum;
            }
        }
    }

    // Association scores, pairs in a fixed order so that sums do not vary between runs.
    let mut matched_pairs: Vec<(&(usize, usize), &[u32; ALPHAS])> = matches.iter().collect();
    matched_pairs.sort_unstable_by_key(|(k, _)| **k);
    for a in 0..ALPHAS {
        let (mut ass_a, mut ass_re, mut ass_pr) = (0.0, 0.0, 0.0);
        for (&(g, t), counts) in &matched_pairs {
            let m = counts[a] as f64;
            if m == 0.0 {
                continue;
            }
            let (gc, tc) = (gt_id_count[g], pred_id_count[t]);
            ass_a += m * (m / (gc + tc - m).max(1.0));
            ass_re += m * (m / gc.max(1.0));
            ass_pr += m * (m / tc.max(1.0));
        }
        let tp = res.tp[a].max(1.0);
        res.ass_a[a] = ass_a / tp;
        res.ass_re[a] = ass_re / tp;
        res.ass_pr[a] = ass_pr / tp;
        res.loc_a[a] = res.loc_a[a].max(1e-10) / res.tp[a].max(1e-10);
    }
    res
}

/// TrackEval's `_calculate_box_ious` for `x0y0x1y1` boxes.
pub fn box_iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let eps = f64::EPSILON;
    let intersection =
        (a[2].min(b[2]) - a[0].max(b[0])).max(0.0) * (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let area_a = (a[2] - a[0]) * (a[3] - a[1]);
    let area_b = (b[2] - b[0]) * (b[3] - b[1]);
    let union = area_a + area_b - intersection;
    if area_a <= eps || area_b <= eps || union <= eps {
        return 0.0;
    }
    intersection / union
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphas_are_numpys() {
        let a = alphas();
        assert_eq!(a[0], 0.05);
        assert_eq!(a[2], 0.15000000000000002);
        assert_eq!(a[6], 0.35000000000000003);
        assert_eq!(a[11], 0.6000000000000001);
        assert_eq!(a[15], 0.8);
        assert_eq!(a[18], 0.9500000000000001);
    }

    #[test]
    fn perfect_tracking_scores_one() {
        let sim = [1.0, 0.0, 0.0, 1.0];
        let frame = HotaFrame {
            gt_ids: &[0, 1],
            pred_ids: &[0, 1],
            similarity: &sim,
        };
        let s = eval_sequence(&[frame, frame], 2, 2).summary();
        assert_eq!((s.hota, s.deta, s.assa, s.loca), (1.0, 1.0, 1.0, 1.0));
    }

    #[test]
    fn a_broken_track_halves_association() {
        // One gt id tracked by pred 0 for two frames, then by pred 1 for two.
        let one = [1.0];
        let f = |t: &'static [usize]| HotaFrame {
            gt_ids: &[0],
            pred_ids: t,
            similarity: &one,
        };
        let frames = [f(&[0]), f(&[0]), f(&[1]), f(&[1])];
        let s = eval_sequence(&frames, 1, 2).summary();
        assert_eq!(s.deta, 1.0);
        // Each match: |TPA| = 2, |FNA| = 2, |FPA| = 0 → A = 0.5.
        assert!((s.assa - 0.5).abs() < 1e-12);
        assert!((s.hota - 0.5f64.sqrt()).abs() < 1e-12);
    }

    #[test]
    fn no_predictions() {
        let frame = HotaFrame {
            gt_ids: &[0],
            pred_ids: &[],
            similarity: &[],
        };
        let r = eval_sequence(&[frame], 1, 0);
        assert_eq!(r.fn_[0], 1.0);
        let s = r.summary();
        assert_eq!((s.hota, s.loca), (0.0, 1.0));
    }
}
