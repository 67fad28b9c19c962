//! A 2-D convolution with bias and optional SiLU on NCHW f32 data, one pass per tile:
//! the output is cut into column tiles (runs of output pixels); each tile gathers its
//! im2col slice into a cache-sized thread-local buffer (1×1 stride-1 convolutions read the
//! input in place), multiplies it by the weights (AVX-512 micro-kernel on weights packed at
//! load, else the `gemm` crate), and adds bias + SiLU while the tile is still in cache.
//! Tiles run on the rayon pool. Depthwise convolutions (groups = channels) take a direct
//! per-channel kernel instead.

use std::cell::RefCell;

use super::depthwise;
use super::epilogue::bias_act_row;
use super::isa::{isa_kernel, Isa};
#[cfg(target_arch = "x86_64")]
use super::microkernel::gemm_avx512;
use super::microkernel::PackedWeights;
use super::pool::{for_each_index, SharedMut};
use super::spec::Geometry;
pub use super::spec::{ConvError, ConvSpec};

/// Floats of im2col buffer per tile: ~1 MiB, half the 2 MiB L2 of the machines measured
/// and small enough elsewhere to stay in L2/L3.
const TILE_FLOATS: usize = 256 * 1024;
/// Output pixels per tile are a multiple of this (the GEMM micro-kernels' widths).
const TILE_ALIGN: usize = 32;

/// Weights and bias prepared once at load for the CPU convolution.
#[derive(Debug, Clone)]
pub struct FusedConv {
    spec: ConvSpec,
    /// `[c_out, c_in / groups · k · k]`, PyTorch's order flattened: row `o` is the GEMM
    /// left-hand row of output channel `o`, columns ordered (channel, ky, kx) as im2col.
    weight: Vec<f32>,
    bias: Vec<f32>,
    isa: Isa,
    /// Per group, the weights packed for the AVX-512 micro-kernel (empty without it).
    packed: Vec<PackedWeights>,
}

impl FusedConv {
    /// `weight` in PyTorch layout `[c_out, c_in / groups, k, k]`, `bias` `[c_out]`.
    pub fn new(spec: ConvSpec, weight: Vec<f32>, bias: Vec<f32>) -> Result<Self, ConvError> {
        spec.check_params(&weight, &bias)?;
        let want = weight.len();
        let packed = if Isa::detect() == Isa::Avx512 && !spec.is_depthwise() {
            let (rows, depth) = (spec.c_out / spec.groups, want / spec.c_out);
            weight
                .chunks_exact(rows * depth)
                .map(|group| PackedWeights::pack(group, rows, depth))
                .collect()
        } else {
            Vec::new()
        };
        Ok(Self {
            spec,
            weight,
            bias,
            isa: Isa::detect(),
            packed,
        })
    }

    /// The same convolution with element-wise kernels forced to `isa` (tests, benches).
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = isa.supported();
        self
    }

    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// Weights in PyTorch layout `[c_out, c_in / groups, k, k]`, flattened.
    pub fn weight(&self) -> &[f32] {
        &self.weight
    }

    pub fn bias(&self) -> &[f32] {
        &self.bias
    }

    /// Runs on `input` `[batch, c_in, height, width]` (contiguous NCHW); returns the NCHW
    /// output and its `(out_h, out_w)`.
    pub fn forward(
        &self,
        input: &[f32],
        batch: usize,
        height: usize,
        width: usize,
    ) -> Result<(Vec<f32>, usize, usize), ConvError> {
        let spec = &self.spec;
        let want = batch * spec.c_in * height * width;
        if input.len() != want {
            return Err(ConvError::InputLen {
                got: input.len(),
                want,
                batch,
                c_in: spec.c_in,
                height,
                width,
            });
        }
        let (out_h, out_w) = spec
            .output_size(height, width)
            .ok_or(ConvError::InputTooSmall {
                height,
                width,
                kernel: spec.kernel,
            })?;
        let in_plane = spec.c_in * height * width;
        let out_plane = spec.c_out * out_h * out_w;
        let mut output = vec![0.0f32; batch * out_plane];
        let geom = Geometry {
            in_h: height,
            in_w: width,
            out_h,
            out_w,
        };
        for (image, out) in input
            .chunks_exact(in_plane.max(1))
            .zip(output.chunks_exact_mut(out_plane.max(1)))
        {
            if spec.is_depthwise() {
                depthwise::forward(self.isa, spec, &self.weight, &self.bias, image, out, geom);
            } else {
                self.forward_gemm(image, out, geom);
            }
        }
        Ok((output, out_h, out_w))
    }

    /// One image through tiled im2col + GEMM + epilogue.
    fn forward_gemm(&self, image: &[f32], out: &mut [f32], geom: Geometry) {
        let spec = &self.spec;
        let pixels = geom.out_h * geom.out_w;
        let depth = spec.c_in / spec.groups * spec.kernel * spec.kernel;
        let tile = tile_width(pixels, depth);
        let out_ptr = SharedMut(out.as_mut_ptr());
        let tiles = pixels.div_ceil(tile);
        for_each_index(tiles, |t| {
            let start = t * tile;
            let cols = tile.min(pixels - start);
            // SAFETY: tiles are disjoint column ranges of `out`, which outlives the loop.
            unsafe { self.run_tile(image, out_ptr, geom, start, cols) };
        });
    }

    /// Computes output columns `start..start + cols` of every channel.
    ///
    /// # Safety
    /// `out` must point at `c_out · pixels` floats that no other thread touches in these
    /// columns meanwhile.
    unsafe fn run_tile(
        &self,
        image: &[f32],
        out: SharedMut,
        geom: Geometry,
        start: usize,
        cols: usize,
    ) {
        let spec = &self.spec;
        let pixels = geom.out_h * geom.out_w;
        let in_pixels = geom.in_h * geom.in_w;
        let (c_in_g, c_out_g) = (spec.c_in / spec.groups, spec.c_out / spec.groups);
        let depth = c_in_g * spec.kernel * spec.kernel;
        let pointwise = spec.kernel == 1 && spec.stride == 1 && spec.padding == 0;
        // The micro-kernel's corner (rows, cols) of each group, bias and SiLU already applied.
        let mut fused = (0, 0);
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            for g in 0..spec.groups {
                let channels = &image[g * c_in_g * in_pixels..(g + 1) * c_in_g * in_pixels];
                // The GEMM's right-hand side: `depth × cols`, row stride `rhs_rs`.
                let (rhs, rhs_rs) = if pointwise {
                    (channels[start..].as_ptr(), pixels)
                } else {
                    if scratch.len() < depth * cols {
                        scratch.resize(depth * cols, 0.0);
                    }
                    im2col_tile(
                        self.isa,
                        spec,
                        geom,
                        channels,
                        start,
                        cols,
                        &mut scratch[..depth * cols],
                    );
                    (scratch.as_ptr(), cols)
                };
                let lhs = &self.weight[g * c_out_g * depth..(g + 1) * c_out_g * depth];
                let dst = out.0.add(g * c_out_g * pixels + start);
                let (rows_done, cols_done) = self.fast_gemm(g, rhs, rhs_rs, dst, pixels, cols);
                fused = (rows_done, cols_done);
                // Rows the micro-kernel did not cover, every column; then its rows' last columns.
                gemm_generic(
                    c_out_g - rows_done,
                    cols,
                    depth,
                    dst.add(rows_done * pixels),
                    pixels,
                    lhs[rows_done * depth..].as_ptr(),
                    rhs,
                    rhs_rs,
                );
                gemm_generic(
                    rows_done,
                    cols - cols_done,
                    depth,
                    dst.add(cols_done),
                    pixels,
                    lhs.as_ptr(),
                    rhs.add(cols_done),
                    rhs_rs,
                );
            }
        });
        for (o, &bias) in self.bias.iter().enumerate() {
            // Every group has the same corner: the same packing of the same row count.
            let skip = if o % c_out_g < fused.0 { fused.1 } else { 0 };
            let row =
                std::slice::from_raw_parts_mut(out.0.add(o * pixels + start + skip), cols - skip);
            bias_act_row(self.isa, row, bias, spec.silu);
        }
    }
}

impl FusedConv {
    /// The AVX-512 micro-kernel's share of group `g`'s GEMM: `(rows, cols)` done, from the
    /// top-left corner; `(0, 0)` without AVX-512 or when forced to another flavour.
    ///
    /// # Safety
    /// As [`gemm_avx512`]: `rhs`/`dst` hold `depth` / `c_out / groups` rows of `cols` floats.
    unsafe fn fast_gemm(
        &self,
        g: usize,
        rhs: *const f32,
        rhs_rs: usize,
        dst: *mut f32,
        dst_rs: usize,
        cols: usize,
    ) -> (usize, usize) {
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512 {
            if let Some(packed) = self.packed.get(g) {
                let rows = self.spec.c_out / self.spec.groups;
                let bias = &self.bias[g * rows..(g + 1) * rows];
                let silu = self.spec.silu;
                let done = gemm_avx512(packed, rhs, rhs_rs, dst, dst_rs, cols, bias, silu);
                return (packed.packed_rows(), done);
            }
        }
        let _ = (g, rhs, rhs_rs, dst, dst_rs, cols);
        (0, 0)
    }
}

/// `dst[m × n] = lhs[m × k] · rhs[k × n]`, all row-major with the given row strides
/// (`lhs` dense), by the `gemm` crate on the calling thread.
///
/// # Safety
/// The pointers must cover those extents; `dst` must not be touched by others meanwhile.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_generic(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    lhs: *const f32,
    rhs: *const f32,
    rhs_rs: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    gemm::gemm(
        m,
        n,
        k,
        dst,
        1,
        dst_rs as isize,
        false,
        lhs,
        1,
        k as isize,
        rhs,
        1,
        rhs_rs as isize,
        0.0,
        1.0,
        false,
        false,
        false,
        gemm::Parallelism::None,
    );
}

thread_local! {
    /// Per-thread im2col tile, reused across tiles, layers and frames.
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Output pixels per tile: as many as keep the im2col tile within `TILE_FLOATS`, at
/// least enough tiles for the pool to share, a multiple of `TILE_ALIGN`.
fn tile_width(pixels: usize, depth: usize) -> usize {
    let by_cache = (TILE_FLOATS / depth.max(1)).max(TILE_ALIGN);
    let threads = candle_core::utils::get_num_threads().max(1);
    let by_threads = pixels.div_ceil(2 * threads).max(TILE_ALIGN);
    let width = by_cache.min(by_threads);
    (width.div_ceil(TILE_ALIGN) * TILE_ALIGN).min(pixels.max(1))
}

#[allow(clippy::too_many_arguments)]
/// Fills `col` (`depth × cols`, row-major) with the im2col rows of output pixels
/// `start..start + cols` for the `c_in / groups` channels in `channels`.
fn im2col_tile(
    isa: Isa,
    spec: &ConvSpec,
    geom: Geometry,
    channels: &[f32],
    start: usize,
    cols: usize,
    col: &mut [f32],
) {
    let (k, s, pad) = (spec.kernel, spec.stride, spec.padding);
    let in_pixels = geom.in_h * geom.in_w;
    let mut row_index = 0;
    for plane in channels.chunks_exact(in_pixels) {
        for ky in 0..k {
            for kx in 0..k {
                let dst = &mut col[row_index * cols..(row_index + 1) * cols];
                gather_tap(isa, plane, geom, s, pad, ky, kx, start, dst);
                row_index += 1;
            }
        }
    }
}

/// One im2col row: input value under tap `(ky, kx)` for each output pixel of the tile,
/// zero where the tap falls in the padding.
#[allow(clippy::too_many_arguments)]
#[inline]
fn gather_tap(
    isa: Isa,
    plane: &[f32],
    geom: Geometry,
    stride: usize,
    pad: usize,
    ky: usize,
    kx: usize,
    start: usize,
    dst: &mut [f32],
) {
    let mut filled = 0;
    let mut pixel = start;
    while filled < dst.len() {
        let (oy, ox0) = (pixel / geom.out_w, pixel % geom.out_w);
        let run = (geom.out_w - ox0).min(dst.len() - filled);
        let out = &mut dst[filled..filled + run];
        let iy = (oy * stride + ky) as isize - pad as isize;
        if iy < 0 || iy >= geom.in_h as isize {
            out.fill(0.0);
        } else {
            let row = &plane[iy as usize * geom.in_w..(iy as usize + 1) * geom.in_w];
            gather_row(isa, row, stride, pad, kx, ox0, out);
        }
        filled += run;
        pixel += run;
    }
}

/// `out[j] = row[(ox0 + j)·stride + kx − pad]`, zero outside `row`.
#[inline]
#[allow(clippy::too_many_arguments)]
fn gather_row(
    isa: Isa,
    row: &[f32],
    stride: usize,
    pad: usize,
    kx: usize,
    ox0: usize,
    out: &mut [f32],
) {
    let in_w = row.len() as isize;
    let first = (ox0 * stride + kx) as isize - pad as isize;
    // Output columns whose input column lies inside the row: first + j·stride in [0, in_w).
    let lo = if first < 0 {
        ((-first) as usize).div_ceil(stride)
    } else {
        0
    };
    let hi = if first >= in_w {
        0
    } else {
        (((in_w - 1 - first) as usize) / stride + 1).min(out.len())
    };
    let lo = lo.min(hi);
    out[..lo].fill(0.0);
    out[hi..].fill(0.0);
    let base = (first + (lo * stride) as isize) as usize;
    let inside = &mut out[lo..hi];
    match stride {
        1 => inside.copy_from_slice(&row[base..base + inside.len()]),
        2 => gather_stride2(isa, inside, &row[base..]),
        _ => {
            for (j, v) in inside.iter_mut().enumerate() {
                *v = row[base + j * stride];
            }
        }
    }
}

isa_kernel! {
    /// `out[j] = row[2j]`: the stride-2 im2col copy, vectorised as a de-interleave.
    fn gather_stride2(out: &mut [f32], row: &[f32]) {
        let n = out.len();
        if n == 0 {
            return;
        }
        // Pairs (row[2j], row[2j + 1]) for j < n - 1, then the last element alone: the row
        // may end right after it.
        let (head, last) = out.split_at_mut(n - 1);
        for (v, pair) in head.iter_mut().zip(row[..2 * (n - 1)].chunks_exact(2)) {
            *v = pair[0];
        }
        last[0] = row[2 * (n - 1)];
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{candle_conv, max_diff, noise, spec};
    use super::*;

    fn check(spec: ConvSpec, batch: usize, h: usize, w: usize) {
        let k = spec.kernel;
        let input = noise(batch * spec.c_in * h * w, 1 + h as u64);
        let weight = noise(spec.c_out * spec.c_in / spec.groups * k * k, 2 + w as u64);
        let bias = noise(spec.c_out, 3);
        let (want, shape) = candle_conv(&spec, &input, (batch, h, w), &weight, &bias, None);
        for isa in Isa::all_supported() {
            let conv = FusedConv::new(spec, weight.clone(), bias.clone())
                .unwrap()
                .with_isa(isa);
            let (got, oh, ow) = conv.forward(&input, batch, h, w).unwrap();
            assert_eq!([batch, spec.c_out, oh, ow], shape[..], "{spec:?}");
            let worst = max_diff(&got, &want);
            assert!(worst < 1e-4, "{isa:?} {spec:?} {h}x{w}: max error {worst}");
        }
    }

    #[test]
    fn pointwise_matches_candle() {
        check(spec(5, 7, 1, 1, 1), 1, 9, 13);
        check(spec(32, 48, 1, 1, 1), 2, 20, 20);
        check(
            ConvSpec {
                silu: false,
                ..spec(16, 85, 1, 1, 1)
            },
            1,
            13,
            11,
        );
    }

    #[test]
    fn pointwise_with_stride_two_matches_candle() {
        check(spec(6, 4, 1, 2, 1), 1, 11, 9);
    }

    #[test]
    fn three_by_three_matches_candle_at_odd_sizes() {
        check(spec(3, 16, 3, 2, 1), 1, 33, 47);
        check(spec(16, 16, 3, 1, 1), 1, 17, 31);
        check(spec(24, 8, 3, 2, 1), 2, 10, 7);
        check(
            ConvSpec {
                silu: false,
                ..spec(12, 16, 3, 1, 1)
            },
            1,
            5,
            5,
        );
    }

    #[test]
    fn five_by_five_and_tiny_inputs_match_candle() {
        check(spec(4, 6, 5, 1, 1), 1, 3, 4);
        check(spec(4, 6, 5, 2, 1), 1, 2, 2);
        check(spec(3, 5, 3, 1, 1), 1, 1, 1);
    }

    #[test]
    fn grouped_matches_candle() {
        check(spec(8, 12, 3, 1, 2), 1, 9, 11);
        check(spec(8, 8, 1, 1, 4), 1, 6, 5);
    }

    #[test]
    fn depthwise_matches_candle() {
        check(spec(16, 16, 3, 1, 16), 1, 13, 17);
        check(spec(32, 32, 3, 2, 32), 1, 26, 25);
        check(spec(7, 7, 5, 2, 7), 2, 9, 8);
        check(
            ConvSpec {
                silu: false,
                ..spec(4, 4, 3, 1, 4)
            },
            1,
            1,
            3,
        );
    }

    #[test]
    fn large_layers_split_into_many_tiles_match_candle() {
        // Depth 576 → tiles narrower than the 80×80 plane, several per row.
        check(spec(64, 64, 3, 1, 1), 1, 80, 80);
    }

    #[test]
    fn bad_shapes_are_errors() {
        let s = spec(4, 4, 3, 1, 1);
        assert!(matches!(
            FusedConv::new(s, vec![0.0; 5], vec![0.0; 4]),
            Err(ConvError::WeightLen { .. })
        ));
        assert!(matches!(
            FusedConv::new(s, vec![0.0; 144], vec![0.0; 3]),
            Err(ConvError::BiasLen { .. })
        ));
        assert!(matches!(
            FusedConv::new(spec(4, 6, 3, 1, 4), vec![0.0; 54], vec![0.0; 6]),
            Err(ConvError::Groups { .. })
        ));
        let conv = FusedConv::new(s, vec![0.0; 144], vec![0.0; 4]).unwrap();
        assert!(matches!(
            conv.forward(&[0.0; 10], 1, 2, 2),
            Err(ConvError::InputLen { .. })
        ));
        let conv = FusedConv::new(spec(1, 1, 5, 1, 1), vec![0.0; 25], vec![0.0]).unwrap();
        let padded_is_too_small = ConvSpec {
            padding: 0,
            ..*conv.spec()
        };
        let conv = FusedConv::new(padded_is_too_small, vec![0.0; 25], vec![0.0]).unwrap();
        assert!(matches!(
            conv.forward(&[0.0; 4], 1, 2, 2),
            Err(ConvError::InputTooSmall { .. })
        ));
    }
}
