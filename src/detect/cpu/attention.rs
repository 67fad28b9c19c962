//! Multi-head self-attention over all pixels of a map (the core of ultralytics' `Attention`
//! in YOLO11/YOLO26's C2PSA, without its convolutions), on blocked activations
//! ([`super::blocked`]).
//!
//! Per head `h`, query pixel `i` and value channel `c`:
//! `dst[h·head_dim + c, i] += Σ_j softmax_j(scale · Σ_d q[h·key_dim + d, i] · k[h·key_dim + d, j]) · v[h·head_dim + c, j]`.
//!
//! A run has two parallel phases. First the keys are copied channel-major (`[channel][pixel]`,
//! pixels padded to a multiple of 16 with zeros) into a buffer the op allocates at plan time,
//! so the scores of a query are axpys along the pixels. Then every item takes one head and
//! [`QUERY_TILE`] query pixels: scores for the tile (each key vector loaded once for the whole
//! tile), a softmax per query (row max subtracted), and the weighted sum of the values read
//! straight from their blocked layout (16 channels per pixel, one vector), added into `dst`.
//!
//! The two products run as AVX-512 FMAs in registers (8 accumulators), the portable and
//! AVX2 builds as plain loops; the exponential is `exp_approx` (within 1e-6 relative of
//! f64 `exp` over the range kept, see the tests), flushed to 0 below −87.
//!
//! Scratch: the channel-major keys live in the op (allocated when planned, behind a mutex
//! that a run holds, so two runs of one graph never share it); each worker thread keeps its
//! `QUERY_TILE` score rows, the tile's query values and its probabilities in a thread-local
//! `Vec` that grows to the largest map it has seen and is reused afterwards, so runs do not
//! allocate once every worker has run the largest map.

use std::cell::Cell;
use std::sync::Mutex;

use super::blocked::{View, LANES};
use super::epilogue::exp_approx;
use super::isa::{isa_kernel, Isa};
use super::pool::{for_each_index, SharedMut};

/// Query pixels per parallel item: each key and value vector loaded serves this many queries.
pub const QUERY_TILE: usize = 8;

type Pixel = [f32; LANES];

/// Below this a score's `e^x` is flushed to zero (`exp_approx` clamps at −87; the true value
/// is under 1.7e-38 while the row's largest term is 1).
const EXP_FLOOR: f32 = -87.0;

/// The planned attention core: shapes, scale and the keys' channel-major scratch.
#[derive(Debug)]
pub struct Attention {
    heads: usize,
    key_dim: usize,
    head_dim: usize,
    scale: f32,
    /// Pixels of the map and that count rounded up to whole vectors.
    pixels: usize,
    padded: usize,
    /// `[heads·key_dim][padded]`, rewritten every run; the padding stays zero.
    keys: Mutex<Vec<f32>>,
}

thread_local! {
    /// Per worker: `QUERY_TILE` rows of scores, the tile's queries `[d][QUERY_TILE]` and
    /// the probabilities `[pixel][QUERY_TILE]`.
    static SCRATCH: Cell<Vec<f32>> = const { Cell::new(Vec::new()) };
}

impl Attention {
    /// An attention core over a `height` × `width` map. `key_dim` and `head_dim` are whole
    /// blocks (the planner checks).
    pub fn new(
        heads: usize,
        key_dim: usize,
        head_dim: usize,
        scale: f32,
        height: usize,
        width: usize,
    ) -> Self {
        debug_assert!(key_dim.is_multiple_of(LANES) && head_dim.is_multiple_of(LANES));
        let pixels = height * width;
        let padded = pixels.next_multiple_of(LANES);
        Self {
            heads,
            key_dim,
            head_dim,
            scale,
            pixels,
            padded,
            keys: Mutex::new(vec![0.0; heads * key_dim * padded]),
        }
    }

    pub fn heads(&self) -> usize {
        self.heads
    }

    pub fn key_dim(&self) -> usize {
        self.key_dim
    }

    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Multiply-adds ×2 of the two products (the softmax is not counted).
    pub fn flops(&self) -> f64 {
        let n = self.pixels as f64;
        2.0 * self.heads as f64 * n * n * (self.key_dim + self.head_dim) as f64
    }

    /// Adds the attention of `q`, `k`, `v` into `dst`.
    ///
    /// # Safety
    /// The views cover their layouts (`heads·key_dim`, `heads·key_dim`, `heads·head_dim` and
    /// `heads·head_dim` channels, all of this op's map size, 16-lane pixels) and `dst` is
    /// disjoint from the others.
    pub unsafe fn run(&self, isa: Isa, q: View, k: View, v: View, dst: View) {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let keys_ptr = SharedMut(keys.as_mut_ptr());
        let (h, w) = (k.layout.height, k.layout.width);
        let (padded, key_blocks) = (self.padded, self.heads * self.key_dim / LANES);
        for_each_index(key_blocks * h, |item| {
            let (block, y) = (item / h, item % h);
            for x in 0..w {
                // SAFETY: (y, x) is an interior pixel of `k`; item (block, y) writes only
                // pixels y·w.. of the block's 16 channel rows of `keys`.
                unsafe {
                    let from = &*(k.at(block, y as isize, x as isize) as *const Pixel);
                    let to = keys_ptr.ptr().add(block * LANES * padded + y * w + x);
                    for (lane, &value) in from.iter().enumerate() {
                        *to.add(lane * padded) = value;
                    }
                }
            }
        });
        let keys: &[f32] = &keys;
        let tiles = self.pixels.div_ceil(QUERY_TILE);
        for_each_index(self.heads * tiles, |item| {
            let (head, tile) = (item / tiles, item % tiles);
            let need = QUERY_TILE * (padded + self.key_dim + self.pixels);
            let mut scratch = SCRATCH.with(Cell::take);
            if scratch.len() < need {
                scratch.resize(need, 0.0);
            }
            let job = Tile {
                op: self,
                q,
                v,
                dst,
                keys,
                head,
                first: tile * QUERY_TILE,
            };
            // Writes only the tile's own query pixels of its head's blocks of `dst`.
            attention_tile(isa, &job, &mut scratch[..need]);
            SCRATCH.with(|s| s.set(scratch));
        });
    }
}

/// One parallel item: `QUERY_TILE` query pixels of one head.
struct Tile<'a> {
    op: &'a Attention,
    q: View,
    v: View,
    dst: View,
    keys: &'a [f32],
    head: usize,
    first: usize,
}

/// Scores, softmax and weighted values of one tile, added into `dst`. `scratch` holds
/// `QUERY_TILE` rows of `padded` scores, then the tile's queries `[d][t]`, then the
/// probabilities transposed `[j][t]`.
fn attention_tile(isa: Isa, job: &Tile, scratch: &mut [f32]) {
    let op = job.op;
    let (kd, hd, n, np) = (op.key_dim, op.head_dim, op.pixels, op.padded);
    let w = job.q.layout.width;
    let count = QUERY_TILE.min(n - job.first);
    let (scores, rest) = scratch.split_at_mut(QUERY_TILE * np);
    let (queries, probs) = rest.split_at_mut(QUERY_TILE * kd);
    // The tile's queries, `[d][t]` (missing pixels of the last tile zero).
    let key_block0 = job.head * kd / LANES;
    for t in 0..QUERY_TILE {
        for b in 0..kd / LANES {
            let values = if t < count {
                let i = job.first + t;
                // SAFETY: an interior pixel of the query's blocks.
                unsafe {
                    *(job.q.at(key_block0 + b, (i / w) as isize, (i % w) as isize) as *const Pixel)
                }
            } else {
                [0.0; LANES]
            };
            for (lane, &value) in values.iter().enumerate() {
                queries[(b * LANES + lane) * QUERY_TILE + t] = value;
            }
        }
    }
    let keys = &job.keys[key_block0 * LANES * np..][..kd * np];
    #[cfg(target_arch = "x86_64")]
    if isa.supported() == Isa::Avx512 {
        // SAFETY: AVX-512F is present; the slices hold kd·np keys, kd·QUERY_TILE queries
        // and QUERY_TILE·np scores.
        unsafe { avx512::scores(keys, queries, scores, kd, np) };
    } else {
        scores_tile(isa, keys, queries, scores, kd, np);
    }
    #[cfg(not(target_arch = "x86_64"))]
    scores_tile(isa, keys, queries, scores, kd, np);
    let mut inv_sum = [0.0f32; QUERY_TILE];
    softmax_rows(isa, scores, np, n, count, op.scale, &mut inv_sum);
    // Probabilities `[j][t]`: one vector of tile weights per value pixel.
    for t in 0..QUERY_TILE {
        let row = &scores[t * np..][..n];
        for (j, &p) in row.iter().enumerate() {
            probs[j * QUERY_TILE + t] = if t < count { p } else { 0.0 };
        }
    }
    let probs = &probs[..n * QUERY_TILE];
    // Weighted values, one 16-channel block at a time, values in pixel order.
    let value_block0 = job.head * hd / LANES;
    for b in 0..hd / LANES {
        let mut acc = [[0.0f32; LANES]; QUERY_TILE];
        #[cfg(target_arch = "x86_64")]
        if isa.supported() == Isa::Avx512 {
            // SAFETY: AVX-512F is present; `v` is a view of whole blocks of this map.
            unsafe { avx512::weighted(job.v, value_block0 + b, probs, &mut acc) };
        } else {
            weighted_values(isa, job.v, value_block0 + b, probs, &mut acc);
        }
        #[cfg(not(target_arch = "x86_64"))]
        weighted_values(isa, job.v, value_block0 + b, probs, &mut acc);
        for t in 0..count {
            let i = job.first + t;
            // SAFETY: this item's own query pixel of its head's block of `dst`.
            let out = unsafe {
                &mut *(job
                    .dst
                    .at(value_block0 + b, (i / w) as isize, (i % w) as isize)
                    as *mut Pixel)
            };
            for lane in 0..LANES {
                out[lane] += acc[t][lane] * inv_sum[t];
            }
        }
    }
}

isa_kernel! {
    /// `scores[t][j] = Σ_d queries[d][t] · keys[d][j]`, 16 keys at a time for the tile.
    fn scores_tile(keys: &[f32], queries: &[f32], scores: &mut [f32], kd: usize, np: usize) {
        for j0 in (0..np).step_by(LANES) {
            let mut acc = [[0.0f32; LANES]; QUERY_TILE];
            for d in 0..kd {
                let key: &Pixel = keys[d * np + j0..][..LANES].try_into().unwrap();
                let query: &[f32; QUERY_TILE] =
                    queries[d * QUERY_TILE..][..QUERY_TILE].try_into().unwrap();
                for t in 0..QUERY_TILE {
                    for lane in 0..LANES {
                        acc[t][lane] += query[t] * key[lane];
                    }
                }
            }
            for t in 0..QUERY_TILE {
                scores[t * np + j0..][..LANES].copy_from_slice(&acc[t]);
            }
        }
    }
}

isa_kernel! {
    /// Softmax numerators in place for the first `count` rows (the padding past `n` zero),
    /// and 1 / their sum per row; max and sum kept per lane so they vectorise.
    fn softmax_rows(
        scores: &mut [f32],
        np: usize,
        n: usize,
        count: usize,
        scale: f32,
        inv_sum: &mut [f32; QUERY_TILE],
    ) {
        for (t, inv) in inv_sum.iter_mut().enumerate().take(count) {
            let row = &mut scores[t * np..][..np];
            let mut max = [f32::NEG_INFINITY; LANES];
            for (j0, chunk) in row.chunks_exact(LANES).enumerate() {
                for lane in 0..LANES {
                    let s = if j0 * LANES + lane < n { chunk[lane] } else { f32::NEG_INFINITY };
                    max[lane] = max[lane].max(s);
                }
            }
            let shift = scale * max.iter().fold(f32::NEG_INFINITY, |m, &s| m.max(s));
            let mut sum = [0.0f32; LANES];
            for (j0, chunk) in row.chunks_exact_mut(LANES).enumerate() {
                for lane in 0..LANES {
                    let x = scale * chunk[lane] - shift;
                    let keep = j0 * LANES + lane < n && x >= EXP_FLOOR;
                    let e = if keep { exp_approx(x) } else { 0.0 };
                    chunk[lane] = e;
                    sum[lane] += e;
                }
            }
            *inv = 1.0 / sum.iter().sum::<f32>();
        }
    }
}

isa_kernel! {
    /// `acc[t] = Σ_j probs[j][t] · v[block, j]` over the map's pixels in row order.
    fn weighted_values(v: View, block: usize, probs: &[f32], acc: &mut [Pixel; QUERY_TILE]) {
        let (h, w) = (v.layout.height, v.layout.width);
        for y in 0..h {
            // SAFETY: row y of the value block holds `w` whole pixels, contiguous.
            let values = unsafe {
                std::slice::from_raw_parts(v.at(block, y as isize, 0) as *const Pixel, w)
            };
            let row_probs = &probs[y * w * QUERY_TILE..][..w * QUERY_TILE];
            for (value, p) in values.iter().zip(row_probs.chunks_exact(QUERY_TILE)) {
                for t in 0..QUERY_TILE {
                    for lane in 0..LANES {
                        acc[t][lane] += p[t] * value[lane];
                    }
                }
            }
        }
    }
}

/// The two products with explicit FMAs in registers (LLVM neither contracts `a += b · c`
/// nor picks 512-bit vectors for the plain loops).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::super::blocked::{View, LANES};
    use super::{Pixel, QUERY_TILE};

    /// As [`super::scores_tile`].
    ///
    /// # Safety
    /// AVX-512F; `keys` holds `kd·np`, `queries` `kd·QUERY_TILE`, `scores` `QUERY_TILE·np`
    /// floats, `np` a multiple of 16.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn scores(keys: &[f32], queries: &[f32], scores: &mut [f32], kd: usize, np: usize) {
        assert!(keys.len() >= kd * np && queries.len() >= kd * QUERY_TILE);
        assert!(scores.len() >= QUERY_TILE * np && np.is_multiple_of(LANES));
        let (k, q, s) = (keys.as_ptr(), queries.as_ptr(), scores.as_mut_ptr());
        for j0 in (0..np).step_by(LANES) {
            let mut acc = [_mm512_setzero_ps(); QUERY_TILE];
            for d in 0..kd {
                let key = _mm512_loadu_ps(k.add(d * np + j0));
                let query = q.add(d * QUERY_TILE);
                for (t, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(*query.add(t)), key, *a);
                }
            }
            for (t, a) in acc.iter().enumerate() {
                _mm512_storeu_ps(s.add(t * np + j0), *a);
            }
        }
    }

    /// As [`super::weighted_values`].
    ///
    /// # Safety
    /// AVX-512F; `v` covers its layout, `block` is one of its blocks, `probs` holds
    /// `QUERY_TILE` weights per pixel of the map.
    #[target_feature(enable = "avx512f")]
    pub unsafe fn weighted(v: View, block: usize, probs: &[f32], out: &mut [Pixel; QUERY_TILE]) {
        let (h, w) = (v.layout.height, v.layout.width);
        assert!(probs.len() >= h * w * QUERY_TILE);
        let mut acc = [_mm512_setzero_ps(); QUERY_TILE];
        for y in 0..h {
            let values = v.at(block, y as isize, 0);
            let p = probs.as_ptr().add(y * w * QUERY_TILE);
            for x in 0..w {
                let value = _mm512_loadu_ps(values.add(x * LANES));
                let weights = p.add(x * QUERY_TILE);
                for (t, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(*weights.add(t)), value, *a);
                }
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            _mm512_storeu_ps(o.as_mut_ptr(), a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `exp_approx`, as the softmax uses it, against f64 `exp` over every shifted score
    /// that is not flushed: within 1e-6 relative.
    #[test]
    fn the_softmax_exponential_is_accurate() {
        let mut worst = 0.0f64;
        let steps = 2_000_000;
        for s in 0..=steps {
            let x = EXP_FLOOR * s as f32 / steps as f32;
            let want = (x as f64).exp();
            let got = exp_approx(x) as f64;
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 1e-6, "relative error {worst}");
    }
}
