//! The per-channel operations of the blocked layout ([`super::blocked`]): depthwise
//! convolution, same-size max pool, nearest 2× upsample and block copies.
//!
//! Each works on whole 16-lane pixels, so the channel lanes are the vector lanes and the
//! loops are written once as plain arrays (vectorised per ISA by [`super::isa`]). Work is
//! split into (block, output row) items on the pool.

use super::blocked::{View, LANES};
use super::conv::{ConvError, ConvSpec};
use super::epilogue::silu;
use super::isa::{isa_kernel, Isa};
use super::pool::for_each_index;

type Pixel = [f32; LANES];

/// Pixels per inner step of the depthwise row: independent accumulators hide FMA latency.
const DEPTHWISE_STEP: usize = 8;

/// A depthwise convolution (groups = channels, padding ≤ 1) with bias and optional SiLU.
#[derive(Debug, Clone)]
pub struct DepthwiseConv {
    spec: ConvSpec,
    /// Per block `[ky][kx][lane]`.
    taps: Vec<Pixel>,
    bias: Vec<Pixel>,
    isa: Isa,
}

impl DepthwiseConv {
    /// `weight` `[C, 1, k, k]`, `bias` `[C]`.
    pub fn new(spec: ConvSpec, weight: &[f32], bias: &[f32]) -> Result<Self, ConvError> {
        let (c, k) = (spec.c_out, spec.kernel);
        if spec.groups != c || spec.c_in != c {
            return Err(ConvError::Groups { spec });
        }
        spec.check_params(weight, bias)?;
        let blocks = c.div_ceil(LANES);
        let mut taps = vec![[0.0; LANES]; blocks * k * k];
        let mut padded_bias = vec![[0.0; LANES]; blocks];
        for ch in 0..c {
            let (b, lane) = (ch / LANES, ch % LANES);
            for t in 0..k * k {
                taps[b * k * k + t][lane] = weight[ch * k * k + t];
            }
            padded_bias[b][lane] = bias[ch];
        }
        Ok(Self {
            spec,
            taps,
            bias: padded_bias,
            isa: Isa::detect(),
        })
    }

    pub fn with_isa(mut self, isa: Isa) -> Self {
        self.isa = isa.supported();
        self
    }

    pub fn spec(&self) -> &ConvSpec {
        &self.spec
    }

    /// # Safety
    /// As [`super::direct::DirectConv::run`]: views cover their layouts, `dst` is disjoint.
    pub unsafe fn run(&self, src: View, dst: View) {
        let rows = dst.layout.height;
        let blocks = dst.layout.blocks();
        for_each_index(rows * blocks, |item| {
            let (block, oy) = (item / rows, item % rows);
            // SAFETY: the item writes output row `oy` of `block` only.
            unsafe { self.run_row(src, block, oy, dst, oy) };
        });
    }

    /// Output row `oy` of `block`, written to row `dst_y` of `dst` (a one-row buffer when
    /// fused with the next convolution).
    ///
    /// # Safety
    /// As [`Self::run`], for this row; reads stay inside the padded input (padding ≤ the
    /// border).
    pub(crate) unsafe fn run_row(
        &self,
        src: View,
        block: usize,
        oy: usize,
        dst: View,
        dst_y: usize,
    ) {
        let k2 = self.spec.kernel * self.spec.kernel;
        let s = self.spec.stride;
        let top = (oy * s) as isize - self.spec.padding as isize;
        let row = DepthwiseRow {
            src: src.at(block, top, -(self.spec.padding as isize)),
            src_row: src.layout.row_stride(),
            step: s * LANES,
            kernel: self.spec.kernel,
            dst: dst.at(block, dst_y as isize, 0),
            width: dst.layout.width,
        };
        let taps = &self.taps[block * k2..(block + 1) * k2];
        let bias = &self.bias[block];
        #[cfg(target_arch = "x86_64")]
        if self.isa == Isa::Avx512 && self.spec.kernel == 3 && s <= 2 {
            if s == 1 {
                avx512::depthwise3_row::<1>(&row, taps, bias, self.spec.silu);
            } else {
                avx512::depthwise3_row::<2>(&row, taps, bias, self.spec.silu);
            }
            return;
        }
        depthwise_row(self.isa, &row, taps, bias, self.spec.silu);
    }
}

struct DepthwiseRow {
    src: *const f32,
    src_row: usize,
    step: usize,
    kernel: usize,
    dst: *mut f32,
    width: usize,
}

isa_kernel! {
    /// One output row of one block: for each pixel, bias + Σ taps · inputs, then SiLU.
    fn depthwise_row(row: &DepthwiseRow, taps: &[Pixel], bias: &Pixel, act: bool) {
        let k = row.kernel;
        let mut x0 = 0;
        while x0 < row.width {
            let n = DEPTHWISE_STEP.min(row.width - x0);
            let mut acc = [*bias; DEPTHWISE_STEP];
            for ky in 0..k {
                for kx in 0..k {
                    let tap = &taps[ky * k + kx];
                    for (p, acc_p) in acc.iter_mut().enumerate().take(n) {
                        // SAFETY: inside the padded input row (see `DepthwiseConv::run`).
                        let input = unsafe {
                            &*(row.src.add(ky * row.src_row + (x0 + p) * row.step + kx * LANES)
                                as *const Pixel)
                        };
                        for lane in 0..LANES {
                            acc_p[lane] += tap[lane] * input[lane];
                        }
                    }
                }
            }
            for (p, acc_p) in acc.iter().enumerate().take(n) {
                // SAFETY: output pixel x0 + p of this row.
                let out = unsafe { &mut *(row.dst.add((x0 + p) * LANES) as *mut Pixel) };
                for lane in 0..LANES {
                    out[lane] = if act { silu(acc_p[lane]) } else { acc_p[lane] };
                }
            }
            x0 += n;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::blocked::LANES;
    use super::super::microkernel::silu_avx512;
    use super::{DepthwiseRow, Pixel};

    /// Pixels per step of the 3×3 row (8 accumulators, 9 taps in registers).
    const STEP: usize = 8;

    /// One output row of a 3×3 depthwise convolution with stride `S`: taps and bias in
    /// registers, eight pixels at a time (one pixel at a time for the rest).
    ///
    /// # Safety
    /// AVX-512F; `row` covers the padded input rows and the output row.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn depthwise3_row<const S: usize>(
        row: &DepthwiseRow,
        taps: &[Pixel],
        bias: &Pixel,
        act: bool,
    ) {
        let t: [__m512; 9] = std::array::from_fn(|i| _mm512_loadu_ps(taps[i].as_ptr()));
        let b = _mm512_loadu_ps(bias.as_ptr());
        let finish = |v: __m512| if act { silu_avx512(v) } else { v };
        let input = |x: usize, ky: usize, kx: usize| {
            _mm512_loadu_ps(row.src.add(ky * row.src_row + (x * S + kx) * LANES))
        };
        let mut x0 = 0;
        while x0 + STEP <= row.width {
            macro_rules! step {
                ($($p:literal),*) => {{
                    let mut acc = [b; STEP];
                    for ky in 0..3 {
                        for kx in 0..3 {
                            let w = t[ky * 3 + kx];
                            $( acc[$p] = _mm512_fmadd_ps(input(x0 + $p, ky, kx), w, acc[$p]); )*
                        }
                    }
                    $( _mm512_storeu_ps(row.dst.add((x0 + $p) * LANES), finish(acc[$p])); )*
                }};
            }
            step!(0, 1, 2, 3, 4, 5, 6, 7);
            x0 += STEP;
        }
        for x in x0..row.width {
            let mut acc = b;
            for ky in 0..3 {
                for kx in 0..3 {
                    acc = _mm512_fmadd_ps(input(x, ky, kx), t[ky * 3 + kx], acc);
                }
            }
            _mm512_storeu_ps(row.dst.add(x * LANES), finish(acc));
        }
    }
}

/// PyTorch's `MaxPool2d(k, 1, k / 2)`: same size, padding never selected (−∞).
///
/// # Safety
/// Views cover their layouts (same sizes), `dst` disjoint from `src`.
pub unsafe fn max_pool_same(isa: Isa, src: View, dst: View, kernel: usize) {
    let (rows, blocks) = (dst.layout.height, dst.layout.blocks());
    for_each_index(rows * blocks, |item| {
        let (block, oy) = (item / rows, item % rows);
        // One output row per item; reads are clipped to the interior.
        max_pool_row(isa, src, dst, kernel, block, oy);
    });
}

isa_kernel! {
    fn max_pool_row(src: View, dst: View, kernel: usize, block: usize, oy: usize) {
        let (h, w) = (src.layout.height as isize, src.layout.width as isize);
        let r = (kernel / 2) as isize;
        let (y0, y1) = ((oy as isize - r).max(0), (oy as isize + r).min(h - 1));
        for ox in 0..w {
            let (x0, x1) = ((ox - r).max(0), (ox + r).min(w - 1));
            let mut m = [f32::NEG_INFINITY; LANES];
            for y in y0..=y1 {
                for x in x0..=x1 {
                    // SAFETY: (y, x) is an interior pixel.
                    let v = unsafe { &*(src.at(block, y, x) as *const Pixel) };
                    for lane in 0..LANES {
                        m[lane] = m[lane].max(v[lane]);
                    }
                }
            }
            // SAFETY: output pixel (oy, ox) of this item's row.
            unsafe { *(dst.at(block, oy as isize, ox) as *mut Pixel) = m };
        }
    }
}

/// Nearest-neighbour 2× upsample: `dst` is twice `src`'s height and width.
///
/// # Safety
/// Views cover their layouts, `dst` disjoint from `src`.
pub unsafe fn upsample2(src: View, dst: View) {
    let (rows, blocks) = (dst.layout.height, dst.layout.blocks());
    for_each_index(rows * blocks, |item| {
        let (block, oy) = (item / rows, item % rows);
        for ox in 0..dst.layout.width {
            // SAFETY: one output row per item; (oy / 2, ox / 2) is inside `src`.
            unsafe {
                let from = src.at(block, (oy / 2) as isize, (ox / 2) as isize);
                let to = dst.at(block, oy as isize, ox as isize);
                std::ptr::copy_nonoverlapping(from, to, LANES);
            }
        }
    });
}

/// Copies every interior pixel of `src`'s blocks into `dst` (same sizes).
///
/// # Safety
/// Views cover their layouts, `dst` disjoint from `src`.
pub unsafe fn copy_blocks(src: View, dst: View) {
    let (rows, blocks) = (dst.layout.height, dst.layout.blocks());
    let width = dst.layout.width;
    for_each_index(rows * blocks, |item| {
        let (block, y) = (item / rows, item % rows);
        // SAFETY: a row of whole pixels is contiguous in both layouts.
        unsafe {
            std::ptr::copy_nonoverlapping(
                src.at(block, y as isize, 0),
                dst.at(block, y as isize, 0),
                width * LANES,
            )
        };
    });
}
