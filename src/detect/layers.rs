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
        if out == 0
            || per_group * groups != c_in
            || c_in == 0
            || kh != kernel
            || kw != kernel
            || out % groups != 0
        {
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
        if out == 0 || per_group == 0 || kernel == 0 {
            candle_core::bail!(
                "a convolution with an empty weight tensor {:?}",
                weight.dims()
            );
        }
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

/// A depthwise convolution (groups = channels, optional SiLU: YOLOX's and ultralytics'
/// `DWConv`, YOLO11's positional conv) computed as the sum of k² shifted views of the
/// padded input, each scaled per channel.
///
/// candle runs a grouped `conv2d` as one convolution per group, i.e. thousands of small
/// convolutions (and kernel launches) per YOLOX-Nano frame; this is 2·k² element-wise ops
/// per layer on any device and dtype. On the CPU in f32 the fused depthwise kernel runs
/// instead (BatchNorm folded, like [`ConvBlock`]).
#[derive(Debug, Clone)]
pub struct DepthwiseConv {
    /// The same weights as a grouped [`ConvBlock`], used only for its CPU kernel.
    fused: ConvBlock,
    /// `kernel²` per-channel weights `[1, C, 1, 1]`, tap `(i, j)` at `i * kernel + j`.
    taps: Vec<Tensor>,
    bias: Tensor,
    kernel: usize,
    stride: usize,
    silu: bool,
}

impl DepthwiseConv {
    /// Loads `{vb}.conv.weight` `[C, 1, k, k]` and `{vb}.conv.bias` `[C]`.
    pub fn load(
        vb: VarBuilder,
        channels: usize,
        kernel: usize,
        stride: usize,
        silu: bool,
    ) -> Result<Self> {
        let vb = vb.pp("conv");
        let weight = get_with_rank(&vb, "weight", 4)?;
        if weight.dims() != [channels, 1, kernel, kernel] {
            candle_core::bail!(
                "tensor `{}` has shape {:?}, expected [{channels}, 1, {kernel}, {kernel}] (a depthwise convolution)",
                full_name(&vb, "weight"),
                weight.dims()
            );
        }
        let bias = get_with_rank(&vb, "bias", 1)?;
        if bias.dims() != [channels] {
            candle_core::bail!(
                "tensor `{}` has shape {:?}, expected [{channels}]",
                full_name(&vb, "bias"),
                bias.dims()
            );
        }
        let fused = ConvBlock::from_tensors(weight.clone(), bias.clone(), stride, channels, silu)?;
        let mut taps = Vec::with_capacity(kernel * kernel);
        for i in 0..kernel {
            for j in 0..kernel {
                let tap = weight.narrow(2, i, 1)?.narrow(3, j, 1)?;
                taps.push(tap.reshape((1, channels, 1, 1))?);
            }
        }
        Ok(Self {
            fused,
            taps,
            bias: bias.reshape((1, channels, 1, 1))?,
            kernel,
            stride,
            silu,
        })
    }
}

impl Module for DepthwiseConv {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        if let Some(ys) = self.fused.forward_cpu(xs) {
            return ys;
        }
        let (batch, channels, height, width) = xs.dims4()?;
        let (k, s, pad) = (self.kernel, self.stride, self.kernel / 2);
        if height + 2 * pad < k || width + 2 * pad < k {
            candle_core::bail!(
                "depthwise conv: input {height}x{width} is smaller than its {k}x{k} kernel"
            );
        }
        let out_h = (height + 2 * pad - k) / s + 1;
        let out_w = (width + 2 * pad - k) / s + 1;
        // Pad (zeros, as PyTorch) to a multiple of the stride and split into s×s phase
        // planes [B, C, s, s, H/s, W/s]: input row `s·y + i` is row `y + i / s` of phase
        // `i % s`, so every tap reads a window with contiguous rows. The extra padding rows
        // are never read.
        let padded_h = (height + 2 * pad).div_ceil(s) * s;
        let padded_w = (width + 2 * pad).div_ceil(s) * s;
        let padded = xs
            .pad_with_zeros(2, pad, padded_h - height - pad)?
            .pad_with_zeros(3, pad, padded_w - width - pad)?;
        let (plane_h, plane_w) = (padded_h / s, padded_w / s);
        let planes = if s == 1 {
            padded.reshape((batch, channels, 1, 1, plane_h, plane_w))?
        } else {
            padded
                .reshape((batch, channels, plane_h, s, plane_w, s))?
                .permute((0, 1, 3, 5, 2, 4))?
                .contiguous()?
        };
        let mut sum = self
            .bias
            .broadcast_as((batch, channels, out_h, out_w))?
            .contiguous()?;
        for i in 0..k {
            for j in 0..k {
                // Copying the window first keeps the multiply on candle's contiguous fast
                // path (a strided operand falls back to per-element indexing on the CPU).
                let window = planes
                    .narrow(2, i % s, 1)?
                    .narrow(3, j % s, 1)?
                    .narrow(4, i / s, out_h)?
                    .narrow(5, j / s, out_w)?
                    .reshape((batch, channels, out_h, out_w))?;
                sum = (sum + window.broadcast_mul(&self.taps[i * k + j])?)?;
            }
        }
        if self.silu {
            candle_nn::ops::silu(&sum)
        } else {
            Ok(sum)
        }
    }
}

impl DepthwiseConv {
    /// Shape and weights for the CPU executor.
    pub fn cpu_params(&self) -> std::result::Result<ConvParams<'_>, PlanError> {
        self.fused.cpu_params()
    }
}

/// Stride-1 max-pool with padding `k / 2`, equal to PyTorch's `MaxPool2d(k, 1, k // 2)`,
/// whose padding is implicitly −∞ (never selected). candle's pool has no padding, and zero
/// padding would wrongly win over negative activations at the border. Padding with copies
/// of the edge row/column gives exactly the −∞ result: every window that reaches into the
/// padding also contains the edge element that was copied, so the copy never changes the
/// maximum. It needs no dtype-specific constant, so f16/bf16 behave the same.
pub fn same_size_max_pool(xs: &Tensor, kernel: usize) -> Result<Tensor> {
    let pad = kernel / 2;
    xs.pad_with_same(2, pad, pad)?
        .pad_with_same(3, pad, pad)?
        .max_pool2d_with_stride(kernel, 1)
}

/// SPPF's max-pool kernel (`k=5` in every ultralytics yaml).
pub const SPPF_KERNEL: usize = 5;

/// ultralytics `Bottleneck` with 3×3 kernels (C2f's and C3k's with expansion 1.0, C3k2's
/// with 0.5: the hidden width is read); the shortcut, when asked for, needs equal widths.
#[derive(Debug, Clone)]
pub struct Bottleneck {
    cv1: ConvBlock,
    cv2: ConvBlock,
    residual: bool,
}

impl Bottleneck {
    pub fn load(vb: VarBuilder, channels: usize, shortcut: bool) -> Result<Self> {
        let cv1 = ConvBlock::load(vb.pp("cv1"), channels, 3, 1, 1, true)?;
        let cv2 = ConvBlock::load(vb.pp("cv2"), cv1.out_channels(), 3, 1, 1, true)?;
        let residual = shortcut && cv2.out_channels() == channels;
        Ok(Self { cv1, cv2, residual })
    }

    pub fn out_channels(&self) -> usize {
        self.cv2.out_channels()
    }

    /// Plans into `dst` (new when `None`); the shortcut is fused into cv2.
    pub fn plan(
        &self,
        g: &mut Graph,
        xs: Act,
        dst: Option<Act>,
    ) -> std::result::Result<Act, PlanError> {
        let hidden = self.cv1.plan(g, xs, None, None)?;
        self.cv2.plan(g, hidden, dst, self.residual.then_some(xs))
    }
}

impl Module for Bottleneck {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = self.cv2.forward(&self.cv1.forward(xs)?)?;
        if self.residual {
            xs + ys
        } else {
            Ok(ys)
        }
    }
}

/// ultralytics `SPPF(c1, c2, k=5, n=3, shortcut)`: cv1 → n chained 5×5 stride-1 max-pools
/// → concat → cv2 (+ the input with the shortcut). YOLOv8's and YOLO11's cv1 has SiLU and no shortcut;
/// YOLO26's cv1 is linear (`act=False`) and the shortcut is on.
#[derive(Debug, Clone)]
pub struct Sppf {
    cv1: ConvBlock,
    cv2: ConvBlock,
    pools: usize,
    residual: bool,
}

impl Sppf {
    pub fn load(vb: VarBuilder, c_in: usize, cv1_silu: bool, shortcut: bool) -> Result<Self> {
        let cv1 = ConvBlock::load(vb.pp("cv1"), c_in, 1, 1, 1, cv1_silu)?;
        let c = cv1.out_channels();
        let cv2_in = get_with_rank(&vb.pp("cv2").pp("conv"), "weight", 4)?.dim(1)?;
        if c == 0 || cv2_in % c != 0 || cv2_in / c < 2 {
            candle_core::bail!(
                "tensor `{}` takes {cv2_in} channels, expected (n + 1) x {c} (SPPF concatenates cv1 and n pools)",
                full_name(&vb.pp("cv2").pp("conv"), "weight")
            );
        }
        let cv2 = ConvBlock::load(vb.pp("cv2"), cv2_in, 1, 1, 1, true)?;
        let residual = shortcut && cv2.out_channels() == c_in;
        Ok(Self {
            pools: cv2_in / c - 1,
            cv1,
            cv2,
            residual,
        })
    }

    pub fn out_channels(&self) -> usize {
        self.cv2.out_channels()
    }

    pub fn plan(
        &self,
        g: &mut Graph,
        xs: Act,
        dst: Option<Act>,
    ) -> std::result::Result<Act, PlanError> {
        let c = self.cv1.out_channels();
        let parts = g.alloc((self.pools + 1) * c, xs.height(), xs.width());
        let mut last = self.cv1.plan(g, xs, Some(parts.narrow(0, c)?), None)?;
        for k in 1..=self.pools {
            last = g.max_pool(SPPF_KERNEL, last, Some(parts.narrow(k * c, c)?))?;
        }
        self.cv2.plan(g, parts, dst, self.residual.then_some(xs))
    }
}

impl Module for Sppf {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut parts = vec![self.cv1.forward(xs)?];
        for _ in 0..self.pools {
            let last = parts.last().expect("cv1 is first");
            parts.push(same_size_max_pool(last, SPPF_KERNEL)?);
        }
        let ys = self.cv2.forward(&Tensor::cat(&parts, 1)?)?;
        if self.residual {
            xs + ys
        } else {
            Ok(ys)
        }
    }
}
