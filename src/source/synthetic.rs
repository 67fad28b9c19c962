//! A synthetic source for load and soak runs: `--source synthetic:WxH[@FPS][:live]` plays a
//! moving, deterministic test pattern (a drifting gradient with a few solid rectangles), so
//! that long runs need no video file, no ffmpeg and no camera. Frame `n` is always the same
//! picture. Without `:live` frames come as fast as they are asked for, stamped `n / FPS`
//! apart (every frame is processed at `--pace max`); with `:live` they come at FPS on the
//! wall clock like a camera's, and the pipeline's latest-wins hand-overs drop what it cannot
//! keep up with. The input never ends: stop it with `--max-frames`, `--duration` or Ctrl-C.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use image::RgbImage;

use super::{FrameSource, SourceError, SourceInfo};
use crate::types::{mono_now_ns, wall_now_ns, Frame, FramePool};

/// Frame rate when the spec names none.
pub const DEFAULT_FPS: f64 = 30.0;
/// The longest a live wait sleeps before looking at the stop flag again.
const STOP_POLL: Duration = Duration::from_millis(20);
/// Largest accepted side, pixels (a typo like 12800x7200 would allocate gigabytes).
const MAX_SIDE: u32 = 8192;

/// What `synthetic:...` names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SyntheticSpec {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    /// Camera-like: frames at FPS on the wall clock, latest wins.
    pub live: bool,
}

impl SyntheticSpec {
    /// Parses the part after `synthetic:`: `1280x720`, `640x480@60`, `1280x720@200:live`.
    pub fn parse(text: &str) -> Result<SyntheticSpec, String> {
        let (body, live) = match text.strip_suffix(":live") {
            Some(body) => (body, true),
            None => (text, false),
        };
        let (size, fps) = match body.split_once('@') {
            Some((size, fps)) => {
                let fps: f64 = fps
                    .parse()
                    .map_err(|_| format!("frame rate `{fps}` is not a number"))?;
                (size, fps)
            }
            None => (body, DEFAULT_FPS),
        };
        let bad_size = || format!("size `{size}` is not WIDTHxHEIGHT, e.g. synthetic:1280x720");
        let (w, h) = size.split_once(['x', 'X']).ok_or_else(bad_size)?;
        let width: u32 = w.parse().map_err(|_| bad_size())?;
        let height: u32 = h.parse().map_err(|_| bad_size())?;
        if !(1..=MAX_SIDE).contains(&width) || !(1..=MAX_SIDE).contains(&height) {
            return Err(format!("each side must be 1..={MAX_SIDE} pixels"));
        }
        if !(fps.is_finite() && fps > 0.0 && fps <= 10_000.0) {
            return Err(format!("frame rate must be in (0, 10000], got {fps}"));
        }
        Ok(SyntheticSpec {
            width,
            height,
            fps,
            live,
        })
    }
}

impl std::fmt::Display for SyntheticSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "synthetic {}x{} at {} fps",
            self.width, self.height, self.fps
        )?;
        if self.live {
            write!(f, " (live)")?;
        }
        Ok(())
    }
}

pub struct SyntheticSource {
    spec: SyntheticSpec,
    next_seq: u64,
    /// Mono time the next live frame is due; `None` before the first.
    next_due_ns: Option<u64>,
    pool: FramePool,
    /// The run's stop flag: a live wait (20 s at 0.05 fps) ends when it is set.
    stop: Arc<AtomicBool>,
}

impl SyntheticSource {
    pub fn new(spec: SyntheticSpec) -> Self {
        Self {
            spec,
            next_seq: 0,
            next_due_ns: None,
            pool: FramePool::default(),
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    fn period_ns(&self) -> u64 {
        (1e9 / self.spec.fps).round().max(1.0) as u64
    }

    /// Sleeps until the next live frame is due; a consumer that is late gets a frame at
    /// once and the schedule restarts from now, as a camera's would (no burst of catch-up).
    /// False when the run stopped meanwhile.
    fn wait_for_due(&mut self) -> bool {
        let due = *self.next_due_ns.get_or_insert_with(mono_now_ns);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return false;
            }
            let now = mono_now_ns();
            if due <= now {
                break;
            }
            std::thread::sleep(Duration::from_nanos(due - now).min(STOP_POLL));
        }
        let period = self.period_ns();
        let next = due + period;
        self.next_due_ns = Some(if next < mono_now_ns() {
            mono_now_ns() + period
        } else {
            next
        });
        true
    }
}

/// The test pattern of frame `seq`: a gradient drifting right and three solid rectangles
/// moving at different speeds and directions, all wrapping around the frame.
pub fn pattern(width: u32, height: u32, seq: u64) -> RgbImage {
    let mut image = RgbImage::new(width, height);
    draw_pattern(&mut image, seq);
    image
}

/// [`pattern`] into an image of any content (every pixel is written).
pub fn draw_pattern(image: &mut RgbImage, seq: u64) {
    let (width, height) = image.dimensions();
    let shift = (seq * 4) as u32;
    for (y, pixels) in image.rows_mut().enumerate() {
        let tint = (y as u32 * 255 / height.max(1)) as u8;
        for (x, pixel) in pixels.enumerate() {
            let v = ((x as u32).wrapping_add(shift) % 256) as u8;
            pixel.0 = [v, v / 2, (255 - v) / 2 + tint / 2];
        }
    }
    let rects: [(u32, u32, i64, i64, [u8; 3]); 3] = [
        (width / 5, height / 4, 7, 3, [240, 30, 30]),
        (width / 8, height / 3, -5, 2, [30, 220, 60]),
        (width / 4, height / 6, 3, -4, [250, 250, 250]),
    ];
    for (i, (w, h, dx, dy, color)) in rects.into_iter().enumerate() {
        let start = (i as i64 + 1) * 97;
        let x0 = (start + dx * seq as i64).rem_euclid(width as i64) as u32;
        let y0 = (start + dy * seq as i64).rem_euclid(height as i64) as u32;
        fill_rect(image, x0, y0, w.max(1), h.max(1), color);
    }
}

/// Fills a rectangle, clipped to the image.
fn fill_rect(image: &mut RgbImage, x0: u32, y0: u32, w: u32, h: u32, color: [u8; 3]) {
    let x1 = (x0 + w).min(image.width());
    let y1 = (y0 + h).min(image.height());
    for y in y0..y1 {
        for x in x0..x1 {
            image.put_pixel(x, y, image::Rgb(color));
        }
    }
}

impl FrameSource for SyntheticSource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if self.spec.live && !self.wait_for_due() {
            return Ok(None);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let mut image = self.pool.take_image(self.spec.width, self.spec.height);
        draw_pattern(&mut image, seq);
        Ok(Some(Frame {
            seq,
            capture_mono_ns: mono_now_ns(),
            capture_wall_ns: wall_now_ns(),
            pts_ns: Some((seq * self.period_ns()) as i64),
            image,
        }))
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.pool = pool;
    }

    fn watch_stop(&mut self, stop: Arc<AtomicBool>) {
        self.stop = stop;
    }

    fn info(&self) -> SourceInfo {
        SourceInfo {
            description: self.spec.to_string(),
            nominal_fps: Some(self.spec.fps),
            frame_count: None,
            size: Some((self.spec.width, self.spec.height)),
            live: self.spec.live,
            ..SourceInfo::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_with_defaults_and_errors_say_what_is_wrong() {
        let s = SyntheticSpec::parse("1280x720").unwrap();
        assert_eq!((s.width, s.height, s.fps, s.live), (1280, 720, 30.0, false));
        let s = SyntheticSpec::parse("640x480@200:live").unwrap();
        assert_eq!((s.width, s.height, s.fps, s.live), (640, 480, 200.0, true));
        assert!(SyntheticSpec::parse("640x")
            .unwrap_err()
            .contains("WIDTHxHEIGHT"));
        assert!(SyntheticSpec::parse("64x64@0")
            .unwrap_err()
            .contains("frame rate"));
        assert!(SyntheticSpec::parse("99999x10")
            .unwrap_err()
            .contains("8192"));
    }

    #[test]
    fn the_pattern_is_deterministic_and_moves() {
        let a = pattern(160, 90, 5);
        assert_eq!(a, pattern(160, 90, 5));
        assert_ne!(a, pattern(160, 90, 6));
        assert_eq!(a.dimensions(), (160, 90));
        // Tiny frames still work (rectangles clip).
        assert_eq!(pattern(1, 1, 3).dimensions(), (1, 1));
    }

    #[test]
    fn frames_are_numbered_and_stamped_a_period_apart() {
        let spec = SyntheticSpec::parse("32x16@50").unwrap();
        let mut source = SyntheticSource::new(spec);
        let f0 = source.next_frame().unwrap().unwrap();
        let f1 = source.next_frame().unwrap().unwrap();
        assert_eq!((f0.seq, f1.seq), (0, 1));
        assert_eq!(f1.pts_ns, Some(20_000_000));
        assert!(!source.info().live);
    }

    #[test]
    fn live_frames_come_at_their_rate() {
        let spec = SyntheticSpec::parse("16x16@100:live").unwrap();
        let mut source = SyntheticSource::new(spec);
        let start = std::time::Instant::now();
        for _ in 0..6 {
            source.next_frame().unwrap().unwrap();
        }
        // 5 periods of 10 ms after the first frame.
        assert!(
            start.elapsed() >= Duration::from_millis(45),
            "{:?}",
            start.elapsed()
        );
        assert!(source.info().live);
    }

    /// Regression (issue 12): at 0.05 fps a stop waited for the next frame, 20 s away.
    #[test]
    fn a_slow_live_source_ends_soon_after_the_stop() {
        let spec = SyntheticSpec::parse("16x16@0.05:live").unwrap();
        let mut source = SyntheticSource::new(spec);
        let stop = Arc::new(AtomicBool::new(false));
        source.watch_stop(stop.clone());
        source.next_frame().unwrap().unwrap();
        let setter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            stop.store(true, Ordering::Relaxed);
        });
        let start = std::time::Instant::now();
        assert!(source.next_frame().unwrap().is_none());
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        setter.join().unwrap();
    }
}
