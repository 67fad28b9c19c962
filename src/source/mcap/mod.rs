//! `--source FILE.mcap`: images replayed from MCAP files that lookout or others wrote:
//! `foxglove.CompressedImage` and `foxglove.RawImage` (protobuf or JSON), ROS 2
//! `sensor_msgs/msg/CompressedImage` and `sensor_msgs/msg/Image` (CDR, [`ros2`]; raw
//! encodings in [`pixels`]). One topic is read (`--topic`, or the only image topic), in file
//! order; every message becomes a frame whose capture time is its log time, so a replay is
//! deterministic and lossless. A calibration topic (`foxglove.CameraCalibration`,
//! `sensor_msgs/msg/CameraInfo`) gives the camera when `--calib` does not. A file cut short
//! (a killed writer) replays up to its last complete chunk and then ends early.

pub mod pixels;
pub mod ros2;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use foxglove::schemas::{CameraCalibration, CompressedImage, RawImage};
use foxglove::Decode as _;

use super::{FrameSource, SourceError, SourceInfo};
use crate::calib::Calibration;
use crate::drive::index::MAX_REPEATED_WARNINGS;
use crate::types::{mono_now_ns, Frame, FramePool};
use pixels::RawEncoding;

/// The name of the metadata record lookout writes (`--mcap`): what made the file.
pub const LOOKOUT_METADATA: &str = "lookout";

/// Messages read at open, at most, to find the channels of a file without a summary and the
/// first calibration message.
const SCAN_MESSAGES: usize = 10_000;

/// The MCAP magic every file starts with.
const MAGIC: &[u8] = b"\x89MCAP0\r\n";

/// What a channel carries, from its schema name and message encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    FoxgloveCompressed(Encoding),
    FoxgloveRaw(Encoding),
    RosCompressed,
    RosRaw,
    FoxgloveCalibration(Encoding),
    RosCameraInfo,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Protobuf,
    Json,
}

impl Kind {
    fn of(channel: &mcap::Channel<'_>) -> Option<Kind> {
        let schema = channel.schema.as_ref().map_or("", |s| s.name.as_str());
        let encoding = match channel.message_encoding.as_str() {
            "protobuf" => Some(Encoding::Protobuf),
            "json" => Some(Encoding::Json),
            _ => None,
        };
        let cdr = channel.message_encoding == "cdr";
        match (schema, encoding) {
            ("foxglove.CompressedImage", Some(e)) => Some(Kind::FoxgloveCompressed(e)),
            ("foxglove.RawImage", Some(e)) => Some(Kind::FoxgloveRaw(e)),
            ("foxglove.CameraCalibration", Some(e)) => Some(Kind::FoxgloveCalibration(e)),
            ("sensor_msgs/msg/CompressedImage", _) if cdr => Some(Kind::RosCompressed),
            ("sensor_msgs/msg/Image", _) if cdr => Some(Kind::RosRaw),
            ("sensor_msgs/msg/CameraInfo", _) if cdr => Some(Kind::RosCameraInfo),
            _ => None,
        }
    }

    fn is_image(self) -> bool {
        !matches!(self, Kind::FoxgloveCalibration(_) | Kind::RosCameraInfo)
    }
}

/// A topic of the file as the open found it.
#[derive(Debug, Clone)]
struct TopicInfo {
    schema: String,
    message_encoding: String,
    kind: Option<Kind>,
    /// Messages on it (from the summary; counted during the scan otherwise).
    count: u64,
    /// First and last log time.
    span: Option<(u64, u64)>,
}

impl TopicInfo {
    /// A topic first seen on `channel`, with no message counted yet.
    fn of(channel: &mcap::Channel<'_>, span: Option<(u64, u64)>) -> TopicInfo {
        TopicInfo {
            schema: channel
                .schema
                .as_ref()
                .map_or(String::new(), |s| s.name.clone()),
            message_encoding: channel.message_encoding.clone(),
            kind: Kind::of(channel),
            count: 0,
            span,
        }
    }

    fn describe(name: &str, t: &TopicInfo) -> String {
        format!("{name} ({} in {})", or_none(&t.schema), t.message_encoding)
    }
}

fn or_none(s: &str) -> &str {
    if s.is_empty() {
        "no schema"
    } else {
        s
    }
}

/// Replays one image topic of an MCAP file.
pub struct McapSource {
    path: PathBuf,
    topic: String,
    kind: Kind,
    messages: mcap::io::MessageReader<BufReader<File>>,
    /// Announced frames and their span (from the summary), for the rate and progress.
    frame_count: Option<u64>,
    nominal_fps: Option<f64>,
    size: Option<(u32, u32)>,
    calibration: Option<Calibration>,
    /// How the images were anonymised, from a lookout file's metadata (`--privacy`).
    anonymised: Option<String>,
    first_log_time: Option<u64>,
    next_seq: u64,
    pool: FramePool,
    /// Base64 of JSON images decoded here.
    bytes: Vec<u8>,
    skipped: u64,
    last_skip: Option<String>,
    ended_early: Option<String>,
}

impl McapSource {
    /// Opens `path`, finds the image topic (`topic`, or the only one) and the calibration.
    pub fn open(path: &Path, topic: Option<&str>) -> Result<McapSource, SourceError> {
        let mcap_error = |reason: String| SourceError::Mcap {
            path: path.to_path_buf(),
            reason,
        };
        let mut file = open_file(path)?;
        let mut magic = [0u8; 8];
        let head = file
            .read(&mut magic)
            .map_err(|source| io_error(path, source))?;
        if head < MAGIC.len() || magic != MAGIC {
            return Err(mcap_error(
                "is not an MCAP file (it does not start with the MCAP magic); pass a file written by an MCAP writer (lookout --mcap, ros2 bag record -s mcap, the Foxglove SDK)".into(),
            ));
        }
        let size = file
            .metadata()
            .map_err(|source| io_error(path, source))?
            .len();
        let summary = read_summary(&mut file, size);
        let topics = match &summary {
            Some(summary) => summary_topics(summary),
            None => scan_topics(path)?,
        };
        let anonymised = match &summary {
            Some(summary) => lookout_privacy(&mut file, summary),
            // A killed writer's file: the record is in the data section, before the chunks.
            None => scan_privacy(&mut file, size),
        };
        let (topic, info) = pick_topic(&topics, topic).map_err(mcap_error)?;
        let kind = info.kind.expect("pick_topic returns image topics only");
        let calibration = match calibration_topic(&topics, topic) {
            Some(name) => first_calibration(path, name)?,
            None => None,
        };
        let nominal_fps = info.span.and_then(|(first, last)| {
            (info.count > 1 && last > first)
                .then(|| (info.count - 1) as f64 / ((last - first) as f64 / 1e9))
        });
        Ok(McapSource {
            path: path.to_path_buf(),
            topic: topic.clone(),
            kind,
            messages: mcap::io::MessageReader::new(BufReader::new(open_file(path)?)),
            frame_count: info.span.map(|_| info.count),
            nominal_fps,
            size: calibration.as_ref().map(Calibration::image_size),
            calibration,
            anonymised,
            first_log_time: None,
            next_seq: 0,
            pool: FramePool::default(),
            bytes: Vec::new(),
            skipped: 0,
            last_skip: None,
            ended_early: None,
        })
    }

    /// The camera of the file's calibration topic, when it has one.
    pub fn calibration(&self) -> Option<&Calibration> {
        self.calibration.as_ref()
    }

    /// Decodes one message of the image topic. `Err(reason)` skips the frame (a corrupt
    /// image); an unsupported encoding fails the run.
    fn decode(&mut self, data: &[u8]) -> Result<Result<image::RgbImage, String>, SourceError> {
        let path = &self.path;
        let compressed = |bytes: &[u8], pool: &FramePool| {
            crate::imageio::decode_rgb_pooled(bytes, path, pool).map_err(|e| e.to_string())
        };
        let result = match self.kind {
            Kind::FoxgloveCompressed(Encoding::Protobuf) => match CompressedImage::decode(data) {
                Ok(m) => compressed(&m.data, &self.pool),
                Err(e) => Err(format!("not a foxglove.CompressedImage: {e}")),
            },
            Kind::FoxgloveCompressed(Encoding::Json) => {
                match json_image(data).and_then(|j| base64_into(&j.data, &mut self.bytes)) {
                    Ok(()) => compressed(&self.bytes, &self.pool),
                    Err(e) => Err(e),
                }
            }
            Kind::RosCompressed => match ros2::parse_compressed_image(data) {
                Ok(m) => compressed(m.data, &self.pool),
                Err(e) => Err(e.to_string()),
            },
            Kind::FoxgloveRaw(Encoding::Protobuf) => match RawImage::decode(data) {
                Ok(m) => self.raw(&m.encoding, m.width, m.height, m.step, false, &m.data)?,
                Err(e) => Err(format!("not a foxglove.RawImage: {e}")),
            },
            Kind::FoxgloveRaw(Encoding::Json) => match json_image(data) {
                Ok(j) => match base64_into(&j.data, &mut self.bytes) {
                    Ok(()) => {
                        let bytes = std::mem::take(&mut self.bytes);
                        let image = self.raw(&j.encoding, j.width, j.height, j.step, false, &bytes);
                        self.bytes = bytes;
                        image?
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            },
            Kind::RosRaw => match ros2::parse_image(data) {
                Ok(m) => self.raw(
                    m.encoding,
                    m.width,
                    m.height,
                    m.step,
                    m.is_bigendian,
                    m.data,
                )?,
                Err(e) => Err(e.to_string()),
            },
            Kind::FoxgloveCalibration(_) | Kind::RosCameraInfo => {
                unreachable!("the topic read is an image topic")
            }
        };
        Ok(result)
    }

    /// Raw pixels in `encoding` into a pooled RGB frame.
    fn raw(
        &mut self,
        encoding: &str,
        width: u32,
        height: u32,
        step: u32,
        big_endian: bool,
        data: &[u8],
    ) -> Result<Result<image::RgbImage, String>, SourceError> {
        let Some(enc) = RawEncoding::parse(encoding) else {
            return Err(SourceError::Mcap {
                path: self.path.clone(),
                reason: format!(
                    "topic {}: image encoding `{encoding}` is not supported; supported: {}",
                    self.topic,
                    RawEncoding::SUPPORTED.join(", ")
                ),
            });
        };
        // Straight into a pooled frame buffer (to_rgb sizes it; a pooled one has the size).
        let mut buf = self.pool.take(0);
        if let Err(e) = pixels::to_rgb(enc, width, height, step, big_endian, data, &mut buf) {
            self.pool.put(buf);
            return Ok(Err(e.to_string()));
        }
        Ok(Ok(image::RgbImage::from_raw(width, height, buf)
            .expect("to_rgb wrote width × height × 3 bytes")))
    }

    fn skip(&mut self, why: String) {
        if self.skipped < MAX_REPEATED_WARNINGS as u64 {
            tracing::warn!("{}: {why}", self.path.display());
        }
        self.skipped += 1;
        self.last_skip = Some(why);
    }
}

impl FrameSource for McapSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.ended_early.is_some() {
            return Ok(None);
        }
        loop {
            let message = match self.messages.next() {
                None => return Ok(None),
                Some(Ok(message)) => message,
                Some(Err(e)) => {
                    self.ended_early = Some(format!(
                        "{} ends early after {} frames (cut short, or its writer was killed): {e}",
                        self.path.display(),
                        self.next_seq
                    ));
                    return Ok(None);
                }
            };
            if message.channel.topic != self.topic {
                continue;
            }
            let seq_in_file = message.sequence;
            let image = match self.decode(&message.data)? {
                Ok(image) => image,
                Err(why) => {
                    self.skip(format!(
                        "{} message {seq_in_file} at {} ns: {why}",
                        self.topic, message.log_time
                    ));
                    continue;
                }
            };
            let first = *self.first_log_time.get_or_insert(message.log_time);
            let frame = Frame {
                seq: self.next_seq,
                capture_mono_ns: mono_now_ns(),
                // The recorded capture time: a replay keeps the recording's timeline.
                capture_wall_ns: message.log_time,
                pts_ns: Some(message.log_time as i64 - first as i64),
                image,
            };
            self.next_seq += 1;
            return Ok(Some(frame));
        }
    }

    fn info(&self) -> SourceInfo {
        let note = match (&self.ended_early, self.skipped) {
            (Some(why), _) => Some(why.clone()),
            (None, 0) => None,
            (None, n) => Some(format!(
                "skipped {n} undecodable images (last: {})",
                self.last_skip.as_deref().unwrap_or("")
            )),
        };
        SourceInfo {
            description: format!(
                "mcap {} topic {}{}{}",
                self.path.display(),
                self.topic,
                self.frame_count
                    .map(|n| format!(" ({n} frames)"))
                    .unwrap_or_default(),
                self.anonymised
                    .as_ref()
                    .map(|p| format!(", anonymised: {p}"))
                    .unwrap_or_default()
            ),
            nominal_fps: self.nominal_fps,
            frame_count: self.frame_count,
            size: self.size,
            live: false,
            ended_early: self.ended_early.is_some(),
            skipped_frames: self.skipped,
            note,
        }
    }

    fn embedded_calibration(&self) -> Option<Calibration> {
        self.calibration.clone()
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.pool = pool;
    }
}

fn open_file(path: &Path) -> Result<File, SourceError> {
    File::open(path).map_err(|source| io_error(path, source))
}

fn io_error(path: &Path, source: std::io::Error) -> SourceError {
    SourceError::Io {
        what: format!("MCAP file {}", path.display()),
        source,
    }
}

/// The summary section, when the file has a readable one (a finished file).
fn read_summary(file: &mut File, size: u64) -> Option<mcap::Summary> {
    use mcap::sans_io::{SummaryReadEvent, SummaryReader, SummaryReaderOptions};
    let mut reader =
        SummaryReader::new_with_options(SummaryReaderOptions::default().with_file_size(size));
    while let Some(event) = reader.next_event() {
        match event.ok()? {
            SummaryReadEvent::ReadRequest(n) => {
                let read = file.read(reader.insert(n)).ok()?;
                reader.notify_read(read);
            }
            SummaryReadEvent::SeekRequest(to) => {
                let at = file.seek(to).ok()?;
                reader.notify_seeked(at);
            }
        }
    }
    reader.finish()
}

/// The `privacy` entry of a lookout file's `lookout` metadata record, unless `off`.
fn lookout_privacy(file: &mut File, summary: &mcap::Summary) -> Option<String> {
    use std::io::SeekFrom;
    let index = summary
        .metadata_indexes
        .iter()
        .find(|m| m.name == LOOKOUT_METADATA)?;
    // The whole record: opcode, length, body; a lookout record is small.
    let length = usize::try_from(index.length)
        .ok()
        .filter(|&n| n > 9 && n < 1 << 20)?;
    let mut record = vec![0u8; length];
    file.seek(SeekFrom::Start(index.offset)).ok()?;
    file.read_exact(&mut record).ok()?;
    match mcap::parse_record(record[0], &record[9..]).ok()? {
        mcap::records::Record::Metadata(m) => {
            m.metadata.get("privacy").filter(|p| *p != "off").cloned()
        }
        _ => None,
    }
}

/// As [`lookout_privacy`] for a file without a summary: the `lookout` metadata record is
/// looked for among the records of the file's first [`SCAN_PRIVACY_BYTES`] (lookout writes
/// it before the first chunk), up to where the records stop parsing.
fn scan_privacy(file: &mut File, size: u64) -> Option<String> {
    use std::io::SeekFrom;
    let length = usize::try_from(size.min(SCAN_PRIVACY_BYTES)).ok()?;
    let mut head = vec![0u8; length];
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_exact(&mut head).ok()?;
    mcap::read::LinearReader::new_with_options(&head, mcap::read::Options::IgnoreEndMagic.into())
        .ok()?
        .map_while(Result::ok)
        .find_map(|record| match record {
            mcap::records::Record::Metadata(m) if m.name == LOOKOUT_METADATA => {
                Some(m.metadata.get("privacy").filter(|p| *p != "off").cloned())
            }
            _ => None,
        })
        .flatten()
}

/// How much of a file without a summary [`scan_privacy`] reads.
const SCAN_PRIVACY_BYTES: u64 = 4 << 20;

fn summary_topics(summary: &mcap::Summary) -> BTreeMap<String, TopicInfo> {
    let counts = summary
        .stats
        .as_ref()
        .map(|s| s.channel_message_counts.clone())
        .unwrap_or_default();
    let mut topics = BTreeMap::new();
    for (id, channel) in &summary.channels {
        let count = counts.get(id).copied().unwrap_or(0);
        // The span of the chunks that hold this channel's messages (not the file's).
        let chunks = summary.chunk_indexes.iter().filter(|c| {
            c.message_index_offsets.is_empty() || c.message_index_offsets.contains_key(id)
        });
        let span = chunks.fold(None, |span, c| {
            let (start, end) = (c.message_start_time, c.message_end_time);
            Some(span.map_or((start, end), |(s, e): (u64, u64)| {
                (s.min(start), e.max(end))
            }))
        });
        let entry = topics
            .entry(channel.topic.clone())
            .or_insert_with(|| TopicInfo::of(channel, span));
        entry.count += count;
    }
    topics
}

/// The channels of a file without a summary (cut short): the messages of its first chunks.
fn scan_topics(path: &Path) -> Result<BTreeMap<String, TopicInfo>, SourceError> {
    let mut topics = BTreeMap::<String, TopicInfo>::new();
    let reader = mcap::io::MessageReader::new(BufReader::new(open_file(path)?));
    for message in reader.take(SCAN_MESSAGES) {
        let Ok(message) = message else { break };
        let channel = &message.channel;
        let entry = topics
            .entry(channel.topic.clone())
            .or_insert_with(|| TopicInfo::of(channel, None));
        entry.count += 1;
    }
    // Counts of a scan are not the file's: no frame count, no rate.
    Ok(topics)
}

/// The topic to read: `wanted`, or the only image topic; the error lists what there is.
fn pick_topic<'a>(
    topics: &'a BTreeMap<String, TopicInfo>,
    wanted: Option<&str>,
) -> Result<(&'a String, &'a TopicInfo), String> {
    let images: Vec<_> = topics
        .iter()
        .filter(|(_, t)| t.kind.is_some_and(Kind::is_image))
        .collect();
    let list = |items: &[(&String, &TopicInfo)]| {
        items
            .iter()
            .map(|(name, t)| TopicInfo::describe(name, t))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let all: Vec<_> = topics.iter().collect();
    let readable = "foxglove.CompressedImage or foxglove.RawImage (protobuf or JSON), sensor_msgs/msg/CompressedImage or sensor_msgs/msg/Image (CDR)";
    match wanted {
        Some(name) => match topics.get_key_value(name) {
            Some((name, t)) if t.kind.is_some_and(Kind::is_image) => Ok((name, t)),
            Some((name, t)) => Err(format!(
                "topic {} is not an image topic lookout reads (expected {readable}); its image topics: {}",
                TopicInfo::describe(name, t),
                if images.is_empty() { "none".into() } else { list(&images) }
            )),
            None => Err(format!(
                "has no topic `{name}`; its topics: {}",
                if all.is_empty() { "none".into() } else { list(&all) }
            )),
        },
        None => match images.as_slice() {
            [one] => Ok(*one),
            [] => Err(format!(
                "has no image topic lookout reads (expected {readable}); its topics: {}",
                if all.is_empty() { "none".into() } else { list(&all) }
            )),
            several => Err(format!(
                "has {} image topics; pick one with --topic: {}",
                several.len(),
                list(several)
            )),
        },
    }
}

/// The calibration topic of image topic `image`: the only one, or the one in the image's
/// namespace (`/front/camera_info` for `/front/image_raw`); none when that is ambiguous.
fn calibration_topic<'a>(topics: &'a BTreeMap<String, TopicInfo>, image: &str) -> Option<&'a str> {
    let calibrations: Vec<&str> = topics
        .iter()
        .filter(|(_, t)| t.kind.is_some_and(|k| !k.is_image()))
        .map(|(name, _)| name.as_str())
        .collect();
    let namespace = |name: &str| name.rsplit_once('/').map_or("", |(ns, _)| ns).to_string();
    match calibrations.as_slice() {
        [] => None,
        [one] => Some(one),
        several => {
            let mine: Vec<&str> = several
                .iter()
                .copied()
                .filter(|c| image.starts_with(&format!("{}/", namespace(c))))
                .collect();
            match mine.as_slice() {
                [one] => Some(one),
                _ => {
                    tracing::warn!(
                        "several calibration topics ({}) and none in the namespace of {image}: no calibration taken; pass --calib",
                        several.join(", ")
                    );
                    None
                }
            }
        }
    }
}

/// The first calibration message on `topic`, read as a [`Calibration`].
fn first_calibration(path: &Path, topic: &str) -> Result<Option<Calibration>, SourceError> {
    let reader = mcap::io::MessageReader::new(BufReader::new(open_file(path)?));
    let origin = format!("{} topic {topic}", path.display());
    for message in reader.take(SCAN_MESSAGES) {
        let Ok(message) = message else { break };
        if message.channel.topic != topic {
            continue;
        }
        // The fields both messages have: size, K, distortion model and D.
        let fields = match Kind::of(&message.channel) {
            Some(Kind::FoxgloveCalibration(encoding)) => match encoding {
                Encoding::Protobuf => {
                    CameraCalibration::decode(&message.data[..]).map_err(|e| e.to_string())
                }
                Encoding::Json => json_calibration(&message.data),
            }
            .map(|c| ((c.width, c.height), c.k, c.distortion_model, c.d))
            .map_err(|e| format!("not a foxglove.CameraCalibration ({e})")),
            Some(Kind::RosCameraInfo) => ros2::parse_camera_info(&message.data)
                .map(|i| ((i.width, i.height), i.k.to_vec(), i.distortion_model, i.d))
                .map_err(|e| e.to_string()),
            _ => return Ok(None),
        };
        let calibration = match fields {
            Ok((size, k, model, d)) => {
                crate::calib::import::from_camera_info(&origin, size, &k, &model, &d)
            }
            Err(e) => {
                tracing::warn!("{origin}: {e}; no calibration taken from it");
                return Ok(None);
            }
        };
        return match calibration {
            Ok(cal) => Ok(Some(cal)),
            // An uncalibrated camera (K all zero, as ROS drivers publish) is no calibration.
            Err(e) => {
                tracing::warn!("{e}; the file's calibration is not used");
                Ok(None)
            }
        };
    }
    Ok(None)
}

/// The fields of a JSON `foxglove.CompressedImage` or `foxglove.RawImage` that lookout reads.
#[derive(serde::Deserialize)]
struct JsonImage {
    #[serde(default)]
    width: u32,
    #[serde(default)]
    height: u32,
    #[serde(default)]
    encoding: String,
    #[serde(default)]
    step: u32,
    /// Base64, as Foxglove's JSON encoding carries bytes.
    data: String,
}

fn json_image(data: &[u8]) -> Result<JsonImage, String> {
    serde_json::from_slice(data).map_err(|e| format!("not a JSON image message: {e}"))
}

fn base64_into(text: &str, out: &mut Vec<u8>) -> Result<(), String> {
    out.clear();
    base64::engine::general_purpose::STANDARD
        .decode_vec(text, out)
        .map_err(|e| format!("`data` is not base64: {e}"))
}

fn json_calibration(data: &[u8]) -> Result<CameraCalibration, String> {
    #[derive(serde::Deserialize)]
    struct Json {
        width: u32,
        height: u32,
        #[serde(default)]
        distortion_model: String,
        #[serde(default, rename = "D")]
        d: Vec<f64>,
        #[serde(rename = "K")]
        k: Vec<f64>,
    }
    let j: Json = serde_json::from_slice(data).map_err(|e| e.to_string())?;
    Ok(CameraCalibration {
        width: j.width,
        height: j.height,
        distortion_model: j.distortion_model,
        d: j.d,
        k: j.k,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(schema: &str, encoding: &str) -> TopicInfo {
        let channel = mcap::Channel {
            id: 1,
            topic: String::new(),
            schema: Some(std::sync::Arc::new(mcap::Schema {
                id: 1,
                name: schema.into(),
                encoding: String::new(),
                data: Default::default(),
            })),
            message_encoding: encoding.into(),
            metadata: Default::default(),
        };
        TopicInfo {
            schema: schema.into(),
            message_encoding: encoding.into(),
            kind: Kind::of(&channel),
            count: 3,
            span: None,
        }
    }

    #[test]
    fn the_only_image_topic_is_taken_and_otherwise_the_error_lists_them() {
        let mut topics = BTreeMap::new();
        topics.insert(
            "/gps".to_string(),
            topic("foxglove.LocationFix", "protobuf"),
        );
        topics.insert(
            "/camera/info".to_string(),
            topic("sensor_msgs/msg/CameraInfo", "cdr"),
        );
        let err = pick_topic(&topics, None).unwrap_err();
        assert!(
            err.contains("has no image topic")
                && err.contains("/gps (foxglove.LocationFix in protobuf)"),
            "{err}"
        );
        topics.insert("/front".to_string(), topic("sensor_msgs/msg/Image", "cdr"));
        assert_eq!(pick_topic(&topics, None).unwrap().0, "/front");
        topics.insert(
            "/rear".to_string(),
            topic("foxglove.CompressedImage", "json"),
        );
        let err = pick_topic(&topics, None).unwrap_err();
        assert!(
            err.contains("2 image topics; pick one with --topic") && err.contains("/rear"),
            "{err}"
        );
        assert_eq!(pick_topic(&topics, Some("/rear")).unwrap().0, "/rear");
        let err = pick_topic(&topics, Some("/gps")).unwrap_err();
        assert!(err.contains("is not an image topic"), "{err}");
        let err = pick_topic(&topics, Some("/side")).unwrap_err();
        assert!(err.contains("has no topic `/side`"), "{err}");
    }

    /// Review of #14: a two-camera file took the calibration topic that sorts first.
    #[test]
    fn the_calibration_is_the_image_topics_own_or_none() {
        let mut topics = BTreeMap::new();
        topics.insert(
            "/front/image_raw".to_string(),
            topic("sensor_msgs/msg/Image", "cdr"),
        );
        topics.insert(
            "/rear/image_raw".to_string(),
            topic("sensor_msgs/msg/Image", "cdr"),
        );
        topics.insert(
            "/front/camera_info".to_string(),
            topic("sensor_msgs/msg/CameraInfo", "cdr"),
        );
        // The only calibration topic is taken.
        assert_eq!(
            calibration_topic(&topics, "/rear/image_raw"),
            Some("/front/camera_info")
        );
        topics.insert(
            "/rear/camera_info".to_string(),
            topic("sensor_msgs/msg/CameraInfo", "cdr"),
        );
        assert_eq!(
            calibration_topic(&topics, "/rear/image_raw"),
            Some("/rear/camera_info")
        );
        assert_eq!(
            calibration_topic(&topics, "/front/image_raw"),
            Some("/front/camera_info")
        );
        assert_eq!(calibration_topic(&topics, "/side/image"), None);
    }

    #[test]
    fn channels_are_read_by_schema_and_message_encoding() {
        assert_eq!(
            topic("foxglove.RawImage", "json").kind,
            Some(Kind::FoxgloveRaw(Encoding::Json))
        );
        assert_eq!(
            topic("sensor_msgs/msg/Image", "cdr").kind,
            Some(Kind::RosRaw)
        );
        // A ROS 2 schema in another encoding, or an unknown encoding, is not read.
        assert_eq!(topic("sensor_msgs/msg/Image", "ros1").kind, None);
        assert_eq!(topic("foxglove.CompressedImage", "flatbuffer").kind, None);
        assert!(!Kind::RosCameraInfo.is_image());
    }
}
