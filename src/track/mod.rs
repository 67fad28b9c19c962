//! Multi-object tracking: identities for detections across frames, and what follows from
//! them (closing speed, time to collision).
//!
//! A [`Tracker`] takes one frame's detections at the frame's time and says, per detection,
//! which track it continues. [`bytetrack::ByteTracker`] (the default) is ByteTrack with a
//! Kalman filter ([`kalman`]) and optimal assignment ([`assign`]); [`iou::IouTracker`] is
//! the greedy IoU matcher lookout had before, kept as the baseline it is measured against.
//! [`closing::ClosingSpeeds`] turns a track's distances into a closing speed and a time to
//! collision. [`stage::TrackStage`] is all of it as a pipeline stage. Trackers know no
//! threads; they allocate nothing per frame once warm beyond their small index buffers.

pub mod assign;
pub mod bytetrack;
pub mod closing;
pub mod iou;
pub mod kalman;
pub mod stage;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::types::BoxXyxy;

pub use stage::TrackStage;

/// One detection as a tracker sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TrackInput {
    pub box_in_image: BoxXyxy,
    pub score: f32,
    /// Detections only continue tracks of their own class.
    pub class_id: usize,
}

/// The track a detection was given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assigned {
    /// Stable for the track's life and never reused in a run.
    pub track_id: u64,
    /// Seconds since the track was born.
    pub age_s: f64,
    /// Seen often enough to be reported (a tentative track is not yet).
    pub confirmed: bool,
    /// The track's filtered box at this frame, in image pixels.
    pub box_filtered: BoxXyxy,
}

/// A multi-object tracker: one call per frame, in time order.
pub trait Tracker: Send {
    /// `bytetrack`, `iou`.
    fn name(&self) -> &'static str;
    /// Feeds the detections of the frame taken at `time_s` (seconds on any steady clock);
    /// `assigned` is cleared and gets one entry per input, in input order: the track it
    /// continues or started, or `None` when it was not used.
    fn update(&mut self, time_s: f64, inputs: &[TrackInput], assigned: &mut Vec<Option<Assigned>>);
    /// Tracks held (tracked, tentative and lost).
    fn live_tracks(&self) -> usize;
    /// Appends `(class_id, predicted box)` of every track that was not seen in the last
    /// update but is still held (lost, waiting to be found again).
    fn coasting(&self, out: &mut Vec<(usize, BoxXyxy)>);
}

/// Which tracker a run uses (`--tracker`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum TrackerKind {
    /// ByteTrack: Kalman filter, two-stage optimal association (the default).
    #[default]
    Bytetrack,
    /// Greedy IoU matching of each frame's confident boxes (the baseline).
    Iou,
    /// No tracking: detections per frame, without identities.
    None,
}

impl TrackerKind {
    pub fn name(self) -> &'static str {
        match self {
            TrackerKind::Bytetrack => "bytetrack",
            TrackerKind::Iou => "iou",
            TrackerKind::None => "none",
        }
    }
}

/// Tracker settings, with ultralytics' names and defaults (`bytetrack.yaml`); a
/// `--tracker-config` TOML file sets any of them.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ByteTrackConfig {
    /// Detections at or above this score take part in the first association and may
    /// start tracks.
    pub track_high_thresh: f32,
    /// Detections above this (and below `track_high_thresh`) take part in the second
    /// association only; the detector hands the tracker everything above it.
    pub track_low_thresh: f32,
    /// A detection that matched no track starts one only at or above this score.
    pub new_track_thresh: f32,
    /// How long a lost track waits to be found again: this many frames at 30 fps
    /// (`30` = one second, whatever the source's rate).
    pub track_buffer: u32,
    /// Largest IoU distance (1 − IoU, score-weighted) for the first association.
    pub match_thresh: f32,
    /// Weight IoU by the detection's score in the first association.
    pub fuse_score: bool,
}

impl Default for ByteTrackConfig {
    fn default() -> Self {
        Self {
            track_high_thresh: 0.25,
            track_low_thresh: 0.1,
            new_track_thresh: 0.25,
            track_buffer: 30,
            match_thresh: 0.8,
            fuse_score: true,
        }
    }
}

/// A tracker configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TrackConfigError {
    #[error("cannot read tracker config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("tracker config {path}: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: Box<toml::de::Error>,
    },
    #[error("tracker config: {key} = {value} is outside [0, 1]")]
    OutOfRange { key: &'static str, value: f32 },
    #[error("tracker config: tracker_type = {0}: only \"bytetrack\" has these settings")]
    TrackerType(String),
    #[error("tracker config: track_buffer must be at least 1 (frames at 30 fps)")]
    EmptyBuffer,
    #[error("tracker config: track_low_thresh ({low}) must be below track_high_thresh ({high})")]
    LowAboveHigh { low: f32, high: f32 },
}

impl ByteTrackConfig {
    /// Reads and checks a TOML file of settings; keys not named are defaults.
    pub fn load(path: &Path) -> Result<Self, TrackConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| TrackConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text).map_err(|e| match e {
            TrackConfigError::Parse { source, .. } => TrackConfigError::Parse {
                path: path.to_path_buf(),
                source,
            },
            other => other,
        })
    }

    /// Parses and checks TOML text.
    pub fn parse(text: &str) -> Result<Self, TrackConfigError> {
        let parse_error = |source| TrackConfigError::Parse {
            path: PathBuf::new(),
            source: Box::new(source),
        };
        let mut table: toml::Table = toml::from_str(text).map_err(parse_error)?;
        // Ultralytics' `tracker_type` key, so that a converted `bytetrack.yaml` reads as is.
        if let Some(kind) = table.remove("tracker_type") {
            if kind.as_str() != Some("bytetrack") {
                return Err(TrackConfigError::TrackerType(kind.to_string()));
            }
        }
        let config: ByteTrackConfig = table.try_into().map_err(parse_error)?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), TrackConfigError> {
        for (key, value) in [
            ("track_high_thresh", self.track_high_thresh),
            ("track_low_thresh", self.track_low_thresh),
            ("new_track_thresh", self.new_track_thresh),
            ("match_thresh", self.match_thresh),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(TrackConfigError::OutOfRange { key, value });
            }
        }
        if self.track_buffer == 0 {
            return Err(TrackConfigError::EmptyBuffer);
        }
        if self.track_low_thresh >= self.track_high_thresh {
            return Err(TrackConfigError::LowAboveHigh {
                low: self.track_low_thresh,
                high: self.track_high_thresh,
            });
        }
        Ok(())
    }
}

/// The tracker `kind` names, or `None` for `--tracker none`.
pub fn build(kind: TrackerKind, config: ByteTrackConfig) -> Option<Box<dyn Tracker>> {
    match kind {
        TrackerKind::Bytetrack => Some(Box::new(bytetrack::ByteTracker::new(config))),
        TrackerKind::Iou => Some(Box::new(iou::IouTracker::new(config))),
        TrackerKind::None => None,
    }
}

/// Measures time between frames in units of the source's frame interval: `1` for the next
/// frame, `2` when one was dropped. The interval is learnt from the frames themselves (a
/// running average that gaps do not pull up).
#[derive(Debug, Clone, Copy, Default)]
pub struct FrameClock {
    last_s: Option<f64>,
    interval_s: Option<f64>,
}

impl FrameClock {
    /// Steps to `time_s`; returns the intervals since the last frame (1 for the first, and
    /// for a clock that went backwards: a restarted stream).
    pub fn step(&mut self, time_s: f64) -> f64 {
        let Some(last) = self.last_s.replace(time_s) else {
            return 1.0;
        };
        let dt = time_s - last;
        if dt <= 0.0 {
            return if dt == 0.0 { 0.0 } else { 1.0 };
        }
        let (steps, interval) = match self.interval_s {
            None => (1.0, dt),
            Some(i) => (dt / i, 0.9 * i + 0.1 * dt.clamp(0.5 * i, 1.5 * i)),
        };
        self.interval_s = Some(interval);
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_defaults_are_ultralytics_bytetrack_yaml() {
        let c = ByteTrackConfig::default();
        assert_eq!(
            (c.track_high_thresh, c.track_low_thresh, c.new_track_thresh),
            (0.25, 0.1, 0.25)
        );
        assert_eq!(
            (c.track_buffer, c.match_thresh, c.fuse_score),
            (30, 0.8, true)
        );
    }

    #[test]
    fn config_files_set_keys_and_bad_ones_are_named() {
        let c = ByteTrackConfig::parse(
            "tracker_type = \"bytetrack\"\ntrack_buffer = 60\nmatch_thresh = 0.7\n",
        )
        .unwrap();
        assert_eq!((c.track_buffer, c.match_thresh), (60, 0.7));
        let e = ByteTrackConfig::parse("track_bufer = 60\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("track_bufer"), "{e}");
        let e = ByteTrackConfig::parse("new_track_thresh = 1.5\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("new_track_thresh") && e.contains("[0, 1]"),
            "{e}"
        );
        let e = ByteTrackConfig::parse("track_low_thresh = 0.5\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("track_low_thresh"), "{e}");
        let e = ByteTrackConfig::load(Path::new("/nonexistent/t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/t.toml"), "{e}");
    }

    #[test]
    fn frame_clock_counts_intervals_and_gaps() {
        let mut clock = FrameClock::default();
        assert_eq!(clock.step(10.0), 1.0);
        for f in 1..10 {
            assert!((clock.step(10.0 + f as f64 * 0.1) - 1.0).abs() < 1e-9);
        }
        // A dropped frame: two intervals, and the interval stays 0.1 s.
        assert!((clock.step(11.1) - 2.0).abs() < 1e-9);
        assert!((clock.step(11.2) - 1.0).abs() < 0.06);
        assert_eq!(clock.step(5.0), 1.0);
    }
}
