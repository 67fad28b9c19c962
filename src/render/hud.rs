//! The heads-up display: a small panel in the top-left corner with the run's live numbers
//! (frame rate, end-to-end latency percentiles, inference time, drops, model).
//!
//! The panel's backdrop is the scene darkened to a quarter, so white text stays legible on
//! bright sky while the scene under it is still visible. Sizes follow [`text_px`], i.e.
//! 20 px lines at 720p.

use image::{Rgb, RgbImage};

use super::{dim_rect, draw_text, text_px, text_size};
use crate::types::HudStats;

const TEXT: Rgb<u8> = Rgb([255, 255, 255]);
/// The model line is secondary information.
const TEXT_DIM: Rgb<u8> = Rgb([190, 190, 190]);

/// The panel's lines, top to bottom.
pub fn hud_lines(hud: &HudStats) -> Vec<String> {
    let mut lines = vec![
        format!("FPS {}", number(hud.fps, 1)),
        format!(
            "e2e p50 {} p99 {} ms",
            number(hud.e2e_p50_ms, 1),
            number(hud.e2e_p99_ms, 1)
        ),
        format!("infer {} ms", number(hud.inference_ms, 1)),
        format!("dropped {}", hud.dropped),
    ];
    if !hud.model.is_empty() {
        lines.push(hud.model.clone());
    }
    lines
}

/// `[x1, y1, x2, y2)` of the panel (backdrop included) in image pixels, before clipping.
pub fn hud_rect(image_height: u32, lines: &[String]) -> (i64, i64, i64, i64) {
    let px = text_px(image_height);
    let (pad, line_h) = (padding(px), line_height(px));
    let text_w = lines.iter().map(|l| text_size(l, px).0).max().unwrap_or(0) as i64;
    let text_h = line_h * lines.len() as i64 - (line_h - px as i64);
    let (x1, y1) = (pad, pad);
    (x1, y1, x1 + text_w + 2 * pad, y1 + text_h + 2 * pad)
}

/// Draws the panel onto `image`; pixels outside [`hud_rect`] are not touched.
pub fn draw_hud(image: &mut RgbImage, hud: &HudStats) {
    let lines = hud_lines(hud);
    let px = text_px(image.height());
    let (x1, y1, x2, y2) = hud_rect(image.height(), &lines);
    // Twice half brightness: a quarter, dark enough for white text on a bright scene.
    dim_rect(image, x1, y1, x2, y2);
    dim_rect(image, x1, y1, x2, y2);
    let pad = padding(px);
    for (i, line) in lines.iter().enumerate() {
        let colour = if i < 4 { TEXT } else { TEXT_DIM };
        let y = y1 + pad + i as i64 * line_height(px);
        draw_text(image, x1 + pad, y, line, px, colour);
    }
}

fn padding(px: u32) -> i64 {
    (px / 3).max(2) as i64
}

/// The text's line height plus a tenth.
fn line_height(px: u32) -> i64 {
    (px + px / 10) as i64
}

/// `-` for values not yet known (no samples) rather than `NaN` or a misleading 0.
fn number(value: f64, decimals: usize) -> String {
    if value.is_finite() {
        format!("{value:.decimals$}")
    } else {
        "-".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats() -> HudStats {
        HudStats {
            fps: 29.97,
            e2e_p50_ms: 41.25,
            e2e_p99_ms: 63.0,
            inference_ms: 18.4,
            dropped: 3,
            model: "yolox-nano cpu".into(),
        }
    }

    #[test]
    fn lines_show_every_number_and_unknowns_as_a_dash() {
        let lines = hud_lines(&stats());
        assert_eq!(
            lines,
            [
                "FPS 30.0",
                "e2e p50 41.2 p99 63.0 ms",
                "infer 18.4 ms",
                "dropped 3",
                "yolox-nano cpu"
            ]
        );
        let unknown = HudStats {
            fps: f64::NAN,
            ..HudStats::default()
        };
        assert_eq!(hud_lines(&unknown)[0], "FPS -");
        assert_eq!(hud_lines(&unknown).len(), 4, "no empty model line");
    }

    #[test]
    fn hud_draws_text_in_the_top_left_and_leaves_the_rest_untouched() {
        let grey = Rgb([200, 200, 200]);
        let mut image = RgbImage::from_pixel(1280, 720, grey);
        draw_hud(&mut image, &stats());
        let (x1, y1, x2, y2) = hud_rect(720, &hud_lines(&stats()));
        assert!(
            x2 < 640 && y2 < 360,
            "panel stays in the top-left: {x2}x{y2}"
        );
        let mut text_pixels = 0;
        let backdrop = Rgb([50, 50, 50]);
        for (x, y, p) in image.enumerate_pixels() {
            let inside = (x1..x2).contains(&(x as i64)) && (y1..y2).contains(&(y as i64));
            if !inside {
                assert_eq!(*p, grey, "pixel ({x}, {y}) outside the panel changed");
            } else {
                // The backdrop (the scene at a quarter), or text blended onto it.
                let [r, g, b] = p.0;
                assert!(
                    r == g && g == b && r >= 50,
                    "({x}, {y}) is {p:?}, not {backdrop:?} or text"
                );
                if r >= 160 {
                    text_pixels += 1;
                }
            }
        }
        // 20 px lines: each of ~70 characters lights dozens of pixels.
        assert!(text_pixels > 1500, "only {text_pixels} text pixels");
    }

    #[test]
    fn lines_are_20_px_at_720p_and_the_panel_clips_on_tiny_images() {
        let mut image = RgbImage::new(1280, 720);
        draw_hud(&mut image, &stats());
        let lit_rows: Vec<u32> = (0..80)
            .filter(|&y| (0..200).any(|x| image.get_pixel(x, y).0[0] > 128))
            .collect();
        // Padding 6 + 6: the first line's box is rows 12..32, the second's 34..54.
        let first: Vec<u32> = lit_rows.iter().copied().filter(|&y| y < 33).collect();
        assert!(first.iter().all(|&y| (12..32).contains(&y)), "{lit_rows:?}");
        assert!(first.len() >= 10, "glyphs span most of the line: {first:?}");
        assert!(lit_rows.iter().any(|&y| (34..54).contains(&y)));
        let mut tiny = RgbImage::new(40, 20);
        draw_hud(&mut tiny, &stats());
    }
}
