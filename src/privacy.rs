//! Anonymised pixels (`--privacy blur|pixelate`): every person (or the classes named by
//! `--privacy-classes`) is blurred or pixelated in the frame itself, before any sink sees
//! it, so drives, videos, frames and the window never hold the raw pixels.
//!
//! [`Anonymiser`] covers boxes in an image: each box is padded by a margin, then blurred
//! (three box-blur passes, a close approximation of a Gaussian, radius scaled to the box) or
//! pixelated (blocks scaled to the box). Its buffers are kept between frames. Which boxes to
//! cover is decided with the tracker, in the track stage: the detector's boxes of
//! those classes down to `--privacy-conf`, and the predicted boxes of lost tracks, so that a
//! person the detector misses for a few frames stays covered.

use image::RgbImage;

use crate::types::BoxXyxy;

/// How a box is covered.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum PrivacyMethod {
    /// A strong blur (Gaussian-like, strength from the box size).
    Blur,
    /// Coarse blocks of the box's mean colours.
    Pixelate,
}

impl PrivacyMethod {
    pub fn name(self) -> &'static str {
        match self {
            PrivacyMethod::Blur => "blur",
            PrivacyMethod::Pixelate => "pixelate",
        }
    }
}

/// Privacy settings, checked at the CLI.
#[derive(Debug, Clone, PartialEq)]
pub struct PrivacyConfig {
    pub method: PrivacyMethod,
    /// Class names or groups to cover (`person`, `pedestrian`, …), matched as `--classes` does.
    pub classes: crate::detect::classes::ClassFilter,
    /// Detections at or above this score are covered (below the display's `--conf`).
    pub min_score: f32,
    /// Each box is grown by this fraction of its size on every side.
    pub margin: f32,
}

/// Covers boxes in images; see the module doc.
#[derive(Debug)]
pub struct Anonymiser {
    method: PrivacyMethod,
    margin: f32,
    /// Scratch for one box's pixels (u16 per channel) and a blur pass.
    region: Vec<u16>,
    scratch: Vec<u16>,
    sums: Vec<u32>,
}

impl Anonymiser {
    pub fn new(method: PrivacyMethod, margin: f32) -> Self {
        Self {
            method,
            margin,
            region: Vec::new(),
            scratch: Vec::new(),
            sums: Vec::new(),
        }
    }

    pub fn method(&self) -> PrivacyMethod {
        self.method
    }

    /// The box grown by the margin and clipped to the image, as pixel bounds `[x1, x2) × [y1, y2)`;
    /// `None` when nothing of it is inside.
    pub fn covered_rect(
        &self,
        b: &BoxXyxy,
        width: u32,
        height: u32,
    ) -> Option<(u32, u32, u32, u32)> {
        let (mw, mh) = (b.width() * self.margin, b.height() * self.margin);
        let x1 = (b.x1 - mw).floor().max(0.0) as u32;
        let y1 = (b.y1 - mh).floor().max(0.0) as u32;
        let x2 = ((b.x2 + mw).ceil().max(0.0) as u32).min(width);
        let y2 = ((b.y2 + mh).ceil().max(0.0) as u32).min(height);
        (x2 > x1 && y2 > y1).then_some((x1, y1, x2, y2))
    }

    /// Covers one box in `image`.
    pub fn cover(&mut self, image: &mut RgbImage, b: &BoxXyxy) {
        let Some((x1, y1, x2, y2)) = self.covered_rect(b, image.width(), image.height()) else {
            return;
        };
        let (w, h) = ((x2 - x1) as usize, (y2 - y1) as usize);
        match self.method {
            PrivacyMethod::Pixelate => pixelate(image, x1, y1, w, h),
            PrivacyMethod::Blur => {
                // Radius a tenth of the larger side: a face a box-height tall loses its features.
                let radius = (w.max(h) / 10).max(3);
                self.blur(image, x1, y1, w, h, radius);
            }
        }
    }

    fn blur(&mut self, image: &mut RgbImage, x1: u32, y1: u32, w: usize, h: usize, radius: usize) {
        let stride = image.width() as usize * 3;
        let raw: &mut [u8] = image;
        self.region.clear();
        for y in 0..h {
            let row = (y1 as usize + y) * stride + x1 as usize * 3;
            self.region
                .extend(raw[row..row + w * 3].iter().map(|&v| v as u16));
        }
        self.scratch.resize(self.region.len(), 0);
        for _ in 0..3 {
            box_pass(
                &self.region,
                &mut self.scratch,
                &mut self.sums,
                w,
                h,
                radius,
                true,
            );
            box_pass(
                &self.scratch,
                &mut self.region,
                &mut self.sums,
                w,
                h,
                radius,
                false,
            );
        }
        for y in 0..h {
            let row = (y1 as usize + y) * stride + x1 as usize * 3;
            for (dst, &src) in raw[row..row + w * 3]
                .iter_mut()
                .zip(&self.region[y * w * 3..(y + 1) * w * 3])
            {
                *dst = src.min(255) as u8;
            }
        }
    }
}

/// One box-blur pass of `radius` along rows (`horizontal`) or columns of an interleaved
/// RGB region `w × h`, edges clamped. Columns are done row by row with one running sum per
/// column, so both passes read memory in order.
fn box_pass(
    src: &[u16],
    dst: &mut [u16],
    sums: &mut Vec<u32>,
    w: usize,
    h: usize,
    radius: usize,
    horizontal: bool,
) {
    let n = (2 * radius + 1) as u32;
    // (sum · inv) >> 24 ≈ sum / n, rounded.
    let inv = (1u64 << 24) / n as u64;
    let div = |sum: u32| (((sum as u64 + n as u64 / 2) * inv) >> 24) as u16;
    if horizontal {
        for y in 0..h {
            let row = &src[y * w * 3..(y + 1) * w * 3];
            let out = &mut dst[y * w * 3..(y + 1) * w * 3];
            let at = |x: isize, c: usize| row[x.clamp(0, w as isize - 1) as usize * 3 + c] as u32;
            let mut sum = [0u32; 3];
            for (c, s) in sum.iter_mut().enumerate() {
                *s = (-(radius as isize)..=radius as isize)
                    .map(|x| at(x, c))
                    .sum();
            }
            for x in 0..w {
                for c in 0..3 {
                    out[x * 3 + c] = div(sum[c]);
                    sum[c] += at(x as isize + radius as isize + 1, c);
                    sum[c] -= at(x as isize - radius as isize, c);
                }
            }
        }
    } else {
        let stride = w * 3;
        let row = |y: isize| {
            let y = y.clamp(0, h as isize - 1) as usize;
            &src[y * stride..(y + 1) * stride]
        };
        sums.clear();
        sums.resize(stride, 0);
        for y in -(radius as isize)..=radius as isize {
            for (s, &v) in sums.iter_mut().zip(row(y)) {
                *s += v as u32;
            }
        }
        for y in 0..h {
            let out = &mut dst[y * stride..(y + 1) * stride];
            for (o, &s) in out.iter_mut().zip(sums.iter()) {
                *o = div(s);
            }
            let (add, sub) = (
                row(y as isize + radius as isize + 1),
                row(y as isize - radius as isize),
            );
            for ((s, &a), &b) in sums.iter_mut().zip(add).zip(sub) {
                *s = *s + a as u32 - b as u32;
            }
        }
    }
}

/// Replaces blocks of `[x1, x1 + w) × [y1, y1 + h)` by their mean colour.
fn pixelate(image: &mut RgbImage, x1: u32, y1: u32, w: usize, h: usize) {
    let block = (w.max(h) / 10).max(4) as u32;
    let (x2, y2) = (x1 + w as u32, y1 + h as u32);
    let mut by = y1;
    while by < y2 {
        let ey = (by + block).min(y2);
        let mut bx = x1;
        while bx < x2 {
            let ex = (bx + block).min(x2);
            let mut sum = [0u32; 3];
            for y in by..ey {
                for x in bx..ex {
                    let p = image.get_pixel(x, y).0;
                    for c in 0..3 {
                        sum[c] += p[c] as u32;
                    }
                }
            }
            let n = (ex - bx) * (ey - by);
            let mean = image::Rgb(sum.map(|s| ((s + n / 2) / n) as u8));
            for y in by..ey {
                for x in bx..ex {
                    image.put_pixel(x, y, mean);
                }
            }
            bx = ex;
        }
        by = ey;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sharp checkerboard: what a face's detail is to a blur.
    fn checker(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            let v = if (x / 2 + y / 2) % 2 == 0 { 250 } else { 5 };
            image::Rgb([v, v, v])
        })
    }

    /// Mean absolute difference between horizontal neighbours inside a rect: the detail left.
    fn detail(img: &RgbImage, (x1, y1, x2, y2): (u32, u32, u32, u32)) -> f64 {
        let mut sum = 0.0;
        let mut n = 0.0;
        for y in y1..y2 {
            for x in x1..x2 - 1 {
                sum +=
                    (img.get_pixel(x, y).0[0] as f64 - img.get_pixel(x + 1, y).0[0] as f64).abs();
                n += 1.0;
            }
        }
        sum / n
    }

    #[test]
    fn blur_and_pixelate_remove_the_detail_inside_the_padded_box_only() {
        for method in [PrivacyMethod::Blur, PrivacyMethod::Pixelate] {
            let original = checker(200, 160);
            let mut img = original.clone();
            let mut anonymiser = Anonymiser::new(method, 0.1);
            let b = BoxXyxy::new(50.0, 40.0, 110.0, 140.0);
            anonymiser.cover(&mut img, &b);
            let rect = anonymiser.covered_rect(&b, 200, 160).unwrap();
            assert_eq!(rect, (44, 30, 116, 150));
            let before = detail(&original, rect);
            let after = detail(&img, rect);
            assert!(
                after < 0.1 * before,
                "{method:?}: detail {before:.1} -> {after:.1}"
            );
            // Outside the padded box nothing changed.
            for (x, y, p) in img.enumerate_pixels() {
                let inside = x >= rect.0 && x < rect.2 && y >= rect.1 && y < rect.3;
                if !inside {
                    assert_eq!(p, original.get_pixel(x, y), "{method:?} at {x},{y}");
                }
            }
        }
    }

    #[test]
    fn boxes_at_or_past_the_edges_are_clipped() {
        let mut img = checker(64, 48);
        let mut anonymiser = Anonymiser::new(PrivacyMethod::Blur, 0.1);
        anonymiser.cover(&mut img, &BoxXyxy::new(-20.0, 30.0, 20.0, 80.0));
        anonymiser.cover(&mut img, &BoxXyxy::new(100.0, 100.0, 120.0, 120.0));
        assert!(anonymiser
            .covered_rect(&BoxXyxy::new(100.0, 100.0, 120.0, 120.0), 64, 48)
            .is_none());
    }
}
