//! The branches of ultralytics' current `Detect` head (YOLO11, YOLO26: `legacy=False`):
//! per level a box branch (`cv2`: conv 3×3, conv 3×3, 1×1 `nn.Conv2d` to 4 · reg_max) and
//! a class branch whose convs are depthwise-separable (`cv3`: DWConv 3×3 + conv 1×1,
//! twice, then a 1×1 `nn.Conv2d` to the classes). YOLO26's one-to-one head has the same
//! branches under `one2one_cv2`/`one2one_cv3`.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::detect::cpu::graph::{Act, Graph};
use crate::detect::family::{PlanResult, STRIDES};
use crate::detect::layers::{full_name, ConvBlock, DepthwiseConv};

/// `Sequential(Conv(x, c2, 3), Conv(c2, c2, 3), nn.Conv2d(c2, 4 · reg_max, 1))`.
#[derive(Debug, Clone)]
struct BoxBranch {
    conv0: ConvBlock,
    conv1: ConvBlock,
    pred: ConvBlock,
}

impl BoxBranch {
    fn load(vb: VarBuilder, c_in: usize) -> Result<Self> {
        let conv0 = ConvBlock::load(vb.pp("0"), c_in, 3, 1, 1, true)?;
        let conv1 = ConvBlock::load(vb.pp("1"), conv0.out_channels(), 3, 1, 1, true)?;
        let pred = ConvBlock::load_plain(vb.pp("2"), conv1.out_channels(), 1, 1, 1, false)?;
        Ok(Self { conv0, conv1, pred })
    }

    fn plan(&self, g: &mut Graph, xs: Act) -> PlanResult<Act> {
        let xs = self.conv0.plan(g, xs, None, None)?;
        let xs = self.conv1.plan(g, xs, None, None)?;
        self.pred.plan(g, xs, None, None)
    }
}

impl Module for BoxBranch {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.pred
            .forward(&self.conv1.forward(&self.conv0.forward(xs)?)?)
    }
}

/// DWConv 3×3 (SiLU) then a 1×1 conv (SiLU): `Sequential(DWConv(c, c, 3), Conv(c, c3, 1))`.
#[derive(Debug, Clone)]
struct Separable {
    depthwise: DepthwiseConv,
    pointwise: ConvBlock,
}

impl Separable {
    fn load(vb: VarBuilder, c_in: usize) -> Result<Self> {
        let depthwise = DepthwiseConv::load(vb.pp("0"), c_in, 3, 1, true)?;
        let pointwise = ConvBlock::load(vb.pp("1"), c_in, 1, 1, 1, true)?;
        Ok(Self {
            depthwise,
            pointwise,
        })
    }

    fn plan(&self, g: &mut Graph, xs: Act) -> PlanResult<Act> {
        g.depthwise_pointwise(
            self.depthwise.cpu_params()?,
            self.pointwise.cpu_params()?,
            xs,
            None,
            None,
        )
    }
}

impl Module for Separable {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.pointwise.forward(&self.depthwise.forward(xs)?)
    }
}

/// `Sequential(Separable, Separable, nn.Conv2d(c3, nc, 1))`.
#[derive(Debug, Clone)]
struct ClassBranch {
    sep0: Separable,
    sep1: Separable,
    pred: ConvBlock,
}

impl ClassBranch {
    fn load(vb: VarBuilder, c_in: usize) -> Result<Self> {
        let sep0 = Separable::load(vb.pp("0"), c_in)?;
        let sep1 = Separable::load(vb.pp("1"), sep0.pointwise.out_channels())?;
        let pred =
            ConvBlock::load_plain(vb.pp("2"), sep1.pointwise.out_channels(), 1, 1, 1, false)?;
        Ok(Self { sep0, sep1, pred })
    }

    fn plan(&self, g: &mut Graph, xs: Act) -> PlanResult<Act> {
        let xs = self.sep0.plan(g, xs)?;
        let xs = self.sep1.plan(g, xs)?;
        self.pred.plan(g, xs, None, None)
    }
}

impl Module for ClassBranch {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.pred
            .forward(&self.sep1.forward(&self.sep0.forward(xs)?)?)
    }
}

/// One head's raw outputs over all anchors (levels concatenated, row-major).
pub struct HeadRaw {
    /// `[B, 4 · reg_max, N]`.
    pub boxes: Tensor,
    /// `[B, nc, N]`: class logits.
    pub scores: Tensor,
}

/// The box and class branches of every level.
#[derive(Debug, Clone)]
pub struct Branches {
    boxes: Vec<BoxBranch>,
    classes: Vec<ClassBranch>,
    box_channels: usize,
    num_classes: usize,
}

impl Branches {
    /// `{vb}.{box_name}.{level}` and `{vb}.{class_name}.{level}` for the three levels.
    pub fn load(
        vb: &VarBuilder,
        box_name: &str,
        class_name: &str,
        level_channels: [usize; 3],
    ) -> Result<Self> {
        let mut boxes = Vec::with_capacity(STRIDES.len());
        let mut classes = Vec::with_capacity(STRIDES.len());
        for (level, &c_in) in level_channels.iter().enumerate() {
            boxes.push(BoxBranch::load(vb.pp(format!("{box_name}.{level}")), c_in)?);
            classes.push(ClassBranch::load(
                vb.pp(format!("{class_name}.{level}")),
                c_in,
            )?);
        }
        let box_channels = boxes[0].pred.out_channels();
        let num_classes = classes[0].pred.out_channels();
        for level in 1..STRIDES.len() {
            for (name, got, want) in [
                (box_name, boxes[level].pred.out_channels(), box_channels),
                (class_name, classes[level].pred.out_channels(), num_classes),
            ] {
                if got != want {
                    candle_core::bail!(
                        "tensor `{}` has {got} output channels, expected {want} (as at level 0)",
                        full_name(&vb.pp(format!("{name}.{level}.2")), "weight")
                    );
                }
            }
        }
        Ok(Self {
            boxes,
            classes,
            box_channels,
            num_classes,
        })
    }

    /// 4 · reg_max.
    pub fn box_channels(&self) -> usize {
        self.box_channels
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    pub fn forward_raw(&self, levels: &[Tensor; 3]) -> Result<HeadRaw> {
        let flat = |ys: Tensor| -> Result<Tensor> {
            let (b, c, h, w) = ys.dims4()?;
            ys.reshape((b, c, h * w))
        };
        let mut boxes = Vec::with_capacity(levels.len());
        let mut scores = Vec::with_capacity(levels.len());
        for (level, xs) in levels.iter().enumerate() {
            boxes.push(flat(self.boxes[level].forward(xs)?)?);
            scores.push(flat(self.classes[level].forward(xs)?)?);
        }
        Ok(HeadRaw {
            boxes: Tensor::cat(&boxes, 2)?,
            scores: Tensor::cat(&scores, 2)?,
        })
    }

    /// Per level, the box branch's output then the class logits.
    pub fn plan(&self, g: &mut Graph, levels: [Act; 3]) -> PlanResult<Vec<Act>> {
        let mut outputs = Vec::with_capacity(2 * levels.len());
        for (level, xs) in levels.into_iter().enumerate() {
            outputs.push(self.boxes[level].plan(g, xs)?);
            outputs.push(self.classes[level].plan(g, xs)?);
        }
        Ok(outputs)
    }
}
