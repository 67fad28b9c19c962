//! lookout: a real-time camera perception pipeline.
//!
//! Frames flow one way: `source` → `detect` → `render` → `sink`, with `pipeline` the only
//! module that owns threads and channels and `metrics` fed from the frames' timestamps.
//! `types` holds the plain data passed between stages; it depends on neither candle nor
//! any windowing crate.

pub mod batch;
pub mod calib;
pub mod civil;
pub mod cli;
pub mod detect;
pub mod drive;
pub mod explain;
pub mod fixtures;
pub mod imageio;
pub mod live;
pub mod metrics;
pub mod pipeline;
pub mod privacy;
pub mod ranging;
pub mod redact;
pub mod render;
pub mod sink;
pub mod source;
pub mod track;
pub mod track_eval;
pub mod trackfile;
pub mod types;
