//! Refusing an output path that names an input or another output (issue 12 item 3:
//! `--jsonl` onto the input video overwrote it; `--jsonl X --metrics X` kept only one).
//!
//! Paths are compared after resolving symbolic links (a file that does not exist yet by
//! its resolved parent folder), and existing files also by device and inode, so that a
//! hard link or `./x` vs `x` is the same file too. Checked once, before any work.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// One path a command reads or writes, with the flag that gave it.
#[derive(Debug, Clone)]
pub struct NamedPath {
    pub flag: String,
    pub path: PathBuf,
}

impl NamedPath {
    pub fn new(flag: impl Into<String>, path: impl Into<PathBuf>) -> NamedPath {
        NamedPath {
            flag: flag.into(),
            path: path.into(),
        }
    }
}

/// `path` with links resolved: itself canonicalized if it exists, else its parent
/// canonicalized and the name joined, else made absolute as written.
pub fn resolved(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    match (parent.canonicalize(), path.file_name()) {
        (Ok(dir), Some(name)) => dir.join(name),
        _ => std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf()),
    }
}

/// Whether `a` and `b` name the same file or folder.
pub fn same_file(a: &Path, b: &Path) -> bool {
    if resolved(a) == resolved(b) {
        return true;
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(ma), Ok(mb)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return ma.dev() == mb.dev() && ma.ino() == mb.ino();
        }
    }
    false
}

/// Refuses an output that is the same file as an input or as another output, naming
/// both flags and the path.
pub fn check_distinct(inputs: &[NamedPath], outputs: &[NamedPath]) -> Result<()> {
    for (i, out) in outputs.iter().enumerate() {
        if let Some(input) = inputs
            .iter()
            .find(|input| same_file(&out.path, &input.path))
        {
            bail!(
                "{} {} is the same file as {} {}: writing it would destroy the input; pick another output path",
                out.flag,
                out.path.display(),
                input.flag,
                input.path.display()
            );
        }
        if let Some(other) = outputs[..i]
            .iter()
            .find(|other| same_file(&out.path, &other.path))
        {
            bail!(
                "{} {} and {} {} are the same file: one output would overwrite the other; give each its own path",
                other.flag,
                other.path.display(),
                out.flag,
                out.path.display()
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_onto_an_input_or_another_output_is_refused_naming_both_flags() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("copy.mp4");
        std::fs::write(&video, b"video").unwrap();
        let inputs = [NamedPath::new("--source", &video)];
        let err = check_distinct(&inputs, &[NamedPath::new("--jsonl", &video)])
            .unwrap_err()
            .to_string();
        assert!(err.contains("--jsonl") && err.contains("--source"), "{err}");

        let x = dir.path().join("x");
        let outputs = [
            NamedPath::new("--jsonl", &x),
            NamedPath::new("--metrics", dir.path().join("./x")),
        ];
        let err = check_distinct(&inputs, &outputs).unwrap_err().to_string();
        assert!(
            err.contains("--jsonl") && err.contains("--metrics"),
            "{err}"
        );

        let fine = [
            NamedPath::new("--jsonl", dir.path().join("a.jsonl")),
            NamedPath::new("--metrics", dir.path().join("m.json")),
        ];
        check_distinct(&inputs, &fine).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn links_are_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let video = dir.path().join("in.mp4");
        std::fs::write(&video, b"video").unwrap();
        let soft = dir.path().join("soft.mp4");
        std::os::unix::fs::symlink(&video, &soft).unwrap();
        let hard = dir.path().join("hard.mp4");
        std::fs::hard_link(&video, &hard).unwrap();
        assert!(same_file(&video, &soft) && same_file(&video, &hard));
        // A file not yet written, through a linked folder.
        let linked_dir = dir.path().join("linked");
        std::os::unix::fs::symlink(dir.path(), &linked_dir).unwrap();
        assert!(same_file(
            &linked_dir.join("new.json"),
            &dir.path().join("new.json")
        ));
        assert!(!same_file(&video, &dir.path().join("other.mp4")));
    }
}
