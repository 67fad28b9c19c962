//! Latency statistics: summaries of timing samples for benchmarks, and the pipeline's
//! per-frame latency records, run summary, HUD numbers and plots.

pub mod hud;
pub mod latency;
pub mod plot;
pub mod summary;

pub use latency::{LatencyRecorder, LatencyStats, RunSummary};
pub use summary::SampleSummary;
