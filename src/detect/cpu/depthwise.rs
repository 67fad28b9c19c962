//! Depthwise convolution (groups = channels, YOLOX-Nano's `DWConv`) with bias and SiLU:
//! each channel is zero-padded once into a thread-local plane, then every output row is the
//! sum of k² shifted, scaled input rows — contiguous loads for stride 1, so it vectorises.
//! Channels run in parallel on the rayon pool.

use std::cell::RefCell;

use rayon::prelude::*;

use super::conv::{ConvSpec, Geometry};
use super::epilogue::bias_act_row;
use super::isa::{isa_kernel, Isa};

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
    let (k, pad) = (spec.kernel, spec.padding);
    let in_plane = geom.in_h * geom.in_w;
    let out_plane = geom.out_h * geom.out_w;
    let padded_w = geom.in_w + 2 * pad;
    let padded_h = geom.in_h + 2 * pad;
    out.par_chunks_mut(out_plane)
        .enumerate()
        .for_each(|(c, out_c)| {
            PADDED.with(|padded| {
                let mut padded = padded.borrow_mut();
                padded.clear();
                padded.resize(padded_h * padded_w, 0.0);
                let src = &input[c * in_plane..(c + 1) * in_plane];
                for (y, row) in src.chunks_exact(geom.in_w).enumerate() {
                    let at = (y + pad) * padded_w + pad;
                    padded[at..at + geom.in_w].copy_from_slice(row);
                }
                let taps = &weight[c * k * k..(c + 1) * k * k];
                for (oy, out_row) in out_c.chunks_exact_mut(geom.out_w).enumerate() {
                    out_row.fill(bias[c]);
                    for ky in 0..k {
                        let y = oy * spec.stride + ky;
                        let in_row = &padded[y * padded_w..(y + 1) * padded_w];
                        for kx in 0..k {
                            let tap = taps[ky * k + kx];
                            accumulate_tap(isa, out_row, &in_row[kx..], tap, spec.stride);
                        }
                    }
                    if spec.silu {
                        bias_act_row(isa, out_row, 0.0, true);
                    }
                }
            });
        });
}

isa_kernel! {
    /// `out[x] += tap · row[x · stride]`.
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
