//! Where the shared test fixtures live (`LOOKOUT_FIXTURES`, default `../shared/fixtures`).
//!
//! Tests that need a fixture call [`require`]: on a developer's clone without fixtures the
//! test is skipped with a message; under CI (`CI=true`) a missing fixture is a failure.

use std::path::PathBuf;

/// The fixtures folder: `$LOOKOUT_FIXTURES`, else `../shared/fixtures` from the crate root.
pub fn root() -> PathBuf {
    match std::env::var_os("LOOKOUT_FIXTURES") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures"),
    }
}

/// The fixture at `relative`, or `None` (with a message) when it is absent outside CI.
///
/// # Panics
/// Under CI (`CI` set to anything but `false`/`0`) a missing fixture panics: a skipped test
/// there would hide a broken set-up.
pub fn require(relative: &str) -> Option<PathBuf> {
    let path = root().join(relative);
    if path.exists() {
        return Some(path);
    }
    let in_ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
    if in_ci {
        panic!(
            "fixture {} is missing (LOOKOUT_FIXTURES={}); CI must have every fixture",
            path.display(),
            root().display()
        );
    }
    eprintln!(
        "skipping: fixture {} not found (set LOOKOUT_FIXTURES to the fixtures folder)",
        path.display()
    );
    None
}
