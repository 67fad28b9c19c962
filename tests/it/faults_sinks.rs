//! Integration tests for issue 12, items 4 and 5, through the real binary: an absurd
//! timestamp in a drive does not stall a realtime replay; a failing sink (a full disk, a
//! lost X display) is reported by name, every other output and metrics.json are complete,
//! and the exit status is non-zero.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::{lookout, run_with_deadline};
use crate::sink::Xvfb;

const WEIGHTS: &str = "models/yolox_nano.safetensors";

/// `lookout run --source SRC` with YOLOX-Nano at 128 and `extra` flags; `None` (skipped)
/// without the weights fixture.
fn run_cmd(source: &str, extra: &[&str]) -> Option<Command> {
    let weights = lookout::fixtures::require(WEIGHTS)?;
    let mut cmd = lookout();
    cmd.args(["run", "--source", source])
        .arg("--weights")
        .arg(weights)
        .args(["--imgsz", "128", "--tracker", "none"])
        .args(extra);
    Some(cmd)
}

fn text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn metrics(path: &Path) -> serde_json::Value {
    serde_json::from_str(&text(path)).expect("metrics.json parses")
}

/// Every line of a JSON-lines file, each checked whole.
fn jsonl_lines(path: &Path) -> usize {
    let text = text(path);
    assert!(text.is_empty() || text.ends_with('\n'), "a torn last line");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line).expect("a whole JSON line");
    }
    text.lines().count()
}

/// Frames in a video, counted by decoding it (ffprobe), or `None` without ffprobe.
fn video_frames(path: &Path) -> Option<u64> {
    let tools = match lookout::cli::args::ffmpeg_from_env().tools() {
        Ok(tools) => tools,
        Err(e) if std::env::var("CI").is_err() => {
            eprintln!("skipping the video check: {e}");
            return None;
        }
        Err(e) => panic!("{e}"),
    };
    let out = Command::new(&tools.ffprobe)
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{} does not play: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Some(String::from_utf8_lossy(&out.stdout).trim().parse().unwrap())
}

fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Issue 12, item 4: a drive whose index has one `capture_mono_ns` of 9e18 stalled a
/// realtime replay after 4 frames, silently. Every frame now plays, in bounded time, with
/// one warning.
#[test]
fn an_absurd_timestamp_in_a_drive_is_skipped_in_a_realtime_replay() {
    let dir = tempfile::tempdir().unwrap();
    let drive = dir.path().join("drive");
    let mut record = lookout();
    record
        .args(["record", "--source", "synthetic:64x48@30", "--out"])
        .arg(&drive)
        .args(["--max-frames", "20"]);
    let out = run_with_deadline(record, Duration::from_secs(60));
    assert!(out.status.success(), "record: {}", stderr_of(&out));
    // The sixth frame's capture time becomes absurd.
    let index = drive.join("index.csv");
    let mut lines: Vec<String> = text(&index).lines().map(str::to_string).collect();
    let mut fields: Vec<&str> = lines[6].split(',').collect();
    fields[1] = "9000000000000000000";
    lines[6] = fields.join(",");
    std::fs::write(&index, lines.join("\n") + "\n").unwrap();

    let (jl, m) = (dir.path().join("r.jsonl"), dir.path().join("m.json"));
    let Some(mut cmd) = run_cmd(
        drive.to_str().unwrap(),
        &["--pace", "realtime", "--headless"],
    ) else {
        return;
    };
    cmd.arg("--jsonl").arg(&jl).arg("--metrics").arg(&m);
    let t0 = Instant::now();
    let out = run_with_deadline(cmd, Duration::from_secs(60));
    let stderr = stderr_of(&out);
    assert!(out.status.success(), "{stderr}");
    // 20 frames at 30 fps, plus start-up: nowhere near a stall.
    assert!(t0.elapsed() < Duration::from_secs(30), "{:?}", t0.elapsed());
    let warnings = stderr
        .lines()
        .filter(|l| l.contains("from the one before"))
        .count();
    assert_eq!(warnings, 1, "one warning for the jump: {stderr}");
    let summary = metrics(&m);
    assert_eq!(summary["frames"]["in"], 20, "{summary}");
    let notes = summary["notes"].to_string();
    assert!(notes.contains("2 timestamp jump"), "{notes}");
    // Every frame read; a realtime replay may drop one the detector cannot keep up with.
    let shown = summary["frames"]["shown"].as_u64().unwrap();
    assert_eq!(jsonl_lines(&jl) as u64, shown);
}

/// Issue 12, item 5: one failing sink (`--jsonl` on a full disk) aborted the run without
/// metrics.json and with an unplayable video. Now the error names the sink, the exit status
/// is non-zero, the video plays with every frame shown, and the metrics are written.
#[test]
fn a_failing_sink_leaves_every_other_output_complete_and_fails_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (video, m, csv) = (
        dir.path().join("v.mp4"),
        dir.path().join("m.json"),
        dir.path().join("m.csv"),
    );
    let Some(mut cmd) = run_cmd("synthetic:64x48", &["--max-frames", "60", "--headless"]) else {
        return;
    };
    cmd.args(["--jsonl", "/dev/full", "--save-video"])
        .arg(&video)
        .arg("--metrics")
        .arg(&m)
        .arg("--metrics-csv")
        .arg(&csv);
    let out = run_with_deadline(cmd, Duration::from_secs(60));
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "the run must fail: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("sink `jsonl` failed") && last.contains("/dev/full"),
        "the error names the sink and its file: {stderr}"
    );
    let summary = metrics(&m);
    let shown = summary["frames"]["shown"].as_u64().unwrap();
    assert!((1..60).contains(&shown), "stopped early: {summary}");
    assert!(summary["notes"].to_string().contains("jsonl"), "{summary}");
    // The CSV: a header and one row per frame shown.
    assert_eq!(text(&csv).lines().count() as u64, shown + 1);
    if let Some(frames) = video_frames(&video) {
        assert_eq!(frames, shown, "the video holds every frame shown");
    }
}

/// Waits (at most 30 s) until `path` has `lines` lines.
fn wait_for_lines(path: &PathBuf, lines: usize, child: &mut std::process::Child) {
    let start = Instant::now();
    while std::fs::read_to_string(path).map_or(0, |t| t.lines().count()) < lines {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("lookout exited early ({status})");
        }
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("{} never reached {lines} lines", path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Issue 12, item 5: losing the X display ended the process ("XIO: fatal IO error", exit
/// status 1) without metrics.json. Now the window sink fails naming the display, and the run
/// stops with metrics.json and a whole JSON-lines file, exit status non-zero.
#[test]
fn losing_the_x_display_stops_the_run_with_every_output_complete() {
    let Some(xvfb) = Xvfb::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (jl, m) = (dir.path().join("r.jsonl"), dir.path().join("m.json"));
    let Some(mut cmd) = run_cmd("synthetic:64x48@20:live", &["--show"]) else {
        return;
    };
    cmd.arg("--jsonl")
        .arg(&jl)
        .arg("--metrics")
        .arg(&m)
        .env("DISPLAY", &xvfb.display)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    wait_for_lines(&jl, 5, &mut child);
    let display = xvfb.display.clone();
    drop(xvfb); // kills the X server
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("lookout did not stop after its display was lost");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = stderr_of(&out);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("XIO"),
        "Xlib must not end the process: {stderr}"
    );
    let last = stderr.trim().lines().last().unwrap_or_default();
    assert!(
        last.contains("sink `window` failed") && last.contains(&format!("X display \"{display}\"")),
        "the error names the display: {stderr}"
    );
    let summary = metrics(&m);
    let shown = summary["frames"]["shown"].as_u64().unwrap();
    assert!(shown >= 5, "{summary}");
    assert_eq!(
        jsonl_lines(&jl) as u64,
        shown,
        "one whole line per frame shown"
    );
}
