//! Object detection: model families (YOLOv8, YOLOX) on candle, their pre- and
//! post-processing, weights loading and the class map.
//!
//! `Detector` ties them together: `weights` reads and BN-folds a file, `families` picks
//! the family from its tensor names and builds it (a folder per family, each a
//! [`family::Family`]), `preprocess` prepares an image the way the model's reference does,
//! `postprocess` turns the output into boxes in image pixels.

pub mod classes;
pub mod cpu;
pub mod cuda_fault;
mod detector;
pub mod device;
pub mod dfl;
pub mod error;
pub mod families;
pub mod family;
pub mod layers;
pub mod postprocess;
pub mod preprocess;
pub mod quantize;
pub mod weights;
pub mod yolo11;
pub mod yolo26;
pub mod yolov8;
pub mod yolox;

pub use cuda_fault::CudaFault;
pub use detector::{
    Detector, DetectorConfig, ModelInput, Precision, ScoreLevel, ScoreMaps, MAX_IMGSZ,
};
pub use device::DeviceSpec;
pub use error::{DetectError, Result};
