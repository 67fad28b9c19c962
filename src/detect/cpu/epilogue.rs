//! The pass that follows a convolution's GEMM: add the per-channel bias, optionally apply
//! SiLU, while the tile is still in cache.
//!
//! SiLU needs `exp`; libm's is scalar, so this uses a polynomial `exp` that vectorises
//! (relative error ≈ 2e-7, well inside the detector's parity tolerances).

use super::isa::isa_kernel;

const LOG2_E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split in a part exact in f32 and the rest, for an accurate range reduction.
pub(crate) const LN2_HI: f32 = 0.693_145_75;
pub(crate) const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5·2²³: adding it rounds to an integer held in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// `e^x` for `x` clamped to [-87, 88] (beyond that SiLU's result no longer changes).
#[inline(always)]
pub fn exp_approx(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2_E + ROUND_MAGIC;
    let n = t - ROUND_MAGIC;
    let n_int = (t.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let r = x - n * LN2_HI - n * LN2_LO;
    // Taylor series to degree 6 on |r| ≤ ln2/2: truncation error < 1.3e-7 relative.
    let p = 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    p * f32::from_bits((n_int.wrapping_add(127) << 23) as u32)
}

/// `x · sigmoid(x)`.
#[inline(always)]
pub fn silu(x: f32) -> f32 {
    x / (1.0 + exp_approx(-x))
}

isa_kernel! {
    /// `row[i] = row[i] + bias`, then SiLU when `apply_silu`.
    pub fn bias_act_row(row: &mut [f32], bias: f32, apply_silu: bool) {
        if apply_silu {
            for v in row.iter_mut() {
                *v = silu(*v + bias);
            }
        } else {
            for v in row.iter_mut() {
                *v += bias;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::isa::Isa;
    use super::*;

    fn silu_f64(x: f64) -> f64 {
        x / (1.0 + (-x).exp())
    }

    #[test]
    fn exp_approx_is_accurate_over_the_useful_range() {
        for i in -8700..=8800 {
            let x = i as f32 / 100.0;
            let want = (x as f64).exp();
            let rel = ((exp_approx(x) as f64 - want) / want).abs();
            assert!(rel < 5e-7, "exp({x}): relative error {rel}");
        }
    }

    #[test]
    fn every_isa_gives_the_same_silu_as_f64() {
        let xs: Vec<f32> = (0..1037).map(|i| (i as f32 - 500.0) * 0.173).collect();
        for isa in Isa::all_supported() {
            for (bias, act) in [(0.25, true), (-1.5, false)] {
                let mut row = xs.clone();
                bias_act_row(isa, &mut row, bias, act);
                for (&x, &y) in xs.iter().zip(&row) {
                    let z = (x + bias) as f64;
                    let want = if act { silu_f64(z) } else { z };
                    assert!(
                        (y as f64 - want).abs() <= 1e-6 * want.abs().max(1.0),
                        "{isa:?} x={x} got {y} want {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn silu_handles_extremes() {
        let mut v = vec![-1e30, -100.0, 0.0, 100.0, 1e30];
        bias_act_row(Isa::detect(), &mut v, 0.0, true);
        assert_eq!(v[2], 0.0);
        assert!(v[0].abs() < 1e-6 && v[1].abs() < 1e-6);
        assert_eq!(v[3], 100.0);
        assert_eq!(v[4], 1e30);
    }
}
