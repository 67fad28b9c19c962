//! The CPU executor: a network as a flat list of ops on buffers in the blocked layout
//! ([`super::blocked`]), planned once per input size and run every frame without
//! allocating.
//!
//! The models describe themselves to a [`Graph`] (`plan` methods beside their `forward`),
//! naming where each result goes: a C2f or CSP block allocates its concat buffer and has
//! every part written straight into its channel range, so concatenation and split cost
//! nothing. Weights are packed for the kernels while planning. Ops then run in order, each
//! one parallel over its output rows on the rayon pool. A model whose shapes the executor
//! cannot hold (a concat at a channel offset that is not a whole block, a kernel larger
//! than 3) gets [`PlanError::Unsupported`] and keeps candle's ops.

use std::sync::{Arc, Mutex};

use super::blocked::{allocate, Lanes, Layout, View, BORDER, LANES};
use super::conv::{ConvError, ConvSpec};
use super::direct::DirectConv;
use super::isa::Isa;
use super::lanewise::{self, DepthwiseConv};
use super::pool::{for_each_index, in_pool, SharedMut};

/// Why a network cannot run on the executor (it then runs on candle's ops).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the CPU executor cannot run this network: {0}")]
    Unsupported(String),
    #[error(transparent)]
    Conv(#[from] ConvError),
}

fn unsupported<T>(why: String) -> Result<T, PlanError> {
    Err(PlanError::Unsupported(why))
}

/// An activation: a range of whole channel blocks of one buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Act {
    buffer: usize,
    first_block: usize,
    layout: Layout,
}

impl Act {
    pub fn channels(&self) -> usize {
        self.layout.channels
    }

    pub fn height(&self) -> usize {
        self.layout.height
    }

    pub fn width(&self) -> usize {
        self.layout.width
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Channels `start..start + len`; `start` must begin a block, and the range must end
    /// on a block boundary unless it ends with the activation.
    pub fn narrow(&self, start: usize, len: usize) -> Result<Act, PlanError> {
        let lanes = self.layout.lanes;
        let end = start + len;
        if end > self.channels()
            || !start.is_multiple_of(lanes)
            || (end != self.channels() && !end.is_multiple_of(lanes))
        {
            return unsupported(format!(
                "channels {start}..{end} of a {}-channel activation are not whole blocks of {lanes}",
                self.channels()
            ));
        }
        Ok(Act {
            buffer: self.buffer,
            first_block: self.first_block + start / lanes,
            layout: Layout {
                channels: len,
                ..self.layout
            },
        })
    }
}

#[derive(Debug)]
enum Op {
    Conv {
        conv: DirectConv,
        src: Act,
        dst: Act,
        residual: Option<Act>,
    },
    Depthwise {
        conv: DepthwiseConv,
        src: Act,
        dst: Act,
    },
    MaxPool {
        kernel: usize,
        src: Act,
        dst: Act,
    },
    Upsample2 {
        src: Act,
        dst: Act,
    },
    Copy {
        src: Act,
        dst: Act,
    },
}

/// One op's share of a timed run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    pub op: String,
    pub ms: f64,
    pub gflop: f64,
}

/// A planned network: buffer layouts and the ops between them.
#[derive(Debug, Default)]
pub struct Graph {
    buffers: Vec<Layout>,
    ops: Vec<Op>,
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// The network input: `channels` (≤ 16) values per pixel, no padding lanes.
    pub fn input(&mut self, channels: usize, height: usize, width: usize) -> Act {
        self.buffer(Layout::packed_image(channels, height, width))
    }

    /// A new blocked activation.
    pub fn alloc(&mut self, channels: usize, height: usize, width: usize) -> Act {
        self.buffer(Layout::blocked(channels, height, width))
    }

    fn buffer(&mut self, layout: Layout) -> Act {
        self.buffers.push(layout);
        Act {
            buffer: self.buffers.len() - 1,
            first_block: 0,
            layout,
        }
    }

    /// A convolution + bias (+ SiLU) (+ `residual`) from `src` into `dst` (a new
    /// activation when `None`). Dense (groups 1) and depthwise (groups = channels) only,
    /// kernel 1 or 3 with "same" padding.
    pub fn conv(
        &mut self,
        spec: ConvSpec,
        weight: &[f32],
        bias: &[f32],
        src: Act,
        dst: Option<Act>,
        residual: Option<Act>,
    ) -> Result<Act, PlanError> {
        if spec.c_in != src.channels() {
            return unsupported(format!(
                "a convolution over {} channels gets {}",
                spec.c_in,
                src.channels()
            ));
        }
        if spec.kernel / 2 > BORDER || spec.padding != spec.kernel / 2 || spec.stride == 0 {
            return unsupported(format!(
                "{0}x{0} convolution with padding {1}",
                spec.kernel, spec.padding
            ));
        }
        let Some((out_h, out_w)) = spec.output_size(src.height(), src.width()) else {
            return unsupported(format!(
                "input {}x{} smaller than the kernel",
                src.height(),
                src.width()
            ));
        };
        let dst = self.output(dst, spec.c_out, out_h, out_w)?;
        if let Some(res) = residual {
            if (res.channels(), res.height(), res.width()) != (dst.channels(), out_h, out_w) {
                return unsupported("a residual of another shape".into());
            }
        }
        let depthwise = spec.groups > 1 && spec.groups == spec.c_in && spec.groups == spec.c_out;
        if depthwise {
            if src.layout.pixel != LANES || residual.is_some() {
                return unsupported("a depthwise convolution over the packed image".into());
            }
            let conv = DepthwiseConv::new(spec, weight, bias)?;
            self.ops.push(Op::Depthwise { conv, src, dst });
        } else {
            let conv = DirectConv::new(spec, weight, bias, src.layout.lanes)?;
            self.ops.push(Op::Conv {
                conv,
                src,
                dst,
                residual,
            });
        }
        Ok(dst)
    }

    /// `dst`, checked to be `channels` × `height` × `width`, or a new activation.
    fn output(
        &mut self,
        dst: Option<Act>,
        channels: usize,
        height: usize,
        width: usize,
    ) -> Result<Act, PlanError> {
        match dst {
            None => Ok(self.alloc(channels, height, width)),
            Some(d) if (d.channels(), d.height(), d.width()) == (channels, height, width) => Ok(d),
            Some(d) => unsupported(format!(
                "an output of {channels}x{height}x{width} planned into {}x{}x{}",
                d.channels(),
                d.height(),
                d.width()
            )),
        }
    }

    /// Stride-1 `kernel`×`kernel` max pool keeping the size (PyTorch's −∞ padding).
    pub fn max_pool(&mut self, kernel: usize, src: Act, dst: Option<Act>) -> Result<Act, PlanError> {
        let dst = self.output(dst, src.channels(), src.height(), src.width())?;
        self.ops.push(Op::MaxPool { kernel, src, dst });
        Ok(dst)
    }

    /// Nearest-neighbour 2× upsample.
    pub fn upsample2(&mut self, src: Act, dst: Option<Act>) -> Result<Act, PlanError> {
        let dst = self.output(dst, src.channels(), 2 * src.height(), 2 * src.width())?;
        self.ops.push(Op::Upsample2 { src, dst });
        Ok(dst)
    }

    /// Copies `src` into `dst` (a concat part that was produced elsewhere).
    pub fn copy(&mut self, src: Act, dst: Act) -> Result<Act, PlanError> {
        let dst = self.output(Some(dst), src.channels(), src.height(), src.width())?;
        self.ops.push(Op::Copy { src, dst });
        Ok(dst)
    }

    /// `parts` concatenated along channels into a new activation.
    pub fn concat(&mut self, parts: &[Act]) -> Result<Act, PlanError> {
        let channels = parts.iter().map(Act::channels).sum();
        let (h, w) = (parts[0].height(), parts[0].width());
        let out = self.alloc(channels, h, w);
        let mut at = 0;
        for &part in parts {
            self.copy(part, out.narrow(at, part.channels())?)?;
            at += part.channels();
        }
        Ok(out)
    }

    /// Zeroed buffers for every activation (reused frame after frame).
    pub fn workspace(&self) -> Workspace {
        Workspace {
            buffers: self.buffers.iter().map(allocate).collect(),
        }
    }

    /// Runs every op in order.
    pub fn run(&self, ws: &mut Workspace) {
        self.run_observed(ws, |_| {});
    }

    /// Runs every op, timing each: (description, milliseconds, GFLOP) per op, for
    /// `lookout bench --ops`.
    pub fn run_timed(&self, ws: &mut Workspace) -> Vec<OpTime> {
        let mut times = Vec::with_capacity(self.ops.len());
        let mut last = std::time::Instant::now();
        self.run_observed(ws, |op| {
            let now = std::time::Instant::now();
            times.push(OpTime {
                op: op.describe(),
                ms: (now - last).as_secs_f64() * 1e3,
                gflop: op.flops() / 1e9,
            });
            last = now;
        });
        times
    }

    fn run_observed(&self, ws: &mut Workspace, mut after: impl FnMut(&Op)) {
        let bases: Vec<*mut f32> = ws
            .buffers
            .iter_mut()
            .map(|b| b.as_mut_ptr().cast::<f32>())
            .collect();
        let view = |act: &Act| View {
            // SAFETY: the block range lies inside the buffer allocated for its layout.
            ptr: unsafe { bases[act.buffer].add(act.first_block * act.layout.block_stride()) },
            layout: act.layout,
        };
        let isa = Isa::detect();
        for op in &self.ops {
            // SAFETY: the planner gave every op a fresh or disjoint destination range; ops
            // run one after another, each writing only its `dst`.
            unsafe {
                match op {
                    Op::Conv {
                        conv,
                        src,
                        dst,
                        residual,
                    } => conv.run(view(src), view(dst), residual.as_ref().map(view)),
                    Op::Depthwise { conv, src, dst } => conv.run(view(src), view(dst)),
                    Op::MaxPool { kernel, src, dst } => {
                        lanewise::max_pool_same(isa, view(src), view(dst), *kernel)
                    }
                    Op::Upsample2 { src, dst } => lanewise::upsample2(view(src), view(dst)),
                    Op::Copy { src, dst } => lanewise::copy_blocks(view(src), view(dst)),
                }
            }
            after(op);
        }
    }

    /// Multiply-adds × 2 of one run (for GFLOP/s figures).
    pub fn flops(&self) -> f64 {
        self.ops.iter().map(Op::flops).sum()
    }
}

impl Op {
    fn flops(&self) -> f64 {
        match self {
            Op::Conv { conv, src, .. } => conv.spec().flops(src.height(), src.width()),
            Op::Depthwise { conv, src, .. } => conv.spec().flops(src.height(), src.width()),
            _ => 0.0,
        }
    }

    /// e.g. `conv3x3/2 32→64 @160x160`.
    fn describe(&self) -> String {
        let at = |a: &Act| format!("@{}x{}", a.height(), a.width());
        match self {
            Op::Conv { conv, src, residual, .. } => {
                let s = conv.spec();
                let plus = if residual.is_some() { " +res" } else { "" };
                format!("conv{0}x{0}/{1} {2}→{3} {4}{plus}", s.kernel, s.stride, s.c_in, s.c_out, at(src))
            }
            Op::Depthwise { conv, src, .. } => {
                let s = conv.spec();
                format!("dw{0}x{0}/{1} {2} {3}", s.kernel, s.stride, s.c_in, at(src))
            }
            Op::MaxPool { kernel, src, .. } => format!("maxpool{kernel} {} {}", src.channels(), at(src)),
            Op::Upsample2 { src, .. } => format!("upsample2 {} {}", src.channels(), at(src)),
            Op::Copy { src, .. } => format!("copy {} {}", src.channels(), at(src)),
        }
    }
}

/// The buffers of one [`Graph`].
#[derive(Debug)]
pub struct Workspace {
    buffers: Vec<Vec<Lanes>>,
}

impl Workspace {
    /// The floats of `act`'s buffer from its first block on, with its layout.
    pub fn read(&self, act: &Act) -> (&[f32], Layout) {
        let floats = as_floats(&self.buffers[act.buffer]);
        (
            &floats[act.first_block * act.layout.block_stride()..],
            act.layout,
        )
    }

    /// As [`Workspace::read`], writable (for the input).
    pub fn write(&mut self, act: &Act) -> (&mut [f32], Layout) {
        let lanes = &mut self.buffers[act.buffer];
        // SAFETY: `Lanes` is `repr(C)` of 16 f32 with no padding beyond its alignment,
        // which is a multiple of its size.
        let floats = unsafe {
            std::slice::from_raw_parts_mut(lanes.as_mut_ptr().cast::<f32>(), lanes.len() * LANES)
        };
        (
            &mut floats[act.first_block * act.layout.block_stride()..],
            act.layout,
        )
    }
}

fn as_floats(lanes: &[Lanes]) -> &[f32] {
    // SAFETY: see `Workspace::write`.
    unsafe { std::slice::from_raw_parts(lanes.as_ptr().cast::<f32>(), lanes.len() * LANES) }
}

/// Writes an NCHW image `[channels, height, width]` into the packed input `act`, rows in
/// parallel.
pub fn write_image(ws: &mut Workspace, act: &Act, nchw: &[f32]) {
    let (floats, layout) = ws.write(act);
    let (c, h, w) = (layout.channels, layout.height, layout.width);
    let plane = h * w;
    assert_eq!(nchw.len(), c * plane, "image size");
    let dst = SharedMut(floats.as_mut_ptr());
    for_each_index(h, |y| {
        // SAFETY: item `y` writes only interior row `y` of the input buffer.
        let row = unsafe {
            std::slice::from_raw_parts_mut(dst.ptr().add(layout.offset(0, y as isize, 0)), w * c)
        };
        for (x, pixel) in row.chunks_exact_mut(c).enumerate() {
            for (ch, v) in pixel.iter_mut().enumerate() {
                *v = nchw[ch * plane + y * w + x];
            }
        }
    });
}

/// Writes an NCHW image `[c, 2h, 2w]` space-to-depth into the packed input `act`
/// (`4c` channels, `h` × `w`) in YOLOX Focus order: (row parity, column parity) =
/// (0, 0), (1, 0), (0, 1), (1, 1), each holding the image's `c` channels. Rows in parallel.
pub fn write_space_to_depth(ws: &mut Workspace, act: &Act, nchw: &[f32]) {
    let (floats, layout) = ws.write(act);
    let (h, w) = (layout.height, layout.width);
    let c = layout.channels / 4;
    let (full_h, full_w) = (2 * h, 2 * w);
    assert_eq!(nchw.len(), c * full_h * full_w, "image size");
    let dst = SharedMut(floats.as_mut_ptr());
    for_each_index(h, |y| {
        // SAFETY: item `y` writes only interior row `y` of the input buffer.
        let row = unsafe {
            std::slice::from_raw_parts_mut(
                dst.ptr().add(layout.offset(0, y as isize, 0)),
                w * layout.channels,
            )
        };
        for (part, (dy, dx)) in [(0, 0), (1, 0), (0, 1), (1, 1)].into_iter().enumerate() {
            for ch in 0..c {
                let src = &nchw[(ch * full_h + 2 * y + dy) * full_w..][..full_w];
                for (x, pixel) in row.chunks_exact_mut(4 * c).enumerate() {
                    pixel[part * c + ch] = src[2 * x + dx];
                }
            }
        }
    });
}

/// A planned graph with its buffers, its input and the activations a model decodes.
#[derive(Debug)]
pub struct Prepared {
    pub graph: Graph,
    pub workspace: Workspace,
    pub input: Act,
    pub outputs: Vec<Act>,
}

/// The plan of a model for the last input size, built on first use (planning packs the
/// weights, a few milliseconds). Shared by clones of the model; one run at a time, on the
/// rayon pool.
#[derive(Debug, Clone, Default)]
pub struct PlanCache {
    slot: Arc<Mutex<Option<((usize, usize), Option<Prepared>)>>>,
}

impl PlanCache {
    /// Runs `f` on the plan for an input of `size` (height, width), planning it with
    /// `plan` when the size changed; `None` when the network is not supported (the caller
    /// falls back to candle).
    pub fn with<R: Send>(
        &self,
        size: (usize, usize),
        plan: impl FnOnce() -> Result<Prepared, PlanError>,
        f: impl FnOnce(&mut Prepared) -> R + Send,
    ) -> Option<R> {
        let mut slot = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        if slot.as_ref().map(|(s, _)| *s) != Some(size) {
            let prepared = match plan() {
                Ok(p) => Some(p),
                Err(e) => {
                    tracing::debug!("{e}; using candle's ops");
                    None
                }
            };
            *slot = Some((size, prepared));
        }
        let prepared = slot.as_mut().and_then(|(_, p)| p.as_mut())?;
        Some(in_pool(|| f(prepared)))
    }
}
