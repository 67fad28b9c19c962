//! ByteTrack (Zhang et al., ECCV 2022): every detection box is associated, low-scoring ones
//! too, so that an object that fades (occlusion, blur) keeps its track instead of losing it.
//!
//! Each frame, as the paper and ultralytics' `BYTETracker`:
//! 1. Every confirmed and lost track is predicted to the frame's time by its Kalman filter
//!    ([`super::kalman`]); a lost track's height stops changing.
//! 2. High-score detections (`≥ track_high_thresh`) are matched to those tracks by IoU,
//!    fused with the detection's score, optimally ([`super::assign`]), under `match_thresh`.
//!    A matched lost track is found again with its old identity.
//! 3. The tracked tracks left over are matched to the low-score detections
//!    (`track_low_thresh < score < track_high_thresh`) by IoU under 0.5; tracked tracks
//!    still unmatched become lost.
//! 4. Tentative tracks (born last time) are matched to the high-score detections left (0.7);
//!    a tentative track that misses once is removed.
//! 5. High-score detections still left start tentative tracks if they score at least
//!    `new_track_thresh` (on the very first frame they are confirmed at once).
//! 6. Lost tracks unseen longer than `track_buffer` frames at 30 fps (a second by default)
//!    are removed; a tracked and a lost track on the same box (IoU > 0.85) keep only the
//!    older one.
//!
//! Unlike the original, matching never crosses classes, and time is the frames' own: the
//! filter steps by the measured time since the last frame in units of the source's frame
//! interval, and the track buffer is seconds, so a 10 Hz drive, a 30 fps camera and a live
//! source that drops frames all keep tracks for the same time.

use super::assign::Assigner;
use super::kalman::BoxBelief;
use super::{Assigned, ByteTrackConfig, FrameClock, TrackInput, Tracker};
use crate::types::BoxXyxy;

/// Second-stage (low-score) matching limit, as ByteTrack.
const LOW_MATCH_THRESH: f32 = 0.5;
/// Tentative-track matching limit, as ByteTrack.
const TENTATIVE_MATCH_THRESH: f32 = 0.7;
/// A tracked and a lost track closer than this IoU distance are duplicates.
const DUPLICATE_IOU_DISTANCE: f32 = 0.15;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Tracked,
    Lost,
    Removed,
}

#[derive(Debug, Clone)]
struct Track {
    id: u64,
    class_id: usize,
    belief: BoxBelief,
    /// The belief's box at the current frame (after predict and update).
    box_now: BoxXyxy,
    state: State,
    /// Confirmed: seen on two frames (or born on the first).
    confirmed: bool,
    born_s: f64,
    last_seen_s: f64,
}

/// The ByteTrack tracker; see the module doc.
pub struct ByteTracker {
    config: ByteTrackConfig,
    tracks: Vec<Track>,
    next_id: u64,
    clock: FrameClock,
    frames: u64,
    // Reused per-frame buffers.
    high: Vec<usize>,
    low: Vec<usize>,
    pool: Vec<usize>,
    high_left: Vec<usize>,
    unmatched_tracked: Vec<usize>,
    cost: Vec<f32>,
    row_match: Vec<Option<usize>>,
    col_match: Vec<Option<usize>>,
    assigner: Assigner,
    det_track: Vec<Option<usize>>,
}

impl ByteTracker {
    pub fn new(config: ByteTrackConfig) -> Self {
        Self {
            config,
            tracks: Vec::new(),
            next_id: 1,
            clock: FrameClock::default(),
            frames: 0,
            high: Vec::new(),
            low: Vec::new(),
            pool: Vec::new(),
            high_left: Vec::new(),
            unmatched_tracked: Vec::new(),
            cost: Vec::new(),
            row_match: Vec::new(),
            col_match: Vec::new(),
            assigner: Assigner::default(),
            det_track: Vec::new(),
        }
    }

    /// Fills `self.cost` (tracks `rows` × detections `cols`) with the IoU distance between
    /// each track's predicted box and each detection, 1 across classes; with `fuse`, the
    /// IoU is weighted by the detection's score first.
    fn fill_cost(&mut self, rows: &[usize], cols: &[usize], inputs: &[TrackInput], fuse: bool) {
        self.cost.clear();
        for &t in rows {
            let track = &self.tracks[t];
            for &d in cols {
                let det = &inputs[d];
                let cost = if det.class_id != track.class_id {
                    1.0
                } else {
                    let iou = track.box_now.iou(&det.box_in_image);
                    1.0 - if fuse { iou * det.score } else { iou }
                };
                self.cost.push(cost);
            }
        }
    }

    /// Matches `rows` (track indices) to `cols` (detection indices) under `limit`; returns
    /// (track, detection) pairs through `self.row_match` by position.
    fn matching(
        &mut self,
        rows: &[usize],
        cols: &[usize],
        inputs: &[TrackInput],
        fuse: bool,
        limit: f32,
    ) {
        self.fill_cost(rows, cols, inputs, fuse);
        self.assigner.assign(
            &self.cost,
            rows.len(),
            cols.len(),
            limit,
            &mut self.row_match,
            &mut self.col_match,
        );
    }

    fn observe(&mut self, track: usize, det: usize, inputs: &[TrackInput], time_s: f64) {
        let input = &inputs[det];
        let t = &mut self.tracks[track];
        t.belief.update(&input.box_in_image);
        t.box_now = t.belief.to_box();
        t.state = State::Tracked;
        t.confirmed = true;
        t.last_seen_s = time_s;
        self.det_track[det] = Some(track);
    }

    fn max_lost_s(&self) -> f64 {
        self.config.track_buffer as f64 / 30.0
    }
}

impl Tracker for ByteTracker {
    fn name(&self) -> &'static str {
        "bytetrack"
    }

    fn live_tracks(&self) -> usize {
        self.tracks.len()
    }

    fn coasting(&self, out: &mut Vec<(usize, BoxXyxy)>) {
        out.extend(
            self.tracks
                .iter()
                .filter(|t| t.state == State::Lost)
                .map(|t| (t.class_id, t.box_now)),
        );
    }

    fn update(&mut self, time_s: f64, inputs: &[TrackInput], assigned: &mut Vec<Option<Assigned>>) {
        let cfg = self.config;
        self.frames += 1;
        let dt = self.clock.step(time_s);
        self.det_track.clear();
        self.det_track.resize(inputs.len(), None);

        // Detections by score.
        self.high.clear();
        self.low.clear();
        for (i, d) in inputs.iter().enumerate() {
            if d.score >= cfg.track_high_thresh {
                self.high.push(i);
            } else if d.score > cfg.track_low_thresh {
                self.low.push(i);
            }
        }

        // 1. Predict every track to now.
        for t in &mut self.tracks {
            if t.state != State::Tracked {
                t.belief.freeze_height_velocity();
            }
            t.belief.predict(dt);
            t.box_now = t.belief.to_box();
        }

        // 2. High-score detections against confirmed and lost tracks.
        let mut pool = std::mem::take(&mut self.pool);
        pool.clear();
        pool.extend((0..self.tracks.len()).filter(|&t| self.tracks[t].confirmed));
        let high = std::mem::take(&mut self.high);
        self.matching(&pool, &high, inputs, cfg.fuse_score, cfg.match_thresh);
        let mut high_left = std::mem::take(&mut self.high_left);
        high_left.clear();
        for (k, &d) in high.iter().enumerate() {
            if self.col_match[k].is_none() {
                high_left.push(d);
            }
        }
        let first_rows = std::mem::take(&mut self.row_match);
        let mut unmatched_tracked = std::mem::take(&mut self.unmatched_tracked);
        unmatched_tracked.clear();
        for (k, &t) in pool.iter().enumerate() {
            match first_rows[k] {
                Some(c) => self.observe(t, high[c], inputs, time_s),
                None if self.tracks[t].state == State::Tracked => unmatched_tracked.push(t),
                None => {}
            }
        }
        self.row_match = first_rows;

        // 3. Tracked tracks left against low-score detections.
        let low = std::mem::take(&mut self.low);
        self.matching(&unmatched_tracked, &low, inputs, false, LOW_MATCH_THRESH);
        for (k, &t) in unmatched_tracked.iter().enumerate() {
            match self.row_match[k] {
                Some(c) => {
                    let d = low[c];
                    self.observe(t, d, inputs, time_s);
                }
                None => self.tracks[t].state = State::Lost,
            }
        }

        // 4. Tentative tracks against the high-score detections left.
        pool.clear();
        pool.extend(
            (0..self.tracks.len())
                .filter(|&t| !self.tracks[t].confirmed && self.tracks[t].state == State::Tracked),
        );
        self.matching(
            &pool,
            &high_left,
            inputs,
            cfg.fuse_score,
            TENTATIVE_MATCH_THRESH,
        );
        let tentative_rows = std::mem::take(&mut self.row_match);
        let tentative_cols = std::mem::take(&mut self.col_match);
        for (k, &t) in pool.iter().enumerate() {
            match tentative_rows[k] {
                Some(c) => self.observe(t, high_left[c], inputs, time_s),
                None => self.tracks[t].state = State::Removed,
            }
        }

        // 5. New tracks.
        let first_frame = self.frames == 1;
        for (k, &d) in high_left.iter().enumerate() {
            if tentative_cols[k].is_some() || inputs[d].score < cfg.new_track_thresh {
                continue;
            }
            let belief = BoxBelief::new(&inputs[d].box_in_image);
            self.tracks.push(Track {
                id: self.next_id,
                class_id: inputs[d].class_id,
                box_now: belief.to_box(),
                belief,
                state: State::Tracked,
                confirmed: first_frame,
                born_s: time_s,
                last_seen_s: time_s,
            });
            self.next_id += 1;
            self.det_track[d] = Some(self.tracks.len() - 1);
        }
        self.row_match = tentative_rows;
        self.col_match = tentative_cols;

        // 6. Expire lost tracks; drop duplicates of one object (the younger one goes).
        let max_lost = self.max_lost_s() + 1e-6;
        for t in &mut self.tracks {
            if t.state == State::Lost && time_s - t.last_seen_s > max_lost {
                t.state = State::Removed;
            }
        }
        for a in 0..self.tracks.len() {
            if self.tracks[a].state != State::Tracked {
                continue;
            }
            for b in 0..self.tracks.len() {
                let (ta, tb) = (&self.tracks[a], &self.tracks[b]);
                if tb.state != State::Lost || ta.class_id != tb.class_id {
                    continue;
                }
                if 1.0 - ta.box_now.iou(&tb.box_now) < DUPLICATE_IOU_DISTANCE {
                    // The one followed for longer (birth to last sighting) stays.
                    let (age_a, age_b) = (ta.last_seen_s - ta.born_s, tb.last_seen_s - tb.born_s);
                    let loser = if age_a > age_b { b } else { a };
                    self.tracks[loser].state = State::Removed;
                    if loser == a {
                        break;
                    }
                }
            }
        }

        // The answer, before removed tracks go (indices shift then).
        assigned.clear();
        assigned.extend(self.det_track.iter().map(|t| {
            t.map(|t| {
                let track = &self.tracks[t];
                Assigned {
                    track_id: track.id,
                    age_s: time_s - track.born_s,
                    confirmed: track.confirmed && track.state == State::Tracked,
                    box_filtered: track.box_now,
                }
            })
        }));
        self.tracks.retain(|t| t.state != State::Removed);
        self.pool = pool;
        self.high = high;
        self.low = low;
        self.high_left = high_left;
        self.unmatched_tracked = unmatched_tracked;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(x: f32, score: f32) -> TrackInput {
        TrackInput {
            box_in_image: BoxXyxy::new(x, 100.0, x + 40.0, 180.0),
            score,
            class_id: 2,
        }
    }

    fn ids(out: &[Option<Assigned>]) -> Vec<Option<u64>> {
        out.iter()
            .map(|a| a.filter(|a| a.confirmed).map(|a| a.track_id))
            .collect()
    }

    #[test]
    fn two_objects_keep_their_ids_while_moving() {
        let mut tracker = ByteTracker::new(ByteTrackConfig::default());
        let mut out = Vec::new();
        tracker.update(0.0, &[det(100.0, 0.9), det(300.0, 0.8)], &mut out);
        let first = ids(&out);
        assert_eq!(first, vec![Some(1), Some(2)]);
        for f in 1..30 {
            let x = 4.0 * f as f32;
            // The order of the detections changes: identities must not.
            tracker.update(
                f as f64 / 30.0,
                &[det(300.0 - x, 0.8), det(100.0 + x, 0.9)],
                &mut out,
            );
            assert_eq!(ids(&out), vec![Some(2), Some(1)], "frame {f}");
        }
    }

    #[test]
    fn a_low_score_detection_keeps_a_track_alive() {
        let mut tracker = ByteTracker::new(ByteTrackConfig::default());
        let mut out = Vec::new();
        tracker.update(0.0, &[det(100.0, 0.9)], &mut out);
        tracker.update(0.1, &[det(102.0, 0.15)], &mut out);
        assert_eq!(ids(&out), vec![Some(1)]);
        // Below track_low_thresh it is not used at all.
        tracker.update(0.2, &[det(104.0, 0.05)], &mut out);
        assert_eq!(out, vec![None]);
    }

    #[test]
    fn a_lost_track_is_found_again_within_the_buffer_and_not_after() {
        let mut tracker = ByteTracker::new(ByteTrackConfig::default());
        let mut out = Vec::new();
        tracker.update(0.0, &[det(100.0, 0.9)], &mut out);
        tracker.update(0.1, &[det(100.0, 0.9)], &mut out);
        // Half a second without it (5 frames at 10 Hz), then back: same identity.
        for f in 2..7 {
            tracker.update(f as f64 * 0.1, &[], &mut out);
        }
        tracker.update(0.7, &[det(100.0, 0.9)], &mut out);
        assert_eq!(ids(&out), vec![Some(1)]);
        // Gone for longer than the buffer (1 s): a new, tentative track.
        for f in 8..20 {
            tracker.update(f as f64 * 0.1, &[], &mut out);
        }
        tracker.update(2.0, &[det(100.0, 0.9)], &mut out);
        assert_eq!(ids(&out), vec![None]);
        assert_eq!(out[0].unwrap().track_id, 2);
        tracker.update(2.1, &[det(100.0, 0.9)], &mut out);
        assert_eq!(ids(&out), vec![Some(2)]);
    }

    #[test]
    fn new_tracks_after_the_first_frame_are_tentative_and_need_a_second_sighting() {
        let mut tracker = ByteTracker::new(ByteTrackConfig::default());
        let mut out = Vec::new();
        tracker.update(0.0, &[], &mut out);
        tracker.update(0.1, &[det(100.0, 0.9)], &mut out);
        assert!(!out[0].unwrap().confirmed);
        tracker.update(0.2, &[det(300.0, 0.9)], &mut out);
        // The tentative track missed once and went; this one is new.
        assert_eq!(out[0].unwrap().track_id, 2);
        // Below new_track_thresh nothing is born.
        tracker.update(0.3, &[det(600.0, 0.2)], &mut out);
        assert_eq!(out, vec![None]);
    }

    #[test]
    fn classes_never_share_a_track() {
        let mut tracker = ByteTracker::new(ByteTrackConfig::default());
        let mut out = Vec::new();
        tracker.update(0.0, &[det(100.0, 0.9)], &mut out);
        let mut person = det(100.0, 0.9);
        person.class_id = 0;
        tracker.update(0.1, &[person], &mut out);
        assert_ne!(out[0].unwrap().track_id, 1);
    }

    #[test]
    fn the_time_between_frames_is_the_frames_own() {
        // A box moving 10 px per frame interval, then a frame dropped: the prediction
        // steps two intervals, so the box two intervals on still matches tightly.
        let mut tracker = ByteTracker::new(ByteTrackConfig::default());
        let mut out = Vec::new();
        for f in 0..20 {
            tracker.update(f as f64 * 0.1, &[det(10.0 * f as f32, 0.9)], &mut out);
        }
        tracker.update(2.1, &[det(210.0, 0.9)], &mut out);
        assert_eq!(ids(&out), vec![Some(1)]);
        let filtered = out[0].unwrap().box_filtered;
        assert!((filtered.x1 - 210.0).abs() < 3.0, "{filtered:?}");
    }
}
