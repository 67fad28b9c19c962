//! `--save-tracks`: every confirmed track's box per frame in a MOTChallenge or KITTI
//! tracking text file (frame = the source's frame number), flushed frame by frame so that
//! a stopped run's file holds every frame written, ready for TrackEval or py-motmetrics.

use std::path::Path;

use super::{Sink, SinkControl, SinkError, SinkFrame};
use crate::trackfile::{TrackFormat, TrackWriter};

pub struct TracksSink {
    writer: TrackWriter,
}

impl TracksSink {
    pub fn create(path: &Path, format: TrackFormat) -> Result<Self, SinkError> {
        Ok(Self {
            writer: TrackWriter::create(path, format)?,
        })
    }
}

impl Sink for TracksSink {
    fn name(&self) -> &'static str {
        "tracks"
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        let detected = frame.detected;
        for d in &detected.detections {
            if let Some(track_id) = d.track_id {
                self.writer.write(
                    detected.frame.seq,
                    track_id,
                    &d.class,
                    &d.box_in_image,
                    d.score,
                )?;
            }
        }
        self.writer.flush()?;
        Ok(SinkControl::Continue)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(self.writer.flush()?)
    }
}
