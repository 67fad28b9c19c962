//! The detectors' CPU speed path (f32). Two levels:
//!
//! - The executor: `graph` plans a whole YOLOv8/YOLOX network once per input size (the
//!   models' `plan` methods mirror their `forward`) as ops on activations in the `blocked`
//!   layout (16-channel blocks, zero border), then runs them every frame inside the rayon
//!   pool without allocating: `direct` convolutions (AVX-512 register tiles of 2 blocks ×
//!   12 pixels, bias + SiLU + residual fused; `winograd` F(2×2, 3×3) for the stride-1
//!   3×3 ones, on the same register tiles), `lanewise` depthwise / max-pool / upsample /
//!   copy, `attention` the multi-head self-attention core of C2PSA. Concats are block
//!   ranges written in place; buffers with disjoint lifetimes share memory.
//! - Per layer, for what the executor does not hold (channel counts off the 16-block grid,
//!   batches > 1): `conv` runs a convolution + bias + SiLU on NCHW as tiled im2col + GEMM
//!   (`microkernel`'s AVX-512 kernel on packed weights, else the `gemm` crate), `depthwise`
//!   a direct kernel for groups = channels, wrapped by `op` as a candle `CustomOp1` that
//!   [`crate::detect::layers::ConvBlock`] calls.
//!
//! `epilogue` holds the vectorisable SiLU, `isa` picks AVX2/AVX-512 or the portable build
//! of the loops at run time (every flavour is tested against candle), `pool` the parallel
//! loops. Other devices (CUDA) and dtypes keep candle's own ops.

pub mod attention;
pub mod bf16;
pub mod blocked;
pub mod conv;
mod depthwise;
pub mod direct;
pub mod epilogue;
pub mod fused;
pub mod graph;
pub mod int8;
pub mod isa;
pub mod lanewise;
mod microkernel;
pub mod op;
pub mod pool;
pub mod spec;
#[cfg(test)]
mod testutil;
#[cfg(target_arch = "x86_64")]
mod tiles;
pub mod winograd;

pub use conv::{ConvError, ConvSpec, FusedConv};
pub use isa::Isa;
pub use op::CpuConvOp;
