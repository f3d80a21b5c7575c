//! [`SendAsync`]: the future of [`Producer::send_async`] and [`Producer::send_async_with`].
//!
//! Written by hand rather than as an `async fn`: an `async fn` copies its message argument into
//! its future when called, and the future is moved again where it is awaited, two copies of
//! the ~200-byte message per send on top of building it. Built in place by an inlined
//! constructor, this future holds the message once and lends it to `enqueue`.

use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use futures::future::{BoxFuture, Either};

use super::{poll_budget, Accepted, Producer, Waiter};
use crate::error::Result;
use crate::message::Message;

/// The future of [`Producer::send_async`]: resolves once the message is accepted into its
/// batch (which may wait for buffer room), not when the broker acknowledges it. Like any
/// future, it does nothing until polled.
#[must_use = "futures do nothing unless polled"]
pub struct SendAsync<'a> {
    producer: &'a Producer,
    message: Message,
    /// Who is told the outcome; taken when the message is handed over.
    waiter: Option<Waiter>,
    /// The wait for buffer room, when the buffer was full.
    waiting: Option<BoxFuture<'a, Result<Accepted>>>,
}

impl<'a> SendAsync<'a> {
    #[inline(always)]
    pub(super) fn new(producer: &'a Producer, message: Message, waiter: Waiter) -> Self {
        Self {
            producer,
            message,
            waiter: Some(waiter),
            waiting: None,
        }
    }
}

impl std::fmt::Debug for SendAsync<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendAsync")
            .field("topic", &self.message.topic)
            .field("waiting_for_room", &self.waiting.is_some())
            .finish_non_exhaustive()
    }
}

impl Future for SendAsync<'_> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        if let Some(waiting) = &mut this.waiting {
            let accepted = ready!(waiting.as_mut().poll(cx));
            this.waiting = None;
            return Poll::Ready(accepted.map(drop));
        }
        // The task's budget is spent before the message is accepted: a loop of sends yields
        // to the producer's sender task (on a one-thread runtime, the one that sends).
        ready!(poll_budget(cx));
        let waiter = this
            .waiter
            .take()
            .expect("`SendAsync` polled after it completed");
        match this.producer.enqueue(&mut this.message, waiter, false) {
            Either::Left(done) => Poll::Ready(done.into_inner().map(drop)),
            Either::Right(mut waiting) => {
                let polled = waiting.as_mut().poll(cx).map(|r| r.map(drop));
                if polled.is_pending() {
                    this.waiting = Some(waiting);
                }
                polled
            }
        }
    }
}
