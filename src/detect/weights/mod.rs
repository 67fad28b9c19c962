//! Reading weights files into named f32 tensors, ready for a model's `load(vb)`.
//!
//! Formats are told apart by their first bytes, not their extension: a zip archive is a
//! PyTorch checkpoint (`.pt`/`.pth`, read by the data-only [`pickle`] reader), anything
//! else must be safetensors. Names are brought to the scheme the models are written
//! against ([`names`]) and BatchNorm is folded into the convolutions
//! ([`fold_batchnorm`]), so a model never sees `bn.*` tensors.

pub mod names;
pub mod pickle;
pub mod resolve;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use super::error::{DetectError, Result};
pub use names::NameScheme;

/// BatchNorm epsilon of both model families (ultralytics sets 1e-3; YOLOX's `init_yolo`
/// sets 1e-3 on every BatchNorm2d).
pub const BATCHNORM_EPS: f64 = 1e-3;

/// The tensors of one weights file, on the CPU in f32, named in the model's scheme.
#[derive(Debug)]
pub struct Weights {
    pub path: PathBuf,
    pub scheme: NameScheme,
    /// Scheme the file itself used (before translation).
    pub file_scheme: NameScheme,
    pub tensors: HashMap<String, Tensor>,
    /// safetensors `__metadata__`, or for a PyTorch checkpoint its class names as `names`
    /// (a JSON list; see `classes`).
    pub metadata: HashMap<String, String>,
}

impl Weights {
    /// Reads, translates and BN-folds the weights at `path`.
    pub fn read(path: &Path) -> Result<Weights> {
        let (tensors, metadata) = read_raw(path)?;
        let width = |name: &str| tensors.get(name).and_then(|t| t.dims().first().copied());
        let file_scheme = NameScheme::detect(tensors.keys().map(String::as_str), width)
            .map_err(|why| match why {
                names::Unrecognised::NoModel => DetectError::NotAModel {
                    path: path.to_path_buf(),
                    reason: format!(
                        "none of its {} tensors has a YOLOv8/YOLO11/YOLO26 (`net.*` or `model.N.*`) or YOLOX (`backbone.backbone.*`) name",
                        tensors.len()
                    ),
                },
                names::Unrecognised::Unsupported(what) => DetectError::UnsupportedModel {
                    path: path.to_path_buf(),
                    what,
                },
            })?;
        let (scheme, tensors) = match file_scheme {
            NameScheme::UltralyticsYolov8 => {
                let translated = tensors
                    .into_iter()
                    .filter_map(|(name, t)| names::ultralytics_to_candle(&name).map(|n| (n, t)))
                    .collect();
                (NameScheme::CandleYolov8, translated)
            }
            other => (other, tensors),
        };
        let tensors =
            fold_batchnorm(tensors, BATCHNORM_EPS).map_err(|reason| DetectError::BadWeights {
                path: path.to_path_buf(),
                reason,
            })?;
        Ok(Weights {
            path: path.to_path_buf(),
            scheme,
            file_scheme,
            tensors,
            metadata,
        })
    }

    /// Moves every tensor to `device` in `dtype`, for building the model.
    pub fn into_var_builder(
        self,
        dtype: DType,
        device: &Device,
    ) -> Result<candle_nn::VarBuilder<'static>> {
        let mut moved = HashMap::with_capacity(self.tensors.len());
        for (name, t) in self.tensors {
            moved.insert(name, t.to_device(device)?.to_dtype(dtype)?);
        }
        Ok(candle_nn::VarBuilder::from_tensors(moved, dtype, device))
    }
}

type RawTensors = (HashMap<String, Tensor>, HashMap<String, String>);

/// Reads every floating-point tensor of `path` as CPU f32, with the file's metadata.
fn read_raw(path: &Path) -> Result<RawTensors> {
    let bytes = std::fs::read(path).map_err(|cause| {
        if cause.kind() == std::io::ErrorKind::NotFound {
            DetectError::WeightsNotFound {
                path: path.to_path_buf(),
                hint: String::from("; check the path, or use --model NAME"),
            }
        } else {
            DetectError::Io {
                path: path.to_path_buf(),
                cause,
            }
        }
    })?;
    if bytes.starts_with(b"PK\x03\x04") {
        let contents = pickle::read_contents(path).map_err(|e| DetectError::BadWeights {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let tensors = to_f32_map(contents.tensors.into_iter(), path)?;
        return Ok((tensors, checkpoint_metadata(contents.class_names)));
    }
    if bytes.starts_with(&[0x80]) {
        return Err(DetectError::NotAModel {
            path: path.to_path_buf(),
            reason: "a legacy (pre-1.6, non-zip) PyTorch pickle; re-save it with `torch.save(obj, f)` from a current PyTorch, or convert it to safetensors".into(),
        });
    }
    if !looks_like_safetensors(&bytes) {
        return Err(DetectError::NotAModel {
            path: path.to_path_buf(),
            reason: describe_unknown(&bytes),
        });
    }
    read_safetensors(&bytes, path)
}

/// A checkpoint's class names as metadata `names`, a JSON list in class-id order (the
/// form `classes` reads from safetensors metadata); none when the checkpoint has none.
fn checkpoint_metadata(class_names: Option<Vec<String>>) -> HashMap<String, String> {
    let mut metadata = HashMap::new();
    if let Some(names) = class_names {
        metadata.insert(
            "names".to_string(),
            serde_json::Value::from(names).to_string(),
        );
    }
    metadata
}

/// safetensors starts with its JSON header's length (8 bytes, little-endian, within the
/// file), then the header's `{`.
fn looks_like_safetensors(bytes: &[u8]) -> bool {
    let Some((len, rest)) = bytes.split_first_chunk::<8>() else {
        return false;
    };
    let len = u64::from_le_bytes(*len);
    len >= 2 && len <= rest.len() as u64 && rest.first() == Some(&b'{')
}

/// What a file that is none of the weights formats looks like: its first bytes, in hex
/// and as text, a guess where the bytes are telling, and the formats tried (issue 12: a
/// garbage `.pth` was described as a bad safetensors header).
pub fn describe_unknown(bytes: &[u8]) -> String {
    const TRIED: &str = "tried a PyTorch zip checkpoint (starts `PK\\x03\\x04`), a legacy PyTorch pickle (starts 0x80) and safetensors (an 8-byte header length, then `{`)";
    if bytes.is_empty() {
        return format!("the file is empty; {TRIED}");
    }
    let head = &bytes[..bytes.len().min(16)];
    let hex = head
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ");
    let text: String = head
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect();
    let guess = if bytes.starts_with(b"version https://git-lfs") {
        " (a Git LFS pointer, not the file: run `git lfs pull`)"
    } else if head.iter().take(15).any(|&b| b == b'<') && text.to_ascii_lowercase().contains("html")
    {
        " (an HTML page: a failed download?)"
    } else if bytes.starts_with(&[0x1f, 0x8b]) {
        " (gzip: unpack it first)"
    } else if bytes.starts_with(b"\x08") && bytes.windows(7).take(64).any(|w| w == b"pytorch") {
        " (an ONNX model: lookout reads the PyTorch or safetensors weights, not ONNX)"
    } else {
        ""
    };
    format!(
        "its first {} bytes are {hex} (\"{text}\"){guess}; {TRIED}",
        head.len()
    )
}

fn read_safetensors(bytes: &[u8], path: &Path) -> Result<RawTensors> {
    use candle_core::safetensors::Load;
    let not_safetensors = |e: safetensors::SafeTensorError| {
        let reason = match e {
            safetensors::SafeTensorError::HeaderTooSmall
            | safetensors::SafeTensorError::InvalidHeaderLength => {
                "not a safetensors file (its first 8 bytes are not a plausible header length)".to_string()
            }
            safetensors::SafeTensorError::MetadataIncompleteBuffer => {
                "a truncated safetensors file: the header lists more data than the file holds; download it again".to_string()
            }
            other => format!("not a valid safetensors file: {other}"),
        };
        DetectError::NotAModel {
            path: path.to_path_buf(),
            reason,
        }
    };
    let (_, header) = safetensors::SafeTensors::read_metadata(bytes).map_err(not_safetensors)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(bytes).map_err(not_safetensors)?;
    let mut named = Vec::with_capacity(st.len());
    for (name, view) in st.tensors() {
        named.push((name, view.load(&Device::Cpu)?));
    }
    Ok((to_f32_map(named.into_iter(), path)?, metadata))
}

/// Keeps floating-point tensors as f32; integer buffers (`num_batches_tracked`) are
/// dropped since inference never reads them.
fn to_f32_map(
    named: impl Iterator<Item = (String, Tensor)>,
    _path: &Path,
) -> Result<HashMap<String, Tensor>> {
    let mut out = HashMap::new();
    for (name, t) in named {
        if t.dtype().is_float() {
            out.insert(name, t.to_dtype(DType::F32)?);
        }
    }
    Ok(out)
}

/// Folds every `X.bn.*` into `X.conv.weight` and a new `X.conv.bias`:
/// `w' = w·γ/√(σ²+ε)`, `b' = β + (b − μ)·γ/√(σ²+ε)`. Files that are already fused (no
/// `bn.*`) pass through unchanged. The error names the tensor that is missing.
pub fn fold_batchnorm(
    mut tensors: HashMap<String, Tensor>,
    eps: f64,
) -> std::result::Result<HashMap<String, Tensor>, String> {
    let prefixes: Vec<String> = tensors
        .keys()
        .filter_map(|k| k.strip_suffix(".bn.weight").map(str::to_string))
        .collect();
    let take = |name: String, tensors: &mut HashMap<String, Tensor>| {
        tensors
            .remove(&name)
            .ok_or_else(|| format!("has no tensor `{name}` (needed to fold its BatchNorm)"))
    };
    for prefix in prefixes {
        let gamma = take(format!("{prefix}.bn.weight"), &mut tensors)?;
        let beta = take(format!("{prefix}.bn.bias"), &mut tensors)?;
        let mean = take(format!("{prefix}.bn.running_mean"), &mut tensors)?;
        let var = take(format!("{prefix}.bn.running_var"), &mut tensors)?;
        tensors.remove(&format!("{prefix}.bn.num_batches_tracked"));
        let weight_name = format!("{prefix}.conv.weight");
        let weight = take(weight_name.clone(), &mut tensors)?;
        let conv_bias = tensors.remove(&format!("{prefix}.conv.bias"));
        let folded = fold_one(&weight, conv_bias.as_ref(), &gamma, &beta, &mean, &var, eps)
            .map_err(|e| format!("cannot fold BatchNorm of `{prefix}`: {e}"))?;
        tensors.insert(weight_name, folded.0);
        tensors.insert(format!("{prefix}.conv.bias"), folded.1);
    }
    Ok(tensors)
}

fn fold_one(
    weight: &Tensor,
    conv_bias: Option<&Tensor>,
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> candle_core::Result<(Tensor, Tensor)> {
    let out = weight.dim(0)?;
    for (what, t) in [
        ("weight", gamma),
        ("bias", beta),
        ("running_mean", mean),
        ("running_var", var),
    ] {
        if t.dims() != [out] {
            candle_core::bail!(
                "bn.{what} has shape {:?}, expected [{out}] to match conv.weight {:?}",
                t.dims(),
                weight.dims()
            );
        }
    }
    // Folding in f64 keeps the folded weights as close as possible to the reference.
    let to64 = |t: &Tensor| t.to_dtype(DType::F64);
    let scale = (to64(gamma)? / (to64(var)? + eps)?.sqrt()?)?;
    let weight = to64(weight)?.broadcast_mul(&scale.reshape((out, 1, 1, 1))?)?;
    let shifted_mean = match conv_bias {
        Some(b) => (to64(b)? - to64(mean)?)?,
        None => to64(mean)?.neg()?,
    };
    let bias = ((shifted_mean * &scale)? + to64(beta)?)?;
    Ok((weight.to_dtype(DType::F32)?, bias.to_dtype(DType::F32)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folding_matches_batchnorm_applied_after_the_convolution() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let x = Tensor::randn(0f32, 1., (1, 3, 8, 8), &dev)?;
        let w = Tensor::randn(0f32, 1., (4, 3, 3, 3), &dev)?;
        let gamma = Tensor::new(&[1.5f32, 0.5, 2.0, 1.0], &dev)?;
        let beta = Tensor::new(&[0.1f32, -0.2, 0.3, 0.0], &dev)?;
        let mean = Tensor::new(&[0.5f32, -1.0, 0.0, 2.0], &dev)?;
        let var = Tensor::new(&[1.0f32, 4.0, 0.25, 0.5], &dev)?;
        let eps = 1e-3;
        let bn = |t: &Tensor| -> candle_core::Result<Tensor> {
            let r = |v: &Tensor| v.reshape((1, 4, 1, 1));
            t.broadcast_sub(&r(&mean)?)?
                .broadcast_div(&(r(&var)? + eps)?.sqrt()?)?
                .broadcast_mul(&r(&gamma)?)?
                .broadcast_add(&r(&beta)?)
        };
        let reference = bn(&x.conv2d(&w, 1, 1, 1, 1)?)?;
        let (fw, fb) = fold_one(&w, None, &gamma, &beta, &mean, &var, eps)?;
        let folded = x
            .conv2d(&fw, 1, 1, 1, 1)?
            .broadcast_add(&fb.reshape((1, 4, 1, 1))?)?;
        let diff = (reference - folded)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-4, "max diff {diff}");
        Ok(())
    }

    /// Issue 12 item 6: a garbage `.pth` names its first bytes and the formats tried.
    #[test]
    fn unknown_files_are_described_by_their_first_bytes_and_the_formats_tried() {
        let why = describe_unknown(b"GARBAGE!\x00\x01 and more bytes");
        assert!(why.contains("47 41 52 42 41 47 45 21 00 01"), "{why}");
        assert!(why.contains("\"GARBAGE!.. and m\""), "{why}");
        assert!(why.contains("zip") && why.contains("pickle") && why.contains("safetensors"));
        assert!(describe_unknown(b"").contains("empty"));
        assert!(
            describe_unknown(b"version https://git-lfs.github.com/spec/v1\n").contains("git lfs")
        );
        assert!(describe_unknown(b"<!DOCTYPE html><html>").contains("HTML"));
        let mut st = 2u64.to_le_bytes().to_vec();
        st.extend_from_slice(b"{}");
        assert!(looks_like_safetensors(&st));
        assert!(!looks_like_safetensors(b"GARBAGE!{}"));
    }

    #[test]
    fn folding_reports_the_missing_tensor() {
        let dev = Device::Cpu;
        let mut map = HashMap::new();
        map.insert(
            "a.bn.weight".to_string(),
            Tensor::ones(2, DType::F32, &dev).unwrap(),
        );
        let err = fold_batchnorm(map, 1e-3).unwrap_err();
        assert!(err.contains("a.bn.bias"), "{err}");
    }
}
