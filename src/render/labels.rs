//! Where labels go: never over one another, never off the frame.
//!
//! A label prefers the strip just above its box, then just inside the box's top, then just
//! below it; when those are taken it moves up or down in half-label steps, then sideways,
//! to the nearest free place. A label that finds no room at all is left out (its box is
//! still drawn): on a frame packed with boxes an unreadable pile of labels helps no one.

use crate::types::BoxXyxy;

/// A label's rectangle in image pixels: `[x1, x2) × [y1, y2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LabelRect {
    pub x1: i64,
    pub y1: i64,
    pub x2: i64,
    pub y2: i64,
}

impl LabelRect {
    pub fn intersects(&self, other: &LabelRect) -> bool {
        self.x1 < other.x2 && other.x1 < self.x2 && self.y1 < other.y2 && other.y1 < self.y2
    }

    pub fn inside(&self, width: i64, height: i64) -> bool {
        self.x1 >= 0 && self.y1 >= 0 && self.x2 <= width && self.y2 <= height
    }
}

/// The labels placed so far on one frame (kept between frames: no allocation once warm).
#[derive(Debug, Default)]
pub struct LabelPlacer {
    placed: Vec<LabelRect>,
}

/// How far a label may move from its box, in label heights, before it is left out.
const MAX_STEPS: i64 = 12;

impl LabelPlacer {
    /// Forgets the previous frame's labels.
    pub fn clear(&mut self) {
        self.placed.clear();
    }

    /// The labels placed since [`LabelPlacer::clear`].
    pub fn placed(&self) -> &[LabelRect] {
        &self.placed
    }

    /// A free place for a `width`×`height` label of `box_in_image` on a `frame_w`×`frame_h`
    /// frame, taken; `None` when there is none near the box (or the label is larger than
    /// the frame).
    pub fn place(
        &mut self,
        box_in_image: &BoxXyxy,
        width: i64,
        height: i64,
        frame_w: i64,
        frame_h: i64,
    ) -> Option<LabelRect> {
        if width > frame_w || height > frame_h || width <= 0 || height <= 0 {
            return None;
        }
        let clamp_x = |x: i64| x.clamp(0, frame_w - width);
        let x0 = clamp_x(box_in_image.x1.floor() as i64);
        let top = box_in_image.y1.floor() as i64;
        let bottom = box_in_image.y2.ceil() as i64;
        let rect = |x: i64, y: i64| LabelRect {
            x1: x,
            y1: y,
            x2: x + width,
            y2: y + height,
        };
        let free = |r: &LabelRect, placed: &[LabelRect]| {
            r.inside(frame_w, frame_h) && !placed.iter().any(|p| p.intersects(r))
        };
        let preferred = [top - height, top, bottom];
        let half = (height / 2).max(1);
        // Sideways offsets: none first, then alternating by a label width.
        for dx_step in 0..=4i64 {
            let dx = match dx_step {
                0 => 0,
                k if k % 2 == 1 => -width * ((k + 1) / 2),
                k => width * (k / 2),
            };
            let x = clamp_x(x0 + dx);
            if dx_step > 0 && x == x0 {
                continue;
            }
            for &y in &preferred {
                let r = rect(x, y);
                if free(&r, &self.placed) {
                    self.placed.push(r);
                    return Some(r);
                }
            }
            for step in 1..=2 * MAX_STEPS {
                for y in [top - height - step * half, bottom + step * half] {
                    if y < 0 || y + height > frame_h {
                        continue;
                    }
                    let r = rect(x, y);
                    if free(&r, &self.placed) {
                        self.placed.push(r);
                        return Some(r);
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lone_label_sits_above_its_box_else_inside() {
        let mut p = LabelPlacer::default();
        let r = p
            .place(&BoxXyxy::new(100.0, 100.0, 200.0, 200.0), 80, 20, 640, 480)
            .unwrap();
        assert_eq!((r.x1, r.y1), (100, 80));
        p.clear();
        let r = p
            .place(&BoxXyxy::new(100.0, 5.0, 200.0, 200.0), 80, 20, 640, 480)
            .unwrap();
        assert_eq!(
            (r.x1, r.y1),
            (100, 5),
            "inside the top when above does not fit"
        );
        // Off the right edge: shifted left into the frame.
        let r = p
            .place(&BoxXyxy::new(600.0, 300.0, 640.0, 400.0), 80, 20, 640, 480)
            .unwrap();
        assert_eq!((r.x1, r.x2), (560, 640));
    }

    #[test]
    fn a_second_label_at_the_same_place_moves() {
        let mut p = LabelPlacer::default();
        let b = BoxXyxy::new(100.0, 100.0, 200.0, 200.0);
        let a = p.place(&b, 80, 20, 640, 480).unwrap();
        let c = p.place(&b, 80, 20, 640, 480).unwrap();
        assert!(!a.intersects(&c));
        assert_eq!(c.y1, 100, "inside the box's top");
    }

    #[test]
    fn no_room_means_no_label() {
        let mut p = LabelPlacer::default();
        let b = BoxXyxy::new(0.0, 0.0, 40.0, 20.0);
        assert!(p.place(&b, 40, 20, 40, 20).is_some());
        assert!(p.place(&b, 40, 20, 40, 20).is_none());
        assert!(
            p.place(&b, 50, 20, 40, 20).is_none(),
            "wider than the frame"
        );
    }
}
