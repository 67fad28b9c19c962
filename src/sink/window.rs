//! A live window (minifb on X11) showing each annotated frame, with the HUD on top.
//!
//! The frame is scaled to the window keeping its aspect ratio; the window opens at the
//! frame's size, or smaller when that exceeds ~1600×900. Keys: `q`/Esc (or closing the
//! window) quit, `h` toggles the HUD, space pauses and resumes, `.`/→ while paused shows
//! exactly one more frame. A paused window blocks `write`, which holds back the pipeline.
//!
//! The display is the one libX11 connects to through `DISPLAY` (minifb cannot be given
//! another), so `DISPLAY` is read here, at start only: to probe it ([`display_available`])
//! and to name it when the window cannot open or is lost.
//!
//! Losing the display: when the X server goes away, libX11 calls its IO error handler and
//! then exits the process — no metrics, no finished files. So the window lives on a thread
//! of its own (the one exception to "only `pipeline/` spawns threads": the X connection
//! needs a thread that can be given up), and the handler installed here, called on the
//! thread whose Xlib call found the connection dead, marks that window lost and parks the
//! thread for good instead of returning into Xlib. The sink, on the pipeline's thread, sees
//! the mark and fails with [`SinkError::DisplayLost`] naming the display; the pipeline then
//! finishes every other output and the run exits non-zero. The parked thread holds the
//! dead connection (nobody touches it again) until the process exits.

use std::cell::{Cell, RefCell};
use std::ffi::{CString, OsStr};
use std::os::raw::c_int;
use std::os::unix::ffi::OsStrExt;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Once};
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
/// How often the sink looks whether its window thread lost the display while it waits.
const LOST_POLL: Duration = Duration::from_millis(20);

thread_local! {
    /// On a window thread: the flag to raise when its display is lost.
    static LOST_DISPLAY: Cell<Option<Arc<AtomicBool>>> = const { Cell::new(None) };
}

/// libX11's IO error handler (the connection to the X server is gone). On a window thread:
/// marks the window lost and parks the thread forever, as returning would make Xlib exit
/// the process. Elsewhere it returns, and Xlib exits as it always does.
unsafe extern "C" fn on_display_lost(_display: *mut x11_dl::xlib::Display) -> c_int {
    if let Some(lost) = LOST_DISPLAY.with(Cell::take) {
        lost.store(true, Ordering::SeqCst);
        loop {
            std::thread::park();
        }
    }
    eprintln!("lookout: lost the connection to the X display");
    0
}

/// Installs [`on_display_lost`] once per process (before the first window opens).
fn install_display_lost_handler() {
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let Ok(xlib) = x11_dl::xlib::Xlib::open() else {
            return; // minifb cannot open a window either; it says so.
        };
        // SAFETY: XSetIOErrorHandler only stores the function pointer, which is 'static;
        // x11-dl never unloads libX11 (dropping `xlib` closes nothing).
        unsafe {
            (xlib.XSetIOErrorHandler)(Some(on_display_lost));
        }
    });
}

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
    /// The detector's score map over the frame (`--explain`; `e` toggles it).
    pub show_explain: bool,
}

impl Default for ViewState {
    fn default() -> Self {
        Self {
            show_hud: true,
            paused: false,
            show_explain: false,
        }
    }
}

/// What the keys pressed since the last poll ask for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KeyRequests {
    pub quit: bool,
    pub toggle_hud: bool,
    pub toggle_explain: bool,
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
                Key::E => requests.toggle_explain = !requests.toggle_explain,
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

/// The window itself, on its own thread: draws frames and reads keys.
struct WindowView {
    /// `None` once finished (the window is closed).
    window: Option<Window>,
    view: ViewState,
    presses: Rc<RefCell<PressLog>>,
    /// The shown frame as minifb's 0RGB pixels, reused between frames.
    buffer: Vec<u32>,
    /// The annotated frame with the HUD drawn, reused between frames.
    with_hud: RgbImage,
}

impl WindowView {
    /// Opens a window for frames of `width`×`height`.
    fn open(title: &str, width: u32, height: u32, display: &str) -> Result<WindowView, SinkError> {
        let (window_w, window_h) = window_size(width, height);
        let options = WindowOptions {
            resize: true,
            scale_mode: ScaleMode::AspectRatioStretch,
            ..WindowOptions::default()
        };
        let mut window = Window::new(title, window_w as usize, window_h as usize, options)
            .map_err(|source| SinkError::WindowOpen {
                sink: NAME,
                display: display.to_string(),
                source,
            })?;
        // No frame-rate cap from minifb: the pipeline sets the pace, and a sleep here
        // would add to the end-to-end latency.
        window.set_target_fps(0);
        let presses = Rc::new(RefCell::new(PressLog::default()));
        window.set_input_callback(Box::new(PressRecorder(Rc::clone(&presses))));
        Ok(WindowView {
            window: Some(window),
            view: ViewState::default(),
            presses,
            buffer: Vec::new(),
            with_hud: RgbImage::new(0, 0),
        })
    }

    /// Shows one frame (and waits while paused): what the old single-threaded `write` did.
    fn present(&mut self, annotated: &RgbImage, hud: &HudStats) -> Result<SinkControl, SinkError> {
        self.compose(annotated, hud);
        let requests = self.show(annotated.width(), annotated.height())?;
        match self.react(requests, annotated, hud) {
            Next::Quit => Ok(SinkControl::Quit),
            Next::Continue => Ok(SinkControl::Continue),
            Next::Wait => self.wait_while_paused(annotated, hud),
        }
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
        if requests.toggle_explain {
            self.show_explain = !self.show_explain;
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

/// A frame on its way to the window thread, and back (its buffers are reused).
struct Shown {
    image: RgbImage,
    hud: HudStats,
    /// Set the HUD on or off before showing (the first frame after `with_hud`).
    show_hud: Option<bool>,
    /// Likewise the score map (`with_explain`).
    show_explain: Option<bool>,
}

/// The window thread's answer to one frame.
struct Answer {
    shown: Shown,
    control: Result<SinkControl, SinkError>,
    view: ViewState,
}

/// Shows frames in a window; see the module docs.
///
/// `write` returns right after the frame is on screen (`update_with_buffer`), so the
/// pipeline stamps `presented` when `write` returns; the sink itself cannot, as it only
/// borrows the frame.
pub struct WindowSink {
    /// Frames to the window thread; `None` once finished.
    frames: Option<SyncSender<Shown>>,
    replies: Receiver<Answer>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Raised by the IO error handler on the window thread.
    lost: Arc<AtomicBool>,
    /// `DISPLAY` at start, to name it.
    display: String,
    /// The view as of the last frame shown.
    view: ViewState,
    /// The HUD setting for the next frame, when changed by [`WindowSink::with_hud`].
    pending_hud: Option<bool>,
    /// The score-map setting for the next frame ([`WindowSink::with_explain`]).
    pending_explain: Option<bool>,
    /// The buffers of the last frame shown, reused for the next.
    spare: Option<Shown>,
}

impl WindowSink {
    /// Opens a window for frames of `width`×`height` (the frames may differ; they are
    /// scaled to the window), on a thread of its own.
    pub fn open(title: &str, width: u32, height: u32) -> Result<WindowSink, SinkError> {
        // What libX11 itself reads to connect (it reads DISPLAY, whatever we pass).
        let display = std::env::var_os("DISPLAY")
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        install_display_lost_handler();
        let lost = Arc::new(AtomicBool::new(false));
        // One frame at a time each way, in fixed-size channels (no allocation per frame).
        let (frames, frames_rx) = mpsc::sync_channel::<Shown>(1);
        let (replies_tx, replies) = mpsc::sync_channel::<Answer>(1);
        let (opened_tx, opened) = mpsc::sync_channel::<Result<(), SinkError>>(1);
        let thread = {
            let (title, display, lost) = (title.to_string(), display.clone(), lost.clone());
            std::thread::Builder::new()
                .name("lookout-window".into())
                .spawn(move || {
                    LOST_DISPLAY.with(|flag| flag.set(Some(lost)));
                    let mut view = match WindowView::open(&title, width, height, &display) {
                        Ok(view) => view,
                        Err(e) => {
                            let _ = opened_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = opened_tx.send(Ok(()));
                    for mut shown in frames_rx {
                        if let Some(on) = shown.show_hud.take() {
                            view.view.show_hud = on;
                        }
                        if let Some(on) = shown.show_explain.take() {
                            view.view.show_explain = on;
                        }
                        let control = view.present(&shown.image, &shown.hud);
                        let reply = Answer {
                            shown,
                            control,
                            view: view.view,
                        };
                        if replies_tx.send(reply).is_err() {
                            break;
                        }
                    }
                    // Closes the window (and the X connection) on this thread.
                    drop(view);
                })
                .map_err(|_| SinkError::WindowGone { sink: NAME })?
        };
        let sink = WindowSink {
            frames: Some(frames),
            replies,
            thread: Some(thread),
            lost,
            display,
            view: ViewState::default(),
            pending_hud: None,
            pending_explain: None,
            spare: None,
        };
        sink.wait_for(&opened)??;
        Ok(sink)
    }

    /// Starts with the HUD shown or hidden (`h` toggles it either way).
    pub fn with_hud(mut self, on: bool) -> Self {
        self.view.show_hud = on;
        self.pending_hud = Some(on);
        self
    }

    /// Starts with the score map shown (`--explain`; `e` toggles it). Frames carry a map
    /// only when the detect stage makes one.
    pub fn with_explain(mut self, on: bool) -> Self {
        self.view.show_explain = on;
        self.pending_explain = Some(on);
        self
    }

    pub fn view(&self) -> ViewState {
        self.view
    }

    /// The window thread's next answer on `rx`; an error if its display is lost (the
    /// thread is parked for good) or the thread ended.
    fn wait_for<T>(&self, rx: &Receiver<T>) -> Result<T, SinkError> {
        loop {
            let error = match rx.recv_timeout(LOST_POLL) {
                Ok(value) => return Ok(value),
                Err(error) => error,
            };
            if self.lost.load(Ordering::SeqCst) {
                return Err(SinkError::DisplayLost {
                    sink: NAME,
                    display: self.display.clone(),
                });
            }
            if error == RecvTimeoutError::Disconnected {
                return Err(SinkError::WindowGone { sink: NAME });
            }
        }
    }
}

/// `dst` := `src`, keeping `dst`'s allocations (no per-frame allocation).
fn copy_hud(dst: &mut HudStats, src: &HudStats) {
    let HudStats {
        fps,
        e2e_p50_ms,
        e2e_p99_ms,
        inference_ms,
        dropped,
        model,
    } = src;
    (dst.fps, dst.e2e_p50_ms, dst.e2e_p99_ms) = (*fps, *e2e_p50_ms, *e2e_p99_ms);
    (dst.inference_ms, dst.dropped) = (*inference_ms, *dropped);
    dst.model.clone_from(model);
}

impl Sink for WindowSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        let annotated = frame.require_annotated(NAME)?;
        let frames = self.frames.as_ref().ok_or(SinkError::Closed {
            sink: NAME,
            what: "window",
        })?;
        let mut shown = self.spare.take().unwrap_or_else(|| Shown {
            image: RgbImage::new(0, 0),
            hud: HudStats::default(),
            show_hud: None,
            show_explain: None,
        });
        if shown.image.dimensions() == annotated.dimensions() {
            shown.image.copy_from_slice(annotated.as_raw());
        } else {
            shown.image = annotated.clone();
        }
        // The view as of the last frame: `e` shows or hides the map from the next one.
        if let (true, Some(heat)) = (self.view.show_explain, &frame.detected.heat) {
            crate::explain::draw_heat(&mut shown.image, heat, 0.6, "score");
        }
        copy_hud(&mut shown.hud, frame.hud);
        shown.show_hud = self.pending_hud.take();
        shown.show_explain = self.pending_explain.take();
        if frames.send(shown).is_err() {
            return Err(self
                .wait_for(&self.replies)
                .err()
                .unwrap_or(SinkError::WindowGone { sink: NAME }));
        }
        let reply = self.wait_for(&self.replies)?;
        self.view = reply.view;
        self.spare = Some(reply.shown);
        reply.control
    }

    /// Closes the window (the window thread closes it and ends); a lost display's thread
    /// stays parked, holding the dead connection, until the process exits.
    fn finish(&mut self) -> Result<(), SinkError> {
        drop(self.frames.take());
        if let Some(thread) = self.thread.take() {
            if !self.lost.load(Ordering::SeqCst) {
                let _ = thread.join();
            }
        }
        Ok(())
    }
}

impl Drop for WindowSink {
    fn drop(&mut self) {
        let _ = self.finish();
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
        assert!(KeyRequests::from_keys(&[Key::E]).toggle_explain);
        assert_eq!(
            ViewState::default(),
            ViewState {
                show_hud: true,
                paused: false,
                show_explain: false,
            }
        );
        let mut view = ViewState::default();
        view.apply(keys(&[Key::E]));
        assert!(view.show_explain, "`e` shows the score map");
        view.apply(keys(&[Key::E]));
        assert!(!view.show_explain, "and hides it again");
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
