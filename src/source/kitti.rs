//! KITTI raw folders (`image_02/data/NNNNNNNNNN.png` + `image_02/timestamps.txt`) replayed
//! with their recorded times: `pts_ns` is each frame's timestamp relative to the first.
//! Frames are read by [`ImageSequence`], into the pipeline's pooled buffers.
//!
//! The camera-to-camera calibration (`calib_cam_to_cam.txt`) sits beside the drive folder in
//! the official layout (`2011_09_26/calib_cam_to_cam.txt`), or inside it in hand-made copies.

use std::path::{Path, PathBuf};

use super::images::ImageSequence;
use super::spec::{extension_lowercase, read_dir_sorted};
use super::SourceError;
use crate::civil::parse_datetime_ns;

/// KITTI raw is recorded at about 10 Hz; used when timestamps are unusable.
const KITTI_NOMINAL_FPS: f64 = 10.0;

/// Opens `dir` (holding `image_02/`) as an image sequence timed by its timestamps.
pub fn open_kitti_raw(dir: &Path) -> Result<ImageSequence, SourceError> {
    let camera_dir = dir.join("image_02");
    let paths = png_frames(&camera_dir.join("data"))?;
    if paths.is_empty() {
        return Err(SourceError::Kitti {
            path: dir.to_path_buf(),
            reason: "image_02/data holds no .png frames".into(),
        });
    }
    let timestamps_path = camera_dir.join("timestamps.txt");
    let pts_ns = match read_timestamps(&timestamps_path, paths.len()) {
        Ok(pts) => pts,
        Err(reason) => {
            // Frames without usable times still replay, at KITTI's nominal rate.
            tracing::warn!(
                "{}: {reason}; replaying at {KITTI_NOMINAL_FPS} fps",
                timestamps_path.display()
            );
            let step = 1e9 / KITTI_NOMINAL_FPS;
            (0..paths.len()).map(|i| (i as f64 * step) as i64).collect()
        }
    };
    let nominal_fps = nominal_fps(&pts_ns);
    let what = format!("KITTI raw {}", dir.display());
    Ok(ImageSequence::with_pts(paths, pts_ns, nominal_fps, &what)?
        .with_calibration(find_calibration(dir)))
}

fn png_frames(data_dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
    let mut paths = read_dir_sorted(data_dir)?;
    paths.retain(|p| p.is_file() && extension_lowercase(p).as_deref() == Some("png"));
    Ok(paths)
}

/// One timestamp per frame, relative to the first, in ns.
fn read_timestamps(path: &Path, frame_count: usize) -> Result<Vec<i64>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let absolute = parse_timestamps(&text)?;
    if absolute.len() < frame_count {
        return Err(format!(
            "{} timestamps for {frame_count} frames",
            absolute.len()
        ));
    }
    let first = absolute[0];
    Ok(absolute[..frame_count].iter().map(|t| t - first).collect())
}

/// Parses `2011-09-26 13:02:25.964389445` lines (blank lines ignored) to Unix ns.
pub fn parse_timestamps(text: &str) -> Result<Vec<i64>, String> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            parse_datetime_ns(line)
                .ok_or_else(|| format!("line {}: `{}` is not a timestamp", i + 1, line.trim()))
        })
        .collect()
}

fn nominal_fps(pts_ns: &[i64]) -> f64 {
    match (pts_ns.first(), pts_ns.last()) {
        (Some(first), Some(last)) if pts_ns.len() > 1 && last > first => {
            (pts_ns.len() - 1) as f64 * 1e9 / (last - first) as f64
        }
        _ => KITTI_NOMINAL_FPS,
    }
}

/// `calib_cam_to_cam.txt` in the folder or its parent.
fn find_calibration(dir: &Path) -> Option<PathBuf> {
    let name = "calib_cam_to_cam.txt";
    std::iter::once(dir)
        .chain(dir.parent())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_and_bad_lines_name_the_line() {
        let text = "2011-09-26 13:02:25.964389445\n2011-09-26 13:02:26.074465084\n\n";
        let ts = parse_timestamps(text).unwrap();
        assert_eq!(ts[1] - ts[0], 110_075_639);
        let err = parse_timestamps("2011-09-26 13:02:25.9\nbroken\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn nominal_rate_comes_from_the_span() {
        assert!((nominal_fps(&[0, 100_000_000, 200_000_000]) - 10.0).abs() < 1e-9);
        assert_eq!(nominal_fps(&[0]), KITTI_NOMINAL_FPS);
    }
}
