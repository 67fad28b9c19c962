//! `--plot FILE.png`: per stage, latency over the run (left) and its histogram (right).
//!
//! Drawn with [`crate::render`]'s rectangles and bitmap text plus a line routine here,
//! rather than with `plotters`: two panel kinds are all that is needed, and this keeps a
//! charting crate (and its font stack) out of the build.

use std::path::Path;

use image::{Rgb, RgbImage};

use super::latency::{end_to_end_ns, stage_ns, FrameRecord, STAGES};
use crate::render::{draw_text, fill_rect};

/// Line height of the plot's labels, pixels.
const TEXT_PX: u32 = 12;

const WIDTH: u32 = 1200;
const ROW_H: u32 = 150;
const SERIES_X: (i64, i64) = (110, 840);
const HIST_X: (i64, i64) = (880, 1180);
const HIST_BINS: usize = 30;
const BACKGROUND: Rgb<u8> = Rgb([255, 255, 255]);
const AXIS: Rgb<u8> = Rgb([150, 150, 150]);
const INK: Rgb<u8> = Rgb([20, 20, 20]);
const SERIES: Rgb<u8> = Rgb([30, 100, 220]);
const WARMUP: Rgb<u8> = Rgb([230, 140, 20]);
const BARS: Rgb<u8> = Rgb([60, 160, 90]);

/// Latencies in ms of one row (a stage or end to end), frame by frame.
struct RowData {
    name: &'static str,
    /// (frame index, ms, warm-up)
    points: Vec<(usize, f64, bool)>,
}

fn rows(records: &[FrameRecord]) -> Vec<RowData> {
    let mut rows: Vec<RowData> = STAGES
        .iter()
        .map(|name| RowData {
            name,
            points: vec![],
        })
        .chain([RowData {
            name: "end-to-end",
            points: vec![],
        }])
        .collect();
    for (i, r) in records.iter().enumerate() {
        let stages = stage_ns(&r.stamps, &r.waits);
        let all = stages.iter().copied().chain([end_to_end_ns(&r.stamps)]);
        for (row, ns) in rows.iter_mut().zip(all) {
            if let Some(ns) = ns {
                row.points.push((i, ns as f64 / 1e6, r.warmup));
            }
        }
    }
    rows
}

/// Draws the plot of `records` into an image.
pub fn plot_image(records: &[FrameRecord]) -> RgbImage {
    let rows = rows(records);
    let mut image = RgbImage::from_pixel(WIDTH, ROW_H * rows.len() as u32 + 30, BACKGROUND);
    draw_text(
        &mut image,
        SERIES_X.0,
        8,
        "latency per frame (ms; orange = warm-up)",
        TEXT_PX,
        INK,
    );
    draw_text(
        &mut image,
        HIST_X.0,
        8,
        "histogram (after warm-up)",
        TEXT_PX,
        INK,
    );
    let frames = records.len().max(2);
    for (k, row) in rows.iter().enumerate() {
        let top = 30 + k as i64 * ROW_H as i64;
        draw_row(&mut image, row, top, frames);
    }
    image
}

fn draw_row(image: &mut RgbImage, row: &RowData, top: i64, frames: usize) {
    let (y0, y1) = (top + 12, top + ROW_H as i64 - 22);
    let max_ms = row
        .points
        .iter()
        .map(|p| p.1)
        .fold(0.0f64, f64::max)
        .max(0.001);
    let sorted = {
        let mut v: Vec<f64> = row.points.iter().filter(|p| !p.2).map(|p| p.1).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let pct = |q: f64| {
        sorted
            .get(((sorted.len().max(1) - 1) as f64 * q).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    draw_text(image, 4, top + 14, row.name, TEXT_PX, INK);
    draw_text(
        image,
        4,
        top + 30,
        &format!("p50 {}", fmt_ms(pct(0.5))),
        TEXT_PX,
        INK,
    );
    draw_text(
        image,
        4,
        top + 44,
        &format!("p99 {}", fmt_ms(pct(0.99))),
        TEXT_PX,
        INK,
    );
    draw_text(
        image,
        4,
        top + 58,
        &format!("max {}", fmt_ms(max_ms)),
        TEXT_PX,
        INK,
    );
    // Axes.
    fill_rect(image, SERIES_X.0, y1, SERIES_X.1, y1 + 1, AXIS);
    fill_rect(image, SERIES_X.0, y0, SERIES_X.0 + 1, y1, AXIS);
    fill_rect(image, HIST_X.0, y1, HIST_X.1, y1 + 1, AXIS);
    draw_text(
        image,
        SERIES_X.0 + 4,
        y0 - 10,
        &format!("{} ms", fmt_ms(max_ms)),
        TEXT_PX,
        AXIS,
    );
    draw_text(
        image,
        SERIES_X.1 - 60,
        y1 + 6,
        &format!("frame {}", frames - 1),
        TEXT_PX,
        AXIS,
    );
    // Series.
    let x_of = |i: usize| {
        SERIES_X.0 + ((SERIES_X.1 - SERIES_X.0) as f64 * i as f64 / (frames - 1) as f64) as i64
    };
    let y_of = |ms: f64| y1 - ((y1 - y0) as f64 * ms / max_ms) as i64;
    let mut last: Option<(i64, i64)> = None;
    for &(i, ms, warm) in &row.points {
        let p = (x_of(i), y_of(ms));
        let colour = if warm { WARMUP } else { SERIES };
        if let Some(prev) = last {
            draw_line(image, prev, p, colour);
        }
        fill_rect(image, p.0 - 1, p.1 - 1, p.0 + 2, p.1 + 2, colour);
        last = Some(p);
    }
    // Histogram over 0..max of the post-warm-up samples.
    let mut bins = [0usize; HIST_BINS];
    for ms in &sorted {
        let b = ((ms / max_ms) * HIST_BINS as f64) as usize;
        bins[b.min(HIST_BINS - 1)] += 1;
    }
    let tallest = bins.iter().copied().max().unwrap_or(0).max(1);
    let bin_w = (HIST_X.1 - HIST_X.0) / HIST_BINS as i64;
    for (b, &n) in bins.iter().enumerate() {
        let x = HIST_X.0 + b as i64 * bin_w;
        let h = ((y1 - y0) as f64 * n as f64 / tallest as f64) as i64;
        fill_rect(image, x + 1, y1 - h, x + bin_w, y1, BARS);
    }
    draw_text(image, HIST_X.0, y1 + 6, "0", TEXT_PX, AXIS);
    draw_text(
        image,
        HIST_X.1 - 70,
        y1 + 6,
        &format!("{} ms", fmt_ms(max_ms)),
        TEXT_PX,
        AXIS,
    );
}

/// `0.012` / `7.1` / `1051`: three significant digits at most, readable for µs and seconds.
fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.3}")
    } else if ms < 100.0 {
        format!("{ms:.1}")
    } else {
        format!("{ms:.0}")
    }
}

/// A one-pixel line (Bresenham), clipped to the image.
fn draw_line(image: &mut RgbImage, from: (i64, i64), to: (i64, i64), colour: Rgb<u8>) {
    let (mut x, mut y) = from;
    let (dx, dy) = ((to.0 - x).abs(), -(to.1 - y).abs());
    let (sx, sy) = (if x < to.0 { 1 } else { -1 }, if y < to.1 { 1 } else { -1 });
    let mut err = dx + dy;
    loop {
        if x >= 0 && y >= 0 && x < image.width() as i64 && y < image.height() as i64 {
            image.put_pixel(x as u32, y as u32, colour);
        }
        if (x, y) == to {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// Why a plot was not written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("{0}")]
    Format(String),
    #[error(transparent)]
    Image(#[from] image::ImageError),
}

/// The image format of a plot file, by its extension: `.png` (or none) is PNG, `.jpg` /
/// `.jpeg` JPEG; anything else is refused (issue 12: `--plot x.jpg` wrote a PNG).
pub fn plot_format(path: &Path) -> Result<image::ImageFormat, PlotError> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase());
    match ext.as_deref() {
        None | Some("png") => Ok(image::ImageFormat::Png),
        Some("jpg" | "jpeg") => Ok(image::ImageFormat::Jpeg),
        Some(other) => Err(PlotError::Format(format!(
            "--plot {}: `.{other}` is not a plot format; name it .png or .jpg",
            path.display()
        ))),
    }
}

/// Writes the plot as PNG or JPEG, as its name says ([`plot_format`]).
pub fn write_plot(records: &[FrameRecord], path: &Path) -> Result<(), PlotError> {
    let format = plot_format(path)?;
    plot_image(records).save_with_format(path, format)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::FrameStamps;

    /// Issue 12: `--plot x.jpg` wrote PNG bytes; it writes JPEG, and `.gif` is refused.
    #[test]
    fn the_plot_is_written_in_the_format_its_name_says() {
        let dir = tempfile::tempdir().unwrap();
        for (name, format) in [
            ("p.png", image::ImageFormat::Png),
            ("p.JPG", image::ImageFormat::Jpeg),
            ("p.jpeg", image::ImageFormat::Jpeg),
        ] {
            let path = dir.path().join(name);
            write_plot(&[], &path).unwrap();
            let bytes = std::fs::read(&path).unwrap();
            assert_eq!(image::guess_format(&bytes).unwrap(), format, "{name}");
        }
        let err = write_plot(&[], &dir.path().join("p.gif")).unwrap_err();
        assert!(err.to_string().contains(".png or .jpg"), "{err}");
        assert!(!dir.path().join("p.gif").exists());
    }

    #[test]
    fn plot_has_a_row_per_stage_and_draws_series_and_bars() {
        let records: Vec<FrameRecord> = (0..50u64)
            .map(|i| {
                let t = 1_000_000_000 + i * 40_000_000;
                FrameRecord {
                    seq: i,
                    pts_ns: None,
                    stamps: FrameStamps {
                        captured: t,
                        decoded: t + 1_000_000,
                        preprocessed: t + 3_000_000,
                        inferred: t + 30_000_000 + (i % 5) * 1_000_000,
                        postprocessed: t + 32_000_000 + (i % 5) * 1_000_000,
                        tracked: 0,
                        rendered: t + 34_000_000 + (i % 5) * 1_000_000,
                        presented: t + 35_000_000 + (i % 5) * 1_000_000,
                    },
                    waits: crate::metrics::latency::QueueWaits {
                        to_render: 1_000_000,
                        ..Default::default()
                    },
                    warmup: i < 3,
                    detections: 1,
                }
            })
            .collect();
        let img = plot_image(&records);
        assert_eq!(img.height(), 30 + 9 * ROW_H);
        let count = |c: Rgb<u8>| img.pixels().filter(|p| **p == c).count();
        assert!(count(SERIES) > 500 && count(BARS) > 500 && count(WARMUP) > 10);
        draw_line(&mut RgbImage::new(4, 4), (-5, -5), (10, 10), INK);
    }
}
