//! Integration tests: calib.
