//! Checkpoint reading against the real fixtures, hand-made malicious and damaged files, and
//! a fuzz-style property test.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::DType;
use proptest::prelude::*;

use super::*;

/// A hand-written protocol-2 pickle.
#[derive(Default)]
struct PickleBytes(Vec<u8>);

impl PickleBytes {
    fn new() -> Self {
        PickleBytes(vec![0x80, 0x02])
    }
    fn op(&mut self, bytes: &[u8]) -> &mut Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn global(&mut self, module: &str, name: &str) -> &mut Self {
        self.op(format!("c{module}\n{name}\n").as_bytes())
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.op(b"X")
            .op(&(s.len() as u32).to_le_bytes())
            .op(s.as_bytes())
    }
    fn int(&mut self, i: i32) -> &mut Self {
        self.op(b"J").op(&i.to_le_bytes())
    }
    fn ints(&mut self, values: &[i32]) -> &mut Self {
        self.op(b"(");
        for &v in values {
            self.int(v);
        }
        self.op(b"t")
    }
    fn put(&mut self, key: u8) -> &mut Self {
        self.op(&[b'q', key])
    }
    fn get(&mut self, key: u8) -> &mut Self {
        self.op(&[b'h', key])
    }
    /// `_rebuild_tensor_v2(('storage', torch.<storage>, key, 'cpu', numel), offset, size, stride, False, OrderedDict())`.
    fn tensor(
        &mut self,
        storage: &str,
        key: &str,
        numel: i32,
        offset: i32,
        size: &[i32],
        stride: &[i32],
    ) -> &mut Self {
        self.global("torch._utils", "_rebuild_tensor_v2").op(b"(");
        self.op(b"(")
            .str("storage")
            .global("torch", storage)
            .str(key)
            .str("cpu")
            .int(numel)
            .op(b"tQ");
        self.int(offset).ints(size).ints(stride).op(b"\x89");
        self.global("collections", "OrderedDict")
            .op(b")R")
            .op(b"tR")
    }
    fn stop(&mut self) -> Vec<u8> {
        self.op(b".");
        self.0.clone()
    }
}

/// A zip checkpoint in a temp file: `archive/data.pkl` plus `archive/data/<key>` storages.
fn checkpoint_file(pickle: Option<&[u8]>, storages: &[(&str, Vec<u8>)]) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    let mut zip = zip::ZipWriter::new(file.reopen().unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    if let Some(pickle) = pickle {
        zip.start_file("archive/data.pkl", options).unwrap();
        zip.write_all(pickle).unwrap();
    }
    zip.start_file("archive/byteorder", options).unwrap();
    zip.write_all(b"little").unwrap();
    for (key, bytes) in storages {
        zip.start_file(format!("archive/data/{key}"), options)
            .unwrap();
        zip.write_all(bytes).unwrap();
    }
    zip.finish().unwrap();
    file
}

fn read_pickle(
    pickle: &[u8],
    storages: &[(&str, Vec<u8>)],
) -> Result<Vec<(String, Tensor)>, PickleError> {
    let file = checkpoint_file(Some(pickle), storages);
    read_checkpoint(file.path())
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn safetensors_f32(path: &Path) -> HashMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .filter(|(_, v)| v.dtype() == safetensors::Dtype::F32)
        .map(|(name, v)| {
            let values = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (name, (v.shape().to_vec(), values))
        })
        .collect()
}

fn tensor_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

// ---- real checkpoints ----

#[test]
fn yolov8n_pt_matches_the_ultralytics_safetensors_within_f16_rounding() {
    let (Some(pt), Some(st)) = (
        crate::fixtures::require("models/yolov8n-random.pt"),
        crate::fixtures::require("models/yolov8n-random.ultralytics.safetensors"),
    ) else {
        return;
    };
    let tensors = read_checkpoint(&pt).unwrap();
    let expected = safetensors_f32(&st);
    let floats: HashMap<_, _> = tensors
        .iter()
        .filter(|(_, t)| t.dtype().is_float())
        .cloned()
        .collect();
    assert!(floats.values().all(|t| t.dtype() == DType::F16));
    let mut names: Vec<_> = floats.keys().cloned().collect();
    let mut expected_names: Vec<_> = expected.keys().cloned().collect();
    names.sort();
    expected_names.sort();
    assert_eq!(names, expected_names);
    let mut max_diff = 0f32;
    for (name, (shape, values)) in &expected {
        let t = &floats[name];
        assert_eq!(t.dims(), shape.as_slice(), "{name}");
        for (a, b) in tensor_f32(t).iter().zip(values) {
            let diff = (a - b).abs();
            // f16 keeps 11 significant bits: half an ulp is 2^-11 relative (subnormals: 2^-25).
            assert!(diff <= b.abs() * 4.9e-4 + 3e-8, "{name}: {a} vs {b}");
            max_diff = max_diff.max(diff);
        }
    }
    eprintln!(
        "yolov8n-random.pt: {} tensors ({} f16), max |pt - safetensors| = {max_diff:e}",
        tensors.len(),
        floats.len()
    );
    assert!(tensors.iter().any(|(n, _)| n == "model.22.dfl.conv.weight"));
    assert!(tensors
        .iter()
        .any(|(n, _)| n == "model.2.m.0.cv1.conv.weight"));
}

#[test]
fn yolox_pth_is_bit_identical_to_the_safetensors() {
    let (Some(pth), Some(st)) = (
        crate::fixtures::require("models/yolox_nano.pth"),
        crate::fixtures::require("models/yolox_nano.safetensors"),
    ) else {
        return;
    };
    let tensors = read_checkpoint(&pth).unwrap();
    assert_eq!(tensors.len(), 642);
    let expected = safetensors_f32(&st);
    let floats: Vec<_> = tensors
        .iter()
        .filter(|(_, t)| t.dtype() == DType::F32)
        .collect();
    let ints = tensors
        .iter()
        .filter(|(_, t)| t.dtype() == DType::I64)
        .count();
    assert_eq!((floats.len(), ints, expected.len()), (538, 104, 538));
    for (name, t) in floats {
        let (shape, values) = &expected[name];
        assert_eq!(t.dims(), shape.as_slice(), "{name}");
        let bits: Vec<u32> = tensor_f32(t).iter().map(|v| v.to_bits()).collect();
        let expected_bits: Vec<u32> = values.iter().map(|v| v.to_bits()).collect();
        assert!(bits == expected_bits, "{name} differs");
    }
}

// ---- malicious pickles ----

fn assert_forbidden(pickle: &[u8], global: &str) {
    let err = read_pickle(pickle, &[]).unwrap_err();
    let message = err.to_string();
    assert!(
        matches!(&err, PickleError::ForbiddenGlobal { global: g, .. } if g == global),
        "{message}"
    );
    assert!(
        message.contains(global)
            && message.contains("malicious")
            && message.contains("not executed"),
        "{message}"
    );
}

#[test]
fn os_system_is_refused_and_not_run() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pwned");
    let command = format!("touch {}", marker.display());
    let pickle = PickleBytes::new()
        .global("os", "system")
        .put(0)
        .str(&command)
        .op(b"\x85R")
        .stop();
    assert_forbidden(&pickle, "os.system");
    assert!(!marker.exists(), "the command ran");
}

#[test]
fn eval_exec_getattr_and_posix_system_are_refused() {
    for (module, name) in [
        ("builtins", "eval"),
        ("builtins", "exec"),
        ("__builtin__", "eval"),
        ("builtins", "getattr"),
        ("posix", "system"),
        ("subprocess", "Popen"),
    ] {
        let pickle = PickleBytes::new()
            .global(module, name)
            .str("print(1)")
            .op(b"\x85R")
            .stop();
        assert_forbidden(&pickle, &format!("{module}.{name}"));
    }
}

#[test]
fn stack_global_is_checked_too() {
    // SHORT_BINUNICODE 'os', SHORT_BINUNICODE 'system', STACK_GLOBAL, ...
    let pickle = PickleBytes::new()
        .op(b"\x8c\x02os\x8c\x06system\x93")
        .str("id")
        .op(b"\x85R")
        .stop();
    assert_forbidden(&pickle, "os.system");
}

#[test]
fn forbidden_global_inside_a_real_looking_checkpoint_is_refused() {
    // {'model': OrderedDict(w=tensor), 'x': os.system('id')}
    let mut p = PickleBytes::new();
    p.op(b"}(")
        .str("model")
        .global("collections", "OrderedDict")
        .op(b")R");
    p.str("w")
        .tensor("FloatStorage", "0", 1, 0, &[1], &[1])
        .op(b"s");
    p.str("x").global("os", "system").str("id").op(b"\x85Ru");
    let err = read_pickle(&p.stop(), &[("0", f32_bytes(&[1.0]))]).unwrap_err();
    assert!(matches!(err, PickleError::ForbiddenGlobal { .. }), "{err}");
}

#[test]
fn memo_bomb_of_shared_lists_finishes_quickly() {
    // Level k is a list of 16 references to level k-1: 16^40 elements if copied.
    let mut p = PickleBytes::new();
    p.op(b"]").put(0);
    for _ in 0..40 {
        p.op(b"(");
        for _ in 0..16 {
            p.get(0);
        }
        p.op(b"l").put(0);
    }
    let start = Instant::now();
    let err = read_pickle(&p.stop(), &[]).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(
        matches!(&err, PickleError::NoTensors { found, .. } if found.contains("list of 16")),
        "{err}"
    );
}

#[test]
fn module_shared_many_times_cannot_explode_the_naming_walk() {
    // Module k has children `a` and `b`, both module k-1: 2^60 names if unfolded.
    let mut p = PickleBytes::new();
    p.global("torch.nn.modules.container", "Sequential").put(1);
    p.op(b")\x81}").str("_parameters").op(b"}").str("w");
    p.tensor("FloatStorage", "0", 1, 0, &[1], &[1])
        .op(b"ssb")
        .put(0);
    for _ in 0..60 {
        p.get(1)
            .op(b")\x81}")
            .str("_modules")
            .op(b"}(")
            .str("a")
            .get(0)
            .str("b")
            .get(0)
            .op(b"usb")
            .put(0);
    }
    let start = Instant::now();
    let err = read_pickle(&p.stop(), &[("0", f32_bytes(&[1.0]))]).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(matches!(err, PickleError::TooLarge { .. }), "{err}");
}

// ---- damaged or foreign files ----

#[test]
fn zip_without_data_pkl_is_not_a_checkpoint() {
    let file = checkpoint_file(None, &[("0", vec![0; 4])]);
    let err = read_checkpoint(file.path()).unwrap_err();
    assert!(matches!(err, PickleError::NoDataPkl { .. }));
    let message = err.to_string();
    assert!(
        message.contains("no data.pkl") && message.contains("safetensors"),
        "{message}"
    );
}

#[test]
fn truncated_and_garbage_pickles_are_errors() {
    let good = PickleBytes::new()
        .op(b"}")
        .str("w")
        .tensor("FloatStorage", "0", 2, 0, &[2], &[1])
        .op(b"s")
        .stop();
    assert_eq!(
        read_pickle(&good, &[("0", f32_bytes(&[1.0, 2.0]))])
            .unwrap()
            .len(),
        1
    );
    for cut in 0..good.len() - 1 {
        let err = read_pickle(&good[..cut], &[("0", f32_bytes(&[1.0, 2.0]))]).unwrap_err();
        assert!(
            matches!(err, PickleError::Malformed { .. }),
            "cut {cut}: {err}"
        );
    }
    let err = read_pickle(b"\xffgarbage", &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("byte 0: unknown or unsupported opcode 0xff"),
        "{err}"
    );
    let err = read_pickle(b"this is not a pickle", &[]).unwrap_err();
    assert!(
        matches!(err, PickleError::Malformed { offset: 0, .. }),
        "{err}"
    );
}

#[test]
fn transposed_view_is_gathered_in_row_major_order() {
    // storage [0..6], view size (3, 2) stride (1, 3): the transpose of [[0,1,2],[3,4,5]].
    let pickle = PickleBytes::new()
        .op(b"}")
        .str("t")
        .tensor("FloatStorage", "0", 6, 0, &[3, 2], &[1, 3])
        .op(b"s")
        .stop();
    let tensors = read_pickle(&pickle, &[("0", f32_bytes(&[0., 1., 2., 3., 4., 5.]))]).unwrap();
    assert_eq!(tensors[0].1.dims(), &[3, 2]);
    assert_eq!(tensor_f32(&tensors[0].1), vec![0., 3., 1., 4., 2., 5.]);
}

#[test]
fn offset_views_share_one_storage() {
    let mut p = PickleBytes::new();
    p.op(b"}(")
        .str("a")
        .tensor("HalfStorage", "0", 4, 0, &[2], &[1]);
    p.str("b")
        .tensor("HalfStorage", "0", 4, 2, &[2], &[1])
        .op(b"u");
    let halves: Vec<u8> = [1.0f32, 2.0, 3.0, 4.0]
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let tensors = read_pickle(&p.stop(), &[("0", halves)]).unwrap();
    assert_eq!(tensors[0].1.dtype(), DType::F16);
    assert_eq!(tensor_f32(&tensors[1].1), vec![3.0, 4.0]);
}

#[test]
fn view_past_its_storage_is_refused() {
    let pickle = PickleBytes::new()
        .op(b"}")
        .str("w")
        .tensor("FloatStorage", "0", 4, 2, &[3], &[1])
        .op(b"s")
        .stop();
    let err = read_pickle(&pickle, &[("0", f32_bytes(&[0.; 4]))]).unwrap_err();
    assert!(err.to_string().contains("reaches element 4"), "{err}");
}

#[test]
fn storage_shorter_than_declared_is_refused() {
    let pickle = PickleBytes::new()
        .op(b"}")
        .str("w")
        .tensor("FloatStorage", "0", 4, 0, &[4], &[1])
        .op(b"s")
        .stop();
    let err = read_pickle(&pickle, &[("0", f32_bytes(&[0.; 3]))]).unwrap_err();
    assert!(
        matches!(err, PickleError::BadTensor { ref name, .. } if name == "w"),
        "{err}"
    );
}

#[test]
fn module_names_skip_none_and_non_persistent_buffers() {
    // BatchNorm-like module: params weight + None bias, buffers mean + non-persistent `tmp`,
    // child `sub` with its own weight.
    let mut p = PickleBytes::new();
    p.global("torch.nn.modules.batchnorm", "BatchNorm2d")
        .put(1)
        .op(b")\x81}(");
    p.str("_parameters")
        .op(b"}(")
        .str("weight")
        .tensor("FloatStorage", "0", 1, 0, &[1], &[1])
        .str("bias")
        .op(b"Nu");
    p.str("_buffers")
        .op(b"}(")
        .str("running_mean")
        .tensor("FloatStorage", "1", 1, 0, &[1], &[1]);
    p.str("tmp")
        .tensor("FloatStorage", "1", 1, 0, &[1], &[1])
        .op(b"u");
    p.str("_non_persistent_buffers_set")
        .global("__builtin__", "set")
        .op(b"]")
        .str("tmp")
        .op(b"a\x85R");
    p.str("_modules")
        .op(b"}")
        .str("sub")
        .get(1)
        .op(b")\x81}")
        .str("_parameters")
        .op(b"}")
        .str("weight");
    p.tensor("FloatStorage", "0", 1, 0, &[1], &[1])
        .op(b"ssbsub");
    let storages = [("0", f32_bytes(&[1.0])), ("1", f32_bytes(&[2.0]))];
    let names: Vec<String> = read_pickle(&p.stop(), &storages)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["weight", "running_mean", "sub.weight"]);
}

#[test]
fn training_checkpoint_uses_ema_module_then_state_dict_key() {
    // {'model': None, 'ema': Conv2d with weight}  (an ultralytics training checkpoint)
    let mut p = PickleBytes::new();
    p.op(b"}(").str("model").op(b"N").str("ema");
    p.global("torch.nn.modules.conv", "Conv2d")
        .op(b")\x81}")
        .str("_parameters")
        .op(b"}")
        .str("weight");
    p.tensor("FloatStorage", "0", 1, 0, &[1], &[1]).op(b"ssbu");
    let storages = [("0", f32_bytes(&[1.0]))];
    let tensors = read_pickle(&p.stop(), &storages).unwrap();
    assert_eq!(tensors[0].0, "weight");

    // {'epoch': 1, 'state_dict': {'head.w': t}}
    let mut p = PickleBytes::new();
    p.op(b"}(")
        .str("epoch")
        .int(1)
        .str("state_dict")
        .op(b"}")
        .str("head.w");
    p.tensor("FloatStorage", "0", 1, 0, &[1], &[1]).op(b"su");
    let tensors = read_pickle(&p.stop(), &storages).unwrap();
    assert_eq!(tensors[0].0, "head.w");
}

#[test]
fn checkpoint_dict_without_tensors_says_what_it_holds() {
    let pickle = PickleBytes::new()
        .op(b"}(")
        .str("epoch")
        .int(3)
        .str("model")
        .op(b"Nu")
        .stop();
    let err = read_pickle(&pickle, &[]).unwrap_err();
    assert!(err.to_string().contains("keys [`epoch`, `model`]"), "{err}");
}

// ---- no panics on arbitrary input ----

/// The data.pkl of a real checkpoint (`yolov8n` has modules, sets and BUILDs; `yolox` a
/// plain state_dict), when the fixtures are present.
fn real_data_pkl(yolov8: bool) -> Option<&'static [u8]> {
    static BYTES: std::sync::OnceLock<[Option<Vec<u8>>; 2]> = std::sync::OnceLock::new();
    let read = |fixture: &str, entry: &str| -> Option<Vec<u8>> {
        let path = crate::fixtures::require(fixture)?;
        let mut archive = zip::ZipArchive::new(File::open(path).ok()?).ok()?;
        let mut bytes = Vec::new();
        archive.by_name(entry).ok()?.read_to_end(&mut bytes).ok()?;
        Some(bytes)
    };
    let both = BYTES.get_or_init(|| {
        [
            read("models/yolox_nano.pth", "yolox_nano/data.pkl"),
            read("models/yolov8n-random.pt", "yolov8n-random/data.pkl"),
        ]
    });
    both[usize::from(yolov8)].as_deref()
}

/// Unpickles and names: whatever `bytes` are, this returns (an error or a result).
fn digest(bytes: &[u8]) {
    if let Ok(unpickled) = vm::unpickle(bytes) {
        let _ = state_dict::state_dict(&unpickled.root, unpickled.ops * 2 + 1024);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        digest(&bytes);
        bytes.insert(0, 0x80); // also as a would-be pickle
        digest(&bytes);
    }

    #[test]
    fn mutated_real_pickle_never_panics(
        yolov8 in any::<bool>(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let Some(original) = real_data_pkl(yolov8) else { return Ok(()) };
        let mut bytes = original.to_vec();
        for (at, byte) in edits {
            let at = at.index(bytes.len());
            bytes[at] = byte;
        }
        digest(&bytes);
        digest(&bytes[..cut.index(bytes.len())]);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

    /// Any view over any storage either reads exactly the elements a strided index names,
    /// or is refused; it never reads out of bounds.
    #[test]
    fn arbitrary_views_read_the_right_elements_or_fail(
        declared in 0i32..10,
        present in 0usize..10,
        offset in 0i32..10,
        dims in proptest::collection::vec((0i32..4, 0i32..5), 0..4),
    ) {
        let size: Vec<i32> = dims.iter().map(|d| d.0).collect();
        let stride: Vec<i32> = dims.iter().map(|d| d.1).collect();
        let values: Vec<f32> = (0..present).map(|i| i as f32).collect();
        let pickle = PickleBytes::new().op(b"}").str("t").tensor("FloatStorage", "0", declared, offset, &size, &stride).op(b"s").stop();
        if let Ok(tensors) = read_pickle(&pickle, &[("0", f32_bytes(&values))]) {
            let t = &tensors[0].1;
            let shape: Vec<usize> = size.iter().map(|&d| d as usize).collect();
            prop_assert_eq!(t.dims(), shape.as_slice());
            let numel: usize = shape.iter().product();
            let mut expected = Vec::with_capacity(numel);
            for flat in 0..numel {
                let (mut rest, mut at) = (flat, offset as usize);
                for (d, &s) in shape.iter().zip(&stride).rev() {
                    at += (rest % d) * s as usize;
                    rest /= d;
                }
                expected.push(values[at]);
            }
            prop_assert_eq!(tensor_f32(t), expected);
        }
    }
}

/// 200 cases in the test suite; `PROPTEST_CASES` (scripts/fuzz) asks for a long run.
fn fuzz_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200)
}

// ---- class names (`model.names`) ----

/// `{'ema': None, 'model': DetectionModel}` as ultralytics saves it, the model holding the
/// few tensors that make it a YOLOv8 (`model.0.conv.weight`, a detect head's
/// `model.22.cv2.0.2.weight` and `model.22.dfl.conv.weight`) and, when `names` writes one, a `names` attribute.
fn ultralytics_pickle(module_key: &str, names: impl FnOnce(&mut PickleBytes)) -> Vec<u8> {
    let other = if module_key == "model" {
        "ema"
    } else {
        "model"
    };
    let mut p = PickleBytes::new();
    p.op(b"}(").str(other).op(b"N").str(module_key);
    p.global("ultralytics.nn.tasks", "DetectionModel")
        .op(b")\x81}(")
        .str("_parameters")
        .op(b"}(")
        .str("model.0.conv.weight")
        .tensor("FloatStorage", "0", 1, 0, &[1, 1, 1, 1], &[1, 1, 1, 1])
        .str("model.2.m.0.cv1.conv.weight")
        .tensor("FloatStorage", "0", 1, 0, &[1, 1, 1, 1], &[1, 1, 1, 1])
        .str("model.22.cv2.0.2.weight")
        .tensor("FloatStorage", "0", 1, 0, &[1, 1, 1, 1], &[1, 1, 1, 1])
        .str("model.22.dfl.conv.weight")
        .tensor("FloatStorage", "0", 1, 0, &[1, 1, 1, 1], &[1, 1, 1, 1])
        .op(b"u");
    names(&mut p);
    p.op(b"ubu");
    p.stop()
}

/// Writes `'names': {0: n0, 1: n1, …}` (ids as given) into the state being built.
fn names_dict<'a>(ids_and_names: &'a [(i32, &'a str)]) -> impl FnOnce(&mut PickleBytes) + 'a {
    move |p| {
        p.str("names").op(b"}(");
        for &(id, name) in ids_and_names {
            p.int(id).str(name);
        }
        p.op(b"u");
    }
}

fn class_names_of(pickle: &[u8]) -> Option<Vec<String>> {
    let file = checkpoint_file(Some(pickle), &[("0", f32_bytes(&[1.0]))]);
    let contents = read_contents(file.path()).unwrap();
    assert!(!contents.tensors.is_empty());
    contents.class_names
}

#[test]
fn custom_names_are_read_from_the_model_object() {
    let pickle = ultralytics_pickle("model", names_dict(&[(0, "stop sign"), (1, "tram")]));
    assert_eq!(
        class_names_of(&pickle),
        Some(vec!["stop sign".to_string(), "tram".to_string()])
    );
    // Insertion order does not matter, the ids do.
    let pickle = ultralytics_pickle("model", names_dict(&[(1, "tram"), (0, "stop sign")]));
    assert_eq!(
        class_names_of(&pickle),
        Some(vec!["stop sign".to_string(), "tram".to_string()])
    );
}

#[test]
fn names_of_the_ema_module_are_used_when_model_is_none() {
    let pickle = ultralytics_pickle("ema", names_dict(&[(0, "car"), (1, "van")]));
    assert_eq!(
        class_names_of(&pickle),
        Some(vec!["car".to_string(), "van".to_string()])
    );
}

#[test]
fn yolov5_style_name_lists_and_string_ids_are_accepted() {
    let pickle = ultralytics_pickle("model", |p| {
        p.str("names").op(b"](").str("car").str("truck").op(b"e");
    });
    assert_eq!(
        class_names_of(&pickle),
        Some(vec!["car".to_string(), "truck".to_string()])
    );
    let pickle = ultralytics_pickle("model", |p| {
        p.str("names")
            .op(b"}(")
            .str("1")
            .str("b")
            .str("0")
            .str("a")
            .op(b"u");
    });
    assert_eq!(
        class_names_of(&pickle),
        Some(vec!["a".to_string(), "b".to_string()])
    );
}

#[test]
fn names_under_the_model_yaml_are_a_fallback() {
    let pickle = ultralytics_pickle("model", |p| {
        p.str("yaml")
            .op(b"}(")
            .str("nc")
            .int(1)
            .str("names")
            .op(b"]")
            .str("sign")
            .op(b"au");
    });
    assert_eq!(class_names_of(&pickle), Some(vec!["sign".to_string()]));
}

#[test]
fn absent_placeholder_and_malformed_names_give_none() {
    // No `names` at all.
    assert_eq!(class_names_of(&ultralytics_pickle("model", |_| {})), None);
    // ultralytics' placeholders for a model never trained on named data are read as they
    // are (`ClassNames::for_model` decides what they are worth).
    let placeholders = ultralytics_pickle("model", names_dict(&[(0, "0"), (1, "1"), (2, "2")]));
    assert_eq!(
        class_names_of(&placeholders),
        Some(vec!["0".to_string(), "1".to_string(), "2".to_string()])
    );
    // Empty, not a dict, a name that is not a string, a key that is not an id.
    assert_eq!(
        class_names_of(&ultralytics_pickle("model", names_dict(&[]))),
        None
    );
    let not_a_dict = ultralytics_pickle("model", |p| {
        p.str("names").int(3);
    });
    assert_eq!(class_names_of(&not_a_dict), None);
    let int_name = ultralytics_pickle("model", |p| {
        p.str("names").op(b"}").int(0).int(7).op(b"s");
    });
    assert_eq!(class_names_of(&int_name), None);
    let none_key = ultralytics_pickle("model", |p| {
        p.str("names").op(b"}").op(b"N").str("car").op(b"s");
    });
    assert_eq!(class_names_of(&none_key), None);
    // A plain state_dict has no names.
    let state_dict = PickleBytes::new()
        .op(b"}")
        .str("w")
        .tensor("FloatStorage", "0", 1, 0, &[1], &[1])
        .op(b"s")
        .stop();
    assert_eq!(class_names_of(&state_dict), None);
}

#[test]
fn names_with_gaps_in_their_ids_are_ignored() {
    for ids in [
        &[(0, "car"), (2, "truck")][..],
        &[(1, "car"), (2, "truck")][..],
        &[(-1, "car"), (0, "truck")][..],
    ] {
        let pickle = ultralytics_pickle("model", names_dict(ids));
        let file = checkpoint_file(Some(&pickle), &[("0", f32_bytes(&[1.0]))]);
        let (contents, log) = with_log(|| read_contents(file.path()).unwrap());
        assert_eq!(contents.class_names, None, "{ids:?}");
        assert!(
            log.contains("WARN")
                && log.contains(&file.path().display().to_string())
                && log.contains("not 0 to 1 without gaps"),
            "{log}"
        );
    }
    // Absent names are no warning.
    let file = checkpoint_file(
        Some(&ultralytics_pickle("model", |_| {})),
        &[("0", f32_bytes(&[1.0]))],
    );
    let (_, log) = with_log(|| read_contents(file.path()).unwrap());
    assert!(log.is_empty(), "{log}");
    let ids: Vec<i64> = (0..20).chain([25]).collect();
    assert_eq!(
        describe_ids(&ids),
        "[0, 1, 2, 3, 4, 5, …, 15, 16, 17, 18, 19, 25]"
    );
    assert_eq!(describe_ids(&[0, 2]), "[0, 2]");
}

#[test]
fn weights_read_gives_a_checkpoints_names_as_metadata() {
    let pickle = ultralytics_pickle("model", names_dict(&[(0, "stop sign"), (1, "tram")]));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("best.pt");
    let file = checkpoint_file(Some(&pickle), &[("0", f32_bytes(&[1.0]))]);
    std::fs::copy(file.path(), &path).unwrap();
    let weights = crate::detect::weights::Weights::read(&path).unwrap();
    assert_eq!(weights.metadata.len(), 1);
    assert_eq!(weights.metadata["names"], r#"["stop sign","tram"]"#);
    let classes =
        crate::detect::classes::ClassNames::for_model(2, &path, &weights.metadata).unwrap();
    assert_eq!((classes.name(0), classes.name(1)), ("stop sign", "tram"));

    // Without names the metadata stays empty, as before.
    let pickle = ultralytics_pickle("model", |_| {});
    let file = checkpoint_file(Some(&pickle), &[("0", f32_bytes(&[1.0]))]);
    std::fs::copy(file.path(), &path).unwrap();
    let weights = crate::detect::weights::Weights::read(&path).unwrap();
    assert!(weights.metadata.is_empty(), "{:?}", weights.metadata);
}

/// Runs `f` with this thread's log events written to a string, which is returned too.
fn with_log<T>(f: impl FnOnce() -> T) -> (T, String) {
    #[derive(Clone, Default)]
    struct Buffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Buffer {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer::default();
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (out, log)
}

const ULTRALYTICS_FIXTURES: [&str; 3] = [
    "models/yolo11n-random.pt",
    "models/yolo26n-random.pt",
    "models/yolov8n-random.pt",
];

/// The fixtures were built from yaml, never trained on a dataset: their `names` are
/// ultralytics' placeholders `{0: "0", …, 79: "79"}`, which name nothing: 80 classes get
/// COCO-80, exactly as before names were read from checkpoints.
#[test]
fn ultralytics_fixtures_with_placeholder_names_get_coco80() {
    for fixture in ULTRALYTICS_FIXTURES {
        let Some(pt) = crate::fixtures::require(fixture) else {
            return;
        };
        let pickle = data_pkl(&pt);
        let unpickled = vm::unpickle(&pickle).unwrap();
        let placeholders: Vec<String> = (0..80).map(|i| i.to_string()).collect();
        assert_eq!(
            class_names::class_names(&unpickled.root),
            class_names::ClassNames::Found(placeholders.clone()),
            "{fixture}"
        );
        assert_eq!(fixture_names(&pickle), placeholders, "{fixture}");

        let weights = crate::detect::weights::Weights::read(&pt).unwrap();
        assert!(weights.metadata.contains_key("names"), "{fixture}");
        let classes =
            crate::detect::classes::ClassNames::for_model(80, &pt, &weights.metadata).unwrap();
        assert_eq!(classes.len(), 80);
        assert_eq!(
            (classes.name(0), classes.name(1), classes.name(2)),
            ("person", "bicycle", "car"),
            "{fixture}"
        );
    }
}

/// The same genuine ultralytics checkpoints with their placeholders replaced by COCO's
/// names, as a `yolo11n.pt` trained on COCO holds them: the names come from the file.
#[test]
fn ultralytics_fixtures_with_real_names_give_those_names() {
    let coco: Vec<String> = crate::detect::classes::COCO80
        .iter()
        .map(|s| s.to_string())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for fixture in ULTRALYTICS_FIXTURES {
        let Some(pt) = crate::fixtures::require(fixture) else {
            return;
        };
        let renamed = dir.path().join("best.pt");
        rewrite_data_pkl(&pt, &renamed, |pickle| {
            rename_classes(pickle, |id| crate::detect::classes::COCO80[id].to_string())
        });
        let contents = read_contents(&renamed).unwrap();
        assert_eq!(contents.class_names.as_ref(), Some(&coco), "{fixture}");
        assert_eq!(
            contents.tensors.len(),
            read_checkpoint(&pt).unwrap().len(),
            "{fixture}"
        );

        let weights = crate::detect::weights::Weights::read(&renamed).unwrap();
        let classes =
            crate::detect::classes::ClassNames::for_model(80, &renamed, &weights.metadata).unwrap();
        assert_eq!(
            (classes.name(0), classes.name(1), classes.name(2)),
            ("person", "bicycle", "car"),
            "{fixture}"
        );
        assert_eq!(classes.name(79), "toothbrush");

        // Custom names reach the classes too (here: class 0 renamed).
        rewrite_data_pkl(&pt, &renamed, |pickle| {
            rename_classes(pickle, |id| {
                if id == 0 {
                    "pedestrian".to_string()
                } else {
                    format!("class {id}")
                }
            })
        });
        let weights = crate::detect::weights::Weights::read(&renamed).unwrap();
        let classes =
            crate::detect::classes::ClassNames::for_model(80, &renamed, &weights.metadata).unwrap();
        assert_eq!(
            (classes.name(0), classes.name(79)),
            ("pedestrian", "class 79")
        );
    }
}

/// The top-level `data.pkl` of a checkpoint.
fn data_pkl(path: &Path) -> Vec<u8> {
    let mut archive = zip::ZipArchive::new(File::open(path).unwrap()).unwrap();
    let top = find_top(&archive).unwrap();
    let mut bytes = Vec::new();
    archive
        .by_name(&format!("{top}data.pkl"))
        .unwrap()
        .read_to_end(&mut bytes)
        .unwrap();
    bytes
}

/// Copies the checkpoint at `from` to `to` with its `data.pkl` passed through `edit`.
fn rewrite_data_pkl(from: &Path, to: &Path, edit: impl FnOnce(&[u8]) -> Vec<u8>) {
    let edited = edit(&data_pkl(from));
    let mut archive = zip::ZipArchive::new(File::open(from).unwrap()).unwrap();
    let top = find_top(&archive).unwrap();
    let mut out = zip::ZipWriter::new(File::create(to).unwrap());
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let pickle_name = format!("{top}data.pkl");
    for index in 0..archive.len() {
        let entry = archive.by_index_raw(index).unwrap();
        if entry.name().unwrap() == pickle_name.as_str() {
            drop(entry);
            out.start_file(pickle_name.as_str(), options).unwrap();
            out.write_all(&edited).unwrap();
        } else {
            out.raw_copy_file(entry).unwrap();
        }
    }
    out.finish().unwrap();
}

/// The offset just past `'names'` `LONG_BINPUT`, `{`, `LONG_BINPUT`, `(` in a real
/// ultralytics pickle: where its `{id: name}` entries start.
fn names_entries_start(pickle: &[u8]) -> usize {
    let key = b"X\x05\x00\x00\x00names";
    let at = pickle
        .windows(key.len())
        .position(|w| w == key)
        .expect("the pickle has a `names` key")
        + key.len();
    assert_eq!(pickle[at], b'r');
    assert_eq!(&pickle[at + 5..at + 7], b"}r");
    assert_eq!(pickle[at + 11], b'(');
    at + 12
}

/// The fixture's class names as its pickle spells them: `K id`, `X len name`, `r memo`.
fn fixture_names(pickle: &[u8]) -> Vec<String> {
    let mut names = Vec::new();
    let mut at = names_entries_start(pickle);
    while pickle[at] == b'K' {
        let len = u32::from_le_bytes(pickle[at + 3..at + 7].try_into().unwrap()) as usize;
        assert_eq!(
            (pickle[at + 1] as usize, pickle[at + 2]),
            (names.len(), b'X')
        );
        names.push(String::from_utf8(pickle[at + 7..at + 7 + len].to_vec()).unwrap());
        assert_eq!(pickle[at + 7 + len], b'r');
        at += 7 + len + 5;
    }
    assert_eq!(pickle[at], b'u');
    names
}

/// The pickle with class `id` named `name(id)` instead of its placeholder.
fn rename_classes(pickle: &[u8], name: impl Fn(usize) -> String) -> Vec<u8> {
    let start = names_entries_start(pickle);
    let mut out = pickle[..start].to_vec();
    let mut at = start;
    while pickle[at] == b'K' {
        let id = pickle[at + 1] as usize;
        let len = u32::from_le_bytes(pickle[at + 3..at + 7].try_into().unwrap()) as usize;
        let new = name(id);
        out.extend_from_slice(&pickle[at..at + 3]);
        out.extend_from_slice(&(new.len() as u32).to_le_bytes());
        out.extend_from_slice(new.as_bytes());
        out.extend_from_slice(&pickle[at + 7 + len..at + 7 + len + 5]);
        at += 7 + len + 5;
    }
    out.extend_from_slice(&pickle[at..]);
    out
}
