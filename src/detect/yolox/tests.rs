use std::collections::HashMap;
use std::time::Instant;

use candle_core::{DType, Device};

use super::*;
use crate::detect::weights::Weights;

fn load_fixture_model(relative: &str) -> Option<Yolox> {
    let path = crate::fixtures::require(relative)?;
    let vb = Weights::read(&path)
        .unwrap()
        .into_var_builder(DType::F32, &Device::Cpu)
        .unwrap();
    Some(Yolox::load(vb).unwrap())
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Raw output of the real YOLOX-Nano against onnxruntime on `bus.jpg`, on the test
/// device ([`crate::detect::device::test_device`]): f32 within 1e-3.
fn check_parity(model_file: &str) {
    check_parity_in(model_file, DType::F32, 1e-3, 1e-3);
}

/// f16 bounds: box columns are pixels at 416 (f16 steps 0.25 px there), scores in 0..1
/// (candle's CPU f16 convolutions accumulate in f16: 0.41 px and 0.070 measured there).
fn check_parity_in(model_file: &str, dtype: DType, box_tol: f32, score_tol: f32) {
    let (Some(parity), Some(path)) = (
        crate::fixtures::require("parity/yolox_nano-parity.safetensors"),
        crate::fixtures::require(model_file),
    ) else {
        return;
    };
    let golden = candle_core::safetensors::load(parity, &Device::Cpu).unwrap();
    let (_, device, output) = crate::detect::device::forward_on_test_device(
        &path,
        dtype,
        Yolox::load,
        |m, xs| m.forward(xs),
        &golden["input"],
    );
    assert_eq!(output.dims(), [1, 3549, 85]);
    let expected = &golden["output"];
    let boxes = max_abs_diff(
        &output.narrow(2, 0, 4).unwrap(),
        &expected.narrow(2, 0, 4).unwrap(),
    );
    let scores = max_abs_diff(
        &output.narrow(2, 4, 81).unwrap(),
        &expected.narrow(2, 4, 81).unwrap(),
    );
    eprintln!(
        "parity {model_file} on {device} {dtype:?}: max |Δ| raw box columns {boxes:.3e}, score columns {scores:.3e}"
    );
    assert!(
        boxes <= box_tol && scores <= score_tol,
        "{model_file}: box {boxes}, score {scores}"
    );
}

#[test]
fn nano_matches_onnxruntime_in_f16() {
    check_parity_in("models/yolox_nano.safetensors", DType::F16, 1.0, 0.1);
}

/// The CPU executor (every ISA this CPU runs) against candle's ops on the same weights.
#[test]
fn executor_matches_candle_on_every_isa() {
    let Some(parity) = crate::fixtures::require("parity/yolox_nano-parity.safetensors") else {
        return;
    };
    let Some(model) = load_fixture_model("models/yolox_nano.safetensors") else {
        return;
    };
    let golden = candle_core::safetensors::load(parity, &Device::Cpu).unwrap();
    let input = &golden["input"];
    let want: Vec<f32> = model
        .forward_candle(input)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let image: Vec<f32> = input.flatten_all().unwrap().to_vec1().unwrap();
    let (_, _, h, w) = input.dims4().unwrap();
    for isa in crate::detect::cpu::isa::Isa::all_supported() {
        let mut p = model.plan(h, w).unwrap();
        p.graph.set_isa(isa);
        graph::write_space_to_depth(&mut p.workspace, &p.input, &image);
        p.graph.run(&mut p.workspace);
        let mut got = Vec::new();
        model.decode_executor(&p.workspace, &p.outputs, &mut got);
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        eprintln!("executor {isa:?} vs candle: max |Δ| {err:.3e}");
        assert!(err < 1e-3, "{isa:?}: {err}");
    }
}

#[test]
fn nano_matches_onnxruntime() {
    check_parity("models/yolox_nano.safetensors");
}

/// Megvii's official checkpoint layout, through the pickle reader.
#[test]
fn pth_checkpoint_matches_onnxruntime() {
    check_parity("models/yolox_nano.pth");
}

#[test]
fn fused_nano_matches_onnxruntime() {
    check_parity("models/yolox_nano_fused.safetensors");
}

/// Megvii's decode of our raw output on `bus.jpg`: every detection of the onnxruntime
/// reference (after its NMS) is one of our candidates, same class, box within 0.05 px.
#[test]
fn decoded_candidates_contain_the_reference_detections() {
    let (Some(parity), Some(reference)) = (
        crate::fixtures::require("parity/yolox_nano-parity.safetensors"),
        crate::fixtures::require("references/yolox_nano-ort-conf0.30.json"),
    ) else {
        return;
    };
    let Some(model) = load_fixture_model("models/yolox_nano_fused.safetensors") else {
        return;
    };
    let golden = candle_core::safetensors::load(parity, &Device::Cpu).unwrap();
    let raw = model.forward(&golden["input"]).unwrap();
    let raw = raw.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let candidates = decode_outputs(&raw, 85, 416, 416, 0.3).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reference).unwrap()).unwrap();
    let bus = &reference["bus.jpg"];
    let ratio = bus["preprocess"]["ratio"].as_f64().unwrap() as f32;
    let detections = bus["detections"].as_array().unwrap();
    assert!(!detections.is_empty());
    for detection in detections {
        let class_index = detection["class_id"].as_u64().unwrap() as usize;
        let score = detection["score"].as_f64().unwrap() as f32;
        let xyxy_in_image: Vec<f32> = detection["box_xyxy"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        let found = candidates.iter().any(|c| {
            let [cx, cy, w, h] = c.cxcywh_in_model;
            let xyxy_in_model = [cx - w / 2., cy - h / 2., cx + w / 2., cy + h / 2.];
            c.class_index == class_index
                && (c.score - score).abs() < 1e-3
                && xyxy_in_model
                    .iter()
                    .zip(&xyxy_in_image)
                    .all(|(m, i)| (m - i * ratio).abs() < 0.05)
        });
        assert!(
            found,
            "no candidate matches reference detection {detection}"
        );
    }
}

#[test]
fn nano_fixture_is_recognised() {
    let Some(model) = load_fixture_model("models/yolox_nano_fused.safetensors") else {
        return;
    };
    assert_eq!(model.variant(), "yolox-nano");
    assert_eq!(model.default_input_size(), 416);
    assert_eq!(model.num_classes(), 80);
}

/// Random fused weights with Megvii's names for a model of the given shape, so the
/// non-depthwise variants can be built without their (large) checkpoints.
struct Synthetic {
    depthwise: bool,
    tensors: HashMap<String, Tensor>,
}

impl Synthetic {
    fn tensors(
        depthwise: bool,
        stem: usize,
        depth: usize,
        num_classes: usize,
    ) -> HashMap<String, Tensor> {
        let mut g = Synthetic {
            depthwise,
            tensors: HashMap::new(),
        };
        let c = stem;
        g.base("backbone.backbone.stem.conv", 12, c, 3);
        g.conv("backbone.backbone.dark2.0", c, 2 * c);
        g.csp("backbone.backbone.dark2.1", 2 * c, 2 * c, depth);
        g.conv("backbone.backbone.dark3.0", 2 * c, 4 * c);
        g.csp("backbone.backbone.dark3.1", 4 * c, 4 * c, 3 * depth);
        g.conv("backbone.backbone.dark4.0", 4 * c, 8 * c);
        g.csp("backbone.backbone.dark4.1", 8 * c, 8 * c, 3 * depth);
        g.conv("backbone.backbone.dark5.0", 8 * c, 16 * c);
        g.base("backbone.backbone.dark5.1.conv1", 16 * c, 8 * c, 1);
        g.base("backbone.backbone.dark5.1.conv2", 32 * c, 16 * c, 1);
        g.csp("backbone.backbone.dark5.2", 16 * c, 16 * c, depth);
        g.base("backbone.lateral_conv0", 16 * c, 8 * c, 1);
        g.csp("backbone.C3_p4", 16 * c, 8 * c, depth);
        g.base("backbone.reduce_conv1", 8 * c, 4 * c, 1);
        g.csp("backbone.C3_p3", 8 * c, 4 * c, depth);
        g.conv("backbone.bu_conv2", 4 * c, 4 * c);
        g.csp("backbone.C3_n3", 8 * c, 8 * c, depth);
        g.conv("backbone.bu_conv1", 8 * c, 8 * c);
        g.csp("backbone.C3_n4", 16 * c, 16 * c, depth);
        for (level, c_in) in [4 * c, 8 * c, 16 * c].into_iter().enumerate() {
            let hidden = 4 * c;
            g.base(&format!("head.stems.{level}"), c_in, hidden, 1);
            for branch in ["cls_convs", "reg_convs"] {
                g.conv(&format!("head.{branch}.{level}.0"), hidden, hidden);
                g.conv(&format!("head.{branch}.{level}.1"), hidden, hidden);
            }
            g.plain(
                &format!("head.cls_preds.{level}"),
                hidden,
                num_classes,
                1,
                1,
            );
            g.plain(&format!("head.reg_preds.{level}"), hidden, 4, 1, 1);
            g.plain(&format!("head.obj_preds.{level}"), hidden, 1, 1, 1);
        }
        g.tensors
    }

    fn plain(&mut self, name: &str, c_in: usize, c_out: usize, kernel: usize, groups: usize) {
        let fan_in = (c_in / groups * kernel * kernel) as f32;
        let std = 1.0 / fan_in.sqrt();
        let dev = &Device::Cpu;
        let weight = Tensor::randn(0f32, std, (c_out, c_in / groups, kernel, kernel), dev).unwrap();
        let bias = Tensor::randn(0f32, 0.1, c_out, dev).unwrap();
        self.tensors.insert(format!("{name}.weight"), weight);
        self.tensors.insert(format!("{name}.bias"), bias);
    }

    fn base(&mut self, name: &str, c_in: usize, c_out: usize, kernel: usize) {
        self.plain(&format!("{name}.conv"), c_in, c_out, kernel, 1);
    }

    /// YOLOX `Conv` k3 s2 or s1: DWConv when depthwise.
    fn conv(&mut self, name: &str, c_in: usize, c_out: usize) {
        if self.depthwise {
            self.plain(&format!("{name}.dconv.conv"), c_in, c_in, 3, c_in);
            self.base(&format!("{name}.pconv"), c_in, c_out, 1);
        } else {
            self.base(name, c_in, c_out, 3);
        }
    }

    fn csp(&mut self, name: &str, c_in: usize, c_out: usize, n: usize) {
        let hidden = c_out / 2;
        self.base(&format!("{name}.conv1"), c_in, hidden, 1);
        self.base(&format!("{name}.conv2"), c_in, hidden, 1);
        self.base(&format!("{name}.conv3"), 2 * hidden, c_out, 1);
        for i in 0..n {
            self.base(&format!("{name}.m.{i}.conv1"), hidden, hidden, 1);
            self.conv(&format!("{name}.m.{i}.conv2"), hidden, hidden);
        }
    }
}

fn synthetic_model(depthwise: bool, stem: usize, depth: usize, classes: usize) -> Result<Yolox> {
    let tensors = Synthetic::tensors(depthwise, stem, depth, classes);
    Yolox::load(VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
}

#[test]
fn variant_and_input_size_come_from_the_tensors() -> Result<()> {
    for (depthwise, stem, depth, variant, size) in [
        (true, 16, 1, "yolox-nano", 416),
        (false, 24, 1, "yolox-tiny", 416),
        (false, 32, 1, "yolox-s", 640),
        (true, 24, 1, "yolox-custom", 640),
        (false, 32, 2, "yolox-custom", 640),
    ] {
        let model = synthetic_model(depthwise, stem, depth, 3)?;
        assert_eq!(
            model.variant(),
            variant,
            "depthwise {depthwise}, stem {stem}, depth {depth}"
        );
        assert_eq!(model.default_input_size(), size, "{variant}");
        assert_eq!(model.num_classes(), 3);
    }
    Ok(())
}

#[test]
fn larger_variants_are_named_from_their_shape() {
    // Building m/l/x would take hundreds of MB; their table rows are checked directly.
    let by_name = |name: &str| VARIANTS.iter().find(|v| v.0 == name).copied();
    assert_eq!(by_name("yolox-m"), Some(("yolox-m", false, 48, 2, 640)));
    assert_eq!(by_name("yolox-l"), Some(("yolox-l", false, 64, 3, 640)));
    assert_eq!(by_name("yolox-x"), Some(("yolox-x", false, 80, 4, 640)));
}

#[test]
fn non_depthwise_model_runs_on_a_non_square_input() -> Result<()> {
    let model = synthetic_model(false, 24, 1, 3)?;
    let xs = Tensor::rand(0f32, 255., (2, 3, 64, 96), &Device::Cpu)?;
    let ys = model.forward(&xs)?;
    assert_eq!(ys.dims(), [2, anchor_count(64, 96), 8]);
    let scores = ys.narrow(2, 4, 4)?.flatten_all()?.to_vec1::<f32>()?;
    assert!(scores.iter().all(|p| (0.0..=1.0).contains(p)));
    Ok(())
}

#[test]
fn input_that_is_not_a_multiple_of_32_is_an_error() -> Result<()> {
    let model = synthetic_model(true, 16, 1, 2)?;
    let xs = Tensor::zeros((1, 3, 48, 64), DType::F32, &Device::Cpu)?;
    let err = model.forward(&xs).unwrap_err().to_string();
    assert!(err.contains("multiples of 32"), "{err}");
    Ok(())
}

#[test]
fn a_missing_tensor_is_named() {
    let mut tensors = Synthetic::tensors(true, 16, 1, 2);
    tensors.remove("head.obj_preds.2.bias");
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let err = Yolox::load(vb).unwrap_err().to_string();
    assert!(err.contains("head.obj_preds.2.bias"), "{err}");
}

#[test]
fn a_misshapen_depthwise_tensor_is_named() {
    let mut tensors = Synthetic::tensors(true, 16, 1, 2);
    let name = "backbone.backbone.dark3.0.dconv.conv.weight";
    tensors.insert(
        name.into(),
        Tensor::zeros((32, 1, 5, 5), DType::F32, &Device::Cpu).unwrap(),
    );
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let err = Yolox::load(vb).unwrap_err().to_string();
    assert!(err.contains(name) && err.contains("[32, 1, 3, 3]"), "{err}");
}

#[test]
fn depthwise_conv_matches_grouped_conv2d() -> Result<()> {
    let dev = &Device::Cpu;
    for (stride, size) in [(1, (7, 9)), (2, (8, 10)), (2, (7, 9))] {
        let channels = 5;
        let weight = Tensor::randn(0f32, 1., (channels, 1, 3, 3), dev)?;
        let bias = Tensor::randn(0f32, 1., channels, dev)?;
        let tensors = HashMap::from([
            ("conv.weight".to_string(), weight.clone()),
            ("conv.bias".to_string(), bias.clone()),
        ]);
        let vb = VarBuilder::from_tensors(tensors, DType::F32, dev);
        let dw = DepthwiseConv::load(vb, channels, 3, stride, true)?;
        let xs = Tensor::randn(0f32, 1., (2, channels, size.0, size.1), dev)?;
        let reference = xs
            .conv2d(&weight, 1, stride, 1, channels)?
            .broadcast_add(&bias.reshape((1, channels, 1, 1))?)?;
        let reference = candle_nn::ops::silu(&reference)?;
        let ys = dw.forward(&xs)?;
        assert_eq!(ys.dims(), reference.dims(), "stride {stride}, {size:?}");
        let diff = max_abs_diff(&ys, &reference);
        assert!(diff < 1e-5, "stride {stride}, {size:?}: {diff}");
    }
    Ok(())
}

#[test]
fn space_to_depth_puts_the_four_phases_in_megvii_order() -> Result<()> {
    // One channel holding 10·row + col.
    let values = (0..16).map(|v| (10 * (v / 4) + v % 4) as f32).collect();
    let xs = Tensor::from_vec(values, (1, 1, 4, 4), &Device::Cpu)?;
    let got = space_to_depth(&xs)?.flatten_all()?.to_vec1::<f32>()?;
    let top_left = [0., 2., 20., 22.];
    let bottom_left = [10., 12., 30., 32.];
    let top_right = [1., 3., 21., 23.];
    let bottom_right = [11., 13., 31., 33.];
    assert_eq!(
        got,
        [top_left, bottom_left, top_right, bottom_right].concat()
    );
    Ok(())
}

#[test]
fn max_pool_same_ignores_the_padding() -> Result<()> {
    let dev = &Device::Cpu;
    let xs = Tensor::new(&[[[[-5f32, -4., -3., -2., -1.]]]], dev)?;
    let got = max_pool_same(&xs, 5)?.flatten_all()?.to_vec1::<f32>()?;
    assert_eq!(got, [-3., -2., -1., -1., -1.]);
    Ok(())
}

#[test]
fn anchor_points_follow_the_output_order() {
    let points: Vec<AnchorPoint> = anchor_points(32, 64).collect();
    assert_eq!(points.len(), anchor_count(32, 64));
    assert_eq!(points.len(), 4 * 8 + 2 * 4 + 2);
    assert_eq!(
        points[1],
        AnchorPoint {
            grid_x: 1,
            grid_y: 0,
            stride: 8
        }
    );
    assert_eq!(
        points[8],
        AnchorPoint {
            grid_x: 0,
            grid_y: 1,
            stride: 8
        }
    );
    assert_eq!(
        points[32],
        AnchorPoint {
            grid_x: 0,
            grid_y: 0,
            stride: 16
        }
    );
    assert_eq!(
        points[41],
        AnchorPoint {
            grid_x: 1,
            grid_y: 0,
            stride: 32
        }
    );
}

#[test]
fn decode_places_boxes_in_model_pixels() {
    // 32x32 input: 16 anchors at stride 8, 4 at 16, 1 at 32; 2 classes.
    let n_cols = 7;
    let mut raw = vec![0f32; 21 * n_cols];
    // Anchor 6 = stride 8, cell (2, 1); anchor 19 = stride 16, cell (1, 1); 20 = stride 32.
    raw[6 * n_cols..7 * n_cols].copy_from_slice(&[0.5, 0.25, 0.0, 2f32.ln(), 0.9, 0.2, 0.5]);
    raw[19 * n_cols..20 * n_cols].copy_from_slice(&[-0.5, 0.0, 1f32.ln(), 0.0, 0.5, 0.8, 0.1]);
    raw[20 * n_cols..21 * n_cols].copy_from_slice(&[0.5, 0.5, 0.0, 0.0, 0.1, 0.3, 0.3]);
    let all = decode_outputs(&raw, n_cols, 32, 32, 0.0).unwrap();
    assert_eq!(all.len(), 21);
    let kept = decode_outputs(&raw, n_cols, 32, 32, 0.3).unwrap();
    assert_eq!(kept.len(), 2);
    assert_eq!(kept[0].anchor, 6);
    assert_eq!(kept[0].class_index, 1);
    assert!((kept[0].score - 0.45).abs() < 1e-6);
    let expect = [(0.5 + 2.0) * 8.0, (0.25 + 1.0) * 8.0, 8.0, 16.0];
    for (got, want) in kept[0].cxcywh_in_model.iter().zip(expect) {
        assert!((got - want).abs() < 1e-5, "{:?}", kept[0]);
    }
    assert_eq!(kept[1].anchor, 19);
    assert_eq!(kept[1].class_index, 0);
    assert_eq!(kept[1].cxcywh_in_model, [8.0, 16.0, 16.0, 16.0]);
    // Ties go to the first class.
    assert_eq!(all[20].class_index, 0);
    assert_eq!(all[20].cxcywh_in_model, [16.0, 16.0, 32.0, 32.0]);
}

#[test]
fn decode_rejects_a_mismatched_layout() {
    let raw = vec![0f32; 21 * 7];
    assert_eq!(
        decode_outputs(&raw, 7, 32, 48, 0.0),
        Err(YoloxDecodeError::InputSize {
            height: 32,
            width: 48
        })
    );
    assert_eq!(
        decode_outputs(&raw, 5, 32, 32, 0.0),
        Err(YoloxDecodeError::Columns { n_cols: 5 })
    );
    let err = decode_outputs(&raw, 7, 64, 32, 0.0).unwrap_err();
    assert!(
        matches!(err, YoloxDecodeError::Length { expected: 294, .. }),
        "{err}"
    );
}

#[test]
fn decode_drops_nan_scores() {
    let mut raw = vec![0f32; 21 * 6];
    raw[4] = f32::NAN;
    let kept = decode_outputs(&raw, 6, 32, 32, 0.0).unwrap();
    assert_eq!(kept.len(), 20);
    assert_ne!(kept[0].anchor, 0);
}

/// f16 (the CUDA dtype) gives the f32 answer to f16 precision.
#[test]
fn runs_in_f16() -> Result<()> {
    let tensors = Synthetic::tensors(true, 16, 1, 3);
    let dev = &Device::Cpu;
    let model32 = Yolox::load(VarBuilder::from_tensors(tensors.clone(), DType::F32, dev))?;
    let half: HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(k, t)| (k, t.to_dtype(DType::F16).unwrap()))
        .collect();
    let model16 = Yolox::load(VarBuilder::from_tensors(half, DType::F16, dev))?;
    let xs = Tensor::rand(0f32, 255., (1, 3, 64, 64), dev)?;
    let ys32 = model32.forward(&xs)?;
    let ys16 = model16.forward(&xs.to_dtype(DType::F16)?)?;
    assert_eq!(ys16.dtype(), DType::F16);
    let scores32 = ys32.narrow(2, 4, 4)?;
    let scores16 = ys16.narrow(2, 4, 4)?.to_dtype(DType::F32)?;
    let diff = max_abs_diff(&scores32, &scores16);
    assert!(diff < 0.02, "f16 vs f32 scores differ by {diff}");
    Ok(())
}

/// `cargo test --release --lib detect::yolox -- --ignored --nocapture`
#[test]
#[ignore = "timing, not a check"]
fn time_nano_forward_at_416_on_cpu() {
    let Some(model) = load_fixture_model("models/yolox_nano_fused.safetensors") else {
        return;
    };
    let xs = Tensor::rand(0f32, 255., (1, 3, 416, 416), &Device::Cpu).unwrap();
    for _ in 0..3 {
        model.forward(&xs).unwrap();
    }
    let mut ms: Vec<f64> = (0..10)
        .map(|_| {
            let start = Instant::now();
            model.forward(&xs).unwrap();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    eprintln!(
        "yolox-nano 416 CPU forward: median {:.1} ms, min {:.1} ms",
        ms[5], ms[0]
    );
}

fn post(conf: f32, classes: usize) -> PostprocessConfig {
    PostprocessConfig {
        conf,
        iou: 0.45,
        max_detections: 300,
        class_mask: vec![true; classes],
    }
}

#[test]
fn yolox_decodes_on_the_stride_grids() {
    // 32×32 input: level 8 has 4×4 anchors, 16 has 2×2, 32 has 1×1 → 21 anchors.
    let cols = 5 + 2;
    let mut out = vec![0.0f32; 21 * cols];
    // Anchor (gx=1, gy=2) on stride 8 is index 2*4+1 = 9.
    let row = &mut out[9 * cols..10 * cols];
    row.copy_from_slice(&[0.5, 0.25, 0.0, 1.0f32.ln(), 0.9, 0.2, 0.6]);
    // The stride-32 anchor, exactly at the threshold: YOLOX keeps `>= conf`.
    out[20 * cols..21 * cols].copy_from_slice(&[0.0, 0.0, 0.0, 0.0, 0.5, 0.6, 0.0]);
    let mut got = vec![];
    candidates_into(&out, 32, 32, false, &post(0.3, 2), &mut vec![], &mut got).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].class_id, 1);
    assert!((got[0].score - 0.54).abs() < 1e-6);
    let b = got[0].box_in_model;
    assert_eq!(b, BoxXyxy::from_center(12.0, 18.0, 8.0, 8.0));
    assert_eq!(
        (got[1].class_id, got[1].box_in_model),
        (0, BoxXyxy::from_center(0.0, 0.0, 32.0, 32.0))
    );
    // Reduced where the network runs (the test device: a GPU under scripts/gpu-check).
    let dev = crate::detect::device::test_device();
    let raw = candle_core::Tensor::from_slice(&out, (1, 21, cols), &dev).unwrap();
    let reduced: Vec<f32> = reduce_on_device(&raw)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(reduced.len(), 21 * REDUCED_COLUMNS);
    let mut again = vec![];
    candidates_into(
        &reduced,
        32,
        32,
        true,
        &post(0.3, 2),
        &mut vec![],
        &mut again,
    )
    .unwrap();
    assert_eq!(again, got);
}
