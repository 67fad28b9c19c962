//! Issue 16: `lookout batch` through the real binary (results whole or absent, resumable,
//! a bad drive recorded, Ctrl-C), and `lookout-fleet` on a real two-node Ray cluster on
//! loopback (`.venv-fleet`, made by `scripts/fleet-tools --install`): the same detections
//! as `lookout batch`, a node whose raylet is killed mid-drive loses nothing, re-runs skip
//! what is done; and the report's Python unit tests.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{kitti_raw_folder, lookout, run_with_deadline};

const WEIGHTS: &str = "models/yolox_nano.pth";
const CLIP: &str = "drives/udacity_test_video.mp4";
const KITTI_IMAGES: &str = "kitti/object/image_2";

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The fleet venv's `bin/`, or `None` (skipped) when it is missing outside CI.
fn fleet_venv() -> Option<PathBuf> {
    let bin = repo(".venv-fleet/bin");
    if !bin.join("lookout-fleet").exists() || !bin.join("ray").exists() {
        let why = "lookout-fleet and Ray are not installed: run scripts/fleet-tools --install";
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{why}");
        eprintln!("skipping: {why}");
        return None;
    }
    Some(bin)
}

/// The drives of the fleet tests, and the manifest that lists them.
struct Drives {
    _dir: tempfile::TempDir,
    root: PathBuf,
    manifest: PathBuf,
    weights: PathBuf,
    ids: Vec<&'static str>,
}

/// The drives that take longest, with their frames: what a lost node is caught on, while
/// it has written at most half of them.
const LONG_DRIVES: [(&str, usize); 3] = [("udacity", 38), ("recorded", 38), ("synthetic", 60)];
const CORRUPT: &str = "corrupt";

/// Eight drives from the fixtures: the Udacity clip, a drive and an MCAP file recorded from
/// it with `lookout record`, the KITTI frames as an image folder and as a KITTI raw folder, a
/// synthetic source, half the clip, and a cut-off video that must fail.
fn fleet_drives() -> Option<Drives> {
    let weights = lookout::fixtures::require(WEIGHTS)?;
    let clip = lookout::fixtures::require(CLIP)?;
    let images = lookout::fixtures::require(KITTI_IMAGES)?;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    // `lookout record` of the clip into `out` (PNG frames), with `extra` options.
    let record = |out: &str, extra: &[&str]| {
        let mut cmd = lookout();
        cmd.args(["record", "--source", s(&clip), "--out", s(&root.join(out))])
            .args(["--frame-format", "png"])
            .args(extra);
        let done = run_with_deadline(&mut cmd, Duration::from_secs(120));
        assert!(
            done.status.success(),
            "{}",
            String::from_utf8_lossy(&done.stderr)
        );
    };
    record("recorded", &[]);
    // An MCAP file of the first 10 frames (lookout's own writer, lossless PNG images).
    record("recorded.mcap", &["--max-frames", "10"]);
    let folder = root.join("kitti_images");
    std::fs::create_dir_all(&folder).unwrap();
    for entry in std::fs::read_dir(&images).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, folder.join(path.file_name().unwrap())).unwrap();
    }
    kitti_raw_folder(&images, &root.join("raw"));
    let bytes = std::fs::read(&clip).unwrap();
    std::fs::write(root.join("cut.mp4"), &bytes[..bytes.len() / 6]).unwrap();
    let manifest = root.join("drives.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"# Relative paths are taken from this file's folder.
[[drive]]
id = "udacity"
source = "{clip}"

[[drive]]
id = "recorded"
source = "recorded"

[[drive]]
id = "synthetic"
source = "synthetic:640x480@10"
max_frames = 60

[[drive]]
id = "kitti_images"
source = "kitti_images"

[[drive]]
id = "kitti_raw"
source = "raw/2011_09_26_drive_0001_sync"

[[drive]]
id = "udacity_half"
source = "{clip}"
max_frames = 19

[[drive]]
id = "mcap"
source = "recorded.mcap"

[[drive]]
id = "{CORRUPT}"
source = "cut.mp4"
"#,
            clip = s(&clip)
        ),
    )
    .unwrap();
    Some(Drives {
        _dir: dir,
        root,
        manifest,
        weights,
        ids: vec![
            "udacity",
            "recorded",
            "synthetic",
            "kitti_images",
            "kitti_raw",
            "udacity_half",
            "mcap",
            CORRUPT,
        ],
    })
}

impl Drives {
    /// Every drive but the corrupt one.
    fn good(&self) -> &[&'static str] {
        &self.ids[..self.ids.len() - 1]
    }
}

fn batch(drives: &Drives, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut cmd = lookout();
    cmd.args(["batch", s(&drives.manifest), "--out", s(out), "--weights"])
        .arg(&drives.weights)
        .args(["--threads", "1"])
        .args(extra);
    run_with_deadline(cmd, Duration::from_secs(300))
}

fn json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// Per frame: seq, pts and the detections (timings and wall-clock stamps differ by run).
fn detections(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("detections.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            serde_json::json!([v["seq"], v["pts_ns"], v["detections"]])
        })
        .collect()
}

/// The result folders (non-hidden) in `out`.
fn result_ids(out: &Path) -> BTreeSet<String> {
    std::fs::read_dir(out)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_dir())
        .map(|e| e.file_name().into_string().unwrap())
        .filter(|n| !n.starts_with('.'))
        .collect()
}

/// Every result folder is whole: done.json plus, for a good drive, its detections (one line
/// per processed frame, seqs unique) and metrics.
fn assert_whole(out: &Path, ids: &[&str]) {
    let expected: BTreeSet<String> = ids.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        result_ids(out),
        expected,
        "result folders in {}",
        out.display()
    );
    for id in ids {
        let dir = out.join(id);
        let done = json(&dir.join("done.json"));
        assert_eq!(done["drive"], *id);
        if *id == CORRUPT {
            assert_eq!(done["status"], "failed", "{done}");
            let error = done["error"].as_str().unwrap();
            assert!(error.contains("cut.mp4"), "{error}");
            continue;
        }
        assert_eq!(done["status"], "ok", "{done}");
        let frames = &done["frames"];
        assert_eq!(frames["in"], frames["processed"], "{done}");
        assert_eq!(frames["dropped"], 0, "{done}");
        let lines = detections(&dir);
        assert_eq!(lines.len() as u64, frames["processed"].as_u64().unwrap());
        let seqs: BTreeSet<u64> = lines.iter().map(|l| l[0].as_u64().unwrap()).collect();
        assert_eq!(seqs.len(), lines.len(), "{id}: a frame written twice");
        assert!(dir.join("metrics.json").exists());
    }
}

fn done_records(out: &Path, ids: &[&str]) -> BTreeMap<String, String> {
    ids.iter()
        .map(|id| {
            let text = std::fs::read_to_string(out.join(id).join("done.json")).unwrap();
            (id.to_string(), text)
        })
        .collect()
}

#[test]
fn batch_writes_each_drive_whole_records_a_bad_one_and_skips_done_ones_on_a_rerun() {
    let Some(drives) = fleet_drives() else {
        return;
    };
    let out = drives.root.join("results");
    let first = batch(&drives, &out, &[]);
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert_eq!(first.status.code(), Some(4), "{stderr}");
    assert!(
        stderr.contains("7 ok") && stderr.contains("1 failed of 8 drives"),
        "{stderr}"
    );
    assert_whole(&out, &drives.ids);
    let done = json(&out.join("udacity/done.json"));
    assert_eq!(
        done["weights_sha256"],
        lookout::cli::file_sha256(&drives.weights).unwrap()
    );
    assert_eq!(done["frames"]["processed"], 38);
    assert_eq!(done["settings"]["conf"], 0.25);
    assert_eq!(done["lookout_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(
        done["lookout_binary_sha256"],
        lookout::cli::file_sha256(Path::new(env!("CARGO_BIN_EXE_lookout"))).unwrap()
    );
    assert_eq!(
        json(&out.join("udacity_half/done.json"))["frames"]["processed"],
        19
    );
    assert_eq!(
        json(&out.join("synthetic/done.json"))["frames"]["processed"],
        60
    );
    assert_eq!(
        json(&out.join("kitti_raw/done.json"))["frames"]["processed"],
        3
    );
    assert_eq!(json(&out.join("mcap/done.json"))["frames"]["processed"], 10);
    // The lossless PNG drive recorded from the clip gives the clip's detections.
    assert_eq!(
        detections(&out.join("udacity")),
        detections(&out.join("recorded"))
    );
    assert_eq!(
        std::fs::read_dir(out.join(".partial")).unwrap().count(),
        0,
        "no attempt left behind"
    );

    // --threads is no part of a result's key: detections do not depend on it.
    let threads = drives.root.join("two-threads");
    let mut cmd = lookout();
    cmd.args([
        "batch",
        s(&drives.manifest),
        "--out",
        s(&threads),
        "--weights",
    ])
    .arg(&drives.weights)
    .args([
        "--threads",
        "2",
        "--drive",
        "udacity_half",
        "--drive",
        "kitti_raw",
    ]);
    let two = run_with_deadline(cmd, Duration::from_secs(300));
    assert!(
        two.status.success(),
        "{}",
        String::from_utf8_lossy(&two.stderr)
    );
    for id in ["udacity_half", "kitti_raw"] {
        assert_eq!(
            detections(&threads.join(id)),
            detections(&out.join(id)),
            "{id}"
        );
    }

    // A re-run redoes only the failed drive; --list tells each drive's state.
    let before = done_records(&out, drives.good());
    let again = batch(&drives, &out, &[]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert_eq!(again.status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("7 skipped"), "{stderr}");
    assert_eq!(done_records(&out, drives.good()), before);
    let list = batch(&drives, &out, &["--list"]);
    assert!(list.status.success());
    let states: Vec<(String, String)> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["id"].as_str().unwrap().into(),
                v["state"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(states.len(), 8);
    assert!(states
        .iter()
        .all(|(id, state)| state == if id == CORRUPT { "failed" } else { "done" }));
    // Another binary of the same version (here: one byte appended) finds every result stale.
    let rebuilt = drives.root.join("lookout-rebuilt");
    let mut bytes = std::fs::read(env!("CARGO_BIN_EXE_lookout")).unwrap();
    bytes.push(0);
    std::fs::write(&rebuilt, bytes).unwrap();
    std::fs::set_permissions(
        &rebuilt,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut cmd = Command::new(&rebuilt);
    cmd.env("LOOKOUT_OFFLINE", "1")
        .args(["batch", s(&drives.manifest), "--out", s(&out), "--weights"])
        .arg(&drives.weights)
        .arg("--list");
    let list = run_with_deadline(cmd, Duration::from_secs(60));
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    let stdout = String::from_utf8(list.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 8);
    assert!(
        stdout.lines().all(|l| l.contains(r#""state":"stale""#)),
        "{stdout}"
    );

    // Other settings make every stored result stale: --shard splits the work between two
    // runs that together redo every drive once.
    let mut redone = BTreeSet::new();
    for shard in ["0/2", "1/2"] {
        let run = batch(&drives, &out, &["--conf", "0.3", "--shard", shard]);
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        for line in stderr.lines().filter(|l| l.starts_with("drive ")) {
            let id = line["drive ".len()..]
                .split(':')
                .next()
                .unwrap()
                .to_string();
            assert!(!line.contains("skipped"), "{line}");
            assert!(redone.insert(id), "a drive run by both shards: {stderr}");
        }
    }
    assert_eq!(redone.len(), 8);
    assert_eq!(
        json(&out.join("kitti_raw/done.json"))["settings"]["conf"],
        0.3
    );

    // A missing manifest and an unknown --drive are one-line errors, not a batch.
    let mut cmd = lookout();
    cmd.args(["batch", "/nonexistent/drives.txt", "--out", s(&out)]);
    let bad = run_with_deadline(cmd, Duration::from_secs(30));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr.contains("cannot read manifest /nonexistent/drives.txt"),
        "{stderr}"
    );
    let bad = batch(&drives, &out, &["--drive", "nope"]);
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("--drive `nope` is not in the manifest"),
        "{stderr}"
    );
}

#[test]
fn ctrl_c_and_sigterm_stop_a_batch_within_a_second_keeping_finished_drives_and_no_half_result() {
    let Some(weights) = lookout::fixtures::require(WEIGHTS) else {
        return;
    };
    for signal in [libc::SIGINT, libc::SIGTERM] {
        stop_a_batch_with(signal, &weights);
    }
}

fn stop_a_batch_with(signal: libc::c_int, weights: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let manifest = dir.path().join("drives.toml");
    std::fs::write(
        &manifest,
        "[[drive]]\nid = \"short\"\nsource = \"synthetic:160x120\"\nmax_frames = 3\n\n\
         [[drive]]\nid = \"long\"\nsource = \"synthetic:160x120\"\nmax_frames = 100000\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let mut child = lookout()
        .args(["batch", s(&manifest), "--out", s(&out), "--threads", "1"])
        .arg("--weights")
        .arg(weights)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let partial = out.join(".partial");
    // The long drive is running once its attempt folder has frames in it.
    loop {
        let running = std::fs::read_dir(&partial)
            .ok()
            .and_then(|mut e| e.next())
            .and_then(|e| std::fs::metadata(e.ok()?.path().join("detections.jsonl")).ok())
            .is_some_and(|m| m.len() > 0);
        if running && out.join("short/done.json").exists() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the long drive never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: signalling the child this test started.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    let signalled = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(5),
            "lookout batch ignored Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    let took = signalled.elapsed();
    let mut stderr = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        took < Duration::from_secs(1),
        "stopped after {took:?}: {stderr}"
    );
    assert_eq!(status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("drive long: interrupted"), "{stderr}");
    assert_eq!(result_ids(&out), BTreeSet::from(["short".to_string()]));
    assert_eq!(json(&out.join("short/done.json"))["status"], "ok");
    assert_eq!(std::fs::read_dir(&partial).unwrap().count(), 0, "{stderr}");
}

#[test]
fn the_fleet_report_passes_its_python_unit_tests() {
    let Some(bin) = fleet_venv() else {
        return;
    };
    let out = run_with_deadline(
        Command::new(bin.join("python"))
            .args(["-m", "unittest", "discover", "-v", "-s"])
            .arg(repo("python/tests"))
            .current_dir(repo("python")),
        Duration::from_secs(120),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // unittest's own closing line; a discovery that finds nothing says "Ran 0 tests".
    assert!(
        stderr.contains("\nOK") && !stderr.contains("Ran 0 tests"),
        "{stderr}"
    );
}

// --- The Ray cluster -------------------------------------------------------------------

/// A process's parent, start time, name and command line, from /proc.
struct Proc {
    ppid: u32,
    /// Clock ticks after boot (field 22 of /proc/PID/stat): with the pid, the process's
    /// identity (a pid may be reused; the pair is not).
    start: u64,
    comm: String,
    cmdline: Vec<String>,
}

fn processes() -> HashMap<u32, Proc> {
    let mut all = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 2..].split(' ');
        let state = rest.next().unwrap_or("");
        if state == "Z" {
            continue;
        }
        let ppid = rest.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        // Fields 5..=21 skipped: starttime is field 22 (state is 3, ppid 4).
        let Some(start) = rest.nth(17).and_then(|t| t.parse().ok()) else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline"))
            .unwrap_or_default()
            .split(|&b| b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        all.insert(
            pid,
            Proc {
                ppid,
                start,
                comm,
                cmdline,
            },
        );
    }
    all
}

/// `root` and every process below it, each with its start time.
fn tree(root: u32) -> Vec<(u32, u64)> {
    let all = processes();
    let Some(top) = all.get(&root) else {
        return Vec::new();
    };
    let mut found = vec![(root, top.start)];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i].0;
        found.extend(
            all.iter()
                .filter(|(_, p)| p.ppid == parent)
                .map(|(&pid, p)| (pid, p.start)),
        );
        i += 1;
    }
    found
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

/// A free TCP port on loopback (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One `ray start --block` node: the process this test started, and every process below it
/// seen so far, by pid and start time (a raylet killed by the test orphans its agents; they
/// are stopped by pid, and only while the pid is still the process seen).
struct Node {
    child: Child,
    seen: BTreeMap<u32, u64>,
    log: PathBuf,
}

impl Node {
    fn refresh(&mut self) {
        // The child is not reaped before stop(): its pid cannot be reused until then.
        self.seen.extend(tree(self.child.id()));
    }

    /// The processes seen that still run as they were seen (not a reused pid).
    fn live(&self, all: &HashMap<u32, Proc>) -> Vec<u32> {
        self.seen
            .iter()
            .filter(|(pid, start)| all.get(pid).is_some_and(|p| p.start == **start))
            .map(|(&pid, _)| pid)
            .collect()
    }

    /// Every process of this node: SIGKILL by the (pid, start time) this test saw below the
    /// process it started.
    fn stop(&mut self) {
        self.refresh();
        for pid in self.live(&processes()) {
            // SAFETY: a process this test started, or one seen below it, still the same
            // process (its start time unchanged).
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = self.child.wait();
    }
}

/// A Ray cluster on loopback: a head and a second node, 1 CPU each, separate processes.
struct Cluster {
    nodes: Vec<Node>,
    address: String,
    /// The head's Ray Client server: `ray://IP:PORT`.
    client: String,
    temp: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.iter_mut().rev() {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.temp);
    }
}

/// Ray's environment for every process of the cluster and the driver.
fn ray_env(cmd: &mut Command) -> &mut Command {
    cmd.env("RAY_USAGE_STATS_ENABLED", "0")
        .env("LOOKOUT_OFFLINE", "1")
        .env_remove("LOOKOUT_MODELS")
        .env_remove("DISPLAY")
        .env_remove("RAY_ADDRESS")
        // A lost node is noticed in seconds, not the default half minute.
        // (Generous enough for a loaded 2-core CI machine not to lose a live node.)
        .env("RAY_health_check_period_ms", "1000")
        .env("RAY_health_check_timeout_ms", "3000")
        .env("RAY_health_check_failure_threshold", "5")
}

impl Cluster {
    /// Ray rewrites 127.0.0.1 to the machine's outward address; 127.0.0.2 is loopback too
    /// and kept as given, so nothing leaves the machine.
    const IP: &'static str = "127.0.0.2";

    fn start(bin: &Path, logs: &Path) -> Cluster {
        let temp = PathBuf::from(format!("/tmp/lkf-{}", std::process::id()));
        let port = free_port();
        let mut cluster = Cluster {
            nodes: Vec::new(),
            address: format!("{}:{port}", Self::IP),
            client: format!("ray://{}:{}", Self::IP, free_port()),
            temp: temp.clone(),
        };
        let ray = bin.join("ray");
        for (i, name) in ["head", "second"].iter().enumerate() {
            let log = logs.join(format!("ray-{name}.log"));
            let mut cmd = Command::new(&ray);
            ray_env(&mut cmd).args(["start", "--block", "--num-cpus=1", "--disable-usage-stats"]);
            cmd.arg(format!("--node-ip-address={}", Self::IP));
            cmd.arg(format!("--dashboard-agent-listen-port={}", free_port()));
            let first_worker_port = 20000 + (std::process::id() % 200) * 100 + i as u32 * 50;
            cmd.arg(format!("--min-worker-port={first_worker_port}"));
            cmd.arg(format!("--max-worker-port={}", first_worker_port + 49));
            if i == 0 {
                cmd.args(["--head", "--include-dashboard=false"]);
                cmd.arg(format!("--dashboard-port={}", free_port()));
                cmd.arg(format!("--port={port}"));
                let client_port = cluster.client.rsplit(':').next().unwrap();
                cmd.arg(format!("--ray-client-server-port={client_port}"));
                cmd.arg(format!("--temp-dir={}", s(&temp)));
            } else {
                cmd.arg(format!("--address={}", cluster.address));
            }
            let file = std::fs::File::create(&log).unwrap();
            let child = cmd
                .stdin(Stdio::null())
                .stdout(file.try_clone().unwrap())
                .stderr(file)
                .spawn()
                .expect("ray starts");
            cluster.nodes.push(Node {
                child,
                seen: BTreeMap::new(),
                log: log.clone(),
            });
            let start = Instant::now();
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Ray runtime started") {
                    break;
                }
                let node = cluster.nodes.last_mut().unwrap();
                node.refresh();
                if let Some(status) = node.child.try_wait().unwrap() {
                    panic!("ray start ({name}) exited with {status}: {text}");
                }
                assert!(
                    start.elapsed() < Duration::from_secs(120),
                    "the {name} node did not start: {text}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
            cluster.nodes.last_mut().unwrap().refresh();
        }
        cluster
    }

    /// The raylet of node `i`.
    fn raylet(&mut self, i: usize) -> u32 {
        let node = &mut self.nodes[i];
        node.refresh();
        let all = processes();
        node.live(&all)
            .into_iter()
            .find(|pid| all.get(pid).is_some_and(|p| p.comm == "raylet"))
            .unwrap_or_else(|| panic!("no raylet under {}", node.log.display()))
    }

    /// The `lookout batch --drive ID` processes running on node `i`: pid → drive id.
    fn lookouts_on(&mut self, i: usize) -> BTreeMap<u32, String> {
        let node = &mut self.nodes[i];
        node.refresh();
        let all = processes();
        node.live(&all)
            .into_iter()
            .filter_map(|pid| {
                let p = all.get(&pid)?;
                let at = p.cmdline.iter().position(|a| a == "--drive")?;
                let is_lookout = p.cmdline.first()?.ends_with("/lookout");
                let id = p.cmdline.get(at + 1)?;
                is_lookout.then(|| (pid, id.clone()))
            })
            .collect()
    }
}

fn fleet_run(
    bin: &Path,
    drives: &Drives,
    cluster: &Cluster,
    out: &Path,
    summary: &Path,
) -> Command {
    let mut cmd = Command::new(bin.join("lookout-fleet"));
    ray_env(&mut cmd)
        .args(["run", s(&drives.manifest), "--out", s(out)])
        .args(["--address", &cluster.address, "--cpus-per-drive", "1"])
        .args(["--max-retries", "2", "--summary", s(summary)])
        .arg("--lookout")
        .arg(env!("CARGO_BIN_EXE_lookout"))
        .arg("--weights")
        .arg(&drives.weights)
        .args(["--threads", "1"]);
    cmd
}

/// Frames drive `id`'s attempt by process `pid` has written so far (its partial folder).
fn frames_written(out: &Path, id: &str, pid: u32) -> usize {
    let suffix = format!(".{pid}");
    let Ok(entries) = std::fs::read_dir(out.join(".partial")) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| e.file_name().into_string().unwrap_or_default())
        .find(|name| name.starts_with(&format!("{id}.")) && name.ends_with(&suffix))
        .and_then(|name| {
            std::fs::read_to_string(out.join(".partial").join(name).join("detections.jsonl")).ok()
        })
        .map_or(0, |text| text.lines().count())
}

/// Which drives a `lookout-fleet run --summary` ran, in the order they finished.
fn summary_ids(summary: &Path) -> Vec<String> {
    json(summary)["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn fleet_on_two_ray_nodes_equals_lookout_batch_survives_a_killed_raylet_and_resumes() {
    let Some(bin) = fleet_venv() else {
        return;
    };
    let Some(drives) = fleet_drives() else {
        return;
    };
    let sequential = drives.root.join("sequential");
    let reference = batch(&drives, &sequential, &[]);
    assert_eq!(
        reference.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&reference.stderr)
    );
    let mut cluster = Cluster::start(&bin, &drives.root);

    // The fleet run, with the second node's raylet killed while it runs a long drive.
    let out = drives.root.join("fleet");
    let summary = drives.root.join("summary.json");
    let log = drives.root.join("fleet-run.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut run = fleet_run(&bin, &drives, &cluster, &out, &summary)
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap();
    let start = Instant::now();
    let (killed_pid, killed_drive) = loop {
        let running = cluster.lookouts_on(1);
        let long = running
            .iter()
            .find(|(pid, id)| {
                let Some((_, frames)) = LONG_DRIVES.iter().find(|(long, _)| long == id) else {
                    return false;
                };
                let written = frames_written(&out, id, **pid);
                written >= 1 && written <= frames / 2
            })
            .map(|(pid, id)| (*pid, id.clone()));
        if let Some(found) = long {
            break found;
        }
        if let Some(status) = run.try_wait().unwrap() {
            panic!(
                "the fleet run ended ({status}) before the second node ran a long drive: {}",
                std::fs::read_to_string(&log).unwrap()
            );
        }
        assert!(
            start.elapsed() < Duration::from_secs(180),
            "no drive ran on the second node"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let raylet = cluster.raylet(1);
    // SAFETY: the second node's raylet, started by this test.
    unsafe { libc::kill(raylet as libc::pid_t, libc::SIGKILL) };
    let killed = Instant::now();
    while alive(killed_pid) {
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "the lost node's lookout (pid {killed_pid}) still runs 3 s after its raylet died"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "the lost node's lookout stopped {:?} after its raylet",
        killed.elapsed()
    );
    let status = loop {
        if let Some(status) = run.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(300),
            "the fleet run did not finish: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    eprintln!(
        "killed raylet {raylet} while pid {killed_pid} ran drive {killed_drive}; the run said:\n{text}"
    );
    // Exit 4: every drive ran, the corrupt one failed (and is named with its error).
    assert_eq!(status.code(), Some(4), "{text}");
    assert!(text.contains(&format!("drive {CORRUPT}: FAILED")), "{text}");

    // Nothing lost, nothing duplicated, no half result; the same detections as the batch.
    assert_whole(&out, &drives.ids);
    for id in drives.good() {
        assert_eq!(
            detections(&out.join(id)),
            detections(&sequential.join(id)),
            "drive {id}: the fleet's detections differ from lookout batch's"
        );
    }
    let retried = json(&out.join(&killed_drive).join("done.json"));
    assert_ne!(
        retried["attempt"]["pid"], killed_pid,
        "drive {killed_drive} was kept from the killed attempt: {retried}"
    );
    let ran = summary_ids(&summary);
    assert_eq!(ran.len(), 8, "{ran:?}");
    assert_eq!(
        ran.iter().collect::<BTreeSet<_>>().len(),
        8,
        "a drive ran twice: {ran:?}"
    );
    for entry in std::fs::read_dir(out.join(".partial")).unwrap().flatten() {
        // Only the killed attempt may have left its hidden folder, and its process is gone.
        let name = entry.file_name().into_string().unwrap();
        assert!(
            name.starts_with(&format!("{killed_drive}.")),
            "an unexpected partial folder {name}"
        );
    }

    // The report: the fleet against the sequential batch, drive by drive.
    let report = run_with_deadline(
        Command::new(bin.join("lookout-fleet")).args([
            "report",
            s(&out),
            "--compare",
            s(&sequential),
        ]),
        Duration::from_secs(60),
    );
    assert!(
        report.status.success(),
        "{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let comparison = json(&out.join("compare.json"));
    assert_eq!(comparison["only_a"], serde_json::json!([]));
    assert_eq!(comparison["only_b"], serde_json::json!([]));
    let rows = comparison["drives"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    for row in rows {
        assert_eq!(row["detections_delta"], 0, "{row}");
    }
    let report = run_with_deadline(
        Command::new(bin.join("lookout-fleet")).args(["report", s(&out)]),
        Duration::from_secs(60),
    );
    assert!(report.status.success());
    let summary_json = json(&out.join("report.json"));
    let frames: u64 = drives
        .ids
        .iter()
        .map(|id| {
            json(&out.join(id).join("done.json"))["frames"]["processed"]
                .as_u64()
                .unwrap()
        })
        .sum();
    assert_eq!(summary_json["total"]["frames"], frames);
    assert_eq!(summary_json["total"]["failed"], 1);
    assert_eq!(summary_json["failures"][0]["id"], CORRUPT);
    let page = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(page.contains("<svg") && page.contains(CORRUPT));
    assert!(
        !page.contains("src=") && !page.contains("<script"),
        "not self-contained"
    );

    // A re-run on the head alone skips the done drives (only the failed one runs again).
    let before = done_records(&out, drives.good());
    let rerun = run_with_deadline(
        fleet_run(&bin, &drives, &cluster, &out, &summary),
        Duration::from_secs(300),
    );
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    assert_eq!(rerun.status.code(), Some(4), "{stderr}");
    assert_eq!(summary_ids(&summary), [CORRUPT]);
    assert_eq!(json(&summary)["skipped"], 7);
    assert_eq!(done_records(&out, drives.good()), before);
    // Removing one result redoes exactly that one.
    // (Both drives to redo, kitti_raw and the failed one, in one task: --drives-per-task.)
    std::fs::remove_dir_all(out.join("kitti_raw")).unwrap();
    let mut grouped = fleet_run(&bin, &drives, &cluster, &out, &summary);
    grouped.args(["--drives-per-task", "2"]);
    let rerun = run_with_deadline(grouped, Duration::from_secs(300));
    assert_eq!(
        rerun.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    let mut ran = summary_ids(&summary);
    ran.sort();
    assert_eq!(ran, ["corrupt", "kitti_raw"]);
    let results = json(&summary)["results"].clone();
    assert_eq!(
        results[0]["pid"], results[1]["pid"],
        "one lookout process for the task's two drives: {results}"
    );
    assert_whole(&out, &drives.ids);
    assert_eq!(
        detections(&out.join("kitti_raw")),
        detections(&sequential.join("kitti_raw"))
    );
    let after = done_records(&out, drives.good());
    for id in drives.good() {
        if *id != "kitti_raw" {
            assert_eq!(after[*id], before[*id], "drive {id} was redone");
        }
    }

    // A lookout binary the workers do not have is one line naming it, not a traceback.
    let mut missing = fleet_run(&bin, &drives, &cluster, &out, &summary);
    missing.arg("--lookout").arg("/nonexistent/lookout");
    let missing = run_with_deadline(missing, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert_eq!(missing.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("lookout binary `/nonexistent/lookout` not found")
            && !stderr.contains("Traceback"),
        "{stderr}"
    );

    // Through Ray Client (ray://, a driver outside the cluster): the done drives skipped,
    // the failed one run again.
    let mut client = fleet_run(&bin, &drives, &cluster, &out, &summary);
    client.args(["--address", &cluster.client]);
    let started = Instant::now();
    let client = run_with_deadline(client, Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&client.stderr);
    assert_eq!(client.status.code(), Some(4), "{stderr}");
    assert_eq!(summary_ids(&summary), [CORRUPT], "{stderr}");
    assert_eq!(json(&summary)["skipped"], 7);
    eprintln!(
        "the run through {} took {:?}",
        cluster.client,
        started.elapsed()
    );
    drop(cluster);
}
