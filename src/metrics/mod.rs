//! Latency statistics: summaries of timing samples for benchmarks and run reports.

pub mod summary;

pub use summary::SampleSummary;
