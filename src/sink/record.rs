//! Recording a drive while running: the frames as captured (not annotated), with their
//! capture stamps, through [`DriveWriter`], so that the run can be replayed later.
//!
//! The drive is valid after every frame (see [`crate::drive`]); `finish` (or dropping the
//! sink) also records the frame count in the manifest.

use std::path::{Path, PathBuf};

use super::{Sink, SinkControl, SinkError, SinkFrame};
use crate::drive::{DriveError, DriveManifest, DriveWriter, FrameFileFormat, DEFAULT_JPEG_QUALITY};

const NAME: &str = "record";

/// Writes every frame's raw pixels into a new drive folder.
pub struct RecordSink {
    dir: PathBuf,
    /// `None` once finished.
    writer: Option<DriveWriter>,
}

impl RecordSink {
    /// Creates the drive folder `dir` (which must not exist or be empty).
    pub fn create(dir: &Path, manifest: DriveManifest) -> Result<RecordSink, SinkError> {
        let writer = DriveWriter::create(dir, manifest).map_err(|e| drive_error(dir, e))?;
        Ok(RecordSink {
            dir: dir.to_path_buf(),
            writer: Some(writer),
        })
    }

    /// Frames written so far.
    pub fn frames_written(&self) -> u64 {
        self.writer.as_ref().map_or(0, DriveWriter::frames_written)
    }
}

impl Sink for RecordSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        let writer = self.writer.as_mut().ok_or(SinkError::Closed {
            sink: NAME,
            what: "drive",
        })?;
        let manifest = writer.manifest();
        let written = match manifest.frame_format {
            // The JPEG the MCAP file or the live server of the run may need as well.
            FrameFileFormat::Jpg => {
                let quality = manifest.jpeg_quality.unwrap_or(DEFAULT_JPEG_QUALITY);
                let jpeg = frame.source_jpeg(NAME, quality)?;
                writer.write_encoded(&frame.detected.frame, &jpeg)
            }
            FrameFileFormat::Png => writer.write_frame(&frame.detected.frame),
        };
        written.map_err(|e| drive_error(&self.dir, e))?;
        Ok(SinkControl::Continue)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        match self.writer.take() {
            Some(writer) => writer
                .finish()
                .map(|_| ())
                .map_err(|e| drive_error(&self.dir, e)),
            None => Ok(()),
        }
    }
}

impl Drop for RecordSink {
    /// The frames are already on disk; this only adds the frame count to the manifest.
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("{}", e.with_causes());
        }
    }
}

fn drive_error(dir: &Path, source: DriveError) -> SinkError {
    SinkError::Drive {
        sink: NAME,
        dir: dir.to_path_buf(),
        source,
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::source::DriveReader;
    use crate::source::FrameSource;
    use crate::types::HudStats;
    use crate::types::{DetectTimings, DetectedFrame, Frame, FrameStamps};

    /// A 32×24 frame coloured by `seq`, no detections, no pts (also the MCAP sink's tests).
    pub(crate) fn detected(seq: u64) -> DetectedFrame {
        DetectedFrame {
            frame: Frame {
                seq,
                capture_mono_ns: seq * 1_000,
                capture_wall_ns: 1_700_000_000_000_000_000 + seq,
                pts_ns: None,
                image: image::RgbImage::from_pixel(32, 24, image::Rgb([seq as u8 * 40, 0, 0])),
            },
            detections: Vec::new(),
            timings: DetectTimings::default(),
            stamps: FrameStamps::default(),
            heat: None,
        }
    }

    #[test]
    fn recorded_frames_replay_with_their_stamps_and_pixels() {
        let dir = tempfile::tempdir().unwrap();
        let drive = dir.path().join("drive");
        let manifest = DriveManifest::new("test", 32, 24, 25.0, FrameFileFormat::Png);
        let mut sink = RecordSink::create(&drive, manifest).unwrap();
        let hud = HudStats::default();
        for seq in [1, 2, 4] {
            let d = detected(seq);
            let frame = SinkFrame {
                detected: &d,
                annotated: None,
                hud: &hud,
                jpeg: &Default::default(),
            };
            sink.write(&frame).unwrap();
        }
        assert_eq!(sink.frames_written(), 3);
        sink.finish().unwrap();
        let mut reader = DriveReader::open(&drive).unwrap();
        assert_eq!(reader.manifest().frame_count, Some(3));
        // Replay renumbers frames and turns capture times into pts relative to the first.
        let mut pts = Vec::new();
        for seq in [1, 2, 4] {
            let frame = reader.next_frame().unwrap().expect("a recorded frame");
            assert_eq!(frame.image, detected(seq).frame.image);
            pts.push(frame.pts_ns.unwrap());
        }
        assert!(reader.next_frame().unwrap().is_none());
        assert_eq!(pts, [0, 1_000, 3_000]);
    }

    #[test]
    fn a_non_empty_folder_is_refused_with_the_drive_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("x"), "x").unwrap();
        let manifest = DriveManifest::new("test", 32, 24, 25.0, FrameFileFormat::Jpg);
        let err = RecordSink::create(dir.path(), manifest).err().unwrap();
        assert!(
            matches!(
                &err,
                SinkError::Drive {
                    source: DriveError::NotEmpty { .. },
                    ..
                }
            ),
            "{err:?}"
        );
        let text = err.with_causes();
        assert!(
            text.starts_with("record: ") && text.contains("not empty"),
            "{text}"
        );
    }
}
