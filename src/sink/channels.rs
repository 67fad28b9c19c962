//! The Foxglove channels of a run and one frame's messages on them, encoded once for the
//! MCAP file (`--mcap`) and the live server (`--foxglove`): the source frame as a JPEG
//! `foxglove.CompressedImage`, the camera's `foxglove.CameraCalibration`, the boxes as
//! `foxglove.ImageAnnotations` with the image's timestamp (so Foxglove's Image panel draws
//! them over it), the JSON-lines record and the stage times as JSON.
//!
//! The foxglove schemas are protobuf (what Foxglove, Lichtblick and rerun's importer read);
//! every message of a frame has the frame's capture time (Unix ns) as its log time
//! ([`FrameMessages::log_time_ns`]).

use std::borrow::Cow;

use foxglove::schemas::{
    points_annotation, CameraCalibration, Color, CompressedImage, ImageAnnotations, Point2,
    PointsAnnotation, TextAnnotation, Timestamp,
};
use foxglove::Encode;

use super::{JsonlRecord, SinkError, SinkFrame};
use crate::calib::{Calibration, Distortion};
use crate::drive::FrameFileFormat;
use crate::types::{mono_now_ns, DetectedFrame};

/// The `frame_id` of the image and the calibration.
pub const FRAME_ID: &str = "camera";

/// JPEG quality of the images: the drives' default, so that `--record` shares the encoding.
pub const JPEG_QUALITY: u8 = crate::drive::DEFAULT_JPEG_QUALITY;

/// One channel of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topic {
    Image,
    Calibration,
    Annotations,
    Detections,
    Latency,
}

impl Topic {
    /// Every channel, in the order they are written for a frame (the image first).
    pub const ALL: [Topic; 5] = [
        Topic::Image,
        Topic::Calibration,
        Topic::Annotations,
        Topic::Detections,
        Topic::Latency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Topic::Image => "/camera/image",
            Topic::Calibration => "/camera/calibration",
            Topic::Annotations => "/lookout/annotations",
            Topic::Detections => "/lookout/detections",
            Topic::Latency => "/lookout/latency",
        }
    }

    pub fn schema_name(self) -> &'static str {
        match self {
            Topic::Image => "foxglove.CompressedImage",
            Topic::Calibration => "foxglove.CameraCalibration",
            Topic::Annotations => "foxglove.ImageAnnotations",
            Topic::Detections => "lookout.Detections",
            Topic::Latency => "lookout.Latency",
        }
    }

    /// `protobuf` or `json`.
    pub fn message_encoding(self) -> &'static str {
        match self {
            Topic::Detections | Topic::Latency => "json",
            _ => "protobuf",
        }
    }

    /// `protobuf` (a binary FileDescriptorSet) or `jsonschema`.
    pub fn schema_encoding(self) -> &'static str {
        match self {
            Topic::Detections | Topic::Latency => "jsonschema",
            _ => "protobuf",
        }
    }

    /// The schema record's data.
    pub fn schema_data(self) -> Cow<'static, [u8]> {
        let protobuf = match self {
            Topic::Image => CompressedImage::get_schema(),
            Topic::Calibration => CameraCalibration::get_schema(),
            Topic::Annotations => ImageAnnotations::get_schema(),
            Topic::Detections => return Cow::Borrowed(DETECTIONS_SCHEMA.as_bytes()),
            Topic::Latency => return Cow::Borrowed(LATENCY_SCHEMA.as_bytes()),
        };
        protobuf.map(|s| s.data).unwrap_or_default()
    }
}

/// The JSON schema of `/lookout/detections`: the `--jsonl` record.
const DETECTIONS_SCHEMA: &str = r#"{"title":"lookout.Detections","description":"One frame's detections: the record of lookout's --jsonl log","type":"object","properties":{"seq":{"type":"integer"},"pts_ns":{"type":["integer","null"]},"capture_ns":{"type":"integer"},"capture_wall_ns":{"type":"integer"},"width":{"type":"integer"},"height":{"type":"integer"},"detections":{"type":"array","items":{"type":"object","properties":{"class_id":{"type":"integer"},"class":{"type":"string"},"group":{"type":"string"},"score":{"type":"number"},"box_xyxy":{"type":"array","items":{"type":"number"},"minItems":4,"maxItems":4},"distance_m":{"type":"number"},"lateral_m":{"type":"number"},"distance_method":{"type":"string"},"nearest_m":{"type":"number"},"smoothed_distance_m":{"type":"number"},"closing_speed_mps":{"type":"number"},"ttc_s":{"type":"number"},"track_id":{"type":"integer"},"track_age_s":{"type":"number"}}}},"timing_ms":{"type":"object","properties":{"preprocess":{"type":"number"},"inference":{"type":"number"},"postprocess":{"type":"number"},"track":{"type":"number"}}},"stamps":{"type":"object","additionalProperties":{"type":"integer"}}}}"#;

/// The JSON schema of `/lookout/latency`: one frame's stage times for the Plot panel.
const LATENCY_SCHEMA: &str = r#"{"title":"lookout.Latency","description":"One frame's stage times in milliseconds","type":"object","properties":{"seq":{"type":"integer"},"detections":{"type":"integer"},"preprocess_ms":{"type":"number"},"inference_ms":{"type":"number"},"postprocess_ms":{"type":"number"},"track_ms":{"type":"number"},"render_ms":{"type":"number"},"capture_to_sink_ms":{"type":"number"}}}"#;

/// One frame's stage times (the `/lookout/latency` message).
#[derive(Debug, serde::Serialize)]
struct Latency {
    seq: u64,
    detections: usize,
    preprocess_ms: f64,
    inference_ms: f64,
    postprocess_ms: f64,
    track_ms: f64,
    render_ms: f64,
    capture_to_sink_ms: f64,
}

/// Encodes the messages of each frame; its buffers are reused from frame to frame.
pub struct FrameMessages {
    sink: &'static str,
    /// How images are stored: JPEG (shared with a JPEG drive) or lossless PNG.
    image_format: FrameFileFormat,
    png: Vec<u8>,
    /// Unix ns of pts 0 for sources with timestamps (set by the first frame).
    timeline_base: Option<i64>,
    /// The calibration message, scaled to the frames; its timestamp is set per frame.
    calibration: Option<CameraCalibration>,
    annotations: ImageAnnotations,
    label: String,
    buf: Vec<u8>,
}

impl FrameMessages {
    /// `calibration` is scaled to the `width`×`height` frames.
    pub fn new(
        sink: &'static str,
        image_format: FrameFileFormat,
        calibration: Option<&Calibration>,
        (width, height): (u32, u32),
    ) -> Result<FrameMessages, SinkError> {
        let calibration = match calibration {
            Some(cal) => Some(calibration_message(
                &cal.for_image_size(width, height)
                    .map_err(|source| SinkError::Calibration {
                        sink,
                        width,
                        height,
                        source,
                    })?,
            )),
            None => None,
        };
        Ok(FrameMessages {
            sink,
            image_format,
            png: Vec::new(),
            timeline_base: None,
            calibration,
            annotations: ImageAnnotations::default(),
            label: String::new(),
            buf: Vec::new(),
        })
    }

    /// The channels this run writes: all but the calibration when there is none.
    pub fn topics(&self) -> impl Iterator<Item = Topic> + '_ {
        Topic::ALL
            .into_iter()
            .filter(|t| *t != Topic::Calibration || self.calibration.is_some())
    }

    /// The log time of every message of `frame`, Unix ns: its capture time; for a replayed
    /// file, the first frame's capture time plus the frame's own timestamp, so that the file
    /// keeps the recording's timeline (and a replay of it its timestamps).
    pub fn log_time_ns(&mut self, frame: &SinkFrame<'_>) -> u64 {
        let frame = &frame.detected.frame;
        match frame.pts_ns {
            Some(pts) => {
                let base = *self
                    .timeline_base
                    .get_or_insert(frame.capture_wall_ns as i64 - pts);
                (base + pts).max(0) as u64
            }
            None => frame.capture_wall_ns,
        }
    }

    /// Encodes `topic`'s message of `frame` at `log_time` (from [`Self::log_time_ns`]); the
    /// bytes are valid until the next call.
    pub fn encode(
        &mut self,
        topic: Topic,
        frame: &SinkFrame<'_>,
        log_time: u64,
    ) -> Result<&[u8], SinkError> {
        self.buf.clear();
        let detected = frame.detected;
        let stamp = timestamp(log_time);
        match topic {
            Topic::Image => {
                let header = CompressedImage {
                    timestamp: Some(stamp),
                    frame_id: FRAME_ID.to_string(),
                    data: Default::default(),
                    format: self.image_format.foxglove_name().to_string(),
                };
                encode_proto(&header, &mut self.buf);
                // `data` (field 2) appended by hand: protobuf fields may come in any order,
                // and the image is not copied into a `Bytes` first.
                let jpeg;
                let image: &[u8] = match self.image_format {
                    FrameFileFormat::Jpg => {
                        jpeg = frame.source_jpeg(self.sink, JPEG_QUALITY)?;
                        &jpeg
                    }
                    FrameFileFormat::Png => {
                        let f = &detected.frame;
                        crate::imageio::encode_png_fast_into(
                            f.image.as_raw(),
                            f.width(),
                            f.height(),
                            &mut self.png,
                        )
                        .map_err(|e| SinkError::Encode {
                            sink: self.sink,
                            seq: f.seq,
                            format: "png",
                            source: std::io::Error::other(e),
                        })?;
                        &self.png
                    }
                };
                prost::encoding::encode_key(
                    2,
                    prost::encoding::WireType::LengthDelimited,
                    &mut self.buf,
                );
                prost::encoding::encode_varint(image.len() as u64, &mut self.buf);
                self.buf.extend_from_slice(image);
            }
            Topic::Calibration => {
                if let Some(cal) = &mut self.calibration {
                    cal.timestamp = Some(stamp);
                    encode_proto(&*cal, &mut self.buf);
                }
            }
            Topic::Annotations => {
                self.fill_annotations(detected, stamp);
                encode_proto(&self.annotations, &mut self.buf);
            }
            Topic::Detections => {
                serde_json::to_writer(&mut self.buf, &JsonlRecord::from_detected(detected))
                    .map_err(|source| SinkError::Serialise {
                        sink: self.sink,
                        seq: detected.frame.seq,
                        source,
                    })?;
            }
            Topic::Latency => {
                let t = &detected.timings;
                let s = &detected.stamps;
                let ms = |from: u64, to: u64| {
                    if from > 0 && to >= from {
                        (to - from) as f64 / 1e6
                    } else {
                        0.0
                    }
                };
                let before_render = s.tracked.max(s.postprocessed);
                let latency = Latency {
                    seq: detected.frame.seq,
                    detections: detected.detections.len(),
                    preprocess_ms: t.preprocess,
                    inference_ms: t.inference,
                    postprocess_ms: t.postprocess,
                    track_ms: t.track,
                    render_ms: ms(before_render, s.rendered),
                    capture_to_sink_ms: ms(s.captured, mono_now_ns()),
                };
                serde_json::to_writer(&mut self.buf, &latency).map_err(|source| {
                    SinkError::Serialise {
                        sink: self.sink,
                        seq: detected.frame.seq,
                        source,
                    }
                })?;
            }
        }
        Ok(&self.buf)
    }

    /// Every box as a closed line loop in its class or track colour, and its label
    /// (`#12 person 0.91 · 14.2 m`) on the box colour above it; empty when there are no
    /// boxes (so that the panel clears).
    fn fill_annotations(&mut self, detected: &DetectedFrame, stamp: Timestamp) {
        let a = &mut self.annotations;
        a.timestamp = Some(stamp);
        a.points.clear();
        a.texts.clear();
        let font_size = crate::render::text_px(detected.frame.height()) as f64;
        for d in &detected.detections {
            let b = &d.box_in_image;
            let colour = crate::render::detection_colour(d);
            let point = |x: f32, y: f32| Point2 {
                x: x as f64,
                y: y as f64,
            };
            a.points.push(PointsAnnotation {
                timestamp: Some(stamp),
                r#type: points_annotation::Type::LineLoop as i32,
                points: vec![
                    point(b.x1, b.y1),
                    point(b.x2, b.y1),
                    point(b.x2, b.y2),
                    point(b.x1, b.y2),
                ],
                outline_color: Some(color(colour)),
                outline_colors: Vec::new(),
                fill_color: None,
                thickness: 2.0,
                metadata: Vec::new(),
            });
            self.label.clear();
            crate::render::write_label(&mut self.label, d);
            a.texts.push(TextAnnotation {
                timestamp: Some(stamp),
                // The text's bottom-left corner: on the box's top edge.
                position: Some(point(b.x1, b.y1)),
                text: self.label.clone(),
                font_size,
                text_color: Some(color(crate::render::text_colour_on(colour))),
                background_color: Some(color(colour)),
                metadata: Vec::new(),
            });
        }
    }
}

fn encode_proto(message: &impl prost::Message, buf: &mut Vec<u8>) {
    // A Vec grows as needed: encoding into it cannot fail.
    message
        .encode(buf)
        .expect("a Vec<u8> has room for any message");
}

fn timestamp(unix_ns: u64) -> Timestamp {
    Timestamp::new(
        (unix_ns / 1_000_000_000).min(u32::MAX as u64) as u32,
        (unix_ns % 1_000_000_000) as u32,
    )
}

fn color(rgb: image::Rgb<u8>) -> Color {
    let [r, g, b] = rgb.0;
    Color {
        r: r as f64 / 255.0,
        g: g as f64 / 255.0,
        b: b as f64 / 255.0,
        a: 1.0,
    }
}

/// A calibration as `foxglove.CameraCalibration` (the ROS `CameraInfo` fields): K, D in the
/// model's order, R identity, P = [K | 0].
pub fn calibration_message(cal: &Calibration) -> CameraCalibration {
    let k = cal.intrinsics();
    let (width, height) = cal.image_size();
    let (distortion_model, d) = match cal.distortion() {
        Distortion::None => ("plumb_bob", vec![0.0; 5]),
        Distortion::RadialTangential { k1, k2, p1, p2, k3 } => {
            ("plumb_bob", vec![k1, k2, p1, p2, k3])
        }
        // OpenCV's fisheye model, which Foxglove calls kannala_brandt.
        Distortion::Fisheye { k1, k2, k3, k4 } => ("kannala_brandt", vec![k1, k2, k3, k4]),
    };
    CameraCalibration {
        timestamp: None,
        frame_id: FRAME_ID.to_string(),
        width,
        height,
        distortion_model: distortion_model.to_string(),
        d,
        k: vec![k.fx, 0.0, k.cx, 0.0, k.fy, k.cy, 0.0, 0.0, 1.0],
        r: vec![1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
        p: vec![
            k.fx, 0.0, k.cx, 0.0, 0.0, k.fy, k.cy, 0.0, 0.0, 0.0, 1.0, 0.0,
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SourceJpeg;
    use crate::types::{BoxXyxy, ClassGroup, Detection, Frame, HudStats};
    use prost::Message as _;

    fn detected(boxes: usize) -> DetectedFrame {
        DetectedFrame {
            frame: Frame {
                seq: 3,
                capture_mono_ns: 1_000,
                capture_wall_ns: 1_700_000_000_123_456_789,
                pts_ns: None,
                image: image::RgbImage::from_pixel(64, 48, image::Rgb([90, 120, 30])),
            },
            detections: (0..boxes)
                .map(|i| Detection {
                    class_id: 0,
                    class: "person".into(),
                    group: ClassGroup::Pedestrian,
                    score: 0.9,
                    box_in_image: BoxXyxy::new(1.0 + i as f32, 2.0, 30.0, 40.0),
                    range: None,
                    track_id: Some(7 + i as u64),
                    track_age_s: Some(0.5),
                })
                .collect(),
            timings: Default::default(),
            stamps: Default::default(),
            heat: None,
        }
    }

    #[test]
    fn the_image_decodes_as_a_compressed_image_with_the_shared_jpeg() {
        let d = detected(0);
        let jpeg = SourceJpeg::default();
        let frame = SinkFrame {
            detected: &d,
            annotated: None,
            hud: &HudStats::default(),
            jpeg: &jpeg,
        };
        let mut messages =
            FrameMessages::new("mcap", FrameFileFormat::Jpg, None, (64, 48)).unwrap();
        let bytes = messages
            .encode(Topic::Image, &frame, 1_700_000_000_123_456_789)
            .unwrap()
            .to_vec();
        let image = CompressedImage::decode(bytes.as_slice()).unwrap();
        assert_eq!(image.format, "jpeg");
        assert_eq!(image.frame_id, FRAME_ID);
        let ts = image.timestamp.unwrap();
        assert_eq!((ts.sec(), ts.nsec()), (1_700_000_000, 123_456_789));
        assert_eq!(
            &image.data[..],
            &jpeg.get(&d.frame, JPEG_QUALITY).unwrap()[..]
        );
        let decoded = image::load_from_memory(&image.data).unwrap();
        assert_eq!((decoded.width(), decoded.height()), (64, 48));
        assert_eq!(
            messages.topics().count(),
            4,
            "no calibration channel without one"
        );
    }

    #[test]
    fn annotations_hold_a_line_loop_and_a_label_per_box_and_clear_when_empty() {
        let hud = HudStats::default();
        let jpeg = SourceJpeg::default();
        let mut messages =
            FrameMessages::new("mcap", FrameFileFormat::Jpg, None, (64, 48)).unwrap();
        for boxes in [2, 0] {
            let d = detected(boxes);
            let frame = SinkFrame {
                detected: &d,
                annotated: None,
                hud: &hud,
                jpeg: &jpeg,
            };
            let bytes = messages.encode(Topic::Annotations, &frame, 5).unwrap();
            let a = ImageAnnotations::decode(bytes).unwrap();
            assert_eq!(a.points.len(), boxes);
            assert_eq!(a.texts.len(), boxes);
            if boxes > 0 {
                let p = &a.points[1];
                assert_eq!(p.r#type, points_annotation::Type::LineLoop as i32);
                assert_eq!(p.points.len(), 4);
                assert_eq!((p.points[2].x, p.points[2].y), (30.0, 40.0));
                assert!(
                    a.texts[1].text.starts_with("#8 person 0.90"),
                    "{}",
                    a.texts[1].text
                );
            }
        }
    }

    #[test]
    fn detections_and_latency_are_json_and_the_schemas_parse() {
        let d = detected(1);
        let frame = SinkFrame {
            detected: &d,
            annotated: None,
            hud: &HudStats::default(),
            jpeg: &SourceJpeg::default(),
        };
        let mut messages =
            FrameMessages::new("mcap", FrameFileFormat::Jpg, None, (64, 48)).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(messages.encode(Topic::Detections, &frame, 5).unwrap()).unwrap();
        assert_eq!(json["seq"], 3);
        assert_eq!(json["detections"][0]["track_id"], 7);
        let json: serde_json::Value =
            serde_json::from_slice(messages.encode(Topic::Latency, &frame, 5).unwrap()).unwrap();
        assert_eq!(json["detections"], 1);
        for topic in Topic::ALL {
            let data = topic.schema_data();
            assert!(!data.is_empty(), "{topic:?}");
            if topic.schema_encoding() == "jsonschema" {
                let schema: serde_json::Value = serde_json::from_slice(&data).unwrap();
                assert_eq!(schema["title"], topic.schema_name());
            }
        }
    }
}
