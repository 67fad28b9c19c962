//! [`FusedConv`] as a candle `CustomOp1`, so models keep working on candle tensors while
//! the CPU path runs the fused kernel.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};

use super::conv::FusedConv;

/// The candle op: NCHW f32 in, NCHW f32 out. It has a CPU implementation only; callers
/// take candle's `conv2d` on other devices.
#[derive(Debug, Clone)]
pub struct CpuConvOp {
    conv: Arc<FusedConv>,
}

impl CpuConvOp {
    pub fn new(conv: FusedConv) -> Self {
        Self {
            conv: Arc::new(conv),
        }
    }

    pub fn conv(&self) -> &FusedConv {
        &self.conv
    }

    /// Runs on `xs` `[B, C, H, W]` (any layout: it is made contiguous first).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        xs.contiguous()?.apply_op1_no_bwd(self)
    }
}

impl CustomOp1 for CpuConvOp {
    fn name(&self) -> &'static str {
        "lookout-fused-conv"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("fused conv: input is not f32 (the CPU kernel runs f32 only)");
        };
        let (batch, channels, height, width) = layout.shape().dims4()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("fused conv: input is not contiguous");
        };
        if channels != self.conv.spec().c_in {
            candle_core::bail!(
                "fused conv: input has {channels} channels, the weights expect {}",
                self.conv.spec().c_in
            );
        }
        let (out, out_h, out_w) = self
            .conv
            .forward(&data[start..end], batch, height, width)
            .map_err(candle_core::Error::wrap)?;
        let shape = Shape::from((batch, self.conv.spec().c_out, out_h, out_w));
        Ok((CpuStorage::F32(out), shape))
    }
}
