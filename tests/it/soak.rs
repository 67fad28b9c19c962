//! Load and soak: long headless runs on the synthetic source while sampling the child's
//! resident memory (`VmRSS` in `/proc/PID/status`) every 100 ms. Memory must stay flat
//! after warm-up, a lossless run must process every frame, and a live run that cannot
//! keep up must count what it drops. `scripts/soak` runs the long version (10 000 frames,
//! both model families) through the ignored test here and prints peak RSS and growth.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// What one sampled run measured.
struct Soak {
    /// VmRSS samples, KiB, every 100 ms.
    rss_kib: Vec<u64>,
    /// VmHWM (peak RSS) at the last sample, KiB.
    peak_kib: u64,
    metrics: Value,
    wall: Duration,
}

impl Soak {
    /// Lower quartile of the last 20 % of samples over the lower quartile of samples
    /// 10–30 %, minus 1. The quartile rather than the median: each 1280×720 frame in
    /// flight between the stages is 2.7 MiB, ~9 % of this process, so a sample lands on a
    /// step of one or two frames depending on timing (a fast detector leaves more frames
    /// waiting at the sinks); a leak raises the floor under those steps as well.
    fn growth(&self) -> f64 {
        let (warm, end) = self.warm_and_end_kib();
        end as f64 / warm as f64 - 1.0
    }

    /// (warm, end) lower quartiles of RSS, KiB (see [`Soak::growth`]).
    fn warm_and_end_kib(&self) -> (u64, u64) {
        let n = self.rss_kib.len();
        let warm = lower_quartile(&self.rss_kib[n / 10..(n * 3 / 10).max(n / 10 + 1)]);
        let end = lower_quartile(&self.rss_kib[n * 8 / 10..]);
        (warm, end)
    }
}

fn lower_quartile(values: &[u64]) -> u64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v[v.len() / 4]
}

/// A `VmRSS:`-style field of `/proc/PID/status`, KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// `lookout run --headless` on `source` with `weights`, sampling RSS until it exits.
fn sampled_run(source: &str, weights: &Path, imgsz: u32, frames: u64, limit: Duration) -> Soak {
    let tmp = tempfile::tempdir().unwrap();
    let metrics_path = tmp.path().join("m.json");
    let mut child = Command::new(env!("CARGO_BIN_EXE_lookout"))
        .env("LOOKOUT_OFFLINE", "1")
        // A fixed mmap threshold turns off glibc's adaptive one, which after a while may
        // start keeping one freed frame buffer (2.7 MB at 1280x720) on the heap: a bounded
        // step of about 10 % of this small process, not growth. Leaks still show.
        .env("MALLOC_MMAP_THRESHOLD_", "262144")
        .args(["run", "--headless", "--source", source, "--weights"])
        .arg(weights)
        .args(["--imgsz", &imgsz.to_string()])
        .args(["--max-frames", &frames.to_string(), "--metrics"])
        .arg(&metrics_path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (pid, start) = (child.id(), Instant::now());
    let (mut rss_kib, mut peak_kib) = (Vec::new(), 0);
    while child.try_wait().unwrap().is_none() {
        if let Some(rss) = status_kib(pid, "VmRSS:") {
            rss_kib.push(rss);
        }
        peak_kib = status_kib(pid, "VmHWM:").unwrap_or(peak_kib);
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("{source}: {frames} frames did not finish within {limit:?}");
        }
        // Often enough for a run of a second or two (2000 frames at --imgsz 64 take 1.5 s).
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{source}: {stderr}");
    let metrics = serde_json::from_str(&std::fs::read_to_string(&metrics_path).unwrap()).unwrap();
    Soak {
        rss_kib,
        peak_kib,
        metrics,
        wall: start.elapsed(),
    }
}

fn report(what: &str, soak: &Soak) {
    eprintln!(
        "{what}: {} frames in {:.1} s, {} RSS samples, peak RSS (VmHWM) {:.1} MiB, growth after warm-up {:+.2} %",
        soak.metrics["frames"]["processed"],
        soak.wall.as_secs_f64(),
        soak.rss_kib.len(),
        soak.peak_kib as f64 / 1024.0,
        soak.growth() * 100.0
    );
}

/// The flat-memory, lossless soak of `frames` frames of 1280x720 with one model.
fn lossless_soak(weights: &Path, imgsz: u32, frames: u64, limit: Duration) {
    let soak = sampled_run("synthetic:1280x720", weights, imgsz, frames, limit);
    report(&format!("{}", weights.display()), &soak);
    let f = &soak.metrics["frames"];
    assert_eq!(f["in"], frames, "{f}");
    assert_eq!(f["processed"], frames, "lossless: no frame lost: {f}");
    assert_eq!(f["shown"], frames, "{f}");
    assert!(
        soak.rss_kib.len() >= 20,
        "too few RSS samples ({}) to judge growth",
        soak.rss_kib.len()
    );
    // The resolution of the measure is one 1280×720 frame (2.7 MiB, ~9 % of this process):
    // a frame more in flight at the end (seen under CPU contention from the other tests)
    // stays in the frame pool once allocated (bounded by its capacity, not a leak), plus
    // the allocator's small change around it (52 KiB seen). A leak of 1.4 KiB a frame
    // passes that over these 2000 frames; `scripts/soak` (10 000 frames) sees 5× more.
    let (warm, end) = soak.warm_and_end_kib();
    let frame_kib = 1280 * 720 * 3 / 1024;
    assert!(
        soak.growth() < 0.05 || end.saturating_sub(warm) < frame_kib + frame_kib / 10,
        "RSS grew {:.1} % ({} KiB) after warm-up: {:?}",
        soak.growth() * 100.0,
        end.saturating_sub(warm),
        soak.rss_kib
    );
}

/// 2000 frames at full speed (YOLOX-Nano at 64): RSS flat, every frame processed.
#[test]
fn memory_stays_flat_and_no_frame_is_lost_over_2000_frames() {
    let Some(weights) = lookout::fixtures::require("models/yolox_nano.safetensors") else {
        return;
    };
    lossless_soak(&weights, 64, 2000, Duration::from_secs(120));
}

/// A live source faster than the pipeline: drops are counted and every frame accounted for.
#[test]
fn live_overload_counts_its_drops() {
    let Some(weights) = lookout::fixtures::require("models/yolox_nano.safetensors") else {
        return;
    };
    let soak = sampled_run(
        "synthetic:640x360@1000:live",
        &weights,
        128,
        600,
        Duration::from_secs(60),
    );
    let f = &soak.metrics["frames"];
    let count = |v: &Value| v.as_u64().unwrap();
    let d = &f["dropped"];
    assert_eq!(count(&f["in"]), 600, "{f}");
    assert!(
        count(&d["detect"]) > 0,
        "a 1000 fps source must overrun: {f}"
    );
    assert_eq!(
        count(&f["processed"]) + count(&d["capture"]) + count(&d["detect"]),
        count(&f["in"]),
        "in = processed + dropped before detection: {f}"
    );
    assert_eq!(
        count(&f["shown"]) + count(&d["render"]) + count(&d["sink"]),
        count(&f["processed"]),
        "processed = shown + dropped after detection: {f}"
    );
}

/// `scripts/soak`: LOOKOUT_SOAK_FRAMES frames (default 10 000) for each model in
/// LOOKOUT_SOAK_MODELS (fixture paths, comma-separated) at LOOKOUT_SOAK_IMGSZ (default 64).
#[test]
#[ignore]
fn long_soak() {
    let frames = std::env::var("LOOKOUT_SOAK_FRAMES").map_or(10_000, |v| v.parse().unwrap());
    let imgsz = std::env::var("LOOKOUT_SOAK_IMGSZ").map_or(64, |v| v.parse().unwrap());
    let models = std::env::var("LOOKOUT_SOAK_MODELS").unwrap_or_else(|_| {
        "models/yolox_nano.safetensors,models/yolov8n-random.ultralytics.safetensors".into()
    });
    for model in models.split(',') {
        let weights = lookout::fixtures::require(model).expect("soak model fixture");
        lossless_soak(&weights, imgsz, frames, Duration::from_secs(3600));
    }
}
