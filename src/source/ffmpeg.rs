//! Video files and network streams decoded by an `ffmpeg` child process.
//!
//! Why a child process rather than FFmpeg bindings: no FFmpeg development headers or bindgen
//! tied to one FFmpeg version at build time, the very binary a user (or the test set-up)
//! installs does the decoding, and a decoder crash on a damaged stream kills only the child.
//!
//! `ffprobe` gives size, rate and frame count up front. `ffmpeg` then writes raw RGB24 frames
//! to stdout while a `showinfo` filter, last in the chain, logs each frame's pts and size to
//! stderr just before that frame is encoded; with `-fps_mode passthrough` (no duplicated or
//! dropped frames) every stderr frame line is followed by exactly that frame on stdout, so
//! frames and pts line up 1:1 and are read alternately from one thread without deadlock.
//!
//! Which binaries run is an [`FfmpegConfig`] (`$LOOKOUT_FFMPEG`, `$LOOKOUT_FFPROBE`, `PATH`)
//! that the CLI reads once and passes down; nothing here reads the environment. Frames are
//! read straight into buffers from the pipeline's frame pool.
//!
//! Nothing here blocks past a stop or a stall: every read from ffmpeg's pipes polls in short
//! slices, watching the run's stop flag and, on network streams, a deadline for the next
//! frame (`--stream-timeout`); a stream that stalls or ends is restarted with back-off for
//! `--reconnect` seconds. Children die with lookout (`PR_SET_PDEATHSIG`) and are killed and
//! reaped on drop.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::{FrameSource, SourceError, SourceInfo};
use crate::redact::mask_credentials;
use crate::types::{mono_now_ns, wall_now_ns, Frame, FramePool};

/// Environment variables naming the ffmpeg / ffprobe binaries to use instead of `PATH`'s.
/// Only the CLI reads them (into an [`FfmpegConfig`]); the library is handed the setting.
pub const FFMPEG_ENV: &str = "LOOKOUT_FFMPEG";
pub const FFPROBE_ENV: &str = "LOOKOUT_FFPROBE";

/// Error lines of ffmpeg kept for the end-of-input report.
const KEPT_ERROR_LINES: usize = 8;

/// Refuse frame sizes no camera or video produces rather than allocating gigabytes.
const MAX_FRAME_SIDE: u32 = 16_384;

/// How often a blocked read or wait looks at the stop flag and the stall deadline.
const WATCH_SLICE: Duration = Duration::from_millis(25);

/// First and longest wait between reconnection attempts of a lost stream.
const RECONNECT_BACKOFF: (Duration, Duration) =
    (Duration::from_millis(250), Duration::from_secs(4));

/// How a network stream is watched: `--stream-timeout` and `--reconnect`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StreamOptions {
    /// No answer to the probe, or no frame while playing, for this long: the stream stalled.
    pub timeout_secs: f64,
    /// A stream that stalls or ends is reopened, with back-off, for up to this long after it
    /// was lost, until a frame comes again; 0 never reopens it.
    pub reconnect_secs: f64,
}

impl Default for StreamOptions {
    fn default() -> Self {
        Self {
            timeout_secs: 10.0,
            reconnect_secs: 30.0,
        }
    }
}

impl StreamOptions {
    fn timeout(&self) -> Duration {
        Duration::from_secs_f64(self.timeout_secs)
    }

    /// ffmpeg's own socket timeouts for `url` (microseconds), a second later than our
    /// watchdog's: a backstop, so that ffmpeg gives up by itself too.
    fn ffmpeg_args(&self, url: &OsStr) -> Vec<String> {
        let micros = ((self.timeout_secs + 1.0) * 1e6).round() as u64;
        let mut args = vec!["-rw_timeout".to_string(), micros.to_string()];
        let scheme = url
            .to_string_lossy()
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase())
            .unwrap_or_default();
        // `-timeout` means a socket I/O timeout in µs only for these (rtmp reads it as a
        // listen timeout in seconds).
        if ["rtsp", "rtsps", "http", "https"].contains(&scheme.as_str()) {
            args.extend(["-timeout".to_string(), micros.to_string()]);
        }
        args
    }
}

/// Makes a child started from `command` die with this process (SIGKILL when lookout dies,
/// however it dies), so that no ffmpeg outlives it. Linux only; elsewhere a no-op. The
/// kernel ties this to the spawning *thread*: start children on a thread that outlives them
/// (the main thread, or the capture thread that owns the source).
pub fn die_with_parent(command: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: getpid before the fork; in the child only async-signal-safe calls
        // (prctl, getppid, _exit) run between fork and exec.
        let parent = unsafe { libc::getpid() };
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // The parent died before the prctl: nobody will read our output.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = command;
}

/// What a blocked read from ffmpeg watches: the run's stop flag and, on a network stream,
/// the time by which the next frame must have come.
#[derive(Debug, Default)]
struct Watch {
    stop: OnceLock<Arc<AtomicBool>>,
    /// `mono_now_ns` deadline for data; 0 for none.
    deadline_ns: AtomicU64,
}

impl Watch {
    fn stopped(&self) -> bool {
        self.stop.get().is_some_and(|s| s.load(Ordering::Relaxed))
    }

    fn set_deadline(&self, from_now: Option<Duration>) {
        let ns = from_now.map_or(0, |d| mono_now_ns() + d.as_nanos() as u64);
        self.deadline_ns.store(ns, Ordering::Relaxed);
    }

    fn overdue(&self) -> bool {
        let deadline = self.deadline_ns.load(Ordering::Relaxed);
        deadline != 0 && mono_now_ns() >= deadline
    }

    /// Sleeps `wait` in slices; false when stopped meanwhile.
    fn sleep(&self, wait: Duration) -> bool {
        let until = Instant::now() + wait;
        while !self.stopped() {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(WATCH_SLICE));
        }
        false
    }
}

/// A pipe from ffmpeg whose reads wait in [`WATCH_SLICE`] polls: a set stop flag fails a
/// read with [`STOPPED`], a passed deadline with `TimedOut`, instead of blocking forever.
struct WatchedPipe<R> {
    inner: R,
    watch: Arc<Watch>,
}

/// The message of the error a read fails with once the run is stopping.
const STOPPED: &str = "stopped";

impl<R: Read + AsRawFd> Read for WatchedPipe<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            if self.watch.stopped() {
                return Err(std::io::Error::other(STOPPED));
            }
            if self.watch.overdue() {
                return Err(std::io::ErrorKind::TimedOut.into());
            }
            let mut fd = libc::pollfd {
                fd: self.inner.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd, alive for the call.
            let ready = unsafe { libc::poll(&mut fd, 1, WATCH_SLICE.as_millis() as libc::c_int) };
            if ready > 0 {
                // Readable, closed or failed: read does not block on any of them.
                return self.inner.read(buf);
            }
            if ready < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
}

/// Which ffmpeg and ffprobe to run, as the user configured it: the typed form of
/// `$LOOKOUT_FFMPEG`, `$LOOKOUT_FFPROBE` and the `PATH` to search, read once by the CLI
/// ([`FfmpegConfig::from_vars`]) and passed to video sources and the video sink, which
/// resolve it when they start (a run that needs no ffmpeg never looks for one).
///
/// The default names no binary and no search path: `ffmpeg` and `ffprobe` are then left to
/// the operating system's program lookup when they are started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FfmpegConfig {
    /// `$LOOKOUT_FFMPEG`: the ffmpeg binary to run.
    pub ffmpeg: Option<PathBuf>,
    /// `$LOOKOUT_FFPROBE`: the ffprobe binary; without it, an ffprobe beside `ffmpeg` is
    /// preferred over the search path's.
    pub ffprobe: Option<PathBuf>,
    /// The folders searched for binaries not named above (`PATH`).
    pub search_path: Option<OsString>,
}

impl FfmpegConfig {
    /// The setting from variable lookups (`var(FFMPEG_ENV)`, `var(FFPROBE_ENV)`,
    /// `var("PATH")`); an empty variable counts as unset. The CLI passes the process
    /// environment; tests pass their own.
    pub fn from_vars(var: impl Fn(&str) -> Option<OsString>) -> Self {
        let explicit = |name| var(name).filter(|v| !v.is_empty()).map(PathBuf::from);
        Self {
            ffmpeg: explicit(FFMPEG_ENV),
            ffprobe: explicit(FFPROBE_ENV),
            search_path: var("PATH"),
        }
    }

    /// Both binaries (video sources need ffprobe too).
    pub fn tools(&self) -> Result<FfmpegTools, SourceError> {
        let ffmpeg = self.ffmpeg()?;
        let sibling_probe = self
            .ffmpeg
            .as_ref()
            .and_then(|_| ffmpeg.parent().map(|dir| dir.join("ffprobe")))
            .filter(|p| p.is_file());
        let ffprobe = match (&self.ffprobe, sibling_probe) {
            (None, Some(sibling)) => sibling,
            (explicit, _) => locate("ffprobe", FFPROBE_ENV, explicit, &self.search_path)?,
        };
        Ok(FfmpegTools { ffmpeg, ffprobe })
    }

    /// The ffmpeg binary alone (the video sink needs no ffprobe).
    pub fn ffmpeg(&self) -> Result<PathBuf, SourceError> {
        locate("ffmpeg", FFMPEG_ENV, &self.ffmpeg, &self.search_path)
    }
}

/// Where the ffmpeg and ffprobe binaries are.
#[derive(Debug, Clone, PartialEq)]
pub struct FfmpegTools {
    pub ffmpeg: PathBuf,
    pub ffprobe: PathBuf,
}

impl FfmpegTools {
    /// The binaries an [`FfmpegConfig`] read from `var` names: shorthand for
    /// `FfmpegConfig::from_vars(var).tools()`.
    pub fn resolve(var: impl Fn(&str) -> Option<OsString>) -> Result<Self, SourceError> {
        FfmpegConfig::from_vars(var).tools()
    }
}

/// `explicit` when it is a file; else `program` in the first folder of `search_path` that
/// has it; else, without a search path, the bare name for the OS to look up at start.
fn locate(
    program: &'static str,
    env_var: &'static str,
    explicit: &Option<PathBuf>,
    search_path: &Option<OsString>,
) -> Result<PathBuf, SourceError> {
    let missing = |looked_for: String| SourceError::FfmpegMissing {
        program,
        looked_for,
        env_var,
    };
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.clone())
        } else {
            Err(missing(format!("{} (from {env_var})", path.display())))
        };
    }
    let Some(search_path) = search_path else {
        return Ok(PathBuf::from(program));
    };
    std::env::split_paths(search_path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| missing(format!("{program} on PATH")))
}

/// What ffprobe says about the first video stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ProbeInfo {
    pub width: u32,
    pub height: u32,
    pub fps: Option<f64>,
    pub frame_count: Option<u64>,
    pub duration_s: Option<f64>,
}

impl ProbeInfo {
    /// Frames the input announces: its frame count, else duration × rate.
    fn expected_frames(&self) -> Option<u64> {
        self.frame_count
            .or_else(|| match (self.duration_s, self.fps) {
                (Some(d), Some(fps)) if d > 0.0 && fps > 0.0 => Some((d * fps).round() as u64),
                _ => None,
            })
    }
}

/// Parses `ffprobe -show_entries stream=...:format=duration -of json` output.
pub fn parse_probe_json(json: &str, source_desc: &str) -> Result<ProbeInfo, SourceError> {
    let bad = |message: String| SourceError::Ffmpeg {
        program: "ffprobe",
        source_desc: source_desc.to_string(),
        message,
    };
    let value: serde_json::Value =
        serde_json::from_str(json).map_err(|e| bad(format!("unreadable JSON output: {e}")))?;
    let Some(stream) = value["streams"].as_array().and_then(|s| s.first()) else {
        return Err(SourceError::NoVideoStream {
            source_desc: source_desc.to_string(),
        });
    };
    let dimension = |key: &str| {
        stream[key]
            .as_u64()
            .filter(|&v| v > 0 && v <= u64::from(MAX_FRAME_SIDE))
            .map(|v| v as u32)
            .ok_or_else(|| bad(format!("video stream has no usable {key}: {}", stream[key])))
    };
    let number = |v: &serde_json::Value| -> Option<f64> {
        v.as_str()
            .and_then(|s| s.parse::<f64>().ok())
            .or_else(|| v.as_f64())
            .filter(|x| x.is_finite() && *x > 0.0)
    };
    Ok(ProbeInfo {
        width: dimension("width")?,
        height: dimension("height")?,
        fps: stream["avg_frame_rate"]
            .as_str()
            .and_then(parse_rational)
            .or_else(|| stream["r_frame_rate"].as_str().and_then(parse_rational)),
        frame_count: number(&stream["nb_frames"]).map(|n| n as u64),
        duration_s: number(&stream["duration"]).or_else(|| number(&value["format"]["duration"])),
    })
}

/// `"30000/1001"` → 29.97; `"0/0"` → None.
fn parse_rational(text: &str) -> Option<f64> {
    let (num, den) = text.split_once('/').unwrap_or((text, "1"));
    let (num, den): (f64, f64) = (num.trim().parse().ok()?, den.trim().parse().ok()?);
    let value = num / den;
    (value.is_finite() && value > 0.0).then_some(value)
}

/// One line of ffmpeg's stderr, as far as this reader cares.
#[derive(Debug, Clone, PartialEq)]
enum LogLine {
    /// showinfo's `config in time_base: N/D`.
    TimeBase(i64, i64),
    /// showinfo's per-frame line.
    Frame {
        pts: Option<i64>,
        pts_time_s: Option<f64>,
        width: u32,
        height: u32,
        format: String,
    },
    /// An `[error]` or `[fatal]` message.
    Error(String),
    Other,
}

/// Parses one stderr line of `ffmpeg -loglevel level+info ... -vf ...,showinfo`.
fn parse_log_line(line: &str) -> LogLine {
    let line = line.trim_end();
    if line.contains("[error]") || line.contains("[fatal]") || line.contains("[panic]") {
        return LogLine::Error(line.to_string());
    }
    if !line.starts_with("[Parsed_showinfo") {
        return LogLine::Other;
    }
    let Some(message) = line.split_once("[info] ").map(|(_, m)| m.trim_start()) else {
        return LogLine::Other;
    };
    if let Some(rest) = message.strip_prefix("config in time_base:") {
        let tb = rest.split(',').next().unwrap_or_default().trim();
        return match tb.split_once('/').map(|(n, d)| (n.parse(), d.parse())) {
            Some((Ok(num), Ok(den))) if num > 0 && den > 0 => LogLine::TimeBase(num, den),
            _ => LogLine::Other,
        };
    }
    if !message.starts_with("n:") {
        return LogLine::Other;
    }
    let size = field(message, "s:").and_then(|s| {
        let (w, h) = s.split_once('x')?;
        Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?))
    });
    match size {
        Some((width, height)) => LogLine::Frame {
            pts: field(message, "pts:").and_then(|p| p.parse().ok()),
            pts_time_s: field(message, "pts_time:").and_then(|p| p.parse().ok()),
            width,
            height,
            format: field(message, "fmt:").unwrap_or_default().to_string(),
        },
        None => LogLine::Other,
    }
}

/// The value after ` key` (or at the start) in `key:   value other:...`.
fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    let start = if message.starts_with(key) {
        0
    } else {
        message.find(&format!(" {key}"))? + 1
    };
    let value = message[start + key.len()..].trim_start();
    value.split_whitespace().next()
}

/// How the reading loop stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// ffmpeg closed stderr: it is done (successfully or not).
    StderrClosed,
    /// stdout ended inside a frame that stderr announced.
    StdoutClosed,
    /// This reader gave up (bad frame line, read error, stall): the child is killed.
    Abort,
    /// The run is stopping: the child is killed, and that is no early end.
    Stopped,
}

/// A network stream's settings and state, for the watchdog and reconnection.
struct Link {
    tools: FfmpegTools,
    url: OsString,
    options: StreamOptions,
    /// When the last frame came (or the stream was opened).
    last_frame: Instant,
    /// When the stream was found stalled or ended, until a frame comes again.
    lost_since: Option<Instant>,
    /// The watchdog runs: from the first read (not from the opening: the model may take a
    /// while to load in between).
    armed: bool,
    last_pts_ns: Option<i64>,
    /// Added to every pts since the last reconnection, so that time keeps running forward.
    pts_shift_ns: i64,
    /// The next frame is the first after a reconnection.
    rejoined: bool,
    backoff: Duration,
    /// Reconnections that brought frames back.
    reconnects: u32,
    /// Frames missed while the stream was away (estimated from the rate); skipped in `seq`.
    lost_frames: u64,
}

/// Frames of a video file or network stream, decoded by an ffmpeg child process.
pub struct VideoSource {
    child: Child,
    stdout: WatchedPipe<ChildStdout>,
    stderr: BufReader<WatchedPipe<ChildStderr>>,
    watch: Arc<Watch>,
    /// Network streams only.
    link: Option<Link>,
    line: Vec<u8>,
    probe: ProbeInfo,
    live: bool,
    description: String,
    /// Stream time base from showinfo, to turn integer pts into exact ns.
    time_base: Option<(i64, i64)>,
    delivered: u64,
    errors: VecDeque<String>,
    finished: bool,
    ended_early: bool,
    note: Option<String>,
    /// Where decoded frames' buffers come from (and go back to, after the sinks).
    pool: FramePool,
}

impl VideoSource {
    /// A video file, with the `ffmpeg` and `ffprobe` the OS finds ([`FfmpegConfig::default`]).
    pub fn open_file(path: &Path) -> Result<Self, SourceError> {
        Self::open_file_with(&FfmpegConfig::default().tools()?, path)
    }

    /// A network stream (`rtsp://`, `http(s)://`, ...), with the `ffmpeg` and `ffprobe` the
    /// OS finds.
    pub fn open_stream(url: &str) -> Result<Self, SourceError> {
        Self::open_stream_with(&FfmpegConfig::default().tools()?, url)
    }

    pub fn open_file_with(tools: &FfmpegTools, path: &Path) -> Result<Self, SourceError> {
        if !path.is_file() {
            return Err(SourceError::NoSuchFile {
                path: path.to_path_buf(),
            });
        }
        // `file:` keeps a name like `a:b.mp4` from being read as protocol `a`.
        let mut input = OsString::from("file:");
        input.push(path.as_os_str());
        Self::spawn(tools, &input, format!("video {}", path.display()), None)
    }

    pub fn open_stream_with(tools: &FfmpegTools, url: &str) -> Result<Self, SourceError> {
        let never = Arc::new(AtomicBool::new(false));
        Self::open_stream_until(tools, url, StreamOptions::default(), &never)
    }

    /// A network stream watched as `options` say; opening gives up with
    /// [`SourceError::Stopped`] once `stop` is set, which later reads watch too.
    pub fn open_stream_until(
        tools: &FfmpegTools,
        url: &str,
        options: StreamOptions,
        stop: &Arc<AtomicBool>,
    ) -> Result<Self, SourceError> {
        let watch = Arc::new(Watch::default());
        let _ = watch.stop.set(stop.clone());
        let what = format!("stream {}", mask_credentials(url));
        let stream = Some((options, watch));
        Self::spawn(tools, OsStr::new(url), what, stream)
    }

    fn spawn(
        tools: &FfmpegTools,
        input: &OsStr,
        what: String,
        stream: Option<(StreamOptions, Arc<Watch>)>,
    ) -> Result<Self, SourceError> {
        let live = stream.is_some();
        let (options, watch) = stream.unzip();
        let watch = watch.unwrap_or_default();
        let probe = run_ffprobe(tools, input, &what, options.as_ref(), &watch)?;
        let (child, stdout, stderr) = start_ffmpeg(tools, input, &what, options.as_ref())?;
        let description = describe(&what, &probe);
        let link = options.map(|options| Link {
            tools: tools.clone(),
            url: input.to_os_string(),
            options,
            last_frame: Instant::now(),
            lost_since: None,
            armed: false,
            last_pts_ns: None,
            pts_shift_ns: 0,
            rejoined: false,
            backoff: RECONNECT_BACKOFF.0,
            reconnects: 0,
            lost_frames: 0,
        });
        Ok(Self {
            child,
            stdout: WatchedPipe {
                inner: stdout,
                watch: watch.clone(),
            },
            stderr: BufReader::new(WatchedPipe {
                inner: stderr,
                watch: watch.clone(),
            }),
            watch,
            link,
            line: Vec::with_capacity(512),
            probe,
            live,
            description,
            time_base: None,
            delivered: 0,
            errors: VecDeque::new(),
            finished: false,
            ended_early: false,
            note: None,
            pool: FramePool::default(),
        })
    }

    /// Whether the input stopped before its announced end (truncated or damaged file, lost
    /// stream). Final once `next_frame` has returned `None`.
    pub fn ended_early(&self) -> bool {
        self.ended_early
    }

    /// The ffmpeg child's process id (it is killed and reaped on drop).
    pub fn child_pid(&self) -> u32 {
        self.child.id()
    }

    /// What ffprobe reported.
    pub fn probe(&self) -> &ProbeInfo {
        &self.probe
    }

    fn pts_ns(&self, pts: Option<i64>, pts_time_s: Option<f64>) -> Option<i64> {
        match (pts, self.time_base) {
            (Some(pts), Some((num, den))) => {
                Some((i128::from(pts) * i128::from(num) * 1_000_000_000 / i128::from(den)) as i64)
            }
            // Without a time base, showinfo's rounded seconds are the best there is.
            _ => pts_time_s.map(|s| (s * 1e9).round() as i64),
        }
    }

    /// The pixels of one announced frame from stdout; `Err` is how the reading ended.
    fn read_frame(&mut self, width: u32, height: u32) -> Result<image::RgbImage, End> {
        if width == 0 || height == 0 || width > MAX_FRAME_SIDE || height > MAX_FRAME_SIDE {
            self.keep_error(&format!("ffmpeg announced a {width}x{height} frame"));
            return Err(End::Abort);
        }
        let mut pixels = self.pool.take(width as usize * height as usize * 3);
        match self.stdout.read_exact(&mut pixels) {
            Ok(()) => image::RgbImage::from_raw(width, height, pixels).ok_or(End::Abort),
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(End::StdoutClosed),
            Err(e) => Err(self.read_failed(&e, "reading ffmpeg output", End::Abort)),
        }
    }

    /// How a failed read of either pipe ends the reading: stopped, stalled (no frame within
    /// the stream timeout: kept as the error), or `otherwise`.
    fn read_failed(&mut self, e: &std::io::Error, what: &str, otherwise: End) -> End {
        if self.watch.stopped() {
            return End::Stopped;
        }
        if e.kind() == std::io::ErrorKind::TimedOut {
            let secs = self.link.as_ref().map_or(0.0, |l| l.options.timeout_secs);
            self.keep_error(&format!("no frame for {secs} s (--stream-timeout)"));
            return End::Abort;
        }
        if otherwise == End::Abort {
            self.keep_error(&format!("{what}: {e}"));
        }
        otherwise
    }

    fn keep_error(&mut self, line: &str) {
        if self.errors.len() == KEPT_ERROR_LINES {
            self.errors.pop_front();
        }
        self.errors.push_back(mask_credentials(line));
    }

    /// Reaps the child and decides whether the input ended early.
    fn finish(&mut self, end: End) {
        if self.finished {
            return;
        }
        // However the reading ended, a stopping run is no early end of the input.
        let end = if self.watch.stopped() {
            End::Stopped
        } else {
            end
        };
        self.finished = true;
        if end != End::StderrClosed {
            // ffmpeg may be blocked writing a frame nobody will read, or on a dead stream.
            let _ = self.child.kill();
        }
        // Drain stderr for ffmpeg's last messages; it is closed or about to be.
        let mut rest = Vec::new();
        let _ = self.stderr.read_to_end(&mut rest);
        for line in String::from_utf8_lossy(&rest).lines() {
            if let LogLine::Error(e) = parse_log_line(line) {
                self.keep_error(&e);
            }
        }
        let exit_ok = self.child.wait().map(|s| s.success()).unwrap_or(false);
        if end == End::Stopped {
            return;
        }
        let expected = if self.live {
            None
        } else {
            self.probe.expected_frames()
        };
        let errors = !self.errors.is_empty();
        let short = match (expected, self.probe.frame_count.is_some()) {
            // A container's frame count: one frame of slack for a frame that is never shown.
            (Some(e), true) => self.delivered + 1 < e || (self.delivered < e && errors),
            // duration × rate may count audio running past the video: trust only with errors.
            (Some(e), false) => self.delivered + 1 < e && errors,
            (None, _) => errors,
        };
        self.ended_early = end != End::StderrClosed || !exit_ok || short;
        if self.ended_early {
            let announced = expected.map(|e| format!(" of {e}")).unwrap_or_default();
            let why = self.errors.back().cloned().unwrap_or_else(|| {
                if exit_ok {
                    "no error reported".into()
                } else {
                    "ffmpeg failed".into()
                }
            });
            let note = format!(
                "{} ended early after {}{announced} frames: {why}",
                self.description, self.delivered
            );
            tracing::warn!("{note}");
            self.note = Some(note);
        }
    }

    fn failure(&self) -> SourceError {
        SourceError::Ffmpeg {
            program: "ffmpeg",
            source_desc: self.description.clone(),
            message: if self.errors.is_empty() {
                "exited without producing a frame".into()
            } else {
                self.errors.iter().cloned().collect::<Vec<_>>().join("; ")
            },
        }
    }

    /// The next frame from the running child; `None` once it is finished.
    fn read_next(&mut self) -> Option<Frame> {
        if let Some(link) = self.link.as_mut().filter(|l| !l.armed) {
            link.armed = true;
            link.last_frame = Instant::now();
            self.watch.set_deadline(Some(link.options.timeout()));
        }
        while !self.finished {
            self.line.clear();
            match self.stderr.read_until(b'\n', &mut self.line) {
                Ok(n) if n > 0 => {}
                Ok(_) => {
                    self.finish(End::StderrClosed);
                    break;
                }
                Err(e) => {
                    let end = self.read_failed(&e, "reading ffmpeg's log", End::StderrClosed);
                    self.finish(end);
                    break;
                }
            }
            let text = String::from_utf8_lossy(&self.line).into_owned();
            match parse_log_line(&text) {
                LogLine::TimeBase(num, den) => self.time_base = Some((num, den)),
                LogLine::Error(e) => self.keep_error(&e),
                LogLine::Other => {}
                LogLine::Frame {
                    pts,
                    pts_time_s,
                    width,
                    height,
                    format,
                } => {
                    if format != "rgb24" {
                        self.keep_error(&format!("unexpected frame format {format}"));
                        self.finish(End::Abort);
                        break;
                    }
                    let image = match self.read_frame(width, height) {
                        Ok(image) => image,
                        Err(end) => {
                            self.finish(end);
                            break;
                        }
                    };
                    let pts_ns = self.pts_ns(pts, pts_time_s);
                    let frame = Frame {
                        seq: self.delivered,
                        capture_mono_ns: mono_now_ns(),
                        capture_wall_ns: wall_now_ns(),
                        pts_ns,
                        image,
                    };
                    self.delivered += 1;
                    return Some(self.through_link(frame));
                }
            }
        }
        None
    }

    /// A network stream's frame: the watchdog rearmed and, after a reconnection, the frames
    /// missed skipped in `seq` (counted as drops) and pts continued from before the gap.
    fn through_link(&mut self, mut frame: Frame) -> Frame {
        let Some(link) = &mut self.link else {
            return frame;
        };
        self.watch.set_deadline(Some(link.options.timeout()));
        let gap = link.last_frame.elapsed();
        if link.rejoined {
            link.rejoined = false;
            link.reconnects += 1;
            let period_s = self.probe.fps.map_or(f64::INFINITY, |fps| 1.0 / fps);
            let missed = (gap.as_secs_f64() / period_s).round() as u64;
            link.lost_frames += missed.saturating_sub(1);
            if let (Some(last), Some(pts)) = (link.last_pts_ns, frame.pts_ns) {
                link.pts_shift_ns = last + gap.as_nanos() as i64 - pts;
            }
            tracing::info!(
                "{}: back after {:.1} s ({} reconnection(s))",
                self.description,
                gap.as_secs_f64(),
                link.reconnects
            );
        }
        frame.seq += link.lost_frames;
        frame.pts_ns = frame.pts_ns.map(|pts| pts + link.pts_shift_ns);
        link.last_pts_ns = frame.pts_ns;
        link.last_frame = Instant::now();
        link.lost_since = None;
        link.backoff = RECONNECT_BACKOFF.0;
        frame
    }

    /// After a network stream stalled or ended: waits its back-off and starts ffmpeg on it
    /// again; false once `--reconnect` seconds have passed since it was lost without a frame
    /// coming back (or it is off, the run is stopping, or a finite stream played to its end).
    fn reconnect(&mut self) -> bool {
        let played_out = !self.ended_early
            && self
                .probe
                .expected_frames()
                .is_some_and(|n| self.delivered + 1 >= n);
        let Some(link) = &mut self.link else {
            return false;
        };
        if played_out || link.options.reconnect_secs <= 0.0 || self.watch.stopped() {
            return false;
        }
        let window = Duration::from_secs_f64(link.options.reconnect_secs);
        let away = link.lost_since.get_or_insert_with(Instant::now).elapsed();
        if away >= window {
            let why = self
                .errors
                .back()
                .cloned()
                .unwrap_or_else(|| "it ended".into());
            self.note = Some(format!(
                "{} was lost ({why}) and did not come back within {} s (--reconnect)",
                self.description, link.options.reconnect_secs
            ));
            self.ended_early = true;
            return false;
        }
        if link.backoff == RECONNECT_BACKOFF.0 {
            tracing::warn!(
                "{}: lost ({}); reconnecting for up to {} s",
                self.description,
                self.errors.back().map_or("it ended", String::as_str),
                link.options.reconnect_secs
            );
        }
        let wait = link.backoff.min(window - away);
        link.backoff = (link.backoff * 2).min(RECONNECT_BACKOFF.1);
        if !self.watch.sleep(wait) {
            return false;
        }
        let started = start_ffmpeg(
            &link.tools,
            &link.url,
            &self.description,
            Some(&link.options),
        );
        match started {
            Ok((child, stdout, stderr)) => {
                // The old child was killed and reaped by finish(); this one replaces it.
                self.child = child;
                self.stdout.inner = stdout;
                self.stderr = BufReader::new(WatchedPipe {
                    inner: stderr,
                    watch: self.watch.clone(),
                });
                link.rejoined = true;
                self.watch.set_deadline(Some(link.options.timeout()));
                self.time_base = None;
                self.errors.clear();
                self.finished = false;
                self.ended_early = false;
                self.note = None;
            }
            Err(e) => tracing::debug!("{}: reconnecting failed: {e}", self.description),
        }
        true
    }
}

impl FrameSource for VideoSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        loop {
            if let Some(frame) = self.read_next() {
                return Ok(Some(frame));
            }
            if !self.reconnect() {
                break;
            }
        }
        if self.delivered == 0 && self.ended_early {
            return Err(self.failure());
        }
        Ok(None)
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.pool = pool;
    }

    fn watch_stop(&mut self, stop: Arc<AtomicBool>) {
        let _ = self.watch.stop.set(stop);
    }

    fn info(&self) -> SourceInfo {
        let mut note = self.note.clone();
        if let Some(link) = self.link.as_ref().filter(|l| l.reconnects > 0) {
            let line = format!(
                "{} reconnected {} time(s); about {} frames lost while it was away",
                self.description, link.reconnects, link.lost_frames
            );
            note = Some(match note {
                Some(n) => format!("{n}; {line}"),
                None => line,
            });
        }
        SourceInfo {
            description: self.description.clone(),
            nominal_fps: self.probe.fps,
            frame_count: if self.live {
                None
            } else {
                self.probe.frame_count
            },
            size: Some((self.probe.width, self.probe.height)),
            live: self.live,
            ended_early: self.ended_early,
            skipped_frames: 0,
            note,
        }
    }
}

impl Drop for VideoSource {
    fn drop(&mut self) {
        if !self.finished {
            let _ = self.child.kill();
        }
        // Reap the child so that no zombie is left behind (a no-op when finish() waited).
        let _ = self.child.wait();
    }
}

/// Starts the decoding ffmpeg on `input` (a network stream when `stream` is given); its
/// stdout and stderr pipes.
fn start_ffmpeg(
    tools: &FfmpegTools,
    input: &OsStr,
    what: &str,
    stream: Option<&StreamOptions>,
) -> Result<(Child, ChildStdout, ChildStderr), SourceError> {
    let mut command = Command::new(&tools.ffmpeg);
    command.args([
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "level+info",
    ]);
    if let Some(options) = stream {
        command.args(options.ffmpeg_args(input));
    }
    command
        .arg("-i")
        .arg(input)
        .args(["-map", "0:v:0", "-an", "-sn", "-dn"])
        // format= before showinfo: the logged size and format are the bytes on stdout.
        .args(["-vf", "format=rgb24,showinfo=checksum=0"])
        .args(["-fps_mode", "passthrough", "-flush_packets", "1"])
        .args(["-f", "rawvideo", "-pix_fmt", "rgb24", "pipe:1"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_child(command, "ffmpeg", &tools.ffmpeg, FFMPEG_ENV, what)?;
    match (child.stdout.take(), child.stderr.take()) {
        (Some(stdout), Some(stderr)) => Ok((child, stdout, stderr)),
        _ => {
            // Unreachable with Stdio::piped; reap the child rather than leak it.
            let _ = child.kill();
            let _ = child.wait();
            Err(SourceError::Ffmpeg {
                program: "ffmpeg",
                source_desc: what.to_string(),
                message: "no output pipes".into(),
            })
        }
    }
}

fn describe(what: &str, probe: &ProbeInfo) -> String {
    let mut text = format!("{what} ({}x{}", probe.width, probe.height);
    if let Some(fps) = probe.fps {
        text.push_str(&format!(", {fps:.3} fps").replace(".000 fps", " fps"));
    }
    if let Some(n) = probe.frame_count {
        text.push_str(&format!(", {n} frames"));
    }
    text.push(')');
    text
}

/// Starts ffmpeg or ffprobe in its own process group (a terminal's Ctrl-C reaches lookout
/// alone, which then ends the child itself: a child killed first would look like a damaged
/// input), dying with lookout.
fn spawn_child(
    mut command: Command,
    program: &'static str,
    binary: &Path,
    env_var: &'static str,
    what: &str,
) -> Result<Child, SourceError> {
    command.process_group(0);
    die_with_parent(&mut command);
    command
        .spawn()
        .map_err(|e| spawn_error(program, binary, env_var, what, e))
}

fn spawn_error(
    program: &'static str,
    binary: &Path,
    env_var: &'static str,
    what: &str,
    err: std::io::Error,
) -> SourceError {
    if err.kind() == std::io::ErrorKind::NotFound {
        // A bare name was looked up by the OS on PATH.
        let looked_for = if binary.components().count() == 1 {
            format!("{} on PATH", binary.display())
        } else {
            binary.display().to_string()
        };
        SourceError::FfmpegMissing {
            program,
            looked_for,
            env_var,
        }
    } else {
        SourceError::Ffmpeg {
            program,
            source_desc: what.to_string(),
            message: format!("cannot start {}: {err}", binary.display()),
        }
    }
}

/// Runs ffprobe on `input`; on a network stream (`stream`) it gives up after the stream
/// timeout, and on any input once the run is stopping.
fn run_ffprobe(
    tools: &FfmpegTools,
    input: &OsStr,
    what: &str,
    stream: Option<&StreamOptions>,
    watch: &Watch,
) -> Result<ProbeInfo, SourceError> {
    let mut command = Command::new(&tools.ffprobe);
    command.args(["-v", "error"]);
    if let Some(options) = stream {
        command.args(options.ffmpeg_args(input));
    }
    command
        .args(["-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=width,height,avg_frame_rate,r_frame_rate,nb_frames,duration:format=duration",
        ])
        .args(["-of", "json", "-i"])
        .arg(input)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_child(command, "ffprobe", &tools.ffprobe, FFPROBE_ENV, what)?;
    let started = Instant::now();
    // ffprobe's output (one stream's entries, `-v error` messages) fits in the pipes'
    // buffers: it is read once ffprobe has exited.
    let status = loop {
        let gave_up = if watch.stopped() {
            Some(SourceError::Stopped {
                source_desc: what.to_string(),
            })
        } else {
            stream
                .filter(|o| started.elapsed() >= o.timeout())
                .map(|o| SourceError::StreamTimeout {
                    source_desc: what.to_string(),
                    secs: o.timeout_secs,
                })
        };
        if let Some(error) = gave_up {
            let _ = child.kill();
            let _ = child.wait();
            return Err(error);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SourceError::Ffmpeg {
                    program: "ffprobe",
                    source_desc: what.to_string(),
                    message: format!("cannot wait for it: {e}"),
                });
            }
        }
    };
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    if let Some(mut pipe) = child.stdout.take() {
        let _ = pipe.read_to_end(&mut stdout);
    }
    if let Some(mut pipe) = child.stderr.take() {
        let _ = pipe.read_to_end(&mut stderr);
    }
    if !status.success() {
        let stderr = String::from_utf8_lossy(&stderr);
        // ffprobe writes one message per line; errors print on one line.
        let message = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(SourceError::Ffmpeg {
            program: "ffprobe",
            source_desc: what.to_string(),
            message: if message.is_empty() {
                format!("exited with {status}")
            } else {
                mask_credentials(&message)
            },
        });
    }
    parse_probe_json(&String::from_utf8_lossy(&stdout), what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn showinfo_frame_and_config_lines_parse() {
        let config = "[Parsed_showinfo_1 @ 0x56] [info] config in time_base: 1/90000, frame_rate: 30000/1001";
        assert_eq!(parse_log_line(config), LogLine::TimeBase(1, 90000));
        let frame = "[Parsed_showinfo_1 @ 0x56] [info] n:  12 pts:  36036 pts_time:0.4004  pos: 2274 fmt:rgb24 sar:1/1 s:1280x720 i:P iskey:0 type:P";
        assert_eq!(
            parse_log_line(frame),
            LogLine::Frame {
                pts: Some(36036),
                pts_time_s: Some(0.4004),
                width: 1280,
                height: 720,
                format: "rgb24".into()
            }
        );
        let nopts = "[Parsed_showinfo_1 @ 0x5] [info] n:   0 pts:NOPTS pts_time:NOPTS fmt:rgb24 s:64x48 i:P";
        assert!(matches!(
            parse_log_line(nopts),
            LogLine::Frame {
                pts: None,
                pts_time_s: None,
                width: 64,
                ..
            }
        ));
        let side = "[Parsed_showinfo_1 @ 0x5] [info]   side data - User Data Unregistered:";
        assert_eq!(parse_log_line(side), LogLine::Other);
        let err = "[mov,mp4 @ 0x5] [error] stream 1, offset 0x64b76: partial file";
        assert!(matches!(parse_log_line(err), LogLine::Error(_)));
        assert_eq!(parse_log_line("[info] Stream mapping:"), LogLine::Other);
    }

    #[test]
    fn probe_json_parses_and_a_missing_video_stream_is_named() {
        let json = r#"{"programs":[],"streams":[{"width":1280,"height":720,"r_frame_rate":"25/1",
            "avg_frame_rate":"25/1","nb_frames":"38","duration":"1.520000"}],"format":{"duration":"1.52"}}"#;
        let info = parse_probe_json(json, "video x").unwrap();
        assert_eq!((info.width, info.height), (1280, 720));
        assert_eq!(info.fps, Some(25.0));
        assert_eq!(info.frame_count, Some(38));
        assert_eq!(info.expected_frames(), Some(38));
        let no_count = r#"{"streams":[{"width":64,"height":48,"avg_frame_rate":"30000/1001"}],"format":{"duration":"2.0"}}"#;
        let info = parse_probe_json(no_count, "x").unwrap();
        assert_eq!(info.expected_frames(), Some(60));
        let err = parse_probe_json(r#"{"streams":[]}"#, "video a.m4a").unwrap_err();
        assert_eq!(
            err.to_string(),
            "video a.m4a has no video stream; pass a file or URL that carries video"
        );
    }

    #[test]
    fn tools_resolve_from_env_path_or_say_how_to_install() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("ffmpeg"), b"").unwrap();
        std::fs::write(bin.join("ffprobe"), b"").unwrap();
        let path = bin.clone().into_os_string();

        let from_path = FfmpegTools::resolve(|k| (k == "PATH").then(|| path.clone())).unwrap();
        assert_eq!(from_path.ffmpeg, bin.join("ffmpeg"));
        assert_eq!(from_path.ffprobe, bin.join("ffprobe"));

        let explicit = bin.join("ffmpeg").into_os_string();
        let sibling =
            FfmpegTools::resolve(|k| (k == FFMPEG_ENV).then(|| explicit.clone())).unwrap();
        assert_eq!(sibling.ffprobe, bin.join("ffprobe"));

        let err = FfmpegTools::resolve(|k| (k == FFMPEG_ENV).then(|| "/nonexistent/ffmpeg".into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("install ffmpeg (apt-get install -y ffmpeg)"),
            "{err}"
        );
        assert!(err.contains("/nonexistent/ffmpeg"), "{err}");

        let empty = tmp.path().join("empty").into_os_string();
        let err = FfmpegTools::resolve(|k| (k == "PATH").then(|| empty.clone())).unwrap_err();
        assert!(matches!(
            err,
            SourceError::FfmpegMissing {
                program: "ffmpeg",
                ..
            }
        ));
        assert!(err.to_string().contains("ffmpeg on PATH"), "{err}");

        // No setting at all: bare names, found by the OS when they are started.
        let bare = FfmpegTools::resolve(|_| None).unwrap();
        assert_eq!(bare.ffmpeg, PathBuf::from("ffmpeg"));
        let setting = FfmpegConfig::from_vars(|k| (k == FFMPEG_ENV).then(|| "".into()));
        assert_eq!(
            setting,
            FfmpegConfig::default(),
            "an empty variable is unset"
        );
    }

    #[test]
    fn stream_timeouts_reach_ffmpeg_in_microseconds_where_they_mean_that() {
        let options = StreamOptions {
            timeout_secs: 2.0,
            reconnect_secs: 0.0,
        };
        let rtsp = options.ffmpeg_args(OsStr::new("rtsp://h/x"));
        assert_eq!(rtsp, ["-rw_timeout", "3000000", "-timeout", "3000000"]);
        // rtmp reads -timeout as a listen timeout in seconds: only -rw_timeout.
        assert_eq!(
            options.ffmpeg_args(OsStr::new("rtmp://h/x")),
            ["-rw_timeout", "3000000"]
        );
    }

    /// Regression (issue 12): a read from a pipe nobody writes to blocked forever, through
    /// Ctrl-C and past any timeout.
    #[test]
    fn a_watched_pipe_gives_up_on_its_deadline_and_on_a_stop() {
        let mut silent = Command::new("sleep")
            .arg("30")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let watch = Arc::new(Watch::default());
        let mut pipe = WatchedPipe {
            inner: silent.stdout.take().unwrap(),
            watch: watch.clone(),
        };
        let mut byte = [0u8; 1];
        watch.set_deadline(Some(Duration::from_millis(100)));
        let start = Instant::now();
        let err = pipe.read(&mut byte).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::TimedOut);
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );

        watch.set_deadline(None);
        let stop = Arc::new(AtomicBool::new(false));
        watch.stop.set(stop.clone()).unwrap();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            stop.store(true, Ordering::Relaxed);
        });
        let start = Instant::now();
        let err = pipe.read(&mut byte).unwrap_err();
        assert_eq!(err.to_string(), STOPPED);
        assert!(
            start.elapsed() < Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
        setter.join().unwrap();
        let _ = silent.kill();
        let _ = silent.wait();
    }

    /// Children get SIGKILL when the process (here: the thread) that started them ends.
    #[test]
    fn children_die_with_their_parent() {
        let (tx, rx) = std::sync::mpsc::channel();
        // PR_SET_PDEATHSIG fires when the spawning thread exits.
        std::thread::spawn(move || {
            let mut command = Command::new("sleep");
            command.arg("30");
            die_with_parent(&mut command);
            tx.send(command.spawn().unwrap()).unwrap();
        })
        .join()
        .unwrap();
        let mut child = rx.recv().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                assert!(!status.success(), "{status}");
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(2),
                "the child outlived its parent"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn rationals_parse() {
        assert_eq!(parse_rational("25/1"), Some(25.0));
        assert!((parse_rational("30000/1001").unwrap() - 29.97).abs() < 1e-3);
        assert_eq!(parse_rational("0/0"), None);
    }
}
