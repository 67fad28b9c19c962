//! The command line: clap parses raw flags, each command validates them once into typed
//! configs and runs. The binary (`main.rs`) only calls [`main`].

pub mod args;
pub mod batch_cmd;
pub mod bench_cmd;
pub mod calib_cmd;
pub mod cameras_cmd;
pub mod detect_cmd;
pub mod eval_track_cmd;
pub mod explain_cmd;
pub mod paths;
pub mod record_cmd;
pub mod run_cmd;
pub mod signals;
pub mod track_cmd;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lookout",
    version,
    about = "Real-time camera perception: capture → detect → render, with latency metrics"
)]
pub struct Cli {
    /// Without a command: `lookout run --source camera:0 --show` with the default model.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the pipeline: a source through the detector to a window and/or files.
    Run(Box<run_cmd::RunArgs>),
    /// Replay every drive of a manifest (headless, every frame) into DIR/<drive-id>/:
    /// detections.jsonl, metrics.json and done.json, each drive whole or not at all;
    /// drives already done with the same weights and settings are skipped.
    Batch(Box<batch_cmd::BatchArgs>),
    /// Record a source into a drive folder (no detector).
    Record(record_cmd::RecordArgs),
    /// List cameras and the modes they offer.
    Cameras,
    /// Detect objects in still images.
    Detect(detect_cmd::DetectArgs),
    /// Where the detector's scores are high on an image, and which pixels one detection
    /// depends on (occlusion).
    Explain(explain_cmd::ExplainArgs),
    /// Time pre-processing, inference and post-processing of a model.
    Bench(bench_cmd::BenchArgs),
    /// List the models `--model` knows, and where each is found.
    Models,
    /// Track the boxes of a MOTChallenge detection file (no detector, no images).
    Track(track_cmd::TrackArgs),
    /// Camera calibration files.
    #[command(subcommand)]
    Calib(CalibCommand),
    /// Check estimators against ground truth.
    #[command(subcommand)]
    Eval(EvalCommand),
}

#[derive(Debug, Subcommand)]
pub enum CalibCommand {
    /// Print a calibration file as lookout reads it: fields of view, principal point, horizon.
    Show(calib_cmd::CalibShowArgs),
}

#[derive(Debug, Subcommand)]
pub enum EvalCommand {
    /// Distance estimates on the ground-truth boxes of KITTI label files vs their 3D positions.
    Distance(calib_cmd::EvalDistanceArgs),
    /// Tracks against ground truth: MOTA, MOTP, IDF1, ID switches, fragmentations, HOTA.
    Track(eval_track_cmd::EvalTrackArgs),
}

/// The exit status of a run whose input ended before its announced end.
pub const EXIT_INPUT_ENDED_EARLY: i32 = 3;

/// A run or recording whose input stopped early (truncated file, decoder error, lost
/// camera): every output is complete up to the cut; the binary exits with
/// [`EXIT_INPUT_ENDED_EARLY`] so that scripts can tell a short input from a whole one.
#[derive(Debug, thiserror::Error)]
#[error("input ended early: {note}; the outputs hold every frame before the cut")]
pub struct InputEndedEarly {
    pub note: String,
}

impl InputEndedEarly {
    /// `Err` when the report says the input ended early.
    pub fn check(report: &crate::pipeline::RunReport) -> anyhow::Result<()> {
        match &report.ended_early {
            Some(note) if !report.stopped_by_user => {
                Err(InputEndedEarly { note: note.clone() }.into())
            }
            _ => Ok(()),
        }
    }
}

pub fn main() -> anyhow::Result<()> {
    init_tracing();
    let cli = Cli::parse();
    let Some(command) = &cli.command else {
        return run_cmd::run(&run_cmd::RunArgs::default_live());
    };
    match command {
        Command::Run(args) => run_cmd::run(args),
        Command::Batch(args) => batch_cmd::run(args),
        Command::Record(args) => record_cmd::run(args),
        Command::Cameras => cameras_cmd::run(),
        Command::Detect(args) => detect_cmd::run(args),
        Command::Explain(args) => explain_cmd::run(args),
        Command::Bench(args) => bench_cmd::run(args),
        Command::Models => list_models(),
        Command::Calib(CalibCommand::Show(args)) => calib_cmd::run_calib_show(args),
        Command::Eval(EvalCommand::Distance(args)) => calib_cmd::run_eval_distance(args),
        Command::Eval(EvalCommand::Track(args)) => eval_track_cmd::run(args),
        Command::Track(args) => track_cmd::run(args),
    }
}

// The SHA-256 of a file, lower-case hex (the weights in an MCAP file's metadata, batch keys).
pub use crate::detect::quantize::file_sha256;

/// This process's command line, arguments quoted where they hold spaces.
pub fn command_line() -> String {
    std::env::args()
        .map(|a| {
            if a.contains(char::is_whitespace) {
                format!("'{a}'")
            } else {
                a
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// An error and its causes on one line (`a: b: c`), as `{:#}` prints them, but without a
/// cause that the message before it already ends with (issue 12: errors whose message
/// includes their source printed "No such file or directory (os error 2)" twice).
pub fn one_line(error: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in error.chain() {
        let part = cause.to_string();
        if text.is_empty() {
            text = part;
        } else if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
    }
    text
}

/// Warnings to stderr, coloured only on a terminal (issue 12: a pipe or log file got ANSI
/// escapes) and never with `NO_COLOR` set.
fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LOOKOUT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .try_init();
}

fn list_models() -> anyhow::Result<()> {
    use crate::detect::weights::resolve::{Resolver, KNOWN_MODELS};
    let resolver = Resolver::from_env(true);
    println!(
        "{:<12} {:>5}  {:<24} local copy",
        "model", "input", "licence"
    );
    for m in KNOWN_MODELS {
        let local = resolver
            .resolve(m.name)
            .map_or_else(|_| "-".to_string(), |p| p.display().to_string());
        println!(
            "{:<12} {:>5}  {:<24} {}",
            m.name, m.input_size, m.licence, local
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read calibration file c.toml: {source}")]
    struct Quoting {
        source: std::io::Error,
    }

    #[test]
    fn a_cause_already_in_the_message_is_printed_once() {
        let io = std::io::Error::from(std::io::ErrorKind::NotFound);
        let cause = io.to_string();
        let error = anyhow::Error::new(Quoting { source: io }).context("run");
        let line = one_line(&error);
        assert_eq!(line.matches(&cause).count(), 1, "{line}");
        assert!(
            line.starts_with("run: cannot read calibration file"),
            "{line}"
        );
        let plain = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&plain), "outer: inner");
    }
}
