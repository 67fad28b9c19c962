//! YOLO26 (ultralytics `yolo26{n,s,m,l,x}.yaml`, any class count): YOLO11's network
//! ([`Body`], with YOLO26's SPPF and attention `C3k2`) and the end-to-end head.
//!
//! The head has two branches: one-to-many (`cv2`/`cv3`, for training) and one-to-one
//! (`one2one_cv2`/`one2one_cv3`), the one ultralytics predicts and exports with (a fused
//! model drops the other). Boxes have one bin per side (`reg_max` 1, no DFL): the raw
//! values are the distances from the anchor centre, decoded to x1, y1, x2, y2. Detections
//! are ultralytics' `Detect.postprocess` — a two-step top-k, **no NMS** ([`top_k`]).

use candle_core::{DType, Device, Result, Tensor};
use candle_nn::VarBuilder;

use super::cpu::blocked::{Layout, LANES};
use super::cpu::epilogue::exp_approx;
use super::cpu::graph::{self, Act, Graph, PlanCache, Workspace};
use super::cpu::isa::{isa_kernel, Isa};
use super::dfl::anchor_grid;
use super::family::{
    anchor_count, ExecutorInput, Family, InputSpec, OutputForm, PlanResult, Selection, STRIDES,
};
use super::postprocess::{self, Candidate, PostprocessConfig, Yolov8Layout};
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

    fn layout(form: OutputForm) -> Yolov8Layout {
        match form {
            // The device sends the whole output back (see `reduce_on_device`).
            OutputForm::Full | OutputForm::Reduced => Yolov8Layout::ClassRows,
            OutputForm::Executor => Yolov8Layout::AnchorRows,
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
        // In f32, as YOLOv8's decode (coordinates up to the input size).
        let (centres, strides) = anchor_grid(height, width, DType::F32, xs.device())?;
        let dist = raw.boxes.to_dtype(DType::F32)?;
        let x1y1 = centres.broadcast_sub(&dist.narrow(1, 0, 2)?)?;
        let x2y2 = centres.broadcast_add(&dist.narrow(1, 2, 2)?)?;
        let centre = ((&x1y1 + &x2y2)? / 2.0)?;
        let size = (x2y2 - x1y1)?;
        let boxes = Tensor::cat(&[centre, size], 1)?
            .broadcast_mul(&strides)?
            .to_dtype(xs.dtype())?;
        Tensor::cat(&[boxes, candle_nn::ops::sigmoid(&raw.scores)?], 1)
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
        let isa = Isa::detect();
        let columns = 4 + self.head.num_classes();
        graph::decode_levels(outputs, 2, columns, out, |level, y, anchor_rows| {
            let (boxes, box_layout) = ws.read(&outputs[2 * level]);
            let (classes, class_layout) = ws.read(&outputs[2 * level + 1]);
            let row = Row {
                boxes,
                box_layout,
                classes,
                class_layout,
                stride: STRIDES[level] as f32,
                y,
            };
            decode_row(isa, &row, anchor_rows);
        });
    }

    fn executor_as_reference(
        &self,
        out: Vec<f32>,
        anchors: usize,
        device: &Device,
    ) -> Result<Tensor> {
        let columns = 4 + self.head.num_classes();
        Tensor::from_vec(out, (1, anchors, columns), device)?
            .transpose(1, 2)?
            .contiguous()
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
        self.best.clear();
        self.best.extend((0..scores.anchors).map(|n| {
            let best = (0..scores.classes)
                .map(|c| scores.score(n, c))
                .fold(f32::NEG_INFINITY, f32::max);
            (best, n)
        }));
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

/// One grid row of one level: where its head outputs are.
struct Row<'a> {
    boxes: &'a [f32],
    box_layout: Layout,
    classes: &'a [f32],
    class_layout: Layout,
    stride: f32,
    y: usize,
}

isa_kernel! {
    /// For each anchor of one grid row: the four distances (lanes 0–3 of the box block)
    /// to cx, cy, w, h in input pixels, then the class sigmoids.
    fn decode_row(row: &Row, anchor_rows: &mut [f32]) {
        let (layout, cls, y) = (row.box_layout, row.class_layout, row.y);
        let columns = anchor_rows.len() / layout.width;
        for (x, out) in anchor_rows.chunks_exact_mut(columns).enumerate() {
            let at = layout.offset(0, y as isize, x as isize);
            let d = &row.boxes[at..at + 4];
            let (ax, ay) = (x as f32 + 0.5, y as f32 + 0.5);
            let (x1, y1, x2, y2) = (ax - d[0], ay - d[1], ax + d[2], ay + d[3]);
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

#[cfg(test)]
mod tests;
