//! A live window (minifb on X11) showing each annotated frame, with the HUD on top.
//!
//! The frame is scaled to the window keeping its aspect ratio; the window opens at the
//! frame's size, or smaller when that exceeds ~1600×900. Keys: `q`/Esc (or closing the
//! window) quit, `h` toggles the HUD, space pauses and resumes, `.`/→ while paused shows
//! exactly one more frame. A paused window blocks `write`, which holds back the pipeline.
//!
//! The display is the one libX11 connects to through `DISPLAY` (minifb cannot be given
//! another), so `DISPLAY` is read here, at start only: to probe it ([`display_available`])
//! and to name it when the window cannot open.

use std::cell::RefCell;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;
use std::time::Duration;

use image::RgbImage;
use minifb::{InputCallback, Key, ScaleMode, Window, WindowOptions};

use super::{Sink, SinkControl, SinkError, SinkFrame};
use crate::render::hud::draw_hud;
use crate::types::HudStats;

const NAME: &str = "window";
/// The largest window opened, so that a 4K frame still fits a laptop screen.
const MAX_WINDOW: (u32, u32) = (1600, 900);
/// How often a paused window redraws and polls its keys.
const PAUSED_POLL: Duration = Duration::from_millis(33);

/// Whether an X display can be opened (`$DISPLAY` set and the server accepting us).
/// Decides between `--show` and a headless run before any window is created.
pub fn display_available() -> bool {
    display_available_for(std::env::var_os("DISPLAY").as_deref())
}

/// [`display_available`] for a given display name; `None` or empty → false.
pub fn display_available_for(display: Option<&OsStr>) -> bool {
    let Some(name) = display.filter(|d| !d.is_empty()) else {
        return false;
    };
    let Ok(name) = CString::new(name.as_bytes()) else {
        return false;
    };
    // libX11 is loaded at run time, as minifb does: no X libraries needed to build.
    let Ok(xlib) = x11_dl::xlib::Xlib::open() else {
        return false;
    };
    // SAFETY: the display pointer is checked for null and closed before returning;
    // XInitThreads first, as minifb calls it and it must precede other Xlib calls.
    unsafe {
        (xlib.XInitThreads)();
        let display = (xlib.XOpenDisplay)(name.as_ptr());
        if display.is_null() {
            return false;
        }
        (xlib.XCloseDisplay)(display);
    }
    true
}

/// The window's view settings, changed by keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewState {
    pub show_hud: bool,
    pub paused: bool,
}

impl Default for ViewState {
    fn default() -> Self {
        Self {
            show_hud: true,
            paused: false,
        }
    }
}

/// What the keys pressed since the last poll ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyRequests {
    pub quit: bool,
    pub toggle_hud: bool,
    pub toggle_pause: bool,
    /// Show one more frame, then pause.
    pub step: bool,
}

impl KeyRequests {
    pub fn from_keys(keys: &[Key]) -> KeyRequests {
        let mut requests = KeyRequests::default();
        for key in keys {
            match key {
                Key::Q | Key::Escape => requests.quit = true,
                Key::H => requests.toggle_hud = !requests.toggle_hud,
                Key::Space => requests.toggle_pause = !requests.toggle_pause,
                Key::Period | Key::Right => requests.step = true,
                _ => {}
            }
        }
        requests
    }
}

/// Key presses in arrival order, logged by minifb's input callback. Polling the key state
/// instead would miss a tap that starts and ends between two frames of a slow run.
#[derive(Default)]
struct PressLog {
    pressed: Vec<Key>,
    /// Keys held now: X11 auto-repeat sends more presses without releases, and holding
    /// space must not toggle pause over and over.
    down: Vec<Key>,
}

struct PressRecorder(Rc<RefCell<PressLog>>);

impl InputCallback for PressRecorder {
    fn add_char(&mut self, _uni_char: u32) {}

    fn set_key_state(&mut self, key: Key, state: bool) {
        let mut log = self.0.borrow_mut();
        let held = log.down.contains(&key);
        match (state, held) {
            (true, false) => {
                log.down.push(key);
                log.pressed.push(key);
            }
            (false, true) => log.down.retain(|k| *k != key),
            _ => {}
        }
    }
}

/// Shows frames in a window; see the module docs.
///
/// `write` returns right after the frame is on screen (`update_with_buffer`), so the
/// pipeline stamps `presented` when `write` returns; the sink itself cannot, as it only
/// borrows the frame.
pub struct WindowSink {
    /// `None` once finished (the window is closed).
    window: Option<Window>,
    view: ViewState,
    presses: Rc<RefCell<PressLog>>,
    /// The shown frame as minifb's 0RGB pixels, reused between frames.
    buffer: Vec<u32>,
    /// The annotated frame with the HUD drawn, reused between frames.
    with_hud: RgbImage,
}

impl WindowSink {
    /// Opens a window for frames of `width`×`height` (the frames may differ; they are
    /// scaled to the window).
    pub fn open(title: &str, width: u32, height: u32) -> Result<WindowSink, SinkError> {
        let (window_w, window_h) = window_size(width, height);
        let options = WindowOptions {
            resize: true,
            scale_mode: ScaleMode::AspectRatioStretch,
            ..WindowOptions::default()
        };
        let mut window = Window::new(title, window_w as usize, window_h as usize, options)
            .map_err(|source| SinkError::WindowOpen {
                sink: NAME,
                // What libX11 itself read to connect (it reads DISPLAY, whatever we pass).
                display: std::env::var_os("DISPLAY")
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                source,
            })?;
        // No frame-rate cap from minifb: the pipeline sets the pace, and a sleep here
        // would add to the end-to-end latency.
        window.set_target_fps(0);
        let presses = Rc::new(RefCell::new(PressLog::default()));
        window.set_input_callback(Box::new(PressRecorder(Rc::clone(&presses))));
        Ok(WindowSink {
            window: Some(window),
            view: ViewState::default(),
            presses,
            buffer: Vec::new(),
            with_hud: RgbImage::new(0, 0),
        })
    }

    /// Starts with the HUD shown or hidden (`h` toggles it either way).
    pub fn with_hud(mut self, on: bool) -> Self {
        self.view.show_hud = on;
        self
    }

    pub fn view(&self) -> ViewState {
        self.view
    }

    /// Puts `annotated` (with the HUD when shown) into `buffer`.
    fn compose(&mut self, annotated: &RgbImage, hud: &HudStats) {
        if self.view.show_hud {
            if self.with_hud.dimensions() == annotated.dimensions() {
                self.with_hud.copy_from_slice(annotated.as_raw());
            } else {
                self.with_hud = annotated.clone();
            }
            draw_hud(&mut self.with_hud, hud);
            rgb_to_0rgb(&self.with_hud, &mut self.buffer);
        } else {
            rgb_to_0rgb(annotated, &mut self.buffer);
        }
    }

    /// Blits `buffer` and polls events; the keys pressed since the last poll.
    fn show(&mut self, width: u32, height: u32) -> Result<KeyRequests, SinkError> {
        let window = self.window.as_mut().ok_or(SinkError::Closed {
            sink: NAME,
            what: "window",
        })?;
        window
            .update_with_buffer(&self.buffer, width as usize, height as usize)
            .map_err(|source| SinkError::WindowDraw { sink: NAME, source })?;
        let mut log = self.presses.borrow_mut();
        let mut requests = KeyRequests::from_keys(&log.pressed);
        log.pressed.clear();
        requests.quit |= !window.is_open();
        Ok(requests)
    }

    /// Blocks while paused, redrawing at ~30 Hz so the window stays responsive.
    fn wait_while_paused(
        &mut self,
        annotated: &RgbImage,
        hud: &HudStats,
    ) -> Result<SinkControl, SinkError> {
        let (w, h) = annotated.dimensions();
        loop {
            std::thread::sleep(PAUSED_POLL);
            // update_with_buffer rather than update(): X11 does not keep the window's
            // pixels, so a paused frame must be redrawn after it is uncovered or resized.
            let requests = self.show(w, h)?;
            match self.react(requests, annotated, hud) {
                Next::Wait => {}
                Next::Quit => return Ok(SinkControl::Quit),
                Next::Continue => return Ok(SinkControl::Continue),
            }
        }
    }

    /// Applies the keys to the view, redrawing the frame when the HUD was toggled.
    fn react(&mut self, requests: KeyRequests, annotated: &RgbImage, hud: &HudStats) -> Next {
        let before = self.view;
        let next = self.view.apply(requests);
        if self.view.show_hud != before.show_hud && next == Next::Wait {
            self.compose(annotated, hud);
        }
        next
    }
}

/// What `write` does after the keys are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    Quit,
    /// Return; the pipeline sends the next frame.
    Continue,
    /// Paused: keep the frame on screen and poll again.
    Wait,
}

impl ViewState {
    /// The key semantics, the same whether a frame has just arrived or the window waits
    /// paused: space flips pause, `.` shows one more frame and (re)pauses, `h` flips the HUD.
    pub fn apply(&mut self, requests: KeyRequests) -> Next {
        if requests.quit {
            return Next::Quit;
        }
        if requests.toggle_hud {
            self.show_hud = !self.show_hud;
        }
        if requests.toggle_pause {
            self.paused = !self.paused;
        } else if requests.step {
            self.paused = true;
            return Next::Continue;
        }
        if self.paused {
            Next::Wait
        } else {
            Next::Continue
        }
    }
}

impl Sink for WindowSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        let annotated = frame.require_annotated(NAME)?;
        self.compose(annotated, frame.hud);
        let requests = self.show(annotated.width(), annotated.height())?;
        match self.react(requests, annotated, frame.hud) {
            Next::Quit => Ok(SinkControl::Quit),
            Next::Continue => Ok(SinkControl::Continue),
            Next::Wait => self.wait_while_paused(annotated, frame.hud),
        }
    }

    /// Closes the window.
    fn finish(&mut self) -> Result<(), SinkError> {
        self.window = None;
        Ok(())
    }
}

/// The window's size for `width`×`height` frames: theirs, shrunk to fit [`MAX_WINDOW`]
/// with the aspect ratio kept.
pub fn window_size(width: u32, height: u32) -> (u32, u32) {
    let (width, height) = (width.max(1), height.max(1));
    let shrink = (f64::from(MAX_WINDOW.0) / f64::from(width))
        .min(f64::from(MAX_WINDOW.1) / f64::from(height))
        .min(1.0);
    let scaled = |side: u32| ((f64::from(side) * shrink).round() as u32).max(1);
    (scaled(width), scaled(height))
}

/// RGB8 → minifb's `0x00RRGGBB`, into `out` (resized only when the frame size changes).
pub fn rgb_to_0rgb(image: &RgbImage, out: &mut Vec<u32>) {
    let pixels = image.width() as usize * image.height() as usize;
    out.resize(pixels, 0);
    for (dst, rgb) in out.iter_mut().zip(image.as_raw().chunks_exact(3)) {
        *dst = (u32::from(rgb[0]) << 16) | (u32::from(rgb[1]) << 8) | u32::from(rgb[2]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_frames_get_a_smaller_window_with_the_same_aspect() {
        assert_eq!(window_size(1280, 720), (1280, 720));
        assert_eq!(window_size(3840, 2160), (1600, 900));
        assert_eq!(window_size(1242, 375), (1242, 375));
        assert_eq!(window_size(2000, 1000), (1600, 800));
        assert_eq!(window_size(0, 0), (1, 1));
    }

    #[test]
    fn pixels_pack_as_0rgb_into_a_reused_buffer() {
        let image = RgbImage::from_fn(3, 2, |x, y| image::Rgb([x as u8, y as u8, 0xAB]));
        let mut out = Vec::with_capacity(6);
        let before = out.as_ptr();
        rgb_to_0rgb(&image, &mut out);
        assert_eq!(
            out,
            [
                0x0000_00AB,
                0x0001_00AB,
                0x0002_00AB,
                0x0000_01AB,
                0x0001_01AB,
                0x0002_01AB
            ]
        );
        assert_eq!(out.as_ptr(), before, "no reallocation for the same size");
    }

    #[test]
    fn keys_map_to_requests() {
        assert_eq!(KeyRequests::from_keys(&[]), KeyRequests::default());
        assert!(KeyRequests::from_keys(&[Key::Escape]).quit);
        assert!(KeyRequests::from_keys(&[Key::A, Key::Q]).quit);
        assert!(KeyRequests::from_keys(&[Key::H]).toggle_hud);
        assert!(!KeyRequests::from_keys(&[Key::H, Key::H]).toggle_hud);
        assert!(KeyRequests::from_keys(&[Key::Space]).toggle_pause);
        assert!(KeyRequests::from_keys(&[Key::Period]).step);
        assert!(KeyRequests::from_keys(&[Key::Right]).step);
        assert_eq!(
            ViewState::default(),
            ViewState {
                show_hud: true,
                paused: false
            }
        );
    }

    fn keys(keys: &[Key]) -> KeyRequests {
        KeyRequests::from_keys(keys)
    }

    #[test]
    fn taps_are_logged_once_and_auto_repeat_is_ignored() {
        let log = Rc::new(RefCell::new(PressLog::default()));
        let mut recorder = PressRecorder(Rc::clone(&log));
        recorder.set_key_state(Key::Space, true);
        recorder.set_key_state(Key::Space, true);
        recorder.set_key_state(Key::Space, true);
        recorder.set_key_state(Key::Space, false);
        recorder.set_key_state(Key::H, true);
        recorder.set_key_state(Key::H, false);
        recorder.set_key_state(Key::Space, true);
        assert_eq!(log.borrow().pressed, [Key::Space, Key::H, Key::Space]);
        assert_eq!(log.borrow().down, [Key::Space]);
    }

    #[test]
    fn space_pauses_and_resumes_and_dot_steps_one_frame() {
        let mut view = ViewState::default();
        assert_eq!(view.apply(keys(&[])), Next::Continue);
        assert_eq!(view.apply(keys(&[Key::Space])), Next::Wait);
        assert!(view.paused);
        // Paused: nothing pressed keeps waiting; `.` releases one frame and stays paused.
        assert_eq!(view.apply(keys(&[])), Next::Wait);
        assert_eq!(view.apply(keys(&[Key::Period])), Next::Continue);
        assert!(view.paused, "the next frame waits again");
        assert_eq!(view.apply(keys(&[])), Next::Wait);
        assert_eq!(view.apply(keys(&[Key::Right])), Next::Continue);
        assert_eq!(view.apply(keys(&[Key::Space])), Next::Continue);
        assert!(!view.paused);
        // `.` while running pauses at the next frame.
        assert_eq!(view.apply(keys(&[Key::Period])), Next::Continue);
        assert_eq!(view.apply(keys(&[])), Next::Wait);
    }

    #[test]
    fn h_toggles_the_hud_and_quit_wins_even_when_paused() {
        let mut view = ViewState::default();
        assert_eq!(view.apply(keys(&[Key::H])), Next::Continue);
        assert!(!view.show_hud);
        view.paused = true;
        assert_eq!(view.apply(keys(&[Key::H])), Next::Wait);
        assert!(view.show_hud);
        assert_eq!(view.apply(keys(&[Key::Space, Key::Q])), Next::Quit);
    }

    #[test]
    fn no_display_is_unavailable() {
        assert!(!display_available_for(None));
        assert!(!display_available_for(Some(OsStr::new(""))));
        // A display number nothing serves.
        assert!(!display_available_for(Some(OsStr::new(":4097"))));
    }
}
