//! Closing speed and time to collision of tracked objects: each track's distances over the
//! last `window_s` seconds get a straight-line fit; a negative slope is a closing speed,
//! and the fitted distance to the object's near face over that speed is the time to
//! collision. Only objects in the ego path (|lateral| below half a lane) get a time to
//! collision; every track with enough history gets a smoothed distance and a speed.

use std::collections::{HashMap, VecDeque};

/// Settings; [`Default`] suits 10–30 fps road video.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClosingConfig {
    /// Seconds of distance history fitted.
    pub window_s: f64,
    /// Distance samples needed before a speed is reported.
    pub min_samples: usize,
    /// Objects with |lateral| below this are in the ego path, metres (half a 3.6 m lane).
    pub half_lane_m: f64,
    /// Closing speeds below this are treated as not closing, m/s.
    pub min_closing_speed_mps: f64,
}

impl Default for ClosingConfig {
    fn default() -> Self {
        Self {
            window_s: 1.0,
            min_samples: 4,
            half_lane_m: 1.8,
            min_closing_speed_mps: 0.3,
        }
    }
}

/// One track's distance at one frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DistanceSample {
    pub track_id: u64,
    /// To the object's near face (what closes first), metres.
    pub nearest_m: f64,
    pub lateral_m: f64,
}

/// What a track's distance history says.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Closing {
    /// The fitted distance to the near face now, metres.
    pub smoothed_nearest_m: Option<f64>,
    /// Positive when approaching, m/s.
    pub closing_speed_mps: Option<f64>,
    /// Seconds until the near face is reached at the current closing speed; `None` when not
    /// closing, outside the ego path, or with too little history.
    pub ttc_s: Option<f64>,
    pub in_ego_path: bool,
}

/// Distance histories of the live tracks.
#[derive(Debug, Default)]
pub struct ClosingSpeeds {
    config: ClosingConfig,
    histories: HashMap<u64, VecDeque<(f64, f64)>>,
}

impl ClosingSpeeds {
    pub fn new(config: ClosingConfig) -> Self {
        Self {
            config,
            histories: HashMap::new(),
        }
    }

    /// Adds one track's distance at `time_s` and fits its window.
    pub fn observe(&mut self, time_s: f64, sample: DistanceSample) -> Closing {
        let config = self.config;
        let history = self.histories.entry(sample.track_id).or_default();
        if sample.nearest_m.is_finite() {
            history.push_back((time_s, sample.nearest_m));
        }
        while history
            .front()
            .is_some_and(|(t, _)| time_s - t > config.window_s + 1e-9)
        {
            history.pop_front();
        }
        let in_ego_path = sample.lateral_m.abs() < config.half_lane_m;
        let fit = (history.len() >= config.min_samples)
            .then(|| fit_line(history.make_contiguous()))
            .flatten();
        let ttc_s = match fit {
            Some((distance_now, slope))
                if in_ego_path && -slope >= config.min_closing_speed_mps =>
            {
                Some((distance_now / -slope).max(0.0))
            }
            _ => None,
        };
        Closing {
            smoothed_nearest_m: fit.map(|(d, _)| d),
            closing_speed_mps: fit.map(|(_, slope)| -slope),
            ttc_s,
            in_ego_path,
        }
    }

    /// Forgets tracks with no sample in the last window (ended or far from the camera).
    pub fn forget_stale(&mut self, time_s: f64) {
        let window = self.config.window_s;
        self.histories
            .retain(|_, h| h.back().is_some_and(|(t, _)| time_s - t <= window + 1e-9));
    }

    /// No track has a history.
    pub fn is_empty(&self) -> bool {
        self.histories.is_empty()
    }
}

/// Least-squares line through (t, d); returns (fitted d at the last t, slope). `None` when the
/// samples span no time.
fn fit_line(samples: &[(f64, f64)]) -> Option<(f64, f64)> {
    let n = samples.len() as f64;
    let mean_t = samples.iter().map(|s| s.0).sum::<f64>() / n;
    let mean_d = samples.iter().map(|s| s.1).sum::<f64>() / n;
    let var_t: f64 = samples.iter().map(|s| (s.0 - mean_t).powi(2)).sum();
    if var_t < 1e-9 {
        return None;
    }
    let cov: f64 = samples
        .iter()
        .map(|s| (s.0 - mean_t) * (s.1 - mean_d))
        .sum();
    let slope = cov / var_t;
    let last_t = samples.last()?.0;
    Some((mean_d + slope * (last_t - mean_t), slope))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(track_id: u64, nearest_m: f64, lateral_m: f64) -> DistanceSample {
        DistanceSample {
            track_id,
            nearest_m,
            lateral_m,
        }
    }

    #[test]
    fn constant_approach_gives_distance_over_speed() {
        let mut speeds = ClosingSpeeds::new(ClosingConfig::default());
        let (mut closing, mut receding) = (Closing::default(), Closing::default());
        for frame in 0..10 {
            let t = frame as f64 * 0.1;
            closing = speeds.observe(t, sample(1, 30.0 - 5.0 * t, 0.2));
            receding = speeds.observe(t, sample(2, 20.0 + 2.0 * t, 0.5));
        }
        let ttc = closing.ttc_s.unwrap();
        assert!((ttc - (30.0 - 5.0 * 0.9) / 5.0).abs() < 1e-6, "{ttc}");
        assert!((closing.smoothed_nearest_m.unwrap() - 25.5).abs() < 1e-6);
        assert!(receding.ttc_s.is_none() && receding.closing_speed_mps.unwrap() < 0.0);
    }

    #[test]
    fn outside_the_ego_path_or_too_young_has_no_ttc() {
        let mut speeds = ClosingSpeeds::new(ClosingConfig::default());
        assert!(speeds.observe(0.0, sample(1, 20.0, 0.0)).ttc_s.is_none());
        let mut last = Closing::default();
        for frame in 0..6 {
            let t = frame as f64 * 0.1;
            last = speeds.observe(t + 1.0, sample(2, 20.0 - 5.0 * t, 4.0));
        }
        assert!(!last.in_ego_path && last.ttc_s.is_none());
        assert!(last.closing_speed_mps.unwrap() > 4.9);
        speeds.forget_stale(5.0);
        assert!(speeds.is_empty());
    }
}
