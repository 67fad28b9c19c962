//! Direct convolution on the blocked layout ([`super::blocked`]), bias, SiLU and an
//! optional residual add fused: no im2col, no separate passes.
//!
//! The output is computed in tiles of `OCB` channel blocks × `N` pixels of one row
//! (2 × 12 = 24 AVX-512 accumulators). For every input channel and tap the tile loads its
//! `OCB` weight vectors once and broadcasts one input value per pixel, so each weight load
//! feeds `N` FMAs and each input value `OCB`. Weights are packed at build time in exactly
//! the order the tile reads them. The input border supplies the zero padding. A portable
//! version of the same tile (plain loops over 16 lanes, vectorised by LLVM per ISA) runs
//! where AVX-512 is missing and is tested against it.

use super::blocked::{View, LANES};
use super::conv::{ConvError, ConvSpec};
use super::epilogue::silu;
use super::isa::Isa;
use super::pool::for_each_index;

/// Most pixels per tile (24 accumulators + 2 weights + 1 broadcast ≤ 32 registers).
pub(super) const MAX_TILE_PIXELS: usize = 12;
/// Output channel blocks per tile.
pub(super) const MAX_TILE_BLOCKS: usize = 2;

/// A dense convolution (groups = 1, kernel 1 or 3, padding ≤ 1) prepared for the blocked
/// layout: weights packed per output-block pair, bias padded to whole blocks.
#[derive(Debug, Clone)]
pub struct DirectConv {
    spec: ConvSpec,
    /// Input channels per block of the input this was packed for.
    in_lanes: usize,
    /// Per output group (up to two blocks): `[in block][ky][kx][lane][group width]`.
    packed: Vec<Vec<f32>>,
    /// `c_out` rounded up to whole blocks, zero past `c_out`.
    bias: Vec<f32>,
    isa: Isa,
}

impl DirectConv {
    /// `weight` in PyTorch layout `[c_out, c_in, k, k]`; `in_lanes` = channels per block
    /// of the input it will read ([`LANES`], or the image's channels for the first layer).
    pub fn new(
        spec: ConvSpec,
        weight: &[f32],
        bias: &[f32],
        in_lanes: usize,
    ) -> Result<Self, ConvError> {
        let k = spec.kernel;
        if spec.groups != 1 {
            return Err(ConvError::Groups { spec });
        }
        spec.check_params(weight, bias)?;
        let out_blocks = spec.c_out.div_ceil(LANES);
        let in_blocks = spec.c_in.div_ceil(in_lanes);
        let mut packed = Vec::new();
        for first in (0..out_blocks).step_by(MAX_TILE_BLOCKS) {
            let width = MAX_TILE_BLOCKS.min(out_blocks - first) * LANES;
            let mut group = Vec::with_capacity(in_blocks * k * k * in_lanes * width);
            for ib in 0..in_blocks {
                for ky in 0..k {
                    for kx in 0..k {
                        for lane in 0..in_lanes {
                            let i = ib * in_lanes + lane;
                            for j in 0..width {
                                let o = first * LANES + j;
                                let w = if i < spec.c_in && o < spec.c_out {
                                    weight[((o * spec.c_in + i) * k + ky) * k + kx]
                                } else {
                                    0.0
                                };
                                group.push(w);
                            }
                        }
                    }
                }
            }
            packed.push(group);
        }
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(out_blocks * LANES, 0.0);
        Ok(Self {
            spec,
            in_lanes,
            packed,
            bias: padded_bias,
            isa: Isa::detect(),
        })
    }

    /// The same convolution with its tiles forced to `isa` (tests, benches).
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = isa.supported();
        self
    }

    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// `dst = act(conv(src) + bias) (+ residual)` over every output row, rows × output
    /// groups in parallel. `src`, `dst` and `residual` must have the sizes this convolution
    /// implies (the graph builder checks them).
    ///
    /// # Safety
    /// The views must cover their layouts; `dst` must not overlap `src` or `residual`, and
    /// no one else may touch `dst` meanwhile.
    pub unsafe fn run(&self, src: View, dst: View, residual: Option<View>) {
        let rows = dst.layout.height;
        let groups = self.packed.len();
        let spec = self.spec;
        for_each_index(rows * groups, |item| {
            let (row, group) = (item / groups, item % groups);
            let top = (row * spec.stride) as isize - spec.padding as isize;
            // SAFETY: each item writes its own output row of its own channel blocks.
            unsafe { self.run_row(src, top, dst, residual, row, group) };
        });
    }

    /// Output groups (of up to two blocks), the second parallel dimension of [`Self::run`].
    pub fn groups(&self) -> usize {
        self.packed.len()
    }

    /// Output row `oy` of output group `group`, reading the input from its row `top` (the
    /// first kernel row, −1 for the padding), in tiles of up to 12 pixels (widths split
    /// evenly so no tile is much narrower than the rest).
    ///
    /// # Safety
    /// As [`Self::run`], for this row; `top..top + kernel` are rows of `src` or its border.
    pub(crate) unsafe fn run_row(
        &self,
        src: View,
        top: isize,
        dst: View,
        residual: Option<View>,
        oy: usize,
        group: usize,
    ) {
        let spec = &self.spec;
        let width = dst.layout.width;
        let tiles = width.div_ceil(MAX_TILE_PIXELS);
        let (base, extra) = (width / tiles, width % tiles);
        let first_block = group * MAX_TILE_BLOCKS;
        let blocks = (dst.layout.blocks() - first_block).min(MAX_TILE_BLOCKS);
        let mut ox = 0;
        for t in 0..tiles {
            let n = base + usize::from(t < extra);
            let left = (ox * spec.stride) as isize - spec.padding as isize;
            let tile = Tile {
                src: src.at(0, top, left),
                src_block: src.layout.block_stride(),
                src_row: src.layout.row_stride(),
                src_pixel: src.layout.pixel,
                step: spec.stride * src.layout.pixel,
                kernel: spec.kernel,
                in_blocks: spec.c_in.div_ceil(self.in_lanes),
                lanes: self.in_lanes,
                weights: self.packed[group].as_ptr(),
                bias: self.bias[first_block * LANES..].as_ptr(),
                dst: dst.at(first_block, oy as isize, ox as isize),
                dst_block: dst.layout.block_stride(),
                residual: residual.map(|r| {
                    (
                        r.at(first_block, oy as isize, ox as isize) as *const f32,
                        r.layout.block_stride(),
                    )
                }),
                silu: spec.silu,
            };
            dispatch_tile(self.isa, &tile, blocks, n);
            ox += n;
        }
    }
}

/// One tile's pointers and strides (floats). `src` points at tap (0, 0) of the tile's
/// first pixel, channel 0 of input block 0.
pub(super) struct Tile {
    pub(super) src: *const f32,
    pub(super) src_block: usize,
    pub(super) src_row: usize,
    pub(super) src_pixel: usize,
    /// Floats from one output pixel's input window to the next (stride × pixel).
    pub(super) step: usize,
    pub(super) kernel: usize,
    pub(super) in_blocks: usize,
    pub(super) lanes: usize,
    pub(super) weights: *const f32,
    pub(super) bias: *const f32,
    pub(super) dst: *mut f32,
    pub(super) dst_block: usize,
    pub(super) residual: Option<(*const f32, usize)>,
    pub(super) silu: bool,
}

/// Runs `tile` with `blocks` (1 or 2) output blocks and `n` (1..=12) pixels.
pub(super) unsafe fn dispatch_tile(isa: Isa, tile: &Tile, blocks: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 {
        // Input strides of the common cases as constants, so every broadcast's address is
        // a fixed offset; 0 = read at run time (the first layer's narrow pixels).
        // 16 and 32: stride 1 and 2 on blocked inputs; 12: YOLOX's Focus stem (stride 1 on
        // 12 channels); 6: YOLOv8's first layer (stride 2 on RGB).
        match (blocks == 2, tile.step) {
            (true, 16) => avx512::by_width::<true, 16>(tile, n),
            (true, 32) => avx512::by_width::<true, 32>(tile, n),
            (true, _) => avx512::by_width::<true, 0>(tile, n),
            (false, 16) => avx512::by_width::<false, 16>(tile, n),
            (false, 32) => avx512::by_width::<false, 32>(tile, n),
            (false, 12) => avx512::by_width::<false, 12>(tile, n),
            (false, 6) => avx512::by_width::<false, 6>(tile, n),
            (false, _) => avx512::by_width::<false, 0>(tile, n),
        }
        return;
    }
    portable_tile(isa, tile, blocks, n);
}

super::isa::isa_kernel! {
    /// The tile as plain loops over 16 lanes (any ISA; LLVM vectorises the lane loops).
    fn portable_tile(tile: &Tile, blocks: usize, n: usize) {
        let mut acc = [[[0.0f32; LANES]; MAX_TILE_PIXELS]; MAX_TILE_BLOCKS];
        let width = blocks * LANES;
        // SAFETY (whole body): the caller's tile covers these extents (see `DirectConv::run`).
        unsafe {
            for (b, acc_b) in acc.iter_mut().enumerate().take(blocks) {
                let bias = std::slice::from_raw_parts(tile.bias.add(b * LANES), LANES);
                for acc_p in acc_b.iter_mut().take(n) {
                    acc_p.copy_from_slice(bias);
                }
            }
            let mut w = tile.weights;
            for ib in 0..tile.in_blocks {
                for ky in 0..tile.kernel {
                    for kx in 0..tile.kernel {
                        let a = tile
                            .src
                            .add(ib * tile.src_block + ky * tile.src_row + kx * tile.src_pixel);
                        for lane in 0..tile.lanes {
                            let wv = std::slice::from_raw_parts(w, width);
                            for p in 0..n {
                                let x = *a.add(p * tile.step + lane);
                                for (b, acc_b) in acc.iter_mut().enumerate().take(blocks) {
                                    let wb = &wv[b * LANES..(b + 1) * LANES];
                                    for (acc, &wl) in acc_b[p].iter_mut().zip(wb) {
                                        *acc += x * wl;
                                    }
                                }
                            }
                            w = w.add(width);
                        }
                    }
                }
            }
            for (b, acc_b) in acc.iter().enumerate().take(blocks) {
                for (p, acc_p) in acc_b.iter().enumerate().take(n) {
                    let out = std::slice::from_raw_parts_mut(
                        tile.dst.add(b * tile.dst_block + p * LANES),
                        LANES,
                    );
                    for (o, &v) in out.iter_mut().zip(acc_p) {
                        *o = if tile.silu { silu(v) } else { v };
                    }
                    if let Some((res, res_block)) = tile.residual {
                        let r = std::slice::from_raw_parts(res.add(b * res_block + p * LANES), LANES);
                        for (o, &v) in out.iter_mut().zip(r) {
                            *o += v;
                        }
                    }
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::blocked::LANES;
    use super::super::microkernel::silu_avx512;
    use super::super::tiles::register_tiles;
    use super::Tile;

    /// The bias of block `b`.
    #[inline(always)]
    unsafe fn start(t: &Tile, b: usize) -> __m512 {
        _mm512_loadu_ps(t.bias.add(b * LANES))
    }

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }

    /// One input float per channel of the block (the first layer's pixels are narrower).
    #[inline(always)]
    fn words(t: &Tile) -> usize {
        t.lanes
    }

    #[inline(always)]
    unsafe fn load_weights(w: *const f32) -> __m512 {
        _mm512_loadu_ps(w)
    }

    #[inline(always)]
    unsafe fn broadcast(x: *const f32) -> __m512 {
        _mm512_set1_ps(*x)
    }

    #[inline(always)]
    unsafe fn dot(acc: __m512, x: __m512, w: __m512) -> __m512 {
        _mm512_fmadd_ps(x, w, acc)
    }

    /// Stores (activation, residual) one accumulator: block `b`, pixel `p`.
    #[inline(always)]
    unsafe fn finish(t: &Tile, b: usize, p: usize, v: __m512) {
        let mut v = if t.silu { silu_avx512(v) } else { v };
        if let Some((res, res_block)) = t.residual {
            v = _mm512_add_ps(v, _mm512_loadu_ps(res.add(b * res_block + p * LANES)));
        }
        _mm512_storeu_ps(t.dst.add(b * t.dst_block + p * LANES), v);
    }

    register_tiles!("avx512f", Tile);
}
