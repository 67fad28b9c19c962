//! What a CUDA failure means in words a user can act on.
//!
//! CUDA reports failures as status codes (`CUresult` from the driver, `cublasStatus_t`
//! from cuBLAS) wrapped by cudarc and then by candle. [`CudaFault`] classifies the codes a
//! user can do something about (no driver, no GPU, a GPU that does not exist, a driver
//! older than the toolkit, kernels built for another GPU, out of memory) from their values
//! in `cuda.h` / `cublas_api.h`, and [`cuda_fault`] finds such a code inside a candle
//! error. Both the device opening ([`super::device`]) and the detector's errors
//! ([`super::error`]) read it.

/// A CUDA failure a user can act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CudaFault {
    /// The NVIDIA driver is not installed or not loaded (the toolkit's stub library, or no
    /// kernel module).
    NoDriver,
    /// The driver works but sees no GPU.
    NoDevice,
    /// `cuda:N` with N past the last GPU.
    NoSuchDevice,
    /// The driver is older than the CUDA toolkit lookout was built with.
    DriverTooOld,
    /// candle's kernels were compiled for a newer GPU than this one.
    NoKernelForGpu,
    /// Device memory is exhausted.
    OutOfMemory,
    /// The GPU is in exclusive mode and taken, or otherwise unavailable.
    Busy,
}

impl CudaFault {
    /// Classifies a `CUresult` value (the numbers of `cuda.h`, the same in every CUDA
    /// version); `None` for codes with no specific advice.
    pub fn from_driver_code(code: u32) -> Option<CudaFault> {
        Some(match code {
            // CUDA_ERROR_OUT_OF_MEMORY
            2 => CudaFault::OutOfMemory,
            // CUDA_ERROR_STUB_LIBRARY, CUDA_ERROR_NOT_INITIALIZED (cuInit failed),
            // CUDA_ERROR_SYSTEM_NOT_READY (fabric manager / driver not up)
            34 | 3 | 802 => CudaFault::NoDriver,
            // CUDA_ERROR_UNSUPPORTED_PTX_VERSION (the kernels' PTX is newer than the driver's
            // JIT), CUDA_ERROR_SYSTEM_DRIVER_MISMATCH, CUDA_ERROR_COMPAT_NOT_SUPPORTED_ON_DEVICE
            222 | 803 | 804 => CudaFault::DriverTooOld,
            // CUDA_ERROR_NO_DEVICE
            100 => CudaFault::NoDevice,
            // CUDA_ERROR_INVALID_DEVICE
            101 => CudaFault::NoSuchDevice,
            // CUDA_ERROR_NO_BINARY_FOR_GPU, CUDA_ERROR_INVALID_PTX
            209 | 218 => CudaFault::NoKernelForGpu,
            // CUDA_ERROR_DEVICE_UNAVAILABLE, CUDA_ERROR_CONTEXT_ALREADY_IN_USE
            46 | 216 => CudaFault::Busy,
            _ => return None,
        })
    }

    /// Classifies a `cublasStatus_t` value (`cublas_api.h`).
    pub fn from_cublas_code(code: u32) -> Option<CudaFault> {
        Some(match code {
            // CUBLAS_STATUS_ALLOC_FAILED
            3 => CudaFault::OutOfMemory,
            // CUBLAS_STATUS_NOT_INITIALIZED (no context: usually the driver)
            1 => CudaFault::NoDriver,
            // CUBLAS_STATUS_ARCH_MISMATCH
            8 => CudaFault::NoKernelForGpu,
            _ => return None,
        })
    }

    /// The cause and the fix, in one clause each.
    pub fn advice(self) -> &'static str {
        match self {
            CudaFault::NoDriver => {
                "the NVIDIA driver is not installed or not loaded; install the driver (nvidia-smi must list the GPU), or use --device cpu"
            }
            CudaFault::NoDevice => {
                "the NVIDIA driver sees no GPU (check nvidia-smi and CUDA_VISIBLE_DEVICES), or use --device cpu"
            }
            CudaFault::NoSuchDevice => {
                "there is no GPU with that number; use one that `nvidia-smi -L` lists (cuda:0 is the first)"
            }
            CudaFault::DriverTooOld => {
                "the NVIDIA driver is older than the CUDA toolkit this lookout was built with; update the driver, or rebuild against the toolkit the driver supports (nvidia-smi shows its CUDA version)"
            }
            CudaFault::NoKernelForGpu => {
                "this lookout's CUDA kernels were compiled for another GPU; rebuild with CUDA_COMPUTE_CAP set to this GPU's (nvidia-smi --query-gpu=compute_cap), e.g. 87 for Jetson Orin"
            }
            CudaFault::OutOfMemory => {
                "the GPU is out of memory; free it (nvidia-smi shows who holds it), or use --half or a smaller --imgsz"
            }
            CudaFault::Busy => {
                "the GPU is busy or unavailable (exclusive compute mode, or in use by another process); free it or pick another with --device cuda:N"
            }
        }
    }
}

/// The CUDA status code inside a candle error, classified, with the code's name.
#[cfg(feature = "cuda")]
pub fn cuda_fault(e: &candle_core::Error) -> Option<(CudaFault, String)> {
    use candle_core::cuda_backend::CudaError;
    use candle_core::Error;
    match e {
        Error::Cuda(inner) => {
            let (fault, name) = match inner.downcast_ref::<CudaError>()? {
                CudaError::Cuda(d) | CudaError::Load { cuda: d, .. } => (
                    CudaFault::from_driver_code(d.0 as u32)?,
                    format!("{:?}", d.0),
                ),
                CudaError::Cublas(c) => (
                    CudaFault::from_cublas_code(c.0 as u32)?,
                    format!("{:?}", c.0),
                ),
                _ => return None,
            };
            Some((fault, name))
        }
        Error::WithBacktrace { inner, .. }
        | Error::Context { inner, .. }
        | Error::WithPath { inner, .. } => cuda_fault(inner),
        _ => None,
    }
}

/// Without the `cuda` feature no candle error carries a CUDA code.
#[cfg(not(feature = "cuda"))]
pub fn cuda_fault(_: &candle_core::Error) -> Option<(CudaFault, String)> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The values of `cuda.h` each class is written against.
    #[test]
    fn driver_codes_classify() {
        let cases = [
            (2, CudaFault::OutOfMemory),
            (3, CudaFault::NoDriver),
            (34, CudaFault::NoDriver),
            (222, CudaFault::DriverTooOld),
            (803, CudaFault::DriverTooOld),
            (100, CudaFault::NoDevice),
            (101, CudaFault::NoSuchDevice),
            (209, CudaFault::NoKernelForGpu),
            (46, CudaFault::Busy),
        ];
        for (code, fault) in cases {
            assert_eq!(
                CudaFault::from_driver_code(code),
                Some(fault),
                "code {code}"
            );
        }
        // CUDA_ERROR_LAUNCH_FAILED: a bug, not the user's to fix; the raw error is shown.
        assert_eq!(CudaFault::from_driver_code(719), None);
        assert_eq!(CudaFault::from_cublas_code(3), Some(CudaFault::OutOfMemory));
        assert_eq!(CudaFault::from_cublas_code(13), None);
    }

    #[test]
    fn every_fault_names_a_fix() {
        for fault in [
            CudaFault::NoDriver,
            CudaFault::NoDevice,
            CudaFault::NoSuchDevice,
            CudaFault::DriverTooOld,
            CudaFault::NoKernelForGpu,
            CudaFault::OutOfMemory,
            CudaFault::Busy,
        ] {
            let advice = fault.advice();
            assert!(!advice.contains('\n'), "{advice}");
            assert!(
                ["install", "use", "update", "rebuild", "free", "pick"]
                    .iter()
                    .any(|verb| advice.contains(verb)),
                "{fault:?}: {advice}"
            );
        }
    }

    /// cudarc's and candle's error values, as candle returns them, read back as faults.
    #[cfg(feature = "cuda")]
    #[test]
    fn candle_cuda_errors_classify() {
        use candle_core::cuda_backend::cudarc::cublas::result::CublasError;
        use candle_core::cuda_backend::cudarc::cublas::sys::cublasStatus_t;
        use candle_core::cuda_backend::cudarc::driver::{sys::CUresult, DriverError};
        use candle_core::cuda_backend::CudaError;

        let driver = |r: CUresult| candle_core::Error::from(CudaError::Cuda(DriverError(r)));
        let cases = [
            (CUresult::CUDA_ERROR_NO_DEVICE, CudaFault::NoDevice),
            (CUresult::CUDA_ERROR_INVALID_DEVICE, CudaFault::NoSuchDevice),
            (CUresult::CUDA_ERROR_OUT_OF_MEMORY, CudaFault::OutOfMemory),
            (CUresult::CUDA_ERROR_STUB_LIBRARY, CudaFault::NoDriver),
            (
                CUresult::CUDA_ERROR_SYSTEM_DRIVER_MISMATCH,
                CudaFault::DriverTooOld,
            ),
            (CUresult::CUDA_ERROR_DEVICE_UNAVAILABLE, CudaFault::Busy),
            (
                CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
                CudaFault::DriverTooOld,
            ),
            (
                CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU,
                CudaFault::NoKernelForGpu,
            ),
        ];
        for (code, fault) in cases {
            let (got, name) = cuda_fault(&driver(code)).expect("classified");
            assert_eq!(got, fault, "{code:?}");
            assert_eq!(name, format!("{code:?}"));
            // Through the detector's error: one line with the advice and the code.
            let message = crate::detect::DetectError::from(driver(code)).to_string();
            assert!(message.contains(fault.advice()), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
        let load = candle_core::Error::from(CudaError::Load {
            cuda: DriverError(CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION),
            module_name: "conv".into(),
        });
        assert_eq!(cuda_fault(&load).unwrap().0, CudaFault::DriverTooOld);
        let cublas = candle_core::Error::from(CudaError::Cublas(CublasError(
            cublasStatus_t::CUBLAS_STATUS_ALLOC_FAILED,
        )));
        assert_eq!(cuda_fault(&cublas).unwrap().0, CudaFault::OutOfMemory);
        let other = driver(CUresult::CUDA_ERROR_LAUNCH_FAILED);
        assert_eq!(cuda_fault(&other), None);
    }
}
