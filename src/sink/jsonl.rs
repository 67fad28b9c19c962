//! A JSON-lines log: one [`JsonlRecord`] per frame, flushed line by line so that a reader
//! (`tail -f`, a test, a crashed run's post-mortem) sees every frame written so far.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Sink, SinkControl, SinkError, SinkFrame};
use crate::types::{DetectTimings, DetectedFrame, Detection, FrameStamps};

const NAME: &str = "jsonl";

/// One line of the log. Borrows the detections when writing (no per-frame copies); parsed
/// lines own them (`JsonlRecord<'static>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonlRecord<'a> {
    pub seq: u64,
    /// The source's presentation time, where it has one.
    pub pts_ns: Option<i64>,
    /// Capture time on the process's monotonic clock (the clock of `stamps`).
    pub capture_ns: u64,
    /// Capture time as Unix nanoseconds.
    pub capture_wall_ns: u64,
    pub width: u32,
    pub height: u32,
    pub detections: Cow<'a, [Detection]>,
    pub timing_ms: DetectTimings,
    /// Stage timestamps so far; `presented` is still 0 when sinks run.
    pub stamps: FrameStamps,
}

impl<'a> JsonlRecord<'a> {
    pub fn from_detected(detected: &'a DetectedFrame) -> JsonlRecord<'a> {
        let frame = &detected.frame;
        JsonlRecord {
            seq: frame.seq,
            pts_ns: frame.pts_ns,
            capture_ns: frame.capture_mono_ns,
            capture_wall_ns: frame.capture_wall_ns,
            width: frame.width(),
            height: frame.height(),
            detections: Cow::Borrowed(&detected.detections),
            timing_ms: detected.timings,
            stamps: detected.stamps,
        }
    }
}

/// Writes one JSON line per frame to a file.
pub struct JsonlSink {
    path: PathBuf,
    out: BufWriter<File>,
    /// The line being built, reused between frames.
    line: Vec<u8>,
    /// fsync at finish (the default).
    sync: bool,
}

impl JsonlSink {
    /// Creates (or truncates) `path`.
    pub fn create(path: &Path) -> Result<JsonlSink, SinkError> {
        let file = File::create(path).map_err(|source| SinkError::Create {
            sink: NAME,
            path: path.to_path_buf(),
            source,
        })?;
        Ok(JsonlSink {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            line: Vec::new(),
            sync: true,
        })
    }

    /// Whether `finish` fsyncs the file (it always flushes it).
    pub fn synced(mut self, sync: bool) -> JsonlSink {
        self.sync = sync;
        self
    }

    fn io_error(&self, source: std::io::Error) -> SinkError {
        SinkError::Write {
            sink: NAME,
            path: self.path.clone(),
            source,
        }
    }
}

impl Sink for JsonlSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        self.line.clear();
        let record = JsonlRecord::from_detected(frame.detected);
        serde_json::to_writer(&mut self.line, &record).map_err(|source| SinkError::Serialise {
            sink: NAME,
            seq: record.seq,
            source,
        })?;
        self.line.push(b'\n');
        // One write of the whole line, then a flush: readers never see half a line unless
        // the disk fills.
        self.out
            .write_all(&self.line)
            .and_then(|()| self.out.flush())
            .map_err(|e| self.io_error(e))?;
        Ok(SinkControl::Continue)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| self.io_error(e))?;
        if !self.sync {
            return Ok(());
        }
        self.out.get_ref().sync_all().map_err(|e| self.io_error(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::HudStats;
    use crate::types::{BoxXyxy, ClassGroup, Frame};

    pub(crate) fn detected(seq: u64) -> DetectedFrame {
        DetectedFrame {
            frame: Frame {
                seq,
                capture_mono_ns: 1_000 + seq,
                capture_wall_ns: 1_700_000_000_000_000_000,
                pts_ns: Some(seq as i64 * 40_000_000),
                image: image::RgbImage::new(64, 48),
            },
            detections: vec![Detection {
                class_id: 2,
                class: "car".into(),
                group: ClassGroup::Vehicle,
                score: 0.75,
                box_in_image: BoxXyxy::new(1.0, 2.0, 30.5, 40.0),
                range: None,
                track_id: None,
                track_age_s: None,
            }],
            timings: DetectTimings {
                preprocess: 1.5,
                inference: 20.0,
                postprocess: 0.25,
                track: 0.0,
            },
            stamps: FrameStamps::default(),
            heat: None,
        }
    }

    #[test]
    fn each_write_is_one_flushed_line_that_parses_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mut sink = JsonlSink::create(&path).unwrap();
        let hud = HudStats::default();
        for seq in [3, 4] {
            let d = detected(seq);
            let frame = SinkFrame {
                detected: &d,
                annotated: None,
                hud: &hud,
                jpeg: &Default::default(),
            };
            assert_eq!(sink.write(&frame).unwrap(), SinkControl::Continue);
            let text = std::fs::read_to_string(&path).unwrap();
            let last: JsonlRecord = serde_json::from_str(text.lines().last().unwrap()).unwrap();
            assert_eq!(last, JsonlRecord::from_detected(&d));
        }
        sink.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 2);
        let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["seq"], 3);
        assert_eq!(first["timing_ms"]["inference"], 20.0);
        assert_eq!(
            first["detections"][0]["box_xyxy"],
            serde_json::json!([1.0, 2.0, 30.5, 40.0])
        );
    }

    #[test]
    fn an_unsynced_sink_still_flushes_every_line_at_finish() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.jsonl");
        let mut sink = JsonlSink::create(&path).unwrap().synced(false);
        let hud = HudStats::default();
        let d = detected(7);
        let frame = SinkFrame {
            detected: &d,
            annotated: None,
            hud: &hud,
            jpeg: &Default::default(),
        };
        sink.write(&frame).unwrap();
        sink.finish().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let line: JsonlRecord = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(line, JsonlRecord::from_detected(&d));
    }

    #[test]
    fn an_unwritable_path_is_a_clear_error() {
        let err = JsonlSink::create(Path::new("/nonexistent/dir/log.jsonl"))
            .err()
            .unwrap();
        assert!(
            err.to_string().contains("/nonexistent/dir/log.jsonl"),
            "{err}"
        );
    }
}
