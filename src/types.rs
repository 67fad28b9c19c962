//! Plain data shared between stages: frames, boxes, detections and per-stage timings.
//!
//! Nothing here knows about candle, windows or threads.

use serde::{Deserialize, Serialize};

/// One captured frame: RGB8 pixels stamped by its source.
///
/// `seq` counts frames as the source produced them (gaps downstream are drops);
/// `capture_mono_ns` is on [`crate::types::mono_now_ns`]'s clock, `capture_wall_ns` is Unix
/// time, `pts_ns` the source's own presentation time where it has one.
#[derive(Debug, Clone)]
pub struct Frame {
    pub seq: u64,
    pub capture_mono_ns: u64,
    pub capture_wall_ns: u64,
    pub pts_ns: Option<i64>,
    pub image: image::RgbImage,
}

impl Frame {
    pub fn width(&self) -> u32 {
        self.image.width()
    }

    pub fn height(&self) -> u32 {
        self.image.height()
    }
}

/// Monotonic timestamps (ns, [`mono_now_ns`] clock) a frame collects on its way through
/// the pipeline; 0 = the frame has not reached that point.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameStamps {
    pub captured: u64,
    pub decoded: u64,
    pub preprocessed: u64,
    pub inferred: u64,
    pub postprocessed: u64,
    /// After the tracker (0 without one: the track stage then takes no time).
    #[serde(default)]
    pub tracked: u64,
    pub rendered: u64,
    pub presented: u64,
}

/// A frame with what the detect stage found in it.
#[derive(Debug, Clone)]
pub struct DetectedFrame {
    pub frame: Frame,
    pub detections: Vec<Detection>,
    pub timings: DetectTimings,
    pub stamps: FrameStamps,
    /// The detector's score map over the frame (`--explain`), from the same inference.
    pub heat: Option<HeatMap>,
}

/// Values in `[0, 1]` on a grid over an image: cell `(x, y)` covers image pixels
/// `[x·cell, (x+1)·cell) × [y·cell, (y+1)·cell)` (the explain module draws them).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeatMap {
    pub cell: u32,
    pub cols: u32,
    pub rows: u32,
    /// Row-major, `cols × rows`.
    pub values: Vec<f32>,
}

impl HeatMap {
    /// The value at image pixel `(x, y)`.
    pub fn at(&self, x: u32, y: u32) -> f32 {
        let (c, r) = (
            (x / self.cell).min(self.cols - 1),
            (y / self.cell).min(self.rows - 1),
        );
        self.values[(r * self.cols + c) as usize]
    }

    /// The image pixel (centre of the cell) with the highest value.
    pub fn argmax(&self) -> (u32, u32) {
        let (i, _) =
            self.values
                .iter()
                .enumerate()
                .fold((0, f32::NEG_INFINITY), |best, (i, &v)| {
                    if v > best.1 {
                        (i, v)
                    } else {
                        best
                    }
                });
        let (c, r) = (i as u32 % self.cols, i as u32 / self.cols);
        (c * self.cell + self.cell / 2, r * self.cell + self.cell / 2)
    }
}

/// Nanoseconds on the process's monotonic clock (zero at first use).
pub fn mono_now_ns() -> u64 {
    static EPOCH: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    EPOCH
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_nanos() as u64
}

/// Nanoseconds since the Unix epoch (wall clock; may jump).
pub fn wall_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// An axis-aligned box as `[x1, y1, x2, y2]`, in whatever pixel space its name says.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoxXyxy {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
}

impl BoxXyxy {
    pub fn new(x1: f32, y1: f32, x2: f32, y2: f32) -> Self {
        Self { x1, y1, x2, y2 }
    }

    pub fn from_center(cx: f32, cy: f32, w: f32, h: f32) -> Self {
        Self::new(cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0)
    }

    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// Intersection over union; 0 when either box is empty.
    pub fn iou(&self, other: &BoxXyxy) -> f32 {
        let ix = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let iy = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let inter = ix * iy;
        let union = self.area() + other.area() - inter;
        if union <= 0.0 {
            0.0
        } else {
            inter / union
        }
    }

    pub fn to_array(&self) -> [f32; 4] {
        [self.x1, self.y1, self.x2, self.y2]
    }
}

/// Which kind of road user a class belongs to; decides the default filter and box colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ClassGroup {
    Pedestrian,
    Vehicle,
    Sign,
    Other,
}

impl ClassGroup {
    pub const ALL: [ClassGroup; 4] = [
        ClassGroup::Pedestrian,
        ClassGroup::Vehicle,
        ClassGroup::Sign,
        ClassGroup::Other,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            ClassGroup::Pedestrian => "pedestrian",
            ClassGroup::Vehicle => "vehicle",
            ClassGroup::Sign => "sign",
            ClassGroup::Other => "other",
        }
    }

    pub fn from_name(name: &str) -> Option<ClassGroup> {
        ClassGroup::ALL.into_iter().find(|g| g.name() == name)
    }
}

/// Which cue decided the distance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DistanceMethod {
    /// The bottom-centre ray meets the road (or it outweighed the size prior ≥ 3:1).
    GroundContact,
    /// The class's typical size (no usable contact point, or it outweighed the contact ≥ 3:1).
    SizePrior,
    /// Both cues, weighted by their expected errors.
    Fused,
}

impl DistanceMethod {
    pub fn name(&self) -> &'static str {
        match self {
            DistanceMethod::GroundContact => "ground_contact",
            DistanceMethod::SizePrior => "size_prior",
            DistanceMethod::Fused => "fused",
        }
    }
}

/// One detected object, its box in source-image pixels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub class_id: usize,
    /// The model's name of the class, shared between detections (cloning it copies no text).
    pub class: std::sync::Arc<str>,
    pub group: ClassGroup,
    pub score: f32,
    #[serde(with = "box_as_array", rename = "box_xyxy")]
    pub box_in_image: BoxXyxy,
    /// Distance on the road, present when a calibration is given.
    #[serde(flatten, default, skip_serializing_if = "Option::is_none")]
    pub range: Option<Range>,
    /// The confirmed track this detection continues (stable, never reused in a run); `None`
    /// without a tracker, or while the track is still tentative.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_id: Option<u64>,
    /// Seconds since that track was born.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub track_age_s: Option<f64>,
}

/// How far a detection is, and how soon it would be reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Range {
    /// Along the road, from the camera to the object, metres.
    pub distance_m: f64,
    /// Sideways from the camera's axis, metres (positive = right).
    pub lateral_m: f64,
    /// Which cue decided (`ground_contact`, `size_prior` or `fused` in JSON).
    pub distance_method: DistanceMethod,
    /// To the object's near face (what a collision reaches first), metres.
    #[serde(default)]
    pub nearest_m: f64,
    /// `distance_m` smoothed over the track's last second (with a tracker).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smoothed_distance_m: Option<f64>,
    /// Time to collision for closing objects in the ego path, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttc_s: Option<f64>,
    /// How fast the tracked object's distance shrinks, m/s (negative: moving away); from
    /// the track's distances over the last second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub closing_speed_mps: Option<f64>,
}

mod box_as_array {
    use super::BoxXyxy;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(b: &BoxXyxy, s: S) -> Result<S::Ok, S::Error> {
        b.to_array().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BoxXyxy, D::Error> {
        let [x1, y1, x2, y2] = <[f32; 4]>::deserialize(d)?;
        Ok(BoxXyxy::new(x1, y1, x2, y2))
    }
}

/// Time spent in each part of detection (and tracking) for one image, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct DetectTimings {
    pub preprocess: f64,
    pub inference: f64,
    pub postprocess: f64,
    /// The tracker's update (0 without one).
    #[serde(default)]
    pub track: f64,
}

impl DetectTimings {
    pub fn total(&self) -> f64 {
        self.preprocess + self.inference + self.postprocess + self.track
    }
}

/// Frame-sized byte buffers, handed back when a frame is done with so that the next frame
/// decodes or draws into one of them instead of a new allocation. Cloning shares the pool.
///
/// The pipeline makes one per run (holding a few more buffers than can be in flight),
/// gives it to the source and the render stage, and returns every frame's pixels when its
/// last sink is done. A buffer that finds the pool full is freed.
#[derive(Debug, Clone, Default)]
pub struct FramePool {
    free: std::sync::Arc<std::sync::Mutex<Vec<Vec<u8>>>>,
    capacity: usize,
}

impl FramePool {
    /// A pool keeping at most `capacity` spare buffers.
    pub fn new(capacity: usize) -> Self {
        Self {
            free: std::sync::Arc::new(std::sync::Mutex::new(Vec::with_capacity(capacity))),
            capacity,
        }
    }

    /// A buffer of `len` bytes with unspecified contents: a spare one when one is large
    /// enough, else a new one.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let spare = {
            let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
            let found = free.iter().position(|b| b.capacity() >= len);
            found.map(|i| free.swap_remove(i))
        };
        match spare {
            Some(mut buf) => {
                buf.resize(len, 0);
                buf
            }
            None => vec![0; len],
        }
    }

    /// An image of `width`×`height` with unspecified pixels, from [`FramePool::take`].
    pub fn take_image(&self, width: u32, height: u32) -> image::RgbImage {
        let buf = self.take(width as usize * height as usize * 3);
        image::RgbImage::from_raw(width, height, buf).expect("buffer sized to the image")
    }

    /// Gives a buffer back for reuse.
    pub fn put(&self, buf: Vec<u8>) {
        if buf.capacity() == 0 {
            return;
        }
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if free.len() < self.capacity {
            free.push(buf);
        }
    }

    /// Spare buffers held now.
    pub fn spare(&self) -> usize {
        self.free.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// What the window's heads-up display shows, computed by the pipeline's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HudStats {
    /// Frames shown per second over the last 2 s.
    pub fps: f64,
    /// End-to-end (capture → presented) latency percentiles over the last 2 s, ms.
    pub e2e_p50_ms: f64,
    pub e2e_p99_ms: f64,
    /// Inference time of this frame, ms.
    pub inference_ms: f64,
    /// Frames dropped so far, all stages together.
    pub dropped: u64,
    /// Model and device, e.g. `yolox-nano cpu`.
    pub model: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iou_of_identical_boxes_is_one_and_of_disjoint_is_zero() {
        let a = BoxXyxy::new(0.0, 0.0, 10.0, 10.0);
        assert!((a.iou(&a) - 1.0).abs() < 1e-6);
        let b = BoxXyxy::new(20.0, 20.0, 30.0, 30.0);
        assert_eq!(a.iou(&b), 0.0);
        let c = BoxXyxy::new(5.0, 0.0, 15.0, 10.0);
        assert!((a.iou(&c) - 50.0 / 150.0).abs() < 1e-6);
    }

    #[test]
    fn detection_serialises_box_as_array() {
        let d = Detection {
            class_id: 0,
            class: "person".into(),
            group: ClassGroup::Pedestrian,
            score: 0.5,
            box_in_image: BoxXyxy::new(1.0, 2.0, 3.0, 4.0),
            range: None,
            track_id: None,
            track_age_s: None,
        };
        let json = serde_json::to_string(&d).unwrap();
        assert!(json.contains("\"box_xyxy\":[1.0,2.0,3.0,4.0]"), "{json}");
        assert!(json.contains("\"group\":\"pedestrian\""), "{json}");
        assert!(!json.contains("distance_m"), "{json}");
        let with_range = Detection {
            range: Some(Range {
                distance_m: 14.2,
                lateral_m: -1.5,
                distance_method: DistanceMethod::Fused,
                nearest_m: 0.0,
                smoothed_distance_m: None,
                ttc_s: None,
                closing_speed_mps: None,
            }),
            ..d
        };
        let json = serde_json::to_string(&with_range).unwrap();
        assert!(
            json.contains("\"distance_m\":14.2,\"lateral_m\":-1.5,\"distance_method\":\"fused\",\"nearest_m\":0.0}"),
            "{json}"
        );
        let back: Detection = serde_json::from_str(&json).unwrap();
        assert_eq!(back, with_range);
    }

    #[test]
    fn the_frame_pool_reuses_buffers_and_keeps_at_most_its_capacity() {
        let pool = FramePool::new(2);
        let a = pool.take(1000);
        let ptr = a.as_ptr();
        pool.put(a);
        let b = pool.take(900);
        assert_eq!(b.as_ptr(), ptr, "the spare buffer comes back");
        assert_eq!(b.len(), 900);
        let c = pool.take(2000);
        assert_ne!(c.as_ptr(), ptr);
        pool.put(b);
        pool.put(c);
        pool.put(vec![0; 10]);
        assert_eq!(pool.spare(), 2);
        let image = pool.take_image(20, 10);
        assert_eq!(image.dimensions(), (20, 10));
    }
}
