//! `lookout batch`: replays every drive of a manifest through `lookout run`'s pipeline
//! (headless, every frame, `--jsonl` and `--metrics` into the drive's result folder), one
//! drive after another. Results appear whole or not at all (see [`crate::batch::store`]);
//! drives already done with the same version, weights and settings are skipped; a drive
//! that fails is recorded with its error and the batch goes on. The unit of work of
//! `lookout-fleet` (python/), which runs `lookout batch --drive ID` as one Ray task per drive.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Deserialize;

use super::args::{DetectorArgs, TrackerArgs};
use super::run_cmd::{self, Console, RunArgs};
use crate::batch::store::{FrameTally, DETECTIONS_FILE, METRICS_FILE};
use crate::batch::{
    Committed, DoneRecord, DriveEntry, DriveState, Manifest, ResultStore, RunKey, Shard, Status,
};

#[derive(Debug, Clone, clap::Args)]
pub struct BatchArgs {
    /// The drives: one source per line (`#` comments), or a .toml (`[[drive]]` tables with
    /// `source`, optional `id` and `max_frames`) or .json list. Relative paths are taken
    /// from the manifest's folder.
    #[arg(value_name = "MANIFEST")]
    pub manifest: PathBuf,

    /// The result folder: `DIR/<drive-id>/{detections.jsonl, metrics.json, done.json}`.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,

    /// Only every N-th drive from the K-th (K is 0-based, as a Kubernetes indexed job's
    /// JOB_COMPLETION_INDEX; a Slurm array from 0 gives SLURM_ARRAY_TASK_ID).
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,

    /// Only this drive (by id; repeatable): what one lookout-fleet task runs.
    #[arg(long, value_name = "ID")]
    pub drive: Vec<String>,

    /// Print each drive's id, source and state (done, failed, stale, missing) as a JSON
    /// line and run nothing.
    #[arg(long)]
    pub list: bool,

    /// At most this many frames per drive (a manifest's max_frames wins). Default: all.
    #[arg(long, value_name = "N")]
    pub max_frames: Option<u64>,

    /// Frame rate given to image folders and globs (they carry no timestamps).
    #[arg(long, default_value_t = 10.0, value_name = "FPS")]
    pub fps: f64,

    #[command(flatten)]
    pub detector: DetectorArgs,

    #[command(flatten)]
    pub tracking: TrackerArgs,
}

/// A batch that ran but did not finish every drive well: the binary prints the message
/// and exits with the code (see [`EXIT_DRIVES_FAILED`], [`EXIT_INTERRUPTED`]).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BatchIncomplete {
    pub code: i32,
    pub message: String,
}

/// Exit status of a batch in which at least one drive failed (each recorded in its done.json).
pub const EXIT_DRIVES_FAILED: i32 = 4;
/// Exit status of a batch stopped by Ctrl-C / SIGTERM (the drive then running is discarded).
pub const EXIT_INTERRUPTED: i32 = 130;

/// What the batch runs every drive with, checked once.
struct BatchPlan {
    drives: Vec<DriveEntry>,
    store: ResultStore,
    /// The detector's flags with the weights resolved to a path (looked up once).
    detector: DetectorArgs,
    weights_sha256: String,
    /// Of the running executable, hashed once per batch.
    binary_sha256: String,
    settings: serde_json::Value,
}

impl BatchPlan {
    fn key(&self, drive: &DriveEntry, max_frames: Option<u64>) -> RunKey {
        RunKey {
            lookout_version: env!("CARGO_PKG_VERSION").into(),
            lookout_binary_sha256: self.binary_sha256.clone(),
            source: drive.source.clone(),
            max_frames,
            weights_sha256: self.weights_sha256.clone(),
            settings: self.settings.clone(),
        }
    }
}

impl BatchArgs {
    fn plan(&self) -> Result<BatchPlan> {
        anyhow::ensure!(
            self.fps.is_finite() && self.fps > 0.0,
            "--fps must be positive"
        );
        anyhow::ensure!(
            self.max_frames != Some(0),
            "--max-frames must be at least 1"
        );
        self.detector.checked()?;
        self.tracking.plan()?;
        let mut manifest = Manifest::load(&self.manifest)?;
        if let Some(shard) = self.shard {
            manifest = manifest.shard(shard);
        }
        if !self.drive.is_empty() {
            manifest = manifest.select(&self.drive)?;
        }
        let config = self.detector.to_config()?;
        let weights_sha256 = super::file_sha256(&config.weights)
            .with_context(|| format!("cannot read weights {}", config.weights.display()))?;
        let mut settings = self.settings()?;
        if settings["precision"] == "int8" {
            // The ranges change the detections as the weights do.
            let ranges = crate::detect::quantize::ranges_path(&config.weights);
            settings["int8_ranges_sha256"] = super::file_sha256(&ranges)
                .with_context(|| {
                    format!(
                        "--precision int8 needs {}: calibrate first (lookout detect --precision \
                         int8 --calibration-images DIR --weights {})",
                        ranges.display(),
                        config.weights.display()
                    )
                })?
                .into();
        }
        let mut detector = self.detector.clone();
        detector.weights = Some(config.weights.clone());
        detector.model = None;
        let store = ResultStore::open(&self.out)?;
        Ok(BatchPlan {
            drives: manifest.drives,
            store,
            detector,
            weights_sha256,
            binary_sha256: binary_sha256()?,
            settings,
        })
    }

    /// The options that change a drive's detections or track ids, as they are recorded and
    /// compared. Every flag is destructured by name: a new one does not compile until it is
    /// decided here whether it belongs to the key.
    fn settings(&self) -> Result<serde_json::Value> {
        let DetectorArgs {
            // By content: the key's weights_sha256 (a --model resolves to a file).
            weights: _,
            model: _,
            conf,
            iou,
            max_det,
            classes,
            imgsz,
            device,
            precision,
            calibration_images,
            half,
            // Where weights come from, not what they are.
            offline: _,
            // Leaves detections unchanged (tested in tests/it/fleet.rs).
            threads: _,
        } = &self.detector;
        anyhow::ensure!(
            calibration_images.is_none(),
            "--calibration-images with batch: calibrate once first (lookout detect --precision \
             int8 --calibration-images DIR …), so that every drive runs on the same ranges"
        );
        let TrackerArgs {
            tracker,
            tracker_config,
        } = &self.tracking;
        let tracker_config = match tracker_config {
            Some(path) => Some(
                super::file_sha256(path)
                    .with_context(|| format!("cannot read --tracker-config {}", path.display()))?,
            ),
            None => None,
        };
        // f32 thresholds as written (0.45, not 0.44999998807907104).
        let decimal = |x: f32| x.to_string().parse::<f64>().unwrap_or(f64::from(x));
        Ok(serde_json::json!({
            "conf": decimal(*conf),
            // null: the model family's default.
            "iou": iou.map(decimal),
            "max_det": max_det,
            "classes": classes,
            "imgsz": imgsz,
            "device": device,
            "precision": resolved_precision(precision)?,
            "half": half,
            "tracker": tracker.name(),
            "tracker_config_sha256": tracker_config,
            "images_fps": self.fps,
        }))
    }

    /// `lookout run`'s flags for one drive, writing into `dir`. Values are given as
    /// `--flag=VALUE`, so a source that starts with `-` is still a value; a value clap
    /// rejects is this drive's error, not the end of the batch.
    fn run_args(&self, plan: &BatchPlan, drive: &DriveEntry, dir: &Path) -> Result<RunArgs> {
        use clap::Parser;
        use std::ffi::OsString;
        #[derive(clap::Parser)]
        #[command(no_binary_name = true)]
        struct Wrapper {
            #[command(flatten)]
            run: RunArgs,
        }
        let flag = |name: &str, value: &std::ffi::OsStr| {
            let mut arg = OsString::from(format!("--{name}="));
            arg.push(value);
            arg
        };
        let argv: Vec<OsString> = vec![
            "--headless".into(),
            flag("source", drive.source.as_ref()),
            flag("jsonl", dir.join(DETECTIONS_FILE).as_os_str()),
            flag("metrics", dir.join(METRICS_FILE).as_os_str()),
        ];
        let mut args = Wrapper::try_parse_from(argv)
            .map_err(|e| {
                let text = e.to_string();
                let first = text
                    .lines()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("invalid");
                anyhow::anyhow!(
                    "cannot build the run's flags for source `{}`: {}",
                    drive.source,
                    first.trim_start_matches("error: ")
                )
            })?
            .run;
        args.detector = plan.detector.clone();
        args.tracking = self.tracking.clone();
        args.source.fps = self.fps;
        args.max_frames = drive.max_frames.or(self.max_frames);
        // The commit syncs every file it keeps; a stopped drive's are removed unsynced.
        args.caller_syncs = true;
        Ok(args)
    }
}

pub fn run(args: &BatchArgs) -> Result<()> {
    let plan = args.plan()?;
    if args.list {
        for drive in &plan.drives {
            let max_frames = drive.max_frames.or(args.max_frames);
            let state = plan.store.state(&drive.id, &plan.key(drive, max_frames));
            let line = serde_json::json!({
                "id": drive.id,
                "source": drive.source,
                "max_frames": max_frames,
                "state": state.name(),
            });
            println!("{line}");
        }
        return Ok(());
    }
    // Installed before the first drive: Ctrl-C between drives stops the batch too.
    let stop = super::signals::stop_on_ctrl_c();
    let (mut ok, mut skipped, mut failed) = (0usize, 0usize, 0usize);
    let total = plan.drives.len();
    for drive in &plan.drives {
        if stop.load(Ordering::SeqCst) {
            break;
        }
        let max_frames = drive.max_frames.or(args.max_frames);
        let key = plan.key(drive, max_frames);
        if plan.store.state(&drive.id, &key) == DriveState::Done {
            eprintln!("drive {}: done before, skipped", drive.id);
            skipped += 1;
            continue;
        }
        match run_drive(args, &plan, drive, key)? {
            Outcome::Interrupted => {
                eprintln!(
                    "drive {}: interrupted, its unfinished result discarded",
                    drive.id
                );
                break;
            }
            Outcome::Recorded(record) => {
                let frames = record.frames.processed;
                match &record.error {
                    None => {
                        ok += 1;
                        eprintln!(
                            "drive {}: ok, {frames} frames, {} detections, {:.1} s",
                            drive.id, record.detections, record.duration_s
                        );
                    }
                    Some(error) => {
                        failed += 1;
                        eprintln!("drive {}: FAILED: {error}", drive.id);
                    }
                }
            }
        }
    }
    let finished = ok + skipped + failed;
    let summary = format!(
        "batch: {ok} ok, {skipped} skipped (done before), {failed} failed of {total} drives in {}",
        plan.store.root().display()
    );
    if finished < total {
        return Err(BatchIncomplete {
            code: EXIT_INTERRUPTED,
            message: format!(
                "{summary}; interrupted with {} not run: run the same command again to finish",
                total - finished
            ),
        }
        .into());
    }
    if failed > 0 {
        return Err(BatchIncomplete {
            code: EXIT_DRIVES_FAILED,
            message: format!("{summary}; each failed drive's done.json holds its error"),
        }
        .into());
    }
    eprintln!("{summary}");
    Ok(())
}

enum Outcome {
    /// Stopped by Ctrl-C: nothing stored.
    Interrupted,
    /// Stored, ok or failed.
    Recorded(Box<DoneRecord>),
}

/// One drive through the pipeline into a fresh attempt folder, committed with its record.
/// Only an error of the result folder itself (cannot write, rename) ends the batch.
fn run_drive(
    args: &BatchArgs,
    plan: &BatchPlan,
    drive: &DriveEntry,
    key: RunKey,
) -> Result<Outcome> {
    let attempt = plan.store.begin(&drive.id)?;
    let start = Instant::now();
    let result = args
        .run_args(plan, drive, attempt.dir())
        .and_then(|run_args| {
            check_replayable(&run_args)?;
            run_cmd::execute(&run_args, Console::Quiet)
        });
    let duration_s = start.elapsed().as_secs_f64();
    if super::signals::stop_on_ctrl_c().load(Ordering::SeqCst) {
        // Dropping the attempt removes its folder: a stopped drive is not a result.
        return Ok(Outcome::Interrupted);
    }
    let mut record = DoneRecord {
        drive: drive.id.clone(),
        status: Status::Ok,
        error: None,
        key,
        model: String::new(),
        weights: plan
            .detector
            .weights
            .as_ref()
            .map(|w| w.display().to_string())
            .unwrap_or_default(),
        frames: FrameTally::default(),
        detections: 0,
        duration_s,
        finished_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        attempt: plan.store.attempt_id(),
    };
    let error = match result {
        Ok(report) => {
            let summary = &report.summary;
            record.model = summary.model.clone();
            record.frames = FrameTally {
                frames_in: summary.frames.frames_in,
                processed: summary.frames.processed,
                dropped: summary.frames.dropped.total(),
            };
            match count_detections(&attempt.dir().join(DETECTIONS_FILE)) {
                Ok((lines, detections)) => {
                    record.detections = detections;
                    if let Some(note) = &report.ended_early {
                        Some(format!("input ended early: {note}"))
                    } else if record.frames.dropped > 0 || lines != record.frames.processed {
                        Some(format!(
                            "lost frames: {} read, {} processed, {} dropped, {lines} in {DETECTIONS_FILE}; a replay must keep every frame",
                            record.frames.frames_in, record.frames.processed, record.frames.dropped
                        ))
                    } else {
                        None
                    }
                }
                Err(e) => Some(format!("cannot read back {DETECTIONS_FILE}: {e}")),
            }
        }
        Err(e) => Some(super::one_line(&e)),
    };
    if let Some(error) = error {
        record.status = Status::Failed;
        record.error = Some(error);
    }
    match attempt.commit(&record)? {
        Committed::Written => Ok(Outcome::Recorded(Box::new(record))),
        Committed::AlreadyDone => {
            eprintln!(
                "drive {}: another attempt finished it first; kept that result",
                drive.id
            );
            // What is stored is what the summary reports, not this discarded attempt.
            Ok(Outcome::Recorded(Box::new(
                plan.store.record(&drive.id).unwrap_or(record),
            )))
        }
    }
}

/// SHA-256 of the running executable. On Linux read through /proc/self/exe, which is the
/// image this process runs even when the file was replaced or removed since it started.
fn binary_sha256() -> Result<String> {
    let proc_exe = Path::new("/proc/self/exe");
    if proc_exe.exists() {
        if let Ok(sha) = super::file_sha256(proc_exe) {
            return Ok(sha);
        }
    }
    let exe = std::env::current_exe().context("cannot find the running lookout executable")?;
    super::file_sha256(&exe)
        .with_context(|| format!("cannot read the running executable {}", exe.display()))
}

/// The arithmetic `--precision` gives on this machine: `auto` is `bf16` or `f32` by the
/// CPU, so two nodes of a mixed cluster never share a key across different arithmetic.
fn resolved_precision(flag: &str) -> Result<&'static str> {
    Ok(
        match crate::detect::Precision::parse(flag).map_err(anyhow::Error::msg)? {
            crate::detect::Precision::F32 => "f32",
            crate::detect::Precision::Bf16 => "bf16",
            crate::detect::Precision::Auto if crate::detect::cpu::bf16::supported() => "bf16",
            crate::detect::Precision::Auto => "f32",
            crate::detect::Precision::Int8 => "int8",
        },
    )
}

/// A batch replays recorded drives: live sources never end and cannot be replayed, and
/// an endless synthetic source needs a frame limit.
fn check_replayable(args: &RunArgs) -> Result<()> {
    let spec = args.source.spec()?;
    anyhow::ensure!(
        !spec.is_live(),
        "source `{spec}` is live (a camera or stream): a batch replays recorded drives"
    );
    anyhow::ensure!(
        !matches!(spec, crate::source::SourceSpec::Synthetic(_)) || args.max_frames.is_some(),
        "source `{spec}` is endless: give the drive max_frames in the manifest, or --max-frames"
    );
    Ok(())
}

/// Frames (lines) and detections in a `--jsonl` file.
fn count_detections(path: &Path) -> std::io::Result<(u64, u64)> {
    #[derive(Deserialize)]
    struct Line {
        detections: Vec<serde::de::IgnoredAny>,
    }
    let text = std::fs::read_to_string(path)?;
    let mut lines = 0;
    let mut detections = 0;
    for line in text.lines() {
        let parsed: Line = serde_json::from_str(line)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        lines += 1;
        detections += parsed.detections.len() as u64;
    }
    Ok((lines, detections))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn batch_args(extra: &[&str]) -> BatchArgs {
        let mut argv = vec!["lookout", "batch", "drives.txt", "--out", "res"];
        argv.extend_from_slice(extra);
        let Some(Command::Batch(args)) = Cli::try_parse_from(argv).unwrap().command else {
            panic!("not a batch");
        };
        *args
    }

    fn settings(extra: &[&str]) -> serde_json::Value {
        batch_args(extra).settings().unwrap()
    }

    #[test]
    fn the_key_tells_precision_and_iou_apart() {
        let f32_ = settings(&["--precision", "f32"]);
        let bf16 = settings(&["--precision", "bf16"]);
        assert_eq!(f32_["precision"], "f32");
        assert_eq!(bf16["precision"], "bf16");
        assert_ne!(f32_, bf16);
        // The default is f32; auto is what it resolves to on this CPU, never "auto".
        assert_eq!(settings(&[]), f32_);
        let auto = settings(&["--precision", "auto"]);
        let here = if crate::detect::cpu::bf16::supported() {
            &bf16
        } else {
            &f32_
        };
        assert_eq!(&auto, here);
        assert_eq!(settings(&["--precision", "int8"])["precision"], "int8");
        assert!(
            batch_args(&["--precision", "int8", "--calibration-images", "."])
                .settings()
                .is_err()
        );

        let unset = settings(&[]);
        let iou = settings(&["--iou", "0.5"]);
        assert_eq!(unset["iou"], serde_json::Value::Null);
        assert_eq!(iou["iou"], 0.5);
        assert_ne!(unset, iou);
        // Flags that do not change detections share the key.
        assert_eq!(settings(&["--threads", "1", "--offline"]), unset);
    }

    #[test]
    fn a_source_that_looks_like_a_flag_is_still_the_source() {
        let dir = tempfile::tempdir().unwrap();
        let args = batch_args(&["--tracker", "none"]);
        let plan = BatchPlan {
            drives: Vec::new(),
            store: ResultStore::open(dir.path()).unwrap(),
            detector: args.detector.clone(),
            weights_sha256: String::new(),
            binary_sha256: String::new(),
            settings: serde_json::Value::Null,
        };
        let drive = DriveEntry {
            id: "a".into(),
            source: "--max-frames".into(),
            max_frames: Some(3),
        };
        let run = args.run_args(&plan, &drive, dir.path()).unwrap();
        assert_eq!(run.source.source, "--max-frames");
        assert_eq!(run.max_frames, Some(3));
        assert!(run.headless);
        assert!(run.caller_syncs, "the commit syncs what it keeps");
        assert_eq!(
            run.jsonl.as_deref(),
            Some(dir.path().join(DETECTIONS_FILE).as_path())
        );
    }

    #[test]
    fn the_binary_is_hashed() {
        let sha = binary_sha256().unwrap();
        assert_eq!(sha.len(), 64);
        assert_eq!(sha, binary_sha256().unwrap());
    }

    #[test]
    fn batch_flags_parse_and_detector_options_are_the_run_ones() {
        let cli = Cli::try_parse_from([
            "lookout",
            "batch",
            "drives.toml",
            "--out",
            "res",
            "--shard",
            "1/4",
            "--drive",
            "a",
            "--drive",
            "b",
            "--conf",
            "0.4",
            "--tracker",
            "none",
        ])
        .unwrap();
        let Some(Command::Batch(args)) = cli.command else {
            panic!("not a batch");
        };
        assert_eq!(args.shard.map(|s| (s.index, s.count)), Some((1, 4)));
        assert_eq!(args.drive, ["a", "b"]);
        assert_eq!(args.detector.conf, 0.4);
        assert!(Cli::try_parse_from(["lookout", "batch", "m.txt"]).is_err());
        assert!(
            Cli::try_parse_from(["lookout", "batch", "m.txt", "--out", "o", "--shard", "4/4"])
                .is_err()
        );
    }
}
