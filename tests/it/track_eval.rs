//! Tracking metrics and `lookout eval track` against py-motmetrics (CLEAR, identity) and
//! TrackEval (HOTA): `tests/data/track_eval/reference.json`, made by
//! `scripts/track-eval-reference` from the committed predictions and the KITTI tracking
//! fixtures. Every metric must equal the reference within 1e-6.

use std::path::{Path, PathBuf};

use lookout::track_eval::{evaluate, EvalOptions};
use lookout::trackfile;
use serde_json::Value;

use crate::common::{lookout, run_with_deadline, succeed};

const TOLERANCE: f64 = 1e-6;

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/track_eval")
}

fn reference_cases() -> Vec<Value> {
    let path = data_dir().join("reference.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let reference: Value = serde_json::from_str(&text).unwrap();
    reference["cases"].as_array().unwrap().clone()
}

fn uses_fixture(case: &Value) -> bool {
    case["gt"].get("fixture").is_some() || case["pred"].get("fixture").is_some()
}

/// A case's file: in tests/data/track_eval, or a fixture (`None` when absent outside CI).
fn case_file(spec: &Value) -> Option<PathBuf> {
    match spec.get("data") {
        Some(relative) => Some(data_dir().join(relative.as_str().unwrap())),
        None => lookout::fixtures::require(spec["fixture"].as_str().unwrap()),
    }
}

fn options(case: &Value) -> EvalOptions {
    EvalOptions {
        iou_threshold: case["iou"].as_f64().unwrap(),
        classes: case["class_filter"].as_array().map(|names| {
            names
                .iter()
                .map(|n| n.as_str().unwrap().to_string())
                .collect()
        }),
    }
}

/// Asserts that every metric of `expected` is in `actual` and equal within [`TOLERANCE`]
/// (null, a NaN or infinite value, only as null); returns the largest difference.
fn assert_matches(case: &str, expected: &Value, actual: &Value) -> f64 {
    let mut worst = 0.0f64;
    let mut wrong = Vec::new();
    let expected_classes = expected["classes"].as_object().unwrap();
    let actual_classes = actual["classes"].as_object().unwrap();
    let names = |m: &serde_json::Map<String, Value>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(actual_classes),
        names(expected_classes),
        "{case}: classes"
    );
    let parts = std::iter::once((
        "overall".to_string(),
        &expected["overall"],
        &actual["overall"],
    ))
    .chain(
        expected_classes
            .iter()
            .map(|(name, values)| (name.clone(), values, &actual_classes[name])),
    );
    for (part, want, got) in parts {
        for (key, want) in want.as_object().unwrap() {
            let got = &got[key];
            match (want.as_f64(), got.as_f64()) {
                (None, None) if want.is_null() && got.is_null() => {}
                (Some(w), Some(g)) => {
                    worst = worst.max((w - g).abs());
                    if (w - g).abs() > TOLERANCE {
                        wrong.push(format!("{part}.{key}: reference {w}, lookout {g}"));
                    }
                }
                _ => wrong.push(format!("{part}.{key}: reference {want}, lookout {got}")),
            }
        }
    }
    assert!(wrong.is_empty(), "{case}:\n  {}", wrong.join("\n  "));
    worst
}

/// Runs the library on every case of `select`; returns (cases run, largest difference).
fn check_cases(select: impl Fn(&Value) -> bool) -> (usize, f64) {
    let (mut run, mut worst) = (0, 0.0f64);
    for case in reference_cases().iter().filter(|c| select(c)) {
        let name = case["name"].as_str().unwrap();
        let (Some(gt_path), Some(pred_path)) = (case_file(&case["gt"]), case_file(&case["pred"]))
        else {
            continue;
        };
        let gt = trackfile::read(&gt_path).unwrap();
        let pred = trackfile::read(&pred_path).unwrap();
        let report = evaluate(&gt, &pred, &options(case)).unwrap();
        let actual = serde_json::to_value(&report).unwrap();
        worst = worst.max(assert_matches(name, case, &actual));
        run += 1;
    }
    (run, worst)
}

#[test]
fn hand_made_cases_equal_py_motmetrics_and_trackeval() {
    let (run, worst) = check_cases(|c| !uses_fixture(c));
    assert!(run >= 7, "only {run} hand-made cases");
    eprintln!("{run} hand-made cases, max |Δ| vs the references {worst:.2e}");
}

#[test]
fn kitti_tracking_cases_equal_py_motmetrics_and_trackeval() {
    if lookout::fixtures::require("kitti/tracking/label_02/0000.txt").is_none() {
        return;
    }
    let (run, worst) = check_cases(uses_fixture);
    assert!(run >= 6, "only {run} KITTI cases");
    eprintln!("{run} KITTI tracking cases, max |Δ| vs the references {worst:.2e}");
}

#[test]
fn eval_track_json_equals_the_reference() {
    let cases = reference_cases();
    let case = cases
        .iter()
        .find(|c| c["name"] == "kitti-0016-car-pedestrian")
        .expect("case kitti-0016-car-pedestrian");
    let Some(gt) = case_file(&case["gt"]) else {
        return;
    };
    let pred = case_file(&case["pred"]).unwrap();
    let mut cmd = lookout();
    cmd.args(["eval", "track", "--gt"])
        .arg(&gt)
        .arg("--pred")
        .arg(&pred)
        .args(["--classes", "Car,pedestrian", "--iou", "0.5", "--json"]);
    let out = succeed(cmd);
    let actual: Value = serde_json::from_slice(&out.stdout).expect("--json prints one JSON object");
    let worst = assert_matches("lookout eval track --json", case, &actual);
    eprintln!("lookout eval track --json: max |Δ| vs the references {worst:.2e}");

    // Without --json: a table with a row per class and one overall.
    let mut cmd = lookout();
    cmd.args(["eval", "track", "--gt"])
        .arg(&gt)
        .arg("--pred")
        .arg(&pred);
    let table = String::from_utf8(succeed(cmd).stdout).unwrap();
    for needle in [
        "MOTA",
        "IDF1",
        "HOTA",
        "car",
        "pedestrian",
        "cyclist",
        "OVERALL",
    ] {
        assert!(table.contains(needle), "no `{needle}` in\n{table}");
    }
}

#[test]
fn bad_input_names_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let good = data_dir().join("tiny/id-switch-gt.txt");
    let missing = dir.path().join("missing.txt");
    let malformed = dir.path().join("malformed.txt");
    std::fs::write(&malformed, "1,1,10,10,5,5,1,-1,-1,-1\n2,1,10,10\n").unwrap();
    let run = |gt: &Path, pred: &Path| {
        let mut cmd = lookout();
        cmd.args(["eval", "track", "--gt"])
            .arg(gt)
            .arg("--pred")
            .arg(pred);
        let out = run_with_deadline(cmd, std::time::Duration::from_secs(60));
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    let stderr = run(&missing, &good);
    assert!(
        stderr.contains(&format!("cannot open {}", missing.display())),
        "{stderr}"
    );
    let stderr = run(&good, &malformed);
    assert!(
        stderr.contains(&format!(
            "{}:2: expected 7 to 10 comma-separated fields",
            malformed.display()
        )),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
}
