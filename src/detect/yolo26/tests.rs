use std::collections::HashMap;

use candle_core::{DType, Device};

use super::*;
use crate::detect::cpu::isa::Isa;
use crate::detect::weights::Weights;
use crate::detect::yolo11::tests::{
    box_and_score_errors, executor_output, load_tensors, max_abs_diff, parity_input,
};
use crate::fixtures;

pub(crate) const WEIGHTS: &str = "models/yolo26n-random.ultralytics.safetensors";
const PT: &str = "models/yolo26n-random.pt";
const PARITY: &str = "parity/yolo26n-parity.safetensors";
const LAYERS: &str = "parity/yolo26n-parity-layers.safetensors";

fn model(relative: &str) -> Option<Yolo26> {
    let path = fixtures::require(relative)?;
    let w = Weights::read(&path).unwrap();
    Some(
        Yolo26::load(VarBuilder::from_tensors(
            w.tensors,
            DType::F32,
            &Device::Cpu,
        ))
        .unwrap(),
    )
}

fn all_classes(max_detections: usize) -> PostprocessConfig {
    PostprocessConfig {
        conf: f32::NEG_INFINITY,
        iou: 0.7,
        max_detections,
        class_mask: vec![true; 80],
    }
}

/// Raw output within 1e-3 px (boxes) and 1e-5 (scores) of ultralytics' one-to-one decode,
/// on candle's ops and on the executor (every ISA this CPU runs).
#[test]
fn matches_ultralytics_on_candle_and_the_executor() {
    let (Some(model), Some(input), Some(parity)) =
        (model(WEIGHTS), parity_input(), load_tensors(PARITY))
    else {
        return;
    };
    assert_eq!(model.variant(), "yolo26n");
    assert_eq!(model.num_classes(), 80);
    let want = &parity["output.0"];
    let candle = model.forward_candle(&input).unwrap();
    let (boxes, scores) = box_and_score_errors(&candle, want);
    eprintln!("yolo26n candle vs ultralytics: boxes {boxes:.2e} px, scores {scores:.2e}");
    assert!(boxes <= 1e-3 && scores <= 1e-5, "{boxes} {scores}");
    for isa in Isa::all_supported() {
        let got = executor_output(&model, &input, isa);
        let (boxes, scores) = box_and_score_errors(&got, want);
        eprintln!(
            "yolo26n executor {isa:?} vs ultralytics: boxes {boxes:.2e} px, scores {scores:.2e}"
        );
        assert!(boxes <= 1e-3 && scores <= 1e-5, "{isa:?}: {boxes} {scores}");
    }
}

/// The top-300 equals ultralytics' end-to-end result `output.e2e` [1, 300, 6]: the same
/// boxes (1e-3 px), scores (1e-5) and classes in the same order, from candle's and the
/// executor's output. Two rows whose reference scores differ by less than the score
/// tolerance may come in either order (float noise decides a near-tie; exact ties are
/// `top_k_breaks_ties_by_index…`'s).
#[test]
fn top_k_equals_ultralytics_end_to_end_result() {
    let (Some(mut model), Some(input), Some(parity)) =
        (model(WEIGHTS), parity_input(), load_tensors(PARITY))
    else {
        return;
    };
    let e2e: Vec<Vec<f32>> = parity["output.e2e"].get(0).unwrap().to_vec2().unwrap();
    assert_eq!(e2e.len(), 300);
    let (_, _, h, w) = input.dims4().unwrap();
    let image: Vec<f32> = input.flatten_all().unwrap().to_vec1().unwrap();
    let mut executor = Vec::new();
    assert!(model
        .forward_cpu_image(&image, h, w, &mut executor)
        .unwrap());
    let candle: Vec<f32> = model
        .forward_candle(&input)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    for (name, form, flat) in [
        ("candle", OutputForm::Full, candle),
        ("executor", OutputForm::Executor, executor),
    ] {
        let mut got = Vec::new();
        model
            .candidates(&flat, form, (w, h), &all_classes(300), &mut got)
            .unwrap();
        assert_eq!(got.len(), 300, "{name}");
        let close = |c: &Candidate, row: &[f32]| {
            let b = c.box_in_model;
            let box_err = [b.x1 - row[0], b.y1 - row[1], b.x2 - row[2], b.y2 - row[3]]
                .iter()
                .fold(0f32, |m, d| m.max(d.abs()));
            (c.class_id == row[5] as usize && box_err <= 1e-3 && (c.score - row[4]).abs() <= 1e-5)
                .then_some(box_err)
        };
        let (mut worst, mut swapped) = (0f32, 0);
        for (i, c) in got.iter().enumerate() {
            let err = close(c, &e2e[i]).or_else(|| {
                swapped += 1;
                (i.saturating_sub(3)..(i + 4).min(300))
                    .filter(|&j| (e2e[j][4] - e2e[i][4]).abs() <= 1e-5)
                    .find_map(|j| close(c, &e2e[j]))
            });
            let err = err.unwrap_or_else(|| panic!("{name} row {i}: {c:?} vs {:?}", e2e[i]));
            worst = worst.max(err);
        }
        eprintln!(
            "yolo26n top-300 ({name}) = output.e2e: boxes within {worst:.2e} px, {swapped} rows of near-equal scores (< 1e-5 apart) in swapped order"
        );
    }
}

/// Ties: equal scores keep the lower anchor, then the lower class; one anchor may come
/// with two classes; k never exceeds the anchors.
#[test]
fn top_k_breaks_ties_by_index_and_keeps_two_classes_of_one_anchor() {
    // 3 anchors × 2 classes, class rows: anchor 1 best (0.9 and 0.8), anchors 0 and 2 tie.
    let anchors = 3;
    let mut output = vec![0f32; (4 + 2) * anchors];
    let scores = [[0.5, 0.1], [0.9, 0.8], [0.5, 0.2]];
    for (n, s) in scores.iter().enumerate() {
        output[4 * anchors + n] = s[0];
        output[5 * anchors + n] = s[1];
    }
    let view = Scores {
        output: &output,
        anchors,
        classes: 2,
        layout: Yolov8Layout::ClassRows,
    };
    let mut top = TopK::default();
    top.select(&view, 2);
    // The two best anchors are 1 and 0 (0 beats 2 on the tie); among their four scores the
    // best two are both anchor 1's.
    assert_eq!(top.picked, vec![(0.9, 1, 0), (0.8, 1, 1)]);
    top.select(&view, 100);
    assert_eq!(
        top.picked,
        vec![(0.9, 1, 0), (0.8, 1, 1), (0.5, 0, 0)],
        "k = min(max_det, anchors)"
    );
}

#[test]
fn intermediate_layers_match_ultralytics() {
    let (Some(model), Some(input), Some(layers)) =
        (model(WEIGHTS), parity_input(), load_tensors(LAYERS))
    else {
        return;
    };
    for (name, got) in model.body.layer_outputs(&input).unwrap() {
        let err = max_abs_diff(&got, &layers[name]);
        eprintln!("{name}: max |Δ| {err:.2e}");
        assert!(err < 1e-3, "{name}: {err}");
    }
}

/// The `.pt` (float16) is the f16 rounding of the safetensors' weights.
#[test]
fn pt_checkpoint_is_the_f16_rounding_of_the_safetensors() {
    let (Some(pt), Some(input)) = (model(PT), parity_input()) else {
        return;
    };
    let path = fixtures::require(WEIGHTS).unwrap();
    let raw = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let rounded: HashMap<String, Tensor> = raw
        .into_iter()
        .map(|(k, t)| {
            (
                k,
                t.to_dtype(DType::F16)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap(),
            )
        })
        .collect();
    let folded =
        crate::detect::weights::fold_batchnorm(rounded, crate::detect::weights::BATCHNORM_EPS)
            .unwrap();
    let rounded = Yolo26::load(VarBuilder::from_tensors(folded, DType::F32, &Device::Cpu)).unwrap();
    let (boxes, scores) = box_and_score_errors(
        &pt.forward(&input).unwrap(),
        &rounded.forward(&input).unwrap(),
    );
    eprintln!("yolo26n .pt vs f16-rounded safetensors: boxes {boxes:.2e} px, scores {scores:.2e}");
    assert!(boxes <= 1e-3 && scores <= 1e-5, "{boxes} {scores}");
}

/// On the test device (`$LOOKOUT_TEST_DEVICE`: `scripts/gpu-check` sets a GPU) in f32 and
/// f16: f32 within 1e-3 px and 1e-5 as above, f16 within 1 px and 1e-2. YOLO26's box is
/// the conv output itself times the stride (no DFL expectation averaging bins): one f16
/// step of a distance of 4–8 grid units is 1/256 of a unit, 0.125 px at stride 32, and the
/// conv's sum carries a few (measured on the CPU: 0.60 px, 2.5e-3).
#[test]
fn matches_ultralytics_on_the_test_device_in_f32_and_f16() {
    let (Some(path), Some(input), Some(parity)) = (
        fixtures::require(WEIGHTS),
        parity_input(),
        load_tensors(PARITY),
    ) else {
        return;
    };
    for (dtype, box_tol, score_tol) in [(DType::F32, 1e-3, 1e-5), (DType::F16, 1.0, 1e-2)] {
        let (_, device, output) = crate::detect::device::forward_on_test_device(
            &path,
            dtype,
            Yolo26::load,
            |m, xs| m.forward_candle(xs),
            &input,
        );
        let (boxes, scores) = box_and_score_errors(&output, &parity["output.0"]);
        eprintln!(
            "parity yolo26n on {device} {dtype:?}: max |Δ| boxes {boxes:.3e} px, scores {scores:.3e}"
        );
        assert!(
            boxes <= box_tol && scores <= score_tol,
            "{dtype:?}: {boxes} {scores}"
        );
    }
}
