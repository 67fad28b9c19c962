//! Criterion benchmarks of the CPU convolution kernels at YOLOv8n (640) and YOLOX-Nano
//! (416) layer shapes: `blocked/…` is the executor's kernel (direct convolution, Winograd
//! F(2×2, 3×3) for the dense stride-1 3×3 ones — `blocked-direct/…` is the direct kernel on
//! those for comparison — or depthwise on the blocked layout, one op of a [`Graph`]),
//! `nchw/…` the NCHW im2col + GEMM
//! kernel that candle's models use when the executor does not apply. Throughput is in FLOP
//! (2 × multiply-adds), so criterion's "Gelem/s" reads as GFLOP/s; each kernel also prints
//! one `GFLOP/s` line of its own.
//!
//!   RAYON_NUM_THREADS=2 cargo bench --bench conv_kernels [-- FILTER]

use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use lookout::detect::cpu::graph::{Graph, Workspace};
use lookout::detect::cpu::pool::in_pool;
use lookout::detect::cpu::{ConvSpec, FusedConv};

/// `(name, spec, input height = width)`.
fn layers() -> Vec<(&'static str, ConvSpec, usize)> {
    let conv = |c_in, c_out, kernel, stride, groups| {
        ConvSpec::new(c_in, c_out, kernel, stride, groups, true)
    };
    vec![
        // YOLOv8n at 640.
        ("v8n.stem.3x3s2", conv(3, 16, 3, 2, 1), 640),
        ("v8n.down1.3x3s2", conv(16, 32, 3, 2, 1), 320),
        ("v8n.c2f1.1x1", conv(32, 32, 1, 1, 1), 160),
        ("v8n.c2f1.m.3x3", conv(16, 16, 3, 1, 1), 160),
        ("v8n.down2.3x3s2", conv(32, 64, 3, 2, 1), 160),
        ("v8n.c2f2.m.3x3", conv(32, 32, 3, 1, 1), 80),
        ("v8n.head.box.3x3", conv(64, 64, 3, 1, 1), 80),
        ("v8n.head.cls.1x1", conv(80, 80, 1, 1, 1), 80),
        ("v8n.c2f3.m.3x3", conv(64, 64, 3, 1, 1), 40),
        ("v8n.down4.3x3s2", conv(128, 256, 3, 2, 1), 40),
        ("v8n.c2f4.m.3x3", conv(128, 128, 3, 1, 1), 20),
        ("v8n.sppf.cv2.1x1", conv(512, 256, 1, 1, 1), 20),
        // YOLOX-Nano at 416.
        ("nano.focus.3x3", conv(12, 16, 3, 1, 1), 208),
        ("nano.dw16.3x3s2", conv(16, 16, 3, 2, 16), 208),
        ("nano.pw16-32.1x1", conv(16, 32, 1, 1, 1), 104),
        ("nano.dw32.3x3", conv(32, 32, 3, 1, 32), 104),
        ("nano.pw64.1x1", conv(64, 64, 1, 1, 1), 52),
        ("nano.dw64.3x3", conv(64, 64, 3, 1, 64), 52),
        ("nano.pw128.1x1", conv(128, 128, 1, 1, 1), 26),
        ("nano.dw256.3x3", conv(256, 256, 3, 1, 256), 13),
        ("nano.pw256.1x1", conv(256, 256, 1, 1, 1), 13),
    ]
}

fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) >> 8) as f32)
        .map(|v| v / (1u32 << 24) as f32 - 0.5)
        .collect()
}

fn build(spec: ConvSpec) -> FusedConv {
    let k = spec.kernel;
    let weight = values(spec.c_out * spec.c_in / spec.groups * k * k, 1);
    FusedConv::new(spec, weight, values(spec.c_out, 2)).expect("valid layer")
}

/// The layer as a one-op executor graph (the first layers read the packed image), with
/// Winograd where it applies or not.
fn blocked(spec: ConvSpec, side: usize, winograd: bool) -> (Graph, Workspace) {
    let k = spec.kernel;
    let weight = values(spec.c_out * spec.c_in / spec.groups * k * k, 1);
    let mut g = Graph::new();
    g.set_winograd(winograd);
    let src = if spec.c_in < 16 {
        g.input(spec.c_in, side, side)
    } else {
        g.alloc(spec.c_in, side, side)
    };
    g.conv(spec, &weight, &values(spec.c_out, 2), src, None, None)
        .expect("the executor holds every benchmarked layer");
    let ws = g.workspace();
    (g, ws)
}

/// Median GFLOP/s of `run` over a few runs, printed as a plain line.
fn print_gflops(name: &str, gflop: f64, mut run: impl FnMut()) {
    let mut times: Vec<f64> = (0..15)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    println!(
        "{name:<28} {gflop:>7.3} GFLOP  {:>8.3} ms  {:>7.1} GFLOP/s",
        times[7] * 1e3,
        gflop / times[7]
    );
}

fn blocked_kernels(c: &mut Criterion) {
    let mut group = c.benchmark_group("blocked");
    group.sample_size(20);
    for (name, spec, side) in layers() {
        let (graph, mut ws) = blocked(spec, side, true);
        let gflop = spec.flops(side, side) / 1e9;
        print_gflops(&format!("blocked/{name}"), gflop, || {
            in_pool(|| graph.run(&mut ws))
        });
        group.throughput(Throughput::Elements(spec.flops(side, side) as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| in_pool(|| graph.run(&mut ws)))
        });
    }
    group.finish();
    let mut group = c.benchmark_group("blocked-direct");
    group.sample_size(20);
    let winograd_layers = layers()
        .into_iter()
        .filter(|(_, s, _)| s.kernel == 3 && s.stride == 1 && s.groups == 1 && s.c_in >= 16);
    for (name, spec, side) in winograd_layers {
        let (graph, mut ws) = blocked(spec, side, false);
        let gflop = spec.flops(side, side) / 1e9;
        print_gflops(&format!("blocked-direct/{name}"), gflop, || {
            in_pool(|| graph.run(&mut ws))
        });
        group.throughput(Throughput::Elements(spec.flops(side, side) as u64));
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| in_pool(|| graph.run(&mut ws)))
        });
    }
    group.finish();
}

fn nchw_kernels(c: &mut Criterion) {
    let mut group = c.benchmark_group("nchw");
    group.sample_size(20);
    for (name, spec, side) in layers() {
        let conv = build(spec);
        let input = values(spec.c_in * side * side, 3);
        let gflop = spec.flops(side, side) / 1e9;
        print_gflops(&format!("nchw/{name}"), gflop, || {
            std::hint::black_box(conv.forward(&input, 1, side, side).expect("runs"));
        });
        group.throughput(Throughput::Elements(spec.flops(side, side) as u64));
        group.bench_with_input(BenchmarkId::from_parameter(name), &input, |b, input| {
            b.iter(|| conv.forward(input, 1, side, side).expect("runs"))
        });
    }
    group.finish();
}

criterion_group!(benches, blocked_kernels, nchw_kernels);
criterion_main!(benches);
