//! Replaying a drive: manifest and index read up front, frames decoded one by one.
//!
//! Damage never stops a replay: a torn or garbled index line, a missing or undecodable frame
//! file and a path that leaves the drive folder are skipped, counted in [`DriveStats`] and
//! logged. Frames are renumbered from 0; `pts_ns` is the recorded capture time relative to
//! the first indexed frame, which is what `--pace realtime` follows.
//!
//! Frame files are read into one byte buffer kept between frames and decoded into buffers
//! from the pipeline's [`FramePool`] (see [`FrameSource::use_pool`]).

use std::path::{Component, Path, PathBuf};

use super::{FrameSource, SourceError, SourceInfo};
use crate::drive::index::{escape_control, IndexEntry, INDEX_HEADER, MAX_REPEATED_WARNINGS};
use crate::drive::{DriveError, DriveManifest, INDEX_FILE, MANIFEST_FILE, MANIFEST_JSON_FILE};
use crate::types::{mono_now_ns, wall_now_ns, Frame, FramePool};

/// What a replay skipped, by cause.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DriveStats {
    pub frames_read: u64,
    /// A last index line cut off by a crash (no newline).
    pub torn_index_lines: u64,
    /// Index lines that do not parse.
    pub bad_index_lines: u64,
    pub missing_files: u64,
    pub corrupt_files: u64,
    /// Frame paths that leave the drive folder (`..`, absolute, symlinks out).
    pub refused_paths: u64,
}

impl DriveStats {
    /// Everything the index announced that was not delivered.
    pub fn skipped(&self) -> u64 {
        self.torn_index_lines
            + self.bad_index_lines
            + self.missing_files
            + self.corrupt_files
            + self.refused_paths
    }
}

/// A drive folder replayed as a frame source.
pub struct DriveReader {
    /// Canonical, so that frame paths can be checked to stay inside it.
    dir: PathBuf,
    manifest: DriveManifest,
    entries: Vec<IndexEntry>,
    next_entry: usize,
    first_mono_ns: Option<u64>,
    next_seq: u64,
    stats: DriveStats,
    last_skip: Option<String>,
    /// Skipped frames warned about so far (see [`DriveReader::skip`]).
    warned_skips: usize,
    /// Where decoded frames' buffers come from (and go back to, after the sinks).
    pool: FramePool,
    /// The encoded bytes of the frame file being read, reused between frames.
    file_bytes: Vec<u8>,
}

impl DriveReader {
    pub fn open(dir: &Path) -> Result<Self, DriveError> {
        let dir = dir
            .canonicalize()
            .map_err(|e| DriveError::io(format!("opening drive {}", dir.display()), e))?;
        let manifest = read_manifest(&dir)?;
        let index_path = dir.join(INDEX_FILE);
        let bytes = std::fs::read(&index_path)
            .map_err(|e| DriveError::io(format!("reading {}", index_path.display()), e))?;
        let mut stats = DriveStats::default();
        let (entries, problems) = parse_index(&String::from_utf8_lossy(&bytes), &mut stats);
        // A few lines one by one, then a count: a damaged index does not flood the terminal.
        for problem in problems.iter().take(MAX_REPEATED_WARNINGS) {
            tracing::warn!("{}: {problem}", index_path.display());
        }
        if problems.len() > MAX_REPEATED_WARNINGS {
            tracing::warn!(
                "{}: {} more damaged lines skipped, not listed ({} torn and {} bad index lines in all)",
                index_path.display(),
                problems.len() - MAX_REPEATED_WARNINGS,
                stats.torn_index_lines,
                stats.bad_index_lines
            );
        }
        Ok(Self {
            first_mono_ns: entries.first().map(|e| e.capture_mono_ns),
            dir,
            manifest,
            entries,
            next_entry: 0,
            next_seq: 0,
            stats,
            last_skip: None,
            warned_skips: 0,
            pool: FramePool::default(),
            file_bytes: Vec::new(),
        })
    }

    pub fn manifest(&self) -> &DriveManifest {
        &self.manifest
    }

    pub fn stats(&self) -> DriveStats {
        self.stats
    }

    /// Frames announced by the index (or its torn/garbled lines) but not delivered.
    pub fn skipped_frames(&self) -> u64 {
        self.stats.skipped()
    }

    /// Says why a frame is skipped: the first few one by one, then once that the rest are
    /// only counted (in the run's summary note).
    fn skip(&mut self, why: String) {
        let why = escape_control(&why);
        match self.warned_skips.cmp(&MAX_REPEATED_WARNINGS) {
            std::cmp::Ordering::Less => tracing::warn!("drive {}: {why}", self.dir.display()),
            std::cmp::Ordering::Equal => tracing::warn!(
                "drive {}: more frames skipped; not listed one by one, the summary counts them",
                self.dir.display()
            ),
            std::cmp::Ordering::Greater => {}
        }
        self.warned_skips += 1;
        self.last_skip = Some(why);
    }

    /// Loads the frame of index entry `i`, or says why it is skipped (and counts it).
    fn load(&mut self, i: usize) -> Option<image::RgbImage> {
        let entry = &self.entries[i];
        let why = match resolve_inside(&self.dir, &entry.file) {
            Ok(path) => {
                match crate::imageio::read_rgb_pooled(&path, &mut self.file_bytes, &self.pool) {
                    Ok(image) => return Some(image),
                    Err(e) => {
                        self.stats.corrupt_files += 1;
                        format!("frame {}: {e}", entry.seq)
                    }
                }
            }
            Err(Refusal::Missing) => {
                self.stats.missing_files += 1;
                format!("frame {}: file {} is missing", entry.seq, entry.file)
            }
            Err(Refusal::Outside(why)) => {
                self.stats.refused_paths += 1;
                format!("frame {}: refused path `{}`: {why}", entry.seq, entry.file)
            }
        };
        self.skip(why);
        None
    }
}

impl FrameSource for DriveReader {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        while self.next_entry < self.entries.len() {
            let i = self.next_entry;
            self.next_entry += 1;
            let Some(image) = self.load(i) else {
                continue;
            };
            let entry = &self.entries[i];
            let first = self.first_mono_ns.unwrap_or(entry.capture_mono_ns);
            let frame = Frame {
                seq: self.next_seq,
                capture_mono_ns: mono_now_ns(),
                capture_wall_ns: wall_now_ns(),
                pts_ns: Some(entry.capture_mono_ns as i64 - first as i64),
                image,
            };
            self.next_seq += 1;
            self.stats.frames_read += 1;
            return Ok(Some(frame));
        }
        Ok(None)
    }

    fn info(&self) -> SourceInfo {
        let m = &self.manifest;
        let s = self.stats;
        let note = (s.skipped() > 0).then(|| {
            format!(
                "skipped {} frames: {} torn and {} bad index lines, {} missing, {} corrupt, {} refused files{}",
                s.skipped(),
                s.torn_index_lines,
                s.bad_index_lines,
                s.missing_files,
                s.corrupt_files,
                s.refused_paths,
                self.last_skip
                    .as_ref()
                    .map(|w| format!(" (last: {w})"))
                    .unwrap_or_default()
            )
        });
        // An anonymised drive says so wherever the source is named (the summary, metrics.json):
        // people in it are covered, and detections on them are detections on covered pixels.
        let anonymised = m
            .privacy
            .as_ref()
            .map(|p| format!(", anonymised: {} of {} by {}", p.method, p.classes, p.model))
            .unwrap_or_default();
        SourceInfo {
            description: format!(
                "drive {} ({}x{}, {} fps, {} frames, recorded from {}{anonymised})",
                self.dir.display(),
                m.width,
                m.height,
                m.fps,
                self.entries.len(),
                m.source
            ),
            nominal_fps: Some(m.fps),
            frame_count: Some(self.entries.len() as u64),
            size: Some((m.width, m.height)),
            live: false,
            ended_early: false,
            skipped_frames: s.skipped(),
            note,
        }
    }

    fn calibration_path(&self) -> Option<PathBuf> {
        let name = self.manifest.calibration.as_ref()?;
        resolve_inside(&self.dir, name).ok()
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.pool = pool;
    }
}

fn read_manifest(dir: &Path) -> Result<DriveManifest, DriveError> {
    let toml_path = dir.join(MANIFEST_FILE);
    let json_path = dir.join(MANIFEST_JSON_FILE);
    let (path, parsed) = if toml_path.is_file() {
        let text = read_text(&toml_path)?;
        (toml_path, toml::from_str(&text).map_err(|e| e.to_string()))
    } else if json_path.is_file() {
        let text = read_text(&json_path)?;
        (
            json_path,
            serde_json::from_str(&text).map_err(|e| e.to_string()),
        )
    } else {
        return Err(DriveError::NoManifest {
            dir: dir.to_path_buf(),
        });
    };
    let manifest: DriveManifest = parsed.map_err(|reason| DriveError::Manifest {
        path: path.clone(),
        reason,
    })?;
    manifest.validate(&path)?;
    Ok(manifest)
}

fn read_text(path: &Path) -> Result<String, DriveError> {
    std::fs::read_to_string(path)
        .map_err(|e| DriveError::io(format!("reading {}", path.display()), e))
}

/// Parses the whole index: good entries, and a message per skipped line (counted in
/// `stats`). A last line without its newline was cut off mid-write and is always skipped.
fn parse_index(text: &str, stats: &mut DriveStats) -> (Vec<IndexEntry>, Vec<String>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let torn_tail = !text.is_empty() && !text.ends_with('\n');
    let line_count = text.lines().count();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if (i == 0 && line == INDEX_HEADER) || line.trim().is_empty() {
            continue;
        }
        if torn_tail && i + 1 == line_count {
            stats.torn_index_lines += 1;
            problems.push(format!(
                "line {}: torn last line `{}` skipped",
                i + 1,
                escape_control(line)
            ));
            continue;
        }
        match IndexEntry::parse(line) {
            Ok(entry) => entries.push(entry),
            Err(why) => {
                stats.bad_index_lines += 1;
                problems.push(format!("line {}: {}; skipped", i + 1, escape_control(&why)));
            }
        }
    }
    (entries, problems)
}

enum Refusal {
    Missing,
    Outside(&'static str),
}

/// `relative` under `dir` (canonical), refusing absolute paths, `..`, and symlinks that
/// resolve outside `dir`.
fn resolve_inside(dir: &Path, relative: &str) -> Result<PathBuf, Refusal> {
    let relative_path = Path::new(relative);
    for component in relative_path.components() {
        match component {
            Component::Normal(_) | Component::CurDir => {}
            Component::ParentDir => return Err(Refusal::Outside("`..` leaves the drive folder")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(Refusal::Outside("absolute paths are not allowed"))
            }
        }
    }
    let joined = dir.join(relative_path);
    let resolved = match joined.canonicalize() {
        Ok(resolved) => resolved,
        Err(_) if joined.symlink_metadata().is_ok() => {
            return Err(Refusal::Outside("a symlink that does not resolve"))
        }
        Err(_) => return Err(Refusal::Missing),
    };
    if resolved.starts_with(dir) {
        Ok(resolved)
    } else {
        Err(Refusal::Outside(
            "a symlink resolving outside the drive folder",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_parsing_counts_torn_and_bad_lines() {
        let text = format!(
            "{INDEX_HEADER}\n0,10,20,,frames/00000000.png\nnonsense\n1,30,40,5,frames/00000001.png\n2,50,6"
        );
        let mut stats = DriveStats::default();
        let (entries, problems) = parse_index(&text, &mut stats);
        assert_eq!(entries.len(), 2);
        assert_eq!(stats.torn_index_lines, 1);
        assert_eq!(stats.bad_index_lines, 1);
        assert_eq!(problems.len(), 2);
        assert!(problems[1].contains("torn"), "{problems:?}");
    }

    /// Issue 12: control bytes of a damaged index reached the terminal raw.
    #[test]
    fn index_problems_escape_control_bytes() {
        let text = "0,10,20,,frames/a.png\n\u{1b}[2J\u{7},1,2,,f\n1,2,3,,x\u{1b}]0;owned";
        let mut stats = DriveStats::default();
        let (_, problems) = parse_index(text, &mut stats);
        assert_eq!(problems.len(), 2, "{problems:?}");
        for p in &problems {
            assert!(!p.chars().any(char::is_control), "{p:?}");
        }
        assert!(problems[0].contains("\\x1b[2J\\x07"), "{problems:?}");
    }

    #[test]
    fn a_hand_made_json_manifest_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        let json = r#"{"version":1,"created":"2024-05-01T10:00:00Z","source":"phone","width":4,
            "height":2,"fps":30.0,"frame_format":"png"}"#;
        std::fs::write(tmp.path().join(MANIFEST_JSON_FILE), json).unwrap();
        let manifest = read_manifest(tmp.path()).unwrap();
        assert_eq!((manifest.width, manifest.height), (4, 2));
        let err = read_manifest(&tmp.path().join("nowhere")).unwrap_err();
        assert!(
            err.to_string().contains("has no drive.toml or drive.json"),
            "{err}"
        );
    }

    #[test]
    fn a_complete_last_line_is_not_torn() {
        let mut stats = DriveStats::default();
        let (entries, _) = parse_index("0,1,2,3,frames/a.png\n", &mut stats);
        assert_eq!(entries.len(), 1);
        assert_eq!(stats, DriveStats::default());
    }

    #[test]
    fn paths_leaving_the_drive_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        std::fs::create_dir(dir.join("frames")).unwrap();
        std::fs::write(dir.join("frames/a.png"), b"x").unwrap();
        assert!(resolve_inside(&dir, "frames/a.png").is_ok());
        assert!(resolve_inside(&dir, "./frames/a.png").is_ok());
        assert!(matches!(
            resolve_inside(&dir, "frames/b.png"),
            Err(Refusal::Missing)
        ));
        for bad in ["../../etc/passwd", "/etc/passwd", "frames/../../x"] {
            assert!(
                matches!(resolve_inside(&dir, bad), Err(Refusal::Outside(_))),
                "{bad}"
            );
        }
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("/etc/hostname", dir.join("frames/link.png")).unwrap();
            assert!(matches!(
                resolve_inside(&dir, "frames/link.png"),
                Err(Refusal::Outside(_))
            ));
        }
    }
}
