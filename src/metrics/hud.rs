//! The window's heads-up numbers over a sliding window of the last 2 s of shown frames.

use std::collections::VecDeque;

use crate::types::HudStats;

/// Shown frames of the last `span_ns`: (presented time ns, end-to-end ms).
#[derive(Debug, Clone)]
pub struct HudWindow {
    span_ns: u64,
    samples: VecDeque<(u64, f64)>,
}

impl Default for HudWindow {
    fn default() -> Self {
        Self::new(2_000_000_000)
    }
}

impl HudWindow {
    pub fn new(span_ns: u64) -> Self {
        Self {
            span_ns,
            samples: VecDeque::new(),
        }
    }

    /// Adds a shown frame and forgets those older than the span.
    pub fn push(&mut self, presented_ns: u64, end_to_end_ms: f64) {
        self.samples.push_back((presented_ns, end_to_end_ms));
        while let Some(&(t, _)) = self.samples.front() {
            if presented_ns.saturating_sub(t) <= self.span_ns {
                break;
            }
            self.samples.pop_front();
        }
    }

    /// Frames per second over the window (0 before two frames).
    pub fn fps(&self) -> f64 {
        match (self.samples.front(), self.samples.back()) {
            (Some(&(first, _)), Some(&(last, _))) if last > first => {
                (self.samples.len() - 1) as f64 / ((last - first) as f64 / 1e9)
            }
            _ => 0.0,
        }
    }

    /// End-to-end (p50, p99) over the window, ms.
    pub fn end_to_end_p50_p99(&self) -> (f64, f64) {
        let mut v: Vec<f64> = self.samples.iter().map(|s| s.1).collect();
        if v.is_empty() {
            return (0.0, 0.0);
        }
        v.sort_by(f64::total_cmp);
        let at = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        (at(0.5), at(0.99))
    }

    /// The HUD for the next frame.
    pub fn stats(&self, inference_ms: f64, dropped: u64, model: &str) -> HudStats {
        let (p50, p99) = self.end_to_end_p50_p99();
        HudStats {
            fps: self.fps(),
            e2e_p50_ms: p50,
            e2e_p99_ms: p99,
            inference_ms,
            dropped,
            model: model.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_keeps_two_seconds_and_reports_rate_and_percentiles() {
        let mut w = HudWindow::default();
        // 10 s at 20 fps; latency 100 ms for the first 7.5 s, 40 ms after.
        for i in 0..200u64 {
            let e2e = if i < 150 { 100.0 } else { 40.0 };
            w.push(i * 50_000_000, e2e);
        }
        assert!((w.fps() - 20.0).abs() < 1e-9, "{}", w.fps());
        let (p50, p99) = w.end_to_end_p50_p99();
        assert_eq!((p50, p99), (40.0, 40.0), "old frames are forgotten");
        let hud = w.stats(12.5, 3, "yolox-nano cpu");
        assert_eq!(hud.dropped, 3);
        assert_eq!(HudWindow::default().stats(0.0, 0, "").fps, 0.0);
    }
}
