//! Frame-to-frame association of detections and time to collision from distance over time.
//!
//! [`TtcTracker`] links each frame's boxes to the previous tracks greedily by IoU (same class
//! only) with each track's box moved on at its recent image velocity, keeps each track's recent distances, and fits a straight line to the last
//! `window_s` seconds: a negative slope is a closing speed, and distance / closing speed the
//! time to collision. Only objects in the ego path (|lateral| below half a lane) get one.

use crate::types::BoxXyxy;

/// Tracker settings; [`Default`] suits 10–30 fps road video.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TtcConfig {
    /// Minimum IoU for a box to continue a track.
    pub iou_threshold: f32,
    /// A track unseen for this many frames is dropped.
    pub max_missed_frames: u32,
    /// Seconds of distance history fitted for the closing speed.
    pub window_s: f64,
    /// Distance samples needed before a TTC is reported.
    pub min_samples: usize,
    /// Objects with |lateral| below this are in the ego path, metres (half a 3.6 m lane).
    pub half_lane_m: f64,
    /// Closing speeds below this are treated as not closing, m/s.
    pub min_closing_speed_mps: f64,
}

impl Default for TtcConfig {
    fn default() -> Self {
        Self {
            iou_threshold: 0.3,
            max_missed_frames: 2,
            window_s: 1.0,
            min_samples: 4,
            half_lane_m: 1.8,
            min_closing_speed_mps: 0.3,
        }
    }
}

/// One detection of the current frame.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TtcInput {
    pub box_in_image: BoxXyxy,
    /// Boxes only continue tracks of the same class.
    pub class_id: usize,
    /// Distance ahead (ideally to the object's near face) and lateral offset, metres.
    pub distance_m: Option<f64>,
    pub lateral_m: Option<f64>,
}

/// The tracker's verdict for one input, in input order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TtcOutput {
    pub track_id: u64,
    /// Seconds until the distance reaches zero at the current closing speed; `None` when not
    /// closing, outside the ego path, or with too little history.
    pub ttc_s: Option<f64>,
    /// Positive when approaching, m/s; `None` with too little history.
    pub closing_speed_mps: Option<f64>,
    pub in_ego_path: bool,
}

#[derive(Debug, Clone)]
struct Track {
    track_id: u64,
    class_id: usize,
    box_in_image: BoxXyxy,
    /// Time of `box_in_image`, seconds.
    seen_s: f64,
    /// Smoothed image velocity of the box edges, pixels per second (x1, y1, x2, y2).
    velocity_px_s: [f32; 4],
    missed_frames: u32,
    /// (time_s, distance_m) samples, oldest first, within the window.
    history: Vec<(f64, f64)>,
}

impl Track {
    /// The box moved on to `time_s` at the track's image velocity.
    fn predict(&self, time_s: f64) -> BoxXyxy {
        let dt = (time_s - self.seen_s) as f32;
        let [a, b, c, d] = self.box_in_image.to_array();
        let v = self.velocity_px_s;
        BoxXyxy::new(a + v[0] * dt, b + v[1] * dt, c + v[2] * dt, d + v[3] * dt)
    }

    fn move_to(&mut self, time_s: f64, box_in_image: BoxXyxy) {
        let dt = (time_s - self.seen_s) as f32;
        if dt > 1e-6 {
            let (old, new) = (self.box_in_image.to_array(), box_in_image.to_array());
            for k in 0..4 {
                // Half old, half new: follows turns within a few frames, damps box jitter.
                self.velocity_px_s[k] = 0.5 * self.velocity_px_s[k] + 0.5 * (new[k] - old[k]) / dt;
            }
        }
        self.box_in_image = box_in_image;
        self.seen_s = time_s;
    }
}

/// IoU tracker with per-track time to collision.
#[derive(Debug, Clone)]
pub struct TtcTracker {
    config: TtcConfig,
    tracks: Vec<Track>,
    next_track_id: u64,
}

impl TtcTracker {
    pub fn new(config: TtcConfig) -> Self {
        Self {
            config,
            tracks: vec![],
            next_track_id: 0,
        }
    }

    /// Number of live tracks.
    pub fn track_count(&self) -> usize {
        self.tracks.len()
    }

    /// Feeds one frame taken at `time_s`; returns one output per input, in order.
    pub fn update(&mut self, time_s: f64, inputs: &[TtcInput]) -> Vec<TtcOutput> {
        let matches = self.associate(time_s, inputs);
        let mut matched_track = vec![false; self.tracks.len()];
        let mut outputs = Vec::with_capacity(inputs.len());
        for (input, track_index) in inputs.iter().zip(&matches) {
            let index = match track_index {
                Some(t) => {
                    matched_track[*t] = true;
                    *t
                }
                None => {
                    self.tracks.push(Track {
                        track_id: self.next_track_id,
                        class_id: input.class_id,
                        box_in_image: input.box_in_image,
                        seen_s: time_s,
                        velocity_px_s: [0.0; 4],
                        missed_frames: 0,
                        history: vec![],
                    });
                    self.next_track_id += 1;
                    self.tracks.len() - 1
                }
            };
            outputs.push(self.observe(index, time_s, input));
        }
        // Age unmatched old tracks (new ones lie beyond `matched_track`), then drop stale ones.
        for (track, matched) in self.tracks.iter_mut().zip(&matched_track) {
            if !matched {
                track.missed_frames += 1;
            }
        }
        let max_missed = self.config.max_missed_frames;
        self.tracks.retain(|t| t.missed_frames <= max_missed);
        outputs
    }

    /// Greedy IoU matching: the best-overlapping (input, track) pairs first, each used once.
    fn associate(&self, time_s: f64, inputs: &[TtcInput]) -> Vec<Option<usize>> {
        let predicted: Vec<BoxXyxy> = self.tracks.iter().map(|t| t.predict(time_s)).collect();
        let mut pairs: Vec<(f32, usize, usize)> = vec![];
        for (i, input) in inputs.iter().enumerate() {
            for (t, track) in self.tracks.iter().enumerate() {
                if track.class_id != input.class_id {
                    continue;
                }
                let iou = input.box_in_image.iou(&predicted[t]);
                if iou >= self.config.iou_threshold {
                    pairs.push((iou, i, t));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut input_track = vec![None; inputs.len()];
        let mut track_used = vec![false; self.tracks.len()];
        for (_, i, t) in pairs {
            if input_track[i].is_none() && !track_used[t] {
                input_track[i] = Some(t);
                track_used[t] = true;
            }
        }
        input_track
    }

    fn observe(&mut self, index: usize, time_s: f64, input: &TtcInput) -> TtcOutput {
        let config = self.config;
        let track = &mut self.tracks[index];
        track.move_to(time_s, input.box_in_image);
        track.missed_frames = 0;
        if let Some(d) = input.distance_m.filter(|d| d.is_finite()) {
            track.history.push((time_s, d));
        }
        track
            .history
            .retain(|(t, _)| time_s - t <= config.window_s + 1e-9);
        let in_ego_path = input
            .lateral_m
            .is_some_and(|l| l.abs() < config.half_lane_m);
        let fit = (track.history.len() >= config.min_samples)
            .then(|| fit_line(&track.history))
            .flatten();
        let closing_speed_mps = fit.map(|(_, slope)| -slope);
        let ttc_s = match fit {
            Some((distance_now, slope))
                if in_ego_path && -slope >= config.min_closing_speed_mps =>
            {
                Some((distance_now / -slope).max(0.0))
            }
            _ => None,
        };
        TtcOutput {
            track_id: track.track_id,
            ttc_s,
            closing_speed_mps,
            in_ego_path,
        }
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

    fn input(x: f32, distance_m: f64, lateral_m: f64) -> TtcInput {
        TtcInput {
            box_in_image: BoxXyxy::new(x, 100.0, x + 50.0, 150.0),
            class_id: 2,
            distance_m: Some(distance_m),
            lateral_m: Some(lateral_m),
        }
    }

    #[test]
    fn constant_approach_gives_distance_over_speed() {
        let mut tracker = TtcTracker::new(TtcConfig::default());
        let mut last = vec![];
        for frame in 0..10 {
            let t = frame as f64 * 0.1;
            // Approaching at 5 m/s from 30 m, in the ego path; a receding one beside it.
            last = tracker.update(
                t,
                &[
                    input(100.0, 30.0 - 5.0 * t, 0.2),
                    input(400.0, 20.0 + 2.0 * t, 0.5),
                ],
            );
        }
        let ttc = last[0].ttc_s.unwrap();
        assert!((ttc - (30.0 - 5.0 * 0.9) / 5.0).abs() < 1e-6, "{ttc}");
        assert!(last[1].ttc_s.is_none() && last[1].closing_speed_mps.unwrap() < 0.0);
        assert_ne!(last[0].track_id, last[1].track_id);
    }

    #[test]
    fn outside_the_ego_path_or_too_young_has_no_ttc() {
        let mut tracker = TtcTracker::new(TtcConfig::default());
        let out = tracker.update(0.0, &[input(100.0, 20.0, 0.0)]);
        assert!(out[0].ttc_s.is_none());
        let mut last = vec![];
        for frame in 0..6 {
            let t = frame as f64 * 0.1;
            last = tracker.update(t + 1.0, &[input(500.0, 20.0 - 5.0 * t, 4.0)]);
        }
        assert!(!last[0].in_ego_path && last[0].ttc_s.is_none());
        assert!(last[0].closing_speed_mps.unwrap() > 4.9);
    }

    #[test]
    fn lost_tracks_expire_and_new_boxes_get_new_ids() {
        let mut tracker = TtcTracker::new(TtcConfig::default());
        let first = tracker.update(0.0, &[input(100.0, 20.0, 0.0)])[0].track_id;
        for frame in 1..=3 {
            tracker.update(frame as f64 * 0.1, &[]);
        }
        assert_eq!(tracker.track_count(), 0);
        let again = tracker.update(0.4, &[input(100.0, 20.0, 0.0)])[0].track_id;
        assert_ne!(first, again);
    }
}
