//! The one error type of `detect`: every message names the file, tensor or model and says
//! what to do.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    #[error("weights file {path} not found{hint}")]
    WeightsNotFound { path: PathBuf, hint: String },

    #[error("cannot read weights file {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },

    #[error("{path} is not a model file ({reason}); expected .safetensors, a PyTorch .pt/.pth checkpoint, or a known --model name")]
    NotAModel { path: PathBuf, reason: String },

    #[error("{path} is {what}; lookout runs {}", super::weights::names::SUPPORTED)]
    UnsupportedModel { path: PathBuf, what: String },

    #[error("weights file {path}: {reason}")]
    BadWeights { path: PathBuf, reason: String },

    #[error("weights file {path} has no tensor `{tensor}`; {expected}")]
    MissingTensor {
        path: PathBuf,
        tensor: String,
        expected: String,
    },

    #[error("weights file {path}: tensor `{tensor}` has shape {actual:?}, expected {expected}")]
    WrongShape {
        path: PathBuf,
        tensor: String,
        actual: Vec<usize>,
        expected: String,
    },

    #[error("unknown model `{name}`; known models: {known}")]
    UnknownModel { name: String, known: String },

    #[error("model `{name}` is not in models/, $LOOKOUT_MODELS or the Hugging Face cache, and downloads are off (--offline / LOOKOUT_OFFLINE=1); download it with network access or pass --weights FILE")]
    NotAvailableOffline { name: String },

    #[error(
        "downloading model `{name}` failed: {reason}; pass --weights FILE to use a local copy"
    )]
    Download { name: String, reason: String },

    /// The network's output holds no finite number (issue 12: reported as "no detections").
    #[error("the model's output is NaN or infinite in all {total} values: the weights are broken (NaN tensors in the file?) or the arithmetic overflowed (try without --half); no detections are possible")]
    NonFiniteOutput { total: usize },

    #[error("bad detector option: {0}")]
    Config(String),

    #[error("cannot read image {path}: {reason}")]
    Image { path: PathBuf, reason: String },

    #[error("device `{0}` is not available: {1}")]
    Device(String, String),

    /// A CUDA failure with advice (out of memory, a driver too old for the kernels, …).
    #[error("CUDA: {advice} ({code})")]
    Cuda { advice: &'static str, code: String },

    #[error(transparent)]
    Candle(candle_core::Error),
}

impl From<candle_core::Error> for DetectError {
    fn from(e: candle_core::Error) -> Self {
        let e = without_backtrace(e);
        match super::cuda_fault::cuda_fault(&e) {
            Some((fault, code)) => DetectError::Cuda {
                advice: fault.advice(),
                code,
            },
            None => DetectError::Candle(e),
        }
    }
}

/// candle attaches a captured backtrace to errors when `RUST_BACKTRACE` is set and prints
/// it as part of the message; users get the one-line message only.
pub fn without_backtrace(e: candle_core::Error) -> candle_core::Error {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => without_backtrace(*inner),
        other => other,
    }
}

pub type Result<T, E = DetectError> = std::result::Result<T, E>;
