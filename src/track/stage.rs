//! The tracker as a pipeline stage after the detector (and the distances): gives each
//! detection of a confirmed track its identity and age, keeps what the detector found below
//! `--conf` only where it continues a confirmed track, and, with distances, each track's
//! smoothed distance, closing speed and time to collision.

use super::closing::{ClosingConfig, ClosingSpeeds, DistanceSample};
use super::{Assigned, TrackInput, Tracker};
use crate::pipeline::{Stage, StageError};
use crate::types::{mono_now_ns, DetectedFrame, Frame};

pub struct TrackStage {
    tracker: Box<dyn Tracker>,
    /// Detections below this score are shown only when they continue a confirmed track.
    min_score_shown: f32,
    closing: ClosingSpeeds,
    inputs: Vec<TrackInput>,
    assigned: Vec<Option<Assigned>>,
}

impl TrackStage {
    /// `min_score_shown` is the run's `--conf`; the detector runs with the tracker's lower
    /// threshold so that the tracker sees the low-score boxes too.
    pub fn new(tracker: Box<dyn Tracker>, min_score_shown: f32) -> Self {
        Self {
            tracker,
            min_score_shown,
            closing: ClosingSpeeds::new(ClosingConfig::default()),
            inputs: Vec::new(),
            assigned: Vec::new(),
        }
    }

    pub fn tracker_name(&self) -> &'static str {
        self.tracker.name()
    }

    /// Tracks one frame's detections in place.
    pub fn track(&mut self, detected: &mut DetectedFrame) {
        let time_s = frame_time_s(&detected.frame);
        self.inputs.clear();
        self.inputs
            .extend(detected.detections.iter().map(|d| TrackInput {
                box_in_image: d.box_in_image,
                score: d.score,
                class_id: d.class_id,
            }));
        self.tracker
            .update(time_s, &self.inputs, &mut self.assigned);
        let mut index = 0;
        let (assigned, min_score) = (&self.assigned, self.min_score_shown);
        detected.detections.retain_mut(|d| {
            let a = assigned[index];
            index += 1;
            match a {
                Some(a) if a.confirmed => {
                    d.track_id = Some(a.track_id);
                    d.track_age_s = Some(a.age_s);
                    true
                }
                _ => d.score >= min_score,
            }
        });
        for d in &mut detected.detections {
            let (Some(track_id), Some(range)) = (d.track_id, d.range.as_mut()) else {
                continue;
            };
            let closing = self.closing.observe(
                time_s,
                DistanceSample {
                    track_id,
                    nearest_m: range.nearest_m,
                    lateral_m: range.lateral_m,
                },
            );
            range.smoothed_distance_m = closing
                .smoothed_nearest_m
                .map(|near| near + (range.distance_m - range.nearest_m));
            range.closing_speed_mps = closing.closing_speed_mps;
            range.ttc_s = closing.ttc_s;
        }
        self.closing.forget_stale(time_s);
    }
}

impl Stage<DetectedFrame, DetectedFrame> for TrackStage {
    fn process(&mut self, mut detected: DetectedFrame) -> Result<DetectedFrame, StageError> {
        let start = mono_now_ns();
        self.track(&mut detected);
        let end = mono_now_ns();
        detected.stamps.tracked = end;
        detected.timings.track = end.saturating_sub(start) as f64 / 1e6;
        Ok(detected)
    }
}

/// The frame's time for tracking: its recorded time when replayed, else its capture time.
pub fn frame_time_s(frame: &Frame) -> f64 {
    match frame.pts_ns {
        Some(pts) => pts as f64 / 1e9,
        None => frame.capture_mono_ns as f64 / 1e9,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::{build, ByteTrackConfig, TrackerKind};
    use crate::types::{BoxXyxy, ClassGroup, DetectTimings, Detection, FrameStamps};

    fn frame(seq: u64, boxes: &[(f32, f32)]) -> DetectedFrame {
        DetectedFrame {
            frame: Frame {
                seq,
                capture_mono_ns: 0,
                capture_wall_ns: 0,
                pts_ns: Some(seq as i64 * 100_000_000),
                image: image::RgbImage::new(1, 1),
            },
            detections: boxes
                .iter()
                .map(|&(x, score)| Detection {
                    class_id: 2,
                    class: "car".into(),
                    group: ClassGroup::Vehicle,
                    score,
                    box_in_image: BoxXyxy::new(x, 100.0, x + 60.0, 160.0),
                    range: None,
                    track_id: None,
                    track_age_s: None,
                })
                .collect(),
            timings: DetectTimings::default(),
            stamps: FrameStamps::default(),
        }
    }

    #[test]
    fn low_scores_show_only_on_confirmed_tracks_and_ids_are_stamped() {
        let tracker = build(TrackerKind::Bytetrack, ByteTrackConfig::default()).unwrap();
        let mut stage = TrackStage::new(tracker, 0.5);
        let out = stage
            .process(frame(0, &[(100.0, 0.9), (400.0, 0.2)]))
            .unwrap();
        // The 0.2 box is below --conf and starts nothing: not shown.
        assert_eq!(out.detections.len(), 1);
        assert_eq!(out.detections[0].track_id, Some(1));
        assert!(out.stamps.tracked > 0);
        // The car fades to 0.2: still shown, as track 1, with its age.
        let out = stage.process(frame(1, &[(103.0, 0.2)])).unwrap();
        assert_eq!(out.detections.len(), 1);
        assert_eq!(out.detections[0].track_id, Some(1));
        assert!((out.detections[0].track_age_s.unwrap() - 0.1).abs() < 1e-9);
    }
}
