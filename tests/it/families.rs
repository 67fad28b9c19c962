//! YOLO11 and YOLO26 through the binary: both checkpoint formats, YOLO26's end-to-end
//! selection, `--explain`, and checkpoints lookout does not run.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use lookout::fixtures::require;

use crate::common::{lookout, succeed};

fn detections(weights: &Path, image: &Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let out = succeed(
        lookout()
            .args(["detect", "--json", "--classes", "all", "--weights"])
            .arg(weights)
            .arg(image)
            .args(extra),
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    line["detections"].as_array().unwrap().clone()
}

fn boxes_close(a: &serde_json::Value, b: &serde_json::Value, tol: f64) -> bool {
    let xyxy = |d: &serde_json::Value| -> Vec<f64> {
        d["box_xyxy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect()
    };
    a["class_id"] == b["class_id"]
        && xyxy(a)
            .iter()
            .zip(xyxy(b))
            .all(|(p, q)| (p - q).abs() <= tol)
}

/// The ultralytics `.pt` (float16) and the safetensors (float32) of the same random model
/// give the same detections (boxes within the f16 rounding of the weights), for YOLO11
/// (NMS) and YOLO26 (top-k); YOLO26 keeps `--max-det` ranked detections, best first.
#[test]
fn yolo11_and_yolo26_detect_alike_from_pt_and_safetensors() {
    let Some(image) = require("images/dog.jpg") else {
        return;
    };
    for family in ["yolo11n", "yolo26n"] {
        let (Some(st), Some(pt)) = (
            require(&format!("models/{family}-random.ultralytics.safetensors")),
            require(&format!("models/{family}-random.pt")),
        ) else {
            return;
        };
        let from_st = detections(&st, &image, &["--conf", "0.6"]);
        let from_pt = detections(&pt, &image, &["--conf", "0.6"]);
        assert!(from_st.len() >= 3, "{family}: {} detections", from_st.len());
        // Near the threshold (or YOLO26's 300th place) an f16 weight may tip a box in or
        // out: compare those clearly above the lowest score of either list.
        let lowest = |ds: &[serde_json::Value]| {
            ds.iter()
                .map(|d| d["score"].as_f64().unwrap())
                .fold(f64::INFINITY, f64::min)
        };
        let floor = lowest(&from_st).max(lowest(&from_pt)) + 0.01;
        let confident: Vec<_> = from_st
            .iter()
            .filter(|d| d["score"].as_f64().unwrap() > floor)
            .collect();
        assert!(!confident.is_empty(), "{family}");
        for d in confident {
            assert!(
                from_pt.iter().any(|p| boxes_close(d, p, 0.5)),
                "{family}: {d} not found from the .pt"
            );
        }
    }
    let Some(st) = require("models/yolo26n-random.ultralytics.safetensors") else {
        return;
    };
    let all = detections(&st, &image, &["--conf", "0"]);
    assert_eq!(all.len(), 300, "YOLO26 keeps max_det (300) without NMS");
    let five = detections(&st, &image, &["--conf", "0", "--max-det", "5"]);
    assert_eq!(five.as_slice(), &all[..5]);
    let scores: Vec<f64> = all.iter().map(|d| d["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first");
}

/// `--iou` does nothing for YOLO26 (no NMS): given, a warning says so and the detections
/// are the same; YOLO11 (NMS) gets no such warning.
#[test]
fn iou_for_an_end_to_end_model_is_warned_about() {
    let Some(image) = require("images/dog.jpg") else {
        return;
    };
    for (family, ignored) in [("yolo26n", true), ("yolo11n", false)] {
        let Some(st) = require(&format!("models/{family}-random.ultralytics.safetensors")) else {
            return;
        };
        let out = succeed(
            lookout()
                .args(["detect", "--json", "--classes", "all", "--conf", "0.5"])
                .args(["--iou", "0.1", "--weights"])
                .arg(&st)
                .arg(&image),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        let warned = err.contains("--iou 0.1 has no effect") && err.contains(family);
        assert_eq!(warned, ignored, "{family}: {err}");
        if ignored {
            let with: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let without = detections(&st, &image, &["--conf", "0.5"]);
            let with = with["detections"].as_array().unwrap();
            assert!(
                !with.is_empty() && with == &without,
                "{family}: --iou changed them"
            );
        }
    }
}

/// `lookout explain` reads YOLO11's and YOLO26's score maps like the other families'.
#[test]
fn explain_draws_yolo11_and_yolo26_score_maps() {
    let Some(image) = require("images/dog.jpg") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for family in ["yolo11n", "yolo26n"] {
        let Some(weights) = require(&format!("models/{family}-random.ultralytics.safetensors"))
        else {
            return;
        };
        let out = dir.path().join(format!("{family}.png"));
        succeed(
            lookout()
                .args(["explain", "--classes", "all", "--weights"])
                .arg(&weights)
                .arg(&image)
                .arg("--out")
                .arg(&out),
        );
        let heat = image::open(&out).unwrap().to_rgb8();
        assert_eq!(heat.dimensions(), (768, 576), "{family}");
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(out.with_extension("json")).unwrap()).unwrap();
        // The score map is read from the output the detections came from: its peak is
        // the best detection's score (every class reported).
        let peak = json["score_levels"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|l| l["scores"].as_array().unwrap())
            .map(|v| v.as_f64().unwrap())
            .fold(0f64, f64::max);
        let best = json["detections"][0]["score"].as_f64().unwrap();
        assert!(
            (peak - best).abs() < 1e-5,
            "{family}: peak {peak} vs best {best}"
        );
    }
}

fn write_safetensors(path: &Path, tensors: &HashMap<String, Tensor>) {
    candle_core::safetensors::save(tensors, path).unwrap();
}

fn detect_error(weights: &Path) -> String {
    let image = require("images/dog.jpg").unwrap();
    let out = lookout()
        .args(["detect", "--weights"])
        .arg(weights)
        .arg(&image)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A segmentation checkpoint and a YOLO26 without its one-to-one head are named as what
/// they are, with what lookout runs — not mistaken for a detector with a shape error.
#[test]
fn unsupported_checkpoints_say_what_they_are() {
    let (Some(v11), Some(v26)) = (
        require("models/yolo11n-random.ultralytics.safetensors"),
        require("models/yolo26n-random.ultralytics.safetensors"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut seg = candle_core::safetensors::load(&v11, &Device::Cpu).unwrap();
    let proto = Tensor::zeros((64, 64, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
    seg.insert("model.23.proto.cv1.conv.weight".into(), proto);
    let seg_path = dir.path().join("yolo11n-seg.safetensors");
    write_safetensors(&seg_path, &seg);
    let err = detect_error(&seg_path);
    assert!(
        err.contains("YOLO11 segmentation checkpoint") && err.contains("YOLO26"),
        "{err}"
    );

    let mut no_one2one = candle_core::safetensors::load(&v26, &Device::Cpu).unwrap();
    no_one2one.retain(|name, _| !name.contains("one2one"));
    let path = dir.path().join("yolo26n-one2many.safetensors");
    write_safetensors(&path, &no_one2one);
    let err = detect_error(&path);
    assert!(err.contains("without its one-to-one head"), "{err}");
}
