//! Failures of the consumer's background tasks (fetches, heartbeats, joins): which ones the
//! application hears of, and what a closed client does to the consumer.
//!
//! ```text
//!   a task's request fails ──► ClientError::Closed (the client was closed) ──► the consumer
//!        │                     ends: receive() answers Ok(None), every task stops
//!        ▼
//!   retried after the client's `retry_config` backoff (at least 10 ms) until it succeeds;
//!   the first failure of a streak that retrying cannot mend by itself
//!   (`ClientError::is_retryable()` false: authorization, authentication, an invalid
//!   request, a deleted topic) is queued once for receive(), unless another task of the
//!   consumer told the same refusal and it has not been lifted since
//! ```
//!
//! A refusal is lifted when a task that met it succeeds, or when the consumer joins its group
//! (every request a member makes needs the group's rights, the join the topic's too).
//!
//! The tasks keep retrying even then: a refusal may be lifted (an ACL granted again), and the
//! consumer then carries on by itself; an application that would rather stop closes it.

use rustmq_protocol::ErrorCode;

use super::Inner;
use crate::error::ClientError;

/// What a task does after a failure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// The client is closed: the consumer ends.
    Stop,
    /// Try again after the backoff of `attempt` (0 after the first failure of a streak);
    /// `report` says whether to tell the application first.
    Retry {
        /// Failures of the streak before this one.
        attempt: u32,
        /// The first failure of the streak that retrying cannot mend by itself.
        report: bool,
    },
}

/// Consecutive failures of one task's requests, ended by a success.
#[derive(Debug, Default)]
pub(crate) struct Streak {
    failures: u32,
    /// The refusal this streak met first, by its text.
    refused: Option<String>,
}

impl Streak {
    /// Counts a failure and says what to do about it.
    pub(crate) fn failed(&mut self, error: &ClientError) -> Verdict {
        if matches!(error, ClientError::Closed) {
            return Verdict::Stop;
        }
        let attempt = self.failures;
        self.failures = self.failures.saturating_add(1);
        // A streak that began with a lost connection and went on to a refusal (a broker back
        // with other rules) is reported at the refusal. Being told how to rejoin is no
        // failure the application needs to hear of.
        let told_to_rejoin = matches!(
            error.error_code(),
            Some(ErrorCode::UnknownMember | ErrorCode::IllegalGeneration)
        );
        let report = !error.is_retryable() && !told_to_rejoin && self.refused.is_none();
        if report {
            self.refused = Some(error.to_string());
        }
        Verdict::Retry { attempt, report }
    }

    /// A success ends the streak; returns the refusal it had met, now lifted.
    fn succeeded(&mut self) -> Option<String> {
        std::mem::take(self).refused
    }
}

impl Inner {
    /// What a task does after its request failed with `error`, counted in `streak`: `None`
    /// once the client is closed (the consumer has ended, see
    /// [`client_closed`](Self::client_closed)), else the attempt to back off for, after
    /// `log` (given the error and the attempt) and after queueing the first failure of the
    /// streak that retrying cannot mend for `receive`.
    pub(crate) fn failed(
        &self,
        streak: &mut Streak,
        error: ClientError,
        log: impl FnOnce(&ClientError, u32),
    ) -> Option<u32> {
        let error = error.for_topic(&self.topic);
        match streak.failed(&error) {
            Verdict::Stop => {
                self.client_closed();
                None
            }
            Verdict::Retry { attempt, report } => {
                log(&error, attempt);
                if report {
                    let mut state = self.state.lock();
                    if state.refusals.insert(error.to_string()) {
                        state.push_error(error);
                        drop(state);
                        self.data.notify_waiters();
                    }
                }
                Some(attempt)
            }
        }
    }

    /// A task's request succeeded: ends `streak`, and lifts the refusal it had met (the same
    /// refusal met again is told again).
    pub(crate) fn succeeded(&self, streak: &mut Streak) {
        if let Some(refusal) = streak.succeeded() {
            self.state.lock().refusals.remove(&refusal);
        }
    }

    /// The consumer joined its group: every refusal told so far is lifted.
    pub(crate) fn joined(&self) {
        self.state.lock().refusals.clear();
    }

    /// The client this consumer uses was closed (a task's request failed with
    /// [`ClientError::Closed`]): the consumer stops as if closed, without committing or leaving
    /// since neither can be sent any more. `receive` answers `Ok(None)`, the fetch tasks stop at
    /// once and the group task when it sees this.
    pub(crate) fn client_closed(&self) {
        let mut state = self.state.lock();
        if state.closed {
            return;
        }
        state.closed = true;
        state.wake_fetchers();
        drop(state);
        self.data.notify_waiters();
        tracing::info!(topic = %self.topic, group = %self.group, "client closed: consumer stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused() -> ClientError {
        ClientError::Authorization("not authorized to read topic \"jobs\"".into())
    }

    fn lost() -> ClientError {
        ClientError::Connection("connection lost".into())
    }

    #[test]
    fn the_first_refusal_of_a_streak_is_reported_once_and_retried() {
        let mut streak = Streak::default();
        // A rejoin told to come back as a new member is retried quietly.
        let unknown = ClientError::Broker {
            code: ErrorCode::UnknownMember,
            message: "who?".into(),
        };
        assert_eq!(
            streak.failed(&unknown),
            Verdict::Retry {
                attempt: 0,
                report: false
            }
        );
        streak.succeeded();
        assert_eq!(
            streak.failed(&refused()),
            Verdict::Retry {
                attempt: 0,
                report: true
            }
        );
        assert_eq!(
            streak.failed(&refused()),
            Verdict::Retry {
                attempt: 1,
                report: false
            }
        );
        // The success lifts the refusal the streak met.
        assert_eq!(streak.succeeded(), Some(refused().to_string()));
        // A new streak: lost connections are retried quietly, a refusal after them is told.
        assert_eq!(
            streak.failed(&lost()),
            Verdict::Retry {
                attempt: 0,
                report: false
            }
        );
        let invalid = ClientError::Broker {
            code: ErrorCode::InvalidRequest,
            message: "no".into(),
        };
        assert_eq!(
            streak.failed(&invalid),
            Verdict::Retry {
                attempt: 1,
                report: true
            }
        );
        let throttled = ClientError::Broker {
            code: ErrorCode::Throttled,
            message: "later".into(),
        };
        assert_eq!(
            streak.failed(&throttled),
            Verdict::Retry {
                attempt: 2,
                report: false
            }
        );
    }

    #[test]
    fn a_closed_client_stops_the_task() {
        let mut streak = Streak::default();
        streak.failed(&refused());
        assert_eq!(streak.failed(&ClientError::Closed), Verdict::Stop);
    }
}
