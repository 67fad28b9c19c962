use std::collections::HashMap;

use candle_core::DType;

use super::*;
use crate::detect::cpu::graph;
use crate::detect::cpu::isa::Isa;
use crate::detect::dfl::{anchor_grid, dist_to_cxcywh};
use crate::detect::layers::{same_size_max_pool, SPPF_KERNEL};
use crate::detect::weights::Weights;
use crate::fixtures;

const CANDLE_WEIGHTS: &str = "models/yolov8n-random.candle.safetensors";
const ULTRALYTICS_WEIGHTS: &str = "models/yolov8n-random.ultralytics.safetensors";

fn load_tensors(relative: &str) -> Option<HashMap<String, Tensor>> {
    let path = fixtures::require(relative)?;
    Some(candle_core::safetensors::load(path, &Device::Cpu).unwrap())
}

fn weights(relative: &str) -> Option<HashMap<String, Tensor>> {
    let path = fixtures::require(relative)?;
    Some(Weights::read(&path).unwrap().tensors)
}

fn model_from(tensors: HashMap<String, Tensor>) -> Result<Yolov8> {
    Yolov8::load(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
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

/// The candle-named fixture model and the parity input (`bus.jpg` pre-processed).
fn fixture_model_and_input() -> Option<(Yolov8, Tensor)> {
    let tensors = weights(CANDLE_WEIGHTS)?;
    let mut parity = load_tensors("parity/yolov8n-parity.safetensors")?;
    let input = parity.remove("input").expect("parity input");
    Some((model_from(tensors).unwrap(), input))
}

fn check_parity(weights_file: &str) {
    check_parity_against(weights_file, "parity/yolov8n-parity.safetensors");
}

/// The model's raw output on the test device ([`crate::detect::device::test_device`]) against
/// ultralytics': f32 within 2e-3 px (boxes) and 1e-4 (scores), f16 within 0.5 px and 1e-2
/// (f16 keeps 11 significant bits: box values near 640 px are only 0.5 px apart).
fn check_parity_against(weights_file: &str, parity_file: &str) {
    check_parity_in(weights_file, parity_file, DType::F32, 2e-3, 1e-4);
}

fn check_parity_in(
    weights_file: &str,
    parity_file: &str,
    dtype: DType,
    box_tol: f32,
    score_tol: f32,
) {
    let (Some(path), Some(parity)) = (fixtures::require(weights_file), load_tensors(parity_file))
    else {
        return;
    };
    let (model, device, output) = crate::detect::device::forward_on_test_device(
        &path,
        dtype,
        Yolov8::load,
        |m, xs| m.forward(xs),
        &parity["input"],
    );
    assert_eq!(model.variant(), "yolov8n");
    assert_eq!(model.num_classes(), 80);
    let expected = &parity["output"];
    assert_eq!(output.dims(), expected.dims());
    let box_err = max_abs_diff(
        &output.narrow(1, 0, 4).unwrap(),
        &expected.narrow(1, 0, 4).unwrap(),
    );
    let score_err = max_abs_diff(
        &output.narrow(1, 4, 80).unwrap(),
        &expected.narrow(1, 4, 80).unwrap(),
    );
    eprintln!(
        "parity {weights_file} on {device} {dtype:?}: max |Δ| boxes {box_err:.3e} px, scores {score_err:.3e}"
    );
    assert!(box_err <= box_tol, "box rows differ by {box_err}");
    assert!(score_err <= score_tol, "score rows differ by {score_err}");
}

#[test]
fn matches_ultralytics_with_candle_names() {
    check_parity(CANDLE_WEIGHTS);
}

#[test]
fn matches_ultralytics_with_ultralytics_names() {
    check_parity(ULTRALYTICS_WEIGHTS);
}

/// A genuine ultralytics `.pt` (float16 weights) against ultralytics' own output of it.
#[test]
fn pt_checkpoint_matches_ultralytics() {
    check_parity_against(
        "models/yolov8n-random.pt",
        "parity/yolov8n-random-pt-parity.safetensors",
    );
}

/// Guards each stage separately, so a regression points at the layer that broke.
#[test]
fn intermediate_layers_match_ultralytics() {
    let (Some(tensors), Some(parity), Some(layers)) = (
        weights(CANDLE_WEIGHTS),
        load_tensors("parity/yolov8n-parity.safetensors"),
        load_tensors("parity/yolov8n-parity-layers.safetensors"),
    ) else {
        return;
    };
    let model = model_from(tensors).unwrap();
    let features = model.backbone.forward(&parity["input"]).unwrap();
    let levels = model.neck.forward(&features).unwrap();
    let raw = model.head.forward_raw(&levels).unwrap();
    let checks = [
        ("model.4", &features.p3),
        ("model.6", &features.p4),
        ("model.9", &features.p5),
        ("model.15", &levels[0]),
        ("model.18", &levels[1]),
        ("model.21", &levels[2]),
        ("head.box_dist", &raw.box_dist),
        ("head.cls_logits", &raw.cls_logits),
    ];
    for (name, ours) in checks {
        let err = max_abs_diff(ours, &layers[name]);
        eprintln!("{name}: max |Δ| {err:.3e}");
        assert!(err < 1e-3, "{name} differs by {err}");
    }
}

#[test]
fn missing_tensor_is_named() {
    let Some(mut tensors) = weights(CANDLE_WEIGHTS) else {
        return;
    };
    let name = "fpn.n4.bottleneck.0.cv2.conv.weight";
    tensors.remove(name).unwrap();
    let err = model_from(tensors).unwrap_err().to_string();
    assert!(err.contains(name), "{err}");
}

#[test]
fn misshapen_tensor_is_named() {
    let Some(mut tensors) = weights(CANDLE_WEIGHTS) else {
        return;
    };
    for name in ["net.b3.0.conv.weight", "head.dfl.conv.weight"] {
        let mut tensors = tensors.clone();
        let wrong = Tensor::zeros((7, 5, 3, 3), DType::F32, &Device::Cpu).unwrap();
        tensors.insert(name.to_string(), wrong);
        let err = model_from(tensors).unwrap_err().to_string();
        assert!(err.contains(name), "{err}");
    }
    let name = "head.cv3.1.2.weight";
    let wrong = Tensor::zeros((80, 81, 1, 1), DType::F32, &Device::Cpu).unwrap();
    tensors.insert(name.to_string(), wrong);
    let err = model_from(tensors).unwrap_err().to_string();
    assert!(err.contains(name), "{err}");
}

#[test]
fn runs_on_non_square_input() {
    let Some(tensors) = weights(CANDLE_WEIGHTS) else {
        return;
    };
    let model = model_from(tensors).unwrap();
    let xs = Tensor::zeros((1, 3, 480, 640), DType::F32, &Device::Cpu).unwrap();
    let ys = model.forward(&xs).unwrap();
    assert_eq!(ys.dims(), [1, 84, 60 * 80 + 30 * 40 + 15 * 20]);
}

#[test]
fn rejects_input_not_a_multiple_of_32() {
    let Some(tensors) = weights(CANDLE_WEIGHTS) else {
        return;
    };
    let model = model_from(tensors).unwrap();
    let xs = Tensor::zeros((1, 3, 480, 630), DType::F32, &Device::Cpu).unwrap();
    let err = model.forward(&xs).unwrap_err().to_string();
    assert!(err.contains("multiples of 32"), "{err}");
}

/// f16 (the `--half` dtype) on the test device against ultralytics' f32 output.
#[test]
fn matches_ultralytics_in_f16() {
    check_parity_in(
        CANDLE_WEIGHTS,
        "parity/yolov8n-parity.safetensors",
        DType::F16,
        0.5,
        1e-2,
    );
}

/// A synthetic, BN-folded YOLOv8 under candle names with yolov8.yaml's channel and
/// depth formulas, so every scale can be loaded without its (large) weights.
struct Synthetic {
    tensors: HashMap<String, Tensor>,
}

impl Synthetic {
    fn conv(&mut self, name: &str, c_in: usize, c_out: usize, k: usize) {
        let dev = &Device::Cpu;
        let w = Tensor::zeros((c_out, c_in, k, k), DType::F32, dev).unwrap();
        let b = Tensor::zeros(c_out, DType::F32, dev).unwrap();
        self.tensors.insert(format!("{name}.conv.weight"), w);
        self.tensors.insert(format!("{name}.conv.bias"), b);
    }

    fn c2f(&mut self, name: &str, c_in: usize, c_out: usize, n: usize) {
        let c = c_out / 2;
        self.conv(&format!("{name}.cv1"), c_in, 2 * c, 1);
        self.conv(&format!("{name}.cv2"), (2 + n) * c, c_out, 1);
        for k in 0..n {
            self.conv(&format!("{name}.bottleneck.{k}.cv1"), c, c, 3);
            self.conv(&format!("{name}.bottleneck.{k}.cv2"), c, c, 3);
        }
    }

    /// `depth`, `width`, `max_channels` as in yolov8.yaml's `scales`.
    fn build(depth: f64, width: f64, max_channels: usize, nc: usize) -> Self {
        let ch = |c: usize| ((c.min(max_channels) as f64 * width / 8.0).ceil() as usize) * 8;
        let n = |k: f64| ((k * depth).round() as usize).max(1);
        let (c1, c2, c3, c4, c5) = (ch(64), ch(128), ch(256), ch(512), ch(1024));
        let mut m = Synthetic {
            tensors: HashMap::new(),
        };
        m.conv("net.b1.0", 3, c1, 3);
        m.conv("net.b1.1", c1, c2, 3);
        m.c2f("net.b2.0", c2, c2, n(3.0));
        m.conv("net.b2.1", c2, c3, 3);
        m.c2f("net.b2.2", c3, c3, n(6.0));
        m.conv("net.b3.0", c3, c4, 3);
        m.c2f("net.b3.1", c4, c4, n(6.0));
        m.conv("net.b4.0", c4, c5, 3);
        m.c2f("net.b4.1", c5, c5, n(3.0));
        m.conv("net.b5.0.cv1", c5, c5 / 2, 1);
        m.conv("net.b5.0.cv2", 2 * c5, c5, 1);
        m.c2f("fpn.n1", c5 + c4, c4, n(3.0));
        m.c2f("fpn.n2", c4 + c3, c3, n(3.0));
        m.conv("fpn.n3", c3, c3, 3);
        m.c2f("fpn.n4", c3 + c4, c4, n(3.0));
        m.conv("fpn.n5", c4, c4, 3);
        m.c2f("fpn.n6", c4 + c5, c5, n(3.0));
        let box_width = (c3 / 4).max(64);
        let cls_width = c3.max(nc.min(100));
        for (level, c_in) in [c3, c4, c5].into_iter().enumerate() {
            for (branch, width, out) in [("cv2", box_width, 64), ("cv3", cls_width, nc)] {
                let name = format!("head.{branch}.{level}");
                m.conv(&format!("{name}.0"), c_in, width, 3);
                m.conv(&format!("{name}.1"), width, width, 3);
                let dev = &Device::Cpu;
                let w = Tensor::zeros((out, width, 1, 1), DType::F32, dev).unwrap();
                m.tensors.insert(format!("{name}.2.weight"), w);
                let b = Tensor::zeros(out, DType::F32, dev).unwrap();
                m.tensors.insert(format!("{name}.2.bias"), b);
            }
        }
        let bins = Tensor::arange(0f32, 16., &Device::Cpu).unwrap();
        let bins = bins.reshape((1, 16, 1, 1)).unwrap();
        m.tensors.insert("head.dfl.conv.weight".into(), bins);
        m
    }
}

#[test]
fn every_scale_loads_and_is_named_from_its_shapes() {
    let scales = [
        ("yolov8n", 0.33, 0.25, 1024),
        ("yolov8s", 0.33, 0.50, 1024),
        ("yolov8m", 0.67, 0.75, 768),
        ("yolov8l", 1.00, 1.00, 512),
        ("yolov8x", 1.00, 1.25, 512),
    ];
    for (name, depth, width, max_channels) in scales {
        let model = model_from(Synthetic::build(depth, width, max_channels, 80).tensors)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(model.variant(), name);
        assert_eq!(model.num_classes(), 80);
    }
    let custom = model_from(Synthetic::build(0.33, 0.25, 1024, 3).tensors).unwrap();
    assert_eq!((custom.variant(), custom.num_classes()), ("yolov8n", 3));
    let custom = model_from(Synthetic::build(0.67, 0.25, 1024, 80).tensors).unwrap();
    assert_eq!(custom.variant(), "yolov8-custom");
}

/// The CPU executor (every ISA this CPU runs) against candle's ops on the same weights.
#[test]
fn executor_matches_candle_on_every_isa() {
    let Some((model, input)) = fixture_model_and_input() else {
        return;
    };
    let input = &input;
    let want: Vec<f32> = model
        .forward_candle(input)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let image: Vec<f32> = input.flatten_all().unwrap().to_vec1().unwrap();
    let (_, _, h, w) = input.dims4().unwrap();
    for isa in Isa::all_supported() {
        let mut p = model.plan(h, w).unwrap();
        p.graph.set_isa(isa);
        graph::write_image(&mut p.workspace, &p.input, &image);
        p.graph.run(&mut p.workspace);
        // Anchor rows [N, 84] against candle's class rows [84, N].
        let mut anchor_rows = Vec::new();
        model
            .head
            .decode_blocked(&p.workspace, &p.outputs, &mut anchor_rows);
        let anchors = anchor_rows.len() / 84;
        let err = (0..84 * anchors)
            .map(|i| (anchor_rows[(i % anchors) * 84 + i / anchors] - want[i]).abs())
            .fold(0.0f32, f32::max);
        eprintln!("executor {isa:?} vs candle: max |Δ| {err:.3e}");
        assert!(err < 2e-3, "{isa:?}: {err}");
    }
}

/// Widths that are not whole blocks of 16 (a C2f split at 4 channels) keep candle's ops.
#[test]
fn executor_declines_widths_off_the_block() {
    let xs = Tensor::zeros((1, 3, 64, 64), DType::F32, &Device::Cpu).unwrap();
    let image = vec![0.0; 3 * 64 * 64];
    let mut out = Vec::new();
    let narrow = model_from(Synthetic::build(0.33, 0.125, 1024, 80).tensors).unwrap();
    assert!(!narrow.forward_cpu_image(&image, 64, 64, &mut out).unwrap());
    assert_eq!(narrow.forward(&xs).unwrap().dims(), [1, 84, 64 + 16 + 4]);
    let nano = model_from(Synthetic::build(0.33, 0.25, 1024, 80).tensors).unwrap();
    assert!(nano.forward_cpu_image(&image, 64, 64, &mut out).unwrap());
    assert_eq!(out.len(), 84 * (64 + 16 + 4));
    // Anchor rows: zero weights put every box at the mean bin, 15 cells wide.
    assert_eq!(out[2], 15.0 * 8.0);
    assert_eq!(out[84 + 2], 15.0 * 8.0);
}

#[test]
fn medium_scale_runs_with_its_channel_ratio() {
    let model = model_from(Synthetic::build(0.67, 0.75, 768, 5).tensors).unwrap();
    let xs = Tensor::zeros((2, 3, 64, 96), DType::F32, &Device::Cpu).unwrap();
    let ys = model.forward(&xs).unwrap();
    assert_eq!(ys.dims(), [2, 4 + 5, 8 * 12 + 4 * 6 + 2 * 3]);
    // Zero weights: every distance is the mean bin 7.5, so boxes are 15 cells wide.
    let first_w = ys.get(0).unwrap().get(2).unwrap().get(0).unwrap();
    assert_eq!(first_w.to_scalar::<f32>().unwrap(), 15.0 * 8.0);
}

/// Naive stride-1 max-pool with −∞ padding, PyTorch's definition.
fn reference_max_pool(xs: &[f32], h: usize, w: usize, k: usize) -> Vec<f32> {
    let pad = (k / 2) as isize;
    let mut out = vec![f32::NEG_INFINITY; h * w];
    for r in 0..h as isize {
        for c in 0..w as isize {
            for dr in -pad..=pad {
                for dc in -pad..=pad {
                    let (rr, cc) = (r + dr, c + dc);
                    if rr >= 0 && cc >= 0 && rr < h as isize && cc < w as isize {
                        let v = xs[rr as usize * w + cc as usize];
                        let o = &mut out[r as usize * w + c as usize];
                        *o = o.max(v);
                    }
                }
            }
        }
    }
    out
}

#[test]
fn max_pool_equals_negative_infinity_padding() {
    let (h, w) = (7, 9);
    // All negative, so zero padding would be visibly wrong at the border.
    let xs = (Tensor::randn(0f32, 1., (1, 1, h, w), &Device::Cpu)
        .unwrap()
        .abs()
        .unwrap()
        * -1.0)
        .unwrap();
    let ours = same_size_max_pool(&xs, SPPF_KERNEL)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    let input = xs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(ours, reference_max_pool(&input, h, w, SPPF_KERNEL));
}

#[test]
fn anchors_are_cell_centres_row_major_per_stride() {
    let (centres, strides) = anchor_grid(64, 96, DType::F32, &Device::Cpu).unwrap();
    let n = 8 * 12 + 4 * 6 + 2 * 3;
    assert_eq!(centres.dims(), [1, 2, n]);
    let c = centres.squeeze(0).unwrap().to_vec2::<f32>().unwrap();
    let s = strides.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    // Second anchor of the first row, then first anchor of the second row.
    assert_eq!((c[0][1], c[1][1]), (1.5, 0.5));
    assert_eq!((c[0][12], c[1][12]), (0.5, 1.5));
    // First anchor of stride 16.
    assert_eq!((c[0][96], c[1][96], s[96]), (0.5, 0.5, 16.0));
    assert_eq!(s[n - 1], 32.0);
}

#[test]
fn distances_become_centre_and_size() {
    let centres = Tensor::new(&[[[10.5f32], [4.5]]], &Device::Cpu).unwrap();
    let dist = Tensor::new(&[[[1f32], [2.], [3.], [4.]]], &Device::Cpu).unwrap();
    let ys = dist_to_cxcywh(&dist, &centres)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
    // x1 = 9.5, x2 = 13.5, y1 = 2.5, y2 = 8.5.
    assert_eq!(ys, [11.5, 5.5, 4.0, 6.0]);
}

#[test]
#[ignore = "timing only: cargo test --release --lib detect::yolov8 -- --ignored --nocapture"]
fn time_forward_640() {
    let Some((model, xs)) = fixture_model_and_input() else {
        return;
    };
    let xs = &xs;
    model.forward(xs).unwrap();
    let runs = 5;
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = std::time::Instant::now();
        model.forward(xs).unwrap();
        times.push(start.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    eprintln!(
        "yolov8n 640×640 CPU forward: median {:.1} ms, min {:.1} ms",
        times[runs / 2],
        times[0]
    );
}
