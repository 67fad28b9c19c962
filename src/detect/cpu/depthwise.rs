//! Depthwise convolution (groups = channels, YOLOX-Nano's `DWConv`) with bias and SiLU.
//! Each channel is zero-padded once into a thread-local plane; a 3×3 output row is then one
//! pass over three padded input rows (bias, nine taps and SiLU in registers), other kernel
//! sizes add one shifted row per tap. Channels run in parallel on the rayon pool.

use std::cell::RefCell;

use super::epilogue::{bias_act_row, silu};
use super::isa::{isa_kernel, Isa};
use super::pool::{for_each_index, SharedMut};
use super::spec::{ConvSpec, Geometry};

thread_local! {
    /// Per-thread padded input plane, reused across channels, layers and frames.
    static PADDED: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// One image: `input` `[C, in_h, in_w]`, `out` `[C, out_h, out_w]`, `weight` `[C, k, k]`.
pub(crate) fn forward(
    isa: Isa,
    spec: &ConvSpec,
    weight: &[f32],
    bias: &[f32],
    input: &[f32],
    out: &mut [f32],
    geom: Geometry,
) {
    let out_plane = geom.out_h * geom.out_w;
    let in_plane = geom.in_h * geom.in_w;
    let k2 = spec.kernel * spec.kernel;
    let shared = SharedMut(out.as_mut_ptr());
    for_each_index(spec.c_out, |c| {
        // SAFETY: channel `c` owns output floats `c·out_plane..(c + 1)·out_plane`.
        let out_c =
            unsafe { std::slice::from_raw_parts_mut(shared.ptr().add(c * out_plane), out_plane) };
        let input_c = &input[c * in_plane..(c + 1) * in_plane];
        let taps = &weight[c * k2..(c + 1) * k2];
        channel(isa, spec, geom, taps, bias[c], input_c, out_c);
    });
}

/// One channel: pad, then one output row at a time.
fn channel(
    isa: Isa,
    spec: &ConvSpec,
    geom: Geometry,
    taps: &[f32],
    bias: f32,
    input: &[f32],
    out: &mut [f32],
) {
    let (k, pad, s) = (spec.kernel, spec.padding, spec.stride);
    let padded_w = geom.in_w + 2 * pad;
    let padded_h = geom.in_h + 2 * pad;
    PADDED.with(|padded| {
        let mut padded = padded.borrow_mut();
        padded.clear();
        padded.resize(padded_h * padded_w, 0.0);
        for (y, row) in input.chunks_exact(geom.in_w).enumerate() {
            let at = (y + pad) * padded_w + pad;
            padded[at..at + geom.in_w].copy_from_slice(row);
        }
        let padded_row = |y: usize| &padded[y * padded_w..(y + 1) * padded_w];
        for (oy, out_row) in out.chunks_exact_mut(geom.out_w).enumerate() {
            let y = oy * s;
            if k == 3 && (s == 1 || s == 2) {
                let rows = [padded_row(y), padded_row(y + 1), padded_row(y + 2)];
                let taps: &[f32; 9] = taps.try_into().expect("3×3 taps");
                if s == 1 {
                    row3_stride1(isa, out_row, rows, taps, bias, spec.silu);
                } else {
                    row3_stride2(isa, out_row, rows, taps, bias, spec.silu);
                }
                continue;
            }
            out_row.fill(bias);
            for ky in 0..k {
                let in_row = padded_row(y + ky);
                for kx in 0..k {
                    accumulate_tap(isa, out_row, &in_row[kx..], taps[ky * k + kx], s);
                }
            }
            if spec.silu {
                bias_act_row(isa, out_row, 0.0, true);
            }
        }
    });
}

isa_kernel! {
    /// One output row of a stride-1 3×3 depthwise convolution (+ SiLU).
    fn row3_stride1(out: &mut [f32], rows: [&[f32]; 3], taps: &[f32; 9], bias: f32, act: bool) {
        let n = out.len();
        // Slices of known length let LLVM drop the bounds checks and vectorise over x.
        let (a, b, c) = (&rows[0][..n + 2], &rows[1][..n + 2], &rows[2][..n + 2]);
        let t = *taps;
        // Indexing by x (not an iterator over `out`) keeps the three row reads plain loads.
        #[allow(clippy::needless_range_loop)]
        for x in 0..n {
            let top = t[0] * a[x] + t[1] * a[x + 1] + t[2] * a[x + 2];
            let mid = t[3] * b[x] + t[4] * b[x + 1] + t[5] * b[x + 2];
            let bottom = t[6] * c[x] + t[7] * c[x + 1] + t[8] * c[x + 2];
            out[x] = bias + top + mid + bottom;
        }
        if act {
            for v in out.iter_mut() {
                *v = silu(*v);
            }
        }
    }
}

isa_kernel! {
    /// One output row of a stride-2 3×3 depthwise convolution (+ SiLU).
    fn row3_stride2(out: &mut [f32], rows: [&[f32]; 3], taps: &[f32; 9], bias: f32, act: bool) {
        let n = out.len();
        let (a, b, c) = (&rows[0][..2 * n + 1], &rows[1][..2 * n + 1], &rows[2][..2 * n + 1]);
        let t = *taps;
        #[allow(clippy::needless_range_loop)]
        for x in 0..n {
            let i = 2 * x;
            let top = t[0] * a[i] + t[1] * a[i + 1] + t[2] * a[i + 2];
            let mid = t[3] * b[i] + t[4] * b[i + 1] + t[5] * b[i + 2];
            let bottom = t[6] * c[i] + t[7] * c[i + 1] + t[8] * c[i + 2];
            out[x] = bias + top + mid + bottom;
        }
        if act {
            for v in out.iter_mut() {
                *v = silu(*v);
            }
        }
    }
}

isa_kernel! {
    /// `out[x] += tap · row[x · stride]` (kernels other than 3×3).
    fn accumulate_tap(out: &mut [f32], row: &[f32], tap: f32, stride: usize) {
        if stride == 1 {
            let n = out.len();
            for (o, &v) in out.iter_mut().zip(&row[..n]) {
                *o += tap * v;
            }
        } else {
            for (o, v) in out.iter_mut().zip(row.iter().step_by(stride)) {
                *o += tap * v;
            }
        }
    }
}
