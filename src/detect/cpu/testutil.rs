//! Shared by the kernels' tests: deterministic inputs and candle's convolution as the
//! reference every kernel is compared against.

use candle_core::{Device, Tensor};

use super::conv::ConvSpec;

/// Deterministic values in [-1, 1) (xorshift), so failures reproduce.
pub fn noise(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// A convolution with "same" padding and SiLU.
pub fn spec(c_in: usize, c_out: usize, kernel: usize, stride: usize, groups: usize) -> ConvSpec {
    ConvSpec::new(c_in, c_out, kernel, stride, groups, true)
}

/// candle's conv2d + bias (+ SiLU) (+ `residual`) on NCHW `input` `[batch, c_in, h, w]`:
/// the output's values and shape.
pub fn candle_conv(
    spec: &ConvSpec,
    input: &[f32],
    (batch, h, w): (usize, usize, usize),
    weight: &[f32],
    bias: &[f32],
    residual: Option<&[f32]>,
) -> (Vec<f32>, Vec<usize>) {
    let tensor =
        |data: &[f32], dims: &[usize]| Tensor::from_slice(data, dims, &Device::Cpu).unwrap();
    let k = spec.kernel;
    let x = tensor(input, &[batch, spec.c_in, h, w]);
    let wt = tensor(weight, &[spec.c_out, spec.c_in / spec.groups, k, k]);
    let mut y = x
        .conv2d(&wt, spec.padding, spec.stride, 1, spec.groups)
        .unwrap()
        .broadcast_add(&tensor(bias, &[1, spec.c_out, 1, 1]))
        .unwrap();
    if spec.silu {
        y = candle_nn::ops::silu(&y).unwrap();
    }
    if let Some(r) = residual {
        y = (&y + tensor(r, y.dims())).unwrap();
    }
    let shape = y.dims().to_vec();
    (y.flatten_all().unwrap().to_vec1().unwrap(), shape)
}

/// Largest absolute difference of two equally long slices.
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}
