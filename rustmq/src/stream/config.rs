//! Stream settings: [`StreamConfig`], [`StreamMode`], [`ErrorStrategy`] and the window options.

use std::time::Duration;

use crate::error::{ClientError, Result};
use crate::message::validate_topic;

/// How input messages are grouped before they reach the processor.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum StreamMode {
    /// One message at a time through [`MessageProcessor::process`]; messages of one input
    /// partition are processed, and their outputs produced, in offset order.
    ///
    /// [`MessageProcessor::process`]: super::MessageProcessor::process
    #[default]
    Individual,
    /// Messages in arrival order, `batch_size` at a time or whatever arrived within
    /// `batch_timeout` of a batch's first message, whichever comes first, through
    /// [`MessageProcessor::process_batch`](super::MessageProcessor::process_batch). A batch
    /// also closes early when nothing more can join it: it holds every message in flight
    /// and more input waits for room (`max_in_flight`,
    /// [`with_max_in_flight_bytes`](super::MessageStream::with_max_in_flight_bytes)).
    Batch {
        /// Most messages in one batch.
        batch_size: usize,
        /// Longest wait for a batch to fill, from its first message.
        batch_timeout: Duration,
    },
    /// Event-time windows over the messages' timestamps, aligned to the Unix epoch: window
    /// `k` covers `[k·slide_interval, k·slide_interval + window_size)`. Tumbling when
    /// `slide_interval == window_size`, sliding (overlapping) when it is shorter. A window is
    /// handed to [`MessageProcessor::process_batch`](super::MessageProcessor::process_batch)
    /// (members sorted by timestamp) once the watermark reaches its end; a message for a
    /// window that has already closed is late and handled per
    /// [`WindowOptions::late_messages`].
    ///
    /// The watermark waits for the slowest partition: it is the least, over the stream
    /// instance's active input partitions, of the largest timestamp each has delivered, minus
    /// [`WindowOptions::allowed_lateness`]. A partition far behind the others in event time (a
    /// backlog, a partition taken over in a rebalance and read again from its committed
    /// position, a producer with a slow clock) holds the windows back rather than have its
    /// messages judged late. A partition is active from its assignment (before its first
    /// message its event time is unknown, and no window closes) until it has delivered
    /// nothing for [`WindowOptions::idle_timeout`]: an idle partition no longer holds the
    /// others back (windows close when it becomes idle, with no message arriving), and when
    /// every partition is idle the largest timestamp of all counts. An idle partition that
    /// delivers again counts again, but the watermark never moves back: windows closed
    /// meanwhile stay closed, and its messages for them are late.
    Windowed {
        /// Length of a window.
        window_size: Duration,
        /// Distance between the starts of consecutive windows (at most `window_size`, and at
        /// least `window_size /` [`MAX_WINDOWS_PER_MESSAGE`]: a message joins every window that
        /// overlaps its timestamp, each keeping a copy of it).
        slide_interval: Duration,
    },
}

/// Most windows one message may join in [`StreamMode::Windowed`] (`window_size` over
/// `slide_interval`, rounded up): each keeps a copy of it, so `validate` refuses settings
/// past this (a day sliding every 30 s is 2,880).
pub const MAX_WINDOWS_PER_MESSAGE: u32 = 4_096;

/// What happens to a message (or a whole batch or window) whose processing failed.
///
/// Failures are errors returned by the processor, calls that outlast
/// [`StreamConfig::processing_timeout`], panics in `process` or `process_batch` (a
/// [`ClientError::InvalidMessage`] whose text holds the panic's message; a panic in
/// `on_error` is logged like an error it returns), and outputs that can never be stored: an
/// explicit partition the output topic does not have ([`ClientError::InvalidMessage`]), or,
/// without compression, a record larger than the broker's largest batch (exactly once, a
/// unit's outputs together, as they are stored as one batch; [`ClientError::MessageTooLarge`]). Other failures to store outputs (a broker that cannot
/// be reached, a refused write) end the session instead, and a new one starts over from the
/// last commit. A batch or window is handled as one unit:
/// it is retried, skipped or dead-lettered whole. A processor that implements only
/// `process_batch`, given one message (individual mode), stops the stream with
/// [`ClientError::InvalidConfig`], as [`Stop`](Self::Stop) does, whatever the strategy: every
/// message would fail alike.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ErrorStrategy {
    /// Drop the failed unit (counted in `messages_failed` and `messages_skipped`) and go on.
    Skip,
    /// Try again, up to `max_attempts` attempts in all, waiting `backoff_ms · 2^(n-1)` after
    /// the n-th failure; a unit that fails every attempt is dropped like [`ErrorStrategy::Skip`].
    /// Payloads that do not decode ([`ClientError::Deserialization`]) are not retried.
    Retry {
        /// Attempts in all, the first one included.
        max_attempts: u32,
        /// Delay after the first failure, in milliseconds; doubled after each further one.
        backoff_ms: u64,
    },
    /// Write the unit's messages to `topic` with the failure in headers (see
    /// [`DLQ_UNIT_MEMBERS`](super::DLQ_UNIT_MEMBERS)), then go on.
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
    },
    /// Stop the stream: no further unit is processed, and no output of one is written (units
    /// whose outputs were already handed to the writer are stored, finished and committed);
    /// the failed unit and every unit not finished — what follows it in its partitions
    /// among them — are not committed, and are read again by the next start.
    /// [`MessageStream::wait`](super::MessageStream::wait) and
    /// [`MessageStream::stop`](super::MessageStream::stop) return the error (also when the
    /// failure comes while the stream stops).
    #[default]
    Stop,
}

/// What happens to a message that arrives after its window closed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LatePolicy {
    /// Counted in `late_messages`, otherwise ignored.
    #[default]
    Drop,
    /// Counted, and written to `topic` with the header `rustmq.dlq.kind: late`. An invalid
    /// topic name fails [`MessageStream::start`](super::MessageStream::start).
    DeadLetter {
        /// The topic late messages go to.
        topic: String,
    },
}

/// Lateness and idleness settings of [`StreamMode::Windowed`], set with
/// [`MessageStream::with_window_options`](super::MessageStream::with_window_options). Build
/// them with `..Default::default()` for the fields you leave as they are.
///
/// They live outside [`StreamConfig`] so that the seed's exhaustive `StreamConfig { .. }` and
/// `StreamMode::Windowed { .. }` literals keep compiling (as does
/// [`MessageStream::with_max_in_flight_bytes`](super::MessageStream::with_max_in_flight_bytes)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowOptions {
    /// How far behind the event time a message may be and still join its window: the
    /// watermark is the event time (the least largest timestamp of the active partitions, see
    /// [`StreamMode::Windowed`]) minus this. Default 0.
    pub allowed_lateness: Duration,
    /// What to do with messages that are later than that. Default [`LatePolicy::Drop`].
    pub late_messages: LatePolicy,
    /// How long an input partition may deliver nothing before it is idle and stops holding
    /// the watermark back (see [`StreamMode::Windowed`]). Must be positive; [`Duration::MAX`]:
    /// never idle (a partition that receives nothing then holds every window open for good).
    ///
    /// Default [`DEFAULT_WINDOW_IDLE_TIMEOUT`], 5 s: between never (one quiet partition
    /// stops every window) and no wait (a partition behind the others has its messages judged
    /// late). A partition behind the others with messages to deliver (a backlog, a replay)
    /// delivers far more often than that, even through a fetch retried after a failure
    /// (fetches back off as the client's `retry_config` says, but for at most 1.6 s). The cost
    /// is paid only when a partition is really
    /// quiet (no traffic, or nothing in it when the stream starts or rebalances): every window
    /// of the instance then closes up to this much later. Lower it for less delay with quiet
    /// partitions; raise it for partitions whose delivery may pause longer. Time the stream
    /// spends waiting for its processors does not count (the windows waiting to be processed
    /// hold every partition back then). A partition that gets a message less often than this
    /// is idle between them: its messages behind the others by more than `allowed_lateness`
    /// are late.
    pub idle_timeout: Duration,
}

/// The default [`WindowOptions::idle_timeout`].
pub const DEFAULT_WINDOW_IDLE_TIMEOUT: Duration = Duration::from_secs(5);

impl Default for WindowOptions {
    fn default() -> Self {
        Self {
            allowed_lateness: Duration::ZERO,
            late_messages: LatePolicy::Drop,
            idle_timeout: DEFAULT_WINDOW_IDLE_TIMEOUT,
        }
    }
}

impl WindowOptions {
    /// Checks the idle timeout and the late messages' dead-letter topic (as
    /// [`StreamConfig::validate`] checks the error strategy's).
    pub(crate) fn validate(&self) -> Result<()> {
        if self.idle_timeout.is_zero() {
            return Err(ClientError::InvalidConfig(
                "stream window idle_timeout must be positive".into(),
            ));
        }
        if let LatePolicy::DeadLetter { topic } = &self.late_messages {
            validate_topic(topic).map_err(|e| {
                ClientError::InvalidConfig(format!("stream late_messages DeadLetter topic: {e}"))
            })?;
        }
        Ok(())
    }
}

/// Settings of a [`MessageStream`](super::MessageStream); every field is used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamConfig {
    /// Topics to read (one consumer-group member subscribed to all of them).
    pub input_topics: Vec<String>,
    /// Where outputs go; `None`: to the topic each output message names.
    pub output_topic: Option<String>,
    /// The consumer group: partitions are shared between the streams of a group, and the
    /// group's committed offsets say where processing resumes.
    pub consumer_group: String,
    /// Processor calls running at once (at least 1). In [`StreamMode::Individual`] each input
    /// partition is served by one of them, so that a partition's order is kept. The messages
    /// in flight (`max_in_flight`) are shared by all partitions, and a worker's queue holds
    /// 64 units: a partition whose messages are slow (each running into
    /// `processing_timeout` and retried, say) can fill its worker's queue and then hold up
    /// the others until it drains.
    pub parallelism: usize,
    /// Longest one processor call may take; a slower call fails with
    /// [`ClientError::Timeout`] and is handled by the `error_strategy`.
    pub processing_timeout: Duration,
    /// Every input contributes to the outputs exactly once, across crashes and restarts (see
    /// the module documentation); otherwise at least once. Either way outputs and dead
    /// letters are written as with [`AckLevel::All`](crate::AckLevel::All) (on disk when
    /// acknowledged), as the group's commits are: an input is never committed while its
    /// outputs could still be lost to a power failure. On a broker with ACLs, exactly once
    /// needs `write` on the producer `rustmq.stream.<group>` (`resource = "producer"`).
    pub exactly_once: bool,
    /// Most input messages fetched and not yet finished (processed, outputs acknowledged).
    /// In windowed mode a message counts until it is placed in its windows.
    /// Bytes in flight are bounded too:
    /// [`MessageStream::with_max_in_flight_bytes`](super::MessageStream::with_max_in_flight_bytes).
    pub max_in_flight: usize,
    /// What to do when processing fails.
    pub error_strategy: ErrorStrategy,
    /// Individual, batch or windowed processing.
    pub mode: StreamMode,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            input_topics: Vec::new(),
            output_topic: None,
            consumer_group: "rustmq-stream".to_owned(),
            parallelism: 4,
            processing_timeout: Duration::from_secs(30),
            exactly_once: false,
            max_in_flight: 1000,
            error_strategy: ErrorStrategy::default(),
            mode: StreamMode::default(),
        }
    }
}

impl StreamConfig {
    /// Checks every field; the message names the one at fault.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ClientError::InvalidConfig(m));
        if self.input_topics.is_empty() {
            return bad("stream input_topics must name at least one topic".into());
        }
        for topic in self.input_topics.iter().chain(&self.output_topic) {
            validate_topic(topic).map_err(|e| ClientError::InvalidConfig(e.to_string()))?;
        }
        if self.consumer_group.is_empty() {
            return bad("stream consumer_group must not be empty".into());
        }
        if self.parallelism == 0 {
            return bad("stream parallelism must be at least 1".into());
        }
        if self.processing_timeout.is_zero() {
            return bad("stream processing_timeout must be positive".into());
        }
        if self.max_in_flight == 0 {
            return bad("stream max_in_flight must be at least 1".into());
        }
        match &self.error_strategy {
            ErrorStrategy::Retry {
                max_attempts: 0, ..
            } => return bad("stream error_strategy Retry needs max_attempts of at least 1".into()),
            ErrorStrategy::DeadLetter { topic } => {
                validate_topic(topic).map_err(|e| ClientError::InvalidConfig(e.to_string()))?;
            }
            _ => {}
        }
        match &self.mode {
            StreamMode::Individual => {}
            StreamMode::Batch {
                batch_size,
                batch_timeout,
            } => {
                if *batch_size == 0 || batch_timeout.is_zero() {
                    return bad("stream batch_size and batch_timeout must be positive".into());
                }
                if *batch_size > self.max_in_flight {
                    return bad(format!(
                        "stream batch_size ({batch_size}) must not exceed max_in_flight ({})",
                        self.max_in_flight
                    ));
                }
            }
            StreamMode::Windowed {
                window_size,
                slide_interval,
            } => {
                if window_size.as_millis() == 0 || slide_interval.as_millis() == 0 {
                    return bad(
                        "stream window_size and slide_interval must be at least 1 ms".into(),
                    );
                }
                if slide_interval > window_size {
                    return bad("stream slide_interval must not exceed window_size".into());
                }
                let windows = window_size.as_millis().div_ceil(slide_interval.as_millis());
                if windows > u128::from(MAX_WINDOWS_PER_MESSAGE) {
                    return bad(format!(
                        "stream window_size / slide_interval is {windows}: each message would join \
                         that many windows (at most {MAX_WINDOWS_PER_MESSAGE})"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> StreamConfig {
        StreamConfig {
            input_topics: vec!["in".into()],
            ..Default::default()
        }
    }

    #[test]
    fn defaults_need_only_input_topics() {
        assert!(StreamConfig::default().validate().is_err());
        config().validate().unwrap();
    }

    #[test]
    fn bad_fields_are_named() {
        let cases: Vec<(StreamConfig, &str)> = vec![
            (
                StreamConfig {
                    parallelism: 0,
                    ..config()
                },
                "parallelism",
            ),
            (
                StreamConfig {
                    max_in_flight: 0,
                    ..config()
                },
                "max_in_flight",
            ),
            (
                StreamConfig {
                    consumer_group: String::new(),
                    ..config()
                },
                "consumer_group",
            ),
            (
                StreamConfig {
                    output_topic: Some("bad topic".into()),
                    ..config()
                },
                "invalid topic",
            ),
            (
                StreamConfig {
                    mode: StreamMode::Batch {
                        batch_size: 5000,
                        batch_timeout: Duration::from_secs(1),
                    },
                    ..config()
                },
                "max_in_flight",
            ),
            (
                StreamConfig {
                    mode: StreamMode::Windowed {
                        window_size: Duration::from_secs(1),
                        slide_interval: Duration::from_secs(2),
                    },
                    ..config()
                },
                "slide_interval",
            ),
            (
                StreamConfig {
                    mode: StreamMode::Windowed {
                        window_size: Duration::from_secs(3600),
                        slide_interval: Duration::from_millis(1),
                    },
                    ..config()
                },
                "slide_interval",
            ),
            (
                StreamConfig {
                    error_strategy: ErrorStrategy::Retry {
                        max_attempts: 0,
                        backoff_ms: 1,
                    },
                    ..config()
                },
                "max_attempts",
            ),
        ];
        for (c, field) in cases {
            let e = c.validate().unwrap_err().to_string();
            assert!(e.contains(field), "{e} should name {field}");
        }
        // At the bound: a message joins exactly MAX_WINDOWS_PER_MESSAGE windows.
        let at_bound = StreamConfig {
            mode: StreamMode::Windowed {
                window_size: Duration::from_millis(u64::from(MAX_WINDOWS_PER_MESSAGE)),
                slide_interval: Duration::from_millis(1),
            },
            ..config()
        };
        at_bound.validate().unwrap();
    }

    /// The late messages' dead-letter topic is checked as the error strategy's is, before
    /// the stream starts rather than at the first late message.
    #[test]
    fn late_dead_letter_topic_is_validated() {
        let late = |topic: &str| WindowOptions {
            late_messages: LatePolicy::DeadLetter {
                topic: topic.into(),
            },
            ..Default::default()
        };
        WindowOptions::default().validate().unwrap();
        late("late-ones").validate().unwrap();
        for bad in ["bad topic", ""] {
            let e = late(bad).validate().unwrap_err();
            assert!(matches!(e, ClientError::InvalidConfig(_)), "{bad:?}: {e:?}");
            assert!(e.to_string().contains("late_messages"), "{e}");
        }
        // As the error strategy's dead-letter topic.
        let strategy = StreamConfig {
            error_strategy: ErrorStrategy::DeadLetter {
                topic: "bad topic".into(),
            },
            ..config()
        };
        assert!(strategy.validate().is_err());
    }

    /// The idle timeout must be positive, and may be as long as it likes: `Duration::MAX`
    /// never makes a partition idle.
    #[test]
    fn idle_timeout_is_validated() {
        let idle = |idle_timeout| WindowOptions {
            idle_timeout,
            ..Default::default()
        };
        assert_eq!(
            WindowOptions::default().idle_timeout,
            DEFAULT_WINDOW_IDLE_TIMEOUT
        );
        idle(Duration::from_nanos(1)).validate().unwrap();
        idle(Duration::MAX).validate().unwrap();
        let e = idle(Duration::ZERO).validate().unwrap_err();
        assert!(matches!(e, ClientError::InvalidConfig(_)), "{e:?}");
        assert!(e.to_string().contains("idle_timeout"), "{e}");
    }
}
