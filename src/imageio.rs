//! Decoding still images to RGB8 the way the reference pipelines do.
//!
//! The reference implementations read images with OpenCV's `imread`, i.e. libjpeg-turbo
//! with its default (islow DCT, fancy upsampling). Pure-Rust JPEG decoders differ from it
//! by up to 4 levels on ~10 % of pixels, enough to move borderline detections, so JPEGs
//! are decoded with libjpeg-turbo itself (through the `mozjpeg` crate, whose decoder is
//! libjpeg-turbo's); other formats go through `image`. EXIF orientation is applied, as
//! `imread` does.
//!
//! The `_pooled` forms decode into a buffer taken from a [`FramePool`] (and read files into
//! a byte buffer the caller keeps), so that sources replaying image files allocate no
//! frame-sized buffer per frame; the plain forms are the same decoder with a new buffer.

use std::io::Read;
use std::path::{Path, PathBuf};

use image::metadata::Orientation;
use image::{ImageDecoder, ImageFormat, RgbImage};

use crate::types::FramePool;

#[derive(Debug, thiserror::Error)]
pub enum ImageReadError {
    #[error("cannot read image {path}: {cause}")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path} is not a readable image ({reason}); expected JPEG or PNG")]
    Decode { path: PathBuf, reason: String },
}

/// Reads and decodes the image at `path`.
pub fn read_rgb(path: &Path) -> Result<RgbImage, ImageReadError> {
    read_rgb_pooled(path, &mut Vec::new(), &FramePool::default())
}

/// [`read_rgb`] reading the file into `bytes` (cleared first, kept by the caller between
/// frames) and decoding into a buffer from `pool`.
pub fn read_rgb_pooled(
    path: &Path,
    bytes: &mut Vec<u8>,
    pool: &FramePool,
) -> Result<RgbImage, ImageReadError> {
    bytes.clear();
    std::fs::File::open(path)
        .and_then(|mut file| file.read_to_end(bytes))
        .map_err(|cause| ImageReadError::Io {
            path: path.to_path_buf(),
            cause,
        })?;
    decode_rgb_pooled(bytes, path, pool)
}

/// Decodes encoded image bytes; `path` only names the image in errors.
pub fn decode_rgb(bytes: &[u8], path: &Path) -> Result<RgbImage, ImageReadError> {
    decode_rgb_pooled(bytes, path, &FramePool::default())
}

/// [`decode_rgb`] into a buffer from `pool`: JPEG always, PNG when it is 8-bit RGB (what
/// lookout writes). Other PNGs, and images whose EXIF orientation rotates them, take a
/// buffer of their own.
pub fn decode_rgb_pooled(
    bytes: &[u8],
    path: &Path,
    pool: &FramePool,
) -> Result<RgbImage, ImageReadError> {
    let fail = |reason: String| ImageReadError::Decode {
        path: path.to_path_buf(),
        reason,
    };
    let (image, orientation) = match image::guess_format(bytes) {
        Ok(ImageFormat::Jpeg) => decode_jpeg_turbo(bytes, pool).map_err(fail)?,
        Ok(ImageFormat::Png) => decode_png(bytes, pool).map_err(|e| fail(e.to_string()))?,
        _ => return decode_other(bytes).map_err(|e| fail(e.to_string())),
    };
    Ok(oriented(image, orientation))
}

/// `image` turned as its EXIF orientation says (in place for no turn).
fn oriented(image: RgbImage, orientation: Orientation) -> RgbImage {
    if orientation == Orientation::NoTransforms {
        return image;
    }
    let mut turned = image::DynamicImage::ImageRgb8(image);
    turned.apply_orientation(orientation);
    turned.into_rgb8()
}

/// PNG through `image`: 8-bit RGB straight into a pooled buffer, others converted.
fn decode_png(bytes: &[u8], pool: &FramePool) -> image::ImageResult<(RgbImage, Orientation)> {
    let mut decoder = image::codecs::png::PngDecoder::with_limits(
        std::io::Cursor::new(bytes),
        image::Limits::default(),
    )?;
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    if decoder.color_type() != image::ColorType::Rgb8 {
        return Ok((
            image::DynamicImage::from_decoder(decoder)?.into_rgb8(),
            orientation,
        ));
    }
    let (w, h) = decoder.dimensions();
    let mut image = pool.take_image(w, h);
    decoder.read_image(&mut image)?;
    Ok((image, orientation))
}

/// Formats other than JPEG and PNG (none in this build), as `image` decodes them.
fn decode_other(bytes: &[u8]) -> image::ImageResult<RgbImage> {
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes)).with_guessed_format()?;
    let mut decoder = reader.into_decoder()?;
    let orientation = decoder.orientation().ok();
    let mut image = image::DynamicImage::from_decoder(decoder)?;
    if let Some(o) = orientation {
        image.apply_orientation(o);
    }
    Ok(image.into_rgb8())
}

/// The most pixels an image may have (100 megapixels, 300 MB as RGB8): a header's size is
/// checked against it before any buffer is sized from it, so that a damaged or hostile
/// file cannot ask for gigabytes (a JPEG may claim 65535×65535).
pub const MAX_IMAGE_PIXELS: u64 = 100_000_000;

/// Refuses a `width`×`height` above [`MAX_IMAGE_PIXELS`], naming both.
fn check_image_size(width: u64, height: u64) -> Result<(), String> {
    if width == 0 || height == 0 {
        return Err(format!("its header says {width}x{height} pixels"));
    }
    if width * height > MAX_IMAGE_PIXELS {
        return Err(format!(
            "its header says {width}x{height} pixels, above the limit of {MAX_IMAGE_PIXELS} pixels"
        ));
    }
    Ok(())
}

/// libjpeg-turbo decode to RGB8 into a pooled buffer, with the orientation of the image's
/// (last) EXIF segment. CMYK and YCCK JPEGs (print workflows, Photoshop) are read as CMYK
/// by libjpeg-turbo and converted by [`cmyk_to_rgb`], as OpenCV's `imread` does. The
/// `mozjpeg` crate turns libjpeg's fatal errors into `Err` (it unwinds out of the C error
/// handler), so a corrupt file never aborts us.
fn decode_jpeg_turbo(bytes: &[u8], pool: &FramePool) -> Result<(RgbImage, Orientation), String> {
    let corrupt = |e: std::io::Error| format!("corrupt JPEG: {e}");
    let decoded = std::panic::catch_unwind(|| -> Result<(RgbImage, Orientation), String> {
        let decompress = mozjpeg::Decompress::builder()
            .with_markers(&[mozjpeg::Marker::APP(1)])
            .from_mem(bytes)
            .map_err(corrupt)?;
        let orientation = decompress
            .markers()
            .filter_map(|m| m.data.strip_prefix(b"Exif\0\0"))
            .last()
            .and_then(Orientation::from_exif_chunk)
            .unwrap_or(Orientation::NoTransforms);
        let (w, h) = decompress.size();
        check_image_size(w as u64, h as u64)?;
        use mozjpeg::ColorSpace::{JCS_CMYK, JCS_YCCK};
        let image = if matches!(decompress.color_space(), JCS_CMYK | JCS_YCCK) {
            // libjpeg-turbo converts YCCK to CMYK itself but not CMYK to RGB.
            let mut started = decompress.to_colorspace(JCS_CMYK).map_err(corrupt)?;
            let mut image = pool.take_image(w as u32, h as u32);
            let mut row = vec![0u8; w * 4];
            for rgb in image.chunks_exact_mut(w * 3) {
                started
                    .read_scanlines_into::<u8>(&mut row)
                    .map_err(corrupt)?;
                cmyk_to_rgb(&row, rgb);
            }
            started.finish().map_err(corrupt)?;
            image
        } else {
            let mut started = decompress.rgb().map_err(corrupt)?;
            let mut image = pool.take_image(w as u32, h as u32);
            started
                .read_scanlines_into::<u8>(&mut image)
                .map_err(corrupt)?;
            started.finish().map_err(corrupt)?;
            image
        };
        Ok((image, orientation))
    });
    decoded.unwrap_or_else(|_| Err("corrupt JPEG".to_string()))
}

/// CMYK as libjpeg gives it (Adobe's inverted form: 255 = no ink, which is what Photoshop
/// and ImageMagick write) → RGB, with OpenCV's integer formula (`icvCvt_CMYK2BGR_8u_C4C3R`,
/// used by `imread`): `r = k − ((255 − c)·k >> 8)`, likewise g from m and b from y.
pub fn cmyk_to_rgb(cmyk: &[u8], rgb: &mut [u8]) {
    for (px, out) in cmyk.chunks_exact(4).zip(rgb.chunks_exact_mut(3)) {
        let k = i32::from(px[3]);
        for (o, &ink) in out.iter_mut().zip(&px[..3]) {
            *o = (k - (((255 - i32::from(ink)) * k) >> 8)) as u8;
        }
    }
}

/// Lossless PNG of 8-bit RGB with fast compression (keeps up with a live camera), into
/// `out` (cleared first).
pub fn encode_png_fast_into(
    pixels: &[u8],
    width: u32,
    height: u32,
    out: &mut Vec<u8>,
) -> image::ImageResult<()> {
    use image::codecs::png::{CompressionType, FilterType, PngEncoder};
    use image::ImageEncoder;
    out.clear();
    PngEncoder::new_with_quality(&mut *out, CompressionType::Fast, FilterType::Adaptive)
        .write_image(pixels, width, height, image::ExtendedColorType::Rgb8)
}

/// Baseline JPEG (4:2:0, standard tables) with libjpeg-turbo's encoder through `mozjpeg` in
/// its fastest (plain libjpeg-turbo) profile: ~8x faster than the `image` crate's encoder on
/// 1280x720 (7 vs 62 ms measured), which decides whether recording keeps up with a camera.
/// libjpeg's fatal errors unwind out of its error handler and become `Err` here.
pub fn encode_jpeg(
    pixels: &[u8],
    width: u32,
    height: u32,
    quality: u8,
) -> std::io::Result<Vec<u8>> {
    let mut jpeg = Vec::new();
    encode_jpeg_into(pixels, width, height, quality, &mut jpeg)?;
    Ok(jpeg)
}

/// [`encode_jpeg`] into `out` (cleared first), so that a sink writing a JPEG per frame
/// reuses one buffer.
pub fn encode_jpeg_into(
    pixels: &[u8],
    width: u32,
    height: u32,
    quality: u8,
    out: &mut Vec<u8>,
) -> std::io::Result<()> {
    out.clear();
    // After a panic `out` holds a partial JPEG; it is cleared again before any reuse.
    let encoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        comp.set_fastest_defaults();
        comp.set_size(width as usize, height as usize);
        comp.set_quality(f32::from(quality));
        let mut started = comp.start_compress(&mut *out)?;
        started.write_scanlines(pixels)?;
        started.finish().map(drop)
    }));
    encoded.unwrap_or_else(|_| Err(std::io::Error::other("libjpeg failed")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corrupt_and_truncated_images_are_errors_naming_the_file() {
        let path = Path::new("frame_7.jpg");
        let err = decode_rgb(b"not an image at all", path)
            .unwrap_err()
            .to_string();
        assert!(err.contains("frame_7.jpg"), "{err}");
        let mut jpeg = Vec::new();
        let img = RgbImage::from_pixel(64, 48, image::Rgb([10, 200, 30]));
        img.write_to(
            &mut std::io::Cursor::new(&mut jpeg),
            image::ImageFormat::Jpeg,
        )
        .unwrap();
        let good = decode_rgb(&jpeg, path).unwrap();
        assert_eq!(good.dimensions(), (64, 48));
        let mut garbled = jpeg.clone();
        let mid = garbled.len() / 2;
        garbled.truncate(mid);
        // libjpeg pads a truncated scan with grey and warns; either way no panic.
        let _ = decode_rgb(&garbled, path);
        let header_only = &jpeg[..20];
        assert!(decode_rgb(header_only, path).is_err());
    }

    fn picture(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            image::Rgb([(x * 9) as u8, (y * 13) as u8, ((x + y) * 5) as u8])
        })
    }

    /// A baseline JPEG of [`picture`], with an EXIF segment holding `orientation` if given.
    fn jpeg_with_orientation(w: u32, h: u32, orientation: Option<u16>) -> Vec<u8> {
        let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_RGB);
        comp.set_size(w as usize, h as usize);
        let mut started = comp.start_compress(Vec::new()).unwrap();
        if let Some(o) = orientation {
            // "Exif\0\0", a little-endian TIFF header, one IFD with the orientation tag.
            let mut exif = b"Exif\0\0II*\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0".to_vec();
            exif.extend_from_slice(&o.to_le_bytes());
            exif.extend_from_slice(&[0; 6]);
            started.write_marker(mozjpeg::Marker::APP(1), &exif);
        }
        started.write_scanlines(picture(w, h).as_raw()).unwrap();
        started.finish().unwrap()
    }

    /// The pooled decoder reads the EXIF orientation as `image`'s own JPEG decoder does
    /// (which is what `read_rgb` used before decoding into pooled buffers).
    #[test]
    fn jpeg_orientation_matches_the_image_crate_and_is_applied() {
        let plain = decode_rgb(&jpeg_with_orientation(24, 16, None), Path::new("a")).unwrap();
        assert_eq!(plain.dimensions(), (24, 16));
        for o in [1u16, 3, 6, 8] {
            let jpeg = jpeg_with_orientation(24, 16, Some(o));
            let mut reference =
                image::codecs::jpeg::JpegDecoder::new(std::io::Cursor::new(&jpeg)).unwrap();
            let expected = reference.orientation().unwrap();
            assert_eq!(Orientation::from_exif(o as u8), Some(expected), "tag {o}");
            let turned = decode_rgb(&jpeg, Path::new("a")).unwrap();
            let mut want = image::DynamicImage::ImageRgb8(plain.clone());
            want.apply_orientation(expected);
            assert_eq!(turned, want.into_rgb8(), "orientation {o}");
        }
    }

    /// Pooled decoding gives the pixels of a fresh decode and, for JPEG and RGB PNG, writes
    /// into the pool's buffer instead of a new one.
    #[test]
    fn pooled_decoding_reuses_the_pool_buffer_and_gives_the_same_pixels() {
        let (w, h) = (40u32, 30u32);
        let jpeg = jpeg_with_orientation(w, h, None);
        let mut png = Vec::new();
        picture(w, h)
            .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
            .unwrap();
        let pool = FramePool::new(1);
        for (bytes, name) in [(&jpeg, "a.jpg"), (&png, "a.png")] {
            pool.put(vec![0xAB; (w * h * 3) as usize]);
            let spare = pool.take(0);
            let ptr = spare.as_ptr();
            pool.put(spare);
            let pooled = decode_rgb_pooled(bytes, Path::new(name), &pool).unwrap();
            assert_eq!(pooled.as_raw().as_ptr(), ptr, "{name}: no new buffer");
            assert_eq!(
                pooled,
                decode_rgb(bytes, Path::new(name)).unwrap(),
                "{name}"
            );
        }
        let fresh = image::load_from_memory(&png).unwrap().into_rgb8();
        assert_eq!(decode_rgb(&png, Path::new("a.png")).unwrap(), fresh);
    }

    /// PNGs that are not 8-bit RGB decode as `image` converts them.
    #[test]
    fn other_png_layouts_convert_like_the_image_crate() {
        let rgb = picture(9, 7);
        let layouts = [
            image::DynamicImage::ImageRgba8(image::DynamicImage::ImageRgb8(rgb.clone()).to_rgba8()),
            image::DynamicImage::ImageLuma8(image::DynamicImage::ImageRgb8(rgb.clone()).to_luma8()),
            image::DynamicImage::ImageRgb16(image::DynamicImage::ImageRgb8(rgb).to_rgb16()),
        ];
        for layout in layouts {
            let mut png = Vec::new();
            layout
                .write_to(&mut std::io::Cursor::new(&mut png), ImageFormat::Png)
                .unwrap();
            let want = image::load_from_memory(&png).unwrap().into_rgb8();
            let pool = FramePool::new(1);
            assert_eq!(
                decode_rgb_pooled(&png, Path::new("x.png"), &pool).unwrap(),
                want
            );
        }
    }

    #[test]
    fn files_read_into_the_callers_byte_buffer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.jpg");
        std::fs::write(&path, jpeg_with_orientation(16, 8, None)).unwrap();
        let mut bytes = Vec::with_capacity(1 << 16);
        let ptr = bytes.as_ptr();
        let image = read_rgb_pooled(&path, &mut bytes, &FramePool::default()).unwrap();
        assert_eq!(image, read_rgb(&path).unwrap());
        assert_eq!(bytes.as_ptr(), ptr, "the byte buffer is reused");
        let err = read_rgb_pooled(
            &dir.path().join("none.jpg"),
            &mut bytes,
            &FramePool::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("none.jpg"), "{err}");
    }

    /// A flat `w`×`h` JPEG of one CMYK colour (inverted, as Adobe writes it), as
    /// libjpeg-turbo encodes CMYK: stored as given, with an Adobe marker.
    fn cmyk_jpeg(w: u32, h: u32, cmyk: [u8; 4]) -> Vec<u8> {
        let mut comp = mozjpeg::Compress::new(mozjpeg::ColorSpace::JCS_CMYK);
        comp.set_size(w as usize, h as usize);
        comp.set_quality(100.0);
        let mut started = comp.start_compress(Vec::new()).unwrap();
        let pixels: Vec<u8> = (0..w * h).flat_map(|_| cmyk).collect();
        started.write_scanlines(&pixels).unwrap();
        started.finish().unwrap()
    }

    /// Issue 12 item 6: a valid CMYK JPEG was called "corrupt". It decodes, converted as
    /// OpenCV's `imread` converts it (flat colours: JPEG's DC error stays within ±2).
    #[test]
    fn cmyk_jpegs_decode_and_convert_like_opencv() {
        // (inverted c, m, y, k) → OpenCV's RGB.
        for (cmyk, want) in [
            ([255, 255, 255, 255], [255, 255, 255]), // no ink: white
            ([255, 255, 255, 0], [0, 0, 0]),         // full black
            ([0, 255, 255, 255], [1, 255, 255]),     // full cyan
            ([128, 64, 200, 180], [91, 46, 142]),
        ] {
            let mut rgb = [0u8; 3];
            cmyk_to_rgb(&cmyk, &mut rgb);
            assert_eq!(rgb, want, "{cmyk:?}");
            let image = decode_rgb(&cmyk_jpeg(16, 16, cmyk), Path::new("c.jpg")).unwrap();
            assert_eq!(image.dimensions(), (16, 16));
            for px in image.pixels() {
                for (got, want) in px.0.iter().zip(want) {
                    assert!(got.abs_diff(want) <= 2, "{cmyk:?}: {:?} vs {want:?}", px.0);
                }
            }
        }
    }

    /// Issue 12 item 2: no buffer is sized from a header without a check.
    #[test]
    fn image_sizes_are_checked_before_any_buffer_is_sized_from_them() {
        assert!(check_image_size(10_000, 10_000).is_ok());
        let err = check_image_size(65_535, 65_535).unwrap_err();
        assert!(
            err.contains("65535x65535") && err.contains("100000000"),
            "{err}"
        );
        assert!(check_image_size(0, 5).is_err());
        // A real header claiming 60000x60000: refused before decoding.
        let mut jpeg = jpeg_with_orientation(16, 8, None);
        let sof = jpeg
            .windows(2)
            .position(|w| w[0] == 0xFF && matches!(w[1], 0xC0..=0xC2))
            .unwrap();
        jpeg[sof + 5..sof + 9].copy_from_slice(&[0xEA, 0x60, 0xEA, 0x60]);
        let err = decode_rgb(&jpeg, Path::new("huge.jpg"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("60000x60000") && err.contains("limit"),
            "{err}"
        );
    }

    #[test]
    fn jpeg_encoding_into_a_reused_buffer_round_trips() {
        let image = picture(32, 16);
        let mut out = Vec::new();
        encode_jpeg_into(image.as_raw(), 32, 16, 90, &mut out).unwrap();
        let first = out.clone();
        encode_jpeg_into(image.as_raw(), 32, 16, 90, &mut out).unwrap();
        assert_eq!(out, first, "cleared before each frame");
        assert_eq!(
            decode_rgb(&out, Path::new("x")).unwrap().dimensions(),
            (32, 16)
        );
    }
}
