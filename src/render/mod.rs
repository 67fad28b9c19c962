//! Drawing on frames: boxes coloured by group, labels placed so that they never cover one
//! another or leave the frame ([`labels`]), and text panels (HUD, collision banner).
//!
//! Text is anti-aliased Noto Mono ([`text`]) with a line height from the image height, so
//! labels read the same from 480p to 4K.

pub mod hud;
pub mod labels;
pub mod text;
pub mod trails;

use image::{Rgb, RgbImage};

pub use labels::{LabelPlacer, LabelRect};
pub use text::{draw_text, text_size};

use crate::types::{BoxXyxy, ClassGroup, Detection};

/// The colour of a group's boxes and label backgrounds.
pub fn group_colour(group: ClassGroup) -> Rgb<u8> {
    match group {
        ClassGroup::Pedestrian => Rgb([255, 56, 56]),
        ClassGroup::Vehicle => Rgb([40, 140, 255]),
        ClassGroup::Sign => Rgb([255, 200, 0]),
        ClassGroup::Other => Rgb([170, 170, 170]),
    }
}

/// A tracked object's colour: one of 20 well-separated hues, picked by its track id, so
/// that neighbouring ids differ.
pub fn track_colour(track_id: u64) -> Rgb<u8> {
    const PALETTE: [[u8; 3]; 20] = [
        [255, 56, 56],
        [255, 157, 151],
        [255, 112, 31],
        [255, 178, 29],
        [207, 210, 49],
        [72, 249, 10],
        [146, 204, 23],
        [61, 219, 134],
        [26, 147, 52],
        [0, 212, 187],
        [44, 153, 168],
        [0, 194, 255],
        [52, 69, 147],
        [100, 115, 255],
        [0, 24, 236],
        [132, 56, 255],
        [82, 0, 133],
        [203, 56, 255],
        [255, 149, 200],
        [255, 55, 199],
    ];
    // Steps of 7 through 20 colours: consecutive ids land far apart on the list.
    Rgb(PALETTE[((track_id.wrapping_mul(7)) % 20) as usize])
}

/// A detection's colour: its track's when it has one, else its group's.
pub fn detection_colour(d: &Detection) -> Rgb<u8> {
    d.track_id
        .map_or_else(|| group_colour(d.group), track_colour)
}

/// Label and HUD line height for an image: 20 px at 720p, 60 px at 4K, never below 12.
pub fn text_px(image_height: u32) -> u32 {
    (image_height / 36).max(12)
}

/// Box line thickness for an image.
pub fn line_thickness(image_height: u32) -> u32 {
    (image_height / 360).clamp(1, 4)
}

/// Draws every detection: its box, and a `#id class score` label (with the distance and time
/// to collision when the detection has a range) where it overlaps no other label.
pub fn draw_detections(image: &mut RgbImage, detections: &[Detection]) {
    Overlay::default().draw(image, detections);
}

/// Draws detections frame after frame, keeping its buffers (label text, placement, order)
/// and, with trails on, each track's recent path.
#[derive(Debug, Default)]
pub struct Overlay {
    placer: LabelPlacer,
    order: Vec<usize>,
    label: String,
    trails: Option<trails::Trails>,
}

impl Overlay {
    /// Draws a short trail behind each tracked object from now on.
    pub fn with_trails(mut self, on: bool) -> Self {
        self.trails = on.then(trails::Trails::default);
        self
    }

    /// Every box (in its track's colour when tracked), the trails, then the labels, most
    /// confident first (they get the preferred places).
    pub fn draw(&mut self, image: &mut RgbImage, detections: &[Detection]) {
        let thickness = line_thickness(image.height());
        if let Some(trails) = &mut self.trails {
            trails.update(detections);
            trails.draw(image, thickness + 1);
        }
        for d in detections {
            draw_box(image, &d.box_in_image, detection_colour(d), thickness);
        }
        self.order.clear();
        self.order.extend(0..detections.len());
        self.order
            .sort_by(|&a, &b| detections[b].score.total_cmp(&detections[a].score));
        self.placer.clear();
        let px = text_px(image.height());
        let margin = (px / 6).max(1) as i64;
        let (frame_w, frame_h) = (image.width() as i64, image.height() as i64);
        for &i in &self.order {
            let d = &detections[i];
            self.label.clear();
            write_label(&mut self.label, d);
            let (tw, th) = text_size(&self.label, px);
            let (w, h) = (tw as i64 + 2 * margin, th as i64);
            let Some(r) = self.placer.place(&d.box_in_image, w, h, frame_w, frame_h) else {
                continue;
            };
            let colour = detection_colour(d);
            fill_rect(image, r.x1, r.y1, r.x2, r.y2, colour);
            draw_text(
                image,
                r.x1 + margin,
                r.y1,
                &self.label,
                px,
                text_colour_on(colour),
            );
        }
    }

    /// Where the last [`Overlay::draw`] put its labels.
    pub fn label_rects(&self) -> &[LabelRect] {
        self.placer.placed()
    }
}

/// A detection's label as drawn and as the Foxglove annotations carry it:
/// `#12 person 0.91 · 14.2 m · TTC 1.8 s` (track, distance and TTC where known).
pub fn write_label(out: &mut String, d: &Detection) {
    use std::fmt::Write;
    if let Some(id) = d.track_id {
        let _ = write!(out, "#{id} ");
    }
    let _ = write!(out, "{} {:.2}", d.class, d.score);
    write_range_label(out, d);
}

/// Appends ` · 14.2 m` (and ` · TTC 1.8 s`) for a detection with a range.
fn write_range_label(out: &mut String, detection: &Detection) {
    use std::fmt::Write;
    if let Some(r) = &detection.range {
        let _ = write!(out, " · {:.1} m", r.distance_m);
        if let Some(ttc) = r.ttc_s {
            let _ = write!(out, " · TTC {ttc:.1} s");
        }
    }
}

/// A red full-width banner across the top third's upper edge: `BRAKE! collision in 1.4 s`.
pub fn draw_collision_banner(image: &mut RgbImage, ttc_s: f64) {
    let px = text_px(image.height()) * 2;
    let text = format!("FORWARD COLLISION WARNING  TTC {ttc_s:.1} s");
    let (tw, th) = text_size(&text, px);
    let pad = px / 4;
    let banner_h = th + 2 * pad;
    let top = (image.height() / 8) as i64;
    let red = Rgb([220, 20, 20]);
    fill_rect(
        image,
        0,
        top,
        image.width() as i64,
        top + banner_h as i64,
        red,
    );
    let x = (image.width() as i64 - tw as i64).max(0) / 2;
    let white = Rgb([255, 255, 255]);
    draw_text(image, x, top + pad as i64, &text, px, white);
}

/// Black or white, whichever reads better on `background`.
pub fn text_colour_on(background: Rgb<u8>) -> Rgb<u8> {
    let [r, g, b] = background.0;
    let luma = 0.299 * r as f32 + 0.587 * g as f32 + 0.114 * b as f32;
    if luma > 140.0 {
        Rgb([0, 0, 0])
    } else {
        Rgb([255, 255, 255])
    }
}

/// A rectangle outline `thickness` pixels wide, inside `b` and clipped to the image.
pub fn draw_box(image: &mut RgbImage, b: &BoxXyxy, colour: Rgb<u8>, thickness: u32) {
    let t = thickness as i64;
    let (x1, y1, x2, y2) = (b.x1 as i64, b.y1 as i64, b.x2 as i64, b.y2 as i64);
    fill_rect(image, x1, y1, x2, y1 + t, colour);
    fill_rect(image, x1, y2 - t, x2, y2, colour);
    fill_rect(image, x1, y1, x1 + t, y2, colour);
    fill_rect(image, x2 - t, y1, x2, y2, colour);
}

/// Fills `[x1, x2) × [y1, y2)`, clipped to the image.
pub fn fill_rect(image: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64, colour: Rgb<u8>) {
    let (w, h) = (image.width() as i64, image.height() as i64);
    let (x1, x2) = (x1.clamp(0, w), x2.clamp(0, w));
    let (y1, y2) = (y1.clamp(0, h), y2.clamp(0, h));
    for y in y1..y2 {
        for x in x1..x2 {
            image.put_pixel(x as u32, y as u32, colour);
        }
    }
}

/// Darkens `[x1, x2) × [y1, y2)` to half brightness (a HUD backdrop that keeps the scene visible).
pub fn dim_rect(image: &mut RgbImage, x1: i64, y1: i64, x2: i64, y2: i64) {
    let (w, h) = (image.width() as i64, image.height() as i64);
    for y in y1.clamp(0, h)..y2.clamp(0, h) {
        for x in x1.clamp(0, w)..x2.clamp(0, w) {
            let p = image.get_pixel_mut(x as u32, y as u32);
            p.0 = p.0.map(|v| v / 2);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn det(group: ClassGroup) -> Detection {
        Detection {
            class_id: 0,
            class: "person".into(),
            group,
            score: 0.9,
            box_in_image: BoxXyxy::new(100.0, 100.0, 200.0, 300.0),
            range: None,
            track_id: None,
            track_age_s: None,
        }
    }

    #[test]
    fn box_edges_take_the_group_colour_and_the_inside_is_untouched() {
        let mut img = RgbImage::new(640, 480);
        draw_detections(&mut img, &[det(ClassGroup::Pedestrian)]);
        let red = group_colour(ClassGroup::Pedestrian);
        assert_eq!(*img.get_pixel(100, 200), red);
        assert_eq!(*img.get_pixel(199, 200), red);
        assert_eq!(*img.get_pixel(150, 299), red);
        assert_eq!(*img.get_pixel(150, 200), Rgb([0, 0, 0]));
    }

    #[test]
    fn label_draws_text_pixels_above_the_box() {
        let mut img = RgbImage::new(1280, 720);
        draw_detections(&mut img, &[det(ClassGroup::Vehicle)]);
        let blue = group_colour(ClassGroup::Vehicle);
        let label_area: Vec<Rgb<u8>> = (80..100)
            .flat_map(|y| (100..300).map(move |x| (x, y)))
            .map(|(x, y)| *img.get_pixel(x, y))
            .collect();
        let text = text_colour_on(blue);
        assert!(label_area.contains(&blue) && label_area.contains(&text));
    }

    #[test]
    fn drawing_outside_the_image_is_clipped_not_a_panic() {
        let mut img = RgbImage::new(50, 50);
        let mut d = det(ClassGroup::Sign);
        d.box_in_image = BoxXyxy::new(-20.0, -20.0, 80.0, 80.0);
        draw_detections(&mut img, &[d]);
        draw_text(&mut img, 45, 45, "long text ✓", 24, Rgb([1, 2, 3]));
    }

    /// 20 boxes crowded into one corner of a 720p frame: no two labels intersect, all lie in
    /// the frame, and most boxes keep their label.
    #[test]
    fn crowded_labels_never_overlap_or_leave_the_frame() {
        let mut img = RgbImage::new(1280, 720);
        let detections: Vec<Detection> = (0..20)
            .map(|i| {
                let (col, row) = ((i % 5) as f32, (i / 5) as f32);
                let mut d = det([ClassGroup::Vehicle, ClassGroup::Pedestrian][i % 2]);
                d.class = if i % 2 == 0 {
                    "car".into()
                } else {
                    "person".into()
                };
                d.score = 0.3 + i as f32 * 0.03;
                let (x, y) = (1100.0 + col * 30.0, -10.0 + row * 25.0);
                d.box_in_image = BoxXyxy::new(x, y, x + 80.0, y + 60.0);
                d.range = Some(crate::types::Range {
                    distance_m: 13.8 + i as f64,
                    lateral_m: 0.5,
                    distance_method: crate::types::DistanceMethod::GroundContact,
                    nearest_m: 0.0,
                    smoothed_distance_m: None,
                    ttc_s: None,
                    closing_speed_mps: None,
                });
                d
            })
            .collect();
        let mut overlay = Overlay::default();
        overlay.draw(&mut img, &detections);
        let rects = overlay.label_rects();
        assert!(
            rects.len() >= 15,
            "only {} of 20 labels placed",
            rects.len()
        );
        for (i, a) in rects.iter().enumerate() {
            assert!(a.inside(1280, 720), "label {a:?} leaves the frame");
            for b in &rects[i + 1..] {
                assert!(!a.intersects(b), "labels {a:?} and {b:?} overlap");
            }
        }
    }
}
