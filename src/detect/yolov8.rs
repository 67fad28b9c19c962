//! YOLOv8 (n/s/m/l/x, any class count) on candle-nn, numerically matching ultralytics.
//!
//! Blocks are loaded under the candle-examples names (`net.b1.0`, `fpn.n1`, `head.cv2.0`,
//! C2f bottlenecks `bottleneck.K`) with BatchNorm already folded by
//! [`crate::detect::weights`]. Every size (width, bottleneck count, channel ratio, class
//! count, DFL bins) is read from the tensor shapes, so no size flag exists. The output is
//! ultralytics' inference tensor `[B, 4 + nc, N]`: decoded boxes (cx, cy, w, h in input
//! pixels) and sigmoid class scores for every anchor of strides 8, 16 and 32.

use candle_core::{DType, Device, Module, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::cpu::blocked::{Layout, LANES};
use super::cpu::epilogue::exp_approx;
use super::cpu::graph::{self, Act, Graph, OpTime, PlanCache, PlanError, Prepared, Workspace};
use super::cpu::isa::{isa_kernel, Isa};

use super::layers::{full_name, get_with_rank, with_cpu_image, ConvBlock};

type PlanResult<T> = std::result::Result<T, PlanError>;

/// Strides of the three detection levels (P3, P4, P5) relative to the input.
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// Input sides must be multiples of the coarsest stride so that every upsampled map lines
/// up with its skip connection.
const INPUT_MULTIPLE: usize = 32;

/// Max-pool kernel of SPPF (`k=5` in yolov8.yaml).
const SPPF_KERNEL: usize = 5;

/// A 3×3 stride-2 convolution with SiLU (ultralytics `Conv(c, c2, 3, 2)`).
fn downsample(vb: VarBuilder, c_in: usize) -> Result<ConvBlock> {
    ConvBlock::load(vb, c_in, 3, 2, 1, true)
}

/// ultralytics `Bottleneck` with 3×3 kernels and expansion 1.0, as used inside C2f.
#[derive(Debug, Clone)]
struct Bottleneck {
    cv1: ConvBlock,
    cv2: ConvBlock,
    residual: bool,
}

impl Bottleneck {
    fn load(vb: VarBuilder, channels: usize, shortcut: bool) -> Result<Self> {
        let cv1 = ConvBlock::load(vb.pp("cv1"), channels, 3, 1, 1, true)?;
        let cv2 = ConvBlock::load(vb.pp("cv2"), cv1.out_channels(), 3, 1, 1, true)?;
        // ultralytics adds the shortcut only when the widths agree.
        let residual = shortcut && cv2.out_channels() == channels;
        Ok(Self { cv1, cv2, residual })
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

impl Bottleneck {
    /// Plans the block into `dst` (a C2f concat part); the shortcut is fused into cv2.
    fn plan(&self, g: &mut Graph, xs: Act, dst: Act) -> PlanResult<()> {
        let hidden = self.cv1.plan(g, xs, None, None)?;
        self.cv2
            .plan(g, hidden, Some(dst), self.residual.then_some(xs))?;
        Ok(())
    }
}

/// ultralytics `C2f`: cv1 → split in two halves → n bottlenecks chained on the second
/// half → concat of all partial outputs → cv2.
#[derive(Debug, Clone)]
struct C2f {
    cv1: ConvBlock,
    cv2: ConvBlock,
    bottleneck: Vec<Bottleneck>,
}

impl C2f {
    /// The bottleneck count is read from `cv2`'s input width `(2 + n) · c`.
    fn load(vb: VarBuilder, c_in: usize, shortcut: bool) -> Result<Self> {
        let cv1 = ConvBlock::load(vb.pp("cv1"), c_in, 1, 1, 1, true)?;
        let hidden = cv1.out_channels() / 2;
        if hidden == 0 || cv1.out_channels() % 2 != 0 {
            candle_core::bail!(
                "tensor `{}` has {} output channels, expected an even, non-zero count (C2f splits it in two)",
                full_name(&vb.pp("cv1").pp("conv"), "weight"),
                cv1.out_channels()
            );
        }
        let count = bottleneck_count(&vb, hidden)?;
        let bottleneck = (0..count)
            .map(|k| Bottleneck::load(vb.pp(format!("bottleneck.{k}")), hidden, shortcut))
            .collect::<Result<Vec<_>>>()?;
        let cv2 = ConvBlock::load(vb.pp("cv2"), (2 + count) * hidden, 1, 1, 1, true)?;
        Ok(Self {
            cv1,
            cv2,
            bottleneck,
        })
    }

    fn depth(&self) -> usize {
        self.bottleneck.len()
    }

    fn out_channels(&self) -> usize {
        self.cv2.out_channels()
    }
}

/// Reads n from `{vb}.cv2.conv.weight` `[_, (2 + n) · hidden, 1, 1]`.
fn bottleneck_count(vb: &VarBuilder, hidden: usize) -> Result<usize> {
    let cv2 = vb.pp("cv2").pp("conv");
    let weight = get_with_rank(&cv2, "weight", 4)?;
    let c_in = weight.dim(1)?;
    if c_in % hidden != 0 || c_in / hidden < 2 {
        candle_core::bail!(
            "tensor `{}` has shape {:?}, expected [_, (2 + n) * {hidden}, 1, 1] for a C2f with {hidden} hidden channels",
            full_name(&cv2, "weight"),
            weight.dims()
        );
    }
    Ok(c_in / hidden - 2)
}

impl Module for C2f {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut parts = self.cv1.forward(xs)?.chunk(2, 1)?;
        for block in &self.bottleneck {
            let last = parts.last().expect("chunk(2) gives two parts");
            parts.push(block.forward(last)?);
        }
        self.cv2.forward(&Tensor::cat(&parts, 1)?)
    }
}

impl C2f {
    /// cv1 writes both halves of the concat buffer; each bottleneck reads the part before
    /// it and writes the next, so the chunk and the concat are free. The result goes to
    /// `dst` (a part of the neck's next concat) or a new activation.
    fn plan(&self, g: &mut Graph, xs: Act, dst: Option<Act>) -> PlanResult<Act> {
        let hidden = self.cv1.out_channels() / 2;
        let parts = g.alloc((2 + self.depth()) * hidden, xs.height(), xs.width());
        self.cv1
            .plan(g, xs, Some(parts.narrow(0, 2 * hidden)?), None)?;
        let mut last = parts.narrow(hidden, hidden)?;
        for (k, block) in self.bottleneck.iter().enumerate() {
            let out = parts.narrow((2 + k) * hidden, hidden)?;
            block.plan(g, last, out)?;
            last = out;
        }
        self.cv2.plan(g, parts, dst, None)
    }
}

/// ultralytics `SPPF`: cv1 → three chained 5×5 stride-1 max-pools → concat → cv2.
#[derive(Debug, Clone)]
struct Sppf {
    cv1: ConvBlock,
    cv2: ConvBlock,
}

impl Sppf {
    fn load(vb: VarBuilder, c_in: usize) -> Result<Self> {
        let cv1 = ConvBlock::load(vb.pp("cv1"), c_in, 1, 1, 1, true)?;
        let cv2 = ConvBlock::load(vb.pp("cv2"), 4 * cv1.out_channels(), 1, 1, 1, true)?;
        Ok(Self { cv1, cv2 })
    }
}

impl Module for Sppf {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let x0 = self.cv1.forward(xs)?;
        let x1 = same_size_max_pool(&x0, SPPF_KERNEL)?;
        let x2 = same_size_max_pool(&x1, SPPF_KERNEL)?;
        let x3 = same_size_max_pool(&x2, SPPF_KERNEL)?;
        self.cv2.forward(&Tensor::cat(&[&x0, &x1, &x2, &x3], 1)?)
    }
}

impl Sppf {
    fn plan(&self, g: &mut Graph, xs: Act, dst: Option<Act>) -> PlanResult<Act> {
        let c = self.cv1.out_channels();
        let parts = g.alloc(4 * c, xs.height(), xs.width());
        let mut last = self.cv1.plan(g, xs, Some(parts.narrow(0, c)?), None)?;
        for k in 1..4 {
            last = g.max_pool(SPPF_KERNEL, last, Some(parts.narrow(k * c, c)?))?;
        }
        self.cv2.plan(g, parts, dst, None)
    }
}

/// Stride-1 max-pool with padding `k / 2`, equal to PyTorch's `MaxPool2d(k, 1, k // 2)`,
/// whose padding is implicitly −∞ (never selected). candle's pool has no padding, and zero
/// padding would wrongly win over negative activations at the border. Padding with copies
/// of the edge row/column gives exactly the −∞ result: every window that reaches into the
/// padding also contains the edge element that was copied, so the copy never changes the
/// maximum. It needs no dtype-specific constant, so f16/bf16 behave the same.
fn same_size_max_pool(xs: &Tensor, kernel: usize) -> Result<Tensor> {
    let pad = kernel / 2;
    xs.pad_with_same(2, pad, pad)?
        .pad_with_same(3, pad, pad)?
        .max_pool2d_with_stride(kernel, 1)
}

/// Backbone feature maps handed to the neck (ultralytics layers 4, 6 and 9).
struct BackboneFeatures {
    p3: Tensor,
    p4: Tensor,
    p5: Tensor,
}

/// The CSPDarknet backbone, ultralytics layers 0–9.
#[derive(Debug, Clone)]
struct Backbone {
    b1_0: ConvBlock,
    b1_1: ConvBlock,
    b2_0: C2f,
    b2_1: ConvBlock,
    b2_2: C2f,
    b3_0: ConvBlock,
    b3_1: C2f,
    b4_0: ConvBlock,
    b4_1: C2f,
    b5_0: Sppf,
}

impl Backbone {
    fn load(vb: VarBuilder, image_channels: usize) -> Result<Self> {
        let b1_0 = downsample(vb.pp("b1.0"), image_channels)?;
        let b1_1 = downsample(vb.pp("b1.1"), b1_0.out_channels())?;
        let b2_0 = C2f::load(vb.pp("b2.0"), b1_1.out_channels(), true)?;
        let b2_1 = downsample(vb.pp("b2.1"), b2_0.out_channels())?;
        let b2_2 = C2f::load(vb.pp("b2.2"), b2_1.out_channels(), true)?;
        let b3_0 = downsample(vb.pp("b3.0"), b2_2.out_channels())?;
        let b3_1 = C2f::load(vb.pp("b3.1"), b3_0.out_channels(), true)?;
        let b4_0 = downsample(vb.pp("b4.0"), b3_1.out_channels())?;
        let b4_1 = C2f::load(vb.pp("b4.1"), b4_0.out_channels(), true)?;
        let b5_0 = Sppf::load(vb.pp("b5.0"), b4_1.out_channels())?;
        Ok(Self {
            b1_0,
            b1_1,
            b2_0,
            b2_1,
            b2_2,
            b3_0,
            b3_1,
            b4_0,
            b4_1,
            b5_0,
        })
    }

    /// Widths of P3, P4 and P5.
    fn out_channels(&self) -> [usize; 3] {
        [
            self.b2_2.out_channels(),
            self.b3_1.out_channels(),
            self.b5_0.cv2.out_channels(),
        ]
    }

    fn forward(&self, xs: &Tensor) -> Result<BackboneFeatures> {
        let xs = self.b1_1.forward(&self.b1_0.forward(xs)?)?;
        let xs = self.b2_0.forward(&xs)?;
        let p3 = self.b2_2.forward(&self.b2_1.forward(&xs)?)?;
        let p4 = self.b3_1.forward(&self.b3_0.forward(&p3)?)?;
        let xs = self.b4_1.forward(&self.b4_0.forward(&p4)?)?;
        let p5 = self.b5_0.forward(&xs)?;
        Ok(BackboneFeatures { p3, p4, p5 })
    }
}

impl Backbone {
    /// (P3, P4, P5) as [`Backbone::forward`], written into the three given activations
    /// (parts of the neck's concats).
    fn plan(&self, g: &mut Graph, xs: Act, [p3, p4, p5]: [Act; 3]) -> PlanResult<[Act; 3]> {
        let xs = self.b1_0.plan(g, xs, None, None)?;
        let xs = self.b1_1.plan(g, xs, None, None)?;
        let xs = self.b2_0.plan(g, xs, None)?;
        let xs = self.b2_1.plan(g, xs, None, None)?;
        let p3 = self.b2_2.plan(g, xs, Some(p3))?;
        let xs = self.b3_0.plan(g, p3, None, None)?;
        let p4 = self.b3_1.plan(g, xs, Some(p4))?;
        let xs = self.b4_0.plan(g, p4, None, None)?;
        let xs = self.b4_1.plan(g, xs, None)?;
        let p5 = self.b5_0.plan(g, xs, Some(p5))?;
        Ok([p3, p4, p5])
    }
}

/// The PAN neck, ultralytics layers 10–21; C2f blocks here have no shortcut.
#[derive(Debug, Clone)]
struct Neck {
    n1: C2f,
    n2: C2f,
    n3: ConvBlock,
    n4: C2f,
    n5: ConvBlock,
    n6: C2f,
}

impl Neck {
    fn load(vb: VarBuilder, [c3, c4, c5]: [usize; 3]) -> Result<Self> {
        let n1 = C2f::load(vb.pp("n1"), c5 + c4, false)?;
        let n2 = C2f::load(vb.pp("n2"), n1.out_channels() + c3, false)?;
        let n3 = downsample(vb.pp("n3"), n2.out_channels())?;
        let n4 = C2f::load(vb.pp("n4"), n3.out_channels() + n1.out_channels(), false)?;
        let n5 = downsample(vb.pp("n5"), n4.out_channels())?;
        let n6 = C2f::load(vb.pp("n6"), n5.out_channels() + c5, false)?;
        Ok(Self {
            n1,
            n2,
            n3,
            n4,
            n5,
            n6,
        })
    }

    fn out_channels(&self) -> [usize; 3] {
        [
            self.n2.out_channels(),
            self.n4.out_channels(),
            self.n6.out_channels(),
        ]
    }

    /// Returns the head inputs (ultralytics layers 15, 18, 21). Concat orders follow
    /// yolov8.yaml: the upsampled or downsampled path first, the skip connection second.
    fn forward(&self, f: &BackboneFeatures) -> Result<[Tensor; 3]> {
        let up = |xs: &Tensor| -> Result<Tensor> {
            let (_, _, h, w) = xs.dims4()?;
            xs.upsample_nearest2d(2 * h, 2 * w)
        };
        let l12 = self.n1.forward(&Tensor::cat(&[&up(&f.p5)?, &f.p4], 1)?)?;
        let l15 = self.n2.forward(&Tensor::cat(&[&up(&l12)?, &f.p3], 1)?)?;
        let l18 = self
            .n4
            .forward(&Tensor::cat(&[&self.n3.forward(&l15)?, &l12], 1)?)?;
        let l21 = self
            .n6
            .forward(&Tensor::cat(&[&self.n5.forward(&l18)?, &f.p5], 1)?)?;
        Ok([l15, l18, l21])
    }
}

impl Neck {
    /// The backbone and the neck as [`Backbone::forward`] + [`Neck::forward`]. The four
    /// concat buffers are allocated first and every part is produced in place (upsamples
    /// and downsampling convs the first part, the backbone and n1 the skip part), so no
    /// concat is copied.
    fn plan(&self, g: &mut Graph, backbone: &Backbone, image: Act) -> PlanResult<[Act; 3]> {
        let [c3, c4, c5] = backbone.out_channels();
        let c12 = self.n1.out_channels();
        let (c_n3, c_n5) = (self.n3.out_channels(), self.n5.out_channels());
        let at = |g: &mut Graph, channels: usize, stride: usize| {
            g.alloc(channels, image.height() / stride, image.width() / stride)
        };
        let cat_p4 = at(g, c5 + c4, 16); // [up(P5), P4]
        let cat_p3 = at(g, c12 + c3, 8); // [up(l12), P3]
        let cat_l18 = at(g, c_n3 + c12, 16); // [n3(l15), l12]
        let cat_l21 = at(g, c_n5 + c5, 32); // [n5(l18), P5]
        let skips = [
            cat_p3.narrow(c12, c3)?,
            cat_p4.narrow(c5, c4)?,
            cat_l21.narrow(c_n5, c5)?,
        ];
        let [_, _, p5] = backbone.plan(g, image, skips)?;
        g.upsample2(p5, Some(cat_p4.narrow(0, c5)?))?;
        let l12 = self.n1.plan(g, cat_p4, Some(cat_l18.narrow(c_n3, c12)?))?;
        g.upsample2(l12, Some(cat_p3.narrow(0, c12)?))?;
        let l15 = self.n2.plan(g, cat_p3, None)?;
        self.n3.plan(g, l15, Some(cat_l18.narrow(0, c_n3)?), None)?;
        let l18 = self.n4.plan(g, cat_l18, None)?;
        self.n5.plan(g, l18, Some(cat_l21.narrow(0, c_n5)?), None)?;
        let l21 = self.n6.plan(g, cat_l21, None)?;
        Ok([l15, l18, l21])
    }
}

/// One branch of the head at one level: conv3×3, conv3×3 (both with SiLU), then a bare
/// 1×1 `nn.Conv2d` with bias.
#[derive(Debug, Clone)]
struct HeadBranch {
    conv0: ConvBlock,
    conv1: ConvBlock,
    pred: ConvBlock,
}

impl HeadBranch {
    fn load(vb: VarBuilder, c_in: usize) -> Result<Self> {
        let conv0 = ConvBlock::load(vb.pp("0"), c_in, 3, 1, 1, true)?;
        let conv1 = ConvBlock::load(vb.pp("1"), conv0.out_channels(), 3, 1, 1, true)?;
        let pred = ConvBlock::load_plain(vb.pp("2"), conv1.out_channels(), 1, 1, 1, false)?;
        Ok(Self { conv0, conv1, pred })
    }

    fn out_channels(&self) -> usize {
        self.pred.out_channels()
    }

    /// `[B, C, H, W]` → `[B, out, H · W]`, anchors row-major.
    fn forward_flat(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = self
            .pred
            .forward(&self.conv1.forward(&self.conv0.forward(xs)?)?)?;
        let (b, c, h, w) = ys.dims4()?;
        ys.reshape((b, c, h * w))
    }
}

impl HeadBranch {
    fn plan(&self, g: &mut Graph, xs: Act) -> PlanResult<Act> {
        let xs = self.conv0.plan(g, xs, None, None)?;
        let xs = self.conv1.plan(g, xs, None, None)?;
        self.pred.plan(g, xs, None, None)
    }
}

/// Raw head outputs over all anchors, before decoding.
struct HeadRaw {
    /// `[B, 4 · reg_max, N]`: DFL logits for the left, top, right, bottom distances.
    box_dist: Tensor,
    /// `[B, nc, N]`: class logits.
    cls_logits: Tensor,
}

/// ultralytics `Detect` (legacy v8 layout): box branch `cv2`, class branch `cv3`, `dfl`.
#[derive(Debug, Clone)]
struct DetectHead {
    box_branch: Vec<HeadBranch>,
    cls_branch: Vec<HeadBranch>,
    /// `dfl.conv.weight` as `[reg_max]`: the value of each distance bin (0..reg_max in
    /// every released model, but read rather than assumed).
    dfl_bins: Tensor,
    /// The same bins as floats, for the CPU executor's decode.
    dfl_bin_values: Vec<f32>,
    reg_max: usize,
    num_classes: usize,
}

impl DetectHead {
    fn load(vb: VarBuilder, level_channels: [usize; 3]) -> Result<Self> {
        let dfl = vb.pp("dfl").pp("conv");
        let dfl_weight = get_with_rank(&dfl, "weight", 4)?;
        let reg_max = match dfl_weight.dims4()? {
            (1, bins, 1, 1) if bins > 0 => bins,
            _ => candle_core::bail!(
                "tensor `{}` has shape {:?}, expected [1, reg_max, 1, 1]",
                full_name(&dfl, "weight"),
                dfl_weight.dims()
            ),
        };
        let mut box_branch = Vec::with_capacity(STRIDES.len());
        let mut cls_branch = Vec::with_capacity(STRIDES.len());
        for (level, &c_in) in level_channels.iter().enumerate() {
            box_branch.push(HeadBranch::load(vb.pp(format!("cv2.{level}")), c_in)?);
            cls_branch.push(HeadBranch::load(vb.pp(format!("cv3.{level}")), c_in)?);
        }
        let num_classes = cls_branch[0].out_channels();
        for level in 0..STRIDES.len() {
            check_width(
                &vb,
                "cv2",
                level,
                box_branch[level].out_channels(),
                4 * reg_max,
            )?;
            check_width(
                &vb,
                "cv3",
                level,
                cls_branch[level].out_channels(),
                num_classes,
            )?;
        }
        Ok(Self {
            box_branch,
            cls_branch,
            dfl_bin_values: dfl_weight.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            dfl_bins: dfl_weight.flatten_all()?,
            reg_max,
            num_classes,
        })
    }

    fn forward_raw(&self, levels: &[Tensor; 3]) -> Result<HeadRaw> {
        let mut boxes = Vec::with_capacity(levels.len());
        let mut classes = Vec::with_capacity(levels.len());
        for (level, xs) in levels.iter().enumerate() {
            boxes.push(self.box_branch[level].forward_flat(xs)?);
            classes.push(self.cls_branch[level].forward_flat(xs)?);
        }
        Ok(HeadRaw {
            box_dist: Tensor::cat(&boxes, 2)?,
            cls_logits: Tensor::cat(&classes, 2)?,
        })
    }

    /// ultralytics `DFL`: each of the four distances is the expectation of its softmax
    /// over `reg_max` bins. `[B, 4 · reg_max, N]` → `[B, 4, N]` in grid units.
    fn expected_distances(&self, box_dist: &Tensor) -> Result<Tensor> {
        let (b, _, n) = box_dist.dims3()?;
        // Bins last, so the fused softmax kernel applies.
        let logits = box_dist
            .reshape((b, 4, self.reg_max, n))?
            .transpose(2, 3)?
            .contiguous()?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let bins = self
            .dfl_bins
            .to_dtype(probs.dtype())?
            .reshape((1, 1, 1, self.reg_max))?;
        probs.broadcast_mul(&bins)?.sum(D::Minus1)
    }
}

impl DetectHead {
    /// Per level, the box branch's DFL logits then the class logits.
    fn plan(&self, g: &mut Graph, levels: [Act; 3]) -> PlanResult<Vec<Act>> {
        if self.reg_max != LANES {
            return Err(PlanError::Unsupported(format!(
                "DFL with {} bins (the decode reads one block of {LANES})",
                self.reg_max
            )));
        }
        let mut outputs = Vec::with_capacity(2 * levels.len());
        for (level, xs) in levels.into_iter().enumerate() {
            outputs.push(self.box_branch[level].plan(g, xs)?);
            outputs.push(self.cls_branch[level].plan(g, xs)?);
        }
        Ok(outputs)
    }

    /// The executor's head outputs → `out` `[N, 4 + nc]`: [`Yolov8::forward`]'s values
    /// anchor by anchor (`Yolov8Layout::AnchorRows`), so each pixel's 16 class scores are
    /// one contiguous store. One grid row of one level per parallel item.
    fn decode_blocked(&self, ws: &Workspace, outputs: &[Act], out: &mut Vec<f32>) {
        let bins: &[f32; LANES] = self.dfl_bin_values[..]
            .try_into()
            .expect("planned only with LANES bins");
        let isa = Isa::detect();
        graph::decode_levels(
            outputs,
            2,
            4 + self.num_classes,
            out,
            |level, y, anchor_rows| {
                let (boxes, box_layout) = ws.read(&outputs[2 * level]);
                let (classes, class_layout) = ws.read(&outputs[2 * level + 1]);
                let row = DecodeRow {
                    boxes,
                    box_layout,
                    classes,
                    class_layout,
                    stride: STRIDES[level] as f32,
                    y,
                };
                decode_row(isa, &row, bins, anchor_rows);
            },
        );
    }
}

/// One grid row of one level: where its head outputs are.
struct DecodeRow<'a> {
    boxes: &'a [f32],
    box_layout: Layout,
    classes: &'a [f32],
    class_layout: Layout,
    stride: f32,
    y: usize,
}

isa_kernel! {
    /// For each anchor of one grid row: DFL (softmax expectation over 16 bins, one block
    /// per side) + `dist2bbox` (cx, cy, w, h in input pixels), then the class sigmoids.
    fn decode_row(row: &DecodeRow, bins: &[f32; LANES], anchor_rows: &mut [f32]) {
        let (layout, cls, y) = (row.box_layout, row.class_layout, row.y);
        let columns = anchor_rows.len() / layout.width;
        for (x, out) in anchor_rows.chunks_exact_mut(columns).enumerate() {
            let mut dist = [0.0f32; 4];
            for (side, d) in dist.iter_mut().enumerate() {
                let at = layout.offset(side, y as isize, x as isize);
                let logits: &[f32; LANES] = row.boxes[at..at + LANES].try_into().expect("a block");
                let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
                let mut e = [0.0f32; LANES];
                for (e, &v) in e.iter_mut().zip(logits) {
                    *e = exp_approx(v - max);
                }
                let sum: f32 = e.iter().sum();
                let dot: f32 = e.iter().zip(bins).map(|(e, b)| e * b).sum();
                *d = dot / sum;
            }
            let (ax, ay) = (x as f32 + 0.5, y as f32 + 0.5);
            let (x1, y1, x2, y2) = (ax - dist[0], ay - dist[1], ax + dist[2], ay + dist[3]);
            out[0] = (x1 + x2) / 2.0 * row.stride;
            out[1] = (y1 + y2) / 2.0 * row.stride;
            out[2] = (x2 - x1) * row.stride;
            out[3] = (y2 - y1) * row.stride;
            for (block, scores) in out[4..].chunks_mut(LANES).enumerate() {
                let at = cls.offset(block, y as isize, x as isize);
                let logits: &[f32; LANES] = row.classes[at..at + LANES].try_into().expect("a block");
                let mut p = [0.0f32; LANES];
                for (p, &v) in p.iter_mut().zip(logits) {
                    *p = 1.0 / (1.0 + exp_approx(-v));
                }
                scores.copy_from_slice(&p[..scores.len()]);
            }
        }
    }
}

/// Checks that head branch `{name}.{level}` predicts `expected` channels.
fn check_width(
    vb: &VarBuilder,
    name: &str,
    level: usize,
    actual: usize,
    expected: usize,
) -> Result<()> {
    if actual != expected {
        candle_core::bail!(
            "tensor `{}` has {actual} output channels, expected {expected} (as at level 0 / from dfl)",
            full_name(&vb.pp(format!("{name}.{level}.2")), "weight")
        );
    }
    Ok(())
}

/// Anchor centres in grid units (`[1, 2, N]`, `(i + 0.5, j + 0.5)`) and the stride of each
/// anchor (`[1, 1, N]`), for an input of `height` × `width`, levels in [`STRIDES`] order,
/// row-major within a level (ultralytics `make_anchors` with offset 0.5).
fn anchor_grid(
    height: usize,
    width: usize,
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    let mut strides = Vec::new();
    for stride in STRIDES {
        let (rows, cols) = (height / stride, width / stride);
        for row in 0..rows {
            for col in 0..cols {
                xs.push(col as f32 + 0.5);
                ys.push(row as f32 + 0.5);
                strides.push(stride as f32);
            }
        }
    }
    let n = xs.len();
    xs.extend(ys);
    let centres = Tensor::from_vec(xs, (1, 2, n), device)?.to_dtype(dtype)?;
    let strides = Tensor::from_vec(strides, (1, 1, n), device)?.to_dtype(dtype)?;
    Ok((centres, strides))
}

/// ultralytics `dist2bbox(xywh=True)`: (left, top, right, bottom) distances from the
/// anchor centres → (cx, cy, w, h), all in grid units. `[B, 4, N]` → `[B, 4, N]`.
fn dist_to_cxcywh(distances: &Tensor, centres: &Tensor) -> Result<Tensor> {
    let left_top = distances.narrow(1, 0, 2)?;
    let right_bottom = distances.narrow(1, 2, 2)?;
    let x1y1 = centres.broadcast_sub(&left_top)?;
    let x2y2 = centres.broadcast_add(&right_bottom)?;
    let centre = ((&x1y1 + &x2y2)? / 2.0)?;
    let size = (x2y2 - x1y1)?;
    Tensor::cat(&[centre, size], 1)
}

/// Checks that `image` is `[3, height, width]` with sides multiples of 32.
fn check_image(image: &[f32], height: usize, width: usize) -> Result<()> {
    if image.len() != 3 * height * width
        || height == 0
        || width == 0
        || !height.is_multiple_of(INPUT_MULTIPLE)
        || !width.is_multiple_of(INPUT_MULTIPLE)
    {
        candle_core::bail!(
            "YOLOv8 input of {} values for {height}x{width}; expected 3 x H x W with H and W non-zero multiples of {INPUT_MULTIPLE}",
            image.len()
        );
    }
    Ok(())
}

/// Anchors of an input `[B, 3, H, W]`: one per cell of each level's grid.
fn anchors_of(xs: &Tensor) -> Result<usize> {
    let (_, _, height, width) = xs.dims4()?;
    Ok(STRIDES.iter().map(|s| (height / s) * (width / s)).sum())
}

/// Inferred sizes, for naming the variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Sizes {
    /// Output width of the stem conv: 64 × width multiple.
    stem_width: usize,
    /// Bottlenecks in the first C2f: round(3 × depth multiple).
    first_depth: usize,
    /// Width of P5: 1024 × width multiple, capped by max_channels (the "ratio").
    p5_width: usize,
}

/// (name, stem width, first C2f depth, P5 width) of the released yolov8.yaml scales.
const VARIANTS: [(&str, usize, usize, usize); 5] = [
    ("yolov8n", 16, 1, 256),
    ("yolov8s", 32, 1, 512),
    ("yolov8m", 48, 2, 576),
    ("yolov8l", 64, 3, 512),
    ("yolov8x", 80, 3, 640),
];

/// YOLOv8 detection model; see the module docs for the output layout.
#[derive(Debug, Clone)]
pub struct Yolov8 {
    backbone: Backbone,
    neck: Neck,
    head: DetectHead,
    sizes: Sizes,
    /// The CPU executor's plan for the last input size.
    cpu: PlanCache,
}

impl Yolov8 {
    /// Loads from candle-named, BN-folded weights (see [`crate::detect::weights::Weights`]).
    /// Sizes (width multiple, depth = bottleneck count, channel ratio) and class count are
    /// inferred from tensor shapes; a missing or misshapen tensor gives an error naming it.
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let backbone = Backbone::load(vb.pp("net"), 3)?;
        let neck = Neck::load(vb.pp("fpn"), backbone.out_channels())?;
        let head = DetectHead::load(vb.pp("head"), neck.out_channels())?;
        let sizes = Sizes {
            stem_width: backbone.b1_0.out_channels(),
            first_depth: backbone.b2_0.depth(),
            p5_width: backbone.out_channels()[2],
        };
        Ok(Self {
            backbone,
            neck,
            head,
            sizes,
            cpu: PlanCache::default(),
        })
    }

    pub fn num_classes(&self) -> usize {
        self.head.num_classes
    }

    /// "yolov8n" … "yolov8x" when the widths and depth match a released scale, else
    /// "yolov8-custom".
    pub fn variant(&self) -> &'static str {
        VARIANTS
            .iter()
            .find(|(_, stem, depth, p5)| {
                (*stem, *depth, *p5)
                    == (
                        self.sizes.stem_width,
                        self.sizes.first_depth,
                        self.sizes.p5_width,
                    )
            })
            .map_or("yolov8-custom", |(name, ..)| name)
    }

    fn check_input(xs: &Tensor) -> Result<()> {
        let (_, channels, height, width) = xs.dims4()?;
        if channels != 3
            || height == 0
            || width == 0
            || height % INPUT_MULTIPLE != 0
            || width % INPUT_MULTIPLE != 0
        {
            candle_core::bail!(
                "YOLOv8 input has shape {:?}, expected [B, 3, H, W] with H and W non-zero multiples of {INPUT_MULTIPLE}",
                xs.dims()
            );
        }
        Ok(())
    }

    /// The whole network on the CPU executor for one image `[3, height, width]` (f32 NCHW,
    /// as pre-processed, read in place): [`Yolov8::forward`]'s values written into `out`
    /// anchor by anchor (`[N, 4 + nc]`, `Yolov8Layout::AnchorRows`). `Ok(false)` when the
    /// executor cannot hold this network (or is busy): then use `forward`.
    pub fn forward_cpu_image(
        &self,
        image: &[f32],
        height: usize,
        width: usize,
        out: &mut Vec<f32>,
    ) -> Result<bool> {
        check_image(image, height, width)?;
        let ran = self.cpu.with(
            (height, width),
            || self.plan(height, width),
            |p| {
                graph::write_image(&mut p.workspace, &p.input, image);
                p.graph.run(&mut p.workspace);
                self.head.decode_blocked(&p.workspace, &p.outputs, out);
            },
        );
        Ok(ran.is_some())
    }

    /// One run of the CPU executor on `image` (as [`Yolov8::forward_cpu_image`]) timed op
    /// by op; `None` when the executor does not run this network.
    pub fn profile_cpu(
        &self,
        image: &[f32],
        height: usize,
        width: usize,
    ) -> Result<Option<Vec<OpTime>>> {
        check_image(image, height, width)?;
        Ok(self.cpu.with(
            (height, width),
            || self.plan(height, width),
            |p| {
                graph::write_image(&mut p.workspace, &p.input, image);
                p.graph.run_timed(&mut p.workspace)
            },
        ))
    }

    fn plan(&self, height: usize, width: usize) -> PlanResult<Prepared> {
        let mut g = Graph::new();
        let input = g.input(3, height, width);
        let levels = self.neck.plan(&mut g, &self.backbone, input)?;
        let outputs = self.head.plan(&mut g, levels)?;
        Ok(g.prepare(input, outputs))
    }

    fn forward_raw(&self, xs: &Tensor) -> Result<HeadRaw> {
        Self::check_input(xs)?;
        let features = self.backbone.forward(xs)?;
        let levels = self.neck.forward(&features)?;
        self.head.forward_raw(&levels)
    }
}

impl Module for Yolov8 {
    /// xs: `[B, 3, H, W]` (H, W multiples of 32), RGB in 0..1. Returns `[B, 4 + nc, N]`:
    /// rows 0–3 cx, cy, w, h in input pixels, rows 4.. sigmoid class scores.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        Self::check_input(xs)?;
        let mut out = Vec::new();
        let ran = with_cpu_image(xs, |image, height, width| {
            self.forward_cpu_image(image, height, width, &mut out)
        })?;
        if ran.transpose()? == Some(true) {
            let columns = 4 + self.num_classes();
            let anchor_rows = Tensor::from_vec(out, (1, anchors_of(xs)?, columns), xs.device())?;
            return anchor_rows.transpose(1, 2)?.contiguous();
        }
        self.forward_candle(xs)
    }
}

impl Yolov8 {
    /// The network on candle's ops (every device and dtype; the CPU executor's reference).
    pub fn forward_candle(&self, xs: &Tensor) -> Result<Tensor> {
        let raw = self.forward_raw(xs)?;
        let (_, _, height, width) = xs.dims4()?;
        // Boxes are decoded in f32 whatever the network's dtype: in f16 the DFL softmax
        // and the anchor arithmetic (coordinates up to 640) alone cost ~1 px, against
        // ~0.07 px from the f16 network itself. The decode is a few small ops.
        let decode_dtype = DType::F32;
        let (centres, strides) = anchor_grid(height, width, decode_dtype, xs.device())?;
        let distances = self
            .head
            .expected_distances(&raw.box_dist.to_dtype(decode_dtype)?)?;
        let box_in_model = dist_to_cxcywh(&distances, &centres)?
            .broadcast_mul(&strides)?
            .to_dtype(xs.dtype())?;
        let scores = candle_nn::ops::sigmoid(&raw.cls_logits)?;
        Tensor::cat(&[box_in_model, scores], 1)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::detect::weights::Weights;
    use crate::fixtures;

    const CANDLE_WEIGHTS: &str = "models/yolov8n-random.candle.safetensors";
    const ULTRALYTICS_WEIGHTS: &str = "models/yolov8n-random.ultralytics.safetensors";

    fn load_tensors(relative: &str) -> Option<HashMap<String, Tensor>> {
        let path = fixtures::require(relative)?;
        Some(candle_core::safetensors::load(path, &Device::Cpu).unwrap())
    }

    fn weights(relative: &str) -> Option<HashMap<String, Tensor>> {
        let path = fixtures::require(relative)?;
        Some(Weights::read(&path).unwrap().tensors)
    }

    fn model_from(tensors: HashMap<String, Tensor>) -> Result<Yolov8> {
        Yolov8::load(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
    }

    fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b)
            .unwrap()
            .abs()
            .unwrap()
            .flatten_all()
            .unwrap()
            .max(0)
            .unwrap()
            .to_scalar::<f32>()
            .unwrap()
    }

    /// The candle-named fixture model and the parity input (`bus.jpg` pre-processed).
    fn fixture_model_and_input() -> Option<(Yolov8, Tensor)> {
        let tensors = weights(CANDLE_WEIGHTS)?;
        let mut parity = load_tensors("parity/yolov8n-parity.safetensors")?;
        let input = parity.remove("input").expect("parity input");
        Some((model_from(tensors).unwrap(), input))
    }

    fn check_parity(weights_file: &str) {
        check_parity_against(weights_file, "parity/yolov8n-parity.safetensors");
    }

    /// The model's raw output on the test device ([`crate::detect::device::test_device`]) against
    /// ultralytics': f32 within 2e-3 px (boxes) and 1e-4 (scores), f16 within 0.5 px and 1e-2
    /// (f16 keeps 11 significant bits: box values near 640 px are only 0.5 px apart).
    fn check_parity_against(weights_file: &str, parity_file: &str) {
        check_parity_in(weights_file, parity_file, DType::F32, 2e-3, 1e-4);
    }

    fn check_parity_in(
        weights_file: &str,
        parity_file: &str,
        dtype: DType,
        box_tol: f32,
        score_tol: f32,
    ) {
        let (Some(path), Some(parity)) =
            (fixtures::require(weights_file), load_tensors(parity_file))
        else {
            return;
        };
        let (model, device, output) = crate::detect::device::forward_on_test_device(
            &path,
            dtype,
            Yolov8::load,
            |m, xs| m.forward(xs),
            &parity["input"],
        );
        assert_eq!(model.variant(), "yolov8n");
        assert_eq!(model.num_classes(), 80);
        let expected = &parity["output"];
        assert_eq!(output.dims(), expected.dims());
        let box_err = max_abs_diff(
            &output.narrow(1, 0, 4).unwrap(),
            &expected.narrow(1, 0, 4).unwrap(),
        );
        let score_err = max_abs_diff(
            &output.narrow(1, 4, 80).unwrap(),
            &expected.narrow(1, 4, 80).unwrap(),
        );
        eprintln!(
            "parity {weights_file} on {device} {dtype:?}: max |Δ| boxes {box_err:.3e} px, scores {score_err:.3e}"
        );
        assert!(box_err <= box_tol, "box rows differ by {box_err}");
        assert!(score_err <= score_tol, "score rows differ by {score_err}");
    }

    #[test]
    fn matches_ultralytics_with_candle_names() {
        check_parity(CANDLE_WEIGHTS);
    }

    #[test]
    fn matches_ultralytics_with_ultralytics_names() {
        check_parity(ULTRALYTICS_WEIGHTS);
    }

    /// A genuine ultralytics `.pt` (float16 weights) against ultralytics' own output of it.
    #[test]
    fn pt_checkpoint_matches_ultralytics() {
        check_parity_against(
            "models/yolov8n-random.pt",
            "parity/yolov8n-random-pt-parity.safetensors",
        );
    }

    /// Guards each stage separately, so a regression points at the layer that broke.
    #[test]
    fn intermediate_layers_match_ultralytics() {
        let (Some(tensors), Some(parity), Some(layers)) = (
            weights(CANDLE_WEIGHTS),
            load_tensors("parity/yolov8n-parity.safetensors"),
            load_tensors("parity/yolov8n-parity-layers.safetensors"),
        ) else {
            return;
        };
        let model = model_from(tensors).unwrap();
        let features = model.backbone.forward(&parity["input"]).unwrap();
        let levels = model.neck.forward(&features).unwrap();
        let raw = model.head.forward_raw(&levels).unwrap();
        let checks = [
            ("model.4", &features.p3),
            ("model.6", &features.p4),
            ("model.9", &features.p5),
            ("model.15", &levels[0]),
            ("model.18", &levels[1]),
            ("model.21", &levels[2]),
            ("head.box_dist", &raw.box_dist),
            ("head.cls_logits", &raw.cls_logits),
        ];
        for (name, ours) in checks {
            let err = max_abs_diff(ours, &layers[name]);
            eprintln!("{name}: max |Δ| {err:.3e}");
            assert!(err < 1e-3, "{name} differs by {err}");
        }
    }

    #[test]
    fn missing_tensor_is_named() {
        let Some(mut tensors) = weights(CANDLE_WEIGHTS) else {
            return;
        };
        let name = "fpn.n4.bottleneck.0.cv2.conv.weight";
        tensors.remove(name).unwrap();
        let err = model_from(tensors).unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
    }

    #[test]
    fn misshapen_tensor_is_named() {
        let Some(mut tensors) = weights(CANDLE_WEIGHTS) else {
            return;
        };
        for name in ["net.b3.0.conv.weight", "head.dfl.conv.weight"] {
            let mut tensors = tensors.clone();
            let wrong = Tensor::zeros((7, 5, 3, 3), DType::F32, &Device::Cpu).unwrap();
            tensors.insert(name.to_string(), wrong);
            let err = model_from(tensors).unwrap_err().to_string();
            assert!(err.contains(name), "{err}");
        }
        let name = "head.cv3.1.2.weight";
        let wrong = Tensor::zeros((80, 81, 1, 1), DType::F32, &Device::Cpu).unwrap();
        tensors.insert(name.to_string(), wrong);
        let err = model_from(tensors).unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
    }

    #[test]
    fn runs_on_non_square_input() {
        let Some(tensors) = weights(CANDLE_WEIGHTS) else {
            return;
        };
        let model = model_from(tensors).unwrap();
        let xs = Tensor::zeros((1, 3, 480, 640), DType::F32, &Device::Cpu).unwrap();
        let ys = model.forward(&xs).unwrap();
        assert_eq!(ys.dims(), [1, 84, 60 * 80 + 30 * 40 + 15 * 20]);
    }

    #[test]
    fn rejects_input_not_a_multiple_of_32() {
        let Some(tensors) = weights(CANDLE_WEIGHTS) else {
            return;
        };
        let model = model_from(tensors).unwrap();
        let xs = Tensor::zeros((1, 3, 480, 630), DType::F32, &Device::Cpu).unwrap();
        let err = model.forward(&xs).unwrap_err().to_string();
        assert!(err.contains("multiples of 32"), "{err}");
    }

    /// f16 (the `--half` dtype) on the test device against ultralytics' f32 output.
    #[test]
    fn matches_ultralytics_in_f16() {
        check_parity_in(
            CANDLE_WEIGHTS,
            "parity/yolov8n-parity.safetensors",
            DType::F16,
            0.5,
            1e-2,
        );
    }

    /// A synthetic, BN-folded YOLOv8 under candle names with yolov8.yaml's channel and
    /// depth formulas, so every scale can be loaded without its (large) weights.
    struct Synthetic {
        tensors: HashMap<String, Tensor>,
    }

    impl Synthetic {
        fn conv(&mut self, name: &str, c_in: usize, c_out: usize, k: usize) {
            let dev = &Device::Cpu;
            let w = Tensor::zeros((c_out, c_in, k, k), DType::F32, dev).unwrap();
            let b = Tensor::zeros(c_out, DType::F32, dev).unwrap();
            self.tensors.insert(format!("{name}.conv.weight"), w);
            self.tensors.insert(format!("{name}.conv.bias"), b);
        }

        fn c2f(&mut self, name: &str, c_in: usize, c_out: usize, n: usize) {
            let c = c_out / 2;
            self.conv(&format!("{name}.cv1"), c_in, 2 * c, 1);
            self.conv(&format!("{name}.cv2"), (2 + n) * c, c_out, 1);
            for k in 0..n {
                self.conv(&format!("{name}.bottleneck.{k}.cv1"), c, c, 3);
                self.conv(&format!("{name}.bottleneck.{k}.cv2"), c, c, 3);
            }
        }

        /// `depth`, `width`, `max_channels` as in yolov8.yaml's `scales`.
        fn build(depth: f64, width: f64, max_channels: usize, nc: usize) -> Self {
            let ch = |c: usize| ((c.min(max_channels) as f64 * width / 8.0).ceil() as usize) * 8;
            let n = |k: f64| ((k * depth).round() as usize).max(1);
            let (c1, c2, c3, c4, c5) = (ch(64), ch(128), ch(256), ch(512), ch(1024));
            let mut m = Synthetic {
                tensors: HashMap::new(),
            };
            m.conv("net.b1.0", 3, c1, 3);
            m.conv("net.b1.1", c1, c2, 3);
            m.c2f("net.b2.0", c2, c2, n(3.0));
            m.conv("net.b2.1", c2, c3, 3);
            m.c2f("net.b2.2", c3, c3, n(6.0));
            m.conv("net.b3.0", c3, c4, 3);
            m.c2f("net.b3.1", c4, c4, n(6.0));
            m.conv("net.b4.0", c4, c5, 3);
            m.c2f("net.b4.1", c5, c5, n(3.0));
            m.conv("net.b5.0.cv1", c5, c5 / 2, 1);
            m.conv("net.b5.0.cv2", 2 * c5, c5, 1);
            m.c2f("fpn.n1", c5 + c4, c4, n(3.0));
            m.c2f("fpn.n2", c4 + c3, c3, n(3.0));
            m.conv("fpn.n3", c3, c3, 3);
            m.c2f("fpn.n4", c3 + c4, c4, n(3.0));
            m.conv("fpn.n5", c4, c4, 3);
            m.c2f("fpn.n6", c4 + c5, c5, n(3.0));
            let box_width = (c3 / 4).max(64);
            let cls_width = c3.max(nc.min(100));
            for (level, c_in) in [c3, c4, c5].into_iter().enumerate() {
                for (branch, width, out) in [("cv2", box_width, 64), ("cv3", cls_width, nc)] {
                    let name = format!("head.{branch}.{level}");
                    m.conv(&format!("{name}.0"), c_in, width, 3);
                    m.conv(&format!("{name}.1"), width, width, 3);
                    let dev = &Device::Cpu;
                    let w = Tensor::zeros((out, width, 1, 1), DType::F32, dev).unwrap();
                    m.tensors.insert(format!("{name}.2.weight"), w);
                    let b = Tensor::zeros(out, DType::F32, dev).unwrap();
                    m.tensors.insert(format!("{name}.2.bias"), b);
                }
            }
            let bins = Tensor::arange(0f32, 16., &Device::Cpu).unwrap();
            let bins = bins.reshape((1, 16, 1, 1)).unwrap();
            m.tensors.insert("head.dfl.conv.weight".into(), bins);
            m
        }
    }

    #[test]
    fn every_scale_loads_and_is_named_from_its_shapes() {
        let scales = [
            ("yolov8n", 0.33, 0.25, 1024),
            ("yolov8s", 0.33, 0.50, 1024),
            ("yolov8m", 0.67, 0.75, 768),
            ("yolov8l", 1.00, 1.00, 512),
            ("yolov8x", 1.00, 1.25, 512),
        ];
        for (name, depth, width, max_channels) in scales {
            let model = model_from(Synthetic::build(depth, width, max_channels, 80).tensors)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(model.variant(), name);
            assert_eq!(model.num_classes(), 80);
        }
        let custom = model_from(Synthetic::build(0.33, 0.25, 1024, 3).tensors).unwrap();
        assert_eq!((custom.variant(), custom.num_classes()), ("yolov8n", 3));
        let custom = model_from(Synthetic::build(0.67, 0.25, 1024, 80).tensors).unwrap();
        assert_eq!(custom.variant(), "yolov8-custom");
    }

    /// The CPU executor (every ISA this CPU runs) against candle's ops on the same weights.
    #[test]
    fn executor_matches_candle_on_every_isa() {
        let Some((model, input)) = fixture_model_and_input() else {
            return;
        };
        let input = &input;
        let want: Vec<f32> = model
            .forward_candle(input)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let image: Vec<f32> = input.flatten_all().unwrap().to_vec1().unwrap();
        let (_, _, h, w) = input.dims4().unwrap();
        for isa in Isa::all_supported() {
            let mut p = model.plan(h, w).unwrap();
            p.graph.set_isa(isa);
            graph::write_image(&mut p.workspace, &p.input, &image);
            p.graph.run(&mut p.workspace);
            // Anchor rows [N, 84] against candle's class rows [84, N].
            let mut anchor_rows = Vec::new();
            model
                .head
                .decode_blocked(&p.workspace, &p.outputs, &mut anchor_rows);
            let anchors = anchor_rows.len() / 84;
            let err = (0..84 * anchors)
                .map(|i| (anchor_rows[(i % anchors) * 84 + i / anchors] - want[i]).abs())
                .fold(0.0f32, f32::max);
            eprintln!("executor {isa:?} vs candle: max |Δ| {err:.3e}");
            assert!(err < 2e-3, "{isa:?}: {err}");
        }
    }

    /// Widths that are not whole blocks of 16 (a C2f split at 4 channels) keep candle's ops.
    #[test]
    fn executor_declines_widths_off_the_block() {
        let xs = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
        let image = vec![0.0; 3 * 64 * 64];
        let mut out = Vec::new();
        let narrow = model_from(Synthetic::build(0.33, 0.125, 1024, 80).tensors).unwrap();
        assert!(!narrow.forward_cpu_image(&image, 64, 64, &mut out).unwrap());
        assert_eq!(narrow.forward(&xs).unwrap().dims(), [1, 84, 64 + 16 + 4]);
        let nano = model_from(Synthetic::build(0.33, 0.25, 1024, 80).tensors).unwrap();
        assert!(nano.forward_cpu_image(&image, 64, 64, &mut out).unwrap());
        assert_eq!(out.len(), 84 * (64 + 16 + 4));
        // Anchor rows: zero weights put every box at the mean bin, 15 cells wide.
        assert_eq!(out[2], 15.0 * 8.0);
        assert_eq!(out[84 + 2], 15.0 * 8.0);
    }

    #[test]
    fn medium_scale_runs_with_its_channel_ratio() {
        let model = model_from(Synthetic::build(0.67, 0.75, 768, 5).tensors).unwrap();
        let xs = Tensor::zeros((2, 3, 64, 96), DType::F32, &Device::Cpu).unwrap();
        let ys = model.forward(&xs).unwrap();
        assert_eq!(ys.dims(), [2, 4 + 5, 8 * 12 + 4 * 6 + 2 * 3]);
        // Zero weights: every distance is the mean bin 7.5, so boxes are 15 cells wide.
        let first_w = ys.get(0).unwrap().get(2).unwrap().get(0).unwrap();
        assert_eq!(first_w.to_scalar::<f32>().unwrap(), 15.0 * 8.0);
    }

    /// Naive stride-1 max-pool with −∞ padding, PyTorch's definition.
    fn reference_max_pool(xs: &[f32], h: usize, w: usize, k: usize) -> Vec<f32> {
        let pad = (k / 2) as isize;
        let mut out = vec![f32::NEG_INFINITY; h * w];
        for r in 0..h as isize {
            for c in 0..w as isize {
                for dr in -pad..=pad {
                    for dc in -pad..=pad {
                        let (rr, cc) = (r + dr, c + dc);
                        if rr >= 0 && cc >= 0 && rr < h as isize && cc < w as isize {
                            let v = xs[rr as usize * w + cc as usize];
                            let o = &mut out[r as usize * w + c as usize];
                            *o = o.max(v);
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn max_pool_equals_negative_infinity_padding() {
        let (h, w) = (7, 9);
        // All negative, so zero padding would be visibly wrong at the border.
        let xs = (Tensor::randn(0f32, 1., (1, 1, h, w), &Device::Cpu)
            .unwrap()
            .abs()
            .unwrap()
            * -1.0)
            .unwrap();
        let ours = same_size_max_pool(&xs, SPPF_KERNEL)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let input = xs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(ours, reference_max_pool(&input, h, w, SPPF_KERNEL));
    }

    #[test]
    fn anchors_are_cell_centres_row_major_per_stride() {
        let (centres, strides) = anchor_grid(64, 96, DType::F32, &Device::Cpu).unwrap();
        let n = 8 * 12 + 4 * 6 + 2 * 3;
        assert_eq!(centres.dims(), [1, 2, n]);
        let c = centres.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
        let s = strides.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        // Second anchor of the first row, then first anchor of the second row.
        assert_eq!((c[0][1], c[1][1]), (1.5, 0.5));
        assert_eq!((c[0][12], c[1][12]), (0.5, 1.5));
        // First anchor of stride 16.
        assert_eq!((c[0][96], c[1][96], s[96]), (0.5, 0.5, 16.0));
        assert_eq!(s[n - 1], 32.0);
    }

    #[test]
    fn distances_become_centre_and_size() {
        let centres = Tensor::new(&[[[10.5f32], [4.5]]], &Device::Cpu).unwrap();
        let dist = Tensor::new(&[[[1f32], [2.], [3.], [4.]]], &Device::Cpu).unwrap();
        let ys = dist_to_cxcywh(&dist, &centres)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // x1 = 9.5, x2 = 13.5, y1 = 2.5, y2 = 8.5.
        assert_eq!(ys, [11.5, 5.5, 4.0, 6.0]);
    }

    #[test]
    #[ignore = "timing only: cargo test --release --lib detect::yolov8 -- --ignored --nocapture"]
    fn time_forward_640() {
        let Some((model, xs)) = fixture_model_and_input() else {
            return;
        };
        let xs = &xs;
        model.forward(xs).unwrap();
        let runs = 5;
        let mut times = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = std::time::Instant::now();
            model.forward(xs).unwrap();
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        eprintln!(
            "yolov8n 640×640 CPU forward: median {:.1} ms, min {:.1} ms",
            times[runs / 2],
            times[0]
        );
    }
}
