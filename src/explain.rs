//! Why the detector fired. Score maps: the per-anchor class scores of the detection's own
//! forward pass ([`crate::detect::ScoreMaps`]), sampled into image pixels and blended over
//! the frame as a heat map with a colour scale (`lookout explain`). Occlusion sensitivity:
//! a grey patch slid over the image, the network run again for each place, and the drop of
//! one detection's score recorded — the model-agnostic view of which pixels a box depends
//! on.

use image::{Rgb, RgbImage};

use crate::detect::preprocess::ImageFromModel;
use crate::detect::{Detector, ScoreMaps};
pub use crate::types::HeatMap;
use crate::types::{BoxXyxy, Detection};

/// The score maps sampled at the centre of every `cell`×`cell` block of the source image
/// (bilinear within each level's grid, the highest of the levels).
pub fn score_heat(maps: &ScoreMaps, image_from_model: &ImageFromModel, cell: u32) -> HeatMap {
    let cell = cell.max(1);
    let (w, h) = (image_from_model.image_width, image_from_model.image_height);
    let (cols, rows) = (w.div_ceil(cell).max(1), h.div_ceil(cell).max(1));
    let mut values = Vec::with_capacity((cols * rows) as usize);
    for r in 0..rows {
        for c in 0..cols {
            let x = ((c * cell) as f32 + cell as f32 / 2.0).min(w as f32);
            let y = ((r * cell) as f32 + cell as f32 / 2.0).min(h as f32);
            let mx = x * image_from_model.gain_x + image_from_model.pad_left;
            let my = y * image_from_model.gain_y + image_from_model.pad_top;
            let v = maps
                .levels
                .iter()
                .map(|level| {
                    let gx = mx / level.stride as f32 - 0.5;
                    let gy = my / level.stride as f32 - 0.5;
                    bilinear(&level.scores, level.grid_w, level.grid_h, gx, gy)
                })
                .fold(0f32, f32::max);
            values.push(v.clamp(0.0, 1.0));
        }
    }
    HeatMap {
        cell,
        cols,
        rows,
        values,
    }
}

fn bilinear(grid: &[f32], w: usize, h: usize, x: f32, y: f32) -> f32 {
    if w == 0 || h == 0 {
        return 0.0;
    }
    let x = x.clamp(0.0, (w - 1) as f32);
    let y = y.clamp(0.0, (h - 1) as f32);
    let (x0, y0) = (x.floor() as usize, y.floor() as usize);
    let (x1, y1) = ((x0 + 1).min(w - 1), (y0 + 1).min(h - 1));
    let (fx, fy) = (x - x0 as f32, y - y0 as f32);
    let at = |xx: usize, yy: usize| grid[yy * w + xx];
    let top = at(x0, y0) * (1.0 - fx) + at(x1, y0) * fx;
    let bottom = at(x0, y1) * (1.0 - fx) + at(x1, y1) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// The colour of `v` in `[0, 1]` on the scale the legend shows: dark blue, light blue,
/// green, yellow, red.
pub fn colour(v: f32) -> Rgb<u8> {
    const STOPS: [(f32, [f32; 3]); 5] = [
        (0.0, [0.0, 0.0, 128.0]),
        (0.25, [0.0, 128.0, 255.0]),
        (0.5, [0.0, 220.0, 120.0]),
        (0.75, [255.0, 210.0, 0.0]),
        (1.0, [220.0, 0.0, 0.0]),
    ];
    let v = v.clamp(0.0, 1.0);
    let i = STOPS
        .iter()
        .rposition(|(at, _)| *at <= v)
        .unwrap_or(0)
        .min(STOPS.len() - 2);
    let ((a, ca), (b, cb)) = (STOPS[i], STOPS[i + 1]);
    let t = (v - a) / (b - a);
    Rgb(std::array::from_fn(|k| {
        (ca[k] + (cb[k] - ca[k]) * t).round() as u8
    }))
}

/// Blends `heat` over `image` (a value's opacity grows with it, up to `alpha`) and draws
/// the colour scale at the right edge with `label` above it. Colour and opacity are worked
/// out once per cell and blended in integers (a 720p frame in a few ms, for the window).
pub fn draw_heat(image: &mut RgbImage, heat: &HeatMap, alpha: f32, label: &str) {
    let (w, h) = image.dimensions();
    // Per cell: the colour premultiplied by its opacity, and 256 − opacity, in 1/256.
    let cells: Vec<([u16; 3], u16)> = heat
        .values
        .iter()
        .map(|&v| {
            let a = (alpha.clamp(0.0, 1.0) * v.clamp(0.0, 1.0).sqrt() * 256.0).round() as u16;
            let c = colour(v).0;
            (c.map(|k| k as u16 * a), 256 - a)
        })
        .collect();
    let column: Vec<usize> = (0..w)
        .map(|x| ((x / heat.cell).min(heat.cols - 1)) as usize)
        .collect();
    let width = w as usize * 3;
    for (y, row) in image.chunks_exact_mut(width).enumerate().take(h as usize) {
        let r = ((y as u32 / heat.cell).min(heat.rows - 1) * heat.cols) as usize;
        let cells = &cells[r..r + heat.cols as usize];
        for (p, &c) in row.chunks_exact_mut(3).zip(&column) {
            let (premultiplied, keep) = cells[c];
            if keep == 256 {
                continue;
            }
            for k in 0..3 {
                p[k] = ((p[k] as u16 * keep + premultiplied[k] + 128) >> 8) as u8;
            }
        }
    }
    draw_legend(image, label);
}

/// A vertical colour bar, 1 at the top, 0 at the bottom, on the right edge.
fn draw_legend(image: &mut RgbImage, label: &str) {
    let (w, h) = image.dimensions();
    let px = crate::render::text_px(h);
    let bar_w = (px / 2).max(6);
    let bar_h = (h * 2 / 5).max(20);
    let margin = px / 2 + 2;
    let x0 = w.saturating_sub(bar_w + margin + px * 2) as i64;
    let y0 = (margin + px + 4) as i64;
    let white = Rgb([255, 255, 255]);
    let black = Rgb([0, 0, 0]);
    let panel_w = (bar_w + px * 2 + margin) as i64;
    crate::render::fill_rect(
        image,
        x0 - 4,
        y0 - px as i64 - 6,
        x0 + panel_w,
        y0 + bar_h as i64 + px as i64 + 6,
        black,
    );
    for dy in 0..bar_h {
        let v = 1.0 - dy as f32 / (bar_h - 1) as f32;
        let y = y0 + dy as i64;
        crate::render::fill_rect(image, x0, y, x0 + bar_w as i64, y + 1, colour(v));
    }
    let text_x = x0 + bar_w as i64 + 4;
    crate::render::draw_text(image, x0, y0 - px as i64 - 4, label, px, white);
    crate::render::draw_text(image, text_x, y0 - px as i64 / 2, "1", px, white);
    crate::render::draw_text(
        image,
        text_x,
        y0 + bar_h as i64 - px as i64 / 2,
        "0",
        px,
        white,
    );
}

/// The score of the detection among `found` that continues `target` (same class, the
/// highest IoU ≥ 0.3), or 0 when none does.
pub fn matching_score(found: &[Detection], target: &Detection) -> f32 {
    found
        .iter()
        .filter(|d| d.class_id == target.class_id)
        .filter(|d| d.box_in_image.iou(&target.box_in_image) >= 0.3)
        .map(|d| d.score)
        .fold(0.0, f32::max)
}

/// Runs `detector` on `image`.
pub fn detect(
    detector: &mut Detector,
    image: &RgbImage,
) -> crate::detect::Result<(Vec<Detection>, ImageFromModel)> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let (input, image_from_model) = detector.preprocess(image.as_raw(), w, h)?;
    detector.infer(&input)?;
    Ok((detector.postprocess(&image_from_model)?, image_from_model))
}

/// `image` with `rect` (image pixels) painted mid grey, as occlusion tests paint it.
pub fn occluded(image: &RgbImage, rect: &BoxXyxy) -> RgbImage {
    let mut copy = image.clone();
    let grey = Rgb([128, 128, 128]);
    crate::render::fill_rect(
        &mut copy,
        rect.x1 as i64,
        rect.y1 as i64,
        rect.x2 as i64,
        rect.y2 as i64,
        grey,
    );
    copy
}

/// Occlusion sensitivity of one detection: for each place of a `patch`-pixel grey square
/// moved by `stride`, how much of `target`'s score is lost (`(base − occluded) / base`,
/// at least 0); each pixel gets the mean over the patches that cover it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Occlusion {
    pub patch: u32,
    pub stride: u32,
    /// The target's score on the whole image.
    pub base_score: f32,
    /// Per pixel cell of `stride` pixels.
    pub map: HeatMap,
}

/// Slides the patch over `image`, calling `progress(done, total)` after each run.
pub fn occlusion(
    detector: &mut Detector,
    image: &RgbImage,
    target: &Detection,
    patch: u32,
    stride: u32,
    mut progress: impl FnMut(usize, usize),
) -> crate::detect::Result<Occlusion> {
    let (w, h) = image.dimensions();
    let (patch, stride) = (patch.max(1), stride.max(1));
    let base = matching_score(&detect(detector, image)?.0, target).max(f32::EPSILON);
    let xs: Vec<u32> = (0..w.saturating_sub(patch) + 1)
        .step_by(stride as usize)
        .collect();
    let ys: Vec<u32> = (0..h.saturating_sub(patch) + 1)
        .step_by(stride as usize)
        .collect();
    let (cols, rows) = (w.div_ceil(stride), h.div_ceil(stride));
    let mut sum = vec![0f32; (cols * rows) as usize];
    let mut count = vec![0u32; (cols * rows) as usize];
    let total = xs.len() * ys.len();
    let mut done = 0;
    for &y in &ys {
        for &x in &xs {
            let rect = BoxXyxy::new(
                x as f32,
                y as f32,
                (x + patch).min(w) as f32,
                (y + patch).min(h) as f32,
            );
            let score = matching_score(&detect(detector, &occluded(image, &rect))?.0, target);
            let drop = ((base - score) / base).max(0.0);
            for r in (y / stride)..((y + patch).min(h).div_ceil(stride)).min(rows) {
                for c in (x / stride)..((x + patch).min(w).div_ceil(stride)).min(cols) {
                    let i = (r * cols + c) as usize;
                    sum[i] += drop;
                    count[i] += 1;
                }
            }
            done += 1;
            progress(done, total);
        }
    }
    let values = sum
        .iter()
        .zip(&count)
        .map(|(s, &n)| if n > 0 { s / n as f32 } else { 0.0 })
        .collect();
    Ok(Occlusion {
        patch,
        stride,
        base_score: base,
        map: HeatMap {
            cell: stride,
            cols,
            rows,
            values,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::ScoreLevel;

    #[test]
    fn the_heat_follows_the_anchor_grid_through_the_letterbox() {
        // A 64×64 model on a 128×64 image (gain 0.5, 16 px bars top and bottom), one level
        // of stride 32 whose right anchor on the bottom row scores 1.
        let maps = ScoreMaps {
            model_width: 64,
            model_height: 64,
            levels: vec![ScoreLevel {
                stride: 32,
                grid_w: 2,
                grid_h: 2,
                scores: vec![0.0, 0.0, 0.0, 1.0],
            }],
        };
        let image_from_model = ImageFromModel {
            pad_left: 0.0,
            pad_top: 16.0,
            gain_x: 0.5,
            gain_y: 0.5,
            image_width: 128,
            image_height: 64,
        };
        let heat = score_heat(&maps, &image_from_model, 4);
        assert_eq!((heat.cols, heat.rows), (32, 16));
        assert!(heat.at(127, 63) > 0.9, "{}", heat.at(127, 63));
        assert!(heat.at(0, 0) < 0.01);
        let (x, y) = heat.argmax();
        assert!(x >= 96 && y >= 48, "({x}, {y})");
    }

    #[test]
    fn the_colour_scale_runs_blue_to_red() {
        assert_eq!(colour(0.0), Rgb([0, 0, 128]));
        assert_eq!(colour(1.0), Rgb([220, 0, 0]));
        assert_eq!(colour(0.5), Rgb([0, 220, 120]));
        assert_eq!(colour(2.0), colour(1.0));
    }

    #[test]
    fn a_matching_detection_is_the_same_class_and_overlaps() {
        let d = |class_id, x: f32, score| Detection {
            class_id,
            class: "x".into(),
            group: crate::types::ClassGroup::Other,
            score,
            box_in_image: BoxXyxy::new(x, 0.0, x + 10.0, 10.0),
            range: None,
            track_id: None,
            track_age_s: None,
        };
        let target = d(1, 0.0, 0.9);
        assert_eq!(
            matching_score(&[d(1, 1.0, 0.7), d(2, 0.0, 0.8)], &target),
            0.7
        );
        assert_eq!(matching_score(&[d(1, 50.0, 0.7)], &target), 0.0);
    }
}
