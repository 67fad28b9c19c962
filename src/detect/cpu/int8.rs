//! int8 for the executor's dense convolutions (`--precision int8`): post-training
//! quantization with per-output-channel symmetric int8 weights and a per-tensor asymmetric
//! uint8 input (its range calibrated on images, [`ActRange`]), products summed exactly in
//! i32, the epilogue (scale, bias, SiLU, residual) in f32; every activation stays f32 in
//! the blocked layout between ops.
//!
//! The arithmetic is AVX512-VNNI's `vpdpbusd`: each i32 lane adds the four products of
//! four unsigned input bytes with four signed weight bytes. So a 16-channel block of one
//! input pixel is four *quad* words (channels `4q..4q+3` in bytes 0..3), weights are quads
//! per output channel, and a register tile broadcasts one input quad to 16 output
//! channels: a quarter of f32's instructions for the same multiply-adds.
//!
//! With `x ≈ s·(q − z)` for the input and `w ≈ sᵥ·qᵥ` per output channel, an output is
//! `s·sᵥ·(Σ q·qᵥ − z·Σ qᵥ) + bias`: the tile starts its accumulators at `−z·Σ qᵥ` (the zero
//! border quantizes to exactly `z`, so the padding stays zero) and finishes with one
//! `fma(acc, s·sᵥ, bias)`. Integer sums are exact (no overflow below ~16 000 input channels
//! per tap), so [`portable_tile`] and [`quantize`] (rounding to nearest even, as
//! `vcvtps2dq`) are the bit-exact scalar reference of the hardware path, run where the CPU
//! lacks VNNI and tested against it where it has it.
//!
//! [`DirectInt8`] quantizes its whole input once per run into the workspace's byte buffer
//! (border included, so 3×3 windows read their padding), then runs the register tiles over
//! output rows in parallel.

use std::sync::Mutex;

use super::blocked::{View, BORDER, LANES};
use super::epilogue::silu;
use super::isa::Isa;
use super::pool::for_each_index;
use super::spec::{ConvError, ConvSpec};

/// Channel quads per 16-channel block.
pub const QUADS: usize = LANES / 4;
/// Most pixels per register tile (as the f32 tiles: 24 accumulators).
pub const MAX_TILE_PIXELS: usize = 12;
/// Output blocks per register tile.
pub const MAX_TILE_BLOCKS: usize = 2;

/// Whether this CPU has the int8 dot-product instructions lookout uses (AVX512-VNNI).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The calibrated range of one convolution's input, `lo ≤ 0 ≤ hi`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ActRange {
    pub lo: f32,
    pub hi: f32,
}

impl ActRange {
    /// (scale, zero point) of the uint8 grid over the range: `x ≈ scale · (q − zero)`, 0
    /// exactly representable.
    pub fn quantization(self) -> (f32, f32) {
        let (lo, hi) = (self.lo.min(0.0), self.hi.max(0.0));
        let scale = if hi > lo { (hi - lo) / 255.0 } else { 1.0 };
        let zero = (-lo / scale).round_ties_even().clamp(0.0, 255.0);
        (scale, zero)
    }
}

/// `x` on the uint8 grid (`inv_scale` = 1 / scale): `fma(x, inv_scale, zero)` clamped to
/// 0..255 (NaN to 0), rounded to nearest even, as the AVX-512 conversion does.
#[inline(always)]
pub fn quantize(x: f32, inv_scale: f32, zero: f32) -> u8 {
    // NaN stays NaN through the clamp and converts to 0.
    x.mul_add(inv_scale, zero)
        .clamp(0.0, 255.0)
        .round_ties_even() as u8
}

/// The largest input range seen per quantizable convolution while calibrating: a planner
/// in calibration mode ([`super::graph::Arithmetic::Calibrate`]) wraps each of them to
/// record its input here before running it in f32.
#[derive(Debug, Default)]
pub struct Calibration {
    /// Per convolution (plan order): the spec and the range, `None` until it ran.
    layers: Mutex<Vec<Option<(ConvSpec, ActRange)>>>,
}

impl Calibration {
    pub fn new() -> Self {
        Self::default()
    }

    /// Widens convolution `slot`'s range to take `range`.
    pub fn record(&self, slot: usize, spec: ConvSpec, range: ActRange) {
        let mut layers = match self.layers.lock() {
            Ok(l) => l,
            Err(e) => e.into_inner(),
        };
        if layers.len() <= slot {
            layers.resize(slot + 1, None);
        }
        let merged = match layers[slot] {
            Some((_, r)) => ActRange {
                lo: r.lo.min(range.lo),
                hi: r.hi.max(range.hi),
            },
            None => range,
        };
        layers[slot] = Some((spec, merged));
    }

    /// Every convolution's spec and range in plan order; `None` if one never ran.
    pub fn ranges(&self) -> Option<Vec<(ConvSpec, ActRange)>> {
        let layers = match self.layers.lock() {
            Ok(l) => l,
            Err(e) => e.into_inner(),
        };
        layers.iter().copied().collect()
    }
}

/// The range of the interior of `src` (channel lanes past the data are zero, so 0 is
/// always in it; NaN is skipped).
///
/// # Safety
/// `src` is a valid view.
pub unsafe fn observe(src: View) -> ActRange {
    let l = src.layout;
    let (mut lo, mut hi) = (0.0f32, 0.0f32);
    for b in 0..l.blocks() {
        for y in 0..l.height {
            let row = std::slice::from_raw_parts(src.at(b, y as isize, 0), l.width * l.pixel);
            for &v in row {
                lo = lo.min(v);
                hi = hi.max(v);
            }
        }
    }
    ActRange { lo, hi }
}

/// One register tile's pointers and strides, in 32-bit quad words for the input and the
/// weights, floats for the rest. `src` points at tap (0, 0) of the tile's first pixel, quad
/// 0 of input block 0.
pub(super) struct QuadTile {
    pub src: *const u32,
    pub src_block: usize,
    pub src_row: usize,
    pub src_pixel: usize,
    /// Words from one output pixel's input window to the next.
    pub step: usize,
    pub kernel: usize,
    pub in_blocks: usize,
    /// `[in block][ky][kx][quad][group width]`.
    pub weights: *const u32,
    /// Per output lane: the accumulator's start `−z·Σ qᵥ`, the scale `s·sᵥ`, the bias.
    pub start: *const i32,
    pub scale: *const f32,
    pub bias: *const f32,
    pub dst: *mut f32,
    pub dst_block: usize,
    /// Floats from one output pixel to the next.
    pub dst_pixel: usize,
    pub residual: Option<(*const f32, usize)>,
    pub silu: bool,
}

/// Runs `tile` with `blocks` (1 or 2) output blocks and `n` (1..=12) pixels: AVX512-VNNI
/// when `hardware` (the caller checked [`supported`]), else the scalar reference.
///
/// # Safety
/// The tile's pointers cover the extents its sizes imply.
pub(super) unsafe fn dispatch_quad_tile(hardware: bool, tile: &QuadTile, blocks: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if hardware {
        // Stride 1 and 2 as constants, so every broadcast's address is a fixed offset.
        match (blocks == 2, tile.step) {
            (true, 4) => avx512::by_width::<true, 4>(tile, n),
            (true, 8) => avx512::by_width::<true, 8>(tile, n),
            (true, _) => avx512::by_width::<true, 0>(tile, n),
            (false, 4) => avx512::by_width::<false, 4>(tile, n),
            (false, 8) => avx512::by_width::<false, 8>(tile, n),
            (false, _) => avx512::by_width::<false, 0>(tile, n),
        }
        return;
    }
    let _ = hardware;
    portable_tile(tile, blocks, n);
}

/// `vpdpbusd` on one lane: `acc` plus the four products of the bytes of `x` (unsigned) and
/// `w` (signed), wrapping as the instruction does.
#[inline(always)]
pub fn dot_quad(acc: i32, x: u32, w: u32) -> i32 {
    let (x, w) = (x.to_le_bytes(), w.to_le_bytes());
    (0..4).fold(acc, |a, j| {
        a.wrapping_add(i32::from(x[j]) * i32::from(w[j] as i8))
    })
}

/// The epilogue of one lane: `fma(acc, scale, bias)`, SiLU, residual.
#[inline(always)]
fn finish_lane(acc: i32, scale: f32, bias: f32, silu_on: bool) -> f32 {
    let v = (acc as f32).mul_add(scale, bias);
    if silu_on {
        silu(v)
    } else {
        v
    }
}

/// The scalar reference of a tile: [`dot_quad`] per output lane.
///
/// # Safety
/// As [`dispatch_quad_tile`].
unsafe fn portable_tile(t: &QuadTile, blocks: usize, n: usize) {
    let width = blocks * LANES;
    let start = std::slice::from_raw_parts(t.start, width);
    let mut acc = [[[0i32; LANES]; MAX_TILE_PIXELS]; MAX_TILE_BLOCKS];
    for (b, acc_b) in acc.iter_mut().enumerate().take(blocks) {
        for acc_p in acc_b.iter_mut().take(n) {
            acc_p.copy_from_slice(&start[b * LANES..(b + 1) * LANES]);
        }
    }
    let mut w = t.weights;
    for ib in 0..t.in_blocks {
        for ky in 0..t.kernel {
            for kx in 0..t.kernel {
                let src = t
                    .src
                    .add(ib * t.src_block + ky * t.src_row + kx * t.src_pixel);
                for k in 0..QUADS {
                    let wv = std::slice::from_raw_parts(w, width);
                    for p in 0..n {
                        let x = *src.add(p * t.step + k);
                        for (b, acc_b) in acc.iter_mut().enumerate().take(blocks) {
                            for (a, &wl) in acc_b[p].iter_mut().zip(&wv[b * LANES..]) {
                                *a = dot_quad(*a, x, wl);
                            }
                        }
                    }
                    w = w.add(width);
                }
            }
        }
    }
    let (scale, bias) = (
        std::slice::from_raw_parts(t.scale, width),
        std::slice::from_raw_parts(t.bias, width),
    );
    for (b, acc_b) in acc.iter().enumerate().take(blocks) {
        for (p, acc_p) in acc_b.iter().enumerate().take(n) {
            let out = t.dst.add(b * t.dst_block + p * t.dst_pixel);
            for (lane, &a) in acc_p.iter().enumerate() {
                let o = b * LANES + lane;
                let mut v = finish_lane(a, scale[o], bias[o], t.silu);
                if let Some((res, res_block)) = t.residual {
                    v += *res.add(b * res_block + p * LANES + lane);
                }
                *out.add(lane) = v;
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
    use super::{QuadTile, QUADS};

    /// The zero-point correction of block `b` (the sums start from it).
    #[inline(always)]
    unsafe fn start(t: &QuadTile, b: usize) -> __m512i {
        _mm512_loadu_si512(t.start.add(b * LANES).cast())
    }

    #[inline(always)]
    unsafe fn zero() -> __m512i {
        _mm512_setzero_si512()
    }

    /// A block's 16 channels as 4 quads.
    #[inline(always)]
    fn words(_: &QuadTile) -> usize {
        QUADS
    }

    #[inline(always)]
    unsafe fn load_weights(w: *const u32) -> __m512i {
        _mm512_loadu_si512(w.cast())
    }

    #[inline(always)]
    unsafe fn broadcast(x: *const u32) -> __m512i {
        _mm512_set1_epi32(*x as i32)
    }

    #[inline(always)]
    unsafe fn dot(acc: __m512i, x: __m512i, w: __m512i) -> __m512i {
        _mm512_dpbusd_epi32(acc, x, w)
    }

    /// Scales, activates, adds the residual to and stores one accumulator: block `b`,
    /// pixel `p`.
    #[inline(always)]
    unsafe fn finish(t: &QuadTile, b: usize, p: usize, acc: __m512i) {
        let scale = _mm512_loadu_ps(t.scale.add(b * LANES));
        let bias = _mm512_loadu_ps(t.bias.add(b * LANES));
        let mut v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc), scale, bias);
        if t.silu {
            v = silu_avx512(v);
        }
        if let Some((res, res_block)) = t.residual {
            v = _mm512_add_ps(v, _mm512_loadu_ps(res.add(b * res_block + p * LANES)));
        }
        _mm512_storeu_ps(t.dst.add(b * t.dst_block + p * t.dst_pixel), v);
    }

    register_tiles!("avx512f,avx512vnni", QuadTile);

    /// `pixels` pixels of 16 floats at `src` as 16 bytes each at `dst` ([`super::quantize`]
    /// per value).
    ///
    /// # Safety
    /// AVX-512F; `16 · pixels` floats readable, as many bytes writable.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn quantize_pixels(
        src: *const f32,
        dst: *mut u8,
        pixels: usize,
        inv_scale: f32,
        zero: f32,
    ) {
        let (inv, z) = (_mm512_set1_ps(inv_scale), _mm512_set1_ps(zero));
        let (lo, hi) = (_mm512_setzero_ps(), _mm512_set1_ps(255.0));
        for p in 0..pixels {
            let x = _mm512_loadu_ps(src.add(p * LANES));
            let t = _mm512_min_ps(_mm512_max_ps(_mm512_fmadd_ps(x, inv, z), lo), hi);
            let q = _mm512_cvtepi32_epi8(_mm512_cvtps_epi32(t));
            _mm_storeu_si128(dst.add(p * LANES).cast(), q);
        }
    }
}

/// `pixels` pixels of 16 floats at `src` quantized to bytes at `dst`: AVX-512 when
/// `hardware`, else [`quantize`] per value (the same bytes).
///
/// # Safety
/// `16 · pixels` floats readable at `src`, as many bytes writable at `dst`; `hardware`
/// only where [`supported`].
pub(super) unsafe fn quantize_pixels(
    hardware: bool,
    src: *const f32,
    dst: *mut u8,
    pixels: usize,
    (inv_scale, zero): (f32, f32),
) {
    #[cfg(target_arch = "x86_64")]
    if hardware {
        avx512::quantize_pixels(src, dst, pixels, inv_scale, zero);
        return;
    }
    let _ = hardware;
    for i in 0..pixels * LANES {
        *dst.add(i) = quantize(*src.add(i), inv_scale, zero);
    }
}

/// Per-output-channel symmetric int8 weights of `weight` (PyTorch `[c_out, c_in, k, k]`):
/// the quantized values in the same layout and each channel's scale (`max |w| / 127`).
pub fn quantize_weights(spec: &ConvSpec, weight: &[f32]) -> (Vec<i8>, Vec<f32>) {
    let per_out = weight.len() / spec.c_out;
    let mut q = vec![0i8; weight.len()];
    let mut scales = vec![1.0f32; spec.c_out];
    for (o, (w, qo)) in weight
        .chunks_exact(per_out)
        .zip(q.chunks_exact_mut(per_out))
        .enumerate()
    {
        let max = w.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        if max > 0.0 {
            scales[o] = max / 127.0;
            for (qv, &v) in qo.iter_mut().zip(w) {
                *qv = (v / scales[o]).round_ties_even().clamp(-127.0, 127.0) as i8;
            }
        }
    }
    (q, scales)
}

/// A dense convolution (groups 1, kernel 1 or 3, padding ≤ 1) on a blocked input in int8.
#[derive(Debug, Clone)]
pub struct DirectInt8 {
    spec: ConvSpec,
    /// Per output group of up to [`MAX_TILE_BLOCKS`] blocks: quad words
    /// `[in block][ky][kx][quad][group width]`, zero past the channels.
    packed: Vec<Vec<u32>>,
    /// Per output channel, padded to whole blocks: `−z·Σ qᵥ`, `s·sᵥ` and the bias.
    start: Vec<i32>,
    scale: Vec<f32>,
    bias: Vec<f32>,
    /// The input's `1 / s` and `z`.
    input: (f32, f32),
    range: ActRange,
    /// The AVX512-VNNI kernels (else the scalar reference).
    hardware: bool,
}

impl DirectInt8 {
    /// `weight` in PyTorch layout `[c_out, c_in, k, k]`; the input must be blocked and is
    /// quantized over `range`.
    pub fn new(
        spec: ConvSpec,
        weight: &[f32],
        bias: &[f32],
        range: ActRange,
    ) -> Result<Self, ConvError> {
        if spec.groups != 1 {
            return Err(ConvError::Groups { spec });
        }
        spec.check_params(weight, bias)?;
        let k = spec.kernel;
        let (in_blocks, out_blocks) = (spec.c_in.div_ceil(LANES), spec.c_out.div_ceil(LANES));
        let (q, w_scales) = quantize_weights(&spec, weight);
        let (s, z) = range.quantization();
        let qw = |o: usize, i: usize, ky: usize, kx: usize| -> i8 {
            if o < spec.c_out && i < spec.c_in {
                q[((o * spec.c_in + i) * k + ky) * k + kx]
            } else {
                0
            }
        };
        let packed = (0..out_blocks)
            .step_by(MAX_TILE_BLOCKS)
            .map(|first| {
                let width = MAX_TILE_BLOCKS.min(out_blocks - first) * LANES;
                let mut group = Vec::with_capacity(in_blocks * k * k * QUADS * width);
                for ib in 0..in_blocks {
                    for ky in 0..k {
                        for kx in 0..k {
                            for quad in 0..QUADS {
                                let i = ib * LANES + 4 * quad;
                                for j in 0..width {
                                    let o = first * LANES + j;
                                    let bytes = [0, 1, 2, 3].map(|c| qw(o, i + c, ky, kx) as u8);
                                    group.push(u32::from_le_bytes(bytes));
                                }
                            }
                        }
                    }
                }
                group
            })
            .collect();
        let lanes = out_blocks * LANES;
        let per_out = spec.c_in * k * k;
        let mut start = vec![0i32; lanes];
        let mut scale = vec![0.0f32; lanes];
        let mut padded_bias = vec![0.0f32; lanes];
        for o in 0..spec.c_out {
            let sum: i32 = q[o * per_out..(o + 1) * per_out]
                .iter()
                .map(|&v| i32::from(v))
                .sum();
            start[o] = -(z as i32) * sum;
            scale[o] = s * w_scales[o];
            padded_bias[o] = bias[o];
        }
        Ok(Self {
            spec,
            packed,
            start,
            scale,
            bias: padded_bias,
            input: (1.0 / s, z),
            range,
            hardware: supported(),
        })
    }

    /// The same convolution on the AVX512-VNNI tiles for `Isa::Avx512` where the CPU has
    /// them, else on the scalar reference.
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.hardware = isa.supported() == Isa::Avx512 && supported();
        self
    }

    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// The input range it was quantized for.
    pub fn range(&self) -> ActRange {
        self.range
    }

    /// Bytes of the workspace's quantized-input buffer a run over `src` needs.
    pub fn scratch_bytes(src: &super::blocked::Layout) -> usize {
        src.blocks() * src.block_stride() / src.pixel * LANES
    }

    /// `dst = act(conv(src) + bias) (+ residual)`: the input quantized into `scratch`
    /// (block rows in parallel), then output rows in parallel. A 1×1 stride-1 convolution
    /// reads only its own output row's input row: each row item quantizes that row into
    /// `scratch` and runs the tiles on it at once (one parallel loop, the bytes still in
    /// L1).
    ///
    /// # Safety
    /// As [`super::direct::DirectConv::run`]; `scratch` holds [`Self::scratch_bytes`]
    /// bytes, 4-aligned, that nothing else touches during the run.
    pub unsafe fn run(&self, src: View, dst: View, residual: Option<View>, scratch: *mut u8) {
        let l = src.layout;
        debug_assert_eq!(l.pixel, LANES);
        let out = Scratch(scratch);
        let grid_rows = l.height + 2 * BORDER;
        let spec = &self.spec;
        if spec.kernel == 1 && spec.stride == 1 && spec.padding == 0 {
            for_each_index(dst.layout.height, |oy| {
                // SAFETY: as run's contract; the item quantizes input row oy of every block,
                // reads only those rows and writes its own output row.
                unsafe {
                    for b in 0..l.blocks() {
                        self.quantize_row(src, out, b * grid_rows + BORDER + oy);
                    }
                    self.run_row(out.ptr().cast::<u32>(), l, dst, residual, oy);
                }
            });
            return;
        }
        for_each_index(l.blocks() * grid_rows, |r| {
            // SAFETY: as run's contract; each item quantizes its own grid row.
            unsafe { self.quantize_row(src, out, r) };
        });
        for_each_index(dst.layout.height, |oy| {
            // SAFETY: as run's contract; each row item writes its own output row.
            unsafe { self.run_row(out.ptr().cast::<u32>(), l, dst, residual, oy) };
        });
    }

    /// Quantizes row `r` of `src`'s (block, row) grid, border included, into the same
    /// offsets of `scratch` (one byte per float).
    ///
    /// # Safety
    /// As [`Self::run`]; no other item writes that row's bytes meanwhile.
    unsafe fn quantize_row(&self, src: View, scratch: Scratch, r: usize) {
        let l = src.layout;
        let first = r * l.row_stride();
        quantize_pixels(
            self.hardware,
            src.at(0, -1, -1).add(first),
            scratch.ptr().add(first),
            l.row_stride() / LANES,
            self.input,
        );
    }

    /// Output row `oy` from the quantized input `q` (laid out as `src`, 4 quads a pixel),
    /// every output group, tiles of up to 12 pixels.
    ///
    /// # Safety
    /// As [`Self::run`], for this row.
    unsafe fn run_row(
        &self,
        q: *const u32,
        src: super::blocked::Layout,
        dst: View,
        residual: Option<View>,
        oy: usize,
    ) {
        let spec = &self.spec;
        let words = |floats: usize| floats / (LANES / QUADS);
        let width = dst.layout.width;
        let tiles = width.div_ceil(MAX_TILE_PIXELS);
        let (base, extra) = (width / tiles, width % tiles);
        let in_blocks = spec.c_in.div_ceil(LANES);
        let (s, pad) = (spec.stride, spec.padding as isize);
        let top = (oy * s) as isize - pad;
        for (group, weights) in self.packed.iter().enumerate() {
            let first_block = group * MAX_TILE_BLOCKS;
            let blocks = (dst.layout.blocks() - first_block).min(MAX_TILE_BLOCKS);
            let lanes = first_block * LANES;
            let mut ox = 0;
            for t in 0..tiles {
                let n = base + usize::from(t < extra);
                let left = (ox * s) as isize - pad;
                let tile = QuadTile {
                    src: q.add(words(src.offset(0, top, left))),
                    src_block: words(src.block_stride()),
                    src_row: words(src.row_stride()),
                    src_pixel: QUADS,
                    step: s * QUADS,
                    kernel: spec.kernel,
                    in_blocks,
                    weights: weights.as_ptr(),
                    start: self.start[lanes..].as_ptr(),
                    scale: self.scale[lanes..].as_ptr(),
                    bias: self.bias[lanes..].as_ptr(),
                    dst: dst.at(first_block, oy as isize, ox as isize),
                    dst_block: dst.layout.block_stride(),
                    dst_pixel: LANES,
                    residual: residual.map(|r| {
                        (
                            r.at(first_block, oy as isize, ox as isize) as *const f32,
                            r.layout.block_stride(),
                        )
                    }),
                    silu: spec.silu,
                };
                dispatch_quad_tile(self.hardware, &tile, blocks, n);
                ox += n;
            }
        }
    }
}

/// The quantized-input buffer shared by a run's parallel items (each writes its own rows).
#[derive(Debug, Clone, Copy)]
struct Scratch(*mut u8);
// SAFETY: only a pointer; the items write disjoint bytes and the buffer outlives the loops.
unsafe impl Send for Scratch {}
unsafe impl Sync for Scratch {}

impl Scratch {
    fn ptr(self) -> *mut u8 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantization_keeps_zero_exact_and_rounds_to_even() {
        let (s, z) = ActRange { lo: -0.3, hi: 5.0 }.quantization();
        assert!((s - 5.3 / 255.0).abs() < 1e-7);
        assert_eq!(z, 14.0);
        assert_eq!(quantize(0.0, 1.0 / s, z), 14);
        assert_eq!(quantize(-1.0, 1.0 / s, z), 0, "clamped below");
        assert_eq!(quantize(100.0, 1.0 / s, z), 255, "clamped above");
        assert_eq!(quantize(f32::NAN, 1.0, 3.0), 0);
        assert_eq!(quantize(2.5, 1.0, 0.0), 2, "a tie to even");
        assert_eq!(quantize(3.5, 1.0, 0.0), 4, "a tie to even");
        // A range that does not hold 0 is widened to it; an empty one still works.
        assert_eq!(ActRange { lo: 1.0, hi: 2.0 }.quantization().1, 0.0);
        assert_eq!(ActRange { lo: 0.0, hi: 0.0 }.quantization(), (1.0, 0.0));
        let (q, scales) =
            quantize_weights(&ConvSpec::new(2, 2, 1, 1, 1, false), &[0.5, -1.0, 0.0, 0.0]);
        assert_eq!(q, [64, -127, 0, 0]);
        assert_eq!(scales, [1.0 / 127.0, 1.0]);
        assert_eq!(
            dot_quad(
                10,
                u32::from_le_bytes([255, 1, 2, 0]),
                u32::from_le_bytes([0x80, 3, 0xff, 9])
            ),
            10 - 255 * 128 + 3 - 2
        );
    }

    /// The AVX-512 quantization and the VNNI register tiles give the scalar reference's
    /// results bit for bit (no activation: SiLU's two implementations differ in the last
    /// bits), every width, one and two output blocks, 3×3 windows, a residual; where the
    /// CPU has them (skipped with a message elsewhere).
    #[test]
    fn hardware_int8_equals_the_scalar_reference_exactly() {
        if !supported() {
            eprintln!("skipped: this CPU has no AVX512-VNNI (the scalar reference runs alone)");
            return;
        }
        let noise = super::super::testutil::noise;
        let mut values: Vec<f32> = noise(64 * LANES, 5).iter().map(|v| v * 3.0).collect();
        values[3] = f32::NAN;
        values[4] = 0.5; // a tie at scale 1, zero 0
        for params in [(1.0, 0.0), (255.0 / 6.0, 128.0), (10.0, 3.0)] {
            let (mut hw, mut sw) = (vec![0u8; values.len()], vec![0u8; values.len()]);
            // SAFETY: 64 pixels of 16 floats in, as many bytes out; AVX-512 checked.
            unsafe {
                quantize_pixels(true, values.as_ptr(), hw.as_mut_ptr(), 64, params);
                quantize_pixels(false, values.as_ptr(), sw.as_mut_ptr(), 64, params);
            }
            assert_eq!(hw, sw, "{params:?}");
        }
        // Strides 1 and 2 (the tiles' constant-step paths) and 3 (the run-time step).
        let (in_blocks, kernel, pixels) = (2, 3, MAX_TILE_PIXELS);
        let cols = (pixels - 1) * 3 + kernel;
        let word = |seed: u64, len: usize| -> Vec<u32> {
            noise(len * 4, seed)
                .chunks_exact(4)
                .map(|c| {
                    u32::from_le_bytes([c[0], c[1], c[2], c[3]].map(|v| (v * 127.9) as i8 as u8))
                })
                .collect()
        };
        let src = word(41, in_blocks * kernel * cols * QUADS);
        for (blocks, step) in [1, 2]
            .into_iter()
            .flat_map(|b| (1..=3).map(move |s| (b, s * QUADS)))
        {
            let width = blocks * LANES;
            let weights = word(42, in_blocks * kernel * kernel * QUADS * width);
            let start: Vec<i32> = (0..width as i32).map(|i| i * 977 - 9000).collect();
            let scale: Vec<f32> = noise(width, 43).iter().map(|v| v.abs() * 1e-3).collect();
            let bias = noise(width, 44);
            let residual = noise(blocks * pixels * LANES, 45);
            for n in 1..=pixels {
                let mut out = [vec![0.0f32; blocks * pixels * LANES], vec![]];
                out[1] = out[0].clone();
                for (hardware, out) in [true, false].into_iter().zip(&mut out) {
                    let tile = QuadTile {
                        src: src.as_ptr(),
                        src_block: kernel * cols * QUADS,
                        src_row: cols * QUADS,
                        src_pixel: QUADS,
                        step,
                        kernel,
                        in_blocks,
                        weights: weights.as_ptr(),
                        start: start.as_ptr(),
                        scale: scale.as_ptr(),
                        bias: bias.as_ptr(),
                        dst: out.as_mut_ptr(),
                        dst_block: pixels * LANES,
                        dst_pixel: LANES,
                        residual: Some((residual.as_ptr(), pixels * LANES)),
                        silu: false,
                    };
                    // SAFETY: the buffers cover the tile's extents; AVX512-VNNI checked.
                    unsafe { dispatch_quad_tile(hardware, &tile, blocks, n) };
                }
                assert!(out[0][..n * LANES].iter().all(|v| *v != 0.0), "written");
                assert_eq!(out[0], out[1], "{blocks} block(s), step {step}, {n} pixels");
            }
        }
        eprintln!(
            "ran: AVX-512 quantization and AVX512-VNNI register tiles, bit-exact to the reference"
        );
    }
}
