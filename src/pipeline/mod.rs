//! The live pipeline: capture → detect → render → sinks, each on its own thread, joined by
//! crossbeam channels. Only this module spawns threads or touches channels.
//!
//! Live sources (and `--pace realtime`) hand frames on through [`LatestSlot`]s: a newer
//! frame replaces a waiting one, which is counted as dropped, so queues never grow. Files at
//! `--pace max` use lossless one-slot hand-overs with back-pressure: every frame is
//! processed, in order, and the same input gives the same detections. Stages are plain
//! structs ([`Stage`]); a stage that errs or panics sets the abort flag, every loop sees it
//! within one poll (tens of ms), sinks still finish their files, and [`run`] returns an
//! error naming the stage. Ctrl-C, a window's close button and the end of the input stop
//! gracefully: stages drain, sinks finish.
//!
//! Frames' pixels circulate through one [`FramePool`]: the source decodes into its buffers,
//! render copies into one, and the sink thread gives both back when every sink is done, so a
//! warm run makes no frame-sized allocation (`cargo test alloc`).
//!
//! Threads: the detector's rayon pool gets `--threads` (default all cores); on the CPU the
//! detect thread hands each frame's network to that pool and sleeps until it is done.
//! Capture and render share the cores with the pool: both mostly wait (capture on ffmpeg's
//! pipe or the camera, render on the detector), and their bursts — decoding a frame into
//! RGB, copying and drawing boxes — take a few ms per frame, so on a 2-core machine they
//! steal a few percent of inference time (a preempted pool thread delays the layer it is
//! in; rayon's other thread takes the rest of that layer's rows) rather than needing a
//! core of their own. `--threads 1` leaves one core to them on a machine where capture is
//! heavy (a 4K camera's MJPEG decode).

#[cfg(test)]
pub mod fault;
pub mod slot;
pub mod stage;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

pub use slot::{hop, Handed, HopSender, LatestSlot};
pub use stage::{
    Captured, DetectStage, PassThrough, RenderStage, Rendered, Retime, Sequenced, Stage,
    StageError, StageExt, Then,
};

use crate::metrics::hud::HudWindow;
use crate::metrics::latency::{Drops, FrameCounts, Hop, LatencyRecorder, QueueWaits, RunSummary};
use crate::sink::{Sink, SinkContext, SinkControl, SinkError, SinkFactory, SinkFrame};
use crate::source::{FrameSource, SourceInfo};
use crate::types::{mono_now_ns, DetectedFrame, FramePool, FrameStamps};

/// How often a waiting loop looks at the stop and abort flags.
const POLL: Duration = Duration::from_millis(20);
/// After a failure, how long the other stages get to wind down before the run returns.
const ABORT_GRACE: Duration = Duration::from_millis(800);
/// After a stop, how long a capture thread stuck in its source (which should have seen the
/// stop: [`FrameSource::watch_stop`]) is waited for once every other stage is done.
const STOP_GRACE: Duration = Duration::from_millis(500);

/// How file sources are fed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// As fast as the pipeline goes, every frame (lossless, deterministic).
    Max,
    /// At the recorded timing (`pts_ns`); frames that cannot keep up are dropped.
    Realtime,
}

impl Pace {
    pub fn name(self) -> &'static str {
        match self {
            Pace::Max => "max",
            Pace::Realtime => "realtime",
        }
    }
}

/// How a run behaves; built once by the command.
pub struct PipelineConfig {
    /// A camera or stream: latest frame wins on every hop.
    pub live: bool,
    pub pace: Pace,
    pub max_frames: Option<u64>,
    /// Stop reading after this long.
    pub duration: Option<Duration>,
    pub warmup_frames: usize,
    /// Keep every frame's latency record (for `--metrics-csv` and `--plot`); without it
    /// only the warm-up frames' are kept and memory stays flat on endless live runs.
    pub keep_frame_records: bool,
    /// `yolox-nano cpu`, for the HUD and summary.
    pub model: String,
    /// `cuda:0 f16`, for the summary (metrics.json).
    pub device: String,
    pub model_load_ms: f64,
    /// Show a progress bar (file sources without a window).
    pub progress: bool,
    /// Set by Ctrl-C (or anyone) to stop gracefully; the pipeline sets it on a window quit.
    pub stop: Arc<AtomicBool>,
    /// Work beside the stages for the whole run (the live server).
    pub services: Vec<Service>,
}

/// Work that runs beside the stages for the whole run on a thread of its own (the live
/// Foxglove server's accept-and-send loop). `run` returns soon after its flag is set,
/// which happens once every sink is finished.
pub struct Service {
    pub name: &'static str,
    pub run: ServiceBody,
}

/// What a [`Service`] runs: until its flag is set; an error is logged.
pub type ServiceBody = Box<dyn FnOnce(&AtomicBool) -> Result<(), String> + Send>;

/// A started service: its stop flag and thread.
type Running = (Arc<AtomicBool>, std::thread::JoinHandle<()>);

/// The started services; dropping it stops them (also when a stage thread fails to start).
struct Services(Vec<Running>);

impl Drop for Services {
    fn drop(&mut self) {
        stop_services(std::mem::take(&mut self.0));
    }
}

/// How long a service has to return after it is told to stop.
const SERVICE_STOP: Duration = Duration::from_secs(1);

impl PipelineConfig {
    /// Defaults for a source: lossless unless live, pace max, no limits.
    pub fn new(live: bool) -> Self {
        Self {
            live,
            pace: Pace::Max,
            max_frames: None,
            duration: None,
            warmup_frames: crate::metrics::latency::DEFAULT_WARMUP_FRAMES,
            keep_frame_records: true,
            model: String::new(),
            device: String::new(),
            model_load_ms: 0.0,
            progress: false,
            stop: Arc::new(AtomicBool::new(false)),
            services: Vec::new(),
        }
    }

    /// Latest-wins hops (live sources, or files replayed in real time).
    fn latest_wins(&self) -> bool {
        self.live || self.pace == Pace::Realtime
    }
}

/// The stages of one run.
pub struct Stages {
    pub detect: Box<dyn Stage<Captured, DetectedFrame>>,
    pub render: Box<dyn Stage<DetectedFrame, Rendered>>,
    pub sinks: Vec<SinkFactory>,
}

/// What a finished run hands back.
pub struct RunReport {
    pub summary: RunSummary,
    pub recorder: LatencyRecorder,
    /// The user stopped the run (Ctrl-C, window closed) before the input ended.
    pub stopped_by_user: bool,
    /// Why the input ended before its announced end (truncated file, lost camera), if it did.
    pub ended_early: Option<String>,
    /// The most frames ever waiting on one hop (1 at most on latest-wins hops).
    pub max_queue_depth: usize,
}

impl std::fmt::Debug for RunReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunReport")
            .field("summary", &self.summary)
            .field("stopped_by_user", &self.stopped_by_user)
            .field("ended_early", &self.ended_early)
            .field("max_queue_depth", &self.max_queue_depth)
            .finish_non_exhaustive()
    }
}

/// A run that failed: why, and what it had done by then — every output it could finish is
/// finished, and `report` (the metrics up to the failure) is there to be written. `None`
/// only when the run never started (a thread could not be spawned).
#[derive(Debug)]
pub struct RunFailed {
    pub error: PipelineError,
    pub report: Option<Box<RunReport>>,
}

impl std::fmt::Display for RunFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for RunFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.error)
    }
}

impl From<PipelineError> for RunFailed {
    fn from(error: PipelineError) -> Self {
        Self {
            error,
            report: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("stage `{stage}` failed")]
    Stage {
        stage: &'static str,
        #[source]
        error: Box<StageError>,
    },
    #[error("stage `{stage}` panicked: {message}")]
    Panic {
        stage: &'static str,
        message: String,
    },
    /// A sink failed (a full disk, a lost display): it was closed as well as it could be,
    /// the run stopped, and every other output was finished.
    #[error("sink `{sink}` failed{}; the run stopped there and every other output is complete", if *more > 0 { format!(" (and {more} more, see the metrics notes)") } else { String::new() })]
    Sink {
        sink: &'static str,
        /// Further sinks that failed too.
        more: usize,
        #[source]
        error: Box<SinkError>,
    },
    #[error("cannot start the `{stage}` thread: {message}")]
    Spawn {
        stage: &'static str,
        message: String,
    },
}

/// Shared flags and the first failure.
struct Control {
    stop: Arc<AtomicBool>,
    abort: AtomicBool,
    /// A sink failed: the run winds down as on a user stop, the other sinks finishing.
    sink_failed: AtomicBool,
    failure: Mutex<Option<PipelineError>>,
}

impl Control {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
            || self.sink_failed.load(Ordering::Relaxed)
            || self.aborted()
    }

    fn aborted(&self) -> bool {
        self.abort.load(Ordering::Relaxed)
    }

    /// Keeps the first failure and tells every stage to quit.
    fn fail(&self, error: PipelineError) {
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(error);
        self.abort.store(true, Ordering::Relaxed);
    }
}

/// Frames through one stage; `dropped` counts `seq` gaps in what it received.
#[derive(Default)]
struct StageCounter {
    received: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
}

#[derive(Default)]
struct Counters {
    capture: StageCounter,
    detect: StageCounter,
    render: StageCounter,
    sink: StageCounter,
    max_queue_depth: AtomicU64,
    /// Timestamp jumps the realtime pacer skipped.
    pace_jumps: AtomicU64,
}

impl Counters {
    /// Drops so far (from `seq` gaps), all stages together.
    fn dropped_so_far(&self) -> u64 {
        [&self.capture, &self.detect, &self.render, &self.sink]
            .iter()
            .map(|c| c.dropped.load(Ordering::Relaxed))
            .sum()
    }

    fn note_depth(&self, depth: usize) {
        self.max_queue_depth
            .fetch_max(depth as u64, Ordering::Relaxed);
    }

    /// Final drops: a stage's drops are what its predecessor sent and it never received
    /// (the `seq` gaps, plus any frame replaced after the last one it took).
    fn drops(&self, source_skipped: u64) -> Drops {
        let gap = |from: &StageCounter, to: &StageCounter| {
            from.sent
                .load(Ordering::Relaxed)
                .saturating_sub(to.received.load(Ordering::Relaxed))
        };
        Drops {
            capture: self.capture.dropped.load(Ordering::Relaxed) + source_skipped,
            detect: gap(&self.capture, &self.detect),
            render: gap(&self.detect, &self.render),
            sink: gap(&self.render, &self.sink),
        }
    }
}

/// An item on a hop: when its producer had it ready, and how long the frame has waited
/// on each hop so far (before detect, render, sink), so that stage times exclude queueing.
struct Timed<T> {
    item: T,
    ready_ns: u64,
    waits: QueueWaits,
}

impl<T> Timed<T> {
    fn new(item: T, waits: QueueWaits) -> Self {
        Self {
            item,
            ready_ns: mono_now_ns(),
            waits,
        }
    }
}

impl<T: Sequenced> Sequenced for Timed<T> {
    fn seq(&self) -> u64 {
        self.item.seq()
    }
}

/// Counts frames missing between consecutive `seq`s.
#[derive(Default)]
struct SeqGaps {
    last: Option<u64>,
}

impl SeqGaps {
    fn observe(&mut self, seq: u64) -> u64 {
        let gap = match self.last {
            Some(last) if seq > last + 1 => seq - last - 1,
            _ => 0,
        };
        self.last = Some(seq);
        gap
    }
}

/// Frame buffers kept for reuse: more than can be in flight at once (one per thread and hop
/// for the frames, and for their annotated copies).
const FRAME_POOL_BUFFERS: usize = 12;

/// Runs `source` through `stages` until the input ends, the user stops or a stage fails.
pub fn run(
    mut source: Box<dyn FrameSource>,
    mut stages: Stages,
    mut config: PipelineConfig,
) -> Result<RunReport, RunFailed> {
    mono_now_ns(); // starts the clock, so that no stamp is 0
    let info = source.info();
    // Every frame's pixels (and its annotated copy) go back here when the sinks are done,
    // and the source and the render stage take their buffers from it: no frame-sized
    // allocation per frame once warm.
    let pool = FramePool::new(FRAME_POOL_BUFFERS);
    source.use_pool(pool.clone());
    // A source blocked on a stalled stream or a slow live rate gives up on a stop.
    source.watch_stop(config.stop.clone());
    stages.render.use_pool(pool.clone());
    let ctl = Arc::new(Control {
        stop: config.stop.clone(),
        abort: AtomicBool::new(false),
        sink_failed: AtomicBool::new(false),
        failure: Mutex::new(None),
    });
    let counters = Arc::new(Counters::default());
    let lossless = !config.latest_wins();
    let (to_detect, detect_rx) = hop::<Timed<Captured>>(lossless);
    let (to_render, render_rx) = hop::<Timed<DetectedFrame>>(lossless);
    let (to_sink, sink_rx) = hop::<Timed<Rendered>>(lossless);
    let (done_tx, done_rx) = crossbeam_channel::unbounded::<&'static str>();
    let started = Instant::now();

    let services = Services(start_services(std::mem::take(&mut config.services))?);
    let capture = {
        let (c, counters) = (ctl.clone(), counters.clone());
        let feed = CaptureFeed {
            pacer: (config.pace == Pace::Realtime && !config.live)
                .then(|| Pacer::new(info.nominal_fps)),
            max_frames: config.max_frames,
            deadline: config.duration.map(|d| started + d),
        };
        spawn("capture", &ctl, &done_tx, move || {
            capture_loop(source, feed, &to_detect, &c, &counters)
        })?
    };
    let detect = spawn_stage(
        Hop::ToDetect,
        stages.detect,
        (detect_rx, to_render),
        &ctl,
        &done_tx,
        &counters,
    )?;
    let render = spawn_stage(
        Hop::ToRender,
        stages.render,
        (render_rx, to_sink),
        &ctl,
        &done_tx,
        &counters,
    )?;
    let sink = {
        let (c, counters) = (ctl.clone(), counters.clone());
        let setup = SinkSetup {
            factories: stages.sinks,
            fps: info.nominal_fps.unwrap_or(30.0),
            fallback_size: info.size,
            model: config.model.clone(),
            warmup_frames: config.warmup_frames,
            keep_frame_records: config.keep_frame_records,
            pool,
        };
        spawn("sink", &ctl, &done_tx, move || {
            sink_loop(setup, &sink_rx, &c, &counters)
        })?
    };
    drop(done_tx);

    let progress = config
        .progress
        .then(|| progress_bar(config.max_frames.into_iter().chain(info.frame_count).min()));
    supervise(&done_rx, &ctl, &counters, progress.as_ref());
    if let Some(bar) = &progress {
        bar.finish_and_clear();
    }
    let duration_s = started.elapsed().as_secs_f64();

    let failure = ctl.failure.lock().unwrap_or_else(|p| p.into_inner()).take();
    // Without a failure every thread reported done and the joins return at once; after one,
    // a stage stuck in a blocking call (a stalled stream) is left behind.
    let join_by =
        (failure.is_some() || ctl.stopping()).then(|| Instant::now() + Duration::from_millis(100));
    let final_info = join_done(capture, join_by).unwrap_or(info);
    let (recorder, sink_failures) = match join_done(sink, join_by) {
        Some(done) => (done.recorder, done.failures),
        None => (LatencyRecorder::new(config.warmup_frames), Vec::new()),
    };
    let _ = (join_done(detect, join_by), join_done(render, join_by));
    drop(services);

    let drops = counters.drops(final_info.skipped_frames);
    let frames = FrameCounts {
        frames_in: counters.capture.received.load(Ordering::Relaxed),
        processed: counters.detect.sent.load(Ordering::Relaxed),
        shown: counters.sink.received.load(Ordering::Relaxed),
        dropped: drops,
    };
    let mut summary = RunSummary::build(&recorder, frames, duration_s, config.model_load_ms);
    summary.source = final_info.description.clone();
    summary.model = config.model.clone();
    summary.device = config.device.clone();
    summary.pace = if config.live {
        "live".into()
    } else {
        config.pace.name().into()
    };
    summary.notes.extend(final_info.note.clone());
    if final_info.ended_early {
        summary.notes.push("the input ended early".into());
    }
    match counters.pace_jumps.load(Ordering::Relaxed) {
        0 => {}
        jumps => summary.notes.push(format!(
            "realtime pace: {jumps} timestamp jump(s) skipped (backwards, or longer than a few frame periods)"
        )),
    }
    for failed in &sink_failures {
        summary
            .notes
            .push(format!("failed: {}", failed.with_causes()));
    }
    if let Some(error) = &failure {
        summary
            .notes
            .push(format!("failed: {}", with_causes(error)));
    }
    let stopped_by_user = config.stop.load(Ordering::Relaxed);
    let ended_early = final_info.ended_early.then(|| {
        final_info
            .note
            .clone()
            .unwrap_or_else(|| format!("{} stopped delivering frames", final_info.description))
    });
    let report = RunReport {
        summary,
        recorder,
        stopped_by_user,
        ended_early,
        max_queue_depth: counters.max_queue_depth.load(Ordering::Relaxed) as usize,
    };
    let more = sink_failures.len().saturating_sub(1);
    let error = match (failure, sink_failures.into_iter().next()) {
        (Some(error), _) => error,
        (None, Some(first)) => PipelineError::Sink {
            sink: first.sink(),
            more,
            error: Box::new(first),
        },
        (None, None) => return Ok(report),
    };
    Err(RunFailed {
        error,
        report: Some(Box::new(report)),
    })
}

/// Starts each service on its thread, with its own stop flag.
fn start_services(services: Vec<Service>) -> Result<Vec<Running>, PipelineError> {
    let mut started = Vec::new();
    for Service { name, run } in services {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                if let Err(e) = run(&flag) {
                    tracing::warn!("{name}: {e}");
                }
            })
            .map_err(|e| PipelineError::Spawn {
                stage: name,
                message: e.to_string(),
            });
        match handle {
            Ok(handle) => started.push((stop, handle)),
            Err(e) => {
                stop_services(started);
                return Err(e);
            }
        }
    }
    Ok(started)
}

/// Tells every service to stop and waits [`SERVICE_STOP`] for each at most.
fn stop_services(services: Vec<Running>) {
    for (stop, _) in &services {
        stop.store(true, Ordering::Relaxed);
    }
    let by = Instant::now() + SERVICE_STOP;
    for (_, handle) in services {
        while !handle.is_finished() && Instant::now() < by {
            std::thread::sleep(Duration::from_millis(5));
        }
        if handle.is_finished() {
            let _ = handle.join();
        }
    }
}

/// A thread's result: when `by` is `None` (every thread said it is done) at once, else only
/// if the thread ends before `by`.
fn join_done<T>(handle: std::thread::JoinHandle<Option<T>>, by: Option<Instant>) -> Option<T> {
    if let Some(by) = by {
        while !handle.is_finished() {
            if Instant::now() >= by {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    handle.join().ok().flatten()
}

/// `error` and every cause after it on one line (`a: b: c`).
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(e) = cause {
        text.push_str(": ");
        text.push_str(&e.to_string());
        cause = e.source();
    }
    text
}

/// Waits for every stage to finish, or, after a failure, for at most [`ABORT_GRACE`].
fn supervise(
    done_rx: &Receiver<&'static str>,
    ctl: &Control,
    counters: &Counters,
    progress: Option<&indicatif::ProgressBar>,
) {
    let mut abort_seen: Option<Instant> = None;
    let (mut stop_seen, mut done): (Option<Instant>, Vec<&str>) = (None, Vec::new());
    loop {
        match done_rx.recv_timeout(Duration::from_millis(50)) {
            Ok(stage) => done.push(stage),
            Err(RecvTimeoutError::Disconnected) => return,
            Err(RecvTimeoutError::Timeout) => {}
        }
        if ctl.stopping() {
            let since = *stop_seen.get_or_insert_with(Instant::now);
            // Ctrl-C ends the run within a second whatever the source does: once every
            // other stage has finished, a capture thread still blocked is left behind.
            if done.len() == 3 && !done.contains(&"capture") && since.elapsed() > STOP_GRACE {
                return;
            }
        }
        if let Some(bar) = progress {
            bar.set_position(counters.sink.received.load(Ordering::Relaxed));
        }
        if ctl.aborted() {
            let since = *abort_seen.get_or_insert_with(Instant::now);
            // A stage stuck in a blocking call (a stalled stream) is left behind.
            if since.elapsed() > ABORT_GRACE {
                return;
            }
        }
    }
}

fn progress_bar(total: Option<u64>) -> indicatif::ProgressBar {
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(n),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} frames {per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Runs a middle stage (detect or render, after `hop`) on its own thread, between the hop it
/// reads and the hop it feeds.
#[allow(clippy::too_many_arguments)]
fn spawn_stage<I, O>(
    hop: Hop,
    mut stage: Box<dyn Stage<I, O>>,
    (rx, tx): (Receiver<Timed<I>>, HopSender<Timed<O>>),
    ctl: &Arc<Control>,
    done: &crossbeam_channel::Sender<&'static str>,
    counters: &Arc<Counters>,
) -> Result<std::thread::JoinHandle<Option<()>>, PipelineError>
where
    I: Sequenced + Send + 'static,
    O: Sequenced + Send + 'static,
{
    let (c, counters) = (ctl.clone(), counters.clone());
    spawn(hop.consumer(), ctl, done, move || {
        let counter = match hop {
            Hop::ToDetect => &counters.detect,
            _ => &counters.render,
        };
        stage_loop(hop, stage.as_mut(), &rx, &tx, &c, counter, &counters)
    })
}

/// Runs `body` on a named thread: an error or panic becomes the run's failure, naming the
/// stage; `done` hears about the end either way.
fn spawn<T: Send + 'static>(
    stage: &'static str,
    ctl: &Arc<Control>,
    done: &crossbeam_channel::Sender<&'static str>,
    body: impl FnOnce() -> Result<T, StageError> + Send + 'static,
) -> Result<std::thread::JoinHandle<Option<T>>, PipelineError> {
    let ctl_for_error = ctl.clone();
    let (ctl, done) = (ctl.clone(), done.clone());
    std::thread::Builder::new()
        .name(format!("lookout-{stage}"))
        .spawn(move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(body));
            let value = match result {
                Ok(Ok(value)) => Some(value),
                Ok(Err(error)) => {
                    ctl.fail(PipelineError::Stage {
                        stage,
                        error: Box::new(error),
                    });
                    None
                }
                Err(panic) => {
                    ctl.fail(PipelineError::Panic {
                        stage,
                        message: panic_message(panic.as_ref()),
                    });
                    None
                }
            };
            let _ = done.send(stage);
            value
        })
        .map_err(|e| {
            // The stages already running must not wait for this one.
            ctl_for_error.abort.store(true, Ordering::Relaxed);
            PipelineError::Spawn {
                stage,
                message: e.to_string(),
            }
        })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Plays file frames at their recorded times: sleeps until a frame is due and drops frames
/// that are more than a frame period late.
///
/// A step between two frames' times that goes backwards or is longer than [`Pacer::max_step_ns`]
/// (a damaged index: one `capture_mono_ns` of 9e18 would otherwise be waited for, forever) is
/// a jump: the first is warned about, every one is counted, and the clock is re-anchored so
/// that the frame is due one nominal period after the one before. No wait is ever longer
/// than the largest step.
struct Pacer {
    /// (mono ns, pts ns) that time the frames: a frame is due at `mono + (pts - pts0)`.
    origin: Option<(i128, i128)>,
    /// The previous frame's pts, to find jumps.
    last_pts: Option<i128>,
    period_ns: i64,
    index: i64,
    /// Jumps skipped so far.
    jumps: u64,
}

enum Release {
    /// Due now (at the given mono time).
    OnTime(u64),
    Late,
    Stopped,
}

impl Pacer {
    fn new(nominal_fps: Option<f64>) -> Self {
        let fps = nominal_fps
            .filter(|f| f.is_finite() && *f > 0.0)
            .unwrap_or(30.0);
        Self {
            origin: None,
            last_pts: None,
            period_ns: ((1e9 / fps) as i64).max(1),
            index: 0,
            jumps: 0,
        }
    }

    /// The longest step between two frames that is played as recorded: a few frame periods,
    /// or 1 s beyond one, whichever is longer (a camera that hiccuped for a second is
    /// replayed faithfully).
    fn max_step_ns(&self) -> i128 {
        let period = i128::from(self.period_ns);
        (4 * period).max(period + 1_000_000_000)
    }

    fn release(&mut self, pts_ns: Option<i64>, stopping: impl Fn() -> bool) -> Release {
        let pts = i128::from(pts_ns.unwrap_or(self.index.saturating_mul(self.period_ns)));
        self.index += 1;
        let now = i128::from(mono_now_ns());
        let (mono0, pts0) = *self.origin.get_or_insert((now, pts));
        let mut due = mono0 + (pts - pts0);
        if let Some(last) = self.last_pts.replace(pts) {
            let step = pts - last;
            if step < 0 || step > self.max_step_ns() {
                self.jumps += 1;
                if self.jumps == 1 {
                    tracing::warn!(
                        "realtime pace: frame {} jumps {:.3} s from the one before (pts {} ns after {} ns); \
                         replaying it one frame period later instead (later jumps are counted in the summary)",
                        self.index - 1,
                        step as f64 / 1e9,
                        pts,
                        last
                    );
                }
                // Re-anchor: this frame is due one period after the previous one.
                let previous_due = mono0 + (last - pts0);
                due = previous_due + i128::from(self.period_ns);
                self.origin = Some((due, pts));
            }
        }
        let period = i128::from(self.period_ns);
        if now > due + period {
            return Release::Late;
        }
        // Bounded whatever the times say: the step check above keeps `due` this close.
        let due = due.min(now + self.max_step_ns());
        loop {
            let now = i128::from(mono_now_ns());
            if now >= due {
                return Release::OnTime(now as u64);
            }
            if stopping() {
                return Release::Stopped;
            }
            let wait = Duration::from_nanos((due - now) as u64).min(POLL);
            std::thread::sleep(wait);
        }
    }
}

struct CaptureFeed {
    pacer: Option<Pacer>,
    max_frames: Option<u64>,
    deadline: Option<Instant>,
}

/// Reads frames until the input ends, a limit is reached or the run stops; returns the
/// source's final report.
fn capture_loop(
    mut source: Box<dyn FrameSource>,
    mut feed: CaptureFeed,
    tx: &HopSender<Timed<Captured>>,
    ctl: &Control,
    counters: &Counters,
) -> Result<SourceInfo, StageError> {
    let counter = &counters.capture;
    let mut gaps = SeqGaps::default();
    let mut read = 0u64;
    while !ctl.stopping() {
        if feed.max_frames.is_some_and(|n| read >= n)
            || feed.deadline.is_some_and(|d| Instant::now() >= d)
        {
            break;
        }
        let Some(frame) = source.next_frame()? else {
            break;
        };
        let decoded = mono_now_ns();
        read += 1;
        counter.received.fetch_add(1, Ordering::Relaxed);
        counter
            .dropped
            .fetch_add(gaps.observe(frame.seq), Ordering::Relaxed);
        let mut stamps = FrameStamps {
            captured: frame.capture_mono_ns.clamp(1, decoded),
            decoded,
            ..FrameStamps::default()
        };
        if let Some(pacer) = &mut feed.pacer {
            let release = pacer.release(frame.pts_ns, || ctl.stopping());
            counters.pace_jumps.store(pacer.jumps, Ordering::Relaxed);
            match release {
                // A replayed frame is captured when it is due, as a camera's would be.
                Release::OnTime(now) => (stamps.captured, stamps.decoded) = (now, now),
                Release::Late => {
                    counter.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                Release::Stopped => break,
            }
        }
        let captured = Timed::new(Captured { frame, stamps }, QueueWaits::default());
        match tx.send(captured, || ctl.stopping()) {
            Handed::Sent | Handed::Replaced(_) => {
                counter.sent.fetch_add(1, Ordering::Relaxed);
                counters.note_depth(tx.len());
            }
            Handed::Refused => break,
        }
    }
    Ok(source.info())
}

/// Takes items from `rx`, runs them through `stage` and hands them on until the input is
/// drained, the run stops or it aborts; `hop` is the one it reads.
#[allow(clippy::too_many_arguments)]
fn stage_loop<I: Sequenced, O: Sequenced>(
    hop: Hop,
    stage: &mut dyn Stage<I, O>,
    rx: &Receiver<Timed<I>>,
    tx: &HopSender<Timed<O>>,
    ctl: &Control,
    counter: &StageCounter,
    counters: &Counters,
) -> Result<(), StageError> {
    let mut gaps = SeqGaps::default();
    while let Some((timed, waits)) = receive(hop, rx, ctl, counter, &mut gaps) {
        let out = Timed::new(stage.process(timed.item)?, waits);
        match tx.send(out, || ctl.aborted()) {
            Handed::Sent | Handed::Replaced(_) => {
                counter.sent.fetch_add(1, Ordering::Relaxed);
                counters.note_depth(tx.len());
            }
            Handed::Refused => return Ok(()),
        }
    }
    Ok(())
}

/// The next item from the hop `hop`, counted as received (its `seq` gap as dropped), with the
/// frame's waits including this hop's; `None` when the loop ends: aborted, the producer
/// gone, or stopping with nothing left to drain. Every consumer loop receives this way.
fn receive<T: Sequenced>(
    hop: Hop,
    rx: &Receiver<Timed<T>>,
    ctl: &Control,
    counter: &StageCounter,
    gaps: &mut SeqGaps,
) -> Option<(Timed<T>, QueueWaits)> {
    loop {
        if ctl.aborted() {
            return None;
        }
        match rx.recv_timeout(POLL) {
            Ok(timed) => {
                let mut waits = timed.waits;
                waits.set(hop, mono_now_ns().saturating_sub(timed.ready_ns));
                counter.received.fetch_add(1, Ordering::Relaxed);
                counter
                    .dropped
                    .fetch_add(gaps.observe(timed.seq()), Ordering::Relaxed);
                return Some((timed, waits));
            }
            Err(RecvTimeoutError::Disconnected) => return None,
            Err(RecvTimeoutError::Timeout) if ctl.stopping() => return None,
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

struct SinkSetup {
    factories: Vec<SinkFactory>,
    fps: f64,
    /// Used to build the sinks when not a single frame arrives.
    fallback_size: Option<(u32, u32)>,
    model: String,
    warmup_frames: usize,
    keep_frame_records: bool,
    pool: FramePool,
}

/// What the sink thread hands back: the latencies, and the sinks that failed (each closed as
/// well as it could be when it failed, the others finished).
struct SinksDone {
    recorder: LatencyRecorder,
    failures: Vec<SinkError>,
}

/// Builds the sinks on the first frame, writes every frame to each, stamps `presented`,
/// records latencies, and finishes every sink however the run ends. A sink that fails is
/// closed at once and left out; the run then winds down as after Ctrl-C, the other sinks
/// taking the frames still in flight, and [`run`] reports the failure.
fn sink_loop(
    setup: SinkSetup,
    rx: &Receiver<Timed<Rendered>>,
    ctl: &Control,
    counters: &Counters,
) -> Result<SinksDone, StageError> {
    let SinkSetup {
        factories,
        fps,
        fallback_size,
        model,
        warmup_frames,
        keep_frame_records,
        pool,
    } = setup;
    let mut factories = Some(factories);
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    let mut recorder = if keep_frame_records {
        LatencyRecorder::new(warmup_frames)
    } else {
        LatencyRecorder::without_frame_records(warmup_frames)
    };
    let mut failures = Vec::new();
    let mut outputs = Outputs {
        factories: &mut factories,
        sinks: &mut sinks,
        failures: &mut failures,
        fps,
        pool: &pool,
    };
    // A panic while writing is held until every sink is finished, then passed on.
    let written = std::panic::catch_unwind(AssertUnwindSafe(|| {
        write_frames(rx, ctl, counters, &mut outputs, &mut recorder, &model)
    }));
    let (result, panic) = match written {
        Ok(result) => (result, None),
        Err(panic) => (Ok(()), Some(panic)),
    };
    if result.is_ok() && panic.is_none() && factories.is_some() {
        if let Some(size) = fallback_size {
            build_sinks(&mut factories, &mut sinks, size, fps)?;
        }
    }
    // Finish every sink, even after a failure: files stay valid up to the last frame.
    for sink in &mut sinks {
        if let Err(e) = sink.finish() {
            failures.push(e);
        }
    }
    if let Some(panic) = panic {
        std::panic::resume_unwind(panic);
    }
    result.map(|()| SinksDone { recorder, failures })
}

fn build_sinks(
    factories: &mut Option<Vec<SinkFactory>>,
    sinks: &mut Vec<Box<dyn Sink>>,
    (width, height): (u32, u32),
    fps: f64,
) -> Result<(), StageError> {
    let ctx = SinkContext { width, height, fps };
    for factory in factories.take().unwrap_or_default() {
        sinks.push(factory(&ctx)?);
    }
    Ok(())
}

/// The sinks, built on the first frame.
struct Outputs<'a> {
    factories: &'a mut Option<Vec<SinkFactory>>,
    sinks: &'a mut Vec<Box<dyn Sink>>,
    /// Sinks that failed, already closed and taken out of `sinks`.
    failures: &'a mut Vec<SinkError>,
    fps: f64,
    /// Where the frames' buffers go when every sink is done with them.
    pool: &'a FramePool,
}

fn write_frames(
    rx: &Receiver<Timed<Rendered>>,
    ctl: &Control,
    counters: &Counters,
    outputs: &mut Outputs<'_>,
    recorder: &mut LatencyRecorder,
    model: &str,
) -> Result<(), StageError> {
    let counter = &counters.sink;
    let mut gaps = SeqGaps::default();
    let mut hud_window = HudWindow::default();
    // The source frame's JPEG, encoded once per frame for every sink that stores it.
    let jpeg = crate::sink::SourceJpeg::default();
    while let Some((timed, waits)) = receive(Hop::ToSink, rx, ctl, counter, &mut gaps) {
        let Rendered {
            mut detected,
            annotated,
        } = timed.item;
        if outputs.factories.is_some() {
            let size = (detected.frame.width(), detected.frame.height());
            build_sinks(outputs.factories, outputs.sinks, size, outputs.fps)?;
        }
        let hud = hud_window.stats(detected.timings.inference, counters.dropped_so_far(), model);
        let mut quit = false;
        let frame = SinkFrame {
            detected: &detected,
            annotated: annotated.as_ref(),
            hud: &hud,
            jpeg: &jpeg,
        };
        let mut index = 0;
        while index < outputs.sinks.len() {
            match outputs.sinks[index].write(&frame) {
                Ok(control) => {
                    quit |= control == SinkControl::Quit;
                    index += 1;
                }
                Err(error) => {
                    // Closed now, as well as it can be (a video is finalised up to its last
                    // good frame); the others go on with this frame and those in flight.
                    let mut failed = outputs.sinks.remove(index);
                    if let Err(also) = failed.finish() {
                        // Most often the same cause again (a flush to the same full disk).
                        tracing::debug!("{}", also.with_causes());
                    }
                    outputs.failures.push(error);
                    ctl.sink_failed.store(true, Ordering::Relaxed);
                }
            }
        }
        detected.stamps.presented = mono_now_ns();
        let stamps = detected.stamps;
        recorder.record(
            detected.frame.seq,
            detected.frame.pts_ns,
            stamps,
            waits,
            detected.detections.len(),
        );
        if let Some(ns) = crate::metrics::latency::end_to_end_ns(&stamps) {
            hud_window.push(stamps.presented, ns as f64 / 1e6);
        }
        // Done with the pixels: their buffers decode and draw the next frames.
        let pool = outputs.pool;
        pool.put(std::mem::take(&mut detected.frame.image).into_raw());
        if let Some(annotated) = annotated {
            pool.put(annotated.into_raw());
        }
        if quit {
            ctl.stop.store(true, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
