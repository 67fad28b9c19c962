//! Issue 12, item 1: a stalled network stream. A server on 127.0.0.1 that never answers, or
//! that stops in the middle of an MPEG-TS stream: Ctrl-C ends the run within 1 s with every
//! output written and no ffmpeg/ffprobe child left; without Ctrl-C the stream times out
//! (`--stream-timeout`) with an error naming the URL; a stream that drops and comes back is
//! reconnected (`--reconnect`). A slow live synthetic source stops within 1 s too.

use std::io::{BufRead, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::common::{lookout, run_with_deadline};

const WEIGHTS: &str = "models/yolox_nano.safetensors";
/// The promise: signal → process gone.
const STOP_WITHIN: Duration = Duration::from_secs(1);

/// `lookout run --source SRC --headless` with YOLOX-Nano at 128, writing `m.json` and
/// `d.jsonl` into `dir`; `None` (skipped) without the weights fixture.
fn run_cmd(source: &str, dir: &Path, extra: &[&str]) -> Option<Command> {
    let weights = lookout::fixtures::require(WEIGHTS)?;
    let mut cmd = lookout();
    cmd.args(["run", "--source", source, "--weights"])
        .arg(weights)
        .args(["--imgsz", "128", "--headless", "--metrics"])
        .arg(dir.join("m.json"))
        .arg("--jsonl")
        .arg(dir.join("d.jsonl"))
        .args(extra);
    Some(cmd)
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Whether ffmpeg is installed (a failure under CI, else a skip with a message).
fn have_ffmpeg() -> bool {
    match lookout::cli::args::ffmpeg_from_env().tools() {
        Ok(_) => true,
        Err(e) if !in_ci() => {
            eprintln!("skipping: {e}");
            false
        }
        Err(e) => panic!("{e}"),
    }
}

/// An HTTP (or RTSP: the same request shape) server on 127.0.0.1: connection `n` (from 0)
/// reads the request, then gets `plan(n)` — the bytes sent, and whether the connection is
/// then held open without another byte (a stall) or closed. Also when each connection came.
type Plan = dyn Fn(usize) -> Option<(Vec<u8>, bool)> + Send + Sync;

fn serve(plan: Box<Plan>) -> (u16, Arc<Mutex<Vec<SystemTime>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let arrivals = Arc::new(Mutex::new(Vec::new()));
    let seen = arrivals.clone();
    let plan: Arc<Plan> = Arc::from(plan);
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().flatten().enumerate() {
            seen.lock().unwrap().push(SystemTime::now());
            let plan = plan.clone();
            std::thread::spawn(move || {
                let mut reader = std::io::BufReader::new(&stream);
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                    line.clear();
                }
                let Some((bytes, hold)) = plan(n) else {
                    return; // Closed at once.
                };
                let mut out = &stream;
                let _ = out.write_all(&bytes);
                let _ = out.flush();
                if hold {
                    std::thread::sleep(Duration::from_secs(600));
                }
            });
        }
    });
    (port, arrivals)
}

/// A response head and the first `fraction` of `body` (no length: a live stream).
fn http_part(body: &[u8], fraction: f64) -> Vec<u8> {
    let mut out =
        b"HTTP/1.0 200 OK\r\nContent-Type: video/mp2t\r\nConnection: close\r\n\r\n".to_vec();
    out.extend_from_slice(&body[..(body.len() as f64 * fraction) as usize]);
    out
}

/// 10 s of ffmpeg's test pattern at 10 fps, 160x120, as MPEG-TS.
fn mpeg_ts(dir: &Path) -> Vec<u8> {
    let path = dir.join("clip.ts");
    let out = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=160x120:rate=10",
        ])
        .args([
            "-t",
            "10",
            "-c:v",
            "mpeg2video",
            "-q:v",
            "5",
            "-f",
            "mpegts",
        ])
        .arg(&path)
        .output()
        .expect("ffmpeg runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(path).unwrap()
}

/// (pid, command name, state) of every process whose parent is `parent`, from /proc.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Some((name, ppid)) = stat(pid) else {
            continue;
        };
        if ppid == parent {
            found.push((pid, name));
        }
    }
    found
}

/// A live process's command name and parent pid (`None` when gone or a zombie).
fn stat(pid: u32) -> Option<(String, u32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (open, close) = (text.find('(')?, text.rfind(')')?);
    let name = text[open + 1..close].to_string();
    let mut rest = text[close + 1..].split_whitespace();
    let state = rest.next()?;
    let ppid = rest.next()?.parse().ok()?;
    (state != "Z").then_some((name, ppid))
}

/// Waits (at most 30 s) until `child` has a child process named `name`; its pid.
fn wait_for_child_named(child: &mut Child, name: &str) -> u32 {
    let start = Instant::now();
    loop {
        if let Some((pid, _)) = children_of(child.id()).into_iter().find(|(_, n)| n == name) {
            return pid;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("lookout exited ({status}) before starting {name}");
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no {name} child within 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits (at most 30 s) until the file at `path` has `lines` lines.
fn wait_for_lines(path: &Path, lines: usize, child: &mut Child) {
    let start = Instant::now();
    while std::fs::read_to_string(path).map_or(0, |t| t.lines().count()) < lines {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "lookout exited ({status}) before {} had {lines} lines",
                path.display()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} stayed short",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGINT to `child`; its output and how long it took to exit (killed after 30 s).
fn interrupt(child: Child) -> (Output, Duration) {
    signal(child, libc::SIGINT)
}

/// `signal` to `child`; its output and how long it took to exit (killed after 30 s).
fn signal(mut child: Child, signal: libc::c_int) -> (Output, Duration) {
    let sent = Instant::now();
    // SAFETY: a plain kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
    while child.try_wait().unwrap().is_none() {
        if sent.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("lookout was still running 30 s after SIGINT");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let took = sent.elapsed();
    (child.wait_with_output().unwrap(), took)
}

/// Every pid in `pids` is gone (allowing 200 ms for a kernel-delivered SIGKILL).
fn assert_gone(pids: &[(u32, String)]) {
    let start = Instant::now();
    for (pid, name) in pids {
        while stat(*pid).is_some_and(|(n, _)| &n == name) {
            assert!(
                start.elapsed() < Duration::from_millis(200),
                "{name} (pid {pid}) outlived lookout"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn assert_complete_jsonl(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "a cut line in {}",
        path.display()
    );
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn metrics(dir: &Path) -> serde_json::Value {
    let path: PathBuf = dir.join("m.json");
    let text = std::fs::read_to_string(&path).expect("metrics.json written");
    serde_json::from_str(&text).unwrap()
}

/// Regression: `rtsp://` and `http://` to a server that accepts and never answers printed
/// nothing for 90 s and ignored SIGINT. Now SIGINT after 2 s ends it within 1 s with no
/// child left, and without a signal it fails with a timeout error naming the URL.
#[test]
fn a_server_that_never_answers_times_out_and_ctrl_c_stops_it_at_once() {
    if !have_ffmpeg() {
        return;
    }
    let (port, _) = serve(Box::new(|_| Some((Vec::new(), true))));
    let tmp = tempfile::tempdir().unwrap();
    for scheme in ["rtsp", "http"] {
        let url = format!("{scheme}://127.0.0.1:{port}/x");
        let Some(cmd) = run_cmd(&url, tmp.path(), &[]) else {
            return;
        };
        let mut child = spawn(cmd);
        let probe = wait_for_child_named(&mut child, "ffprobe");
        std::thread::sleep(Duration::from_secs(2));
        let before = children_of(child.id());
        assert!(before.iter().any(|(pid, _)| *pid == probe), "{before:?}");
        let (out, took) = interrupt(child);
        eprintln!("{scheme} never answering: SIGINT → exit in {took:?}; children then {before:?}");
        assert!(took < STOP_WITHIN, "{url}: took {took:?} to stop");
        assert_gone(&before);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("panicked"), "{stderr}");

        let Some(mut cmd) = run_cmd(
            &url,
            tmp.path(),
            &["--stream-timeout", "2", "--reconnect", "0"],
        ) else {
            return;
        };
        let start = Instant::now();
        let out = run_with_deadline(&mut cmd, Duration::from_secs(30));
        let took = start.elapsed();
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("{scheme} never answering, --stream-timeout 2: failed after {took:?}");
        assert!(!out.status.success(), "{stderr}");
        assert!(took < Duration::from_secs(5), "{url}: {took:?}");
        assert!(
            stderr.contains(&url) && stderr.contains("--stream-timeout"),
            "{stderr}"
        );
    }
}

/// Regression: an HTTP MPEG-TS stream that stalls after 60 %: one SIGINT printed "stopping"
/// and the process stayed; a second one exited without metrics.json and left ffmpeg
/// running. Now one SIGINT ends it within 1 s, every output complete, ffmpeg gone.
#[test]
fn a_stream_that_stalls_midway_stops_within_a_second_with_every_output() {
    if !have_ffmpeg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ts = mpeg_ts(tmp.path());
    let (port, _) = serve(Box::new(move |_| Some((http_part(&ts, 0.6), true))));
    let url = format!("http://127.0.0.1:{port}/live.ts");
    let Some(cmd) = run_cmd(&url, tmp.path(), &[]) else {
        return;
    };
    let mut child = spawn(cmd);
    let ffmpeg = wait_for_child_named(&mut child, "ffmpeg");
    wait_for_lines(&tmp.path().join("d.jsonl"), 1, &mut child);
    // Into the stall: everything served is decoded by now.
    std::thread::sleep(Duration::from_millis(1500));
    let before = children_of(child.id());
    assert!(before.iter().any(|(pid, _)| *pid == ffmpeg), "{before:?}");
    let (out, took) = interrupt(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "stalled MPEG-TS: SIGINT → exit in {took:?} ({}); children then {before:?}",
        out.status
    );
    assert!(took < STOP_WITHIN, "took {took:?}: {stderr}");
    assert!(out.status.success(), "{stderr}");
    assert_gone(&before);
    let lines = assert_complete_jsonl(&tmp.path().join("d.jsonl"));
    let m = metrics(tmp.path());
    assert_eq!(
        m["frames"]["shown"].as_u64(),
        Some(lines.len() as u64),
        "{m}"
    );
}

/// The watchdog: without Ctrl-C, a stream that stalls midway ends `--stream-timeout` after
/// its last frame (here with `--reconnect 0`), outputs complete and the stall reported.
#[test]
fn a_stream_that_stalls_midway_times_out_on_its_own() {
    if !have_ffmpeg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ts = mpeg_ts(tmp.path());
    let (port, _) = serve(Box::new(move |_| Some((http_part(&ts, 0.6), true))));
    let url = format!("http://127.0.0.1:{port}/live.ts");
    let extra = ["--stream-timeout", "2", "--reconnect", "0"];
    let Some(mut cmd) = run_cmd(&url, tmp.path(), &extra) else {
        return;
    };
    let start = Instant::now();
    let out = run_with_deadline(&mut cmd, Duration::from_secs(30));
    let took = start.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "stalled MPEG-TS, --stream-timeout 2: ended after {took:?} ({})",
        out.status
    );
    assert!(took < Duration::from_secs(15), "{took:?}: {stderr}");
    assert!(
        stderr.contains("no frame for 2 s (--stream-timeout)"),
        "{stderr}"
    );
    let lines = assert_complete_jsonl(&tmp.path().join("d.jsonl"));
    assert!(!lines.is_empty());
    let notes = metrics(tmp.path())["notes"].to_string();
    assert!(notes.contains("--stream-timeout"), "{notes}");
}

/// However lookout dies (SIGKILL here), its ffmpeg child dies with it.
#[test]
fn ffmpeg_dies_with_a_killed_lookout() {
    if !have_ffmpeg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ts = mpeg_ts(tmp.path());
    let (port, _) = serve(Box::new(move |_| Some((http_part(&ts, 0.6), true))));
    let url = format!("http://127.0.0.1:{port}/live.ts");
    let Some(cmd) = run_cmd(&url, tmp.path(), &[]) else {
        return;
    };
    let mut child = spawn(cmd);
    let ffmpeg = wait_for_child_named(&mut child, "ffmpeg");
    wait_for_lines(&tmp.path().join("d.jsonl"), 1, &mut child);
    child.kill().unwrap();
    child.wait().unwrap();
    assert_gone(&[(ffmpeg, "ffmpeg".to_string())]);
}

/// `--reconnect`: a stream that drops (closed: `stall` false) or stalls (held open, found
/// by the watchdog) and is served again is reopened, and frames from after the gap are
/// processed; the report says it reconnected.
#[test]
fn a_stream_that_drops_is_reconnected_and_plays_on() {
    reconnects_after(false);
}

#[test]
fn a_stream_that_stalls_is_reconnected_and_plays_on() {
    reconnects_after(true);
}

fn reconnects_after(stall: bool) {
    if !have_ffmpeg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let ts = mpeg_ts(tmp.path());
    // ffprobe's connection: the whole stream; ffmpeg's first: 40 % then closed, or 60 %
    // then stalled (ffmpeg needs 5 s of stream before its first frame); the reconnection:
    // the whole stream again; later ones: closed at once.
    let (port, arrivals) = serve(Box::new(move |n| match n {
        0 | 2 => Some((http_part(&ts, 1.0), false)),
        1 if stall => Some((http_part(&ts, 0.6), true)),
        1 => Some((http_part(&ts, 0.4), false)),
        _ => None,
    }));
    let url = format!("http://127.0.0.1:{port}/live.ts");
    let Some(mut cmd) = run_cmd(
        &url,
        tmp.path(),
        &["--stream-timeout", "1", "--reconnect", "2"],
    ) else {
        return;
    };
    let out = run_with_deadline(&mut cmd, Duration::from_secs(60));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    let arrivals = arrivals.lock().unwrap().clone();
    assert!(arrivals.len() >= 3, "connections: {arrivals:?}\n{stderr}");
    let lines = assert_complete_jsonl(&tmp.path().join("d.jsonl"));
    let m = metrics(tmp.path());
    let notes = m["notes"].to_string();
    assert!(notes.contains("reconnected 1 time(s)"), "{notes}\n{stderr}");
    // The frames the stream missed while away count as capture drops (`seq` skips them).
    assert!(
        m["frames"]["dropped"]["capture"].as_u64().unwrap() >= 1,
        "{m}"
    );
    eprintln!("reconnect notes: {notes}; drops {}", m["frames"]["dropped"]);
    // Frames captured after the reconnection (connection 2) were processed.
    let rejoined = arrivals[2].duration_since(SystemTime::UNIX_EPOCH).unwrap();
    let after = lines
        .iter()
        .filter(|l| l["capture_wall_ns"].as_u64().unwrap() as u128 > rejoined.as_nanos())
        .count();
    eprintln!(
        "reconnect: {} connections, {} frames, {after} after the last reconnection",
        arrivals.len(),
        lines.len()
    );
    assert!(after > 0, "no frame after the reconnection: {stderr}");
}

/// Regression: `synthetic:640x480@0.05:live` stopped at the next frame, 20 s after SIGINT.
#[test]
fn a_slow_live_source_stops_within_a_second() {
    for (name, sig) in [("SIGINT", libc::SIGINT), ("SIGTERM", libc::SIGTERM)] {
        let tmp = tempfile::tempdir().unwrap();
        let Some(cmd) = run_cmd("synthetic:640x480@0.05:live", tmp.path(), &[]) else {
            return;
        };
        let mut child = spawn(cmd);
        wait_for_lines(&tmp.path().join("d.jsonl"), 1, &mut child);
        std::thread::sleep(Duration::from_millis(300));
        let (out, took) = signal(child, sig);
        let stderr = String::from_utf8_lossy(&out.stderr);
        eprintln!("synthetic 0.05 fps live: {name} → exit in {took:?}");
        assert!(took < STOP_WITHIN, "{name}: took {took:?}: {stderr}");
        assert!(out.status.success(), "{stderr}");
        assert_eq!(assert_complete_jsonl(&tmp.path().join("d.jsonl")).len(), 1);
        assert_eq!(metrics(tmp.path())["frames"]["shown"].as_u64(), Some(1));
    }
}

/// The watchdog starts with the first read, not at the opening: the model loads in between
/// (seconds for a big one) and must not count as a stall.
#[test]
fn a_stream_read_later_than_its_timeout_after_opening_still_plays() {
    if !have_ffmpeg() {
        return;
    }
    use lookout::source::{SourceOptions, SourceSpec, StreamOptions};
    let tmp = tempfile::tempdir().unwrap();
    let ts = mpeg_ts(tmp.path());
    let (port, _) = serve(Box::new(move |_| Some((http_part(&ts, 1.0), false))));
    let opts = SourceOptions {
        stream: StreamOptions {
            timeout_secs: 1.0,
            reconnect_secs: 0.0,
        },
        ..SourceOptions::default()
    };
    let spec = SourceSpec::parse(&format!("http://127.0.0.1:{port}/live.ts"), &opts).unwrap();
    let ffmpeg = lookout::cli::args::ffmpeg_from_env();
    let mut source = lookout::source::open_with(&spec, &ffmpeg).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let frame = source.next_frame().unwrap().expect("a frame");
    assert_eq!((frame.width(), frame.height()), (160, 120));
}

/// A terminal's Ctrl-C goes to the whole process group: ffmpeg killed by it made a stopped
/// run look like a damaged input (exit 3, "ended early"). Now only lookout gets it.
#[test]
fn a_terminal_ctrl_c_is_a_stop_not_a_damaged_input() {
    use std::os::unix::process::CommandExt;
    if !have_ffmpeg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let clip = tmp.path().join("clip.ts");
    std::fs::write(&clip, mpeg_ts(tmp.path())).unwrap();
    let Some(mut cmd) = run_cmd(clip.to_str().unwrap(), tmp.path(), &["--pace", "realtime"]) else {
        return;
    };
    cmd.process_group(0);
    let mut child = spawn(cmd);
    wait_for_lines(&tmp.path().join("d.jsonl"), 3, &mut child);
    let sent = Instant::now();
    // SAFETY: kill(2) on the process group our child leads.
    assert_eq!(unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) }, 0);
    let out = run_to_end(child);
    let took = sent.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "file, Ctrl-C to the process group: exit in {took:?} ({})",
        out.status
    );
    assert!(took < STOP_WITHIN, "took {took:?}: {stderr}");
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("ended early"), "{stderr}");
    assert_complete_jsonl(&tmp.path().join("d.jsonl"));
    metrics(tmp.path());
}

/// Waits (at most 30 s) for `child` to exit; its output.
fn run_to_end(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            panic!("lookout still running after 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}
