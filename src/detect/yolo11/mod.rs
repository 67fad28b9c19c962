//! YOLO11 (ultralytics `yolo11{n,s,m,l,x}.yaml`, any class count) on candle and the CPU
//! executor, read from ultralytics names (`model.N.*`) with BatchNorm folded.
//!
//! The network ([`Body`], layers 0–22) is shared with YOLO26 (`super::yolo26`): a
//! backbone of strided convs and `C3k2` blocks, `SPPF` and `C2PSA` attention (layers 9,
//! 10), and a PAN neck of `C3k2` blocks. YOLO11's head (layer 23) is ultralytics `Detect`
//! with depthwise-separable class branches and the DFL box decode of YOLOv8, so the output
//! is YOLOv8's: `[B, 4 + nc, N]`, cx, cy, w, h in input pixels, then sigmoid class scores.

pub mod blocks;
pub mod head;

use candle_core::{Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use self::blocks::{C2psa, C3k2};
use self::head::Branches;
use super::cpu::graph::{Act, Graph, PlanCache, Workspace};
use super::dfl::{decode_candle, Dfl};
use super::family::{anchor_count, ExecutorInput, Family, InputSpec, OutputForm, PlanResult};
use super::layers::{ConvBlock, Sppf};
use super::postprocess::{self, BestClass, Candidate, PostprocessConfig};
use super::preprocess::InputLayout;

/// A 3×3 stride-2 convolution with SiLU (ultralytics `Conv(c, c2, 3, 2)`).
fn downsample(vb: VarBuilder, c_in: usize) -> Result<ConvBlock> {
    ConvBlock::load(vb, c_in, 3, 2, 1, true)
}

/// How a family's SPPF (layer 9) is built: the yamls differ, the tensors do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SppfKind {
    /// YOLO11: `SPPF(c, c, 5)`, SiLU after cv1, no shortcut.
    Yolo11,
    /// YOLO26: `SPPF(c, c, 5, 3, True)`, cv1 linear, the input added to the output.
    Yolo26,
}

/// Layers 0–22 of yolo11.yaml / yolo26.yaml: the feature maps the head reads.
#[derive(Debug, Clone)]
pub struct Body {
    l0: ConvBlock,
    l1: ConvBlock,
    l2: C3k2,
    l3: ConvBlock,
    l4: C3k2,
    l5: ConvBlock,
    l6: C3k2,
    l7: ConvBlock,
    l8: C3k2,
    l9: Sppf,
    l10: C2psa,
    l13: C3k2,
    l16: C3k2,
    l17: ConvBlock,
    l19: C3k2,
    l20: ConvBlock,
    l22: C3k2,
}

impl Body {
    pub fn load(vb: &VarBuilder, sppf: SppfKind) -> Result<Self> {
        let layer = |i: usize| vb.pp(format!("model.{i}"));
        let l0 = downsample(layer(0), 3)?;
        let l1 = downsample(layer(1), l0.out_channels())?;
        let l2 = C3k2::load(layer(2), l1.out_channels())?;
        let l3 = downsample(layer(3), l2.out_channels())?;
        let l4 = C3k2::load(layer(4), l3.out_channels())?;
        let l5 = downsample(layer(5), l4.out_channels())?;
        let l6 = C3k2::load(layer(6), l5.out_channels())?;
        let l7 = downsample(layer(7), l6.out_channels())?;
        let l8 = C3k2::load(layer(8), l7.out_channels())?;
        let (silu, shortcut) = match sppf {
            SppfKind::Yolo11 => (true, false),
            SppfKind::Yolo26 => (false, true),
        };
        let l9 = Sppf::load(layer(9), l8.out_channels(), silu, shortcut)?;
        let l10 = C2psa::load(layer(10), l9.out_channels())?;
        let (c4, c6, c10) = (l4.out_channels(), l6.out_channels(), l10.out_channels());
        let l13 = C3k2::load(layer(13), c10 + c6)?;
        let l16 = C3k2::load(layer(16), l13.out_channels() + c4)?;
        let l17 = downsample(layer(17), l16.out_channels())?;
        let l19 = C3k2::load(layer(19), l17.out_channels() + l13.out_channels())?;
        let l20 = downsample(layer(20), l19.out_channels())?;
        let l22 = C3k2::load(layer(22), l20.out_channels() + c10)?;
        Ok(Self {
            l0,
            l1,
            l2,
            l3,
            l4,
            l5,
            l6,
            l7,
            l8,
            l9,
            l10,
            l13,
            l16,
            l17,
            l19,
            l20,
            l22,
        })
    }

    /// Widths of the head's inputs (layers 16, 19, 22).
    pub fn out_channels(&self) -> [usize; 3] {
        [
            self.l16.out_channels(),
            self.l19.out_channels(),
            self.l22.out_channels(),
        ]
    }

    /// (stem width, blocks in layer 2, width of layer 10): what tells the scales apart.
    fn sizes(&self) -> (usize, usize, usize) {
        (
            self.l0.out_channels(),
            self.l2.depth(),
            self.l10.out_channels(),
        )
    }

    /// The released scale matching the sizes, named `{family}{scale}`, else
    /// `{family}-custom`.
    pub fn variant(&self, names: &[&'static str; 6]) -> &'static str {
        SCALES
            .iter()
            .position(|s| *s == self.sizes())
            .map_or(names[5], |i| names[i])
    }

    /// The head inputs (layers 16, 19, 22). Concats follow the yamls: the upsampled or
    /// downsampled path first, the skip connection second.
    pub fn forward(&self, xs: &Tensor) -> Result<[Tensor; 3]> {
        let up = |xs: &Tensor| -> Result<Tensor> {
            let (_, _, h, w) = xs.dims4()?;
            xs.upsample_nearest2d(2 * h, 2 * w)
        };
        let xs = self.l2.forward(&self.l1.forward(&self.l0.forward(xs)?)?)?;
        let p3 = self.l4.forward(&self.l3.forward(&xs)?)?;
        let p4 = self.l6.forward(&self.l5.forward(&p3)?)?;
        let xs = self.l8.forward(&self.l7.forward(&p4)?)?;
        let p5 = self.l10.forward(&self.l9.forward(&xs)?)?;
        let l13 = self.l13.forward(&Tensor::cat(&[&up(&p5)?, &p4], 1)?)?;
        let l16 = self.l16.forward(&Tensor::cat(&[&up(&l13)?, &p3], 1)?)?;
        let l19 = self
            .l19
            .forward(&Tensor::cat(&[&self.l17.forward(&l16)?, &l13], 1)?)?;
        let l22 = self
            .l22
            .forward(&Tensor::cat(&[&self.l20.forward(&l19)?, &p5], 1)?)?;
        Ok([l16, l19, l22])
    }

    /// The backbone's layer outputs ultralytics' per-layer parity files hold (4, 6, 8, 9,
    /// 10), then the head inputs (16, 19, 22), named `model.N`: for finding where a port
    /// diverges.
    #[cfg(test)]
    pub fn layer_outputs(&self, xs: &Tensor) -> Result<Vec<(&'static str, Tensor)>> {
        let x = self.l2.forward(&self.l1.forward(&self.l0.forward(xs)?)?)?;
        let l4 = self.l4.forward(&self.l3.forward(&x)?)?;
        let l6 = self.l6.forward(&self.l5.forward(&l4)?)?;
        let l8 = self.l8.forward(&self.l7.forward(&l6)?)?;
        let l9 = self.l9.forward(&l8)?;
        let l10 = self.l10.forward(&l9)?;
        let [l16, l19, l22] = self.forward(xs)?;
        Ok(vec![
            ("model.4", l4),
            ("model.6", l6),
            ("model.8", l8),
            ("model.9", l9),
            ("model.10", l10),
            ("model.16", l16),
            ("model.19", l19),
            ("model.22", l22),
        ])
    }

    /// As [`Body::forward`]. The four concat buffers are allocated first and every part is
    /// produced in place (upsamples and downsampling convs the first part, the skips the
    /// second), so no concat is copied.
    pub fn plan(&self, g: &mut Graph, image: Act) -> PlanResult<[Act; 3]> {
        let (c4, c6, c10) = (
            self.l4.out_channels(),
            self.l6.out_channels(),
            self.l10.out_channels(),
        );
        let (c13, c17, c20) = (
            self.l13.out_channels(),
            self.l17.out_channels(),
            self.l20.out_channels(),
        );
        let at = |g: &mut Graph, channels: usize, stride: usize| {
            g.alloc(channels, image.height() / stride, image.width() / stride)
        };
        let cat12 = at(g, c10 + c6, 16); // [up(l10), l6]
        let cat15 = at(g, c13 + c4, 8); // [up(l13), l4]
        let cat18 = at(g, c17 + c13, 16); // [l17, l13]
        let cat21 = at(g, c20 + c10, 32); // [l20, l10]
        let xs = self.l0.plan(g, image, None, None)?;
        let xs = self.l1.plan(g, xs, None, None)?;
        let xs = self.l2.plan(g, xs, None)?;
        let xs = self.l3.plan(g, xs, None, None)?;
        let p3 = self.l4.plan(g, xs, Some(cat15.narrow(c13, c4)?))?;
        let xs = self.l5.plan(g, p3, None, None)?;
        let p4 = self.l6.plan(g, xs, Some(cat12.narrow(c10, c6)?))?;
        let xs = self.l7.plan(g, p4, None, None)?;
        let xs = self.l8.plan(g, xs, None)?;
        let xs = self.l9.plan(g, xs, None)?;
        let p5 = self.l10.plan(g, xs, Some(cat21.narrow(c20, c10)?))?;
        g.upsample2(p5, Some(cat12.narrow(0, c10)?))?;
        let l13 = self.l13.plan(g, cat12, Some(cat18.narrow(c17, c13)?))?;
        g.upsample2(l13, Some(cat15.narrow(0, c13)?))?;
        let l16 = self.l16.plan(g, cat15, None)?;
        self.l17.plan(g, l16, Some(cat18.narrow(0, c17)?), None)?;
        let l19 = self.l19.plan(g, cat18, None)?;
        self.l20.plan(g, l19, Some(cat21.narrow(0, c20)?), None)?;
        let l22 = self.l22.plan(g, cat21, None)?;
        Ok([l16, l19, l22])
    }
}

/// (stem width, layer-2 depth, layer-10 width) of the n, s, m, l, x scales of yolo11.yaml
/// and yolo26.yaml (depth, width, max channels: n 0.5/0.25/1024, s 0.5/0.5/1024,
/// m 0.5/1.0/512, l 1.0/1.0/512, x 1.0/1.5/512).
const SCALES: [(usize, usize, usize); 5] = [
    (16, 1, 256),
    (32, 1, 512),
    (64, 1, 512),
    (64, 2, 512),
    (96, 2, 768),
];

const VARIANTS: [&str; 6] = [
    "yolo11n",
    "yolo11s",
    "yolo11m",
    "yolo11l",
    "yolo11x",
    "yolo11-custom",
];

/// YOLO11 detection model; see the module docs for the output layout.
#[derive(Debug, Clone)]
pub struct Yolo11 {
    body: Body,
    head: Branches,
    dfl: Dfl,
    cpu: PlanCache,
    best: BestClass,
}

impl Yolo11 {
    /// Loads from ultralytics-named, BN-folded weights; sizes and the class count are read
    /// from the tensor shapes, a missing or misshapen tensor is an error naming it.
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let body = Body::load(&vb, SppfKind::Yolo11)?;
        let vb_head = vb.pp("model.23");
        let head = Branches::load(&vb_head, "cv2", "cv3", body.out_channels())?;
        let dfl = Dfl::load(&vb_head)?;
        if head.box_channels() != 4 * dfl.reg_max() {
            candle_core::bail!(
                "tensor `model.23.cv2.0.2.weight` has {} output channels, expected 4 x {} (the DFL bins)",
                head.box_channels(),
                dfl.reg_max()
            );
        }
        Ok(Self {
            body,
            head,
            dfl,
            cpu: PlanCache::default(),
            best: BestClass::default(),
        })
    }
}

impl Family for Yolo11 {
    fn variant(&self) -> &'static str {
        self.body.variant(&VARIANTS)
    }

    fn num_classes(&self) -> usize {
        self.head.num_classes()
    }

    fn input(&self) -> InputSpec {
        InputSpec {
            layout: InputLayout::Yolov8,
            default_size: 640,
            executor: ExecutorInput::Image,
        }
    }

    fn forward_candle(&self, xs: &Tensor) -> Result<Tensor> {
        super::family::check_input("YOLO11", xs)?;
        let (_, _, height, width) = xs.dims4()?;
        let raw = self.head.forward_raw(&self.body.forward(xs)?)?;
        decode_candle(Some(&self.dfl), &raw.boxes, &raw.scores, height, width)
    }

    fn reduce_on_device(&self, raw: &Tensor) -> Result<Tensor> {
        postprocess::reduce_yolov8_on_device(raw)
    }

    fn plan_cache(&self) -> &PlanCache {
        &self.cpu
    }

    fn plan_network(&self, g: &mut Graph, input: Act) -> PlanResult<Vec<Act>> {
        self.dfl.check_plannable()?;
        let levels = self.body.plan(g, input)?;
        self.head.plan(g, levels)
    }

    fn decode_executor(&self, ws: &Workspace, outputs: &[Act], out: &mut Vec<f32>) {
        self.dfl
            .decode_executor(ws, outputs, self.head.num_classes(), out);
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
        postprocess::yolov8_candidates(
            output,
            anchor_count(h, w),
            form.into(),
            post,
            &mut self.best,
            out,
        );
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
pub(crate) mod tests;
