//! Per-frame latency records: per-stage and end-to-end percentiles (hdrhistogram), the run
//! summary (`--metrics FILE.json` and the table printed at exit) and per-frame CSV rows.
//!
//! A stage's latency is its own work: from the previous stamp to its own, less the time the
//! frame waited on the hop before the stage took it. Those waits are reported together as
//! `queue_wait`, so that the stages and the queue add up to the end-to-end time (capture →
//! presented). The first
//! frames (warm-up: caches, allocator, lazy initialisation) are kept apart from the
//! percentiles and reported on their own, with the model load time.

use std::io::Write;
use std::path::Path;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::types::FrameStamps;

/// Stage names, in pipeline order, as the summary and CSV use them; `queue_wait` is the
/// time a frame spent waiting between stages.
pub const STAGES: [&str; 8] = [
    "capture",
    "preprocess",
    "inference",
    "postprocess",
    "track",
    "render",
    "present",
    "queue_wait",
];

/// A hand-over between two threads of the pipeline, named by the stage that takes from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Capture → detect.
    ToDetect,
    /// Detect → render.
    ToRender,
    /// Render → sinks.
    ToSink,
}

impl Hop {
    /// The stage that takes from this hop.
    pub fn consumer(self) -> &'static str {
        match self {
            Hop::ToDetect => "detect",
            Hop::ToRender => "render",
            Hop::ToSink => "sink",
        }
    }
}

/// Nanoseconds a frame waited on each hop before the stage after it took the frame.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueWaits {
    pub to_detect: u64,
    pub to_render: u64,
    pub to_sink: u64,
}

impl QueueWaits {
    pub fn set(&mut self, hop: Hop, ns: u64) {
        match hop {
            Hop::ToDetect => self.to_detect = ns,
            Hop::ToRender => self.to_render = ns,
            Hop::ToSink => self.to_sink = ns,
        }
    }

    pub fn total(&self) -> u64 {
        self.to_detect + self.to_render + self.to_sink
    }
}

/// Frames counted as warm-up by default.
pub const DEFAULT_WARMUP_FRAMES: usize = 3;

/// Stamps in pipeline order: `captured` first, `presented` last. Without a tracker the
/// track stage ends where it starts (0 ms).
fn ordered(s: &FrameStamps) -> [u64; 8] {
    let tracked = if s.tracked > 0 {
        s.tracked
    } else {
        s.postprocessed
    };
    [
        s.captured,
        s.decoded,
        s.preprocessed,
        s.inferred,
        s.postprocessed,
        tracked,
        s.rendered,
        s.presented,
    ]
}

/// Each stage's own time in ns, then the queue wait (`None` when a stamp is missing).
pub fn stage_ns(s: &FrameStamps, waits: &QueueWaits) -> [Option<u64>; 8] {
    let t = ordered(s);
    // The stage after each hop: detect's first step (preprocess), render, present.
    let wait_before = |stage: &str| match stage {
        "preprocess" => waits.to_detect,
        "render" => waits.to_render,
        "present" => waits.to_sink,
        _ => 0,
    };
    std::array::from_fn(|i| {
        if STAGES[i] == "queue_wait" {
            return Some(waits.total());
        }
        (t[i] > 0 && t[i + 1] > 0).then(|| {
            t[i + 1]
                .saturating_sub(t[i])
                .saturating_sub(wait_before(STAGES[i]))
        })
    })
}

/// Capture → presented, ns.
pub fn end_to_end_ns(s: &FrameStamps) -> Option<u64> {
    (s.captured > 0 && s.presented > 0).then(|| s.presented.saturating_sub(s.captured))
}

/// What is kept of each presented frame.
#[derive(Debug, Clone, PartialEq)]
pub struct FrameRecord {
    pub seq: u64,
    pub pts_ns: Option<i64>,
    pub stamps: FrameStamps,
    pub waits: QueueWaits,
    pub warmup: bool,
    pub detections: usize,
}

/// Collects presented frames' stamps.
pub struct LatencyRecorder {
    warmup_frames: usize,
    stages: Vec<Histogram<u64>>,
    end_to_end: Histogram<u64>,
    records: Vec<FrameRecord>,
    /// Frames recorded so far (`records` may hold only the warm-up ones).
    recorded: usize,
    /// Keep every frame's record (for CSV and plots); otherwise only the warm-up frames',
    /// so that memory stays flat however long a run lasts.
    keep_every_record: bool,
}

fn histogram() -> Histogram<u64> {
    // Microseconds, 1 µs .. 1 h, 3 significant digits.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid histogram bounds")
}

impl LatencyRecorder {
    pub fn new(warmup_frames: usize) -> Self {
        Self {
            warmup_frames,
            stages: (0..STAGES.len()).map(|_| histogram()).collect(),
            end_to_end: histogram(),
            records: Vec::new(),
            recorded: 0,
            keep_every_record: true,
        }
    }

    /// A recorder that keeps only the warm-up frames' records: histograms and counts are
    /// complete, [`LatencyRecorder::records`] and the CSV hold the warm-up frames only.
    pub fn without_frame_records(warmup_frames: usize) -> Self {
        Self {
            keep_every_record: false,
            ..Self::new(warmup_frames)
        }
    }

    /// Records one presented frame.
    pub fn record(
        &mut self,
        seq: u64,
        pts_ns: Option<i64>,
        stamps: FrameStamps,
        waits: QueueWaits,
        detections: usize,
    ) {
        let warmup = self.recorded < self.warmup_frames;
        self.recorded += 1;
        if !warmup {
            for (h, ns) in self.stages.iter_mut().zip(stage_ns(&stamps, &waits)) {
                if let Some(ns) = ns {
                    h.saturating_record((ns / 1000).max(1));
                }
            }
            if let Some(ns) = end_to_end_ns(&stamps) {
                self.end_to_end.saturating_record((ns / 1000).max(1));
            }
        }
        if !(warmup || self.keep_every_record) {
            return;
        }
        self.records.push(FrameRecord {
            seq,
            pts_ns,
            stamps,
            waits,
            warmup,
            detections,
        });
    }

    pub fn records(&self) -> &[FrameRecord] {
        &self.records
    }

    /// Percentiles of a stage (index into [`STAGES`]) after warm-up.
    pub fn stage_stats(&self, stage: usize) -> LatencyStats {
        LatencyStats::of(&self.stages[stage])
    }

    pub fn end_to_end_stats(&self) -> LatencyStats {
        LatencyStats::of(&self.end_to_end)
    }

    /// End-to-end times of the warm-up frames, ms.
    pub fn warmup_end_to_end_ms(&self) -> Vec<f64> {
        self.records
            .iter()
            .filter(|r| r.warmup)
            .filter_map(|r| end_to_end_ns(&r.stamps))
            .map(|ns| ns as f64 / 1e6)
            .collect()
    }

    /// Writes one row per presented frame with every stamp (ns on the process's monotonic
    /// clock) and the end-to-end time.
    pub fn write_csv(&self, path: &Path) -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        writeln!(
            out,
            "seq,pts_ns,warmup,captured_ns,decoded_ns,preprocessed_ns,inferred_ns,postprocessed_ns,tracked_ns,rendered_ns,presented_ns,wait_detect_ns,wait_render_ns,wait_sink_ns,end_to_end_ms,detections"
        )?;
        for r in &self.records {
            let s = &r.stamps;
            let pts = r.pts_ns.map_or(String::new(), |p| p.to_string());
            let e2e =
                end_to_end_ns(s).map_or(String::new(), |ns| format!("{:.3}", ns as f64 / 1e6));
            writeln!(
                out,
                "{},{pts},{},{},{},{},{},{},{},{},{},{},{},{},{e2e},{}",
                r.seq,
                u8::from(r.warmup),
                s.captured,
                s.decoded,
                s.preprocessed,
                s.inferred,
                s.postprocessed,
                s.tracked,
                s.rendered,
                s.presented,
                r.waits.to_detect,
                r.waits.to_render,
                r.waits.to_sink,
                r.detections
            )?;
        }
        out.flush()
    }
}

/// Order statistics of one latency, ms (0 with no samples).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyStats {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl LatencyStats {
    fn of(h: &Histogram<u64>) -> LatencyStats {
        if h.is_empty() {
            return LatencyStats::default();
        }
        let ms = |us: u64| us as f64 / 1e3;
        LatencyStats {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            max_ms: ms(h.max()),
            mean_ms: h.mean() / 1e3,
        }
    }
}

/// Frames dropped before each stage took them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Drops {
    /// Skipped by the source, or too late for `--pace realtime`.
    pub capture: u64,
    /// Replaced in the slot before the detector (live / realtime).
    pub detect: u64,
    pub render: u64,
    pub sink: u64,
}

impl Drops {
    pub fn total(&self) -> u64 {
        self.capture + self.detect + self.render + self.sink
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct FrameCounts {
    #[serde(rename = "in")]
    pub frames_in: u64,
    pub processed: u64,
    pub shown: u64,
    pub dropped: Drops,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Rates {
    #[serde(rename = "in")]
    pub fps_in: f64,
    pub processed: f64,
    pub shown: f64,
}

/// Stage latencies by name, in pipeline order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct StageTable {
    pub capture: LatencyStats,
    pub preprocess: LatencyStats,
    pub inference: LatencyStats,
    pub postprocess: LatencyStats,
    /// The tracker's update (0 without one).
    pub track: LatencyStats,
    pub render: LatencyStats,
    pub present: LatencyStats,
    pub queue_wait: LatencyStats,
}

impl StageTable {
    pub fn rows(&self) -> [(&'static str, LatencyStats); 8] {
        [
            (STAGES[0], self.capture),
            (STAGES[1], self.preprocess),
            (STAGES[2], self.inference),
            (STAGES[3], self.postprocess),
            (STAGES[4], self.track),
            (STAGES[5], self.render),
            (STAGES[6], self.present),
            (STAGES[7], self.queue_wait),
        ]
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Warmup {
    /// Frames left out of the percentiles.
    pub frames: usize,
    pub model_load_ms: f64,
    pub end_to_end_ms: Vec<f64>,
}

/// Everything `--metrics FILE.json` holds.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RunSummary {
    pub source: String,
    pub model: String,
    /// Where inference ran and in what precision (`cpu f32`, `cuda:0 f16`); empty when no
    /// model runs (recording).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub device: String,
    pub pace: String,
    pub duration_s: f64,
    pub frames: FrameCounts,
    pub fps: Rates,
    pub stages: StageTable,
    pub end_to_end: LatencyStats,
    pub warmup: Warmup,
    /// Why the input ended early, what the source skipped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// The live Foxglove server's clients and messages (`--foxglove`): `dropped` counts
    /// messages a slow client lost (latest wins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub foxglove: Option<crate::live::LiveStats>,
}

impl RunSummary {
    /// Counts and rates from the run, latencies from `recorder`.
    pub fn build(
        recorder: &LatencyRecorder,
        frames: FrameCounts,
        duration_s: f64,
        model_load_ms: f64,
    ) -> RunSummary {
        let rate = |n: u64| {
            if duration_s > 0.0 {
                n as f64 / duration_s
            } else {
                0.0
            }
        };
        RunSummary {
            duration_s,
            frames,
            fps: Rates {
                fps_in: rate(frames.frames_in),
                processed: rate(frames.processed),
                shown: rate(frames.shown),
            },
            stages: StageTable {
                capture: recorder.stage_stats(0),
                preprocess: recorder.stage_stats(1),
                inference: recorder.stage_stats(2),
                postprocess: recorder.stage_stats(3),
                track: recorder.stage_stats(4),
                render: recorder.stage_stats(5),
                present: recorder.stage_stats(6),
                queue_wait: recorder.stage_stats(7),
            },
            end_to_end: recorder.end_to_end_stats(),
            warmup: Warmup {
                frames: recorder.records().iter().filter(|r| r.warmup).count(),
                model_load_ms,
                end_to_end_ms: recorder.warmup_end_to_end_ms(),
            },
            ..RunSummary::default()
        }
    }

    /// The end-of-run table (stderr).
    pub fn table(&self) -> String {
        let f = &self.frames;
        let d = &f.dropped;
        let mut out = format!(
            "{} | {} | pace {}\nframes: {} in, {} processed, {} shown in {:.2} s ({:.1} / {:.1} / {:.1} fps); dropped: capture {}, detect {}, render {}, sink {}\n",
            self.source, self.model, self.pace, f.frames_in, f.processed, f.shown, self.duration_s,
            self.fps.fps_in, self.fps.processed, self.fps.shown, d.capture, d.detect, d.render, d.sink
        );
        out += &format!(
            "{:<12} {:>7} {:>9} {:>9} {:>9} {:>9}\n",
            "stage", "frames", "p50 ms", "p90 ms", "p99 ms", "max ms"
        );
        let rows = self.stages.rows();
        for (name, s) in rows
            .iter()
            .copied()
            .chain([("end-to-end", self.end_to_end)])
        {
            out += &format!(
                "{:<12} {:>7} {:>9.2} {:>9.2} {:>9.2} {:>9.2}\n",
                name, s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms
            );
        }
        let warm: Vec<String> = self
            .warmup
            .end_to_end_ms
            .iter()
            .map(|v| format!("{v:.1}"))
            .collect();
        out += &format!(
            "warm-up (not in percentiles): model load {:.0} ms; first {} frames end-to-end [{}] ms\n",
            self.warmup.model_load_ms,
            self.warmup.frames,
            warm.join(", ")
        );
        for note in &self.notes {
            out += &format!("note: {note}\n");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamps(start_ms: u64, step_ms: [u64; 6]) -> FrameStamps {
        let mut t = [start_ms * 1_000_000; 7];
        for i in 0..6 {
            t[i + 1] = t[i] + step_ms[i] * 1_000_000;
        }
        FrameStamps {
            captured: t[0],
            decoded: t[1],
            preprocessed: t[2],
            inferred: t[3],
            postprocessed: t[4],
            tracked: 0,
            rendered: t[5],
            presented: t[6],
        }
    }

    #[test]
    fn without_frame_records_only_the_warmup_records_are_kept() {
        let mut rec = LatencyRecorder::without_frame_records(2);
        for i in 0..50 {
            rec.record(
                i,
                None,
                stamps(10 * i + 1, [1, 1, 5, 1, 1, 1]),
                QueueWaits::default(),
                0,
            );
        }
        assert_eq!(rec.records().len(), 2, "memory stays flat");
        assert_eq!(
            rec.stage_stats(2).count,
            48,
            "the histograms see every frame"
        );
        assert_eq!(rec.warmup_end_to_end_ms().len(), 2);
    }

    #[test]
    fn warmup_frames_stay_out_of_the_percentiles() {
        let mut rec = LatencyRecorder::new(2);
        rec.record(
            0,
            None,
            stamps(1, [1, 1, 500, 1, 1, 1]),
            QueueWaits::default(),
            0,
        );
        rec.record(
            1,
            None,
            stamps(600, [1, 1, 400, 1, 1, 1]),
            QueueWaits::default(),
            0,
        );
        for i in 0..100 {
            rec.record(
                2 + i,
                Some(i as i64),
                stamps(1000 + 50 * i, [1, 2, 30, 3, 4, 5]),
                QueueWaits {
                    to_detect: 1_000_000,
                    to_render: 0,
                    to_sink: 2_000_000,
                },
                1,
            );
        }
        let inference = rec.stage_stats(2);
        assert_eq!(inference.count, 100);
        let ms = |stage: usize| rec.stage_stats(stage).p50_ms;
        assert!(
            (ms(1) - 1.0).abs() < 0.01 && (ms(6) - 3.0).abs() < 0.01,
            "waits are taken out"
        );
        assert!(ms(4) < 0.01, "no tracker: the track stage takes no time");
        assert!((ms(7) - 3.0).abs() < 0.01, "and reported as the queue wait");
        assert!((inference.max_ms - 30.0).abs() < 0.05, "{inference:?}");
        let e2e = rec.end_to_end_stats();
        assert!((e2e.p50_ms - 45.0).abs() < 0.05 && (e2e.p99_ms - 45.0).abs() < 0.05);
        assert_eq!(rec.warmup_end_to_end_ms(), vec![505.0, 405.0]);
        let summary = RunSummary::build(&rec, FrameCounts::default(), 2.0, 123.0);
        let json = serde_json::to_value(&summary).unwrap();
        for stage in STAGES {
            assert!(json["stages"][stage]["p99_ms"].is_number(), "{stage}");
        }
        assert!(
            json["frames"]["in"].is_number() && json["frames"]["dropped"]["detect"].is_number()
        );
        assert!(summary.table().contains("end-to-end"));
    }

    #[test]
    fn missing_stamps_give_no_stage_time() {
        let mut s = stamps(1, [1, 1, 1, 1, 1, 1]);
        s.rendered = 0;
        let ns = stage_ns(&s, &QueueWaits::default());
        assert!(ns[5].is_none() && ns[6].is_none() && ns[3].is_some() && ns[4] == Some(0));
        assert_eq!(end_to_end_ns(&s), Some(6_000_000));
    }

    #[test]
    fn csv_has_a_row_per_frame() {
        let mut rec = LatencyRecorder::new(0);
        let waits = QueueWaits {
            to_detect: 5,
            to_render: 6,
            to_sink: 7,
        };
        rec.record(4, Some(40), stamps(10, [1; 6]), waits, 2);
        rec.record(5, None, stamps(20, [1; 6]), QueueWaits::default(), 0);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        rec.write_csv(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[1].starts_with("4,40,0,10000000,11000000,"),
            "{}",
            lines[1]
        );
        assert!(lines[2].starts_with("5,,0,"), "{}", lines[2]);
        assert!(
            lines[1].ends_with(",0,15000000,16000000,5,6,7,6.000,2"),
            "{}",
            lines[1]
        );
    }
}
