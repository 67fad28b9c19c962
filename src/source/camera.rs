//! Local cameras through nokhwa (V4L2 on Linux): listing devices and their modes, choosing
//! the closest offered mode to the one asked for, and reopening a camera that stops.
//!
//! Mode choice is a pure function ([`select_mode`]) because nokhwa's own `Closest` request
//! fails outright when the asked pixel format is absent; here a missing format, size or
//! rate falls back to the nearest offered mode and the choice is logged. Frames decode
//! into buffers from the pipeline's frame pool in every pixel format ([`PixelFormat::to_rgb_into`]).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use image::RgbImage;
use nokhwa::utils::{
    ApiBackend, CameraFormat as NokhwaFormat, CameraIndex, FrameFormat, RequestedFormat,
    RequestedFormatType, Resolution,
};
use nokhwa::Camera;

use super::convert::{self, ConvertError};
use super::{FrameSource, SourceError, SourceInfo};
use crate::types::{mono_now_ns, wall_now_ns, Frame, FramePool};

/// Asked size when none is given: enough detail for detection at real-time rates.
const DEFAULT_SIZE: (u32, u32) = (1280, 720);
const DEFAULT_FPS: u32 = 30;
/// Consecutive undecodable frames after which the camera counts as stopped.
const MAX_BAD_FRAMES_IN_A_ROW: u32 = 30;
/// Back-off between reopen attempts: doubles from the first to the last.
const REOPEN_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(2));

/// The pixel format asked for with `--camera-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CameraFormat {
    #[default]
    Any,
    Mjpeg,
    Yuyv,
    Nv12,
}

impl CameraFormat {
    fn pixel_format(self) -> Option<PixelFormat> {
        match self {
            CameraFormat::Any => None,
            CameraFormat::Mjpeg => Some(PixelFormat::Mjpeg),
            CameraFormat::Yuyv => Some(PixelFormat::Yuyv),
            CameraFormat::Nv12 => Some(PixelFormat::Nv12),
        }
    }
}

impl FromStr for CameraFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "any" | "auto" => Ok(CameraFormat::Any),
            "mjpeg" | "mjpg" => Ok(CameraFormat::Mjpeg),
            "yuyv" | "yuy2" => Ok(CameraFormat::Yuyv),
            "nv12" => Ok(CameraFormat::Nv12),
            other => Err(format!(
                "unknown camera format `{other}`; expected any, mjpeg, yuyv or nv12"
            )),
        }
    }
}

/// A pixel format a camera offers and this module decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PixelFormat {
    Mjpeg,
    Yuyv,
    Nv12,
    Rgb24,
    Bgr24,
    Gray,
}

impl PixelFormat {
    /// Preference when any format will do: MJPEG keeps USB bandwidth low at high rates.
    fn rank(self) -> u8 {
        self as u8
    }

    fn from_nokhwa(format: FrameFormat) -> PixelFormat {
        match format {
            FrameFormat::MJPEG => PixelFormat::Mjpeg,
            FrameFormat::YUYV => PixelFormat::Yuyv,
            FrameFormat::NV12 => PixelFormat::Nv12,
            FrameFormat::RAWRGB => PixelFormat::Rgb24,
            FrameFormat::RAWBGR => PixelFormat::Bgr24,
            FrameFormat::GRAY => PixelFormat::Gray,
        }
    }

    fn to_nokhwa(self) -> FrameFormat {
        match self {
            PixelFormat::Mjpeg => FrameFormat::MJPEG,
            PixelFormat::Yuyv => FrameFormat::YUYV,
            PixelFormat::Nv12 => FrameFormat::NV12,
            PixelFormat::Rgb24 => FrameFormat::RAWRGB,
            PixelFormat::Bgr24 => FrameFormat::RAWBGR,
            PixelFormat::Gray => FrameFormat::GRAY,
        }
    }

    /// Decodes one raw camera buffer of this format.
    pub fn to_rgb(self, raw: &[u8], width: u32, height: u32) -> Result<RgbImage, ConvertError> {
        self.to_rgb_into(raw, width, height, &FramePool::default())
    }

    /// [`PixelFormat::to_rgb`] into a buffer from `pool`, in every format: MJPEG is decoded
    /// by libjpeg-turbo straight into it (its size comes from the JPEG header).
    pub fn to_rgb_into(
        self,
        raw: &[u8],
        width: u32,
        height: u32,
        pool: &FramePool,
    ) -> Result<RgbImage, ConvertError> {
        let out = || pool.take(width as usize * height as usize * 3);
        match self {
            PixelFormat::Mjpeg => convert::mjpeg_to_rgb_into(raw, pool),
            PixelFormat::Yuyv => convert::yuyv_to_rgb_into(raw, width, height, out()),
            PixelFormat::Nv12 => convert::nv12_to_rgb_into(raw, width, height, out()),
            PixelFormat::Rgb24 => convert::packed_rgb_to_rgb_into(raw, width, height, false, out()),
            PixelFormat::Bgr24 => convert::packed_rgb_to_rgb_into(raw, width, height, true, out()),
            PixelFormat::Gray => convert::gray_to_rgb_into(raw, width, height, out()),
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PixelFormat::Mjpeg => "MJPEG",
            PixelFormat::Yuyv => "YUYV",
            PixelFormat::Nv12 => "NV12",
            PixelFormat::Rgb24 => "RGB24",
            PixelFormat::Bgr24 => "BGR24",
            PixelFormat::Gray => "GRAY",
        })
    }
}

/// One mode a camera offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CameraMode {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
}

impl CameraMode {
    fn from_nokhwa(format: &NokhwaFormat) -> CameraMode {
        CameraMode {
            format: PixelFormat::from_nokhwa(format.format()),
            width: format.width(),
            height: format.height(),
            fps: format.frame_rate(),
        }
    }

    fn to_nokhwa(self) -> NokhwaFormat {
        NokhwaFormat::new(
            Resolution::new(self.width, self.height),
            self.format.to_nokhwa(),
            self.fps,
        )
    }
}

impl fmt::Display for CameraMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}x{}@{}",
            self.format, self.width, self.height, self.fps
        )
    }
}

/// What `--camera-format/--camera-size/--camera-fps` ask for; `None` means "a good default".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModeRequest {
    pub format: CameraFormat,
    pub size: Option<(u32, u32)>,
    pub fps: Option<u32>,
}

impl fmt::Display for ModeRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.format.pixel_format() {
            Some(format) => write!(f, "{format}")?,
            None => f.write_str("any format")?,
        }
        if let Some((w, h)) = self.size {
            write!(f, " {w}x{h}")?;
        }
        if let Some(fps) = self.fps {
            write!(f, " @{fps} fps")?;
        }
        Ok(())
    }
}

/// The mode picked from the offered list, and a note when it differs from the request.
#[derive(Debug, Clone, PartialEq)]
pub struct ModeChoice {
    pub mode: CameraMode,
    pub note: Option<String>,
}

/// Picks the offered mode closest to `request`: the asked format when offered (else any),
/// then the nearest size and rate. An explicit size outranks the rate; without one, the rate
/// comes first (an unasked-for size is not worth a slideshow). Ties go to the larger size,
/// the higher rate, then MJPEG, YUYV, NV12, RGB, BGR, grey. `None` when nothing is offered.
pub fn select_mode(offered: &[CameraMode], request: &ModeRequest) -> Option<ModeChoice> {
    let wanted_format = request.format.pixel_format();
    let format_offered = wanted_format.is_some_and(|f| offered.iter().any(|m| m.format == f));
    let candidates = offered
        .iter()
        .filter(|m| !format_offered || Some(m.format) == wanted_format);
    let (want_w, want_h) = request.size.unwrap_or(DEFAULT_SIZE);
    let want_fps = request.fps.unwrap_or(DEFAULT_FPS);
    let size_key = |m: &CameraMode| {
        let distance = m.width.abs_diff(want_w) + m.height.abs_diff(want_h);
        (
            distance,
            std::cmp::Reverse(u64::from(m.width) * u64::from(m.height)),
        )
    };
    let fps_key = |m: &CameraMode| (m.fps.abs_diff(want_fps), std::cmp::Reverse(m.fps));
    let mode = *if request.size.is_some() {
        candidates.min_by_key(|m| (size_key(m), fps_key(m), m.format.rank()))
    } else {
        candidates.min_by_key(|m| (fps_key(m), size_key(m), m.format.rank()))
    }?;
    let exact = wanted_format.is_none_or(|f| f == mode.format)
        && request.size.is_none_or(|s| s == (mode.width, mode.height))
        && request.fps.is_none_or(|fps| fps == mode.fps);
    let note = (!exact).then(|| {
        let missing_format = match wanted_format {
            Some(f) if !format_offered => format!(" ({f} not offered)"),
            _ => String::new(),
        };
        format!("asked {request}{missing_format}; closest offered mode is {mode}")
    });
    Some(ModeChoice { mode, note })
}

/// A camera and the modes it offers (for `lookout cameras`).
#[derive(Debug, Clone, PartialEq)]
pub struct CameraDevice {
    pub index: u32,
    pub name: String,
    /// `/dev/videoN` on Linux.
    pub node: Option<PathBuf>,
    pub modes: Vec<CameraMode>,
    /// Why the modes could not be read (busy, permission denied), if so.
    pub error: Option<String>,
}

/// Every camera the OS reports, each with its offered modes.
pub fn list_cameras() -> Result<Vec<CameraDevice>, SourceError> {
    let cameras = nokhwa::query(ApiBackend::Auto).map_err(|e| SourceError::NoCamera {
        detail: format!("cannot list cameras: {e}"),
    })?;
    let mut devices = Vec::with_capacity(cameras.len());
    for info in cameras {
        let Ok(index) = info.index().as_index() else {
            continue;
        };
        let node = device_node(index);
        let (modes, error) = match check_node_access(index).and_then(|()| offered_modes(index)) {
            Ok(modes) => (modes, None),
            Err(e) => (Vec::new(), Some(e.to_string())),
        };
        devices.push(CameraDevice {
            index,
            name: info.human_name(),
            node,
            modes,
            error,
        });
    }
    Ok(devices)
}

fn offered_modes(index: u32) -> Result<Vec<CameraMode>, SourceError> {
    let mut camera = open_any_mode(index)?;
    camera_modes(&mut camera, index)
}

fn camera_error(index: u32, what: &str, err: impl fmt::Display) -> SourceError {
    SourceError::Camera {
        index,
        message: format!("{what}: {err}"),
    }
}

const DECODABLE: &[FrameFormat] = &[
    FrameFormat::MJPEG,
    FrameFormat::YUYV,
    FrameFormat::NV12,
    FrameFormat::RAWRGB,
    FrameFormat::RAWBGR,
    FrameFormat::GRAY,
];

fn open_any_mode(index: u32) -> Result<Camera, SourceError> {
    let request = RequestedFormat::with_formats(RequestedFormatType::None, DECODABLE);
    Camera::new(CameraIndex::Index(index), request)
        .map_err(|e| camera_error(index, "cannot open", e))
}

fn camera_modes(camera: &mut Camera, index: u32) -> Result<Vec<CameraMode>, SourceError> {
    let formats = camera
        .compatible_camera_formats()
        .map_err(|e| camera_error(index, "cannot list modes", e))?;
    Ok(formats.iter().map(CameraMode::from_nokhwa).collect())
}

#[cfg(target_os = "linux")]
fn device_node(index: u32) -> Option<PathBuf> {
    Some(PathBuf::from(format!("/dev/video{index}")))
}

#[cfg(not(target_os = "linux"))]
fn device_node(_index: u32) -> Option<PathBuf> {
    None
}

/// On Linux, says which node is missing or unreadable before nokhwa gives a vaguer error.
fn check_node_access(index: u32) -> Result<(), SourceError> {
    match device_node(index) {
        Some(node) => check_node(&node),
        None => Ok(()),
    }
}

/// The device node exists and this user may open it read-write.
pub fn check_node(node: &std::path::Path) -> Result<(), SourceError> {
    if !node.exists() {
        let others = video_nodes();
        let detail = if others.is_empty() {
            "there is no /dev/video* device".to_string()
        } else {
            format!(
                "{} does not exist (present: {})",
                node.display(),
                others.join(", ")
            )
        };
        return Err(SourceError::NoCamera { detail });
    }
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(node);
    open_outcome(node, opened.map(drop))
}

/// What an attempt to open `node` means; apart from [`check_node`] so that the permission
/// case is testable as root (root opens any file).
fn open_outcome(node: &std::path::Path, opened: std::io::Result<()>) -> Result<(), SourceError> {
    match opened {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            Err(SourceError::CameraPermission {
                node: node.display().to_string(),
            })
        }
        // Busy or odd devices: let the camera library say what is wrong.
        Err(_) => Ok(()),
    }
}

fn video_nodes() -> Vec<String> {
    let mut nodes: Vec<String> = std::fs::read_dir("/dev")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|name| name.starts_with("video"))
        .map(|name| format!("/dev/{name}"))
        .collect();
    nodes.sort();
    nodes
}

/// A nokhwa camera that may move to another thread.
struct SendCamera(Camera);

// SAFETY: nokhwa's `Camera` is not `Send` only because its backend is a `Box<dyn Trait>`
// without a `Send` bound. The V4L2 backend holds a device file descriptor (behind an
// `Arc<Mutex>`) and mmap'd buffers, none tied to the creating thread, and the camera is only
// ever used through `&mut self` from one thread at a time. nokhwa makes the same promise
// with its `camera-sync-impl` feature (`unsafe impl Send for Camera`).
unsafe impl Send for SendCamera {}

/// A local camera in a chosen mode; reopened with back-off when it stops delivering.
pub struct CameraSource {
    index: u32,
    camera: Option<SendCamera>,
    mode: CameraMode,
    retry: Duration,
    next_seq: u64,
    bad_frames_in_a_row: u32,
    skipped: u64,
    ended: bool,
    ended_early: bool,
    note: Option<String>,
    description: String,
    pool: FramePool,
}

impl CameraSource {
    /// Opens camera `index` in the offered mode closest to `request`; `retry_secs` bounds
    /// how long a camera that stops is reopened before the source ends.
    pub fn open(index: u32, request: ModeRequest, retry_secs: f64) -> Result<Self, SourceError> {
        check_node_access(index)?;
        let mut camera = open_any_mode(index)?;
        let offered = camera_modes(&mut camera, index)?;
        let choice = select_mode(&offered, &request).ok_or_else(|| SourceError::Camera {
            index,
            message:
                "offers no mode in a format lookout decodes (MJPEG, YUYV, NV12, RGB, BGR, GRAY)"
                    .into(),
        })?;
        match &choice.note {
            Some(note) => tracing::warn!("camera {index}: {note}"),
            None => tracing::info!("camera {index}: using {}", choice.mode),
        }
        start_stream(&mut camera, index, choice.mode)?;
        let name = camera.info().human_name();
        Ok(Self {
            index,
            camera: Some(SendCamera(camera)),
            mode: choice.mode,
            retry: Duration::from_secs_f64(retry_secs.max(0.0)),
            next_seq: 0,
            bad_frames_in_a_row: 0,
            skipped: 0,
            ended: false,
            ended_early: false,
            note: choice.note,
            description: format!("camera:{index} {name} ({})", choice.mode),
            pool: FramePool::default(),
        })
    }

    /// The mode the camera runs in.
    pub fn mode(&self) -> CameraMode {
        self.mode
    }

    /// Reopens the camera in the same mode, backing off, for up to the retry window.
    fn reopen(&mut self, why: &str) -> bool {
        tracing::warn!(
            "camera {}: {why}; reopening for up to {:?}",
            self.index,
            self.retry
        );
        self.camera = None;
        let started = Instant::now();
        let mut wait = REOPEN_BACKOFF.0;
        while started.elapsed() < self.retry {
            std::thread::sleep(wait.min(self.retry.saturating_sub(started.elapsed())));
            wait = (wait * 2).min(REOPEN_BACKOFF.1);
            let reopened = open_any_mode(self.index).and_then(|mut camera| {
                start_stream(&mut camera, self.index, self.mode).map(|()| camera)
            });
            match reopened {
                Ok(camera) => {
                    tracing::info!("camera {}: reopened", self.index);
                    self.camera = Some(SendCamera(camera));
                    self.bad_frames_in_a_row = 0;
                    return true;
                }
                Err(e) => tracing::debug!("camera {}: reopen failed: {e}", self.index),
            }
        }
        self.note = Some(format!(
            "camera {} stopped ({why}) and did not come back within {:?}",
            self.index, self.retry
        ));
        false
    }
}

fn start_stream(camera: &mut Camera, index: u32, mode: CameraMode) -> Result<(), SourceError> {
    let format = mode.to_nokhwa();
    let formats = [format.format()];
    let request = RequestedFormat::with_formats(RequestedFormatType::Exact(format), &formats);
    camera
        .set_camera_requset(request)
        .map_err(|e| camera_error(index, &format!("cannot set mode {mode}"), e))?;
    camera
        .open_stream()
        .map_err(|e| camera_error(index, "cannot start streaming", e))
}

impl FrameSource for CameraSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        while !self.ended {
            let Some(SendCamera(camera)) = self.camera.as_mut() else {
                self.ended = true;
                break;
            };
            let decoded = match camera.frame_raw() {
                Ok(raw) => self.mode.format.to_rgb_into(
                    &raw,
                    self.mode.width,
                    self.mode.height,
                    &self.pool,
                ),
                Err(e) => {
                    let why = format!("frame read failed: {e}");
                    if !self.reopen(&why) {
                        self.ended = true;
                        self.ended_early = true;
                    }
                    continue;
                }
            };
            match decoded {
                Ok(image) => {
                    self.bad_frames_in_a_row = 0;
                    let frame = Frame {
                        seq: self.next_seq,
                        capture_mono_ns: mono_now_ns(),
                        capture_wall_ns: wall_now_ns(),
                        pts_ns: None,
                        image,
                    };
                    self.next_seq += 1;
                    return Ok(Some(frame));
                }
                Err(e) => {
                    self.skipped += 1;
                    self.bad_frames_in_a_row += 1;
                    tracing::debug!("camera {}: skipped a frame: {e}", self.index);
                    if self.bad_frames_in_a_row >= MAX_BAD_FRAMES_IN_A_ROW {
                        let why =
                            format!("{MAX_BAD_FRAMES_IN_A_ROW} undecodable frames in a row ({e})");
                        if !self.reopen(&why) {
                            self.ended = true;
                            self.ended_early = true;
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.pool = pool;
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            description: self.description.clone(),
            nominal_fps: Some(f64::from(self.mode.fps)),
            frame_count: None,
            size: Some((self.mode.width, self.mode.height)),
            live: true,
            ended_early: self.ended_early,
            skipped_frames: self.skipped,
            note: self.note.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(format: PixelFormat, width: u32, height: u32, fps: u32) -> CameraMode {
        CameraMode {
            format,
            width,
            height,
            fps,
        }
    }

    /// A typical UVC webcam: YUYV only at low rates for big sizes, MJPEG fast.
    fn webcam() -> Vec<CameraMode> {
        use PixelFormat::*;
        vec![
            mode(Yuyv, 640, 480, 30),
            mode(Yuyv, 1280, 720, 10),
            mode(Yuyv, 1920, 1080, 5),
            mode(Mjpeg, 640, 480, 30),
            mode(Mjpeg, 1280, 720, 30),
            mode(Mjpeg, 1280, 720, 15),
            mode(Mjpeg, 1920, 1080, 30),
        ]
    }

    #[test]
    fn default_request_takes_720p_at_30_in_mjpeg() {
        let choice = select_mode(&webcam(), &ModeRequest::default()).unwrap();
        assert_eq!(choice.mode, mode(PixelFormat::Mjpeg, 1280, 720, 30));
        assert_eq!(choice.note, None);
    }

    #[test]
    fn exact_request_is_honoured_without_a_note() {
        let request = ModeRequest {
            format: CameraFormat::Yuyv,
            size: Some((1920, 1080)),
            fps: Some(5),
        };
        let choice = select_mode(&webcam(), &request).unwrap();
        assert_eq!(choice.mode, mode(PixelFormat::Yuyv, 1920, 1080, 5));
        assert_eq!(choice.note, None);
    }

    #[test]
    fn absent_format_falls_back_and_says_so() {
        let request = ModeRequest {
            format: CameraFormat::Nv12,
            size: Some((1280, 720)),
            fps: Some(30),
        };
        let choice = select_mode(&webcam(), &request).unwrap();
        assert_eq!(choice.mode, mode(PixelFormat::Mjpeg, 1280, 720, 30));
        let note = choice.note.unwrap();
        assert!(note.contains("NV12 not offered"), "{note}");
        assert!(note.contains("MJPEG 1280x720@30"), "{note}");
    }

    #[test]
    fn explicit_size_outranks_rate_and_nearest_rate_wins() {
        let request = ModeRequest {
            format: CameraFormat::Yuyv,
            size: Some((1280, 700)),
            fps: Some(60),
        };
        let choice = select_mode(&webcam(), &request).unwrap();
        assert_eq!(choice.mode, mode(PixelFormat::Yuyv, 1280, 720, 10));
        assert!(choice.note.is_some());

        let fast = ModeRequest {
            format: CameraFormat::Any,
            size: None,
            fps: Some(60),
        };
        // No size asked: the rate comes first, then the size nearest 1280x720.
        let choice = select_mode(&webcam(), &fast).unwrap();
        assert_eq!(choice.mode, mode(PixelFormat::Mjpeg, 1280, 720, 30));
    }

    #[test]
    fn nothing_offered_gives_none() {
        assert_eq!(select_mode(&[], &ModeRequest::default()), None);
    }

    #[test]
    fn camera_format_parses_names() {
        assert_eq!("MJPG".parse::<CameraFormat>(), Ok(CameraFormat::Mjpeg));
        assert_eq!("yuyv".parse::<CameraFormat>(), Ok(CameraFormat::Yuyv));
        assert!("h264"
            .parse::<CameraFormat>()
            .unwrap_err()
            .contains("expected any"));
    }

    #[test]
    fn missing_node_says_no_camera_and_what_to_use() {
        let err = check_node(std::path::Path::new("/dev/video987")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("no camera found: "), "{text}");
        assert!(text.contains("use --source FILE|DRIVE"), "{text}");
    }

    #[test]
    fn unreadable_node_names_the_node() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let node = tmp.path().join("video0");
        std::fs::write(&node, b"").unwrap();
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o000)).unwrap();
        // Root opens any file: the decision is checked on the error the kernel would give.
        let text = if std::fs::File::open(&node).is_ok() {
            let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
            open_outcome(&node, Err(denied)).unwrap_err().to_string()
        } else {
            check_node(&node).unwrap_err().to_string()
        };
        assert!(text.contains("sudo usermod -aG video"), "{text}");
        let busy = std::io::Error::from(std::io::ErrorKind::ResourceBusy);
        assert!(
            open_outcome(&node, Err(busy)).is_ok(),
            "a busy device is left to nokhwa"
        );
        assert!(
            text.starts_with("permission denied on camera device"),
            "{text}"
        );
        assert!(text.contains(&node.display().to_string()), "{text}");
    }

    /// Needs a real camera: `cargo test --release --lib source::camera -- --ignored`.
    #[test]
    #[ignore]
    fn real_camera_delivers_frames() {
        let devices = list_cameras().unwrap();
        eprintln!("{devices:#?}");
        let first = devices.first().expect("a camera");
        let mut source = CameraSource::open(first.index, ModeRequest::default(), 2.0).unwrap();
        let frame = source.next_frame().unwrap().unwrap();
        assert_eq!(
            (frame.width(), frame.height()),
            (source.mode().width, source.mode().height)
        );
    }
}
