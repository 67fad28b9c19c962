//! A test-only hook that makes one stage fail, to check that failures end a run quickly
//! and by name: `LOOKOUT_TEST_FAIL_STAGE=STAGE:KIND@N` makes stage `capture`, `detect`,
//! `render` or `sink` fail on its `N`th frame (1-based), with KIND `panic` or `error`.
//! Only the pipeline reads it; it is documented here and in the pipeline tests.

/// The environment variable of the hook.
pub const FAIL_STAGE_ENV: &str = "LOOKOUT_TEST_FAIL_STAGE";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Panic,
    Error,
}

/// A failure to inject into one stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub stage: String,
    pub kind: FaultKind,
    /// 1-based frame count at which the stage fails.
    pub at_frame: u64,
}

impl Fault {
    /// Parses `detect:panic@5`.
    pub fn parse(text: &str) -> Result<Fault, String> {
        let bad = || format!("{FAIL_STAGE_ENV}={text}: expected STAGE:panic@N or STAGE:error@N");
        let (stage, rest) = text.split_once(':').ok_or_else(bad)?;
        let (kind, n) = rest.split_once('@').ok_or_else(bad)?;
        let kind = match kind {
            "panic" => FaultKind::Panic,
            "error" => FaultKind::Error,
            _ => return Err(bad()),
        };
        let at_frame = n.parse().ok().filter(|n| *n > 0).ok_or_else(bad)?;
        Ok(Fault {
            stage: stage.to_string(),
            kind,
            at_frame,
        })
    }

    /// The hook from the environment, if set (an unparsable value is an error).
    pub fn from_env() -> Result<Option<Fault>, String> {
        match std::env::var(FAIL_STAGE_ENV) {
            Ok(text) if !text.is_empty() => Fault::parse(&text).map(Some),
            _ => Ok(None),
        }
    }

    /// Fails (panics or errs) when `stage` reaches its fault frame.
    pub fn check(fault: Option<&Fault>, stage: &str, frames: u64) -> anyhow::Result<()> {
        let Some(f) = fault.filter(|f| f.stage == stage && f.at_frame == frames) else {
            return Ok(());
        };
        match f.kind {
            FaultKind::Panic => panic!("injected panic at frame {frames} ({FAIL_STAGE_ENV})"),
            FaultKind::Error => {
                anyhow::bail!("injected error at frame {frames} ({FAIL_STAGE_ENV})")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_fires_only_at_its_frame() {
        let f = Fault::parse("detect:error@3").unwrap();
        assert_eq!(f.kind, FaultKind::Error);
        assert!(Fault::check(Some(&f), "detect", 2).is_ok());
        assert!(Fault::check(Some(&f), "render", 3).is_ok());
        assert!(Fault::check(Some(&f), "detect", 3).is_err());
        assert!(Fault::parse("detect:boom@3").is_err());
        assert!(Fault::parse("detect:panic@0").is_err());
        assert!(Fault::parse("detect").is_err());
    }
}
