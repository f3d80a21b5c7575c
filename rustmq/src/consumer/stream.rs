//! [`ConsumerStream`]: a consumer as a `futures::Stream`.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::stream::{BoxStream, Stream, StreamExt};

use super::{Consumer, ConsumerMessage};
use crate::error::Result;

/// The messages of a [`Consumer`] as a [`Stream`], from [`Consumer::stream`]. It ends when the
/// consumer is closed; errors are items and the stream continues after them. It holds a
/// handle of the consumer, which keeps consuming while the stream lives.
pub struct ConsumerStream {
    inner: BoxStream<'static, Result<ConsumerMessage>>,
}

impl ConsumerStream {
    pub(crate) fn new(consumer: Consumer) -> Self {
        let stream = futures::stream::unfold(consumer, |consumer| async move {
            match consumer.receive().await {
                Ok(Some(message)) => Some((Ok(message), consumer)),
                Ok(None) => None,
                Err(e) => Some((Err(e), consumer)),
            }
        });
        Self {
            inner: stream.boxed(),
        }
    }
}

impl Stream for ConsumerStream {
    type Item = Result<ConsumerMessage>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl fmt::Debug for ConsumerStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConsumerStream").finish_non_exhaustive()
    }
}
