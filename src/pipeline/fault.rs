//! Failure injection for the pipeline's own tests: wrappers that make a source, a stage or a
//! sink fail (an error or a panic) on its `N`th frame, so that tests can check that a
//! failure ends a run quickly, by name, with every other output finished. Built only in
//! tests; nothing in a production loop looks for them.

use super::stage::{Stage, StageError};
use crate::sink::{Sink, SinkControl, SinkError, SinkFrame};
use crate::source::{FrameSource, SourceError, SourceInfo};
use crate::types::{Frame, FramePool};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    Panic,
    Error,
}

/// A failure on the `at_frame`th frame (1-based).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    pub kind: FaultKind,
    pub at_frame: u64,
}

impl Fault {
    pub fn panic_at(at_frame: u64) -> Self {
        Self {
            kind: FaultKind::Panic,
            at_frame,
        }
    }

    pub fn error_at(at_frame: u64) -> Self {
        Self {
            kind: FaultKind::Error,
            at_frame,
        }
    }

    /// Counts one frame; panics, or returns the message to fail with, on the fault's frame.
    fn fires(&self, seen: &mut u64) -> Option<String> {
        *seen += 1;
        if *seen != self.at_frame {
            return None;
        }
        let message = format!("injected failure at frame {seen}");
        match self.kind {
            FaultKind::Panic => panic!("{message}"),
            FaultKind::Error => Some(message),
        }
    }
}

/// A stage that fails as `fault` says, else runs `inner`.
pub struct FaultyStage<S> {
    pub inner: S,
    pub fault: Fault,
    seen: u64,
}

impl<S> FaultyStage<S> {
    pub fn new(inner: S, fault: Fault) -> Self {
        Self {
            inner,
            fault,
            seen: 0,
        }
    }
}

impl<I, O, S: Stage<I, O>> Stage<I, O> for FaultyStage<S> {
    fn process(&mut self, input: I) -> Result<O, StageError> {
        if let Some(message) = self.fault.fires(&mut self.seen) {
            return Err(StageError::Injected(message));
        }
        self.inner.process(input)
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.inner.use_pool(pool);
    }
}

/// A source that fails as `fault` says, else reads `inner`.
pub struct FaultySource {
    pub inner: Box<dyn FrameSource>,
    pub fault: Fault,
    seen: u64,
}

impl FaultySource {
    pub fn new(inner: Box<dyn FrameSource>, fault: Fault) -> Self {
        Self {
            inner,
            fault,
            seen: 0,
        }
    }
}

impl FrameSource for FaultySource {
    fn next_frame(&mut self) -> Result<Option<Frame>, SourceError> {
        if let Some(message) = self.fault.fires(&mut self.seen) {
            return Err(SourceError::Io {
                what: "the test source".into(),
                source: std::io::Error::other(message),
            });
        }
        self.inner.next_frame()
    }

    fn info(&self) -> SourceInfo {
        self.inner.info()
    }

    fn use_pool(&mut self, pool: FramePool) {
        self.inner.use_pool(pool);
    }
}

/// A sink that fails as `fault` says, else writes to `inner`.
pub struct FaultySink {
    pub inner: Box<dyn Sink>,
    pub fault: Fault,
    seen: u64,
}

impl FaultySink {
    pub fn new(inner: Box<dyn Sink>, fault: Fault) -> Self {
        Self {
            inner,
            fault,
            seen: 0,
        }
    }
}

impl Sink for FaultySink {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        if let Some(message) = self.fault.fires(&mut self.seen) {
            return Err(SinkError::Write {
                sink: self.inner.name(),
                path: "the test sink".into(),
                source: std::io::Error::other(message),
            });
        }
        self.inner.write(frame)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.inner.finish()
    }
}
