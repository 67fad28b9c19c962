//! The constant-velocity Kalman filter of SORT and ByteTrack, on a box's centre, aspect ratio
//! and height: state `(cx, cy, a, h, vcx, vcy, va, vh)`, measurement `(cx, cy, a, h)` in image
//! pixels (`a` = width / height).
//!
//! Time steps are in units of the source's frame interval (`dt = 1` for the next frame,
//! `2` after a dropped one), and the noise is scaled by the box height, as in ByteTrack:
//! position noise 1/20 of the height per step, velocity noise 1/160.

use nalgebra::{SMatrix, SVector};

use crate::types::BoxXyxy;

pub type StateVector = SVector<f64, 8>;
pub type StateCovariance = SMatrix<f64, 8, 8>;
type Measurement = SVector<f64, 4>;

const STD_WEIGHT_POSITION: f64 = 1.0 / 20.0;
const STD_WEIGHT_VELOCITY: f64 = 1.0 / 160.0;

/// One track's belief: the mean state and its covariance.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxBelief {
    pub mean: StateVector,
    pub covariance: StateCovariance,
}

/// A box as the filter measures it: centre x, centre y, aspect (w / h), height.
pub fn xyah_from_box(b: &BoxXyxy) -> Measurement {
    let (w, h) = (b.width() as f64, b.height().max(1e-3) as f64);
    Measurement::new(
        (b.x1 as f64 + b.x2 as f64) / 2.0,
        (b.y1 as f64 + b.y2 as f64) / 2.0,
        w / h,
        h,
    )
}

impl BoxBelief {
    /// A new track at `b`, not moving, with ByteTrack's initial uncertainty.
    pub fn new(b: &BoxXyxy) -> Self {
        let z = xyah_from_box(b);
        let h = z[3];
        let mut mean = StateVector::zeros();
        mean.fixed_rows_mut::<4>(0).copy_from(&z);
        let std = [
            2.0 * STD_WEIGHT_POSITION * h,
            2.0 * STD_WEIGHT_POSITION * h,
            1e-2,
            2.0 * STD_WEIGHT_POSITION * h,
            10.0 * STD_WEIGHT_VELOCITY * h,
            10.0 * STD_WEIGHT_VELOCITY * h,
            1e-5,
            10.0 * STD_WEIGHT_VELOCITY * h,
        ];
        let covariance =
            StateCovariance::from_diagonal(&StateVector::from_fn(|i, _| std[i] * std[i]));
        Self { mean, covariance }
    }

    /// The box the mean describes.
    pub fn to_box(&self) -> BoxXyxy {
        let (cx, cy, a, h) = (self.mean[0], self.mean[1], self.mean[2], self.mean[3]);
        let w = a * h;
        BoxXyxy::from_center(cx as f32, cy as f32, w as f32, h as f32)
    }

    /// Moves the belief on by `dt` frame intervals (constant velocity; the process noise of
    /// one step per interval).
    pub fn predict(&mut self, dt: f64) {
        if dt <= 0.0 {
            return;
        }
        let h = self.mean[3];
        let (p, v) = (STD_WEIGHT_POSITION * h, STD_WEIGHT_VELOCITY * h);
        let std = [p, p, 1e-2, p, v, v, 1e-5, v];
        let motion = motion_matrix(dt);
        let noise =
            StateCovariance::from_diagonal(&StateVector::from_fn(|i, _| std[i] * std[i] * dt));
        self.mean = motion * self.mean;
        self.covariance = motion * self.covariance * motion.transpose() + noise;
    }

    /// Corrects the belief with a measured box. A singular innovation (a degenerate box)
    /// leaves the belief as it is.
    pub fn update(&mut self, b: &BoxXyxy) {
        let z = xyah_from_box(b);
        let h = self.mean[3];
        let p = STD_WEIGHT_POSITION * h;
        let std = [p, p, 1e-1, p];
        let measurement_noise =
            SMatrix::<f64, 4, 4>::from_diagonal(&Measurement::from_fn(|i, _| std[i] * std[i]));
        // H = [I 0]: the projection is the covariance's top-left block and top rows.
        let projected_mean = self.mean.fixed_rows::<4>(0).into_owned();
        let projected_cov = self.covariance.fixed_view::<4, 4>(0, 0) + measurement_noise;
        let cross = self.covariance.fixed_view::<8, 4>(0, 0).into_owned(); // P Hᵀ
        let Some(cholesky) = projected_cov.cholesky() else {
            return;
        };
        // K = P Hᵀ S⁻¹, solved as S Kᵀ = (P Hᵀ)ᵀ.
        let gain = cholesky.solve(&cross.transpose()).transpose();
        let innovation = z - projected_mean;
        self.mean += gain * innovation;
        self.covariance -= gain * projected_cov * gain.transpose();
    }

    /// Stops the height changing (a lost track's boxes should not grow or shrink away).
    pub fn freeze_height_velocity(&mut self) {
        self.mean[7] = 0.0;
    }
}

fn motion_matrix(dt: f64) -> StateCovariance {
    let mut f = StateCovariance::identity();
    for i in 0..4 {
        f[(i, i + 4)] = dt;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_belief_sits_on_its_box() {
        let b = BoxXyxy::new(100.0, 50.0, 140.0, 130.0);
        let belief = BoxBelief::new(&b);
        let back = belief.to_box();
        assert!((back.x1 - 100.0).abs() < 1e-3 && (back.y2 - 130.0).abs() < 1e-3);
    }

    #[test]
    fn a_steadily_moving_box_is_predicted_ahead() {
        let mut belief = BoxBelief::new(&BoxXyxy::new(0.0, 0.0, 40.0, 80.0));
        for step in 1..=20 {
            belief.predict(1.0);
            let x = 5.0 * step as f32;
            belief.update(&BoxXyxy::new(x, 0.0, x + 40.0, 80.0));
        }
        belief.predict(2.0);
        // Two intervals on at 5 px per interval: centre at 20 + 100 + 10.
        let cx = belief.mean[0];
        assert!((cx - 130.0).abs() < 1.0, "{cx}");
        assert!((belief.mean[4] - 5.0).abs() < 0.2, "{}", belief.mean[4]);
    }

    #[test]
    fn predicting_grows_the_uncertainty_and_updating_shrinks_it() {
        let b = BoxXyxy::new(0.0, 0.0, 40.0, 80.0);
        let mut belief = BoxBelief::new(&b);
        let start = belief.covariance[(0, 0)];
        belief.predict(1.0);
        let predicted = belief.covariance[(0, 0)];
        belief.update(&b);
        assert!(predicted > start && belief.covariance[(0, 0)] < predicted);
    }
}
