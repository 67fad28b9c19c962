//! Camera pixel formats → RGB8: YUYV (4:2:2) and NV12 (4:2:0) with the BT.601 limited-range
//! integer formula (what V4L2 webcams send and what ffmpeg assumes for untagged YUV), MJPEG
//! with libjpeg-turbo through [`crate::imageio`] (the decoder every other JPEG in lookout
//! goes through, so camera frames and recorded ones decode alike), and raw RGB/BGR/grey.
//!
//! Chroma is repeated over the pixels it covers (no interpolation), as ffmpeg's default
//! conversion does for packed RGB output.
//!
//! Every conversion has an `_into` form writing into a caller's buffer (the camera passes
//! one from the pipeline's frame pool), so that a running camera allocates no frame buffer.

use image::RgbImage;

use crate::types::FramePool;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConvertError {
    #[error("{format} frame has {got} bytes; a {width}x{height} frame needs {need}")]
    Size {
        format: &'static str,
        width: u32,
        height: u32,
        got: usize,
        need: usize,
    },
    #[error("{format} needs an even frame width{}, got {width}x{height}", if *.format == "NV12" { " and height" } else { "" })]
    OddSize {
        format: &'static str,
        width: u32,
        height: u32,
    },
    #[error("MJPEG frame does not decode: {0}")]
    Jpeg(String),
}

/// BT.601 limited range (Y in 16..235, Cb/Cr in 16..240 centred on 128) to RGB in 16.16
/// fixed point: within 1 of the float conversion everywhere. Shared by the camera's YUYV and
/// NV12 and the MCAP source's ROS 2 `yuv422`/`yuv422_yuy2` images; split in luma and chroma
/// terms so that a pixel pair computes its shared chroma once.
pub(crate) mod bt601 {
    // The float coefficients times 65536, rounded.
    const Y_SCALE: i32 = 76_309; // 1.164383
    const R_CR: i32 = 104_597; // 1.596027
    const G_CB: i32 = 25_675; // 0.391762
    const G_CR: i32 = 53_279; // 0.812968
    const B_CB: i32 = 132_201; // 2.017232
    const HALF: i32 = 1 << 15;

    /// The luma term of `y`.
    #[inline(always)]
    pub fn luma(y: u8) -> i32 {
        Y_SCALE * (i32::from(y) - 16)
    }

    /// The chroma terms of (Cb, Cr) = (`u`, `v`) for R, G and B, rounding included.
    #[inline(always)]
    pub fn chroma(u: u8, v: u8) -> [i32; 3] {
        let (cb, cr) = (i32::from(u) - 128, i32::from(v) - 128);
        [
            R_CR * cr + HALF,
            HALF - G_CB * cb - G_CR * cr,
            B_CB * cb + HALF,
        ]
    }

    /// One pixel from its luma and chroma terms.
    #[inline(always)]
    pub fn rgb(luma: i32, chroma: [i32; 3]) -> [u8; 3] {
        chroma.map(|c| ((luma + c) >> 16).clamp(0, 255) as u8)
    }
}

#[inline]
fn yuv_to_rgb(y: u8, u: u8, v: u8) -> [u8; 3] {
    bt601::rgb(bt601::luma(y), bt601::chroma(u, v))
}

/// Bytes per row of a packed buffer: `width × bytes_per_pixel`, or larger when the driver
/// pads rows (the buffer then holds `height` equal rows).
fn packed_stride(
    format: &'static str,
    src: &[u8],
    width: u32,
    height: u32,
    bytes_per_pixel: usize,
) -> Result<usize, ConvertError> {
    let row = width as usize * bytes_per_pixel;
    let need = row * height as usize;
    let padded = height > 0
        && src.len().is_multiple_of(height as usize)
        && src.len() / height as usize > row;
    match src.len() {
        n if n == need => Ok(row),
        n if padded => Ok(n / height as usize),
        got => Err(ConvertError::Size {
            format,
            width,
            height,
            got,
            need,
        }),
    }
}

/// YUYV 4:2:2 (`Y0 U Y1 V` per pixel pair) → RGB.
pub fn yuyv_to_rgb(src: &[u8], width: u32, height: u32) -> Result<RgbImage, ConvertError> {
    yuyv_to_rgb_into(src, width, height, Vec::new())
}

/// [`yuyv_to_rgb`] into `out`'s memory (a pooled buffer; resized, every byte written).
pub fn yuyv_to_rgb_into(
    src: &[u8],
    width: u32,
    height: u32,
    out: Vec<u8>,
) -> Result<RgbImage, ConvertError> {
    if !width.is_multiple_of(2) {
        return Err(ConvertError::OddSize {
            format: "YUYV",
            width,
            height,
        });
    }
    let stride = packed_stride("YUYV", src, width, height, 2)?;
    let row_len = width as usize * 2;
    let mut rgb = sized(out, width as usize * height as usize * 3);
    for (src_row, dst_row) in src
        .chunks_exact(stride)
        .zip(rgb.chunks_exact_mut(width as usize * 3))
    {
        for (quad, dst) in src_row[..row_len]
            .chunks_exact(4)
            .zip(dst_row.chunks_exact_mut(6))
        {
            let (y0, u, y1, v) = (quad[0], quad[1], quad[2], quad[3]);
            dst[..3].copy_from_slice(&yuv_to_rgb(y0, u, v));
            dst[3..].copy_from_slice(&yuv_to_rgb(y1, u, v));
        }
    }
    Ok(RgbImage::from_raw(width, height, rgb).expect("buffer sized to the image"))
}

/// NV12 (a Y plane, then one interleaved `U V` plane at half resolution) → RGB.
pub fn nv12_to_rgb(src: &[u8], width: u32, height: u32) -> Result<RgbImage, ConvertError> {
    nv12_to_rgb_into(src, width, height, Vec::new())
}

/// [`nv12_to_rgb`] into `out`'s memory (a pooled buffer; resized, every byte written).
pub fn nv12_to_rgb_into(
    src: &[u8],
    width: u32,
    height: u32,
    out: Vec<u8>,
) -> Result<RgbImage, ConvertError> {
    if !width.is_multiple_of(2) || !height.is_multiple_of(2) {
        return Err(ConvertError::OddSize {
            format: "NV12",
            width,
            height,
        });
    }
    let (w, h) = (width as usize, height as usize);
    let need = w * h * 3 / 2;
    if src.len() != need {
        return Err(ConvertError::Size {
            format: "NV12",
            width,
            height,
            got: src.len(),
            need,
        });
    }
    let (y_plane, uv_plane) = src.split_at(w * h);
    let mut rgb = sized(out, w * h * 3);
    for (row, dst_row) in rgb.chunks_exact_mut(w * 3).enumerate() {
        let y_row = &y_plane[row * w..(row + 1) * w];
        let uv_row = &uv_plane[(row / 2) * w..(row / 2 + 1) * w];
        for (x, dst) in dst_row.chunks_exact_mut(3).enumerate() {
            let uv = x & !1;
            dst.copy_from_slice(&yuv_to_rgb(y_row[x], uv_row[uv], uv_row[uv + 1]));
        }
    }
    Ok(RgbImage::from_raw(width, height, rgb).expect("buffer sized to the image"))
}

/// `out` resized to `len` bytes (its contents are overwritten by the caller).
fn sized(mut out: Vec<u8>, len: usize) -> Vec<u8> {
    out.resize(len, 0);
    out
}

/// One MJPEG frame (a JPEG, often without Huffman tables: libjpeg-turbo then uses the
/// standard ones, as webcams expect) → RGB.
pub fn mjpeg_to_rgb(src: &[u8]) -> Result<RgbImage, ConvertError> {
    mjpeg_to_rgb_into(src, &FramePool::default())
}

/// [`mjpeg_to_rgb`] into a buffer from `pool` (libjpeg-turbo decodes straight into it).
pub fn mjpeg_to_rgb_into(src: &[u8], pool: &FramePool) -> Result<RgbImage, ConvertError> {
    crate::imageio::decode_rgb_pooled(src, std::path::Path::new("MJPEG frame"), pool)
        .map_err(|e| ConvertError::Jpeg(e.to_string()))
}

/// Packed RGB24, or BGR24 with `bgr` set → RGB.
pub fn packed_rgb_to_rgb(
    src: &[u8],
    width: u32,
    height: u32,
    bgr: bool,
) -> Result<RgbImage, ConvertError> {
    packed_rgb_to_rgb_into(src, width, height, bgr, Vec::new())
}

/// [`packed_rgb_to_rgb`] into `out`'s memory (a pooled buffer; resized, every byte written).
pub fn packed_rgb_to_rgb_into(
    src: &[u8],
    width: u32,
    height: u32,
    bgr: bool,
    out: Vec<u8>,
) -> Result<RgbImage, ConvertError> {
    let format = if bgr { "BGR24" } else { "RGB24" };
    let stride = packed_stride(format, src, width, height, 3)?;
    let row_len = width as usize * 3;
    let mut rgb = sized(out, row_len * height as usize);
    for (src_row, dst_row) in src.chunks_exact(stride).zip(rgb.chunks_exact_mut(row_len)) {
        dst_row.copy_from_slice(&src_row[..row_len]);
    }
    if bgr {
        rgb.chunks_exact_mut(3).for_each(|px| px.swap(0, 2));
    }
    Ok(RgbImage::from_raw(width, height, rgb).expect("buffer sized to the image"))
}

/// 8-bit grey → RGB with equal channels.
pub fn gray_to_rgb(src: &[u8], width: u32, height: u32) -> Result<RgbImage, ConvertError> {
    gray_to_rgb_into(src, width, height, Vec::new())
}

/// [`gray_to_rgb`] into `out`'s memory (a pooled buffer; resized, every byte written).
pub fn gray_to_rgb_into(
    src: &[u8],
    width: u32,
    height: u32,
    out: Vec<u8>,
) -> Result<RgbImage, ConvertError> {
    let stride = packed_stride("GRAY", src, width, height, 1)?;
    let row_len = width as usize * 3;
    let mut rgb = sized(out, row_len * height as usize);
    for (src_row, dst_row) in src.chunks_exact(stride).zip(rgb.chunks_exact_mut(row_len)) {
        for (&v, dst) in src_row[..width as usize]
            .iter()
            .zip(dst_row.chunks_exact_mut(3))
        {
            dst.copy_from_slice(&[v, v, v]);
        }
    }
    Ok(RgbImage::from_raw(width, height, rgb).expect("buffer sized to the image"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limited_range_extremes_map_to_full_range() {
        assert_eq!(yuv_to_rgb(16, 128, 128), [0, 0, 0]);
        assert_eq!(yuv_to_rgb(235, 128, 128), [255, 255, 255]);
        // BT.601 75% red bar (Y 81, Cb 90, Cr 240) is RGB (255, 0, 0) give or take rounding.
        let [r, g, b] = yuv_to_rgb(81, 90, 240);
        assert!(r >= 254 && g <= 1 && b <= 1, "{r} {g} {b}");
    }

    #[test]
    fn yuyv_pairs_share_chroma_and_sizes_are_checked() {
        let src = [16, 128, 235, 128, 81, 90, 81, 240];
        let rgb = yuyv_to_rgb(&src, 2, 2).unwrap();
        assert_eq!(rgb.get_pixel(0, 0).0, [0, 0, 0]);
        assert_eq!(rgb.get_pixel(1, 0).0, [255, 255, 255]);
        assert_eq!(rgb.get_pixel(0, 1).0, rgb.get_pixel(1, 1).0);
        let err = yuyv_to_rgb(&src[..6], 2, 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "YUYV frame has 6 bytes; a 2x2 frame needs 8"
        );
        assert!(matches!(
            yuyv_to_rgb(&src, 1, 4),
            Err(ConvertError::OddSize { .. })
        ));
    }

    #[test]
    fn yuyv_with_padded_rows_skips_the_padding() {
        // 2x2 frame, rows padded from 4 to 6 bytes.
        let src = [16, 128, 16, 128, 9, 9, 235, 128, 235, 128, 9, 9];
        let rgb = yuyv_to_rgb(&src, 2, 2).unwrap();
        assert_eq!(rgb.get_pixel(1, 0).0, [0, 0, 0]);
        assert_eq!(rgb.get_pixel(0, 1).0, [255, 255, 255]);
    }

    #[test]
    fn nv12_chroma_covers_two_by_two_blocks() {
        // 2x2 luma, one chroma pair (saturated red).
        let src = [81, 81, 81, 81, 90, 240];
        let rgb = nv12_to_rgb(&src, 2, 2).unwrap();
        assert!(rgb.pixels().all(|p| p.0 == rgb.get_pixel(0, 0).0));
        assert!(rgb.get_pixel(1, 1).0[0] >= 254);
        assert!(nv12_to_rgb(&src[..5], 2, 2).is_err());
    }

    #[test]
    fn bgr_and_gray_expand_to_rgb() {
        let rgb = packed_rgb_to_rgb(&[1, 2, 3, 4, 5, 6], 2, 1, true).unwrap();
        assert_eq!(rgb.as_raw(), &[3, 2, 1, 6, 5, 4]);
        let rgb = gray_to_rgb(&[7, 8], 2, 1).unwrap();
        assert_eq!(rgb.as_raw(), &[7, 7, 7, 8, 8, 8]);
    }

    /// A baseline JPEG with the standard tables, as webcams send, without and with its DHT
    /// segments (the MJPEG convention is to leave them out).
    fn standard_table_jpeg() -> Vec<u8> {
        let image = RgbImage::from_fn(32, 16, |x, y| {
            image::Rgb([(x * 8) as u8, (y * 16) as u8, 90])
        });
        let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        comp.set_fastest_defaults();
        comp.set_size(32, 16);
        comp.set_quality(90.0);
        let mut started = comp.start_compress(Vec::new()).unwrap();
        started.write_scanlines(image.as_raw()).unwrap();
        started.finish().unwrap()
    }

    fn without_huffman_tables(jpeg: &[u8]) -> Vec<u8> {
        let mut out = jpeg[..2].to_vec();
        let mut pos = 2;
        // Copy marker segments up to the scan, dropping DHT (FFC4); then the rest verbatim.
        while pos + 4 <= jpeg.len() && jpeg[pos] == 0xFF && jpeg[pos + 1] != 0xDA {
            let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
            if jpeg[pos + 1] != 0xC4 {
                out.extend_from_slice(&jpeg[pos..pos + 2 + len]);
            }
            pos += 2 + len;
        }
        out.extend_from_slice(&jpeg[pos..]);
        out
    }

    #[test]
    fn mjpeg_without_huffman_tables_decodes_like_with_them() {
        let jpeg = standard_table_jpeg();
        let stripped = without_huffman_tables(&jpeg);
        assert!(stripped.len() < jpeg.len(), "no DHT segment was removed");
        let full = mjpeg_to_rgb(&jpeg).unwrap();
        let bare = mjpeg_to_rgb(&stripped).unwrap();
        assert_eq!(full.dimensions(), (32, 16));
        assert_eq!(full, bare);
    }

    #[test]
    fn mjpeg_garbage_is_an_error_not_a_panic() {
        assert!(matches!(
            mjpeg_to_rgb(b"\xff\xd8garbage"),
            Err(ConvertError::Jpeg(_))
        ));
    }

    /// The pooled variants write into the given buffer's memory and give the same pixels.
    #[test]
    fn conversions_into_a_pooled_buffer_reuse_it() {
        let (w, h) = (8u32, 4u32);
        let yuyv: Vec<u8> = (0..w * h * 2).map(|i| (i * 7 % 256) as u8).collect();
        let nv12: Vec<u8> = (0..w * h * 3 / 2).map(|i| (i * 11 % 256) as u8).collect();
        let buf = vec![0xAA; (w * h * 3) as usize];
        let ptr = buf.as_ptr();
        let into = yuyv_to_rgb_into(&yuyv, w, h, buf).unwrap();
        assert_eq!(into.as_raw().as_ptr(), ptr, "no new buffer");
        assert_eq!(into, yuyv_to_rgb(&yuyv, w, h).unwrap());
        let into = nv12_to_rgb_into(&nv12, w, h, into.into_raw()).unwrap();
        assert_eq!(into.as_raw().as_ptr(), ptr, "no new buffer");
        assert_eq!(into, nv12_to_rgb(&nv12, w, h).unwrap());
    }
}
