//! Winograd F(2×2, 3×3) for the stride-1 3×3 convolutions on the blocked layout
//! ([`super::blocked`]), bias, SiLU and residual fused as in [`super::direct`].
//!
//! Each 2×2 block of output pixels is computed from its 4×4 input window as
//! `Aᵀ [(G g Gᵀ) ⊙ (Bᵀ d B)] A` (Lavin & Gray, "Fast Algorithms for Convolutional Neural
//! Networks", 2015): 16 multiply-adds per input channel instead of 36, with additions in
//! the input and output transforms. The weight transform `G g Gᵀ` is done once at load.
//! The output is cut into chunks of tiles (2×2 output pixels each) that run in parallel;
//! per chunk, the input transform writes `V[ξ][in block][tile][lane]` for the 16 points ξ,
//! then 16 independent GEMMs `M[ξ] = V[ξ] · U[ξ]` run on the direct convolution's register
//! tiles (a 1×1 "convolution" over the chunk's tiles), and the output transform adds the
//! bias, applies SiLU, adds the residual and writes the 2×2 pixels. Both scratch matrices
//! stay in L2 (a thread-local buffer, grown once).

use std::cell::RefCell;

use super::bf16::{self, dispatch_pair_tile, PairTile};
use super::blocked::{Lanes, View, LANES};
use super::direct::{dispatch_tile, Tile, MAX_TILE_BLOCKS, MAX_TILE_PIXELS};
use super::epilogue::silu;
use super::isa::{isa_kernel, Isa};
use super::pool::for_each_index;
use super::spec::{ConvError, ConvSpec};

/// Transformed points of one tile (4 × 4).
const POINTS: usize = 16;
/// Floats of scratch (`V` and `M`) a chunk aims for: 64 KiB (measured best of 8–128 KiB on
/// YOLOv8n's shapes: the GEMMs of a chunk then read `V` from L1/L2).
const CHUNK_FLOATS: usize = 16 * 1024;
/// Fewest tiles per chunk: one full register tile of the GEMM.
const MIN_CHUNK: usize = MAX_TILE_PIXELS;

/// `G` of F(2, 3): the weight transform (4 × 3).
const G: [[f64; 3]; 4] = [
    [1.0, 0.0, 0.0],
    [0.5, 0.5, 0.5],
    [0.5, -0.5, 0.5],
    [0.0, 0.0, 1.0],
];

/// A dense stride-1 3×3 convolution (padding 1) prepared for Winograd F(2×2, 3×3).
#[derive(Debug, Clone)]
pub struct WinogradConv {
    spec: ConvSpec,
    in_blocks: usize,
    out_blocks: usize,
    /// Per output group (up to [`MAX_TILE_BLOCKS`] blocks): `U` as
    /// `[ξ][input channel, padded to blocks][group width]`.
    packed: Vec<Vec<f32>>,
    /// `c_out` rounded up to whole blocks, zero past `c_out`.
    bias: Vec<f32>,
    /// The GEMM tiles start from this (their bias): zeros, one group wide.
    zeros: Vec<f32>,
    isa: Isa,
    /// With `--precision bf16`: `U` as bf16 pairs per output group,
    /// `[ξ][input pair][group width]`, and whether the AVX512-BF16 tiles run them.
    bf16: Option<(Vec<Vec<u32>>, bool)>,
}

impl WinogradConv {
    /// Whether this kernel computes `spec` on an input of `in_lanes` channels per block.
    pub fn applies(spec: &ConvSpec, in_lanes: usize) -> bool {
        spec.kernel == 3
            && spec.stride == 1
            && spec.padding == 1
            && spec.groups == 1
            && in_lanes == LANES
    }

    /// `weight` in PyTorch layout `[c_out, c_in, 3, 3]`, `bias` `[c_out]`.
    pub fn new(spec: ConvSpec, weight: &[f32], bias: &[f32]) -> Result<Self, ConvError> {
        Self::with_precision(spec, weight, bias, false)
    }

    /// As [`Self::new`], the GEMMs in bf16 when `precision_bf16` (transforms and epilogue
    /// stay f32: `V` is rounded to bf16 after the input transform, `U` after the weight
    /// transform).
    pub fn with_precision(
        spec: ConvSpec,
        weight: &[f32],
        bias: &[f32],
        precision_bf16: bool,
    ) -> Result<Self, ConvError> {
        if !Self::applies(&spec, LANES) {
            return Err(ConvError::Groups { spec });
        }
        spec.check_params(weight, bias)?;
        let (in_blocks, out_blocks) = (spec.c_in.div_ceil(LANES), spec.c_out.div_ceil(LANES));
        // U[ξ][i][o] for every (i, o), then split into output groups.
        let depth = in_blocks * LANES;
        let mut u = vec![0.0f32; POINTS * depth * out_blocks * LANES];
        let cols = out_blocks * LANES;
        for o in 0..spec.c_out {
            for i in 0..spec.c_in {
                let g = &weight[(o * spec.c_in + i) * 9..][..9];
                for a in 0..4 {
                    for b in 0..4 {
                        let mut sum = 0.0f64;
                        for ky in 0..3 {
                            for kx in 0..3 {
                                sum += G[a][ky] * g[ky * 3 + kx] as f64 * G[b][kx];
                            }
                        }
                        u[((a * 4 + b) * depth + i) * cols + o] = sum as f32;
                    }
                }
            }
        }
        let packed = split_groups(&u, out_blocks, |row| row.to_vec());
        let bf16 = precision_bf16.then(|| {
            // Rows of U are (ξ, input channel): pair consecutive channels of each ξ.
            let pairs = split_groups(&u, out_blocks, |rows| {
                let width = rows.len() / depth / POINTS;
                let mut out = Vec::with_capacity(rows.len() / 2);
                for pair_rows in rows.chunks_exact(2 * width) {
                    let (even, odd) = pair_rows.split_at(width);
                    out.extend(even.iter().zip(odd).map(|(&e, &o)| bf16::pair(e, o)));
                }
                out
            });
            (pairs, bf16::supported())
        });
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(out_blocks * LANES, 0.0);
        Ok(Self {
            spec,
            in_blocks,
            out_blocks,
            packed,
            bias: padded_bias,
            zeros: vec![0.0; MAX_TILE_BLOCKS * LANES],
            isa: Isa::detect(),
            bf16,
        })
    }

    /// The same convolution with its kernels forced to `isa` (tests, benches); bf16 runs
    /// on the AVX512-BF16 tiles only for `Avx512`, else on the scalar reference.
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = isa.supported();
        if let Some((_, hardware)) = &mut self.bf16 {
            *hardware = self.isa == Isa::Avx512 && bf16::supported();
        }
        self
    }

    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// Whether the GEMMs run in bf16.
    pub fn is_bf16(&self) -> bool {
        self.bf16.is_some()
    }

    /// `dst = act(conv(src) + bias) (+ residual)`, chunks of tiles in parallel. The views
    /// must have the sizes this convolution implies (the graph builder checks them) and
    /// `src`'s zero border must be in place.
    ///
    /// # Safety
    /// The views must cover their layouts; `dst` must not overlap `src` or `residual`, and
    /// no one else may touch `dst` meanwhile.
    pub unsafe fn run(&self, src: View, dst: View, residual: Option<View>) {
        let (h, w) = (dst.layout.height, dst.layout.width);
        let tiles_w = w.div_ceil(2);
        let tiles = h.div_ceil(2) * tiles_w;
        let chunk = self.chunk_tiles(tiles);
        for_each_index(tiles.div_ceil(chunk), |c| {
            let first = c * chunk;
            let n = chunk.min(tiles - first);
            SCRATCH.with(|scratch| {
                let mut scratch = scratch.borrow_mut();
                let lanes = POINTS * n * (self.in_blocks + self.out_blocks);
                if scratch.len() < lanes {
                    // Room for the largest chunk of an n-sized model at once (12 tiles of
                    // 336 channels in and out together), so that a thread that first meets a
                    // small layer does not grow again on a later frame.
                    scratch.resize(lanes.max(4 * CHUNK_FLOATS / LANES), Lanes::default());
                }
                let v = scratch.as_mut_ptr().cast::<f32>();
                let chunk = Chunk {
                    first,
                    n,
                    tiles_w,
                    v,
                    // SAFETY: the scratch holds V's `POINTS·n·in_blocks` vectors, then M's.
                    m: unsafe { v.add(POINTS * n * self.in_blocks * LANES) },
                };
                // SAFETY: each chunk writes its own tiles' output pixels and its thread's
                // scratch; the caller's views cover their layouts.
                unsafe { self.run_chunk(&chunk, src, dst, residual) };
            });
        });
    }

    /// Tiles per chunk: as many as keep the scratch within [`CHUNK_FLOATS`], few enough
    /// that every thread gets several chunks.
    fn chunk_tiles(&self, tiles: usize) -> usize {
        let per_tile = POINTS * LANES * (self.in_blocks + self.out_blocks);
        let by_cache = CHUNK_FLOATS / per_tile;
        let by_threads = tiles.div_ceil(3 * rayon::current_num_threads().max(1));
        by_cache.min(by_threads).max(MIN_CHUNK).min(tiles.max(1))
    }

    /// Input transform, the 16 GEMMs and the output transform of one chunk.
    ///
    /// # Safety
    /// As [`Self::run`]; `chunk`'s scratch pointers hold its `V` and `M`.
    unsafe fn run_chunk(&self, chunk: &Chunk, src: View, dst: View, residual: Option<View>) {
        #[cfg(target_arch = "x86_64")]
        let avx512 = self.isa == Isa::Avx512;
        #[cfg(not(target_arch = "x86_64"))]
        let avx512 = false;
        let pairs = self.bf16.as_ref();
        #[cfg(target_arch = "x86_64")]
        let hardware_bf16 = pairs.is_some_and(|(_, hw)| *hw);
        match (avx512, pairs.is_some()) {
            #[cfg(target_arch = "x86_64")]
            (true, true) if hardware_bf16 => {
                avx512::input_transform_bf16(chunk, &src, self.in_blocks)
            }
            #[cfg(target_arch = "x86_64")]
            (true, false) => avx512::input_transform(chunk, &src, self.in_blocks),
            (_, bf16) => input_transform(self.isa, chunk, &src, self.in_blocks, bf16),
        }
        let depth = self.in_blocks * LANES;
        if let Some((packed, hardware)) = pairs {
            self.gemms_bf16(chunk, packed, *hardware);
        } else {
            self.gemms(chunk, depth);
        }
        let out = Output {
            dst,
            residual,
            bias: &self.bias,
            blocks: self.out_blocks,
            silu: self.spec.silu,
        };
        if avx512 {
            #[cfg(target_arch = "x86_64")]
            avx512::output_transform(chunk, &out);
        } else {
            output_transform(self.isa, chunk, &out);
        }
    }
    /// The chunk's 16 GEMMs in f32: `M[ξ][block][tile] = Σ_i V[ξ][i][tile] · U[ξ][i][block]`,
    /// each a 1×1 convolution whose "pixels" are the chunk's tiles.
    ///
    /// # Safety
    /// As [`Self::run_chunk`].
    unsafe fn gemms(&self, chunk: &Chunk, depth: usize) {
        let n = chunk.n;
        for xi in 0..POINTS {
            let v = chunk.v.add(xi * self.in_blocks * n * LANES);
            let m = chunk.m.add(xi * self.out_blocks * n * LANES);
            for (group, u) in self.packed.iter().enumerate() {
                let first_block = group * MAX_TILE_BLOCKS;
                let blocks = MAX_TILE_BLOCKS.min(self.out_blocks - first_block);
                let u = u.as_ptr().add(xi * depth * blocks * LANES);
                for p0 in (0..n).step_by(MAX_TILE_PIXELS) {
                    let tile = Tile {
                        src: v.add(p0 * LANES),
                        src_block: n * LANES,
                        src_row: 0,
                        src_pixel: 0,
                        step: LANES,
                        kernel: 1,
                        in_blocks: self.in_blocks,
                        lanes: LANES,
                        weights: u,
                        bias: self.zeros.as_ptr(),
                        dst: m.add((first_block * n + p0) * LANES),
                        dst_block: n * LANES,
                        residual: None,
                        silu: false,
                    };
                    dispatch_tile(self.isa, &tile, blocks, MAX_TILE_PIXELS.min(n - p0));
                }
            }
        }
    }

    /// As [`Self::gemms`] on bf16 pairs: `V` as `[ξ][in block][tile][pair]` words, `U` as
    /// `packed`.
    ///
    /// # Safety
    /// As [`Self::run_chunk`]; `hardware` only where [`bf16::supported`].
    unsafe fn gemms_bf16(&self, chunk: &Chunk, packed: &[Vec<u32>], hardware: bool) {
        let n = chunk.n;
        let v_words = chunk.v.cast::<u32>();
        for xi in 0..POINTS {
            let v = v_words.add(xi * self.in_blocks * n * bf16::PAIRS);
            let m = chunk.m.add(xi * self.out_blocks * n * LANES);
            for (group, u) in packed.iter().enumerate() {
                let first_block = group * MAX_TILE_BLOCKS;
                let blocks = MAX_TILE_BLOCKS.min(self.out_blocks - first_block);
                let u = u
                    .as_ptr()
                    .add(xi * self.in_blocks * bf16::PAIRS * blocks * LANES);
                for p0 in (0..n).step_by(MAX_TILE_PIXELS) {
                    let tile = PairTile {
                        src: v.add(p0 * bf16::PAIRS),
                        src_block: n * bf16::PAIRS,
                        src_row: 0,
                        src_pixel: 0,
                        step: bf16::PAIRS,
                        kernel: 1,
                        in_blocks: self.in_blocks,
                        weights: u,
                        bias: self.zeros.as_ptr(),
                        dst: m.add((first_block * n + p0) * LANES),
                        dst_block: n * LANES,
                        dst_pixel: LANES,
                        residual: None,
                        silu: false,
                    };
                    dispatch_pair_tile(hardware, &tile, blocks, MAX_TILE_PIXELS.min(n - p0));
                }
            }
        }
    }
}

/// `u` (`[ξ·depth rows][out_blocks · LANES]`) cut into output groups of up to
/// [`MAX_TILE_BLOCKS`] blocks, each group's rows (`[ξ·depth][width]`, contiguous) through
/// `pack`.
fn split_groups<T>(u: &[f32], out_blocks: usize, pack: impl Fn(&[f32]) -> Vec<T>) -> Vec<Vec<T>> {
    let cols = out_blocks * LANES;
    (0..out_blocks)
        .step_by(MAX_TILE_BLOCKS)
        .map(|first| {
            let width = MAX_TILE_BLOCKS.min(out_blocks - first) * LANES;
            let mut group = Vec::with_capacity(u.len() / cols * width);
            for row in u.chunks_exact(cols) {
                group.extend_from_slice(&row[first * LANES..first * LANES + width]);
            }
            pack(&group)
        })
        .collect()
}

/// One chunk: tiles `first..first + n` in row-major tile order, and its scratch.
struct Chunk {
    first: usize,
    n: usize,
    /// Tiles per output row.
    tiles_w: usize,
    /// `V`: `[ξ][in block][tile][lane]`.
    v: *mut f32,
    /// `M`: `[ξ][out block][tile][lane]`.
    m: *mut f32,
}

impl Chunk {
    /// Output pixel `(y, x)` of the top-left of tile `p` of the chunk.
    fn origin(&self, p: usize) -> (usize, usize) {
        let t = self.first + p;
        (2 * (t / self.tiles_w), 2 * (t % self.tiles_w))
    }
}

/// What the output transform writes: `dst`, the residual it adds, the padded bias.
struct Output<'a> {
    dst: View,
    residual: Option<View>,
    bias: &'a [f32],
    blocks: usize,
    silu: bool,
}

type Vector = [f32; LANES];

#[inline(always)]
fn zip3(a: &Vector, b: &Vector, c: &Vector, f: impl Fn(f32, f32, f32) -> f32) -> Vector {
    std::array::from_fn(|l| f(a[l], b[l], c[l]))
}

/// `Bᵀ d B` of F(2, 3) on a 4×4 window of vectors (`d[4·row + col]`).
#[inline(always)]
fn transform_input(d: &[Vector; POINTS]) -> [Vector; POINTS] {
    // Bᵀ on the columns: (d0 − d2, d1 + d2, d2 − d1, d1 − d3) down each column, then the
    // same along each row.
    let bt = |x0: &Vector, x1: &Vector, x2: &Vector, x3: &Vector| -> [Vector; 4] {
        [
            zip3(x0, x2, x2, |a, b, _| a - b),
            zip3(x1, x2, x2, |a, b, _| a + b),
            zip3(x2, x1, x1, |a, b, _| a - b),
            zip3(x1, x3, x3, |a, b, _| a - b),
        ]
    };
    let mut t = [[0.0; LANES]; POINTS];
    for c in 0..4 {
        let col = bt(&d[c], &d[4 + c], &d[8 + c], &d[12 + c]);
        for (r, v) in col.into_iter().enumerate() {
            t[4 * r + c] = v;
        }
    }
    let mut out = [[0.0; LANES]; POINTS];
    for r in 0..4 {
        let row = bt(&t[4 * r], &t[4 * r + 1], &t[4 * r + 2], &t[4 * r + 3]);
        out[4 * r..4 * r + 4].copy_from_slice(&row);
    }
    out
}

/// `Aᵀ m A` of F(2, 3): the 2×2 outputs (`[4·0 + 0, 0 + 1, 4 + 0, 4 + 1]` order as
/// `y[2·row + col]`) of a 4×4 window of products.
#[inline(always)]
fn transform_output(m: &[Vector; POINTS]) -> [Vector; 4] {
    // Aᵀ = [[1, 1, 1, 0], [0, 1, −1, −1]] down each column, then along each row.
    let at = |x0: &Vector, x1: &Vector, x2: &Vector, x3: &Vector| -> [Vector; 2] {
        [
            zip3(x0, x1, x2, |a, b, c| a + b + c),
            std::array::from_fn(|l| x1[l] - x2[l] - x3[l]),
        ]
    };
    let mut t = [[[0.0; LANES]; 4]; 2];
    for c in 0..4 {
        let [t0, t1] = at(&m[c], &m[4 + c], &m[8 + c], &m[12 + c]);
        t[0][c] = t0;
        t[1][c] = t1;
    }
    let [y00, y01] = at(&t[0][0], &t[0][1], &t[0][2], &t[0][3]);
    let [y10, y11] = at(&t[1][0], &t[1][1], &t[1][2], &t[1][3]);
    [y00, y01, y10, y11]
}

isa_kernel! {
    /// Writes the chunk's `V` from `src` (border included; rows or columns past the border,
    /// which only odd sizes reach, read as zero).
    fn input_transform(chunk: &Chunk, src: &View, in_blocks: usize, pairs: bool) {
        let (h, w) = (src.layout.height as isize, src.layout.width as isize);
        let n = chunk.n;
        for p in 0..n {
            let (oy, ox) = chunk.origin(p);
            let (top, left) = (oy as isize - 1, ox as isize - 1);
            let rows = (h + 1 - top).min(4) as usize;
            let cols = (w + 1 - left).min(4) as usize;
            for ib in 0..in_blocks {
                let mut d = [[0.0f32; LANES]; POINTS];
                for (r, d_row) in d.chunks_exact_mut(4).enumerate().take(rows) {
                    // SAFETY: rows top..top + rows and columns left..left + cols lie inside
                    // the buffer, border included; each pixel holds LANES floats.
                    unsafe {
                        let row = src.at(ib, top + r as isize, left);
                        for (c, d_px) in d_row.iter_mut().enumerate().take(cols) {
                            *d_px = *row.add(c * LANES).cast::<Vector>();
                        }
                    }
                }
                let v = transform_input(&d);
                for (xi, v_xi) in v.iter().enumerate() {
                    let at = (xi * in_blocks + ib) * n + p;
                    // SAFETY: V holds POINTS · in_blocks · n vectors (or as many 8-word
                    // pair groups, in the same memory).
                    unsafe {
                        if pairs {
                            let words = chunk.v.cast::<u32>().add(at * bf16::PAIRS);
                            for (k, two) in v_xi.chunks_exact(2).enumerate() {
                                *words.add(k) = bf16::pair(two[0], two[1]);
                            }
                        } else {
                            *chunk.v.add(at * LANES).cast::<Vector>() = *v_xi;
                        }
                    }
                }
            }
        }
    }
}

isa_kernel! {
    /// Reads the chunk's `M` and writes `act(Aᵀ M A + bias) (+ residual)` for every output
    /// pixel of its tiles inside `dst`.
    fn output_transform(chunk: &Chunk, out: &Output) {
        let (h, w) = (out.dst.layout.height, out.dst.layout.width);
        let n = chunk.n;
        for p in 0..n {
            let (oy, ox) = chunk.origin(p);
            let (rows, cols) = ((h - oy).min(2), (w - ox).min(2));
            for ob in 0..out.blocks {
                let mut m = [[0.0f32; LANES]; POINTS];
                for (xi, m_xi) in m.iter_mut().enumerate() {
                    // SAFETY: M holds POINTS · blocks · n vectors.
                    *m_xi = unsafe {
                        *chunk.m.add(((xi * out.blocks + ob) * n + p) * LANES).cast::<Vector>()
                    };
                }
                let y = transform_output(&m);
                let bias: &Vector = out.bias[ob * LANES..(ob + 1) * LANES].try_into().unwrap();
                for r in 0..rows {
                    for c in 0..cols {
                        let (py, px) = ((oy + r) as isize, (ox + c) as isize);
                        let mut v: Vector = std::array::from_fn(|l| y[2 * r + c][l] + bias[l]);
                        if out.silu {
                            v = v.map(silu);
                        }
                        // SAFETY: (py, px) is an interior pixel of dst (and of the residual,
                        // which has dst's shape); this chunk alone writes it.
                        unsafe {
                            if let Some(res) = &out.residual {
                                let add = &*res.at(ob, py, px).cast::<Vector>();
                                for (v, a) in v.iter_mut().zip(add) {
                                    *v += a;
                                }
                            }
                            *out.dst.at(ob, py, px).cast::<Vector>() = v;
                        }
                    }
                }
            }
        }
    }
}

/// The transforms in AVX-512 registers (the portable ones above are the reference: tested
/// against each other through the whole convolution).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::blocked::{View, LANES};
    use super::super::microkernel::silu_avx512;
    use super::{Chunk, Output};

    /// `(x0 − x2, x1 + x2, x2 − x1, x1 − x3)`: `Bᵀ` on four vectors.
    #[inline(always)]
    unsafe fn bt(x: [__m512; 4]) -> [__m512; 4] {
        [
            _mm512_sub_ps(x[0], x[2]),
            _mm512_add_ps(x[1], x[2]),
            _mm512_sub_ps(x[2], x[1]),
            _mm512_sub_ps(x[1], x[3]),
        ]
    }

    /// `(x0 + x1 + x2, x1 − x2 − x3)`: `Aᵀ` on four vectors.
    #[inline(always)]
    unsafe fn at(x: [__m512; 4]) -> [__m512; 2] {
        [
            _mm512_add_ps(_mm512_add_ps(x[0], x[1]), x[2]),
            _mm512_sub_ps(_mm512_sub_ps(x[1], x[2]), x[3]),
        ]
    }

    /// As [`super::input_transform`] in f32.
    ///
    /// # Safety
    /// AVX-512F; as [`super::WinogradConv::run_chunk`].
    #[target_feature(enable = "avx512f")]
    pub unsafe fn input_transform(chunk: &Chunk, src: &View, in_blocks: usize) {
        input_transform_body::<false>(chunk, src, in_blocks)
    }

    /// As [`super::input_transform`], `V` written as bf16 pairs.
    ///
    /// # Safety
    /// AVX512-BF16; as [`super::WinogradConv::run_chunk`].
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub unsafe fn input_transform_bf16(chunk: &Chunk, src: &View, in_blocks: usize) {
        input_transform_body::<true>(chunk, src, in_blocks)
    }

    #[inline(always)]
    #[allow(clippy::needless_range_loop)] // (r, c) index a 4×4 matrix, as in the maths
    unsafe fn input_transform_body<const PAIRS: bool>(chunk: &Chunk, src: &View, in_blocks: usize) {
        // Floats (or pair words) per stored vector.
        let unit = if PAIRS { LANES / 2 } else { LANES };
        let (h, w) = (src.layout.height as isize, src.layout.width as isize);
        let n = chunk.n;
        let (row_stride, block_stride) = (src.layout.row_stride(), src.layout.block_stride());
        for p in 0..n {
            let (oy, ox) = chunk.origin(p);
            let (top, left) = (oy as isize - 1, ox as isize - 1);
            let rows = (h + 1 - top).min(4) as usize;
            let cols = (w + 1 - left).min(4) as usize;
            let full = rows == 4 && cols == 4;
            let mut base = src.at(0, top, left) as *const f32;
            let mut out = chunk.v.add(p * unit);
            for _ in 0..in_blocks {
                let load = |r: usize, c: usize| {
                    if full || (r < rows && c < cols) {
                        _mm512_loadu_ps(base.add(r * row_stride + c * LANES))
                    } else {
                        _mm512_setzero_ps()
                    }
                };
                // Bᵀ down the four columns, then along the four rows.
                let mut t = [[_mm512_setzero_ps(); 4]; 4];
                for c in 0..4 {
                    let col = bt([load(0, c), load(1, c), load(2, c), load(3, c)]);
                    for r in 0..4 {
                        t[r][c] = col[r];
                    }
                }
                for (r, t_r) in t.iter().enumerate() {
                    for (c, v) in bt(*t_r).into_iter().enumerate() {
                        let at = out.add((4 * r + c) * in_blocks * n * unit);
                        if PAIRS {
                            super::bf16::store_pairs(v, at.cast());
                        } else {
                            _mm512_storeu_ps(at, v);
                        }
                    }
                }
                // Wrapping: past the last block the pointer is never read.
                base = base.wrapping_add(block_stride);
                out = out.add(n * unit);
            }
        }
    }

    /// As [`super::output_transform`].
    ///
    /// # Safety
    /// AVX-512F; as [`super::WinogradConv::run_chunk`].
    #[target_feature(enable = "avx512f")]
    #[allow(clippy::needless_range_loop)] // (r, c) index a 4×4 matrix, as in the maths
    pub unsafe fn output_transform(chunk: &Chunk, out: &Output) {
        let (h, w) = (out.dst.layout.height, out.dst.layout.width);
        let n = chunk.n;
        for p in 0..n {
            let (oy, ox) = chunk.origin(p);
            let (rows, cols) = ((h - oy).min(2), (w - ox).min(2));
            for ob in 0..out.blocks {
                let m = chunk.m.add((ob * n + p) * LANES);
                let load = |xi: usize| _mm512_loadu_ps(m.add(xi * out.blocks * n * LANES));
                let mut t = [[_mm512_setzero_ps(); 4]; 2];
                for c in 0..4 {
                    let [t0, t1] = at([load(c), load(4 + c), load(8 + c), load(12 + c)]);
                    t[0][c] = t0;
                    t[1][c] = t1;
                }
                let bias = _mm512_loadu_ps(out.bias.as_ptr().add(ob * LANES));
                for (r, t_r) in t.iter().enumerate().take(rows) {
                    for (c, y) in at(*t_r).into_iter().enumerate().take(cols) {
                        let (py, px) = ((oy + r) as isize, (ox + c) as isize);
                        let mut v = _mm512_add_ps(y, bias);
                        if out.silu {
                            v = silu_avx512(v);
                        }
                        if let Some(res) = &out.residual {
                            v = _mm512_add_ps(v, _mm512_loadu_ps(res.at(ob, py, px)));
                        }
                        _mm512_storeu_ps(out.dst.at(ob, py, px), v);
                    }
                }
            }
        }
    }
}

thread_local! {
    /// Per-thread `V` and `M` of a chunk, reused across chunks, layers and frames.
    static SCRATCH: RefCell<Vec<Lanes>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::super::direct::DirectConv;
    use super::super::testutil::{max_diff, noise, spec};
    use super::*;
    use crate::detect::cpu::blocked::Layout;

    /// A zeroed blocked buffer of `layout` holding `nchw` (channels × h × w) in its interior.
    fn blocked(layout: Layout, nchw: &[f32]) -> Vec<Lanes> {
        let mut buf = vec![Lanes::default(); layout.len() / LANES];
        let (h, w) = (layout.height, layout.width);
        let floats = buf.as_mut_ptr().cast::<f32>();
        for c in 0..layout.channels {
            for y in 0..h {
                for x in 0..w {
                    // SAFETY: the offset of an interior pixel lies inside the buffer.
                    unsafe {
                        *floats.add(layout.channel_offset(c, y, x)) = nchw[(c * h + y) * w + x]
                    };
                }
            }
        }
        buf
    }

    /// Winograd against the direct convolution (itself tested against candle), every
    /// ISA, with and without SiLU and residual, on even and odd sizes.
    fn check(c_in: usize, c_out: usize, (h, w): (usize, usize), silu: bool, residual: bool) {
        let mut s = spec(c_in, c_out, 3, 1, 1);
        s.silu = silu;
        let weight = noise(c_out * c_in * 9, 3 + h as u64);
        let bias = noise(c_out, 5);
        let src_layout = Layout::blocked(c_in, h, w);
        let dst_layout = Layout::blocked(c_out, h, w);
        let mut src = blocked(src_layout, &noise(c_in * h * w, 7 + w as u64));
        let mut res = blocked(dst_layout, &noise(c_out * h * w, 11));
        let view = |buf: &mut Vec<Lanes>, layout| View {
            ptr: buf.as_mut_ptr().cast(),
            layout,
        };
        let direct = DirectConv::new(s, &weight, &bias, LANES).unwrap();
        let mut want = vec![Lanes::default(); dst_layout.len() / LANES];
        let res_view = residual.then(|| view(&mut res, dst_layout));
        // SAFETY: every view covers its layout; the outputs are separate buffers.
        unsafe {
            direct.run(
                view(&mut src, src_layout),
                view(&mut want, dst_layout),
                res_view,
            )
        };
        for isa in Isa::all_supported() {
            let wino = WinogradConv::new(s, &weight, &bias).unwrap().with_isa(isa);
            let mut got = vec![Lanes::default(); dst_layout.len() / LANES];
            // SAFETY: as above.
            unsafe {
                wino.run(
                    view(&mut src, src_layout),
                    view(&mut got, dst_layout),
                    res_view,
                )
            };
            let flat = |b: &[Lanes]| b.iter().flat_map(|l| l.0).collect::<Vec<f32>>();
            let err = max_diff(&flat(&got), &flat(&want));
            assert!(
                err < 2e-5 * (c_in as f32).sqrt(),
                "{isa:?} {c_in}→{c_out} {h}x{w}: max error {err}"
            );
        }
    }

    #[test]
    fn winograd_matches_the_direct_convolution() {
        check(16, 16, (8, 8), true, false);
        check(32, 48, (7, 13), true, true);
        check(20, 85, (5, 4), false, false);
        check(64, 64, (1, 1), true, true);
        check(128, 32, (20, 20), true, false);
        check(16, 16, (3, 40), false, true);
    }

    #[test]
    fn only_stride_one_three_by_three_dense_applies() {
        assert!(WinogradConv::applies(&spec(16, 16, 3, 1, 1), LANES));
        assert!(!WinogradConv::applies(&spec(16, 16, 3, 2, 1), LANES));
        assert!(!WinogradConv::applies(&spec(16, 16, 1, 1, 1), LANES));
        assert!(!WinogradConv::applies(&spec(16, 16, 3, 1, 16), LANES));
        assert!(!WinogradConv::applies(&spec(3, 16, 3, 1, 1), 3));
    }
}

#[cfg(test)]
mod timing {
    use std::time::Instant;

    use super::super::direct::DirectConv;
    use super::super::pool::in_pool;
    use super::super::testutil::{noise, spec};
    use super::*;
    use crate::detect::cpu::blocked::Layout;

    /// Winograd and direct on YOLOv8n's stride-1 3×3 shapes, alternating run by run:
    /// `cargo test --release --lib time_winograd -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn time_winograd_against_direct() {
        let shapes = [
            (16, 16, 160),
            (32, 32, 80),
            (64, 64, 80),
            (80, 80, 80),
            (64, 64, 40),
            (128, 80, 40),
            (128, 128, 20),
            (80, 80, 20),
        ];
        for (c_in, c_out, size) in shapes {
            let s = spec(c_in, c_out, 3, 1, 1);
            let (weight, bias) = (noise(c_out * c_in * 9, 1), noise(c_out, 2));
            let (src_l, dst_l) = (
                Layout::blocked(c_in, size, size),
                Layout::blocked(c_out, size, size),
            );
            let mut src = vec![Lanes::default(); src_l.len() / LANES];
            let mut dst = vec![Lanes::default(); dst_l.len() / LANES];
            let sv = View {
                ptr: src.as_mut_ptr().cast(),
                layout: src_l,
            };
            let dv = View {
                ptr: dst.as_mut_ptr().cast(),
                layout: dst_l,
            };
            let direct = DirectConv::new(s, &weight, &bias, LANES).unwrap();
            let wino = WinogradConv::new(s, &weight, &bias).unwrap();
            let (mut td, mut tw) = (Vec::new(), Vec::new());
            for i in 0..60 {
                let t = Instant::now();
                // SAFETY: the views cover their buffers, which do not overlap.
                in_pool(|| unsafe { direct.run(sv, dv, None) });
                let d = t.elapsed().as_secs_f64() * 1e3;
                let t = Instant::now();
                // SAFETY: as above.
                in_pool(|| unsafe { wino.run(sv, dv, None) });
                let w = t.elapsed().as_secs_f64() * 1e3;
                if i >= 10 {
                    td.push(d);
                    tw.push(w);
                }
            }
            let ratios: Vec<f64> = tw.iter().zip(&td).map(|(w, d)| w / d).collect();
            let med = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            println!(
                "{c_in:>3}→{c_out:<3} @{size:>3}: direct {:.3} ms, winograd {:.3} ms, ratio {:.2}",
                med(td),
                med(tw),
                med(ratios)
            );
        }
    }
}
