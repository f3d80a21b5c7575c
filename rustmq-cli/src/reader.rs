//! Reading partitions without a consumer group: one long-polling fetch task per partition,
//! from offsets the caller chooses, into one channel. Nothing is committed.

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
) -> Result<(mpsc::Receiver<Result<Message, ClientError>>, JoinSet<()>), ClientError> {
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
    tx: &mpsc::Sender<Result<Message, ClientError>>,
) -> Result<(), ClientError> {
    loop {
        let request = Request::Fetch(FetchRequest {
            topic: topic.to_owned(),
            partition,
            offset,
            max_bytes: MAX_BYTES,
            max_wait_ms: MAX_WAIT.as_millis() as u32,
        });
        let records = match client.raw_request(request).await? {
            Response::Fetch(r) => r.records,
            other => {
                return Err(ClientError::UnexpectedResponse(format!(
                    "{:?} to a fetch",
                    other.kind()
                )))
            }
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
                if tx
                    .send(Ok(to_message(topic, partition, record)?))
                    .await
                    .is_err()
                {
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

fn to_message(topic: &str, partition: u32, record: Record) -> Result<Message, ClientError> {
    let headers: Vec<(String, String)> = record
        .headers
        .into_iter()
        .map(|h| (h.key, String::from_utf8_lossy(&h.value).into_owned()))
        .collect();
    let mut builder = Message::builder()
        .topic(topic)
        .payload(record.value.unwrap_or_default())
        .headers(headers)
        .timestamp(u64::try_from(record.timestamp).unwrap_or(0));
    if let Some(key) = record.key {
        builder = builder.key(key);
    }
    let mut message = builder.build()?;
    message.partition = partition;
    message.offset = record.offset;
    message.id = MessageId::position(message.topic.clone(), partition, record.offset);
    Ok(message)
}
