//! `lookout detect IMAGE...`: detections for still images, as text or JSON lines.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::args::DetectorArgs;
use crate::calib::undistort::Undistort;
use crate::detect::Detector;
use crate::pipeline::{Captured, DetectStage, Stage};
use crate::ranging::RangingStage;
use crate::render::Overlay;
use crate::types::{
    mono_now_ns, wall_now_ns, DetectTimings, DetectedFrame, Detection, Frame, FrameStamps,
};

#[derive(Debug, clap::Args)]
pub struct DetectArgs {
    /// Images to run on (JPEG, PNG).
    #[arg(required = true, value_name = "IMAGE")]
    pub images: Vec<PathBuf>,

    #[command(flatten)]
    pub detector: DetectorArgs,

    /// Print one JSON object per image and line instead of a summary line.
    #[arg(long)]
    pub json: bool,

    /// Write annotated copies of the images into this folder.
    #[arg(long, value_name = "DIR")]
    pub save: Option<PathBuf>,

    /// Camera calibration (lookout TOML, OpenCV or ROS YAML, KITTI calib .txt): adds
    /// distance_m, lateral_m and distance_method to every detection.
    #[arg(long, value_name = "FILE")]
    pub calib: Option<PathBuf>,

    #[command(flatten)]
    pub mounting: super::calib_cmd::MountingOverrideArgs,

    /// Remove lens distortion (needs --calib) before detecting; boxes, distances and saved
    /// images are then in the undistorted image.
    #[arg(long, requires = "calib")]
    pub undistort: bool,
}

/// One image's result, as `--json` prints it.
#[derive(Debug, Serialize)]
pub struct ImageResult<'a> {
    pub image: String,
    pub width: u32,
    pub height: u32,
    pub detections: &'a [Detection],
    pub timing_ms: DetectTimings,
}

pub fn run(args: &DetectArgs) -> Result<()> {
    // Every flag and the calibration checked before the model is read.
    args.detector.checked()?;
    check_save_paths(args)?;
    let calibration = match &args.calib {
        Some(path) => Some(args.mounting.load(path)?),
        None => None,
    };
    if let Some(dir) = &args.save {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create --save folder {}", dir.display()))?;
    }
    args.detector.apply_threads()?;
    let config = args.detector.to_config()?;
    let mut stage = DetectStage::new(Detector::load(&config)?);
    if let (Some(cal), true) = (&calibration, args.undistort) {
        stage = stage.with_undistort(Undistort::new(cal.clone()));
    }
    let mut overlay = Overlay::default();
    // A bad image is reported and the others still run (issue 12 item 6); the exit
    // status says that some failed.
    let mut failed = 0usize;
    for (seq, path) in args.images.iter().enumerate() {
        let one = detect_one(
            args,
            &mut stage,
            calibration.as_ref(),
            &mut overlay,
            seq,
            path,
        );
        match one {
            // One image: its error is the command's.
            Err(e) if args.images.len() == 1 => return Err(e),
            Err(e) => {
                failed += 1;
                eprintln!("error: {}", super::one_line(&e));
            }
            Ok(()) => {}
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} images failed (each reported above); the others were processed",
            args.images.len()
        );
    }
    Ok(())
}

/// Where `--save` writes the annotated copy of `image`.
fn saved_path(dir: &Path, image: &Path) -> PathBuf {
    dir.join(Path::new(&display_name(image)).with_extension("jpg"))
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// `--save` may neither overwrite an input image (or the weights or calibration) nor save
/// two images under one name (issue 12 item 3).
fn check_save_paths(args: &DetectArgs) -> Result<()> {
    use super::paths::{check_distinct, NamedPath};
    let Some(dir) = &args.save else {
        return Ok(());
    };
    let mut inputs: Vec<NamedPath> = args
        .images
        .iter()
        .map(|image| NamedPath::new("IMAGE", image))
        .collect();
    inputs.extend(args.calib.iter().map(|p| NamedPath::new("--calib", p)));
    inputs.extend(
        args.detector
            .weights
            .iter()
            .map(|p| NamedPath::new("--weights", p)),
    );
    let outputs: Vec<NamedPath> = args
        .images
        .iter()
        .map(|image| {
            NamedPath::new(
                format!("--save (for {})", image.display()),
                saved_path(dir, image),
            )
        })
        .collect();
    check_distinct(&inputs, &outputs)
}

/// One image through the detector, printed and, with `--save`, written.
fn detect_one(
    args: &DetectArgs,
    stage: &mut DetectStage,
    calibration: Option<&crate::calib::Calibration>,
    overlay: &mut Overlay,
    seq: usize,
    path: &Path,
) -> Result<()> {
    let image = read_rgb(path)?;
    let (w, h) = image.dimensions();
    // The same steps as `run`'s detect stage; ranging afresh for every image.
    let mut ranging = calibration.map(|cal| {
        RangingStage::new(if args.undistort {
            cal.without_distortion()
        } else {
            cal.clone()
        })
    });
    let captured = Captured {
        frame: Frame {
            seq: seq as u64,
            capture_mono_ns: mono_now_ns(),
            capture_wall_ns: wall_now_ns(),
            pts_ns: None,
            image,
        },
        stamps: FrameStamps::default(),
    };
    let detected = stage
        .process(captured)
        .and_then(|d| match &mut ranging {
            Some(r) => r.process(d),
            None => Ok(d),
        })
        .with_context(|| format!("image {}", path.display()))?;
    let DetectedFrame {
        frame,
        detections,
        timings,
        ..
    } = detected;
    let detections = &detections;
    let name = display_name(path);
    if args.json {
        let result = ImageResult {
            image: path.display().to_string(),
            width: w,
            height: h,
            detections,
            timing_ms: timings,
        };
        println!("{}", serde_json::to_string(&result)?);
    } else {
        println!("{}", summary_line(&name, w, h, detections, &timings));
    }
    if let Some(dir) = &args.save {
        // The frame is not needed after this: draw on it, no copy.
        let mut annotated = frame.image;
        overlay.draw(&mut annotated, detections);
        let out = saved_path(dir, path);
        annotated
            .save(&out)
            .with_context(|| format!("cannot write annotated image {}", out.display()))?;
    }
    Ok(())
}

/// `bus.jpg 810x1080: 3 person, 1 bus — 41.2 ms (pre 3.1, infer 36.0, post 2.1)`.
pub fn summary_line(
    name: &str,
    w: u32,
    h: u32,
    detections: &[Detection],
    t: &DetectTimings,
) -> String {
    let mut counts: Vec<(usize, &str, usize)> = Vec::new();
    for d in detections {
        match counts.iter_mut().find(|(id, _, _)| *id == d.class_id) {
            Some(entry) => entry.2 += 1,
            None => counts.push((d.class_id, &d.class, 1)),
        }
    }
    counts.sort_by_key(|(id, _, _)| *id);
    let found = if counts.is_empty() {
        "no detections".to_string()
    } else {
        counts
            .iter()
            .map(|(_, class, n)| format!("{n} {class}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "{name} {w}x{h}: {found} — {:.1} ms (pre {:.1}, infer {:.1}, post {:.1})",
        t.total(),
        t.preprocess,
        t.inference,
        t.postprocess
    )
}

/// Decodes an image to RGB8 as the reference pipelines do (see [`crate::imageio`]).
pub fn read_rgb(path: &Path) -> Result<image::RgbImage> {
    Ok(crate::imageio::read_rgb(path)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BoxXyxy, ClassGroup};

    #[test]
    fn summary_counts_by_class_in_class_order() {
        let d = |id: usize, class: &str| Detection {
            class_id: id,
            class: class.into(),
            group: ClassGroup::Other,
            score: 0.5,
            box_in_image: BoxXyxy::new(0.0, 0.0, 1.0, 1.0),
            range: None,
            track_id: None,
            track_age_s: None,
        };
        let t = DetectTimings {
            preprocess: 3.1,
            inference: 36.0,
            postprocess: 2.1,
            track: 0.0,
        };
        let line = summary_line(
            "bus.jpg",
            810,
            1080,
            &[d(5, "bus"), d(0, "person"), d(0, "person")],
            &t,
        );
        assert_eq!(
            line,
            "bus.jpg 810x1080: 2 person, 1 bus — 41.2 ms (pre 3.1, infer 36.0, post 2.1)"
        );
    }
}
