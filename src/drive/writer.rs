//! Recording frames into a drive folder, crash-safe frame by frame.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use super::index::{IndexEntry, INDEX_HEADER};
use super::{
    is_plain_file_name, write_atomically, DriveError, DriveManifest, FrameFileFormat,
    DEFAULT_JPEG_QUALITY, FRAMES_DIR, INDEX_FILE, MANIFEST_FILE,
};
use crate::types::Frame;

/// Writes frames into a new drive folder; see the module docs of [`crate::drive`].
pub struct DriveWriter {
    dir: PathBuf,
    manifest: DriveManifest,
    index: File,
    frames_written: u64,
    last_seq: Option<u64>,
    /// Encoded bytes of the current frame, reused between frames.
    encoded: Vec<u8>,
    /// Set when an index write failed: later lines could be glued onto a torn one.
    broken: bool,
}

impl DriveWriter {
    /// Creates `dir` (which must not exist or be empty) with its manifest, `frames/` and an
    /// index holding only the header.
    pub fn create(dir: &Path, manifest: DriveManifest) -> Result<Self, DriveError> {
        manifest.validate(&dir.join(MANIFEST_FILE))?;
        let not_empty = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some());
        if not_empty {
            return Err(DriveError::NotEmpty {
                dir: dir.to_path_buf(),
            });
        }
        let frames = dir.join(FRAMES_DIR);
        std::fs::create_dir_all(&frames).map_err(|e| {
            DriveError::io(format!("creating drive folder {}", frames.display()), e)
        })?;
        write_manifest(dir, &manifest)?;
        let index_path = dir.join(INDEX_FILE);
        let mut index = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&index_path)
            .map_err(|e| DriveError::io(format!("creating {}", index_path.display()), e))?;
        index
            .write_all(format!("{INDEX_HEADER}\n").as_bytes())
            .and_then(|()| index.flush())
            .map_err(|e| DriveError::io(format!("writing {}", index_path.display()), e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            manifest,
            index,
            frames_written: 0,
            last_seq: None,
            encoded: Vec::new(),
            broken: false,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn manifest(&self) -> &DriveManifest {
        &self.manifest
    }

    pub fn frames_written(&self) -> u64 {
        self.frames_written
    }

    /// Copies a calibration file into the drive and names it in the manifest.
    pub fn add_calibration(&mut self, src: &Path) -> Result<(), DriveError> {
        let name = src
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| is_plain_file_name(n) && *n != MANIFEST_FILE && *n != INDEX_FILE)
            .ok_or_else(|| DriveError::Manifest {
                path: src.to_path_buf(),
                reason: "calibration file needs a plain UTF-8 file name other than drive.toml or index.csv".into(),
            })?;
        std::fs::copy(src, self.dir.join(name)).map_err(|e| {
            DriveError::io(
                format!(
                    "copying calibration {} into {}",
                    src.display(),
                    self.dir.display()
                ),
                e,
            )
        })?;
        self.manifest.calibration = Some(name.to_string());
        write_manifest(&self.dir, &self.manifest)
    }

    /// Writes the frame file completely, then appends and flushes its index line. On error
    /// the drive still holds every frame written before this one.
    pub fn write_frame(&mut self, frame: &Frame) -> Result<(), DriveError> {
        self.check_frame(frame)?;
        self.encode(frame)?;
        let encoded = std::mem::take(&mut self.encoded);
        let written = self.write_encoded(frame, &encoded);
        self.encoded = encoded;
        written
    }

    /// [`DriveWriter::write_frame`] with the frame already encoded in the drive's format
    /// (the JPEG another sink of the run encoded too: see `sink::SourceJpeg`).
    pub fn write_encoded(&mut self, frame: &Frame, encoded: &[u8]) -> Result<(), DriveError> {
        self.check_frame(frame)?;
        let file = format!(
            "{FRAMES_DIR}/{:08}.{}",
            frame.seq,
            self.manifest.frame_format.extension()
        );
        let path = self.dir.join(&file);
        write_atomically(&path, encoded).map_err(|e| {
            DriveError::io(
                format!(
                    "writing frame {} to {} (the drive keeps its first {} frames)",
                    frame.seq,
                    path.display(),
                    self.frames_written
                ),
                e,
            )
        })?;
        let entry = IndexEntry {
            seq: frame.seq,
            capture_mono_ns: frame.capture_mono_ns,
            capture_wall_ns: frame.capture_wall_ns,
            pts_ns: frame.pts_ns,
            file,
        };
        // One write per line: a kill tears at most the last line, which readers skip.
        let written = self
            .index
            .write_all(entry.to_line().as_bytes())
            .and_then(|()| self.index.flush());
        if let Err(e) = written {
            self.broken = true;
            return Err(DriveError::io(
                format!(
                    "appending frame {} to {} (the drive keeps its first {} frames)",
                    frame.seq,
                    self.dir.join(INDEX_FILE).display(),
                    self.frames_written
                ),
                e,
            ));
        }
        self.frames_written += 1;
        self.last_seq = Some(frame.seq);
        Ok(())
    }

    /// Syncs the index to disk and records the frame count in the manifest.
    pub fn finish(mut self) -> Result<u64, DriveError> {
        let index_path = self.dir.join(INDEX_FILE);
        self.index
            .sync_all()
            .map_err(|e| DriveError::io(format!("syncing {}", index_path.display()), e))?;
        self.manifest.frame_count = Some(self.frames_written);
        write_manifest(&self.dir, &self.manifest)?;
        Ok(self.frames_written)
    }

    fn check_frame(&self, frame: &Frame) -> Result<(), DriveError> {
        if self.broken {
            return Err(DriveError::Broken {
                dir: self.dir.clone(),
                frames: self.frames_written,
            });
        }
        if let Some(last) = self.last_seq.filter(|&last| frame.seq <= last) {
            return Err(DriveError::SeqOrder {
                dir: self.dir.clone(),
                seq: frame.seq,
                last,
            });
        }
        if (frame.width(), frame.height()) != (self.manifest.width, self.manifest.height) {
            return Err(DriveError::FrameSize {
                dir: self.dir.clone(),
                seq: frame.seq,
                width: frame.width(),
                height: frame.height(),
                expected_width: self.manifest.width,
                expected_height: self.manifest.height,
            });
        }
        Ok(())
    }

    fn encode(&mut self, frame: &Frame) -> Result<(), DriveError> {
        self.encoded.clear();
        let (w, h) = (frame.width(), frame.height());
        let pixels = frame.image.as_raw();
        let format = self.manifest.frame_format;
        let result = match format {
            FrameFileFormat::Jpg => {
                let quality = self.manifest.jpeg_quality.unwrap_or(DEFAULT_JPEG_QUALITY);
                crate::imageio::encode_jpeg_into(pixels, w, h, quality, &mut self.encoded)
                    .map_err(|e| e.to_string())
            }
            FrameFileFormat::Png => {
                crate::imageio::encode_png_fast_into(pixels, w, h, &mut self.encoded)
                    .map_err(|e| e.to_string())
            }
        };
        result.map_err(|reason| DriveError::Encode {
            seq: frame.seq,
            format: format.extension(),
            reason,
        })
    }
}

fn write_manifest(dir: &Path, manifest: &DriveManifest) -> Result<(), DriveError> {
    let path = dir.join(MANIFEST_FILE);
    write_atomically(&path, manifest.to_toml()?.as_bytes())
        .map_err(|e| DriveError::io(format!("writing {}", path.display()), e))
}
