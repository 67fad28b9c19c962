//! The stage shape: a plain struct with a `process` method that takes one item and returns
//! the next, knowing nothing of threads or channels (those belong to [`super::run`]).
//!
//! [`DetectStage`] wraps the [`Detector`] (stamping pre-processing, inference and
//! post-processing); steps after it on the same thread join with [`StageExt::then`] (the
//! distances of the ranging stage, a tracker); [`PassThrough`] stands in for the
//! detector when recording; [`RenderStage`] draws boxes, labels and the forward-collision
//! banner into a pooled copy of the frame. Errors are [`StageError`]s. Tests plug in their
//! own stages (a slow fake detector, the failing wrappers of `super::fault`).

use std::marker::PhantomData;

use image::RgbImage;

use crate::calib::undistort::Undistort;
use crate::detect::Detector;
use crate::types::{
    mono_now_ns, DetectTimings, DetectedFrame, Detection, Frame, FramePool, FrameStamps,
};

/// A frame as the capture stage hands it on.
#[derive(Debug, Clone)]
pub struct Captured {
    pub frame: Frame,
    pub stamps: FrameStamps,
}

/// A detected frame and, when some sink needs pixels, its annotated copy.
#[derive(Debug, Clone)]
pub struct Rendered {
    pub detected: DetectedFrame,
    pub annotated: Option<RgbImage>,
}

/// Items that carry their frame's `seq` (for drop counting from gaps).
pub trait Sequenced {
    fn seq(&self) -> u64;
}

impl Sequenced for Captured {
    fn seq(&self) -> u64 {
        self.frame.seq
    }
}

impl Sequenced for DetectedFrame {
    fn seq(&self) -> u64 {
        self.frame.seq
    }
}

impl Sequenced for Rendered {
    fn seq(&self) -> u64 {
        self.detected.frame.seq
    }
}

/// Why a stage, the source or a sink stopped a run.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    #[error(transparent)]
    Detect(#[from] crate::detect::error::DetectError),
    #[error(transparent)]
    Calib(#[from] crate::calib::CalibError),
    #[error(transparent)]
    Sink(#[from] crate::sink::SinkError),
    /// A test's injected failure ([`super::fault`]).
    #[error("{0}")]
    Injected(String),
}

/// One step of the pipeline. It runs on a thread the pipeline owns, one item at a time.
pub trait Stage<In, Out>: Send {
    fn process(&mut self, input: In) -> Result<Out, StageError>;

    /// Where the stage takes frame-sized buffers from (the pipeline returns them after the
    /// sinks); a stage that allocates none ignores it.
    fn use_pool(&mut self, pool: FramePool) {
        let _ = pool;
    }
}

/// Two stages one after the other on one thread: `first`, then `second` on its output. A
/// step after the detector (distances, tracking) joins the pipeline this way, with no thread
/// or hop of its own: `DetectStage::new(detector).then(RangingStage::new(calibration))`.
pub struct Then<A, B, Mid> {
    pub first: A,
    pub second: B,
    mid: PhantomData<fn() -> Mid>,
}

impl<In, Mid, Out, A, B> Stage<In, Out> for Then<A, B, Mid>
where
    A: Stage<In, Mid>,
    B: Stage<Mid, Out>,
{
    fn process(&mut self, input: In) -> Result<Out, StageError> {
        self.second.process(self.first.process(input)?)
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.first.use_pool(pool.clone());
        self.second.use_pool(pool);
    }
}

/// [`Then`] as a method on every stage.
pub trait StageExt<In, Mid>: Stage<In, Mid> + Sized {
    fn then<Out, B: Stage<Mid, Out>>(self, second: B) -> Then<Self, B, Mid> {
        Then {
            first: self,
            second,
            mid: PhantomData,
        }
    }
}

impl<In, Mid, S: Stage<In, Mid>> StageExt<In, Mid> for S {}

/// The detector as a stage (after the optional undistortion).
pub struct DetectStage {
    detector: Detector,
    undistort: Option<Undistort>,
    /// `--explain`: the classes whose score map each frame carries.
    explain: Option<Vec<bool>>,
}

impl DetectStage {
    pub fn new(detector: Detector) -> Self {
        Self {
            detector,
            undistort: None,
            explain: None,
        }
    }

    /// The detector (for its model name, input size, op profile).
    pub fn detector_mut(&mut self) -> &mut Detector {
        &mut self.detector
    }

    /// Removes lens distortion from every frame before detection (`--undistort`): boxes,
    /// distances and the shown image are then in the undistorted frame, so the ranging
    /// should use `Calibration::without_distortion`.
    pub fn with_undistort(mut self, undistort: Undistort) -> Self {
        self.undistort = Some(undistort);
        self
    }

    /// Every frame carries the score map of `classes` (one flag per class id) from its own
    /// inference (`--explain`).
    pub fn with_explain(mut self, classes: Vec<bool>) -> Self {
        self.explain = Some(classes);
        self
    }
}

impl Stage<Captured, DetectedFrame> for DetectStage {
    fn process(&mut self, input: Captured) -> Result<DetectedFrame, StageError> {
        let Captured {
            mut frame,
            mut stamps,
        } = input;
        let (w, h) = (frame.width() as usize, frame.height() as usize);
        let t0 = mono_now_ns();
        if let Some(undistort) = &mut self.undistort {
            undistort.apply(&mut frame.image)?;
        }
        let (input, image_from_model) = self.detector.preprocess(frame.image.as_raw(), w, h)?;
        stamps.preprocessed = mono_now_ns();
        self.detector.infer(&input)?;
        stamps.inferred = mono_now_ns();
        let detections = self.detector.postprocess(&image_from_model)?;
        stamps.postprocessed = mono_now_ns();
        // From the output the detections came from: no second inference. After the
        // post-processing stamp, so that its time is not counted as post-processing.
        let heat = self.explain.as_ref().map(|classes| {
            let maps = self.detector.score_maps(classes);
            crate::explain::score_heat(&maps, &image_from_model, EXPLAIN_CELL_PX)
        });
        let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e6;
        let timings = DetectTimings {
            preprocess: ms(t0, stamps.preprocessed),
            inference: ms(stamps.preprocessed, stamps.inferred),
            postprocess: ms(stamps.inferred, stamps.postprocessed),
            track: 0.0,
        };
        Ok(DetectedFrame {
            frame,
            detections,
            timings,
            stamps,
            heat,
        })
    }
}

/// Cell of the `--explain` score map in image pixels (sampled once per cell).
const EXPLAIN_CELL_PX: u32 = 8;

/// A frame that has a presentation time gets a capture time of the first frame's plus its
/// `pts_ns`, so that a drive recorded from a file at full speed still replays at the
/// file's own timing.
#[derive(Debug, Default)]
pub struct SourceTiming {
    /// (capture ns, pts ns) of the first frame.
    origin: Option<(u64, i64)>,
}

impl SourceTiming {
    pub fn apply(&mut self, frame: &mut Frame) {
        if let Some(pts) = frame.pts_ns {
            let (mono0, pts0) = *self.origin.get_or_insert((frame.capture_mono_ns, pts));
            frame.capture_mono_ns = (mono0 as i64 + (pts - pts0)).max(0) as u64;
        }
    }
}

/// No detector (recording): the frame goes on with no detections.
///
/// With `keep_source_timing`, capture times follow the file's timestamps ([`SourceTiming`]).
#[derive(Debug, Default)]
pub struct PassThrough {
    pub keep_source_timing: bool,
    timing: SourceTiming,
}

impl PassThrough {
    pub fn new(keep_source_timing: bool) -> Self {
        Self {
            keep_source_timing,
            timing: SourceTiming::default(),
        }
    }
}

impl Stage<Captured, DetectedFrame> for PassThrough {
    fn process(&mut self, input: Captured) -> Result<DetectedFrame, StageError> {
        let Captured {
            mut frame,
            mut stamps,
        } = input;
        if self.keep_source_timing {
            self.timing.apply(&mut frame);
        }
        let now = mono_now_ns();
        (stamps.preprocessed, stamps.inferred, stamps.postprocessed) = (now, now, now);
        Ok(DetectedFrame {
            frame,
            detections: Vec::new(),
            timings: DetectTimings::default(),
            stamps,
            heat: None,
        })
    }
}

/// [`SourceTiming`] as a step before the detector (`record --privacy` of a file); a live
/// source (`keep_source_timing` false) keeps its capture times.
#[derive(Debug, Default)]
pub struct Retime {
    pub keep_source_timing: bool,
    timing: SourceTiming,
}

impl Retime {
    pub fn new(keep_source_timing: bool) -> Self {
        Self {
            keep_source_timing,
            timing: SourceTiming::default(),
        }
    }
}

impl Stage<Captured, Captured> for Retime {
    fn process(&mut self, mut input: Captured) -> Result<Captured, StageError> {
        if self.keep_source_timing {
            self.timing.apply(&mut input.frame);
        }
        Ok(input)
    }
}

/// Draws detections (with distances) and the forward-collision banner on a copy of the frame.
pub struct RenderStage {
    /// False when no sink needs pixels: the stage only stamps.
    pub draw: bool,
    /// Show the forward-collision warning below this time to collision, seconds.
    pub ttc_warn_s: f64,
    overlay: crate::render::Overlay,
    pool: FramePool,
}

impl RenderStage {
    pub fn new(draw: bool, ttc_warn_s: f64) -> Self {
        Self {
            draw,
            ttc_warn_s,
            overlay: crate::render::Overlay::default(),
            pool: FramePool::default(),
        }
    }

    /// Draws a short trail behind each tracked object (`--trails`).
    pub fn with_trails(mut self, on: bool) -> Self {
        self.overlay = std::mem::take(&mut self.overlay).with_trails(on);
        self
    }
}

impl Stage<DetectedFrame, Rendered> for RenderStage {
    fn use_pool(&mut self, pool: FramePool) {
        self.pool = pool;
    }

    fn process(&mut self, mut detected: DetectedFrame) -> Result<Rendered, StageError> {
        let annotated = self.draw.then(|| {
            let source = &detected.frame.image;
            let mut image = self.pool.take_image(source.width(), source.height());
            image.copy_from_slice(source.as_raw());
            self.overlay.draw(&mut image, &detected.detections);
            if let Some(ttc) = min_ttc(&detected.detections).filter(|t| *t < self.ttc_warn_s) {
                crate::render::draw_collision_banner(&mut image, ttc);
            }
            image
        });
        detected.stamps.rendered = mono_now_ns();
        Ok(Rendered {
            detected,
            annotated,
        })
    }
}

/// The shortest time to collision among the detections.
pub fn min_ttc(detections: &[Detection]) -> Option<f64> {
    detections
        .iter()
        .filter_map(|d| d.range.as_ref()?.ttc_s)
        .min_by(f64::total_cmp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BoxXyxy, ClassGroup, Range};

    fn detected(ttc: Option<f64>) -> DetectedFrame {
        DetectedFrame {
            frame: Frame {
                seq: 7,
                capture_mono_ns: 1,
                capture_wall_ns: 1,
                pts_ns: None,
                image: RgbImage::new(640, 360),
            },
            detections: vec![Detection {
                class_id: 2,
                class: "car".into(),
                group: ClassGroup::Vehicle,
                score: 0.8,
                box_in_image: BoxXyxy::new(100.0, 150.0, 300.0, 300.0),
                range: Some(Range {
                    distance_m: 9.0,
                    lateral_m: 0.2,
                    distance_method: crate::types::DistanceMethod::Fused,
                    nearest_m: 0.0,
                    smoothed_distance_m: None,
                    ttc_s: ttc,
                    closing_speed_mps: None,
                }),
                track_id: None,
                track_age_s: None,
            }],
            timings: DetectTimings::default(),
            stamps: FrameStamps::default(),
            heat: None,
        }
    }

    #[test]
    fn render_draws_the_banner_only_below_the_warning_time() {
        let mut stage = RenderStage::new(true, 2.0);
        let red = image::Rgb([220, 20, 20]);
        let banner_row = 360 / 8 + 1;
        let out = stage.process(detected(Some(1.2))).unwrap();
        assert_eq!(
            *out.annotated.as_ref().unwrap().get_pixel(2, banner_row),
            red
        );
        assert!(out.detected.stamps.rendered > 0);
        let out = stage.process(detected(Some(3.0))).unwrap();
        assert_ne!(
            *out.annotated.as_ref().unwrap().get_pixel(2, banner_row),
            red
        );
    }

    #[test]
    fn render_without_pixel_sinks_only_stamps() {
        let mut stage = RenderStage::new(false, 2.0);
        let out = stage.process(detected(None)).unwrap();
        assert!(out.annotated.is_none());
        assert_eq!(out.seq(), 7);
    }
}
