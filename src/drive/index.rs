//! `index.csv` lines: `seq,capture_mono_ns,capture_wall_ns,pts_ns,file`, one per frame, with
//! `pts_ns` empty when the source had none and `file` relative to the drive folder.

/// The first line of every index.
pub const INDEX_HEADER: &str = "seq,capture_mono_ns,capture_wall_ns,pts_ns,file";

/// One recorded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub seq: u64,
    pub capture_mono_ns: u64,
    pub capture_wall_ns: u64,
    pub pts_ns: Option<i64>,
    /// Relative to the drive folder, `/`-separated (`frames/00000012.jpg`).
    pub file: String,
}

impl IndexEntry {
    /// The line as written, with its newline.
    pub fn to_line(&self) -> String {
        let pts = self.pts_ns.map(|p| p.to_string()).unwrap_or_default();
        format!(
            "{},{},{},{pts},{}\n",
            self.seq, self.capture_mono_ns, self.capture_wall_ns, self.file
        )
    }

    /// Parses one line (without its newline); the file name is everything after the fourth
    /// comma. Errors say which field is wrong.
    pub fn parse(line: &str) -> Result<IndexEntry, String> {
        let mut fields = line.splitn(5, ',');
        let mut next = |name: &str| {
            fields
                .next()
                .map(str::trim)
                .ok_or_else(|| format!("missing field `{name}`"))
        };
        let number = |name: &str, text: &str| {
            text.parse::<u64>()
                .map_err(|_| format!("field `{name}` is `{text}`, not a number"))
        };
        let seq = number("seq", next("seq")?)?;
        let capture_mono_ns = number("capture_mono_ns", next("capture_mono_ns")?)?;
        let capture_wall_ns = number("capture_wall_ns", next("capture_wall_ns")?)?;
        let pts_text = next("pts_ns")?;
        let pts_ns = if pts_text.is_empty() {
            None
        } else {
            Some(
                pts_text
                    .parse::<i64>()
                    .map_err(|_| format!("field `pts_ns` is `{pts_text}`, not a number"))?,
            )
        };
        let file = next("file")?.to_string();
        if file.is_empty() {
            return Err("field `file` is empty".into());
        }
        Ok(IndexEntry {
            seq,
            capture_mono_ns,
            capture_wall_ns,
            pts_ns,
            file,
        })
    }
}

/// How many warnings of one kind a replay prints before it only counts them.
pub const MAX_REPEATED_WARNINGS: usize = 5;

/// `text` safe to print on a terminal: control characters (ESC, BEL, CR, …) and the
/// bidirectional overrides that reorder what a terminal shows are written as `\x1b` /
/// `\u{202e}`; a damaged index.csv then cannot colour, move or rewrite the user's
/// terminal (issue 12).
pub fn escape_control(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        let bidi = matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}');
        if c.is_control() && (c as u32) < 0x80 {
            out.push_str(&format!("\\x{:02x}", c as u32));
        } else if c.is_control() || bidi {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(
            escape_control("a\u{1b}[31mred\u{7}\r\u{202e}x"),
            "a\\x1b[31mred\\x07\\x0d\\u{202e}x"
        );
        assert_eq!(escape_control("frames/été.jpg"), "frames/été.jpg");
    }

    #[test]
    fn lines_round_trip_with_and_without_pts() {
        let entry = IndexEntry {
            seq: 7,
            capture_mono_ns: 123,
            capture_wall_ns: 456,
            pts_ns: Some(-40),
            file: "frames/00000007.jpg".into(),
        };
        let line = entry.to_line();
        assert_eq!(line, "7,123,456,-40,frames/00000007.jpg\n");
        assert_eq!(IndexEntry::parse(line.trim_end()).unwrap(), entry);
        let no_pts = IndexEntry {
            pts_ns: None,
            ..entry
        };
        assert_eq!(
            IndexEntry::parse(no_pts.to_line().trim_end()).unwrap(),
            no_pts
        );
    }

    #[test]
    fn torn_and_garbled_lines_are_errors() {
        assert!(IndexEntry::parse("7,123,45")
            .unwrap_err()
            .contains("pts_ns"));
        assert!(IndexEntry::parse("7,123,456,,")
            .unwrap_err()
            .contains("file"));
        assert!(IndexEntry::parse("x,1,2,,f").unwrap_err().contains("`seq`"));
        assert!(IndexEntry::parse(INDEX_HEADER).is_err());
    }
}
