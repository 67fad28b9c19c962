//! The result folder of a batch: `OUT/<drive-id>/` holds a drive's whole result, or nothing.
//! A drive is written into `OUT/.partial/<id>.<host>.<pid>/` and renamed into place once its
//! `done.json` is written and every file is synced, so a crash or a lost node never leaves
//! a folder that looks whole; an attempt that dies leaves only its hidden partial folder,
//! which a later attempt on the same host removes once its process is gone.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::BatchError;

/// The folder of unfinished attempts inside a result folder.
pub const PARTIAL_DIR: &str = ".partial";
/// A drive's record, written last.
pub const DONE_FILE: &str = "done.json";
/// The per-frame detections (`lookout run --jsonl`).
pub const DETECTIONS_FILE: &str = "detections.jsonl";
/// The run's metrics summary (`lookout run --metrics`).
pub const METRICS_FILE: &str = "metrics.json";

/// What decides whether a stored result is still the one asked for: the same binary
/// (version and content), source, frame limit, weights (by content) and detector settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunKey {
    pub lookout_version: String,
    /// SHA-256 of the lookout executable that ran: a rebuild at the same version is another
    /// key. Empty in records written before it was kept (they are stale).
    #[serde(default)]
    pub lookout_binary_sha256: String,
    pub source: String,
    pub max_frames: Option<u64>,
    pub weights_sha256: String,
    /// The detector's and tracker's options, canonical (sorted keys).
    pub settings: serde_json::Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    Failed,
}

/// Frames read, processed and lost (file sources lose none: replay is lossless).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrameTally {
    #[serde(rename = "in")]
    pub frames_in: u64,
    pub processed: u64,
    pub dropped: u64,
}

/// Who wrote a result: the host and process of the attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptId {
    pub host: String,
    pub pid: u32,
}

/// `done.json`: how a drive ended and with what it was run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DoneRecord {
    pub drive: String,
    pub status: Status,
    /// Why it failed, on one line.
    pub error: Option<String>,
    #[serde(flatten)]
    pub key: RunKey,
    /// The model as the run named it (variant, device, threads); empty when none loaded.
    pub model: String,
    pub weights: String,
    pub frames: FrameTally,
    pub detections: u64,
    pub duration_s: f64,
    pub finished_unix_s: u64,
    pub attempt: AttemptId,
}

/// Where a drive stands in a result folder against the run asked for.
#[derive(Debug, Clone, PartialEq)]
pub enum DriveState {
    /// Done with the same key: skipped.
    Done,
    /// Failed before (with this error): run again.
    Failed(String),
    /// Done or failed with another key (version, weights, settings): run again.
    Stale,
    /// No result.
    Missing,
}

impl DriveState {
    pub fn name(&self) -> &'static str {
        match self {
            DriveState::Done => "done",
            DriveState::Failed(_) => "failed",
            DriveState::Stale => "stale",
            DriveState::Missing => "missing",
        }
    }
}

/// A batch's result folder.
#[derive(Debug, Clone)]
pub struct ResultStore {
    root: PathBuf,
    host: String,
}

impl ResultStore {
    /// Opens (creating it if needed) the result folder `root`.
    pub fn open(root: &Path) -> Result<ResultStore, BatchError> {
        let partial = root.join(PARTIAL_DIR);
        std::fs::create_dir_all(&partial).map_err(|source| BatchError::Io {
            what: "create the result folder",
            path: partial,
            source,
        })?;
        Ok(ResultStore {
            root: root.to_path_buf(),
            host: hostname(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The folder of drive `id`'s result.
    pub fn drive_dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    /// The stored record of drive `id`, if it has a readable one.
    pub fn record(&self, id: &str) -> Option<DoneRecord> {
        read_record(&self.drive_dir(id).join(DONE_FILE))
    }

    /// Where drive `id` stands against `key`.
    pub fn state(&self, id: &str, key: &RunKey) -> DriveState {
        match self.record(id) {
            None => DriveState::Missing,
            Some(r) if r.key != *key => DriveState::Stale,
            Some(r) => match r.status {
                Status::Ok => DriveState::Done,
                Status::Failed => DriveState::Failed(r.error.unwrap_or_default()),
            },
        }
    }

    /// The identity of attempts made by this process.
    pub fn attempt_id(&self) -> AttemptId {
        AttemptId {
            host: self.host.clone(),
            pid: std::process::id(),
        }
    }

    /// Starts an attempt at drive `id` in a new partial folder, first removing this host's
    /// earlier attempts at it whose process is gone (killed before it could clean up).
    pub fn begin(&self, id: &str) -> Result<Attempt, BatchError> {
        let partial = self.root.join(PARTIAL_DIR);
        let prefix = format!("{id}.{}.", self.host);
        if let Ok(entries) = std::fs::read_dir(&partial) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                // `<pid>` or `<pid>.old` (a result being replaced when the process died).
                let pid = name
                    .strip_prefix(&prefix)
                    .and_then(|rest| rest.split('.').next())
                    .and_then(|p| p.parse::<u32>().ok());
                let Some(pid) = pid else {
                    continue;
                };
                if pid != std::process::id() && !process_alive(pid) {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = partial.join(format!("{prefix}{}", std::process::id()));
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|source| BatchError::Io {
                what: "clear an earlier attempt's folder",
                path: dir.clone(),
                source,
            })?;
        }
        std::fs::create_dir_all(&dir).map_err(|source| BatchError::Io {
            what: "create an attempt folder",
            path: dir.clone(),
            source,
        })?;
        Ok(Attempt {
            dir,
            final_dir: self.drive_dir(id),
            committed: false,
        })
    }
}

/// How a commit ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Committed {
    /// This attempt's result is in place.
    Written,
    /// Another attempt had already put a good result with the same key in place; this one
    /// was dropped (a retried task whose first try finished after all).
    AlreadyDone,
}

/// One attempt at a drive: files go into [`Attempt::dir`]; [`Attempt::commit`] moves them
/// into place, dropping it unfinished removes them.
#[derive(Debug)]
pub struct Attempt {
    dir: PathBuf,
    final_dir: PathBuf,
    committed: bool,
}

impl Attempt {
    /// The folder to write this attempt's files into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `record` as `done.json`, syncs every file, and renames the folder into place.
    /// A result already there is replaced, unless it is a good one with the same key.
    pub fn commit(mut self, record: &DoneRecord) -> Result<Committed, BatchError> {
        let io = |what: &'static str, path: &Path| {
            let path = path.to_path_buf();
            move |source| BatchError::Io { what, path, source }
        };
        let done = self.dir.join(DONE_FILE);
        let json = serde_json::to_string_pretty(record).expect("a record serialises") + "\n";
        std::fs::write(&done, json).map_err(io("write", &done))?;
        sync_folder_files(&self.dir).map_err(io("sync", &self.dir))?;
        let parent = self.final_dir.parent().unwrap_or(Path::new("."));
        // A concurrent attempt may be replacing the same drive: a few rounds settle it.
        for _ in 0..5 {
            if let Some(existing) = read_record(&self.final_dir.join(DONE_FILE)) {
                if existing.status == Status::Ok && existing.key == record.key {
                    std::fs::remove_dir_all(&self.dir).map_err(io("remove", &self.dir))?;
                    self.committed = true;
                    return Ok(Committed::AlreadyDone);
                }
            }
            if self.final_dir.exists() {
                // Moved aside (not deleted in place) so that no reader sees half a folder.
                let old = PathBuf::from(format!("{}.old", self.dir.display()));
                match std::fs::rename(&self.final_dir, &old) {
                    Ok(()) => {
                        let _ = std::fs::remove_dir_all(&old);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io("move aside", &self.final_dir)(e)),
                }
            }
            match std::fs::rename(&self.dir, &self.final_dir) {
                Ok(()) => {
                    let _ = sync_dir(parent);
                    self.committed = true;
                    return Ok(Committed::Written);
                }
                // Another attempt put its folder there in between: look again.
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::DirectoryNotEmpty | std::io::ErrorKind::AlreadyExists
                    ) => {}
                Err(e) => return Err(io("rename into place", &self.dir)(e)),
            }
        }
        Err(BatchError::Contended {
            path: self.final_dir.clone(),
        })
    }
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn read_record(path: &Path) -> Option<DoneRecord> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

/// fsync of every file in `dir` and of `dir` itself.
fn sync_folder_files(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    sync_dir(dir)
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Whether process `pid` exists on this host.
fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// This machine's host name, folder-safe (`unknown` when it cannot be read).
fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates within it
    // or truncates, and the last byte stays 0.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len() - 1) };
    let name = if rc == 0 {
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        String::new()
    };
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() {
        "unknown".into()
    } else {
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(conf: f64) -> RunKey {
        RunKey {
            lookout_version: "0.1.0".into(),
            lookout_binary_sha256: "cd".into(),
            source: "/d/a.mp4".into(),
            max_frames: None,
            weights_sha256: "ab".into(),
            settings: serde_json::json!({ "conf": conf }),
        }
    }

    fn record(store: &ResultStore, id: &str, key: RunKey, status: Status) -> DoneRecord {
        DoneRecord {
            drive: id.into(),
            status,
            error: (status == Status::Failed).then(|| "boom".into()),
            key,
            model: "m".into(),
            weights: "w".into(),
            frames: FrameTally::default(),
            detections: 0,
            duration_s: 0.0,
            finished_unix_s: 0,
            attempt: store.attempt_id(),
        }
    }

    fn write_attempt(store: &ResultStore, id: &str, k: RunKey, s: Status) -> Committed {
        let attempt = store.begin(id).unwrap();
        std::fs::write(attempt.dir().join(DETECTIONS_FILE), format!("{s:?}\n")).unwrap();
        let r = record(store, id, k, s);
        attempt.commit(&r).unwrap()
    }

    #[test]
    fn a_result_appears_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::open(dir.path()).unwrap();
        assert_eq!(store.state("a", &key(0.25)), DriveState::Missing);
        let attempt = store.begin("a").unwrap();
        std::fs::write(attempt.dir().join(DETECTIONS_FILE), "x\n").unwrap();
        assert!(
            !store.drive_dir("a").exists(),
            "nothing in place before the commit"
        );
        drop(attempt);
        assert_eq!(
            std::fs::read_dir(dir.path().join(PARTIAL_DIR))
                .unwrap()
                .count(),
            0,
            "an abandoned attempt leaves nothing"
        );
        assert_eq!(
            write_attempt(&store, "a", key(0.25), Status::Ok),
            Committed::Written
        );
        assert_eq!(store.state("a", &key(0.25)), DriveState::Done);
        assert_eq!(store.state("a", &key(0.3)), DriveState::Stale);
        let files: Vec<_> = std::fs::read_dir(store.drive_dir("a"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(files.len(), 2, "{files:?}");
    }

    #[test]
    fn a_good_result_is_kept_and_failed_or_stale_ones_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::open(dir.path()).unwrap();
        write_attempt(&store, "a", key(0.25), Status::Failed);
        assert_eq!(
            store.state("a", &key(0.25)),
            DriveState::Failed("boom".into())
        );
        assert_eq!(
            write_attempt(&store, "a", key(0.25), Status::Ok),
            Committed::Written
        );
        assert_eq!(store.state("a", &key(0.25)), DriveState::Done);
        // A late retry with the same key finds the good result and drops its own.
        assert_eq!(
            write_attempt(&store, "a", key(0.25), Status::Failed),
            Committed::AlreadyDone
        );
        assert_eq!(store.state("a", &key(0.25)), DriveState::Done);
        // Other settings replace it.
        assert_eq!(
            write_attempt(&store, "a", key(0.5), Status::Ok),
            Committed::Written
        );
        assert_eq!(store.state("a", &key(0.5)), DriveState::Done);
        let text = std::fs::read_to_string(store.drive_dir("a").join(DETECTIONS_FILE)).unwrap();
        assert_eq!(text, "Ok\n");
        let leftovers = std::fs::read_dir(dir.path().join(PARTIAL_DIR))
            .unwrap()
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn attempts_of_dead_processes_are_cleared_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::open(dir.path()).unwrap();
        let partial = dir.path().join(PARTIAL_DIR);
        let host = hostname();
        // pid 0 / a huge pid: no such process; our parent: alive.
        let dead = partial.join(format!("a.{host}.{}", i32::MAX - 1));
        let alive = partial.join(format!("a.{host}.{}", std::os::unix::process::parent_id()));
        let other = partial.join(format!("b.{host}.{}", i32::MAX - 1));
        for d in [&dead, &alive, &other] {
            std::fs::create_dir_all(d).unwrap();
        }
        let attempt = store.begin("a").unwrap();
        assert!(!dead.exists() && alive.exists() && other.exists());
        drop(attempt);
    }

    #[test]
    fn records_round_trip_with_the_key_flattened() {
        let dir = tempfile::tempdir().unwrap();
        let store = ResultStore::open(dir.path()).unwrap();
        let r = record(&store, "a", key(0.25), Status::Ok);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["status"], "ok");
        assert_eq!(json["weights_sha256"], "ab");
        assert_eq!(json["settings"]["conf"], 0.25);
        let back: DoneRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, r);
    }
}
