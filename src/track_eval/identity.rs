//! Identity measures (IDF1, IDP, IDR) as py-motmetrics 1.4 computes them: one global
//! one-to-one matching of ground-truth ids to predicted ids that maximises the number of
//! frames in which the pair lies within the IoU threshold (motmetrics' min-cost assignment
//! on its FP + FN matrix: its cost is Σ gt + Σ pred − 2 · that number, so ties among optimal
//! matchings give the same counts).

use std::collections::HashMap;

use serde::Serialize;

use super::lsap::Lsap;

/// Identity counts of one or more sequences (sums combine classes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct IdentityCounts {
    /// Frames in which a matched gt id is covered by its matched predicted id.
    pub idtp: u64,
    /// Ground-truth boxes.
    pub num_objects: u64,
    /// Predicted boxes.
    pub num_predictions: u64,
}

impl IdentityCounts {
    pub fn add(&mut self, other: &IdentityCounts) {
        self.idtp += other.idtp;
        self.num_objects += other.num_objects;
        self.num_predictions += other.num_predictions;
    }

    pub fn idfn(&self) -> u64 {
        self.num_objects - self.idtp
    }

    pub fn idfp(&self) -> u64 {
        self.num_predictions - self.idtp
    }

    pub fn idf1(&self) -> f64 {
        2.0 * self.idtp as f64 / (self.num_objects + self.num_predictions) as f64
    }

    pub fn idp(&self) -> f64 {
        self.idtp as f64 / (self.idtp + self.idfp()) as f64
    }

    pub fn idr(&self) -> f64 {
        self.idtp as f64 / (self.idtp + self.idfn()) as f64
    }
}

/// Counts, over a sequence, the frames each (gt id, predicted id) pair lies within the
/// threshold.
#[derive(Debug, Default)]
pub struct IdentityAccumulator {
    together: HashMap<(i64, i64), u64>,
    num_objects: u64,
    num_predictions: u64,
}

impl IdentityAccumulator {
    /// One frame, as [`super::clear::ClearAccumulator::update`].
    pub fn update(&mut self, object_ids: &[i64], hypothesis_ids: &[i64], distances: &[f64]) {
        let nh = hypothesis_ids.len();
        for (i, o) in object_ids.iter().enumerate() {
            for (j, h) in hypothesis_ids.iter().enumerate() {
                if distances[i * nh + j].is_finite() {
                    *self.together.entry((*o, *h)).or_default() += 1;
                }
            }
        }
        self.num_objects += object_ids.len() as u64;
        self.num_predictions += nh as u64;
    }

    /// The global matching and its counts.
    pub fn counts(&self) -> IdentityCounts {
        let mut objects: Vec<i64> = self.together.keys().map(|k| k.0).collect();
        let mut hypotheses: Vec<i64> = self.together.keys().map(|k| k.1).collect();
        objects.sort_unstable();
        objects.dedup();
        hypotheses.sort_unstable();
        hypotheses.dedup();
        let (rows, cols) = (objects.len(), hypotheses.len());
        let mut cost = vec![0.0; rows * cols];
        for (&(o, h), &n) in &self.together {
            let r = objects.binary_search(&o).unwrap_or_default();
            let c = hypotheses.binary_search(&h).unwrap_or_default();
            cost[r * cols + c] = -(n as f64);
        }
        let mut pairs = Vec::new();
        Lsap::default().solve(&cost, rows, cols, &mut pairs);
        let idtp = pairs.iter().map(|&(r, c)| -cost[r * cols + c]).sum::<f64>() as u64;
        IdentityCounts {
            idtp,
            num_objects: self.num_objects,
            num_predictions: self.num_predictions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NAN: f64 = f64::NAN;

    #[test]
    fn one_global_matching() {
        let mut acc = IdentityAccumulator::default();
        // gt 1 is covered by pred 10 for two frames, then by pred 20 for three.
        acc.update(&[1], &[10], &[0.1]);
        acc.update(&[1], &[10], &[0.1]);
        for _ in 0..3 {
            acc.update(&[1], &[20], &[0.2]);
        }
        acc.update(&[1], &[30], &[NAN]);
        let c = acc.counts();
        assert_eq!(c.idtp, 3);
        assert_eq!((c.idfn(), c.idfp()), (3, 3));
        assert!((c.idf1() - 0.5).abs() < 1e-12);
    }
}
