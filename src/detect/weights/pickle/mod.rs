//! PyTorch checkpoints (`.pt`, `.pth`): a zip archive holding `<top>/data.pkl` (the pickled
//! object graph) and `<top>/data/<key>` (raw little-endian storages).
//!
//! The pickle is read by our own data-only unpickler ([`vm`]): it executes nothing and
//! refuses every global outside a short allow-list ([`policy`]), so a malicious checkpoint
//! is reported, never run. The tensors found ([`state_dict`]) are then cut from their
//! storages into CPU tensors in their stored dtype, named as `state_dict()` names them.
//! An ultralytics checkpoint's class names (`model.names`) are read from the same data
//! ([`class_names`]).

mod class_names;
mod policy;
mod state_dict;
mod value;
mod vm;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use candle_core::{Device, Tensor};

use state_dict::NamingError;
use value::{StorageRef, TensorRef};
use vm::UnpickleErrorKind;

/// `data.pkl` larger than this is refused before reading (real ones are well under 10 MiB).
const MAX_PICKLE_BYTES: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum PickleError {
    #[error("cannot read PyTorch checkpoint {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a readable zip archive ({source}); a PyTorch checkpoint is a zip file: download it again or re-save it with torch.save")]
    Zip {
        path: PathBuf,
        #[source]
        source: zip::result::ZipError,
    },

    #[error("{path} is a zip archive but holds no data.pkl: not a PyTorch checkpoint; export the model to safetensors or re-save it with torch.save")]
    NoDataPkl { path: PathBuf },

    #[error("{path} references the Python global `{global}` (at byte {offset} of its data.pkl): a weights file never needs it, so the file may be malicious; it was not executed. Use only checkpoints from sources you trust, or export the model to safetensors")]
    ForbiddenGlobal {
        path: PathBuf,
        global: String,
        offset: usize,
    },

    #[error("{path}: data.pkl is not readable at byte {offset}: {reason}; the file is damaged or was not written by torch.save: download it again or export the model to safetensors")]
    Malformed {
        path: PathBuf,
        offset: usize,
        reason: String,
    },

    #[error("{path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },

    #[error("{path}: tensor `{name}`: {reason}; the checkpoint is damaged: download it again or re-save it")]
    BadTensor {
        path: PathBuf,
        name: String,
        reason: String,
    },

    #[error("{path} holds no tensors: its top-level object is {found}; expected a state_dict, a checkpoint dict with `model`/`ema`/`state_dict`, or a pickled nn.Module")]
    NoTensors { path: PathBuf, found: String },

    #[error("{path}: {reason}; refusing to read it, as no real model is built this way (the file may be crafted to exhaust memory)")]
    TooLarge { path: PathBuf, reason: String },
}

/// What a checkpoint holds for inference.
#[derive(Debug)]
pub struct Contents {
    /// As [`read_checkpoint`] returns them.
    pub tensors: Vec<(String, Tensor)>,
    /// The class names in class-id order, when the checkpoint names its classes (an
    /// ultralytics model's `names`; not its placeholders `{0: "0", …}`).
    pub class_names: Option<Vec<String>>,
}

/// Reads every tensor of a PyTorch checkpoint, named as `state_dict()` would name it, on
/// the CPU in its stored dtype (tensors of dtypes candle lacks, such as int8, are skipped).
pub fn read_checkpoint(path: &Path) -> Result<Vec<(String, Tensor)>, PickleError> {
    read_contents(path).map(|contents| contents.tensors)
}

/// [`read_checkpoint`], plus the class names the checkpoint carries. Names that are
/// absent or of an unexpected shape are `None`; a names dict whose ids are not `0..n` is
/// also `None`, with a warning.
pub fn read_contents(path: &Path) -> Result<Contents, PickleError> {
    let io = |source| PickleError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut archive = zip::ZipArchive::new(file).map_err(|source| PickleError::Zip {
        path: path.to_path_buf(),
        source,
    })?;
    let mut checkpoint = Checkpoint {
        path,
        top: find_top(&archive).ok_or_else(|| PickleError::NoDataPkl {
            path: path.to_path_buf(),
        })?,
        archive: &mut archive,
    };
    checkpoint.check_byteorder()?;
    let pickle = checkpoint.pickle()?;
    let unpickled = vm::unpickle(&pickle).map_err(|e| unpickle_error(path, e))?;
    let visit_budget = unpickled.ops.saturating_mul(2).saturating_add(1024);
    let named =
        state_dict::state_dict(&unpickled.root, visit_budget).map_err(|e| naming_error(path, e))?;
    let class_names = match class_names::class_names(&unpickled.root) {
        class_names::ClassNames::Found(names) => Some(names),
        class_names::ClassNames::Absent => None,
        class_names::ClassNames::BadIds(ids) => {
            tracing::warn!(
                path = %path.display(),
                "ignoring the checkpoint's class names: their ids {} are not 0 to {} without gaps or repeats; the classes get lookout's default names",
                describe_ids(&ids),
                ids.len() - 1
            );
            None
        }
    };
    drop(unpickled);
    // Views may share storages, but together they may not need much more than the file
    // holds: a bound that stops one storage from being fanned out into terabytes.
    let byte_budget = file_len.saturating_mul(4).saturating_add(1 << 20);
    let tensors = checkpoint.materialize(named, byte_budget)?;
    Ok(Contents {
        tensors,
        class_names,
    })
}

/// Sorted ids for a message: all of them when few, else the first and last few.
fn describe_ids(ids: &[i64]) -> String {
    const SHOWN: usize = 6;
    let join = |ids: &[i64]| {
        ids.iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    if ids.len() <= 2 * SHOWN {
        format!("[{}]", join(ids))
    } else {
        format!(
            "[{}, …, {}]",
            join(&ids[..SHOWN]),
            join(&ids[ids.len() - SHOWN..])
        )
    }
}

/// The archive's top folder: the one holding `data.pkl` (torch names it after the file).
fn find_top(archive: &zip::ZipArchive<File>) -> Option<String> {
    archive.file_names().find_map(|name| {
        let name = name.ok()?;
        let top = name.strip_suffix("data.pkl")?;
        let is_top_level = top.is_empty() || (top.ends_with('/') && top.matches('/').count() == 1);
        is_top_level.then(|| top.to_string())
    })
}

fn unpickle_error(path: &Path, e: vm::UnpickleError) -> PickleError {
    let path = path.to_path_buf();
    match e.kind {
        UnpickleErrorKind::Forbidden(global) => PickleError::ForbiddenGlobal {
            path,
            global,
            offset: e.offset,
        },
        kind => PickleError::Malformed {
            path,
            offset: e.offset,
            reason: kind.to_string(),
        },
    }
}

fn naming_error(path: &Path, e: NamingError) -> PickleError {
    let path = path.to_path_buf();
    match e {
        NamingError::NoTensors { found } => PickleError::NoTensors { path, found },
        NamingError::TooDeep => PickleError::TooLarge {
            path,
            reason: "its modules nest more than 256 levels deep".into(),
        },
        NamingError::TooManyVisits { budget } => PickleError::TooLarge {
            path,
            reason: format!(
                "its modules share children so often that naming its tensors takes over {budget} steps"
            ),
        },
    }
}

/// Storage bytes by (key, byte length).
type StorageCache = HashMap<(String, u64), Vec<u8>>;

struct Checkpoint<'a> {
    path: &'a Path,
    /// Prefix of every entry, `"<top>/"` (or empty).
    top: String,
    archive: &'a mut zip::ZipArchive<File>,
}

impl Checkpoint<'_> {
    /// The first `limit` bytes of `<top>/<name>` (fewer when the entry is shorter).
    fn entry(&mut self, name: &str, limit: u64) -> Result<Vec<u8>, PickleError> {
        let full = format!("{}{name}", self.top);
        let entry = self
            .archive
            .by_name(&full)
            .map_err(|source| PickleError::Zip {
                path: self.path.to_path_buf(),
                source,
            })?;
        let mut bytes = Vec::new();
        // Grows only as data really arrives: declared sizes are not trusted for allocation.
        entry
            .take(limit)
            .read_to_end(&mut bytes)
            .map_err(|source| PickleError::Io {
                path: self.path.to_path_buf(),
                source,
            })?;
        Ok(bytes)
    }

    fn pickle(&mut self) -> Result<Vec<u8>, PickleError> {
        let bytes = self.entry("data.pkl", MAX_PICKLE_BYTES + 1)?;
        if bytes.len() as u64 > MAX_PICKLE_BYTES {
            return Err(PickleError::TooLarge {
                path: self.path.to_path_buf(),
                reason: format!("its data.pkl exceeds {MAX_PICKLE_BYTES} bytes"),
            });
        }
        Ok(bytes)
    }

    fn check_byteorder(&mut self) -> Result<(), PickleError> {
        let full = format!("{}byteorder", self.top);
        if self.archive.index_for_name(&full).is_none() {
            return Ok(()); // older torch: always little-endian
        }
        let order = self.entry("byteorder", 16)?;
        match order.as_slice() {
            b"little" => Ok(()),
            other => Err(PickleError::Unsupported {
                path: self.path.to_path_buf(),
                reason: format!(
                    "its storages are `{}`-endian; only little-endian checkpoints are supported: re-save it on a little-endian machine",
                    String::from_utf8_lossy(other)
                ),
            }),
        }
    }

    /// Cuts every named view out of its storage (each storage read once, each view built once).
    fn materialize(
        &mut self,
        named: state_dict::Named,
        byte_budget: u64,
    ) -> Result<Vec<(String, Tensor)>, PickleError> {
        let mut storages = StorageCache::new();
        let mut built: HashMap<*const TensorRef, Tensor> = HashMap::new();
        let mut bytes_built = 0u64;
        let mut out = Vec::with_capacity(named.len());
        for (name, view) in named {
            if let Some(tensor) = built.get(&Rc::as_ptr(&view)) {
                out.push((name, tensor.clone()));
                continue;
            }
            let Some(dtype) = view.storage.dtype else {
                tracing::warn!(path = %self.path.display(), tensor = %name, storage = %view.storage.type_name, "skipping a tensor of a dtype candle cannot hold");
                continue;
            };
            let elem = dtype.size_in_bytes();
            bytes_built += (view.numel() as u64).saturating_mul(elem as u64);
            if bytes_built > byte_budget {
                return Err(PickleError::TooLarge {
                    path: self.path.to_path_buf(),
                    reason: format!(
                        "its views would take over {byte_budget} bytes, more than 4 times the file"
                    ),
                });
            }
            let storage = self.storage(&mut storages, &view.storage, elem, &name)?;
            let bytes = gather(storage, &view, elem);
            let tensor = Tensor::from_raw_buffer(&bytes, dtype, &view.shape, &Device::Cpu)
                .map_err(|e| self.bad_tensor(&name, e.to_string()))?;
            built.insert(Rc::as_ptr(&view), tensor.clone());
            out.push((name, tensor));
        }
        Ok(out)
    }

    /// The storage's bytes, read once per (key, size): two persistent ids may name the same
    /// key with different element counts, and each view is checked against its own.
    fn storage<'s>(
        &mut self,
        cache: &'s mut StorageCache,
        storage: &StorageRef,
        elem: usize,
        name: &str,
    ) -> Result<&'s [u8], PickleError> {
        let want = (storage.numel as u64).saturating_mul(elem as u64);
        let cache_key = (storage.key.clone(), want);
        if !cache.contains_key(&cache_key) {
            let entry = format!("data/{}", storage.key);
            let bytes = self.entry(&entry, want)?;
            if (bytes.len() as u64) < want {
                return Err(self.bad_tensor(
                    name,
                    format!(
                        "its storage {}{entry} holds {} bytes, but the pickle says {} elements of {} ({want} bytes)",
                        self.top,
                        bytes.len(),
                        storage.numel,
                        storage.type_name
                    ),
                ));
            }
            cache.insert(cache_key.clone(), bytes);
        }
        Ok(&cache[&cache_key])
    }

    fn bad_tensor(&self, name: &str, reason: String) -> PickleError {
        PickleError::BadTensor {
            path: self.path.to_path_buf(),
            name: name.to_string(),
            reason,
        }
    }
}

/// The view's elements in row-major order. The unpickler has checked that every index
/// lies inside the storage, whose bytes `materialize` has checked are all present.
fn gather(storage: &[u8], view: &TensorRef, elem: usize) -> Vec<u8> {
    let numel = view.numel();
    if numel == 0 {
        return Vec::new();
    }
    if is_contiguous(&view.shape, &view.stride) {
        let start = view.offset * elem;
        return storage[start..start + numel * elem].to_vec();
    }
    let mut out = Vec::with_capacity(numel * elem);
    let mut index = vec![0usize; view.shape.len()];
    for _ in 0..numel {
        let at: usize = view.offset
            + index
                .iter()
                .zip(&view.stride)
                .map(|(i, s)| i * s)
                .sum::<usize>();
        out.extend_from_slice(&storage[at * elem..(at + 1) * elem]);
        // Advance the row-major index, last dimension fastest.
        for dim in (0..index.len()).rev() {
            index[dim] += 1;
            if index[dim] < view.shape[dim] {
                break;
            }
            index[dim] = 0;
        }
    }
    out
}

/// Row-major contiguous; strides of size-1 dimensions do not matter.
fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1;
    for (&size, &step) in shape.iter().zip(stride).rev() {
        if size != 1 && step != expected {
            return false;
        }
        expected *= size;
    }
    true
}
