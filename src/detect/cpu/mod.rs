//! CPU kernels for the detectors' convolutions (f32, NCHW), the speed path that
//! [`crate::detect::layers::ConvBlock`] takes on `Device::Cpu`; other devices keep
//! candle's own ops.
//!
//! `conv` runs a convolution + bias + SiLU as tiled im2col + GEMM (`microkernel`'s AVX-512
//! kernel on packed weights, else the `gemm` crate) with the bias and activation fused into
//! the tile's epilogue; `depthwise` is a direct kernel for
//! groups = channels; `epilogue` holds the vectorisable SiLU; `isa` picks AVX2/AVX-512 or
//! the portable build of the element-wise loops at run time. `op` wraps a convolution as a
//! candle `CustomOp1`.

pub mod blocked;
pub mod conv;
mod depthwise;
pub mod direct;
pub mod epilogue;
pub mod graph;
pub mod isa;
pub mod lanewise;
mod microkernel;
pub mod op;
pub mod pool;

pub use conv::{ConvError, ConvSpec, FusedConv};
pub use isa::Isa;
pub use op::CpuConvOp;
