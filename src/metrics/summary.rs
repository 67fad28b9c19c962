//! Median / p90 / min of a small set of samples (benchmark runs), exact by sorting.

use serde::Serialize;

/// Order statistics of timing samples, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SampleSummary {
    pub median: f64,
    pub p90: f64,
    pub min: f64,
}

impl SampleSummary {
    /// `None` for no samples. Percentiles interpolate linearly between order statistics
    /// (numpy's default), so they compare directly with onnxruntime's reference tool.
    pub fn of(samples: &[f64]) -> Option<SampleSummary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        Some(SampleSummary {
            median: percentile(&sorted, 50.0),
            p90: percentile(&sorted, 90.0),
            min: sorted[0],
        })
    }
}

/// Linear-interpolated percentile of sorted samples.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_numpy_percentiles() {
        let s = SampleSummary::of(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.median, 2.5);
        assert!((s.p90 - 3.7).abs() < 1e-12);
        assert_eq!(s.min, 1.0);
        assert!(SampleSummary::of(&[]).is_none());
    }
}
