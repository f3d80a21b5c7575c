//! [`ConsumerStream`]: a consumer as a `futures::Stream`.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::Stream;
use tokio::sync::futures::OwnedNotified;
use tokio::time::Sleep;

use super::{receive, Consumer, ConsumerMessage};
use crate::error::Result;

/// The messages of a [`Consumer`] as a [`Stream`], from [`Consumer::stream`]. It ends when the
/// consumer is closed; errors are items and the stream continues after them. It holds a
/// handle of the consumer, which keeps consuming while the stream lives.
///
/// It polls as [`Consumer::receive`]'s future does, each message built where it is returned.
pub struct ConsumerStream {
    consumer: Consumer,
    // Made when the stream has to wait (see `receive::poll_next`).
    notified: Option<Pin<Box<OwnedNotified>>>,
    retry_due: Option<Pin<Box<Sleep>>>,
}

impl ConsumerStream {
    pub(crate) fn new(consumer: Consumer) -> Self {
        Self {
            consumer,
            notified: None,
            retry_due: None,
        }
    }
}

impl Stream for ConsumerStream {
    type Item = Result<ConsumerMessage>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        receive::poll_stream(
            &this.consumer.inner,
            &mut this.notified,
            &mut this.retry_due,
            cx,
        )
    }
}

impl fmt::Debug for ConsumerStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerStream").finish_non_exhaustive()
    }
}
