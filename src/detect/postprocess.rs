//! Network output → detections: decode, confidence threshold, class-aware NMS.
//!
//! One pass over the output copied to the host once; never a tensor index per anchor.
//! Thresholds follow each reference: YOLOv8 keeps `score > conf` (ultralytics), YOLOX
//! `score >= conf` with score = objectness · best class probability (Megvii). The best
//! class is chosen over all classes before the class filter applies, as ultralytics'
//! `classes=` does.

use crate::types::BoxXyxy;

/// A box that passed the confidence threshold, in model-input pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    pub class_id: usize,
    pub score: f32,
    pub box_in_model: BoxXyxy,
}

/// The knobs of post-processing, validated by the caller.
#[derive(Debug, Clone)]
pub struct PostprocessConfig {
    pub conf: f32,
    pub iou: f32,
    pub max_detections: usize,
    /// One flag per class id: is the class reported?
    pub class_mask: Vec<bool>,
}

/// Ultralytics keeps at most this many boxes, the highest scoring, before NMS.
const MAX_BOXES_INTO_NMS: usize = 30_000;

/// How a YOLOv8 output is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Yolov8Layout {
    /// `[4 + nc, N]`: cx, cy, w, h rows, then one row per class (ultralytics; candle's ops).
    #[default]
    ClassRows,
    /// `[N, 4 + nc]`: one row per anchor (the CPU executor, which writes whole vectors).
    AnchorRows,
    /// `[6, N]`: cx, cy, w, h, best score, best class: the class rows already reduced where
    /// the network ran ([`reduce_yolov8_on_device`]), so a GPU sends back 6 rows, not 4 + nc.
    BestClassRows,
}

/// A YOLOv8 output `[1, 4 + nc, N]` → `[1, 6, N]` (boxes, best score, best class id) on the
/// tensor's own device: the score reduction runs on the GPU and 6/(4 + nc) of the output
/// crosses back to the host. Ties between classes may pick another of the equal-scoring
/// classes than the host scan's first.
pub fn reduce_yolov8_on_device(
    raw: &candle_core::Tensor,
) -> candle_core::Result<candle_core::Tensor> {
    let (_, rows, _) = raw.dims3()?;
    let boxes = raw.narrow(1, 0, 4)?;
    let scores = raw.narrow(1, 4, rows - 4)?;
    let best = scores.max_keepdim(1)?;
    let class = scores
        .argmax_keepdim(1)?
        .to_dtype(candle_core::DType::F32)?;
    candle_core::Tensor::cat(
        &[
            &boxes.to_dtype(candle_core::DType::F32)?,
            &best.to_dtype(candle_core::DType::F32)?,
            &class,
        ],
        1,
    )
}

/// An `AnchorRows` output of one image (`[N, columns]`, the executor's) as the
/// reference's `ClassRows` tensor `[1, columns, N]` on `device`.
pub fn class_rows_from_anchor_rows(
    anchor_rows: Vec<f32>,
    anchors: usize,
    columns: usize,
    device: &candle_core::Device,
) -> candle_core::Result<candle_core::Tensor> {
    candle_core::Tensor::from_vec(anchor_rows, (1, anchors, columns), device)?
        .transpose(1, 2)?
        .contiguous()
}

/// YOLOv8 output (either [`Yolov8Layout`]) → candidates: the best class of each anchor,
/// kept when its score is `> conf` and the class is reported.
pub fn yolov8_candidates(
    output: &[f32],
    num_anchors: usize,
    layout: Yolov8Layout,
    cfg: &PostprocessConfig,
    best: &mut BestClass,
    out: &mut Vec<Candidate>,
) {
    let columns = output.len() / num_anchors;
    out.clear();
    if layout == Yolov8Layout::BestClassRows {
        let row = |r: usize| &output[r * num_anchors..(r + 1) * num_anchors];
        for (n, (&score, &class)) in row(4).iter().zip(row(5)).enumerate() {
            let class_id = class as usize;
            if score > cfg.conf && cfg.class_mask.get(class_id).copied().unwrap_or(false) {
                let at = |r: usize| output[r * num_anchors + n];
                out.push(Candidate {
                    class_id,
                    score,
                    box_in_model: BoxXyxy::from_center(at(0), at(1), at(2), at(3)),
                });
            }
        }
        return;
    }
    best.scan(output, num_anchors, layout);
    for n in 0..num_anchors {
        let (class_id, score) = (best.class[n], best.score[n]);
        if score > cfg.conf && cfg.class_mask.get(class_id).copied().unwrap_or(false) {
            let at = |r: usize| match layout {
                Yolov8Layout::AnchorRows => output[n * columns + r],
                _ => output[r * num_anchors + n],
            };
            out.push(Candidate {
                class_id,
                score,
                box_in_model: BoxXyxy::from_center(at(0), at(1), at(2), at(3)),
            });
        }
    }
}

/// Anchor `n`'s highest score over the classes `wanted` in a YOLOv8-style output (any
/// [`Yolov8Layout`]; for `BestClassRows` the best class counts when it is wanted), 0 when
/// none is.
pub fn yolov8_anchor_score(
    output: &[f32],
    num_anchors: usize,
    layout: Yolov8Layout,
    n: usize,
    wanted: &dyn Fn(usize) -> bool,
) -> f32 {
    let columns = output.len() / num_anchors;
    let best = |values: &mut dyn Iterator<Item = (usize, f32)>| {
        values
            .filter(|&(c, _)| wanted(c))
            .map(|(_, v)| v)
            .fold(0f32, f32::max)
    };
    match layout {
        Yolov8Layout::ClassRows => {
            best(&mut (0..columns - 4).map(|c| (c, output[(4 + c) * num_anchors + n])))
        }
        Yolov8Layout::AnchorRows => {
            let row = &output[n * columns..(n + 1) * columns];
            best(&mut row[4..].iter().copied().enumerate())
        }
        Yolov8Layout::BestClassRows => {
            let class = output[5 * num_anchors + n] as usize;
            best(&mut std::iter::once((class, output[4 * num_anchors + n])))
        }
    }
}

/// Per-anchor best class, kept between frames so that it is not reallocated.
#[derive(Debug, Default, Clone)]
pub struct BestClass {
    class: Vec<usize>,
    score: Vec<f32>,
}

impl BestClass {
    /// Each anchor's best class and score of a `ClassRows` or `AnchorRows` output (the
    /// first maximum wins; NaN never does).
    ///
    /// # Panics
    /// On `BestClassRows`: that output holds them already.
    pub fn scan(&mut self, output: &[f32], num_anchors: usize, layout: Yolov8Layout) {
        let columns = output.len() / num_anchors;
        self.reset(num_anchors);
        match layout {
            Yolov8Layout::ClassRows => {
                // Row by row so that the scan over classes reads memory contiguously.
                for c in 0..columns - 4 {
                    let row = &output[(4 + c) * num_anchors..(5 + c) * num_anchors];
                    self.update(c, row);
                }
            }
            Yolov8Layout::AnchorRows => {
                for (n, row) in output.chunks_exact(columns).enumerate() {
                    self.update_anchor(n, &row[4..]);
                }
            }
            Yolov8Layout::BestClassRows => panic!("a best-class output has no classes to scan"),
        }
    }

    /// The best score of each anchor of the last [`Self::scan`] (−∞ when all are NaN).
    pub fn scores(&self) -> &[f32] {
        &self.score
    }

    fn reset(&mut self, n: usize) {
        self.class.clear();
        self.class.resize(n, 0);
        self.score.clear();
        self.score.resize(n, f32::NEG_INFINITY);
    }

    /// Anchor `n`'s scores in class order; the first maximum wins, as in [`Self::update`].
    fn update_anchor(&mut self, n: usize, scores: &[f32]) {
        for (c, &v) in scores.iter().enumerate() {
            if v > self.score[n] {
                self.score[n] = v;
                self.class[n] = c;
            }
        }
    }

    fn update(&mut self, class_id: usize, row: &[f32]) {
        for ((best_class, best_score), &v) in self.class.iter_mut().zip(&mut self.score).zip(row) {
            if v > *best_score {
                *best_score = v;
                *best_class = class_id;
            }
        }
    }
}

/// How many of a network output's values are NaN or infinite. A broken checkpoint (NaN
/// weights) or an f16 overflow gives such outputs, whose scores never pass `--conf`: the
/// detector counts them when a frame has no candidates, so that "all NaN" is reported as
/// such instead of as "no detections" (issue 12).
pub fn count_non_finite(output: &[f32]) -> usize {
    output.iter().filter(|v| !v.is_finite()).count()
}

/// Class-aware greedy NMS (torchvision semantics: IoU > `iou` suppresses), highest score
/// first, at most `max_detections` kept. Sorts `candidates` in place by score.
pub fn nms(candidates: &mut Vec<Candidate>, iou: f32, max_detections: usize) {
    candidates.sort_by(|a, b| b.score.total_cmp(&a.score));
    candidates.truncate(MAX_BOXES_INTO_NMS);
    let mut kept: Vec<Candidate> = Vec::with_capacity(candidates.len().min(max_detections));
    for c in candidates.iter() {
        if kept.len() == max_detections {
            break;
        }
        let suppressed = kept
            .iter()
            .any(|k| k.class_id == c.class_id && k.box_in_model.iou(&c.box_in_model) > iou);
        if !suppressed {
            kept.push(*c);
        }
    }
    *candidates = kept;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_finite_values_are_counted() {
        assert_eq!(count_non_finite(&[0.5, f32::NAN, f32::INFINITY, -1.0]), 2);
        assert_eq!(count_non_finite(&[]), 0);
    }

    fn cfg(conf: f32, classes: usize) -> PostprocessConfig {
        PostprocessConfig {
            conf,
            iou: 0.45,
            max_detections: 300,
            class_mask: vec![true; classes],
        }
    }

    #[test]
    fn nms_suppresses_overlaps_within_a_class_only() {
        let b = |x: f32| BoxXyxy::new(x, 0.0, x + 10.0, 10.0);
        let mut c = vec![
            Candidate {
                class_id: 0,
                score: 0.8,
                box_in_model: b(1.0),
            },
            Candidate {
                class_id: 0,
                score: 0.9,
                box_in_model: b(0.0),
            },
            Candidate {
                class_id: 1,
                score: 0.7,
                box_in_model: b(0.0),
            },
            Candidate {
                class_id: 0,
                score: 0.6,
                box_in_model: b(50.0),
            },
        ];
        nms(&mut c, 0.45, 300);
        let got: Vec<(usize, f32)> = c.iter().map(|c| (c.class_id, c.score)).collect();
        assert_eq!(got, vec![(0, 0.9), (1, 0.7), (0, 0.6)]);
    }

    #[test]
    fn nms_keeps_at_most_max_detections() {
        let mut c: Vec<Candidate> = (0..10)
            .map(|i| Candidate {
                class_id: 0,
                score: i as f32 / 10.0,
                box_in_model: BoxXyxy::new(i as f32 * 20.0, 0.0, i as f32 * 20.0 + 10.0, 10.0),
            })
            .collect();
        nms(&mut c, 0.45, 3);
        assert_eq!(c.len(), 3);
        assert_eq!(c[0].score, 0.9);
    }

    #[test]
    fn yolov8_picks_the_best_class_then_filters_and_thresholds() {
        // 3 anchors, 2 classes: [cx, cy, w, h, s0, s1] rows.
        #[rustfmt::skip]
        let out = [
            10.0, 20.0, 30.0,   // cx
            10.0, 20.0, 30.0,   // cy
            4.0, 4.0, 4.0,      // w
            2.0, 2.0, 2.0,      // h
            0.9, 0.1, 0.25,     // class 0
            0.3, 0.8, 0.2,      // class 1
        ];
        // The same values anchor by anchor, as the CPU executor writes them.
        let transposed: Vec<f32> = (0..3)
            .flat_map(|n| (0..6).map(move |r| (r, n)))
            .map(|(r, n)| out[r * 3 + n])
            .collect();
        // Reduced where the network runs (the test device: a GPU under scripts/gpu-check).
        let dev = crate::detect::device::test_device();
        let raw = candle_core::Tensor::from_slice(&out, (1, 6, 3), &dev).unwrap();
        let reduced: Vec<f32> = reduce_yolov8_on_device(&raw)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(&reduced[12..], &[0.9, 0.8, 0.25, 0.0, 1.0, 0.0]);
        let mut best = BestClass::default();
        for (output, layout) in [
            (&out[..], Yolov8Layout::ClassRows),
            (&transposed[..], Yolov8Layout::AnchorRows),
            (&reduced[..], Yolov8Layout::BestClassRows),
        ] {
            let mut got = vec![];
            yolov8_candidates(output, 3, layout, &cfg(0.25, 2), &mut best, &mut got);
            // Anchor 2's best score is exactly the threshold: ultralytics keeps only `> conf`.
            assert_eq!(got.len(), 2, "{layout:?}");
            assert_eq!(
                (got[0].class_id, got[0].box_in_model),
                (0, BoxXyxy::new(8.0, 9.0, 12.0, 11.0))
            );
            assert_eq!(got[1].class_id, 1);
            // Filtering out class 0 drops anchor 0 entirely (its best class is 0), as
            // ultralytics.
            let mut only1 = cfg(0.25, 2);
            only1.class_mask = vec![false, true];
            yolov8_candidates(output, 3, layout, &only1, &mut best, &mut got);
            assert_eq!(got.iter().map(|c| c.class_id).collect::<Vec<_>>(), vec![1]);
        }
    }
}
