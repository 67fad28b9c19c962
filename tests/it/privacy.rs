//! `--privacy` (issue 18) through the real binary: on the fixtures' street images every
//! person the detector finds at conf ≥ 0.3 is covered in the frames a drive recording keeps,
//! and the drive says it is anonymised.

use std::path::Path;

use image::RgbImage;
use lookout::fixtures::require;
use lookout::types::BoxXyxy;
use serde_json::Value;

use crate::common::{lookout, succeed};

/// Mean absolute difference between horizontal neighbours inside `b`: the detail left.
fn detail(image: &RgbImage, b: &BoxXyxy) -> f64 {
    let (x1, y1) = (b.x1.max(0.0) as u32, b.y1.max(0.0) as u32);
    let x2 = (b.x2 as u32).min(image.width() - 1);
    let y2 = (b.y2 as u32).min(image.height());
    let (mut sum, mut n) = (0.0, 0.0);
    for y in y1..y2 {
        for x in x1..x2 {
            let (p, q) = (image.get_pixel(x, y).0, image.get_pixel(x + 1, y).0);
            sum += (0..3)
                .map(|c| (p[c] as f64 - q[c] as f64).abs())
                .sum::<f64>()
                / 3.0;
            n += 1.0;
        }
    }
    sum / n
}

/// The boxes of the people of a JSON-lines record at score ≥ 0.3.
fn people(record: &Value) -> Vec<BoxXyxy> {
    record["detections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["class"] == "person" && d["score"].as_f64().unwrap() >= 0.3)
        .map(|d| {
            let b: Vec<f32> = d["box_xyxy"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
                .collect();
            BoxXyxy::new(b[0], b[1], b[2], b[3])
        })
        .collect()
}

fn run(image: &Path, weights: &Path, extra: &[&str], out: &Path) -> Vec<Value> {
    let jsonl = out.join("run.jsonl");
    let mut cmd = lookout();
    cmd.args(["run", "--headless", "--conf", "0.3", "--weights"])
        .arg(weights)
        .arg("--source")
        .arg(image)
        .arg("--jsonl")
        .arg(&jsonl)
        .args(extra);
    succeed(cmd);
    std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_person_is_covered_in_a_private_recording() {
    let (Some(bus), Some(zidane), Some(weights)) = (
        require("images/bus.jpg"),
        require("images/zidane.jpg"),
        require("models/yolox_nano.safetensors"),
    ) else {
        return;
    };
    for method in ["blur", "pixelate"] {
        for image in [&bus, &zidane] {
            let dir = tempfile::tempdir().unwrap();
            let reference = run(image, &weights, &["--tracker", "none"], dir.path());
            let drive = dir.path().join("drive");
            let private = dir.path().join("p");
            std::fs::create_dir(&private).unwrap();
            run(
                image,
                &weights,
                &[
                    "--privacy",
                    method,
                    "--record",
                    drive.to_str().unwrap(),
                    "--record-format",
                    "png",
                ],
                &private,
            );
            let original = lookout::imageio::read_rgb(image).unwrap();
            let frame_file = std::fs::read_dir(drive.join("frames"))
                .unwrap()
                .next()
                .expect("one recorded frame")
                .unwrap()
                .path();
            let written = image::open(&frame_file).unwrap().to_rgb8();
            let people = people(&reference[0]);
            assert!(!people.is_empty(), "{}: no person found", image.display());
            for b in &people {
                let (before, after) = (detail(&original, b), detail(&written, b));
                println!(
                    "{method} {}: person {b:?}: detail {before:.1} -> {after:.1}",
                    image.file_name().unwrap().to_string_lossy()
                );
                assert!(
                    after < 0.35 * before,
                    "{method} {}: the person at {b:?} is not covered (detail {before:.1} -> {after:.1})",
                    image.display()
                );
            }
            let manifest = std::fs::read_to_string(drive.join("drive.toml")).unwrap();
            assert!(
                manifest.contains("[privacy]")
                    && manifest.contains(&format!("method = \"{method}\"")),
                "{manifest}"
            );
        }
    }
}

#[test]
fn privacy_without_a_tracker_is_refused_before_any_work() {
    let out = lookout()
        .args([
            "run",
            "--source",
            "synthetic:64x48",
            "--headless",
            "--privacy",
            "blur",
            "--tracker",
            "none",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--privacy needs a tracker"), "{err}");
}

/// `record --privacy` runs the detector and tracker before anything is written: the drive
/// and the MCAP file hold covered people and say how they were anonymised.
#[test]
fn record_with_privacy_writes_covered_frames_and_says_so() {
    let (Some(bus), Some(weights)) = (
        require("images/bus.jpg"),
        require("models/yolox_nano.safetensors"),
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let reference = run(&bus, &weights, &["--tracker", "none"], dir.path());
    let person = people(&reference[0])[0];
    let original = lookout::imageio::read_rgb(&bus).unwrap();
    let drive = dir.path().join("drive");
    let mcap = dir.path().join("private.mcap");
    for (format, out) in [("drive", &drive), ("mcap", &mcap)] {
        let mut cmd = lookout();
        cmd.args(["record", "--privacy", "blur", "--frame-format", "png"])
            .args(["--format", format, "--weights"])
            .arg(&weights)
            .arg("--source")
            .arg(&bus)
            .arg("--out")
            .arg(out);
        succeed(cmd);
    }
    let frame = std::fs::read_dir(drive.join("frames"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let written = image::open(&frame).unwrap().to_rgb8();
    let (before, after) = (detail(&original, &person), detail(&written, &person));
    assert!(after < 0.35 * before, "detail {before:.1} -> {after:.1}");
    let manifest = std::fs::read_to_string(drive.join("drive.toml")).unwrap();
    assert!(manifest.contains("method = \"blur\""), "{manifest}");
    // A replay of the drive, and of the MCAP file, reports its detections as on an
    // anonymised input.
    let metrics_path = dir.path().join("metrics.json");
    for (input, expected) in [
        (&drive, "anonymised: blur of person by yolox-nano"),
        (&mcap, "anonymised: blur classes=person"),
    ] {
        let mut cmd = lookout();
        cmd.args(["run", "--headless", "--weights"])
            .arg(&weights)
            .arg("--source")
            .arg(input)
            .arg("--metrics")
            .arg(&metrics_path);
        succeed(cmd);
        let metrics: Value =
            serde_json::from_str(&std::fs::read_to_string(&metrics_path).unwrap()).unwrap();
        let source = metrics["source"].as_str().unwrap();
        assert!(source.contains(expected), "{source}");
    }
    // A killed recording (no summary, no footer: the file cut where its summary starts)
    // still says so on replay; the metadata record is found in its data section.
    let bytes = std::fs::read(&mcap).unwrap();
    let footer = mcap::read::footer(&bytes).unwrap();
    let cut = dir.path().join("killed.mcap");
    std::fs::write(&cut, &bytes[..footer.summary_start as usize]).unwrap();
    std::fs::remove_file(&metrics_path).unwrap();
    let out = lookout()
        .args(["run", "--headless", "--weights"])
        .arg(&weights)
        .arg("--source")
        .arg(&cut)
        .arg("--metrics")
        .arg(&metrics_path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(matches!(out.status.code(), Some(0 | 3)), "{err}");
    let metrics: Value =
        serde_json::from_str(&std::fs::read_to_string(&metrics_path).unwrap()).unwrap();
    let source = metrics["source"].as_str().unwrap();
    assert!(
        source.contains("anonymised: blur classes=person"),
        "{source}"
    );
    assert_eq!(metrics["frames"]["processed"], 1, "{metrics}");
    // The MCAP file's metadata says the same, and its image is the covered frame.
    let summary = mcap::Summary::read(&bytes).unwrap().unwrap();
    let index = &summary.metadata_indexes[0];
    let start = index.offset as usize;
    let record = &bytes[start..start + index.length as usize];
    let text = String::from_utf8_lossy(record);
    assert!(text.contains("blur classes=person"), "{text}");
    let image = mcap::MessageStream::new(&bytes)
        .unwrap()
        .map(Result::unwrap)
        .find(|m| m.channel.topic == "/camera/image")
        .unwrap();
    let image: foxglove::schemas::CompressedImage =
        prost::Message::decode(&image.data[..]).unwrap();
    let stored = image::load_from_memory(&image.data).unwrap().to_rgb8();
    assert!(detail(&stored, &person) < 0.35 * before);
}
