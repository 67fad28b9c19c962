//! Box → distance along the road, from the ground-contact point and a per-class size prior.
//!
//! The object is modelled as a box of the class's typical size standing on a flat road,
//! aligned with it. For each candidate distance the model is projected and compared with the
//! detection: the bottom edge (ground contact; its error is a fixed angle from pitch wobble and
//! road slope, so it counts less the farther away) and the box height and width (relative
//! errors from the class's size spread). The distance that explains the box best wins; how much
//! each cue contributed decides the reported [`DistanceMethod`]. Edges cut by the image border
//! only bound the model; a contact point at or above the horizon leaves the size prior alone.

use super::Calibration;
use crate::types::BoxXyxy;
pub use crate::types::DistanceMethod;
use serde::{Deserialize, Serialize};

impl DistanceEstimate {
    /// The plain range attached to a detection (no time to collision yet).
    pub fn to_range(&self) -> crate::types::Range {
        crate::types::Range {
            distance_m: self.distance_m,
            lateral_m: self.lateral_m,
            distance_method: self.method,
            nearest_m: self.nearest_m,
            smoothed_distance_m: None,
            ttc_s: None,
            closing_speed_mps: None,
        }
    }
}

/// The distance to one detected object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DistanceEstimate {
    /// Metres ahead of the vehicle's reference point to the object's centre, along the road.
    pub distance_m: f64,
    /// Metres ahead to the object's near face (its centre less half the class's length): the
    /// distance to feed the time-to-collision tracker.
    pub nearest_m: f64,
    /// Metres right (positive) or left of the vehicle's reference point, object centre.
    pub lateral_m: f64,
    pub method: DistanceMethod,
    /// Why the method won, for logs and the JSON output.
    pub reason: String,
}

/// Typical size of a class, its spread and whether it stands on the road.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizePrior {
    pub height_m: f64,
    pub width_m: f64,
    pub length_m: f64,
    /// Standard deviation of the height across the class, metres.
    pub height_sigma_m: f64,
    /// False for things mounted above the road (traffic lights, signs): no ground contact.
    pub on_ground: bool,
}

const fn prior(height_m: f64, width_m: f64, length_m: f64, height_sigma_m: f64) -> SizePrior {
    SizePrior {
        height_m,
        width_m,
        length_m,
        height_sigma_m,
        on_ground: true,
    }
}

/// Size priors for COCO and KITTI class names (case-insensitive); `None` for other classes.
/// Heights follow the KITTI training-set means, rounded; spreads are its standard deviations.
pub fn size_prior(class_name: &str) -> Option<SizePrior> {
    let p = match class_name
        .to_ascii_lowercase()
        .replace(['_', '-'], " ")
        .as_str()
    {
        "person" | "pedestrian" => prior(1.72, 0.65, 0.85, 0.12),
        "person sitting" => prior(1.27, 0.6, 0.8, 0.15),
        "cyclist" | "rider" => prior(1.74, 0.6, 1.76, 0.12),
        "bicycle" => prior(1.1, 0.6, 1.75, 0.12),
        "motorcycle" | "motorbike" => prior(1.3, 0.8, 2.1, 0.15),
        "car" => prior(1.53, 1.63, 3.88, 0.12),
        "van" => prior(2.2, 1.9, 5.1, 0.25),
        "truck" => prior(3.0, 2.5, 8.0, 0.5),
        "bus" => prior(3.0, 2.55, 12.0, 0.3),
        "tram" | "train" => prior(3.5, 2.6, 16.0, 0.3),
        "misc" => prior(1.9, 1.5, 3.6, 0.5),
        "dog" => prior(0.6, 0.3, 0.9, 0.2),
        "horse" => prior(1.6, 0.6, 2.2, 0.2),
        "cow" => prior(1.4, 0.7, 2.2, 0.2),
        "traffic light" => SizePrior {
            on_ground: false,
            ..prior(0.9, 0.35, 0.3, 0.2)
        },
        "stop sign" => SizePrior {
            on_ground: false,
            ..prior(0.75, 0.75, 0.05, 0.1)
        },
        _ => return None,
    };
    Some(p)
}

/// Pitch wobble plus road-slope change between the camera's road and the object's, as one
/// angle: the ground-contact row's expected error (0.65° ≈ 8 px at KITTI's 721 px focal length).
const GROUND_SIGMA_DEG: f64 = 0.65;
/// Relative spread of the box width: orientation is unknown, so it is a weak cue.
const WIDTH_REL_SIGMA: f64 = 0.3;
/// Box edges within this many pixels of the image border are treated as cut.
const BORDER_PX: f32 = 1.5;
/// Distances searched, metres.
const SEARCH_RANGE_M: (f64, f64) = (0.5, 300.0);

/// Estimates the distance of the object in `box_in_image` (pixels of a `image_w`×`image_h`
/// frame, scaled from the calibration if needed). `None` when neither cue applies: an unknown
/// class whose contact point is above the horizon or cut by the border, or an aspect mismatch.
pub fn estimate_distance(
    cal: &Calibration,
    box_in_image: &BoxXyxy,
    class_name: &str,
    image_w: u32,
    image_h: u32,
) -> Option<DistanceEstimate> {
    if !(box_in_image.width() > 0.0 && box_in_image.height() > 0.0) {
        return None;
    }
    let scaled;
    let cal = if cal.image_size() == (image_w, image_h) {
        cal
    } else {
        scaled = cal.for_image_size(image_w, image_h).ok()?;
        &scaled
    };
    let observed = Observed::new(cal, box_in_image, image_w, image_h);
    let prior = size_prior(class_name);
    let contact = match prior {
        Some(p) if !p.on_ground => None,
        _ if observed.cut_bottom => None,
        _ => cal.road_point_from_pinhole(observed.bottom_centre.0, observed.bottom_centre.1),
    };
    let m = cal.mounting();
    let half_length_m = prior.map_or(0.0, |p| p.length_m / 2.0);
    let finish = |ahead: f64, right: f64, method, reason: String| DistanceEstimate {
        distance_m: ahead + m.longitudinal_offset_m,
        nearest_m: ahead - half_length_m + m.longitudinal_offset_m,
        lateral_m: right + m.lateral_offset_m,
        method,
        reason,
    };
    let Some(prior) = prior else {
        // Without a size the contact point is all there is: it is the near face, not the centre.
        let (right, ahead) = contact?;
        let reason = format!("ground contact; no size prior for class `{class_name}`");
        return Some(finish(ahead, right, DistanceMethod::GroundContact, reason));
    };
    let fit = fit_distance(cal, &observed, &prior, contact.is_some())?;
    let (method, reason) = explain(
        &observed,
        &prior,
        contact.is_some(),
        fit.ground_share,
        class_name,
    );
    Some(finish(fit.ahead_m, fit.right_m, method, reason))
}

/// The detection in pinhole pixels (edges undistorted at their midpoints) plus border cuts.
struct Observed {
    box_undist: [f64; 4],
    bottom_centre: (f64, f64),
    cut_left: bool,
    cut_right: bool,
    cut_top: bool,
    cut_bottom: bool,
}

impl Observed {
    fn new(cal: &Calibration, b: &BoxXyxy, image_w: u32, image_h: u32) -> Self {
        let (x1, y1, x2, y2) = (b.x1 as f64, b.y1 as f64, b.x2 as f64, b.y2 as f64);
        let (xc, yc) = ((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let left = cal.undistort_pixel(x1, yc).0;
        let right = cal.undistort_pixel(x2, yc).0;
        let top = cal.undistort_pixel(xc, y1).1;
        let bottom_centre = cal.undistort_pixel(xc, y2);
        Self {
            box_undist: [left, top, right, bottom_centre.1],
            bottom_centre,
            cut_left: b.x1 <= BORDER_PX,
            cut_right: b.x2 >= image_w as f32 - 1.0 - BORDER_PX,
            cut_top: b.y1 <= BORDER_PX,
            cut_bottom: b.y2 >= image_h as f32 - 1.0 - BORDER_PX,
        }
    }
}

struct Fit {
    ahead_m: f64,
    right_m: f64,
    /// Share of the information (inverse variance) that came from the ground contact, 0..1.
    ground_share: f64,
}

/// Weighted residuals of the size model at one distance, split by cue (unused ones are 0).
#[derive(Clone, Copy, Default)]
struct Residuals {
    ground: f64,
    size: [f64; 3],
}

impl Residuals {
    fn cost(&self) -> f64 {
        self.ground * self.ground + self.size.iter().map(|r| r * r).sum::<f64>()
    }
}

/// Coarse scan step of the distance search (3 %), refined by golden-section search.
const SCAN_RATIO: f64 = 1.03;

/// Finds the distance whose projected model box best explains the observed one.
fn fit_distance(
    cal: &Calibration,
    obs: &Observed,
    prior: &SizePrior,
    use_ground: bool,
) -> Option<Fit> {
    let model = Model::new(cal, obs, prior, use_ground);
    let (lo, hi) = SEARCH_RANGE_M;
    let steps = ((hi / lo).ln() / SCAN_RATIO.ln()).ceil() as i32;
    let distance_at = |step: i32| lo * SCAN_RATIO.powi(step);
    let cost_at = |z: f64| model.residuals(z).map_or(f64::INFINITY, |r| r.cost());
    let (best_step, best_cost) = (0..=steps)
        .map(|s| (s, cost_at(distance_at(s))))
        .min_by(|a, b| a.1.total_cmp(&b.1))?;
    if !best_cost.is_finite() {
        return None;
    }
    let (mut a, mut b) = (distance_at(best_step - 1), distance_at(best_step + 1));
    let golden = 0.618_033_988_75;
    let (mut c, mut d) = (b - golden * (b - a), a + golden * (b - a));
    let (mut cost_c, mut cost_d) = (cost_at(c), cost_at(d));
    for _ in 0..25 {
        if cost_c < cost_d {
            (b, d, cost_d) = (d, c, cost_c);
            c = b - golden * (b - a);
            cost_c = cost_at(c);
        } else {
            (a, c, cost_c) = (c, d, cost_d);
            d = a + golden * (b - a);
            cost_d = cost_at(d);
        }
    }
    let ahead_m = (a + b) / 2.0;
    Some(Fit {
        ahead_m,
        right_m: model.centre_right_m(ahead_m),
        ground_share: model.ground_share(ahead_m),
    })
}

struct Model<'a> {
    cal: &'a Calibration,
    obs: &'a Observed,
    prior: &'a SizePrior,
    use_ground: bool,
    /// Level-frame x/z and y/z of the ray through the box centre.
    centre_slope: (f64, f64),
    ground_sigma_px: f64,
}

impl<'a> Model<'a> {
    fn new(
        cal: &'a Calibration,
        obs: &'a Observed,
        prior: &'a SizePrior,
        use_ground: bool,
    ) -> Self {
        let [x1, y1, x2, y2] = obs.box_undist;
        let ray = cal.ray_in_level((x1 + x2) / 2.0, (y1 + y2) / 2.0);
        let z = ray[2].max(1e-6);
        Self {
            cal,
            obs,
            prior,
            use_ground,
            centre_slope: (ray[0] / z, ray[1] / z),
            ground_sigma_px: cal.intrinsics().fy * GROUND_SIGMA_DEG.to_radians().tan(),
        }
    }

    /// Lateral position of the object's centre at `ahead_m`, from the box's centre.
    fn centre_right_m(&self, ahead_m: f64) -> f64 {
        self.centre_slope.0 * ahead_m
    }

    /// The model box's pinhole-pixel extent at `ahead_m`; `None` if any corner is behind the camera.
    fn project(&self, ahead_m: f64) -> Option<[f64; 4]> {
        let p = self.prior;
        let right = self.centre_right_m(ahead_m);
        // Objects above the road (signs) have unknown elevation: centre them on the box centre.
        let bottom_y = if p.on_ground {
            self.cal.mounting().height_m
        } else {
            self.centre_slope.1 * ahead_m + p.height_m / 2.0
        };
        let mut extent = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for dx in [-p.width_m / 2.0, p.width_m / 2.0] {
            for dz in [-p.length_m / 2.0, p.length_m / 2.0] {
                for y in [bottom_y, bottom_y - p.height_m] {
                    let (u, v) =
                        self.cal
                            .pinhole_pixel_from_level([right + dx, y, ahead_m + dz])?;
                    extent = [
                        extent[0].min(u),
                        extent[1].min(v),
                        extent[2].max(u),
                        extent[3].max(v),
                    ];
                }
            }
        }
        Some(extent)
    }

    fn residuals(&self, ahead_m: f64) -> Option<Residuals> {
        let [p1, q1, p2, q2] = self.project(ahead_m)?;
        let [x1, y1, x2, y2] = self.obs.box_undist;
        let (obs, prior) = (self.obs, self.prior);
        let fy = self.cal.intrinsics().fy;
        let height_rel_sigma = prior.height_sigma_m / prior.height_m;
        let (h_model, h_obs) = (q2 - q1, y2 - y1);
        let (w_model, w_obs) = (p2 - p1, x2 - x1);
        if h_model <= 0.0 || w_model <= 0.0 {
            return None;
        }
        let mut r = Residuals::default();
        if self.use_ground {
            r.ground = (q2 - y2) / self.ground_sigma_px;
        }
        match (obs.cut_top, obs.cut_bottom) {
            (false, false) => r.size[0] = (h_model / h_obs).ln() / (height_rel_sigma + 1.5 / h_obs),
            (false, true) => {
                // Only the top edge is real: it carries the pitch error and the height spread.
                let sigma = self
                    .ground_sigma_px
                    .hypot(fy * prior.height_sigma_m / ahead_m);
                r.size[0] = (q1 - y1) / sigma;
                r.size[1] = one_sided(q2 - y2, 2.0);
            }
            (true, _) => r.size[0] = one_sided((h_model / h_obs).ln(), 0.05),
        }
        r.size[2] = if obs.cut_left || obs.cut_right {
            one_sided((w_model / w_obs).ln(), 0.05)
        } else {
            (w_model / w_obs).ln() / WIDTH_REL_SIGMA
        };
        Some(r)
    }

    /// The ground contact's share of the Fisher information about the distance at `ahead_m`.
    fn ground_share(&self, ahead_m: f64) -> f64 {
        let step = ahead_m * 1e-3;
        let (Some(a), Some(b)) = (
            self.residuals(ahead_m - step),
            self.residuals(ahead_m + step),
        ) else {
            return 0.0;
        };
        let slope2 = |x: f64, y: f64| ((y - x) / (2.0 * step)).powi(2);
        let ground = slope2(a.ground, b.ground);
        let size: f64 = (0..3).map(|k| slope2(a.size[k], b.size[k])).sum();
        if ground + size > 0.0 {
            ground / (ground + size)
        } else {
            0.0
        }
    }
}

/// A residual that only counts when the model is smaller than a cut (lower-bound) observation.
fn one_sided(shortfall: f64, sigma: f64) -> f64 {
    if shortfall < 0.0 {
        shortfall / sigma
    } else {
        0.0
    }
}

fn explain(
    obs: &Observed,
    prior: &SizePrior,
    has_contact: bool,
    ground_share: f64,
    class_name: &str,
) -> (DistanceMethod, String) {
    let size = format!("{class_name} size prior ({:.2} m tall)", prior.height_m);
    if !has_contact {
        let why = if !prior.on_ground {
            "the class is not on the road"
        } else if obs.cut_bottom {
            "the box is cut by the bottom image border"
        } else {
            "the contact point is at or above the horizon"
        };
        return (DistanceMethod::SizePrior, format!("{size}; {why}"));
    }
    let share = format!("ground contact weight {:.0} %", ground_share * 100.0);
    if ground_share >= 0.75 {
        (
            DistanceMethod::GroundContact,
            format!("{share}, near enough for the contact row to dominate the {size}"),
        )
    } else if ground_share <= 0.25 {
        (
            DistanceMethod::SizePrior,
            format!("{share}: far away, the contact row is too flat to trust; {size}"),
        )
    } else {
        (
            DistanceMethod::Fused,
            format!("{share}, fused with the {size}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::calib::model::tests::kitti_like;

    /// A car-sized box projected by the same model, so the fit must recover the distance.
    fn projected_car(cal: &Calibration, right_m: f64, ahead_m: f64) -> BoxXyxy {
        let p = size_prior("car").unwrap();
        let mut e = [
            f64::INFINITY,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NEG_INFINITY,
        ];
        for dx in [-p.width_m / 2.0, p.width_m / 2.0] {
            for dz in [-p.length_m / 2.0, p.length_m / 2.0] {
                for y in [1.65, 1.65 - p.height_m] {
                    let (u, v) = cal
                        .pinhole_pixel_from_level([right_m + dx, y, ahead_m + dz])
                        .unwrap();
                    e = [e[0].min(u), e[1].min(v), e[2].max(u), e[3].max(v)];
                }
            }
        }
        BoxXyxy::new(e[0] as f32, e[1] as f32, e[2] as f32, e[3] as f32)
    }

    #[test]
    fn recovers_the_distance_of_a_prior_sized_car() {
        let cal = kitti_like();
        for (right, ahead) in [(0.0, 8.0), (-3.5, 20.0), (3.0, 45.0)] {
            let b = projected_car(&cal, right, ahead);
            let est = estimate_distance(&cal, &b, "car", 1242, 375).unwrap();
            assert!(
                (est.distance_m - ahead).abs() / ahead < 0.02,
                "{ahead}: {est:?}"
            );
            assert!((est.lateral_m - right).abs() < 0.3, "{right}: {est:?}");
        }
    }

    #[test]
    fn near_objects_trust_the_contact_far_ones_the_size() {
        let cal = kitti_like();
        let near =
            estimate_distance(&cal, &projected_car(&cal, 0.0, 10.0), "car", 1242, 375).unwrap();
        assert_ne!(near.method, DistanceMethod::SizePrior, "{near:?}");
        let far =
            estimate_distance(&cal, &projected_car(&cal, 0.0, 80.0), "car", 1242, 375).unwrap();
        assert_eq!(far.method, DistanceMethod::SizePrior, "{far:?}");
    }

    #[test]
    fn contact_above_the_horizon_falls_back_to_the_size_prior() {
        let cal = kitti_like();
        // A 1.72 m person whose feet appear above the horizon (e.g. on a hill): 100 px tall.
        let b = BoxXyxy::new(600.0, 60.0, 640.0, 160.0);
        let est = estimate_distance(&cal, &b, "person", 1242, 375).unwrap();
        assert_eq!(est.method, DistanceMethod::SizePrior);
        assert!(est.reason.contains("horizon"), "{}", est.reason);
        assert!(
            (est.distance_m - 721.5 * 1.72 / 100.0).abs() < 1.5,
            "{est:?}"
        );
        assert!(estimate_distance(&cal, &b, "fire hydrant", 1242, 375).is_none());
    }

    #[test]
    fn box_cut_by_the_bottom_border_uses_the_size_prior() {
        let cal = kitti_like();
        let b = BoxXyxy::new(700.0, 150.0, 900.0, 374.0);
        let est = estimate_distance(&cal, &b, "cyclist", 1242, 375).unwrap();
        assert_eq!(est.method, DistanceMethod::SizePrior);
        assert!(est.reason.contains("bottom"), "{}", est.reason);
        // The image's bottom row meets the road at 721.5·1.65/202 ≈ 5.9 m: the object is nearer.
        assert!(est.distance_m < 7.5, "{est:?}");
        assert!(estimate_distance(&cal, &b, "fire hydrant", 1242, 375).is_none());
    }

    #[test]
    fn unknown_class_uses_ground_contact_and_scaled_frames_agree() {
        let cal = kitti_like();
        let b = BoxXyxy::new(600.0, 150.0, 620.0, 172.854 + 50.0);
        let est = estimate_distance(&cal, &b, "fire hydrant", 1242, 375).unwrap();
        assert_eq!(est.method, DistanceMethod::GroundContact);
        assert!(
            (est.distance_m - 721.5377 * 1.65 / 50.0).abs() < 1e-3,
            "{est:?}"
        );
        let car = projected_car(&cal, 1.0, 15.0);
        let full = estimate_distance(&cal, &car, "car", 1242, 375).unwrap();
        let half_box = BoxXyxy::new(car.x1 / 2.0, car.y1 / 2.0, car.x2 / 2.0, car.y2 / 2.0);
        let half = estimate_distance(&cal, &half_box, "car", 621, 188).unwrap();
        assert!(
            (full.distance_m - half.distance_m).abs() < 0.3,
            "{full:?} {half:?}"
        );
        assert!(estimate_distance(&cal, &car, "car", 640, 480).is_none());
    }

    #[test]
    fn method_serialises_in_snake_case() {
        let json = serde_json::to_string(&DistanceMethod::GroundContact).unwrap();
        assert_eq!(json, "\"ground_contact\"");
    }
}
