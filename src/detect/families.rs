//! The registry of detector families: which family a checkpoint is, told apart by its
//! tensor names ([`NameScheme`], each family's weight-name table), and its loader.
//!
//! Adding a family is its folder (a [`Family`] implementation, `pub mod` in
//! `detect/mod.rs`), its names in [`super::weights::names`] (a [`NameScheme`] variant and
//! its recognition rule) and one line in [`FAMILIES`]; `weights::resolve` lists the
//! released checkpoints `--model` can fetch.

use candle_core::Result;
use candle_nn::VarBuilder;

use super::family::Family;
use super::weights::NameScheme;
use super::{yolo11::Yolo11, yolo26::Yolo26, yolov8::Yolov8, yolox::Yolox};

/// A family's loader: BN-folded weights in its name scheme → the model.
type Loader = fn(VarBuilder) -> Result<Box<dyn Family>>;

/// Every family, by the name scheme its checkpoints are read into.
const FAMILIES: &[(NameScheme, Loader)] = &[
    (NameScheme::CandleYolov8, |vb| {
        Ok(Box::new(Yolov8::load(vb)?))
    }),
    (NameScheme::Yolox, |vb| Ok(Box::new(Yolox::load(vb)?))),
    (NameScheme::Yolo11, |vb| Ok(Box::new(Yolo11::load(vb)?))),
    (NameScheme::Yolo26, |vb| Ok(Box::new(Yolo26::load(vb)?))),
];

/// Builds the model of a checkpoint read in `scheme`.
pub fn load(scheme: NameScheme, vb: VarBuilder) -> Result<Box<dyn Family>> {
    let Some((_, load)) = FAMILIES.iter().find(|(s, _)| *s == scheme) else {
        candle_core::bail!("no model family reads {}", scheme.describe());
    };
    load(vb)
}
