//! Building blocks shared by the model families.
//!
//! BatchNorm is folded into the convolutions before any model is built (see
//! [`crate::detect::weights::fold_batchnorm`]), so every block here reads only
//! `conv.weight` and `conv.bias`. On the CPU in f32 the models run as a whole on the
//! executor of [`crate::detect::cpu`] (each block's `plan` hands it its weights); where the
//! executor does not apply, [`ConvBlock`] runs the per-layer fused kernel (weights prepared
//! once here, at load), and on other devices candle's `conv2d` + bias + SiLU.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::cpu::graph::{Act, ConvParams, Graph, PlanError};
use super::cpu::{ConvSpec, CpuConvOp, FusedConv};

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

/// Runs `f(floats, height, width)` on `xs` when it is one f32 image `[1, C, H, W]` on the
/// CPU (the CPU executor's input); `None` otherwise.
pub fn with_cpu_image<R>(
    xs: &Tensor,
    f: impl FnOnce(&[f32], usize, usize) -> R,
) -> Result<Option<R>> {
    let (batch, _, height, width) = xs.dims4()?;
    if !xs.device().is_cpu() || xs.dtype() != DType::F32 || batch != 1 {
        return Ok(None);
    }
    let xs = xs.contiguous()?;
    let (storage, layout) = xs.storage_and_layout();
    let candle_core::Storage::Cpu(cpu) = &*storage else {
        return Ok(None);
    };
    let values = cpu.as_slice::<f32>()?;
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    Ok(Some(f(&values[start..end], height, width)))
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
    /// The fused CPU kernel, present when the weights are f32 on the CPU.
    cpu: Option<CpuConvOp>,
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
        Self::from_tensors(weight, bias, stride, groups, silu)
    }

    /// A block from checked tensors: `weight` `[out, c_in / groups, k, k]`, `bias` `[out]`.
    pub fn from_tensors(
        weight: Tensor,
        bias: Tensor,
        stride: usize,
        groups: usize,
        silu: bool,
    ) -> Result<Self> {
        let (out, per_group, kernel, _) = weight.dims4()?;
        let spec = ConvSpec::new(per_group * groups, out, kernel, stride, groups, silu);
        let cpu = if weight.device().is_cpu() && weight.dtype() == DType::F32 {
            let fused = FusedConv::new(spec, weight.flatten_all()?.to_vec1()?, bias.to_vec1()?)
                .map_err(candle_core::Error::wrap)?;
            Some(CpuConvOp::new(fused))
        } else {
            None
        };
        Ok(Self {
            weight,
            bias: bias.reshape((1, out, 1, 1))?,
            stride,
            padding: spec.padding,
            groups,
            silu,
            out_channels: out,
            cpu,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.out_channels
    }
}

impl ConvBlock {
    /// candle's `conv2d` + bias + SiLU, the path on every device but the CPU (and the
    /// reference the fused kernel is tested against).
    pub fn forward_candle(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = xs
            .conv2d(&self.weight, self.padding, self.stride, 1, self.groups)?
            .broadcast_add(&self.bias)?;
        if self.silu {
            candle_nn::ops::silu(&ys)
        } else {
            Ok(ys)
        }
    }

    /// The fused CPU kernel's result, or `None` when `xs` or the weights are not f32 on the
    /// CPU (then the caller picks its own fallback).
    pub fn forward_cpu(&self, xs: &Tensor) -> Option<Result<Tensor>> {
        match &self.cpu {
            Some(op) if xs.device().is_cpu() && xs.dtype() == DType::F32 => Some(op.forward(xs)),
            _ => None,
        }
    }
}

impl ConvBlock {
    /// Adds this block to the CPU executor's graph: `src` → `dst` (new when `None`), with
    /// `residual` added after the activation. Unsupported when the weights are not f32 on
    /// the CPU.
    pub fn plan(
        &self,
        graph: &mut Graph,
        src: Act,
        dst: Option<Act>,
        residual: Option<Act>,
    ) -> std::result::Result<Act, PlanError> {
        let p = self.cpu_params()?;
        graph.conv(p.spec, p.weight, p.bias, src, dst, residual)
    }

    /// Shape and weights for the CPU executor; unsupported when the weights are not f32 on
    /// the CPU.
    pub fn cpu_params(&self) -> std::result::Result<ConvParams<'_>, PlanError> {
        let Some(op) = &self.cpu else {
            return Err(PlanError::Unsupported(
                "weights are not f32 on the CPU".into(),
            ));
        };
        let conv = op.conv();
        Ok(ConvParams {
            spec: *conv.spec(),
            weight: conv.weight(),
            bias: conv.bias(),
        })
    }
}

impl Module for ConvBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_cpu(xs)
            .unwrap_or_else(|| self.forward_candle(xs))
    }
}
