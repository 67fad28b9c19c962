//! Stand-ins for the JSON-lines and drive sinks of `crate::sink` until that branch is
//! merged (then this file goes): same output formats, so the pipeline's tests hold.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::drive::{DriveManifest, DriveWriter};
use crate::sink::{Sink, SinkControl, SinkError, SinkFrame};
use crate::types::{DetectTimings, Detection};

/// One line per frame: `{"seq","pts_ns","capture_ns","width","height","detections","timing_ms"}`.
pub struct InterimJsonl {
    out: std::io::BufWriter<std::fs::File>,
}

#[derive(Serialize)]
struct Line<'a> {
    seq: u64,
    pts_ns: Option<i64>,
    capture_ns: u64,
    width: u32,
    height: u32,
    detections: &'a [Detection],
    timing_ms: DetectTimings,
}

fn failed(sink: &'static str, message: String) -> SinkError {
    SinkError::Failed { sink, message }
}

impl InterimJsonl {
    pub fn create(path: &Path) -> Result<Self, SinkError> {
        let file = std::fs::File::create(path)
            .map_err(|e| failed("jsonl", format!("cannot create {}: {e}", path.display())))?;
        Ok(Self {
            out: std::io::BufWriter::new(file),
        })
    }
}

impl Sink for InterimJsonl {
    fn name(&self) -> &'static str {
        "jsonl"
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        let d = frame.detected;
        let line = Line {
            seq: d.frame.seq,
            pts_ns: d.frame.pts_ns,
            capture_ns: d.frame.capture_wall_ns,
            width: d.frame.width(),
            height: d.frame.height(),
            detections: &d.detections,
            timing_ms: d.timings,
        };
        serde_json::to_writer(&mut self.out, &line).map_err(|e| failed("jsonl", e.to_string()))?;
        self.out
            .write_all(b"\n")
            .map_err(|e| failed("jsonl", e.to_string()))?;
        Ok(SinkControl::Continue)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.out.flush().map_err(|e| failed("jsonl", e.to_string()))
    }
}

/// Frames into a drive folder through [`DriveWriter`].
pub struct InterimRecord {
    writer: Option<DriveWriter>,
}

impl InterimRecord {
    pub fn create(dir: &Path, manifest: DriveManifest) -> Result<Self, SinkError> {
        let writer =
            DriveWriter::create(dir, manifest).map_err(|e| failed("record", e.to_string()))?;
        Ok(Self {
            writer: Some(writer),
        })
    }
}

impl Sink for InterimRecord {
    fn name(&self) -> &'static str {
        "record"
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| failed("record", "already finished".into()))?;
        writer
            .write_frame(&frame.detected.frame)
            .map_err(|e| failed("record", e.to_string()))?;
        Ok(SinkControl::Continue)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        match self.writer.take() {
            Some(w) => w
                .finish()
                .map(|_| ())
                .map_err(|e| failed("record", e.to_string())),
            None => Ok(()),
        }
    }
}
