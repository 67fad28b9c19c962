//! The blocks of ultralytics' YOLO11 and YOLO26 (`ultralytics/nn/modules/block.py`):
//! `Bottleneck`, `C3k`, `C3k2` (with YOLO26's attention variant), `SPPF`, `C2PSA`,
//! `PSABlock` and its `Attention`. Loaded from ultralytics names with BatchNorm folded;
//! widths, depths and which inner block a `C3k2` holds are read from the tensors.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::detect::cpu::graph::{Act, Graph};
use crate::detect::family::PlanResult;
use crate::detect::layers::{full_name, get_with_rank, Bottleneck, ConvBlock, DepthwiseConv};

/// A 1×1 convolution with SiLU (ultralytics `Conv(c1, c2, 1)`).
fn pointwise(vb: VarBuilder, c_in: usize) -> Result<ConvBlock> {
    ConvBlock::load(vb, c_in, 1, 1, 1, true)
}

/// The hidden width of a block whose `{name}` conv must split in two halves.
fn halves(vb: &VarBuilder, name: &str, conv: &ConvBlock) -> Result<usize> {
    let hidden = conv.out_channels() / 2;
    if hidden == 0 || !conv.out_channels().is_multiple_of(2) {
        candle_core::bail!(
            "tensor `{}` has {} output channels, expected an even, non-zero count (the block splits it in two)",
            full_name(&vb.pp(name).pp("conv"), "weight"),
            conv.out_channels()
        );
    }
    Ok(hidden)
}

/// ultralytics `C3k`: `cv3(cat(m(cv1(x)), cv2(x)))` with a chain of bottlenecks `m`.
#[derive(Debug, Clone)]
pub struct C3k {
    cv1: ConvBlock,
    cv2: ConvBlock,
    cv3: ConvBlock,
    m: Vec<Bottleneck>,
}

impl C3k {
    fn load(vb: VarBuilder, c_in: usize) -> Result<Self> {
        let cv1 = pointwise(vb.pp("cv1"), c_in)?;
        let cv2 = pointwise(vb.pp("cv2"), c_in)?;
        let hidden = cv1.out_channels();
        let mut m = Vec::new();
        while vb.contains_tensor(&format!("m.{}.cv1.conv.weight", m.len())) {
            m.push(Bottleneck::load(
                vb.pp(format!("m.{}", m.len())),
                hidden,
                true,
            )?);
        }
        let chained = m.last().map_or(hidden, Bottleneck::out_channels);
        let cv3 = pointwise(vb.pp("cv3"), chained + cv2.out_channels())?;
        Ok(Self { cv1, cv2, cv3, m })
    }

    fn out_channels(&self) -> usize {
        self.cv3.out_channels()
    }

    /// Both halves of cv3's input are written in place (the chain's last bottleneck and
    /// cv2), so the concat is free.
    fn plan(&self, g: &mut Graph, xs: Act, dst: Option<Act>) -> PlanResult<Act> {
        let chained = self
            .m
            .last()
            .map_or(self.cv1.out_channels(), Bottleneck::out_channels);
        let side = self.cv2.out_channels();
        let cat = g.alloc(chained + side, xs.height(), xs.width());
        let first = cat.narrow(0, chained)?;
        let mut last = self
            .cv1
            .plan(g, xs, self.m.is_empty().then_some(first), None)?;
        for (k, block) in self.m.iter().enumerate() {
            let into = (k + 1 == self.m.len()).then_some(first);
            last = block.plan(g, last, into)?;
        }
        self.cv2
            .plan(g, xs, Some(cat.narrow(chained, side)?), None)?;
        self.cv3.plan(g, cat, dst, None)
    }
}

impl Module for C3k {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut ys = self.cv1.forward(xs)?;
        for block in &self.m {
            ys = block.forward(&ys)?;
        }
        self.cv3
            .forward(&Tensor::cat(&[&ys, &self.cv2.forward(xs)?], 1)?)
    }
}

/// What one of `C3k2`'s `m` holds: a `Bottleneck` (`c3k=False`), a `C3k` (`c3k=True`), or
/// YOLO26's `Sequential(Bottleneck, PSABlock)` (`attn=True`).
#[derive(Debug, Clone)]
enum Inner {
    Bottleneck(Bottleneck),
    C3k(C3k),
    Attention(Bottleneck, Box<PsaBlock>),
}

impl Inner {
    fn load(vb: VarBuilder, channels: usize) -> Result<Self> {
        if vb.contains_tensor("cv3.conv.weight") {
            Ok(Self::C3k(C3k::load(vb, channels)?))
        } else if vb.contains_tensor("1.attn.qkv.conv.weight") {
            let bottleneck = Bottleneck::load(vb.pp("0"), channels, true)?;
            let psa = PsaBlock::load(vb.pp("1"), bottleneck.out_channels())?;
            Ok(Self::Attention(bottleneck, Box::new(psa)))
        } else {
            Ok(Self::Bottleneck(Bottleneck::load(vb, channels, true)?))
        }
    }

    fn out_channels(&self) -> usize {
        match self {
            Self::Bottleneck(b) => b.out_channels(),
            Self::C3k(c) => c.out_channels(),
            Self::Attention(_, psa) => psa.channels(),
        }
    }

    fn plan(&self, g: &mut Graph, xs: Act, dst: Act) -> PlanResult<Act> {
        match self {
            Self::Bottleneck(b) => b.plan(g, xs, Some(dst)),
            Self::C3k(c) => c.plan(g, xs, Some(dst)),
            Self::Attention(b, psa) => {
                let mid = b.plan(g, xs, None)?;
                psa.plan(g, mid, Some(dst))
            }
        }
    }
}

impl Module for Inner {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Bottleneck(b) => b.forward(xs),
            Self::C3k(c) => c.forward(xs),
            Self::Attention(b, psa) => psa.forward(&b.forward(xs)?),
        }
    }
}

/// ultralytics `C3k2` (a `C2f` whose `m` are [`Inner`] blocks): cv1 → two halves → the
/// blocks chained on the second → concat of all → cv2.
#[derive(Debug, Clone)]
pub struct C3k2 {
    cv1: ConvBlock,
    cv2: ConvBlock,
    m: Vec<Inner>,
}

impl C3k2 {
    pub fn load(vb: VarBuilder, c_in: usize) -> Result<Self> {
        let cv1 = pointwise(vb.pp("cv1"), c_in)?;
        let hidden = halves(&vb, "cv1", &cv1)?;
        let mut m = Vec::new();
        while vb.contains_tensor(&format!("m.{}.cv1.conv.weight", m.len()))
            || vb.contains_tensor(&format!("m.{}.0.cv1.conv.weight", m.len()))
        {
            let block = Inner::load(vb.pp(format!("m.{}", m.len())), hidden)?;
            if block.out_channels() != hidden {
                candle_core::bail!(
                    "block `{}` gives {} channels, expected {hidden} (C3k2 chains its blocks)",
                    vb.pp(format!("m.{}", m.len())).prefix(),
                    block.out_channels()
                );
            }
            m.push(block);
        }
        let cv2 = pointwise(vb.pp("cv2"), (2 + m.len()) * hidden)?;
        Ok(Self { cv1, cv2, m })
    }

    pub fn out_channels(&self) -> usize {
        self.cv2.out_channels()
    }

    /// Blocks in `m`: read as the variant's depth.
    pub fn depth(&self) -> usize {
        self.m.len()
    }

    /// As `C2f`: cv1 writes both halves of the concat buffer, each block reads the part
    /// before it and writes the next.
    pub fn plan(&self, g: &mut Graph, xs: Act, dst: Option<Act>) -> PlanResult<Act> {
        let hidden = self.cv1.out_channels() / 2;
        let parts = g.alloc((2 + self.m.len()) * hidden, xs.height(), xs.width());
        self.cv1
            .plan(g, xs, Some(parts.narrow(0, 2 * hidden)?), None)?;
        let mut last = parts.narrow(hidden, hidden)?;
        for (k, block) in self.m.iter().enumerate() {
            last = block.plan(g, last, parts.narrow((2 + k) * hidden, hidden)?)?;
        }
        self.cv2.plan(g, parts, dst, None)
    }
}

impl Module for C3k2 {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let mut parts = self.cv1.forward(xs)?.chunk(2, 1)?;
        for block in &self.m {
            let last = parts.last().expect("chunk(2) gives two parts");
            parts.push(block.forward(last)?);
        }
        self.cv2.forward(&Tensor::cat(&parts, 1)?)
    }
}

/// ultralytics `Attention(dim, num_heads, attn_ratio=0.5)`: multi-head self-attention over
/// all pixels, plus a depthwise 3×3 positional conv `pe` of the values, then `proj`.
///
/// The qkv conv's output channels are re-ordered at load from ultralytics' per-head
/// `[q_h, k_h, v_h]` to `[q (all heads), k (all heads), v (all heads)]`: the values are
/// then one contiguous activation (what `pe` reads), and on the executor q, k and v are
/// three channel ranges of one buffer.
#[derive(Debug, Clone)]
pub struct Attention {
    qkv: ConvBlock,
    proj: ConvBlock,
    pe: DepthwiseConv,
    heads: usize,
    key_dim: usize,
    head_dim: usize,
    scale: f32,
}

impl Attention {
    /// `heads` is not in the tensors (ultralytics computes it from the width: `c // 64`
    /// in C2PSA, at least 1 in YOLO26's C3k2): given by the caller.
    fn load(vb: VarBuilder, dim: usize, heads: usize) -> Result<Self> {
        if dim == 0 || !dim.is_multiple_of(heads) {
            candle_core::bail!(
                "an attention of {dim} channels over {heads} heads (ultralytics takes width / 64 heads of 64 channels)",
            );
        }
        let head_dim = dim / heads;
        let key_dim = head_dim / 2;
        let qkv_vb = vb.pp("qkv").pp("conv");
        let weight = get_with_rank(&qkv_vb, "weight", 4)?;
        let bias = get_with_rank(&qkv_vb, "bias", 1)?;
        let per_head = 2 * key_dim + head_dim;
        if !dim.is_multiple_of(heads)
            || key_dim == 0
            || weight.dims() != [heads * per_head, dim, 1, 1]
            || bias.dims() != [heads * per_head]
        {
            candle_core::bail!(
                "tensor `{}` has shape {:?}, expected [{}, {dim}, 1, 1] ({heads} heads of {key_dim} + {key_dim} + {head_dim} channels)",
                full_name(&qkv_vb, "weight"),
                weight.dims(),
                heads * per_head
            );
        }
        let order: Vec<u32> = (0..3)
            .flat_map(|part| {
                (0..heads).flat_map(move |h| {
                    let (start, len) =
                        [(0, key_dim), (key_dim, key_dim), (2 * key_dim, head_dim)][part];
                    (0..len).map(move |i| (h * per_head + start + i) as u32)
                })
            })
            .collect();
        let order = Tensor::new(order, weight.device())?;
        let qkv = ConvBlock::from_tensors(
            weight.index_select(&order, 0)?,
            bias.index_select(&order, 0)?,
            1,
            1,
            false,
        )?;
        let proj = ConvBlock::load(vb.pp("proj"), dim, 1, 1, 1, false)?;
        if proj.out_channels() != dim {
            candle_core::bail!(
                "tensor `{}` has {} output channels, expected {dim} (the attention adds its input)",
                full_name(&vb.pp("proj").pp("conv"), "weight"),
                proj.out_channels()
            );
        }
        Ok(Self {
            qkv,
            proj,
            pe: DepthwiseConv::load(vb.pp("pe"), dim, 3, 1, false)?,
            heads,
            key_dim,
            head_dim,
            scale: (key_dim as f32).powf(-0.5),
        })
    }

    /// The attention's output before `proj`'s residual: `proj(attn(v) + pe(v))`, planned
    /// with `residual` added after proj.
    fn plan(&self, g: &mut Graph, xs: Act, residual: Act) -> PlanResult<Act> {
        let qk = self.heads * self.key_dim;
        let dim = self.heads * self.head_dim;
        let qkv = self.qkv.plan(g, xs, None, None)?;
        let (q, k, v) = (
            qkv.narrow(0, qk)?,
            qkv.narrow(qk, qk)?,
            qkv.narrow(2 * qk, dim)?,
        );
        let p = self.pe.cpu_params()?;
        let mixed = g.conv(p.spec, p.weight, p.bias, v, None, None)?;
        g.attention_add(q, k, v, self.heads, self.scale, mixed)?;
        self.proj.plan(g, mixed, None, Some(residual))
    }
}

impl Module for Attention {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let (b, _, h, w) = xs.dims4()?;
        let n = h * w;
        let (heads, kd, hd) = (self.heads, self.key_dim, self.head_dim);
        let qkv = self.qkv.forward(xs)?;
        let part = |start: usize, len: usize| qkv.narrow(1, start, len)?.contiguous();
        let v = part(2 * heads * kd, heads * hd)?;
        // The attention itself in f32 whatever the network's dtype: in f16 the q·k sums
        // and the softmax lose ~1% (layer 10 of a YOLO26n 25x further from the reference
        // than the layers before it); it is a few small matmuls.
        let f32 = |t: Tensor| t.to_dtype(DType::F32);
        let q = f32(part(0, heads * kd)?)?.reshape((b, heads, kd, n))?;
        let k = f32(part(heads * kd, heads * kd)?)?.reshape((b, heads, kd, n))?;
        let scores = (q.transpose(2, 3)?.contiguous()?.matmul(&k)? * f64::from(self.scale))?;
        let attn = candle_nn::ops::softmax_last_dim(&scores)?;
        let mixed = f32(v.clone())?
            .reshape((b, heads, hd, n))?
            .matmul(&attn.transpose(2, 3)?.contiguous()?)?
            .reshape((b, heads * hd, h, w))?
            .to_dtype(xs.dtype())?;
        self.proj.forward(&(mixed + self.pe.forward(&v)?)?)
    }
}

/// ultralytics `PSABlock(c, attn_ratio=0.5, num_heads, shortcut=True)`:
/// `x = x + attn(x); x = x + ffn(x)`, ffn = 1×1 (SiLU, 2c) → 1×1 (linear, c).
#[derive(Debug, Clone)]
pub struct PsaBlock {
    attn: Attention,
    ffn0: ConvBlock,
    ffn1: ConvBlock,
}

impl PsaBlock {
    pub fn load(vb: VarBuilder, channels: usize) -> Result<Self> {
        let attn = Attention::load(vb.pp("attn"), channels, (channels / 64).max(1))?;
        let ffn0 = pointwise(vb.pp("ffn.0"), channels)?;
        let ffn1 = ConvBlock::load(vb.pp("ffn.1"), ffn0.out_channels(), 1, 1, 1, false)?;
        if ffn1.out_channels() != channels {
            candle_core::bail!(
                "tensor `{}` has {} output channels, expected {channels} (PSABlock adds its input)",
                full_name(&vb.pp("ffn.1").pp("conv"), "weight"),
                ffn1.out_channels()
            );
        }
        Ok(Self { attn, ffn0, ffn1 })
    }

    pub fn channels(&self) -> usize {
        self.ffn1.out_channels()
    }

    /// Into `dst` (new when `None`; it may be `xs` itself: `xs` is last read by the
    /// attention's proj).
    pub fn plan(&self, g: &mut Graph, xs: Act, dst: Option<Act>) -> PlanResult<Act> {
        let attended = self.attn.plan(g, xs, xs)?;
        let hidden = self.ffn0.plan(g, attended, None, None)?;
        self.ffn1.plan(g, hidden, dst, Some(attended))
    }
}

impl Module for PsaBlock {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = (xs + self.attn.forward(xs)?)?;
        let ys = self.ffn1.forward(&self.ffn0.forward(&xs)?)?;
        xs + ys
    }
}

/// ultralytics `C2PSA(c1, c2, n, e=0.5)`: cv1 → halves (a, b) → b through n PSA blocks →
/// cv2(cat(a, b)).
#[derive(Debug, Clone)]
pub struct C2psa {
    cv1: ConvBlock,
    cv2: ConvBlock,
    m: Vec<PsaBlock>,
}

impl C2psa {
    pub fn load(vb: VarBuilder, c_in: usize) -> Result<Self> {
        let cv1 = pointwise(vb.pp("cv1"), c_in)?;
        let hidden = halves(&vb, "cv1", &cv1)?;
        let mut m = Vec::new();
        while vb.contains_tensor(&format!("m.{}.attn.qkv.conv.weight", m.len())) {
            m.push(PsaBlock::load(vb.pp(format!("m.{}", m.len())), hidden)?);
        }
        let cv2 = pointwise(vb.pp("cv2"), 2 * hidden)?;
        Ok(Self { cv1, cv2, m })
    }

    pub fn out_channels(&self) -> usize {
        self.cv2.out_channels()
    }

    /// cv1 writes both halves of cv2's input; the PSA chain reads the second half and its
    /// last block writes it back in place.
    pub fn plan(&self, g: &mut Graph, xs: Act, dst: Option<Act>) -> PlanResult<Act> {
        let hidden = self.cv1.out_channels() / 2;
        let cat = self.cv1.plan(g, xs, None, None)?;
        let second = cat.narrow(hidden, hidden)?;
        let mut last = second;
        for (k, block) in self.m.iter().enumerate() {
            let into = (k + 1 == self.m.len()).then_some(second);
            last = block.plan(g, last, into)?;
        }
        self.cv2.plan(g, cat, dst, None)
    }
}

impl Module for C2psa {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let halves = self.cv1.forward(xs)?.chunk(2, 1)?;
        let mut b = halves[1].clone();
        for block in &self.m {
            b = block.forward(&b)?;
        }
        self.cv2.forward(&Tensor::cat(&[&halves[0], &b], 1)?)
    }
}
