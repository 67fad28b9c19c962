//! Camera calibration: intrinsics, distortion and mounting, and box → distance.
