//! Decoding of the ROS 2 camera messages that MCAP files store with message encoding `cdr`.
//!
//! rosbag2 and mcap-ros2-support write OMG XCDR1 "plain CDR": a 4-byte encapsulation header
//! (`00 00` big-endian or `00 01` little-endian, then two option bytes, ignored), then the fields
//! in declaration order, each primitive aligned to its own size counted from the first byte after
//! the header. A string is a `u32` length that counts its trailing NUL, the bytes, then the NUL; a
//! sequence is a `u32` count then the elements; a fixed array has no count. [`Image`] and
//! [`CompressedImage`] borrow their strings and pixels from the input. Nothing here panics:
//! short, misaligned or foreign (XCDR2, parameter-list) payloads are a [`CdrError`].

const IMAGE: &str = "sensor_msgs/msg/Image";
const COMPRESSED_IMAGE: &str = "sensor_msgs/msg/CompressedImage";
const CAMERA_INFO: &str = "sensor_msgs/msg/CameraInfo";

/// Length of the encapsulation header that precedes every CDR payload.
const HEADER_LEN: usize = 4;

/// `builtin_interfaces/msg/Time`: seconds and nanoseconds since the epoch of the clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Time {
    /// Whole seconds.
    pub sec: i32,
    /// Nanoseconds within the second (normally below 1e9, not enforced).
    pub nanosec: u32,
}

impl Time {
    /// The time as nanoseconds: `sec * 1e9 + nanosec` (cannot overflow for any field values).
    pub const fn to_ns(&self) -> i64 {
        self.sec as i64 * 1_000_000_000 + self.nanosec as i64
    }
}

/// `std_msgs/msg/Header`: acquisition time and coordinate frame of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// When the data was acquired.
    pub stamp: Time,
    /// The coordinate frame the data is expressed in.
    pub frame_id: &'a str,
}

/// `sensor_msgs/msg/Image`: an uncompressed image, borrowing from the CDR payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Image<'a> {
    /// Stamp and camera frame.
    pub header: Header<'a>,
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
    /// Pixel encoding as written (`rgb8`, `bayer_rggb8`, `16UC1`, ...).
    pub encoding: &'a str,
    /// Whether multi-byte pixel values are big-endian.
    pub is_bigendian: bool,
    /// Row length in bytes (may include padding).
    pub step: u32,
    /// The pixel bytes, `step * height` of them when the writer was well-behaved (not checked here).
    pub data: &'a [u8],
}

/// `sensor_msgs/msg/CompressedImage`: an encoded (JPEG, PNG, ...) image, borrowing from the payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompressedImage<'a> {
    /// Stamp and camera frame.
    pub header: Header<'a>,
    /// Compression format as written (`jpeg`, `png`, `rgb8; jpeg compressed bgr8`, ...).
    pub format: &'a str,
    /// The compressed bytes.
    pub data: &'a [u8],
}

/// `sensor_msgs/msg/RegionOfInterest`: the sub-window of the full sensor an image covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct RegionOfInterest {
    /// Leftmost pixel of the region.
    pub x_offset: u32,
    /// Topmost pixel of the region.
    pub y_offset: u32,
    /// Height of the region (0: full resolution).
    pub height: u32,
    /// Width of the region (0: full resolution).
    pub width: u32,
    /// Whether a rectified image of this region should be computed.
    pub do_rectify: bool,
}

/// `sensor_msgs/msg/CameraInfo`: calibration of a camera (owned; the header is flattened).
#[derive(Debug, Clone, PartialEq)]
pub struct CameraInfo {
    /// `header.stamp`.
    pub stamp: Time,
    /// `header.frame_id`.
    pub frame_id: String,
    /// Image height the calibration applies to.
    pub height: u32,
    /// Image width the calibration applies to.
    pub width: u32,
    /// Distortion model name (`plumb_bob`, `rational_polynomial`, `equidistant`, ...).
    pub distortion_model: String,
    /// Distortion coefficients, as many as the model uses.
    pub d: Vec<f64>,
    /// Intrinsic matrix, 3×3 row-major.
    pub k: [f64; 9],
    /// Rectification rotation, 3×3 row-major.
    pub r: [f64; 9],
    /// Projection matrix, 3×4 row-major.
    pub p: [f64; 12],
    /// Horizontal binning factor (0 or 1: none).
    pub binning_x: u32,
    /// Vertical binning factor (0 or 1: none).
    pub binning_y: u32,
    /// Region of interest.
    pub roi: RegionOfInterest,
}

/// Why a CDR payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CdrError {
    /// The payload ends before a field (or its padding) does.
    #[error(
        "{message}: field `{field}` needs {needed} bytes at offset {offset} but the message has {len}"
    )]
    Truncated {
        /// The message type being decoded.
        message: &'static str,
        /// Dotted path of the field.
        field: &'static str,
        /// Byte offset in the payload (header included) where the field starts.
        offset: usize,
        /// Bytes the field needs.
        needed: usize,
        /// Length of the whole payload.
        len: usize,
    },
    /// The encapsulation header is not plain CDR (XCDR1).
    #[error(
        "{message}: encapsulation kind {kind:#06x} ({}) is not supported; only plain CDR \
         (XCDR1: 0x0000 big-endian, 0x0001 little-endian) is",
        encapsulation_name(*kind)
    )]
    Encapsulation {
        /// The message type being decoded.
        message: &'static str,
        /// The first two header bytes, big-endian (`0x0007` is CDR2_LE).
        kind: u16,
    },
    /// A string's bytes are not UTF-8.
    #[error("{message}: string `{field}` at offset {offset} is not valid UTF-8")]
    Utf8 {
        /// The message type being decoded.
        message: &'static str,
        /// Dotted path of the field.
        field: &'static str,
        /// Byte offset of the string's length prefix.
        offset: usize,
    },
    /// A string's last byte (per its length prefix) is not the NUL terminator.
    #[error(
        "{message}: string `{field}` at offset {offset} ({len} bytes counting its terminator) \
         does not end with a NUL byte"
    )]
    NoNul {
        /// The message type being decoded.
        message: &'static str,
        /// Dotted path of the field.
        field: &'static str,
        /// Byte offset of the string's length prefix.
        offset: usize,
        /// The length prefix.
        len: usize,
    },
    /// A `bool` byte is neither 0 nor 1 (usually a sign of a schema mismatch).
    #[error("{message}: bool field `{field}` at offset {offset} holds {value}, not 0 or 1")]
    Bool {
        /// The message type being decoded.
        message: &'static str,
        /// Dotted path of the field.
        field: &'static str,
        /// Byte offset of the field.
        offset: usize,
        /// The byte found.
        value: u8,
    },
}

/// The RTPS / DDS-XTypes name of an encapsulation identifier.
fn encapsulation_name(kind: u16) -> &'static str {
    match kind {
        0x0000 => "CDR_BE",
        0x0001 => "CDR_LE",
        0x0002 => "PL_CDR_BE",
        0x0003 => "PL_CDR_LE",
        0x0006 => "CDR2_BE, XCDR2",
        0x0007 => "CDR2_LE, XCDR2",
        0x0008 => "D_CDR2_BE, delimited XCDR2",
        0x0009 => "D_CDR2_LE, delimited XCDR2",
        0x000a => "PL_CDR2_BE, parameter-list XCDR2",
        0x000b => "PL_CDR2_LE, parameter-list XCDR2",
        0x0010 => "PLAIN_CDR2_BE, XCDR2",
        0x0011 => "PLAIN_CDR2_LE, XCDR2",
        0x0012 => "PL_CDR2_BE, parameter-list XCDR2",
        0x0013 => "PL_CDR2_LE, parameter-list XCDR2",
        0x0014 => "DELIMIT_CDR_BE, delimited XCDR2",
        0x0015 => "DELIMIT_CDR_LE, delimited XCDR2",
        _ => "unknown",
    }
}

/// A cursor over one plain-CDR payload.
struct Reader<'a> {
    buf: &'a [u8],
    /// Absolute offset of the next byte; may run past `buf.len()` after padding.
    pos: usize,
    little: bool,
    message: &'static str,
}

impl<'a> Reader<'a> {
    /// Checks the encapsulation header and positions the cursor after it.
    fn new(buf: &'a [u8], message: &'static str) -> Result<Self, CdrError> {
        let Some(&[b0, b1, _, _]) = buf.first_chunk::<HEADER_LEN>() else {
            return Err(CdrError::Truncated {
                message,
                field: "(encapsulation header)",
                offset: 0,
                needed: HEADER_LEN,
                len: buf.len(),
            });
        };
        let little = match u16::from_be_bytes([b0, b1]) {
            0x0000 => false,
            0x0001 => true,
            kind => return Err(CdrError::Encapsulation { message, kind }),
        };
        Ok(Self {
            buf,
            pos: HEADER_LEN,
            little,
            message,
        })
    }

    /// Skips padding so that the body offset is a multiple of `n` (a power of two).
    fn align(&mut self, n: usize) {
        let rel = self.pos - HEADER_LEN;
        self.pos = self.pos.saturating_add(rel.wrapping_neg() & (n - 1));
    }

    fn truncated(&self, field: &'static str, needed: usize) -> CdrError {
        CdrError::Truncated {
            message: self.message,
            field,
            offset: self.pos,
            needed,
            len: self.buf.len(),
        }
    }

    /// The next `n` bytes, unaligned.
    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], CdrError> {
        let bytes = self
            .pos
            .checked_add(n)
            .and_then(|end| self.buf.get(self.pos..end))
            .ok_or_else(|| self.truncated(field, n))?;
        self.pos += n;
        Ok(bytes)
    }

    /// The next `N`-byte primitive, aligned to `N`.
    fn prim<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], CdrError> {
        self.align(N);
        let bytes = self.take(field, N)?;
        bytes.try_into().map_err(|_| self.truncated(field, N))
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, CdrError> {
        Ok(self.prim::<1>(field)?[0])
    }

    fn bool(&mut self, field: &'static str) -> Result<bool, CdrError> {
        let offset = self.pos;
        match self.u8(field)? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(CdrError::Bool {
                message: self.message,
                field,
                offset,
                value,
            }),
        }
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, CdrError> {
        let b = self.prim::<4>(field)?;
        Ok(if self.little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, CdrError> {
        let b = self.prim::<4>(field)?;
        Ok(if self.little {
            i32::from_le_bytes(b)
        } else {
            i32::from_be_bytes(b)
        })
    }

    fn f64(&mut self, field: &'static str) -> Result<f64, CdrError> {
        let b = self.prim::<8>(field)?;
        Ok(if self.little {
            f64::from_le_bytes(b)
        } else {
            f64::from_be_bytes(b)
        })
    }

    /// A sequence or string length prefix.
    fn len(&mut self, field: &'static str) -> Result<usize, CdrError> {
        // u32 always fits in usize on the 32- and 64-bit targets lookout builds for.
        let n = self.u32(field)?;
        usize::try_from(n).map_err(|_| self.truncated(field, usize::MAX))
    }

    /// A string: length including the NUL, bytes, NUL. A length of 0 (not valid CDR, but written
    /// by some serializers for an empty string) is accepted as "".
    fn string(&mut self, field: &'static str) -> Result<&'a str, CdrError> {
        self.align(4);
        let offset = self.pos;
        let len = self.len(field)?;
        let bytes = self.take(field, len)?;
        let Some((&last, text)) = bytes.split_last() else {
            return Ok("");
        };
        if last != 0 {
            return Err(CdrError::NoNul {
                message: self.message,
                field,
                offset,
                len,
            });
        }
        std::str::from_utf8(text).map_err(|_| CdrError::Utf8 {
            message: self.message,
            field,
            offset,
        })
    }

    /// A `sequence<uint8>`.
    fn bytes(&mut self, field: &'static str) -> Result<&'a [u8], CdrError> {
        let n = self.len(field)?;
        self.take(field, n)
    }

    /// A `sequence<float64>`; the elements are aligned to 8 only when there are any.
    fn f64_seq(&mut self, field: &'static str) -> Result<Vec<f64>, CdrError> {
        let n = self.len(field)?;
        if n == 0 {
            return Ok(Vec::new());
        }
        self.align(8);
        // Check the whole extent before allocating, so a corrupt count cannot allocate much.
        let bytes = self.take(field, n.saturating_mul(8))?;
        let (values, _) = bytes.as_chunks::<8>();
        Ok(values
            .iter()
            .map(|&b| {
                if self.little {
                    f64::from_le_bytes(b)
                } else {
                    f64::from_be_bytes(b)
                }
            })
            .collect())
    }

    /// A `float64[N]` (no count).
    fn f64_array<const N: usize>(&mut self, field: &'static str) -> Result<[f64; N], CdrError> {
        let mut out = [0.0; N];
        for v in &mut out {
            *v = self.f64(field)?;
        }
        Ok(out)
    }

    fn time(&mut self, sec: &'static str, nanosec: &'static str) -> Result<Time, CdrError> {
        Ok(Time {
            sec: self.i32(sec)?,
            nanosec: self.u32(nanosec)?,
        })
    }

    fn header(&mut self) -> Result<Header<'a>, CdrError> {
        Ok(Header {
            stamp: self.time("header.stamp.sec", "header.stamp.nanosec")?,
            frame_id: self.string("header.frame_id")?,
        })
    }
}

/// Decodes a `sensor_msgs/msg/Image` from a CDR payload (encapsulation header included).
///
/// Trailing bytes after `data` (alignment padding some writers add) are ignored. That `data`
/// holds `step * height` bytes is left to the pixel conversion to check.
pub fn parse_image(cdr: &[u8]) -> Result<Image<'_>, CdrError> {
    let mut r = Reader::new(cdr, IMAGE)?;
    Ok(Image {
        header: r.header()?,
        height: r.u32("height")?,
        width: r.u32("width")?,
        encoding: r.string("encoding")?,
        is_bigendian: r.u8("is_bigendian")? != 0,
        step: r.u32("step")?,
        data: r.bytes("data")?,
    })
}

/// Decodes a `sensor_msgs/msg/CompressedImage` from a CDR payload (encapsulation header included).
pub fn parse_compressed_image(cdr: &[u8]) -> Result<CompressedImage<'_>, CdrError> {
    let mut r = Reader::new(cdr, COMPRESSED_IMAGE)?;
    Ok(CompressedImage {
        header: r.header()?,
        format: r.string("format")?,
        data: r.bytes("data")?,
    })
}

/// Decodes a `sensor_msgs/msg/CameraInfo` from a CDR payload (encapsulation header included).
pub fn parse_camera_info(cdr: &[u8]) -> Result<CameraInfo, CdrError> {
    let mut r = Reader::new(cdr, CAMERA_INFO)?;
    let header = r.header()?;
    Ok(CameraInfo {
        stamp: header.stamp,
        frame_id: header.frame_id.to_owned(),
        height: r.u32("height")?,
        width: r.u32("width")?,
        distortion_model: r.string("distortion_model")?.to_owned(),
        d: r.f64_seq("d")?,
        k: r.f64_array::<9>("k")?,
        r: r.f64_array::<9>("r")?,
        p: r.f64_array::<12>("p")?,
        binning_x: r.u32("binning_x")?,
        binning_y: r.u32("binning_y")?,
        roi: RegionOfInterest {
            x_offset: r.u32("roi.x_offset")?,
            y_offset: r.u32("roi.y_offset")?,
            height: r.u32("roi.height")?,
            width: r.u32("roi.width")?,
            do_rectify: r.bool("roi.do_rectify")?,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test-only plain-CDR writer: the mirror image of `Reader`.
    struct Writer {
        buf: Vec<u8>,
        little: bool,
        /// The byte written as alignment padding (the reader must not care what it is).
        pad: u8,
    }

    impl Writer {
        fn new(little: bool) -> Self {
            Self {
                buf: vec![0, u8::from(little), 0, 0],
                little,
                pad: 0xAA,
            }
        }
        fn align(&mut self, n: usize) {
            while !(self.buf.len() - HEADER_LEN).is_multiple_of(n) {
                self.buf.push(self.pad);
            }
        }
        fn u8(&mut self, v: u8) -> &mut Self {
            self.buf.push(v);
            self
        }
        fn u32(&mut self, v: u32) -> &mut Self {
            self.align(4);
            let b = if self.little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            self.buf.extend_from_slice(&b);
            self
        }
        fn i32(&mut self, v: i32) -> &mut Self {
            self.u32(v as u32)
        }
        fn f64(&mut self, v: f64) -> &mut Self {
            self.align(8);
            let b = if self.little {
                v.to_le_bytes()
            } else {
                v.to_be_bytes()
            };
            self.buf.extend_from_slice(&b);
            self
        }
        fn string(&mut self, s: &str) -> &mut Self {
            self.u32(s.len() as u32 + 1);
            self.buf.extend_from_slice(s.as_bytes());
            self.buf.push(0);
            self
        }
        fn bytes(&mut self, b: &[u8]) -> &mut Self {
            self.u32(b.len() as u32);
            self.buf.extend_from_slice(b);
            self
        }
        fn f64_seq(&mut self, v: &[f64]) -> &mut Self {
            self.u32(v.len() as u32);
            for &x in v {
                self.f64(x);
            }
            self
        }
        fn header(&mut self, h: &Header) -> &mut Self {
            self.i32(h.stamp.sec)
                .u32(h.stamp.nanosec)
                .string(h.frame_id)
        }
    }

    fn write_image(img: &Image, little: bool) -> Vec<u8> {
        let mut w = Writer::new(little);
        w.header(&img.header)
            .u32(img.height)
            .u32(img.width)
            .string(img.encoding)
            .u8(u8::from(img.is_bigendian))
            .u32(img.step)
            .bytes(img.data);
        w.buf
    }

    fn write_compressed(img: &CompressedImage, little: bool) -> Vec<u8> {
        let mut w = Writer::new(little);
        w.header(&img.header).string(img.format).bytes(img.data);
        w.buf
    }

    fn write_camera_info(ci: &CameraInfo, little: bool) -> Vec<u8> {
        let mut w = Writer::new(little);
        w.header(&Header {
            stamp: ci.stamp,
            frame_id: &ci.frame_id,
        })
        .u32(ci.height)
        .u32(ci.width)
        .string(&ci.distortion_model)
        .f64_seq(&ci.d);
        for &v in ci.k.iter().chain(&ci.r).chain(&ci.p) {
            w.f64(v);
        }
        w.u32(ci.binning_x)
            .u32(ci.binning_y)
            .u32(ci.roi.x_offset)
            .u32(ci.roi.y_offset)
            .u32(ci.roi.height)
            .u32(ci.roi.width)
            .u8(u8::from(ci.roi.do_rectify));
        w.buf
    }

    const PIXELS: [u8; 12] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];

    fn sample_image() -> Image<'static> {
        Image {
            header: Header {
                stamp: Time {
                    sec: -3,
                    nanosec: 999_999_999,
                },
                // 5 bytes + NUL: the next u32 needs 2 bytes of padding.
                frame_id: "cam_1",
            },
            height: 2,
            width: 2,
            encoding: "bgr8",
            is_bigendian: true,
            step: 6,
            data: &PIXELS,
        }
    }

    fn sample_camera_info(d: Vec<f64>) -> CameraInfo {
        let seq = |n: usize, base: f64| -> Vec<f64> { (0..n).map(|i| base + i as f64).collect() };
        CameraInfo {
            stamp: Time {
                sec: 1_700_000_000,
                nanosec: 5,
            },
            frame_id: "optical".into(),
            height: 720,
            width: 1280,
            distortion_model: "plumb_bob".into(),
            d,
            k: seq(9, 0.5).try_into().unwrap(),
            r: seq(9, -4.25).try_into().unwrap(),
            p: seq(12, 1e6).try_into().unwrap(),
            binning_x: 1,
            binning_y: 2,
            roi: RegionOfInterest {
                x_offset: 3,
                y_offset: 4,
                height: 5,
                width: 6,
                do_rectify: true,
            },
        }
    }

    #[test]
    fn time_to_ns() {
        let t = Time { sec: 2, nanosec: 5 };
        assert_eq!(t.to_ns(), 2_000_000_005);
        let t = Time {
            sec: -1,
            nanosec: 500_000_000,
        };
        assert_eq!(t.to_ns(), -500_000_000);
        let t = Time {
            sec: i32::MIN,
            nanosec: u32::MAX,
        };
        assert_eq!(t.to_ns(), i32::MIN as i64 * 1_000_000_000 + u32::MAX as i64);
    }

    #[test]
    fn image_round_trip_both_endians() {
        let img = sample_image();
        for little in [true, false] {
            let bytes = write_image(&img, little);
            assert_eq!(parse_image(&bytes).unwrap(), img, "little={little}");
            // Trailing padding after the last field is ignored.
            let mut padded = bytes.clone();
            padded.extend_from_slice(&[0, 0, 0]);
            assert_eq!(parse_image(&padded).unwrap(), img);
        }
        // The two encodings really differ (the swap is exercised).
        assert_ne!(write_image(&img, true), write_image(&img, false));
    }

    #[test]
    fn compressed_image_round_trip_both_endians() {
        let jpeg = [0xFF, 0xD8, 0xFF, 0xE0, 0, 0x10];
        let img = CompressedImage {
            header: Header {
                stamp: Time {
                    sec: 12,
                    nanosec: 34,
                },
                frame_id: "",
            },
            format: "jpeg",
            data: &jpeg,
        };
        for little in [true, false] {
            let bytes = write_compressed(&img, little);
            assert_eq!(parse_compressed_image(&bytes).unwrap(), img);
        }
    }

    #[test]
    fn camera_info_round_trip_both_endians() {
        for d in [vec![], vec![-0.25], vec![0.1, -0.2, 0.001, 0.002, 0.05]] {
            let ci = sample_camera_info(d);
            for little in [true, false] {
                let bytes = write_camera_info(&ci, little);
                assert_eq!(parse_camera_info(&bytes).unwrap(), ci, "little={little}");
            }
        }
    }

    #[test]
    fn every_truncation_is_an_error() {
        let img = sample_image();
        let ci = sample_camera_info(vec![0.1, 0.2, 0.3, 0.4, 0.5]);
        let jpeg = [9u8; 7];
        let comp = CompressedImage {
            header: img.header,
            format: "png",
            data: &jpeg,
        };
        for little in [true, false] {
            let bytes = write_image(&img, little);
            for n in 0..bytes.len() {
                let err = parse_image(&bytes[..n]).unwrap_err();
                assert!(
                    matches!(err, CdrError::Truncated { len, .. } if len == n),
                    "{err}"
                );
            }
            let bytes = write_compressed(&comp, little);
            for n in 0..bytes.len() {
                assert!(parse_compressed_image(&bytes[..n]).is_err());
            }
            let bytes = write_camera_info(&ci, little);
            for n in 0..bytes.len() {
                assert!(parse_camera_info(&bytes[..n]).is_err());
            }
        }
    }

    #[test]
    fn corrupted_bytes_never_panic() {
        let img = sample_image();
        let ci = sample_camera_info(vec![0.1, 0.2]);
        for bytes in [write_image(&img, true), write_camera_info(&ci, false)] {
            for i in 0..bytes.len() {
                for v in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
                    let mut b = bytes.clone();
                    b[i] = v;
                    let _ = parse_image(&b);
                    let _ = parse_compressed_image(&b);
                    let _ = parse_camera_info(&b);
                }
            }
        }
        // Pseudo-random payloads behind a valid header.
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        for len in 0..300 {
            let mut b = vec![0, 1, 0, 0];
            for _ in 0..len {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b.push(state as u8);
            }
            let _ = parse_image(&b);
            let _ = parse_compressed_image(&b);
            let _ = parse_camera_info(&b);
        }
    }

    #[test]
    fn string_without_nul_is_an_error() {
        let mut bytes = write_image(&sample_image(), true);
        // "cam_1\0": length prefix at 12..16, text at 16..21, NUL at 21.
        assert_eq!(&bytes[16..22], b"cam_1\0");
        bytes[21] = b'x';
        let err = parse_image(&bytes).unwrap_err();
        assert_eq!(
            err,
            CdrError::NoNul {
                message: IMAGE,
                field: "header.frame_id",
                offset: 12,
                len: 6
            }
        );
        assert!(err.to_string().contains("`header.frame_id`"), "{err}");
    }

    #[test]
    fn invalid_utf8_is_an_error() {
        let mut bytes = write_image(&sample_image(), true);
        bytes[16] = 0xFF;
        assert!(matches!(
            parse_image(&bytes),
            Err(CdrError::Utf8 {
                field: "header.frame_id",
                offset: 12,
                ..
            })
        ));
    }

    #[test]
    fn zero_length_string_reads_as_empty() {
        let mut w = Writer::new(true);
        w.i32(1).u32(2).u32(0).string("jpeg").bytes(&[1, 2]);
        let img = parse_compressed_image(&w.buf).unwrap();
        assert_eq!(img.header.frame_id, "");
        assert_eq!(img.format, "jpeg");
        assert_eq!(img.data, &[1, 2]);
    }

    #[test]
    fn bad_bool_is_an_error() {
        let ci = sample_camera_info(vec![]);
        let mut bytes = write_camera_info(&ci, true);
        let last = bytes.len() - 1;
        bytes[last] = 2;
        assert!(matches!(
            parse_camera_info(&bytes),
            Err(CdrError::Bool {
                field: "roi.do_rectify",
                value: 2,
                ..
            })
        ));
    }

    #[test]
    fn foreign_encapsulations_are_rejected_by_name() {
        let mut bytes = write_image(&sample_image(), true);
        for kind in [0x02u8, 0x03, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x11, 0x42] {
            bytes[1] = kind;
            let err = parse_image(&bytes).unwrap_err();
            assert_eq!(
                err,
                CdrError::Encapsulation {
                    message: IMAGE,
                    kind: kind as u16
                }
            );
        }
        bytes[1] = 0x07;
        let msg = parse_image(&bytes).unwrap_err().to_string();
        assert!(msg.contains("0x0007") && msg.contains("CDR2_LE"), "{msg}");
        bytes[0] = 1;
        bytes[1] = 0;
        assert!(matches!(
            parse_camera_info(&bytes),
            Err(CdrError::Encapsulation { kind: 0x0100, .. })
        ));
        assert!(matches!(
            parse_image(&[0, 1, 0]),
            Err(CdrError::Truncated { needed: 4, .. })
        ));
    }

    /// A 2×1 `rgb8` image (one red, one green pixel), little-endian, laid out by hand from the
    /// spec so that a bug shared by `Writer` and `Reader` cannot hide:
    ///
    /// | offset | body | bytes          | field                                  |
    /// |--------|------|----------------|----------------------------------------|
    /// | 0      | -    | 00 01 00 00    | encapsulation CDR_LE, options          |
    /// | 4      | 0    | 01 00 00 00    | header.stamp.sec = 1                   |
    /// | 8      | 4    | 02 00 00 00    | header.stamp.nanosec = 2               |
    /// | 12     | 8    | 04 00 00 00    | header.frame_id length 4 (with NUL)    |
    /// | 16     | 12   | 63 61 6d 00    | "cam" NUL                              |
    /// | 20     | 16   | 01 00 00 00    | height = 1                             |
    /// | 24     | 20   | 02 00 00 00    | width = 2                              |
    /// | 28     | 24   | 05 00 00 00    | encoding length 5                      |
    /// | 32     | 28   | 72 67 62 38 00 | "rgb8" NUL                             |
    /// | 37     | 33   | 00             | is_bigendian = 0                       |
    /// | 38     | 34   | 00 00          | padding: step is aligned to body 36    |
    /// | 40     | 36   | 06 00 00 00    | step = 6                               |
    /// | 44     | 40   | 06 00 00 00    | data count 6                           |
    /// | 48     | 44   | ff 00 00 00 ff 00 | data                                |
    const TINY_IMAGE_LE: [u8; 54] = [
        0x00, 0x01, 0x00, 0x00, // encapsulation
        0x01, 0x00, 0x00, 0x00, // sec
        0x02, 0x00, 0x00, 0x00, // nanosec
        0x04, 0x00, 0x00, 0x00, // frame_id length
        0x63, 0x61, 0x6d, 0x00, // "cam\0"
        0x01, 0x00, 0x00, 0x00, // height
        0x02, 0x00, 0x00, 0x00, // width
        0x05, 0x00, 0x00, 0x00, // encoding length
        0x72, 0x67, 0x62, 0x38, 0x00, // "rgb8\0"
        0x00, // is_bigendian
        0x00, 0x00, // padding
        0x06, 0x00, 0x00, 0x00, // step
        0x06, 0x00, 0x00, 0x00, // data count
        0xff, 0x00, 0x00, 0x00, 0xff, 0x00, // data
    ];

    fn tiny_image() -> Image<'static> {
        Image {
            header: Header {
                stamp: Time { sec: 1, nanosec: 2 },
                frame_id: "cam",
            },
            height: 1,
            width: 2,
            encoding: "rgb8",
            is_bigendian: false,
            step: 6,
            data: &[0xff, 0, 0, 0, 0xff, 0],
        }
    }

    #[test]
    fn hand_made_image_bytes() {
        assert_eq!(parse_image(&TINY_IMAGE_LE).unwrap(), tiny_image());
        let mut w = Writer::new(true);
        w.pad = 0;
        w.header(&tiny_image().header)
            .u32(1)
            .u32(2)
            .string("rgb8")
            .u8(0)
            .u32(6)
            .bytes(&[0xff, 0, 0, 0, 0xff, 0]);
        assert_eq!(w.buf, TINY_IMAGE_LE);

        // The same message big-endian: every multi-byte integer reversed, nothing else moves.
        let mut be = TINY_IMAGE_LE;
        be[1] = 0x00;
        for at in [4, 8, 12, 20, 24, 28, 40, 44] {
            be[at..at + 4].reverse();
        }
        assert_eq!(parse_image(&be).unwrap(), tiny_image());
    }

    #[test]
    fn truncated_message_text() {
        // The tiny image's fields up to the data count, then a count of 640*480*3 and only
        // 1000 bytes in all.
        let mut bytes = TINY_IMAGE_LE[..44].to_vec();
        bytes.extend_from_slice(&921_600u32.to_le_bytes());
        bytes.resize(1000, 0);
        assert_eq!(
            parse_image(&bytes).unwrap_err().to_string(),
            "sensor_msgs/msg/Image: field `data` needs 921600 bytes at offset 48 but the message has 1000"
        );
    }

    /// The start of a `CameraInfo` laid out by hand: the first `d` element is aligned to 8
    /// counted from the body (body offset 40 = absolute 44), not from the buffer start.
    ///
    /// | offset | body | bytes       | field                                   |
    /// |--------|------|-------------|-----------------------------------------|
    /// | 0      | -    | 00 01 00 00 | encapsulation CDR_LE                    |
    /// | 4      | 0    | 07 00 00 00 | header.stamp.sec = 7                    |
    /// | 8      | 4    | 00 00 00 00 | header.stamp.nanosec = 0                |
    /// | 12     | 8    | 01 00 00 00 | frame_id length 1                       |
    /// | 16     | 12   | 00          | "" NUL                                  |
    /// | 17     | 13   | 00 00 00    | padding                                 |
    /// | 20     | 16   | 04 00 00 00 | height = 4                              |
    /// | 24     | 20   | 08 00 00 00 | width = 8                               |
    /// | 28     | 24   | 01 00 00 00 | distortion_model length 1               |
    /// | 32     | 28   | 00          | "" NUL                                  |
    /// | 33     | 29   | 00 00 00    | padding                                 |
    /// | 36     | 32   | 01 00 00 00 | d count 1                               |
    /// | 40     | 36   | 00 00 00 00 | padding to body 40                      |
    /// | 44     | 40   | 8 bytes     | d[0] = 1.5 (00 00 00 00 00 00 f8 3f)    |
    /// | 52     | 48   | 240 bytes   | k, r, p (30 doubles, already aligned)   |
    /// | 292    | 288  | 6 × u32     | binning_x, binning_y, roi offsets/size  |
    /// | 316    | 312  | 01          | roi.do_rectify                          |
    #[test]
    fn hand_made_camera_info_alignment() {
        let mut bytes: Vec<u8> = vec![
            0x00, 0x01, 0x00, 0x00, // encapsulation
            0x07, 0x00, 0x00, 0x00, // sec
            0x00, 0x00, 0x00, 0x00, // nanosec
            0x01, 0x00, 0x00, 0x00, // frame_id length
            0x00, 0x00, 0x00, 0x00, // "" + padding
            0x04, 0x00, 0x00, 0x00, // height
            0x08, 0x00, 0x00, 0x00, // width
            0x01, 0x00, 0x00, 0x00, // distortion_model length
            0x00, 0x00, 0x00, 0x00, // "" + padding
            0x01, 0x00, 0x00, 0x00, // d count
            0x00, 0x00, 0x00, 0x00, // padding
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xf8, 0x3f, // d[0] = 1.5
        ];
        assert_eq!(bytes.len(), 52);
        for i in 0..30 {
            bytes.extend_from_slice(&(i as f64).to_le_bytes());
        }
        for v in [1u32, 1, 10, 20, 30, 40] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        bytes.push(1);
        assert_eq!(bytes.len(), 317);
        let ci = parse_camera_info(&bytes).unwrap();
        assert_eq!(ci.d, vec![1.5]);
        assert_eq!(ci.k[0], 0.0);
        assert_eq!(ci.p[11], 29.0);
        assert_eq!((ci.height, ci.width), (4, 8));
        assert_eq!(
            ci.roi,
            RegionOfInterest {
                x_offset: 10,
                y_offset: 20,
                height: 30,
                width: 40,
                do_rectify: true
            }
        );
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A `tf2_msgs/TFMessage` as serialized by a ROS 2 toolchain (the vector used by the
    /// @foxglove/cdr test suite): one transform, "base_link" → "radar", translation.x = 3.835,
    /// rotation w = 1. Read with the private `Reader` to check the primitives against bytes
    /// this crate did not write.
    #[test]
    fn external_tf_message_vector() {
        let bytes = hex(concat!(
            "0001000001000000cce0d158f08cf9060a000000626173655f6c696e6b000000",
            "060000007261646172000000ae47e17a14ae0e40000000000000000000000000",
            "0000000000000000000000000000000000000000000000000000000000000000",
            "0000f03f"
        ));
        let mut r = Reader::new(&bytes, "tf2_msgs/msg/TFMessage").unwrap();
        assert_eq!(r.len("transforms").unwrap(), 1);
        assert_eq!(r.u32("sec").unwrap(), 1_490_149_580);
        assert_eq!(r.u32("nsec").unwrap(), 117_017_840);
        assert_eq!(r.string("frame_id").unwrap(), "base_link");
        assert_eq!(r.string("child_frame_id").unwrap(), "radar");
        let v: [f64; 7] = r.f64_array("transform").unwrap();
        assert_eq!(v, [3.835, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(r.pos, bytes.len());
    }
}
