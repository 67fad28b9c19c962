//! `--source` strings parsed once into a typed [`SourceSpec`]; also credential masking for
//! URLs, which every description, error and log line of this module goes through.

use std::fmt;
use std::path::{Path, PathBuf};

use super::camera::CameraFormat;
use super::ffmpeg::StreamOptions;
use super::synthetic::SyntheticSpec;
use super::SourceError;
use crate::redact::mask_credentials;

/// File extensions read as video through ffmpeg.
const VIDEO_EXTENSIONS: &[&str] = &[
    "mp4", "m4v", "mkv", "mov", "avi", "webm", "ts", "mts", "m2ts", "flv", "mpg", "mpeg", "wmv",
    "3gp", "ogv", "h264", "264", "hevc", "h265", "y4m",
];

/// File extensions read as still images (the `image` crate is built with jpeg and png).
pub(crate) const IMAGE_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

/// URL schemes handed to ffmpeg as network streams.
const STREAM_SCHEMES: &[&str] = &[
    "rtsp", "rtsps", "http", "https", "rtmp", "rtmps", "udp", "tcp", "srt", "rtp",
];

/// Settings from the command line that `parse` needs besides the string itself.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceOptions {
    /// Frame rate given to image folders and globs (they have no timestamps).
    pub images_fps: f64,
    pub camera_format: CameraFormat,
    pub camera_size: Option<(u32, u32)>,
    pub camera_fps: Option<u32>,
    /// How long a camera that stops delivering is retried before the source ends.
    pub camera_retry_secs: f64,
    /// Network streams: probe and read timeouts, and how long a lost stream is reconnected.
    pub stream: StreamOptions,
    /// MCAP files: the image topic to read (default: the only one).
    pub topic: Option<String>,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            images_fps: 10.0,
            camera_format: CameraFormat::Any,
            camera_size: None,
            camera_fps: None,
            camera_retry_secs: 10.0,
            stream: StreamOptions::default(),
            topic: None,
        }
    }
}

/// What `--source` names, validated: paths exist, globs have matches, URLs have a known scheme.
/// `Debug` and `Display` mask URL credentials.
#[derive(Clone, PartialEq)]
pub enum SourceSpec {
    Camera {
        index: u32,
        format: CameraFormat,
        size: Option<(u32, u32)>,
        fps: Option<u32>,
        retry_secs: f64,
    },
    Video(PathBuf),
    /// `rtsp://`, `http(s)://`, ... (the URL may hold credentials: print it through `Display`).
    Stream {
        url: String,
        options: StreamOptions,
    },
    Drive(PathBuf),
    /// An MCAP file; `topic` is `--topic` (default: its only image topic).
    Mcap {
        path: PathBuf,
        topic: Option<String>,
    },
    KittiRaw(PathBuf),
    Images {
        paths: Vec<PathBuf>,
        fps: f64,
    },
    /// `synthetic:WxH[@FPS][:live]`: a moving test pattern for load and soak runs.
    Synthetic(SyntheticSpec),
}

impl SourceSpec {
    /// Parses `camera:N` or `N`, `synthetic:WxH[@FPS][:live]`, a URL, a drive / KITTI raw / image folder, an image glob
    /// (`dir/*.jpg`), or a video or image file.
    pub fn parse(s: &str, opts: &SourceOptions) -> Result<SourceSpec, SourceError> {
        let s = s.trim();
        if s.is_empty() {
            return Err(bad_spec(
                s,
                "empty; pass camera:N, a file, a folder or a URL",
            ));
        }
        if let Some(rest) = s.strip_prefix("synthetic:") {
            return SyntheticSpec::parse(rest)
                .map(SourceSpec::Synthetic)
                .map_err(|reason| bad_spec(s, &reason));
        }
        if let Some(index) = camera_index(s)? {
            return Ok(SourceSpec::Camera {
                index,
                format: opts.camera_format,
                size: opts.camera_size,
                fps: opts.camera_fps,
                retry_secs: opts.camera_retry_secs,
            });
        }
        if let Some((scheme, _)) = s.split_once("://") {
            return parse_url(s, scheme, opts);
        }
        if is_glob(s) {
            let paths = expand_glob(Path::new(s))?;
            return images_spec(paths, opts, s);
        }
        parse_path(Path::new(s), opts)
    }

    /// Cameras and network streams: frames come at their own pace and cannot be replayed.
    pub fn is_live(&self) -> bool {
        matches!(self, SourceSpec::Camera { .. } | SourceSpec::Stream { .. })
            || matches!(self, SourceSpec::Synthetic(spec) if spec.live)
    }
}

impl fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Camera {
                index,
                format,
                size,
                fps,
                retry_secs,
            } => f
                .debug_struct("Camera")
                .field("index", index)
                .field("format", format)
                .field("size", size)
                .field("fps", fps)
                .field("retry_secs", retry_secs)
                .finish(),
            SourceSpec::Video(p) => f.debug_tuple("Video").field(p).finish(),
            SourceSpec::Stream { url, options } => f
                .debug_struct("Stream")
                .field("url", &mask_credentials(url))
                .field("options", options)
                .finish(),
            SourceSpec::Drive(p) => f.debug_tuple("Drive").field(p).finish(),
            SourceSpec::Mcap { path, topic } => f
                .debug_struct("Mcap")
                .field("path", path)
                .field("topic", topic)
                .finish(),
            SourceSpec::KittiRaw(p) => f.debug_tuple("KittiRaw").field(p).finish(),
            SourceSpec::Images { paths, fps } => f
                .debug_struct("Images")
                .field("paths", paths)
                .field("fps", fps)
                .finish(),
            SourceSpec::Synthetic(spec) => f.debug_tuple("Synthetic").field(spec).finish(),
        }
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SourceSpec::Camera { index, .. } => write!(f, "camera:{index}"),
            SourceSpec::Video(p) => write!(f, "video {}", p.display()),
            SourceSpec::Stream { url, .. } => write!(f, "stream {}", mask_credentials(url)),
            SourceSpec::Drive(p) => write!(f, "drive {}", p.display()),
            SourceSpec::Mcap { path, topic } => match topic {
                Some(topic) => write!(f, "mcap {} topic {topic}", path.display()),
                None => write!(f, "mcap {}", path.display()),
            },
            SourceSpec::KittiRaw(p) => write!(f, "KITTI raw {}", p.display()),
            SourceSpec::Images { paths, fps } => {
                write!(f, "{} images at {fps} fps", paths.len())
            }
            SourceSpec::Synthetic(spec) => write!(f, "{spec}"),
        }
    }
}

fn bad_spec(spec: &str, reason: &str) -> SourceError {
    SourceError::BadSpec {
        spec: mask_credentials(spec),
        reason: reason.to_string(),
    }
}

/// `camera:N`, `N` or `/dev/videoN` → `Some(N)`.
fn camera_index(s: &str) -> Result<Option<u32>, SourceError> {
    let digits = if let Some(rest) = s.strip_prefix("camera:") {
        rest
    } else if let Some(rest) = s.strip_prefix("/dev/video") {
        rest
    } else if s.bytes().all(|b| b.is_ascii_digit()) {
        s
    } else {
        return Ok(None);
    };
    digits
        .parse::<u32>()
        .map(Some)
        .map_err(|_| bad_spec(s, "camera index must be a number, e.g. camera:0"))
}

fn parse_url(s: &str, scheme: &str, opts: &SourceOptions) -> Result<SourceSpec, SourceError> {
    let scheme = scheme.to_ascii_lowercase();
    if STREAM_SCHEMES.contains(&scheme.as_str()) {
        let StreamOptions {
            timeout_secs,
            reconnect_secs,
        } = opts.stream;
        if !(timeout_secs.is_finite() && timeout_secs > 0.0) {
            return Err(bad_spec(
                s,
                &format!(
                    "--stream-timeout must be a positive number of seconds, got {timeout_secs}"
                ),
            ));
        }
        if !(reconnect_secs.is_finite() && reconnect_secs >= 0.0) {
            return Err(bad_spec(s, &format!("--reconnect must be 0 (never) or a positive number of seconds, got {reconnect_secs}")));
        }
        Ok(SourceSpec::Stream {
            url: s.to_string(),
            options: opts.stream,
        })
    } else {
        Err(bad_spec(
            s,
            &format!(
                "unknown URL scheme `{scheme}`; supported: {}",
                STREAM_SCHEMES.join(", ")
            ),
        ))
    }
}

fn parse_path(path: &Path, opts: &SourceOptions) -> Result<SourceSpec, SourceError> {
    if !path.exists() {
        return Err(SourceError::NoSuchFile {
            path: path.to_path_buf(),
        });
    }
    if path.is_dir() {
        return parse_dir(path, opts);
    }
    match extension_lowercase(path).as_deref() {
        Some(ext) if VIDEO_EXTENSIONS.contains(&ext) => Ok(SourceSpec::Video(path.to_path_buf())),
        Some("mcap") => Ok(SourceSpec::Mcap {
            path: path.to_path_buf(),
            topic: opts.topic.clone(),
        }),
        Some(ext) if IMAGE_EXTENSIONS.contains(&ext) => {
            images_spec(vec![path.to_path_buf()], opts, &path.display().to_string())
        }
        _ => Err(SourceError::UnknownKind {
            path: path.to_path_buf(),
            reason: "its extension is not a known video or image type".into(),
        }),
    }
}

fn parse_dir(dir: &Path, opts: &SourceOptions) -> Result<SourceSpec, SourceError> {
    if dir.join("drive.toml").is_file() || dir.join("drive.json").is_file() {
        return Ok(SourceSpec::Drive(dir.to_path_buf()));
    }
    if dir.join("image_02").join("data").is_dir() {
        return Ok(SourceSpec::KittiRaw(dir.to_path_buf()));
    }
    let paths = list_images(dir)?;
    if paths.is_empty() {
        return Err(SourceError::UnknownKind {
            path: dir.to_path_buf(),
            reason: "the folder holds no drive.toml, no image_02/data and no .jpg/.png images"
                .into(),
        });
    }
    images_spec(paths, opts, &dir.display().to_string())
}

fn images_spec(
    paths: Vec<PathBuf>,
    opts: &SourceOptions,
    what: &str,
) -> Result<SourceSpec, SourceError> {
    if paths.is_empty() {
        return Err(SourceError::NoImages {
            what: what.to_string(),
        });
    }
    if !(opts.images_fps.is_finite() && opts.images_fps > 0.0) {
        return Err(bad_spec(
            what,
            &format!("--fps must be a positive number, got {}", opts.images_fps),
        ));
    }
    Ok(SourceSpec::Images {
        paths,
        fps: opts.images_fps,
    })
}

pub(crate) fn extension_lowercase(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
}

/// The image files directly in `dir`, in name order.
pub(crate) fn list_images(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut paths = read_dir_sorted(dir)?;
    paths.retain(|p| {
        p.is_file()
            && extension_lowercase(p).is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.as_str()))
    });
    Ok(paths)
}

pub(crate) fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let io_err = |source| SourceError::Io {
        what: format!("folder {}", dir.display()),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err)? {
        paths.push(entry.map_err(io_err)?.path());
    }
    paths.sort();
    Ok(paths)
}

/// A glob has a wildcard in its last component only (`dir/*.jpg`, `frames/img_??.png`).
fn is_glob(s: &str) -> bool {
    let name = s.rsplit(['/', '\\']).next().unwrap_or(s);
    name.contains(['*', '?'])
}

fn expand_glob(pattern: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let dir = match pattern.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let name_pattern = pattern
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    if dir.to_str().is_some_and(|d| d.contains(['*', '?'])) {
        return Err(bad_spec(
            &pattern.display().to_string(),
            "wildcards are only supported in the file name, e.g. dir/*.jpg",
        ));
    }
    if !dir.is_dir() {
        return Err(SourceError::NoSuchFile {
            path: dir.to_path_buf(),
        });
    }
    let mut paths = read_dir_sorted(dir)?;
    paths.retain(|p| {
        p.is_file()
            && p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| wildcard_match(name_pattern, n))
    });
    if paths.is_empty() {
        return Err(SourceError::NoImages {
            what: format!("glob {}", pattern.display()),
        });
    }
    Ok(paths)
}

/// `*` matches any run of characters, `?` one character; everything else literally.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    // Iterative matching with back-tracking to the last `*`: linear in practice.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<SourceSpec, SourceError> {
        SourceSpec::parse(s, &SourceOptions::default())
    }

    #[test]
    fn camera_forms_parse_to_camera() {
        for s in ["camera:0", "2", "/dev/video3"] {
            let spec = parse(s).unwrap();
            assert!(matches!(spec, SourceSpec::Camera { .. }), "{s}");
            assert!(spec.is_live());
        }
        assert!(matches!(
            parse("camera:2").unwrap(),
            SourceSpec::Camera { index: 2, .. }
        ));
        let err = parse("camera:front").unwrap_err().to_string();
        assert!(err.contains("camera index must be a number"), "{err}");
    }

    #[test]
    fn urls_parse_to_streams_and_unknown_schemes_are_refused() {
        let spec = parse("rtsp://admin:secret@10.0.0.2:554/live").unwrap();
        assert!(spec.is_live());
        assert_eq!(
            spec.to_string(),
            "stream rtsp://admin:***@10.0.0.2:554/live"
        );
        assert!(matches!(
            parse("https://x/y.m3u8").unwrap(),
            SourceSpec::Stream { .. }
        ));
        let bad = |timeout_secs, reconnect_secs| {
            let opts = SourceOptions {
                stream: StreamOptions {
                    timeout_secs,
                    reconnect_secs,
                },
                ..SourceOptions::default()
            };
            SourceSpec::parse("rtsp://h/x", &opts)
                .unwrap_err()
                .to_string()
        };
        assert!(bad(0.0, 1.0).contains("--stream-timeout must be"));
        assert!(bad(1.0, -1.0).contains("--reconnect must be"));
        let err = parse("gopher://u:pw@host/x").unwrap_err().to_string();
        assert!(err.contains("unknown URL scheme `gopher`"), "{err}");
        assert!(!err.contains("pw"), "{err}");
    }

    #[test]
    fn synthetic_specs_parse_and_live_ones_are_live() {
        let spec = parse("synthetic:640x480@60:live").unwrap();
        assert!(matches!(spec, SourceSpec::Synthetic(_)) && spec.is_live());
        assert_eq!(spec.to_string(), "synthetic 640x480 at 60 fps (live)");
        assert!(!parse("synthetic:64x64").unwrap().is_live());
        let err = parse("synthetic:big").unwrap_err().to_string();
        assert!(
            err.contains("synthetic:big") && err.contains("WIDTHxHEIGHT"),
            "{err}"
        );
    }

    #[test]
    fn missing_path_says_no_such_file() {
        let err = parse("/nonexistent/clip.mp4").unwrap_err().to_string();
        assert!(
            err.starts_with("no such file: /nonexistent/clip.mp4"),
            "{err}"
        );
    }

    #[test]
    fn folders_are_told_apart_by_their_contents() {
        let tmp = tempfile::tempdir().unwrap();
        let drive = tmp.path().join("drive");
        std::fs::create_dir(&drive).unwrap();
        std::fs::write(drive.join("drive.toml"), "").unwrap();
        assert_eq!(
            parse(drive.to_str().unwrap()).unwrap(),
            SourceSpec::Drive(drive)
        );

        let kitti = tmp.path().join("kitti");
        std::fs::create_dir_all(kitti.join("image_02/data")).unwrap();
        assert_eq!(
            parse(kitti.to_str().unwrap()).unwrap(),
            SourceSpec::KittiRaw(kitti)
        );

        let imgs = tmp.path().join("imgs");
        std::fs::create_dir(&imgs).unwrap();
        for name in ["b.png", "a.jpg", "c.txt", "A.JPEG"] {
            std::fs::write(imgs.join(name), b"x").unwrap();
        }
        let SourceSpec::Images { paths, fps } = parse(imgs.to_str().unwrap()).unwrap() else {
            panic!("expected images");
        };
        assert_eq!(fps, 10.0);
        let names: Vec<_> = paths.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(names, ["A.JPEG", "a.jpg", "b.png"]);

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let err = parse(empty.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.contains("no drive.toml"), "{err}");
    }

    #[test]
    fn globs_match_names_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        for name in ["f2.jpg", "f1.jpg", "g1.jpg", "f3.png"] {
            std::fs::write(tmp.path().join(name), b"x").unwrap();
        }
        let pattern = tmp.path().join("f*.jpg");
        let SourceSpec::Images { paths, .. } = parse(pattern.to_str().unwrap()).unwrap() else {
            panic!("expected images");
        };
        let names: Vec<_> = paths.iter().map(|p| p.file_name().unwrap()).collect();
        assert_eq!(names, ["f1.jpg", "f2.jpg"]);
        let none = tmp.path().join("z*.jpg");
        let err = parse(none.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.starts_with("no images in glob"), "{err}");
    }

    #[test]
    fn files_are_classified_by_extension() {
        let tmp = tempfile::tempdir().unwrap();
        let clip = tmp.path().join("clip.MKV");
        let notes = tmp.path().join("notes.txt");
        std::fs::write(&clip, b"x").unwrap();
        std::fs::write(&notes, b"x").unwrap();
        assert_eq!(
            parse(clip.to_str().unwrap()).unwrap(),
            SourceSpec::Video(clip)
        );
        let err = parse(notes.to_str().unwrap()).unwrap_err().to_string();
        assert!(err.starts_with("don't know how to read"), "{err}");
    }

    #[test]
    fn bad_images_fps_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("a.png"), b"x").unwrap();
        let opts = SourceOptions {
            images_fps: 0.0,
            ..SourceOptions::default()
        };
        let err = SourceSpec::parse(tmp.path().to_str().unwrap(), &opts).unwrap_err();
        assert!(
            err.to_string().contains("--fps must be a positive"),
            "{err}"
        );
    }

    #[test]
    fn wildcards_match_like_a_shell() {
        assert!(wildcard_match("*.jpg", "a.jpg"));
        assert!(wildcard_match("img_??.png", "img_01.png"));
        assert!(!wildcard_match("img_??.png", "img_1.png"));
        assert!(wildcard_match("a*b*c", "aXbYbZc"));
        assert!(!wildcard_match("a*b*c", "aXbYbZ"));
        assert!(wildcard_match("*", ""));
    }

    #[test]
    fn credentials_are_masked_everywhere_in_a_text() {
        assert_eq!(
            mask_credentials("rtsp://user:pass@host:554/s"),
            "rtsp://user:***@host:554/s"
        );
        assert_eq!(
            mask_credentials("[tcp] failed 'rtsp://a:b@h/x' and http://c:d@e"),
            "[tcp] failed 'rtsp://a:***@h/x' and http://c:***@e"
        );
        assert_eq!(mask_credentials("rtsp://host/s"), "rtsp://host/s");
        assert_eq!(mask_credentials("rtsp://user@host/s"), "rtsp://user@host/s");
        assert_eq!(mask_credentials("http://u:p@ss@h/"), "http://u:***@h/");
        assert_eq!(mask_credentials("no url"), "no url");
    }
}
