//! PyTorch checkpoints (`.pt`, `.pth`): a zip archive holding `data.pkl` and raw storages.
//! (Being written: see the pickle work branch.)

use std::path::Path;

use candle_core::Tensor;

#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    #[error("{0}")]
    Unsupported(String),
}

/// Reads every tensor of a PyTorch checkpoint, named as `state_dict()` would name it.
pub fn read_checkpoint(_path: &Path) -> Result<Vec<(String, Tensor)>, PickleError> {
    Err(PickleError::Unsupported(
        "PyTorch checkpoints are not readable yet; convert to safetensors".into(),
    ))
}
