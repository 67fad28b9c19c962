//! Annotated frames as numbered JPEG files, `DIR/NNNNNNNN.jpg` named by the frame's `seq`
//! (gaps in the numbers are dropped frames).
//!
//! Each file is written under a temporary name and renamed, so the folder never holds half
//! a JPEG. Encoding uses libjpeg-turbo (through `mozjpeg`), which keeps up with 720p video
//! where the `image` crate's encoder does not, into one buffer reused between frames.

use std::path::{Path, PathBuf};

use super::{Sink, SinkControl, SinkError, SinkFrame};
use crate::drive::write_atomically;

const NAME: &str = "frames";
const JPEG_QUALITY: u8 = 90;

/// Writes each annotated frame as a JPEG into a folder.
pub struct FramesSink {
    dir: PathBuf,
    written: u64,
    /// The JPEG being written, reused between frames.
    jpeg: Vec<u8>,
}

impl FramesSink {
    /// Creates `dir` (and its parents) if needed; existing files with other names are kept,
    /// files with the same numbers are overwritten.
    pub fn create(dir: &Path) -> Result<FramesSink, SinkError> {
        std::fs::create_dir_all(dir).map_err(|source| SinkError::Create {
            sink: NAME,
            path: dir.to_path_buf(),
            source,
        })?;
        Ok(FramesSink {
            dir: dir.to_path_buf(),
            written: 0,
            jpeg: Vec::new(),
        })
    }

    /// Where the frame with `seq` goes.
    pub fn frame_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("{seq:08}.jpg"))
    }

    pub fn frames_written(&self) -> u64 {
        self.written
    }
}

impl Sink for FramesSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        let image = frame.require_annotated(NAME)?;
        let seq = frame.detected.frame.seq;
        crate::imageio::encode_jpeg_into(
            image.as_raw(),
            image.width(),
            image.height(),
            JPEG_QUALITY,
            &mut self.jpeg,
        )
        .map_err(|source| SinkError::Encode {
            sink: NAME,
            seq,
            format: "JPEG",
            source,
        })?;
        let path = self.frame_path(seq);
        write_atomically(&path, &self.jpeg).map_err(|source| SinkError::Write {
            sink: NAME,
            path,
            source,
        })?;
        self.written += 1;
        Ok(SinkControl::Continue)
    }

    /// Every file is complete once `write` returns; nothing is buffered.
    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::HudStats;
    use crate::types::{DetectTimings, DetectedFrame, Frame, FrameStamps};
    use image::{Rgb, RgbImage};

    fn detected(seq: u64) -> DetectedFrame {
        DetectedFrame {
            frame: Frame {
                seq,
                capture_mono_ns: 0,
                capture_wall_ns: 0,
                pts_ns: None,
                image: RgbImage::new(64, 48),
            },
            detections: Vec::new(),
            timings: DetectTimings::default(),
            stamps: FrameStamps::default(),
            heat: None,
        }
    }

    #[test]
    fn annotated_frames_become_seq_numbered_jpegs() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("a/b");
        let mut sink = FramesSink::create(&out).unwrap();
        let annotated = RgbImage::from_fn(64, 48, |x, _| Rgb([x as u8 * 4, 100, 50]));
        let hud = HudStats::default();
        for seq in [7, 9] {
            let d = detected(seq);
            let frame = SinkFrame {
                detected: &d,
                annotated: Some(&annotated),
                hud: &hud,
                jpeg: &Default::default(),
            };
            sink.write(&frame).unwrap();
        }
        sink.finish().unwrap();
        let mut names: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["00000007.jpg", "00000009.jpg"]);
        let back = crate::imageio::read_rgb(&out.join("00000009.jpg")).unwrap();
        assert_eq!(back.dimensions(), (64, 48));
        let diff: u64 = back
            .as_raw()
            .iter()
            .zip(annotated.as_raw())
            .map(|(a, b)| u64::from(a.abs_diff(*b)))
            .sum();
        assert!(diff as f64 / (64.0 * 48.0 * 3.0) < 4.0);
    }

    #[test]
    fn a_frame_without_annotated_pixels_is_an_error_naming_the_sink() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FramesSink::create(dir.path()).unwrap();
        let d = detected(1);
        let hud = HudStats::default();
        let frame = SinkFrame {
            detected: &d,
            annotated: None,
            hud: &hud,
            jpeg: &Default::default(),
        };
        let err = sink.write(&frame).unwrap_err().to_string();
        assert!(
            err.starts_with("frames:") && err.contains("render"),
            "{err}"
        );
    }
}
