//! Integration tests, one binary with a module per area. Fixtures come from
//! `LOOKOUT_FIXTURES` (default `../shared/fixtures`); see `lookout::fixtures`.

mod calib;
mod common;
mod detect;
mod explain;
mod families;
mod faults;
mod faults_input;
mod faults_sinks;
mod faults_stream;
mod fleet;
mod fuzz;
mod mcap_files;
mod pipeline;
mod privacy;
mod sink;
mod soak;
mod source;
mod track_eval;
mod tracking;
