//! The DFL box decode of ultralytics' anchor-free heads (YOLOv8, YOLO11): four distances,
//! each the expectation of a softmax over `reg_max` bins, from the anchor centre to the box
//! sides, then sigmoid class scores. On candle's ops ([`Dfl::decode_candle`]) and on the
//! CPU executor's head outputs ([`Dfl::decode_executor`]).

use candle_core::{DType, Device, Result, Tensor, D};
use candle_nn::VarBuilder;

use super::cpu::blocked::{Layout, LANES};
use super::cpu::epilogue::exp_approx;
use super::cpu::graph::{self, Act, PlanError, Workspace};
use super::cpu::isa::{isa_kernel, Isa};
use super::family::STRIDES;
use super::layers::{full_name, get_with_rank};

/// ultralytics `DFL`: `dfl.conv.weight` `[1, reg_max, 1, 1]`, the value of each distance
/// bin (0..reg_max in every released model, but read rather than assumed).
#[derive(Debug, Clone)]
pub struct Dfl {
    bins: Tensor,
    /// The same bins as floats, for the executor's decode.
    bin_values: Vec<f32>,
}

impl Dfl {
    /// Reads `{vb}.dfl.conv.weight`.
    pub fn load(vb: &VarBuilder) -> Result<Self> {
        let dfl = vb.pp("dfl").pp("conv");
        let weight = get_with_rank(&dfl, "weight", 4)?;
        match weight.dims4()? {
            (1, bins, 1, 1) if bins > 0 => {}
            _ => candle_core::bail!(
                "tensor `{}` has shape {:?}, expected [1, reg_max, 1, 1]",
                full_name(&dfl, "weight"),
                weight.dims()
            ),
        };
        Ok(Self {
            bin_values: weight.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?,
            bins: weight.flatten_all()?,
        })
    }

    pub fn reg_max(&self) -> usize {
        self.bin_values.len()
    }

    /// Each of the four distances as the expectation of its softmax over the bins.
    /// `[B, 4 · reg_max, N]` → `[B, 4, N]` in grid units.
    pub fn expected_distances(&self, box_dist: &Tensor) -> Result<Tensor> {
        let (b, _, n) = box_dist.dims3()?;
        let reg_max = self.reg_max();
        // Bins last, so the fused softmax kernel applies.
        let logits = box_dist
            .reshape((b, 4, reg_max, n))?
            .transpose(2, 3)?
            .contiguous()?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        let bins = self
            .bins
            .to_dtype(probs.dtype())?
            .reshape((1, 1, 1, reg_max))?;
        probs.broadcast_mul(&bins)?.sum(D::Minus1)
    }

    /// The executor's decode reads one block of bins per side.
    pub fn check_plannable(&self) -> std::result::Result<(), PlanError> {
        if self.reg_max() != LANES {
            return Err(PlanError::Unsupported(format!(
                "DFL with {} bins (the decode reads one block of {LANES})",
                self.reg_max()
            )));
        }
        Ok(())
    }

    /// The executor's head outputs (per level: DFL logits, class logits) → `out`
    /// `[N, 4 + nc]`: [`decode_candle`]'s values anchor by anchor; see
    /// [`decode_anchor_rows`].
    pub fn decode_executor(
        &self,
        ws: &Workspace,
        outputs: &[Act],
        num_classes: usize,
        out: &mut Vec<f32>,
    ) {
        let bins: &[f32; LANES] = self.bin_values[..]
            .try_into()
            .expect("planned only with LANES bins");
        decode_anchor_rows(ws, outputs, num_classes, Some(bins), out);
    }
}

/// Raw anchor-free head outputs (`boxes` `[B, 4 · reg_max, N]`, `cls_logits` `[B, nc, N]`)
/// of an input `height × width` → ultralytics' inference tensor `[B, 4 + nc, N]`: cx, cy,
/// w, h in input pixels, then sigmoid class scores. The distances are `dfl`'s expectation
/// over the bins, or with `None` (`reg_max` 1, YOLO26) the box output itself. Boxes are
/// decoded in f32 whatever the network's dtype: in f16 the DFL softmax and the anchor
/// arithmetic (coordinates up to 640) alone cost ~1 px, against ~0.07 px from the f16
/// network itself.
pub fn decode_candle(
    dfl: Option<&Dfl>,
    boxes: &Tensor,
    cls_logits: &Tensor,
    height: usize,
    width: usize,
) -> Result<Tensor> {
    let (centres, strides) = anchor_grid(height, width, DType::F32, boxes.device())?;
    let boxes_f32 = boxes.to_dtype(DType::F32)?;
    let distances = match dfl {
        Some(dfl) => dfl.expected_distances(&boxes_f32)?,
        None => boxes_f32,
    };
    let box_in_model = dist_to_cxcywh(&distances, &centres)?
        .broadcast_mul(&strides)?
        .to_dtype(boxes.dtype())?;
    let scores = candle_nn::ops::sigmoid(cls_logits)?;
    Tensor::cat(&[box_in_model, scores], 1)
}

/// The executor's anchor-free head outputs (per level: box output, class logits) → `out`
/// `[N, 4 + nc]` anchor by anchor (`Yolov8Layout::AnchorRows`: cx, cy, w, h in input
/// pixels, then sigmoid class scores), so each pixel's 16 class scores are one contiguous
/// store. The box output is DFL logits, 16 bins per side (`bins` their values), or with
/// `None` the four distances themselves (`reg_max` 1: ultralytics' DFL is the identity
/// then, YOLO26). One grid row of one level per parallel item.
pub fn decode_anchor_rows(
    ws: &Workspace,
    outputs: &[Act],
    num_classes: usize,
    bins: Option<&[f32; LANES]>,
    out: &mut Vec<f32>,
) {
    let isa = Isa::detect();
    graph::decode_levels(outputs, 2, 4 + num_classes, out, |level, y, anchor_rows| {
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
    });
}

/// One block folded by halving (8 with 8, 4 with 4, …): four dependent vector steps
/// where a fold from the left is sixteen scalar ones.
#[inline(always)]
fn reduce_lanes(mut v: [f32; LANES], op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut half = LANES / 2;
    while half > 0 {
        for i in 0..half {
            v[i] = op(v[i], v[i + half]);
        }
        half /= 2;
    }
    v[0]
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
    /// For each anchor of one grid row: the four distances (DFL: the softmax expectation
    /// over 16 bins, one block per side; without bins lanes 0–3 of the box block) +
    /// `dist2bbox` (cx, cy, w, h in input pixels), then the class sigmoids.
    fn decode_row(row: &DecodeRow, bins: Option<&[f32; LANES]>, anchor_rows: &mut [f32]) {
        let (layout, cls, y) = (row.box_layout, row.class_layout, row.y);
        let columns = anchor_rows.len() / layout.width;
        for (x, out) in anchor_rows.chunks_exact_mut(columns).enumerate() {
            let mut dist = [0.0f32; 4];
            if let Some(bins) = bins {
                for (side, d) in dist.iter_mut().enumerate() {
                    let at = layout.offset(side, y as isize, x as isize);
                    let logits: &[f32; LANES] = row.boxes[at..at + LANES].try_into().expect("a block");
                    let max = reduce_lanes(*logits, |a, b| if a > b { a } else { b });
                    let (mut e, mut weighted) = ([0.0f32; LANES], [0.0f32; LANES]);
                    for (((e, w), &v), &b) in e.iter_mut().zip(&mut weighted).zip(logits).zip(bins) {
                        *e = exp_approx(v - max);
                        *w = *e * b;
                    }
                    *d = reduce_lanes(weighted, |a, b| a + b) / reduce_lanes(e, |a, b| a + b);
                }
            } else {
                let at = layout.offset(0, y as isize, x as isize);
                dist.copy_from_slice(&row.boxes[at..at + 4]);
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

/// Anchor centres in grid units (`[1, 2, N]`, `(i + 0.5, j + 0.5)`) and the stride of each
/// anchor (`[1, 1, N]`), for an input of `height` × `width`, levels in [`STRIDES`] order,
/// row-major within a level (ultralytics `make_anchors` with offset 0.5).
pub fn anchor_grid(
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
pub fn dist_to_cxcywh(distances: &Tensor, centres: &Tensor) -> Result<Tensor> {
    let left_top = distances.narrow(1, 0, 2)?;
    let right_bottom = distances.narrow(1, 2, 2)?;
    let x1y1 = centres.broadcast_sub(&left_top)?;
    let x2y2 = centres.broadcast_add(&right_bottom)?;
    let centre = ((&x1y1 + &x2y2)? / 2.0)?;
    let size = (x2y2 - x1y1)?;
    Tensor::cat(&[centre, size], 1)
}
