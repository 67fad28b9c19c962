//! `lookout record`: a source into a drive folder or an MCAP file, no detector.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;

use super::args::{check_new_folder, FrameFormatArg, PaceArg, SourceArgs};
use super::signals::stop_on_ctrl_c;
use crate::pipeline::{self, PassThrough, PipelineConfig, RenderStage, Stages};
use crate::sink::SinkSpec;

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
    let stop = stop_on_ctrl_c();
    let source = crate::source::open_with_stop(&spec, &super::args::ffmpeg_from_env(), &stop)?;
    let calibration = args.calib.clone().or_else(|| source.calibration_path());
    let sink = match args.format {
        RecordFormat::Drive => SinkSpec::Record {
            dir: args.out.clone(),
            source: spec.to_string(),
            frame_format: args.frame_format.into(),
            calibration,
            privacy: None,
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
            metadata.insert("model".into(), "none (lookout record)".into());
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
        detect: Box::new(PassThrough::new(!spec.is_live())),
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
