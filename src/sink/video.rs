//! Annotated video: raw RGB24 frames piped into an `ffmpeg` child that encodes H.264
//! (yuv420p, playable everywhere) at a constant frame rate.
//!
//! Why a child process rather than FFmpeg bindings: as for decoding (see
//! [`crate::source::ffmpeg`]), no FFmpeg headers or version-tied bindings at build time, the
//! user's own ffmpeg does the encoding, and an encoder crash kills only the child. The child
//! runs in its own process group so that Ctrl-C in the terminal reaches lookout only: the
//! pipeline then finishes (or drops) this sink, stdin closes, and ffmpeg writes the MP4
//! index, so an interrupted run still leaves a playable file. If lookout itself is killed,
//! the kernel closes the pipe and ffmpeg finalises the file the same way.
//!
//! Which ffmpeg runs is the [`FfmpegConfig`] the CLI read once from the environment (see
//! [`crate::source::ffmpeg`]); this module reads no environment variable.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use image::RgbImage;

use super::{Sink, SinkControl, SinkError, SinkFrame};
use crate::source::ffmpeg::{FfmpegConfig, FfmpegTools};
use crate::source::SourceError;

const NAME: &str = "video";
/// ffmpeg error lines kept for the error message.
const KEPT_ERROR_LINES: usize = 8;

/// Encodes annotated frames into a video file through ffmpeg.
pub struct VideoSink {
    path: PathBuf,
    width: u32,
    height: u32,
    /// `None` once finished.
    encoder: Option<Encoder>,
    frames_written: u64,
    /// With the HUD on, the frame with the HUD drawn (reused between frames).
    with_hud: Option<RgbImage>,
}

struct Encoder {
    child: Child,
    /// `None` after the pipe is closed.
    stdin: Option<ChildStdin>,
    /// The last lines ffmpeg printed on stderr, collected by `stderr_thread`.
    errors: Arc<Mutex<VecDeque<String>>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl VideoSink {
    /// Starts the `ffmpeg` the OS finds writing `path` (overwritten if it exists) for
    /// `width`×`height` frames shown at `fps`. The container follows the extension (`.mp4`,
    /// `.mkv`, …); without one, MP4.
    pub fn create(path: &Path, width: u32, height: u32, fps: f64) -> Result<VideoSink, SinkError> {
        Self::create_configured(&FfmpegConfig::default(), path, width, height, fps)
    }

    /// [`VideoSink::create`] with the ffmpeg `config` names (`$LOOKOUT_FFMPEG`, as the CLI
    /// read it); no ffprobe is needed.
    pub fn create_configured(
        config: &FfmpegConfig,
        path: &Path,
        width: u32,
        height: u32,
        fps: f64,
    ) -> Result<VideoSink, SinkError> {
        check_format(width, height, fps)?;
        let ffmpeg = config.ffmpeg().map_err(|e| match e {
            SourceError::FfmpegMissing { looked_for, .. } => SinkError::FfmpegMissing {
                sink: NAME,
                looked_for,
            },
            // `FfmpegConfig::ffmpeg` reports nothing else.
            other => SinkError::FfmpegMissing {
                sink: NAME,
                looked_for: other.to_string(),
            },
        })?;
        Self::start(&ffmpeg, path, width, height, fps)
    }

    /// Draws the latency HUD into every frame of the video (as the window shows it).
    pub fn with_hud(mut self, on: bool) -> Self {
        self.with_hud = on.then(|| RgbImage::new(self.width, self.height));
        self
    }

    /// [`VideoSink::create`] with the ffmpeg of `tools`.
    pub fn create_with(
        tools: &FfmpegTools,
        path: &Path,
        width: u32,
        height: u32,
        fps: f64,
    ) -> Result<VideoSink, SinkError> {
        check_format(width, height, fps)?;
        Self::start(&tools.ffmpeg, path, width, height, fps)
    }

    fn start(
        ffmpeg: &Path,
        path: &Path,
        width: u32,
        height: u32,
        fps: f64,
    ) -> Result<VideoSink, SinkError> {
        // ffmpeg opens its output only at the first frame; say now what it would say then.
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                return Err(SinkError::NoFolder {
                    sink: NAME,
                    path: path.to_path_buf(),
                    folder: parent.to_path_buf(),
                });
            }
        }
        let mut command = Command::new(ffmpeg);
        command
            .args(encode_args(path, width, height, fps))
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0);
        let mut child = command.spawn().map_err(|source| SinkError::FfmpegStart {
            sink: NAME,
            program: ffmpeg.to_path_buf(),
            source,
        })?;
        let stdin = child.stdin.take();
        let errors = Arc::new(Mutex::new(VecDeque::new()));
        let stderr_thread = child.stderr.take().map(|stderr| {
            let errors = Arc::clone(&errors);
            std::thread::spawn(move || keep_last_lines(stderr, &errors))
        });
        Ok(VideoSink {
            path: path.to_path_buf(),
            width,
            height,
            encoder: Some(Encoder {
                child,
                stdin,
                errors,
                stderr_thread,
            }),
            frames_written: 0,
            with_hud: None,
        })
    }

    pub fn frames_written(&self) -> u64 {
        self.frames_written
    }

    /// Closes the pipe and waits for ffmpeg to write the file's end.
    fn close(&mut self) -> Result<(), SinkError> {
        let Some(mut encoder) = self.encoder.take() else {
            return Ok(());
        };
        drop(encoder.stdin.take());
        let status = encoder.child.wait();
        if let Some(thread) = encoder.stderr_thread.take() {
            let _ = thread.join();
        }
        match status {
            Ok(status) if status.success() => Ok(()),
            Ok(status) => {
                let stderr_tail = encoder
                    .errors
                    .lock()
                    .map(|lines| lines.iter().cloned().collect::<Vec<_>>().join("; "))
                    .unwrap_or_default();
                Err(SinkError::FfmpegExited {
                    sink: NAME,
                    path: self.path.clone(),
                    status,
                    frames: self.frames_written,
                    stderr_tail: if stderr_tail.is_empty() {
                        "it printed nothing".into()
                    } else {
                        stderr_tail
                    },
                })
            }
            Err(source) => Err(SinkError::FfmpegWait {
                sink: NAME,
                path: self.path.clone(),
                frames: self.frames_written,
                source,
            }),
        }
    }
}

impl Sink for VideoSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        let image = frame.require_annotated(NAME)?;
        if image.dimensions() != (self.width, self.height) {
            return Err(SinkError::FrameSize {
                sink: NAME,
                path: self.path.clone(),
                seq: frame.detected.frame.seq,
                width: image.width(),
                height: image.height(),
                expected_width: self.width,
                expected_height: self.height,
            });
        }
        let Some(stdin) = self.encoder.as_mut().and_then(|e| e.stdin.as_mut()) else {
            return Err(SinkError::Closed {
                sink: NAME,
                what: "video",
            });
        };
        let pixels: &[u8] = match &mut self.with_hud {
            Some(composed) => {
                composed.copy_from_slice(image.as_raw());
                crate::render::hud::draw_hud(composed, frame.hud);
                composed.as_raw()
            }
            None => image.as_raw(),
        };
        if let Err(source) = stdin.write_all(pixels) {
            // Usually a broken pipe: ffmpeg has exited; its own message says why.
            let closed = self.close().err();
            return Err(closed.unwrap_or_else(|| SinkError::FfmpegPipe {
                sink: NAME,
                path: self.path.clone(),
                source,
            }));
        }
        self.frames_written += 1;
        Ok(SinkControl::Continue)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.close()
    }
}

impl Drop for VideoSink {
    /// Finishes the file when the pipeline stops without `finish` (an error or Ctrl-C path).
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!("{}", e.with_causes());
        }
    }
}

fn check_format(width: u32, height: u32, fps: f64) -> Result<(), SinkError> {
    if width == 0 || height == 0 {
        return Err(SinkError::BadSize {
            sink: NAME,
            width,
            height,
        });
    }
    if !(fps.is_finite() && fps > 0.0) {
        return Err(SinkError::BadRate { sink: NAME, fps });
    }
    Ok(())
}

/// ffmpeg's arguments: raw RGB24 at `fps` on stdin → H.264 yuv420p at `path`.
fn encode_args(path: &Path, width: u32, height: u32, fps: f64) -> Vec<std::ffi::OsString> {
    let mut args: Vec<std::ffi::OsString> = [
        "-hide_banner",
        "-v",
        "error",
        "-y",
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        &format!("{width}x{height}"),
        "-r",
        &format!("{fps}"),
        "-i",
        "pipe:0",
    ]
    .iter()
    .map(Into::into)
    .collect();
    // yuv420p needs even sides; pad odd ones by a pixel rather than fail.
    if width % 2 == 1 || height % 2 == 1 {
        args.extend(["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2"].map(Into::into));
    }
    // veryfast keeps a 720p stream real-time on a laptop core; crf 20 keeps labels crisp.
    args.extend(
        [
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "20", "-pix_fmt", "yuv420p",
        ]
        .map(Into::into),
    );
    if path.extension().is_none() {
        args.extend(["-f", "mp4"].map(Into::into));
    }
    args.push(path.as_os_str().to_owned());
    args
}

fn keep_last_lines(stderr: impl std::io::Read, kept: &Mutex<VecDeque<String>>) {
    for line in BufReader::new(stderr).lines() {
        let Ok(line) = line else { break };
        let line = line.trim().to_string();
        if line.is_empty() {
            continue;
        }
        if let Ok(mut kept) = kept.lock() {
            if kept.len() == KEPT_ERROR_LINES {
                kept.pop_front();
            }
            kept.push_back(line);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_pad_odd_sizes_and_default_to_mp4() {
        let args = encode_args(Path::new("out.mkv"), 320, 240, 25.0);
        let text: Vec<_> = args.iter().map(|a| a.to_string_lossy()).collect();
        let joined = text.join(" ");
        assert!(joined.contains("-s 320x240 -r 25 -i pipe:0"), "{joined}");
        assert!(!joined.contains("pad="), "{joined}");
        assert!(joined.ends_with("yuv420p out.mkv"), "{joined}");

        let args = encode_args(Path::new("out"), 321, 240, 29.97);
        let joined = args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        assert!(joined.contains("-r 29.97"), "{joined}");
        assert!(joined.contains("-vf pad="), "{joined}");
        assert!(joined.ends_with("-f mp4 out"), "{joined}");
    }

    #[test]
    fn bad_sizes_and_rates_are_refused_before_starting_ffmpeg() {
        let path = Path::new("never.mp4");
        assert!(VideoSink::create(path, 0, 10, 25.0).is_err());
        let err = VideoSink::create(path, 10, 10, f64::NAN).err().unwrap();
        assert!(err.to_string().contains("frame rate"), "{err}");
    }
}
