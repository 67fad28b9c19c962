//! YOLOX (Megvii: nano, tiny, s, m, l, x) on candle: CSPDarknet backbone, PAFPN neck and
//! decoupled head, loaded from Megvii's checkpoint names with BatchNorm already folded.
//!
//! Depth, width, depthwise convolutions and the class count are read from tensor shapes,
//! so any YOLOX checkpoint loads without a config. [`Yolox::forward`] returns the raw head
//! output of YOLOX with `decode_in_inference=False`; [`decode_outputs`] (pure, no weights)
//! turns it into boxes in model-input pixels and scores, ready for NMS.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::cpu::blocked::{Layout, LANES};
use super::cpu::epilogue::exp_approx;
use super::cpu::graph::{self, Act, Graph, PlanCache, Workspace};
use super::cpu::isa::{isa_kernel, Isa};
use super::family::{
    ExecutorInput, Family, InputSpec, OutputForm, PlanResult, INPUT_MULTIPLE as SIZE_MULTIPLE,
    STRIDES,
};
use super::layers::{full_name, ConvBlock, DepthwiseConv};
use super::postprocess::{Candidate, PostprocessConfig};
use super::preprocess::InputLayout;
use crate::types::BoxXyxy;

/// YOLOX's `Conv` choice: `DWConv` (depthwise k×k + pointwise 1×1) in depthwise models
/// (nano), `BaseConv` otherwise.
#[derive(Debug, Clone)]
enum Conv {
    Base(ConvBlock),
    Depthwise {
        dconv: DepthwiseConv,
        pconv: ConvBlock,
    },
}

impl Conv {
    fn load(
        vb: VarBuilder,
        c_in: usize,
        kernel: usize,
        stride: usize,
        depthwise: bool,
    ) -> Result<Self> {
        if depthwise {
            let dconv = DepthwiseConv::load(vb.pp("dconv"), c_in, kernel, stride, true)?;
            let pconv = ConvBlock::load(vb.pp("pconv"), c_in, 1, 1, 1, true)?;
            Ok(Self::Depthwise { dconv, pconv })
        } else {
            Ok(Self::Base(ConvBlock::load(
                vb, c_in, kernel, stride, 1, true,
            )?))
        }
    }

    fn out_channels(&self) -> usize {
        match self {
            Self::Base(conv) => conv.out_channels(),
            Self::Depthwise { pconv, .. } => pconv.out_channels(),
        }
    }
}

impl Module for Conv {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Base(conv) => conv.forward(xs),
            Self::Depthwise { dconv, pconv } => pconv.forward(&dconv.forward(xs)?),
        }
    }
}

impl Conv {
    fn plan(
        &self,
        g: &mut Graph,
        xs: Act,
        dst: Option<Act>,
        residual: Option<Act>,
    ) -> PlanResult<Act> {
        match self {
            Self::Base(conv) => conv.plan(g, xs, dst, residual),
            Self::Depthwise { dconv, pconv } => {
                g.depthwise_pointwise(dconv.cpu_params()?, pconv.cpu_params()?, xs, dst, residual)
            }
        }
    }
}

/// YOLOX `Bottleneck` with expansion 1.0 (as inside `CSPLayer`): 1×1 conv, k3 conv, and a
/// residual add when `shortcut` is set and the widths match.
#[derive(Debug, Clone)]
struct Bottleneck {
    conv1: ConvBlock,
    conv2: Conv,
    residual: bool,
}

impl Bottleneck {
    fn load(vb: VarBuilder, c_in: usize, shortcut: bool, depthwise: bool) -> Result<Self> {
        let conv1 = ConvBlock::load(vb.pp("conv1"), c_in, 1, 1, 1, true)?;
        let conv2 = Conv::load(vb.pp("conv2"), conv1.out_channels(), 3, 1, depthwise)?;
        let residual = shortcut && conv2.out_channels() == c_in;
        Ok(Self {
            conv1,
            conv2,
            residual,
        })
    }
}

impl Module for Bottleneck {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let ys = self.conv2.forward(&self.conv1.forward(xs)?)?;
        if self.residual {
            ys + xs
        } else {
            Ok(ys)
        }
    }
}

impl Bottleneck {
    fn plan(&self, g: &mut Graph, xs: Act, dst: Option<Act>) -> PlanResult<Act> {
        let hidden = self.conv1.plan(g, xs, None, None)?;
        self.conv2.plan(g, hidden, dst, self.residual.then_some(xs))
    }
}

/// YOLOX `CSPLayer`: `conv3(cat(m(conv1(x)), conv2(x)))`. The bottleneck count is the
/// number of `m.N` blocks in the checkpoint (the model's depth multiplier).
#[derive(Debug, Clone)]
struct CspLayer {
    conv1: ConvBlock,
    conv2: ConvBlock,
    conv3: ConvBlock,
    m: Vec<Bottleneck>,
}

impl CspLayer {
    fn load(vb: VarBuilder, c_in: usize, shortcut: bool, depthwise: bool) -> Result<Self> {
        let conv1 = ConvBlock::load(vb.pp("conv1"), c_in, 1, 1, 1, true)?;
        let conv2 = ConvBlock::load(vb.pp("conv2"), c_in, 1, 1, 1, true)?;
        let hidden = conv1.out_channels();
        let mut m = Vec::new();
        while vb.contains_tensor(&format!("m.{}.conv1.conv.weight", m.len())) {
            let vb_m = vb.pp("m").pp(m.len());
            m.push(Bottleneck::load(vb_m, hidden, shortcut, depthwise)?);
        }
        let conv3 = ConvBlock::load(vb.pp("conv3"), hidden + conv2.out_channels(), 1, 1, 1, true)?;
        Ok(Self {
            conv1,
            conv2,
            conv3,
            m,
        })
    }

    fn out_channels(&self) -> usize {
        self.conv3.out_channels()
    }
}

impl Module for CspLayer {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut x1 = self.conv1.forward(xs)?;
        for bottleneck in &self.m {
            x1 = bottleneck.forward(&x1)?;
        }
        let x2 = self.conv2.forward(xs)?;
        self.conv3.forward(&Tensor::cat(&[x1, x2], 1)?)
    }
}

impl CspLayer {
    /// The bottleneck chain's last output and conv2 are written into the concat buffer;
    /// the result goes to `dst` (a part of the next concat) or a new activation.
    fn plan(&self, g: &mut Graph, xs: Act, dst: Option<Act>) -> PlanResult<Act> {
        let hidden = self.conv1.out_channels();
        let c2 = self.conv2.out_channels();
        let cat = g.alloc(hidden + c2, xs.height(), xs.width());
        let first = cat.narrow(0, hidden)?;
        let mut x1 = self
            .conv1
            .plan(g, xs, self.m.is_empty().then_some(first), None)?;
        for (k, bottleneck) in self.m.iter().enumerate() {
            let last = k + 1 == self.m.len();
            x1 = bottleneck.plan(g, x1, last.then_some(first))?;
        }
        self.conv2
            .plan(g, xs, Some(cat.narrow(hidden, c2)?), None)?;
        self.conv3.plan(g, cat, dst, None)
    }
}

/// YOLOX `SPPBottleneck`: `conv2(cat(x, pool5(x), pool9(x), pool13(x)))` with `x = conv1(..)`,
/// stride-1 max pools padded by k/2.
#[derive(Debug, Clone)]
struct SppBottleneck {
    conv1: ConvBlock,
    conv2: ConvBlock,
}

impl SppBottleneck {
    fn load(vb: VarBuilder, c_in: usize) -> Result<Self> {
        let conv1 = ConvBlock::load(vb.pp("conv1"), c_in, 1, 1, 1, true)?;
        let conv2 = ConvBlock::load(vb.pp("conv2"), 4 * conv1.out_channels(), 1, 1, 1, true)?;
        Ok(Self { conv1, conv2 })
    }
}

impl Module for SppBottleneck {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let x = self.conv1.forward(xs)?;
        // Stride-1 max pools compose: pool5∘pool5 = pool9 and pool5∘pool5∘pool5 = pool13
        // (YOLOv5's SPPF identity), exact with PyTorch's −inf padding.
        let p5 = max_pool_same(&x, 5)?;
        let p9 = max_pool_same(&p5, 5)?;
        let p13 = max_pool_same(&p9, 5)?;
        self.conv2.forward(&Tensor::cat(&[x, p5, p9, p13], 1)?)
    }
}

impl SppBottleneck {
    fn plan(&self, g: &mut Graph, xs: Act) -> PlanResult<Act> {
        let c = self.conv1.out_channels();
        let parts = g.alloc(4 * c, xs.height(), xs.width());
        let mut last = self.conv1.plan(g, xs, Some(parts.narrow(0, c)?), None)?;
        for k in 1..4 {
            last = g.max_pool(5, last, Some(parts.narrow(k * c, c)?))?;
        }
        self.conv2.plan(g, parts, None, None)
    }
}

/// Stride-1 k×k max pool keeping the size, equal to PyTorch's `MaxPool2d(k, 1, k // 2)`.
/// PyTorch pads with −inf; repeating the edge value instead gives the same maxima (every
/// window that reaches past an edge also holds the edge value itself) in any dtype.
fn max_pool_same(xs: &Tensor, kernel: usize) -> Result<Tensor> {
    let pad = kernel / 2;
    xs.pad_with_same(2, pad, pad)?
        .pad_with_same(3, pad, pad)?
        .max_pool2d_with_stride(kernel, 1)
}

/// YOLOX `Focus` stem: space-to-depth (2×2 pixels → 4× channels) then a k3 `BaseConv`.
#[derive(Debug, Clone)]
struct Focus {
    conv: ConvBlock,
}

impl Focus {
    fn load(vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            conv: ConvBlock::load(vb.pp("conv"), 12, 3, 1, 1, true)?,
        })
    }
}

impl Module for Focus {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.conv.forward(&space_to_depth(xs)?)
    }
}

/// `[B, C, H, W]` → `[B, 4C, H/2, W/2]` in Megvii's channel order: top-left (even rows,
/// even columns), bottom-left, top-right, bottom-right.
fn space_to_depth(xs: &Tensor) -> Result<Tensor> {
    let (batch, channels, height, width) = xs.dims4()?;
    // [B, C, H/2, row parity, W/2, col parity] → [B, col parity, row parity, C, H/2, W/2].
    let split = xs.reshape((batch, channels, height / 2, 2, width / 2, 2))?;
    split
        .permute((0, 5, 3, 1, 2, 4))?
        .reshape((batch, 4 * channels, height / 2, width / 2))
}

/// One `darkN` stage of CSPDarknet: a stride-2 conv, then a CSP layer.
#[derive(Debug, Clone)]
struct DarkStage {
    conv: Conv,
    csp: CspLayer,
}

impl DarkStage {
    fn load(vb: VarBuilder, c_in: usize, depthwise: bool) -> Result<Self> {
        let conv = Conv::load(vb.pp("0"), c_in, 3, 2, depthwise)?;
        let csp = CspLayer::load(vb.pp("1"), conv.out_channels(), true, depthwise)?;
        Ok(Self { conv, csp })
    }
}

impl Module for DarkStage {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.csp.forward(&self.conv.forward(xs)?)
    }
}

impl DarkStage {
    fn plan(&self, g: &mut Graph, xs: Act, dst: Option<Act>) -> PlanResult<Act> {
        let xs = self.conv.plan(g, xs, None, None)?;
        self.csp.plan(g, xs, dst)
    }
}

/// YOLOX `CSPDarknet` with outputs dark3, dark4, dark5 (strides 8, 16, 32). dark5 adds an
/// SPP block and its CSP layer has no shortcuts.
#[derive(Debug, Clone)]
struct CspDarknet {
    stem: Focus,
    dark2: DarkStage,
    dark3: DarkStage,
    dark4: DarkStage,
    dark5_conv: Conv,
    dark5_spp: SppBottleneck,
    dark5_csp: CspLayer,
}

impl CspDarknet {
    fn load(vb: VarBuilder, depthwise: bool) -> Result<Self> {
        let stem = Focus::load(vb.pp("stem"))?;
        let dark2 = DarkStage::load(vb.pp("dark2"), stem.conv.out_channels(), depthwise)?;
        let dark3 = DarkStage::load(vb.pp("dark3"), dark2.csp.out_channels(), depthwise)?;
        let dark4 = DarkStage::load(vb.pp("dark4"), dark3.csp.out_channels(), depthwise)?;
        let vb5 = vb.pp("dark5");
        let dark5_conv = Conv::load(vb5.pp("0"), dark4.csp.out_channels(), 3, 2, depthwise)?;
        let dark5_spp = SppBottleneck::load(vb5.pp("1"), dark5_conv.out_channels())?;
        let dark5_csp = CspLayer::load(
            vb5.pp("2"),
            dark5_spp.conv2.out_channels(),
            false,
            depthwise,
        )?;
        Ok(Self {
            stem,
            dark2,
            dark3,
            dark4,
            dark5_conv,
            dark5_spp,
            dark5_csp,
        })
    }

    fn out_channels(&self) -> [usize; 3] {
        [
            self.dark3.csp.out_channels(),
            self.dark4.csp.out_channels(),
            self.dark5_csp.out_channels(),
        ]
    }

    /// (dark3, dark4, dark5) feature maps.
    fn forward(&self, xs: &Tensor) -> Result<[Tensor; 3]> {
        let dark2 = self.dark2.forward(&self.stem.forward(xs)?)?;
        let dark3 = self.dark3.forward(&dark2)?;
        let dark4 = self.dark4.forward(&dark3)?;
        let dark5 = self.dark5_spp.forward(&self.dark5_conv.forward(&dark4)?)?;
        let dark5 = self.dark5_csp.forward(&dark5)?;
        Ok([dark3, dark4, dark5])
    }

    /// Bottlenecks in dark2's CSP layer, Megvii's `base_depth = max(round(3·depth), 1)`:
    /// 1 for nano, tiny and s, 2 for m, 3 for l, 4 for x.
    fn base_depth(&self) -> usize {
        self.dark2.csp.m.len()
    }
}

impl CspDarknet {
    /// `image` is the space-to-depth input ([`graph::write_space_to_depth`]); dark3 and
    /// dark4 are written into `dark3` and `dark4` (parts of the neck's concats).
    fn plan(&self, g: &mut Graph, image: Act, dark3: Act, dark4: Act) -> PlanResult<[Act; 3]> {
        let stem = self.stem.conv.plan(g, image, None, None)?;
        let dark2 = self.dark2.plan(g, stem, None)?;
        let dark3 = self.dark3.plan(g, dark2, Some(dark3))?;
        let dark4 = self.dark4.plan(g, dark3, Some(dark4))?;
        let xs = self.dark5_conv.plan(g, dark4, None, None)?;
        let xs = self.dark5_spp.plan(g, xs)?;
        let dark5 = self.dark5_csp.plan(g, xs, None)?;
        Ok([dark3, dark4, dark5])
    }
}

/// YOLOX `YOLOPAFPN`: the backbone plus a top-down then bottom-up feature pyramid.
#[derive(Debug, Clone)]
struct YoloPafpn {
    backbone: CspDarknet,
    lateral_conv0: ConvBlock,
    c3_p4: CspLayer,
    reduce_conv1: ConvBlock,
    c3_p3: CspLayer,
    bu_conv2: Conv,
    c3_n3: CspLayer,
    bu_conv1: Conv,
    c3_n4: CspLayer,
}

impl YoloPafpn {
    fn load(vb: VarBuilder, depthwise: bool) -> Result<Self> {
        let backbone = CspDarknet::load(vb.pp("backbone"), depthwise)?;
        let [c3, c4, c5] = backbone.out_channels();
        let lateral_conv0 = ConvBlock::load(vb.pp("lateral_conv0"), c5, 1, 1, 1, true)?;
        let fpn0 = lateral_conv0.out_channels();
        let c3_p4 = CspLayer::load(vb.pp("C3_p4"), fpn0 + c4, false, depthwise)?;
        let reduce_conv1 =
            ConvBlock::load(vb.pp("reduce_conv1"), c3_p4.out_channels(), 1, 1, 1, true)?;
        let fpn1 = reduce_conv1.out_channels();
        let c3_p3 = CspLayer::load(vb.pp("C3_p3"), fpn1 + c3, false, depthwise)?;
        let bu_conv2 = Conv::load(vb.pp("bu_conv2"), c3_p3.out_channels(), 3, 2, depthwise)?;
        let c3_n3 = CspLayer::load(
            vb.pp("C3_n3"),
            bu_conv2.out_channels() + fpn1,
            false,
            depthwise,
        )?;
        let bu_conv1 = Conv::load(vb.pp("bu_conv1"), c3_n3.out_channels(), 3, 2, depthwise)?;
        let c3_n4 = CspLayer::load(
            vb.pp("C3_n4"),
            bu_conv1.out_channels() + fpn0,
            false,
            depthwise,
        )?;
        Ok(Self {
            backbone,
            lateral_conv0,
            c3_p4,
            reduce_conv1,
            c3_p3,
            bu_conv2,
            c3_n3,
            bu_conv1,
            c3_n4,
        })
    }

    fn out_channels(&self) -> [usize; 3] {
        [
            self.c3_p3.out_channels(),
            self.c3_n3.out_channels(),
            self.c3_n4.out_channels(),
        ]
    }

    /// Pyramid outputs at strides 8, 16, 32.
    fn forward(&self, xs: &Tensor) -> Result<[Tensor; 3]> {
        let [dark3, dark4, dark5] = self.backbone.forward(xs)?;
        let fpn_out0 = self.lateral_conv0.forward(&dark5)?;
        let f_out0 = Tensor::cat(&[upsample2(&fpn_out0)?, dark4], 1)?;
        let f_out0 = self.c3_p4.forward(&f_out0)?;
        let fpn_out1 = self.reduce_conv1.forward(&f_out0)?;
        let f_out1 = Tensor::cat(&[upsample2(&fpn_out1)?, dark3], 1)?;
        let pan_out2 = self.c3_p3.forward(&f_out1)?;
        let p_out1 = Tensor::cat(&[self.bu_conv2.forward(&pan_out2)?, fpn_out1], 1)?;
        let pan_out1 = self.c3_n3.forward(&p_out1)?;
        let p_out0 = Tensor::cat(&[self.bu_conv1.forward(&pan_out1)?, fpn_out0], 1)?;
        let pan_out0 = self.c3_n4.forward(&p_out0)?;
        Ok([pan_out2, pan_out1, pan_out0])
    }
}

impl YoloPafpn {
    /// As [`YoloPafpn::forward`]. The four concat buffers are allocated first and every
    /// part is produced in place: upsamples and bottom-up convs write the first part, the
    /// backbone stages and lateral convs the second, so no concat is copied.
    fn plan(&self, g: &mut Graph, image: Act) -> PlanResult<[Act; 3]> {
        let [c3, c4, _] = self.backbone.out_channels();
        let fpn0 = self.lateral_conv0.out_channels();
        let fpn1 = self.reduce_conv1.out_channels();
        let (bu2, bu1) = (self.bu_conv2.out_channels(), self.bu_conv1.out_channels());
        // `image` is at stride 2: dark3, dark4, dark5 are at 1/4, 1/8, 1/16 of it.
        let at = |g: &mut Graph, channels: usize, div: usize| {
            g.alloc(channels, image.height() / div, image.width() / div)
        };
        let f_out0 = at(g, fpn0 + c4, 8); // [up(fpn_out0), dark4]
        let f_out1 = at(g, fpn1 + c3, 4); // [up(fpn_out1), dark3]
        let p_out1 = at(g, bu2 + fpn1, 8); // [bu_conv2(pan_out2), fpn_out1]
        let p_out0 = at(g, bu1 + fpn0, 16); // [bu_conv1(pan_out1), fpn_out0]
        let [_, _, dark5] =
            self.backbone
                .plan(g, image, f_out1.narrow(fpn1, c3)?, f_out0.narrow(fpn0, c4)?)?;
        let fpn_out0 = self
            .lateral_conv0
            .plan(g, dark5, Some(p_out0.narrow(bu1, fpn0)?), None)?;
        g.upsample2(fpn_out0, Some(f_out0.narrow(0, fpn0)?))?;
        let x = self.c3_p4.plan(g, f_out0, None)?;
        let fpn_out1 = self
            .reduce_conv1
            .plan(g, x, Some(p_out1.narrow(bu2, fpn1)?), None)?;
        g.upsample2(fpn_out1, Some(f_out1.narrow(0, fpn1)?))?;
        let pan_out2 = self.c3_p3.plan(g, f_out1, None)?;
        self.bu_conv2
            .plan(g, pan_out2, Some(p_out1.narrow(0, bu2)?), None)?;
        let pan_out1 = self.c3_n3.plan(g, p_out1, None)?;
        self.bu_conv1
            .plan(g, pan_out1, Some(p_out0.narrow(0, bu1)?), None)?;
        let pan_out0 = self.c3_n4.plan(g, p_out0, None)?;
        Ok([pan_out2, pan_out1, pan_out0])
    }
}

fn upsample2(xs: &Tensor) -> Result<Tensor> {
    let (_, _, h, w) = xs.dims4()?;
    xs.upsample_nearest2d(2 * h, 2 * w)
}

/// One level of `YOLOXHead`: stem, then separate class and box/objectness branches.
#[derive(Debug, Clone)]
struct HeadLevel {
    stem: ConvBlock,
    cls_convs: [Conv; 2],
    reg_convs: [Conv; 2],
    cls_pred: ConvBlock,
    reg_pred: ConvBlock,
    obj_pred: ConvBlock,
}

impl HeadLevel {
    fn load(vb: &VarBuilder, level: usize, c_in: usize, depthwise: bool) -> Result<Self> {
        let stem = ConvBlock::load(vb.pp("stems").pp(level), c_in, 1, 1, 1, true)?;
        let c = stem.out_channels();
        let branch = |name: &str| -> Result<[Conv; 2]> {
            let vb = vb.pp(name).pp(level);
            let first = Conv::load(vb.pp("0"), c, 3, 1, depthwise)?;
            let second = Conv::load(vb.pp("1"), first.out_channels(), 3, 1, depthwise)?;
            Ok([first, second])
        };
        let cls_convs = branch("cls_convs")?;
        let reg_convs = branch("reg_convs")?;
        let pred = |name: &str, c_in: usize, expected: Option<usize>| -> Result<ConvBlock> {
            let vb = vb.pp(name).pp(level);
            let conv = ConvBlock::load_plain(vb.clone(), c_in, 1, 1, 1, false)?;
            if let Some(out) = expected.filter(|&out| out != conv.out_channels()) {
                candle_core::bail!(
                    "tensor `{}` has {} output channels, expected {out}",
                    full_name(&vb, "weight"),
                    conv.out_channels()
                );
            }
            Ok(conv)
        };
        let cls_pred = pred("cls_preds", cls_convs[1].out_channels(), None)?;
        let reg_pred = pred("reg_preds", reg_convs[1].out_channels(), Some(4))?;
        let obj_pred = pred("obj_preds", reg_convs[1].out_channels(), Some(1))?;
        Ok(Self {
            stem,
            cls_convs,
            reg_convs,
            cls_pred,
            reg_pred,
            obj_pred,
        })
    }

    /// `[B, 5 + nc, H·W]`: raw (dx, dy, log w, log h), sigmoid objectness, sigmoid classes.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let x = self.stem.forward(xs)?;
        let cls_feat = self.cls_convs[1].forward(&self.cls_convs[0].forward(&x)?)?;
        let reg_feat = self.reg_convs[1].forward(&self.reg_convs[0].forward(&x)?)?;
        let cls = candle_nn::ops::sigmoid(&self.cls_pred.forward(&cls_feat)?)?;
        let reg = self.reg_pred.forward(&reg_feat)?;
        let obj = candle_nn::ops::sigmoid(&self.obj_pred.forward(&reg_feat)?)?;
        Tensor::cat(&[reg, obj, cls], 1)?.flatten_from(2)
    }
}

impl HeadLevel {
    /// (box regression, objectness logit, class logits) of one level.
    fn plan(&self, g: &mut Graph, xs: Act) -> PlanResult<[Act; 3]> {
        let x = self.stem.plan(g, xs, None, None)?;
        let cls = self.cls_convs[0].plan(g, x, None, None)?;
        let cls = self.cls_convs[1].plan(g, cls, None, None)?;
        let reg = self.reg_convs[0].plan(g, x, None, None)?;
        let reg = self.reg_convs[1].plan(g, reg, None, None)?;
        Ok([
            self.reg_pred.plan(g, reg, None, None)?,
            self.obj_pred.plan(g, reg, None, None)?,
            self.cls_pred.plan(g, cls, None, None)?,
        ])
    }
}

/// Megvii's published configurations: (name, depthwise, stem width, CSP depth, input size).
const VARIANTS: [(&str, bool, usize, usize, usize); 6] = [
    ("yolox-nano", true, 16, 1, 416),
    ("yolox-tiny", false, 24, 1, 416),
    ("yolox-s", false, 32, 1, 640),
    ("yolox-m", false, 48, 2, 640),
    ("yolox-l", false, 64, 3, 640),
    ("yolox-x", false, 80, 4, 640),
];

/// The YOLOX detector: `backbone` (`YOLOPAFPN`) and `head` (`YOLOXHead`), Megvii's names.
#[derive(Debug, Clone)]
pub struct Yolox {
    backbone: YoloPafpn,
    head: [HeadLevel; 3],
    depthwise: bool,
    num_classes: usize,
    /// The CPU executor's plan for the last input size.
    cpu: PlanCache,
    /// Post-processing scratch.
    decoded: Vec<YoloxCandidate>,
}

impl Yolox {
    /// Builds the model from Megvii names (`backbone.backbone.stem.conv.conv.weight`, …,
    /// `head.cls_preds.0.weight`) with BatchNorm folded. Depth (CSP bottleneck count),
    /// width (stem channels), depthwise (presence of `dconv`) and the class count are all
    /// read from the tensors; a missing or misshapen tensor is an error naming it.
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let depthwise = vb.contains_tensor("backbone.backbone.dark2.0.dconv.conv.weight");
        let backbone = YoloPafpn::load(vb.pp("backbone"), depthwise)?;
        let [c3, c4, c5] = backbone.out_channels();
        let vb_head = vb.pp("head");
        let head = [
            HeadLevel::load(&vb_head, 0, c3, depthwise)?,
            HeadLevel::load(&vb_head, 1, c4, depthwise)?,
            HeadLevel::load(&vb_head, 2, c5, depthwise)?,
        ];
        let num_classes = head[0].cls_pred.out_channels();
        for (level, head_level) in head.iter().enumerate().skip(1) {
            if head_level.cls_pred.out_channels() != num_classes {
                candle_core::bail!(
                    "tensor `head.cls_preds.{level}.weight` has {} classes but `head.cls_preds.0.weight` has {num_classes}",
                    head_level.cls_pred.out_channels()
                );
            }
        }
        Ok(Self {
            backbone,
            head,
            depthwise,
            num_classes,
            cpu: PlanCache::default(),
            decoded: Vec::new(),
        })
    }

    /// `yolox-nano` … `yolox-x` when depthwise, stem width and CSP depth match one of
    /// Megvii's configurations, `yolox-custom` otherwise.
    pub fn variant(&self) -> &'static str {
        self.known_variant().map_or("yolox-custom", |v| v.0)
    }

    /// The input size the variant was trained at: 416 for nano and tiny, 640 otherwise.
    pub fn default_input_size(&self) -> usize {
        self.known_variant().map_or(640, |v| v.4)
    }

    fn known_variant(&self) -> Option<&'static (&'static str, bool, usize, usize, usize)> {
        let darknet = &self.backbone.backbone;
        let key = (
            self.depthwise,
            darknet.stem.conv.out_channels(),
            darknet.base_depth(),
        );
        VARIANTS.iter().find(|v| (v.1, v.2, v.3) == key)
    }
}

impl Family for Yolox {
    fn variant(&self) -> &'static str {
        Yolox::variant(self)
    }

    fn num_classes(&self) -> usize {
        self.num_classes
    }

    fn input(&self) -> InputSpec {
        InputSpec {
            layout: InputLayout::Yolox,
            default_size: self.default_input_size(),
            executor: ExecutorInput::SpaceToDepth,
        }
    }

    /// `xs`: `[B, 3, H, W]`, BGR 0..255 (YOLOX preprocessing), H and W multiples of 32.
    /// Returns `[B, N, 5 + nc]` as YOLOX with `decode_in_inference=False`: per anchor
    /// (dx, dy, log w, log h) raw, objectness sigmoid, class sigmoids; levels at strides
    /// 8, 16, 32 concatenated, anchors row-major. See [`decode_outputs`].
    fn forward_candle(&self, xs: &Tensor) -> Result<Tensor> {
        super::family::check_input("YOLOX", xs)?;
        let features = self.backbone.forward(xs)?;
        let mut levels = Vec::with_capacity(3);
        for (head_level, x) in self.head.iter().zip(&features) {
            levels.push(head_level.forward(x)?);
        }
        Tensor::cat(&levels, 2)?.transpose(1, 2)?.contiguous()
    }

    fn reduce_on_device(&self, raw: &Tensor) -> Result<Tensor> {
        reduce_on_device(raw)
    }

    fn plan_cache(&self) -> &PlanCache {
        &self.cpu
    }

    fn plan_network(&self, g: &mut Graph, input: Act) -> PlanResult<Vec<Act>> {
        let levels = self.backbone.plan(g, input)?;
        let mut outputs = Vec::with_capacity(9);
        for (head_level, xs) in self.head.iter().zip(levels) {
            outputs.extend(head_level.plan(g, xs)?);
        }
        Ok(outputs)
    }

    /// The executor's (reg, obj, cls) per level → `out` `[N, 5 + nc]` as `forward`, one
    /// grid row of one level per parallel item.
    fn decode_executor(&self, ws: &Workspace, outputs: &[Act], out: &mut Vec<f32>) {
        let isa = Isa::detect();
        let cols = 5 + self.num_classes;
        graph::decode_levels(outputs, 3, cols, out, |level, y, anchor_rows| {
            let parts = std::array::from_fn(|k| ws.read(&outputs[3 * level + k]));
            decode_row(isa, parts, y, cols, anchor_rows);
        });
    }

    fn executor_as_reference(
        &self,
        out: Vec<f32>,
        anchors: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let cols = 5 + self.num_classes;
        Tensor::from_vec(out, (1, anchors, cols), device)
    }

    fn candidates(
        &mut self,
        output: &[f32],
        form: OutputForm,
        (w, h): (usize, usize),
        post: &PostprocessConfig,
        out: &mut Vec<Candidate>,
    ) -> std::result::Result<(), String> {
        candidates_into(
            output,
            w,
            h,
            form == OutputForm::Reduced,
            post,
            &mut self.decoded,
            out,
        )
        .map_err(|e| e.to_string())
    }

    fn anchor_score(
        &self,
        output: &[f32],
        form: OutputForm,
        anchors: usize,
        n: usize,
        wanted: &dyn Fn(usize) -> bool,
    ) -> f32 {
        let columns = output.len() / anchors;
        let row = &output[n * columns..(n + 1) * columns];
        let best = |values: &mut dyn Iterator<Item = (usize, f32)>| {
            values
                .filter(|&(c, _)| wanted(c))
                .map(|(_, v)| v)
                .fold(0f32, f32::max)
        };
        match form {
            OutputForm::Reduced => best(&mut std::iter::once((row[6] as usize, row[4] * row[5]))),
            _ => best(&mut row[5..].iter().map(|p| row[4] * p).enumerate()),
        }
    }
}

isa_kernel! {
    /// One grid row of YOLOX's raw output: per anchor (row of `cols`), the four box values
    /// as they are, then sigmoid(objectness) and sigmoid(class logits).
    fn decode_row(parts: [(&[f32], Layout); 3], y: usize, cols: usize, rows: &mut [f32]) {
        let [(reg, reg_layout), (obj, obj_layout), (cls, cls_layout)] = parts;
        let nc = cls_layout.channels;
        for (x, row) in rows.chunks_exact_mut(cols).enumerate() {
            let at = reg_layout.offset(0, y as isize, x as isize);
            row[..4].copy_from_slice(&reg[at..at + 4]);
            let objectness = obj[obj_layout.offset(0, y as isize, x as isize)];
            row[4] = 1.0 / (1.0 + exp_approx(-objectness));
            for block in 0..cls_layout.blocks() {
                let at = cls_layout.offset(block, y as isize, x as isize);
                let mut p = [0.0f32; LANES];
                for (p, &v) in p.iter_mut().zip(&cls[at..at + LANES]) {
                    *p = 1.0 / (1.0 + exp_approx(-v));
                }
                let n = LANES.min(nc - block * LANES);
                row[5 + block * LANES..5 + block * LANES + n].copy_from_slice(&p[..n]);
            }
        }
    }
}

/// YOLOX output `[N, 5 + nc]` (or, `reduced`, [`reduce_on_device`]'s `[N, 7]`) for
/// a `model_w`×`model_h` input, decoded by [`decode_outputs_into`] (score = objectness · best class probability, kept when
/// `>= conf`), then filtered by class.
fn candidates_into(
    output: &[f32],
    model_w: usize,
    model_h: usize,
    reduced: bool,
    cfg: &PostprocessConfig,
    decoded: &mut Vec<YoloxCandidate>,
    out: &mut Vec<Candidate>,
) -> std::result::Result<(), YoloxDecodeError> {
    if reduced {
        decode_reduced_into(output, model_h, model_w, cfg.conf, decoded)?;
    } else {
        let anchors = anchor_count(model_h, model_w).max(1);
        decode_outputs_into(
            output,
            output.len() / anchors,
            model_h,
            model_w,
            cfg.conf,
            decoded,
        )?;
    }
    out.clear();
    out.extend(
        decoded
            .iter()
            .filter(|c| cfg.class_mask.get(c.class_index).copied().unwrap_or(false))
            .map(|c| {
                let [cx, cy, w, h] = c.cxcywh_in_model;
                Candidate {
                    class_id: c.class_index,
                    score: c.score,
                    box_in_model: BoxXyxy::from_center(cx, cy, w, h),
                }
            }),
    );
    Ok(())
}

/// Where one row of the raw output sits: its grid cell on a level and that level's stride.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnchorPoint {
    pub grid_x: usize,
    pub grid_y: usize,
    pub stride: usize,
}

/// The anchors of a `input_height × input_width` input (multiples of 32) in output order:
/// strides 8, 16, 32, each grid row-major.
pub fn anchor_points(input_height: usize, input_width: usize) -> impl Iterator<Item = AnchorPoint> {
    STRIDES.into_iter().flat_map(move |stride| {
        let (rows, cols) = (input_height / stride, input_width / stride);
        (0..rows).flat_map(move |grid_y| {
            (0..cols).map(move |grid_x| AnchorPoint {
                grid_x,
                grid_y,
                stride,
            })
        })
    })
}

/// Number of rows of the raw output for an `input_height × input_width` input.
pub fn anchor_count(input_height: usize, input_width: usize) -> usize {
    STRIDES
        .iter()
        .map(|s| (input_height / s) * (input_width / s))
        .sum()
}

/// One anchor of the raw output, decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct YoloxCandidate {
    /// Row of the raw output this came from.
    pub anchor: usize,
    /// Centre x, centre y, width, height in model-input pixels.
    pub cxcywh_in_model: [f32; 4],
    /// The most probable class.
    pub class_index: usize,
    /// Objectness × that class's probability: the confidence of Megvii's `postprocess`.
    pub score: f32,
}

/// Why a raw output cannot be decoded: it does not fit the stated input size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum YoloxDecodeError {
    #[error("YOLOX input size {height}x{width} is not a multiple of {SIZE_MULTIPLE} (the strides are 8, 16 and 32)")]
    InputSize { height: usize, width: usize },
    #[error("raw YOLOX output has {n_cols} columns per anchor; expected 5 + the number of classes (at least 6)")]
    Columns { n_cols: usize },
    #[error("raw YOLOX output has {len} values; a {height}x{width} input gives {anchors} anchors x {n_cols} columns = {expected}")]
    Length {
        len: usize,
        height: usize,
        width: usize,
        anchors: usize,
        n_cols: usize,
        expected: usize,
    },
}

/// Decodes one image's raw output (`[N, n_cols]` row-major, as [`Yolox::forward`] returns
/// per batch item) into `out`, keeping anchors whose score reaches `min_score` (0 keeps
/// all). For an anchor at grid cell (gx, gy) of a level with stride s:
/// `cx = (dx + gx)·s`, `cy = (dy + gy)·s`, `w = exp(log w)·s`, `h = exp(log h)·s`, in
/// model-input pixels; `score = objectness × max class probability`. `out` is cleared
/// first so that a caller can reuse it every frame.
pub fn decode_outputs_into(
    raw: &[f32],
    n_cols: usize,
    input_height: usize,
    input_width: usize,
    min_score: f32,
    out: &mut Vec<YoloxCandidate>,
) -> std::result::Result<(), YoloxDecodeError> {
    check_raw_layout(raw.len(), n_cols, input_height, input_width)?;
    decode_rows(
        raw,
        n_cols,
        input_height,
        input_width,
        min_score,
        out,
        |row| best_class(&row[5..]),
    );
    Ok(())
}

/// Columns of a [`reduce_on_device`] output: tx, ty, tw, th, objectness, best class
/// probability, best class index.
pub const REDUCED_COLUMNS: usize = 7;

/// A YOLOX output `[1, N, 5 + nc]` → `[1, N, 7]` (box, objectness, best class probability
/// and index) on the tensor's own device, so a GPU sends back 7 of the 5 + nc columns.
/// Ties between classes may pick another of the equal classes than the host scan's first.
pub fn reduce_on_device(raw: &Tensor) -> Result<Tensor> {
    let (_, _, cols) = raw.dims3()?;
    // Contiguous: the reductions then read one row per anchor on any device.
    let probs = raw.narrow(2, 5, cols - 5)?.contiguous()?;
    let best = probs.max_keepdim(2)?.to_dtype(candle_core::DType::F32)?;
    let class = probs.argmax_keepdim(2)?.to_dtype(candle_core::DType::F32)?;
    Tensor::cat(
        &[
            &raw.narrow(2, 0, 5)?.to_dtype(candle_core::DType::F32)?,
            &best,
            &class,
        ],
        2,
    )
}

/// [`decode_outputs_into`] for a [`reduce_on_device`] output (`[N, 7]`).
pub fn decode_reduced_into(
    raw: &[f32],
    input_height: usize,
    input_width: usize,
    min_score: f32,
    out: &mut Vec<YoloxCandidate>,
) -> std::result::Result<(), YoloxDecodeError> {
    check_raw_layout(raw.len(), REDUCED_COLUMNS, input_height, input_width)?;
    decode_rows(
        raw,
        REDUCED_COLUMNS,
        input_height,
        input_width,
        min_score,
        out,
        |row| (row[6] as usize, row[5]),
    );
    Ok(())
}

/// Rows → candidates (score = objectness · best class probability, kept when `>= conf`),
/// boxes decoded on the stride grids; `best` gives a row's (class index, probability).
fn decode_rows(
    raw: &[f32],
    n_cols: usize,
    input_height: usize,
    input_width: usize,
    min_score: f32,
    out: &mut Vec<YoloxCandidate>,
    best: impl Fn(&[f32]) -> (usize, f32),
) {
    out.clear();
    let rows = raw.chunks_exact(n_cols);
    for (anchor, (row, point)) in rows
        .zip(anchor_points(input_height, input_width))
        .enumerate()
    {
        let (class_index, class_prob) = best(row);
        let score = row[4] * class_prob;
        if score.is_nan() || score < min_score {
            continue;
        }
        let s = point.stride as f32;
        out.push(YoloxCandidate {
            anchor,
            cxcywh_in_model: [
                (row[0] + point.grid_x as f32) * s,
                (row[1] + point.grid_y as f32) * s,
                row[2].exp() * s,
                row[3].exp() * s,
            ],
            class_index,
            score,
        });
    }
}

/// [`decode_outputs_into`] into a new vector.
pub fn decode_outputs(
    raw: &[f32],
    n_cols: usize,
    input_height: usize,
    input_width: usize,
    min_score: f32,
) -> std::result::Result<Vec<YoloxCandidate>, YoloxDecodeError> {
    let mut out = Vec::new();
    decode_outputs_into(raw, n_cols, input_height, input_width, min_score, &mut out)?;
    Ok(out)
}

fn check_raw_layout(
    len: usize,
    n_cols: usize,
    height: usize,
    width: usize,
) -> std::result::Result<(), YoloxDecodeError> {
    if !height.is_multiple_of(SIZE_MULTIPLE) || !width.is_multiple_of(SIZE_MULTIPLE) {
        return Err(YoloxDecodeError::InputSize { height, width });
    }
    if n_cols < 6 {
        return Err(YoloxDecodeError::Columns { n_cols });
    }
    let anchors = anchor_count(height, width);
    if len != anchors * n_cols {
        return Err(YoloxDecodeError::Length {
            len,
            height,
            width,
            anchors,
            n_cols,
            expected: anchors * n_cols,
        });
    }
    Ok(())
}

/// Index and value of the largest class probability (the first on ties).
fn best_class(probs: &[f32]) -> (usize, f32) {
    probs
        .iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, p)| {
            if p > best.1 {
                (i, p)
            } else {
                best
            }
        })
}

#[cfg(test)]
mod tests;
