//! Building blocks shared by the model families.
//!
//! BatchNorm is folded into the convolutions before any model is built (see
//! [`crate::detect::weights::fold_batchnorm`]), so every block here reads only
//! `conv.weight` and `conv.bias`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

/// Reads a tensor without a shape hint and checks its rank, so that a wrong file gives an
/// error naming the tensor rather than a panic deep inside a kernel.
pub fn get_with_rank(vb: &VarBuilder, name: &str, rank: usize) -> Result<Tensor> {
    let t = vb.get_unchecked(name)?;
    if t.rank() != rank {
        candle_core::bail!(
            "tensor `{}` has shape {:?}, expected a rank-{rank} tensor",
            full_name(vb, name),
            t.dims()
        );
    }
    Ok(t)
}

pub fn full_name(vb: &VarBuilder, name: &str) -> String {
    let prefix = vb.prefix();
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// A 2-D convolution with bias and an optional SiLU: ultralytics `Conv` and YOLOX
/// `BaseConv` once their BatchNorm is folded.
#[derive(Debug, Clone)]
pub struct ConvBlock {
    weight: Tensor,
    bias: Tensor,
    stride: usize,
    padding: usize,
    groups: usize,
    silu: bool,
    out_channels: usize,
}

impl ConvBlock {
    /// Loads `{vb}.conv.weight` `[out, c_in / groups, k, k]` and `{vb}.conv.bias` `[out]`;
    /// the output width is read from the weights. Padding is `k / 2` ("same" for odd k),
    /// as in both ultralytics' `autopad` and YOLOX's `(ksize - 1) // 2`.
    pub fn load(
        vb: VarBuilder,
        c_in: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        silu: bool,
    ) -> Result<Self> {
        let vb = vb.pp("conv");
        Self::load_plain(vb, c_in, kernel, stride, groups, silu)
    }

    /// Like [`ConvBlock::load`] for a bare `nn.Conv2d` with bias (`{vb}.weight`, `{vb}.bias`).
    pub fn load_plain(
        vb: VarBuilder,
        c_in: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        silu: bool,
    ) -> Result<Self> {
        let weight = get_with_rank(&vb, "weight", 4)?;
        let (out, per_group, kh, kw) = weight.dims4()?;
        if per_group * groups != c_in || kh != kernel || kw != kernel || out % groups != 0 {
            candle_core::bail!(
                "tensor `{}` has shape {:?}, expected [_, {}, {kernel}, {kernel}]",
                full_name(&vb, "weight"),
                weight.dims(),
                c_in / groups
            );
        }
        let bias = get_with_rank(&vb, "bias", 1)?;
        if bias.dims1()? != out {
            candle_core::bail!(
                "tensor `{}` has shape {:?}, expected [{out}]",
                full_name(&vb, "bias"),
                bias.dims()
            );
        }
        Ok(Self {
            weight,
            bias: bias.reshape((1, out, 1, 1))?,
            stride,
            padding: kernel / 2,
            groups,
            silu,
            out_channels: out,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels
    }
}

impl Module for ConvBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = xs
            .conv2d(&self.weight, self.padding, self.stride, 1, self.groups)?
            .broadcast_add(&self.bias)?;
        if self.silu {
            candle_nn::ops::silu(&ys)
        } else {
            Ok(ys)
        }
    }
}
