//! Undistorted view of frames: a remap table computed once per calibration and frame size,
//! then applied per frame with bilinear interpolation (no trigonometry or iteration per frame).
//!
//! The output keeps the calibration's intrinsics (a pinhole camera with the same fx, fy, cx,
//! cy), so straight lines come out straight; source pixels outside the frame come out black.

use super::{CalibError, Calibration};
use image::RgbImage;
use rayon::prelude::*;

/// For each output pixel, the source pixel's top-left neighbour and the bilinear fractions.
#[derive(Debug, Clone, Copy)]
struct Tap {
    /// Index of the top-left source pixel, or `u32::MAX` when the source is outside the frame.
    src_index: u32,
    frac_x: f32,
    frac_y: f32,
}

/// A precomputed undistortion map for frames of one size.
#[derive(Debug, Clone)]
pub struct RemapTable {
    width: u32,
    height: u32,
    taps: Vec<Tap>,
}

impl RemapTable {
    /// Builds the table for `width`×`height` frames (intrinsics scaled from `cal` if needed).
    pub fn new(cal: &Calibration, width: u32, height: u32) -> Result<Self, CalibError> {
        let cal = cal.for_image_size(width, height)?;
        let i = cal.intrinsics();
        let mut taps = Vec::with_capacity(width as usize * height as usize);
        for v in 0..height {
            for u in 0..width {
                let (x, y) = ((u as f64 - i.cx) / i.fx, (v as f64 - i.cy) / i.fy);
                let (src_u, src_v) = cal.pixel_from_normalized(x, y);
                taps.push(tap_for(src_u, src_v, width, height));
            }
        }
        Ok(Self {
            width,
            height,
            taps,
        })
    }

    pub fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// Writes the undistorted `src` into `dst`; both must have the table's size.
    pub fn apply(&self, src: &RgbImage, dst: &mut RgbImage) -> Result<(), CalibError> {
        for image in [src.dimensions(), dst.dimensions()] {
            if image != (self.width, self.height) {
                return Err(CalibError::FrameSize {
                    table_width: self.width,
                    table_height: self.height,
                    width: image.0,
                    height: image.1,
                });
            }
        }
        let (w, src_px) = (self.width as usize, src.as_raw());
        let row_bytes = w * 3;
        dst.par_chunks_mut(row_bytes)
            .zip(self.taps.par_chunks(w))
            .for_each(|(dst_row, taps)| {
                for (out, tap) in dst_row.chunks_exact_mut(3).zip(taps) {
                    out.copy_from_slice(&sample(src_px, row_bytes, tap));
                }
            });
        Ok(())
    }
}

fn tap_for(src_u: f64, src_v: f64, width: u32, height: u32) -> Tap {
    let outside = Tap {
        src_index: u32::MAX,
        frac_x: 0.0,
        frac_y: 0.0,
    };
    // Bilinear needs the pixel and its right/lower neighbours inside the frame.
    let max_u = width.saturating_sub(1) as f64;
    let max_v = height.saturating_sub(1) as f64;
    if !(src_u >= 0.0 && src_v >= 0.0 && src_u <= max_u && src_v <= max_v) {
        return outside;
    }
    let x0 = (src_u.floor() as u32).min(width.saturating_sub(2));
    let y0 = (src_v.floor() as u32).min(height.saturating_sub(2));
    Tap {
        src_index: y0 * width + x0,
        frac_x: (src_u - x0 as f64) as f32,
        frac_y: (src_v - y0 as f64) as f32,
    }
}

fn sample(src: &[u8], row_bytes: usize, tap: &Tap) -> [u8; 3] {
    if tap.src_index == u32::MAX {
        return [0, 0, 0];
    }
    let base = tap.src_index as usize * 3;
    let (fx, fy) = (tap.frac_x, tap.frac_y);
    let at = |offset: usize, c: usize| src.get(base + offset + c).copied().unwrap_or(0) as f32;
    let mut out = [0u8; 3];
    for (c, o) in out.iter_mut().enumerate() {
        let top = at(0, c) * (1.0 - fx) + at(3, c) * fx;
        let bottom = at(row_bytes, c) * (1.0 - fx) + at(row_bytes + 3, c) * fx;
        *o = (top * (1.0 - fy) + bottom * fy).round().clamp(0.0, 255.0) as u8;
    }
    out
}

/// Undistorts frames through a remap table built once per frame size, into a buffer that
/// is swapped with the frame's (no allocation per frame once warm).
pub struct Undistort {
    calibration: Calibration,
    table: Option<((u32, u32), RemapTable)>,
    spare: RgbImage,
}

impl Undistort {
    pub fn new(calibration: Calibration) -> Self {
        Self {
            calibration,
            table: None,
            spare: RgbImage::new(0, 0),
        }
    }

    /// Replaces `image` with its undistorted version.
    pub fn apply(&mut self, image: &mut RgbImage) -> Result<(), CalibError> {
        let size = image.dimensions();
        if self.table.as_ref().map(|(s, _)| *s) != Some(size) {
            self.table = Some((size, RemapTable::new(&self.calibration, size.0, size.1)?));
        }
        if self.spare.dimensions() != size {
            self.spare = RgbImage::new(size.0, size.1);
        }
        let table = &self.table.as_ref().expect("set above").1;
        table.apply(image, &mut self.spare)?;
        std::mem::swap(image, &mut self.spare);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::{Distortion, Intrinsics, Mounting};

    fn barrel() -> Calibration {
        Calibration::new(
            "test",
            "barrel",
            (64, 48),
            Intrinsics {
                fx: 50.0,
                fy: 50.0,
                cx: 31.5,
                cy: 23.5,
            },
            Distortion::RadialTangential {
                k1: -0.25,
                k2: 0.05,
                p1: 0.0,
                p2: 0.0,
                k3: 0.0,
            },
            Mounting::level(1.2),
        )
        .unwrap()
    }

    #[test]
    fn no_distortion_is_the_identity() {
        let cal = crate::calib::model::tests::kitti_like();
        let table = RemapTable::new(&cal, 124, 37).unwrap();
        let (w, h) = table.size();
        let src = RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 7])
        });
        let mut dst = RgbImage::new(w, h);
        table.apply(&src, &mut dst).unwrap();
        assert_eq!(src, dst);
    }

    #[test]
    fn a_distorted_point_lands_on_its_pinhole_position() {
        let cal = barrel();
        let table = RemapTable::new(&cal, 64, 48).unwrap();
        // A bright dot where the lens images the undistorted pixel (50, 40).
        let i = cal.intrinsics();
        let (src_u, src_v) = cal.pixel_from_normalized((50.0 - i.cx) / i.fx, (40.0 - i.cy) / i.fy);
        let mut src = RgbImage::new(64, 48);
        for (px, py) in [
            (src_u.floor(), src_v.floor()),
            (src_u.ceil(), src_v.ceil()),
            (src_u.floor(), src_v.ceil()),
            (src_u.ceil(), src_v.floor()),
        ] {
            src.put_pixel(px as u32, py as u32, image::Rgb([255, 255, 255]));
        }
        let mut dst = RgbImage::new(64, 48);
        table.apply(&src, &mut dst).unwrap();
        assert!(
            dst.get_pixel(50, 40)[0] > 200,
            "{:?}",
            dst.get_pixel(50, 40)
        );
        let mut wrong = RgbImage::new(32, 24);
        assert!(table.apply(&src, &mut wrong).is_err());
    }
}
