//! YOLOv8 (n/s/m/l/x, any class count) on candle-nn, numerically matching ultralytics.
//!
//! Blocks are loaded under the candle-examples names (`net.b1.0`, `fpn.n1`, `head.cv2.0`,
//! C2f bottlenecks `bottleneck.K`) with BatchNorm already folded by
//! [`crate::detect::weights`]. Every size (width, bottleneck count, channel ratio, class
//! count, DFL bins) is read from the tensor shapes, so no size flag exists. The output is
//! ultralytics' inference tensor `[B, 4 + nc, N]`: decoded boxes (cx, cy, w, h in input
//! pixels) and sigmoid class scores for every anchor of strides 8, 16 and 32.

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::cpu::graph::{Act, Graph, PlanCache, Workspace};
use super::dfl::{decode_candle, Dfl};
use super::family::{ExecutorInput, Family, InputSpec, OutputForm, PlanResult, STRIDES};
use super::layers::{full_name, get_with_rank, Bottleneck, ConvBlock, Sppf};
use super::postprocess::{self, BestClass, Candidate, PostprocessConfig};
use super::preprocess::InputLayout;

/// A 3×3 stride-2 convolution with SiLU (ultralytics `Conv(c, c2, 3, 2)`).
fn downsample(vb: VarBuilder, c_in: usize) -> Result<ConvBlock> {
    ConvBlock::load(vb, c_in, 3, 2, 1, true)
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
            block.plan(g, last, Some(out))?;
            last = out;
        }
        self.cv2.plan(g, parts, dst, None)
    }
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
        let b5_0 = Sppf::load(vb.pp("b5.0"), b4_1.out_channels(), true, false)?;
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
            self.b5_0.out_channels(),
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
    dfl: Dfl,
    num_classes: usize,
}

impl DetectHead {
    fn load(vb: VarBuilder, level_channels: [usize; 3]) -> Result<Self> {
        let dfl = Dfl::load(&vb)?;
        let reg_max = dfl.reg_max();
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
            dfl,
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
}

impl DetectHead {
    /// Per level, the box branch's DFL logits then the class logits.
    fn plan(&self, g: &mut Graph, levels: [Act; 3]) -> PlanResult<Vec<Act>> {
        self.dfl.check_plannable()?;
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
        self.dfl.decode_executor(ws, outputs, self.num_classes, out);
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
    /// Post-processing scratch.
    best: BestClass,
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
            best: BestClass::default(),
        })
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

    fn forward_raw(&self, xs: &Tensor) -> Result<HeadRaw> {
        super::family::check_input("YOLOv8", xs)?;
        let features = self.backbone.forward(xs)?;
        let levels = self.neck.forward(&features)?;
        self.head.forward_raw(&levels)
    }
}

impl Family for Yolov8 {
    fn variant(&self) -> &'static str {
        Yolov8::variant(self)
    }

    fn num_classes(&self) -> usize {
        self.head.num_classes
    }

    fn input(&self) -> InputSpec {
        InputSpec {
            layout: InputLayout::Yolov8,
            default_size: 640,
            executor: ExecutorInput::Image,
        }
    }

    /// xs: `[B, 3, H, W]` (H, W multiples of 32), RGB in 0..1. Returns `[B, 4 + nc, N]`:
    /// rows 0–3 cx, cy, w, h in input pixels, rows 4.. sigmoid class scores.
    fn forward_candle(&self, xs: &Tensor) -> Result<Tensor> {
        let raw = self.forward_raw(xs)?;
        let (_, _, height, width) = xs.dims4()?;
        decode_candle(
            Some(&self.head.dfl),
            &raw.box_dist,
            &raw.cls_logits,
            height,
            width,
        )
    }

    fn reduce_on_device(&self, raw: &Tensor) -> Result<Tensor> {
        postprocess::reduce_yolov8_on_device(raw)
    }

    fn plan_cache(&self) -> &PlanCache {
        &self.cpu
    }

    fn plan_network(&self, g: &mut Graph, input: Act) -> PlanResult<Vec<Act>> {
        let levels = self.neck.plan(g, &self.backbone, input)?;
        self.head.plan(g, levels)
    }

    /// Anchor by anchor (`[N, 4 + nc]`, `Yolov8Layout::AnchorRows`).
    fn decode_executor(&self, ws: &Workspace, outputs: &[Act], out: &mut Vec<f32>) {
        self.head.decode_blocked(ws, outputs, out);
    }

    fn executor_as_reference(
        &self,
        out: Vec<f32>,
        anchors: usize,
        device: &Device,
    ) -> Result<Tensor> {
        postprocess::class_rows_from_anchor_rows(out, anchors, self.num_classes() + 4, device)
    }

    fn candidates(
        &mut self,
        output: &[f32],
        form: OutputForm,
        (w, h): (usize, usize),
        post: &PostprocessConfig,
        out: &mut Vec<Candidate>,
    ) -> std::result::Result<(), String> {
        let anchors = super::family::anchor_count(h, w);
        postprocess::yolov8_candidates(output, anchors, form.into(), post, &mut self.best, out);
        Ok(())
    }

    fn anchor_score(
        &self,
        output: &[f32],
        form: OutputForm,
        anchors: usize,
        n: usize,
        wanted: &dyn Fn(usize) -> bool,
    ) -> f32 {
        postprocess::yolov8_anchor_score(output, anchors, form.into(), n, wanted)
    }
}

#[cfg(test)]
mod tests;
