//! The drive list of `lookout batch`: one source per line, or a TOML / JSON list of drives
//! with ids. Parsed and checked once (ids unique and usable as folder names, relative
//! paths made absolute against the manifest's folder); whether a source opens is each
//! drive's own business, so one bad drive never stops the batch.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::BatchError;

/// The longest drive id (a folder name on every file system).
pub const MAX_ID_LEN: usize = 128;

/// One drive of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveEntry {
    /// Unique in the manifest; the name of its result folder.
    pub id: String,
    /// What `lookout run --source` takes, relative paths already made absolute.
    pub source: String,
    /// At most this many frames (needed for endless sources such as `synthetic:`).
    pub max_frames: Option<u64>,
}

/// The drives of a manifest, in its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub drives: Vec<DriveEntry>,
}

/// A drive as TOML or JSON spell it.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDrive {
    Path(String),
    Table {
        id: Option<String>,
        source: String,
        #[serde(default)]
        max_frames: Option<u64>,
    },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TomlManifest {
    #[serde(default)]
    drive: Vec<RawDrive>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum JsonManifest {
    List(Vec<RawDrive>),
    Object { drive: Vec<RawDrive> },
}

impl Manifest {
    /// Reads and checks a manifest file: `.toml` (`[[drive]]` tables), `.json` (a list, or
    /// `{"drive": [...]}`), anything else one source per line (`#` comments).
    pub fn load(path: &Path) -> Result<Manifest, BatchError> {
        let text = std::fs::read_to_string(path).map_err(|source| BatchError::ReadManifest {
            path: path.to_path_buf(),
            source,
        })?;
        let base = match path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let base = std::path::absolute(&base).unwrap_or(base);
        Manifest::parse(&text, path, &base)
    }

    /// Parses `text` (read from `path`, which decides the format); relative sources are
    /// taken from `base`.
    pub fn parse(text: &str, path: &Path, base: &Path) -> Result<Manifest, BatchError> {
        let bad = |reason: String| BatchError::BadManifest {
            path: path.to_path_buf(),
            reason,
        };
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let raw: Vec<(String, RawDrive)> = match ext.as_deref() {
            Some("toml") => {
                let parsed: TomlManifest = toml::from_str(text).map_err(|e| {
                    bad(format!(
                        "{}; expected [[drive]] tables with source = \"...\" and an optional id",
                        e.message()
                    ))
                })?;
                numbered("drive", parsed.drive)
            }
            Some("json") => {
                let parsed: JsonManifest = serde_json::from_str(text).map_err(|e| {
                    bad(format!(
                        "{e}; expected a list of paths or of {{\"id\": ..., \"source\": ...}}"
                    ))
                })?;
                let (JsonManifest::List(list) | JsonManifest::Object { drive: list }) = parsed;
                numbered("entry", list)
            }
            _ => text
                .lines()
                .enumerate()
                .filter(|(_, l)| {
                    let l = l.trim();
                    !l.is_empty() && !l.starts_with('#')
                })
                .map(|(i, l)| (format!("line {}", i + 1), RawDrive::Path(l.trim().into())))
                .collect(),
        };
        let mut drives: Vec<DriveEntry> = Vec::with_capacity(raw.len());
        let mut seen = std::collections::HashMap::new();
        for (place, drive) in raw {
            let (id, source, max_frames) = match drive {
                RawDrive::Path(source) => (None, source, None),
                RawDrive::Table {
                    id,
                    source,
                    max_frames,
                } => (id, source, max_frames),
            };
            let source = source.trim().to_string();
            if source.is_empty() {
                return Err(bad(format!("{place}: the source is empty")));
            }
            let id = match id {
                Some(id) => {
                    check_id(&id).map_err(|why| bad(format!("{place}: drive id `{id}` {why}")))?;
                    id
                }
                None => id_from_source(&source),
            };
            if let Some(first) = seen.insert(id.clone(), place.clone()) {
                return Err(bad(format!(
                    "{place}: drive id `{id}` is already used by {first}; give each drive its own id (a TOML or JSON manifest takes `id`)"
                )));
            }
            if max_frames == Some(0) {
                return Err(bad(format!("{place}: max_frames must be at least 1")));
            }
            drives.push(DriveEntry {
                id,
                source: absolute_source(&source, base),
                max_frames,
            });
        }
        if drives.is_empty() {
            return Err(bad("it lists no drives".into()));
        }
        Ok(Manifest { drives })
    }

    /// The drives of shard `k` of `n` (0-based, as Kubernetes' JOB_COMPLETION_INDEX):
    /// every `n`-th drive from the `k`-th, so that shards are balanced and disjoint.
    pub fn shard(self, shard: Shard) -> Manifest {
        Manifest {
            drives: self
                .drives
                .into_iter()
                .enumerate()
                .filter(|(i, _)| i % shard.count == shard.index)
                .map(|(_, d)| d)
                .collect(),
        }
    }

    /// Only the drives named in `ids`, in the manifest's order; an unknown id is an error.
    pub fn select(self, ids: &[String]) -> Result<Manifest, BatchError> {
        if let Some(unknown) = ids
            .iter()
            .find(|id| !self.drives.iter().any(|d| &d.id == *id))
        {
            return Err(BatchError::UnknownDrive {
                id: unknown.clone(),
            });
        }
        Ok(Manifest {
            drives: self
                .drives
                .into_iter()
                .filter(|d| ids.contains(&d.id))
                .collect(),
        })
    }
}

fn numbered(what: &str, list: Vec<RawDrive>) -> Vec<(String, RawDrive)> {
    list.into_iter()
        .enumerate()
        .map(|(i, d)| (format!("{what} {}", i + 1), d))
        .collect()
}

/// `--shard K/N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Shard {
    type Err = String;

    fn from_str(text: &str) -> Result<Shard, String> {
        let bad = || format!("`{text}` is not K/N with 0 ≤ K < N, e.g. 0/4 (K is 0-based)");
        let (k, n) = text.split_once('/').ok_or_else(bad)?;
        let index: usize = k.trim().parse().map_err(|_| bad())?;
        let count: usize = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

/// Why `id` cannot name a result folder, if it cannot.
pub fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err("must be 1 to 128 characters long");
    }
    if id.starts_with('.') {
        return Err("must not start with `.` (hidden folders hold unfinished results)");
    }
    if !id
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err("may hold only letters, digits, `.`, `_` and `-`");
    }
    Ok(())
}

/// A drive's id from its source: the file or folder name without a media extension,
/// every other character than letters, digits, `.`, `_` and `-` made `_`.
pub fn id_from_source(source: &str) -> String {
    let mut parts = source.trim_end_matches(['/', '\\']).rsplit(['/', '\\']);
    let mut name = parts.next().unwrap_or(source);
    // A glob (`drive7/*.jpg`) is named by its folder.
    if name.contains(['*', '?', '[']) {
        name = parts.next().unwrap_or(name);
    }
    let stem = match name.rsplit_once('.') {
        Some((stem, ext))
            if !stem.is_empty()
                && ["mp4", "mkv", "mov", "avi", "webm", "mcap", "jpg", "png"]
                    .contains(&ext.to_ascii_lowercase().as_str()) =>
        {
            stem
        }
        _ => name,
    };
    let mut id: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while id.starts_with('.') {
        id.replace_range(0..1, "_");
    }
    if id.is_empty() {
        id.push('_');
    }
    id.truncate(MAX_ID_LEN);
    id
}

/// `source` with a relative path taken from `base`; `synthetic:`, `camera:` and URLs as
/// they are.
fn absolute_source(source: &str, base: &Path) -> String {
    let verbatim = source.starts_with("synthetic:")
        || source.starts_with("camera:")
        || source.contains("://")
        || Path::new(source).is_absolute();
    if verbatim {
        return source.to_string();
    }
    let joined: PathBuf = base.join(source);
    joined.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(name: &str, text: &str) -> Result<Manifest, BatchError> {
        Manifest::parse(text, Path::new(name), Path::new("/data"))
    }

    #[test]
    fn lines_give_ids_from_file_names_and_absolute_paths() {
        let m = parse(
            "drives.txt",
            "# fleet\n\nrecorded/udacity.mp4\n/abs/2011_09_26_drive_0001_sync/\nsynthetic:64x48@10\n",
        )
        .unwrap();
        let ids: Vec<_> = m.drives.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "udacity",
                "2011_09_26_drive_0001_sync",
                "synthetic_64x48_10"
            ]
        );
        assert_eq!(m.drives[0].source, "/data/recorded/udacity.mp4");
        assert_eq!(m.drives[1].source, "/abs/2011_09_26_drive_0001_sync/");
        assert_eq!(m.drives[2].source, "synthetic:64x48@10");
    }

    #[test]
    fn toml_and_json_take_ids_and_max_frames() {
        let toml = "[[drive]]\nid = \"a\"\nsource = \"x.mp4\"\nmax_frames = 5\n\n[[drive]]\nsource = \"y.mcap\"\n";
        let m = parse("m.toml", toml).unwrap();
        assert_eq!(
            m.drives,
            [
                DriveEntry {
                    id: "a".into(),
                    source: "/data/x.mp4".into(),
                    max_frames: Some(5)
                },
                DriveEntry {
                    id: "y".into(),
                    source: "/data/y.mcap".into(),
                    max_frames: None
                }
            ]
        );
        let json = r#"[{"id": "a", "source": "x.mp4", "max_frames": 5}, "y.mcap"]"#;
        assert_eq!(parse("m.json", json).unwrap(), m);
        let object = r#"{"drive": [{"id": "a", "source": "x.mp4", "max_frames": 5}, "y.mcap"]}"#;
        assert_eq!(parse("m.JSON", object).unwrap(), m);
    }

    #[test]
    fn duplicate_and_unusable_ids_are_refused_naming_the_place() {
        let err = parse("m.txt", "a/clip.mp4\nb/clip.mp4\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("line 2") && err.contains("`clip`") && err.contains("line 1"),
            "{err}"
        );
        let err = parse("m.toml", "[[drive]]\nid = \"../x\"\nsource = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("drive 1") && err.contains("`../x`"), "{err}");
        let err = parse("m.toml", "[[drive]]\nid = \".hidden\"\nsource = \"a\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("must not start with `.`"), "{err}");
        assert!(parse("m.txt", "# nothing\n").is_err());
        assert!(parse("m.toml", "[[drive]]\nsource = \"a\"\nmax_frames = 0\n").is_err());
        assert!(parse("m.toml", "[[drives]]\nsource = \"a\"\n").is_err());
        assert!(parse("m.json", "{").is_err());
    }

    #[test]
    fn shards_are_disjoint_and_cover_every_drive() {
        let text: String = (0..10).map(|i| format!("d{i}.mp4\n")).collect();
        let m = parse("m.txt", &text).unwrap();
        let mut all: Vec<String> = Vec::new();
        for k in 0..3 {
            let shard = m.clone().shard(format!("{k}/3").parse().unwrap());
            assert!(shard.drives.len() >= 3);
            all.extend(shard.drives.into_iter().map(|d| d.id));
        }
        all.sort();
        let mut expected: Vec<String> = m.drives.iter().map(|d| d.id.clone()).collect();
        expected.sort();
        assert_eq!(all, expected);
        let first = m.clone().shard("1/3".parse().unwrap());
        assert_eq!(first.drives[0].id, "d1");
        assert_eq!(first.drives[1].id, "d4");
        for bad in ["3/3", "1", "a/2", "0/0", "-1/2"] {
            assert!(bad.parse::<Shard>().is_err(), "{bad}");
        }
    }

    #[test]
    fn select_keeps_the_named_drives_and_refuses_unknown_ones() {
        let m = parse("m.txt", "a.mp4\nb.mp4\nc.mp4\n").unwrap();
        let picked = m.clone().select(&["c".into(), "a".into()]).unwrap();
        let ids: Vec<_> = picked.drives.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, ["a", "c"]);
        let err = m.select(&["zz".into()]).unwrap_err().to_string();
        assert!(err.contains("`zz`"), "{err}");
    }

    #[test]
    fn ids_from_sources_are_folder_safe() {
        assert_eq!(id_from_source("dir/.weird name.mp4"), "_weird_name");
        assert_eq!(id_from_source("/d/drive7/*.jpg"), "drive7");
        assert_eq!(id_from_source("*.jpg"), "_");
        assert_eq!(id_from_source("a/b.tar"), "b.tar");
        assert!(check_id(&id_from_source(&"x".repeat(300))).is_ok());
    }
}
