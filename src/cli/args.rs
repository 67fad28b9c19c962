//! Flags shared by the commands that run a detector, and their validation into a
//! [`DetectorConfig`] (done once, here; nothing downstream re-checks them).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::detect::classes::ClassFilter;
use crate::detect::weights::resolve::{Resolver, DEFAULT_MODEL};
use crate::detect::{DetectorConfig, DeviceSpec};

#[derive(Debug, Clone, clap::Args)]
pub struct DetectorArgs {
    /// Weights file: .safetensors (candle or ultralytics names, YOLOX names), an
    /// ultralytics .pt checkpoint, or a YOLOX .pth checkpoint.
    #[arg(long, value_name = "PATH", conflicts_with = "model")]
    pub weights: Option<PathBuf>,

    /// A known model by name (yolov8n…yolov8x, yolox-nano…yolox-x), looked up in models/,
    /// $LOOKOUT_MODELS and the Hugging Face cache, downloaded if allowed. Default: yolox-nano.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,

    /// Confidence threshold.
    #[arg(long, default_value_t = 0.25)]
    pub conf: f32,

    /// NMS IoU threshold.
    #[arg(long, default_value_t = 0.45)]
    pub iou: f32,

    /// Classes to report: `all`, or a comma list of class names, groups (pedestrian,
    /// vehicle, sign, other) and class ids. Default: pedestrian,vehicle,sign.
    #[arg(long, value_name = "LIST")]
    pub classes: Option<String>,

    /// Square input size, a multiple of 32. Default: 640 (416 for YOLOX nano/tiny).
    #[arg(long, value_name = "PIXELS")]
    pub imgsz: Option<usize>,

    /// Inference device: cpu, cuda or cuda:N (CUDA needs a build with --features cuda).
    #[arg(long, default_value = "cpu")]
    pub device: String,

    /// Half precision (f16) inference; CUDA only.
    #[arg(long)]
    pub half: bool,

    /// Never download weights (also LOOKOUT_OFFLINE=1).
    #[arg(long)]
    pub offline: bool,

    /// CPU threads for inference. Default: all available cores.
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

impl DetectorArgs {
    /// Resolves the weights and validates every option.
    pub fn to_config(&self) -> Result<DetectorConfig> {
        let weights = match (&self.weights, &self.model) {
            (Some(path), _) => path.clone(),
            (None, name) => {
                let name = name.as_deref().unwrap_or(DEFAULT_MODEL);
                Resolver::from_env(self.offline).resolve(name)?
            }
        };
        let classes = match &self.classes {
            Some(spec) => ClassFilter::parse(spec).map_err(anyhow::Error::msg)?,
            None => ClassFilter::default(),
        };
        let device = DeviceSpec::parse(&self.device).map_err(anyhow::Error::msg)?;
        if let Some(0) = self.threads {
            bail!("--threads must be at least 1");
        }
        Ok(DetectorConfig {
            weights,
            imgsz: self.imgsz,
            conf: self.conf,
            iou: self.iou,
            classes,
            device,
            half: self.half,
            max_detections: 300,
        })
    }

    /// Sizes the CPU thread pool (candle's kernels use rayon's global pool).
    pub fn apply_threads(&self) -> Result<usize> {
        let n = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        // candle's gemm reads RAYON_NUM_THREADS through `get_num_threads`.
        std::env::set_var("RAYON_NUM_THREADS", n.to_string());
        // candle runs its remaining element-wise CPU ops (concat, upsample, pools, adds) on a
        // second pool that spins and competes with the convolution kernels for the same
        // cores; inline they cost less (yolox-nano 1.31× → 1.06× onnxruntime, measured).
        if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
            std::env::set_var("CANDLE_NUM_THREADS", "1");
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot size the inference thread pool")
            .ok();
        Ok(n)
    }
}
