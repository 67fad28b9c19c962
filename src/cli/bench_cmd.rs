//! `lookout bench`: median / p90 / min of pre-processing, inference and post-processing on
//! a real image, the one command that speed work quotes.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;

use super::args::DetectorArgs;
use super::detect_cmd::read_rgb;
use crate::detect::Detector;
use crate::metrics::SampleSummary;
use crate::pipeline::{Captured, DetectStage, Stage};
use crate::types::{mono_now_ns, wall_now_ns, Frame, FrameStamps};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    pub detector: DetectorArgs,

    /// Image to run on. Default: the fixtures' bus.jpg when present, else a synthetic
    /// 1280×720 image (network time does not depend on content; post-processing does).
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<PathBuf>,

    /// Untimed runs first (caches, thread pool, allocator).
    #[arg(long, default_value_t = 5)]
    pub warmup: usize,

    /// Timed runs.
    #[arg(long, default_value_t = 30)]
    pub runs: usize,

    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,

    /// Then time the CPU executor op by op (median of --runs) and print each op's share
    /// and GFLOP/s.
    #[arg(long)]
    pub ops: bool,
}

#[derive(Debug, Serialize)]
struct BenchReport {
    model: String,
    weights: String,
    image: String,
    imgsz: [usize; 2],
    device: String,
    precision: &'static str,
    threads: usize,
    runs: usize,
    preprocess_ms: SampleSummary,
    inference_ms: SampleSummary,
    postprocess_ms: SampleSummary,
    total_ms: SampleSummary,
    detections: usize,
}

pub fn run(args: &BenchArgs) -> Result<()> {
    anyhow::ensure!(args.runs > 0, "--runs must be at least 1");
    let threads = args.detector.apply_threads()?;
    let config = args.detector.to_config()?;
    let mut stage = DetectStage::new(Detector::load(&config)?);
    let (image, image_name) = bench_image(args)?;
    // The frame is copied before each timed run; only the stage's own steps are timed.
    let frame = |seq| Captured {
        frame: Frame {
            seq,
            capture_mono_ns: mono_now_ns(),
            capture_wall_ns: wall_now_ns(),
            pts_ns: None,
            image: image.clone(),
        },
        stamps: FrameStamps::default(),
    };
    for seq in 0..args.warmup as u64 {
        stage.process(frame(seq))?;
    }
    let (mut pre, mut infer, mut post, mut total) = (vec![], vec![], vec![], vec![]);
    let mut detections = 0;
    for seq in 0..args.runs as u64 {
        let detected = stage.process(frame(seq))?;
        let t = detected.timings;
        detections = detected.detections.len();
        pre.push(t.preprocess);
        infer.push(t.inference);
        post.push(t.postprocess);
        total.push(t.total());
    }
    let detector = stage.detector_mut();
    let summary = |s: &[f64]| SampleSummary::of(s).expect("runs > 0");
    let (iw, ih) = detector.input_size();
    let report = BenchReport {
        model: detector.variant().to_string(),
        weights: config.weights.display().to_string(),
        image: image_name,
        imgsz: [ih, iw],
        device: config.device.to_string(),
        precision: detector.precision(),
        threads,
        runs: args.runs,
        preprocess_ms: summary(&pre),
        inference_ms: summary(&infer),
        postprocess_ms: summary(&post),
        total_ms: summary(&total),
        detections,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_table(&report);
    }
    if args.ops {
        print_ops(detector, &image, args.runs)?;
    }
    Ok(())
}

/// Per-op medians of `runs` timed executor runs, slowest first.
fn print_ops(detector: &mut Detector, image: &image::RgbImage, runs: usize) -> Result<()> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let mut samples: Vec<Vec<f64>> = Vec::new();
    let mut ops = Vec::new();
    for _ in 0..runs {
        let Some(times) = detector.profile_ops(image.as_raw(), w, h)? else {
            println!("(the CPU executor does not run this model here: no per-op times)");
            return Ok(());
        };
        samples.resize(times.len(), Vec::new());
        for (s, t) in samples.iter_mut().zip(&times) {
            s.push(t.ms);
        }
        ops = times;
    }
    let median = |s: &[f64]| SampleSummary::of(s).map_or(0.0, |s| s.median);
    let mut rows: Vec<(String, f64, f64)> = ops
        .iter()
        .zip(&samples)
        .map(|(op, s)| (op.op.clone(), median(s), op.gflop))
        .collect();
    let total_ms: f64 = rows.iter().map(|r| r.1).sum();
    let total_gflop: f64 = rows.iter().map(|r| r.2).sum();
    println!(
        "executor: {} ops, {total_gflop:.2} GFLOP, sum of op medians {total_ms:.2} ms = {:.1} GFLOP/s",
        rows.len(),
        total_gflop / (total_ms / 1e3)
    );
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "{:<40} {:>9} {:>6} {:>9}",
        "op", "median ms", "share", "GFLOP/s"
    );
    for (op, ms, gflop) in rows {
        let rate = if gflop > 0.0 {
            format!("{:.1}", gflop / (ms / 1e3))
        } else {
            "-".into()
        };
        println!(
            "{op:<40} {ms:>9.3} {:>5.1}% {rate:>9}",
            100.0 * ms / total_ms
        );
    }
    Ok(())
}

fn bench_image(args: &BenchArgs) -> Result<(image::RgbImage, String)> {
    let path = args
        .image
        .clone()
        .or_else(|| Some(crate::fixtures::root().join("images/bus.jpg")).filter(|p| p.is_file()));
    match path {
        Some(p) => Ok((
            read_rgb(&p).context("bench image")?,
            p.display().to_string(),
        )),
        None => {
            let img = image::RgbImage::from_fn(1280, 720, |x, y| {
                image::Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
            });
            Ok((img, "synthetic 1280x720".into()))
        }
    }
}

fn print_table(r: &BenchReport) {
    println!(
        "{} ({}) {}x{} on {} {}, {} threads, {} runs, image {}",
        r.model,
        r.weights,
        r.imgsz[1],
        r.imgsz[0],
        r.device,
        r.precision,
        r.threads,
        r.runs,
        r.image
    );
    println!(
        "{:<12} {:>10} {:>10} {:>10}",
        "stage", "median ms", "p90 ms", "min ms"
    );
    for (name, s) in [
        ("preprocess", r.preprocess_ms),
        ("inference", r.inference_ms),
        ("postprocess", r.postprocess_ms),
        ("total", r.total_ms),
    ] {
        println!(
            "{:<12} {:>10.2} {:>10.2} {:>10.2}",
            name, s.median, s.p90, s.min
        );
    }
}
