//! Integration tests: `lookout run` / `lookout record` end to end through the real binary
//! (YOLOX-Nano at 416, offline, headless: CI has no camera and no display).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lookout::fixtures::require;
use serde_json::Value;

use crate::common::{lookout, succeed};

const VIDEO: &str = "drives/udacity_test_video.mp4";
const WEIGHTS: &str = "models/yolox_nano.safetensors";

/// `lookout run --source SRC --headless` with the test model and `extra` flags.
fn run_cmd(source: &Path, weights: &Path, extra: &[&str]) -> Command {
    let mut cmd = lookout();
    cmd.arg("run")
        .arg("--source")
        .arg(source)
        .arg("--weights")
        .arg(weights)
        .args(["--imgsz", "416", "--headless"])
        .args(extra);
    cmd
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect()
}

fn detections(lines: &[Value]) -> Vec<Value> {
    lines.iter().map(|l| l["detections"].clone()).collect()
}

fn fixtures() -> Option<(PathBuf, PathBuf)> {
    Some((require(VIDEO)?, require(WEIGHTS)?))
}

#[test]
fn video_headless_writes_jsonl_metrics_csv_and_plot() {
    let Some((video, weights)) = fixtures() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (jl, metrics, csv, plot) = (
        tmp.path().join("out.jsonl"),
        tmp.path().join("m.json"),
        tmp.path().join("m.csv"),
        tmp.path().join("p.png"),
    );
    let mut cmd = run_cmd(&video, &weights, &[]);
    cmd.arg("--jsonl")
        .arg(&jl)
        .arg("--metrics")
        .arg(&metrics)
        .arg("--metrics-csv")
        .arg(&csv)
        .arg("--plot")
        .arg(&plot);
    let out = succeed(cmd);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(stderr.contains("end-to-end"), "summary table on stderr");
    // The device used is in the header: no silent fallback can hide.
    assert!(
        stderr.contains(" on cpu f32 ("),
        "device in the header: {stderr}"
    );

    let lines = jsonl(&jl);
    assert_eq!(lines.len(), 38);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["seq"], i as u64);
        assert_eq!(line["pts_ns"], i as u64 * 40_000_000);
        assert_eq!(
            (line["width"].as_u64(), line["height"].as_u64()),
            (Some(1280), Some(720))
        );
        assert!(line["timing_ms"]["inference"].as_f64().unwrap() > 0.0);
    }
    let cars = lines
        .iter()
        .filter(|l| {
            l["detections"]
                .as_array()
                .unwrap()
                .iter()
                .any(|d| d["class"] == "car")
        })
        .count();
    assert!(cars >= 30, "cars in {cars} of 38 frames");

    let m: Value = serde_json::from_str(&std::fs::read_to_string(&metrics).unwrap()).unwrap();
    assert_eq!(m["frames"]["in"], 38);
    assert_eq!(m["device"], "cpu f32");
    assert_eq!(m["frames"]["processed"], 38);
    assert_eq!(m["frames"]["shown"], 38);
    for stage in ["capture", "detect", "render", "sink"] {
        assert_eq!(m["frames"]["dropped"][stage], 0, "{stage}");
    }
    assert!(
        m["fps"]["in"].as_f64().unwrap() > 0.0 && m["fps"]["processed"].as_f64().unwrap() > 0.0
    );
    for stage in [
        "capture",
        "preprocess",
        "inference",
        "postprocess",
        "render",
        "present",
    ] {
        for key in ["p50_ms", "p90_ms", "p99_ms", "max_ms"] {
            assert!(m["stages"][stage][key].is_number(), "{stage}.{key}");
        }
    }
    let e2e = &m["end_to_end"];
    assert!(
        e2e["p50_ms"].as_f64().unwrap() > 0.0 && e2e["p99_ms"].as_f64() >= e2e["p50_ms"].as_f64()
    );
    assert!(m["stages"]["inference"]["p50_ms"].as_f64().unwrap() > 1.0);
    assert_eq!(m["warmup"]["frames"], 3);

    let csv = std::fs::read_to_string(&csv).unwrap();
    assert_eq!(csv.lines().count(), 1 + 38, "a header and a row per frame");
    assert!(csv.lines().next().unwrap().contains("presented_ns"));
    let png = image::open(&plot).unwrap();
    assert!(png.width() >= 1000 && png.height() >= 1000);
}

fn record(video: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut cmd = lookout();
    cmd.arg("record")
        .arg("--source")
        .arg(video)
        .arg("--out")
        .arg(out)
        .args(extra);
    succeed(cmd)
}

fn replay(drive: &Path, weights: &Path, jl: &Path, max_frames: &str) -> Vec<Value> {
    let mut cmd = run_cmd(drive, weights, &["--max-frames", max_frames]);
    cmd.arg("--jsonl").arg(jl);
    succeed(cmd);
    jsonl(jl)
}

#[test]
fn recorded_drive_replays_deterministically_and_png_drives_match_the_video() {
    let Some((video, weights)) = fixtures() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let drive = tmp.path().join("drive_jpg");
    record(&video, &drive, &[]);
    let reader = lookout::source::DriveReader::open(&drive).unwrap();
    assert_eq!(reader.manifest().frame_count, Some(38));
    // Each replay detects on the first frames; both must agree exactly.
    let a = replay(&drive, &weights, &tmp.path().join("a.jsonl"), "6");
    let b = replay(&drive, &weights, &tmp.path().join("b.jsonl"), "6");
    assert_eq!(a.len(), 6);
    assert_eq!(a.len(), b.len());
    assert_eq!(detections(&a), detections(&b));
    // The drive keeps the video's timing.
    let pts: Vec<_> = a.iter().map(|l| l["pts_ns"].as_i64().unwrap()).collect();
    assert_eq!(pts, (0..6).map(|i| i * 40_000_000).collect::<Vec<_>>());

    let png_drive = tmp.path().join("drive_png");
    record(
        &video,
        &png_drive,
        &["--frame-format", "png", "--max-frames", "6"],
    );
    let from_drive = replay(&png_drive, &weights, &tmp.path().join("p.jsonl"), "6");
    let mut cmd = run_cmd(&video, &weights, &["--max-frames", "6"]);
    let direct_path = tmp.path().join("v.jsonl");
    cmd.arg("--jsonl").arg(&direct_path);
    succeed(cmd);
    let direct = jsonl(&direct_path);
    assert_eq!(from_drive.len(), 6);
    assert_eq!(
        detections(&from_drive),
        detections(&direct),
        "lossless drive = video"
    );
}

#[test]
fn sigint_during_record_leaves_a_valid_drive_that_replays() {
    let Some((video, weights)) = fixtures() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let drive = tmp.path().join("drive");
    let mut cmd = lookout();
    cmd.arg("record")
        .arg("--source")
        .arg(&video)
        .arg("--out")
        .arg(&drive)
        .args(["--pace", "realtime"]);
    let child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The clip lasts 1.52 s in real time: interrupt it halfway.
    let start = Instant::now();
    while !drive.join("index.csv").exists() && start.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(600));
    let kill = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit after SIGINT: {stderr}");
    assert!(stderr.contains("stopped by the user"), "{stderr}");
    let reader = lookout::source::DriveReader::open(&drive).unwrap();
    let recorded = reader
        .manifest()
        .frame_count
        .expect("the manifest was finished");
    assert!(
        (3..38).contains(&recorded),
        "{recorded} frames recorded before SIGINT"
    );
    let lines = replay(&drive, &weights, &tmp.path().join("r.jsonl"), "3");
    assert_eq!(lines.len(), 3);
}

#[test]
fn kitti_raw_folder_replays_with_its_timestamps() {
    let (Some(images), Some(weights)) = (require("kitti/object/image_2"), require(WEIGHTS)) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let drive = crate::common::kitti_raw_folder(&images, tmp.path());
    let calib = images.join("../calib/000000.txt");
    let jl = tmp.path().join("k.jsonl");
    let mut cmd = run_cmd(&drive, &weights, &[]);
    cmd.arg("--jsonl").arg(&jl).arg("--calib").arg(&calib);
    succeed(cmd);
    let lines = jsonl(&jl);
    let pts: Vec<_> = lines
        .iter()
        .map(|l| l["pts_ns"].as_i64().unwrap())
        .collect();
    assert_eq!(pts, [0, 110_075_639, 220_156_453]);
    // With a calibration every placeable detection has a distance.
    let first = lines[0]["detections"].as_array().unwrap();
    let placed = |d: &Value| {
        d["distance_m"]
            .as_f64()
            .is_some_and(|m| m > 1.0 && m < 100.0)
    };
    assert!(first.iter().any(placed), "{first:?}");

    // Recording with --calib copies the calibration into the drive (one frame: the three
    // KITTI object images differ in size, and a drive holds one size).
    let recorded = tmp.path().join("recorded");
    let calib_arg = calib.to_str().unwrap();
    record(
        &drive,
        &recorded,
        &["--calib", calib_arg, "--max-frames", "1"],
    );
    let reader = lookout::source::DriveReader::open(&recorded).unwrap();
    assert_eq!(reader.manifest().calibration.as_deref(), Some("000000.txt"));
    let copy = std::fs::read(recorded.join("000000.txt")).unwrap();
    assert_eq!(copy, std::fs::read(&calib).unwrap());
    assert_eq!(reader.manifest().frame_count, Some(1));
}

/// `run` checks every flag (and reads the calibration) before it opens the source: a bad
/// flag is reported, not the camera this machine does not have.
#[test]
fn run_plans_before_it_opens_anything() {
    let tmp = tempfile::tempdir().unwrap();
    let bad_calib = tmp.path().join("bad.toml");
    std::fs::write(&bad_calib, "version = 1\n[intrinsics]\nfx = -3\n").unwrap();
    for (args, expect) in [
        (vec!["--conf", "2"], "--conf 2 is outside 0..1"),
        (
            vec!["--imgsz", "100"],
            "--imgsz 100 must be a positive multiple of 32",
        ),
        (vec!["--ttc-warn", "0"], "--ttc-warn must be positive"),
        (vec!["--calib", bad_calib.to_str().unwrap()], "bad.toml"),
    ] {
        let out = lookout()
            .args(["run", "--source", "camera:7", "--headless"])
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert!(
            !stderr.contains("camera"),
            "{args:?}: the camera was opened: {stderr}"
        );
    }
}

#[test]
fn bad_flags_fail_before_any_work() {
    let out = lookout()
        .args(["run", "--source", "/no/such/file.mp4", "--headless"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("x"), "").unwrap();
    let out = lookout()
        .args(["record", "--source", "camera:0", "--out"])
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("not empty"),
        "{stderr}"
    );
}

#[test]
fn annotated_video_and_frames_hold_every_processed_frame() {
    let Some((video, weights)) = fixtures() else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let (mp4, frames) = (tmp.path().join("out.mp4"), tmp.path().join("frames"));
    let mut cmd = run_cmd(&video, &weights, &["--max-frames", "4"]);
    cmd.arg("--save-video")
        .arg(&mp4)
        .arg("--save-frames")
        .arg(&frames);
    succeed(cmd);
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames,width,height",
            "-of",
            "csv=p=0",
        ])
        .arg(&mp4)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "1280,720,4");
    assert_eq!(std::fs::read_dir(&frames).unwrap().count(), 4);
}

/// The live window end to end: `lookout run --show` on the Udacity clip under Xvfb; a
/// screenshot of the X display shows the frame with vehicle boxes in their tracks' colours
/// where the JSONL says the detections are.
#[test]
fn run_show_draws_detections_in_a_real_window() {
    let (Some(video), Some(weights)) = (
        lookout::fixtures::require("drives/udacity_test_video.mp4"),
        lookout::fixtures::require("models/yolox_nano.safetensors"),
    ) else {
        return;
    };
    let Some(xvfb) = crate::sink::Xvfb::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let jsonl = dir.path().join("run.jsonl");
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
        .env("LOOKOUT_OFFLINE", "1")
        .env("DISPLAY", &xvfb.display)
        .args([
            "run",
            "--show",
            "--pace",
            "realtime",
            "--imgsz",
            "416",
            "--weights",
        ])
        .arg(&weights)
        .arg("--source")
        .arg(&video)
        .arg("--jsonl")
        .arg(&jsonl)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let lines = loop {
        let text = std::fs::read_to_string(&jsonl).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= 4 {
            break lines;
        }
        assert!(
            started.elapsed().as_secs() < 90,
            "the run showed fewer than 4 frames in 90 s"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before showing 4 frames"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let shot = crate::sink::screenshot_of(&xvfb.display, &dir.path().join("screen.png"));
    let _ = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(
        status.success() || status.code() == Some(3),
        "exit {status:?}"
    );

    // The window's content is the only non-black area of the root window: its top-left is
    // the frame's origin.
    let mut origin = (u32::MAX, u32::MAX);
    for (x, y, p) in shot.enumerate_pixels() {
        if p.0.iter().any(|&c| c > 30) {
            origin = (origin.0.min(x), origin.1.min(y));
        }
    }
    // A tracked vehicle is drawn in its track's colour, an untracked one in the group's.
    let colour_of = |d: &serde_json::Value| match d["track_id"].as_u64() {
        Some(id) => lookout::render::track_colour(id),
        None => lookout::render::group_colour(lookout::types::ClassGroup::Vehicle),
    };
    let vehicles: Vec<serde_json::Value> = lines
        .iter()
        .rev()
        .take(4)
        .flat_map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            v["detections"].as_array().unwrap().clone()
        })
        .filter(|d| d["group"] == "vehicle")
        .collect();
    let colours: Vec<image::Rgb<u8>> = vehicles.iter().map(colour_of).collect();
    let box_pixels = shot.pixels().filter(|p| colours.contains(p)).count();
    assert!(
        box_pixels > 300,
        "only {box_pixels} pixels in the vehicles' colours on screen"
    );
    // One of the latest frames' vehicle boxes is drawn where the JSONL places it.
    let drawn_where_detected = vehicles.iter().any(|d| {
        let colour = colour_of(d);
        let b: Vec<f64> = d["box_xyxy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let (ox, oy) = (origin.0 as f64, origin.1 as f64);
        crate::sink::colour_near(&shot, b[0] + ox + 1.0, (b[1] + b[3]) / 2.0 + oy, colour)
            && crate::sink::colour_near(&shot, b[2] + ox - 2.0, (b[1] + b[3]) / 2.0 + oy, colour)
    });
    assert!(
        drawn_where_detected,
        "no vehicle box on screen where the last frames' detections are"
    );
}
