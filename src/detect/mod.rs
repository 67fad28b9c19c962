//! Object detection: models (YOLOv8, YOLOX) on candle, their pre- and post-processing,
//! weights loading and the class map.

pub mod error;
pub mod layers;
pub mod weights;
pub mod yolox;

pub use error::{DetectError, Result};
