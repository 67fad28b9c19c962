//! Helpers shared by the integration test modules.

use std::borrow::BorrowMut;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `lookout` binary, offline, with no display and no models folder from the caller's
/// environment.
pub fn lookout() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout"));
    cmd.env("LOOKOUT_OFFLINE", "1")
        .env_remove("LOOKOUT_MODELS")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY");
    cmd
}

/// Runs `cmd` (owned or `&mut`) to the end, at most `limit`: a hang fails the test instead of blocking CI.
pub fn run_with_deadline(mut cmd: impl BorrowMut<Command>, limit: Duration) -> Output {
    let cmd = cmd.borrow_mut();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lookout starts");
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().ok();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Runs `cmd` (at most 10 minutes) and asserts that it succeeded, showing its stderr if not.
pub fn succeed(cmd: impl BorrowMut<Command>) -> Output {
    let out = run_with_deadline(cmd, Duration::from_secs(600));
    assert!(
        out.status.success(),
        "lookout failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A KITTI raw drive folder under `root` made of the first three object-benchmark images
/// (`images` = `kitti/object/image_2`), with 10 Hz timestamps as KITTI writes them.
pub fn kitti_raw_folder(images: &Path, root: &Path) -> PathBuf {
    let drive = root.join("2011_09_26_drive_0001_sync");
    let data = drive.join("image_02/data");
    std::fs::create_dir_all(&data).unwrap();
    for i in 0..3 {
        std::fs::copy(
            images.join(format!("00000{i}.png")),
            data.join(format!("{i:010}.png")),
        )
        .unwrap();
    }
    std::fs::write(
        drive.join("image_02/timestamps.txt"),
        "2011-09-26 13:02:25.964389445\n2011-09-26 13:02:26.074465084\n2011-09-26 13:02:26.184545898\n",
    )
    .unwrap();
    drive
}
