//! Placeholder: replaced by the yolox work branch.
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
pub struct Yolox;
impl Yolox {
    pub fn load(_vb: VarBuilder) -> Result<Self> {
        candle_core::bail!("YOLOX is being written")
    }
    pub fn num_classes(&self) -> usize {
        80
    }
    pub fn variant(&self) -> &'static str {
        "yolox"
    }
}
impl Module for Yolox {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Ok(xs.clone())
    }
}
impl Yolox {
    pub fn default_input_size(&self) -> usize {
        416
    }
}
