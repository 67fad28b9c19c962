//! MOTChallenge and KITTI tracking text files: read and write.
//!
//! Reading tells the format from the content (comma-separated = MOTChallenge,
//! whitespace-separated with a type in the third column = KITTI tracking); writing takes an
//! explicit [`TrackFormat`]. Frames are 0-based everywhere inside lookout: MOTChallenge files
//! count from 1 on disk, KITTI files from 0. Boxes are `box_in_image` pixels (x1, y1, x2, y2);
//! numbers are parsed as f64 and stored as f32. Every error names the file and the 1-based
//! line. A track id may appear only once per frame (id -1, an untracked row, may repeat).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::types::BoxXyxy;

/// A tracking text format (also `--tracks-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum TrackFormat {
    /// MOTChallenge: `frame,id,x,y,w,h,conf,...`, frames from 1, (x, y) the top-left corner.
    Mot,
    /// KITTI tracking: `frame id type truncated occluded alpha x1 y1 x2 y2 h w l x y z ry
    /// [score]`, frames from 0.
    Kitti,
}

impl TrackFormat {
    pub const ALL: [TrackFormat; 2] = [TrackFormat::Mot, TrackFormat::Kitti];

    /// The name `--tracks-format` takes: `mot` or `kitti`.
    pub fn name(self) -> &'static str {
        match self {
            TrackFormat::Mot => "mot",
            TrackFormat::Kitti => "kitti",
        }
    }

    /// `mot` (also `motchallenge`) or `kitti`, in any case.
    pub fn from_name(name: &str) -> Option<TrackFormat> {
        let name = name.trim();
        if name.eq_ignore_ascii_case("mot") || name.eq_ignore_ascii_case("motchallenge") {
            Some(TrackFormat::Mot)
        } else if name.eq_ignore_ascii_case("kitti") {
            Some(TrackFormat::Kitti)
        } else {
            None
        }
    }

    /// The format a file to be written is given by its name: KITTI for `*.kitti` and
    /// `*.kitti.txt`, MOTChallenge for anything else (`*.txt`, as MOTChallenge names them).
    pub fn for_path(path: &Path) -> TrackFormat {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".kitti") || name.ends_with(".kitti.txt") {
            TrackFormat::Kitti
        } else {
            TrackFormat::Mot
        }
    }

    /// The format of a file's content from its first non-blank line; `None` for a file with
    /// no data line or a line that is neither format.
    pub fn detect(text: &str) -> Option<TrackFormat> {
        let line = text.lines().map(str::trim).find(|l| !l.is_empty())?;
        detect_line(line)
    }
}

impl fmt::Display for TrackFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TrackFormat {
    type Err = TrackFileError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        TrackFormat::from_name(name).ok_or_else(|| TrackFileError::UnknownFormat {
            name: name.to_string(),
        })
    }
}

fn detect_line(line: &str) -> Option<TrackFormat> {
    if line.contains(',') {
        return Some(TrackFormat::Mot);
    }
    let kind = line.split_whitespace().nth(2)?;
    kind.parse::<f64>().is_err().then_some(TrackFormat::Kitti)
}

/// One row of a tracking file: a box of one track (or of an untracked detection) in one frame.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackRow {
    /// 0-based (MOTChallenge files are 1-based on disk, KITTI 0-based).
    pub frame: u64,
    /// The track; -1 in MOTChallenge detection files and for KITTI `DontCare`.
    pub id: i64,
    /// KITTI: the type (`Car`, `Pedestrian`, ...). MOTChallenge: the class column of a
    /// `gt.txt` (8th) as its number's text (`"1"`), `None` when absent or -1.
    pub class: Option<Arc<str>>,
    pub box_in_image: BoxXyxy,
    /// MOTChallenge: the conf column; KITTI: the 18th column when present, else 1.0.
    pub score: f32,
    /// Not to be scored: KITTI `DontCare`; MOTChallenge ground-truth rows (rows with a class)
    /// whose `consider` flag (7th column) is 0.
    pub ignore: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum TrackFileError {
    #[error("cannot open {}: {cause}", path.display())]
    Open {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}:{line}: {reason}", path.display())]
    Malformed {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "{}:{line}: neither MOTChallenge (comma-separated) nor KITTI tracking \
         (whitespace-separated with a type in the third column)",
        path.display()
    )]
    UnknownContent { path: PathBuf, line: usize },
    #[error("cannot write {}: {cause}", path.display())]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("unknown tracks format `{name}`: expected `mot` or `kitti`")]
    UnknownFormat { name: String },
}

/// Reads a MOTChallenge or KITTI tracking file (the format told by its content), rows in
/// file order. An empty file has no rows.
pub fn read(path: &Path) -> Result<Vec<TrackRow>, TrackFileError> {
    let bytes = std::fs::read(path).map_err(|cause| TrackFileError::Open {
        path: path.to_path_buf(),
        cause,
    })?;
    parse(&bytes, path)
}

/// Parses the content of a tracking file; `origin` names it in errors.
pub fn parse(content: &[u8], origin: &Path) -> Result<Vec<TrackRow>, TrackFileError> {
    let mut parser = Parser {
        origin,
        format: None,
        classes: Vec::new(),
        first_line_of: HashMap::new(),
    };
    let mut rows = Vec::new();
    for (index, raw) in content.split(|&b| b == b'\n').enumerate() {
        let line_number = index + 1;
        let line = std::str::from_utf8(raw)
            .map_err(|_| parser.malformed(line_number, "not UTF-8 text".into()))?;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        rows.push(parser.row(line, line_number)?);
    }
    Ok(rows)
}

struct Parser<'a> {
    origin: &'a Path,
    format: Option<TrackFormat>,
    /// Class names seen so far: rows share one `Arc` per name.
    classes: Vec<Arc<str>>,
    /// (frame, id) → the line it was first seen on, for ids ≥ 0.
    first_line_of: HashMap<(u64, i64), usize>,
}

impl Parser<'_> {
    fn malformed(&self, line: usize, reason: String) -> TrackFileError {
        TrackFileError::Malformed {
            path: self.origin.to_path_buf(),
            line,
            reason,
        }
    }

    fn row(&mut self, line: &str, line_number: usize) -> Result<TrackRow, TrackFileError> {
        let format = match self.format {
            Some(format) => format,
            None => {
                let format = detect_line(line).ok_or_else(|| TrackFileError::UnknownContent {
                    path: self.origin.to_path_buf(),
                    line: line_number,
                })?;
                self.format = Some(format);
                format
            }
        };
        let row = match format {
            TrackFormat::Mot => self.mot_row(line),
            TrackFormat::Kitti => self.kitti_row(line),
        }
        .map_err(|reason| self.malformed(line_number, reason))?;
        if row.id >= 0 {
            if let Some(first) = self.first_line_of.insert((row.frame, row.id), line_number) {
                let frame_on_disk = match format {
                    TrackFormat::Mot => row.frame + 1,
                    TrackFormat::Kitti => row.frame,
                };
                return Err(self.malformed(
                    line_number,
                    format!(
                        "track id {} appears twice in frame {frame_on_disk} (first on line {first})",
                        row.id
                    ),
                ));
            }
        }
        Ok(row)
    }

    fn mot_row(&mut self, line: &str) -> Result<TrackRow, String> {
        let mut fields = [""; 10];
        let mut count = 0;
        for field in line.split(',') {
            if count < fields.len() {
                fields[count] = field.trim();
            }
            count += 1;
        }
        if !(7..=10).contains(&count) {
            return Err(format!(
                "expected 7 to 10 comma-separated fields (MOTChallenge: frame,id,x,y,w,h,conf\
                 [,class,visibility[,z]]), found {count}"
            ));
        }
        let frame_on_disk = integer(fields[0], "frame")?;
        if frame_on_disk < 1 {
            return Err(format!(
                "frame {frame_on_disk}: MOTChallenge frames count from 1"
            ));
        }
        let id = integer(fields[1], "track id")?;
        let x = number(fields[2], "x")?;
        let y = number(fields[3], "y")?;
        let w = number(fields[4], "width")?;
        let h = number(fields[5], "height")?;
        if w < 0.0 || h < 0.0 {
            return Err(format!("negative box size {w} x {h}"));
        }
        let conf = number(fields[6], "conf")?;
        let class = if count >= 8 {
            let value = number(fields[7], "class")?;
            if value == -1.0 {
                None
            } else if value.fract() == 0.0 {
                Some(self.class(&format!("{}", value as i64)))
            } else {
                Some(self.class(fields[7]))
            }
        } else {
            None
        };
        for (i, field) in fields.iter().enumerate().take(count).skip(8) {
            number(field, if i == 8 { "visibility" } else { "z" })?;
        }
        // A row with a class is a ground-truth row: its 7th column is the `consider` flag.
        let ignore = class.is_some() && conf == 0.0;
        Ok(TrackRow {
            frame: frame_on_disk as u64 - 1,
            id,
            class,
            box_in_image: BoxXyxy::new(x as f32, y as f32, (x + w) as f32, (y + h) as f32),
            score: conf as f32,
            ignore,
        })
    }

    fn kitti_row(&mut self, line: &str) -> Result<TrackRow, String> {
        let mut fields = [""; 18];
        let mut count = 0;
        for field in line.split_whitespace() {
            if count < fields.len() {
                fields[count] = field;
            }
            count += 1;
        }
        if !(17..=18).contains(&count) {
            return Err(format!(
                "expected 17 or 18 whitespace-separated fields (KITTI tracking: frame id type \
                 truncated occluded alpha x1 y1 x2 y2 h w l x y z ry [score]), found {count}"
            ));
        }
        let frame = integer(fields[0], "frame")?;
        if frame < 0 {
            return Err(format!("frame {frame}: KITTI frames count from 0"));
        }
        let id = integer(fields[1], "track id")?;
        let kind = fields[2];
        if kind.parse::<f64>().is_ok() {
            return Err(format!(
                "type `{kind}` is a number; expected a name such as Car"
            ));
        }
        const NAMES: [&str; 15] = [
            "",
            "",
            "",
            "truncated",
            "occluded",
            "alpha",
            "x1",
            "y1",
            "x2",
            "y2",
            "height",
            "width",
            "length",
            "x",
            "y",
        ];
        let mut values = [0.0f64; 18];
        for i in 3..count {
            let name = NAMES.get(i).copied().unwrap_or(match i {
                15 => "z",
                16 => "rotation_y",
                _ => "score",
            });
            values[i] = number(fields[i], name)?;
        }
        let (x1, y1, x2, y2) = (values[6], values[7], values[8], values[9]);
        if x2 < x1 || y2 < y1 {
            return Err(format!(
                "box ({x1}, {y1}, {x2}, {y2}) has x2 < x1 or y2 < y1"
            ));
        }
        let score = if count == 18 { values[17] as f32 } else { 1.0 };
        Ok(TrackRow {
            frame: frame as u64,
            id,
            ignore: kind.eq_ignore_ascii_case("DontCare"),
            class: Some(self.class(kind)),
            box_in_image: BoxXyxy::new(x1 as f32, y1 as f32, x2 as f32, y2 as f32),
            score,
        })
    }

    fn class(&mut self, name: &str) -> Arc<str> {
        if let Some(known) = self.classes.iter().find(|c| &***c == name) {
            return known.clone();
        }
        let class: Arc<str> = Arc::from(name);
        self.classes.push(class.clone());
        class
    }
}

fn number(field: &str, what: &str) -> Result<f64, String> {
    match field.parse::<f64>() {
        Ok(value) if value.is_finite() => Ok(value),
        _ => Err(format!("{what} `{field}` is not a finite number")),
    }
}

/// An integer, also written as a float with no fraction (`3.000000`).
fn integer(field: &str, what: &str) -> Result<i64, String> {
    if let Ok(value) = field.parse::<i64>() {
        return Ok(value);
    }
    match field.parse::<f64>() {
        Ok(value) if value.fract() == 0.0 && value.abs() < 9.0e15 => Ok(value as i64),
        _ => Err(format!("{what} `{field}` is not an integer")),
    }
}

/// The KITTI type lookout writes for one of its (COCO) class names. KITTI has no bus,
/// motorcycle or traffic-light types: such classes keep their own name, capitalised, with
/// spaces as `_` (`traffic light` → `Traffic_light`), so that they are neither scored as nor
/// confused with Van or Truck; `train` becomes `Tram` (on roads it nearly always is one).
pub fn kitti_type_for(class: &str) -> Option<&'static str> {
    const TABLE: [(&str, &str); 8] = [
        ("car", "Car"),
        ("person", "Pedestrian"),
        ("pedestrian", "Pedestrian"),
        ("bicycle", "Cyclist"),
        ("cyclist", "Cyclist"),
        ("truck", "Truck"),
        ("van", "Van"),
        ("train", "Tram"),
    ];
    TABLE
        .iter()
        .find(|(coco, _)| coco.eq_ignore_ascii_case(class))
        .map(|(_, kitti)| *kitti)
}

/// Writes tracks, one line per box; call [`TrackWriter::flush`] at the end of each frame so
/// that a run that stops abruptly keeps every finished frame. No allocation per row beyond
/// the reused line buffer.
pub struct TrackWriter {
    path: PathBuf,
    format: TrackFormat,
    out: BufWriter<File>,
    line: String,
}

impl TrackWriter {
    pub fn create(path: &Path, format: TrackFormat) -> Result<Self, TrackFileError> {
        let file = File::create(path).map_err(|cause| TrackFileError::Write {
            path: path.to_path_buf(),
            cause,
        })?;
        Ok(TrackWriter {
            path: path.to_path_buf(),
            format,
            out: BufWriter::new(file),
            line: String::with_capacity(160),
        })
    }

    pub fn format(&self) -> TrackFormat {
        self.format
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// One box of track `track_id` in (0-based) `frame`. `class` is lookout's class name; the
    /// KITTI line carries it as a KITTI type ([`kitti_type_for`]), the MOTChallenge line not
    /// at all.
    pub fn write(
        &mut self,
        frame: u64,
        track_id: u64,
        class: &str,
        box_in_image: &BoxXyxy,
        score: f32,
    ) -> Result<(), TrackFileError> {
        self.line.clear();
        let b = box_in_image;
        // Writing into a String cannot fail.
        let _ = match self.format {
            TrackFormat::Mot => writeln!(
                self.line,
                "{},{track_id},{:.2},{:.2},{:.2},{:.2},{score:.4},-1,-1,-1",
                frame + 1,
                b.x1,
                b.y1,
                b.x2 - b.x1,
                b.y2 - b.y1,
            ),
            TrackFormat::Kitti => {
                let _ = write!(self.line, "{frame} {track_id} ");
                push_kitti_type(&mut self.line, class);
                writeln!(
                    self.line,
                    " -1 -1 -10 {:.2} {:.2} {:.2} {:.2} -1 -1 -1 -1000 -1000 -1000 -10 {score:.4}",
                    b.x1, b.y1, b.x2, b.y2,
                )
            }
        };
        self.out
            .write_all(self.line.as_bytes())
            .map_err(|cause| TrackFileError::Write {
                path: self.path.clone(),
                cause,
            })
    }

    /// Writes the lines so far to the file (once per frame).
    pub fn flush(&mut self) -> Result<(), TrackFileError> {
        self.out.flush().map_err(|cause| TrackFileError::Write {
            path: self.path.clone(),
            cause,
        })
    }

    /// Flushes and closes the file.
    pub fn finish(mut self) -> Result<(), TrackFileError> {
        self.flush()
    }
}

fn push_kitti_type(line: &mut String, class: &str) {
    if let Some(kitti) = kitti_type_for(class) {
        line.push_str(kitti);
        return;
    }
    let class = class.trim();
    if class.is_empty() {
        line.push_str("Misc");
        return;
    }
    for (i, c) in class.chars().enumerate() {
        if c.is_whitespace() {
            line.push('_');
        } else if i == 0 {
            line.extend(c.to_uppercase());
        } else {
            line.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(text: &str) -> Result<Vec<TrackRow>, TrackFileError> {
        parse(text.as_bytes(), Path::new("x.txt"))
    }

    #[test]
    fn detects_the_format_from_the_content() {
        assert_eq!(
            TrackFormat::detect("1,2,3,4,5,6,1,-1,-1,-1\n"),
            Some(TrackFormat::Mot)
        );
        assert_eq!(
            TrackFormat::detect("\n0 1 Car 0 0 -1 1 2 3 4 1 1 1 1 1 1 1\n"),
            Some(TrackFormat::Kitti)
        );
        assert_eq!(TrackFormat::detect("1 2 3 4"), None);
        assert_eq!(TrackFormat::detect(""), None);
        assert_eq!(
            TrackFormat::for_path(Path::new("out/tracks.txt")),
            TrackFormat::Mot
        );
        assert_eq!(
            TrackFormat::for_path(Path::new("out/0001.KITTI.txt")),
            TrackFormat::Kitti
        );
        assert_eq!("kitti".parse::<TrackFormat>().unwrap(), TrackFormat::Kitti);
        assert!("csv".parse::<TrackFormat>().is_err());
    }

    #[test]
    fn reads_mot_rows_one_based_with_classes_and_consider_flags() {
        let rows = parse_str(
            "1,3,10,20,30,40,1,1,0.8\n2,3,11.5,20,30,40,0,7,1\n3,-1,0,0,5,5,0.25,-1,-1,-1\n",
        )
        .unwrap();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].frame, 0);
        assert_eq!(rows[0].id, 3);
        assert_eq!(rows[0].class.as_deref(), Some("1"));
        assert_eq!(rows[0].box_in_image, BoxXyxy::new(10.0, 20.0, 40.0, 60.0));
        assert!(!rows[0].ignore);
        assert!(rows[1].ignore, "consider flag 0 on a gt row");
        assert_eq!(rows[1].class.as_deref(), Some("7"));
        assert_eq!(rows[2].id, -1);
        assert_eq!(rows[2].class, None);
        assert_eq!(rows[2].score, 0.25);
        assert!(
            !rows[2].ignore,
            "a result row's conf is a score, not a flag"
        );
    }

    #[test]
    fn reads_kitti_rows_with_dontcare_and_scores() {
        let rows = parse_str(
            "0 -1 DontCare -1 -1 -10 219.31 188.49 245.5 218.56 -1000 -1000 -1000 -10 -1 -1 -1\n\
             0 2 Pedestrian 0 0 -2.52 1106.1 166.5 1204.4 323.8 1.7 0.7 0.9 6.3 1.6 8.4 -1.9\n\
             1 2 Pedestrian -1 -1 -10 1100 160 1200 320 -1 -1 -1 -1000 -1000 -1000 -10 0.75\n",
        )
        .unwrap();
        assert!(rows[0].ignore);
        assert_eq!(rows[0].id, -1);
        assert_eq!(rows[1].frame, 0);
        assert_eq!(rows[1].class.as_deref(), Some("Pedestrian"));
        assert_eq!(rows[1].score, 1.0);
        assert_eq!(rows[2].frame, 1);
        assert_eq!(rows[2].score, 0.75);
        assert!(Arc::ptr_eq(
            rows[1].class.as_ref().unwrap(),
            rows[2].class.as_ref().unwrap()
        ));
    }

    #[test]
    fn malformed_lines_name_the_file_and_line() {
        let err = parse_str("1,1,0,0,5,5,1,-1,-1,-1\n\n1,2,3\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.txt:3: expected 7 to 10 comma-separated fields (MOTChallenge: \
             frame,id,x,y,w,h,conf[,class,visibility[,z]]), found 3"
        );
        let err = parse_str("0,1,0,0,5,5,1,-1,-1,-1\n").unwrap_err();
        assert!(err.to_string().starts_with("x.txt:1: frame 0"), "{err}");
        let err = parse_str("1,1,0,zero,5,5,1,-1,-1,-1\n").unwrap_err();
        assert_eq!(err.to_string(), "x.txt:1: y `zero` is not a finite number");
        let err = parse_str("0 1 Car 0 0 -1 1 2 3 4 1 1 1\n").unwrap_err();
        assert!(
            err.to_string().starts_with("x.txt:1: expected 17 or 18"),
            "{err}"
        );
        let err = parse_str("1 2 3 4\n").unwrap_err();
        assert!(
            err.to_string().starts_with("x.txt:1: neither MOTChallenge"),
            "{err}"
        );
        let err = parse_str("1,4,0,0,5,5,1,-1,-1,-1\n1,4,9,9,5,5,1,-1,-1,-1\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.txt:2: track id 4 appears twice in frame 1 (first on line 1)"
        );
        let err = parse(b"1,4,0,0,5,5,1\n\xff\n", Path::new("x.txt")).unwrap_err();
        assert_eq!(err.to_string(), "x.txt:2: not UTF-8 text");
    }

    #[test]
    fn a_missing_file_is_named() {
        let err = read(Path::new("/nonexistent/tracks.txt")).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot open /nonexistent/tracks.txt: "),
            "{err}"
        );
    }

    #[test]
    fn written_files_read_back() {
        let dir = std::env::temp_dir().join(format!("lookout-trackfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let boxes = [
            BoxXyxy::new(10.0, 20.0, 40.5, 60.25),
            BoxXyxy::new(1.0, 2.0, 3.0, 4.0),
        ];
        for format in TrackFormat::ALL {
            let path = dir.join(format!("t.{}", format.name()));
            let mut writer = TrackWriter::create(&path, format).unwrap();
            writer.write(0, 7, "person", &boxes[0], 0.9).unwrap();
            writer.write(0, 8, "traffic light", &boxes[1], 0.5).unwrap();
            writer.flush().unwrap();
            writer.write(4, 7, "bus", &boxes[1], 0.25).unwrap();
            writer.finish().unwrap();
            let text = std::fs::read_to_string(&path).unwrap();
            let rows = read(&path).unwrap();
            assert_eq!(rows.len(), 3, "{text}");
            assert_eq!(rows[0].frame, 0);
            assert_eq!(rows[2].frame, 4);
            assert_eq!(rows[0].id, 7);
            assert_eq!(rows[0].box_in_image, boxes[0]);
            assert_eq!(rows[2].box_in_image, boxes[1]);
            assert_eq!(rows[1].score, 0.5);
            match format {
                TrackFormat::Mot => {
                    assert_eq!(
                        text.lines().next().unwrap(),
                        "1,7,10.00,20.00,30.50,40.25,0.9000,-1,-1,-1"
                    );
                    assert_eq!(rows[0].class, None);
                }
                TrackFormat::Kitti => {
                    assert_eq!(
                        text.lines().next().unwrap(),
                        "0 7 Pedestrian -1 -1 -10 10.00 20.00 40.50 60.25 -1 -1 -1 -1000 -1000 -1000 -10 0.9000"
                    );
                    assert_eq!(rows[1].class.as_deref(), Some("Traffic_light"));
                    assert_eq!(rows[2].class.as_deref(), Some("Bus"));
                }
            }
        }
        std::fs::remove_dir_all(&dir).ok();
    }
}
