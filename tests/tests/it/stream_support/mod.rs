//! Helpers shared by the `stream_*` tests: topics, inputs, reading outputs back, waiting.

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use rustmq::protocol::{DescribeGroupRequest, Request, Response};
use rustmq::stream::MessageProcessor;
use rustmq::testing::TestBroker;
use rustmq::{async_trait, ClientError, Message, Result, RustMqClient};

/// A record read back from a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    pub partition: u32,
    pub offset: u64,
    pub payload: String,
    pub key: Option<String>,
    pub timestamp: i64,
    pub headers: HashMap<String, String>,
}

pub async fn broker() -> (TestBroker, RustMqClient) {
    tests::init_tracing();
    let broker = TestBroker::start().await.expect("broker");
    let client = broker.client().await.expect("client");
    (broker, client)
}

/// Sends `(partition, payload, timestamp)` inputs to `topic` and waits for them.
pub async fn send(client: &RustMqClient, topic: &str, inputs: &[(u32, String, u64)]) {
    let producer = client.create_producer(topic).await.expect("producer");
    let messages = inputs
        .iter()
        .map(|(p, payload, ts)| {
            Message::builder()
                .topic(topic)
                .partition(*p)
                .payload(payload.clone())
                .timestamp(*ts)
                .build()
                .expect("message")
        })
        .collect();
    producer.send_batch(messages).await.expect("inputs sent");
}

/// Every record of every partition of `topic`.
pub async fn read_all(client: &RustMqClient, topic: &str) -> Vec<Out> {
    let partitions = client
        .describe_topic(topic)
        .await
        .map(|d| d.partition_count())
        .unwrap_or(0);
    let mut out = Vec::new();
    for p in 0..partitions {
        let (records, _) = tests::fetch_all(client, topic, p, 0).await;
        out.extend(records.into_iter().map(|r| {
            Out {
                partition: p,
                offset: r.offset,
                payload: String::from_utf8_lossy(r.value.as_deref().unwrap_or_default())
                    .into_owned(),
                key: r.key.map(|k| String::from_utf8_lossy(&k).into_owned()),
                timestamp: r.timestamp,
                headers: r
                    .headers
                    .into_iter()
                    .map(|h| (h.key, String::from_utf8_lossy(&h.value).into_owned()))
                    .collect(),
            }
        }));
    }
    out
}

/// Payloads of `topic`, sorted.
pub async fn payloads(client: &RustMqClient, topic: &str) -> Vec<String> {
    let mut p: Vec<String> = read_all(client, topic)
        .await
        .into_iter()
        .map(|o| o.payload)
        .collect();
    p.sort();
    p
}

/// Committed entries of a group.
pub async fn committed(client: &RustMqClient, group: &str) -> HashMap<(String, u32), u64> {
    match client
        .raw_request(Request::DescribeGroup(DescribeGroupRequest {
            group: group.into(),
        }))
        .await
    {
        Ok(Response::DescribeGroup(r)) => r
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.offset))
            .collect(),
        _ => HashMap::new(),
    }
}

/// Polls `check` until it holds, failing after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `topic` holds `n` records.
pub async fn wait_records(client: &RustMqClient, topic: &str, n: usize) -> Vec<Out> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let records = read_all(client, topic).await;
        if records.len() >= n {
            return records;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {n} records in {topic} (have {})",
            records.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Upper-cases payloads; fails (every attempt) on payloads starting with `bad`, and on the
/// first `flaky` attempts of payloads starting with `flaky`.
pub struct Upper {
    pub attempts: parking_lot::Mutex<HashMap<String, u32>>,
    pub flaky: u32,
}

impl Upper {
    pub fn new(flaky: u32) -> Self {
        Self {
            attempts: parking_lot::Mutex::new(HashMap::new()),
            flaky,
        }
    }

    fn check(&self, m: &Message) -> Result<String> {
        let text = m.payload_as_string()?;
        let n = {
            let mut a = self.attempts.lock();
            let n = a.entry(text.clone()).or_insert(0);
            *n += 1;
            *n
        };
        if text.starts_with("bad") || (text.starts_with("flaky") && n <= self.flaky) {
            return Err(ClientError::InvalidMessage(format!(
                "cannot process {text}"
            )));
        }
        Ok(text.to_uppercase())
    }
}

#[async_trait]
impl MessageProcessor for Upper {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        let text = self.check(m)?;
        Ok(Some(
            Message::builder()
                .topic("unused")
                .payload(text)
                .timestamp(m.timestamp)
                .build()?,
        ))
    }
}

/// Joins a batch's or window's payloads with `|` into one output (any member starting with
/// `bad` fails the whole unit).
pub struct Join(pub Upper);

#[async_trait]
impl MessageProcessor for Join {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        self.0.process(m).await
    }

    async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
        let mut parts = Vec::new();
        for m in messages {
            parts.push(self.0.check(m)?);
        }
        let out = Message::builder()
            .topic("unused")
            .payload(parts.join("|"))
            .build()?;
        Ok(vec![Some(out)])
    }
}
