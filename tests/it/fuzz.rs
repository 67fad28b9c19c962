//! Fuzzing of every parser that reads files a user or the internet hands us: calibration
//! importers (lookout TOML, OpenCV/ROS YAML, KITTI), KITTI labels, drive manifests and
//! indexes, and the weights loaders' headers (safetensors; the pickle reader has its own
//! property tests beside it). Inputs are random bytes and random edits of real files; the
//! property is "an error or a value, never a panic".
//!
//! CI runs a short pass; `scripts/fuzz` runs a long one (`LOOKOUT_FUZZ_CASES`).

use std::path::{Path, PathBuf};

use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("LOOKOUT_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(48)
}

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// A seed with random byte replacements, insertions and deletions.
fn mutated(seed: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = seed.len().max(1);
    prop::collection::vec((0..len, any::<u8>(), 0u8..3), 0..12).prop_map(move |edits| {
        let mut bytes = seed.clone();
        for (at, byte, kind) in edits {
            let at = at.min(bytes.len());
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        bytes
    })
}

fn text_inputs(seeds: &[PathBuf]) -> impl Strategy<Value = String> {
    let seeds: Vec<Vec<u8>> = seeds.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let mutations = prop::sample::select(seeds).prop_flat_map(mutated);
    prop_oneof![mutations, prop::collection::vec(any::<u8>(), 0..400)]
        .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
}

fn calib_seeds(ext: &[&str]) -> Vec<PathBuf> {
    let mut seeds = vec![];
    for dir in ["calibration", "tests/data/calib"] {
        for entry in std::fs::read_dir(repo(dir)).unwrap() {
            let p = entry.unwrap().path();
            if p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| ext.contains(&e))
            {
                seeds.push(p);
            }
        }
    }
    assert!(!seeds.is_empty(), "no seed files for {ext:?}");
    seeds
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn calibration_toml_never_panics(text in text_inputs(&calib_seeds(&["toml"]))) {
        let _ = lookout::calib::toml_format::parse(&text, "fuzz.toml");
    }

    #[test]
    fn calibration_yaml_never_panics(text in text_inputs(&calib_seeds(&["yml", "yaml"]))) {
        let _ = lookout::calib::import::parse_yaml(&text, "fuzz.yaml");
    }

    #[test]
    fn calibration_kitti_never_panics(text in text_inputs(&calib_seeds(&["txt"]))) {
        let _ = lookout::calib::import::parse_kitti(&text, "fuzz.txt");
    }

    #[test]
    fn kitti_labels_never_panic(text in text_inputs(&[
        repo("../shared/fixtures/kitti/object/label_2/000001.txt"),
    ].into_iter().filter(|p| p.exists()).chain([repo("tests/data/calib/kitti_calib_cam_to_cam.txt")]).collect::<Vec<_>>())) {
        let _ = lookout::calib::eval::parse_kitti_labels(&text, Path::new("fuzz_labels.txt"));
    }

    #[test]
    fn drive_index_lines_never_panic(line in text_inputs(&[repo("tests/data/fuzz/index.csv")])) {
        for l in line.lines() {
            let _ = lookout::drive::index::IndexEntry::parse(l);
        }
    }
}

proptest! {
    // These write files: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(cases() / 4 + 1))]

    #[test]
    fn drive_manifest_and_index_never_panic(
        manifest in text_inputs(&[repo("tests/data/fuzz/drive.toml")]),
        index in text_inputs(&[repo("tests/data/fuzz/index.csv")]),
    ) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("frames")).unwrap();
        std::fs::write(dir.path().join("drive.toml"), manifest).unwrap();
        std::fs::write(dir.path().join("index.csv"), index).unwrap();
        use lookout::source::FrameSource;
        if let Ok(mut reader) = lookout::source::DriveReader::open(dir.path()) {
            for _ in 0..4 {
                match reader.next_frame() {
                    Ok(Some(_)) => {}
                    _ => break,
                }
            }
        }
    }

    #[test]
    fn safetensors_headers_never_panic(bytes in prop_oneof![
        mutated(safetensors_seed()),
        prop::collection::vec(any::<u8>(), 0..256),
    ]) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fuzz.safetensors");
        std::fs::write(&path, bytes).unwrap();
        let _ = lookout::detect::weights::Weights::read(&path);
    }
}

/// A small real safetensors file: header, metadata, two tensors.
fn safetensors_seed() -> Vec<u8> {
    let dev = candle_core::Device::Cpu;
    let mut tensors = std::collections::HashMap::new();
    tensors.insert(
        "model.0.conv.weight".to_string(),
        candle_core::Tensor::zeros((2, 3, 1, 1), candle_core::DType::F32, &dev).unwrap(),
    );
    tensors.insert(
        "model.0.bn.weight".to_string(),
        candle_core::Tensor::ones(2, candle_core::DType::F16, &dev).unwrap(),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.safetensors");
    candle_core::safetensors::save(&tensors, &path).unwrap();
    std::fs::read(path).unwrap()
}
