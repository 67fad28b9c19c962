//! Issue 18, explanation: the score maps peak inside the strongest detection, occluding a
//! detection's box takes most of its score and a far corner almost none, and `lookout
//! explain` writes the score-map and occlusion pictures and their JSON.

use std::path::PathBuf;

use lookout::detect::{Detector, DetectorConfig};
use lookout::explain;
use lookout::types::BoxXyxy;

use crate::common::{lookout, succeed};

const WEIGHTS: &str = "models/yolox_nano.safetensors";

/// YOLOX-Nano with a threshold low enough to measure scores that occlusion lowers.
fn detector() -> Option<Detector> {
    let weights = lookout::fixtures::require(WEIGHTS)?;
    let mut config = DetectorConfig::new(weights);
    config.conf = 0.001;
    Some(Detector::load(&config).unwrap())
}

fn image(name: &str) -> Option<(PathBuf, image::RgbImage)> {
    let path = lookout::fixtures::require(&format!("images/{name}"))?;
    let image = lookout::imageio::read_rgb(&path).unwrap();
    Some((path, image))
}

#[test]
fn the_score_map_peaks_inside_the_strongest_detection() {
    let Some(mut detector) = detector() else {
        return;
    };
    for name in ["bus.jpg", "zidane.jpg"] {
        let Some((_, image)) = image(name) else {
            return;
        };
        let (found, image_from_model) = explain::detect(&mut detector, &image).unwrap();
        let strongest = found
            .iter()
            .max_by(|a, b| a.score.total_cmp(&b.score))
            .expect("detections");
        let all = vec![true; detector.classes().len()];
        let maps = detector.score_maps(&all);
        let peak = maps
            .levels
            .iter()
            .flat_map(|l| l.scores.iter().copied())
            .fold(0f32, f32::max);
        // The map is the output the detections came from: its peak is the best score.
        assert!(
            (peak - strongest.score).abs() < 1e-6,
            "{name}: {peak} vs {}",
            strongest.score
        );
        let heat = explain::score_heat(&maps, &image_from_model, 4);
        let (x, y) = heat.argmax();
        let b = &strongest.box_in_image;
        assert!(
            (b.x1..=b.x2).contains(&(x as f32)) && (b.y1..=b.y2).contains(&(y as f32)),
            "{name}: the heat peaks at ({x}, {y}), outside {} {b:?}",
            strongest.class
        );
    }
}

#[test]
fn occluding_a_box_takes_most_of_its_score_and_a_far_corner_almost_none() {
    let Some(mut detector) = detector() else {
        return;
    };
    let Some((_, image)) = image("zidane.jpg") else {
        return;
    };
    let (found, _) = explain::detect(&mut detector, &image).unwrap();
    let target = found
        .iter()
        .max_by(|a, b| a.score.total_cmp(&b.score))
        .unwrap()
        .clone();
    let base = explain::matching_score(&found, &target);
    let score_with = |rect: BoxXyxy, detector: &mut Detector| {
        let (found, _) = explain::detect(detector, &explain::occluded(&image, &rect)).unwrap();
        explain::matching_score(&found, &target)
    };
    let on_box = score_with(target.box_in_image, &mut detector);
    assert!(on_box < base / 2.0, "occluded box: {on_box} of {base}");
    // The corner farthest from the box's centre, 96 px square.
    let (w, h) = (image.width() as f32, image.height() as f32);
    let b = &target.box_in_image;
    let far_x = if (b.x1 + b.x2) / 2.0 < w / 2.0 {
        w - 96.0
    } else {
        0.0
    };
    let far_y = if (b.y1 + b.y2) / 2.0 < h / 2.0 {
        h - 96.0
    } else {
        0.0
    };
    let corner = score_with(
        BoxXyxy::new(far_x, far_y, far_x + 96.0, far_y + 96.0),
        &mut detector,
    );
    assert!(
        (base - corner).abs() < 0.05 * base,
        "far corner: {corner} of {base}"
    );
}

#[test]
fn lookout_explain_writes_the_maps_and_their_json() {
    let (Some(weights), Some((bus, _))) = (lookout::fixtures::require(WEIGHTS), image("bus.jpg"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("heat.png");
    let mut cmd = lookout();
    cmd.arg("explain")
        .arg(&bus)
        .arg("--weights")
        .arg(weights)
        .arg("--out")
        .arg(&out)
        .args([
            "--class",
            "person",
            "--detection",
            "0",
            "--patch",
            "270",
            "--stride",
            "270",
        ]);
    let run = succeed(cmd);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("0: person"), "{stderr}");
    let picture = image::open(&out).unwrap();
    assert_eq!((picture.width(), picture.height()), (810, 1080));
    let occlusion = image::open(dir.path().join("heat-occlusion.png")).unwrap();
    assert_eq!(occlusion.width(), 810);
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("heat.json")).unwrap())
            .unwrap();
    assert_eq!(json["classes_mapped"], serde_json::json!(["person"]));
    assert!(json["detections"]
        .as_array()
        .unwrap()
        .iter()
        .all(|d| d["class"] == "person"));
    assert_eq!(json["score_levels"].as_array().unwrap().len(), 3);
    let drops = json["occlusion"]["map"]["values"].as_array().unwrap();
    assert!(drops
        .iter()
        .all(|v| (0.0..=1.0).contains(&v.as_f64().unwrap())));
    assert!(
        drops.iter().any(|v| v.as_f64().unwrap() > 0.1),
        "some patch matters"
    );
}

/// Review of #18: `--class` outside the default `--classes` (a tie is "other") found no
/// detection to explain.
#[test]
fn explain_class_explains_a_class_outside_the_default_classes() {
    let (Some(weights), Some((zidane, _))) =
        (lookout::fixtures::require(WEIGHTS), image("zidane.jpg"))
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = lookout();
    cmd.arg("explain")
        .arg(&zidane)
        .arg("--weights")
        .arg(weights)
        .arg("--out")
        .arg(dir.path().join("tie.png"))
        .args([
            "--class",
            "tie",
            "--detection",
            "0",
            "--patch",
            "640",
            "--stride",
            "640",
        ]);
    let run = succeed(cmd);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("0: tie"), "{stderr}");
}
