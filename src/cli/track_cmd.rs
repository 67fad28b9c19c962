//! `lookout track`: tracks the boxes of a MOTChallenge detection file offline, without a
//! detector or images, so that the tracker can be compared with others on the same
//! detections (MOT17's public detections, or any detector's output).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use super::args::{TrackerArgs, TracksOutArgs};
use crate::track::TrackInput;
use crate::trackfile::{self, TrackWriter};

#[derive(Debug, Clone, clap::Args)]
pub struct TrackArgs {
    /// MOTChallenge detections: `frame,-1,x,y,w,h,score,...`, frames from 1.
    #[arg(long, value_name = "FILE")]
    pub detections: PathBuf,

    /// The frame rate of the sequence (frame n is at n / fps seconds).
    #[arg(long, default_value_t = 30.0, value_name = "HZ")]
    pub fps: f64,

    /// The class of every box in the file, written into KITTI tracks' type column.
    #[arg(long, default_value = "pedestrian", value_name = "NAME")]
    pub class: String,

    #[command(flatten)]
    pub tracking: TrackerArgs,

    #[command(flatten)]
    pub tracks: TracksOutArgs,
}

pub fn run(args: &TrackArgs) -> Result<()> {
    ensure!(
        args.fps.is_finite() && args.fps > 0.0,
        "--fps must be a positive number of frames per second"
    );
    let path = args
        .tracks
        .save_tracks
        .as_ref()
        .context("--save-tracks FILE: where to write the tracks")?;
    let Some(plan) = args.tracking.plan()? else {
        anyhow::bail!("--tracker none: nothing to track; pick bytetrack or iou");
    };
    let mut rows = trackfile::read(&args.detections)?;
    rows.sort_by_key(|r| r.frame);
    let last_frame = rows.last().map_or(0, |r| r.frame);
    let mut tracker = plan.build();
    let mut writer = TrackWriter::create(path, args.tracks.format(path))?;
    let (mut inputs, mut assigned) = (Vec::new(), Vec::new());
    let (mut written, mut next) = (0u64, 0usize);
    let mut track_ids = std::collections::HashSet::new();
    let start = Instant::now();
    // Every frame, empty ones too: a lost track's time runs on through them.
    for frame in 0..=last_frame {
        let first = next;
        while next < rows.len() && rows[next].frame == frame {
            next += 1;
        }
        let boxes = &rows[first..next];
        inputs.clear();
        inputs.extend(boxes.iter().filter(|r| !r.ignore).map(|r| TrackInput {
            box_in_image: r.box_in_image,
            score: r.score,
            class_id: 0,
        }));
        tracker.update(frame as f64 / args.fps, &inputs, &mut assigned);
        for (input, a) in inputs.iter().zip(&assigned) {
            let Some(a) = a.filter(|a| a.confirmed) else {
                continue;
            };
            writer.write(
                frame,
                a.track_id,
                &args.class,
                &input.box_in_image,
                input.score,
            )?;
            track_ids.insert(a.track_id);
            written += 1;
        }
    }
    writer.finish()?;
    let frames = last_frame + 1;
    eprintln!(
        "{}: {frames} frames, {} detections -> {} tracks, {written} boxes in {} ({:.1} µs per frame, {})",
        args.detections.display(),
        rows.len(),
        track_ids.len(),
        path.display(),
        start.elapsed().as_secs_f64() * 1e6 / frames as f64,
        tracker.name(),
    );
    Ok(())
}
