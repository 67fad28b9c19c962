//! Short trails behind tracked objects (`--trails`): the bottom centre of each track's box
//! over its last frames, drawn as a line in the track's colour. Points live in a fixed ring
//! per track; tracks not seen for a while are forgotten.

use std::collections::{HashMap, VecDeque};

use image::{Rgb, RgbImage};

use super::fill_rect;
use crate::types::Detection;

/// Points kept per track.
const TRAIL_POINTS: usize = 24;
/// A track unseen for this many frames loses its trail.
const FORGET_AFTER_FRAMES: u64 = 30;

#[derive(Debug, Default)]
pub struct Trails {
    frame: u64,
    /// Track id → (frame last seen, points oldest first).
    points: HashMap<u64, (u64, VecDeque<(f32, f32)>)>,
}

impl Trails {
    /// Adds this frame's positions of tracked detections.
    pub fn update(&mut self, detections: &[Detection]) {
        self.frame += 1;
        for d in detections {
            let Some(id) = d.track_id else { continue };
            let b = &d.box_in_image;
            let (seen, points) = self
                .points
                .entry(id)
                .or_insert_with(|| (0, VecDeque::with_capacity(TRAIL_POINTS)));
            *seen = self.frame;
            if points.len() == TRAIL_POINTS {
                points.pop_front();
            }
            points.push_back(((b.x1 + b.x2) / 2.0, b.y2));
        }
        let frame = self.frame;
        self.points
            .retain(|_, (seen, _)| frame - *seen <= FORGET_AFTER_FRAMES);
    }

    /// Draws the trail of every track seen this frame.
    pub fn draw(&self, image: &mut RgbImage, thickness: u32) {
        for (&id, (seen, points)) in &self.points {
            if *seen != self.frame {
                continue;
            }
            let colour = super::track_colour(id);
            for (a, b) in points.iter().zip(points.iter().skip(1)) {
                draw_segment(image, *a, *b, colour, thickness);
            }
        }
    }
}

/// A line from `a` to `b`, `thickness` pixels wide, clipped to the image.
fn draw_segment(
    image: &mut RgbImage,
    a: (f32, f32),
    b: (f32, f32),
    colour: Rgb<u8>,
    thickness: u32,
) {
    let steps = (b.0 - a.0).abs().max((b.1 - a.1).abs()).ceil().max(1.0) as usize;
    let half = (thickness / 2) as i64;
    let t = thickness.max(1) as i64;
    for s in 0..=steps {
        let f = s as f32 / steps as f32;
        let (x, y) = (a.0 + (b.0 - a.0) * f, a.1 + (b.1 - a.1) * f);
        let (x, y) = (x.round() as i64 - half, y.round() as i64 - half);
        fill_rect(image, x, y, x + t, y + t, colour);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::{BoxXyxy, ClassGroup};

    fn tracked(id: u64, x: f32) -> Detection {
        Detection {
            class_id: 2,
            class: "car".into(),
            group: ClassGroup::Vehicle,
            score: 0.9,
            box_in_image: BoxXyxy::new(x, 10.0, x + 20.0, 50.0),
            range: None,
            track_id: Some(id),
            track_age_s: Some(0.0),
        }
    }

    #[test]
    fn a_moving_track_leaves_a_line_in_its_colour_and_old_tracks_are_forgotten() {
        let mut trails = Trails::default();
        for f in 0..10 {
            trails.update(&[tracked(7, 10.0 + 5.0 * f as f32)]);
        }
        let mut image = RgbImage::new(120, 60);
        trails.draw(&mut image, 2);
        // Bottom centres ran from x = 20 to 65 along y = 50.
        assert_eq!(*image.get_pixel(40, 50), super::super::track_colour(7));
        assert_eq!(*image.get_pixel(90, 50), Rgb([0, 0, 0]));
        for _ in 0..=FORGET_AFTER_FRAMES {
            trails.update(&[]);
        }
        assert!(trails.points.is_empty());
    }
}
