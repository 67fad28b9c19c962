//! Writes the tracking benchmark's detection files: seeded noisy detections
//! (`lookout::track_eval::noisy`) of KITTI tracking ground truth from the shared fixtures, one MOTChallenge
//! detection file per sequence and class (`0000-car.txt`, `0000-pedestrian.txt`, …) in OUT_DIR.
//!
//! ```sh
//! cargo run --release --example kitti_noisy_detections -- OUT_DIR [--sequences 0000,0005,0016]
//!     [--classes car,pedestrian] [--seed 13]
//! ```

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use lookout::track_eval::noisy::{
    noisy_detections, write_mot_detections, NoiseConfig, DEFAULT_SEED,
};

#[derive(Debug, Parser)]
struct Args {
    /// Folder for the detection files (created if missing).
    out_dir: PathBuf,
    /// KITTI tracking sequences, read from `$LOOKOUT_FIXTURES/kitti/tracking/label_02/NNNN.txt`.
    #[arg(long, value_delimiter = ',', default_value = "0000,0005,0016")]
    sequences: Vec<String>,
    /// Classes, one file each (matched to KITTI's `Car`, `Pedestrian` ignoring case).
    #[arg(long, value_delimiter = ',', default_value = "car,pedestrian")]
    classes: Vec<String>,
    /// Seed of the noise.
    #[arg(long, default_value_t = DEFAULT_SEED)]
    seed: u64,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let labels = lookout::fixtures::root().join("kitti/tracking/label_02");
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("creating {}", args.out_dir.display()))?;
    let config = NoiseConfig {
        seed: args.seed,
        ..NoiseConfig::default()
    };
    for sequence in &args.sequences {
        let gt_path = labels.join(format!("{sequence}.txt"));
        let gt = lookout::trackfile::read(&gt_path).with_context(|| {
            format!(
                "reading KITTI tracking labels (set LOOKOUT_FIXTURES?) {}",
                gt_path.display()
            )
        })?;
        for class in &args.classes {
            let d = noisy_detections(&gt, class, &config);
            let path = args
                .out_dir
                .join(format!("{sequence}-{}.txt", class.to_ascii_lowercase()));
            write_mot_detections(&d.rows, &path)?;
            println!(
                "{}: {} true boxes, {} dropped, {} false positives, {} detections",
                path.display(),
                d.true_boxes,
                d.dropped,
                d.false_positives,
                d.rows.len()
            );
        }
    }
    Ok(())
}
