//! YOLO26 (ultralytics `yolo26{n,s,m,l,x}.yaml`, any class count): YOLO11's network
//! ([`Body`], with YOLO26's SPPF and attention `C3k2`) and the end-to-end head.
//!
//! The head has two branches: one-to-many (`cv2`/`cv3`, for training) and one-to-one
//! (`one2one_cv2`/`one2one_cv3`), the one ultralytics predicts and exports with (a fused
//! model drops the other). Boxes have one bin per side (`reg_max` 1, no DFL): the raw
//! values are the distances from the anchor centre, decoded to x1, y1, x2, y2. Detections
//! are ultralytics' `Detect.postprocess` — a two-step top-k, **no NMS** ([`top_k`]).

use candle_core::{Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::cpu::graph::{Act, Graph, PlanCache, Workspace};
use super::dfl::{decode_anchor_rows, decode_candle};
use super::family::{
    anchor_count, ExecutorInput, Family, InputSpec, OutputForm, PlanResult, Selection,
};
use super::postprocess::{self, BestClass, Candidate, PostprocessConfig, Yolov8Layout};
use super::preprocess::InputLayout;
use super::yolo11::head::Branches;
use super::yolo11::{Body, SppfKind};
use crate::types::BoxXyxy;

const VARIANTS: [&str; 6] = [
    "yolo26n",
    "yolo26s",
    "yolo26m",
    "yolo26l",
    "yolo26x",
    "yolo26-custom",
];

/// YOLO26 detection model. Output (`forward_candle`): `[B, 4 + nc, N]`, rows cx, cy, w, h
/// in input pixels, then sigmoid class scores (ultralytics' one-to-one decode, as YOLOv8's
/// layout, before its top-k).
#[derive(Debug, Clone)]
pub struct Yolo26 {
    body: Body,
    head: Branches,
    cpu: PlanCache,
    top: TopK,
}

impl Yolo26 {
    /// Loads from ultralytics-named, BN-folded weights; only the one-to-one head is read.
    pub fn load(vb: VarBuilder) -> Result<Self> {
        let body = Body::load(&vb, SppfKind::Yolo26)?;
        let vb_head = vb.pp("model.23");
        let head = Branches::load(&vb_head, "one2one_cv2", "one2one_cv3", body.out_channels())?;
        if head.box_channels() != 4 {
            candle_core::bail!(
                "tensor `model.23.one2one_cv2.0.2.weight` has {} output channels, expected 4 (YOLO26 boxes have one bin per side)",
                head.box_channels()
            );
        }
        Ok(Self {
            body,
            head,
            cpu: PlanCache::default(),
            top: TopK::default(),
        })
    }

    /// Its layout in `form`: the device sends the whole output back (see
    /// `reduce_on_device`), so `Reduced` is as `Full`.
    fn layout(form: OutputForm) -> Yolov8Layout {
        match form {
            OutputForm::Reduced => Yolov8Layout::ClassRows,
            other => other.into(),
        }
    }
}

impl Family for Yolo26 {
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

    fn selection(&self) -> Selection {
        Selection::Ranked
    }

    fn forward_candle(&self, xs: &Tensor) -> Result<Tensor> {
        super::family::check_input("YOLO26", xs)?;
        let (_, _, height, width) = xs.dims4()?;
        let raw = self.head.forward_raw(&self.body.forward(xs)?)?;
        decode_candle(None, &raw.boxes, &raw.scores, height, width)
    }

    /// Unreduced: the top-k needs every class score of the best anchors (one anchor may
    /// be kept with two classes), so the whole output comes back (2.7 MB at 640).
    fn reduce_on_device(&self, raw: &Tensor) -> Result<Tensor> {
        Ok(raw.clone())
    }

    fn plan_cache(&self) -> &PlanCache {
        &self.cpu
    }

    fn plan_network(&self, g: &mut Graph, input: Act) -> PlanResult<Vec<Act>> {
        let levels = self.body.plan(g, input)?;
        self.head.plan(g, levels)
    }

    /// Anchor rows `[N, 4 + nc]` (cx, cy, w, h, class scores), one grid row of one level
    /// per parallel item.
    fn decode_executor(&self, ws: &Workspace, outputs: &[Act], out: &mut Vec<f32>) {
        decode_anchor_rows(ws, outputs, self.head.num_classes(), None, out);
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
        let anchors = anchor_count(h, w);
        let scores = Scores {
            output,
            anchors,
            classes: self.head.num_classes(),
            layout: Self::layout(form),
        };
        if output.len() != anchors * (4 + scores.classes) {
            return Err(format!(
                "{} values for {anchors} anchors of {} classes",
                output.len(),
                scores.classes
            ));
        }
        self.top.select(&scores, post.max_detections);
        out.clear();
        for &(score, anchor, class_id) in &self.top.picked {
            // ultralytics' end-to-end filter: `score > conf`, then the classes.
            if score > post.conf && post.class_mask.get(class_id).copied().unwrap_or(false) {
                let b = scores.boxes(anchor);
                out.push(Candidate {
                    class_id,
                    score,
                    box_in_model: BoxXyxy::from_center(b[0], b[1], b[2], b[3]),
                });
            }
        }
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
        postprocess::yolov8_anchor_score(output, anchors, Self::layout(form), n, wanted)
    }
}

/// One image's output, either layout.
struct Scores<'a> {
    output: &'a [f32],
    anchors: usize,
    classes: usize,
    layout: Yolov8Layout,
}

impl Scores<'_> {
    fn score(&self, anchor: usize, class: usize) -> f32 {
        match self.layout {
            Yolov8Layout::AnchorRows => self.output[anchor * (4 + self.classes) + 4 + class],
            _ => self.output[(4 + class) * self.anchors + anchor],
        }
    }

    fn boxes(&self, anchor: usize) -> [f32; 4] {
        std::array::from_fn(|r| match self.layout {
            Yolov8Layout::AnchorRows => self.output[anchor * (4 + self.classes) + r],
            _ => self.output[r * self.anchors + anchor],
        })
    }
}

/// ultralytics `Detect.get_topk_index` (non-agnostic): the k = min(max_det, anchors)
/// anchors with the highest best-class score, then the k highest (anchor, class) scores
/// among those anchors. Exact ties go to the lower index in both steps (torch promises no
/// order among equal values; this one is deterministic). Buffers are kept between frames.
#[derive(Debug, Clone, Default)]
pub struct TopK {
    best_class: BestClass,
    /// (best-class score, anchor) of every anchor, then the k best.
    best: Vec<(f32, usize)>,
    /// (score, flat index into the k anchors × classes).
    pairs: Vec<(f32, usize)>,
    /// The result: (score, anchor, class), best first.
    pub picked: Vec<(f32, usize, usize)>,
}

/// Descending by score (NaN last), ascending by index among equal scores.
fn ranked(a: &(f32, usize), b: &(f32, usize)) -> std::cmp::Ordering {
    let key = |v: f32| if v.is_nan() { f32::NEG_INFINITY } else { v };
    key(b.0).total_cmp(&key(a.0)).then(a.1.cmp(&b.1))
}

/// Keeps the `k` first of `items` in [`ranked`] order, sorted.
fn keep_top(items: &mut Vec<(f32, usize)>, k: usize) {
    if k < items.len() {
        items.select_nth_unstable_by(k, ranked);
        items.truncate(k);
    }
    items.sort_unstable_by(ranked);
}

impl TopK {
    fn select(&mut self, scores: &Scores, max_det: usize) {
        let k = max_det.min(scores.anchors);
        self.best_class
            .scan(scores.output, scores.anchors, scores.layout);
        self.best.clear();
        self.best
            .extend(self.best_class.scores().iter().copied().zip(0..));
        keep_top(&mut self.best, k);
        self.pairs.clear();
        for (slot, &(_, anchor)) in self.best.iter().enumerate() {
            for c in 0..scores.classes {
                self.pairs
                    .push((scores.score(anchor, c), slot * scores.classes + c));
            }
        }
        keep_top(&mut self.pairs, k);
        self.picked.clear();
        self.picked.extend(self.pairs.iter().map(|&(score, flat)| {
            let anchor = self.best[flat / scores.classes].1;
            (score, anchor, flat % scores.classes)
        }));
    }
}

#[cfg(test)]
mod tests;
