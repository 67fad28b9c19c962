//! Where inference runs: parsing `--device` and opening it, with CUDA failures said in
//! words a user can act on ([`super::cuda_fault`]). There is no fallback to the CPU: a
//! CUDA run either runs on the GPU or stops with one of those messages.

use candle_core::Device;

use super::cuda_fault::{cuda_fault, CudaFault};
use super::error::{DetectError, Result};

/// Where inference runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    Cpu,
    Cuda(usize),
}

impl DeviceSpec {
    /// `cpu`, `cuda` or `cuda:N`.
    pub fn parse(s: &str) -> std::result::Result<DeviceSpec, String> {
        match s {
            "cpu" => Ok(DeviceSpec::Cpu),
            "cuda" | "gpu" => Ok(DeviceSpec::Cuda(0)),
            _ => s
                .strip_prefix("cuda:")
                .and_then(|n| n.parse().ok())
                .map(DeviceSpec::Cuda)
                .ok_or_else(|| format!("unknown device `{s}`; use cpu, cuda or cuda:N")),
        }
    }

    pub fn open(&self) -> Result<Device> {
        match self {
            DeviceSpec::Cpu => Ok(Device::Cpu),
            DeviceSpec::Cuda(n) => {
                if !candle_core::utils::cuda_is_available() {
                    return Err(DetectError::Device(
                        self.to_string(),
                        "this lookout was built without CUDA; rebuild with `cargo build --release --features cuda` (README: CUDA)".into(),
                    ));
                }
                Device::new_cuda(*n).map_err(|e| {
                    let e = super::error::without_backtrace(e);
                    let reason = match cuda_fault(&e) {
                        Some((CudaFault::NoSuchDevice, _)) => no_such_device(*n, gpu_count()),
                        Some((fault, code)) => format!("{} ({code})", fault.advice()),
                        None => e.to_string(),
                    };
                    DetectError::Device(self.to_string(), reason)
                })
            }
        }
    }
}

impl std::fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeviceSpec::Cpu => write!(f, "cpu"),
            DeviceSpec::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// The device model tests run on: `$LOOKOUT_TEST_DEVICE` (`cpu`, `cuda`, `cuda:N`), default
/// the CPU. `scripts/gpu-check` sets it to run the parity tests on a GPU.
///
/// # Panics
/// When the variable names a device that cannot be opened: a parity run asked for a GPU
/// must not quietly test the CPU.
pub fn test_device() -> Device {
    let name = std::env::var("LOOKOUT_TEST_DEVICE").unwrap_or_else(|_| "cpu".into());
    let spec = DeviceSpec::parse(&name).unwrap_or_else(|e| panic!("LOOKOUT_TEST_DEVICE: {e}"));
    spec.open()
        .unwrap_or_else(|e| panic!("LOOKOUT_TEST_DEVICE={name}: {e}"))
}

/// A model loaded from `weights` in `dtype` on the [`test_device`] and run on `input` (host,
/// f32, converted to `dtype` there): the model, the device's name and the output, back on
/// the host in f32. Shared by the families' parity tests.
#[cfg(test)]
pub(crate) fn forward_on_test_device<M>(
    weights: &std::path::Path,
    dtype: candle_core::DType,
    load: impl FnOnce(candle_nn::VarBuilder) -> candle_core::Result<M>,
    forward: impl FnOnce(&M, &candle_core::Tensor) -> candle_core::Result<candle_core::Tensor>,
    input: &candle_core::Tensor,
) -> (M, String, candle_core::Tensor) {
    let device = test_device();
    let vb = super::weights::Weights::read(weights)
        .unwrap()
        .into_var_builder(dtype, &device)
        .unwrap();
    let model = load(vb).unwrap();
    let input = input.to_device(&device).unwrap().to_dtype(dtype).unwrap();
    let output = forward(&model, &input).unwrap();
    assert_eq!(output.dtype(), dtype);
    let output = output
        .to_dtype(candle_core::DType::F32)
        .unwrap()
        .to_device(&Device::Cpu)
        .unwrap();
    (model, format!("{device:?}"), output)
}

/// The user-facing reason for `cuda:N` when the driver says the ordinal is invalid.
fn no_such_device(ordinal: usize, count: Option<usize>) -> String {
    match count {
        Some(0) => "there is no CUDA GPU on this machine; use --device cpu".into(),
        Some(1) => format!("there is no GPU {ordinal}: this machine has 1 CUDA GPU; use --device cuda:0"),
        Some(c) => format!(
            "there is no GPU {ordinal}: this machine has {c} CUDA GPUs; use --device cuda:0 … cuda:{}",
            c - 1
        ),
        None => format!("there is no GPU {ordinal} on this machine; `nvidia-smi -L` lists the GPUs (cuda:0 is the first)"),
    }
}

#[cfg(feature = "cuda")]
fn gpu_count() -> Option<usize> {
    use candle_core::cuda_backend::cudarc::driver::CudaContext;
    CudaContext::device_count().ok().map(|c| c.max(0) as usize)
}

#[cfg(not(feature = "cuda"))]
fn gpu_count() -> Option<usize> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!(DeviceSpec::parse("cpu"), Ok(DeviceSpec::Cpu));
        assert_eq!(DeviceSpec::parse("cuda"), Ok(DeviceSpec::Cuda(0)));
        assert_eq!(DeviceSpec::parse("cuda:3"), Ok(DeviceSpec::Cuda(3)));
        let err = DeviceSpec::parse("cuda:x").unwrap_err();
        assert!(err.contains("use cpu, cuda or cuda:N"), "{err}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_on_a_cpu_build_says_how_to_rebuild() {
        let err = DeviceSpec::Cuda(0).open().unwrap_err().to_string();
        assert!(err.contains("device `cuda:0` is not available"), "{err}");
        assert!(err.contains("--features cuda"), "{err}");
    }

    #[test]
    fn a_missing_gpu_number_names_the_ones_there() {
        assert_eq!(
            no_such_device(7, Some(1)),
            "there is no GPU 7: this machine has 1 CUDA GPU; use --device cuda:0"
        );
        assert!(no_such_device(7, Some(4)).ends_with("use --device cuda:0 … cuda:3"));
        assert!(no_such_device(1, Some(0)).contains("--device cpu"));
        assert!(no_such_device(7, None).contains("nvidia-smi -L"));
    }
}
