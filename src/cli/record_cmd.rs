//! `lookout record`: a source into a drive folder, no detector.

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

    /// New drive folder (must not exist or be empty).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Stop after this many seconds.
    #[arg(long, value_name = "SECS")]
    pub duration: Option<f64>,

    /// Stop after this many frames.
    #[arg(long, value_name = "N")]
    pub max_frames: Option<u64>,

    /// File sources: max (every frame, as fast as possible) or realtime (recorded timing).
    #[arg(long, value_enum, default_value_t = PaceArg::Max)]
    pub pace: PaceArg,

    /// Frame files: jpg or png.
    #[arg(long, value_enum, default_value_t = FrameFormatArg::Jpg)]
    pub frame_format: FrameFormatArg,

    /// A calibration file copied into the drive (default: the source's own, if it has one).
    #[arg(long, value_name = "FILE")]
    pub calib: Option<PathBuf>,
}

pub fn run(args: &RecordArgs) -> Result<()> {
    let spec = args.source.spec()?;
    check_new_folder(&args.out)?;
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
    if let Some(cal) = &args.calib {
        // Checked now rather than after the recording.
        crate::calib::Calibration::load(cal)?;
    }
    let stop = stop_on_ctrl_c();
    let source = crate::source::open_with_stop(&spec, &super::args::ffmpeg_from_env(), &stop)?;
    let calibration = args.calib.clone().or_else(|| source.calibration_path());
    let sink = SinkSpec::Record {
        dir: args.out.clone(),
        source: spec.to_string(),
        frame_format: args.frame_format.into(),
        calibration,
        privacy: None,
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
