//! Flags shared by the commands: the detector's, validated into a [`DetectorConfig`] (done
//! once, here; nothing downstream re-checks them), the source's, pacing and frame files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::detect::classes::ClassFilter;
use crate::detect::weights::resolve::{Resolver, DEFAULT_MODEL};
use crate::detect::{DetectorConfig, DeviceSpec, Precision};
use crate::drive::FrameFileFormat;
use crate::pipeline::Pace;
use crate::source::{CameraFormat, FfmpegConfig, SourceOptions, SourceSpec, StreamOptions};
use crate::track::{ByteTrackConfig, Tracker, TrackerKind};
use crate::trackfile::TrackFormat;

#[derive(Debug, Clone, clap::Args)]
pub struct DetectorArgs {
    /// Weights file of YOLOv8, YOLO11, YOLO26 (an ultralytics .pt checkpoint, or
    /// .safetensors with ultralytics or candle names) or YOLOX (.pth, or .safetensors with
    /// Megvii's names); the family and size are read from the tensors.
    #[arg(long, value_name = "PATH", conflicts_with = "model")]
    pub weights: Option<PathBuf>,

    /// A known model by name (yolov8n…yolov8x, yolo11n…yolo11x, yolo26n…yolo26x,
    /// yolox-nano…yolox-x), looked up in models/,
    /// $LOOKOUT_MODELS and the Hugging Face cache, downloaded if allowed. Default: yolox-nano.
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,

    /// Confidence threshold.
    #[arg(long, default_value_t = 0.25)]
    pub conf: f32,

    /// NMS IoU threshold. Default: 0.45. End-to-end models (YOLO26) pick their detections
    /// without NMS: for them it has no effect (and a warning says so).
    #[arg(long, value_name = "IOU")]
    pub iou: Option<f32>,

    /// At most this many detections per image, the highest scoring (ultralytics' max_det).
    #[arg(long, default_value_t = 300, value_name = "N")]
    pub max_det: usize,

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

    /// The CPU executor's arithmetic: f32 (the reference), bf16 (weights and convolution
    /// inputs rounded to bfloat16, f32 accumulation; needs AVX512-BF16), int8 (weights per
    /// channel and convolution inputs over calibrated ranges, integer accumulation; needs
    /// AVX512-VNNI and --calibration-images once) or auto (bf16 where the CPU has it, else
    /// f32).
    #[arg(long, default_value = "f32", value_name = "auto|f32|bf16|int8")]
    pub precision: String,

    /// With --precision int8: calibrate the activation ranges on the JPEG/PNG images in DIR
    /// (a few dozen like the ones you will run on) and write them next to the weights as
    /// <weights>.int8.json, which later int8 runs read.
    #[arg(long, value_name = "DIR")]
    pub calibration_images: Option<PathBuf>,

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
    /// Resolves the weights (which may download them) and validates every option.
    pub fn to_config(&self) -> Result<DetectorConfig> {
        let mut config = self.checked()?;
        config.weights = match (&self.weights, &self.model) {
            (Some(path), _) => path.clone(),
            (None, name) => {
                let name = name.as_deref().unwrap_or(DEFAULT_MODEL);
                Resolver::from_env(self.offline).resolve(name)?
            }
        };
        Ok(config)
    }

    /// Every option checked, the weights not yet looked up (`weights` is empty): what a
    /// command validates before any work.
    pub fn checked(&self) -> Result<DetectorConfig> {
        let classes = match &self.classes {
            Some(spec) => ClassFilter::parse(spec).map_err(anyhow::Error::msg)?,
            None => ClassFilter::default(),
        };
        let device = DeviceSpec::parse(&self.device).map_err(anyhow::Error::msg)?;
        if let Some(n) = self.threads {
            check_threads(n, available_cores())?;
        }
        let config = DetectorConfig {
            weights: PathBuf::new(),
            imgsz: self.imgsz,
            conf: self.conf,
            iou: self.iou,
            classes,
            device,
            half: self.half,
            max_detections: self.max_det,
            precision: Precision::parse(&self.precision).map_err(anyhow::Error::msg)?,
            calibration_images: match &self.calibration_images {
                Some(dir) => calibration_images(dir)?,
                None => Vec::new(),
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// Sizes the CPU thread pool (candle's kernels use rayon's global pool).
    pub fn apply_threads(&self) -> Result<usize> {
        if let Some(n) = self.threads {
            check_threads(n, available_cores())?;
        }
        let n = self.threads.unwrap_or_else(available_cores);
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

/// The JPEG/PNG files in `dir`, sorted; at least one.
fn calibration_images(dir: &Path) -> Result<Vec<PathBuf>> {
    let images = crate::source::list_images(dir)
        .with_context(|| format!("--calibration-images {}", dir.display()))?;
    if images.is_empty() {
        bail!(
            "--calibration-images {}: no .jpg, .jpeg or .png files there; give a folder of \
             images like the ones you will run on",
            dir.display()
        );
    }
    Ok(images)
}

/// The cores this process may run on (1 when unknown).
fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `--threads` between 1 and the cores available: more threads than cores only make the
/// kernels' spinning workers compete (issue 12: `--threads 1000` ran 150× slower).
fn check_threads(n: usize, cores: usize) -> Result<()> {
    if n == 0 {
        bail!("--threads must be at least 1");
    }
    if n > cores {
        bail!(
            "--threads {n} is above the limit of {cores} (the CPU cores available here); more threads than cores only slow inference down"
        );
    }
    Ok(())
}

/// `--source` and the flags that shape how it is opened.
#[derive(Debug, Clone, clap::Args)]
pub struct SourceArgs {
    /// camera:N (or N), a video file, a stream URL (rtsp://, http://, ...), a drive folder, an
    /// MCAP file, a KITTI raw folder, an image folder or glob (`dir/*.jpg`), or synthetic:WxH[@FPS][:live]
    /// (a moving test pattern for load tests; endless: stop it with --max-frames).
    #[arg(long, default_value = "camera:0", value_name = "SRC")]
    pub source: String,

    /// Camera pixel format: auto, mjpeg, yuyv or nv12.
    #[arg(long, default_value = "auto", value_name = "FORMAT")]
    pub camera_format: CameraFormat,

    /// Camera frame size, WIDTHxHEIGHT.
    #[arg(long, value_name = "WxH", value_parser = parse_size)]
    pub camera_size: Option<(u32, u32)>,

    /// Camera frame rate.
    #[arg(long, value_name = "N")]
    pub camera_fps: Option<u32>,

    /// How long a camera that stops delivering is retried before the run ends, seconds.
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub camera_retry: f64,

    /// Network streams: give up on a stream that does not answer, or sends no frame, for
    /// this long, seconds (ffmpeg's -rw_timeout/-timeout and lookout's own watchdog).
    #[arg(long, default_value_t = 10.0, value_name = "SECS")]
    pub stream_timeout: f64,

    /// Network streams: reconnect a stream that stalls or ends, with back-off, for up to
    /// this long after it is lost, seconds; 0 never reconnects.
    #[arg(long, default_value_t = 30.0, value_name = "SECS")]
    pub reconnect: f64,

    /// Frame rate given to image folders and globs (they carry no timestamps).
    #[arg(long, default_value_t = 10.0, value_name = "FPS")]
    pub fps: f64,

    /// MCAP sources: the image topic to replay (default: the file's only image topic).
    #[arg(long, value_name = "NAME")]
    pub topic: Option<String>,
}

impl SourceArgs {
    pub fn spec(&self) -> Result<SourceSpec> {
        let opts = SourceOptions {
            images_fps: self.fps,
            camera_format: self.camera_format,
            camera_size: self.camera_size,
            camera_fps: self.camera_fps,
            camera_retry_secs: self.camera_retry,
            stream: StreamOptions {
                timeout_secs: self.stream_timeout,
                reconnect_secs: self.reconnect,
            },
            topic: self.topic.clone(),
        };
        Ok(SourceSpec::parse(&self.source, &opts)?)
    }
}

/// `$LOOKOUT_FFMPEG`, `$LOOKOUT_FFPROBE` and `PATH`, read here once per command: below
/// the CLI, video sources and the video sink are handed this setting, never the environment.
pub fn ffmpeg_from_env() -> FfmpegConfig {
    FfmpegConfig::from_vars(|name| std::env::var_os(name))
}

/// `HOST:PORT` (an address or a name this machine resolves) as the address to bind, for
/// `flag`'s error message.
pub fn socket_addr(flag: &str, text: &str) -> Result<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let bad = || {
        format!("{flag} `{text}` is not HOST:PORT (e.g. 127.0.0.1:8765, or 0.0.0.0:8765 for every interface)")
    };
    let mut addrs = text
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("{}: {e}", bad()))?;
    addrs.next().ok_or_else(|| anyhow::anyhow!(bad()))
}

/// `1280x720` → (1280, 720).
pub(crate) fn parse_size(text: &str) -> Result<(u32, u32), String> {
    let bad = || format!("`{text}` is not WIDTHxHEIGHT, e.g. 1280x720");
    let (w, h) = text.split_once(['x', 'X']).ok_or_else(bad)?;
    let w = w.trim().parse().map_err(|_| bad())?;
    let h = h.trim().parse().map_err(|_| bad())?;
    Ok((w, h))
}

/// `--pace`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PaceArg {
    /// As fast as possible, every frame (files).
    Max,
    /// At the recorded timing; frames that cannot keep up are dropped.
    Realtime,
}

impl From<PaceArg> for Pace {
    fn from(p: PaceArg) -> Pace {
        match p {
            PaceArg::Max => Pace::Max,
            PaceArg::Realtime => Pace::Realtime,
        }
    }
}

/// `--frame-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FrameFormatArg {
    /// Lossy, small.
    Jpg,
    /// Lossless (replays give exactly the source's detections).
    Png,
}

impl From<FrameFormatArg> for FrameFileFormat {
    fn from(f: FrameFormatArg) -> FrameFileFormat {
        match f {
            FrameFormatArg::Jpg => FrameFileFormat::Jpg,
            FrameFormatArg::Png => FrameFileFormat::Png,
        }
    }
}

/// Refuses an existing, non-empty folder before anything is opened.
pub fn check_new_folder(dir: &Path) -> Result<()> {
    if std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "drive folder {} already exists and is not empty; record into a new folder",
            dir.display()
        );
    }
    Ok(())
}

/// A switch given as `on` or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

/// The tracker's flags (`run`, `track`).
#[derive(Debug, Clone, clap::Args)]
pub struct TrackerArgs {
    /// Multi-object tracker: bytetrack, iou (the greedy baseline) or none.
    #[arg(long, value_enum, default_value_t = TrackerKind::Bytetrack)]
    pub tracker: TrackerKind,

    /// Tracker settings, TOML with ultralytics' names: track_high_thresh, track_low_thresh,
    /// new_track_thresh, track_buffer (frames at 30 fps), match_thresh, fuse_score.
    #[arg(long, value_name = "FILE")]
    pub tracker_config: Option<PathBuf>,
}

/// A tracker, checked: its kind and settings.
#[derive(Debug, Clone, Copy)]
pub struct TrackingPlan {
    pub kind: TrackerKind,
    pub config: ByteTrackConfig,
}

impl TrackingPlan {
    /// The detector's threshold the tracker needs: every box it may use.
    pub fn detector_conf(&self) -> f32 {
        match self.kind {
            TrackerKind::Bytetrack => self.config.track_low_thresh,
            _ => self.config.track_high_thresh,
        }
    }

    pub fn build(&self) -> Box<dyn Tracker> {
        crate::track::build(self.kind, self.config).expect("a plan is never for --tracker none")
    }
}

impl TrackerArgs {
    /// Reads and checks `--tracker-config`; `None` for `--tracker none`.
    pub fn plan(&self) -> Result<Option<TrackingPlan>> {
        let config = match &self.tracker_config {
            Some(path) => ByteTrackConfig::load(path)?,
            None => ByteTrackConfig::default(),
        };
        if self.tracker == TrackerKind::None {
            if self.tracker_config.is_some() {
                bail!("--tracker-config with --tracker none: pick a tracker or drop the file");
            }
            return Ok(None);
        }
        Ok(Some(TrackingPlan {
            kind: self.tracker,
            config,
        }))
    }
}

/// Where tracks are written (`run`, `track`).
#[derive(Debug, Clone, clap::Args)]
pub struct TracksOutArgs {
    /// Every confirmed track's box per frame, for TrackEval / py-motmetrics (MOTChallenge
    /// format; KITTI tracking format for a `.kitti`/`.kitti.txt` file or with --tracks-format kitti).
    #[arg(long, value_name = "FILE")]
    pub save_tracks: Option<PathBuf>,

    /// Format of --save-tracks: mot or kitti.
    #[arg(long, value_enum, requires = "save_tracks")]
    pub tracks_format: Option<TrackFormat>,
}

impl TracksOutArgs {
    /// `--tracks-format`, else by the file's name (`.kitti`, `.kitti.txt`), else MOTChallenge.
    pub fn format(&self, path: &Path) -> TrackFormat {
        self.tracks_format
            .unwrap_or_else(|| TrackFormat::for_path(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 12 item 2: `--threads 1000` was accepted; it is refused, naming the limit.
    #[test]
    fn threads_are_bounded_by_the_cores_and_the_error_names_the_limit() {
        assert!(check_threads(1, 2).is_ok() && check_threads(2, 2).is_ok());
        assert!(check_threads(0, 2).is_err());
        let err = check_threads(1000, 16).unwrap_err().to_string();
        assert!(err.contains("1000") && err.contains("limit of 16"), "{err}");
    }
}

/// `--privacy`: off, or how people are covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PrivacyArg {
    Off,
    Blur,
    Pixelate,
}

/// The privacy flags (`run`).
#[derive(Debug, Clone, clap::Args)]
pub struct PrivacyArgs {
    /// Anonymise people in every frame written or shown (drive, video, frames, window):
    /// blur, pixelate or off. Raw frames are then never written.
    #[arg(long, value_enum, default_value_t = PrivacyArg::Off)]
    pub privacy: PrivacyArg,

    /// What --privacy covers: class names, groups or ids, as --classes.
    #[arg(long, default_value = "person", value_name = "LIST")]
    pub privacy_classes: String,

    /// Cover detections from this score (below --conf: a flicker never reveals a face).
    #[arg(long, default_value_t = 0.15, value_name = "SCORE")]
    pub privacy_conf: f32,

    /// Grow each covered box by this fraction of its size on every side.
    #[arg(long, default_value_t = 0.1, value_name = "FRACTION")]
    pub privacy_margin: f32,
}

impl PrivacyArgs {
    /// The checked settings; `None` for `--privacy off`.
    pub fn plan(&self) -> Result<Option<crate::privacy::PrivacyConfig>> {
        use crate::privacy::{PrivacyConfig, PrivacyMethod};
        let method = match self.privacy {
            PrivacyArg::Off => return Ok(None),
            PrivacyArg::Blur => PrivacyMethod::Blur,
            PrivacyArg::Pixelate => PrivacyMethod::Pixelate,
        };
        if !(0.0..=1.0).contains(&self.privacy_conf) {
            bail!("--privacy-conf {} is outside [0, 1]", self.privacy_conf);
        }
        if !(0.0..=1.0).contains(&self.privacy_margin) {
            bail!(
                "--privacy-margin {} is outside [0, 1] (a fraction of the box's size)",
                self.privacy_margin
            );
        }
        let classes = ClassFilter::parse(&self.privacy_classes)
            .map_err(|e| anyhow::anyhow!(e.replace("--classes", "--privacy-classes")))?;
        Ok(Some(PrivacyConfig {
            method,
            classes,
            min_score: self.privacy_conf,
            margin: self.privacy_margin,
        }))
    }
}
