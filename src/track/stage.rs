//! The tracker as a pipeline stage after the detector (and the distances): gives each
//! detection of a confirmed track its identity and age, keeps what the detector found below
//! `--conf` only where it continues a confirmed track, and, with distances, each track's
//! smoothed distance, closing speed and time to collision. With `--privacy` it also covers
//! the privacy classes in the frame's pixels ([`crate::privacy`]): the detector's boxes down
//! to `--privacy-conf`, and the predicted boxes of lost tracks.

use super::closing::{ClosingConfig, ClosingSpeeds, DistanceSample};
use super::{Assigned, TrackInput, Tracker};
use crate::pipeline::{Stage, StageError};
use crate::privacy::Anonymiser;
use crate::types::BoxXyxy;
use crate::types::{mono_now_ns, DetectedFrame, Frame};

pub struct TrackStage {
    tracker: Box<dyn Tracker>,
    /// Detections below this score are shown only when they continue a confirmed track.
    min_score_shown: f32,
    closing: ClosingSpeeds,
    inputs: Vec<TrackInput>,
    assigned: Vec<Option<Assigned>>,
    privacy: Option<PrivacyCover>,
}

/// What `--privacy` covers: classes by id, from a score, with the anonymiser's buffers.
struct PrivacyCover {
    anonymiser: Anonymiser,
    /// One flag per class id of the model.
    classes: Vec<bool>,
    min_score: f32,
    coasting: Vec<(usize, BoxXyxy)>,
}

impl PrivacyCover {
    fn covers(&self, class_id: usize) -> bool {
        self.classes.get(class_id).copied().unwrap_or(false)
    }

    /// Covers this frame's detections of the classes, and the lost tracks' predicted boxes.
    fn cover(
        &mut self,
        image: &mut image::RgbImage,
        detections: &[crate::types::Detection],
        tracker: &dyn Tracker,
    ) {
        for d in detections {
            if d.score >= self.min_score && self.covers(d.class_id) {
                self.anonymiser.cover(image, &d.box_in_image);
            }
        }
        self.coasting.clear();
        tracker.coasting(&mut self.coasting);
        for i in 0..self.coasting.len() {
            let (class_id, b) = self.coasting[i];
            if self.covers(class_id) {
                self.anonymiser.cover(image, &b);
            }
        }
    }
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
            privacy: None,
        }
    }

    /// Covers the classes flagged in `classes` (one flag per class id) in every frame's
    /// pixels: detections at or above `min_score` and lost tracks' predicted boxes.
    pub fn with_privacy(
        mut self,
        anonymiser: Anonymiser,
        classes: Vec<bool>,
        min_score: f32,
    ) -> Self {
        self.privacy = Some(PrivacyCover {
            anonymiser,
            classes,
            min_score,
            coasting: Vec::new(),
        });
        self
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
        if let Some(privacy) = &mut self.privacy {
            privacy.cover(
                &mut detected.frame.image,
                &detected.detections,
                &*self.tracker,
            );
        }
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
            heat: None,
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

    /// Issue 18: a person detected in frames 1–5 and 7–10 but not 6 stays covered in 6.
    #[test]
    fn privacy_covers_a_person_the_detector_misses_for_a_frame() {
        use crate::privacy::{Anonymiser, PrivacyMethod};
        let checker = image::RgbImage::from_fn(320, 240, |x, y| {
            let v = if (x / 2 + y / 2) % 2 == 0 { 250 } else { 5 };
            image::Rgb([v, v, v])
        });
        let person = |f: u64| Detection {
            class_id: 0,
            class: "person".into(),
            group: ClassGroup::Pedestrian,
            score: if f == 8 { 0.2 } else { 0.9 },
            box_in_image: BoxXyxy::new(100.0 + 3.0 * f as f32, 60.0, 150.0 + 3.0 * f as f32, 200.0),
            range: None,
            track_id: None,
            track_age_s: None,
        };
        let tracker = build(TrackerKind::Bytetrack, ByteTrackConfig::default()).unwrap();
        // Class 0 (person) covered from score 0.15; shown from 0.5.
        let mut stage = TrackStage::new(tracker, 0.5).with_privacy(
            Anonymiser::new(PrivacyMethod::Blur, 0.1),
            vec![true, false],
            0.15,
        );
        for f in 1..=10u64 {
            let mut detected = frame(f, &[]);
            detected.frame.image = checker.clone();
            if f != 6 {
                detected.detections.push(person(f));
            }
            let out = stage.process(detected).unwrap();
            // The centre of where the person is (or is predicted to be) has lost its detail.
            let cx = 125 + 3 * f as u32;
            let (a, b) = (
                out.frame.image.get_pixel(cx, 130).0[0],
                out.frame.image.get_pixel(cx + 1, 130).0[0],
            );
            assert!(
                (a as i32 - b as i32).abs() < 40,
                "frame {f}: {a} next to {b}: not covered"
            );
            // Away from the person (and its margin) the pixels are the original ones.
            for (x, y) in [(10, 10), (300, 130), (125, 230)] {
                assert_eq!(
                    out.frame.image.get_pixel(x, y),
                    checker.get_pixel(x, y),
                    "frame {f} at {x},{y}"
                );
            }
        }
    }
}
