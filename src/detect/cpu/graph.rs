//! The CPU executor: a network as a flat list of ops on buffers in the blocked layout
//! ([`super::blocked`]), planned once per input size and run every frame in the same
//! buffers.
//!
//! The models describe themselves to a [`Graph`] (`plan` methods beside their `forward`),
//! naming where each result goes: a C2f, CSP or neck concat buffer is allocated first and
//! every part is written straight into its channel range, so concatenation and split cost
//! nothing. Weights are packed for the kernels while planning, and buffers whose lifetimes
//! do not overlap share memory ([`Graph::workspace_keeping`]). Ops then run in order, each
//! one parallel over its output rows on the rayon pool. A model whose shapes the executor
//! cannot hold (a concat at a channel offset that is not a whole block, a kernel larger
//! than 3) gets [`PlanError::Unsupported`] and keeps candle's ops.

use std::sync::{Arc, Mutex};

use super::attention::Attention;
use super::bf16::DirectBf16;
use super::blocked::{Lanes, Layout, View, BORDER, LANES};
use super::conv::{ConvError, ConvSpec};
use super::direct::DirectConv;
use super::fused::DepthwisePointwise;
use super::int8::{self, ActRange, Calibration, DirectInt8};
use super::isa::Isa;
use super::lanewise::{self, DepthwiseConv};
use super::pool::{for_each_index, in_pool, SharedMut};
use super::winograd::WinogradConv;

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

/// A convolution's shape and weights (PyTorch layout), as the planner takes them.
#[derive(Debug, Clone, Copy)]
pub struct ConvParams<'a> {
    pub spec: ConvSpec,
    pub weight: &'a [f32],
    pub bias: &'a [f32],
}

/// Refuses an op whose destination overlaps what it reads (items would race).
fn disjoint(read: &Act, written: &Act) -> Result<(), PlanError> {
    let blocks = |a: &Act| a.first_block..a.first_block + a.layout.blocks();
    let (r, w) = (blocks(read), blocks(written));
    if read.buffer == written.buffer && r.start < w.end && w.start < r.end {
        return unsupported("an op writing over its own input".into());
    }
    Ok(())
}

/// Pool, upsample and copy move whole 16-lane pixels: both sides blocked, disjoint.
fn lanewise_operands(src: &Act, dst: &Act) -> Result<(), PlanError> {
    if src.layout.pixel != LANES {
        return unsupported("a pixel-wise op over the packed image".into());
    }
    disjoint(src, dst)
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
        conv: Dense,
        src: Act,
        dst: Act,
        residual: Option<Act>,
    },
    Depthwise {
        conv: DepthwiseConv,
        src: Act,
        dst: Act,
    },
    DepthwisePointwise {
        conv: DepthwisePointwise,
        src: Act,
        dst: Act,
        residual: Option<Act>,
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
    /// Adds into `dst` (which holds its first term): reads q, k, v and dst.
    Attention {
        attn: Attention,
        q: Act,
        k: Act,
        v: Act,
        dst: Act,
    },
}

/// A dense convolution's kernel: Winograd F(2×2, 3×3) for the stride-1 3×3 ones (2.25×
/// fewer multiply-adds), direct for the rest.
#[derive(Debug, Clone)]
enum Dense {
    Direct(DirectConv),
    Winograd(WinogradConv),
    Bf16(DirectBf16),
    Int8(DirectInt8),
    /// Calibrating: records the input range of quantizable convolution `slot`, then runs
    /// `conv` (f32).
    Observed {
        conv: Box<Dense>,
        slot: usize,
        calibration: Arc<Calibration>,
    },
}

/// The arithmetic the planner gives the dense convolutions that qualify for reduced
/// precision (those on a blocked input that end in SiLU: the first layer, on the image,
/// and the prediction layers, without an activation, stay f32, and so do depthwise
/// convolutions, the fused depthwise + pointwise pairs and attention).
#[derive(Debug, Clone, Default)]
pub enum Arithmetic {
    /// f32 throughout (the reference).
    #[default]
    F32,
    /// bf16 inputs and weights ([`super::bf16`]).
    Bf16,
    /// int8 ([`super::int8`]): the calibrated input range of every qualifying convolution,
    /// in plan order.
    Int8(Arc<Vec<ActRange>>),
    /// f32, recording every qualifying convolution's input range into the calibration.
    Calibrate(Arc<Calibration>),
}

impl Dense {
    fn spec(&self) -> &ConvSpec {
        match self {
            Dense::Direct(c) => c.spec(),
            Dense::Winograd(c) => c.spec(),
            Dense::Bf16(c) => c.spec(),
            Dense::Int8(c) => c.spec(),
            Dense::Observed { conv, .. } => conv.spec(),
        }
    }

    fn with_isa(self, isa: Isa) -> Self {
        match self {
            Dense::Direct(c) => Dense::Direct(c.with_isa(isa)),
            Dense::Winograd(c) => Dense::Winograd(c.with_isa(isa)),
            Dense::Bf16(c) => Dense::Bf16(c.with_isa(isa)),
            Dense::Int8(c) => Dense::Int8(c.with_isa(isa)),
            Dense::Observed {
                conv,
                slot,
                calibration,
            } => Dense::Observed {
                conv: Box::new(conv.with_isa(isa)),
                slot,
                calibration,
            },
        }
    }

    /// # Safety
    /// As [`DirectConv::run`]; `scratch` as [`DirectInt8::run`]'s.
    unsafe fn run(&self, src: View, dst: View, residual: Option<View>, scratch: *mut u8) {
        match self {
            Dense::Direct(c) => c.run(src, dst, residual),
            Dense::Winograd(c) => c.run(src, dst, residual),
            Dense::Bf16(c) => c.run(src, dst, residual),
            Dense::Int8(c) => c.run(src, dst, residual, scratch),
            Dense::Observed {
                conv,
                slot,
                calibration,
            } => {
                calibration.record(*slot, *conv.spec(), int8::observe(src));
                conv.run(src, dst, residual, scratch)
            }
        }
    }

    /// Bytes of quantized input a run over `src` needs (0 but for int8).
    fn scratch_bytes(&self, src: &Layout) -> usize {
        match self {
            Dense::Int8(_) => DirectInt8::scratch_bytes(src),
            _ => 0,
        }
    }

    /// How `lookout bench --ops` names the kernel (nothing for the direct one).
    fn kernel_note(&self) -> &'static str {
        match self {
            Dense::Direct(_) => "",
            Dense::Winograd(c) if c.is_bf16() => " winograd bf16",
            Dense::Winograd(_) => " winograd",
            Dense::Bf16(_) => " bf16",
            Dense::Int8(_) => " int8",
            Dense::Observed { conv, .. } => conv.kernel_note(),
        }
    }
}

/// One op's share of a timed run.
#[derive(Debug, Clone, PartialEq)]
pub struct OpTime {
    pub op: String,
    pub ms: f64,
    pub gflop: f64,
}

/// A planned network: buffer layouts and the ops between them.
#[derive(Debug)]
pub struct Graph {
    buffers: Vec<Layout>,
    /// Buffers written from outside before a run (the image).
    inputs: Vec<usize>,
    ops: Vec<Op>,
    /// The element-wise kernels' flavour (max pool).
    isa: Isa,
    /// Whether stride-1 3×3 convolutions planned from now on use Winograd.
    winograd: bool,
    /// The arithmetic of the qualifying dense convolutions planned from now on.
    arithmetic: Arithmetic,
    /// Qualifying dense convolutions planned so far (the next one's int8 range slot).
    quantizable: usize,
}

impl Default for Graph {
    fn default() -> Self {
        Self {
            buffers: Vec::new(),
            inputs: Vec::new(),
            ops: Vec::new(),
            isa: Isa::detect(),
            winograd: true,
            arithmetic: Arithmetic::F32,
            quantizable: 0,
        }
    }
}

impl Graph {
    pub fn new() -> Self {
        Self::default()
    }

    /// Plans the stride-1 3×3 convolutions that follow as direct ones (`false`) or with
    /// Winograd (`true`, the default): benches compare the two.
    pub fn set_winograd(&mut self, on: bool) {
        self.winograd = on;
    }

    /// Plans the qualifying dense convolutions that follow in `arithmetic` (see
    /// [`Arithmetic`]).
    pub fn set_arithmetic(&mut self, arithmetic: Arithmetic) {
        self.arithmetic = arithmetic;
    }

    /// [`Self::set_arithmetic`] with bf16 (`true`) or f32.
    pub fn set_bf16(&mut self, on: bool) {
        self.set_arithmetic(if on {
            Arithmetic::Bf16
        } else {
            Arithmetic::F32
        });
    }

    /// The network input: `channels` (1 to 16) values per pixel, no padding lanes.
    ///
    /// # Panics
    /// With another channel count (a model's planning error, not an input's).
    pub fn input(&mut self, channels: usize, height: usize, width: usize) -> Act {
        assert!(
            (1..=LANES).contains(&channels),
            "an input of {channels} channels"
        );
        let act = self.buffer(Layout::packed_image(channels, height, width));
        self.inputs.push(act.buffer);
        act
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
        self.conv_in(spec, weight, bias, (src, dst, residual), true)
    }

    /// [`Self::conv`], in the planner's [`Arithmetic`] where `reduced` and the convolution
    /// qualifies.
    fn conv_in(
        &mut self,
        spec: ConvSpec,
        weight: &[f32],
        bias: &[f32],
        (src, dst, residual): (Act, Option<Act>, Option<Act>),
        reduced: bool,
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
        disjoint(&src, &dst)?;
        if let Some(res) = residual {
            if (res.channels(), res.height(), res.width()) != (dst.channels(), out_h, out_w)
                || res.layout.pixel != LANES
            {
                return unsupported("a residual of another shape".into());
            }
            disjoint(&res, &dst)?;
        }
        let depthwise = spec.groups > 1 && spec.groups == spec.c_in && spec.groups == spec.c_out;
        if depthwise {
            if src.layout.pixel != LANES || residual.is_some() {
                return unsupported("a depthwise convolution over the packed image".into());
            }
            let conv = DepthwiseConv::new(spec, weight, bias)?;
            self.ops.push(Op::Depthwise { conv, src, dst });
        } else {
            let reduced = reduced && spec.silu && src.layout.pixel == LANES;
            let slot = self.quantizable;
            self.quantizable += usize::from(reduced);
            let arithmetic = if reduced {
                self.arithmetic.clone()
            } else {
                Arithmetic::F32
            };
            let bf16 = matches!(arithmetic, Arithmetic::Bf16);
            let f32_or_bf16 = |winograd: bool| -> Result<Dense, PlanError> {
                Ok(
                    if winograd && WinogradConv::applies(&spec, src.layout.lanes) {
                        Dense::Winograd(WinogradConv::with_precision(spec, weight, bias, bf16)?)
                    } else if bf16 {
                        Dense::Bf16(DirectBf16::new(spec, weight, bias)?)
                    } else {
                        Dense::Direct(DirectConv::new(spec, weight, bias, src.layout.lanes)?)
                    },
                )
            };
            let conv = match arithmetic {
                Arithmetic::Int8(ranges) => {
                    let Some(&range) = ranges.get(slot) else {
                        return unsupported(format!(
                            "int8 ranges for {} convolutions, the network has more",
                            ranges.len()
                        ));
                    };
                    Dense::Int8(DirectInt8::new(spec, weight, bias, range)?)
                }
                Arithmetic::Calibrate(calibration) => Dense::Observed {
                    conv: Box::new(f32_or_bf16(self.winograd)?),
                    slot,
                    calibration,
                },
                _ => f32_or_bf16(self.winograd)?,
            };
            self.ops.push(Op::Conv {
                conv,
                src,
                dst,
                residual,
            });
        }
        Ok(dst)
    }

    /// A depthwise convolution (`depthwise`, groups = channels) whose output only feeds the
    /// 1×1 convolution `pointwise`, fused into one op (YOLOX's `DWConv`): `src` →
    /// `dst` (new when `None`), `residual` added after the pointwise activation.
    pub fn depthwise_pointwise(
        &mut self,
        depthwise: ConvParams,
        pointwise: ConvParams,
        src: Act,
        dst: Option<Act>,
        residual: Option<Act>,
    ) -> Result<Act, PlanError> {
        // Plan the pair as two ops (all the checks), then fuse them; the fused kernel is
        // f32 (its pointwise half a direct convolution).
        let mid = self.conv(
            depthwise.spec,
            depthwise.weight,
            depthwise.bias,
            src,
            None,
            None,
        )?;
        let out = self.conv_in(
            pointwise.spec,
            pointwise.weight,
            pointwise.bias,
            (mid, dst, residual),
            false,
        )?;
        let (
            Some(Op::Conv {
                conv: Dense::Direct(pw),
                ..
            }),
            Some(Op::Depthwise { conv: dw, .. }),
        ) = (self.ops.pop(), self.ops.pop())
        else {
            return unsupported("a depthwise + pointwise pair of other kinds".into());
        };
        let Some(conv) = DepthwisePointwise::new(dw, pw) else {
            return unsupported("a pointwise convolution that is not 1x1, stride 1".into());
        };
        // The depthwise output buffer stays in the plan, untouched by any op (no memory).
        self.ops.push(Op::DepthwisePointwise {
            conv,
            src,
            dst: out,
            residual,
        });
        Ok(out)
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
            Some(d)
                if (d.channels(), d.height(), d.width()) == (channels, height, width)
                    && d.layout.pixel == LANES =>
            {
                Ok(d)
            }
            Some(d) => unsupported(format!(
                "an output of {channels}x{height}x{width} planned into {}x{}x{}",
                d.channels(),
                d.height(),
                d.width()
            )),
        }
    }

    /// Stride-1 `kernel`×`kernel` max pool keeping the size (PyTorch's −∞ padding).
    pub fn max_pool(
        &mut self,
        kernel: usize,
        src: Act,
        dst: Option<Act>,
    ) -> Result<Act, PlanError> {
        let dst = self.output(dst, src.channels(), src.height(), src.width())?;
        lanewise_operands(&src, &dst)?;
        self.ops.push(Op::MaxPool { kernel, src, dst });
        Ok(dst)
    }

    /// Nearest-neighbour 2× upsample.
    pub fn upsample2(&mut self, src: Act, dst: Option<Act>) -> Result<Act, PlanError> {
        let dst = self.output(dst, src.channels(), 2 * src.height(), 2 * src.width())?;
        lanewise_operands(&src, &dst)?;
        self.ops.push(Op::Upsample2 { src, dst });
        Ok(dst)
    }

    /// Copies `src` into `dst` (a concat part that was produced elsewhere).
    pub fn copy(&mut self, src: Act, dst: Act) -> Result<Act, PlanError> {
        let dst = self.output(Some(dst), src.channels(), src.height(), src.width())?;
        lanewise_operands(&src, &dst)?;
        self.ops.push(Op::Copy { src, dst });
        Ok(dst)
    }

    /// `parts` concatenated along channels into a new activation.
    pub fn concat(&mut self, parts: &[Act]) -> Result<Act, PlanError> {
        let Some(first) = parts.first() else {
            return unsupported("a concat of nothing".into());
        };
        let channels = parts.iter().map(Act::channels).sum();
        let (h, w) = (first.height(), first.width());
        let out = self.alloc(channels, h, w);
        let mut at = 0;
        for &part in parts {
            self.copy(part, out.narrow(at, part.channels())?)?;
            at += part.channels();
        }
        Ok(out)
    }

    /// Multi-head self-attention over all pixels (ultralytics `Attention` without its
    /// convs): for head h, pixel i and channel c of that head,
    /// `dst[h·head_dim + c, i] += Σ_j softmax_j(scale · Σ_d q[h·key_dim + d, i] · k[h·key_dim + d, j]) · v[h·head_dim + c, j]`.
    /// `dst` (heads·head_dim channels, H×W) already holds what the sum is added to (the
    /// positional conv of v). `q` and `k` hold heads·key_dim channels (head h at
    /// h·key_dim..), `v` heads·head_dim; key_dim and head_dim must be whole blocks of 16.
    pub fn attention_add(
        &mut self,
        q: Act,
        k: Act,
        v: Act,
        heads: usize,
        scale: f32,
        dst: Act,
    ) -> Result<(), PlanError> {
        if heads == 0 || !q.channels().is_multiple_of(heads) || !v.channels().is_multiple_of(heads)
        {
            return unsupported(format!(
                "attention with {heads} heads over {} query and {} value channels",
                q.channels(),
                v.channels()
            ));
        }
        let (key_dim, head_dim) = (q.channels() / heads, v.channels() / heads);
        if !key_dim.is_multiple_of(LANES) || !head_dim.is_multiple_of(LANES) || key_dim == 0 {
            return unsupported(format!(
                "attention with key_dim {key_dim} and head_dim {head_dim} (not whole blocks of {LANES})"
            ));
        }
        if k.channels() != q.channels() || dst.channels() != v.channels() {
            return unsupported(format!(
                "attention with {} query, {} key, {} value and {} output channels",
                q.channels(),
                k.channels(),
                v.channels(),
                dst.channels()
            ));
        }
        let (h, w) = (q.height(), q.width());
        if [k, v, dst]
            .iter()
            .any(|a| (a.height(), a.width()) != (h, w))
            || h * w == 0
        {
            return unsupported("attention over maps of different sizes".into());
        }
        if [q, k, v, dst].iter().any(|a| a.layout.pixel != LANES) {
            return unsupported("attention over the packed image".into());
        }
        for read in [&q, &k, &v] {
            disjoint(read, &dst)?;
        }
        let attn = Attention::new(heads, key_dim, head_dim, scale, h, w);
        self.ops.push(Op::Attention { attn, q, k, v, dst });
        Ok(())
    }

    /// Forces every kernel to `isa` (lowered to what this CPU runs): tests compare the
    /// portable and AVX2 builds with the AVX-512 one.
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = isa.supported();
        for op in &mut self.ops {
            match op {
                Op::Conv { conv, .. } => *conv = conv.clone().with_isa(isa),
                Op::Depthwise { conv, .. } => *conv = conv.clone().with_isa(isa),
                Op::DepthwisePointwise { conv, .. } => *conv = conv.clone().with_isa(isa),
                _ => {}
            }
        }
    }

    /// Zeroed buffers for every activation, each its own (tests read any of them).
    pub fn workspace(&self) -> Workspace {
        let all: Vec<usize> = (0..self.buffers.len()).collect();
        self.workspace_keeping_buffers(&all)
    }

    /// Buffers for a run after which only `keep` (and the inputs) are read: activations
    /// whose lifetimes do not overlap share memory, so the working set stays small and a
    /// buffer written now was usually touched a few ops ago (still in cache), instead of
    /// every op writing to memory no op has touched since the previous frame.
    pub fn workspace_keeping(&self, keep: &[Act]) -> Workspace {
        let kept: Vec<usize> = keep.iter().map(|a| a.buffer).collect();
        self.workspace_keeping_buffers(&kept)
    }

    fn workspace_keeping_buffers(&self, keep: &[usize]) -> Workspace {
        let n = self.buffers.len();
        let (mut first, mut last) = (vec![usize::MAX; n], vec![0; n]);
        let mut padded_read = vec![false; n];
        for (i, op) in self.ops.iter().enumerate() {
            let (reads, dst) = op.operands();
            for act in reads.iter().flatten().chain([&dst]) {
                first[act.buffer] = first[act.buffer].min(i);
                last[act.buffer] = last[act.buffer].max(i);
            }
            if op.reads_border() {
                padded_read[reads[0].expect("a convolution has a source").buffer] = true;
            }
        }
        // Exclusive: the kept buffers and the inputs (written before the run), and any
        // buffer no op touches.
        let exclusive =
            |b: usize| keep.contains(&b) || self.inputs.contains(&b) || first[b] == usize::MAX;
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by_key(|&b| first[b]);
        // Buffers no op touches and nobody reads (a fused pair's intermediate) take no
        // memory: they all point at one empty slot.
        let untouched =
            |b: usize| first[b] == usize::MAX && !keep.contains(&b) && !self.inputs.contains(&b);
        // Per slot: floats, the last op of its current occupant, its occupants.
        let mut slots: Vec<(usize, usize, Vec<usize>)> = Vec::new();
        let mut slot_of = vec![0; n];
        let mut empty_slot = None;
        for b in order {
            if untouched(b) {
                slot_of[b] = *empty_slot.get_or_insert_with(|| {
                    slots.push((0, usize::MAX, vec![b]));
                    slots.len() - 1
                });
                continue;
            }
            let need = self.buffers[b].len();
            let free = |slot: &(usize, usize, Vec<usize>)| !slot.2.is_empty() && slot.1 < first[b];
            let chosen = if exclusive(b) {
                None
            } else {
                // The smallest free slot that fits, else the largest free one (grown).
                let fits = (0..slots.len())
                    .filter(|&s| free(&slots[s]) && !exclusive(slots[s].2[0]) && slots[s].0 >= need)
                    .min_by_key(|&s| slots[s].0);
                fits.or_else(|| {
                    (0..slots.len())
                        .filter(|&s| free(&slots[s]) && !exclusive(slots[s].2[0]))
                        .max_by_key(|&s| slots[s].0)
                })
            };
            let s = chosen.unwrap_or_else(|| {
                slots.push((0, 0, Vec::new()));
                slots.len() - 1
            });
            slots[s].0 = slots[s].0.max(need);
            slots[s].1 = if exclusive(b) { usize::MAX } else { last[b] };
            slots[s].2.push(b);
            slot_of[b] = s;
        }
        // In a shared slot, the other occupants overwrite a buffer's zero border: buffers
        // read with padding get it cleared before their first op, every run.
        let mut zero_before = vec![Vec::new(); self.ops.len()];
        for (_, _, occupants) in slots.iter().filter(|s| s.2.len() > 1) {
            for &b in occupants.iter().filter(|&&b| padded_read[b]) {
                zero_before[first[b]].push(b);
            }
        }
        Workspace {
            slots: slots
                .iter()
                .map(|&(floats, ..)| vec![Lanes::default(); floats.div_ceil(LANES)])
                .collect(),
            bases: Vec::with_capacity(slot_of.len()),
            slot_of,
            layouts: self.buffers.clone(),
            zero_before,
            quantized: vec![0; self.scratch_bytes().div_ceil(4)],
        }
    }

    /// The most bytes of quantized input one op needs (int8 convolutions).
    fn scratch_bytes(&self) -> usize {
        self.ops
            .iter()
            .map(|op| match op {
                Op::Conv { conv, src, .. } => conv.scratch_bytes(&src.layout),
                _ => 0,
            })
            .max()
            .unwrap_or(0)
    }

    /// The dense convolutions planned so far that qualify for reduced precision (the
    /// slots of [`Arithmetic::Int8`]'s ranges).
    pub fn quantizable(&self) -> usize {
        self.quantizable
    }

    /// The graph with a workspace that keeps `outputs`, ready to run.
    pub fn prepare(self, input: Act, outputs: Vec<Act>) -> Prepared {
        let workspace = self.workspace_keeping(&outputs);
        Prepared {
            graph: self,
            workspace,
            input,
            outputs,
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
        assert_eq!(
            ws.layouts, self.buffers,
            "a workspace made for another graph"
        );
        ws.refresh_bases();
        let scratch = ws.quantized.as_mut_ptr().cast::<u8>();
        let bases = &ws.bases;
        let view = |act: &Act| View {
            // SAFETY: the block range lies inside the buffer allocated for its layout.
            ptr: unsafe {
                bases[act.buffer]
                    .ptr()
                    .add(act.first_block * act.layout.block_stride())
            },
            layout: act.layout,
        };
        let isa = self.isa;
        for (i, op) in self.ops.iter().enumerate() {
            for &b in &ws.zero_before[i] {
                // SAFETY: the buffer's slot holds its layout; no op runs meanwhile.
                unsafe { zero_border(bases[b].ptr(), &ws.layouts[b]) };
            }
            // SAFETY: the planner gave every op a fresh or disjoint destination range; ops
            // run one after another, each writing only its `dst`.
            unsafe {
                match op {
                    Op::Conv {
                        conv,
                        src,
                        dst,
                        residual,
                    } => conv.run(view(src), view(dst), residual.as_ref().map(view), scratch),
                    Op::Depthwise { conv, src, dst } => conv.run(view(src), view(dst)),
                    Op::DepthwisePointwise {
                        conv,
                        src,
                        dst,
                        residual,
                    } => conv.run(view(src), view(dst), residual.as_ref().map(view)),
                    Op::MaxPool { kernel, src, dst } => {
                        lanewise::max_pool_same(isa, view(src), view(dst), *kernel)
                    }
                    Op::Upsample2 { src, dst } => lanewise::upsample2(view(src), view(dst)),
                    Op::Copy { src, dst } => lanewise::copy_blocks(view(src), view(dst)),
                    Op::Attention { attn, q, k, v, dst } => {
                        attn.run(isa, view(q), view(k), view(v), view(dst))
                    }
                }
            }
            after(op);
        }
    }
}

impl Op {
    /// What the op reads (the source first: (source, residual), or q, k, v) and its
    /// destination (which attention reads too).
    fn operands(&self) -> ([Option<Act>; 3], Act) {
        match *self {
            Op::Conv {
                src, dst, residual, ..
            }
            | Op::DepthwisePointwise {
                src, dst, residual, ..
            } => ([Some(src), residual, None], dst),
            Op::Depthwise { src, dst, .. }
            | Op::MaxPool { src, dst, .. }
            | Op::Upsample2 { src, dst }
            | Op::Copy { src, dst } => ([Some(src), None, None], dst),
            Op::Attention { q, k, v, dst, .. } => ([Some(q), Some(k), Some(v)], dst),
        }
    }

    /// Whether the op reads its source's zero border (a padded convolution).
    fn reads_border(&self) -> bool {
        match self {
            Op::Conv { conv, .. } => conv.spec().padding > 0,
            Op::Depthwise { conv, .. } => conv.spec().padding > 0,
            Op::DepthwisePointwise { conv, .. } => conv.specs().0.padding > 0,
            _ => false,
        }
    }

    fn flops(&self) -> f64 {
        match self {
            Op::Conv { conv, src, .. } => conv.spec().flops(src.height(), src.width()),
            Op::Depthwise { conv, src, .. } => conv.spec().flops(src.height(), src.width()),
            Op::DepthwisePointwise { conv, src, dst, .. } => {
                let (dw, pw) = conv.specs();
                dw.flops(src.height(), src.width()) + pw.flops(dst.height(), dst.width())
            }
            Op::Attention { attn, .. } => attn.flops(),
            _ => 0.0,
        }
    }

    /// e.g. `conv3x3/2 32→64 @160x160`, `conv3x3/1 64→64 @40x40 +res winograd`.
    fn describe(&self) -> String {
        let at = |a: &Act| format!("@{}x{}", a.height(), a.width());
        match self {
            Op::Conv {
                conv,
                src,
                residual,
                ..
            } => {
                let s = conv.spec();
                let plus = if residual.is_some() { " +res" } else { "" };
                format!(
                    "conv{0}x{0}/{1} {2}→{3} {4}{plus}{5}",
                    s.kernel,
                    s.stride,
                    s.c_in,
                    s.c_out,
                    at(src),
                    conv.kernel_note()
                )
            }
            Op::Depthwise { conv, src, .. } => {
                let s = conv.spec();
                format!("dw{0}x{0}/{1} {2} {3}", s.kernel, s.stride, s.c_in, at(src))
            }
            Op::DepthwisePointwise {
                conv,
                src,
                residual,
                ..
            } => {
                let (dw, pw) = conv.specs();
                let plus = if residual.is_some() { " +res" } else { "" };
                format!(
                    "dw{0}x{0}/{1}+pw {2}→{3} {4}{plus}",
                    dw.kernel,
                    dw.stride,
                    pw.c_in,
                    pw.c_out,
                    at(src)
                )
            }
            Op::MaxPool { kernel, src, .. } => {
                format!("maxpool{kernel} {} {}", src.channels(), at(src))
            }
            Op::Upsample2 { src, .. } => format!("upsample2 {} {}", src.channels(), at(src)),
            Op::Copy { src, .. } => format!("copy {} {}", src.channels(), at(src)),
            Op::Attention { attn, q, .. } => format!(
                "attention {}x({}+{}) {}",
                attn.heads(),
                attn.key_dim(),
                attn.head_dim(),
                at(q)
            ),
        }
    }
}

/// The memory of one [`Graph`]'s buffers: slots, each holding one buffer at a time.
#[derive(Debug)]
pub struct Workspace {
    slots: Vec<Vec<Lanes>>,
    /// The slot of each buffer.
    slot_of: Vec<usize>,
    layouts: Vec<Layout>,
    /// Per op, the buffers whose border to clear before it (shared slots).
    zero_before: Vec<Vec<usize>>,
    /// Base pointer of every buffer, taken afresh at the start of each run (into this same
    /// vector: no allocation per frame).
    bases: Vec<SharedMut>,
    /// The int8 convolutions' quantized input (one at a time), in 32-bit words.
    quantized: Vec<u32>,
}

impl Workspace {
    /// Takes the base pointer of every buffer for this run.
    fn refresh_bases(&mut self) {
        let Workspace {
            slots,
            slot_of,
            bases,
            ..
        } = self;
        bases.clear();
        bases.extend(
            slot_of
                .iter()
                .map(|&s| SharedMut(slots[s].as_mut_ptr().cast::<f32>())),
        );
    }

    /// The floats of `act`'s buffer from its first block on, with its layout. Only the
    /// inputs and the buffers the workspace was made to keep hold their values after a run.
    pub fn read(&self, act: &Act) -> (&[f32], Layout) {
        let floats = as_floats(&self.slots[self.slot_of[act.buffer]]);
        (
            &floats[act.first_block * act.layout.block_stride()..][..act.layout.len()],
            act.layout,
        )
    }

    /// As [`Workspace::read`], writable (for the input).
    pub fn write(&mut self, act: &Act) -> (&mut [f32], Layout) {
        let lanes = &mut self.slots[self.slot_of[act.buffer]];
        // SAFETY: `Lanes` is `repr(C)` of 16 f32 with no padding beyond its alignment,
        // which is a multiple of its size.
        let floats = unsafe {
            std::slice::from_raw_parts_mut(lanes.as_mut_ptr().cast::<f32>(), lanes.len() * LANES)
        };
        (
            &mut floats[act.first_block * act.layout.block_stride()..][..act.layout.len()],
            act.layout,
        )
    }
}

/// Clears the one-pixel border of every block of a buffer.
///
/// # Safety
/// `base` holds a buffer of `layout`.
unsafe fn zero_border(base: *mut f32, layout: &Layout) {
    let (row, pixel) = (layout.row_stride(), layout.pixel);
    let (h, w) = (layout.height, layout.width);
    for block in 0..layout.blocks() {
        let b = base.add(block * layout.block_stride());
        std::ptr::write_bytes(b, 0, row);
        std::ptr::write_bytes(b.add((h + 1) * row), 0, row);
        for y in 1..=h {
            std::ptr::write_bytes(b.add(y * row), 0, pixel);
            std::ptr::write_bytes(b.add(y * row + (w + 1) * pixel), 0, pixel);
        }
    }
}

fn as_floats(lanes: &[Lanes]) -> &[f32] {
    // SAFETY: see `Workspace::write`.
    unsafe { std::slice::from_raw_parts(lanes.as_ptr().cast::<f32>(), lanes.len() * LANES) }
}

/// Writes `[channels, height, width]` (NCHW, one image) into any activation, channel by
/// channel (for tests and tools; the input path uses [`write_image`]).
pub fn write_nchw(ws: &mut Workspace, act: &Act, nchw: &[f32]) {
    let (floats, layout) = ws.write(act);
    let (h, w) = (layout.height, layout.width);
    for c in 0..layout.channels {
        for y in 0..h {
            for x in 0..w {
                floats[layout.channel_offset(c, y, x)] = nchw[(c * h + y) * w + x];
            }
        }
    }
}

/// Reads any activation back as `[channels, height, width]` (NCHW).
pub fn read_nchw(ws: &Workspace, act: &Act) -> Vec<f32> {
    let (floats, layout) = ws.read(act);
    let (h, w) = (layout.height, layout.width);
    let mut out = Vec::with_capacity(layout.channels * h * w);
    for c in 0..layout.channels {
        for y in 0..h {
            for x in 0..w {
                out.push(floats[layout.channel_offset(c, y, x)]);
            }
        }
    }
    out
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
        let source = |ch: usize| &nchw[ch * plane + y * w..][..w];
        if c == 3 {
            // Three whole-row slices: no bounds checks in the interleave.
            let (r, g, b) = (source(0), source(1), source(2));
            for (x, pixel) in row.chunks_exact_mut(3).enumerate() {
                pixel.copy_from_slice(&[r[x], g[x], b[x]]);
            }
        } else {
            for ch in 0..c {
                for (v, &s) in row[ch..].iter_mut().step_by(c).zip(source(ch)) {
                    *v = s;
                }
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
        // Part `p` = (row parity, column parity) of Focus; source rows by (channel, parity).
        let source = |ch: usize, dy: usize| &nchw[(ch * full_h + 2 * y + dy) * full_w..][..full_w];
        if c == 3 {
            // One output pixel at a time from six whole-row slices: contiguous writes, no
            // bounds checks (the general loop below strides through the row 12 times).
            let even = [source(0, 0), source(1, 0), source(2, 0)];
            let odd = [source(0, 1), source(1, 1), source(2, 1)];
            for (x, pixel) in row.chunks_exact_mut(12).enumerate() {
                let (l, r) = (2 * x, 2 * x + 1);
                pixel.copy_from_slice(&[
                    even[0][l], even[1][l], even[2][l], odd[0][l], odd[1][l], odd[2][l],
                    even[0][r], even[1][r], even[2][r], odd[0][r], odd[1][r], odd[2][r],
                ]);
            }
            return;
        }
        for (part, (dy, dx)) in [(0, 0), (1, 0), (0, 1), (1, 1)].into_iter().enumerate() {
            for ch in 0..c {
                let src = source(ch, dy);
                let lane = part * c + ch;
                for (v, &s) in row[lane..]
                    .iter_mut()
                    .step_by(4 * c)
                    .zip(src[dx..].iter().step_by(2))
                {
                    *v = s;
                }
            }
        }
    });
}

/// Decodes a detection head into `out`, `columns` floats per anchor, anchors level after
/// level and row-major within a level (both model families' output order). `outputs`
/// holds `per_level` activations per level, the first of each giving the level's grid;
/// `decode(level, y, anchor_rows)` fills the output rows of grid row `y`'s anchors. Grid
/// rows run in parallel.
pub fn decode_levels(
    outputs: &[Act],
    per_level: usize,
    columns: usize,
    out: &mut Vec<f32>,
    decode: impl Fn(usize, usize, &mut [f32]) + Sync + Send,
) {
    let grids = || outputs.iter().step_by(per_level);
    let anchors: usize = grids().map(|a| a.height() * a.width()).sum();
    out.clear();
    out.resize(anchors * columns, 0.0);
    let rows = grids().map(Act::height).sum();
    let dst = SharedMut(out.as_mut_ptr());
    for_each_index(rows, |item| {
        let (mut y, mut first_anchor) = (item, 0);
        for (level, grid) in grids().enumerate() {
            if y < grid.height() {
                let start = (first_anchor + y * grid.width()) * columns;
                // SAFETY: item `item` writes only the output rows of its own grid row's
                // anchors, inside `out`.
                let anchor_rows = unsafe {
                    std::slice::from_raw_parts_mut(dst.ptr().add(start), grid.width() * columns)
                };
                decode(level, y, anchor_rows);
                return;
            }
            y -= grid.height();
            first_anchor += grid.height() * grid.width();
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
/// rayon pool (a concurrent call is told to use candle's ops).
#[derive(Debug, Clone, Default)]
pub struct PlanCache {
    slot: Arc<Mutex<Option<PlanForSize>>>,
    /// The arithmetic of the plans made from now on.
    arithmetic: Arc<Mutex<Arithmetic>>,
}

/// An input size (height, width) and its plan, `None` when the network is unsupported.
type PlanForSize = ((usize, usize), Option<Prepared>);

impl PlanCache {
    /// The arithmetic plans are made in ([`Graph::set_arithmetic`]).
    pub fn arithmetic(&self) -> Arithmetic {
        match self.arithmetic.lock() {
            Ok(a) => a.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    /// Plans from now on in `arithmetic`; a plan already made is dropped.
    pub fn set_arithmetic(&self, arithmetic: Arithmetic) {
        match self.arithmetic.lock() {
            Ok(mut a) => *a = arithmetic,
            Err(e) => *e.into_inner() = arithmetic,
        }
        let mut slot = match self.slot.lock() {
            Ok(slot) => slot,
            Err(e) => e.into_inner(),
        };
        *slot = None;
    }

    /// Runs `f` on the plan for an input of `size` (height, width), planning it with
    /// `plan` when the size changed; `None` when the network is not supported or the plan
    /// is busy (the caller falls back to candle).
    pub fn with<R: Send>(
        &self,
        size: (usize, usize),
        plan: impl FnOnce() -> Result<Prepared, PlanError>,
        f: impl FnOnce(&mut Prepared) -> R + Send,
    ) -> Option<R> {
        // A second caller while a run is in progress (a library user's parallel loop over
        // images, which may even be on this thread, inside the pool) gets candle's ops
        // rather than waiting on the lock.
        let mut slot = match self.slot.try_lock() {
            Ok(slot) => slot,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
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

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    use super::super::testutil::{candle_conv, max_diff, noise, spec};
    use super::*;

    fn tensor(data: &[f32], dims: &[usize]) -> Tensor {
        Tensor::from_slice(data, dims, &Device::Cpu).unwrap()
    }

    /// One convolution through the executor, every ISA, against candle. `packed` reads a
    /// packed image (the first layers), else a blocked activation.
    fn check_conv(s: ConvSpec, (h, w): (usize, usize), packed: bool, residual: bool) {
        let k = s.kernel;
        let input = noise(s.c_in * h * w, (h * 31 + w) as u64);
        let weight = noise(s.c_out * s.c_in / s.groups * k * k, 7);
        let bias = noise(s.c_out, 9);
        let mut g = Graph::new();
        let src = if packed {
            g.input(s.c_in, h, w)
        } else {
            g.alloc(s.c_in, h, w)
        };
        let (oh, ow) = s.output_size(h, w).unwrap();
        let res_data = noise(s.c_out * oh * ow, 11);
        let res = residual.then(|| g.alloc(s.c_out, oh, ow));
        let out = g.conv(s, &weight, &bias, src, None, res).unwrap();
        let (want, _) = candle_conv(
            &s,
            &input,
            (1, h, w),
            &weight,
            &bias,
            residual.then_some(&res_data[..]),
        );
        for isa in Isa::all_supported() {
            g.set_isa(isa);
            let mut ws = g.workspace();
            write_nchw(&mut ws, &src, &input);
            if let Some(r) = &res {
                write_nchw(&mut ws, r, &res_data);
            }
            g.run(&mut ws);
            let got = read_nchw(&ws, &out);
            let err = max_diff(&got, &want);
            assert!(
                err < 1e-4,
                "{isa:?} {s:?} {h}x{w} packed={packed}: max error {err}"
            );
        }
    }

    #[test]
    fn pointwise_convolutions_match_candle() {
        check_conv(spec(16, 32, 1, 1, 1), (7, 13), false, false);
        check_conv(spec(64, 48, 1, 1, 1), (5, 29), false, true);
        // Partial blocks on both sides: 20 inputs, 85 outputs.
        check_conv(spec(20, 85, 1, 1, 1), (3, 11), false, false);
    }

    #[test]
    fn three_by_three_convolutions_match_candle() {
        // Widths 1..=25 cover every tile width of the micro-kernels.
        for w in [1, 5, 12, 13, 25] {
            check_conv(spec(32, 16, 3, 1, 1), (4, w), false, false);
        }
        check_conv(spec(16, 48, 3, 2, 1), (9, 17), false, false);
        check_conv(spec(16, 16, 3, 1, 1), (6, 14), false, true);
    }

    /// Convolutions planned in `arithmetic` (given the input) against candle's f32 within
    /// the reduced precision's error (`1e-2·√depth`), each op's kernel named `kernel`, and
    /// the hardware kernels against the scalar reference where the CPU has them (`hardware`;
    /// the same sums, only SiLU's two implementations differ).
    fn check_reduced(
        kernel: &str,
        hardware: bool,
        cases: &[(ConvSpec, (usize, usize), bool)],
        arithmetic: impl Fn(&[f32]) -> Arithmetic,
    ) {
        for &(s, (h, w), residual) in cases {
            let input = noise(s.c_in * h * w, 21);
            let weight = noise(s.c_out * s.c_in * s.kernel * s.kernel, 22);
            let bias = noise(s.c_out, 23);
            let mut g = Graph::new();
            g.set_arithmetic(arithmetic(&input));
            let src = g.alloc(s.c_in, h, w);
            let (oh, ow) = s.output_size(h, w).unwrap();
            let res_data = noise(s.c_out * oh * ow, 24);
            let res = residual.then(|| g.alloc(s.c_out, oh, ow));
            let out = g.conv(s, &weight, &bias, src, None, res).unwrap();
            let op = g.ops[0].describe();
            assert!(op.contains(kernel), "{op}");
            let (want, _) = candle_conv(
                &s,
                &input,
                (1, h, w),
                &weight,
                &bias,
                residual.then_some(&res_data[..]),
            );
            let mut results = Vec::new();
            for isa in [Isa::Portable, Isa::detect()] {
                g.set_isa(isa);
                let mut ws = g.workspace();
                write_nchw(&mut ws, &src, &input);
                if let Some(r) = &res {
                    write_nchw(&mut ws, r, &res_data);
                }
                g.run(&mut ws);
                results.push(read_nchw(&ws, &out));
            }
            let depth = (s.c_in * s.kernel * s.kernel) as f32;
            let err = max_diff(&results[0], &want);
            eprintln!("{kernel} {s:?} {h}x{w}: max |Δ| {err:.2e} vs f32 (depth {depth})");
            assert!(err < 1e-2 * depth.sqrt(), "{s:?}: {err}");
            if hardware && Isa::detect() == Isa::Avx512 {
                let hw = max_diff(&results[1], &results[0]);
                assert!(hw < 1e-4, "{s:?}: {kernel} hardware vs reference {hw}");
            }
        }
    }

    /// bf16 convolutions (direct 1×1 and strided 3×3, Winograd 3×3) against candle's f32
    /// within bf16's rounding, and the AVX512-BF16 kernels against the scalar reference of
    /// the same arithmetic (where the CPU has them; the reference runs alone elsewhere).
    #[test]
    fn bf16_convolutions_match_candle_within_bf16_rounding() {
        let hardware = super::super::bf16::supported();
        if !hardware {
            eprintln!("AVX512-BF16 missing: only the scalar bf16 reference is checked");
        }
        let cases = [
            (spec(32, 48, 1, 1, 1), (5, 13), true),
            (spec(16, 32, 3, 2, 1), (9, 14), false),
            (spec(32, 16, 3, 1, 1), (7, 13), true),
            (spec(48, 85, 3, 1, 1), (4, 5), false),
            (spec(20, 85, 1, 1, 1), (3, 11), false),
        ];
        check_reduced("bf16", hardware, &cases, |_| Arithmetic::Bf16);
    }

    /// int8 convolutions (1×1, whose rows are quantized in the row loop, and 3×3 at strides
    /// 1 and 2, quantized in one pass first) against candle's f32 within the quantization's
    /// error, and the VNNI kernels against the scalar reference (where the CPU has them).
    #[test]
    fn int8_convolutions_match_candle_within_quantization() {
        let hardware = super::super::int8::supported();
        if !hardware {
            eprintln!("AVX512-VNNI missing: only the scalar int8 reference is checked");
        }
        let cases = [
            (spec(32, 48, 1, 1, 1), (5, 13), true),
            (spec(20, 85, 1, 1, 1), (3, 11), false),
            (spec(16, 32, 3, 2, 1), (9, 14), false),
            (spec(32, 16, 3, 1, 1), (7, 13), true),
        ];
        check_reduced("int8", hardware, &cases, |input| {
            let range = ActRange {
                lo: input.iter().copied().fold(0.0, f32::min),
                hi: input.iter().copied().fold(0.0, f32::max),
            };
            Arithmetic::Int8(Arc::new(vec![range]))
        });
    }

    #[test]
    fn first_layers_read_the_packed_image() {
        check_conv(spec(3, 16, 3, 2, 1), (10, 26), true, false);
        check_conv(spec(12, 16, 3, 1, 1), (7, 15), true, false);
        check_conv(spec(3, 40, 3, 1, 1), (5, 9), true, false);
    }

    #[test]
    fn depthwise_convolutions_match_candle() {
        check_conv(spec(32, 32, 3, 1, 32), (9, 21), false, false);
        check_conv(spec(16, 16, 3, 2, 16), (11, 19), false, false);
        check_conv(spec(24, 24, 3, 1, 24), (4, 3), false, false);
        let mut plain = spec(16, 16, 3, 1, 16);
        plain.silu = false;
        check_conv(plain, (5, 10), false, false);
    }

    /// A depthwise + pointwise pair fused into one op against candle's two convolutions.
    fn check_depthwise_pointwise(
        c: usize,
        c_out: usize,
        stride: usize,
        (h, w): (usize, usize),
        residual: bool,
    ) {
        let dw = spec(c, c, 3, stride, c);
        let pw = spec(c, c_out, 1, 1, 1);
        let input = noise(c * h * w, 5);
        let (dw_w, dw_b) = (noise(c * 9, 6), noise(c, 7));
        let (pw_w, pw_b) = (noise(c_out * c, 8), noise(c_out, 9));
        let mut g = Graph::new();
        let src = g.alloc(c, h, w);
        let (oh, ow) = dw.output_size(h, w).unwrap();
        let res_data = noise(c_out * oh * ow, 10);
        let res = residual.then(|| g.alloc(c_out, oh, ow));
        let params = |spec, weight, bias| ConvParams { spec, weight, bias };
        let out = g
            .depthwise_pointwise(
                params(dw, &dw_w, &dw_b),
                params(pw, &pw_w, &pw_b),
                src,
                None,
                res,
            )
            .unwrap();
        assert_eq!(g.ops.len(), 1, "one fused op");
        let (mid, _) = candle_conv(&dw, &input, (1, h, w), &dw_w, &dw_b, None);
        let (want, _) = candle_conv(
            &pw,
            &mid,
            (1, oh, ow),
            &pw_w,
            &pw_b,
            residual.then_some(&res_data[..]),
        );
        for isa in Isa::all_supported() {
            g.set_isa(isa);
            let mut ws = g.workspace_keeping(&[out]);
            write_nchw(&mut ws, &src, &input);
            if let Some(r) = &res {
                write_nchw(&mut ws, r, &res_data);
            }
            g.run(&mut ws);
            let err = max_diff(&read_nchw(&ws, &out), &want);
            assert!(
                err < 1e-4,
                "{isa:?} {c}→{c_out}/{stride} {h}x{w}: max error {err}"
            );
        }
    }

    #[test]
    fn fused_depthwise_pointwise_matches_candle() {
        check_depthwise_pointwise(32, 48, 1, (6, 13), false);
        check_depthwise_pointwise(16, 32, 2, (9, 14), false);
        check_depthwise_pointwise(64, 64, 1, (5, 7), true);
    }

    #[test]
    fn pool_upsample_and_concat_match_candle() {
        let (c, h, w) = (24, 6, 7);
        let data = noise(c * h * w, 3);
        let mut g = Graph::new();
        let src = g.alloc(c, h, w);
        let pooled = g.max_pool(5, src, None).unwrap();
        let up = g.upsample2(src, None).unwrap();
        let zeros = g.alloc(16, h, w);
        let cat = g.concat(&[zeros, src]).unwrap();
        for isa in Isa::all_supported() {
            g.set_isa(isa);
            let mut ws = g.workspace();
            write_nchw(&mut ws, &src, &data);
            g.run(&mut ws);
            let x = tensor(&data, &[1, c, h, w]);
            let want_pool = x
                .pad_with_same(2, 2, 2)
                .unwrap()
                .pad_with_same(3, 2, 2)
                .unwrap()
                .max_pool2d_with_stride(5, 1)
                .unwrap();
            let want_pool: Vec<f32> = want_pool.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(read_nchw(&ws, &pooled), want_pool, "{isa:?}");
            let want_up: Vec<f32> = x
                .upsample_nearest2d(2 * h, 2 * w)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(read_nchw(&ws, &up), want_up);
            let got_cat = read_nchw(&ws, &cat);
            assert!(got_cat[..16 * h * w].iter().all(|&v| v == 0.0));
            assert_eq!(got_cat[16 * h * w..], data[..]);
        }
    }

    #[test]
    fn narrowing_off_block_boundaries_is_unsupported() {
        let mut g = Graph::new();
        let a = g.alloc(40, 4, 4);
        assert_eq!(a.narrow(16, 24).unwrap().channels(), 24);
        assert!(matches!(a.narrow(8, 8), Err(PlanError::Unsupported(_))));
        assert!(matches!(a.narrow(0, 20), Err(PlanError::Unsupported(_))));
        assert!(matches!(a.narrow(32, 16), Err(PlanError::Unsupported(_))));
        // A 5×5 kernel needs a border of 2.
        let big = spec(40, 16, 5, 1, 1);
        let weight = vec![0.0; 40 * 16 * 25];
        let err = g.conv(big, &weight, &[0.0; 16], a, None, None).unwrap_err();
        assert!(matches!(err, PlanError::Unsupported(_)), "{err}");
        // A wrong destination is refused, not written out of bounds.
        let small = g.alloc(16, 2, 2);
        let one = spec(40, 16, 1, 1, 1);
        let err = g
            .conv(one, &vec![0.0; 40 * 16], &[0.0; 16], a, Some(small), None)
            .unwrap_err();
        assert!(matches!(err, PlanError::Unsupported(_)), "{err}");
    }

    #[test]
    fn overlapping_or_packed_operands_are_refused() {
        let mut g = Graph::new();
        let image = g.input(3, 4, 4);
        let a = g.alloc(32, 4, 4);
        let one = spec(32, 16, 1, 1, 1);
        let w = vec![0.0; 32 * 16];
        // Writing into the block it reads, or into the packed image.
        let err = g.conv(
            one,
            &w,
            &[0.0; 16],
            a,
            Some(a.narrow(16, 16).unwrap()),
            None,
        );
        assert!(matches!(err, Err(PlanError::Unsupported(_))));
        let three = spec(32, 3, 1, 1, 1);
        let err = g.conv(three, &vec![0.0; 96], &[0.0; 3], a, Some(image), None);
        assert!(matches!(err, Err(PlanError::Unsupported(_))));
        // Pixel-wise ops need 16-lane pixels on both sides.
        assert!(matches!(g.concat(&[image]), Err(PlanError::Unsupported(_))));
        assert!(matches!(g.concat(&[]), Err(PlanError::Unsupported(_))));
        assert!(matches!(
            g.max_pool(5, a, Some(a)),
            Err(PlanError::Unsupported(_))
        ));
    }

    /// The attention core in f64 on NCHW data: `prefill` plus, per head, the softmax of
    /// scaled query·key products weighting the values.
    #[allow(clippy::too_many_arguments)]
    fn attention_reference(
        q: &[f32],
        k: &[f32],
        v: &[f32],
        prefill: &[f32],
        heads: usize,
        (key_dim, head_dim): (usize, usize),
        n: usize,
        scale: f32,
    ) -> Vec<f32> {
        let mut out: Vec<f64> = prefill.iter().map(|&x| x as f64).collect();
        for h in 0..heads {
            for i in 0..n {
                let scores: Vec<f64> = (0..n)
                    .map(|j| {
                        let dot: f64 = (0..key_dim)
                            .map(|d| {
                                let c = h * key_dim + d;
                                q[c * n + i] as f64 * k[c * n + j] as f64
                            })
                            .sum();
                        dot * scale as f64
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let sum: f64 = e.iter().sum();
                for c in 0..head_dim {
                    let ch = h * head_dim + c;
                    let weighted: f64 = (0..n).map(|j| e[j] / sum * v[ch * n + j] as f64).sum();
                    out[ch * n + i] += weighted;
                }
            }
        }
        out.into_iter().map(|x| x as f32).collect()
    }

    /// Attention on written q, k, v and a prefilled dst, every ISA, against the reference.
    fn check_attention(heads: usize, key_dim: usize, head_dim: usize, (h, w): (usize, usize)) {
        let n = h * w;
        let seed = (heads * 1000 + h * 31 + w) as u64;
        // Queries ×3: peaked softmax rows as well as flat ones.
        let q: Vec<f32> = noise(heads * key_dim * n, seed)
            .iter()
            .map(|x| 3.0 * x)
            .collect();
        let k = noise(heads * key_dim * n, seed + 1);
        let v = noise(heads * head_dim * n, seed + 2);
        let prefill = noise(heads * head_dim * n, seed + 3);
        let scale = (key_dim as f32).powf(-0.5);
        let mut g = Graph::new();
        let (qa, ka) = (
            g.alloc(heads * key_dim, h, w),
            g.alloc(heads * key_dim, h, w),
        );
        let va = g.alloc(heads * head_dim, h, w);
        let dst = g.alloc(heads * head_dim, h, w);
        g.attention_add(qa, ka, va, heads, scale, dst).unwrap();
        let want = attention_reference(&q, &k, &v, &prefill, heads, (key_dim, head_dim), n, scale);
        for isa in Isa::all_supported() {
            g.set_isa(isa);
            let mut ws = g.workspace();
            for (act, data) in [(&qa, &q), (&ka, &k), (&va, &v), (&dst, &prefill)] {
                write_nchw(&mut ws, act, data);
            }
            g.run(&mut ws);
            let err = max_diff(&read_nchw(&ws, &dst), &want);
            assert!(
                err < 1e-5,
                "{isa:?} {heads}x({key_dim}+{head_dim}) {h}x{w}: max error {err}"
            );
        }
    }

    #[test]
    fn attention_matches_a_reference() {
        check_attention(2, 32, 64, (20, 20));
        check_attention(1, 16, 16, (3, 5));
        check_attention(4, 32, 64, (7, 9));
    }

    #[test]
    fn attention_over_odd_widths() {
        // 65 and 13 pixels: partial query tiles and key vectors; a single pixel.
        check_attention(2, 16, 32, (5, 13));
        check_attention(1, 32, 16, (1, 13));
        check_attention(3, 16, 16, (1, 1));
    }

    #[test]
    fn attention_describes_itself() {
        let mut g = Graph::new();
        let (q, k) = (g.alloc(64, 20, 20), g.alloc(64, 20, 20));
        let (v, dst) = (g.alloc(128, 20, 20), g.alloc(128, 20, 20));
        g.attention_add(q, k, v, 2, 32f32.powf(-0.5), dst).unwrap();
        let op = &g.ops[0];
        assert_eq!(op.describe(), "attention 2x(32+64) @20x20");
        assert_eq!(op.flops(), 2.0 * 2.0 * 400.0 * 400.0 * 96.0);
        assert!(!op.reads_border());
        assert_eq!(op.operands(), ([Some(q), Some(k), Some(v)], dst));
    }

    /// A C2PSA-like block in shared memory: q, k and v from their own 1×1 convolutions,
    /// dst from a depthwise conv of v, attention, then a 1×1 projection of dst. q must
    /// outlive the convolutions that write k and v, dst lives from its conv to the
    /// projection.
    #[test]
    fn attention_in_a_shared_workspace_matches_a_reference() {
        let (c, heads, key_dim, head_dim, h, w) = (32, 2, 16, 32, 6, 7);
        let n = h * w;
        let (cq, cv) = (heads * key_dim, heads * head_dim);
        let input = noise(c * n, 1);
        let conv1 = |c_out: usize, seed: u64| {
            (
                spec(c, c_out, 1, 1, 1),
                noise(c_out * c, seed),
                noise(c_out, seed + 1),
            )
        };
        let (q_conv, k_conv, v_conv) = (conv1(cq, 10), conv1(cq, 20), conv1(cv, 30));
        let mut pe = spec(cv, cv, 3, 1, cv);
        pe.silu = false;
        let (pe_w, pe_b) = (noise(cv * 9, 40), noise(cv, 41));
        let proj = spec(cv, 16, 1, 1, 1);
        let (proj_w, proj_b) = (noise(16 * cv, 50), noise(16, 51));
        let scale = (key_dim as f32).powf(-0.5);

        let mut g = Graph::new();
        let src = g.alloc(c, h, w);
        let [q, k, v] = [&q_conv, &k_conv, &v_conv]
            .map(|(s, wt, b)| g.conv(*s, wt, b, src, None, None).unwrap());
        let dst = g.conv(pe, &pe_w, &pe_b, v, None, None).unwrap();
        g.attention_add(q, k, v, heads, scale, dst).unwrap();
        let out = g.conv(proj, &proj_w, &proj_b, dst, None, None).unwrap();
        let prepared = g.prepare(src, vec![out]);
        assert!(
            prepared.workspace.slots.len() < prepared.graph.buffers.len(),
            "buffers share memory"
        );

        let run_conv = |(s, wt, b): &(ConvSpec, Vec<f32>, Vec<f32>), x: &[f32]| {
            candle_conv(s, x, (1, h, w), wt, b, None).0
        };
        let (qr, kr, vr) = (
            run_conv(&q_conv, &input),
            run_conv(&k_conv, &input),
            run_conv(&v_conv, &input),
        );
        let (pe_r, _) = candle_conv(&pe, &vr, (1, h, w), &pe_w, &pe_b, None);
        let attended =
            attention_reference(&qr, &kr, &vr, &pe_r, heads, (key_dim, head_dim), n, scale);
        let (want, _) = candle_conv(&proj, &attended, (1, h, w), &proj_w, &proj_b, None);
        let Prepared {
            graph,
            mut workspace,
            input: src,
            outputs,
        } = prepared;
        for _ in 0..2 {
            write_nchw(&mut workspace, &src, &input);
            graph.run(&mut workspace);
            let err = max_diff(&read_nchw(&workspace, &outputs[0]), &want);
            assert!(err < 1e-4, "max error {err}");
        }
    }

    #[test]
    fn unsupported_attention_is_refused() {
        let refused = |r: Result<(), PlanError>| matches!(r, Err(PlanError::Unsupported(_)));
        let mut g = Graph::new();
        let (q, k) = (g.alloc(32, 4, 4), g.alloc(32, 4, 4));
        let (v, dst) = (g.alloc(64, 4, 4), g.alloc(64, 4, 4));
        // key_dim 8 (4 heads over 32 channels), head_dim 8, heads not dividing.
        assert!(refused(g.attention_add(q, k, v, 4, 1.0, dst)));
        let v16 = g.alloc(32, 4, 4);
        let dst16 = g.alloc(32, 4, 4);
        assert!(refused(g.attention_add(q, k, v16, 4, 1.0, dst16)));
        assert!(refused(g.attention_add(q, k, v, 3, 1.0, dst)));
        assert!(refused(g.attention_add(q, k, v, 0, 1.0, dst)));
        // Mismatched sizes and channel counts.
        let small_v = g.alloc(64, 4, 3);
        assert!(refused(g.attention_add(q, k, small_v, 2, 1.0, dst)));
        let small_dst = g.alloc(64, 3, 4);
        assert!(refused(g.attention_add(q, k, v, 2, 1.0, small_dst)));
        let wide_k = g.alloc(64, 4, 4);
        assert!(refused(g.attention_add(q, wide_k, v, 2, 1.0, dst)));
        assert!(refused(g.attention_add(q, k, v, 2, 1.0, small_dst)));
        // The packed image, and a dst over what it reads.
        // (A packed image has at most 15 channels: never whole blocks of 16.)
        let image = g.input(3, 4, 4);
        assert!(refused(g.attention_add(image, k, v, 2, 1.0, dst)));
        let qkv = g.alloc(128, 4, 4);
        let (q2, k2) = (qkv.narrow(0, 32).unwrap(), qkv.narrow(32, 32).unwrap());
        let v2 = qkv.narrow(64, 64).unwrap();
        assert!(refused(g.attention_add(q2, k2, v2, 2, 1.0, v2)));
        assert!(refused(g.attention_add(
            q2,
            k2,
            v,
            2,
            1.0,
            qkv.narrow(32, 64).unwrap()
        )));
        assert!(g.ops.is_empty());
        // The same buffer, disjoint blocks: fine.
        g.attention_add(q2, k2, v, 2, 1.0, qkv.narrow(64, 64).unwrap())
            .unwrap();
    }

    /// `cargo test --release --lib attention_timing -- --ignored --nocapture`: median of 50
    /// runs of yolo11n's C2PSA attention at 640×640 (2 heads, 32 + 64, 20×20).
    #[test]
    #[ignore]
    fn attention_timing() {
        for (heads, key_dim, head_dim, h, w) in [
            (2, 32, 64, 20, 20),
            (4, 32, 64, 20, 20),
            (2, 32, 64, 40, 40),
        ] {
            let mut g = Graph::new();
            let (q, k) = (
                g.alloc(heads * key_dim, h, w),
                g.alloc(heads * key_dim, h, w),
            );
            let (v, dst) = (
                g.alloc(heads * head_dim, h, w),
                g.alloc(heads * head_dim, h, w),
            );
            g.attention_add(q, k, v, heads, 0.17, dst).unwrap();
            let mut ws = g.workspace();
            for act in [&q, &k, &v] {
                write_nchw(&mut ws, act, &noise(act.channels() * h * w, 3));
            }
            let mut times: Vec<f64> = (0..60)
                .map(|_| {
                    let start = std::time::Instant::now();
                    in_pool(|| g.run(&mut ws));
                    start.elapsed().as_secs_f64() * 1e3
                })
                .skip(10)
                .collect();
            times.sort_by(f64::total_cmp);
            let ms = times[times.len() / 2];
            let gflops = g.ops[0].flops() / ms / 1e6;
            println!(
                "attention {heads}x({key_dim}+{head_dim}) @{h}x{w}: {ms:.3} ms median, {gflops:.1} GFLOP/s, {} threads",
                rayon::current_num_threads()
            );
        }
    }

    #[test]
    #[should_panic(expected = "another graph")]
    fn a_workspace_of_another_graph_is_refused() {
        let mut small = Graph::new();
        small.alloc(16, 2, 2);
        let mut big = Graph::new();
        let a = big.alloc(16, 8, 8);
        big.max_pool(5, a, None).unwrap();
        let mut ws = small.workspace();
        big.run(&mut ws);
    }

    #[test]
    fn a_busy_plan_falls_back_instead_of_waiting() {
        let cache = PlanCache::default();
        let plan = || {
            let mut g = Graph::new();
            let input = g.input(3, 2, 2);
            let workspace = g.workspace();
            Ok(Prepared {
                graph: g,
                workspace,
                input,
                outputs: vec![],
            })
        };
        let nested = cache.with((2, 2), plan, |_| cache.with((2, 2), plan, |_| ()));
        assert_eq!(nested, Some(None));
    }

    #[test]
    fn space_to_depth_follows_the_focus_order() {
        // Three channels (the specialised path) and two (the general one).
        for c in [3, 2] {
            let (h, w) = (4, 6);
            let image: Vec<f32> = (0..c * h * w).map(|v| v as f32).collect();
            let mut g = Graph::new();
            let input = g.input(4 * c, h / 2, w / 2);
            let mut ws = g.workspace();
            write_space_to_depth(&mut ws, &input, &image);
            let got = read_nchw(&ws, &input);
            let want: Vec<f32> = tensor(&image, &[1, c, h / 2, 2, w / 2, 2])
                .permute((0, 5, 3, 1, 2, 4))
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(got, want, "{c} channels");
        }
    }

    #[test]
    fn the_image_is_written_pixel_interleaved() {
        let (c, h, w) = (3, 5, 7);
        let image: Vec<f32> = (0..c * h * w).map(|v| v as f32).collect();
        let mut g = Graph::new();
        let input = g.input(c, h, w);
        let mut ws = g.workspace();
        write_image(&mut ws, &input, &image);
        assert_eq!(read_nchw(&ws, &input), image);
        let (floats, layout) = ws.read(&input);
        assert_eq!(floats[layout.offset(0, 0, 1) + 2], image[2 * h * w + 1]);
        // The border stays zero.
        assert_eq!(
            floats[layout.offset(0, -1, -1)..layout.offset(0, 0, 0)]
                .iter()
                .sum::<f32>(),
            0.0
        );
    }
}
