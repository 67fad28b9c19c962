//! Anti-aliased text in the embedded Noto Mono (OFL-1.1, `assets/fonts/`), rasterised by
//! `ab_glyph`.
//!
//! A size is the line height in pixels. Each glyph is rasterised once per size and thread
//! and kept (coverage bytes), so drawing a label per frame only blends cached coverage:
//! no outline work and no allocation once the characters have been seen.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, GlyphId, PxScale, ScaleFont};
use image::{Rgb, RgbImage};

static FONT_BYTES: &[u8] = include_bytes!("../../assets/fonts/NotoMono-Regular.ttf");

fn font() -> &'static FontRef<'static> {
    static FONT: OnceLock<FontRef<'static>> = OnceLock::new();
    FONT.get_or_init(|| FontRef::try_from_slice(FONT_BYTES).expect("the embedded font parses"))
}

/// One glyph's coverage at one size, placed relative to the pen on the baseline.
#[derive(Debug, Default)]
struct Coverage {
    left: i32,
    top: i32,
    width: u32,
    height: u32,
    alpha: Vec<u8>,
}

thread_local! {
    static GLYPHS: RefCell<HashMap<(char, u32), Coverage>> = RefCell::new(HashMap::new());
}

fn rasterise(ch: char, px: u32) -> Coverage {
    let font = font();
    let scale = PxScale::from(px as f32);
    let id = glyph_id(ch);
    let glyph = id.with_scale_and_position(scale, ab_glyph::point(0.0, 0.0));
    let Some(outlined) = font.outline_glyph(glyph) else {
        return Coverage::default();
    };
    let bounds = outlined.px_bounds();
    let (width, height) = (bounds.width() as u32, bounds.height() as u32);
    let mut alpha = vec![0u8; (width * height) as usize];
    outlined.draw(|x, y, c| {
        if x < width && y < height {
            alpha[(y * width + x) as usize] = (c.clamp(0.0, 1.0) * 255.0).round() as u8;
        }
    });
    Coverage {
        left: bounds.min.x as i32,
        top: bounds.min.y as i32,
        width,
        height,
        alpha,
    }
}

fn glyph_id(ch: char) -> GlyphId {
    let font = font();
    let id = font.glyph_id(ch);
    if id.0 != 0 {
        return id;
    }
    let fallback = match ch {
        '—' | '–' => '-',
        '•' => '·',
        _ => '?',
    };
    font.glyph_id(fallback)
}

/// The pen advance of every glyph at `px` (a monospace font: one width for all).
fn advance(px: u32) -> f32 {
    let font = font().as_scaled(PxScale::from(px as f32));
    font.h_advance(font.glyph_id('0'))
}

/// Width and height in pixels of `text` at line height `px`.
pub fn text_size(text: &str, px: u32) -> (u32, u32) {
    let n = text.chars().count() as f32;
    ((n * advance(px)).ceil() as u32, px)
}

/// `text` with its line box's top-left at (x, y), blended onto the image (clipped).
pub fn draw_text(image: &mut RgbImage, x: i64, y: i64, text: &str, px: u32, colour: Rgb<u8>) {
    let scaled = font().as_scaled(PxScale::from(px as f32));
    // Centre the font's ascent + descent in the line box.
    let extent = scaled.ascent() - scaled.descent();
    let baseline = y as f32 + (px as f32 - extent) / 2.0 + scaled.ascent();
    let step = advance(px);
    let (w, h) = (image.width() as i64, image.height() as i64);
    GLYPHS.with(|cache| {
        let mut cache = cache.borrow_mut();
        for (i, ch) in text.chars().enumerate() {
            if ch == ' ' {
                continue;
            }
            let cov = cache.entry((ch, px)).or_insert_with(|| rasterise(ch, px));
            let ox = (x as f32 + i as f32 * step).round() as i64 + cov.left as i64;
            let oy = baseline.round() as i64 + cov.top as i64;
            for gy in 0..cov.height as i64 {
                let py = oy + gy;
                if !(0..h).contains(&py) {
                    continue;
                }
                for gx in 0..cov.width as i64 {
                    let px_x = ox + gx;
                    let a = cov.alpha[(gy * cov.width as i64 + gx) as usize];
                    if a == 0 || !(0..w).contains(&px_x) {
                        continue;
                    }
                    let p = image.get_pixel_mut(px_x as u32, py as u32);
                    for (dst, src) in p.0.iter_mut().zip(colour.0) {
                        let (d, s, a) = (*dst as u32, src as u32, a as u32);
                        *dst = ((s * a + d * (255 - a) + 127) / 255) as u8;
                    }
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_anti_aliased_and_sized_by_line_height() {
        let mut img = RgbImage::new(200, 40);
        draw_text(&mut img, 4, 4, "car 0.81", 24, Rgb([255, 255, 255]));
        let values: std::collections::BTreeSet<u8> = img.pixels().map(|p| p.0[0]).collect();
        assert!(values.contains(&255), "full coverage inside strokes");
        assert!(
            values.len() > 10,
            "edge pixels blend: {} levels",
            values.len()
        );
        let (w, h) = text_size("car 0.81", 24);
        assert_eq!(h, 24);
        // Monospace: 8 equal advances, about half the line height each.
        assert!((8 * 10..=8 * 14).contains(&w), "{w}");
        // Nothing is drawn outside the text's box.
        for (x, y, p) in img.enumerate_pixels() {
            if p.0[0] > 0 {
                assert!(
                    x >= 4 && x < 4 + w + 2 && y >= 4 && y < 4 + h,
                    "pixel at {x},{y}"
                );
            }
        }
    }

    #[test]
    fn missing_glyphs_and_clipping_are_not_panics() {
        let mut img = RgbImage::new(30, 30);
        draw_text(&mut img, 20, 20, "long text ✓ — ·", 40, Rgb([1, 2, 3]));
        draw_text(&mut img, -100, -100, "x", 12, Rgb([1, 2, 3]));
    }
}
