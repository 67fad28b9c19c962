//! The baseline: greedy IoU matching of each frame's confident boxes (at or above
//! `track_high_thresh`) to the tracks' boxes moved on at their recent image velocity, same
//! class only, best overlap first. A box that matches nothing starts a track at once; a
//! track unmatched for more than two frames ends. No motion model beyond that, no second
//! chance for low-score boxes: what ByteTrack is measured against.

use super::{Assigned, ByteTrackConfig, TrackInput, Tracker};
use crate::types::BoxXyxy;

/// Smallest IoU for a box to continue a track.
const IOU_THRESHOLD: f32 = 0.3;
/// A track unmatched on more frames than this ends.
const MAX_MISSED_FRAMES: u32 = 2;

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    class_id: usize,
    box_in_image: BoxXyxy,
    seen_s: f64,
    born_s: f64,
    /// Smoothed image velocity of the box edges, pixels per second (x1, y1, x2, y2).
    velocity_px_s: [f32; 4],
    missed_frames: u32,
}

impl Track {
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
        self.missed_frames = 0;
    }
}

/// The greedy IoU tracker; see the module doc.
pub struct IouTracker {
    min_score: f32,
    tracks: Vec<Track>,
    next_id: u64,
    pairs: Vec<(f32, usize, usize)>,
    track_used: Vec<bool>,
    det_track: Vec<Option<usize>>,
}

impl IouTracker {
    pub fn new(config: ByteTrackConfig) -> Self {
        Self {
            min_score: config.track_high_thresh,
            tracks: Vec::new(),
            next_id: 1,
            pairs: Vec::new(),
            track_used: Vec::new(),
            det_track: Vec::new(),
        }
    }
}

impl Tracker for IouTracker {
    fn name(&self) -> &'static str {
        "iou"
    }

    fn live_tracks(&self) -> usize {
        self.tracks.len()
    }

    fn coasting(&self, out: &mut Vec<(usize, BoxXyxy)>) {
        out.extend(
            self.tracks
                .iter()
                .filter(|t| t.missed_frames > 0)
                .map(|t| (t.class_id, t.box_in_image)),
        );
    }

    fn update(&mut self, time_s: f64, inputs: &[TrackInput], assigned: &mut Vec<Option<Assigned>>) {
        self.pairs.clear();
        for (i, input) in inputs.iter().enumerate() {
            if input.score < self.min_score {
                continue;
            }
            for (t, track) in self.tracks.iter().enumerate() {
                if track.class_id != input.class_id {
                    continue;
                }
                let iou = input.box_in_image.iou(&track.predict(time_s));
                if iou >= IOU_THRESHOLD {
                    self.pairs.push((iou, i, t));
                }
            }
        }
        self.pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let old_tracks = self.tracks.len();
        self.track_used.clear();
        self.track_used.resize(old_tracks, false);
        let mut det_track = std::mem::take(&mut self.det_track);
        det_track.clear();
        det_track.resize(inputs.len(), None);
        for &(_, i, t) in &self.pairs {
            if det_track[i].is_none() && !self.track_used[t] {
                det_track[i] = Some(t);
                self.track_used[t] = true;
            }
        }
        for (i, input) in inputs.iter().enumerate() {
            if input.score < self.min_score {
                continue;
            }
            match det_track[i] {
                Some(t) => self.tracks[t].move_to(time_s, input.box_in_image),
                None => {
                    self.tracks.push(Track {
                        id: self.next_id,
                        class_id: input.class_id,
                        box_in_image: input.box_in_image,
                        seen_s: time_s,
                        born_s: time_s,
                        velocity_px_s: [0.0; 4],
                        missed_frames: 0,
                    });
                    self.next_id += 1;
                    det_track[i] = Some(self.tracks.len() - 1);
                }
            }
        }
        for (t, used) in self.track_used.iter().enumerate() {
            if !used {
                self.tracks[t].missed_frames += 1;
            }
        }
        assigned.clear();
        assigned.extend(det_track.iter().map(|t| {
            t.map(|t| {
                let track = &self.tracks[t];
                Assigned {
                    track_id: track.id,
                    age_s: time_s - track.born_s,
                    confirmed: true,
                    box_filtered: track.box_in_image,
                }
            })
        }));
        self.tracks.retain(|t| t.missed_frames <= MAX_MISSED_FRAMES);
        self.det_track = det_track;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32) -> TrackInput {
        TrackInput {
            box_in_image: BoxXyxy::new(x, 100.0, x + 50.0, 150.0),
            score: 0.9,
            class_id: 2,
        }
    }

    #[test]
    fn moving_boxes_keep_ids_and_lost_tracks_expire() {
        let mut tracker = IouTracker::new(ByteTrackConfig::default());
        let mut out = Vec::new();
        tracker.update(0.0, &[det(100.0), det(400.0)], &mut out);
        let (a, b) = (out[0].unwrap().track_id, out[1].unwrap().track_id);
        for f in 1..10 {
            let x = 8.0 * f as f32;
            tracker.update(f as f64 * 0.1, &[det(400.0 - x), det(100.0 + x)], &mut out);
            assert_eq!((out[0].unwrap().track_id, out[1].unwrap().track_id), (b, a));
        }
        for f in 10..13 {
            tracker.update(f as f64 * 0.1, &[], &mut out);
        }
        assert_eq!(tracker.live_tracks(), 0);
        tracker.update(1.3, &[det(100.0)], &mut out);
        assert!(out[0].unwrap().track_id > b.max(a));
    }
}
