//! AVX-512 GEMM for the convolutions: `C[rows × cols] = A[rows × depth] · B[depth × cols]`
//! with `A` the weights, packed once at load into panels of 8 rows (`[depth][8]`, so each
//! step broadcasts 8 consecutive floats), and `B` the im2col tile (or the input itself for
//! 1×1 convolutions) read in place with its row stride. The 8×32 micro-kernel keeps 16
//! accumulators in registers; depth is cut into L1-sized blocks so a 32-column slice of `B`
//! is reused by every row panel. Rows and columns that do not fill a block go to `gemm`.
//! `gemm` 0.19 has no AVX-512 kernels on a stable compiler, hence this one.

/// Rows per packed panel (micro-kernel height).
pub const PANEL_ROWS: usize = 8;
/// Columns per micro-kernel call (two 16-float registers).
pub const BLOCK_COLS: usize = 32;
/// Depth per block: 256 × 32 floats of `B` = 32 KiB, within L1.
const DEPTH_BLOCK: usize = 256;

/// Weights `[rows, depth]` (row-major) packed as `rows / 8` panels of `[depth][8]`; rows
/// past the last full panel are not packed (they go to `gemm`).
#[derive(Debug, Clone, Default)]
pub struct PackedWeights {
    panels: Vec<f32>,
    depth: usize,
}

impl PackedWeights {
    pub fn pack(weights: &[f32], rows: usize, depth: usize) -> Self {
        let full = rows / PANEL_ROWS;
        let mut panels = vec![0.0; full * PANEL_ROWS * depth];
        for p in 0..full {
            let panel = &mut panels[p * PANEL_ROWS * depth..(p + 1) * PANEL_ROWS * depth];
            for r in 0..PANEL_ROWS {
                let row = &weights[(p * PANEL_ROWS + r) * depth..(p * PANEL_ROWS + r + 1) * depth];
                for (k, &w) in row.iter().enumerate() {
                    panel[k * PANEL_ROWS + r] = w;
                }
            }
        }
        Self { panels, depth }
    }

    /// Rows covered by full panels.
    pub fn packed_rows(&self) -> usize {
        self.panels.len() / self.depth.max(1)
    }
}

/// `C[0..packed_rows, 0..cols / 32 · 32] = act(A · B + bias)` with AVX-512, the bias and
/// SiLU (when `silu`) applied in registers; returns the number of columns done (a multiple
/// of 32; the caller finishes the rest and the unpacked rows).
///
/// # Safety
/// The CPU must have AVX-512F. `b` must hold `depth` rows of at least `cols` floats at
/// stride `b_rs`; `c` must hold `packed_rows` rows of at least `cols` floats at stride
/// `c_rs`, not read or written by anyone else meanwhile; `bias` at least `packed_rows`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm_avx512(
    a: &PackedWeights,
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    c_rs: usize,
    cols: usize,
    bias: &[f32],
    silu: bool,
) -> usize {
    let depth = a.depth;
    let panels = a.packed_rows() / PANEL_ROWS;
    let full_cols = cols / BLOCK_COLS * BLOCK_COLS;
    // The B block is copied to a dense [kc][32] buffer first: read in place, its rows are
    // `b_rs` apart, often a multiple of 4 KiB, and would evict each other from L1.
    let mut block = [0.0f32; DEPTH_BLOCK * BLOCK_COLS];
    for j in (0..full_cols).step_by(BLOCK_COLS) {
        let mut k0 = 0;
        while k0 < depth {
            let kc = DEPTH_BLOCK.min(depth - k0);
            for k in 0..kc {
                std::ptr::copy_nonoverlapping(
                    b.add((k0 + k) * b_rs + j),
                    block.as_mut_ptr().add(k * BLOCK_COLS),
                    BLOCK_COLS,
                );
            }
            let last = k0 + kc == depth;
            for p in 0..panels {
                let a_panel = a.panels.as_ptr().add((p * depth + k0) * PANEL_ROWS);
                let finish = last.then(|| (&bias[p * PANEL_ROWS..(p + 1) * PANEL_ROWS], silu));
                kernel_8x32(
                    kc,
                    a_panel,
                    block.as_ptr(),
                    BLOCK_COLS,
                    c.add(p * PANEL_ROWS * c_rs + j),
                    c_rs,
                    k0 > 0,
                    finish,
                );
            }
            k0 += kc;
        }
    }
    full_cols
}

/// `C[8 × 32] (+)= A[8 × kc] · B[kc × 32]`, `A` packed `[kc][8]`; with `finish` =
/// `(bias per row, silu)`, the bias and activation are applied before the store.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
#[allow(clippy::too_many_arguments)]
unsafe fn kernel_8x32(
    kc: usize,
    a: *const f32,
    b: *const f32,
    b_rs: usize,
    c: *mut f32,
    c_rs: usize,
    accumulate: bool,
    finish: Option<(&[f32], bool)>,
) {
    use std::arch::x86_64::*;
    let mut acc = [[_mm512_setzero_ps(); 2]; PANEL_ROWS];
    for k in 0..kc {
        let b_row = b.add(k * b_rs);
        let b0 = _mm512_loadu_ps(b_row);
        let b1 = _mm512_loadu_ps(b_row.add(16));
        let a_k = a.add(k * PANEL_ROWS);
        for (r, acc_r) in acc.iter_mut().enumerate() {
            let w = _mm512_set1_ps(*a_k.add(r));
            acc_r[0] = _mm512_fmadd_ps(w, b0, acc_r[0]);
            acc_r[1] = _mm512_fmadd_ps(w, b1, acc_r[1]);
        }
    }
    for (r, acc_r) in acc.iter().enumerate() {
        let c_row = c.add(r * c_rs);
        let (mut lo, mut hi) = (acc_r[0], acc_r[1]);
        if accumulate {
            lo = _mm512_add_ps(lo, _mm512_loadu_ps(c_row));
            hi = _mm512_add_ps(hi, _mm512_loadu_ps(c_row.add(16)));
        }
        if let Some((bias, silu)) = finish {
            let b = _mm512_set1_ps(bias[r]);
            lo = _mm512_add_ps(lo, b);
            hi = _mm512_add_ps(hi, b);
            if silu {
                lo = silu_avx512(lo);
                hi = silu_avx512(hi);
            }
        }
        _mm512_storeu_ps(c_row, lo);
        _mm512_storeu_ps(c_row.add(16), hi);
    }
}

/// SiLU of 16 lanes: [`super::epilogue::silu`]'s polynomial `exp`, in AVX-512 registers.
/// Written with fused multiply-adds, `roundscale` and `scalef` (the range reduction and the
/// 2ⁿ scaling in one instruction each) and a reciprocal instead of a division: the epilogue
/// was most of the time of layers with few multiply-adds per output (depthwise, 1×1 on
/// 16–32 channels).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
pub(crate) unsafe fn silu_avx512(x: std::arch::x86_64::__m512) -> std::arch::x86_64::__m512 {
    use super::epilogue::{LN2_HI, LN2_LO};
    use std::arch::x86_64::*;
    // e^v for v = -x clamped to [-87, 88], as the scalar version.
    let v = _mm512_min_ps(
        _mm512_max_ps(_mm512_sub_ps(_mm512_setzero_ps(), x), _mm512_set1_ps(-87.0)),
        _mm512_set1_ps(88.0),
    );
    // n = round(v / ln 2), r = v − n·ln 2 (in two parts, for accuracy).
    const NEAREST: i32 = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    let n =
        _mm512_roundscale_ps::<NEAREST>(_mm512_mul_ps(v, _mm512_set1_ps(std::f32::consts::LOG2_E)));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), v);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut p = _mm512_set1_ps(1.0 / 720.0);
    for coef in [1.0 / 120.0, 1.0 / 24.0, 1.0 / 6.0, 0.5, 1.0, 1.0] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(coef));
    }
    let e = _mm512_scalef_ps(p, n);
    // x / (1 + e) as x · (1 / (1 + e)): the 14-bit reciprocal and one Newton step (≈ 28
    // bits) cost a third of a division.
    let d = _mm512_add_ps(_mm512_set1_ps(1.0), e);
    let rcp = _mm512_rcp14_ps(d);
    let rcp = _mm512_mul_ps(rcp, _mm512_fnmadd_ps(d, rcp, _mm512_set1_ps(2.0)));
    _mm512_mul_ps(x, rcp)
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::isa::Isa;

    #[test]
    fn avx512_silu_matches_f64() {
        if Isa::detect() != Isa::Avx512 {
            return;
        }
        let xs: Vec<f32> = (-12_000..12_000)
            .map(|i| i as f32 * 0.0125)
            .chain([-1e30, -100.0, 1e30])
            .collect();
        for chunk in xs.chunks_exact(16) {
            let mut out = [0.0f32; 16];
            // SAFETY: AVX-512F checked above; 16 floats in and out.
            unsafe {
                use std::arch::x86_64::*;
                let v = super::silu_avx512(_mm512_loadu_ps(chunk.as_ptr()));
                _mm512_storeu_ps(out.as_mut_ptr(), v);
            }
            for (&x, &y) in chunk.iter().zip(&out) {
                let want = x as f64 / (1.0 + (-(x as f64)).exp());
                let tol = 1e-6 * want.abs().max(1.0);
                assert!(
                    (y as f64 - want).abs() <= tol,
                    "silu({x}) = {y}, want {want}"
                );
            }
        }
    }
}
