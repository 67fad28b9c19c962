//! Integration tests: calib — importers on real-shaped files, bad input, the distance estimator
//! on KITTI ground truth, and time to collision on KITTI tracking sequences.

use lookout::calib::eval::{evaluate, read_kitti_labels, EvalFilter, KittiLabel};
use lookout::calib::{estimate_distance, Calibration, Distortion};
use lookout::track::bytetrack::ByteTracker;
use lookout::track::closing::{ClosingConfig, ClosingSpeeds, DistanceSample};
use lookout::track::{ByteTrackConfig, TrackInput, Tracker};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn repo_file(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn load(relative: &str) -> Calibration {
    let path = repo_file(relative);
    Calibration::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn close(a: f64, b: f64, tolerance: f64) -> bool {
    (a - b).abs() <= tolerance
}

#[test]
fn opencv_filestorage_yaml_imports() {
    let cal = load("tests/data/calib/opencv_calibrate_camera.yml");
    assert_eq!(cal.image_size(), (1920, 1080));
    let i = cal.intrinsics();
    assert!(close(i.fx, 1387.26142578125, 1e-9) && close(i.cy, 543.56591796875, 1e-9));
    match cal.distortion() {
        Distortion::RadialTangential { k1, p2, k3, .. } => {
            assert!(close(k1, 0.11012345678901234, 1e-15));
            assert!(close(p2, -4.567890123456789e-4, 1e-15));
            assert!(close(k3, 0.13456789012345678, 1e-15));
        }
        other => panic!("expected radial-tangential, got {other:?}"),
    }
    assert!(cal.mounting_is_assumed());
    let fisheye = load("tests/data/calib/opencv_fisheye.yaml");
    assert!(
        matches!(fisheye.distortion(), Distortion::Fisheye { k4, .. } if close(k4, -2.3456789012345678e-4, 1e-15))
    );
}

#[test]
fn ros_camera_info_file_and_message_import() {
    let cal = load("tests/data/calib/ros_camera_info.yaml");
    assert_eq!(cal.image_size(), (640, 480));
    assert_eq!(cal.name(), "narrow_stereo");
    assert!(close(cal.intrinsics().fx, 628.1234, 1e-12));
    assert!(
        matches!(cal.distortion(), Distortion::RadialTangential { k1, .. } if close(k1, -0.391234, 1e-12))
    );
    let echo = load("tests/data/calib/ros2_camera_info_echo.yaml");
    assert_eq!(echo.image_size(), (1280, 720));
    assert!(close(echo.intrinsics().cx, 639.5, 1e-12));
    assert!(
        matches!(echo.distortion(), Distortion::Fisheye { k1, .. } if close(k1, 0.0123, 1e-12))
    );
}

#[test]
fn kitti_files_import_with_the_kitti_rig_mounting() {
    let cal = load("tests/data/calib/kitti_calib_cam_to_cam.txt");
    assert_eq!(cal.image_size(), (1242, 375));
    assert!(
        close(cal.intrinsics().fx, 721.5377, 1e-9) && close(cal.intrinsics().cy, 172.854, 1e-9)
    );
    assert_eq!(cal.mounting().height_m, 1.65);
    assert_eq!(cal.mounting().pitch_deg, 0.0);
    // The shipped TOML is the same camera.
    let shipped = load("calibration/kitti-2011_09_26-cam2.toml");
    assert_eq!(shipped.intrinsics(), cal.intrinsics());
    assert!(close(
        shipped.mounting().lateral_offset_m,
        cal.mounting().lateral_offset_m,
        1e-4
    ));
    if let Some(object_calib) = lookout::fixtures::require("kitti/object/calib/000000.txt") {
        let object = Calibration::load(&object_calib).unwrap();
        assert!(close(object.intrinsics().fx, 707.0493, 1e-9));
        assert_eq!(object.image_size(), (1242, 375));
    }
    // Overrides apply to any format.
    let lowered = cal.with_mounting_override(Some(1.2), Some(-1.0)).unwrap();
    assert_eq!(
        (lowered.mounting().height_m, lowered.mounting().pitch_deg),
        (1.2, -1.0)
    );
}

#[test]
fn shipped_webcam_file_loads_scales_and_round_trips_through_toml() {
    let cal = load("calibration/webcam-generic.toml");
    assert_eq!(cal.image_size(), (1280, 720));
    let (hfov, _) = cal.fov_deg();
    assert!((60.0..85.0).contains(&hfov), "{hfov}");
    let full_hd = cal.for_image_size(1920, 1080).unwrap();
    assert!(close(full_hd.intrinsics().fx, 910.0 * 1.5, 1e-9));
    let err = cal.for_image_size(640, 480).unwrap_err().to_string();
    assert!(err.contains("aspect"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("copy.toml");
    std::fs::write(
        &path,
        load("tests/data/calib/opencv_calibrate_camera.yml").to_toml(),
    )
    .unwrap();
    let copy = Calibration::load(&path).unwrap();
    assert_eq!(
        copy.intrinsics(),
        load("tests/data/calib/opencv_calibrate_camera.yml").intrinsics()
    );
}

/// Writes `text` as `name` in a temp dir and returns the load error's message.
fn load_error(name: &str, text: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    match Calibration::load(&path) {
        Ok(cal) => panic!("{name} loaded: {cal:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_calibration_input_names_the_field() {
    let toml = std::fs::read_to_string(repo_file("calibration/webcam-generic.toml")).unwrap();
    let opencv =
        std::fs::read_to_string(repo_file("tests/data/calib/opencv_calibrate_camera.yml")).unwrap();
    let kitti =
        std::fs::read_to_string(repo_file("tests/data/calib/kitti_calib_cam_to_cam.txt")).unwrap();
    let cases = [
        ("a.toml", toml.replace("fx = 910.0\n", ""), "intrinsics.fx"),
        (
            "b.toml",
            toml.replace("fy = 910.0", "fy = -910.0"),
            "intrinsics.fy",
        ),
        (
            "c.toml",
            toml.replace("cx = 640.0", "cx = nan"),
            "intrinsics.cx",
        ),
        (
            "d.toml",
            toml.replace("height_m = 1.3", "height_m = nan"),
            "mounting.height_m",
        ),
        (
            "e.toml",
            toml.replace("version = 1", "version = 2"),
            "unknown version 2",
        ),
        (
            "f.toml",
            toml.replace("k1 = -0.08", "k1 = inf"),
            "distortion.k1",
        ),
        (
            "g.yml",
            opencv.replace("image_height: 1080\n", ""),
            "image_height",
        ),
        (
            "h.yml",
            opencv.replace(
                "1.3872614257812500e+03, 0.,",
                "-1.3872614257812500e+03, 0.,",
            ),
            "intrinsics.fx",
        ),
        (
            "i.yml",
            opencv.replace("camera_matrix", "camera_matrx"),
            "camera_matrix",
        ),
        (
            "j.txt",
            kitti.replace("P_rect_02", "P_rect_09"),
            "P_rect_02",
        ),
        (
            "k.txt",
            kitti.replace(
                "7.215377e+02 0.000000e+00 6.095593e+02 4.485728e+01",
                "7.215377e+02 0.000000e+00 6.095593e+02",
            ),
            "P_rect_02",
        ),
        (
            "l.toml",
            "version = 1\n[image]\nwidth = 640\nheight = 480\n".to_string(),
            "intrinsics",
        ),
    ];
    for (name, text, field) in cases {
        let err = load_error(name, &text);
        assert!(
            err.contains(field) && err.contains(name),
            "{name}: expected `{field}` in: {err}"
        );
    }
    let err = load_error("m.bin", "hello");
    assert!(err.contains("cannot tell its format"), "{err}");
}

const SEQUENCES: [&str; 3] = ["0000", "0005", "0016"];

fn tracking_fixture(sequence: &str) -> Option<(Calibration, Vec<KittiLabel>)> {
    let calib = lookout::fixtures::require("kitti/tracking/calib_2011_09_26_cam2.txt")?;
    let labels = lookout::fixtures::require(&format!("kitti/tracking/label_02/{sequence}.txt"))?;
    Some((
        Calibration::load(&calib).unwrap(),
        read_kitti_labels(&labels).unwrap(),
    ))
}

/// Issue 4: median relative distance error ≤ 12 % on each KITTI tracking sequence (objects
/// ≤ 50 m, truncation ≤ 0.3, occlusion ≤ 1). Prints per-class figures for the report.
#[test]
fn kitti_tracking_distance_error_within_budget() {
    for sequence in SEQUENCES {
        let Some((cal, labels)) = tracking_fixture(sequence) else {
            return;
        };
        let report = evaluate(&cal, &labels, &EvalFilter::default());
        println!("sequence {sequence}:");
        for (class, s) in report
            .per_class
            .iter()
            .chain([(&"overall".to_string(), &report.overall)])
        {
            println!(
                "  {class:<12} n {:>5}  median {:>5.1} %  p90 {:>5.1} %  bias {:>+5.1} %",
                s.count,
                100.0 * s.median_rel_error,
                100.0 * s.p90_rel_error,
                100.0 * s.median_signed_rel_error
            );
        }
        println!(
            "  methods {:?}, no estimate {}",
            report.per_method, report.no_estimate
        );
        assert!(report.overall.count > 400, "{sequence}: {report:?}");
        assert_eq!(report.no_estimate, 0);
        assert!(
            report.overall.median_rel_error <= 0.12,
            "{sequence}: median {:.3}",
            report.overall.median_rel_error
        );
        let json = serde_json::to_value(&report).unwrap();
        for key in ["count", "median_rel_error", "p90_rel_error"] {
            assert!(json["overall"][key].is_number(), "{json}");
        }
        assert!(json["per_class"]["Car"]["median_rel_error"].is_number() || sequence == "0016");
    }
}

#[test]
fn kitti_object_frames_distance() {
    let mut labels = vec![];
    let mut cal = None;
    for frame in ["000000", "000001", "000002"] {
        let (Some(c), Some(l)) = (
            lookout::fixtures::require(&format!("kitti/object/calib/{frame}.txt")),
            lookout::fixtures::require(&format!("kitti/object/label_2/{frame}.txt")),
        ) else {
            return;
        };
        cal = Some(Calibration::load(&c).unwrap());
        labels.extend(read_kitti_labels(&l).unwrap());
    }
    let filter = EvalFilter {
        max_distance_m: 80.0,
        max_occlusion: 3,
        ..EvalFilter::default()
    };
    let report = evaluate(&cal.unwrap(), &labels, &filter);
    println!("object frames: {report:?}");
    // The pedestrian of frame 000000 at z = 8.41 m.
    let pedestrian = estimate_distance(
        &load("tests/data/calib/kitti_calib_cam_to_cam.txt"),
        &lookout::types::BoxXyxy::new(712.40, 143.00, 810.73, 307.92),
        "Pedestrian",
        1242,
        375,
    )
    .unwrap();
    assert!(
        (pedestrian.distance_m - 8.41).abs() / 8.41 < 0.1,
        "{pedestrian:?}"
    );
    assert!(report.overall.median_rel_error < 0.15, "{report:?}");
}

/// KITTI track ids are ground truth: ByteTrack on the ground-truth boxes should follow them, and the TTC from
/// estimated distances should match the TTC of the labels' own z over time.
#[test]
fn kitti_tracking_association_and_ttc() {
    let classes = [
        "Car",
        "Van",
        "Truck",
        "Pedestrian",
        "Person_sitting",
        "Cyclist",
        "Tram",
        "Misc",
    ];
    for sequence in SEQUENCES {
        let Some((cal, labels)) = tracking_fixture(sequence) else {
            return;
        };
        let (image_w, image_h) = cal.image_size();
        let mut by_frame: BTreeMap<u32, Vec<&KittiLabel>> = BTreeMap::new();
        for label in labels.iter().filter(|l| l.track_id >= 0) {
            by_frame.entry(label.frame).or_default().push(label);
        }
        let mut tracker = ByteTracker::new(ByteTrackConfig::default());
        let mut estimated = ClosingSpeeds::new(ClosingConfig::default());
        let mut truth = ClosingSpeeds::new(ClosingConfig::default());
        let mut assigned = Vec::new();
        // Ground-truth track id → (frame last seen, tracker id).
        let mut id_map: BTreeMap<i64, (u32, u64)> = BTreeMap::new();
        let (mut links, mut switches) = (0, 0);
        let mut ttc_errors = vec![];
        for (frame, objects) in &by_frame {
            let time_s = *frame as f64 / 10.0;
            let class_id =
                |l: &KittiLabel| classes.iter().position(|c| *c == l.class).unwrap_or(99);
            let inputs: Vec<TrackInput> = objects
                .iter()
                .map(|l| TrackInput {
                    box_in_image: l.box_in_image,
                    score: 0.9,
                    class_id: class_id(l),
                })
                .collect();
            tracker.update(time_s, &inputs, &mut assigned);
            for (label, out) in objects.iter().zip(&assigned) {
                let Some(out) = out else { continue };
                // Only links between consecutive frames count: after a gap a new track is fine.
                if let Some((seen, previous)) =
                    id_map.insert(label.track_id, (*frame, out.track_id))
                {
                    if seen + 1 == *frame {
                        links += 1;
                        switches += usize::from(previous != out.track_id);
                    }
                }
                let Some(est) =
                    estimate_distance(&cal, &label.box_in_image, &label.class, image_w, image_h)
                else {
                    continue;
                };
                let closing = estimated.observe(
                    time_s,
                    DistanceSample {
                        track_id: out.track_id,
                        nearest_m: est.nearest_m,
                        lateral_m: est.lateral_m,
                    },
                );
                let closing_truth = truth.observe(
                    time_s,
                    DistanceSample {
                        track_id: out.track_id,
                        nearest_m: label.location[2] - label.dimensions[2] / 2.0,
                        lateral_m: label.location[0],
                    },
                );
                if let (Some(ttc), Some(ttc_truth)) = (closing.ttc_s, closing_truth.ttc_s) {
                    if ttc_truth < 8.0 {
                        ttc_errors.push((ttc - ttc_truth).abs() / ttc_truth);
                    }
                }
            }
        }
        ttc_errors.sort_by(f64::total_cmp);
        let median_ttc = ttc_errors
            .get(ttc_errors.len() / 2)
            .copied()
            .unwrap_or(f64::NAN);
        println!(
            "sequence {sequence}: {links} frame-to-frame links, {switches} id switches; \
             {} in-path closing samples, median TTC error {:.1} %",
            ttc_errors.len(),
            100.0 * median_ttc
        );
        assert!(
            (switches as f64) < 0.03 * links as f64,
            "{sequence}: {switches}/{links}"
        );
        if ttc_errors.len() >= 10 {
            assert!(
                median_ttc < 0.35,
                "{sequence}: median TTC error {median_ttc}"
            );
        }
    }
}

/// The real detector and the estimator together: the walking pedestrian of KITTI object
/// frame 000000 (label z = 8.41 m) through `lookout detect --calib`.
#[test]
fn detect_with_calibration_places_the_kitti_pedestrian_within_15_percent() {
    let (Some(image), Some(calib), Some(weights)) = (
        lookout::fixtures::require("kitti/object/image_2/000000.png"),
        lookout::fixtures::require("kitti/object/calib/000000.txt"),
        lookout::fixtures::require("models/yolox_nano.pth"),
    ) else {
        return;
    };
    let out = crate::common::succeed(
        std::process::Command::new(env!("CARGO_BIN_EXE_lookout"))
            .env("LOOKOUT_OFFLINE", "1")
            .args(["detect", "--json", "--classes", "pedestrian", "--weights"])
            .arg(&weights)
            .arg("--calib")
            .arg(&calib)
            .arg(&image),
    );
    let result: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let detections = result["detections"].as_array().unwrap();
    // The labelled pedestrian's box is x 712–811, y 143–308.
    let pedestrian = detections
        .iter()
        .find(|d| {
            let b = d["box_xyxy"].as_array().unwrap();
            let cx = (b[0].as_f64().unwrap() + b[2].as_f64().unwrap()) / 2.0;
            (712.0..811.0).contains(&cx)
        })
        .unwrap_or_else(|| panic!("no pedestrian detected where the label is: {detections:?}"));
    let distance = pedestrian["distance_m"]
        .as_f64()
        .expect("distance_m with --calib");
    let error = (distance - 8.41).abs() / 8.41;
    eprintln!(
        "KITTI 000000 pedestrian: {distance:.2} m ({}), error {:.1} %",
        pedestrian["distance_method"],
        error * 100.0
    );
    assert!(error <= 0.15, "distance {distance} m vs 8.41 m");
    assert!(pedestrian["lateral_m"].is_number());
}

/// `--undistort` detects in the undistorted frame: with a distorting lens the boxes move,
/// and every detection still gets a distance.
#[test]
fn detect_undistort_moves_boxes_and_keeps_distances() {
    let (Some(image), Some(weights)) = (
        lookout::fixtures::require("images/udacity/test1.jpg"),
        lookout::fixtures::require("models/yolox_nano.safetensors"),
    ) else {
        return;
    };
    let run = |undistort: bool| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_lookout"));
        cmd.args(["detect", "--json", "--weights"]).arg(&weights);
        cmd.arg("--calib")
            .arg(repo_file("calibration/webcam-generic.toml"))
            .arg(&image);
        if undistort {
            cmd.arg("--undistort");
        }
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["detections"].clone()
    };
    let (plain, undistorted) = (run(false), run(true));
    let undistorted = undistorted.as_array().unwrap();
    assert!(!undistorted.is_empty());
    assert!(undistorted.iter().all(|d| d["distance_m"].is_number()));
    assert_ne!(&plain, &serde_json::Value::Array(undistorted.clone()));
}
