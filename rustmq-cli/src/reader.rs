//! Reading partitions without a consumer group: one long-polling fetch task per partition,
//! from offsets the caller chooses, into one channel. Nothing is committed.
//!
//! Records become messages as a group member receives them (not through `Message::builder`,
//! whose checks are for messages to send: a stored record with an empty header name is still
//! read). A partition whose next offset is no longer stored (retention deleted it) continues at
//! its first stored offset, one whose log ends below it at its end, and says so on the channel.

use std::time::Duration;

use rustmq::protocol::{
    BatchIter, FetchRequest, ListOffsetsRequest, OffsetSpec, Record, Request, Response,
};
use rustmq::{ClientError, Message, MessageId, RustMqClient};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// Where to start in each partition.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Start {
    /// The first stored offset.
    Earliest,
    /// The high watermark: only new messages.
    Latest,
    /// This offset, moved into the stored range.
    Offset(u64),
    /// The first message at or after this time (ms).
    Timestamp(u64),
}

/// What the reader tasks send.
#[derive(Debug)]
pub(crate) enum Event {
    /// The next message of a partition.
    Message(Message),
    /// `partition`'s next offset, `from`, was no longer stored: it continues at `to`, its first
    /// stored offset, or, where the log ends below `from`, its end.
    Skipped {
        /// The partition.
        partition: u32,
        /// The offset that was to be read next.
        from: u64,
        /// Where reading continues.
        to: u64,
    },
}

/// Longest a fetch waits at the broker for new data.
const MAX_WAIT: Duration = Duration::from_millis(500);
/// Soft cap of one fetch answer.
const MAX_BYTES: u32 = 1024 * 1024;

/// Starts reading `partitions` of `topic` from `start`; messages (or a fatal error) arrive on
/// the returned channel, each partition in order. Dropping the receiver stops the tasks.
pub(crate) async fn start(
    client: &RustMqClient,
    topic: &str,
    partitions: &[u32],
    start: Start,
) -> Result<(mpsc::Receiver<Result<Event, ClientError>>, JoinSet<()>), ClientError> {
    let (tx, rx) = mpsc::channel(1024);
    let mut tasks = JoinSet::new();
    for &partition in partitions {
        let offset = start_offset(client, topic, partition, start).await?;
        let (client, topic, tx) = (client.clone(), topic.to_owned(), tx.clone());
        tasks.spawn(async move {
            if let Err(e) = read(&client, &topic, partition, offset, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
    }
    Ok((rx, tasks))
}

async fn list_offset(
    client: &RustMqClient,
    topic: &str,
    partition: u32,
    spec: OffsetSpec,
) -> Result<u64, ClientError> {
    let request = Request::ListOffsets(ListOffsetsRequest {
        topic: topic.to_owned(),
        partition,
        spec,
    });
    match client.raw_request(request).await? {
        Response::ListOffsets(r) => Ok(r.offset),
        other => Err(ClientError::UnexpectedResponse(format!(
            "{:?} to a list-offsets request",
            other.kind()
        ))),
    }
}

/// `partition`'s first stored offset and its high watermark.
async fn log_bounds(
    client: &RustMqClient,
    topic: &str,
    partition: u32,
) -> Result<(u64, u64), ClientError> {
    let request = Request::ListOffsets(ListOffsetsRequest {
        topic: topic.to_owned(),
        partition,
        spec: OffsetSpec::Earliest,
    });
    match client.raw_request(request).await? {
        Response::ListOffsets(r) => Ok((r.offset, r.high_watermark)),
        other => Err(ClientError::UnexpectedResponse(format!(
            "{:?} to a list-offsets request",
            other.kind()
        ))),
    }
}

async fn start_offset(
    client: &RustMqClient,
    topic: &str,
    partition: u32,
    start: Start,
) -> Result<u64, ClientError> {
    Ok(match start {
        Start::Earliest => list_offset(client, topic, partition, OffsetSpec::Earliest).await?,
        Start::Latest => list_offset(client, topic, partition, OffsetSpec::Latest).await?,
        Start::Timestamp(t) => {
            // As a consumer of a group reads it (`--group`): below 10^11, seconds.
            let ms = rustmq::consumer::timestamp_ms(t);
            let ts = i64::try_from(ms).unwrap_or(i64::MAX);
            list_offset(client, topic, partition, OffsetSpec::Timestamp(ts)).await?
        }
        Start::Offset(o) => {
            let earliest = list_offset(client, topic, partition, OffsetSpec::Earliest).await?;
            let latest = list_offset(client, topic, partition, OffsetSpec::Latest).await?;
            o.clamp(earliest, latest.max(earliest))
        }
    })
}

async fn read(
    client: &RustMqClient,
    topic: &str,
    partition: u32,
    mut offset: u64,
    tx: &mpsc::Sender<Result<Event, ClientError>>,
) -> Result<(), ClientError> {
    // What every message of the partition shares; each record fills in the rest.
    let template = Message::builder().topic(topic).timestamp(0).build()?;
    // The broker may hold a fetch for MAX_WAIT before it answers: that is not the request's
    // own time, which `request_timeout` bounds (as the group consumer's fetches are given).
    let timeout = client.config().request_timeout.saturating_add(MAX_WAIT);
    loop {
        let request = Request::Fetch(FetchRequest {
            topic: topic.to_owned(),
            partition,
            offset,
            max_bytes: MAX_BYTES,
            max_wait_ms: MAX_WAIT.as_millis() as u32,
        });
        let records = match client.raw_request_with_timeout(request, timeout).await {
            Ok(Response::Fetch(r)) => r.records,
            Ok(other) => {
                return Err(ClientError::UnexpectedResponse(format!(
                    "{:?} to a fetch",
                    other.kind()
                )))
            }
            // Retention deleted the next offset: on from the first stored one. Or the log
            // ends below it (the topic was made again, or another broker has a shorter log):
            // on from its end, as the group consumer does, not from its start again.
            Err(e @ ClientError::OffsetOutOfRange(_)) => {
                let (first, end) = log_bounds(client, topic, partition).await?;
                let to = if offset > end { end } else { first };
                if to == offset {
                    // Not a matter of where the log starts or ends: moving would not help.
                    return Err(e);
                }
                let skipped = Event::Skipped {
                    partition,
                    from: offset,
                    to,
                };
                if tx.send(Ok(skipped)).await.is_err() {
                    return Ok(());
                }
                offset = to;
                continue;
            }
            Err(e) => return Err(e),
        };
        for batch in BatchIter::new(records) {
            let batch = batch.map_err(|e| ClientError::Deserialization(e.to_string()))?;
            for record in batch
                .records()
                .map_err(|e| ClientError::Deserialization(e.to_string()))?
            {
                let record = record.map_err(|e| ClientError::Deserialization(e.to_string()))?;
                if record.offset < offset {
                    continue;
                }
                offset = record.offset + 1;
                let message = to_message(&template, partition, record);
                if tx.send(Ok(Event::Message(message))).await.is_err() {
                    return Ok(());
                }
            }
            offset = offset.max(batch.header().next_offset());
        }
        if tx.is_closed() {
            return Ok(());
        }
    }
}

/// A fetched record as the message a group member receives (the fields
/// `rustmq::consumer`'s fetcher gives it), made from `template` (the topic's) without the
/// checks of `Message::builder`: those are for messages to send, and a stored record that
/// fails them (an empty header name, say) must still be read, or every later run stops at it.
fn to_message(template: &Message, partition: u32, record: Record) -> Message {
    let mut message = template.clone();
    message.id = MessageId::position(message.topic.clone(), partition, record.offset);
    message.partition = partition;
    message.offset = record.offset;
    message.key = record.key;
    message.payload = record.value.unwrap_or_default();
    message.headers = record
        .headers
        .into_iter()
        .map(|h| (h.key, String::from_utf8_lossy(&h.value).into_owned()))
        .collect();
    message.timestamp = u64::try_from(record.timestamp).unwrap_or(0);
    message
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use rustmq::protocol::{BatchIter, RecordBatchBuilder};

    use super::*;

    /// A record with an empty header name, which `Message::builder` refuses, is read as the
    /// group consumer reads it.
    #[test]
    fn a_record_the_builder_refuses_is_read() {
        let mut batch = RecordBatchBuilder::new();
        batch.push(
            1_700_000_000_000,
            Some(b"k"),
            Some(b"v"),
            [("", b"x".as_slice())],
        );
        let bytes: Bytes = batch.build().unwrap();
        let record = BatchIter::new(bytes)
            .next()
            .unwrap()
            .unwrap()
            .records()
            .unwrap()
            .next()
            .unwrap()
            .unwrap();
        let template = Message::builder().topic("t").timestamp(0).build().unwrap();
        let m = to_message(&template, 3, record);
        assert_eq!((m.partition, m.offset), (3, 0));
        assert_eq!(m.id.to_string(), "t-3-0");
        assert_eq!(m.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(&m.payload[..], b"v");
        assert_eq!(m.headers.get(""), Some(&"x".to_owned()));
        assert_eq!(m.timestamp, 1_700_000_000_000);
    }
}
