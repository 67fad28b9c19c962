//! `--mcap FILE`: the run as one MCAP file (chunked, lz4), the channels of
//! [`super::channels`] plus a `lookout` metadata record (version, model, weights hash,
//! command line), so that Foxglove, Lichtblick or rerun open it as one synchronised
//! recording and `lookout run --source FILE` replays it.
//!
//! Crash safety: a chunk is finished and written at least once a second (and every 4 MiB),
//! straight to the file with no buffer of ours in between, so a killed run leaves a file
//! whose chunks up to the last second are readable by a reader that recovers chunks; a
//! stopped run (Ctrl-C, SIGTERM, end of input) gets its summary and index.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mcap::records::MessageHeader;

use super::channels::{FrameMessages, Topic};
use super::{Sink, SinkControl, SinkError, SinkFrame};
use crate::calib::Calibration;
use crate::drive::FrameFileFormat;

const NAME: &str = "mcap";

/// A chunk is closed once it holds this much (before compression).
const CHUNK_BYTES: u64 = 4 << 20;

/// … and at least this often, so that a killed run loses at most this much.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// The metadata record's name.
pub const METADATA_NAME: &str = crate::source::mcap::LOOKOUT_METADATA;

/// Writes every frame's messages into an MCAP file.
pub struct McapSink {
    path: PathBuf,
    /// `None` once finished.
    writer: Option<mcap::Writer<File>>,
    messages: FrameMessages,
    /// The channel id of each topic written, in [`Topic::ALL`] order.
    channels: Vec<(Topic, u16)>,
    sequence: u32,
    last_flush: Instant,
}

impl McapSink {
    /// Creates (or truncates) `path` and writes the header, schemas, channels and the
    /// `lookout` metadata record. `calibration` (scaled to the frames) adds
    /// `/camera/calibration`.
    pub fn create(
        path: &Path,
        image_format: FrameFileFormat,
        calibration: Option<&Calibration>,
        metadata: &BTreeMap<String, String>,
        frame_size: (u32, u32),
    ) -> Result<McapSink, SinkError> {
        let messages = FrameMessages::new(NAME, image_format, calibration, frame_size)?;
        let file = File::create(path).map_err(|source| SinkError::Create {
            sink: NAME,
            path: path.to_path_buf(),
            source,
        })?;
        let error = |source| SinkError::Mcap {
            sink: NAME,
            path: path.to_path_buf(),
            source,
        };
        let options = mcap::WriteOptions::new()
            .compression(Some(mcap::Compression::Lz4))
            .chunk_size(Some(CHUNK_BYTES))
            .profile("")
            .library(format!("lookout {}", env!("CARGO_PKG_VERSION")));
        let mut writer = mcap::Writer::with_options(file, options).map_err(error)?;
        let mut channels = Vec::new();
        for topic in messages.topics() {
            let schema = writer
                .add_schema(
                    topic.schema_name(),
                    topic.schema_encoding(),
                    &topic.schema_data(),
                )
                .map_err(error)?;
            let channel = writer
                .add_channel(
                    schema,
                    topic.name(),
                    topic.message_encoding(),
                    &BTreeMap::new(),
                )
                .map_err(error)?;
            channels.push((topic, channel));
        }
        writer
            .write_metadata(&mcap::records::Metadata {
                name: METADATA_NAME.to_string(),
                metadata: metadata.clone(),
            })
            .map_err(error)?;
        // The header, schemas and channels are on disk before the first frame.
        writer.flush().map_err(error)?;
        Ok(McapSink {
            path: path.to_path_buf(),
            writer: Some(writer),
            messages,
            channels,
            sequence: 0,
            last_flush: Instant::now(),
        })
    }

    fn error(&self, source: mcap::McapError) -> SinkError {
        SinkError::Mcap {
            sink: NAME,
            path: self.path.clone(),
            source,
        }
    }
}

impl Sink for McapSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        let log_time = self.messages.log_time_ns(frame);
        for &(topic, channel_id) in &self.channels {
            let data = self.messages.encode(topic, frame, log_time)?;
            let writer = self.writer.as_mut().ok_or(SinkError::Closed {
                sink: NAME,
                what: "mcap file",
            })?;
            let header = MessageHeader {
                channel_id,
                sequence: self.sequence,
                log_time,
                publish_time: log_time,
            };
            let written = writer.write_to_known_channel(&header, data);
            written.map_err(|e| self.error(e))?;
        }
        self.sequence = self.sequence.wrapping_add(1);
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.last_flush = Instant::now();
            if let Some(writer) = self.writer.as_mut() {
                let flushed = writer.flush();
                flushed.map_err(|e| self.error(e))?;
            }
        }
        Ok(SinkControl::Continue)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        let Some(mut writer) = self.writer.take() else {
            return Ok(());
        };
        writer.finish().map_err(|e| self.error(e))?;
        let file = writer.into_inner();
        file.sync_all().map_err(|source| SinkError::Write {
            sink: NAME,
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for McapSink {
    /// The summary and index, when `finish` was not called (a panic elsewhere).
    fn drop(&mut self) {
        if let Err(e) = self.finish() {
            tracing::warn!("{}", e.with_causes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::record::tests::detected;
    use crate::sink::SourceJpeg;
    use crate::types::HudStats;

    #[test]
    fn a_finished_file_has_every_message_its_summary_and_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.mcap");
        let metadata = BTreeMap::from([("model".to_string(), "yolov8n".to_string())]);
        let mut sink =
            McapSink::create(&path, FrameFileFormat::Jpg, None, &metadata, (32, 24)).unwrap();
        let hud = HudStats::default();
        for seq in 1..=3 {
            let d = detected(seq);
            let frame = SinkFrame {
                detected: &d,
                annotated: None,
                hud: &hud,
                jpeg: &SourceJpeg::default(),
            };
            sink.write(&frame).unwrap();
        }
        sink.finish().unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let summary = mcap::Summary::read(&bytes).unwrap().expect("a summary");
        let stats = summary.stats.unwrap();
        assert_eq!(stats.message_count, 12, "4 channels × 3 frames");
        assert_eq!(stats.metadata_count, 1);
        let mut per_topic = BTreeMap::<String, u32>::new();
        for message in mcap::MessageStream::new(&bytes).unwrap() {
            let message = message.unwrap();
            *per_topic.entry(message.channel.topic.clone()).or_default() += 1;
            assert!(message.log_time >= 1_700_000_000_000_000_000);
        }
        assert_eq!(per_topic["/camera/image"], 3);
        assert_eq!(per_topic["/lookout/annotations"], 3);
        assert!(!per_topic.contains_key("/camera/calibration"));
    }
}
