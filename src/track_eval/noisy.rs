//! Seeded noisy detections made from tracking ground truth, to compare trackers without a detector.
//!
//! [`noisy_detections`] turns the ground-truth boxes of one class (a KITTI tracking label file, `DontCare` rows left
//! out) into what a detector might have produced: every true box is jittered (σ = 5 % of its width on the centre's x
//! and the width, 5 % of its height on y and the height), missed with probability 0.2, and scored with its own draw
//! (mostly high, a share below ByteTrack's `track_high_thresh` so that its low-score stage matters); each frame gets
//! about 10 % extra false positives with low scores, sized like that frame's objects and placed in their band of the
//! image. The stream is ChaCha8 seeded from [`NoiseConfig::seed`], and every true box draws the same variates
//! whatever happens to it, so one seed gives the same rows on every machine and build.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

use crate::trackfile::TrackRow;
use crate::types::BoxXyxy;

/// The seed of the benchmark's detection files (`examples/kitti_noisy_detections.rs`, `tests/it/tracking.rs`).
pub const DEFAULT_SEED: u64 = 13;

/// How the detections are made; [`Default`] is the tracking benchmark's noise on KITTI (1242×375).
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseConfig {
    /// Seed of the ChaCha8 stream.
    pub seed: u64,
    /// σ of the jitter as a fraction of the true box's size: x and width by its width, y and height by its height.
    pub jitter: f32,
    /// Probability that a true box is missed in a frame.
    pub drop_rate: f64,
    /// Extra false positives per frame, as a fraction of that frame's true boxes (before dropping).
    pub false_positive_rate: f64,
    /// Scores of false positives, uniform in `[lo, hi)`.
    pub false_positive_scores: (f32, f32),
    /// Share of detected true boxes scored low (in `low_scores`), the rest in `high_scores`.
    pub low_score_share: f64,
    /// Low scores of true boxes, uniform in `[lo, hi)`: above ByteTrack's `track_low_thresh` (0.1), below its
    /// `track_high_thresh` (0.25).
    pub low_scores: (f32, f32),
    /// Scores of the other true boxes, uniform in `[lo, hi)`.
    pub high_scores: (f32, f32),
    /// Image width and height, pixels: boxes are clipped to it.
    pub image_size: (f32, f32),
}

impl Default for NoiseConfig {
    fn default() -> Self {
        Self {
            seed: DEFAULT_SEED,
            jitter: 0.05,
            drop_rate: 0.2,
            false_positive_rate: 0.1,
            false_positive_scores: (0.05, 0.35),
            low_score_share: 0.2,
            low_scores: (0.12, 0.24),
            high_scores: (0.4, 0.95),
            image_size: (1242.0, 375.0),
        }
    }
}

/// The detections of one class, with what the noise did to the ground truth.
#[derive(Debug, Clone, PartialEq)]
pub struct NoisyDetections {
    /// Detection rows (`id` −1), by frame, within a frame by descending score as a detector hands them out.
    pub rows: Vec<TrackRow>,
    /// True boxes of the class in the ground truth (`ignore` rows left out).
    pub true_boxes: usize,
    /// True boxes missed: dropped by the draw, or jittered off the image.
    pub dropped: usize,
    /// Detections that match no true box.
    pub false_positives: usize,
}

/// A detection file that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("cannot write detections file {}: {source}; check that its folder exists and is writable", path.display())]
pub struct WriteDetectionsError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Noisy detections of the rows of `gt` whose class is `class` (ASCII case-insensitive, e.g. `car` for KITTI's
/// `Car`; `Van` is not `Car`); rows marked `ignore` are left out.
pub fn noisy_detections(gt: &[TrackRow], class: &str, config: &NoiseConfig) -> NoisyDetections {
    let mut truth: Vec<&TrackRow> = gt
        .iter()
        .filter(|r| {
            !r.ignore
                && r.class
                    .as_deref()
                    .is_some_and(|c| c.eq_ignore_ascii_case(class))
        })
        .collect();
    truth.sort_by_key(|r| (r.frame, r.id));
    let class_name: Arc<str> = truth
        .first()
        .and_then(|r| r.class.clone())
        .unwrap_or_else(|| Arc::from(class));

    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let mut out = NoisyDetections {
        rows: Vec::with_capacity(truth.len() + truth.len() / 5),
        true_boxes: truth.len(),
        dropped: 0,
        false_positives: 0,
    };
    for frame_truth in truth.chunk_by(|a, b| a.frame == b.frame) {
        let frame = frame_truth[0].frame;
        let first = out.rows.len();
        for row in frame_truth {
            match detect_true_box(&row.box_in_image, config, &mut rng) {
                Some((box_in_image, score)) => {
                    out.rows
                        .push(detection(frame, &class_name, box_in_image, score))
                }
                None => out.dropped += 1,
            }
        }
        for _ in 0..false_positive_count(frame_truth.len(), config.false_positive_rate, &mut rng) {
            let template = &frame_truth[rng.random_range(0..frame_truth.len())].box_in_image;
            let (box_in_image, score) = false_positive(template, config, &mut rng);
            out.rows
                .push(detection(frame, &class_name, box_in_image, score));
            out.false_positives += 1;
        }
        out.rows[first..].sort_by(|a, b| b.score.total_cmp(&a.score));
    }
    out
}

/// Writes `rows` as a MOTChallenge detection file: `frame,-1,x,y,w,h,score,-1,-1,-1` with frames from 1.
pub fn write_mot_detections(rows: &[TrackRow], path: &Path) -> Result<(), WriteDetectionsError> {
    let write = || -> std::io::Result<()> {
        let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
        for row in rows {
            let b = &row.box_in_image;
            writeln!(
                out,
                "{},-1,{:.2},{:.2},{:.2},{:.2},{:.4},-1,-1,-1",
                row.frame + 1,
                b.x1,
                b.y1,
                b.width(),
                b.height(),
                row.score
            )?;
        }
        out.flush()
    };
    write().map_err(|source| WriteDetectionsError {
        path: path.to_path_buf(),
        source,
    })
}

fn detection(frame: u64, class: &Arc<str>, box_in_image: BoxXyxy, score: f32) -> TrackRow {
    TrackRow {
        frame,
        id: -1,
        class: Some(class.clone()),
        box_in_image,
        score,
        ignore: false,
    }
}

/// The detection of one true box, or `None` when it is missed. Draws the same seven variates either way.
fn detect_true_box(
    truth: &BoxXyxy,
    config: &NoiseConfig,
    rng: &mut ChaCha8Rng,
) -> Option<(BoxXyxy, f32)> {
    let missed = rng.random_bool(config.drop_rate);
    let [dx, dy, dw, dh]: [f32; 4] = std::array::from_fn(|_| rng.sample(StandardNormal));
    let low = rng.random_bool(config.low_score_share);
    let (lo, hi) = if low {
        config.low_scores
    } else {
        config.high_scores
    };
    let score = lo + (hi - lo) * rng.random::<f32>();
    if missed {
        return None;
    }
    let (w, h) = (truth.width(), truth.height());
    let (cx, cy) = ((truth.x1 + truth.x2) / 2.0, (truth.y1 + truth.y2) / 2.0);
    let s = config.jitter;
    let jittered = BoxXyxy::from_center(
        cx + s * w * dx,
        cy + s * h * dy,
        (w * (1.0 + s * dw)).max(1.0),
        (h * (1.0 + s * dh)).max(1.0),
    );
    clip(&jittered, config.image_size).map(|b| (b, score))
}

/// `floor(rate · n)` plus one more with probability `frac(rate · n)`: about `rate · n`, and exactly that on average.
fn false_positive_count(n: usize, rate: f64, rng: &mut ChaCha8Rng) -> usize {
    let expected = rate * n as f64;
    let whole = expected.floor();
    whole as usize + usize::from(rng.random_bool(expected - whole))
}

/// A false positive sized like `template` (×0.7–1.3), anywhere across the image, in the template's band of rows.
fn false_positive(
    template: &BoxXyxy,
    config: &NoiseConfig,
    rng: &mut ChaCha8Rng,
) -> (BoxXyxy, f32) {
    let (width, height) = config.image_size;
    let w = (template.width() * rng.random_range(0.7..1.3)).clamp(2.0, width);
    let h = (template.height() * rng.random_range(0.7..1.3)).clamp(2.0, height);
    let cx = rng.random_range(w / 2.0..=width - w / 2.0);
    let band: f32 = rng.sample(StandardNormal);
    let cy =
        ((template.y1 + template.y2) / 2.0 + 0.1 * height * band).clamp(h / 2.0, height - h / 2.0);
    let (lo, hi) = config.false_positive_scores;
    let score = lo + (hi - lo) * rng.random::<f32>();
    (BoxXyxy::from_center(cx, cy, w, h), score)
}

/// `b` cut to the image, or `None` when less than a pixel of it is left either way.
fn clip(b: &BoxXyxy, (width, height): (f32, f32)) -> Option<BoxXyxy> {
    let clipped = BoxXyxy::new(
        b.x1.max(0.0),
        b.y1.max(0.0),
        b.x2.min(width),
        b.y2.min(height),
    );
    (clipped.x2 - clipped.x1 >= 1.0 && clipped.y2 - clipped.y1 >= 1.0).then_some(clipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(frame: u64, id: i64, class: &str, b: BoxXyxy, ignore: bool) -> TrackRow {
        TrackRow {
            frame,
            id,
            class: Some(Arc::from(class)),
            box_in_image: b,
            score: 1.0,
            ignore,
        }
    }

    /// `frames` frames of 8 cars moving right, one DontCare and one pedestrian.
    fn ground_truth(frames: u64) -> Vec<TrackRow> {
        let mut gt = Vec::new();
        for f in 0..frames {
            for i in 0..8 {
                let x = 50.0 + 140.0 * i as f32 + (f % 20) as f32;
                gt.push(row(
                    f,
                    i,
                    "Car",
                    BoxXyxy::new(x, 150.0, x + 100.0, 230.0),
                    false,
                ));
            }
            gt.push(row(
                f,
                -1,
                "DontCare",
                BoxXyxy::new(0.0, 0.0, 40.0, 40.0),
                true,
            ));
            gt.push(row(
                f,
                9,
                "Pedestrian",
                BoxXyxy::new(600.0, 150.0, 630.0, 240.0),
                false,
            ));
        }
        gt
    }

    #[test]
    fn same_seed_same_rows_other_seed_other_rows() {
        let gt = ground_truth(50);
        let config = NoiseConfig::default();
        let a = noisy_detections(&gt, "car", &config);
        assert_eq!(a, noisy_detections(&gt, "car", &config));
        let other = NoiseConfig {
            seed: config.seed + 1,
            ..config
        };
        assert_ne!(a.rows, noisy_detections(&gt, "car", &other).rows);
    }

    #[test]
    fn drop_false_positive_and_low_score_rates_are_the_configured_ones() {
        let gt = ground_truth(1000);
        let config = NoiseConfig::default();
        let d = noisy_detections(&gt, "Car", &config);
        assert_eq!(
            d.true_boxes, 8000,
            "only the cars, not DontCare nor the pedestrian"
        );
        assert_eq!(d.rows.len(), d.true_boxes - d.dropped + d.false_positives);
        let drop = d.dropped as f64 / d.true_boxes as f64;
        let fp = d.false_positives as f64 / d.true_boxes as f64;
        assert!((drop - 0.2).abs() < 0.015, "drop rate {drop}");
        assert!((fp - 0.1).abs() < 0.008, "false-positive rate {fp}");
        let low = d.rows.iter().filter(|r| r.score < 0.25).count() as f64;
        let fp_low = d.false_positives as f64 * (0.25 - 0.05) / 0.30;
        let true_low = (low - fp_low) / (d.true_boxes - d.dropped) as f64;
        assert!(
            (true_low - 0.2).abs() < 0.03,
            "share of true boxes scored low {true_low}"
        );
        assert!(d
            .rows
            .iter()
            .all(|r| r.id == -1 && r.class.as_deref() == Some("Car") && !r.ignore));
    }

    #[test]
    fn jitter_is_five_percent_of_size_and_boxes_stay_in_the_image() {
        let gt = ground_truth(400);
        let config = NoiseConfig {
            drop_rate: 0.0,
            false_positive_rate: 0.0,
            ..NoiseConfig::default()
        };
        let d = noisy_detections(&gt, "car", &config);
        let truth: Vec<&TrackRow> = gt
            .iter()
            .filter(|r| r.class.as_deref() == Some("Car"))
            .collect();
        assert_eq!(d.rows.len(), truth.len());
        // Within a frame rows are sorted by score; pair each with the true box nearest to it.
        let mut widths = Vec::new();
        for r in &d.rows {
            let t = truth
                .iter()
                .filter(|t| t.frame == r.frame)
                .max_by(|a, b| {
                    a.box_in_image
                        .iou(&r.box_in_image)
                        .total_cmp(&b.box_in_image.iou(&r.box_in_image))
                })
                .unwrap();
            widths.push(r.box_in_image.width() / t.box_in_image.width() - 1.0);
            let b = &r.box_in_image;
            assert!(
                b.x1 >= 0.0 && b.y1 >= 0.0 && b.x2 <= 1242.0 && b.y2 <= 375.0,
                "{b:?}"
            );
        }
        let n = widths.len() as f32;
        let mean = widths.iter().sum::<f32>() / n;
        let sd = (widths.iter().map(|w| (w - mean).powi(2)).sum::<f32>() / n).sqrt();
        assert!(
            mean.abs() < 0.005 && (sd - 0.05).abs() < 0.005,
            "width jitter mean {mean} sd {sd}"
        );
    }

    #[test]
    fn frames_are_sorted_by_descending_score_and_written_from_one() {
        let d = noisy_detections(&ground_truth(5), "pedestrian", &NoiseConfig::default());
        for w in d.rows.windows(2) {
            assert!(
                w[0].frame < w[1].frame || (w[0].frame == w[1].frame && w[0].score >= w[1].score)
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("det.txt");
        let one = [row(
            0,
            -1,
            "Car",
            BoxXyxy::new(10.0, 20.0, 40.5, 60.0),
            false,
        )];
        write_mot_detections(&one, &path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "1,-1,10.00,20.00,30.50,40.00,1.0000,-1,-1,-1\n"
        );
        let err = write_mot_detections(&one, &dir.path().join("no/such/det.txt")).unwrap_err();
        assert!(err.to_string().contains("no/such/det.txt"), "{err}");
    }
}
