//! Drawing on frames: boxes coloured by group, legible labels, and text panels (HUD).
//!
//! Text uses the public-domain 8×8 bitmap font of the `font8x8` crate, scaled by an
//! integer factor chosen from the image height, so labels stay legible from 480p to 4K
//! without shipping a font file or rasterising outlines per frame.

pub mod hud;

use font8x8::UnicodeFonts;
use image::{Rgb, RgbImage};

use crate::types::{BoxXyxy, ClassGroup, Detection};

/// The colour of a group's boxes and label backgrounds.
pub fn group_colour(group: ClassGroup) -> Rgb<u8> {
    match group {
        ClassGroup::Pedestrian => Rgb([255, 56, 56]),
        ClassGroup::Vehicle => Rgb([40, 140, 255]),
        ClassGroup::Sign => Rgb([255, 200, 0]),
        ClassGroup::Other => Rgb([170, 170, 170]),
    }
}

/// Text scale for an image: 8 px glyphs ×2 at 720p, never below ×1.
pub fn text_scale(image_height: u32) -> u32 {
    (image_height / 360).max(1)
}

/// Box line thickness for an image.
pub fn line_thickness(image_height: u32) -> u32 {
    (image_height / 360).clamp(1, 4)
}

/// Draws every detection: its box and a `class score` label (plus `extra`, e.g. a distance).
pub fn draw_detections(image: &mut RgbImage, detections: &[Detection]) {
    for d in detections {
        draw_detection(image, d, "");
    }
}

/// Draws one detection's box and label; `extra` is appended to the label (`· 14.2 m`).
pub fn draw_detection(image: &mut RgbImage, detection: &Detection, extra: &str) {
    let colour = group_colour(detection.group);
    let thickness = line_thickness(image.height());
    draw_box(image, &detection.box_in_image, colour, thickness);
    let label = format!("{} {:.2}{extra}", detection.class, detection.score);
    let scale = text_scale(image.height());
    let label_h = 8 * scale + 2 * scale;
    let label_w = text_size(&label, scale).0 as i64 + 2 * scale as i64;
    // Shifted left when it would run off the right edge, so it stays readable.
    let x = (detection.box_in_image.x1 as i64)
        .min(image.width() as i64 - label_w)
        .max(0);
    let above = detection.box_in_image.y1 as i64 - label_h as i64;
    // Above the box when it fits, else just inside its top edge.
    let y = if above >= 0 {
        above
    } else {
        detection.box_in_image.y1.max(0.0) as i64
    };
    draw_label(image, x, y, &label, scale, colour, text_colour_on(colour));
}

/// ` · 14.2 m` (and ` · TTC 1.8 s`) for a detection with a range; empty otherwise.
pub fn range_label(detection: &Detection) -> String {
    match &detection.range {
        None => String::new(),
        Some(r) => match r.ttc_s {
            Some(ttc) => format!(" · {:.1} m · TTC {:.1} s", r.distance_m, ttc),
            None => format!(" · {:.1} m", r.distance_m),
        },
    }
}

/// Black or white, whichever reads better on `background`.
pub fn text_colour_on(background: Rgb<u8>) -> Rgb<u8> {
    let [r, g, b] = background.0;
    let luma = 0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32;
    if luma > 140.0 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    }
}

/// A rectangle outline `thickness` pixels wide, inside `b` and clipped to the image.
pub fn draw_box(image: &mut RgbImage, b: &BoxXyxy, colour: Rgb<u8>, thickness: u32) {
    let t = thickness as i64;
    let (x1, y1, x2, y2) = (b.x1 as i64, b.y1 as i64, b.x2 as i64, b.y2 as i64);
    fill_rect(image, x1, y1, x2, y1 + t, colour);
    fill_rect(image, x1, y2 - t, x2, y2, colour);
    fill_rect(image, x1, y1, x1 + t, y2, colour);
    fill_rect(image, x2 - t, y1, x2, y2, colour);
}

/// Fills `[x1, x2) × [y1, y2)`, clipped to the image.
pub fn fill_rect(image: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64, colour: Rgb<u8>) {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (x1, x2) = (x1.clamp(0, w), x2.clamp(0, w));
    let (y1, y2) = (y1.clamp(0, h), y2.clamp(0, h));
    for y in y1..y2 {
        for x in x1..x2 {
            image.put_pixel(x as u32, y as u32, colour);
        }
    }
}

/// Darkens `[x1, x2) × [y1, y2)` to half brightness (a HUD backdrop that keeps the scene visible).
pub fn dim_rect(image: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64) {
    let (w, h) = (image.width() as i64, image.height() as i64);
    for y in y1.clamp(0, h)..y2.clamp(0, h) {
        for x in x1.clamp(0, w)..x2.clamp(0, w) {
            let p = image.get_pixel_mut(x as u32, y as u32);
            p.0 = p.0.map(|v| v / 2);
        }
    }
}

/// Width and height in pixels of `text` at `scale`.
pub fn text_size(text: &str, scale: u32) -> (u32, u32) {
    (text.chars().count() as u32 * 8 * scale, 8 * scale)
}

/// Text on a filled background with a margin of `scale` pixels; top-left at (x, y).
pub fn draw_label(
    image: &mut RgbImage,
    x: i64,
    y: i64,
    text: &str,
    scale: u32,
    background: Rgb<u8>,
    foreground: Rgb<u8>,
) {
    let (tw, th) = text_size(text, scale);
    let m = scale as i64;
    fill_rect(
        image,
        x,
        y,
        x + tw as i64 + 2 * m,
        y + th as i64 + 2 * m,
        background,
    );
    draw_text(image, x + m, y + m, text, scale, foreground);
}

/// Text without background; characters outside the font's Unicode blocks draw as `?`.
pub fn draw_text(image: &mut RgbImage, x: i64, y: i64, text: &str, scale: u32, colour: Rgb<u8>) {
    let (w, h) = (image.width() as i64, image.height() as i64);
    for (i, ch) in text.chars().enumerate() {
        let glyph = glyph(ch);
        let gx = x + (i as i64) * 8 * scale as i64;
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..8 {
                if bits & (1 << col) == 0 {
                    continue;
                }
                for dy in 0..scale as i64 {
                    for dx in 0..scale as i64 {
                        let px = gx + col * scale as i64 + dx;
                        let py = y + row as i64 * scale as i64 + dy;
                        if (0..w).contains(&px) && (0..h).contains(&py) {
                            image.put_pixel(px as u32, py as u32, colour);
                        }
                    }
                }
            }
        }
    }
}

fn glyph(ch: char) -> [u8; 8] {
    let ch = match ch {
        '•' => '·',
        '—' | '–' => '-',
        other => other,
    };
    font8x8::BASIC_FONTS
        .get(ch)
        .or_else(|| font8x8::LATIN_FONTS.get(ch))
        .or_else(|| font8x8::BASIC_FONTS.get('?'))
        .unwrap_or([0; 8])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(group: ClassGroup) -> Detection {
        Detection {
            class_id: 0,
            class: "person".into(),
            group,
            score: 0.9,
            box_in_image: BoxXyxy::new(100.0, 100.0, 200.0, 300.0),
            range: None,
        }
    }

    #[test]
    fn box_edges_take_the_group_colour_and_the_inside_is_untouched() {
        let mut img = RgbImage::new(640, 480);
        draw_detections(&mut img, &[det(ClassGroup::Pedestrian)]);
        let red = group_colour(ClassGroup::Pedestrian);
        assert_eq!(*img.get_pixel(100, 200), red);
        assert_eq!(*img.get_pixel(199, 200), red);
        assert_eq!(*img.get_pixel(150, 299), red);
        assert_eq!(*img.get_pixel(150, 200), Rgb([0, 0, 0]));
    }

    #[test]
    fn label_draws_text_pixels_above_the_box() {
        let mut img = RgbImage::new(1280, 720);
        draw_detections(&mut img, &[det(ClassGroup::Vehicle)]);
        let blue = group_colour(ClassGroup::Vehicle);
        let label_area: Vec<Rgb<u8>> = (80..100)
            .flat_map(|y| (100..300).map(move |x| (x, y)))
            .map(|(x, y)| *img.get_pixel(x, y))
            .collect();
        let text = text_colour_on(blue);
        assert!(label_area.contains(&blue) && label_area.contains(&text));
    }

    #[test]
    fn drawing_outside_the_image_is_clipped_not_a_panic() {
        let mut img = RgbImage::new(50, 50);
        let mut d = det(ClassGroup::Sign);
        d.box_in_image = BoxXyxy::new(-20.0, -20.0, 80.0, 80.0);
        draw_detections(&mut img, &[d]);
        draw_text(&mut img, 45, 45, "long text ✓", 3, Rgb([1, 2, 3]));
    }
}
