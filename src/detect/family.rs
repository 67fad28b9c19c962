//! One shape for every detector family.
//!
//! A family (`yolov8/`, `yolox/`, `yolo11/`, `yolo26/`) is its checkpoint's blocks on
//! candle, the same blocks planned onto the CPU executor, and the decode of its output.
//! It implements [`Family`]; what every family runs the same way — the CPU executor's
//! input, run and profile, the fallback to candle's ops, the input checks — is the
//! provided methods here, written once. [`super::families`] registers the families by
//! the weight names that tell them apart; [`super::Detector`] holds one boxed family and
//! knows none of them by name.

use candle_core::{Device, Result, Tensor};

use super::cpu::graph::{self, Act, Graph, OpTime, PlanCache, PlanError, Prepared, Workspace};
use super::layers::with_cpu_image;
use super::postprocess::{Candidate, PostprocessConfig, Yolov8Layout};
use super::preprocess::InputLayout;

pub type PlanResult<T> = std::result::Result<T, PlanError>;

/// Strides of the three detection levels (P3, P4, P5) of every family here.
pub const STRIDES: [usize; 3] = [8, 16, 32];

/// Input sides must be multiples of the coarsest stride so that every upsampled map lines
/// up with its skip connection.
pub const INPUT_MULTIPLE: usize = 32;

/// Anchors of an input `height × width`: one per cell of each level's grid.
pub fn anchor_count(height: usize, width: usize) -> usize {
    STRIDES.iter().map(|s| (height / s) * (width / s)).sum()
}

/// How the executor takes the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExecutorInput {
    /// The pre-processed `[3, H, W]` image as it is.
    Image,
    /// 2×2 space-to-depth, `[12, H/2, W/2]` (YOLOX's `Focus` stem).
    SpaceToDepth,
}

/// What a family's input is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSpec {
    /// The reference's pre-processing.
    pub layout: InputLayout,
    /// The square side the variant was trained at.
    pub default_size: usize,
    pub executor: ExecutorInput,
}

/// How the last output in the detector's buffer is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputForm {
    /// As the reference gives it ([`Family::forward_candle`]).
    Full,
    /// As the family's executor decode writes it ([`Family::decode_executor`]).
    Executor,
    /// What [`Family::reduce_on_device`] left of it where the network ran (a GPU): the
    /// best class per anchor, or the whole output for a family whose selection needs
    /// every score (YOLO26).
    Reduced,
}

/// Where ultralytics-style outputs (YOLOv8, YOLO11, YOLO26) are in each form.
impl From<OutputForm> for Yolov8Layout {
    fn from(form: OutputForm) -> Self {
        match form {
            OutputForm::Full => Yolov8Layout::ClassRows,
            OutputForm::Executor => Yolov8Layout::AnchorRows,
            OutputForm::Reduced => Yolov8Layout::BestClassRows,
        }
    }
}

/// How candidates become detections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Selection {
    /// Class-aware NMS over the candidates above `--conf`.
    Nms,
    /// The family picked its own (an end-to-end head: top-k, no NMS), best first.
    Ranked,
}

/// A detector family. Implement the required methods; the provided ones are the one runner
/// of every family.
pub trait Family: std::fmt::Debug + Send + Sync {
    /// `yolov8n`, `yolox-nano`, `yolo11n`, …: the size, read from the tensor shapes.
    fn variant(&self) -> &'static str;

    fn num_classes(&self) -> usize;

    fn input(&self) -> InputSpec;

    fn selection(&self) -> Selection {
        Selection::Nms
    }

    /// The network on candle's ops (every device and dtype): the reference's raw output
    /// for `xs` `[B, 3, H, W]`, H and W multiples of [`INPUT_MULTIPLE`].
    fn forward_candle(&self, xs: &Tensor) -> Result<Tensor>;

    /// A [`Family::forward_candle`] output reduced on its own device to what
    /// [`Family::candidates`] reads in [`OutputForm::Reduced`] (a GPU sends less back).
    fn reduce_on_device(&self, raw: &Tensor) -> Result<Tensor>;

    /// The executor's plan cache (one plan per input size, shared by clones).
    fn plan_cache(&self) -> &PlanCache;

    /// Plans the network from the executor's `input`; returns the activations
    /// [`Family::decode_executor`] reads.
    fn plan_network(&self, g: &mut Graph, input: Act) -> PlanResult<Vec<Act>>;

    /// The executor's outputs → `out` in [`OutputForm::Executor`].
    fn decode_executor(&self, ws: &Workspace, outputs: &[Act], out: &mut Vec<f32>);

    /// An [`OutputForm::Executor`] buffer of one image as the reference's tensor
    /// (`[1, …]`, [`Family::forward_candle`]'s layout).
    fn executor_as_reference(
        &self,
        out: Vec<f32>,
        anchors: usize,
        device: &Device,
    ) -> Result<Tensor>;

    /// One image's output (in `form`, for a `model_w × model_h` input) → candidates in
    /// model-input pixels: above `--conf`, of a reported class, at most `--max-det` for a
    /// [`Selection::Ranked`] family. `&mut self`: a family keeps its scratch.
    fn candidates(
        &mut self,
        output: &[f32],
        form: OutputForm,
        model_size: (usize, usize),
        post: &PostprocessConfig,
        out: &mut Vec<Candidate>,
    ) -> std::result::Result<(), String>;

    /// Anchor `n`'s score (of `anchors`) for the classes `wanted` (the highest of them), as
    /// the decode sees it, for `--explain`'s score maps.
    fn anchor_score(
        &self,
        output: &[f32],
        form: OutputForm,
        anchors: usize,
        n: usize,
        wanted: &dyn Fn(usize) -> bool,
    ) -> f32;

    // The runner, the same for every family.

    /// The executor's plan for an input of `height × width`.
    fn plan(&self, height: usize, width: usize) -> PlanResult<Prepared> {
        let mut g = Graph::new();
        g.set_arithmetic(self.plan_cache().arithmetic());
        let input = match self.input().executor {
            ExecutorInput::Image => g.input(3, height, width),
            ExecutorInput::SpaceToDepth => g.input(12, height / 2, width / 2),
        };
        let outputs = self.plan_network(&mut g, input)?;
        Ok(g.prepare(input, outputs))
    }

    /// The whole network on the CPU executor for one image `[3, height, width]` (f32 NCHW,
    /// as pre-processed, read in place), written into `out` in [`OutputForm::Executor`].
    /// `Ok(false)` when the executor cannot hold this network (or is busy): then use
    /// [`Family::forward_candle`].
    fn forward_cpu_image(
        &self,
        image: &[f32],
        height: usize,
        width: usize,
        out: &mut Vec<f32>,
    ) -> Result<bool> {
        let ran = with_executor(self, image, height, width, |p| {
            p.graph.run(&mut p.workspace);
            self.decode_executor(&p.workspace, &p.outputs, out);
        })?;
        Ok(ran.is_some())
    }

    /// One executor run on `image` timed op by op; `None` when the executor does not run
    /// this network.
    fn profile_cpu(
        &self,
        image: &[f32],
        height: usize,
        width: usize,
    ) -> Result<Option<Vec<OpTime>>> {
        with_executor(self, image, height, width, |p| {
            p.graph.run_timed(&mut p.workspace)
        })
    }

    /// The reference's raw output for `xs` `[B, 3, H, W]`: on the executor where it runs
    /// (one f32 image on the CPU), else on candle's ops.
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        check_input(self.variant(), xs)?;
        let mut out = Vec::new();
        let ran = with_cpu_image(xs, |image, height, width| {
            self.forward_cpu_image(image, height, width, &mut out)
        })?;
        if ran.transpose()? == Some(true) {
            let (_, _, height, width) = xs.dims4()?;
            return self.executor_as_reference(out, anchor_count(height, width), xs.device());
        }
        self.forward_candle(xs)
    }
}

/// Writes `image` into `family`'s plan input and calls `f` on the plan (`None`: the
/// executor does not run this network, or is busy).
fn with_executor<F: Family + ?Sized, R: Send>(
    family: &F,
    image: &[f32],
    height: usize,
    width: usize,
    f: impl FnOnce(&mut Prepared) -> R + Send,
) -> Result<Option<R>> {
    check_image(family.variant(), image, height, width)?;
    let executor = family.input().executor;
    Ok(family.plan_cache().with(
        (height, width),
        || family.plan(height, width),
        |p| {
            match executor {
                ExecutorInput::Image => graph::write_image(&mut p.workspace, &p.input, image),
                ExecutorInput::SpaceToDepth => {
                    graph::write_space_to_depth(&mut p.workspace, &p.input, image)
                }
            }
            f(p)
        },
    ))
}

/// Checks that `xs` is `[B, 3, H, W]` with sides non-zero multiples of 32.
pub fn check_input(variant: &str, xs: &Tensor) -> Result<()> {
    let (_, channels, height, width) = xs.dims4()?;
    if channels != 3 || !valid_side(height) || !valid_side(width) {
        candle_core::bail!(
            "{variant} input has shape {:?}, expected [B, 3, H, W] with H and W non-zero multiples of {INPUT_MULTIPLE}",
            xs.dims()
        );
    }
    Ok(())
}

/// Checks that `image` is `[3, height, width]` with sides non-zero multiples of 32.
pub fn check_image(variant: &str, image: &[f32], height: usize, width: usize) -> Result<()> {
    if image.len() != 3 * height * width || !valid_side(height) || !valid_side(width) {
        candle_core::bail!(
            "{variant} input of {} values for {height}x{width}; expected 3 x H x W with H and W non-zero multiples of {INPUT_MULTIPLE}",
            image.len()
        );
    }
    Ok(())
}

fn valid_side(side: usize) -> bool {
    side > 0 && side.is_multiple_of(INPUT_MULTIPLE)
}
