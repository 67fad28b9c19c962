//! Pipeline behaviour with synthetic sources and stages (no weights needed).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use image::RgbImage;

use super::*;
use crate::metrics::latency::end_to_end_ns;
use crate::sink::SinkError;
use crate::source::SourceError;
use crate::types::{DetectTimings, Frame};

/// Frames every `period`, `count` of them (live: stamped now, no pts).
struct SyntheticSource {
    live: bool,
    period: Duration,
    count: u64,
    next: u64,
}

impl FrameSource for SyntheticSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.next >= self.count {
            return Ok(None);
        }
        std::thread::sleep(self.period);
        let seq = self.next;
        self.next += 1;
        Ok(Some(Frame {
            seq,
            capture_mono_ns: mono_now_ns(),
            capture_wall_ns: 0,
            pts_ns: (!self.live).then(|| seq as i64 * self.period.as_nanos() as i64),
            image: RgbImage::from_pixel(32, 24, image::Rgb([seq as u8, 0, 0])),
        }))
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            description: "synthetic".into(),
            nominal_fps: Some(1.0 / self.period.as_secs_f64()),
            frame_count: (!self.live).then_some(self.count),
            size: Some((32, 24)),
            live: self.live,
            ..SourceInfo::default()
        }
    }
}

/// A "detector" that takes `period` per frame and finds nothing.
struct SlowStage {
    period: Duration,
}

impl Stage<Captured, DetectedFrame> for SlowStage {
    fn process(&mut self, input: Captured) -> Result<DetectedFrame, StageError> {
        let mut stamps = input.stamps;
        stamps.preprocessed = mono_now_ns();
        std::thread::sleep(self.period);
        stamps.inferred = mono_now_ns();
        stamps.postprocessed = mono_now_ns();
        Ok(DetectedFrame {
            frame: input.frame,
            detections: vec![],
            timings: DetectTimings::default(),
            stamps,
            heat: None,
        })
    }
}

/// Records the seqs it is given and whether it was finished.
struct ProbeSink {
    seqs: Arc<std::sync::Mutex<Vec<u64>>>,
    finished: Arc<AtomicBool>,
}

impl Sink for ProbeSink {
    fn name(&self) -> &'static str {
        "probe"
    }
    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        self.seqs.lock().unwrap().push(frame.detected.frame.seq);
        Ok(SinkControl::Continue)
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        self.finished.store(true, Ordering::SeqCst);
        Ok(())
    }
}

struct Probe {
    seqs: Arc<std::sync::Mutex<Vec<u64>>>,
    finished: Arc<AtomicBool>,
}

fn probe() -> (Probe, SinkFactory) {
    let seqs = Arc::new(std::sync::Mutex::new(Vec::new()));
    let finished = Arc::new(AtomicBool::new(false));
    let sink = ProbeSink {
        seqs: seqs.clone(),
        finished: finished.clone(),
    };
    let factory: SinkFactory =
        Box::new(move |_ctx: &SinkContext| Ok(Box::new(sink) as Box<dyn Sink>));
    (Probe { seqs, finished }, factory)
}

fn stages(detect_period: Duration, sinks: Vec<SinkFactory>) -> Stages {
    Stages {
        detect: Box::new(SlowStage {
            period: detect_period,
        }),
        render: Box::new(RenderStage::new(false, 2.0)),
        sinks,
    }
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

#[test]
fn live_source_latest_frame_wins_and_latency_stays_bounded() {
    let detect_period = Duration::from_millis(30);
    let source = SyntheticSource {
        live: true,
        period: Duration::from_millis(2),
        count: 700, // ~1.4 s
        next: 0,
    };
    let (probe, factory) = probe();
    let report = run(
        Box::new(source),
        stages(detect_period, vec![factory]),
        PipelineConfig::new(true),
    )
    .unwrap();
    let s = &report.summary;
    assert!(
        report.max_queue_depth <= 1,
        "queue depth {}",
        report.max_queue_depth
    );
    assert_eq!(s.frames.frames_in, 700);
    assert!(s.frames.dropped.detect > 500, "{:?}", s.frames);
    assert_eq!(
        s.frames.frames_in,
        s.frames.shown + s.frames.dropped.total(),
        "every frame is shown or counted as dropped: {:?}",
        s.frames
    );
    let seqs = probe.seqs.lock().unwrap();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    assert!(probe.finished.load(Ordering::SeqCst));
    // A frame waits at most one detector period, then takes one: ~2 periods at worst (plus
    // scheduling slack: CI runs this beside other tests on 2 cores).
    let e2e_ms: Vec<f64> = report
        .recorder
        .records()
        .iter()
        .filter(|r| !r.warmup)
        .filter_map(|r| end_to_end_ns(&r.stamps))
        .map(|ns| ns as f64 / 1e6)
        .collect();
    assert!(e2e_ms.len() >= 20, "{} frames shown", e2e_ms.len());
    let period_ms = detect_period.as_secs_f64() * 1e3;
    assert!(
        s.end_to_end.p50_ms < 2.0 * period_ms + 40.0,
        "{:?}",
        s.end_to_end
    );
    let third = e2e_ms.len() / 3;
    let (first, last) = (
        mean(&e2e_ms[..third]),
        mean(&e2e_ms[e2e_ms.len() - third..]),
    );
    assert!(
        last < first + 30.0,
        "latency grows: {first:.1} → {last:.1} ms"
    );
}

#[test]
fn file_source_at_max_pace_is_lossless_and_in_order() {
    let source = SyntheticSource {
        live: false,
        period: Duration::from_millis(1),
        count: 40,
        next: 0,
    };
    let (probe, factory) = probe();
    let report = run(
        Box::new(source),
        stages(Duration::from_millis(5), vec![factory]),
        PipelineConfig::new(false),
    )
    .unwrap();
    assert_eq!(*probe.seqs.lock().unwrap(), (0..40).collect::<Vec<u64>>());
    let s = &report.summary;
    assert_eq!(
        (s.frames.frames_in, s.frames.processed, s.frames.shown),
        (40, 40, 40)
    );
    assert_eq!(s.frames.dropped.total(), 0);
    assert_eq!(s.end_to_end.count, 40 - s.warmup.frames as u64);
    assert_eq!(report.recorder.records().len(), 40);
}

#[test]
fn realtime_pace_drops_frames_the_detector_cannot_keep_up_with() {
    let source = SyntheticSource {
        live: false,
        period: Duration::from_millis(1),
        count: 60,
        next: 0,
    };
    let mut config = PipelineConfig::new(false);
    config.pace = Pace::Realtime;
    // Recorded at 1 ms per frame; the "detector" needs 10 ms.
    let report = run(
        Box::new(source),
        stages(Duration::from_millis(10), vec![]),
        config,
    )
    .unwrap();
    let s = &report.summary;
    assert!(
        s.frames.shown < 30 && s.frames.dropped.total() > 30,
        "{:?}",
        s.frames
    );
    assert_eq!(
        s.frames.frames_in,
        s.frames.shown + s.frames.dropped.total()
    );
}

fn endless_live() -> SyntheticSource {
    SyntheticSource {
        live: true,
        period: Duration::from_millis(5),
        count: u64::MAX,
        next: 0,
    }
}

/// The whole message of a run's error, its cause included (as the CLI prints it).
/// The error and all its causes, as the CLI prints them (`a: b: c`).
fn full_message(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        text = format!("{text}: {e}");
        cause = e.source();
    }
    text
}

#[test]
fn a_panicking_stage_ends_the_run_quickly_naming_it_and_sinks_finish() {
    use super::fault::{Fault, FaultySink, FaultySource, FaultyStage};
    for (stage, fault) in [
        ("detect", Fault::panic_at(5)),
        ("render", Fault::error_at(3)),
        ("sink", Fault::panic_at(2)),
        ("capture", Fault::error_at(4)),
    ] {
        let (probe, factory) = probe();
        let factory: SinkFactory = if stage == "sink" {
            Box::new(move |ctx: &SinkContext| {
                Ok(Box::new(FaultySink::new(factory(ctx)?, fault)) as Box<dyn Sink>)
            })
        } else {
            factory
        };
        let mut run_stages = stages(Duration::from_millis(10), vec![factory]);
        match stage {
            "detect" => {
                let slow = SlowStage {
                    period: Duration::from_millis(10),
                };
                run_stages.detect = Box::new(FaultyStage::new(slow, fault));
            }
            "render" => {
                run_stages.render = Box::new(FaultyStage::new(RenderStage::new(false, 2.0), fault));
            }
            _ => {}
        }
        let mut source: Box<dyn FrameSource> = Box::new(endless_live());
        if stage == "capture" {
            source = Box::new(FaultySource::new(source, fault));
        }
        let t0 = Instant::now();
        let err = run(source, run_stages, PipelineConfig::new(true)).expect_err("the run fails");
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(1), "{stage}: took {took:?}");
        let msg = full_message(&err);
        assert!(
            msg.contains(&format!("stage `{stage}`")) && msg.contains("injected"),
            "{msg}"
        );
        assert!(
            probe.finished.load(Ordering::SeqCst),
            "{stage}: sink not finished"
        );
    }
}

/// A failing detector or sink: the JSON-lines file is finished, every line whole, and the
/// error names the stage.
#[test]
fn a_failing_stage_leaves_whole_json_lines() {
    use super::fault::{Fault, FaultySink, FaultyStage};
    for (stage, fault) in [("detect", Fault::panic_at(3)), ("sink", Fault::error_at(2))] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jsonl");
        let jsonl_path = path.clone();
        let factory: SinkFactory = Box::new(move |_: &SinkContext| {
            let sink = Box::new(crate::sink::JsonlSink::create(&jsonl_path)?) as Box<dyn Sink>;
            Ok(if stage == "sink" {
                Box::new(FaultySink::new(sink, fault)) as Box<dyn Sink>
            } else {
                sink
            })
        });
        let mut run_stages = stages(Duration::from_millis(1), vec![factory]);
        if stage == "detect" {
            let slow = SlowStage {
                period: Duration::from_millis(1),
            };
            run_stages.detect = Box::new(FaultyStage::new(slow, fault));
        }
        let source = SyntheticSource {
            live: false,
            period: Duration::from_millis(1),
            count: 20,
            next: 0,
        };
        let err = run(Box::new(source), run_stages, PipelineConfig::new(false))
            .expect_err("the run fails");
        let named = match stage {
            "sink" => "sink `jsonl` failed".to_string(),
            _ => format!("stage `{stage}`"),
        };
        assert!(full_message(&err).contains(&named), "{err}");
        assert!(
            err.report.is_some(),
            "{stage}: no report to write metrics from"
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.lines().count() < 20, "{stage}: stopped early");
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line).expect("a whole JSON line");
        }
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{stage}: a torn last line"
        );
    }
}

#[test]
fn stop_flag_ends_a_live_run_gracefully() {
    let config = PipelineConfig::new(true);
    let stop = config.stop.clone();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
    });
    let (probe, factory) = probe();
    let t0 = Instant::now();
    let report = run(
        Box::new(endless_live()),
        stages(Duration::from_millis(10), vec![factory]),
        config,
    )
    .unwrap();
    stopper.join().unwrap();
    assert!(t0.elapsed() < Duration::from_millis(900));
    assert!(report.stopped_by_user);
    assert!(report.summary.frames.shown > 5);
    assert!(probe.finished.load(Ordering::SeqCst));
}

/// One frame, then a read that blocks for 30 s and ignores the stop flag (a driver call
/// that never returns).
struct StuckSource {
    sent: bool,
}

impl FrameSource for StuckSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.sent {
            std::thread::sleep(Duration::from_secs(30));
            return Ok(None);
        }
        self.sent = true;
        Ok(Some(Frame {
            seq: 0,
            capture_mono_ns: mono_now_ns(),
            capture_wall_ns: 0,
            pts_ns: None,
            image: RgbImage::from_pixel(32, 24, image::Rgb([0, 0, 0])),
        }))
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            description: "stuck".into(),
            size: Some((32, 24)),
            live: true,
            ..SourceInfo::default()
        }
    }
}

/// Regression (issue 12): Ctrl-C ends the run within a second even when the source is
/// stuck in a read; the other stages and the sinks still finish.
#[test]
fn a_stop_ends_the_run_within_a_second_whatever_the_source_does() {
    let config = PipelineConfig::new(true);
    let stop = config.stop.clone();
    let (probe, factory) = probe();
    let t0 = Instant::now();
    let stopper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        stop.store(true, Ordering::SeqCst);
    });
    let report = run(
        Box::new(StuckSource { sent: false }),
        stages(Duration::from_millis(1), vec![factory]),
        config,
    )
    .unwrap();
    stopper.join().unwrap();
    let after_stop = t0.elapsed().saturating_sub(Duration::from_millis(200));
    assert!(after_stop < Duration::from_secs(1), "{after_stop:?}");
    assert!(report.stopped_by_user);
    assert_eq!(report.summary.frames.shown, 1);
    assert!(probe.finished.load(Ordering::SeqCst));
}

/// Asks to quit (as a window's close button or `q` does) on its `quit_at`th frame.
struct QuittingSink {
    seen: u64,
    quit_at: u64,
}

impl Sink for QuittingSink {
    fn name(&self) -> &'static str {
        "quitting"
    }
    fn write(&mut self, _frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        self.seen += 1;
        Ok(if self.seen >= self.quit_at {
            SinkControl::Quit
        } else {
            SinkControl::Continue
        })
    }
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[test]
fn a_sink_asking_to_quit_stops_the_run_gracefully() {
    let factory: SinkFactory = Box::new(|_ctx: &SinkContext| {
        Ok(Box::new(QuittingSink {
            seen: 0,
            quit_at: 5,
        }) as Box<dyn Sink>)
    });
    let t0 = Instant::now();
    let report = run(
        Box::new(endless_live()),
        stages(Duration::from_millis(10), vec![factory]),
        PipelineConfig::new(true),
    )
    .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert!(report.stopped_by_user);
    let shown = report.summary.frames.shown;
    assert!(
        (5..=8).contains(&shown),
        "{shown} frames shown after quitting at 5"
    );
}

#[test]
fn max_frames_ends_a_file_run_after_that_many_frames() {
    let mut config = PipelineConfig::new(false);
    config.max_frames = Some(7);
    let source = SyntheticSource {
        live: false,
        period: Duration::from_millis(1),
        count: 100,
        next: 0,
    };
    let report = run(
        Box::new(source),
        stages(Duration::from_millis(1), vec![]),
        config,
    )
    .unwrap();
    assert_eq!(report.summary.frames.shown, 7);
}

#[test]
fn seq_gaps_count_missing_frames() {
    let mut g = SeqGaps::default();
    assert_eq!([0, 1, 4, 5, 9].map(|s| g.observe(s)), [0, 0, 2, 0, 3]);
}

/// A file source whose frames carry the given `pts_ns`.
struct TimedSource {
    pts: Vec<i64>,
    next: usize,
}

impl FrameSource for TimedSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        let Some(&pts) = self.pts.get(self.next) else {
            return Ok(None);
        };
        let seq = self.next as u64;
        self.next += 1;
        Ok(Some(Frame {
            seq,
            capture_mono_ns: mono_now_ns(),
            capture_wall_ns: 0,
            pts_ns: Some(pts),
            image: RgbImage::from_pixel(32, 24, image::Rgb([seq as u8, 0, 0])),
        }))
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            description: "timed".into(),
            nominal_fps: Some(100.0),
            frame_count: Some(self.pts.len() as u64),
            size: Some((32, 24)),
            ..SourceInfo::default()
        }
    }
}

/// Issue 12, item 4: one absurd timestamp (a drive's `capture_mono_ns` of 9e18) stalled a
/// realtime replay forever; now the jump (there and back) is skipped and counted.
#[test]
fn realtime_pace_skips_timestamp_jumps_and_never_waits_long() {
    let ms = 1_000_000i64;
    let mut pacer = Pacer::new(Some(100.0));
    let t0 = Instant::now();
    for pts in [
        0,
        10 * ms,
        20 * ms,
        9_000_000_000_000_000_000,
        40 * ms,
        30 * ms,
        50 * ms,
    ] {
        assert!(matches!(
            pacer.release(Some(pts), || false),
            Release::OnTime(_) | Release::Late
        ));
    }
    // Six steps of ~10 ms; the jumps replay one period after the frame before.
    assert!(
        t0.elapsed() < Duration::from_millis(300),
        "{:?}",
        t0.elapsed()
    );
    // There (9e18), back (40 ms), and backwards (30 ms after 40 ms).
    assert_eq!(pacer.jumps, 3);
    // A gap of one second more than a frame is replayed as recorded.
    let mut pacer = Pacer::new(Some(100.0));
    pacer.release(Some(0), || false);
    let t0 = Instant::now();
    pacer.release(Some(1_000 * ms), || false);
    assert!(
        t0.elapsed() >= Duration::from_millis(990),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(pacer.jumps, 0);
}

#[test]
fn a_timestamp_jump_in_a_realtime_replay_is_noted_and_every_frame_read() {
    let ms = 1_000_000i64;
    let mut pts: Vec<i64> = (0..20).map(|i| i * 10 * ms).collect();
    pts[5] = 9_000_000_000_000_000_000;
    let mut config = PipelineConfig::new(false);
    config.pace = Pace::Realtime;
    let (probe, factory) = probe();
    let t0 = Instant::now();
    let report = run(
        Box::new(TimedSource { pts, next: 0 }),
        stages(Duration::from_millis(1), vec![factory]),
        config,
    )
    .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    assert_eq!(report.summary.frames.frames_in, 20);
    assert!(probe.seqs.lock().unwrap().contains(&19));
    assert!(
        report
            .summary
            .notes
            .iter()
            .any(|n| n.contains("2 timestamp jump")),
        "{:?}",
        report.summary.notes
    );
}

/// Issue 12, item 5: one failing sink ended the run without the others' outputs or the
/// metrics. Now it is closed, the others take the frame and those in flight and are
/// finished, and the error (with the report) names the sink.
#[test]
fn a_failing_sink_is_closed_and_the_others_finish_with_a_report() {
    use super::fault::{Fault, FaultySink};
    let (failing, failing_factory) = probe();
    let failing_factory: SinkFactory = Box::new(move |ctx: &SinkContext| {
        Ok(Box::new(FaultySink::new(failing_factory(ctx)?, Fault::error_at(5))) as Box<dyn Sink>)
    });
    let (other, other_factory) = probe();
    let source = SyntheticSource {
        live: false,
        period: Duration::from_millis(2),
        count: 200,
        next: 0,
    };
    let t0 = Instant::now();
    let failed = run(
        Box::new(source),
        stages(
            Duration::from_millis(1),
            vec![failing_factory, other_factory],
        ),
        PipelineConfig::new(false),
    )
    .expect_err("the run fails");
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
    let message = full_message(&failed);
    assert!(
        message.contains("sink `probe` failed") && message.contains("injected failure at frame 5"),
        "{message}"
    );
    assert!(matches!(
        failed.error,
        PipelineError::Sink {
            sink: "probe",
            more: 0,
            ..
        }
    ));
    assert!(
        failing.finished.load(Ordering::SeqCst),
        "the failed sink is closed"
    );
    assert!(
        other.finished.load(Ordering::SeqCst),
        "the other sink is finished"
    );
    let report = failed.report.expect("a report to write the metrics from");
    let seqs = other.seqs.lock().unwrap().clone();
    // Every frame in order up to where the run stopped, the failing frame included.
    assert_eq!(seqs, (0..seqs.len() as u64).collect::<Vec<_>>());
    assert!(seqs.len() >= 5 && seqs.len() < 200, "{}", seqs.len());
    assert_eq!(report.summary.frames.shown, seqs.len() as u64);
    assert!(!report.stopped_by_user);
    assert!(
        report
            .summary
            .notes
            .iter()
            .any(|n| n.contains("injected failure")),
        "{:?}",
        report.summary.notes
    );
}

/// Issue 12, item 5: a video sink that fails mid-run still leaves a playable video of
/// every frame before the failure.
#[test]
fn a_video_sink_failing_mid_run_leaves_a_playable_file_up_to_its_last_good_frame() {
    use super::fault::{Fault, FaultySink};
    let tools = match crate::source::FfmpegConfig::from_vars(|name| std::env::var_os(name)).tools()
    {
        Ok(tools) => tools,
        Err(e) if std::env::var("CI").is_err() => {
            eprintln!("skipping: {e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v.mp4");
    let video_path = path.clone();
    let video_tools = tools.clone();
    let factory: SinkFactory = Box::new(move |ctx: &SinkContext| {
        let video = crate::sink::VideoSink::create_with(
            &video_tools,
            &video_path,
            ctx.width,
            ctx.height,
            ctx.fps,
        )?;
        Ok(Box::new(FaultySink::new(Box::new(video), Fault::error_at(11))) as Box<dyn Sink>)
    });
    let source = SyntheticSource {
        live: false,
        period: Duration::from_millis(1),
        count: 40,
        next: 0,
    };
    let mut run_stages = stages(Duration::from_millis(1), vec![factory]);
    run_stages.render = Box::new(RenderStage::new(true, 2.0));
    let failed =
        run(Box::new(source), run_stages, PipelineConfig::new(false)).expect_err("the run fails");
    assert!(
        full_message(&failed).contains("sink `video` failed"),
        "{failed}"
    );
    let out = std::process::Command::new(&tools.ffprobe)
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10");
}
