//! `--foxglove ADDR`: the channels of [`super::channels`] published live to Foxglove
//! clients through the [`crate::live`] server. Latest wins: publishing never blocks, a
//! message nobody subscribed to is not even encoded, and a slow client loses its oldest
//! messages (counted by the server), never slowing the pipeline.

use super::channels::{FrameMessages, Topic};
use super::{Sink, SinkControl, SinkError, SinkFrame};
use crate::calib::Calibration;
use crate::drive::FrameFileFormat;
use crate::live::{LiveChannel, LiveHub};

const NAME: &str = "foxglove";

/// The channels a live server advertises, in the order [`LiveSink`] publishes them: every
/// topic, the calibration only when there is one (it is latched: a client that subscribes
/// gets the last one at once).
pub fn live_channels(with_calibration: bool) -> Vec<LiveChannel> {
    live_topics(with_calibration)
        .map(|topic| LiveChannel {
            topic: topic.name().to_string(),
            message_encoding: topic.message_encoding().to_string(),
            schema_name: topic.schema_name().to_string(),
            schema_encoding: topic.schema_encoding().to_string(),
            schema: topic.schema_data().into_owned(),
            latched: topic == Topic::Calibration,
        })
        .collect()
}

fn live_topics(with_calibration: bool) -> impl Iterator<Item = Topic> {
    Topic::ALL
        .into_iter()
        .filter(move |t| *t != Topic::Calibration || with_calibration)
}

/// Publishes every frame's messages to the live server's clients.
pub struct LiveSink {
    hub: LiveHub,
    messages: FrameMessages,
    /// The topics in the server's channel order ([`live_channels`]).
    topics: Vec<Topic>,
}

impl LiveSink {
    /// `calibration` must be given exactly when the server's channels were made with one.
    pub fn new(
        hub: LiveHub,
        calibration: Option<&Calibration>,
        frame_size: (u32, u32),
    ) -> Result<LiveSink, SinkError> {
        Ok(LiveSink {
            hub,
            // JPEG: small enough for a laptop over Wi-Fi, and shared with --record/--mcap.
            messages: FrameMessages::new(NAME, FrameFileFormat::Jpg, calibration, frame_size)?,
            topics: live_topics(calibration.is_some()).collect(),
        })
    }
}

impl Sink for LiveSink {
    fn name(&self) -> &'static str {
        NAME
    }

    fn write(&mut self, frame: &SinkFrame<'_>) -> Result<SinkControl, SinkError> {
        let log_time = self.messages.log_time_ns(frame);
        for (channel, &topic) in self.topics.iter().enumerate() {
            // The latched calibration is kept for clients that subscribe later.
            if topic != Topic::Calibration && !self.hub.wanted(channel) {
                continue;
            }
            let data = self.messages.encode(topic, frame, log_time)?;
            self.hub.publish(channel, log_time, data);
        }
        Ok(SinkControl::Continue)
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        Ok(())
    }
}
