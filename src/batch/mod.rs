//! Batch replay of many recorded drives (`lookout batch`): the manifest of drives, and the
//! result folder where each drive's detections, metrics and `done.json` appear whole or not
//! at all, so that a batch (or a fleet of them on a cluster) can be killed and re-run and
//! redo only what is not done. Running a drive is `lookout run`'s pipeline; this module
//! only knows which drives there are and what is stored for them.

pub mod manifest;
pub mod store;

pub use manifest::{DriveEntry, Manifest, Shard};
pub use store::{Attempt, Committed, DoneRecord, DriveState, ResultStore, RunKey, Status};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error("cannot read manifest {}: {source}", path.display())]
    ReadManifest {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest {}: {reason}", path.display())]
    BadManifest { path: PathBuf, reason: String },
    #[error("--drive `{id}` is not in the manifest; `lookout batch MANIFEST --out DIR --list` lists its drives")]
    UnknownDrive { id: String },
    #[error("cannot {what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("result folder {} keeps being replaced by other attempts; is the same drive run twice at once with different settings?", path.display())]
    Contended { path: PathBuf },
}
