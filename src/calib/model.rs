//! The validated camera model: pinhole intrinsics, lens distortion and mounting on the car.
//!
//! Frames: *camera* is x right, y down, z along the optical axis; *level* has its origin at
//! the camera centre too but is rotated so that y points straight down and z straight ahead
//! along the road (the road is the plane `y = height_m`). `camera_from_level` applies yaw, then
//! pitch, then roll. Pixels named `_undist` are pinhole pixels (distortion removed).

use super::CalibError;

/// Pinhole intrinsics in pixels of the calibration's image size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Intrinsics {
    pub fx: f64,
    pub fy: f64,
    pub cx: f64,
    pub cy: f64,
}

/// Lens distortion, on normalised image coordinates (x/z, y/z), so independent of resolution.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distortion {
    None,
    /// OpenCV's / ROS `plumb_bob` radial-tangential model.
    RadialTangential {
        k1: f64,
        k2: f64,
        p1: f64,
        p2: f64,
        k3: f64,
    },
    /// OpenCV's fisheye (ROS `equidistant`) model on the angle θ from the optical axis.
    Fisheye {
        k1: f64,
        k2: f64,
        k3: f64,
        k4: f64,
    },
}

/// Where the camera sits on the vehicle and how it is tilted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Mounting {
    /// Height of the camera centre above the road, metres.
    pub height_m: f64,
    /// Downward tilt of the optical axis, degrees (positive = looking down at the road).
    pub pitch_deg: f64,
    /// Rotation about the optical axis, degrees (positive = camera turned clockwise seen from behind).
    pub roll_deg: f64,
    /// Rotation about the vertical, degrees (positive = camera looking to the right of straight ahead).
    pub yaw_deg: f64,
    /// Camera position right of the vehicle's reference point, metres (added to lateral offsets).
    pub lateral_offset_m: f64,
    /// Camera position ahead of the vehicle's reference point, metres (added to distances).
    pub longitudinal_offset_m: f64,
}

impl Mounting {
    /// A level camera at `height_m` above the road on the vehicle's reference point.
    pub fn level(height_m: f64) -> Self {
        Self {
            height_m,
            pitch_deg: 0.0,
            roll_deg: 0.0,
            yaw_deg: 0.0,
            lateral_offset_m: 0.0,
            longitudinal_offset_m: 0.0,
        }
    }
}

/// A validated camera: image size, intrinsics, distortion, mounting. One type for every source
/// format; build it with [`Calibration::new`] or [`Calibration::load`].
#[derive(Debug, Clone, PartialEq)]
pub struct Calibration {
    origin: String,
    name: String,
    image_width: u32,
    image_height: u32,
    intrinsics: Intrinsics,
    distortion: Distortion,
    mounting: Mounting,
    mounting_assumed: bool,
    camera_from_level: [[f64; 3]; 3],
}

impl Calibration {
    /// Validates every field; `origin` (a path or description) names the source in errors.
    pub fn new(
        origin: &str,
        name: &str,
        image_size: (u32, u32),
        intrinsics: Intrinsics,
        distortion: Distortion,
        mounting: Mounting,
    ) -> Result<Self, CalibError> {
        let (image_width, image_height) = image_size;
        let check = Checker { origin };
        check.positive_size("image.width", image_width)?;
        check.positive_size("image.height", image_height)?;
        check.positive("intrinsics.fx", intrinsics.fx)?;
        check.positive("intrinsics.fy", intrinsics.fy)?;
        check.within("intrinsics.cx", intrinsics.cx, 0.0, image_width as f64)?;
        check.within("intrinsics.cy", intrinsics.cy, 0.0, image_height as f64)?;
        for (field, value) in distortion_fields(&distortion) {
            check.within(&format!("distortion.{field}"), value, -100.0, 100.0)?;
        }
        check.positive("mounting.height_m", mounting.height_m)?;
        check.within("mounting.pitch_deg", mounting.pitch_deg, -45.0, 45.0)?;
        check.within("mounting.roll_deg", mounting.roll_deg, -45.0, 45.0)?;
        check.within("mounting.yaw_deg", mounting.yaw_deg, -90.0, 90.0)?;
        check.within(
            "mounting.lateral_offset_m",
            mounting.lateral_offset_m,
            -50.0,
            50.0,
        )?;
        check.within(
            "mounting.longitudinal_offset_m",
            mounting.longitudinal_offset_m,
            -50.0,
            50.0,
        )?;
        Ok(Self {
            origin: origin.to_string(),
            name: name.to_string(),
            image_width,
            image_height,
            intrinsics,
            distortion,
            mounting,
            mounting_assumed: false,
            camera_from_level: rotation_camera_from_level(&mounting),
        })
    }

    /// Marks the mounting as a default the source file did not state (shown by `calib show`).
    pub(crate) fn with_assumed_mounting(mut self) -> Self {
        self.mounting_assumed = true;
        self
    }

    /// True when the source had no mounting and a default was used; pass
    /// `--camera-height`/`--camera-pitch` (or write a TOML file) to set it.
    pub fn mounting_is_assumed(&self) -> bool {
        self.mounting_assumed
    }

    /// The same camera with the mounting height and/or pitch replaced (e.g. from the command line).
    pub fn with_mounting_override(
        self,
        height_m: Option<f64>,
        pitch_deg: Option<f64>,
    ) -> Result<Self, CalibError> {
        if height_m.is_none() && pitch_deg.is_none() {
            return Ok(self);
        }
        let mut mounting = self.mounting;
        if let Some(h) = height_m {
            mounting.height_m = h;
        }
        if let Some(p) = pitch_deg {
            mounting.pitch_deg = p;
        }
        let origin = format!("{} (with --camera-height/--camera-pitch)", self.origin);
        let mut out = Self::new(
            &origin,
            &self.name,
            self.image_size(),
            self.intrinsics,
            self.distortion,
            mounting,
        )?;
        out.mounting_assumed = self.mounting_assumed && height_m.is_none();
        Ok(out)
    }

    /// The camera as seen by a stream of `width`×`height`: intrinsics scaled, distortion and
    /// mounting unchanged. A different aspect ratio (beyond rounding) is an error.
    pub fn for_image_size(&self, width: u32, height: u32) -> Result<Calibration, CalibError> {
        if (width, height) == self.image_size() {
            return Ok(self.clone());
        }
        let sx = width as f64 / self.image_width as f64;
        let sy = height as f64 / self.image_height as f64;
        // One pixel of rounding on either side is tolerated (e.g. 1242x375 → 621x188).
        let tolerance = 1.0 / (height.min(width).max(1) as f64) + 1.0 / self.image_height as f64;
        if width == 0 || height == 0 || (sx / sy - 1.0).abs() > tolerance {
            return Err(CalibError::AspectMismatch {
                origin: self.origin.clone(),
                cal_width: self.image_width,
                cal_height: self.image_height,
                width,
                height,
            });
        }
        // Scale about pixel centres: pixel i covers [i, i+1) and its centre is i + 0.5.
        let i = self.intrinsics;
        let scaled = Intrinsics {
            fx: i.fx * sx,
            fy: i.fy * sy,
            cx: (i.cx + 0.5) * sx - 0.5,
            cy: (i.cy + 0.5) * sy - 0.5,
        };
        let origin = format!("{} (scaled to {width}x{height})", self.origin);
        let mut out = Self::new(
            &origin,
            &self.name,
            (width, height),
            scaled,
            self.distortion,
            self.mounting,
        )?;
        out.mounting_assumed = self.mounting_assumed;
        Ok(out)
    }

    /// The pinhole camera an undistorted frame ([`super::undistort::RemapTable`]) is seen
    /// through: the same intrinsics and mounting, no lens distortion.
    pub fn without_distortion(&self) -> Calibration {
        let mut out = self.clone();
        out.distortion = Distortion::None;
        out.origin = format!("{} (undistorted)", self.origin);
        out
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn image_size(&self) -> (u32, u32) {
        (self.image_width, self.image_height)
    }

    pub fn intrinsics(&self) -> Intrinsics {
        self.intrinsics
    }

    pub fn distortion(&self) -> Distortion {
        self.distortion
    }

    pub fn mounting(&self) -> Mounting {
        self.mounting
    }

    /// Pixel → normalised pinhole coordinates (x/z, y/z), distortion removed.
    pub fn normalized_from_pixel(&self, u: f64, v: f64) -> (f64, f64) {
        let i = &self.intrinsics;
        let (xd, yd) = ((u - i.cx) / i.fx, (v - i.cy) / i.fy);
        self.distortion.undistort(xd, yd)
    }

    /// Normalised pinhole coordinates → (distorted) pixel.
    pub fn pixel_from_normalized(&self, x: f64, y: f64) -> (f64, f64) {
        let (xd, yd) = self.distortion.distort(x, y);
        let i = &self.intrinsics;
        (i.fx * xd + i.cx, i.fy * yd + i.cy)
    }

    /// Pixel → pinhole pixel (distortion removed), same intrinsics.
    pub fn undistort_pixel(&self, u: f64, v: f64) -> (f64, f64) {
        let (x, y) = self.normalized_from_pixel(u, v);
        let i = &self.intrinsics;
        (i.fx * x + i.cx, i.fy * y + i.cy)
    }

    /// The viewing ray through pinhole pixel `(u_undist, v_undist)`, in the level frame.
    pub fn ray_in_level(&self, u_undist: f64, v_undist: f64) -> [f64; 3] {
        let i = &self.intrinsics;
        let ray_in_camera = [(u_undist - i.cx) / i.fx, (v_undist - i.cy) / i.fy, 1.0];
        mat_t_vec(&self.camera_from_level, ray_in_camera)
    }

    /// A level-frame point → pinhole pixel; `None` behind (or nearly at) the camera plane.
    pub fn pinhole_pixel_from_level(&self, point_in_level: [f64; 3]) -> Option<(f64, f64)> {
        let p = mat_vec(&self.camera_from_level, point_in_level);
        if p[2] < 1e-3 {
            return None;
        }
        let i = &self.intrinsics;
        Some((i.fx * p[0] / p[2] + i.cx, i.fy * p[1] / p[2] + i.cy))
    }

    /// A level-frame point → pixel of the (distorted) image; `None` behind the camera.
    pub fn pixel_from_level(&self, point_in_level: [f64; 3]) -> Option<(f64, f64)> {
        let (u, v) = self.pinhole_pixel_from_level(point_in_level)?;
        Some(self.distort_pixel(u, v))
    }

    /// Pinhole pixel → pixel of the (distorted) image, same intrinsics.
    pub fn distort_pixel(&self, u_undist: f64, v_undist: f64) -> (f64, f64) {
        let i = &self.intrinsics;
        self.pixel_from_normalized((u_undist - i.cx) / i.fx, (v_undist - i.cy) / i.fy)
    }

    /// Where the ray through pinhole pixel `(u_undist, v_undist)` meets the road, as
    /// (right, ahead) metres from the camera's foot point; `None` at or above the horizon.
    pub fn road_point_from_pinhole(&self, u_undist: f64, v_undist: f64) -> Option<(f64, f64)> {
        let ray = self.ray_in_level(u_undist, v_undist);
        // A ray that drops less than 1 mm per metre meets the road beyond any useful range.
        if ray[1] <= 1e-3 * ray[2].abs().max(1e-9) || ray[2] <= 0.0 {
            return None;
        }
        let t = self.mounting.height_m / ray[1];
        Some((t * ray[0], t * ray[2]))
    }

    /// The row where the horizon (the image of level directions) crosses the principal column,
    /// in pinhole pixels.
    pub fn horizon_row(&self) -> f64 {
        // The horizon holds rays perpendicular to "down"; `down` is level y in camera coordinates.
        let down_in_camera = mat_vec(&self.camera_from_level, [0.0, 1.0, 0.0]);
        let i = &self.intrinsics;
        i.cy - i.fy * down_in_camera[2] / down_in_camera[1]
    }

    /// Horizontal and vertical fields of view in degrees, edge to edge through the principal
    /// point, distortion included.
    pub fn fov_deg(&self) -> (f64, f64) {
        let (w, h) = (self.image_width as f64, self.image_height as f64);
        let i = self.intrinsics;
        let (left, _) = self.normalized_from_pixel(0.0, i.cy);
        let (right, _) = self.normalized_from_pixel(w, i.cy);
        let (_, top) = self.normalized_from_pixel(i.cx, 0.0);
        let (_, bottom) = self.normalized_from_pixel(i.cx, h);
        let span = |a: f64, b: f64| (b.atan() - a.atan()).to_degrees();
        (span(left, right), span(top, bottom))
    }
}

impl Distortion {
    /// Undistorted normalised coordinates → distorted ones (the lens's forward model).
    pub fn distort(&self, x: f64, y: f64) -> (f64, f64) {
        match *self {
            Distortion::None => (x, y),
            Distortion::RadialTangential { k1, k2, p1, p2, k3 } => {
                let r2 = x * x + y * y;
                let radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3));
                (
                    x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x),
                    y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y,
                )
            }
            Distortion::Fisheye { k1, k2, k3, k4 } => {
                let r = (x * x + y * y).sqrt();
                if r < 1e-12 {
                    return (x, y);
                }
                let theta = r.atan();
                let t2 = theta * theta;
                let theta_d = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))));
                (x * theta_d / r, y * theta_d / r)
            }
        }
    }

    /// Distorted normalised coordinates → undistorted, by iteration (no closed form exists).
    pub fn undistort(&self, xd: f64, yd: f64) -> (f64, f64) {
        match *self {
            Distortion::None => (xd, yd),
            Distortion::RadialTangential { k1, k2, p1, p2, k3 } => {
                // Fixed-point iteration as in OpenCV's undistortPoints; converges for real lenses.
                let (mut x, mut y) = (xd, yd);
                for _ in 0..20 {
                    let r2 = x * x + y * y;
                    let radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3));
                    let dx = 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x);
                    let dy = p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y;
                    if radial.abs() < 1e-9 {
                        break;
                    }
                    x = (xd - dx) / radial;
                    y = (yd - dy) / radial;
                }
                (x, y)
            }
            Distortion::Fisheye { k1, k2, k3, k4 } => {
                let theta_d = (xd * xd + yd * yd).sqrt();
                if theta_d < 1e-12 {
                    return (xd, yd);
                }
                // Newton on θ(1 + k1θ² + k2θ⁴ + k3θ⁶ + k4θ⁸) = θ_d.
                let mut theta = theta_d.min(1.5);
                for _ in 0..20 {
                    let t2 = theta * theta;
                    let f = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4)))) - theta_d;
                    let df =
                        1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + t2 * 9.0 * k4)));
                    if df.abs() < 1e-12 {
                        break;
                    }
                    theta = (theta - f / df).clamp(0.0, 1.57);
                }
                let r = theta.tan();
                (xd * r / theta_d, yd * r / theta_d)
            }
        }
    }

    /// The model's name in lookout's TOML (`none`, `radial_tangential`, `fisheye`).
    pub fn model_name(&self) -> &'static str {
        match self {
            Distortion::None => "none",
            Distortion::RadialTangential { .. } => "radial_tangential",
            Distortion::Fisheye { .. } => "fisheye",
        }
    }
}

/// The distortion's coefficients by TOML field name.
pub(crate) fn distortion_fields(distortion: &Distortion) -> Vec<(&'static str, f64)> {
    match *distortion {
        Distortion::None => vec![],
        Distortion::RadialTangential { k1, k2, p1, p2, k3 } => {
            vec![("k1", k1), ("k2", k2), ("p1", p1), ("p2", p2), ("k3", k3)]
        }
        Distortion::Fisheye { k1, k2, k3, k4 } => {
            vec![("k1", k1), ("k2", k2), ("k3", k3), ("k4", k4)]
        }
    }
}

/// Field checks that turn a bad value into an error naming the field.
struct Checker<'a> {
    origin: &'a str,
}

impl Checker<'_> {
    fn invalid(&self, field: &str, value: String, reason: &str) -> CalibError {
        CalibError::InvalidField {
            origin: self.origin.to_string(),
            field: field.to_string(),
            value,
            reason: reason.to_string(),
        }
    }

    fn positive_size(&self, field: &str, value: u32) -> Result<(), CalibError> {
        if value == 0 {
            return Err(self.invalid(field, "0".into(), "must be a positive number of pixels"));
        }
        Ok(())
    }

    fn positive(&self, field: &str, value: f64) -> Result<(), CalibError> {
        if !value.is_finite() || value <= 0.0 {
            return Err(self.invalid(field, value.to_string(), "must be a finite number > 0"));
        }
        Ok(())
    }

    fn within(&self, field: &str, value: f64, lo: f64, hi: f64) -> Result<(), CalibError> {
        if !value.is_finite() {
            return Err(self.invalid(field, value.to_string(), "must be a finite number"));
        }
        if value < lo || value > hi {
            return Err(self.invalid(
                field,
                value.to_string(),
                &format!("must lie in [{lo}, {hi}]"),
            ));
        }
        Ok(())
    }
}

/// Yaw about level y, then pitch about x, then roll about the optical axis.
fn rotation_camera_from_level(m: &Mounting) -> [[f64; 3]; 3] {
    let (sy, cy) = m.yaw_deg.to_radians().sin_cos();
    let (sp, cp) = m.pitch_deg.to_radians().sin_cos();
    let (sr, cr) = m.roll_deg.to_radians().sin_cos();
    // Yaw right: straight ahead appears left of centre (x' = cos·x − sin·z).
    let yaw = [[cy, 0.0, -sy], [0.0, 1.0, 0.0], [sy, 0.0, cy]];
    // Pitch down: straight ahead appears above centre (y' = cos·y − sin·z).
    let pitch = [[1.0, 0.0, 0.0], [0.0, cp, -sp], [0.0, sp, cp]];
    // Roll clockwise: the scene turns anticlockwise in the image.
    let roll = [[cr, sr, 0.0], [-sr, cr, 0.0], [0.0, 0.0, 1.0]];
    mat_mul(&roll, &mat_mul(&pitch, &yaw))
}

fn mat_mul(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut out = [[0.0; 3]; 3];
    for (r, row) in out.iter_mut().enumerate() {
        for (c, cell) in row.iter_mut().enumerate() {
            *cell = (0..3).map(|k| a[r][k] * b[k][c]).sum();
        }
    }
    out
}

fn mat_vec(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|r| m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2])
}

fn mat_t_vec(m: &[[f64; 3]; 3], v: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|c| m[0][c] * v[0] + m[1][c] * v[1] + m[2][c] * v[2])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn kitti_like() -> Calibration {
        Calibration::new(
            "test",
            "kitti-like",
            (1242, 375),
            Intrinsics {
                fx: 721.5377,
                fy: 721.5377,
                cx: 609.5593,
                cy: 172.854,
            },
            Distortion::None,
            Mounting::level(1.65),
        )
        .unwrap()
    }

    #[test]
    fn level_camera_horizon_is_principal_row_and_pitch_moves_it_up() {
        let cal = kitti_like();
        assert!((cal.horizon_row() - 172.854).abs() < 1e-9);
        let pitched = cal.with_mounting_override(None, Some(2.0)).unwrap();
        let expected = 172.854 - 721.5377 * 2f64.to_radians().tan();
        assert!((pitched.horizon_row() - expected).abs() < 1e-6);
    }

    #[test]
    fn road_point_of_a_row_below_the_horizon_matches_flat_ground_formula() {
        let cal = kitti_like();
        let (right, ahead) = cal
            .road_point_from_pinhole(609.5593, 172.854 + 50.0)
            .unwrap();
        assert!(right.abs() < 1e-9);
        assert!((ahead - 721.5377 * 1.65 / 50.0).abs() < 1e-9);
        assert!(cal.road_point_from_pinhole(600.0, 150.0).is_none());
    }

    #[test]
    fn pitched_camera_projects_and_back_projects_consistently() {
        let cal = kitti_like()
            .with_mounting_override(Some(1.3), Some(3.0))
            .unwrap();
        let point = [1.5, 1.3, 20.0];
        let (u, v) = cal.pinhole_pixel_from_level(point).unwrap();
        let (right, ahead) = cal.road_point_from_pinhole(u, v).unwrap();
        assert!((right - 1.5).abs() < 1e-9 && (ahead - 20.0).abs() < 1e-9);
    }

    #[test]
    fn distortion_round_trips() {
        let models = [
            Distortion::RadialTangential {
                k1: -0.28,
                k2: 0.07,
                p1: 0.0002,
                p2: -0.0001,
                k3: 0.0,
            },
            Distortion::Fisheye {
                k1: 0.05,
                k2: -0.01,
                k3: 0.002,
                k4: -0.0005,
            },
        ];
        for d in models {
            for (x, y) in [(0.3, -0.2), (-0.5, 0.25), (0.01, 0.0)] {
                let (xd, yd) = d.distort(x, y);
                let (xu, yu) = d.undistort(xd, yd);
                assert!(
                    (xu - x).abs() < 1e-7 && (yu - y).abs() < 1e-7,
                    "{d:?} {x} {y}"
                );
            }
        }
    }

    #[test]
    fn scaling_keeps_the_field_of_view_and_rejects_other_aspect_ratios() {
        let cal = kitti_like();
        let half = cal.for_image_size(621, 188).unwrap();
        let (h0, v0) = cal.fov_deg();
        let (h1, v1) = half.fov_deg();
        assert!(
            (h0 - h1).abs() < 0.3 && (v0 - v1).abs() < 0.3,
            "{h0} {h1} {v0} {v1}"
        );
        assert!((half.intrinsics().fx - 721.5377 / 2.0).abs() < 1e-9);
        let err = cal.for_image_size(640, 480).unwrap_err();
        assert!(matches!(err, CalibError::AspectMismatch { .. }), "{err}");
    }

    #[test]
    fn negative_focal_length_and_nan_name_the_field() {
        let mut i = kitti_like().intrinsics();
        i.fx = -700.0;
        let err = Calibration::new(
            "x.toml",
            "",
            (1242, 375),
            i,
            Distortion::None,
            Mounting::level(1.0),
        )
        .unwrap_err();
        assert!(err.to_string().contains("intrinsics.fx"), "{err}");
        let err = kitti_like()
            .with_mounting_override(Some(f64::NAN), None)
            .unwrap_err();
        assert!(err.to_string().contains("mounting.height_m"), "{err}");
    }
}
