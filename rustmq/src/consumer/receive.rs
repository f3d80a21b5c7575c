//! [`Receive`]: the future of [`Consumer::receive`](super::Consumer::receive).
//!
//! Written by hand rather than as an `async fn` so that a message goes from the partition's
//! buffer into the `Poll::Ready` returned without being moved on the way. An `async fn` moves
//! its result at least once more (into the `Poll`), and each wrapper (`Option`, `Result`, an
//! enum of outcomes) another: every move of the ~240-byte `ConsumerMessage` is a copy, and at
//! millions of messages a second the copies were a tenth of a consumer's time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::futures::Notified;
use tokio::time::{Instant, Sleep};

use super::state::Step;
use super::{ConsumerMessage, Inner};
use crate::error::Result;

pin_project! {
    /// The next message of a consumer, from [`Consumer::receive`](super::Consumer::receive):
    /// `Ok(None)` once the consumer is closed. Dropping it before it is ready loses nothing.
    #[must_use = "futures do nothing unless polled"]
    pub struct Receive<'a> {
        inner: &'a Arc<Inner>,
        // Made before the state is looked at, so that a notification sent after the look (the
        // consumer notifies every waiter) wakes this future even if it is registered later.
        #[pin]
        notified: Notified<'a>,
        // Armed while the earliest pending retry is not due yet (boxed: rarely used, and the
        // future stays small to move).
        retry_due: Option<Pin<Box<Sleep>>>,
    }
}

impl<'a> Receive<'a> {
    #[inline]
    pub(super) fn new(inner: &'a Arc<Inner>) -> Self {
        Self {
            inner,
            notified: inner.data.notified(),
            retry_due: None,
        }
    }
}

impl std::fmt::Debug for Receive<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receive").finish_non_exhaustive()
    }
}

impl Future for Receive<'_> {
    type Output = Result<Option<ConsumerMessage>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let inner: &Arc<Inner> = this.inner;
        loop {
            let mut state = inner.state.lock();
            let mut step = state.next_step(Instant::now);
            if matches!(step, Step::Wait(_)) {
                // Only now register for a wake-up (registering takes the notifier's lock, and
                // most calls find a buffered message), then look again so that a message
                // buffered in between is not missed.
                drop(state);
                this.notified.as_mut().enable();
                state = inner.state.lock();
                step = state.next_step(Instant::now);
            }
            match step {
                Step::Deliver(pick) => {
                    // Built in the `Poll` returned: the message is not moved again.
                    let taken = state.take(
                        pick,
                        |message, epoch, attempt| {
                            Poll::Ready(Ok(Some(ConsumerMessage::new(
                                Arc::clone(inner),
                                message,
                                epoch,
                                attempt,
                            ))))
                        },
                        // Never while `next_step` and `take` share one lock; if it were, the
                        // partition's buffer is empty after it, and the next poll (at once)
                        // looks again.
                        || {
                            debug_assert!(false, "a picked message was not there");
                            cx.waker().wake_by_ref();
                            Poll::Pending
                        },
                    );
                    drop(state);
                    if let Poll::Ready(Ok(Some(message))) = &taken {
                        if message.delivery_attempt() == 1 {
                            inner
                                .metrics
                                .messages_received
                                .fetch_add(1, Ordering::Relaxed);
                            inner.instruments.received.increment(1);
                        }
                    }
                    return taken;
                }
                Step::Error(e) => return Poll::Ready(Err(e)),
                Step::Closed => return Poll::Ready(Ok(None)),
                Step::Wait(due) => {
                    drop(state);
                    if this.notified.as_mut().poll(cx).is_ready() {
                        // Something changed: a new registration, then look again.
                        this.notified.set(inner.data.notified());
                        continue;
                    }
                    let Some(due) = due else {
                        *this.retry_due = None;
                        return Poll::Pending;
                    };
                    let sleep = match this.retry_due {
                        Some(sleep) => {
                            if sleep.deadline() != due {
                                sleep.as_mut().reset(due);
                            }
                            sleep
                        }
                        None => this
                            .retry_due
                            .insert(Box::pin(tokio::time::sleep_until(due))),
                    };
                    if sleep.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    *this.retry_due = None;
                }
            }
        }
    }
}
