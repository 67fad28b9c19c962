//! The detector: weights → model on a device, and one image → detections with timings.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};

use super::classes::{ClassFilter, ClassNames};
use std::sync::Arc;

use super::cpu::graph::{Arithmetic, OpTime};
use super::cpu::int8::{ActRange, Calibration};
use super::cpu::ConvSpec;
use super::device::DeviceSpec;
use super::error::{DetectError, Result};
use super::families;
use super::family::{Family, OutputForm, Selection, STRIDES};
use super::postprocess::{self, Candidate, PostprocessConfig};
use super::preprocess::{self as pre, ImageFromModel, InputLayout, Preprocessor};
use super::quantize::{self, RangesFile};
use super::weights::Weights;
use crate::types::Detection;

/// The largest `--imgsz`: a 4096×4096 input already needs ~200 MB for the image alone and
/// gigabytes of activations; larger sizes only exhaust memory (issue 12: `--imgsz 100000`
/// aborted the process asking for 120 GB).
pub const MAX_IMGSZ: usize = 4096;

/// The most `--max-det` may ask for (ultralytics keeps at most 30 000 boxes into NMS).
pub const MAX_DETECTIONS: usize = 30_000;

/// The NMS IoU threshold when `--iou` is not given (ultralytics' predict uses 0.7, YOLOX
/// 0.45; lookout has used 0.45 from the start).
pub const DEFAULT_IOU: f32 = 0.45;

/// A validated detector configuration.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    pub weights: PathBuf,
    /// Square input size; `None` = the model's default (640, or 416 for YOLOX nano/tiny).
    pub imgsz: Option<usize>,
    pub conf: f32,
    /// NMS IoU threshold; `None` = [`DEFAULT_IOU`]. Given for an end-to-end family (no
    /// NMS), it is warned about and has no effect.
    pub iou: Option<f32>,
    pub classes: ClassFilter,
    pub device: DeviceSpec,
    pub half: bool,
    pub max_detections: usize,
    /// The CPU executor's arithmetic (`--precision`).
    pub precision: Precision,
    /// `--calibration-images`: with `--precision int8`, calibrate on these images (and
    /// write the ranges next to the weights) instead of reading the ranges written before.
    pub calibration_images: Vec<PathBuf>,
}

/// `--precision`: the arithmetic of the CPU executor's dense convolutions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// bf16 where the CPU has bf16 dot-product units (AVX512-BF16), f32 elsewhere.
    Auto,
    /// f32 throughout: the reference parity.
    #[default]
    F32,
    /// bf16 weights and convolution inputs, f32 accumulation and epilogue.
    Bf16,
    /// int8 weights (per output channel) and convolution inputs (calibrated ranges), i32
    /// accumulation, f32 epilogue.
    Int8,
}

impl Precision {
    pub fn parse(text: &str) -> std::result::Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::Bf16),
            "int8" => Ok(Self::Int8),
            other => Err(format!(
                "--precision {other}: expected auto, f32, bf16 or int8"
            )),
        }
    }
}

impl DetectorConfig {
    pub fn new(weights: PathBuf) -> Self {
        Self {
            weights,
            imgsz: None,
            conf: 0.25,
            iou: None,
            classes: ClassFilter::default(),
            device: DeviceSpec::Cpu,
            half: false,
            max_detections: 300,
            precision: Precision::F32,
            calibration_images: Vec::new(),
        }
    }

    /// Checks every option (ranges, `--imgsz`, `--half` without a GPU); [`Detector::load`]
    /// calls it, and the commands call it before any work.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(DetectError::Config(m));
        if !(0.0..=1.0).contains(&self.conf) {
            return bad(format!("--conf {} is outside 0..1", self.conf));
        }
        let reduced = match self.precision {
            Precision::Bf16 => Some((
                "bf16",
                super::cpu::bf16::supported(),
                "bf16 dot-product instructions (AVX512-BF16); use --precision f32 (or auto, \
                 which picks f32 here)",
            )),
            Precision::Int8 => Some((
                "int8",
                super::cpu::int8::supported(),
                "int8 dot-product instructions (AVX512-VNNI); use --precision f32 or bf16",
            )),
            Precision::Auto | Precision::F32 => None,
        };
        if let Some((name, supported, missing)) = reduced {
            if self.device != DeviceSpec::Cpu {
                return bad(format!(
                    "--precision {name} is for the CPU executor; on a GPU use --half"
                ));
            }
            if self.half {
                return bad(format!(
                    "--precision {name} and --half: choose one (--half is f16 on a GPU)"
                ));
            }
            if !supported {
                return bad(format!("--precision {name}: this CPU has no {missing}"));
            }
        }
        if self.precision != Precision::Int8 && !self.calibration_images.is_empty() {
            return bad("--calibration-images is for --precision int8".into());
        }
        if let Some(iou) = self.iou.filter(|iou| !(0.0..=1.0).contains(iou)) {
            return bad(format!("--iou {iou} is outside 0..1"));
        }
        if !(1..=MAX_DETECTIONS).contains(&self.max_detections) {
            return bad(format!(
                "--max-det {} must be between 1 and {MAX_DETECTIONS}",
                self.max_detections
            ));
        }
        if let Some(s) = self.imgsz {
            if s == 0 || s % 32 != 0 {
                return bad(format!("--imgsz {s} must be a positive multiple of 32"));
            }
            if s > MAX_IMGSZ {
                return bad(format!(
                    "--imgsz {s} is above the limit of {MAX_IMGSZ}; pick a multiple of 32 up to {MAX_IMGSZ}"
                ));
            }
        }
        if self.half && self.device == DeviceSpec::Cpu {
            return bad(
                "--half needs a CUDA device (--device cuda); on the CPU lookout runs f32".into(),
            );
        }
        Ok(())
    }
}

/// One frame's network input, from [`Detector::preprocess`] to [`Detector::infer`] (infer
/// it before pre-processing the next frame: `Host` names the pre-processor's buffer).
pub enum ModelInput {
    /// In the pre-processor's own buffer (CPU, f32): no tensor is built per frame.
    Host,
    /// A tensor on the model's device and dtype.
    Tensor(Tensor),
}

/// A loaded model with its pre- and post-processing state.
pub struct Detector {
    network: Box<dyn Family>,
    classes: ClassNames,
    device: Device,
    dtype: DType,
    layout: InputLayout,
    /// `[2, 1, 0]` on the device: YOLOX's BGR order, applied there.
    bgr: Tensor,
    pre: Preprocessor,
    post: PostprocessConfig,
    candidates: Vec<Candidate>,
    output: Vec<f32>,
    /// How the last output in `output` is laid out.
    output_form: OutputForm,
    /// A partly non-finite output was warned about (see [`Detector::check_finite`]).
    warned_non_finite: bool,
    /// The CPU executor runs its dense convolutions in bf16.
    bf16: bool,
    /// … in int8.
    int8: bool,
}

/// Per-anchor class scores of one inference, one grid per detection level
/// ([`Detector::score_maps`]), in model-input pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreMaps {
    pub model_width: usize,
    pub model_height: usize,
    pub levels: Vec<ScoreLevel>,
}

/// One level's grid: anchor (x, y) covers model pixels `[x·stride, (x+1)·stride)`.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreLevel {
    pub stride: usize,
    pub grid_w: usize,
    pub grid_h: usize,
    /// Row-major, `grid_w × grid_h`, in `[0, 1]`.
    pub scores: Vec<f32>,
}

impl Detector {
    pub fn load(cfg: &DetectorConfig) -> Result<Detector> {
        cfg.validate()?;
        let device = cfg.device.open()?;
        let dtype = if cfg.half { DType::F16 } else { DType::F32 };
        let weights = Weights::read(&cfg.weights)?;
        let scheme = weights.scheme;
        let path = weights.path.clone();
        let metadata = weights.metadata.clone();
        let vb = weights.into_var_builder(dtype, &device)?;
        let model_error = |e: candle_core::Error| DetectError::BadWeights {
            path: path.clone(),
            reason: format!(
                "{} ({})",
                super::error::without_backtrace(e),
                scheme.describe()
            ),
        };
        let network = families::load(scheme, vb).map_err(model_error)?;
        if let (Some(iou), Selection::Ranked) = (cfg.iou, network.selection()) {
            tracing::warn!(
                "--iou {iou} has no effect: {} picks its detections end to end (the top-k of \
                 its one-to-one head, no NMS)",
                network.variant()
            );
        }
        let bf16 = matches!(device, Device::Cpu)
            && !cfg.half
            && match cfg.precision {
                Precision::Bf16 => true,
                Precision::Auto => super::cpu::bf16::supported(),
                Precision::F32 | Precision::Int8 => false,
            };
        network.plan_cache().set_arithmetic(if bf16 {
            Arithmetic::Bf16
        } else {
            Arithmetic::F32
        });
        let input = network.input();
        let (layout, default_size) = (input.layout, input.default_size);
        let classes =
            ClassNames::for_model(network.num_classes(), &path, &metadata).map_err(|reason| {
                DetectError::BadWeights {
                    path: path.clone(),
                    reason,
                }
            })?;
        let class_mask = cfg.classes.mask(&classes).map_err(DetectError::Config)?;
        let size = cfg.imgsz.unwrap_or(default_size);
        let mut detector = Detector {
            network,
            classes,
            bgr: Tensor::new(&[2u32, 1, 0], &device)?,
            device,
            dtype,
            layout,
            pre: Preprocessor::new(layout, size, size),
            post: PostprocessConfig {
                conf: cfg.conf,
                iou: cfg.iou.unwrap_or(DEFAULT_IOU),
                max_detections: cfg.max_detections,
                class_mask,
            },
            candidates: Vec::new(),
            output: Vec::new(),
            output_form: OutputForm::Full,
            warned_non_finite: false,
            bf16,
            int8: false,
        };
        if cfg.precision == Precision::Int8 {
            detector.set_int8(cfg)?;
        }
        Ok(detector)
    }

    /// Switches the executor to int8: calibrates on `cfg.calibration_images` and writes
    /// the ranges next to the weights, or reads the ranges written there before.
    fn set_int8(&mut self, cfg: &DetectorConfig) -> Result<()> {
        let digest = quantize::weights_digest(&cfg.weights)?;
        let path = quantize::ranges_path(&cfg.weights);
        let variant = self.variant();
        let file = if cfg.calibration_images.is_empty() {
            RangesFile::read(&path, variant, &digest)?
        } else {
            let layers = self.calibrate(&cfg.calibration_images)?;
            let size = self.pre.model_size().0;
            let file = RangesFile::new(variant, digest, size, &cfg.calibration_images, &layers);
            file.write(&path)?;
            tracing::info!(
                "int8: calibrated {} convolutions on {} images; ranges written to {}",
                layers.len(),
                cfg.calibration_images.len(),
                path.display()
            );
            file
        };
        let ranges = file.ranges();
        let (w, h) = self.pre.model_size();
        let planned = self
            .network
            .plan(h, w)
            .map_err(|e| DetectError::Config(format!("--precision int8: {e}")))?;
        if planned.graph.quantizable() != ranges.len() {
            return Err(DetectError::Config(format!(
                "--precision int8: {} holds {} ranges, {variant} has {} quantizable \
                 convolutions; calibrate again with --calibration-images DIR",
                path.display(),
                ranges.len(),
                planned.graph.quantizable()
            )));
        }
        self.network
            .plan_cache()
            .set_arithmetic(Arithmetic::Int8(Arc::new(ranges)));
        self.int8 = true;
        Ok(())
    }

    /// Runs the f32 executor on every image, recording each quantizable convolution's
    /// input range: (shape, range) per convolution in plan order.
    fn calibrate(&mut self, images: &[PathBuf]) -> Result<Vec<(ConvSpec, ActRange)>> {
        let calibration = Arc::new(Calibration::new());
        let cache = self.network.plan_cache().clone();
        cache.set_arithmetic(Arithmetic::Calibrate(calibration.clone()));
        let result = (|| {
            for path in images {
                let image = crate::imageio::read_rgb(path).map_err(|e| DetectError::Image {
                    path: path.clone(),
                    reason: format!("{e} (a --calibration-images file)"),
                })?;
                let (input, _) = self.preprocess(
                    image.as_raw(),
                    image.width() as usize,
                    image.height() as usize,
                )?;
                self.infer(&input)?;
                if self.output_form != OutputForm::Executor {
                    return Err(DetectError::Config(format!(
                        "--precision int8: {} does not run on the CPU executor here, \
                         so it cannot be calibrated",
                        self.variant()
                    )));
                }
            }
            calibration.ranges().ok_or_else(|| {
                DetectError::Config("--calibration-images: no image was calibrated".into())
            })
        })();
        cache.set_arithmetic(Arithmetic::F32);
        result
    }

    /// `yolov8n`, `yolox-nano`, …
    pub fn variant(&self) -> &'static str {
        self.network.variant()
    }

    pub fn classes(&self) -> &ClassNames {
        &self.classes
    }

    /// Model input (width, height).
    pub fn input_size(&self) -> (usize, usize) {
        self.pre.model_size()
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// `f32`, `f16` (the dtype the network runs in) or `bf16` (the CPU executor's dense
    /// convolutions in bf16).
    pub fn precision(&self) -> &'static str {
        match self.dtype {
            DType::F16 => "f16",
            _ if self.bf16 => "bf16",
            _ if self.int8 => "int8",
            _ => "f32",
        }
    }

    /// Image → network input. On the CPU in f32 the pre-processed image stays in the
    /// pre-processor's buffer ([`ModelInput::Host`]), which the CPU executor reads in place;
    /// elsewhere the letterboxed bytes go to the model's device, where channel order,
    /// scaling and dtype are applied ([`pre::canvas_to_input`]), giving `[1, 3, H, W]`.
    pub fn preprocess(
        &mut self,
        rgb: &[u8],
        width: usize,
        height: usize,
    ) -> Result<(ModelInput, ImageFromModel)> {
        if self.device.is_cpu() && self.dtype == DType::F32 {
            let (_, transform) = self.pre.run(rgb, width, height);
            return Ok((ModelInput::Host, transform));
        }
        let size = self.pre.model_size();
        let (canvas, transform) = self.pre.run_canvas(rgb, width, height);
        let tensor = pre::canvas_to_input(
            canvas,
            size,
            self.layout,
            &self.bgr,
            &self.device,
            self.dtype,
        )?;
        Ok((ModelInput::Tensor(tensor), transform))
    }

    /// Runs the network on the last pre-processed input and copies its output to the host
    /// (which also waits for the GPU).
    pub fn infer(&mut self, input: &ModelInput) -> Result<()> {
        let tensor = match input {
            ModelInput::Tensor(t) => t.clone(),
            ModelInput::Host => {
                // The CPU executor writes the output straight into the buffer.
                let (w, h) = self.pre.model_size();
                let image = self.pre.input();
                if self
                    .network
                    .forward_cpu_image(image, h, w, &mut self.output)?
                {
                    self.output_form = OutputForm::Executor;
                    return Ok(());
                }
                Tensor::from_slice(image, (1, 3, h, w), &Device::Cpu)?
            }
        };
        // candle's ops (the executor, where it applies, was tried above).
        // On a GPU the class scores are reduced there (YOLOv8 sends 6 rows back, not 4 + nc).
        let reduce = !self.device.is_cpu();
        self.output_form = if reduce {
            OutputForm::Reduced
        } else {
            OutputForm::Full
        };
        let raw = self.network.forward_candle(&tensor)?;
        let raw = if reduce {
            self.network.reduce_on_device(&raw)?
        } else {
            raw
        };
        let flat = raw
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_device(&Device::Cpu)?;
        // Copy straight out of the CPU storage into the reused buffer (`to_vec1` would
        // allocate a new vector every frame).
        let (storage, layout) = flat.storage_and_layout();
        let candle_core::Storage::Cpu(cpu) = &*storage else {
            unreachable!("moved to the CPU above");
        };
        let values = cpu.as_slice::<f32>()?;
        let (start, end) = layout
            .contiguous_offsets()
            .expect("flatten_all gives a contiguous tensor");
        self.output.clear();
        self.output.extend_from_slice(&values[start..end]);
        Ok(())
    }

    /// One CPU-executor run on `rgb` timed op by op; `None` when the executor does not run
    /// this model on this device.
    pub fn profile_ops(
        &mut self,
        rgb: &[u8],
        width: usize,
        height: usize,
    ) -> Result<Option<Vec<OpTime>>> {
        let (input, _) = self.preprocess(rgb, width, height)?;
        let ModelInput::Host = input else {
            return Ok(None);
        };
        let (w, h) = self.pre.model_size();
        let image = self.pre.input();
        Ok(self.network.profile_cpu(image, h, w)?)
    }

    /// The raw network output, as the reference implementations give it (for parity tests).
    pub fn forward_raw(&self, input: &Tensor) -> Result<Tensor> {
        Ok(self.network.forward(input)?)
    }

    /// On a frame without candidates: an output that is all NaN/inf is an error; one that
    /// is partly so is warned about once per detector.
    fn check_finite(&mut self) -> Result<()> {
        let bad = postprocess::count_non_finite(&self.output);
        let total = self.output.len();
        if bad == 0 {
            return Ok(());
        }
        if bad == total {
            return Err(DetectError::NonFiniteOutput { total });
        }
        if !self.warned_non_finite {
            self.warned_non_finite = true;
            tracing::warn!(
                "{bad} of the model's {total} output values are NaN or infinite and this frame has no detections: the weights may be damaged"
            );
        }
        Ok(())
    }

    /// Each anchor's score of the last inference for the classes flagged in `classes` (the
    /// highest of them), level by level (strides 8, 16, 32), as the decode sees it: YOLOv8's
    /// class score, YOLOX's objectness × class probability. Read from the output the
    /// detections came from: no second inference. Where the classes were already reduced to
    /// the best one on the GPU, an anchor counts when its best class is flagged.
    pub fn score_maps(&self, classes: &[bool]) -> ScoreMaps {
        let (w, h) = self.pre.model_size();
        let levels: Vec<(usize, usize, usize)> =
            STRIDES.iter().map(|&s| (s, w / s, h / s)).collect();
        let anchors: usize = levels.iter().map(|(_, gw, gh)| gw * gh).sum();
        let out = &self.output;
        let wanted = |c: usize| classes.get(c).copied().unwrap_or(false);
        let mut scores = vec![0f32; anchors];
        if anchors > 0 && !out.is_empty() {
            for (n, score) in scores.iter_mut().enumerate() {
                *score = self
                    .network
                    .anchor_score(out, self.output_form, anchors, n, &wanted);
            }
        }
        let mut offset = 0;
        let levels = levels
            .into_iter()
            .map(|(stride, grid_w, grid_h)| {
                let level = ScoreLevel {
                    stride,
                    grid_w,
                    grid_h,
                    scores: scores[offset..offset + grid_w * grid_h].to_vec(),
                };
                offset += grid_w * grid_h;
                level
            })
            .collect();
        ScoreMaps {
            model_width: w,
            model_height: h,
            levels,
        }
    }

    /// The last inference's output → detections in image pixels.
    pub fn postprocess(&mut self, image_from_model: &ImageFromModel) -> Result<Vec<Detection>> {
        self.network
            .candidates(
                &self.output,
                self.output_form,
                self.pre.model_size(),
                &self.post,
                &mut self.candidates,
            )
            .map_err(|e| DetectError::Config(format!("unexpected network output: {e}")))?;
        if self.candidates.is_empty() {
            self.check_finite()?;
        }
        if self.network.selection() == Selection::Nms {
            postprocess::nms(
                &mut self.candidates,
                self.post.iou,
                self.post.max_detections,
            );
        }
        Ok(self
            .candidates
            .iter()
            .map(|c| Detection {
                class_id: c.class_id,
                class: self.classes.shared_name(c.class_id),
                group: self.classes.group(c.class_id),
                score: c.score,
                box_in_image: image_from_model.box_in_image(&c.box_in_model),
                range: None,
                track_id: None,
                track_age_s: None,
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12 item 2: `--imgsz 100000` (a multiple of 32) reached the allocator and
    /// aborted the process; it is refused, naming the limit.
    #[test]
    fn imgsz_is_bounded_and_the_error_names_the_limit() {
        let mut cfg = DetectorConfig::new(PathBuf::from("w.safetensors"));
        cfg.imgsz = Some(MAX_IMGSZ);
        assert!(cfg.validate().is_ok());
        cfg.imgsz = Some(100_000);
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("100000") && err.contains("4096"), "{err}");
    }

    #[test]
    fn precision_is_checked() {
        assert_eq!(Precision::parse("auto"), Ok(Precision::Auto));
        assert_eq!(Precision::parse("bf16"), Ok(Precision::Bf16));
        assert_eq!(Precision::parse("int8"), Ok(Precision::Int8));
        let err = Precision::parse("int4").unwrap_err();
        assert!(
            err.contains("--precision int4") && err.contains("int8"),
            "{err}"
        );
        let mut cfg = DetectorConfig::new(PathBuf::from("w.safetensors"));
        cfg.precision = Precision::Bf16;
        cfg.half = true;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(
            err.contains("--precision bf16") && err.contains("--half"),
            "{err}"
        );
        cfg.half = false;
        let supported = super::super::cpu::bf16::supported();
        assert_eq!(
            cfg.validate().is_ok(),
            supported,
            "bf16 refused only without AVX512-BF16"
        );
    }

    #[test]
    fn max_det_is_checked() {
        let mut cfg = DetectorConfig::new(PathBuf::from("w.safetensors"));
        cfg.max_detections = 0;
        let err = cfg.validate().unwrap_err().to_string();
        assert!(err.contains("--max-det 0"), "{err}");
        cfg.max_detections = MAX_DETECTIONS;
        assert!(cfg.validate().is_ok());
    }

    /// Each fixture model on the CPU executor planned with and without Winograd, the two
    /// alternating run by run (only same-run ratios mean anything on these machines):
    /// `cargo test --release --lib time_winograd_in_whole_networks -- --ignored --nocapture`.
    #[test]
    #[ignore = "timing, not a check"]
    fn time_winograd_in_whole_networks() {
        use super::super::cpu::graph::{Graph, Prepared};
        use super::super::cpu::pool::in_pool;
        use super::super::family::ExecutorInput;
        for relative in [
            "models/yolov8n-random.ultralytics.safetensors",
            "models/yolox_nano.safetensors",
            "models/yolo11n-random.ultralytics.safetensors",
            "models/yolo26n-random.ultralytics.safetensors",
        ] {
            let Some(path) = crate::fixtures::require(relative) else {
                continue;
            };
            let detector = Detector::load(&DetectorConfig::new(path)).unwrap();
            let family = &detector.network;
            let size = family.input().default_size;
            let plan = |winograd: bool| -> Prepared {
                let mut g = Graph::new();
                g.set_winograd(winograd);
                let input = match family.input().executor {
                    ExecutorInput::Image => g.input(3, size, size),
                    ExecutorInput::SpaceToDepth => g.input(12, size / 2, size / 2),
                };
                let outputs = family.plan_network(&mut g, input).unwrap();
                g.prepare(input, outputs)
            };
            let mut plans = [plan(false), plan(true)];
            let mut times = [Vec::new(), Vec::new()];
            for i in 0..40 {
                for (p, t) in plans.iter_mut().zip(&mut times) {
                    let start = std::time::Instant::now();
                    in_pool(|| p.graph.run(&mut p.workspace));
                    if i >= 5 {
                        t.push(start.elapsed().as_secs_f64() * 1e3);
                    }
                }
            }
            let median = |mut v: Vec<f64>| {
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let ratios = times[1].iter().zip(&times[0]).map(|(w, d)| w / d).collect();
            println!(
                "{}: direct {:.2} ms, winograd {:.2} ms, median ratio {:.3}",
                family.variant(),
                median(times[0].clone()),
                median(times[1].clone()),
                median(ratios)
            );
        }
    }

    /// `--precision bf16`'s raw outputs against ultralytics' f32 forward on the parity input
    /// (random-weight YOLOv8n, YOLO11n, YOLO26n; boxes in model pixels, scores after the
    /// sigmoid): max and p99 |Δ| printed, bounded well above what was measured.
    #[test]
    fn bf16_raw_outputs_stay_near_the_f32_reference() {
        if !super::super::cpu::bf16::supported() {
            eprintln!("skipped: this CPU has no AVX512-BF16");
            return;
        }
        let Some(input) = crate::fixtures::require("parity/yolov8n-parity.safetensors") else {
            return;
        };
        let input = candle_core::safetensors::load(input, &Device::Cpu).unwrap()["input"].clone();
        for (weights, parity, key) in [
            (
                "models/yolov8n-random.ultralytics.safetensors",
                "parity/yolov8n-parity.safetensors",
                "output",
            ),
            (
                "models/yolo11n-random.ultralytics.safetensors",
                "parity/yolo11n-parity.safetensors",
                "output.0",
            ),
            (
                "models/yolo26n-random.ultralytics.safetensors",
                "parity/yolo26n-parity.safetensors",
                "output.0",
            ),
        ] {
            let (Some(path), Some(parity)) = (
                crate::fixtures::require(weights),
                crate::fixtures::require(parity),
            ) else {
                return;
            };
            let mut cfg = DetectorConfig::new(path);
            cfg.precision = Precision::Bf16;
            let detector = Detector::load(&cfg).unwrap();
            assert_eq!(detector.precision(), "bf16");
            let got = detector.network.forward(&input).unwrap();
            // The executor ran (no fallback to candle's f32 ops) and its plan is in bf16.
            let image = input.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let ops = detector
                .network
                .profile_cpu(&image, 640, 640)
                .unwrap()
                .expect("the executor runs this network");
            let bf16_ops = ops.iter().filter(|o| o.op.contains("bf16")).count();
            assert!(
                bf16_ops * 2 > ops.len(),
                "{bf16_ops} of {} ops in bf16",
                ops.len()
            );
            let want = candle_core::safetensors::load(parity, &Device::Cpu).unwrap()[key].clone();
            let rows = |t: &Tensor, a: usize, n: usize| -> Vec<f32> {
                t.narrow(1, a, n)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let errors = |a: Vec<f32>, b: Vec<f32>| {
                let mut d: Vec<f32> = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).collect();
                d.sort_by(f32::total_cmp);
                (d[d.len() - 1], d[d.len() * 99 / 100])
            };
            let (boxes, boxes_p99) = errors(rows(&got, 0, 4), rows(&want, 0, 4));
            let (scores, scores_p99) = errors(rows(&got, 4, 80), rows(&want, 4, 80));
            eprintln!(
                "{} bf16 vs f32 reference: boxes max {boxes:.3} px (p99 {boxes_p99:.3}), \
                 scores max {scores:.2e} (p99 {scores_p99:.2e})",
                detector.variant()
            );
            // Measured: YOLO26n 2.13 / 0.70 px, 1.3e-2; the others far less.
            assert!(boxes < 8.0 && boxes_p99 < 2.0 && scores < 0.05, "{weights}");
        }
    }

    /// `--precision int8`'s raw outputs against the f32 references on their parity inputs,
    /// calibrated on the fixtures' Udacity frames (none of them a parity input): YOLOX-Nano
    /// (real weights, `bus.jpg`) against onnxruntime, the random-weight YOLOv8n, YOLO11n and
    /// YOLO26n (`dog.jpg`) against ultralytics. Boxes in model pixels (YOLOX's raw columns
    /// decoded on its grid), scores after the sigmoid; max and p99 |Δ| printed over every
    /// anchor and, for boxes, over the anchors that can become detections (YOLOX's
    /// background anchors carry boxes no one reads, up to 127 px off), bounded above what was
    /// measured.
    #[test]
    fn int8_raw_outputs_stay_near_the_f32_references() {
        if !super::super::cpu::int8::supported() {
            eprintln!("skipped: this CPU has no AVX512-VNNI");
            return;
        }
        let Some(udacity) = crate::fixtures::require("images/udacity") else {
            return;
        };
        let mut images: Vec<PathBuf> = std::fs::read_dir(&udacity)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "jpg"))
            .collect();
        images.sort();
        assert!(images.len() >= 5, "{images:?}");
        let dir = tempfile::tempdir().unwrap();
        // (weights, parity file, output key, bounds on the confident anchors' box max |Δ| px,
        // the score p99 and max |Δ|: about twice what was measured, which the note in the
        // README gives)
        for (weights, parity, key, bounds) in [
            (
                "models/yolox_nano.safetensors",
                "parity/yolox_nano-parity.safetensors",
                "output",
                (2.0, 0.04, 0.5),
            ),
            (
                "models/yolov8n-random.ultralytics.safetensors",
                "parity/yolov8n-parity.safetensors",
                "output",
                (0.1, 1e-3, 1e-3),
            ),
            (
                "models/yolo11n-random.ultralytics.safetensors",
                "parity/yolo11n-parity.safetensors",
                "output.0",
                (0.5, 5e-3, 0.02),
            ),
            (
                "models/yolo26n-random.ultralytics.safetensors",
                "parity/yolo26n-parity.safetensors",
                "output.0",
                (16.0, 0.02, 0.1),
            ),
        ] {
            let (Some(path), Some(parity)) = (
                crate::fixtures::require(weights),
                crate::fixtures::require(parity),
            ) else {
                return;
            };
            let golden = candle_core::safetensors::load(parity, &Device::Cpu).unwrap();
            let input = match golden.get("input") {
                Some(input) => input.clone(),
                None => {
                    let v8 = crate::fixtures::require("parity/yolov8n-parity.safetensors").unwrap();
                    candle_core::safetensors::load(v8, &Device::Cpu).unwrap()["input"].clone()
                }
            };
            // Calibrating writes the ranges next to the weights: a copy of them.
            let copy = dir.path().join(path.file_name().unwrap());
            std::fs::copy(&path, &copy).unwrap();
            let mut cfg = DetectorConfig::new(copy);
            cfg.precision = Precision::Int8;
            cfg.calibration_images = images.clone();
            cfg.imgsz = Some(input.dims4().unwrap().2);
            let detector = Detector::load(&cfg).unwrap();
            assert_eq!(detector.precision(), "int8");
            let got = detector.network.forward(&input).unwrap();
            let size = input.dims4().unwrap().2;
            // The executor ran, its plan in int8 where it qualifies.
            let image = input.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let ops = detector
                .network
                .profile_cpu(&image, size, size)
                .unwrap()
                .expect("the executor runs this network");
            let int8_ops = ops.iter().filter(|o| o.op.contains("int8")).count();
            assert!(int8_ops >= 10, "{int8_ops} of {} ops in int8", ops.len());
            let (got, want) = (anchors(&got, size), anchors(&golden[key], size));
            let errors = |d: &mut Vec<f32>| {
                d.sort_by(f32::total_cmp);
                (d[d.len() - 1], d[d.len() * 99 / 100])
            };
            let deltas = |a: &[f32], b: &[f32]| -> Vec<f32> {
                a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect()
            };
            let (boxes, boxes_p99) = errors(&mut deltas(&got.boxes, &want.boxes));
            let (scores, scores_p99) = errors(&mut deltas(&got.scores, &want.scores));
            // The anchors that can become detections: the reference's best score ≥ 0.25.
            let confident: Vec<usize> = (0..want.best.len())
                .filter(|&i| want.best[i] >= 0.25)
                .collect();
            let mut near: Vec<f32> = confident
                .iter()
                .flat_map(|&i| deltas(&got.boxes[i * 4..i * 4 + 4], &want.boxes[i * 4..i * 4 + 4]))
                .collect();
            let confident_boxes = if near.is_empty() {
                (0.0, 0.0)
            } else {
                errors(&mut near)
            };
            eprintln!(
                "{} int8 vs f32 reference: all {} anchors: boxes max {boxes:.3} px (p99 \
                 {boxes_p99:.3}), scores max {scores:.2e} (p99 {scores_p99:.2e}); the {} with a \
                 reference score ≥ 0.25: boxes max {:.3} px (p99 {:.3})",
                detector.variant(),
                want.best.len(),
                confident.len(),
                confident_boxes.0,
                confident_boxes.1,
            );
            let (box_max, score_p99, score_max) = bounds;
            assert!(
                !confident.is_empty()
                    && confident_boxes.0 < box_max
                    && scores_p99 < score_p99
                    && scores < score_max,
                "{weights}"
            );
        }
    }

    /// A network's raw output per anchor: (cx, cy, w, h) in model pixels, the score columns
    /// (YOLOX: objectness then classes; ultralytics: classes) and the best detection score.
    struct Anchors {
        boxes: Vec<f32>,
        scores: Vec<f32>,
        best: Vec<f32>,
    }

    /// From YOLOX's [1, anchors, 85] (decoded by [`crate::detect::yolox::decode_outputs`]
    /// for a `size`² input) or ultralytics' [1, 4 + classes, anchors].
    fn anchors(raw: &Tensor, size: usize) -> Anchors {
        let dims = raw.dims().to_vec();
        let values: Vec<f32> = raw.flatten_all().unwrap().to_vec1().unwrap();
        let mut out = Anchors {
            boxes: Vec::new(),
            scores: Vec::new(),
            best: Vec::new(),
        };
        if dims[2] == 85 {
            // Megvii's decode of every anchor (a NaN one is skipped: its box stays NaN).
            let decoded = crate::detect::yolox::decode_outputs(&values, 85, size, size, 0.0)
                .expect("a YOLOX output of this input size");
            out.boxes = vec![f32::NAN; dims[1] * 4];
            out.best = vec![f32::NAN; dims[1]];
            for c in decoded {
                out.boxes[c.anchor * 4..c.anchor * 4 + 4].copy_from_slice(&c.cxcywh_in_model);
                out.best[c.anchor] = c.score;
            }
            out.scores = values
                .chunks_exact(85)
                .flat_map(|r| &r[4..])
                .copied()
                .collect();
        } else {
            let (rows, n) = (dims[1], dims[2]);
            for i in 0..n {
                out.boxes.extend((0..4).map(|r| values[r * n + i]));
                let scores = (4..rows).map(|r| values[r * n + i]);
                out.best.push(scores.clone().fold(0.0, f32::max));
                out.scores.extend(scores);
            }
        }
        out
    }
}
