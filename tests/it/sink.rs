//! Integration tests: sinks (a real window under Xvfb, video through ffmpeg, frames, JSON
//! lines, drive recording) and the HUD.
//!
//! Tests that need a different environment (`DISPLAY`, `LOOKOUT_FFMPEG`) run their body in
//! a child process of this test binary rather than changing this process's environment,
//! which other tests read concurrently.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use image::{Rgb, RgbImage};
use lookout::drive::{DriveManifest, FrameFileFormat};
use lookout::render::hud::{draw_hud, hud_lines, hud_rect};
use lookout::render::{draw_detections, group_colour};
use lookout::sink::jsonl::JsonlRecord;
use lookout::sink::video::VideoSink;
use lookout::sink::window::{display_available, WindowSink};
use lookout::sink::{FramesSink, JsonlSink, RecordSink, Sink, SinkControl, SinkError, SinkFrame};
use lookout::source::ffmpeg::FfmpegTools;
use lookout::source::DriveReader;
use lookout::source::FrameSource;
use lookout::types::{
    BoxXyxy, ClassGroup, DetectTimings, DetectedFrame, Detection, Frame, FrameStamps, HudStats,
};

/// Set in a child process started by [`run_child`]; its tests do nothing without it.
const CHILD_ENV: &str = "LOOKOUT_SINK_TEST_CHILD";

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Runs the ignored test `name` of this binary in a child process with `env` changes
/// (`None` removes a variable).
fn run_child(name: &str, env: &[(&str, Option<&str>)]) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([name, "--exact", "--include-ignored", "--nocapture"])
        .env(CHILD_ENV, "1");
    for (key, value) in env {
        match value {
            Some(v) => command.env(key, v),
            None => command.env_remove(key),
        };
    }
    let output = command.output().expect("the test binary runs");
    let text = String::from_utf8_lossy(&output.stdout);
    eprintln!("{text}{}", String::from_utf8_lossy(&output.stderr));
    assert!(
        text.contains("1 passed"),
        "child test {name} did not run and pass"
    );
    output
}

fn is_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

fn detection(group: ClassGroup, class: &str, b: [f32; 4]) -> Detection {
    Detection {
        class_id: 0,
        class: class.into(),
        group,
        score: 0.87,
        box_in_image: BoxXyxy::new(b[0], b[1], b[2], b[3]),
        range: None,
        track_id: None,
        track_age_s: None,
    }
}

fn detected(seq: u64, image: RgbImage, detections: Vec<Detection>) -> DetectedFrame {
    DetectedFrame {
        frame: Frame {
            seq,
            capture_mono_ns: 1_000_000 * seq,
            capture_wall_ns: 1_700_000_000_000_000_000 + seq,
            pts_ns: Some(40_000_000 * seq as i64),
            image,
        },
        detections,
        timings: DetectTimings {
            preprocess: 1.0,
            inference: 12.5,
            postprocess: 0.5,
            track: 0.0,
        },
        stamps: FrameStamps::default(),
        heat: None,
    }
}

fn hud() -> HudStats {
    HudStats {
        fps: 30.0,
        e2e_p50_ms: 40.0,
        e2e_p99_ms: 55.0,
        inference_ms: 12.5,
        dropped: 0,
        model: "yolox-nano cpu".into(),
    }
}

// ---------------------------------------------------------------- window

/// An Xvfb server on a display number it picked itself (`-displayfd`), killed on drop.
pub(crate) struct Xvfb {
    child: Child,
    pub(crate) display: String,
}

impl Xvfb {
    /// `None` when there is no Xvfb binary (a failure under CI).
    pub(crate) fn start() -> Option<Xvfb> {
        let spawned = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-noreset",
                "-screen",
                "0",
                "1600x1000x24",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    !in_ci(),
                    "Xvfb is needed under CI (apt-get install -y xvfb x11-apps imagemagick): {e}"
                );
                eprintln!("skipping: no Xvfb ({e}); apt-get install -y xvfb x11-apps imagemagick");
                return None;
            }
        };
        // Xvfb writes the display number once it accepts connections.
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let number = line.trim();
        assert!(!number.is_empty(), "Xvfb printed no display number");
        Some(Xvfb {
            display: format!(":{number}"),
            child,
        })
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The X root window of `$DISPLAY` as an image.
fn screenshot(out: &Path) -> RgbImage {
    screenshot_of(&std::env::var("DISPLAY").unwrap(), out)
}

/// The X root window of `display` as an image.
pub(crate) fn screenshot_of(display: &str, out: &Path) -> RgbImage {
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "xwd -root -silent -display {display} | convert xwd:- png:{}",
            out.display()
        ))
        .status()
        .expect("sh runs");
    assert!(
        status.success(),
        "xwd | convert failed; apt-get install -y x11-apps imagemagick"
    );
    image::open(out).unwrap().to_rgb8()
}

const BACKGROUND: Rgb<u8> = Rgb([0, 90, 30]);

/// Bounding box `(x1, y1, x2, y2)` (exclusive ends) of the pixels equal to `colour`.
fn bbox_of(image: &RgbImage, colour: Rgb<u8>) -> Option<(u32, u32, u32, u32)> {
    let mut found: Option<(u32, u32, u32, u32)> = None;
    for (x, y, p) in image.enumerate_pixels() {
        if *p == colour {
            let b = found.get_or_insert((x, y, x + 1, y + 1));
            *b = (b.0.min(x), b.1.min(y), b.2.max(x + 1), b.3.max(y + 1));
        }
    }
    found
}

/// Whether `colour` occurs within 3 px of `(x, y)`.
pub(crate) fn colour_near(image: &RgbImage, x: f64, y: f64, colour: Rgb<u8>) -> bool {
    let (x, y) = (x.round() as i64, y.round() as i64);
    (-3..=3).any(|dy| {
        (-3..=3).any(|dx| {
            let (px, py) = (x + dx, y + dy);
            px >= 0
                && py >= 0
                && (px as u32) < image.width()
                && (py as u32) < image.height()
                && *image.get_pixel(px as u32, py as u32) == colour
        })
    })
}

#[test]
fn window_shows_boxes_in_group_colours_under_xvfb() {
    let Some(xvfb) = Xvfb::start() else {
        return;
    };
    run_child(
        "sink::window_child_shows_frame_then_closes",
        &[("DISPLAY", Some(&xvfb.display))],
    );
}

#[test]
#[ignore = "run by window_shows_boxes_in_group_colours_under_xvfb in a child process"]
fn window_child_shows_frame_then_closes() {
    if !is_child() {
        return;
    }
    assert!(display_available(), "DISPLAY is an Xvfb we started");
    // 720p opens a window of its size; 1080p one of 1600x900 with the frame scaled down.
    show_frame_then_close(1280, 720);
    show_frame_then_close(1920, 1080);
    score_map_shows_only_with_explain();
}

/// Issue 18: a frame's score map is blended over it when the window shows it (`--explain`,
/// `e`), and the frame is untouched otherwise.
fn score_map_shows_only_with_explain() {
    let (w, h) = (640, 360);
    let dir = tempfile::tempdir().unwrap();
    let shot_path = dir.path().join("root.png");
    let annotated = RgbImage::from_pixel(w, h, BACKGROUND);
    let mut d = detected(1, RgbImage::new(w, h), Vec::new());
    // 8-px cells: the left half of the frame scores 1, the right half 0.
    let (cols, rows) = (w / 8, h / 8);
    let heat = lookout::types::HeatMap {
        cell: 8,
        cols,
        rows,
        values: (0..rows * cols)
            .map(|i| if i % cols < cols / 2 { 1.0 } else { 0.0 })
            .collect(),
    };
    let mut expected = annotated.clone();
    lookout::explain::draw_heat(&mut expected, &heat, 0.6, "score");
    let hot = *expected.get_pixel(w / 4, h / 2);
    assert_ne!(hot, BACKGROUND);
    d.heat = Some(heat);
    let hud = hud();
    let frame = SinkFrame {
        detected: &d,
        annotated: Some(&annotated),
        hud: &hud,
        jpeg: &Default::default(),
    };
    for explain in [true, false] {
        let mut sink = WindowSink::open("lookout explain test", w, h)
            .unwrap()
            .with_hud(false)
            .with_explain(explain);
        let deadline = Instant::now() + Duration::from_secs(10);
        let (shot, right) = loop {
            assert_eq!(sink.write(&frame).unwrap(), SinkControl::Continue);
            std::thread::sleep(Duration::from_millis(100));
            let shot = screenshot(&shot_path);
            // The background's box: the right half with the map, the whole frame without.
            if let Some(b) = bbox_of(&shot, BACKGROUND).filter(|b| b.2 - b.0 >= w / 2 - 2) {
                break (shot, b);
            }
            assert!(
                Instant::now() < deadline,
                "the frame never appeared on screen"
            );
        };
        let left = if explain { right.0 - w / 2 } else { right.0 };
        let (x, y) = (f64::from(left + w / 4), f64::from(right.1 + h / 2));
        let want = if explain { hot } else { BACKGROUND };
        assert!(
            colour_near(&shot, x, y, want),
            "explain {explain}: ({x}, {y}) is {:?}, not {want:?}",
            shot.get_pixel(x as u32, y as u32)
        );
        sink.finish().unwrap();
    }
}

fn show_frame_then_close(w: u32, h: u32) {
    let dir = tempfile::tempdir().unwrap();
    let shot_path = dir.path().join("root.png");
    let at = |x: f32, y: f32| [x * w as f32, y * h as f32];
    let corners = |a: [f32; 2], b: [f32; 2]| [a[0], a[1], b[0], b[1]];
    let pedestrian = corners(at(0.55, 0.42), at(0.62, 0.83));
    let vehicle = corners(at(0.70, 0.49), at(0.94, 0.83));
    let mut annotated = RgbImage::from_pixel(w, h, BACKGROUND);
    draw_detections(
        &mut annotated,
        &[
            detection(ClassGroup::Pedestrian, "person", pedestrian),
            detection(ClassGroup::Vehicle, "car", vehicle),
        ],
    );
    let d = detected(1, RgbImage::new(w, h), Vec::new());
    let hud = hud();
    let frame = SinkFrame {
        detected: &d,
        annotated: Some(&annotated),
        hud: &hud,
        jpeg: &Default::default(),
    };
    let mut sink = WindowSink::open("lookout test", w, h).unwrap();
    assert_eq!(sink.name(), "window");

    // The window maps asynchronously and X keeps no pixels of an unmapped window: redraw
    // until the frame is on the screen.
    let deadline = Instant::now() + Duration::from_secs(10);
    let (shot, frame_box) = loop {
        assert_eq!(sink.write(&frame).unwrap(), SinkControl::Continue);
        std::thread::sleep(Duration::from_millis(100));
        let shot = screenshot(&shot_path);
        if let Some(b) = bbox_of(&shot, BACKGROUND).filter(|b| b.2 - b.0 > w / 2) {
            break (shot, b);
        }
        assert!(
            Instant::now() < deadline,
            "the frame never appeared on screen"
        );
    };
    eprintln!("{w}x{h} frame shown at {frame_box:?}");
    // The background's bounding box is the frame (its corners are background), so it gives
    // the frame's placement and scale on screen.
    let scale = f64::from(frame_box.2 - frame_box.0) / f64::from(w);
    let on_screen = |x: f32, y: f32| {
        (
            f64::from(frame_box.0) + f64::from(x) * scale,
            f64::from(frame_box.1) + f64::from(y) * scale,
        )
    };
    let red = group_colour(ClassGroup::Pedestrian);
    let blue = group_colour(ClassGroup::Vehicle);
    for (b, colour) in [(pedestrian, red), (vehicle, blue)] {
        let mid_y = (b[1] + b[3]) / 2.0;
        for x in [b[0] + 1.0, b[2] - 1.0] {
            let (sx, sy) = on_screen(x, mid_y);
            assert!(
                colour_near(&shot, sx, sy, colour),
                "box edge at frame ({x}, {mid_y}) = screen ({sx:.0}, {sy:.0}) is not {colour:?}"
            );
        }
        let (cx, cy) = on_screen((b[0] + b[2]) / 2.0, mid_y);
        assert!(
            colour_near(&shot, cx, cy, BACKGROUND),
            "box inside is the scene"
        );
    }
    // The HUD is on by default: white text over a darkened top-left corner.
    let (hx1, hy1, hx2, hy2) = hud_rect(h, &hud_lines(&hud));
    let white = (hy1..hy2)
        .flat_map(|y| (hx1..hx2).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let (sx, sy) = on_screen(x as f32, y as f32);
            // Anti-aliased text: the strokes' cores are (near) white.
            shot.get_pixel(sx as u32, sy as u32)
                .0
                .iter()
                .all(|&c| c >= 200)
        })
        .count();
    assert!(white > 500, "HUD text pixels on screen: {white}");

    let no_pixels = SinkFrame {
        annotated: None,
        ..frame
    };
    let err = sink.write(&no_pixels).unwrap_err().to_string();
    assert!(err.contains("window") && err.contains("render"), "{err}");

    sink.finish().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while bbox_of(&screenshot(&shot_path), BACKGROUND).is_some() {
        assert!(Instant::now() < deadline, "finish did not close the window");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(sink.write(&frame).is_err(), "writing after finish");
}

#[test]
fn window_keys_pause_step_resume_toggle_hud_and_quit() {
    let Some(xvfb) = Xvfb::start() else {
        return;
    };
    run_child(
        "sink::window_keys_child",
        &[("DISPLAY", Some(&xvfb.display))],
    );
}

/// Presses keys on `$DISPLAY` through the XTEST extension, each after its delay.
fn press_keys_later(keys: Vec<(Duration, std::os::raw::c_uint)>) -> std::thread::JoinHandle<()> {
    use x11_dl::{xlib, xtest};
    let xlib = xlib::Xlib::open().expect("libX11");
    let xtst = match xtest::Xf86vmode::open() {
        Ok(xtst) => xtst,
        Err(e) => panic!("libXtst is needed to press keys (apt-get install -y libxtst6): {e}"),
    };
    std::thread::spawn(move || {
        let name = std::ffi::CString::new(std::env::var("DISPLAY").unwrap()).unwrap();
        // SAFETY: the display is checked for null, used on this thread only, and closed.
        unsafe {
            let display = (xlib.XOpenDisplay)(name.as_ptr());
            assert!(!display.is_null());
            // Keyboard focus follows the pointer: put it on the screen's centre.
            let screen = (xlib.XDefaultScreen)(display);
            let (cx, cy) = (
                (xlib.XDisplayWidth)(display, screen) / 2,
                (xlib.XDisplayHeight)(display, screen) / 2,
            );
            (xtst.XTestFakeMotionEvent)(display, screen, cx, cy, 0);
            (xlib.XSetInputFocus)(
                display,
                xlib::PointerRoot as u64,
                xlib::RevertToPointerRoot,
                0,
            );
            (xlib.XFlush)(display);
            for (delay, keysym) in keys {
                std::thread::sleep(delay);
                let keycode = u32::from((xlib.XKeysymToKeycode)(display, u64::from(keysym)));
                (xtst.XTestFakeKeyEvent)(display, keycode, xlib::True, 0);
                (xtst.XTestFakeKeyEvent)(display, keycode, xlib::False, 0);
                (xlib.XFlush)(display);
            }
            (xlib.XCloseDisplay)(display);
        }
    })
}

#[test]
#[ignore = "run by window_keys_pause_step_resume_toggle_hud_and_quit in a child process"]
fn window_keys_child() {
    use x11_dl::keysym::{XK_h, XK_period, XK_q, XK_space};
    if !is_child() {
        return;
    }
    // Without a window manager the keyboard follows the pointer, which Xvfb puts at the
    // screen's centre: a 1280x720 window (centred by minifb) covers it.
    let (w, h) = (1280, 720);
    let annotated = RgbImage::from_pixel(w, h, BACKGROUND);
    let d = detected(1, RgbImage::new(1, 1), Vec::new());
    let hud = hud();
    let frame = SinkFrame {
        detected: &d,
        annotated: Some(&annotated),
        hud: &hud,
        jpeg: &Default::default(),
    };
    let mut sink = WindowSink::open("lookout keys", w, h).unwrap();
    let gap = Duration::from_millis(1000);
    let keys = press_keys_later(vec![
        (Duration::from_millis(1500), XK_space),
        (gap, XK_period),
        (gap, XK_space),
        (gap / 2, XK_h),
        (gap / 2, XK_q),
    ]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut writes = Vec::new();
    let mut hud_was_hidden = false;
    let quit = loop {
        let started = Instant::now();
        let control = sink.write(&frame).unwrap();
        writes.push(started.elapsed());
        hud_was_hidden |= !sink.view().show_hud;
        if control == SinkControl::Quit {
            break true;
        }
        if Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    keys.join().unwrap();
    let long: Vec<usize> = (0..writes.len())
        .filter(|&i| writes[i] > Duration::from_millis(600))
        .collect();
    eprintln!("{} writes, long ones: {long:?}", writes.len());
    assert!(quit, "q did not quit");
    // Space paused one write until `.`, which let exactly one frame through, whose write
    // waited again until space resumed.
    assert_eq!(long.len(), 2, "{writes:?}");
    assert_eq!(long[1], long[0] + 1, "{writes:?}");
    assert!(hud_was_hidden, "h did not hide the HUD");
    sink.finish().unwrap();
}

#[test]
fn without_display_there_is_no_window() {
    run_child("sink::no_display_child", &[("DISPLAY", None)]);
}

#[test]
#[ignore = "run by without_display_there_is_no_window in a child process"]
fn no_display_child() {
    if !is_child() {
        return;
    }
    assert!(!display_available());
    let err = WindowSink::open("x", 64, 48)
        .err()
        .expect("no window without X");
    let text = err.to_string();
    assert!(
        text.contains("DISPLAY") && text.contains("--show"),
        "{text}"
    );
}

// ---------------------------------------------------------------- video

/// ffmpeg and ffprobe as the CLI finds them, or `None` (a failure under CI) when not
/// installed.
fn ffmpeg_tools() -> Option<FfmpegTools> {
    match lookout::cli::args::ffmpeg_from_env().tools() {
        Ok(tools) => Some(tools),
        Err(e) if !in_ci() => {
            eprintln!("skipping: {e}");
            None
        }
        Err(e) => panic!("{e}"),
    }
}

/// A smooth test picture (chroma subsampling keeps it nearly intact) that moves with `seq`.
fn gradient(w: u32, h: u32, seq: u32) -> RgbImage {
    RgbImage::from_fn(w, h, |x, y| {
        Rgb([
            ((x + 4 * seq) * 255 / (w + 40)) as u8,
            (y * 255 / h) as u8,
            (((x + y) / 2 + 60) % 256) as u8,
        ])
    })
}

fn write_video(sink: &mut VideoSink, frames: u32, w: u32, h: u32) {
    let hud = hud();
    for seq in 0..frames {
        let annotated = gradient(w, h, seq);
        let d = detected(u64::from(seq), RgbImage::new(1, 1), Vec::new());
        let frame = SinkFrame {
            detected: &d,
            annotated: Some(&annotated),
            hud: &hud,
            jpeg: &Default::default(),
        };
        assert_eq!(sink.write(&frame).unwrap(), SinkControl::Continue);
    }
}

/// `(frames counted by decoding, width, height)` of the first video stream.
fn probe(tools: &FfmpegTools, path: &Path) -> (u64, u32, u32) {
    let out = Command::new(&tools.ffprobe)
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames,width,height"])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let stream = &json["streams"][0];
    (
        stream["nb_read_frames"].as_str().unwrap().parse().unwrap(),
        stream["width"].as_u64().unwrap() as u32,
        stream["height"].as_u64().unwrap() as u32,
    )
}

fn first_frame_rgb(tools: &FfmpegTools, path: &Path) -> Vec<u8> {
    let out = Command::new(&tools.ffmpeg)
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-frames:v", "1", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"])
        .output()
        .unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn video_has_every_frame_at_size_and_close_to_the_input() {
    let Some(tools) = ffmpeg_tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.mp4");
    let mut sink = VideoSink::create(&path, 320, 240, 25.0).unwrap();
    assert_eq!(sink.name(), "video");
    write_video(&mut sink, 10, 320, 240);
    sink.finish().unwrap();
    assert_eq!(probe(&tools, &path), (10, 320, 240));

    let decoded = first_frame_rgb(&tools, &path);
    let input = gradient(320, 240, 0);
    assert_eq!(decoded.len(), input.as_raw().len());
    let mean_abs_diff = decoded
        .iter()
        .zip(input.as_raw())
        .map(|(a, b)| f64::from(a.abs_diff(*b)))
        .sum::<f64>()
        / decoded.len() as f64;
    assert!(mean_abs_diff < 3.0, "mean abs diff {mean_abs_diff}");
}

/// `--hud on`: the video holds the HUD panel (the scene darkened under it, text in it) and
/// the rest of the frame as it was.
#[test]
fn video_with_the_hud_draws_it_and_nothing_else() {
    let Some(tools) = ffmpeg_tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("hud.mp4");
    let (w, h) = (640, 360);
    let mut sink = VideoSink::create(&path, w, h, 25.0).unwrap().with_hud(true);
    write_video(&mut sink, 3, w, h);
    sink.finish().unwrap();
    let decoded = first_frame_rgb(&tools, &path);
    let input = gradient(w, h, 0);
    let mut expected = input.clone();
    draw_hud(&mut expected, &hud());
    let (x1, y1, x2, y2) = hud_rect(h, &hud_lines(&hud()));
    let (mut inside, mut outside) = ((0.0, 0usize), (0.0, 0usize));
    for (i, (a, b)) in decoded.iter().zip(expected.as_raw()).enumerate() {
        let (x, y) = (((i / 3) as u32 % w) as i64, ((i / 3) as u32 / w) as i64);
        let diff = f64::from(a.abs_diff(*b));
        let acc = if (x1..x2).contains(&x) && (y1..y2).contains(&y) {
            &mut inside
        } else {
            &mut outside
        };
        acc.0 += diff;
        acc.1 += 1;
    }
    let (inside, outside) = (inside.0 / inside.1 as f64, outside.0 / outside.1 as f64);
    assert!(outside < 3.0, "outside the HUD: mean abs diff {outside}");
    assert!(inside < 12.0, "the HUD as drawn: mean abs diff {inside}");
    // Without the HUD the panel's area would differ much more from the HUD frame.
    let plain: f64 = (y1..y2)
        .flat_map(|y| (x1..x2).map(move |x| (x, y)))
        .map(|(x, y)| {
            let (p, q) = (
                input.get_pixel(x as u32, y as u32),
                expected.get_pixel(x as u32, y as u32),
            );
            f64::from(p.0[0].abs_diff(q.0[0]))
        })
        .sum::<f64>()
        / ((x2 - x1) * (y2 - y1)) as f64;
    assert!(
        plain > 4.0 * inside,
        "the panel is visible: {plain} vs {inside}"
    );
}

#[test]
fn a_dropped_video_sink_still_leaves_a_playable_file() {
    let Some(tools) = ffmpeg_tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("interrupted.mp4");
    let mut sink = VideoSink::create(&path, 320, 240, 25.0).unwrap();
    write_video(&mut sink, 6, 320, 240);
    drop(sink);
    assert_eq!(probe(&tools, &path), (6, 320, 240));
}

#[test]
fn video_frames_of_another_size_or_without_pixels_are_refused() {
    let Some(_tools) = ffmpeg_tools() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut sink = VideoSink::create(&dir.path().join("v.mp4"), 320, 240, 25.0).unwrap();
    let hud = hud();
    let d = detected(0, RgbImage::new(1, 1), Vec::new());
    let wrong = RgbImage::new(64, 48);
    let frame = SinkFrame {
        detected: &d,
        annotated: Some(&wrong),
        hud: &hud,
        jpeg: &Default::default(),
    };
    let err = sink.write(&frame).unwrap_err().to_string();
    assert!(err.contains("64x48") && err.contains("320x240"), "{err}");
    let frame = SinkFrame {
        annotated: None,
        ..frame
    };
    assert!(sink.write(&frame).is_err());
    sink.finish().unwrap();
}

#[test]
fn an_unwritable_video_path_fails_with_ffmpegs_reason() {
    let Some(_tools) = ffmpeg_tools() else {
        return;
    };
    let err = VideoSink::create(Path::new("/nonexistent/dir/out.mp4"), 320, 240, 25.0)
        .err()
        .expect("a missing folder is refused up front");
    assert!(
        err.to_string()
            .contains("folder /nonexistent/dir does not exist"),
        "{err}"
    );

    // A folder as the output: ffmpeg opens the output at the first frame, so its error
    // comes from a write or from finish.
    let dir = tempfile::tempdir().unwrap();
    let mut sink = VideoSink::create(dir.path(), 320, 240, 25.0).unwrap();
    let hud = hud();
    let annotated = gradient(320, 240, 0);
    let d = detected(0, RgbImage::new(1, 1), Vec::new());
    let frame = SinkFrame {
        detected: &d,
        annotated: Some(&annotated),
        hud: &hud,
        jpeg: &Default::default(),
    };
    let mut result = Ok(SinkControl::Continue);
    for _ in 0..50 {
        result = sink.write(&frame);
        if result.is_err() {
            break;
        }
    }
    let err = match result {
        Err(e) => e,
        Ok(_) => sink.finish().unwrap_err(),
    };
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.starts_with("video: ffmpeg writing") && text.contains("exited with"),
        "{text}"
    );
}

#[test]
fn missing_ffmpeg_names_ffmpeg_and_apt_get() {
    run_child(
        "sink::missing_ffmpeg_child",
        &[("LOOKOUT_FFMPEG", Some("/nonexistent/ffmpeg"))],
    );
    // The same through explicit tools whose binary is gone.
    let tools = FfmpegTools {
        ffmpeg: PathBuf::from("/nonexistent/ffmpeg"),
        ffprobe: PathBuf::from("/nonexistent/ffprobe"),
    };
    let err = VideoSink::create_with(&tools, Path::new("x.mp4"), 320, 240, 25.0)
        .err()
        .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("ffmpeg") && text.contains("apt-get install -y ffmpeg"),
        "{text}"
    );
}

#[test]
#[ignore = "run by missing_ffmpeg_names_ffmpeg_and_apt_get in a child process"]
fn missing_ffmpeg_child() {
    if !is_child() {
        return;
    }
    // The CLI reads LOOKOUT_FFMPEG once and hands the setting to the sink.
    let ffmpeg = lookout::cli::args::ffmpeg_from_env();
    let err: SinkError = VideoSink::create_configured(&ffmpeg, Path::new("x.mp4"), 320, 240, 25.0)
        .err()
        .expect("LOOKOUT_FFMPEG points nowhere");
    let text = err.to_string();
    assert!(
        text.contains("/nonexistent/ffmpeg") && text.contains("apt-get install -y ffmpeg"),
        "{text}"
    );
}

// ---------------------------------------------------------------- files

#[test]
fn jsonl_lines_are_readable_before_finish_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run.jsonl");
    let mut sink = JsonlSink::create(&path).unwrap();
    let hud = hud();
    let frames: Vec<DetectedFrame> = (0..3)
        .map(|seq| {
            let dets = (0..seq)
                .map(|i| detection(ClassGroup::Pedestrian, "person", [i as f32, 1.0, 9.0, 9.5]))
                .collect();
            detected(seq, RgbImage::new(640, 480), dets)
        })
        .collect();
    for (i, d) in frames.iter().enumerate() {
        let frame = SinkFrame {
            detected: d,
            annotated: None,
            hud: &hud,
            jpeg: &Default::default(),
        };
        sink.write(&frame).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), i + 1, "one flushed line per write");
    }
    sink.finish().unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    for (line, d) in text.lines().zip(&frames) {
        let record: JsonlRecord<'static> = serde_json::from_str(line).unwrap();
        assert_eq!(record.seq, d.frame.seq);
        assert_eq!(record.pts_ns, d.frame.pts_ns);
        assert_eq!(record.capture_ns, d.frame.capture_mono_ns);
        assert_eq!((record.width, record.height), (640, 480));
        assert_eq!(record.detections.as_ref(), d.detections.as_slice());
        assert_eq!(record.timing_ms, d.timings);
    }
}

#[test]
fn frames_sink_writes_one_jpeg_per_frame_named_by_seq() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = FramesSink::create(dir.path()).unwrap();
    let hud = hud();
    let annotated = gradient(160, 120, 0);
    for seq in [10, 11, 13] {
        let d = detected(seq, RgbImage::new(1, 1), Vec::new());
        let frame = SinkFrame {
            detected: &d,
            annotated: Some(&annotated),
            hud: &hud,
            jpeg: &Default::default(),
        };
        sink.write(&frame).unwrap();
    }
    sink.finish().unwrap();
    for seq in [10, 11, 13] {
        let image = lookout::imageio::read_rgb(&sink.frame_path(seq)).unwrap();
        assert_eq!(image.dimensions(), (160, 120));
    }
    assert!(!sink.frame_path(12).exists());
}

#[test]
fn recorded_drive_replays_every_frame() {
    let dir = tempfile::tempdir().unwrap();
    let drive = dir.path().join("drive");
    let manifest = DriveManifest::new("camera:0", 96, 64, 30.0, FrameFileFormat::Png);
    let mut sink = RecordSink::create(&drive, manifest).unwrap();
    let hud = hud();
    let frames: Vec<DetectedFrame> = (0..7)
        .map(|seq| detected(seq, gradient(96, 64, seq as u32), Vec::new()))
        .collect();
    let annotated = RgbImage::new(96, 64);
    for d in &frames {
        // The drive gets the raw frame, not the annotated one.
        let frame = SinkFrame {
            detected: d,
            annotated: Some(&annotated),
            hud: &hud,
            jpeg: &Default::default(),
        };
        sink.write(&frame).unwrap();
    }
    sink.finish().unwrap();
    let mut reader = DriveReader::open(&drive).unwrap();
    for d in &frames {
        let replayed = reader.next_frame().unwrap().expect("a recorded frame");
        assert_eq!(replayed.image, d.frame.image);
    }
    assert!(reader.next_frame().unwrap().is_none());
    assert_eq!(reader.manifest().frame_count, Some(7));
}

// ---------------------------------------------------------------- HUD

#[test]
fn hud_is_legible_text_in_the_top_left_only() {
    let scene = Rgb([180, 200, 220]);
    let mut image = RgbImage::from_pixel(1280, 720, scene);
    let stats = hud();
    draw_hud(&mut image, &stats);
    let (x1, y1, x2, y2) = hud_rect(720, &hud_lines(&stats));
    assert!(x1 >= 0 && y1 >= 0 && x2 <= 640 && y2 <= 240, "{x2}x{y2}");
    let inside =
        |x: u32, y: u32| (x1..x2).contains(&i64::from(x)) && (y1..y2).contains(&i64::from(y));
    let mut white = 0;
    for (x, y, p) in image.enumerate_pixels() {
        if !inside(x, y) {
            assert_eq!(*p, scene, "({x}, {y}) outside the HUD changed");
        } else if p.0.iter().all(|&c| c >= 200) {
            // Anti-aliased text: the strokes' cores are (near) white.
            white += 1;
        }
    }
    assert!(white > 800, "{white} text pixels");
}
