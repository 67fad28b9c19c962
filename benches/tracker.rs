//! Criterion benchmark of one tracker update with 10, 100 and 500 objects in view: objects
//! on a grid drifting across a 1920×1080 frame with jittered boxes and scores (a tenth of
//! them below `track_high_thresh`, for the second association), after the tracks are warm.
//! Each size also prints one `µs per frame` line of its own.
//!
//! `privacy_10_people_720p` times `--privacy` covering 10 people in a 1280×720 frame.
//!
//!   cargo bench --bench tracker [-- FILTER]

use std::time::Instant;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use lookout::track::{build, ByteTrackConfig, TrackInput, Tracker, TrackerKind};
use lookout::types::BoxXyxy;

/// The detections of frame `f` with `n` objects (deterministic).
fn frame(n: usize, f: usize) -> Vec<TrackInput> {
    let cols = (n as f32).sqrt().ceil() as usize;
    let (cell_w, cell_h) = (1920.0 / cols as f32, 1080.0 / cols as f32);
    (0..n)
        .map(|i| {
            let (r, c) = (i / cols, i % cols);
            // A cheap hash for jitter: varies per object and frame.
            let h = ((i * 7919 + f * 104_729) % 1000) as f32 / 1000.0;
            let x = c as f32 * cell_w + (f as f32 * 2.0) % cell_w * 0.3 + h * 2.0;
            let y = r as f32 * cell_h + h * 2.0;
            let (w, hgt) = (cell_w * 0.6, cell_h * 0.6);
            TrackInput {
                box_in_image: BoxXyxy::new(x, y, x + w, y + hgt),
                score: if i % 10 == 0 { 0.2 } else { 0.5 + 0.4 * h },
                class_id: i % 3,
            }
        })
        .collect()
}

fn bench_trackers(c: &mut Criterion) {
    let mut group = c.benchmark_group("tracker_update");
    for kind in [TrackerKind::Bytetrack, TrackerKind::Iou] {
        for n in [10usize, 100, 500] {
            let frames: Vec<Vec<TrackInput>> = (0..64).map(|f| frame(n, f)).collect();
            let mut tracker: Box<dyn Tracker> =
                build(kind, ByteTrackConfig::default()).expect("a tracker");
            let mut assigned = Vec::new();
            let mut f = 0usize;
            let mut step = |tracker: &mut Box<dyn Tracker>| {
                tracker.update(f as f64 / 30.0, &frames[f % frames.len()], &mut assigned);
                f += 1;
            };
            for _ in 0..10 {
                step(&mut tracker);
            }
            let start = Instant::now();
            for _ in 0..50 {
                step(&mut tracker);
            }
            println!(
                "{}/{n}: {:.1} µs per frame",
                kind.name(),
                start.elapsed().as_secs_f64() * 1e6 / 50.0
            );
            group.bench_with_input(BenchmarkId::new(kind.name(), n), &n, |b, _| {
                b.iter(|| step(&mut tracker))
            });
        }
    }
    group.finish();
}

/// `--privacy`: covering 10 people (80×200 boxes, 10 % margin) in a 1280×720 frame.
fn bench_privacy(c: &mut Criterion) {
    use lookout::privacy::{Anonymiser, PrivacyMethod};
    let mut group = c.benchmark_group("privacy_10_people_720p");
    let frame = image::RgbImage::from_fn(1280, 720, |x, y| {
        image::Rgb([(x % 251) as u8, (y % 241) as u8, ((x + y) % 239) as u8])
    });
    let boxes: Vec<BoxXyxy> = (0..10)
        .map(|i| {
            let x = 40.0 + 120.0 * i as f32;
            BoxXyxy::new(x, 300.0, x + 80.0, 500.0)
        })
        .collect();
    for method in [PrivacyMethod::Blur, PrivacyMethod::Pixelate] {
        let mut anonymiser = Anonymiser::new(method, 0.1);
        let mut image = frame.clone();
        let start = Instant::now();
        for _ in 0..20 {
            for b in &boxes {
                anonymiser.cover(&mut image, b);
            }
        }
        println!(
            "privacy {}: {:.2} ms per 1280x720 frame with 10 people",
            method.name(),
            start.elapsed().as_secs_f64() * 1e3 / 20.0
        );
        group.bench_function(method.name(), |b| {
            b.iter(|| {
                for bx in &boxes {
                    anonymiser.cover(&mut image, bx);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_trackers, bench_privacy);
criterion_main!(benches);
