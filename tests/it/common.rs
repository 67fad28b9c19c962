//! Helpers shared by the integration test modules.

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The `lookout` binary, offline, with no display, no models folder and no fault hook from
/// the caller's environment.
pub fn lookout() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_lookout"));
    cmd.env("LOOKOUT_OFFLINE", "1")
        .env_remove("LOOKOUT_MODELS")
        .env_remove("DISPLAY")
        .env_remove("WAYLAND_DISPLAY")
        .env_remove("LOOKOUT_TEST_FAIL_STAGE");
    cmd
}

/// Runs `cmd` to the end, at most `limit`: a hang fails the test instead of blocking CI.
pub fn run_with_deadline(mut cmd: Command, limit: Duration) -> Output {
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
