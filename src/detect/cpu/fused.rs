//! A depthwise convolution followed by a 1×1 convolution (YOLOX's `DWConv`) in one pass:
//! each parallel item computes one row of the depthwise output, all its blocks, into a
//! thread-local one-row buffer and at once runs the pointwise tiles over it. The depthwise
//! activation never goes to memory, and the pair is one parallel loop instead of two (each
//! loop's start and join cost a few µs, more when a vCPU is descheduled mid-loop).

use std::cell::RefCell;

use super::blocked::{Lanes, Layout, View, LANES};
use super::conv::ConvSpec;
use super::direct::DirectConv;
use super::isa::Isa;
use super::lanewise::DepthwiseConv;
use super::pool::for_each_index;

thread_local! {
    /// Per-thread depthwise output row, reused across rows, layers and frames.
    static ROW: RefCell<Vec<Lanes>> = const { RefCell::new(Vec::new()) };
}

/// A depthwise convolution whose output feeds only a 1×1 stride-1 convolution.
#[derive(Debug, Clone)]
pub struct DepthwisePointwise {
    depthwise: DepthwiseConv,
    pointwise: DirectConv,
}

impl DepthwisePointwise {
    /// `None` when `pointwise` is not a 1×1 stride-1 convolution over `depthwise`'s output.
    pub fn new(depthwise: DepthwiseConv, pointwise: DirectConv) -> Option<Self> {
        let (d, p) = (depthwise.spec(), pointwise.spec());
        let fits = p.kernel == 1 && p.stride == 1 && p.padding == 0 && p.c_in == d.c_out;
        fits.then_some(Self {
            depthwise,
            pointwise,
        })
    }

    pub fn specs(&self) -> (&ConvSpec, &ConvSpec) {
        (self.depthwise.spec(), self.pointwise.spec())
    }

    pub fn with_isa(self, isa: Isa) -> Self {
        Self {
            depthwise: self.depthwise.with_isa(isa),
            pointwise: self.pointwise.with_isa(isa),
        }
    }

    /// `dst = pointwise(depthwise(src)) (+ residual)`, output rows in parallel.
    ///
    /// # Safety
    /// As [`DirectConv::run`]: views cover their layouts, `dst` is disjoint from `src` and
    /// `residual`.
    pub unsafe fn run(&self, src: View, dst: View, residual: Option<View>) {
        let width = dst.layout.width;
        let row_layout = Layout::blocked(self.depthwise.spec().c_out, 1, width);
        for_each_index(dst.layout.height, |oy| {
            ROW.with(|buffer| {
                let mut buffer = buffer.borrow_mut();
                let lanes = row_layout.len().div_ceil(LANES);
                if buffer.len() < lanes {
                    buffer.resize(lanes, Lanes::default());
                }
                let row = View {
                    ptr: buffer.as_mut_ptr().cast::<f32>(),
                    layout: row_layout,
                };
                // SAFETY: the row buffer is this thread's and holds `row_layout`; the item
                // writes output row `oy` of `dst` only.
                unsafe {
                    for block in 0..row_layout.blocks() {
                        self.depthwise.run_row(src, block, oy, row, 0);
                    }
                    for group in 0..self.pointwise.groups() {
                        self.pointwise.run_row(row, 0, dst, residual, oy, group);
                    }
                }
            });
        });
    }
}
