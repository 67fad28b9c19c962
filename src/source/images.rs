//! A list of image files played as a sequence, with presentation times either from a
//! fixed rate (image folders and globs) or given per file (KITTI raw timestamps).
//!
//! A file that cannot be read or decoded is skipped, counted and logged; it never ends
//! the sequence. Files are read into one byte buffer kept between frames and decoded into
//! buffers from the pipeline's [`FramePool`] (see [`FrameSource::use_pool`]).

use std::path::PathBuf;

use super::{FrameSource, SourceError, SourceInfo};
use crate::types::{mono_now_ns, wall_now_ns, Frame, FramePool};

pub struct ImageSequence {
    paths: Vec<PathBuf>,
    /// Presentation time of each path, ns relative to the first.
    pts_ns: Vec<i64>,
    next_index: usize,
    next_seq: u64,
    skipped: u64,
    last_skip: Option<String>,
    nominal_fps: f64,
    size: Option<(u32, u32)>,
    description: String,
    calibration: Option<PathBuf>,
    /// Where decoded frames' buffers come from (and go back to, after the sinks).
    pool: FramePool,
    /// The encoded bytes of the file being read, reused between frames.
    file_bytes: Vec<u8>,
}

impl ImageSequence {
    /// Images at a fixed `fps`; `what` names the sequence in its description.
    pub fn new(paths: Vec<PathBuf>, fps: f64, what: &str) -> Result<Self, SourceError> {
        if !(fps.is_finite() && fps > 0.0) {
            return Err(SourceError::BadSpec {
                spec: what.to_string(),
                reason: format!("frame rate must be a positive number, got {fps}"),
            });
        }
        let pts_ns = (0..paths.len())
            .map(|i| (i as f64 * 1e9 / fps).round() as i64)
            .collect();
        Self::with_pts(paths, pts_ns, fps, what)
    }

    /// Images with their own presentation times (`pts_ns.len() == paths.len()`).
    pub fn with_pts(
        paths: Vec<PathBuf>,
        pts_ns: Vec<i64>,
        nominal_fps: f64,
        what: &str,
    ) -> Result<Self, SourceError> {
        if paths.is_empty() {
            return Err(SourceError::NoImages {
                what: what.to_string(),
            });
        }
        debug_assert_eq!(paths.len(), pts_ns.len());
        let description = format!(
            "{what} ({} images, first {})",
            paths.len(),
            paths[0].display()
        );
        Ok(Self {
            paths,
            pts_ns,
            next_index: 0,
            next_seq: 0,
            skipped: 0,
            last_skip: None,
            nominal_fps,
            size: None,
            description,
            calibration: None,
            pool: FramePool::default(),
            file_bytes: Vec::new(),
        })
    }

    pub fn with_calibration(mut self, calibration: Option<PathBuf>) -> Self {
        self.calibration = calibration;
        self
    }

    /// Files that could not be read or decoded so far.
    pub fn skipped_frames(&self) -> u64 {
        self.skipped
    }
}

impl FrameSource for ImageSequence {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        while self.next_index < self.paths.len() {
            let index = self.next_index;
            self.next_index += 1;
            let path = &self.paths[index];
            // The decoder `detect` uses, so a folder of images gives the same detections.
            let image =
                match crate::imageio::read_rgb_pooled(path, &mut self.file_bytes, &self.pool) {
                    Ok(image) => image,
                    Err(err) => {
                        let why = format!("skipped image: {err}");
                        tracing::warn!("{why}");
                        self.skipped += 1;
                        self.last_skip = Some(why);
                        continue;
                    }
                };
            self.size = Some(image.dimensions());
            let frame = Frame {
                seq: self.next_seq,
                capture_mono_ns: mono_now_ns(),
                capture_wall_ns: wall_now_ns(),
                pts_ns: Some(self.pts_ns[index]),
                image,
            };
            self.next_seq += 1;
            return Ok(Some(frame));
        }
        Ok(None)
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            description: self.description.clone(),
            nominal_fps: Some(self.nominal_fps),
            frame_count: Some(self.paths.len() as u64),
            size: self.size,
            live: false,
            ended_early: false,
            skipped_frames: self.skipped,
            note: self.last_skip.clone(),
        }
    }

    fn calibration_path(&self) -> Option<PathBuf> {
        self.calibration.clone()
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.pool = pool;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_stamps_fixed_rate_and_skips_broken_files() {
        let tmp = tempfile::tempdir().unwrap();
        let good = |name: &str, shade: u8| {
            let path = tmp.path().join(name);
            image::RgbImage::from_pixel(4, 3, image::Rgb([shade, 0, 0]))
                .save(&path)
                .unwrap();
            path
        };
        let broken = tmp.path().join("b.png");
        std::fs::write(&broken, b"not a png").unwrap();
        let paths = vec![good("a.png", 10), broken, good("c.png", 30)];
        let mut seq = ImageSequence::new(paths, 4.0, "test").unwrap();
        let first = seq.next_frame().unwrap().unwrap();
        let second = seq.next_frame().unwrap().unwrap();
        assert!(seq.next_frame().unwrap().is_none());
        assert_eq!((first.seq, first.pts_ns), (0, Some(0)));
        // The broken file keeps its time slot: c.png is the third image, at 2 / 4 fps.
        assert_eq!((second.seq, second.pts_ns), (1, Some(500_000_000)));
        assert_eq!(second.image.get_pixel(0, 0).0, [30, 0, 0]);
        let info = seq.info();
        assert_eq!(info.skipped_frames, 1);
        assert_eq!(info.size, Some((4, 3)));
        assert!(info.note.unwrap().contains("b.png"));
    }
}
