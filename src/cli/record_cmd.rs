//! `lookout record`: a source into a drive folder or an MCAP file, no detector.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use super::args::{check_new_folder, FrameFormatArg, PaceArg, SourceArgs};
use super::signals::stop_on_ctrl_c;
use crate::pipeline::{
    self, Captured, DetectStage, PassThrough, PipelineConfig, RenderStage, Retime, Stage, StageExt,
    Stages,
};
use crate::sink::SinkSpec;
use crate::types::DetectedFrame;

#[derive(Debug, Clone, clap::Args)]
pub struct RecordArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// New drive folder (must not exist or be empty), or the MCAP file with --format mcap.
    #[arg(long, value_name = "DIR|FILE")]
    pub out: PathBuf,

    /// drive (a folder of frame files with an index) or mcap (one MCAP file, as `run --mcap`
    /// writes it, with no detections).
    #[arg(long, value_enum, default_value_t = RecordFormat::Drive)]
    pub format: RecordFormat,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Stop after this many frames.
    #[arg(long, value_name = "N")]
    pub max_frames: Option<u64>,

    /// File sources: max (every frame, as fast as possible) or realtime (recorded timing).
    #[arg(long, value_enum, default_value_t = PaceArg::Max)]
    pub pace: PaceArg,

    /// Frame files (or --format mcap images): jpg or png.
    #[arg(long, value_enum, default_value_t = FrameFormatArg::Jpg)]
    pub frame_format: FrameFormatArg,

    /// A calibration file copied into the drive (default: the source's own, if it has one).
    #[arg(long, value_name = "FILE")]
    pub calib: Option<PathBuf>,

    /// Anonymise people before anything is written (runs the detector and the tracker:
    /// the detector options below apply); the drive's manifest and the MCAP metadata say how.
    #[command(flatten)]
    pub privacy: super::args::PrivacyArgs,

    #[command(flatten)]
    pub detector: super::args::DetectorArgs,

    #[command(flatten)]
    pub tracking: super::args::TrackerArgs,
}

/// `--format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RecordFormat {
    Drive,
    Mcap,
}

pub fn run(args: &RecordArgs) -> Result<()> {
    let spec = args.source.spec()?;
    if args.format == RecordFormat::Drive {
        check_new_folder(&args.out)?;
    }
    // The drive folder may not be the source or the calibration file (issue 12 item 3).
    {
        use super::paths::{check_distinct, NamedPath};
        let mut inputs: Vec<NamedPath> = args
            .calib
            .iter()
            .map(|c| NamedPath::new("--calib", c))
            .collect();
        if std::path::Path::new(&args.source.source).exists() {
            inputs.push(NamedPath::new("--source", &args.source.source));
        }
        check_distinct(&inputs, &[NamedPath::new("--out", &args.out)])?;
    }
    if let Some(secs) = args.duration {
        anyhow::ensure!(
            secs.is_finite() && secs > 0.0,
            "--duration must be positive"
        );
    }
    // Checked now rather than after the recording.
    let loaded = match &args.calib {
        Some(cal) => Some(crate::calib::Calibration::load(cal)?),
        None => None,
    };
    let privacy = args.privacy.plan()?;
    let tracking = args.tracking.plan()?;
    let mut detector_config = None;
    if let Some(p) = &privacy {
        let tracking = tracking.as_ref().context(
            "--privacy needs a tracker: it keeps covering a person the detector misses for a few frames; drop --tracker none",
        )?;
        let checked = args.detector.checked()?;
        detector_config = Some(checked.conf.min(tracking.detector_conf()).min(p.min_score));
    }
    let stop = stop_on_ctrl_c();
    let source = crate::source::open_with_stop(&spec, &super::args::ffmpeg_from_env(), &stop)?;
    // --privacy: detector, tracker and anonymiser before the sink; otherwise no detector.
    let (detect, privacy_note): (Box<dyn Stage<Captured, DetectedFrame>>, _) =
        match (privacy, tracking, detector_config) {
            (Some(p), Some(tracking), Some(conf)) => {
                args.detector.apply_threads()?;
                let mut config = args.detector.to_config()?;
                config.conf = conf;
                let detector = crate::detect::Detector::load(&config)?;
                let mask = p
                    .classes
                    .mask(detector.classes())
                    .map_err(|e| anyhow::anyhow!(e.replace("--classes", "--privacy-classes")))?;
                let note = crate::drive::PrivacyNote {
                    method: p.method.name().to_string(),
                    classes: args.privacy.privacy_classes.clone(),
                    min_score: p.min_score,
                    margin: p.margin,
                    model: detector.variant().to_string(),
                };
                let track = crate::track::TrackStage::new(tracking.build(), args.detector.conf)
                    .with_privacy(
                        crate::privacy::Anonymiser::new(p.method, p.margin),
                        mask,
                        p.min_score,
                    );
                (
                    Box::new(
                        Retime::new(!spec.is_live())
                            .then(DetectStage::new(detector))
                            .then(track),
                    ),
                    Some(note),
                )
            }
            _ => (Box::new(PassThrough::new(!spec.is_live())), None),
        };
    let calibration = args.calib.clone().or_else(|| source.calibration_path());
    let sink = match args.format {
        RecordFormat::Drive => SinkSpec::Record {
            dir: args.out.clone(),
            source: spec.to_string(),
            frame_format: args.frame_format.into(),
            calibration,
            privacy: privacy_note.clone(),
        },
        RecordFormat::Mcap => {
            let calibration = match (loaded, calibration) {
                (Some(cal), _) => Some(cal),
                (None, Some(path)) => Some(crate::calib::Calibration::load(&path)?),
                (None, None) => source.embedded_calibration(),
            };
            let mut metadata = std::collections::BTreeMap::new();
            metadata.insert("lookout_version".into(), env!("CARGO_PKG_VERSION").into());
            metadata.insert("source".into(), spec.to_string());
            let model = privacy_note
                .as_ref()
                .map_or("none (lookout record)".to_string(), |p| {
                    format!("{} (anonymising only)", p.model)
                });
            metadata.insert("model".into(), model);
            let privacy = match &privacy_note {
                Some(p) => format!(
                    "{} classes={} conf={} margin={} model={}",
                    p.method, p.classes, p.min_score, p.margin, p.model
                ),
                None => "off".into(),
            };
            metadata.insert("privacy".into(), privacy);
            metadata.insert("command_line".into(), super::command_line());
            SinkSpec::Mcap {
                path: args.out.clone(),
                image_format: args.frame_format.into(),
                calibration,
                metadata,
            }
        }
    };
    let stages = Stages {
        detect,
        render: Box::new(RenderStage::new(false, f64::INFINITY)),
        sinks: vec![sink.factory()],
    };
    let mut config = PipelineConfig::new(spec.is_live());
    config.pace = args.pace.into();
    config.max_frames = args.max_frames;
    config.duration = args.duration.map(Duration::from_secs_f64);
    config.model = "record".into();
    config.keep_frame_records = false;
    config.progress = !spec.is_live();
    config.stop = stop;
    let report = pipeline::run(source, stages, config)?;
    let f = &report.summary.frames;
    eprintln!(
        "recorded {} frames into {} ({} dropped){}",
        f.shown,
        args.out.display(),
        f.dropped.total(),
        if report.stopped_by_user {
            ", stopped by the user"
        } else {
            ""
        }
    );
    for note in &report.summary.notes {
        eprintln!("note: {note}");
    }
    super::InputEndedEarly::check(&report)
}
