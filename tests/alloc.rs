//! Allocations on the hot path, counted by a global allocator of this test binary, over 200
//! frames after a warm-up of 40. `cargo test alloc` runs them:
//! - the whole pipeline: a source decoding `bus.jpg` again and again into pooled buffers, as
//!   a video decoder does → YOLOX-Nano on the CPU executor → render with labels → a
//!   JSON-lines sink and a sink that reads the annotated pixels;
//! - a recorded drive replayed (JPEG and PNG frame files, written by the library's
//!   `DriveWriter`): the drive reader decoding each file → render → a sink reading pixels.
//!
//! Frame-sized allocations (a third of a frame's bytes or more) must be zero: frames decode
//! into, and render draws into, buffers from the pipeline's frame pool. The small ones that
//! remain (detections' vectors, the JSON line, the HUD's model string, channel bookkeeping;
//! for a drive the frame file's path and the decoders' state) are printed per frame, not
//! asserted. The tests take turns (one counter for the process).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use lookout::detect::{Detector, DetectorConfig};
use lookout::drive::{DriveManifest, DriveWriter, FrameFileFormat};
use lookout::pipeline::{self, DetectStage, PassThrough, PipelineConfig, RenderStage, Stages};
use lookout::sink::{JsonlSink, Sink, SinkContext, SinkControl, SinkError, SinkFactory, SinkFrame};
use lookout::source::{DriveReader, FrameSource, SourceError, SourceInfo};
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
/// The largest small allocation, bytes.
static LARGEST_SMALL: AtomicU64 = AtomicU64::new(0);
/// Held by each test while it counts: the counters are the process's.
static COUNTING: Mutex<()> = Mutex::new(());

/// Takes the counters for one test, zeroed.
fn take_counters() -> std::sync::MutexGuard<'static, ()> {
    let guard = COUNTING.lock().unwrap_or_else(|p| p.into_inner());
    ARMED.store(false, Ordering::SeqCst);
    for counter in [&LARGE, &LARGE_BYTES, &SMALL, &LARGEST_SMALL] {
        counter.store(0, Ordering::SeqCst);
    }
    guard
}

/// Arms the counter when frame `WARM_UP` is asked for and disarms it at `WARM_UP +
/// MEASURED`, whichever source it is.
fn arm_for(seq: u64) {
    if seq == WARM_UP {
        ARMED.store(true, Ordering::SeqCst);
    }
    if seq == WARM_UP + MEASURED {
        ARMED.store(false, Ordering::SeqCst);
    }
}

/// `(frame-sized allocations, their bytes, small ones)` counted so far, printed.
fn counted(what: &str) -> (u64, u64, u64) {
    let (large, bytes, small) = (
        LARGE.load(Ordering::SeqCst),
        LARGE_BYTES.load(Ordering::SeqCst),
        SMALL.load(Ordering::SeqCst),
    );
    eprintln!(
        "{what}: over {MEASURED} frames: {large} frame-sized allocations ({bytes} bytes), {small} small ones ({:.1} per frame, the largest {} bytes)",
        small as f64 / MEASURED as f64,
        LARGEST_SMALL.load(Ordering::SeqCst)
    );
    (large, bytes, small)
}

fn count(size: usize) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    if size >= FRAME_SIZED {
        LARGE.fetch_add(1, Ordering::Relaxed);
        LARGE_BYTES.fetch_add(size as u64, Ordering::Relaxed);
    } else {
        SMALL.fetch_add(1, Ordering::Relaxed);
        LARGEST_SMALL.fetch_max(size as u64, Ordering::Relaxed);
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
        arm_for(seq);
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

/// Reads every annotated frame (so the render stage draws), keeps nothing. It stalls once
/// during the warm-up, on frame [`STALL_AT`], so that every hop upstream fills: the pool
/// then grows to the most buffers a run can hold in flight before anything is counted (with
/// a fast source and an idle sink it would otherwise grow the first time the machine
/// hiccups, a growth and not a per-frame allocation).
struct ReadsPixels(u64);

const STALL_AT: u64 = 10;

impl Sink for ReadsPixels {
    fn name(&self) -> &'static str {
        "pixels"
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        let annotated = frame.annotated.expect("the render stage draws");
        self.0 = self.0.wrapping_add(u64::from(annotated.as_raw()[0]));
        if frame.detected.frame.seq == STALL_AT {
            std::thread::sleep(std::time::Duration::from_millis(500));
        }
        Ok(SinkControl::Continue)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[test]
fn alloc_no_frame_sized_allocation_per_frame_after_warm_up() {
    let _counters = take_counters();
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
    let (large, _, _) = counted("bus.jpg → detect → render → jsonl");
    assert_eq!(large, 0, "frame-sized allocations on the hot path");
}

/// A drive reader, counting as [`arm_for`] says.
struct ArmedDrive {
    reader: DriveReader,
    seq: u64,
}

impl FrameSource for ArmedDrive {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        arm_for(self.seq);
        self.seq += 1;
        self.reader.next_frame()
    }

    fn info(&self) -> SourceInfo {
        self.reader.info()
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.reader.use_pool(pool);
    }
}

/// Records `frames` frames of the synthetic test pattern, `bus.jpg`-sized, into a new
/// drive at `dir` as the recorder does (a frame file, then its index line).
fn record_drive(dir: &std::path::Path, format: FrameFileFormat, frames: u64) {
    let (w, h) = (810, 1080);
    let manifest = DriveManifest::new("synthetic:810x1080", w, h, 25.0, format);
    let mut writer = DriveWriter::create(dir, manifest).unwrap();
    for seq in 0..frames {
        let frame = Frame {
            seq,
            capture_mono_ns: 1_000_000_000 + seq * 40_000_000,
            capture_wall_ns: 1_700_000_000_000_000_000 + seq * 40_000_000,
            pts_ns: Some(seq as i64 * 40_000_000),
            image: lookout::source::synthetic::pattern(w, h, seq),
        };
        writer.write_frame(&frame).unwrap();
    }
    assert_eq!(writer.finish().unwrap(), frames);
}

/// Regression test for issue 11 (the drive replay source allocated a frame per file):
/// replaying a drive decodes every frame file into the pipeline's pooled buffers.
#[test]
fn alloc_drive_replay_decodes_into_pooled_buffers() {
    let frames = WARM_UP + MEASURED + 20;
    for format in [FrameFileFormat::Jpg, FrameFileFormat::Png] {
        // Held from here: recording allocates too, which must not count in another test.
        let _counters = take_counters();
        let tmp = tempfile::tempdir().unwrap();
        let drive = tmp.path().join("drive");
        record_drive(&drive, format, frames);
        let source = Box::new(ArmedDrive {
            reader: DriveReader::open(&drive).unwrap(),
            seq: 0,
        });
        let stages = Stages {
            detect: Box::new(PassThrough::new(false)),
            render: Box::new(RenderStage::new(true, f64::INFINITY)),
            sinks: vec![Box::new(|_: &SinkContext| {
                Ok(Box::new(ReadsPixels(0)) as Box<dyn Sink>)
            })],
        };
        let mut config = PipelineConfig::new(false);
        config.keep_frame_records = false;
        let report = pipeline::run(source, stages, config).unwrap();
        assert_eq!(report.summary.frames.processed, frames);
        let (large, _, _) = counted(&format!(
            "drive of {} frames → render → pixels",
            format.extension()
        ));
        assert_eq!(
            large, 0,
            "frame-sized allocations replaying a {format:?} drive"
        );
    }
}
