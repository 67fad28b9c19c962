//! `lookout eval track`: tracks against ground truth (MOTA, MOTP, IDF1, ID switches,
//! fragmentations, HOTA), per class and overall. The metrics are `track_eval`'s (equal to
//! py-motmetrics and TrackEval); this module only reads the files and prints.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;

use crate::track_eval::{self, EvalOptions, EvalReport, TrackMetrics};
use crate::trackfile;

#[derive(Debug, Clone, clap::Args)]
pub struct EvalTrackArgs {
    /// Ground truth: a KITTI tracking label file or a MOTChallenge gt.txt.
    #[arg(long, value_name = "FILE")]
    pub gt: PathBuf,
    /// The tracker's output, in MOTChallenge or KITTI tracking format (told by the content).
    #[arg(long, value_name = "FILE")]
    pub pred: PathBuf,
    /// Classes to score, comma-separated, case-insensitive, `person` = `pedestrian`
    /// (KITTI's benchmark: `car,pedestrian`). Default: every class of the ground truth.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// The least IoU of a match for CLEAR MOT and IDF1 (HOTA averages its own thresholds).
    #[arg(long, default_value_t = 0.5, value_name = "IOU")]
    pub iou: f64,
    /// Print JSON: {"overall": {mota, motp, idf1, id_switches, hota, ...}, "classes": {...}}.
    #[arg(long)]
    pub json: bool,
}

/// The validated command: what to read and how to score it.
#[derive(Debug, Clone)]
struct EvalTrackPlan {
    gt: PathBuf,
    pred: PathBuf,
    options: EvalOptions,
    json: bool,
}

impl EvalTrackPlan {
    fn from_args(args: &EvalTrackArgs) -> Result<Self> {
        if !(args.iou > 0.0 && args.iou <= 1.0) {
            anyhow::bail!(
                "--iou {} is outside (0, 1]; MOTChallenge uses 0.5",
                args.iou
            );
        }
        let classes = match &args.classes {
            Some(names) => {
                let names: Vec<String> = names
                    .iter()
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty())
                    .collect();
                if names.is_empty() {
                    anyhow::bail!("--classes is empty; name classes such as car,pedestrian");
                }
                Some(names)
            }
            None => None,
        };
        Ok(EvalTrackPlan {
            gt: args.gt.clone(),
            pred: args.pred.clone(),
            options: EvalOptions {
                iou_threshold: args.iou,
                classes,
            },
            json: args.json,
        })
    }
}

pub fn run(args: &EvalTrackArgs) -> Result<()> {
    let plan = EvalTrackPlan::from_args(args)?;
    let gt = trackfile::read(&plan.gt)?;
    let pred = trackfile::read(&plan.pred)?;
    let report = track_eval::evaluate(&gt, &pred, &plan.options)?;
    if plan.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", format_report(&report, plan.options.iou_threshold));
    }
    Ok(())
}

/// The table `eval track` prints without `--json`.
pub fn format_report(report: &EvalReport, iou_threshold: f64) -> String {
    let mut out = format!(
        "{:<16} {:>6} {:>6} {:>7} {:>6} {:>7} {:>5} {:>5} {:>6} {:>6} {:>4} {:>4} {:>7} {:>7} {:>7} {:>7}\n",
        "class", "GT", "pred", "MOTA", "MOTP", "IDF1", "IDSW", "Frag", "FP", "FN", "MT", "ML",
        "HOTA", "DetA", "AssA", "LocA"
    );
    let row = |out: &mut String, name: &str, m: &TrackMetrics| {
        let _ = writeln!(
            out,
            "{:<16} {:>6} {:>6} {:>7} {:>6} {:>7} {:>5} {:>5} {:>6} {:>6} {:>4} {:>4} {:>7} {:>7} {:>7} {:>7}",
            name,
            m.num_gt,
            m.num_pred,
            percent(m.mota),
            fixed(m.motp),
            percent(m.idf1),
            m.id_switches,
            m.fragmentations,
            m.num_false_positives,
            m.num_misses,
            m.mostly_tracked,
            m.mostly_lost,
            percent(m.hota),
            percent(m.deta),
            percent(m.assa),
            percent(m.loca),
        );
    };
    for (name, metrics) in &report.classes {
        row(&mut out, name, metrics);
    }
    row(&mut out, "OVERALL", &report.overall);
    let _ = writeln!(
        out,
        "CLEAR MOT and IDF1 as py-motmetrics at IoU >= {iou_threshold} (MOTP = mean 1 - IoU of the \
         matches, lower is better); HOTA as TrackEval (mean over IoU 0.05..0.95)"
    );
    out
}

fn percent(value: f64) -> String {
    if value.is_finite() {
        format!("{:.1}%", 100.0 * value)
    } else {
        "-".to_string()
    }
}

fn fixed(value: f64) -> String {
    if value.is_finite() {
        format!("{value:.3}")
    } else {
        "-".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(iou: f64, classes: Option<Vec<&str>>) -> EvalTrackArgs {
        EvalTrackArgs {
            gt: "gt.txt".into(),
            pred: "pred.txt".into(),
            classes: classes.map(|c| c.into_iter().map(String::from).collect()),
            iou,
            json: false,
        }
    }

    #[test]
    fn flags_are_validated_once() {
        assert!(EvalTrackPlan::from_args(&args(0.0, None)).is_err());
        assert!(EvalTrackPlan::from_args(&args(1.5, None)).is_err());
        assert!(EvalTrackPlan::from_args(&args(0.5, Some(vec![" ", ""]))).is_err());
        let plan = EvalTrackPlan::from_args(&args(0.5, Some(vec!["Car", " pedestrian"]))).unwrap();
        assert_eq!(
            plan.options.classes,
            Some(vec!["Car".to_string(), "pedestrian".to_string()])
        );
    }

    #[test]
    fn the_table_has_a_row_per_class_and_overall() {
        let gt = trackfile::parse(
            b"0 1 Car 0 0 -10 0 0 10 10 -1 -1 -1 -1000 -1000 -1000 -10\n",
            std::path::Path::new("gt.txt"),
        )
        .unwrap();
        let report = track_eval::evaluate(&gt, &gt, &EvalOptions::default()).unwrap();
        let table = format_report(&report, 0.5);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 4, "{table}");
        assert!(lines[1].starts_with("car "), "{table}");
        assert!(lines[2].starts_with("OVERALL "), "{table}");
        assert!(lines[2].contains("100.0%"), "{table}");
    }
}
