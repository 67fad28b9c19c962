//! `lookout run`: a source through the detector to a window and/or files, with latency
//! metrics.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};

use super::args::{check_new_folder, DetectorArgs, FrameFormatArg, OnOff, PaceArg, SourceArgs};
use super::signals::stop_on_ctrl_c;
use crate::calib::undistort::Undistort;
use crate::calib::Calibration;
use crate::detect::{Detector, DetectorConfig};
use crate::drive::FrameFileFormat;
use crate::pipeline::{
    self, Captured, DetectStage, Pace, PipelineConfig, RenderStage, RunReport, Stage, StageExt,
    Stages,
};
use crate::ranging::RangingStage;
use crate::sink::SinkSpec;
use crate::source::{self, SourceSpec};
use crate::track::TrackStage;
use crate::types::DetectedFrame;

#[derive(Debug, Clone, clap::Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    #[command(flatten)]
    pub detector: DetectorArgs,

    /// Show a window (default when a display is available).
    #[arg(long, conflicts_with = "headless")]
    pub show: bool,

    /// No window; write only the files asked for.
    #[arg(long)]
    pub headless: bool,

    /// File sources: max (every frame, as fast as possible) or realtime (recorded timing).
    #[arg(long, value_enum, default_value_t = PaceArg::Max)]
    pub pace: PaceArg,

    /// Stop after this many frames.
    #[arg(long, value_name = "N")]
    pub max_frames: Option<u64>,

    /// One JSON object per frame and line: seq, pts_ns, capture_ns, size, detections, timing_ms.
    #[arg(long, value_name = "FILE")]
    pub jsonl: Option<PathBuf>,

    /// Annotated video (.mp4, through ffmpeg).
    #[arg(long, value_name = "FILE")]
    pub save_video: Option<PathBuf>,

    /// Annotated frames as images into this folder.
    #[arg(long, value_name = "DIR")]
    pub save_frames: Option<PathBuf>,

    /// The metrics summary as JSON.
    #[arg(long, value_name = "FILE")]
    pub metrics: Option<PathBuf>,

    /// One CSV row per frame with every timestamp.
    #[arg(long, value_name = "FILE")]
    pub metrics_csv: Option<PathBuf>,

    /// Latency over time and its histogram per stage, as PNG.
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,

    /// Also record the input frames into a new drive folder.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,

    /// Frame files of --record: jpg or png.
    #[arg(long, value_enum, default_value_t = FrameFormatArg::Jpg)]
    pub record_format: FrameFormatArg,

    /// Camera calibration (lookout TOML, OpenCV/ROS YAML, KITTI .txt): distances and time to
    /// collision for every detection.
    #[arg(long, value_name = "FILE")]
    pub calib: Option<PathBuf>,

    /// Set by `lookout batch`, never a flag: it syncs the files of a drive it keeps (and
    /// discards a stopped one's unsynced), so the run does not fsync them itself.
    #[arg(skip)]
    pub caller_syncs: bool,

    #[command(flatten)]
    pub mounting: super::calib_cmd::MountingOverrideArgs,

    /// The latency HUD in the window (at start; `h` toggles it) and in --save-video: on or off.
    #[arg(long, value_enum, default_value_t = OnOff::On, value_name = "on|off")]
    pub hud: OnOff,

    /// Forward-collision warning below this time to collision, seconds (needs --calib).
    /// Default: 2.
    #[arg(long, value_name = "SECS")]
    pub ttc_warn: Option<f64>,

    #[command(flatten)]
    pub tracking: super::args::TrackerArgs,

    #[command(flatten)]
    pub tracks: super::args::TracksOutArgs,

    /// A short trail behind each tracked object in the window and video.
    #[arg(long)]
    pub trails: bool,

    #[command(flatten)]
    pub privacy: super::args::PrivacyArgs,

    /// The run as one MCAP file (the frames as JPEG, the calibration, the boxes as image
    /// annotations, the detections and stage times as JSON) for Foxglove, Lichtblick or
    /// rerun; `lookout run --source FILE.mcap` replays it.
    #[arg(long, value_name = "FILE")]
    pub mcap: Option<PathBuf>,

    /// Images of --mcap: jpg (small, fast) or png (lossless: a replay of the file gives
    /// exactly this run's detections).
    #[arg(long, value_enum, default_value_t = FrameFormatArg::Jpg)]
    pub mcap_images: FrameFormatArg,

    /// Serve the same channels live to Foxglove (open ws://HOST:PORT in it) on HOST:PORT,
    /// default 127.0.0.1:8765. No authentication: bind to a trusted network only, or reach it
    /// through an SSH tunnel.
    #[arg(long, value_name = "HOST:PORT", num_args = 0..=1, default_missing_value = DEFAULT_FOXGLOVE_ADDR)]
    pub foxglove: Option<String>,

    /// The detector's score map over the frame in the window (`e` toggles it): the
    /// per-anchor scores of the shown classes from the same inference, as a heat map.
    #[arg(long)]
    pub explain: bool,

    /// The class whose score map --explain shows (a name, group or id, as --classes).
    /// Default: the classes --classes reports.
    #[arg(long, value_name = "CLASS", requires = "explain")]
    pub explain_class: Option<String>,

    /// Show and detect on undistorted frames (needs --calib; a remap table built once).
    /// Not with --record: drives keep the camera's raw frames, undistort them on replay.
    #[arg(long, requires = "calib", conflicts_with = "record")]
    pub undistort: bool,
}

impl RunArgs {
    /// Bare `lookout`: the default camera in a window with the default model.
    pub fn default_live() -> RunArgs {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Wrapper {
            #[command(flatten)]
            run: RunArgs,
        }
        Wrapper::parse_from(["lookout", "--source", "camera:0", "--show"]).run
    }
}

/// Whether to open a window (`--show`, or by default when a display is available), and,
/// for `--show` without a usable display, why there is none (said once the source is open).
fn decide_show(args: &RunArgs) -> (bool, Option<String>) {
    if args.headless {
        return (false, None);
    }
    let available = crate::sink::display_available();
    let why = (!available && args.show).then(|| {
        no_display_reason(
            std::env::var_os("DISPLAY").as_deref(),
            std::env::var_os("WAYLAND_DISPLAY").is_some_and(|w| !w.is_empty()),
        )
    });
    (available, why)
}

/// Why `--show` gets no window, naming the display that could not be opened (issue 12:
/// `DISPLAY=:55` was reported as "DISPLAY unset").
fn no_display_reason(display: Option<&std::ffi::OsStr>, wayland: bool) -> String {
    let tail = "running headless; pass --headless to skip the window";
    match display.filter(|d| !d.is_empty()) {
        Some(name) => format!(
            "cannot open X display `{}` (DISPLAY): is its server running and may this user connect (XAUTHORITY)? {tail}",
            name.to_string_lossy()
        ),
        None if wayland => format!(
            "DISPLAY is unset and the window needs X11 (XWayland under WAYLAND_DISPLAY): {tail}"
        ),
        None => format!("no display found (DISPLAY / WAYLAND_DISPLAY unset): {tail}"),
    }
}

/// `--foxglove` without an address: this machine only (a tunnel reaches it from a laptop).
pub const DEFAULT_FOXGLOVE_ADDR: &str = "127.0.0.1:8765";

/// `--ttc-warn` when not given, seconds.
pub const DEFAULT_TTC_WARN_S: f64 = 2.0;

/// Everything `lookout run` was asked for, checked: built from the flags before a source is
/// opened, a calibration applied or weights read, so that a bad flag costs no work and
/// every flag's error names it. [`run`] then only carries it out.
pub struct RunPlan {
    pub spec: SourceSpec,
    /// The detector's options, checked; the weights are looked up (and downloaded) only once
    /// the source is open, so that a missing camera is reported before any download.
    pub detector: DetectorConfig,
    /// The calibration file, read and checked.
    pub calibration: Option<Calibration>,
    pub undistort: bool,
    pub show: bool,
    /// `--show` without a display: run headless, and say so (this says why).
    pub no_display: Option<String>,
    /// Every output but the drive recording (which needs the opened source's calibration).
    pub outputs: Vec<SinkSpec>,
    pub record: Option<(PathBuf, FrameFileFormat)>,
    /// The ffmpeg and ffprobe that video sources and `--save-video` run (from
    /// `$LOOKOUT_FFMPEG` / `$LOOKOUT_FFPROBE`, read here once).
    pub ffmpeg: source::FfmpegConfig,
    pub ttc_warn_s: f64,
    /// The tracker, checked (`None` with `--tracker none`).
    pub tracking: Option<super::args::TrackingPlan>,
    /// Anonymising, checked (`None` with `--privacy off`).
    pub privacy: Option<crate::privacy::PrivacyConfig>,
    pub pace: Pace,
    pub max_frames: Option<u64>,
    pub keep_frame_records: bool,
    /// `--mcap`.
    pub mcap: Option<PathBuf>,
    /// `--foxglove`, resolved.
    pub foxglove: Option<std::net::SocketAddr>,
}

impl RunArgs {
    /// Checks every flag and reads the calibration file; opens nothing else.
    pub fn plan(&self) -> Result<RunPlan> {
        let spec = self.source.spec()?;
        self.check_output_paths()?;
        let ttc_warn_s = self.ttc_warn.unwrap_or(DEFAULT_TTC_WARN_S);
        anyhow::ensure!(ttc_warn_s > 0.0, "--ttc-warn must be positive");
        // Times to collision come from distances, which need a calibration (issue 12).
        anyhow::ensure!(
            self.ttc_warn.is_none() || self.calib.is_some(),
            "--ttc-warn needs --calib: time to collision comes from distances, which need the camera's calibration"
        );
        if let Some(path) = &self.plot {
            crate::metrics::plot::plot_format(path)?;
        }
        if let Some(dir) = &self.record {
            check_new_folder(dir)?;
        }
        let mut detector = self.detector.checked()?;
        let tracking = self.tracking.plan()?;
        if let Some(tracking) = &tracking {
            // The tracker's second association needs the boxes below --conf.
            detector.conf = detector.conf.min(tracking.detector_conf());
        }
        let privacy = self.privacy.plan()?;
        if let Some(privacy) = &privacy {
            anyhow::ensure!(
                tracking.is_some(),
                "--privacy needs a tracker: it keeps covering a person the detector misses for a few frames with the track's predicted box; drop --tracker none"
            );
            detector.conf = detector.conf.min(privacy.min_score);
        }
        let calibration = match &self.calib {
            Some(path) => Some(self.mounting.load(path)?),
            None => None,
        };
        let (show, no_display) = decide_show(self);
        anyhow::ensure!(
            !self.explain || !self.headless,
            "--explain draws the score map in the window: drop --headless, or run `lookout explain IMAGE --out heat.png` for a picture"
        );
        let ffmpeg = super::args::ffmpeg_from_env();
        let hud = self.hud == OnOff::On;
        let mut outputs = Vec::new();
        if show {
            outputs.push(SinkSpec::Window {
                title: format!("lookout: {spec}"),
                hud,
                explain: self.explain,
            });
        }
        if let Some(path) = &self.save_video {
            outputs.push(SinkSpec::Video {
                path: path.clone(),
                hud,
                ffmpeg: ffmpeg.clone(),
            });
        }
        if let Some(dir) = &self.save_frames {
            outputs.push(SinkSpec::Frames { dir: dir.clone() });
        }
        if let Some(path) = &self.jsonl {
            outputs.push(SinkSpec::Jsonl {
                path: path.clone(),
                sync: !self.caller_syncs,
            });
        }
        if let Some(path) = &self.tracks.save_tracks {
            anyhow::ensure!(
                tracking.is_some(),
                "--save-tracks needs a tracker: drop --tracker none"
            );
            outputs.push(SinkSpec::Tracks {
                path: path.clone(),
                format: self.tracks.format(path),
            });
        }
        let foxglove = match &self.foxglove {
            Some(addr) => Some(super::args::socket_addr("--foxglove", addr)?),
            None => None,
        };
        Ok(RunPlan {
            spec,
            detector,
            calibration,
            undistort: self.undistort,
            show,
            no_display,
            outputs,
            record: self
                .record
                .as_ref()
                .map(|dir| (dir.clone(), self.record_format.into())),
            ttc_warn_s,
            ffmpeg,
            tracking,
            privacy,
            pace: self.pace.into(),
            max_frames: self.max_frames,
            keep_frame_records: self.metrics_csv.is_some() || self.plot.is_some(),
            mcap: self.mcap.clone(),
            foxglove,
        })
    }
}

impl RunArgs {
    /// Every output path against the inputs and each other: none may overwrite another.
    fn check_output_paths(&self) -> Result<()> {
        use super::paths::{check_distinct, NamedPath};
        let mut inputs = Vec::new();
        // A source that is a path (file or folder); cameras, URLs and globs name none.
        if Path::new(&self.source.source).exists() {
            inputs.push(NamedPath::new("--source", &self.source.source));
        }
        let named =
            |flag: &str, path: &Option<PathBuf>| path.as_ref().map(|p| NamedPath::new(flag, p));
        inputs.extend(named("--calib", &self.calib));
        inputs.extend(named("--weights", &self.detector.weights));
        inputs.extend(named("--tracker-config", &self.tracking.tracker_config));
        let outputs: Vec<NamedPath> = [
            named("--jsonl", &self.jsonl),
            named("--save-video", &self.save_video),
            named("--save-frames", &self.save_frames),
            named("--metrics", &self.metrics),
            named("--metrics-csv", &self.metrics_csv),
            named("--plot", &self.plot),
            named("--record", &self.record),
            named("--save-tracks", &self.tracks.save_tracks),
            named("--mcap", &self.mcap),
        ]
        .into_iter()
        .flatten()
        .collect();
        check_distinct(&inputs, &outputs)
    }
}

pub fn run(args: &RunArgs) -> Result<()> {
    let report = execute(args, Console::Interactive)?;
    super::InputEndedEarly::check(&report)
}

/// What a run prints while and after it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Console {
    /// A progress bar for file sources and the metrics table at the end (`lookout run`).
    Interactive,
    /// Neither: the caller reports (`lookout batch`, one line per drive).
    Quiet,
}

/// Carries out a run and writes its files (`--metrics` too when the run fails part-way);
/// the report says whether the input ended early or the user stopped it.
pub fn execute(args: &RunArgs, console: Console) -> Result<RunReport> {
    let plan = args.plan()?;
    // The source first: a missing camera or file is the error to report, before any
    // weights are looked up or downloaded.
    // Ctrl-C from here on: a stream that does not answer is given up on at once.
    let stop = stop_on_ctrl_c();
    let source = source::open_with_stop(&plan.spec, &plan.ffmpeg, &stop)?;
    if let Some(why) = &plan.no_display {
        eprintln!("{why}");
    }
    let threads = args.detector.apply_threads()?;
    let mut config = args.detector.to_config()?;
    config.conf = plan.detector.conf;
    let load_start = Instant::now();
    let detector = Detector::load(&config)?;
    let model_load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let device = format!("{} {}", plan.detector.device, detector.precision());
    let model = format!("{} on {device} ({threads} threads)", detector.variant());
    // The privacy classes as one flag per class id of this model.
    let privacy = match plan.privacy {
        Some(p) => {
            let mask = p
                .classes
                .mask(detector.classes())
                .map_err(|e| anyhow::anyhow!(e.replace("--classes", "--privacy-classes")))?;
            Some((p, mask))
        }
        None => None,
    };

    // The camera: --calib, else the input's own (an MCAP file's calibration topic).
    let calibration = match plan.calibration {
        Some(cal) => Some(cal),
        None => source
            .embedded_calibration()
            .map(|cal| {
                let m = &args.mounting;
                cal.with_mounting_override(m.camera_height, m.camera_pitch)
            })
            .transpose()?,
    };
    // With --undistort the stored and shown frames are undistorted: their camera has none.
    let stored_camera = calibration.as_ref().map(|cal| {
        if plan.undistort {
            cal.without_distortion()
        } else {
            cal.clone()
        }
    });
    let mut sinks = plan.outputs;
    let mut services = Vec::new();
    if let Some(path) = &plan.mcap {
        sinks.push(SinkSpec::Mcap {
            path: path.clone(),
            image_format: args.mcap_images.into(),
            calibration: stored_camera.clone(),
            metadata: run_metadata(&plan.spec, &config.weights, &model, args),
        });
    }
    let live = match plan.foxglove {
        Some(addr) => {
            let (sink, service, hub) = live_server(addr, stored_camera.as_ref())?;
            sinks.push(sink);
            services.push(service);
            Some(hub)
        }
        None => None,
    };
    if let Some((dir, frame_format)) = plan.record {
        sinks.push(SinkSpec::Record {
            dir,
            source: plan.spec.to_string(),
            frame_format,
            calibration: args.calib.clone().or_else(|| source.calibration_path()),
            privacy: privacy.as_ref().map(|(p, _)| crate::drive::PrivacyNote {
                method: p.method.name().to_string(),
                classes: args.privacy.privacy_classes.clone(),
                min_score: p.min_score,
                margin: p.margin,
                model: detector.variant().to_string(),
            }),
        });
    }
    let draw = sinks.iter().any(SinkSpec::needs_pixels);
    // The detector; the distances when there is a calibration (undistorted first with
    // --undistort: the ranging then sees a camera without distortion); the tracker.
    // --explain: the score map of the shown classes (or --explain-class) on every frame.
    let explain = match (args.explain, &args.explain_class) {
        (false, _) => None,
        (true, Some(class)) => Some(
            crate::detect::classes::ClassFilter::parse(class)
                .and_then(|f| f.mask(detector.classes()))
                .map_err(|e| anyhow::anyhow!("--explain-class: {e}"))?,
        ),
        (true, None) => Some(
            plan.detector
                .classes
                .mask(detector.classes())
                .map_err(|e| anyhow::anyhow!(e))?,
        ),
    };
    let mut detect_stage = DetectStage::new(detector);
    if let Some(classes) = explain {
        detect_stage = detect_stage.with_explain(classes);
    }
    let ranging = match (calibration, plan.undistort) {
        (Some(cal), true) => {
            detect_stage = detect_stage.with_undistort(Undistort::new(cal.clone()));
            Some(RangingStage::new(cal.without_distortion()))
        }
        (Some(cal), false) => Some(RangingStage::new(cal)),
        (None, _) => None,
    };
    let tracker = plan.tracking.map(|t| {
        let stage = TrackStage::new(t.build(), args.detector.conf);
        match privacy {
            Some((p, mask)) => stage.with_privacy(
                crate::privacy::Anonymiser::new(p.method, p.margin),
                mask,
                p.min_score,
            ),
            None => stage,
        }
    });
    let detect: Box<dyn Stage<Captured, DetectedFrame>> = match (ranging, tracker) {
        (Some(r), Some(t)) => Box::new(detect_stage.then(r).then(t)),
        (Some(r), None) => Box::new(detect_stage.then(r)),
        (None, Some(t)) => Box::new(detect_stage.then(t)),
        (None, None) => Box::new(detect_stage),
    };
    let stages = Stages {
        detect,
        render: Box::new(RenderStage::new(draw, plan.ttc_warn_s).with_trails(args.trails)),
        sinks: sinks.into_iter().map(SinkSpec::factory).collect(),
    };
    let mut pipeline_config = PipelineConfig::new(plan.spec.is_live());
    pipeline_config.pace = plan.pace;
    pipeline_config.max_frames = plan.max_frames;
    pipeline_config.model = model;
    pipeline_config.device = device;
    pipeline_config.model_load_ms = model_load_ms;
    pipeline_config.keep_frame_records = plan.keep_frame_records;
    pipeline_config.progress =
        console == Console::Interactive && !plan.show && !plan.spec.is_live();
    pipeline_config.stop = stop;
    pipeline_config.services = services;
    let result = pipeline::run(source, stages, pipeline_config);
    let foxglove = live.map(|hub| hub.stats());
    let report = match result {
        Ok(mut report) => {
            report.summary.foxglove = foxglove;
            report
        }
        Err(mut failed) => {
            if let Some(report) = &mut failed.report {
                report.summary.foxglove = foxglove;
            }
            // The metrics up to the failure are written all the same; the run's own error
            // is the one to report (a report that cannot be written is only logged).
            if let Some(report) = &failed.report {
                if let Err(e) = write_reports(args, report, console) {
                    tracing::warn!("{e:#}");
                }
            }
            return Err(failed.into());
        }
    };
    write_reports(args, &report, console)?;
    Ok(report)
}

/// The `lookout` metadata record of an MCAP file: what made it.
fn run_metadata(
    spec: &SourceSpec,
    weights: &Path,
    model: &str,
    args: &RunArgs,
) -> std::collections::BTreeMap<String, String> {
    let mut metadata = std::collections::BTreeMap::new();
    metadata.insert("lookout_version".into(), env!("CARGO_PKG_VERSION").into());
    metadata.insert("source".into(), spec.to_string());
    metadata.insert("model".into(), model.to_string());
    metadata.insert("weights".into(), weights.display().to_string());
    match super::file_sha256(weights) {
        Ok(hash) => metadata.insert("weights_sha256".into(), hash),
        Err(e) => metadata.insert("weights_sha256".into(), format!("unreadable: {e}")),
    };
    metadata.insert("tracker".into(), args.tracking.tracker.name().to_string());
    // Like a drive's [privacy] table: whether the stored frames are anonymised, and how.
    let p = &args.privacy;
    let privacy = match p.privacy {
        super::args::PrivacyArg::Off => "off".to_string(),
        method => format!(
            "{} classes={} conf={} margin={}",
            format!("{method:?}").to_lowercase(),
            p.privacy_classes,
            p.privacy_conf,
            p.privacy_margin
        ),
    };
    metadata.insert("privacy".into(), privacy);
    metadata.insert("command_line".into(), super::command_line());
    metadata
}

/// Binds the live Foxglove server now (a busy port fails before any work), and gives the
/// sink that publishes to it and the service that serves it.
fn live_server(
    addr: std::net::SocketAddr,
    calibration: Option<&Calibration>,
) -> Result<(SinkSpec, pipeline::Service, crate::live::LiveHub)> {
    let channels = crate::sink::live::live_channels(calibration.is_some());
    let server = crate::live::LiveServer::bind(addr, "lookout", channels)?;
    eprintln!(
        "foxglove: serving ws://{} (open it in Foxglove: Open connection → Foxglove WebSocket); no authentication, keep it on a trusted network",
        server.local_addr()
    );
    let hub = server.hub();
    let sink = SinkSpec::Foxglove {
        hub: hub.clone(),
        calibration: calibration.cloned(),
    };
    let service = pipeline::Service {
        name: "foxglove",
        run: Box::new(move |stop| server.serve(stop).map_err(|e| e.to_string())),
    };
    Ok((sink, service, hub))
}

/// The table on stderr and the files asked for.
fn write_reports(args: &RunArgs, report: &RunReport, console: Console) -> Result<()> {
    if console == Console::Interactive {
        eprint!("{}", report.summary.table());
    }
    if let Some(path) = &args.metrics {
        let json = serde_json::to_string_pretty(&report.summary)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write --metrics {}", path.display()))?;
    }
    if let Some(path) = &args.metrics_csv {
        report
            .recorder
            .write_csv(path)
            .with_context(|| format!("cannot write --metrics-csv {}", path.display()))?;
    }
    if let Some(path) = &args.plot {
        crate::metrics::plot::write_plot(report.recorder.records(), path)
            .with_context(|| format!("cannot write --plot {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    #[test]
    fn bare_lookout_is_a_live_run_of_camera_zero_in_a_window() {
        let cli = Cli::try_parse_from(["lookout"]).unwrap();
        assert!(cli.command.is_none());
        let args = RunArgs::default_live();
        assert_eq!(args.source.source, "camera:0");
        assert!(args.show && !args.headless);
        assert_eq!(args.pace, PaceArg::Max);
        assert_eq!(args.ttc_warn, None);
    }

    #[test]
    fn run_flags_parse() {
        let cli = Cli::try_parse_from([
            "lookout",
            "run",
            "--source",
            "clip.mp4",
            "--headless",
            "--pace",
            "realtime",
            "--max-frames",
            "9",
            "--jsonl",
            "o.jsonl",
            "--metrics",
            "m.json",
            "--imgsz",
            "416",
            "--camera-size",
            "1280x720",
            "--record",
            "d",
            "--record-format",
            "png",
        ])
        .unwrap();
        let Some(Command::Run(args)) = cli.command else {
            panic!("not a run");
        };
        assert_eq!(args.pace, PaceArg::Realtime);
        assert_eq!(args.max_frames, Some(9));
        assert_eq!(args.source.camera_size, Some((1280, 720)));
        assert_eq!(args.detector.imgsz, Some(416));
        assert!(Cli::try_parse_from(["lookout", "run", "--show", "--headless"]).is_err());
        assert!(super::super::args::parse_size("12x").is_err());
    }

    fn parse_run(extra: &[&str]) -> RunArgs {
        let mut argv = vec![
            "lookout",
            "run",
            "--source",
            "synthetic:64x48",
            "--headless",
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).unwrap().command {
            Some(Command::Run(args)) => *args,
            _ => panic!("not a run"),
        }
    }

    /// Issue 12 item 6: a set but unreachable DISPLAY is named, not called unset.
    #[test]
    fn no_display_reason_names_the_display_that_could_not_be_opened() {
        let why = no_display_reason(Some(std::ffi::OsStr::new(":55")), false);
        assert!(why.contains("`:55`") && !why.contains("unset"), "{why}");
        assert!(no_display_reason(None, false).contains("unset"));
        assert!(no_display_reason(Some(std::ffi::OsStr::new("")), true).contains("X11"));
    }

    /// Issue 12 (should fix): `--ttc-warn` without `--calib` and `--plot x.gif` are refused.
    #[test]
    fn ttc_warn_needs_a_calibration_and_plot_names_its_format() {
        let err = parse_run(&["--ttc-warn", "1.5"])
            .plan()
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("--ttc-warn needs --calib"), "{err}");
        let err = parse_run(&["--plot", "p.gif"])
            .plan()
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("p.gif") && err.contains(".png or .jpg"),
            "{err}"
        );
        let plan = parse_run(&["--plot", "p.jpg"]).plan().unwrap();
        assert_eq!(plan.ttc_warn_s, DEFAULT_TTC_WARN_S);
    }

    /// Issue 12 item 3: outputs onto inputs or onto each other are refused by the plan.
    #[test]
    fn output_collisions_are_refused_by_the_plan() {
        let dir = tempfile::tempdir().unwrap();
        let x = dir.path().join("x.json");
        let x = x.to_str().unwrap();
        let err = parse_run(&["--jsonl", x, "--metrics", x])
            .plan()
            .err()
            .unwrap();
        let err = err.to_string();
        assert!(
            err.contains("--jsonl") && err.contains("--metrics"),
            "{err}"
        );
        let calib = dir.path().join("cal.toml");
        std::fs::write(&calib, "not read").unwrap();
        let calib = calib.to_str().unwrap();
        let err = parse_run(&["--calib", calib, "--metrics-csv", calib])
            .plan()
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains("--metrics-csv") && err.contains("--calib"),
            "{err}"
        );
    }

    /// Issue 18: --explain draws into the window, so a headless run refuses it.
    #[test]
    fn explain_needs_the_window() {
        let err = parse_run(&["--explain"]).plan().err().unwrap().to_string();
        assert!(
            err.contains("--explain") && err.contains("lookout explain"),
            "{err}"
        );
    }

    #[test]
    fn tracking_is_on_by_default_and_lowers_the_detector_threshold() {
        let plan = parse_run(&["--conf", "0.4"]).plan().unwrap();
        let tracking = plan.tracking.unwrap();
        assert_eq!(tracking.kind, crate::track::TrackerKind::Bytetrack);
        // The detector hands the tracker every box above track_low_thresh.
        assert_eq!(plan.detector.conf, 0.1);
        let plan = parse_run(&["--tracker", "none", "--conf", "0.4"])
            .plan()
            .unwrap();
        assert!(plan.tracking.is_none() && plan.detector.conf == 0.4);
    }

    #[test]
    fn tracking_flags_are_checked_before_any_work() {
        let args = parse_run(&["--tracker", "iou", "--save-tracks", "t.kitti", "--trails"]);
        assert!(args.trails);
        let plan = args.plan().unwrap();
        assert!(plan.outputs.contains(&SinkSpec::Tracks {
            path: "t.kitti".into(),
            format: crate::trackfile::TrackFormat::Kitti,
        }));
        let err = parse_run(&["--tracker", "none", "--save-tracks", "t.txt"])
            .plan()
            .err()
            .unwrap();
        assert!(err.to_string().contains("--save-tracks"), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("t.toml");
        std::fs::write(&config, "track_high_thresh = 2.0\n").unwrap();
        let err = parse_run(&["--tracker-config", config.to_str().unwrap()])
            .plan()
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("track_high_thresh"), "{err:#}");
    }
}
