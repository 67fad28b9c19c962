//! Image → network input, exactly as each reference implementation prepares it.
//!
//! - YOLOv8 (ultralytics `LetterBox(auto=False)`): scale by r = min(H/h, W/w) to
//!   (round(w·r), round(h·r)), centre on a 114-grey canvas (top = round(dh/2 − 0.1)),
//!   RGB, /255.
//! - YOLOX (`yolox/data/data_augment.py::preproc`): scale to (int(w·r), int(h·r)), place
//!   at the top-left of a 114 canvas, BGR, 0..255.
//!
//! Both resize with OpenCV's uint8 `INTER_LINEAR`, reproduced here bit for bit (11-bit
//! fixed-point weights, OpenCV's SIMD rounding of the vertical pass): the resize decides
//! borderline detections, so "close" is not enough.

use crate::types::BoxXyxy;

/// Which reference's pre-processing to apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputLayout {
    /// Centred letterbox, RGB, values /255.
    Yolov8,
    /// Top-left placement, BGR, values 0..255.
    Yolox,
}

/// Maps boxes from the network's input pixels back to source-image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageFromModel {
    /// Left/top padding in model pixels.
    pub pad_left: f32,
    pub pad_top: f32,
    /// Resized size over source size, per axis.
    pub gain_x: f32,
    pub gain_y: f32,
    pub image_width: u32,
    pub image_height: u32,
}

impl ImageFromModel {
    /// The source-image box of a box in model-input pixels, clipped to the image.
    pub fn box_in_image(&self, box_in_model: &BoxXyxy) -> BoxXyxy {
        let (w, h) = (self.image_width as f32, self.image_height as f32);
        let x = |v: f32| ((v - self.pad_left) / self.gain_x).clamp(0.0, w);
        let y = |v: f32| ((v - self.pad_top) / self.gain_y).clamp(0.0, h);
        BoxXyxy::new(
            x(box_in_model.x1),
            y(box_in_model.y1),
            x(box_in_model.x2),
            y(box_in_model.y2),
        )
    }
}

/// Where the resized image lands on the model canvas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    pub resized_width: usize,
    pub resized_height: usize,
    pub left: usize,
    pub top: usize,
}

impl InputLayout {
    /// The resized size and offset of a `width`×`height` image on a `model_w`×`model_h` canvas.
    pub fn placement(
        &self,
        width: usize,
        height: usize,
        model_w: usize,
        model_h: usize,
    ) -> Placement {
        let r = (model_h as f64 / height as f64).min(model_w as f64 / width as f64);
        match self {
            InputLayout::Yolov8 => {
                // Python's round() is half-to-even; `round_ties_even` matches it.
                let rw = ((width as f64 * r).round_ties_even() as usize).clamp(1, model_w);
                let rh = ((height as f64 * r).round_ties_even() as usize).clamp(1, model_h);
                let dw = (model_w - rw) as f64 / 2.0;
                let dh = (model_h - rh) as f64 / 2.0;
                Placement {
                    resized_width: rw,
                    resized_height: rh,
                    left: (dw - 0.1).round_ties_even().max(0.0) as usize,
                    top: (dh - 0.1).round_ties_even().max(0.0) as usize,
                }
            }
            InputLayout::Yolox => Placement {
                resized_width: ((width as f64 * r) as usize).clamp(1, model_w),
                resized_height: ((height as f64 * r) as usize).clamp(1, model_h),
                left: 0,
                top: 0,
            },
        }
    }

    /// The transform back to source pixels. YOLOv8 divides by the per-axis gain
    /// (ultralytics 8.4 `scale_boxes`); YOLOX by its unrounded ratio r = min(H/h, W/w).
    pub fn image_from_model(
        &self,
        width: usize,
        height: usize,
        model_w: usize,
        model_h: usize,
    ) -> ImageFromModel {
        let p = self.placement(width, height, model_w, model_h);
        let (gain_x, gain_y) = match self {
            InputLayout::Yolov8 => (
                p.resized_width as f32 / width as f32,
                p.resized_height as f32 / height as f32,
            ),
            InputLayout::Yolox => {
                let r = (model_h as f64 / height as f64).min(model_w as f64 / width as f64) as f32;
                (r, r)
            }
        };
        ImageFromModel {
            pad_left: p.left as f32,
            pad_top: p.top as f32,
            gain_x,
            gain_y,
            image_width: width as u32,
            image_height: height as u32,
        }
    }
}

/// Pre-processes images into a reused CHW f32 buffer (no allocation per frame once warm).
#[derive(Debug)]
pub struct Preprocessor {
    layout: InputLayout,
    model_w: usize,
    model_h: usize,
    resized: Vec<u8>,
    rows: LinearRows,
    input: Vec<f32>,
    /// [`Preprocessor::run_canvas`]'s output, `[H, W, 3]` bytes.
    canvas: Vec<u8>,
}

impl Preprocessor {
    pub fn new(layout: InputLayout, model_w: usize, model_h: usize) -> Self {
        Self {
            layout,
            model_w,
            model_h,
            resized: Vec::new(),
            rows: LinearRows::default(),
            input: vec![0.0; 3 * model_w * model_h],
            canvas: Vec::new(),
        }
    }

    pub fn model_size(&self) -> (usize, usize) {
        (self.model_w, self.model_h)
    }

    /// The last [`Preprocessor::run`]'s output `[3, H, W]`.
    pub fn input(&self) -> &[f32] {
        &self.input
    }

    /// Fills the network input from an RGB8 image (`rgb` is `width * height * 3` bytes) and
    /// returns it (`[3, H, W]`, row-major) with the transform back to image pixels.
    pub fn run(&mut self, rgb: &[u8], width: usize, height: usize) -> (&[f32], ImageFromModel) {
        let (p, resized) = self.resize(rgb, width, height);
        let (rw, rh) = (p.resized_width, p.resized_height);
        let resized: &[u8] = if resized { &self.resized } else { rgb };
        let (scale, bgr) = match self.layout {
            InputLayout::Yolov8 => (1.0 / 255.0, false),
            InputLayout::Yolox => (1.0, true),
        };
        let plane = self.model_w * self.model_h;
        let pad = PAD as f32 * scale;
        self.input.fill(pad);
        for y in 0..rh {
            let src_row = &resized[y * rw * 3..(y + 1) * rw * 3];
            let dst = (y + p.top) * self.model_w + p.left;
            for (x, px) in src_row.chunks_exact(3).enumerate() {
                let (c0, c2) = if bgr { (px[2], px[0]) } else { (px[0], px[2]) };
                self.input[dst + x] = c0 as f32 * scale;
                self.input[plane + dst + x] = px[1] as f32 * scale;
                self.input[2 * plane + dst + x] = c2 as f32 * scale;
            }
        }
        let transform = self
            .layout
            .image_from_model(width, height, self.model_w, self.model_h);
        (&self.input, transform)
    }

    /// The same letterbox as [`Preprocessor::run`] as bytes: the model canvas `[H, W, 3]`,
    /// RGB, padded with 114, before the layout's channel order and scaling (which
    /// [`canvas_to_input`] applies on the model's device, so a frame crosses to a GPU as a
    /// quarter of the f32 bytes).
    pub fn run_canvas(
        &mut self,
        rgb: &[u8],
        width: usize,
        height: usize,
    ) -> (&[u8], ImageFromModel) {
        let (p, resized) = self.resize(rgb, width, height);
        let (rw, rh) = (p.resized_width, p.resized_height);
        let resized: &[u8] = if resized { &self.resized } else { rgb };
        self.canvas.clear();
        self.canvas.resize(self.model_w * self.model_h * 3, PAD);
        for y in 0..rh {
            let dst = ((y + p.top) * self.model_w + p.left) * 3;
            self.canvas[dst..dst + rw * 3].copy_from_slice(&resized[y * rw * 3..(y + 1) * rw * 3]);
        }
        let transform = self
            .layout
            .image_from_model(width, height, self.model_w, self.model_h);
        (&self.canvas, transform)
    }

    /// Where the image lands, and whether it was resized into `self.resized` (`false`: the
    /// image already has the resized size).
    fn resize(&mut self, rgb: &[u8], width: usize, height: usize) -> (Placement, bool) {
        assert_eq!(rgb.len(), width * height * 3, "RGB buffer size");
        let p = self
            .layout
            .placement(width, height, self.model_w, self.model_h);
        let (rw, rh) = (p.resized_width, p.resized_height);
        if (rw, rh) == (width, height) {
            return (p, false);
        }
        self.resized.resize(rw * rh * 3, 0);
        self.rows
            .resize(rgb, width, height, &mut self.resized, rw, rh);
        (p, true)
    }
}

/// The letterbox's grey.
const PAD: u8 = 114;

/// A [`Preprocessor::run_canvas`] canvas → the network input `[1, 3, H, W]` in `dtype` on
/// `device`: uploaded as bytes, then put in the layout's channel order (`bgr` holds the
/// indices `[2, 1, 0]` on `device`, for YOLOX), converted and scaled there. Gives exactly
/// [`Preprocessor::run`]'s values (u8 → f32, one multiplication by the same f32 factor).
pub fn canvas_to_input(
    canvas: &[u8],
    (model_w, model_h): (usize, usize),
    layout: InputLayout,
    bgr: &candle_core::Tensor,
    device: &candle_core::Device,
    dtype: candle_core::DType,
) -> candle_core::Result<candle_core::Tensor> {
    use candle_core::{DType, Tensor};
    // One host-to-device copy of the bytes.
    let hwc = Tensor::from_slice(canvas, (model_h, model_w, 3), device)?;
    let hwc = match layout {
        InputLayout::Yolov8 => hwc,
        InputLayout::Yolox => hwc.index_select(bgr, 2)?,
    };
    let chw = hwc.permute((2, 0, 1))?;
    let values = chw.to_dtype(DType::F32)?;
    let values = match layout {
        InputLayout::Yolov8 => values.affine(f64::from(1.0f32 / 255.0), 0.0)?,
        InputLayout::Yolox => values,
    };
    values.to_dtype(dtype)?.unsqueeze(0)?.contiguous()
}

/// Source index pairs and 11-bit weights of one axis of OpenCV's INTER_LINEAR.
#[derive(Debug, Default)]
struct AxisCoeffs {
    i0: Vec<usize>,
    i1: Vec<usize>,
    w0: Vec<i32>,
    w1: Vec<i32>,
}

impl AxisCoeffs {
    /// OpenCV computes the source coordinate in float from a double scale; the horizontal
    /// axis moves out-of-range taps onto the edge pixel with weight 1, the vertical axis
    /// keeps the fractional weight and clamps the row index.
    fn compute(&mut self, n_out: usize, n_in: usize, pin_edges: bool) {
        self.i0.clear();
        self.i1.clear();
        self.w0.clear();
        self.w1.clear();
        let scale = 1.0 / (n_out as f64 / n_in as f64);
        for d in 0..n_out {
            let mut f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut i = f.floor() as i64;
            f -= i as f32;
            if pin_edges {
                if i < 0 {
                    f = 0.0;
                    i = 0;
                } else if i >= n_in as i64 - 1 {
                    f = 0.0;
                    i = n_in as i64 - 1;
                }
            }
            let clamp = |v: i64| v.clamp(0, n_in as i64 - 1) as usize;
            self.i0.push(clamp(i));
            self.i1.push(clamp(i + 1));
            // saturate_cast<short> rounds half to even (cvRound).
            self.w0.push(((1.0 - f) * 2048.0).round_ties_even() as i32);
            self.w1.push((f * 2048.0).round_ties_even() as i32);
        }
    }
}

#[derive(Debug, Default)]
struct LinearRows {
    x: AxisCoeffs,
    y: AxisCoeffs,
    row0: Vec<i32>,
    row1: Vec<i32>,
}

impl LinearRows {
    /// `cv2.resize(src, (dst_w, dst_h), interpolation=INTER_LINEAR)` for 3-channel uint8.
    fn resize(
        &mut self,
        src: &[u8],
        src_w: usize,
        src_h: usize,
        dst: &mut [u8],
        dst_w: usize,
        dst_h: usize,
    ) {
        self.x.compute(dst_w, src_w, true);
        self.y.compute(dst_h, src_h, false);
        self.row0.resize(dst_w * 3, 0);
        self.row1.resize(dst_w * 3, 0);
        let mut cached = (usize::MAX, usize::MAX);
        for dy in 0..dst_h {
            let (y0, y1) = (self.y.i0[dy], self.y.i1[dy]);
            if cached.0 != y0 {
                if cached.1 == y0 {
                    std::mem::swap(&mut self.row0, &mut self.row1);
                    cached.1 = usize::MAX;
                } else {
                    horizontal_pass(
                        &src[y0 * src_w * 3..(y0 + 1) * src_w * 3],
                        &self.x,
                        &mut self.row0,
                    );
                }
                cached.0 = y0;
            }
            if cached.1 != y1 {
                horizontal_pass(
                    &src[y1 * src_w * 3..(y1 + 1) * src_w * 3],
                    &self.x,
                    &mut self.row1,
                );
                cached.1 = y1;
            }
            let (b0, b1) = (self.y.w0[dy], self.y.w1[dy]);
            let out = &mut dst[dy * dst_w * 3..(dy + 1) * dst_w * 3];
            for ((o, &r0), &r1) in out.iter_mut().zip(&self.row0).zip(&self.row1) {
                // OpenCV's SIMD vertical kernel: (x >> 4) · β >> 16 per tap, then (v + 2) >> 2.
                let v = (((r0 >> 4) * b0) >> 16) + (((r1 >> 4) * b1) >> 16);
                *o = ((v + 2) >> 2).clamp(0, 255) as u8;
            }
        }
    }
}

fn horizontal_pass(src_row: &[u8], x: &AxisCoeffs, out: &mut [i32]) {
    for (dx, o) in out.chunks_exact_mut(3).enumerate() {
        let (s0, s1) = (x.i0[dx] * 3, x.i1[dx] * 3);
        let (a0, a1) = (x.w0[dx], x.w1[dx]);
        for c in 0..3 {
            o[c] = src_row[s0 + c] as i32 * a0 + src_row[s1 + c] as i32 * a1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bytes-to-device path gives the host path's values exactly, in f32, both layouts,
    /// resized or not (on the test device: scripts/gpu-check runs it on a GPU).
    #[test]
    fn canvas_on_a_device_equals_the_host_input() {
        use candle_core::{DType, Tensor};
        let dev = crate::detect::device::test_device();
        let bgr = Tensor::new(&[2u32, 1, 0], &dev).unwrap();
        for (layout, (w, h)) in [
            (InputLayout::Yolov8, (97, 61)),
            (InputLayout::Yolox, (97, 61)),
            (InputLayout::Yolov8, (64, 48)),
            (InputLayout::Yolox, (48, 64)),
        ] {
            let rgb: Vec<u8> = (0..w * h * 3).map(|i| (i * 37 % 251) as u8).collect();
            let mut pre = Preprocessor::new(layout, 64, 64);
            let (host, t1) = pre.run(&rgb, w, h);
            let host = host.to_vec();
            let (canvas, t2) = pre.run_canvas(&rgb, w, h);
            assert_eq!(t1, t2);
            let input = canvas_to_input(canvas, (64, 64), layout, &bgr, &dev, DType::F32).unwrap();
            assert_eq!(input.dims(), [1, 3, 64, 64]);
            let got: Vec<f32> = input.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                got == host,
                "{layout:?} {w}x{h}: device input differs from the host's"
            );
        }
    }

    #[test]
    fn yolov8_letterbox_centres_a_landscape_image() {
        // dog.jpg 768×576 → 640×480 centred on 640×640 (the parity fixture's geometry).
        let p = InputLayout::Yolov8.placement(768, 576, 640, 640);
        assert_eq!(
            p,
            Placement {
                resized_width: 640,
                resized_height: 480,
                left: 0,
                top: 80
            }
        );
        // 1280×720 → 640×360, top = round(140 − 0.1) = 140.
        let p = InputLayout::Yolov8.placement(1280, 720, 640, 640);
        assert_eq!((p.resized_height, p.top), (360, 140));
        // odd padding: 810×1080 → 480×640, left = round(80 − 0.1) = 80.
        let p = InputLayout::Yolov8.placement(810, 1080, 640, 640);
        assert_eq!((p.resized_width, p.left), (480, 80));
    }

    #[test]
    fn yolox_places_top_left_with_truncated_size() {
        // bus.jpg 810×1080 at 416: r = 0.38518…, int(810 r) = 312.
        let p = InputLayout::Yolox.placement(810, 1080, 416, 416);
        assert_eq!(
            p,
            Placement {
                resized_width: 312,
                resized_height: 416,
                left: 0,
                top: 0
            }
        );
    }

    #[test]
    fn boxes_map_back_through_the_letterbox_and_clip() {
        let t = InputLayout::Yolov8.image_from_model(1280, 720, 640, 640);
        let b = t.box_in_image(&BoxXyxy::new(10.0, 150.0, 650.0, 500.0));
        assert_eq!(b, BoxXyxy::new(20.0, 20.0, 1280.0, 720.0));
    }

    #[test]
    fn yolox_boxes_divide_by_the_ratio() {
        let mut pre = Preprocessor::new(InputLayout::Yolox, 64, 64);
        let img = vec![0u8; 100 * 50 * 3];
        let (_, t) = pre.run(&img, 100, 50);
        let b = t.box_in_image(&BoxXyxy::new(6.4, 6.4, 12.8, 12.8));
        assert!(
            (b.x1 - 10.0).abs() < 1e-4 && (b.y2 - 20.0).abs() < 1e-4,
            "{b:?}"
        );
    }

    #[test]
    fn resize_keeps_a_constant_image_constant() {
        let src = vec![77u8; 13 * 7 * 3];
        let mut dst = vec![0u8; 29 * 5 * 3];
        LinearRows::default().resize(&src, 13, 7, &mut dst, 29, 5);
        assert!(dst.iter().all(|&v| v == 77));
    }

    #[test]
    fn exact_2x_downscale_averages_2x2_blocks_with_rounding() {
        // OpenCV switches to INTER_AREA for exact 2× reductions; the fixed-point bilinear
        // path gives the same (a + b + c + d + 2) >> 2, which this test pins down.
        let src: Vec<u8> = (0..4 * 4 * 3).map(|i| (i * 7 % 256) as u8).collect();
        let mut dst = vec![0u8; 2 * 2 * 3];
        LinearRows::default().resize(&src, 4, 4, &mut dst, 2, 2);
        let at = |x: usize, y: usize, c: usize| src[(y * 4 + x) * 3 + c] as u32;
        for (dy, dx, c) in [(0, 0, 0), (1, 1, 2), (0, 1, 1)] {
            let sum = at(2 * dx, 2 * dy, c)
                + at(2 * dx + 1, 2 * dy, c)
                + at(2 * dx, 2 * dy + 1, c)
                + at(2 * dx + 1, 2 * dy + 1, c);
            assert_eq!(dst[(dy * 2 + dx) * 3 + c] as u32, (sum + 2) >> 2);
        }
    }

    #[test]
    fn yolov8_input_is_rgb_over_255_and_yolox_bgr_raw() {
        let img = [10u8, 20, 30].repeat(4); // 2×2
        let mut v8 = Preprocessor::new(InputLayout::Yolov8, 2, 2);
        let (x, _) = v8.run(&img, 2, 2);
        assert!((x[0] - 10.0 / 255.0).abs() < 1e-7 && (x[8] - 30.0 / 255.0).abs() < 1e-7);
        let mut yx = Preprocessor::new(InputLayout::Yolox, 2, 2);
        let (x, _) = yx.run(&img, 2, 2);
        assert_eq!((x[0], x[4], x[8]), (30.0, 20.0, 10.0));
    }
}
