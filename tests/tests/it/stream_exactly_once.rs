//! Exactly-once: a stream killed at a random point (its tasks aborted mid-flight, or the
//! broker restarted under it) and started again produces every input's output exactly once.
//! 24 seeded runs over individual, batch and windowed modes (21 kills, 3 broker restarts).

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::stream_support::*;
use rustmq::stream::{MessageProcessor, MessageStream, StreamConfig, StreamMode};
use rustmq::testing::TestBroker;
use rustmq::{async_trait, Message, Result, RustMqClient};

const INPUTS: usize = 150;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Copies payloads, yielding a random number of times so that kills land mid-flight.
struct Copy;

#[async_trait]
impl MessageProcessor for Copy {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        for _ in 0..(m.offset % 3) {
            tokio::task::yield_now().await;
        }
        Ok(Some(
            Message::builder()
                .topic("x")
                .payload(m.payload.clone())
                .build()?,
        ))
    }
}

#[derive(Clone, Copy, Debug)]
enum Kill {
    /// Drop the stream without stop(), this many times.
    Drop(u32),
    /// Restart the broker under the running stream.
    Broker,
}

async fn stream(
    client: &RustMqClient,
    run: u64,
    mode: &StreamMode,
    commit_ms: u64,
) -> MessageStream {
    let config = StreamConfig {
        input_topics: vec![format!("in-{run}")],
        output_topic: Some(format!("out-{run}")),
        consumer_group: format!("g-{run}"),
        parallelism: 3,
        max_in_flight: 64,
        exactly_once: true,
        mode: mode.clone(),
        ..Default::default()
    };
    let s = MessageStream::new(client.clone(), config)
        .await
        .unwrap()
        .with_session_timeout(Duration::from_secs(2))
        .with_commit_interval(Duration::from_millis(commit_ms));
    match mode {
        StreamMode::Windowed { .. } => s.with_processor(Join(Upper::new(0))),
        _ => s.with_processor(Copy),
    }
}

async fn run_once(
    broker: &mut TestBroker,
    client: &RustMqClient,
    run: u64,
    mode: StreamMode,
    kill: Kill,
) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ (run + 1).wrapping_mul(0x1234_5678_9ABC_DEF1));
    let windowed = matches!(mode, StreamMode::Windowed { .. });
    let partitions = if windowed { 1 } else { 2 };
    client
        .create_topic(&format!("in-{run}"), partitions)
        .await
        .unwrap();
    client.create_topic(&format!("out-{run}"), 2).await.unwrap();
    let inputs: Vec<(u32, String, u64)> = (0..INPUTS)
        .map(|i| ((i as u32) % partitions, format!("r{run}-{i:03}"), i as u64))
        .collect();
    send(client, &format!("in-{run}"), &inputs).await;

    let kills = match kill {
        Kill::Drop(n) => n,
        Kill::Broker => 1,
    };
    for _ in 0..kills {
        let s = stream(client, run, &mode, 10 + rng.below(150)).await;
        s.start().await.unwrap();
        let at = rng.below(INPUTS as u64 + 20);
        let metrics = s.metrics().await;
        // Killed at a random count of messages done, or after 3 s: a window still open (or a
        // unit whose outputs are not stored) does not count, and the count may never get there.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while metrics.messages_processed.load(Ordering::Relaxed)
            + metrics.messages_recovered.load(Ordering::Relaxed)
            < at
            && tokio::time::Instant::now() < deadline
        {
            tokio::task::yield_now().await;
        }
        match kill {
            Kill::Drop(_) => drop(s),
            Kill::Broker => {
                tests::restart_broker(broker).await;
                // The same stream recovers by itself: finish with it.
                finish(client, run, &mode, s, &inputs).await;
                return;
            }
        }
    }
    let s = stream(client, run, &mode, 50).await;
    s.start().await.unwrap();
    finish(client, run, &mode, s, &inputs).await;
}

/// Waits until every input is done, stops, and compares outputs with inputs.
async fn finish(
    client: &RustMqClient,
    run: u64,
    mode: &StreamMode,
    s: MessageStream,
    inputs: &[(u32, String, u64)],
) {
    let out = format!("out-{run}");
    if let StreamMode::Windowed { .. } = mode {
        // Tumbling windows of 10 ms over timestamps 0..150: the last window never closes.
        let want: Vec<String> = inputs[..INPUTS - 10]
            .chunks(10)
            .map(|c| {
                c.iter()
                    .map(|i| i.1.to_uppercase())
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect();
        wait_records(client, &out, want.len()).await;
        s.stop().await.unwrap();
        let mut got: Vec<String> = read_all(client, &out)
            .await
            .into_iter()
            .map(|o| o.payload)
            .collect();
        got.sort();
        assert_eq!(got, want, "run {run}: each window exactly once");
        return;
    }
    let group = format!("g-{run}");
    let input = format!("in-{run}");
    eventually(
        &format!("run {run} committed"),
        Duration::from_secs(20),
        || {
            let client = client.clone();
            let (group, input) = (group.clone(), input.clone());
            async move {
                let c = committed(&client, &group).await;
                (0..2).all(|p| c.get(&(input.clone(), p)) == Some(&((INPUTS / 2) as u64)))
            }
        },
    )
    .await;
    s.stop().await.unwrap();
    let mut want: Vec<String> = inputs.iter().map(|i| i.1.clone()).collect();
    want.sort();
    let got = payloads(client, &out).await;
    assert_eq!(got.len(), want.len(), "run {run}: output count");
    assert_eq!(got, want, "run {run}: outputs equal inputs as multisets");
}

fn mode(run: u64) -> StreamMode {
    match run % 3 {
        0 => StreamMode::Individual,
        1 => StreamMode::Batch {
            batch_size: 16,
            batch_timeout: Duration::from_millis(20),
        },
        _ => StreamMode::Windowed {
            window_size: Duration::from_millis(10),
            slide_interval: Duration::from_millis(10),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_dropped_mid_flight_produce_every_output_exactly_once() {
    let (mut broker, client) = broker().await;
    for run in 0..21u64 {
        let kill = Kill::Drop(1 + (run as u32 % 2));
        tracing::info!(run, ?kill, "exactly-once run");
        run_once(&mut broker, &client, run, mode(run), kill).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restarts_under_a_stream_produce_every_output_exactly_once() {
    let (mut broker, client) = broker().await;
    for run in 100..103u64 {
        run_once(&mut broker, &client, run, mode(run), Kill::Broker).await;
    }
}

/// Passes each input on as it is, headers included.
struct PassThrough;

#[async_trait]
impl MessageProcessor for PassThrough {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        Ok(Some(m.clone()))
    }
}

/// A stream reading another exactly-once stream's outputs, and passing their headers on, writes
/// its own claim, not one mixed with the upstream's (whose batch named a range of its own
/// inputs): restarted after its outputs were written but not committed, it passes over exactly
/// its inputs, and each has its output once.
#[tokio::test]
async fn a_stream_reading_another_streams_outputs_claims_only_its_own_inputs() {
    use rustmq::stream::{SRC_GROUP, SRC_OFFSET, SRC_PARTITION, SRC_RANGES, SRC_TOPIC};
    let (_broker, client) = broker().await;
    client.create_topic("mid", 1).await.unwrap();
    client.create_topic("down", 1).await.unwrap();
    const N: usize = 20;
    // What an upstream exactly-once stream in batch mode writes.
    let upstream = client.create_producer("mid").await.unwrap();
    for i in 0..N {
        let m = Message::builder()
            .topic("mid")
            .payload(format!("m{i:02}"))
            .header(SRC_GROUP, "upstream")
            .header(SRC_TOPIC, "in")
            .header(SRC_PARTITION, "0")
            .header(SRC_OFFSET, "999")
            .header(SRC_RANGES, "in:0:990-999")
            .build()
            .unwrap();
        upstream.send(m).await.unwrap();
    }
    let config = StreamConfig {
        input_topics: vec!["mid".into()],
        output_topic: Some("down".into()),
        consumer_group: "downstream".into(),
        parallelism: 1,
        exactly_once: true,
        mode: StreamMode::Individual,
        ..Default::default()
    };
    let start = |commit: Duration| {
        let config = config.clone();
        let client = client.clone();
        async move {
            let s = MessageStream::new(client, config)
                .await
                .unwrap()
                .with_session_timeout(Duration::from_secs(2))
                .with_commit_interval(commit)
                .with_processor(PassThrough);
            s.start().await.unwrap();
            s
        }
    };
    // Outputs written, never committed: dropped before its first commit.
    let first = start(Duration::from_secs(3600)).await;
    wait_records(&client, "down", N).await;
    drop(first);
    for out in read_all(&client, "down").await {
        let header = |name: &str| out.headers.get(name).map(String::as_str);
        assert_eq!(header(SRC_GROUP), Some("downstream"), "{out:?}");
        assert_eq!(header(SRC_TOPIC), Some("mid"), "{out:?}");
        assert_eq!(
            header(SRC_RANGES),
            None,
            "a single input names no range: {out:?}"
        );
    }
    let second = start(Duration::from_millis(50)).await;
    eventually("the restart committed", Duration::from_secs(20), || {
        let client = client.clone();
        async move {
            committed(&client, "downstream")
                .await
                .get(&("mid".into(), 0))
                == Some(&(N as u64))
        }
    })
    .await;
    second.stop().await.unwrap();
    let got = payloads(&client, "down").await;
    let want: Vec<String> = (0..N).map(|i| format!("m{i:02}")).collect();
    assert_eq!(got, want, "each input's output once");
}
