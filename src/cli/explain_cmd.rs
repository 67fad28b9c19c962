//! `lookout explain IMAGE --out heat.png`: where the detector's scores are high on an image
//! (score maps of the same forward pass as its detections), and with `--detection K` which
//! pixels that detection depends on (occlusion sensitivity), as PNGs and one JSON file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Serialize;

use super::args::DetectorArgs;
use crate::detect::{Detector, ScoreMaps};
use crate::explain::{self, HeatMap, Occlusion};
use crate::types::Detection;

/// Scores below this are still measured during occlusion (a detection that falls under
/// `--conf` when occluded has lost most of its score, not all of it).
const OCCLUSION_CONF: f32 = 0.001;

#[derive(Debug, clap::Args)]
pub struct ExplainArgs {
    /// The image (JPEG, PNG).
    #[arg(value_name = "IMAGE")]
    pub image: PathBuf,

    #[command(flatten)]
    pub detector: DetectorArgs,

    /// The score-map picture (PNG); the JSON goes beside it (`.json`), the occlusion map of
    /// --detection too (`-occlusion.png`).
    #[arg(long, value_name = "FILE.png")]
    pub out: PathBuf,

    /// The class whose scores are mapped (a name, group or id, as --classes). Default: the
    /// classes --classes reports.
    #[arg(long, value_name = "CLASS")]
    pub class: Option<String>,

    /// Also map which pixels detection K depends on (K as listed, 0 = the highest score):
    /// occlusion sensitivity.
    #[arg(long, value_name = "K")]
    pub detection: Option<usize>,

    /// Side of the grey occluding square, image pixels.
    #[arg(long, default_value_t = 64, value_name = "PX")]
    pub patch: u32,

    /// Step between occluding squares, image pixels.
    #[arg(long, default_value_t = 32, value_name = "PX")]
    pub stride: u32,
}

/// What the JSON file holds.
#[derive(Serialize)]
struct Report<'a> {
    image: String,
    model: &'a str,
    classes_mapped: Vec<&'a str>,
    detections: &'a [Detection],
    /// The score maps as the network gave them, level by level.
    score_levels: Vec<Level<'a>>,
    /// Sampled over the image (what the PNG shows).
    score_heat: &'a HeatMap,
    #[serde(skip_serializing_if = "Option::is_none")]
    occlusion: Option<OcclusionReport<'a>>,
}

#[derive(Serialize)]
struct Level<'a> {
    stride: usize,
    grid_w: usize,
    grid_h: usize,
    scores: &'a [f32],
}

#[derive(Serialize)]
struct OcclusionReport<'a> {
    detection: usize,
    #[serde(flatten)]
    map: &'a Occlusion,
}

pub fn run(args: &ExplainArgs) -> Result<()> {
    anyhow::ensure!(
        args.out.extension().and_then(|e| e.to_str()) == Some("png"),
        "--out {} must be a .png file",
        args.out.display()
    );
    anyhow::ensure!(
        args.patch > 0 && args.stride > 0,
        "--patch and --stride must be positive"
    );
    let checked = args.detector.checked()?;
    let image = crate::imageio::read_rgb(&args.image)?;
    args.detector.apply_threads()?;
    let mut config = args.detector.to_config()?;
    let shown_conf = checked.conf;
    config.conf = OCCLUSION_CONF;
    if let Some(class) = &args.class {
        // The detections explained are of the mapped class, whatever --classes says.
        config.classes = crate::detect::classes::ClassFilter::parse(class)
            .map_err(|e| anyhow::anyhow!("--class: {e}"))?;
    }
    let mut detector = Detector::load(&config)?;
    let mapped = match &args.class {
        Some(class) => crate::detect::classes::ClassFilter::parse(class)
            .and_then(|f| f.mask(detector.classes()))
            .map_err(|e| anyhow::anyhow!("--class: {e}"))?,
        None => config
            .classes
            .mask(detector.classes())
            .map_err(|e| anyhow::anyhow!(e))?,
    };
    anyhow::ensure!(
        mapped.iter().any(|&m| m),
        "--class {} names no class of this model",
        args.class.as_deref().unwrap_or("")
    );
    let (found, image_from_model) = explain::detect(&mut detector, &image)?;
    let maps: ScoreMaps = detector.score_maps(&mapped);
    let detections: Vec<Detection> = found
        .into_iter()
        .filter(|d| d.score > shown_conf && mapped[d.class_id])
        .collect();
    for (k, d) in detections.iter().enumerate() {
        let b = &d.box_in_image;
        eprintln!(
            "{k}: {} {:.2} [{:.0}, {:.0}, {:.0}, {:.0}]",
            d.class, d.score, b.x1, b.y1, b.x2, b.y2
        );
    }
    let heat = explain::score_heat(&maps, &image_from_model, 4);
    let mut picture = image.clone();
    explain::draw_heat(&mut picture, &heat, 0.65, "score");
    save(&picture, &args.out)?;
    let occlusion = match args.detection {
        Some(k) => {
            let target = detections.get(k).with_context(|| match detections.len() {
                0 => format!("--detection {k}: the image has no detection of the mapped classes above --conf"),
                n => format!("--detection {k}: the image has {n} detections (0..{})", n - 1),
            })?;
            let bar = indicatif::ProgressBar::new(0);
            let map = explain::occlusion(
                &mut detector,
                &image,
                target,
                args.patch,
                args.stride,
                |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
            )?;
            bar.finish_and_clear();
            let mut picture = image.clone();
            explain::draw_heat(&mut picture, &map.map, 0.7, "score drop");
            let b = &target.box_in_image;
            crate::render::draw_box(&mut picture, b, image::Rgb([255, 255, 255]), 2);
            let path = sibling(&args.out, "-occlusion.png");
            save(&picture, &path)?;
            eprintln!(
                "occlusion of detection {k} ({} {:.2}): {}",
                target.class,
                target.score,
                path.display()
            );
            Some((k, map))
        }
        None => None,
    };
    let report = Report {
        image: args.image.display().to_string(),
        model: detector.variant(),
        classes_mapped: (0..mapped.len())
            .filter(|&c| mapped[c])
            .map(|c| detector.classes().name(c))
            .collect(),
        detections: &detections,
        score_levels: maps
            .levels
            .iter()
            .map(|l| Level {
                stride: l.stride,
                grid_w: l.grid_w,
                grid_h: l.grid_h,
                scores: &l.scores,
            })
            .collect(),
        score_heat: &heat,
        occlusion: occlusion
            .as_ref()
            .map(|(k, map)| OcclusionReport { detection: *k, map }),
    };
    let json = sibling(&args.out, ".json");
    std::fs::write(&json, serde_json::to_string(&report)? + "\n")
        .with_context(|| format!("cannot write {}", json.display()))?;
    eprintln!(
        "score map: {}, data: {}",
        args.out.display(),
        json.display()
    );
    Ok(())
}

/// `heat.png` → `heat{suffix}` (`heat.json`, `heat-occlusion.png`).
fn sibling(out: &Path, suffix: &str) -> PathBuf {
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("explain");
    out.with_file_name(format!("{stem}{suffix}"))
}

fn save(image: &image::RgbImage, path: &Path) -> Result<()> {
    image
        .save(path)
        .with_context(|| format!("cannot write {}", path.display()))
}
