//! Which Python globals a checkpoint may name, and what each one means to the reader.
//!
//! Policy: a weights file is data. The reader never imports or calls anything: a global
//! only selects one of the fixed behaviours below, and every global not on this list is
//! refused the moment the pickle names it (`PickleError::ForbiddenGlobal`), before any later
//! opcode runs. Allowed are torch's tensor-rebuild functions and storage types,
//! `collections.OrderedDict`, `set`/`frozenset`, module classes under `torch.nn.modules.`,
//! `ultralytics.` and `yolox.` (kept as data containers, never instantiated), and a few
//! constructors of plain metadata (`torch.Size`, `torch.device`, dtypes, `_codecs.encode`,
//! numpy scalars/arrays) that are modelled as opaque values because weights never need them.

use candle_core::DType;

/// An allow-listed global, with the behaviour the reader gives it.
#[derive(Debug)]
pub struct Global {
    pub module: String,
    pub name: String,
    pub kind: GlobalKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalKind {
    /// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`.
    RebuildTensorV2,
    /// `torch._utils._rebuild_parameter(data, requires_grad, hooks)` and `_with_state`: the data.
    RebuildParameter,
    /// `torch._tensor._rebuild_from_type_v2(func, new_type, args, state)`: `func(*args)`.
    RebuildFromTypeV2,
    /// A storage type in a persistent id; `None` for element types candle has no dtype for.
    Storage(Option<DType>),
    OrderedDict,
    Set,
    /// A class whose instances are kept as data (`nn.Module`s and framework helpers).
    DataClass,
    /// A constructor of metadata weights never need: calling it yields an opaque value.
    OpaqueConstructor,
    /// A constant (`torch.float16`, `torch.nn.parameter.Parameter` as a type argument).
    Constant,
}

impl Global {
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.module, self.name)
    }
}

/// Module prefixes whose classes are model containers (instances carry only data here).
const DATA_CLASS_PREFIXES: [&str; 3] = ["torch.nn.modules.", "ultralytics.", "yolox."];

/// torch dtypes, which pickle as globals such as `torch.float16`.
const TORCH_DTYPES: [&str; 14] = [
    "float16", "float32", "float64", "bfloat16", "half", "float", "double", "int64", "int32",
    "int16", "int8", "uint8", "bool", "long",
];

/// The behaviour of `module.name`, or `None` when a weights file has no business naming it.
pub fn classify(module: &str, name: &str) -> Option<GlobalKind> {
    // Protocol-2 pickles from Python 2 name builtins `__builtin__`.
    let module = if module == "__builtin__" {
        "builtins"
    } else {
        module
    };
    let kind = match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => GlobalKind::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            GlobalKind::RebuildParameter
        }
        ("torch._tensor", "_rebuild_from_type_v2") => GlobalKind::RebuildFromTypeV2,
        ("torch", storage) if storage.ends_with("Storage") => {
            GlobalKind::Storage(storage_dtype(storage)?)
        }
        ("collections", "OrderedDict") => GlobalKind::OrderedDict,
        ("builtins", "set" | "frozenset") => GlobalKind::Set,
        ("torch", "Size" | "device") | ("_codecs", "encode") => GlobalKind::OpaqueConstructor,
        ("numpy.core.multiarray" | "numpy._core.multiarray", "_reconstruct" | "scalar") => {
            GlobalKind::OpaqueConstructor
        }
        ("numpy", "ndarray" | "dtype") => GlobalKind::OpaqueConstructor,
        ("torch", dtype) if TORCH_DTYPES.contains(&dtype) => GlobalKind::Constant,
        ("torch", "Tensor") | ("torch.nn.parameter", "Parameter") => GlobalKind::Constant,
        _ if is_data_class(module) => GlobalKind::DataClass,
        _ => return None,
    };
    Some(kind)
}

fn is_data_class(module: &str) -> bool {
    DATA_CLASS_PREFIXES
        .iter()
        .any(|prefix| module.starts_with(prefix) || module == &prefix[..prefix.len() - 1])
}

/// The candle dtype of a torch storage type: `Some(None)` for a known storage candle cannot
/// hold, `None` for an unknown name (refused like any other unknown global).
fn storage_dtype(storage: &str) -> Option<Option<DType>> {
    let dtype = match storage {
        "FloatStorage" => Some(DType::F32),
        "HalfStorage" => Some(DType::F16),
        "BFloat16Storage" => Some(DType::BF16),
        "DoubleStorage" => Some(DType::F64),
        "LongStorage" => Some(DType::I64),
        "IntStorage" => Some(DType::I32),
        "ShortStorage" => Some(DType::I16),
        "ByteStorage" | "BoolStorage" | "UntypedStorage" => Some(DType::U8),
        "CharStorage" | "ComplexFloatStorage" | "ComplexDoubleStorage" => None,
        _ => return None,
    };
    Some(dtype)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_code_execution_globals() {
        for (module, name) in [
            ("os", "system"),
            ("posix", "system"),
            ("nt", "system"),
            ("builtins", "eval"),
            ("builtins", "exec"),
            ("builtins", "getattr"),
            ("__builtin__", "eval"),
            ("subprocess", "Popen"),
            ("torch", "load"),
            ("torch.storage", "_load_from_bytes"),
            ("ultralytics_evil", "x"),
            ("torch.nn", "functional"),
        ] {
            assert_eq!(classify(module, name), None, "{module}.{name}");
        }
    }

    #[test]
    fn allows_what_checkpoints_use() {
        assert_eq!(
            classify("torch", "HalfStorage"),
            Some(GlobalKind::Storage(Some(DType::F16)))
        );
        assert_eq!(classify("__builtin__", "set"), Some(GlobalKind::Set));
        assert_eq!(
            classify("ultralytics.nn.tasks", "DetectionModel"),
            Some(GlobalKind::DataClass)
        );
        assert_eq!(
            classify("torch.nn.modules.conv", "Conv2d"),
            Some(GlobalKind::DataClass)
        );
        assert_eq!(classify("torch", "NotAStorage"), None);
    }
}
