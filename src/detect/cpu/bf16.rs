//! bf16 for the executor's dense convolutions (`--precision bf16`): weights and the
//! convolutions' inputs rounded to bfloat16, products accumulated in f32, the epilogue (bias,
//! SiLU, residual) in f32; every activation stays f32 in the blocked layout between ops.
//!
//! The arithmetic is AVX512-BF16's `vdpbf16ps`: each f32 lane accumulates the products of one
//! *pair* of bf16 values, `acc += a[2i+1]·b[2i+1]; acc += a[2i]·b[2i]` (the products of two
//! bf16 are exact in f32). So inputs are stored as pairs of adjacent channels in one 32-bit
//! word (a 16-channel block is 8 pairs), weights as pairs per output channel, and a register
//! tile broadcasts one input pair to 16 output channels: half the instructions of f32 for the
//! same multiply-adds. [`to_bf16`] and [`portable_tile`] are the exact scalar reference of
//! that arithmetic (rounding to nearest even, denormal inputs as zero, the same order of
//! additions), run where the CPU lacks the instructions and tested against them where it has
//! them.
//!
//! [`DirectBf16`] runs the dense convolutions other than Winograd's (1×1, strided 3×3): per
//! output row it converts the input rows under it into pairs (a thread-local band), then runs
//! the register tiles over the band. Winograd's bf16 GEMMs ([`super::winograd`]) use the same
//! tiles on transformed inputs.

use std::cell::RefCell;

use super::blocked::{View, LANES};
use super::epilogue::silu;
use super::isa::Isa;
use super::pool::for_each_index;
use super::spec::{ConvError, ConvSpec};

/// Channel pairs per 16-channel block.
pub const PAIRS: usize = LANES / 2;
/// Most pixels per register tile (as the f32 tiles: 24 accumulators).
pub const MAX_TILE_PIXELS: usize = 12;
/// Output blocks per register tile.
pub const MAX_TILE_BLOCKS: usize = 2;

/// `x` rounded to bfloat16 (nearest, ties to even), as `vcvtneps2bf16` does: NaN stays NaN
/// (quiet), denormal inputs become signed zero.
#[inline(always)]
pub fn to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if x.is_nan() {
        return ((bits >> 16) | 0x40) as u16;
    }
    if bits & 0x7f80_0000 == 0 {
        return ((bits >> 16) & 0x8000) as u16;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    ((bits + rounding) >> 16) as u16
}

/// The f32 a bf16 stands for (denormals as zero, as `vdpbf16ps` reads them).
#[inline(always)]
pub fn from_bf16(h: u16) -> f32 {
    let bits = u32::from(h) << 16;
    if bits & 0x7f80_0000 == 0 {
        return f32::from_bits(bits & 0x8000_0000);
    }
    f32::from_bits(bits)
}

/// Two values as one pair word: `even` in the low half (the lower channel), `odd` high.
#[inline(always)]
pub fn pair(even: f32, odd: f32) -> u32 {
    u32::from(to_bf16(even)) | (u32::from(to_bf16(odd)) << 16)
}

/// `acc + odd products + even products` in `vdpbf16ps`'s order, with its denormal
/// handling: denormal inputs and accumulators read as zero, denormal results flushed.
#[inline(always)]
pub fn dot_pair(acc: f32, x: u32, w: u32) -> f32 {
    let flush = |v: f32| {
        if v.is_subnormal() {
            0.0f32.copysign(v)
        } else {
            v
        }
    };
    let lo = |v: u32| from_bf16(v as u16);
    let hi = |v: u32| from_bf16((v >> 16) as u16);
    let acc = flush(flush(acc) + hi(x) * hi(w));
    flush(acc + lo(x) * lo(w))
}

/// Whether this CPU has the bf16 dot-product instructions lookout uses (AVX512-BF16).
pub fn supported() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// One register tile's pointers and strides, in 32-bit words for the pair input and the
/// weights, floats for the rest. `src` points at tap (0, 0) of the tile's first pixel, pair 0
/// of input block 0.
pub(super) struct PairTile {
    pub src: *const u32,
    pub src_block: usize,
    pub src_row: usize,
    pub src_pixel: usize,
    /// Words from one output pixel's input window to the next.
    pub step: usize,
    pub kernel: usize,
    pub in_blocks: usize,
    /// `[in block][ky][kx][pair][group width]`.
    pub weights: *const u32,
    pub bias: *const f32,
    pub dst: *mut f32,
    pub dst_block: usize,
    /// Floats from one output pixel to the next.
    pub dst_pixel: usize,
    pub residual: Option<(*const f32, usize)>,
    pub silu: bool,
}

/// Runs `tile` with `blocks` (1 or 2) output blocks and `n` (1..=12) pixels: AVX512-BF16
/// when `hardware` (the caller checked [`supported`]), else the scalar reference.
///
/// # Safety
/// The tile's pointers cover the extents its sizes imply.
pub(super) unsafe fn dispatch_pair_tile(hardware: bool, tile: &PairTile, blocks: usize, n: usize) {
    #[cfg(target_arch = "x86_64")]
    if hardware {
        // Stride 1 and 2 as constants, so every broadcast's address is a fixed offset.
        match (blocks == 2, tile.step) {
            (true, 8) => avx512::by_width::<true, 8>(tile, n),
            (true, 16) => avx512::by_width::<true, 16>(tile, n),
            (true, _) => avx512::by_width::<true, 0>(tile, n),
            (false, 8) => avx512::by_width::<false, 8>(tile, n),
            (false, 16) => avx512::by_width::<false, 16>(tile, n),
            (false, _) => avx512::by_width::<false, 0>(tile, n),
        }
        return;
    }
    let _ = hardware;
    portable_tile(tile, blocks, n);
}

/// The scalar reference of a tile: [`dot_pair`] per output lane, pairs in order.
///
/// # Safety
/// As [`dispatch_pair_tile`].
unsafe fn portable_tile(t: &PairTile, blocks: usize, n: usize) {
    let width = blocks * LANES;
    let mut acc = [[[0.0f32; LANES]; MAX_TILE_PIXELS]; MAX_TILE_BLOCKS];
    for (b, acc_b) in acc.iter_mut().enumerate().take(blocks) {
        for acc_p in acc_b.iter_mut().take(n) {
            acc_p.copy_from_slice(std::slice::from_raw_parts(t.bias.add(b * LANES), LANES));
        }
    }
    let mut w = t.weights;
    for ib in 0..t.in_blocks {
        for ky in 0..t.kernel {
            for kx in 0..t.kernel {
                let src = t
                    .src
                    .add(ib * t.src_block + ky * t.src_row + kx * t.src_pixel);
                for k in 0..PAIRS {
                    let wv = std::slice::from_raw_parts(w, width);
                    for p in 0..n {
                        let x = *src.add(p * t.step + k);
                        for (b, acc_b) in acc.iter_mut().enumerate().take(blocks) {
                            for (a, &wl) in acc_b[p].iter_mut().zip(&wv[b * LANES..]) {
                                *a = dot_pair(*a, x, wl);
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
            let out = t.dst.add(b * t.dst_block + p * t.dst_pixel);
            for (lane, &v) in acc_p.iter().enumerate() {
                let mut v = if t.silu { silu(v) } else { v };
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
    use super::{PairTile, PAIRS};

    /// The bias of block `b`.
    #[inline(always)]
    unsafe fn start(t: &PairTile, b: usize) -> __m512 {
        _mm512_loadu_ps(t.bias.add(b * LANES))
    }

    #[inline(always)]
    unsafe fn zero() -> __m512 {
        _mm512_setzero_ps()
    }

    /// A block's 16 channels as 8 pairs.
    #[inline(always)]
    fn words(_: &PairTile) -> usize {
        PAIRS
    }

    #[inline(always)]
    unsafe fn load_weights(w: *const u32) -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(w.cast()))
    }

    #[inline(always)]
    unsafe fn broadcast(x: *const u32) -> __m512bh {
        std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(*x as i32))
    }

    #[inline(always)]
    unsafe fn dot(acc: __m512, x: __m512bh, w: __m512bh) -> __m512 {
        _mm512_dpbf16_ps(acc, x, w)
    }

    /// Stores (activation, residual) one accumulator: block `b`, pixel `p`.
    #[inline(always)]
    unsafe fn finish(t: &PairTile, b: usize, p: usize, v: __m512) {
        let mut v = if t.silu { silu_avx512(v) } else { v };
        if let Some((res, res_block)) = t.residual {
            v = _mm512_add_ps(v, _mm512_loadu_ps(res.add(b * res_block + p * LANES)));
        }
        _mm512_storeu_ps(t.dst.add(b * t.dst_block + p * t.dst_pixel), v);
    }

    register_tiles!("avx512f,avx512bf16", PairTile);

    /// 16 floats at `src` as 8 pairs at `dst` (`vcvtneps2bf16`).
    ///
    /// # Safety
    /// AVX512-BF16; 16 floats readable, 8 words writable.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    pub unsafe fn convert_block(src: *const f32, dst: *mut u32) {
        let h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src));
        _mm256_storeu_si256(dst.cast(), std::mem::transmute::<__m256bh, __m256i>(h));
    }

    /// A vector as 8 pairs at `dst`.
    ///
    /// # Safety
    /// AVX512-BF16; 8 words writable.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    pub unsafe fn store_pairs(v: __m512, dst: *mut u32) {
        let h = _mm512_cvtneps_pbh(v);
        _mm256_storeu_si256(dst.cast(), std::mem::transmute::<__m256bh, __m256i>(h));
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) use avx512::store_pairs;

/// 16 floats (one pixel of one block) as 8 pairs.
///
/// # Safety
/// 16 floats readable at `src`, 8 words writable at `dst`; `hardware` only where
/// [`supported`].
#[inline(always)]
pub(super) unsafe fn convert_block(hardware: bool, src: *const f32, dst: *mut u32) {
    #[cfg(target_arch = "x86_64")]
    if hardware {
        avx512::convert_block(src, dst);
        return;
    }
    let _ = hardware;
    for k in 0..PAIRS {
        *dst.add(k) = pair(*src.add(2 * k), *src.add(2 * k + 1));
    }
}

/// `weight` (PyTorch `[c_out, c_in, k, k]`) as pair words per output group of up to
/// [`MAX_TILE_BLOCKS`] blocks: `[in block][ky][kx][pair][group width]`, zero past the
/// channels.
fn pack_pairs(spec: &ConvSpec, weight: &[f32]) -> Vec<Vec<u32>> {
    let k = spec.kernel;
    let (in_blocks, out_blocks) = (spec.c_in.div_ceil(LANES), spec.c_out.div_ceil(LANES));
    let w = |o: usize, i: usize, ky: usize, kx: usize| {
        if o < spec.c_out && i < spec.c_in {
            weight[((o * spec.c_in + i) * k + ky) * k + kx]
        } else {
            0.0
        }
    };
    (0..out_blocks)
        .step_by(MAX_TILE_BLOCKS)
        .map(|first| {
            let width = MAX_TILE_BLOCKS.min(out_blocks - first) * LANES;
            let mut group = Vec::with_capacity(in_blocks * k * k * PAIRS * width);
            for ib in 0..in_blocks {
                for ky in 0..k {
                    for kx in 0..k {
                        for pr in 0..PAIRS {
                            let i = ib * LANES + 2 * pr;
                            for j in 0..width {
                                let o = first * LANES + j;
                                group.push(pair(w(o, i, ky, kx), w(o, i + 1, ky, kx)));
                            }
                        }
                    }
                }
            }
            group
        })
        .collect()
}

/// A dense convolution (groups 1, kernel 1 or 3, padding ≤ 1) on a blocked input in bf16.
#[derive(Debug, Clone)]
pub struct DirectBf16 {
    spec: ConvSpec,
    packed: Vec<Vec<u32>>,
    /// `c_out` rounded up to whole blocks, zero past `c_out`.
    bias: Vec<f32>,
    /// The AVX512-BF16 kernels (else the scalar reference).
    hardware: bool,
}

impl DirectBf16 {
    /// `weight` in PyTorch layout `[c_out, c_in, k, k]`; the input must be blocked.
    pub fn new(spec: ConvSpec, weight: &[f32], bias: &[f32]) -> Result<Self, ConvError> {
        if spec.groups != 1 {
            return Err(ConvError::Groups { spec });
        }
        spec.check_params(weight, bias)?;
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(spec.c_out.div_ceil(LANES) * LANES, 0.0);
        Ok(Self {
            spec,
            packed: pack_pairs(&spec, weight),
            bias: padded_bias,
            hardware: supported(),
        })
    }

    /// The same convolution on the AVX512-BF16 tiles for `Isa::Avx512` where the CPU has
    /// them, else on the scalar reference.
    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.hardware = isa.supported() == Isa::Avx512 && supported();
        self
    }

    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// `dst = act(conv(src) + bias) (+ residual)`, output rows in parallel.
    ///
    /// # Safety
    /// As [`super::direct::DirectConv::run`].
    pub unsafe fn run(&self, src: View, dst: View, residual: Option<View>) {
        let spec = self.spec;
        let (k, s, pad) = (spec.kernel, spec.stride, spec.padding);
        let in_blocks = spec.c_in.div_ceil(LANES);
        let out_w = dst.layout.width;
        // Input columns under one output row: from −pad, (out_w − 1)·s + k of them.
        let band_cols = (out_w - 1) * s + k;
        let band_words = in_blocks * k * band_cols * PAIRS;
        for_each_index(dst.layout.height, |oy| {
            BAND.with(|band| {
                let mut band = band.borrow_mut();
                if band.len() < band_words {
                    band.resize(band_words, 0);
                }
                let top = (oy * s) as isize - pad as isize;
                // SAFETY: rows top..top + k and columns −pad..−pad + band_cols lie in the
                // input, border included (the planner's "same" padding); the band holds
                // band_words words; each row item writes its own output row.
                unsafe {
                    for ib in 0..in_blocks {
                        for ky in 0..k {
                            let row = src.at(ib, top + ky as isize, -(pad as isize));
                            let out = band.as_mut_ptr().add((ib * k + ky) * band_cols * PAIRS);
                            for x in 0..band_cols {
                                convert_block(
                                    self.hardware,
                                    row.add(x * LANES),
                                    out.add(x * PAIRS),
                                );
                            }
                        }
                    }
                    self.run_row(&band, band_cols, dst, residual, oy);
                }
            });
        });
    }

    /// Output row `oy` from its input band, every output group, tiles of up to 12 pixels.
    ///
    /// # Safety
    /// As [`Self::run`], for this row.
    unsafe fn run_row(
        &self,
        band: &[u32],
        band_cols: usize,
        dst: View,
        residual: Option<View>,
        oy: usize,
    ) {
        let spec = &self.spec;
        let width = dst.layout.width;
        let tiles = width.div_ceil(MAX_TILE_PIXELS);
        let (base, extra) = (width / tiles, width % tiles);
        let in_blocks = spec.c_in.div_ceil(LANES);
        for (group, weights) in self.packed.iter().enumerate() {
            let first_block = group * MAX_TILE_BLOCKS;
            let blocks = (dst.layout.blocks() - first_block).min(MAX_TILE_BLOCKS);
            let mut ox = 0;
            for t in 0..tiles {
                let n = base + usize::from(t < extra);
                let tile = PairTile {
                    src: band.as_ptr().add(ox * spec.stride * PAIRS),
                    src_block: spec.kernel * band_cols * PAIRS,
                    src_row: band_cols * PAIRS,
                    src_pixel: PAIRS,
                    step: spec.stride * PAIRS,
                    kernel: spec.kernel,
                    in_blocks,
                    weights: weights.as_ptr(),
                    bias: self.bias[first_block * LANES..].as_ptr(),
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
                dispatch_pair_tile(self.hardware, &tile, blocks, n);
                ox += n;
            }
        }
    }
}

thread_local! {
    /// Per-thread input band of [`DirectBf16`], reused across rows, layers and frames.
    static BAND: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_is_to_nearest_even_with_zeroed_denormals() {
        assert_eq!(to_bf16(1.0), 0x3f80);
        // 1 + 2⁻⁸ is halfway between 1 and 1 + 2⁻⁷: to even (1).
        assert_eq!(to_bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2⁻⁸ is halfway between 1 + 2⁻⁷ and 1 + 2⁻⁶: to even (1 + 2⁻⁶).
        assert_eq!(to_bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(to_bf16(-2.5), 0xc020);
        assert_eq!(to_bf16(f32::from_bits(1)), 0);
        assert_eq!(to_bf16(-f32::from_bits(1)), 0x8000);
        assert!(from_bf16(to_bf16(f32::NAN)).is_nan());
        assert_eq!(from_bf16(to_bf16(f32::INFINITY)), f32::INFINITY);
        assert_eq!(to_bf16(f32::MAX), 0x7f80, "rounds up to infinity");
        // Every bf16 survives the round trip.
        for h in 0..=u16::MAX {
            let x = from_bf16(h);
            if !x.is_nan() && h & 0x7f80 != 0 {
                assert_eq!(to_bf16(x), h, "{h:#06x}");
            }
        }
    }

    /// The AVX512-BF16 conversion and tiles against the scalar reference, where the CPU has
    /// them (skipped with a message elsewhere).
    #[test]
    fn hardware_bf16_matches_the_scalar_reference() {
        if !supported() {
            eprintln!("skipped: this CPU has no AVX512-BF16 (the scalar reference runs alone)");
            return;
        }
        let values = super::super::testutil::noise(64, 3);
        let mut scaled: Vec<f32> = values.iter().map(|v| v * 1e3).collect();
        scaled[5] = f32::from_bits(3); // a denormal
        scaled[6] = 1.0 + 1.0 / 256.0; // a tie
        for chunk in scaled.chunks_exact(LANES) {
            let (mut hw, mut sw) = ([0u32; PAIRS], [0u32; PAIRS]);
            // SAFETY: 16 floats in, 8 words out; the CPU has AVX512-BF16.
            unsafe {
                convert_block(true, chunk.as_ptr(), hw.as_mut_ptr());
                convert_block(false, chunk.as_ptr(), sw.as_mut_ptr());
            }
            assert_eq!(hw, sw, "{chunk:?}");
        }
        eprintln!("ran: AVX512-BF16 conversion");
    }

    /// The AVX512-BF16 register tiles give the scalar reference's sums bit for bit (no
    /// activation: SiLU's two implementations differ in the last bits), every width, one and
    /// two output blocks, 3×3 windows, a residual; where the CPU has them.
    #[test]
    fn hardware_tiles_equal_the_scalar_reference_exactly() {
        if !supported() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        let noise = super::super::testutil::noise;
        // Strides 1 and 2 (the tiles' constant-step paths) and 3 (the run-time step).
        let (in_blocks, kernel, pixels) = (2, 3, MAX_TILE_PIXELS);
        let cols = (pixels - 1) * 3 + kernel;
        let src: Vec<u32> = noise(in_blocks * kernel * cols * LANES, 31)
            .chunks_exact(2)
            .map(|two| pair(two[0] * 4.0, two[1] * 4.0))
            .collect();
        for (blocks, step) in [1, 2]
            .into_iter()
            .flat_map(|b| (1..=3).map(move |s| (b, s * PAIRS)))
        {
            let width = blocks * LANES;
            let weights: Vec<u32> = noise(in_blocks * kernel * kernel * PAIRS * width * 2, 32)
                .chunks_exact(2)
                .map(|two| pair(two[0], two[1]))
                .collect();
            let bias = noise(width, 33);
            let residual = noise(blocks * pixels * LANES, 34);
            for n in 1..=pixels {
                let mut out = [vec![0.0f32; blocks * pixels * LANES], vec![]];
                out[1] = out[0].clone();
                for (hardware, out) in [true, false].into_iter().zip(&mut out) {
                    let tile = PairTile {
                        src: src.as_ptr(),
                        src_block: kernel * cols * PAIRS,
                        src_row: cols * PAIRS,
                        src_pixel: PAIRS,
                        step,
                        kernel,
                        in_blocks,
                        weights: weights.as_ptr(),
                        bias: bias.as_ptr(),
                        dst: out.as_mut_ptr(),
                        dst_block: pixels * LANES,
                        dst_pixel: LANES,
                        residual: Some((residual.as_ptr(), pixels * LANES)),
                        silu: false,
                    };
                    // SAFETY: the buffers cover the tile's extents; AVX512-BF16 checked.
                    unsafe { dispatch_pair_tile(hardware, &tile, blocks, n) };
                }
                assert!(out[0][..n * LANES].iter().all(|v| *v != 0.0), "written");
                assert_eq!(out[0], out[1], "{blocks} block(s), step {step}, {n} pixels");
            }
        }
        eprintln!("ran: AVX512-BF16 register tiles, bit-exact to the reference");
    }
}
