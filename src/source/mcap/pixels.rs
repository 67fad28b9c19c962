//! Conversion of uncompressed camera images to packed RGB8.
//!
//! The encodings are those of ROS 2 `sensor_msgs/msg/Image` (`image_encodings.hpp`) and of
//! `foxglove.RawImage`: RGB/BGR with or without alpha, 8- and 16-bit grey, YUV 4:2:2 in both byte
//! orders and 8-bit Bayer mosaics. [`to_rgb`] honours the row stride (`step`), writes exactly
//! `width * height * 3` bytes with no row padding, and never panics: bad geometry is a
//! [`PixelError`]. YUV is decoded as BT.601 limited range in fixed point; Bayer mosaics are
//! demosaiced bilinearly with mirrored borders.

use std::fmt;

use crate::source::convert::bt601;

/// Colour order of the top-left 2×2 block of a Bayer mosaic (`Rggb`: R G on the first row, G B
/// on the second).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BayerPattern {
    /// R G / G B.
    Rggb,
    /// B G / G R.
    Bggr,
    /// G B / R G.
    Gbrg,
    /// G R / B G.
    Grbg,
}

/// A raw pixel layout that [`to_rgb`] can convert.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RawEncoding {
    /// 3 bytes: R G B.
    Rgb8,
    /// 3 bytes: B G R.
    Bgr8,
    /// 4 bytes: R G B A (alpha dropped).
    Rgba8,
    /// 4 bytes: B G R A (alpha dropped).
    Bgra8,
    /// 1 byte of grey.
    Mono8,
    /// 2 bytes of grey, endianness from the message; only the high byte is kept.
    Mono16,
    /// 4:2:2, 4 bytes per 2 pixels: U0 Y0 V0 Y1.
    Uyvy,
    /// 4:2:2, 4 bytes per 2 pixels: Y0 U0 Y1 V0.
    Yuyv,
    /// 1 byte per pixel in a Bayer mosaic.
    Bayer8(BayerPattern),
}

impl RawEncoding {
    /// Every encoding name [`RawEncoding::parse`] accepts, for error messages.
    pub const SUPPORTED: &'static [&'static str] = &[
        "rgb8",
        "bgr8",
        "rgba8",
        "bgra8",
        "mono8",
        "8UC1",
        "mono16",
        "16UC1",
        "yuv422",
        "uyvy",
        "yuv422_yuy2",
        "yuyv",
        "bayer_rggb8",
        "bayer_bggr8",
        "bayer_gbrg8",
        "bayer_grbg8",
    ];

    /// ROS 2 `sensor_msgs` image_encodings names and foxglove.RawImage names, case-sensitive as
    /// they are written: "rgb8", "bgr8", "rgba8", "bgra8", "mono8", "8UC1", "mono16", "16UC1",
    /// "yuv422" and "uyvy" (UYVY: U0 Y0 V0 Y1), "yuv422_yuy2" and "yuyv" (YUYV: Y0 U0 Y1 V0),
    /// "bayer_rggb8", "bayer_bggr8", "bayer_gbrg8", "bayer_grbg8". `None` for anything else.
    pub fn parse(name: &str) -> Option<RawEncoding> {
        use BayerPattern::*;
        Some(match name {
            "rgb8" => Self::Rgb8,
            "bgr8" => Self::Bgr8,
            "rgba8" => Self::Rgba8,
            "bgra8" => Self::Bgra8,
            "mono8" | "8UC1" => Self::Mono8,
            "mono16" | "16UC1" => Self::Mono16,
            "yuv422" | "uyvy" => Self::Uyvy,
            "yuv422_yuy2" | "yuyv" => Self::Yuyv,
            "bayer_rggb8" => Self::Bayer8(Rggb),
            "bayer_bggr8" => Self::Bayer8(Bggr),
            "bayer_gbrg8" => Self::Bayer8(Gbrg),
            "bayer_grbg8" => Self::Bayer8(Grbg),
            _ => return None,
        })
    }

    /// The canonical (ROS 2) name of the encoding.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Rgb8 => "rgb8",
            Self::Bgr8 => "bgr8",
            Self::Rgba8 => "rgba8",
            Self::Bgra8 => "bgra8",
            Self::Mono8 => "mono8",
            Self::Mono16 => "mono16",
            Self::Uyvy => "yuv422",
            Self::Yuyv => "yuv422_yuy2",
            Self::Bayer8(BayerPattern::Rggb) => "bayer_rggb8",
            Self::Bayer8(BayerPattern::Bggr) => "bayer_bggr8",
            Self::Bayer8(BayerPattern::Gbrg) => "bayer_gbrg8",
            Self::Bayer8(BayerPattern::Grbg) => "bayer_grbg8",
        }
    }

    /// Bytes per pixel: 3 RGB/BGR, 4 with alpha, 2 for 4:2:2 YUV (4 bytes per pixel pair) and
    /// mono16, 1 for mono8 and Bayer.
    pub const fn bytes_per_pixel(self) -> u32 {
        match self {
            Self::Rgb8 | Self::Bgr8 => 3,
            Self::Rgba8 | Self::Bgra8 => 4,
            Self::Mono16 | Self::Uyvy | Self::Yuyv => 2,
            Self::Mono8 | Self::Bayer8(_) => 1,
        }
    }
}

impl fmt::Display for RawEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why an image could not be converted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PixelError {
    /// Width or height is 0.
    #[error("image is {width}x{height}: it has no pixels")]
    ZeroSize {
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
    },
    /// A row is shorter than `width * bytes_per_pixel`.
    #[error("{encoding} row step {step} is below the {min} bytes {width} pixels need")]
    StepTooSmall {
        /// The encoding.
        encoding: RawEncoding,
        /// Columns.
        width: u32,
        /// The step given.
        step: u32,
        /// The least valid step.
        min: u64,
    },
    /// The pixel buffer is shorter than the geometry says.
    #[error(
        "{encoding} {width}x{height} with step {step} needs {needed} bytes of data but has {len}"
    )]
    DataTooShort {
        /// The encoding.
        encoding: RawEncoding,
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
        /// Row length in bytes.
        step: u32,
        /// `step * (height - 1) + width * bytes_per_pixel` (the last row may be unpadded).
        needed: u64,
        /// Bytes present.
        len: usize,
    },
    /// 4:2:2 YUV stores pixels in pairs, so the width must be even.
    #[error("{encoding} stores pixel pairs but the width {width} is odd")]
    OddWidth {
        /// The encoding.
        encoding: RawEncoding,
        /// Columns.
        width: u32,
    },
    /// A Bayer mosaic needs at least 2×2 pixels to hold every colour.
    #[error("{encoding} needs at least 2x2 pixels to hold every colour, got {width}x{height}")]
    TooSmall {
        /// The encoding.
        encoding: RawEncoding,
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
    },
    /// The RGB output would not fit in memory on this platform.
    #[error("a {width}x{height} RGB image does not fit in memory")]
    TooLarge {
        /// Columns.
        width: u32,
        /// Rows.
        height: u32,
    },
}

/// Converts one image into `out` (cleared, then exactly `width * height * 3` bytes, RGB
/// row-major, no padding).
///
/// `step` is the row length in bytes (at least `width * bytes_per_pixel`); padding at the end of
/// rows is skipped and the last row may be unpadded. `big_endian` only matters for mono16, which
/// keeps the high byte (`value >> 8`) of each sample, replicated to grey. Mono8 is replicated to
/// grey, alpha is dropped, YUV 4:2:2 is BT.601 limited range (within ±1 of the exact formula),
/// and Bayer is bilinearly demosaiced with mirror-reflected borders. On error `out` is left as
/// it was.
pub fn to_rgb(
    encoding: RawEncoding,
    width: u32,
    height: u32,
    step: u32,
    big_endian: bool,
    data: &[u8],
    out: &mut Vec<u8>,
) -> Result<(), PixelError> {
    if width == 0 || height == 0 {
        return Err(PixelError::ZeroSize { width, height });
    }
    if matches!(encoding, RawEncoding::Uyvy | RawEncoding::Yuyv) && !width.is_multiple_of(2) {
        return Err(PixelError::OddWidth { encoding, width });
    }
    if matches!(encoding, RawEncoding::Bayer8(_)) && (width < 2 || height < 2) {
        return Err(PixelError::TooSmall {
            encoding,
            width,
            height,
        });
    }
    let min_row = u64::from(width) * u64::from(encoding.bytes_per_pixel());
    if u64::from(step) < min_row {
        return Err(PixelError::StepTooSmall {
            encoding,
            width,
            step,
            min: min_row,
        });
    }
    let needed = u64::from(step) * u64::from(height - 1) + min_row;
    if needed > data.len() as u64 {
        return Err(PixelError::DataTooShort {
            encoding,
            width,
            height,
            step,
            needed,
            len: data.len(),
        });
    }
    let too_large = PixelError::TooLarge { width, height };
    let (Ok(w), Ok(h), Ok(step), Ok(min_row)) = (
        usize::try_from(width),
        usize::try_from(height),
        usize::try_from(step),
        usize::try_from(min_row),
    ) else {
        return Err(too_large);
    };
    let Some(out_row) = w.checked_mul(3) else {
        return Err(too_large);
    };
    let Some(out_len) = out_row.checked_mul(h) else {
        return Err(too_large);
    };

    // Every byte is written below: a buffer of the right size is not cleared first.
    out.resize(out_len, 0);
    match encoding {
        RawEncoding::Rgb8 => rows(data, step, min_row, out, out_row, |s, d| {
            d.copy_from_slice(s);
        }),
        RawEncoding::Bgr8 => rows(data, step, min_row, out, out_row, bgr_row),
        RawEncoding::Rgba8 => rows(data, step, min_row, out, out_row, rgba_row::<0, 2>),
        RawEncoding::Bgra8 => rows(data, step, min_row, out, out_row, rgba_row::<2, 0>),
        RawEncoding::Mono8 => rows(data, step, min_row, out, out_row, mono8_row),
        RawEncoding::Mono16 if big_endian => {
            rows(data, step, min_row, out, out_row, mono16_row::<0>);
        }
        RawEncoding::Mono16 => rows(data, step, min_row, out, out_row, mono16_row::<1>),
        RawEncoding::Uyvy => rows(data, step, min_row, out, out_row, yuv_row::<true>),
        RawEncoding::Yuyv => rows(data, step, min_row, out, out_row, yuv_row::<false>),
        RawEncoding::Bayer8(pattern) => bayer(pattern, w, h, step, data, out),
    }
    Ok(())
}

/// Applies `convert` to each source row (`min_row` bytes every `step`) and its output row.
/// The caller has checked that `data` holds every row.
#[inline(always)]
fn rows(
    data: &[u8],
    step: usize,
    min_row: usize,
    out: &mut [u8],
    out_row: usize,
    convert: impl Fn(&[u8], &mut [u8]),
) {
    for (src, dst) in data.chunks(step).zip(out.chunks_exact_mut(out_row)) {
        if let Some(src) = src.get(..min_row) {
            convert(src, dst);
        }
    }
}

fn bgr_row(src: &[u8], dst: &mut [u8]) {
    let (src, _) = src.as_chunks::<3>();
    let (dst, _) = dst.as_chunks_mut::<3>();
    for (s, d) in src.iter().zip(dst) {
        *d = [s[2], s[1], s[0]];
    }
}

/// 4-byte pixels with red at byte `R` and blue at byte `B`; alpha (byte 3) is dropped.
fn rgba_row<const R: usize, const B: usize>(src: &[u8], dst: &mut [u8]) {
    let (src, _) = src.as_chunks::<4>();
    let (dst, _) = dst.as_chunks_mut::<3>();
    for (s, d) in src.iter().zip(dst) {
        *d = [s[R], s[1], s[B]];
    }
}

fn mono8_row(src: &[u8], dst: &mut [u8]) {
    let (dst, _) = dst.as_chunks_mut::<3>();
    for (&v, d) in src.iter().zip(dst) {
        *d = [v; 3];
    }
}

/// 16-bit grey whose high byte is byte `HI` of each sample (0: big-endian, 1: little-endian).
fn mono16_row<const HI: usize>(src: &[u8], dst: &mut [u8]) {
    let (src, _) = src.as_chunks::<2>();
    let (dst, _) = dst.as_chunks_mut::<3>();
    for (s, d) in src.iter().zip(dst) {
        *d = [s[HI]; 3];
    }
}

/// One pixel pair: `uyvy` selects U0 Y0 V0 Y1, otherwise Y0 U0 Y1 V0.
fn yuv_row<const UYVY: bool>(src: &[u8], dst: &mut [u8]) {
    let (src, _) = src.as_chunks::<4>();
    let (dst, _) = dst.as_chunks_mut::<6>();
    for (s, d) in src.iter().zip(dst) {
        let [y0, u, y1, v] = if UYVY {
            [s[1], s[0], s[3], s[2]]
        } else {
            [s[0], s[1], s[2], s[3]]
        };
        let chroma = bt601::chroma(u, v);
        let ([r0, g0, b0], [r1, g1, b1]) = (
            bt601::rgb(bt601::luma(y0), chroma),
            bt601::rgb(bt601::luma(y1), chroma),
        );
        *d = [r0, g0, b0, r1, g1, b1];
    }
}

/// Mirror-reflects an index into `0..n` (n ≥ 2): −1 → 1, n → n − 2.
#[inline(always)]
fn reflect(i: usize, delta: isize, n: usize) -> usize {
    match i.checked_add_signed(delta) {
        None => 1,
        Some(j) if j >= n => n - 2,
        Some(j) => j,
    }
}

/// Bilinear demosaic of an 8-bit mosaic (caller checked: w, h ≥ 2 and `data` holds every row).
fn bayer(pattern: BayerPattern, w: usize, h: usize, step: usize, data: &[u8], out: &mut [u8]) {
    const R: usize = 0;
    const B: usize = 2;
    // Non-green colour of even rows, and the column parity of green in even rows.
    let (even_colour, even_green) = match pattern {
        BayerPattern::Rggb => (R, 1),
        BayerPattern::Bggr => (B, 1),
        BayerPattern::Gbrg => (B, 0),
        BayerPattern::Grbg => (R, 0),
    };
    let row = |y: usize| data.get(y * step..y * step + w);
    for (y, dst) in out.chunks_exact_mut(w * 3).enumerate() {
        let (Some(prev), Some(cur), Some(next)) =
            (row(reflect(y, -1, h)), row(y), row(reflect(y, 1, h)))
        else {
            return;
        };
        let (dst, _) = dst.as_chunks_mut::<3>();
        let odd = y % 2;
        let green = even_green ^ odd;
        if (even_colour == R) == (odd == 0) {
            bayer_row::<R>(prev, cur, next, dst, green);
        } else {
            bayer_row::<B>(prev, cur, next, dst, green);
        }
    }
}

/// One output row whose non-green samples are colour `C` (0 red, 2 blue) and whose green samples
/// sit at columns of parity `green`.
fn bayer_row<const C: usize>(
    prev: &[u8],
    cur: &[u8],
    next: &[u8],
    dst: &mut [[u8; 3]],
    green: usize,
) {
    let w = cur.len();
    let (prev, next, dst) = (&prev[..w], &next[..w], &mut dst[..w]);
    let last = w - 1;
    dst[0] = bayer_px::<C>(prev, cur, next, 0, 1, 1, green == 0);
    for (x, d) in dst.iter_mut().enumerate().take(last).skip(1) {
        *d = bayer_px::<C>(prev, cur, next, x, x - 1, x + 1, x & 1 == green);
    }
    dst[last] = bayer_px::<C>(prev, cur, next, last, w - 2, w - 2, last & 1 == green);
}

/// The RGB at column `x`, with `l` and `r` the (possibly reflected) neighbouring columns.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn bayer_px<const C: usize>(
    prev: &[u8],
    cur: &[u8],
    next: &[u8],
    x: usize,
    l: usize,
    r: usize,
    is_green: bool,
) -> [u8; 3] {
    let up = u16::from(prev[x]);
    let down = u16::from(next[x]);
    let left = u16::from(cur[l]);
    let right = u16::from(cur[r]);
    let mut px = [0; 3];
    if is_green {
        px[1] = cur[x];
        px[C] = ((left + right + 1) >> 1) as u8;
        px[2 - C] = ((up + down + 1) >> 1) as u8;
    } else {
        let diag =
            u16::from(prev[l]) + u16::from(prev[r]) + u16::from(next[l]) + u16::from(next[r]);
        px[C] = cur[x];
        px[1] = ((up + down + left + right + 2) >> 2) as u8;
        px[2 - C] = ((diag + 2) >> 2) as u8;
    }
    px
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(
        enc: RawEncoding,
        w: u32,
        h: u32,
        step: u32,
        be: bool,
        data: &[u8],
    ) -> Result<Vec<u8>, PixelError> {
        let mut out = vec![0xEE; 5]; // stale contents must be cleared
        to_rgb(enc, w, h, step, be, data, &mut out)?;
        assert_eq!(out.len(), (w * h * 3) as usize);
        Ok(out)
    }

    #[test]
    fn parse_names() {
        for name in RawEncoding::SUPPORTED {
            let enc = RawEncoding::parse(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(RawEncoding::parse(enc.name()), Some(enc));
        }
        assert_eq!(RawEncoding::parse("8UC1"), Some(RawEncoding::Mono8));
        assert_eq!(RawEncoding::parse("16UC1"), Some(RawEncoding::Mono16));
        assert_eq!(RawEncoding::parse("uyvy"), Some(RawEncoding::Uyvy));
        assert_eq!(RawEncoding::parse("yuv422"), Some(RawEncoding::Uyvy));
        assert_eq!(RawEncoding::parse("yuyv"), Some(RawEncoding::Yuyv));
        assert_eq!(RawEncoding::parse("yuv422_yuy2"), Some(RawEncoding::Yuyv));
        assert_eq!(
            RawEncoding::parse("bayer_gbrg8"),
            Some(RawEncoding::Bayer8(BayerPattern::Gbrg))
        );
        for bad in ["RGB8", "rgb16", "bayer_rggb16", "", "8uc1", "nv12"] {
            assert_eq!(RawEncoding::parse(bad), None, "{bad}");
        }
        assert_eq!(RawEncoding::Uyvy.bytes_per_pixel(), 2);
        assert_eq!(RawEncoding::Mono16.bytes_per_pixel(), 2);
        assert_eq!(RawEncoding::Bayer8(BayerPattern::Rggb).bytes_per_pixel(), 1);
        assert_eq!(RawEncoding::Mono8.bytes_per_pixel(), 1);
        assert_eq!(RawEncoding::Bgra8.to_string(), "bgra8");
    }

    #[test]
    fn rgb8_with_padded_step() {
        // 2x2, step 8: two padding bytes (0xFF) per row.
        let data = [
            1, 2, 3, 4, 5, 6, 0xFF, 0xFF, 7, 8, 9, 10, 11, 12, 0xFF, 0xFF,
        ];
        let out = convert(RawEncoding::Rgb8, 2, 2, 8, false, &data).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
        // The last row may be unpadded.
        let out = convert(RawEncoding::Rgb8, 2, 2, 8, false, &data[..14]).unwrap();
        assert_eq!(out, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    }

    #[test]
    fn bgr8_swaps() {
        let data = [1, 2, 3, 4, 5, 6, 9, 7, 8, 9, 10, 11, 12, 9];
        let out = convert(RawEncoding::Bgr8, 2, 2, 7, false, &data).unwrap();
        assert_eq!(out, [3, 2, 1, 6, 5, 4, 9, 8, 7, 12, 11, 10]);
    }

    #[test]
    fn rgba8_and_bgra8_drop_alpha() {
        let data = [1, 2, 3, 200, 4, 5, 6, 201, 0, 0];
        assert_eq!(
            convert(RawEncoding::Rgba8, 2, 1, 10, false, &data).unwrap(),
            [1, 2, 3, 4, 5, 6]
        );
        assert_eq!(
            convert(RawEncoding::Bgra8, 2, 1, 10, false, &data).unwrap(),
            [3, 2, 1, 6, 5, 4]
        );
    }

    #[test]
    fn mono8_replicates() {
        let data = [10, 20, 0, 30, 40, 0];
        let out = convert(RawEncoding::Mono8, 2, 2, 3, false, &data).unwrap();
        assert_eq!(out, [10, 10, 10, 20, 20, 20, 30, 30, 30, 40, 40, 40]);
    }

    #[test]
    fn mono16_keeps_high_byte() {
        // Values 0x1234 and 0xABCD.
        let le = [0x34, 0x12, 0xCD, 0xAB];
        let be = [0x12, 0x34, 0xAB, 0xCD];
        let expect = [0x12, 0x12, 0x12, 0xAB, 0xAB, 0xAB];
        assert_eq!(
            convert(RawEncoding::Mono16, 2, 1, 4, false, &le).unwrap(),
            expect
        );
        assert_eq!(
            convert(RawEncoding::Mono16, 2, 1, 4, true, &be).unwrap(),
            expect
        );
    }

    /// The exact BT.601 limited-range formula, rounded and clamped.
    fn yuv_float(y: u8, u: u8, v: u8) -> [u8; 3] {
        let (y, cb, cr) = (y as f64 - 16.0, u as f64 - 128.0, v as f64 - 128.0);
        let c = |x: f64| x.round().clamp(0.0, 255.0) as u8;
        [
            c(1.164383 * y + 1.596027 * cr),
            c(1.164383 * y - 0.391762 * cb - 0.812968 * cr),
            c(1.164383 * y + 2.017232 * cb),
        ]
    }

    /// The forward transform of the brief, rounded: (Y, Cb, Cr) of an RGB colour.
    fn rgb_to_yuv(rgb: [u8; 3]) -> [u8; 3] {
        let [r, g, b] = rgb.map(|c| c as f64 / 255.0);
        let y = 16.0 + 65.481 * r + 128.553 * g + 24.966 * b;
        let cb = 128.0 - 37.797 * r - 74.203 * g + 112.0 * b;
        let cr = 128.0 + 112.0 * r - 93.786 * g - 18.214 * b;
        [y, cb, cr].map(|x| x.round() as u8)
    }

    #[test]
    fn yuv_known_colours() {
        // (RGB, its Y Cb Cr by the forward formula, what decoding those rounded values gives).
        let cases: [([u8; 3], [u8; 3], [u8; 3]); 6] = [
            ([0, 0, 0], [16, 128, 128], [0, 0, 0]),
            ([255, 255, 255], [235, 128, 128], [255, 255, 255]),
            ([128, 128, 128], [126, 128, 128], [128, 128, 128]),
            ([255, 0, 0], [81, 90, 240], [254, 0, 0]),
            ([0, 255, 0], [145, 54, 34], [0, 255, 1]),
            ([0, 0, 255], [41, 240, 110], [0, 0, 255]),
        ];
        for (rgb, yuv, decoded) in cases {
            assert_eq!(rgb_to_yuv(rgb), yuv, "{rgb:?}");
            let [y, u, v] = yuv;
            // Two identical pixels in each byte order.
            let uyvy = [u, y, v, y];
            let yuyv = [y, u, y, v];
            let want = [decoded, decoded].concat();
            assert_eq!(
                convert(RawEncoding::Uyvy, 2, 1, 4, false, &uyvy).unwrap(),
                want,
                "{rgb:?}"
            );
            assert_eq!(
                convert(RawEncoding::Yuyv, 2, 1, 4, false, &yuyv).unwrap(),
                want,
                "{rgb:?}"
            );
            for (a, b) in decoded.iter().zip(rgb) {
                assert!(a.abs_diff(b) <= 1, "{rgb:?} -> {decoded:?}");
            }
        }
        // The two luma samples of a pair are used separately; chroma is shared.
        let out = convert(RawEncoding::Uyvy, 2, 1, 4, false, &[128, 16, 128, 235]).unwrap();
        assert_eq!(out, [0, 0, 0, 255, 255, 255]);
        let out = convert(RawEncoding::Yuyv, 2, 1, 4, false, &[16, 128, 235, 128]).unwrap();
        assert_eq!(out, [0, 0, 0, 255, 255, 255]);
    }

    #[test]
    fn yuv_fixed_point_within_one_of_float_everywhere() {
        let mut worst = 0;
        let mut src = Vec::with_capacity(256 * 4);
        let mut out = Vec::new();
        // Every chroma pair in release; every 5th (0, 5, ..., 255) in debug builds, for speed.
        let stride = if cfg!(debug_assertions) { 5 } else { 1 };
        for u in (0..=255u8).step_by(stride) {
            for v in (0..=255u8).step_by(stride) {
                src.clear();
                for y in 0..=255u8 {
                    src.extend_from_slice(&[y, u, y, v]);
                }
                to_rgb(RawEncoding::Yuyv, 512, 1, 1024, false, &src, &mut out).unwrap();
                for y in 0..=255u8 {
                    let want = yuv_float(y, u, v);
                    let got = &out[y as usize * 6..y as usize * 6 + 3];
                    for (a, b) in got.iter().zip(want) {
                        worst = worst.max(a.abs_diff(b));
                    }
                }
            }
        }
        assert!(worst <= 1, "worst difference {worst}");
    }

    /// Samples an RGB image (`f(x, y)`) through a Bayer pattern.
    fn mosaic(
        pattern: BayerPattern,
        w: usize,
        h: usize,
        f: impl Fn(usize, usize) -> [u8; 3],
    ) -> Vec<u8> {
        let tl: [[usize; 2]; 2] = match pattern {
            BayerPattern::Rggb => [[0, 1], [1, 2]],
            BayerPattern::Bggr => [[2, 1], [1, 0]],
            BayerPattern::Gbrg => [[1, 2], [0, 1]],
            BayerPattern::Grbg => [[1, 0], [2, 1]],
        };
        let mut m = Vec::with_capacity(w * h);
        for y in 0..h {
            for x in 0..w {
                m.push(f(x, y)[tl[y % 2][x % 2]]);
            }
        }
        m
    }

    const PATTERNS: [BayerPattern; 4] = [
        BayerPattern::Rggb,
        BayerPattern::Bggr,
        BayerPattern::Gbrg,
        BayerPattern::Grbg,
    ];

    #[test]
    fn bayer_uniform_colour_is_exact() {
        let colour = [200, 100, 30];
        for p in PATTERNS {
            for (w, h) in [(2, 2), (3, 5), (6, 4), (7, 7)] {
                let m = mosaic(p, w, h, |_, _| colour);
                let out = convert(
                    RawEncoding::Bayer8(p),
                    w as u32,
                    h as u32,
                    w as u32,
                    false,
                    &m,
                )
                .unwrap();
                for px in out.chunks_exact(3) {
                    assert_eq!(px, colour, "{p:?} {w}x{h}");
                }
            }
        }
    }

    #[test]
    fn bayer_hand_made_rggb() {
        // R G / G B with distinct samples; every output checked against the bilinear rule
        // with mirrored borders (the 2x2 case reflects every neighbour onto the block itself).
        let m = [10, 20, 30, 40]; // R=10 G=20 / G=30 B=40
        let out = convert(RawEncoding::Bayer8(BayerPattern::Rggb), 2, 2, 2, false, &m).unwrap();
        assert_eq!(
            out,
            [
                10, 25, 40, // R site: G = mean(30, 30, 20, 20), B = 40
                10, 20, 40, // G in R row: R = left/right 10, B = up/down 40
                10, 30, 40, // G in B row: B = left/right 40, R = up/down 10
                10, 25, 40, // B site: G = mean(20, 20, 30, 30), R = 10
            ]
        );
    }

    #[test]
    fn bayer_horizontal_gradient_inside() {
        let (w, h) = (16, 8);
        let f = |x: usize, _| [(10 * x) as u8, (5 + 12 * x) as u8, (250 - 14 * x) as u8];
        for p in PATTERNS {
            let m = mosaic(p, w, h, f);
            // Pad the rows to check `step` here too.
            let step = w + 3;
            let mut padded = vec![0u8; step * h];
            for (dst, src) in padded.chunks_exact_mut(step).zip(m.chunks_exact(w)) {
                dst[..w].copy_from_slice(src);
            }
            let out = convert(
                RawEncoding::Bayer8(p),
                w as u32,
                h as u32,
                step as u32,
                false,
                &padded,
            )
            .unwrap();
            for y in 0..h {
                for x in 1..w - 1 {
                    let got = &out[(y * w + x) * 3..][..3];
                    for (a, b) in got.iter().zip(f(x, y)) {
                        assert!(
                            a.abs_diff(b) <= 1,
                            "{p:?} ({x},{y}) {got:?} vs {:?}",
                            f(x, y)
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn errors() {
        let data = [0u8; 64];
        assert_eq!(
            convert(RawEncoding::Rgb8, 0, 2, 6, false, &data),
            Err(PixelError::ZeroSize {
                width: 0,
                height: 2
            })
        );
        assert_eq!(
            convert(RawEncoding::Mono8, 4, 0, 4, false, &data),
            Err(PixelError::ZeroSize {
                width: 4,
                height: 0
            })
        );
        assert_eq!(
            convert(RawEncoding::Rgba8, 4, 2, 15, false, &data),
            Err(PixelError::StepTooSmall {
                encoding: RawEncoding::Rgba8,
                width: 4,
                step: 15,
                min: 16
            })
        );
        assert_eq!(
            convert(RawEncoding::Rgb8, 4, 4, 16, false, &data[..59]),
            Err(PixelError::DataTooShort {
                encoding: RawEncoding::Rgb8,
                width: 4,
                height: 4,
                step: 16,
                needed: 60,
                len: 59
            })
        );
        assert!(convert(RawEncoding::Rgb8, 4, 4, 16, false, &data[..60]).is_ok());
        assert_eq!(
            convert(RawEncoding::Yuyv, 3, 1, 8, false, &data),
            Err(PixelError::OddWidth {
                encoding: RawEncoding::Yuyv,
                width: 3
            })
        );
        assert!(matches!(
            convert(RawEncoding::Uyvy, 5, 1, 10, false, &data),
            Err(PixelError::OddWidth { width: 5, .. })
        ));
        assert!(matches!(
            convert(
                RawEncoding::Bayer8(BayerPattern::Bggr),
                1,
                8,
                1,
                false,
                &data
            ),
            Err(PixelError::TooSmall { .. })
        ));
        // Huge geometry with little data is an error, not an allocation.
        assert!(matches!(
            convert(
                RawEncoding::Mono16,
                u32::MAX,
                u32::MAX,
                u32::MAX,
                true,
                &data
            ),
            Err(PixelError::StepTooSmall { .. })
        ));
        assert!(matches!(
            convert(
                RawEncoding::Mono8,
                u32::MAX,
                u32::MAX,
                u32::MAX,
                true,
                &data
            ),
            Err(PixelError::DataTooShort { .. })
        ));
        let msg = convert(RawEncoding::Rgb8, 4, 4, 16, false, &data[..59])
            .unwrap_err()
            .to_string();
        assert_eq!(
            msg,
            "rgb8 4x4 with step 16 needs 60 bytes of data but has 59"
        );
        // `out` is untouched on error.
        let mut out = vec![1, 2, 3];
        assert!(to_rgb(RawEncoding::Rgb8, 4, 4, 16, false, &data[..10], &mut out).is_err());
        assert_eq!(out, [1, 2, 3]);
    }

    #[test]
    fn every_encoding_every_short_length_no_panic() {
        let data: Vec<u8> = (0..=255).cycle().take(6 * 5 * 4 + 7).collect();
        let encs = RawEncoding::SUPPORTED
            .iter()
            .filter_map(|n| RawEncoding::parse(n));
        for enc in encs {
            for (w, h) in [(1, 1), (2, 2), (6, 5), (3, 4)] {
                let step = w * enc.bytes_per_pixel() + 1;
                for n in 0..data.len() {
                    let _ = convert(enc, w, h, step, false, &data[..n]);
                }
            }
        }
    }

    #[test]
    fn timing_1280x720() {
        let (w, h) = (1280u32, 720u32);
        let iters = if cfg!(debug_assertions) { 2 } else { 50 };
        let data: Vec<u8> = (0..w as usize * h as usize * 4)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut out = Vec::new();
        for name in RawEncoding::SUPPORTED {
            let enc = RawEncoding::parse(name).unwrap();
            let step = w * enc.bytes_per_pixel();
            to_rgb(enc, w, h, step, false, &data, &mut out).unwrap();
            let t = std::time::Instant::now();
            for _ in 0..iters {
                to_rgb(enc, w, h, step, false, &data, &mut out).unwrap();
            }
            let ms = t.elapsed().as_secs_f64() * 1e3 / iters as f64;
            println!("to_rgb {name:>12} 1280x720: {ms:.3} ms");
        }
    }
}
