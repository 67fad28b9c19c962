//! Allocations on the hot path, counted by a global allocator of this test binary: the whole
//! pipeline (a source decoding `bus.jpg` again and again into pooled buffers, as a video
//! decoder does → YOLOX-Nano on the CPU executor → render with labels → a JSON-lines sink
//! and a sink that reads the annotated pixels) over 200 frames after a warm-up of 40.
//! `cargo test alloc` runs it.
//!
//! Frame-sized allocations (a third of a frame's bytes or more) must be zero: frames decode
//! into, and render draws into, buffers from the pipeline's frame pool. The small ones that
//! remain (detections' vectors, the JSON line, the HUD's model string, channel bookkeeping)
//! are printed per frame, not asserted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use lookout::detect::{Detector, DetectorConfig};
use lookout::pipeline::{self, DetectStage, PipelineConfig, RenderStage, Stages};
use lookout::sink::{JsonlSink, Sink, SinkContext, SinkControl, SinkError, SinkFactory, SinkFrame};
use lookout::source::{FrameSource, SourceError, SourceInfo};
use lookout::types::{mono_now_ns, wall_now_ns, Frame, FramePool};

/// `bus.jpg` is 810x1080: a third of its bytes. Anything this large is a frame buffer (or
/// a model input: 416x416x3 f32 is larger still).
const FRAME_SIZED: usize = 810 * 1080;
const WARM_UP: u64 = 40;
const MEASURED: u64 = 200;

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static LARGE: AtomicU64 = AtomicU64::new(0);
static LARGE_BYTES: AtomicU64 = AtomicU64::new(0);
static SMALL: AtomicU64 = AtomicU64::new(0);

fn count(size: usize) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    if size >= FRAME_SIZED {
        LARGE.fetch_add(1, Ordering::Relaxed);
        LARGE_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    } else {
        SMALL.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; counting has no effect on
// the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            count(new_size);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// One image "decoded" into a pooled buffer per frame (a copy, as a decoder writes its
/// output), arming the counter once the warm-up frames are out and disarming it after the
/// measured ones.
struct Replay {
    image: image::RgbImage,
    pool: FramePool,
    seq: u64,
}

impl FrameSource for Replay {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let seq = self.seq;
        self.seq += 1;
        if seq == WARM_UP {
            ARMED.store(true, Ordering::SeqCst);
        }
        if seq == WARM_UP + MEASURED {
            ARMED.store(false, Ordering::SeqCst);
        }
        let (w, h) = self.image.dimensions();
        let mut image = self.pool.take_image(w, h);
        image.copy_from_slice(self.image.as_raw());
        Ok(Some(Frame {
            seq,
            capture_mono_ns: mono_now_ns(),
            capture_wall_ns: wall_now_ns(),
            pts_ns: Some(seq as i64 * 40_000_000),
            image,
        }))
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            description: "bus.jpg, repeated".into(),
            nominal_fps: Some(25.0),
            size: Some(self.image.dimensions()),
            ..SourceInfo::default()
        }
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.pool = pool;
    }
}

/// Reads every annotated frame (so the render stage draws), keeps nothing.
struct ReadsPixels(u64);

impl Sink for ReadsPixels {
    fn name(&self) -> &'static str {
        "pixels"
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        let annotated = frame.annotated.expect("the render stage draws");
        self.0 = self.0.wrapping_add(u64::from(annotated.as_raw()[0]));
        Ok(SinkControl::Continue)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[test]
fn alloc_no_frame_sized_allocation_per_frame_after_warm_up() {
    let (Some(weights), Some(bus)) = (
        lookout::fixtures::require("models/yolox_nano.safetensors"),
        lookout::fixtures::require("images/bus.jpg"),
    ) else {
        return;
    };
    let detector = Detector::load(&DetectorConfig::new(weights)).unwrap();
    let source = Box::new(Replay {
        image: lookout::imageio::read_rgb(&bus).unwrap(),
        pool: FramePool::default(),
        seq: 0,
    });
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("d.jsonl");
    let jsonl_path = jsonl.clone();
    let sinks: Vec<SinkFactory> = vec![
        Box::new(move |_: &SinkContext| {
            Ok(Box::new(JsonlSink::create(&jsonl_path)?) as Box<dyn Sink>)
        }),
        Box::new(|_: &SinkContext| Ok(Box::new(ReadsPixels(0)) as Box<dyn Sink>)),
    ];
    let stages = Stages {
        detect: Box::new(DetectStage::new(detector)),
        render: Box::new(RenderStage::new(true, 2.0)),
        sinks,
    };
    let mut config = PipelineConfig::new(false);
    config.max_frames = Some(WARM_UP + MEASURED + 20);
    config.keep_frame_records = false;
    let report = pipeline::run(source, stages, config).unwrap();
    assert_eq!(report.summary.frames.processed, WARM_UP + MEASURED + 20);
    let lines = std::fs::read_to_string(&jsonl).unwrap();
    assert!(
        lines.lines().all(|l| l.contains("\"person\"")),
        "detections in every frame"
    );
    let (large, small) = (LARGE.load(Ordering::SeqCst), SMALL.load(Ordering::SeqCst));
    eprintln!(
        "over {MEASURED} frames: {large} frame-sized allocations ({} bytes), {small} small ones ({:.1} per frame)",
        LARGE_BYTES.load(Ordering::SeqCst),
        small as f64 / MEASURED as f64
    );
    assert_eq!(large, 0, "frame-sized allocations on the hot path");
}
