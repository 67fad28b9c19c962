//! Integration tests: faults and bad input through the real binary — a non-zero exit, a
//! one-line error naming the thing and what to do, no panic, no hang.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

/// Runs the binary with a deadline: a hang fails the test instead of blocking CI.
pub fn run_with_deadline(mut cmd: Command, deadline: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let (mut out, mut err) = (vec![], vec![]);
            child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
            child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
            return Output {
                status,
                stdout: out,
                stderr: err,
            };
        }
        if started.elapsed() > deadline {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The one-line error of a run that must fail.
fn failure(cmd: Command) -> String {
    let out = run_with_deadline(cmd, Duration::from_secs(60));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        !out.status.success(),
        "expected failure, got success: {stderr}"
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{stderr}"
    );
    assert_eq!(
        stderr.trim().lines().count(),
        1,
        "one-line error expected: {stderr}"
    );
    stderr
}

fn detect_with_calib(calib: &Path) -> Option<Command> {
    let weights = lookout::fixtures::require("models/yolox_nano.safetensors")?;
    let image = lookout::fixtures::require("images/udacity/test1.jpg")?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout"));
    cmd.env("LOOKOUT_OFFLINE", "1")
        .arg("detect")
        .arg("--weights")
        .arg(weights)
        .arg("--calib")
        .arg(calib)
        .arg(image);
    Some(cmd)
}

const GOOD_TOML: &str = r#"version = 1
name = "test camera"
[image]
width = 1280
height = 720
[intrinsics]
fx = 910.0
fy = 910.0
cx = 640.0
cy = 360.0
[mounting]
height_m = 1.3
pitch_deg = 0.0
"#;

/// Case 8 of the fault matrix: a bad calibration file, in every format, names the field.
#[test]
fn bad_calibration_files_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<(&str, String, &str)> = vec![
        ("missing.toml", GOOD_TOML.replace("fy = 910.0\n", ""), "fy"),
        ("negative.toml", GOOD_TOML.replace("fx = 910.0", "fx = -910.0"), "fx"),
        ("nan.toml", GOOD_TOML.replace("cx = 640.0", "cx = nan"), "cx"),
        ("future.toml", GOOD_TOML.replace("version = 1", "version = 7"), "version"),
        ("aspect.toml", GOOD_TOML.replace("height = 720", "height = 1000").replace("cy = 360.0", "cy = 500.0"), "aspect"),
        (
            "opencv.yml",
            "%YAML:1.0\n---\nimage_width: 1280\nimage_height: 720\ndistortion_coefficients: !!opencv-matrix\n   rows: 1\n   cols: 5\n   dt: d\n   data: [ 0., 0., 0., 0., 0. ]\n".into(),
            "camera_matrix",
        ),
        (
            "ros.yaml",
            "image_width: 1280\nimage_height: 720\ncamera_name: cam\ncamera_matrix:\n  rows: 3\n  cols: 3\n  data: [-900, 0, 640, 0, 900, 360, 0, 0, 1]\ndistortion_model: plumb_bob\ndistortion_coefficients:\n  rows: 1\n  cols: 5\n  data: [0, 0, 0, 0, 0]\n".into(),
            "fx",
        ),
        ("kitti.txt", "calib_time: 09-Jan-2012 13:57:47\nS_02: 1.392000e+03 5.120000e+02\n".into(), "P"),
    ];
    for (name, text, field) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let Some(cmd) = detect_with_calib(&path) else {
            return;
        };
        let err = failure(cmd);
        assert!(
            err.contains(name),
            "{name}: error does not name the file: {err}"
        );
        assert!(
            err.to_lowercase().contains(&field.to_lowercase()),
            "{name}: error does not name `{field}`: {err}"
        );
    }
}

/// Case 3: a weights file that is not there; case 4 is covered in `detect`.
#[test]
fn missing_weights_file_is_named() {
    let Some(image) = lookout::fixtures::require("images/bus.jpg") else {
        return;
    };
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout"));
    cmd.args(["detect", "--weights", "models/nope.safetensors"])
        .arg(image);
    let err = failure(cmd);
    assert!(
        err.contains("models/nope.safetensors") && err.contains("not found"),
        "{err}"
    );
}

/// Security: a `.pt` that names `os.system` is refused, never executed.
#[test]
fn malicious_checkpoint_is_refused_through_the_cli() {
    let Some(image) = lookout::fixtures::require("images/bus.jpg") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    // protocol 2: GLOBAL 'os system', the argument tuple, REDUCE, STOP.
    let mut pickle = vec![0x80, 0x02];
    pickle.extend_from_slice(b"cos\nsystem\n");
    pickle.push(b'X');
    let shell = format!("touch {}", marker.display());
    pickle.extend_from_slice(&(shell.len() as u32).to_le_bytes());
    pickle.extend_from_slice(shell.as_bytes());
    pickle.extend_from_slice(&[0x85, b'R', b'.']);
    let path = dir.path().join("best.pt");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
    zip.start_file("best/data.pkl", zip::write::SimpleFileOptions::default())
        .unwrap();
    std::io::Write::write_all(&mut zip, &pickle).unwrap();
    zip.finish().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout"));
    cmd.arg("detect").arg("--weights").arg(&path).arg(image);
    let err = failure(cmd);
    assert!(
        err.contains("best.pt") && err.contains("os.system"),
        "{err}"
    );
    assert!(!marker.exists(), "the pickle's payload ran");
}
