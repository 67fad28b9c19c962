//! What a convolution is (its shape and plane sizes) and why one cannot be built, shared by
//! the kernels (`conv`, `depthwise`, `direct`, …) so that none imports another for them.

/// Shape parameters of a convolution (square kernel, symmetric zero padding).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvSpec {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
    pub silu: bool,
}

impl ConvSpec {
    /// A convolution with "same" padding (`kernel / 2`, as ultralytics' `autopad` and
    /// YOLOX's `(ksize - 1) // 2`).
    pub fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        silu: bool,
    ) -> Self {
        Self {
            c_in,
            c_out,
            kernel,
            stride,
            padding: kernel / 2,
            groups,
            silu,
        }
    }

    /// Output `(height, width)` for an input of `(height, width)`; `None` when the padded
    /// input is smaller than the kernel.
    pub fn output_size(&self, in_h: usize, in_w: usize) -> Option<(usize, usize)> {
        let (k, s, p) = (self.kernel, self.stride, self.padding);
        if in_h + 2 * p < k || in_w + 2 * p < k || s == 0 {
            return None;
        }
        Some(((in_h + 2 * p - k) / s + 1, (in_w + 2 * p - k) / s + 1))
    }

    /// Multiply-adds × 2 for one image of `(in_h, in_w)`.
    pub fn flops(&self, in_h: usize, in_w: usize) -> f64 {
        let (oh, ow) = self.output_size(in_h, in_w).unwrap_or((0, 0));
        let per_out = (self.c_in / self.groups * self.kernel * self.kernel) as f64;
        2.0 * per_out * (self.c_out * oh * ow) as f64
    }

    /// Checks that the groups divide the channels and that `weight` (PyTorch layout
    /// `[c_out, c_in / groups, k, k]`) and `bias` (`[c_out]`) have this convolution's sizes.
    pub fn check_params(&self, weight: &[f32], bias: &[f32]) -> Result<(), ConvError> {
        let spec = *self;
        if spec.groups == 0
            || !spec.c_in.is_multiple_of(spec.groups)
            || !spec.c_out.is_multiple_of(spec.groups)
        {
            return Err(ConvError::Groups { spec });
        }
        let want = spec.c_out * spec.c_in / spec.groups * spec.kernel * spec.kernel;
        if weight.len() != want {
            return Err(ConvError::WeightLen {
                got: weight.len(),
                want,
                spec,
            });
        }
        if bias.len() != spec.c_out {
            return Err(ConvError::BiasLen {
                got: bias.len(),
                want: spec.c_out,
            });
        }
        Ok(())
    }

    pub(crate) fn is_depthwise(&self) -> bool {
        self.groups > 1 && self.groups == self.c_in && self.groups == self.c_out
    }
}

/// Why a [`FusedConv`] could not be built.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConvError {
    #[error("convolution weights hold {got} floats, expected {want} for {spec:?}")]
    WeightLen {
        got: usize,
        want: usize,
        spec: ConvSpec,
    },
    #[error("convolution bias holds {got} floats, expected {want}")]
    BiasLen { got: usize, want: usize },
    #[error("convolution {spec:?}: channels do not divide into its groups")]
    Groups { spec: ConvSpec },
    #[error("convolution input holds {got} floats, expected {want} for [{batch}, {c_in}, {height}, {width}]")]
    InputLen {
        got: usize,
        want: usize,
        batch: usize,
        c_in: usize,
        height: usize,
        width: usize,
    },
    #[error("convolution input {height}x{width} is smaller than its {kernel}x{kernel} kernel")]
    InputTooSmall {
        height: usize,
        width: usize,
        kernel: usize,
    },
}

/// Input and output plane sizes of one convolution call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
}
