//! [`Receive`], the future of [`Consumer::receive`](super::Consumer::receive), and the polling
//! it shares with [`ConsumerStream`](super::ConsumerStream).
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
use tokio::sync::futures::{Notified, OwnedNotified};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

use super::state::Step;
use super::{ConsumerMessage, Inner};
use crate::error::{ClientError, Result};

pin_project! {
    /// The next message of a consumer, from [`Consumer::receive`](super::Consumer::receive):
    /// `Ok(None)` once the consumer is closed. Dropping it before it is ready loses nothing.
    #[must_use = "futures do nothing unless polled"]
    pub struct Receive<'a> {
        inner: &'a Arc<Inner>,
        // Made and registered only when there is nothing to deliver (see `poll_next`).
        #[pin]
        notified: Option<Notified<'a>>,
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
            notified: None,
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
        let this = self.project();
        let mut registration = Borrowed {
            notified: this.notified,
            notify: &this.inner.data,
        };
        poll_next(this.inner, &mut registration, this.retry_due, cx)
    }
}

/// The stream's side of [`poll_next`]: its owned registration (boxed, so that the stream stays
/// `Unpin`; made when the stream first has to wait, and again after each notification).
pub(super) fn poll_stream(
    inner: &Arc<Inner>,
    notified: &mut Option<Pin<Box<OwnedNotified>>>,
    retry_due: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<ConsumerMessage>>> {
    let mut registration = Owned {
        notified,
        notify: &inner.data,
    };
    poll_next(inner, &mut registration, retry_due, cx)
}

/// What a receive answers, built where it is returned: `receive`'s `Result<Option<_>>`, the
/// stream's `Option<Result<_>>` (converting one into the other would copy the message).
trait Answer: Sized {
    fn message(message: ConsumerMessage) -> Self;
    fn error(e: ClientError) -> Self;
    fn closed() -> Self;
    /// The message answered, if any.
    fn delivered(&self) -> Option<&ConsumerMessage>;
}

impl Answer for Result<Option<ConsumerMessage>> {
    #[inline(always)]
    fn message(message: ConsumerMessage) -> Self {
        Ok(Some(message))
    }
    fn error(e: ClientError) -> Self {
        Err(e)
    }
    fn closed() -> Self {
        Ok(None)
    }
    #[inline(always)]
    fn delivered(&self) -> Option<&ConsumerMessage> {
        self.as_ref().ok().and_then(Option::as_ref)
    }
}

impl Answer for Option<Result<ConsumerMessage>> {
    #[inline(always)]
    fn message(message: ConsumerMessage) -> Self {
        Some(Ok(message))
    }
    fn error(e: ClientError) -> Self {
        Some(Err(e))
    }
    fn closed() -> Self {
        None
    }
    #[inline(always)]
    fn delivered(&self) -> Option<&ConsumerMessage> {
        self.as_ref().and_then(|r| r.as_ref().ok())
    }
}

/// A registration for the consumer's notifications (records buffered, a retry scheduled, a
/// resume, close). Made only when there is nothing to deliver: the state is looked at again
/// after it is registered, and everything that notifies changes the state first, under its
/// lock, so nothing falls between the two looks.
trait Registration {
    /// Makes it (if there is none) and registers it, so that a notification from now on wakes
    /// the task.
    fn enable(&mut self);
    /// Whether a notification arrived (registering the task's waker if not); only after
    /// `enable`.
    fn poll_notified(&mut self, cx: &mut Context<'_>) -> Poll<()>;
    /// Drops an arrived notification: the next wait makes a new one.
    fn reset(&mut self);
}

/// [`Receive`]'s registration, pinned inside it and borrowing the notifier.
struct Borrowed<'p, 'a> {
    notified: Pin<&'p mut Option<Notified<'a>>>,
    notify: &'a Notify,
}

impl Registration for Borrowed<'_, '_> {
    fn enable(&mut self) {
        if self.notified.is_none() {
            self.notified.set(Some(self.notify.notified()));
        }
        if let Some(notified) = self.notified.as_mut().as_pin_mut() {
            notified.enable();
        }
    }
    fn poll_notified(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.notified.as_mut().as_pin_mut() {
            Some(notified) => notified.poll(cx),
            None => Poll::Ready(()),
        }
    }
    fn reset(&mut self) {
        self.notified.set(None);
    }
}

/// The stream's registration, owning its share of the notifier.
struct Owned<'p> {
    notified: &'p mut Option<Pin<Box<OwnedNotified>>>,
    notify: &'p Arc<Notify>,
}

impl Registration for Owned<'_> {
    fn enable(&mut self) {
        self.notified
            .get_or_insert_with(|| Box::pin(Arc::clone(self.notify).notified_owned()))
            .as_mut()
            .enable();
    }
    fn poll_notified(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.notified {
            Some(notified) => notified.as_mut().poll(cx),
            None => Poll::Ready(()),
        }
    }
    fn reset(&mut self) {
        *self.notified = None;
    }
}

/// Polls for the consumer's next message: due redeliveries first, then the partitions'
/// buffers in turn, waiting for a notification (or the earliest pending retry) when there is
/// nothing to deliver.
fn poll_next<A: Answer>(
    inner: &Arc<Inner>,
    registration: &mut impl Registration,
    retry_due: &mut Option<Pin<Box<Sleep>>>,
    cx: &mut Context<'_>,
) -> Poll<A> {
    loop {
        let mut state = inner.state.lock();
        let mut step = state.next_step(Instant::now);
        if matches!(step, Step::Wait(_)) {
            // Only now register for a wake-up (registering takes the notifier's lock, and
            // most calls find a buffered message), then look again so that a message
            // buffered in between is not missed.
            drop(state);
            registration.enable();
            state = inner.state.lock();
            step = state.next_step(Instant::now);
        }
        match step {
            Step::Deliver(pick) => {
                // Built in the `Poll` returned: the message is not moved again.
                let taken = state.take(
                    pick,
                    |message, epoch, attempt| {
                        Poll::Ready(A::message(ConsumerMessage::new(
                            Arc::clone(inner),
                            message,
                            epoch,
                            attempt,
                        )))
                    },
                    // Never while `next_step` and `take` share one lock; if it were, the
                    // partition's buffer is empty after it, and the next poll (at once) looks
                    // again.
                    || {
                        debug_assert!(false, "a picked message was not there");
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    },
                );
                drop(state);
                if let Poll::Ready(answer) = &taken {
                    if answer
                        .delivered()
                        .is_some_and(|m| m.delivery_attempt() == 1)
                    {
                        inner
                            .metrics
                            .messages_received
                            .fetch_add(1, Ordering::Relaxed);
                        inner.instruments.received.increment(1);
                    }
                }
                return taken;
            }
            Step::Error(e) => return Poll::Ready(A::error(e)),
            Step::Closed => return Poll::Ready(A::closed()),
            Step::Wait(due) => {
                drop(state);
                if registration.poll_notified(cx).is_ready() {
                    // Something changed: look again (registering anew if there is still
                    // nothing).
                    registration.reset();
                    continue;
                }
                let Some(due) = due else {
                    *retry_due = None;
                    return Poll::Pending;
                };
                let sleep = match retry_due {
                    Some(sleep) => {
                        if sleep.deadline() != due {
                            sleep.as_mut().reset(due);
                        }
                        sleep
                    }
                    None => retry_due.insert(Box::pin(tokio::time::sleep_until(due))),
                };
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *retry_due = None;
            }
        }
    }
}
