//! `lookout run`: a source through the detector to a window and/or files, with latency
//! metrics.

use std::path::PathBuf;
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

    #[command(flatten)]
    pub mounting: super::calib_cmd::MountingOverrideArgs,

    /// The latency HUD in the window (at start; `h` toggles it) and in --save-video: on or off.
    #[arg(long, value_enum, default_value_t = OnOff::On, value_name = "on|off")]
    pub hud: OnOff,

    /// Forward-collision warning below this time to collision, seconds (needs --calib).
    #[arg(long, default_value_t = 2.0, value_name = "SECS")]
    pub ttc_warn: f64,

    #[command(flatten)]
    pub tracking: super::args::TrackerArgs,

    #[command(flatten)]
    pub tracks: super::args::TracksOutArgs,

    /// A short trail behind each tracked object in the window and video.
    #[arg(long)]
    pub trails: bool,

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

/// Whether to open a window (`--show`, or by default when a display is available), and
/// whether `--show` was asked for without a display (said once the source is open).
fn decide_show(args: &RunArgs) -> (bool, bool) {
    if args.headless {
        return (false, false);
    }
    let available = crate::sink::display_available();
    (available, !available && args.show)
}

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
    /// `--show` without a display: run headless, and say so.
    pub no_display: bool,
    /// Every output but the drive recording (which needs the opened source's calibration).
    pub outputs: Vec<SinkSpec>,
    pub record: Option<(PathBuf, FrameFileFormat)>,
    /// The ffmpeg and ffprobe that video sources and `--save-video` run (from
    /// `$LOOKOUT_FFMPEG` / `$LOOKOUT_FFPROBE`, read here once).
    pub ffmpeg: source::FfmpegConfig,
    pub ttc_warn_s: f64,
    /// The tracker, checked (`None` with `--tracker none`).
    pub tracking: Option<super::args::TrackingPlan>,
    pub pace: Pace,
    pub max_frames: Option<u64>,
    pub keep_frame_records: bool,
}

impl RunArgs {
    /// Checks every flag and reads the calibration file; opens nothing else.
    pub fn plan(&self) -> Result<RunPlan> {
        let spec = self.source.spec()?;
        anyhow::ensure!(self.ttc_warn > 0.0, "--ttc-warn must be positive");
        if let Some(dir) = &self.record {
            check_new_folder(dir)?;
        }
        let mut detector = self.detector.checked()?;
        let tracking = self.tracking.plan()?;
        if let Some(tracking) = &tracking {
            // The tracker's second association needs the boxes below --conf.
            detector.conf = detector.conf.min(tracking.detector_conf());
        }
        let calibration = match &self.calib {
            Some(path) => Some(self.mounting.load(path)?),
            None => None,
        };
        let (show, no_display) = decide_show(self);
        let ffmpeg = super::args::ffmpeg_from_env();
        let hud = self.hud == OnOff::On;
        let mut outputs = Vec::new();
        if show {
            outputs.push(SinkSpec::Window {
                title: format!("lookout: {spec}"),
                hud,
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
            outputs.push(SinkSpec::Jsonl { path: path.clone() });
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
            ttc_warn_s: self.ttc_warn,
            ffmpeg,
            tracking,
            pace: self.pace.into(),
            max_frames: self.max_frames,
            keep_frame_records: self.metrics_csv.is_some() || self.plot.is_some(),
        })
    }
}

pub fn run(args: &RunArgs) -> Result<()> {
    let plan = args.plan()?;
    // The source first: a missing camera or file is the error to report, before any
    // weights are looked up or downloaded.
    let source = source::open_with(&plan.spec, &plan.ffmpeg)?;
    if plan.no_display {
        eprintln!(
            "no display found (DISPLAY / WAYLAND_DISPLAY unset): running headless; pass --headless to skip the window"
        );
    }
    let threads = args.detector.apply_threads()?;
    let mut config = args.detector.to_config()?;
    config.conf = plan.detector.conf;
    let load_start = Instant::now();
    let detector = Detector::load(&config)?;
    let model_load_ms = load_start.elapsed().as_secs_f64() * 1e3;
    let device = format!("{} {}", plan.detector.device, detector.precision());
    let model = format!("{} on {device} ({threads} threads)", detector.variant());

    let mut sinks = plan.outputs;
    if let Some((dir, frame_format)) = plan.record {
        sinks.push(SinkSpec::Record {
            dir,
            source: plan.spec.to_string(),
            frame_format,
            calibration: args.calib.clone().or_else(|| source.calibration_path()),
        });
    }
    let draw = sinks.iter().any(SinkSpec::needs_pixels);
    // The detector; the distances when there is a calibration (undistorted first with
    // --undistort: the ranging then sees a camera without distortion); the tracker.
    let mut detect_stage = DetectStage::new(detector);
    let ranging = match (plan.calibration, plan.undistort) {
        (Some(cal), true) => {
            detect_stage = detect_stage.with_undistort(Undistort::new(cal.clone()));
            Some(RangingStage::new(cal.without_distortion()))
        }
        (Some(cal), false) => Some(RangingStage::new(cal)),
        (None, _) => None,
    };
    let tracker = plan
        .tracking
        .map(|t| TrackStage::new(t.build(), args.detector.conf));
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
    pipeline_config.progress = !plan.show && !plan.spec.is_live();
    pipeline_config.stop = stop_on_ctrl_c();
    let report = pipeline::run(source, stages, pipeline_config)?;
    write_reports(args, &report)?;
    super::InputEndedEarly::check(&report)
}

/// The table on stderr and the files asked for.
fn write_reports(args: &RunArgs, report: &RunReport) -> Result<()> {
    eprint!("{}", report.summary.table());
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
        assert_eq!(args.ttc_warn, 2.0);
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
