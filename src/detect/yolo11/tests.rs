use std::collections::HashMap;

use candle_core::{DType, Device};

use super::*;
use crate::detect::cpu::graph;
use crate::detect::cpu::isa::Isa;
use crate::detect::weights::Weights;
use crate::fixtures;

pub(crate) const WEIGHTS: &str = "models/yolo11n-random.ultralytics.safetensors";
pub(crate) const PT: &str = "models/yolo11n-random.pt";
const PARITY: &str = "parity/yolo11n-parity.safetensors";
const LAYERS: &str = "parity/yolo11n-parity-layers.safetensors";
/// The parity input (`dog.jpg` letterboxed), shared with YOLOv8's file.
const INPUT: &str = "parity/yolov8n-parity.safetensors";

pub(crate) fn load_tensors(relative: &str) -> Option<HashMap<String, Tensor>> {
    let path = fixtures::require(relative)?;
    Some(candle_core::safetensors::load(path, &Device::Cpu).unwrap())
}

pub(crate) fn parity_input() -> Option<Tensor> {
    load_tensors(INPUT)?.remove("input")
}

fn model(relative: &str) -> Option<Yolo11> {
    let path = fixtures::require(relative)?;
    let w = Weights::read(&path).unwrap();
    Some(
        Yolo11::load(VarBuilder::from_tensors(
            w.tensors,
            DType::F32,
            &Device::Cpu,
        ))
        .unwrap(),
    )
}

pub(crate) fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Boxes (rows 0–3) and scores (rows 4..) of `[1, 4 + nc, N]` outputs: max |Δ| of each.
pub(crate) fn box_and_score_errors(got: &Tensor, want: &Tensor) -> (f32, f32) {
    assert_eq!(got.dims(), want.dims());
    let rows = want.dim(1).unwrap();
    let part = |t: &Tensor, a, n| t.narrow(1, a, n).unwrap();
    (
        max_abs_diff(&part(got, 0, 4), &part(want, 0, 4)),
        max_abs_diff(&part(got, 4, rows - 4), &part(want, 4, rows - 4)),
    )
}

/// Raw output within 1e-3 px (boxes) and 1e-5 (scores) of ultralytics' f32 forward, on
/// candle's ops and on the executor (every ISA this CPU runs).
#[test]
fn matches_ultralytics_on_candle_and_the_executor() {
    let (Some(model), Some(input), Some(parity)) =
        (model(WEIGHTS), parity_input(), load_tensors(PARITY))
    else {
        return;
    };
    assert_eq!(model.variant(), "yolo11n");
    assert_eq!(model.num_classes(), 80);
    let want = &parity["output.0"];
    let candle = model.forward_candle(&input).unwrap();
    let (boxes, scores) = box_and_score_errors(&candle, want);
    eprintln!("yolo11n candle vs ultralytics: boxes {boxes:.2e} px, scores {scores:.2e}");
    assert!(boxes <= 1e-3 && scores <= 1e-5, "{boxes} {scores}");

    for isa in Isa::all_supported() {
        let got = executor_output(&model, &input, isa);
        let (boxes, scores) = box_and_score_errors(&got, want);
        eprintln!(
            "yolo11n executor {isa:?} vs ultralytics: boxes {boxes:.2e} px, scores {scores:.2e}"
        );
        assert!(boxes <= 1e-3 && scores <= 1e-5, "{isa:?}: {boxes} {scores}");
    }
}

/// `model` on the executor with every kernel forced to `isa` (lowered to what this CPU
/// runs), as the reference's tensor.
pub(crate) fn executor_output(model: &dyn Family, input: &Tensor, isa: Isa) -> Tensor {
    let image: Vec<f32> = input.flatten_all().unwrap().to_vec1().unwrap();
    let (_, _, h, w) = input.dims4().unwrap();
    let mut p = model.plan(h, w).unwrap();
    p.graph.set_isa(isa);
    graph::write_image(&mut p.workspace, &p.input, &image);
    p.graph.run(&mut p.workspace);
    let mut out = Vec::new();
    model.decode_executor(&p.workspace, &p.outputs, &mut out);
    model
        .executor_as_reference(out, anchor_count(h, w), &Device::Cpu)
        .unwrap()
}

/// The layers ultralytics saved (C2PSA is layer 10), for finding where a port diverges.
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

/// The ultralytics `.pt` (float16 weights) gives the model of the safetensors' weights
/// rounded to f16: its output equals that model's, and differs from the f32 reference by
/// no more than the f16 rounding of the weights does.
#[test]
fn pt_checkpoint_is_the_f16_rounding_of_the_safetensors() {
    let (Some(pt), Some(input), Some(parity)) = (model(PT), parity_input(), load_tensors(PARITY))
    else {
        return;
    };
    let path = fixtures::require(WEIGHTS).unwrap();
    let raw = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    let rounded: HashMap<String, Tensor> = raw
        .into_iter()
        .map(|(k, t)| {
            let t = t
                .to_dtype(DType::F16)
                .unwrap()
                .to_dtype(DType::F32)
                .unwrap();
            (k, t)
        })
        .collect();
    let folded =
        crate::detect::weights::fold_batchnorm(rounded, crate::detect::weights::BATCHNORM_EPS)
            .unwrap();
    let rounded = Yolo11::load(VarBuilder::from_tensors(folded, DType::F32, &Device::Cpu)).unwrap();
    let got = pt.forward(&input).unwrap();
    let (boxes, scores) = box_and_score_errors(&got, &rounded.forward(&input).unwrap());
    eprintln!("yolo11n .pt vs f16-rounded safetensors: boxes {boxes:.2e} px, scores {scores:.2e}");
    assert!(boxes <= 1e-3 && scores <= 1e-5, "{boxes} {scores}");
    let (bound_boxes, bound_scores) =
        box_and_score_errors(&rounded.forward(&input).unwrap(), &parity["output.0"]);
    let (boxes, scores) = box_and_score_errors(&got, &parity["output.0"]);
    eprintln!(
        "yolo11n .pt vs ultralytics f32: boxes {boxes:.2e} px (bound {bound_boxes:.2e}), scores {scores:.2e} (bound {bound_scores:.2e})"
    );
    assert!(boxes <= bound_boxes + 1e-3 && scores <= bound_scores + 1e-5);
}

#[test]
fn a_misshapen_tensor_is_named() {
    let Some(path) = fixtures::require(WEIGHTS) else {
        return;
    };
    let mut tensors = Weights::read(&path).unwrap().tensors;
    let name = "model.10.m.0.attn.qkv.conv.weight";
    tensors.insert(
        name.into(),
        Tensor::zeros((250, 128, 1, 1), DType::F32, &Device::Cpu).unwrap(),
    );
    let err = Yolo11::load(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
        .unwrap_err()
        .to_string();
    assert!(err.contains(name), "{err}");
}

/// On the test device (`$LOOKOUT_TEST_DEVICE`: `scripts/gpu-check` sets a GPU) in f32 and
/// f16: f32 within 1e-3 px and 1e-5 as above, f16 within 0.5 px and 1e-2 (f16 keeps 11
/// significant bits: values near 640 px are 0.5 px apart), as YOLOv8's.
#[test]
fn matches_ultralytics_on_the_test_device_in_f32_and_f16() {
    let (Some(path), Some(input), Some(parity)) = (
        fixtures::require(WEIGHTS),
        parity_input(),
        load_tensors(PARITY),
    ) else {
        return;
    };
    for (dtype, box_tol, score_tol) in [(DType::F32, 1e-3, 1e-5), (DType::F16, 0.5, 1e-2)] {
        let (_, device, output) = crate::detect::device::forward_on_test_device(
            &path,
            dtype,
            Yolo11::load,
            |m, xs| m.forward_candle(xs),
            &input,
        );
        let (boxes, scores) = box_and_score_errors(&output, &parity["output.0"]);
        eprintln!(
            "parity yolo11n on {device} {dtype:?}: max |Δ| boxes {boxes:.3e} px, scores {scores:.3e}"
        );
        assert!(
            boxes <= box_tol && scores <= score_tol,
            "{dtype:?}: {boxes} {scores}"
        );
    }
}
