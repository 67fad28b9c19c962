//! Distances per detection: a calibration places each box on the road
//! ([`crate::calib::estimate_distance`]). The tracker after it turns one object's
//! distances over time into a closing speed and a time to collision.

use crate::calib::{estimate_distance, CalibError, Calibration};
use crate::pipeline::{Stage, StageError};
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

/// Distances from a calibration (the time to collision comes from the tracker, which
/// follows each object's distance over time: [`crate::track::TrackStage`]).
pub struct Ranging {
    calibration: Calibration,
    /// The calibration scaled to the current frame size.
    scaled: Option<((u32, u32), Calibration)>,
}

impl Ranging {
    pub fn new(calibration: Calibration) -> Self {
        Self {
            calibration,
            scaled: None,
        }
    }

    /// Sets `range` on every placeable detection.
    pub fn apply(&mut self, frame: &Frame, detections: &mut [Detection]) -> Result<(), CalibError> {
        let size = (frame.width(), frame.height());
        if self.scaled.as_ref().map(|(s, _)| *s) != Some(size) {
            let cal = self.calibration.for_image_size(size.0, size.1)?;
            self.scaled = Some((size, cal));
        }
        let cal = &self.scaled.as_ref().expect("set above").1;
        for d in detections.iter_mut() {
            d.range = estimate_distance(cal, &d.box_in_image, &d.class, size.0, size.1)
                .map(|e| e.to_range());
        }
        Ok(())
    }
}
