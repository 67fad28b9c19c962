//! Distances and time to collision per detection: a calibration places each box on the
//! road ([`crate::calib::estimate_distance`]), and a tracker over frames turns the
//! distances of one object into a closing speed and a time to collision.

use crate::calib::{estimate_distance, CalibError, Calibration};
use crate::pipeline::{Stage, StageError};
use crate::track::{TtcConfig, TtcInput, TtcTracker};
use crate::types::{mono_now_ns, DetectedFrame, Detection, Frame};

/// [`Ranging`] as a pipeline stage after the detector: its time counts as post-processing.
pub struct RangingStage {
    ranging: Ranging,
}

impl RangingStage {
    pub fn new(calibration: Calibration) -> Self {
        Self {
            ranging: Ranging::new(calibration),
        }
    }
}

impl Stage<DetectedFrame, DetectedFrame> for RangingStage {
    fn process(&mut self, mut detected: DetectedFrame) -> Result<DetectedFrame, StageError> {
        let start = mono_now_ns();
        self.ranging
            .apply(&detected.frame, &mut detected.detections)?;
        let end = mono_now_ns();
        detected.stamps.postprocessed = end;
        detected.timings.postprocess += end.saturating_sub(start) as f64 / 1e6;
        Ok(detected)
    }
}

/// Distances from a calibration and time to collision from a tracker over frames.
pub struct Ranging {
    calibration: Calibration,
    /// The calibration scaled to the current frame size.
    scaled: Option<((u32, u32), Calibration)>,
    tracker: TtcTracker,
}

impl Ranging {
    pub fn new(calibration: Calibration) -> Self {
        Self {
            calibration,
            scaled: None,
            tracker: TtcTracker::new(TtcConfig::default()),
        }
    }

    /// Sets `range` (with `ttc_s` once a track has history) on every placeable detection.
    pub fn apply(&mut self, frame: &Frame, detections: &mut [Detection]) -> Result<(), CalibError> {
        let size = (frame.width(), frame.height());
        if self.scaled.as_ref().map(|(s, _)| *s) != Some(size) {
            let cal = self.calibration.for_image_size(size.0, size.1)?;
            self.scaled = Some((size, cal));
        }
        let cal = &self.scaled.as_ref().expect("set above").1;
        let mut inputs = Vec::with_capacity(detections.len());
        for d in detections.iter_mut() {
            let estimate = estimate_distance(cal, &d.box_in_image, &d.class, size.0, size.1);
            inputs.push(TtcInput {
                box_in_image: d.box_in_image,
                class_id: d.class_id,
                // The near face closes first: TTC is measured to it.
                distance_m: estimate.as_ref().map(|e| e.nearest_m),
                lateral_m: estimate.as_ref().map(|e| e.lateral_m),
            });
            d.range = estimate.map(|e| e.to_range());
        }
        let outputs = self.tracker.update(frame_time_s(frame), &inputs);
        for (d, out) in detections.iter_mut().zip(outputs) {
            if let Some(range) = &mut d.range {
                range.ttc_s = out.ttc_s;
            }
        }
        Ok(())
    }
}

/// The frame's time for tracking: its recorded time when replayed, else its capture time.
fn frame_time_s(frame: &Frame) -> f64 {
    match frame.pts_ns {
        Some(pts) => pts as f64 / 1e9,
        None => frame.capture_mono_ns as f64 / 1e9,
    }
}
