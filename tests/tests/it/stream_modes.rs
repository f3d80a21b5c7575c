//! Stream processing modes against a real broker: individual (order per partition), batch
//! (size and timeout), tumbling and sliding windows with exact contents and a late message,
//! several input topics, the typed variant, and a graceful stop under load.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::stream_support::*;
use rustmq::stream::MessageProcessor;
use rustmq::stream::{
    LatePolicy, MessageStream, StreamConfig, StreamMode, TypedProcessor, WindowOptions,
};
use rustmq::{async_trait, Message, Result, Topic};
use serde::{Deserialize, Serialize};

fn config(inputs: &[&str], output: &str, group: &str, mode: StreamMode) -> StreamConfig {
    StreamConfig {
        input_topics: inputs.iter().map(|s| s.to_string()).collect(),
        output_topic: Some(output.into()),
        consumer_group: group.into(),
        parallelism: 3,
        mode,
        ..Default::default()
    }
}

#[tokio::test]
async fn individual_mode_keeps_each_partitions_order() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 3).await.unwrap();
    client.create_topic("out", 3).await.unwrap();
    let inputs: Vec<(u32, String, u64)> = (0..90)
        .map(|i| (i % 3, format!("m{i:03}"), 1000 + i as u64))
        .collect();
    send(&client, "in", &inputs).await;
    let stream = MessageStream::new(
        client.clone(),
        config(&["in"], "out", "g", StreamMode::Individual),
    )
    .await
    .unwrap()
    .with_processor(Upper::new(0));
    stream.start().await.unwrap();
    let outs = wait_records(&client, "out", 90).await;
    stream.stop().await.unwrap();
    // Keyless outputs of input partition p go to output partition p, in input order.
    for p in 0..3u32 {
        let got: Vec<String> = outs
            .iter()
            .filter(|o| o.partition == p)
            .map(|o| o.payload.clone())
            .collect();
        let want: Vec<String> = inputs
            .iter()
            .filter(|i| i.0 == p)
            .map(|i| i.1.to_uppercase())
            .collect();
        assert_eq!(got, want, "partition {p}");
    }
    let metrics = stream.metrics().await;
    assert_eq!(metrics.messages_processed.load(Ordering::Relaxed), 90);
    assert!(*metrics.average_processing_time.try_read().unwrap() >= 0.0);
    let committed = committed(&client, "g").await;
    for p in 0..3 {
        assert_eq!(committed.get(&("in".to_string(), p)), Some(&30));
    }
}

#[tokio::test]
async fn batch_mode_closes_on_size_then_on_timeout() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    let inputs: Vec<(u32, String, u64)> = (0..25).map(|i| (0, format!("m{i:02}"), 1)).collect();
    send(&client, "in", &inputs).await;
    let mode = StreamMode::Batch {
        batch_size: 10,
        batch_timeout: Duration::from_millis(300),
    };
    let mut c = config(&["in"], "out", "g", mode);
    c.parallelism = 1;
    let stream = MessageStream::new(client.clone(), c)
        .await
        .unwrap()
        .with_processor(Join(Upper::new(0)));
    stream.start().await.unwrap();
    let outs = wait_records(&client, "out", 3).await;
    stream.stop().await.unwrap();
    let sizes: Vec<usize> = outs.iter().map(|o| o.payload.split('|').count()).collect();
    assert_eq!(sizes, vec![10, 10, 5]);
    let all: Vec<String> = outs
        .iter()
        .flat_map(|o| o.payload.split('|').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    assert_eq!(
        all,
        inputs
            .iter()
            .map(|i| i.1.to_uppercase())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn batch_mode_default_process_batch_maps_each_message() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 2).await.unwrap();
    client.create_topic("out", 2).await.unwrap();
    let inputs: Vec<(u32, String, u64)> = (0..40).map(|i| (i % 2, format!("m{i:02}"), 1)).collect();
    send(&client, "in", &inputs).await;
    let mode = StreamMode::Batch {
        batch_size: 7,
        batch_timeout: Duration::from_millis(100),
    };
    let stream = MessageStream::new(client.clone(), config(&["in"], "out", "g", mode))
        .await
        .unwrap()
        .with_processor(Upper::new(0));
    stream.start().await.unwrap();
    wait_records(&client, "out", 40).await;
    stream.stop().await.unwrap();
    let mut want: Vec<String> = inputs.iter().map(|i| i.1.to_uppercase()).collect();
    want.sort();
    assert_eq!(payloads(&client, "out").await, want);
}

/// Inputs with chosen timestamps: `(payload, ts)` on one partition, in this order.
async fn windowed(
    mode: StreamMode,
    inputs: &[(&str, u64)],
    lateness: u64,
    windows: usize,
) -> (Vec<String>, u64, Vec<String>) {
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    let rows: Vec<(u32, String, u64)> = inputs
        .iter()
        .map(|(p, ts)| (0, p.to_string(), *ts))
        .collect();
    send(&client, "in", &rows).await;
    let stream = MessageStream::new(client.clone(), config(&["in"], "out", "g", mode))
        .await
        .unwrap()
        .with_processor(Join(Upper::new(0)))
        .with_window_options(WindowOptions {
            allowed_lateness: Duration::from_millis(lateness),
            late_messages: LatePolicy::DeadLetter {
                topic: "late".into(),
            },
            ..Default::default()
        });
    stream.start().await.unwrap();
    let outs = wait_records(&client, "out", windows).await;
    let metrics = stream.metrics().await;
    eventually(
        "late messages dead-lettered",
        Duration::from_secs(10),
        || {
            let m = metrics.clone();
            let client = client.clone();
            async move {
                let late = m.late_messages.load(Ordering::Relaxed);
                late == 0 || read_all(&client, "late").await.len() as u64 == late
            }
        },
    )
    .await;
    stream.stop().await.unwrap();
    let mut windows: Vec<(i64, String)> =
        outs.into_iter().map(|o| (o.timestamp, o.payload)).collect();
    windows.sort();
    let late = if metrics.late_messages.load(Ordering::Relaxed) > 0 {
        payloads(&client, "late").await
    } else {
        vec![]
    };
    (
        windows.into_iter().map(|w| w.1).collect(),
        metrics.late_messages.load(Ordering::Relaxed),
        late,
    )
}

#[tokio::test]
async fn tumbling_windows_hold_exactly_their_messages() {
    let mode = StreamMode::Windowed {
        window_size: Duration::from_millis(100),
        slide_interval: Duration::from_millis(100),
    };
    // [0,100): a, b, and c (95, after 115: within the allowed lateness of 20); [100,200): d, e;
    // `late` (50) arrives when the watermark (250 - 20) has closed [0,100); 400 closes the rest.
    let inputs = [
        ("a", 10),
        ("b", 60),
        ("d", 115),
        ("c", 95),
        ("e", 199),
        ("f", 250),
        ("late", 50),
        ("g", 400),
    ];
    let (windows, late, dead) = windowed(mode, &inputs, 20, 3).await;
    assert_eq!(windows, vec!["A|B|C", "D|E", "F"]);
    assert_eq!(late, 1);
    assert_eq!(dead, vec!["late"]);
}

#[tokio::test]
async fn sliding_windows_overlap() {
    let mode = StreamMode::Windowed {
        window_size: Duration::from_millis(100),
        slide_interval: Duration::from_millis(50),
    };
    // Windows start at multiples of 50 from 0: [0,100): a b; [50,150): b c; [100,200): c;
    // [150,250) is empty; 260 closes everything ending at or before 260.
    let inputs = [("a", 10), ("b", 70), ("c", 120), ("z", 260)];
    let (windows, late, _) = windowed(mode, &inputs, 0, 3).await;
    assert_eq!(windows, vec!["A|B", "B|C", "C"]);
    assert_eq!(late, 0);
}

#[tokio::test]
async fn several_input_topics_feed_one_output() {
    let (_broker, client) = broker().await;
    for t in ["users", "orders", "out"] {
        client.create_topic(t, 2).await.unwrap();
    }
    let users: Vec<(u32, String, u64)> = (0..10).map(|i| (i % 2, format!("u{i}"), 1)).collect();
    let orders: Vec<(u32, String, u64)> = (0..10).map(|i| (i % 2, format!("o{i}"), 1)).collect();
    send(&client, "users", &users).await;
    send(&client, "orders", &orders).await;
    let stream = MessageStream::new(
        client.clone(),
        config(&["users", "orders"], "out", "g", StreamMode::Individual),
    )
    .await
    .unwrap()
    .with_processor(Upper::new(0));
    stream.start().await.unwrap();
    wait_records(&client, "out", 20).await;
    stream.stop().await.unwrap();
    let mut want: Vec<String> = users
        .iter()
        .chain(&orders)
        .map(|i| i.1.to_uppercase())
        .collect();
    want.sort();
    assert_eq!(payloads(&client, "out").await, want);
}

#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(name = "readings")]
struct Reading {
    sensor: String,
    value: i64,
}

#[derive(Debug, Serialize, Deserialize, Topic)]
#[topic(name = "alerts", key = "sensor")]
struct Alert {
    sensor: String,
    value: i64,
}

struct Threshold;

#[async_trait]
impl TypedProcessor for Threshold {
    type Input = Reading;
    type Output = Alert;
    async fn process(&self, r: Reading, _source: &Message) -> Result<Option<Alert>> {
        Ok((r.value > 50).then_some(Alert {
            sensor: r.sensor,
            value: r.value,
        }))
    }
}

#[tokio::test]
async fn typed_processor_decodes_and_encodes_with_the_topics_codecs() {
    let (_broker, client) = broker().await;
    client.create_topic("readings", 1).await.unwrap();
    client.create_topic("alerts", 1).await.unwrap();
    let readings = client.producer::<Reading>();
    for (i, v) in [10, 60, 40, 90].into_iter().enumerate() {
        readings
            .send(&Reading {
                sensor: format!("s{i}"),
                value: v,
            })
            .await
            .unwrap();
    }
    let config = StreamConfig {
        input_topics: vec!["readings".into()],
        consumer_group: "alerts".into(),
        ..Default::default()
    };
    let stream = MessageStream::new(client.clone(), config)
        .await
        .unwrap()
        .with_typed_processor(Threshold);
    stream.start().await.unwrap();
    let outs = wait_records(&client, "alerts", 2).await;
    stream.stop().await.unwrap();
    let alerts: Vec<Alert> = outs
        .iter()
        .map(|o| serde_json::from_str(&o.payload).unwrap())
        .collect();
    assert_eq!(
        alerts.iter().map(|a| a.value).collect::<Vec<_>>(),
        vec![60, 90]
    );
    assert_eq!(outs[0].key.as_deref(), Some("s1"));
}

#[tokio::test]
async fn stop_under_load_commits_everything_it_produced() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 4).await.unwrap();
    client.create_topic("out", 4).await.unwrap();
    let inputs: Vec<(u32, String, u64)> =
        (0..4000).map(|i| (i % 4, format!("m{i:05}"), 1)).collect();
    let feeder = {
        let client = client.clone();
        let inputs = inputs.clone();
        tokio::spawn(async move {
            for chunk in inputs.chunks(200) {
                send(&client, "in", chunk).await;
            }
        })
    };
    for mode in [
        StreamMode::Individual,
        StreamMode::Batch {
            batch_size: 50,
            batch_timeout: Duration::from_millis(20),
        },
    ] {
        let group = format!("g-{}", matches!(mode, StreamMode::Individual));
        let out = format!("out-{group}");
        client.create_topic(&out, 4).await.unwrap();
        let stream = MessageStream::new(client.clone(), config(&["in"], &out, &group, mode))
            .await
            .unwrap()
            .with_processor(Upper::new(0));
        stream.start().await.unwrap();
        let metrics = stream.metrics().await;
        eventually("some work", Duration::from_secs(20), || {
            let n = metrics.outputs_produced.load(Ordering::Relaxed);
            async move { n >= 300 }
        })
        .await;
        stream.stop().await.unwrap();
        let produced = read_all(&client, &out).await;
        let committed = committed(&client, &group).await;
        let total: u64 = (0..4)
            .map(|p| committed.get(&("in".to_string(), p)).copied().unwrap_or(0))
            .sum();
        assert_eq!(
            total as usize,
            produced.len(),
            "every output's input is committed, and only those"
        );
        // And the committed prefixes are exactly what was produced.
        let mut want: Vec<String> = (0..4u32)
            .flat_map(|p| {
                let upto = committed[&("in".to_string(), p)] as usize;
                inputs
                    .iter()
                    .filter(move |i| i.0 == p)
                    .take(upto)
                    .map(|i| i.1.to_uppercase())
            })
            .collect();
        let mut got: Vec<String> = produced.iter().map(|o| o.payload.clone()).collect();
        want.sort();
        got.sort();
        assert_eq!(got, want);
    }
    feeder.await.unwrap();
}

/// Produces messages `range` of `size` bytes to `topic`, each starting with its index (no key,
/// no headers: a message's size is its payload's).
async fn produce_indexed(
    client: &rustmq::RustMqClient,
    topic: &str,
    range: std::ops::Range<u64>,
    size: usize,
) {
    produce_sized(client, topic, range.map(|i| (i, size))).await;
}

/// Produces a message of each `(index, size)` to `topic`, as [`produce_indexed`] does.
async fn produce_sized(
    client: &rustmq::RustMqClient,
    topic: &str,
    messages: impl IntoIterator<Item = (u64, usize)>,
) {
    let producer = client.create_producer(topic).await.unwrap();
    for (i, size) in messages {
        let mut payload = vec![b'x'; size];
        payload[..8].copy_from_slice(&i.to_be_bytes());
        let m = Message::builder()
            .topic(topic)
            .payload(payload)
            .build()
            .unwrap();
        producer.send(m).await.unwrap();
    }
}

/// The index a message of [`produce_indexed`] starts with.
fn index(m: &Message) -> u64 {
    u64::from_be_bytes(m.payload[..8].try_into().expect("8 bytes"))
}

/// Holds every message until the test lets one through; records what it processed, in order.
#[derive(Clone)]
struct Gate {
    open: Arc<tokio::sync::Semaphore>,
    seen: Arc<parking_lot::Mutex<Vec<u64>>>,
}

#[async_trait]
impl MessageProcessor for Gate {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        self.open.acquire().await.expect("open").forget();
        self.seen.lock().push(index(m));
        Ok(None)
    }
}

#[tokio::test]
async fn large_messages_in_flight_are_bounded_by_their_bytes() {
    const MESSAGES: u64 = 40;
    const SIZE: usize = 256 << 10;
    const CAP: u64 = 1 << 20;
    let (_broker, client) = broker().await;
    client.create_topic("big-in", 1).await.unwrap();
    produce_indexed(&client, "big-in", 0..MESSAGES, SIZE).await;
    // Far more messages than the backlog: only the bytes can bound what is in flight.
    let config = StreamConfig {
        input_topics: vec!["big-in".into()],
        consumer_group: "big".into(),
        parallelism: 1,
        processing_timeout: Duration::from_secs(60),
        mode: StreamMode::Individual,
        ..Default::default()
    };
    assert!(config.max_in_flight >= MESSAGES as usize);
    let gate = Gate {
        open: Arc::new(tokio::sync::Semaphore::new(0)),
        seen: Arc::default(),
    };
    let nothing = MessageStream::new(client.clone(), config.clone())
        .await
        .unwrap()
        .with_max_in_flight_bytes(0)
        .with_processor(gate.clone());
    assert!(matches!(
        nothing.start().await,
        Err(rustmq::ClientError::InvalidConfig(m)) if m.contains("max_in_flight_bytes")
    ));
    let stream = MessageStream::new(client.clone(), config)
        .await
        .unwrap()
        .with_max_in_flight_bytes(CAP as usize)
        .with_processor(gate.clone());
    stream.start().await.unwrap();
    let metrics = stream.metrics().await;
    let in_flight = || {
        (
            metrics.messages_in_flight.load(Ordering::Relaxed),
            metrics.bytes_in_flight.load(Ordering::Relaxed),
        )
    };
    // The processor holds the first message: messages are admitted until their bytes fill
    // the bound (exactly four of 256 KiB, which have no key and no headers), and no more.
    eventually("the bound filled", Duration::from_secs(20), || async {
        in_flight().1 == CAP
    })
    .await;
    assert_eq!(in_flight(), (4, CAP));
    // One at a time: the bound holds all along, and every message is processed, in order.
    for done in 1..=MESSAGES {
        gate.open.add_permits(1);
        eventually("a message processed", Duration::from_secs(20), || async {
            metrics.messages_processed.load(Ordering::Relaxed) == done
        })
        .await;
        let (messages, bytes) = in_flight();
        assert!(
            bytes <= CAP && messages <= 4,
            "{messages} messages, {bytes} bytes"
        );
    }
    assert_eq!(*gate.seen.lock(), (0..MESSAGES).collect::<Vec<_>>());
    eventually("nothing in flight", Duration::from_secs(20), || async {
        in_flight() == (0, 0)
    })
    .await;
    stream.stop().await.unwrap();
}

/// A started stream of `topic` (one partition) in batches of `batch_size`, with a batch timeout
/// far beyond any test's patience and a byte bound of 1 MiB.
async fn tight_batches(
    client: &rustmq::RustMqClient,
    topic: &str,
    batch_size: usize,
    processor: impl MessageProcessor,
) -> MessageStream {
    let config = StreamConfig {
        input_topics: vec![topic.into()],
        consumer_group: topic.into(),
        parallelism: 1,
        processing_timeout: Duration::from_secs(60),
        mode: StreamMode::Batch {
            batch_size,
            batch_timeout: Duration::from_secs(120),
        },
        ..Default::default()
    };
    let stream = MessageStream::new(client.clone(), config)
        .await
        .unwrap()
        .with_max_in_flight_bytes(1 << 20)
        .with_processor(processor);
    stream.start().await.unwrap();
    stream
}

/// Records each batch it is given (the messages' indexes).
#[derive(Clone, Default)]
struct Batches(Arc<parking_lot::Mutex<Vec<Vec<u64>>>>);

#[async_trait]
impl MessageProcessor for Batches {
    async fn process(&self, _: &Message) -> Result<Option<Message>> {
        unreachable!("batch mode")
    }

    async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
        self.0.lock().push(messages.iter().map(index).collect());
        Ok(vec![])
    }
}

#[tokio::test]
async fn a_batch_the_byte_bound_stops_short_closes_without_waiting_for_its_timeout() {
    const MESSAGES: u64 = 24;
    let (_broker, client) = broker().await;
    client.create_topic("big-batches", 1).await.unwrap();
    produce_indexed(&client, "big-batches", 0..MESSAGES - 4, 250 << 10).await;
    // Batches of ten would take 2.5 MB; a 1 MiB bound lets four messages of 250 KiB in at a
    // time (the fifth's fetch task is given the 24 KiB left while it waits), and the timeout
    // is far beyond the test's patience.
    let batches = Batches::default();
    let stream = tight_batches(&client, "big-batches", 10, batches.clone()).await;
    let metrics = stream.metrics().await;
    // Batches of four close as soon as the fifth message waits for room. The last four, with
    // nothing behind them, wait for their timeout like any partial batch at the end of the
    // input, until more input arrives and has to wait for room.
    let processed = |n: u64| {
        let metrics = Arc::clone(&metrics);
        move || {
            let metrics = Arc::clone(&metrics);
            async move { metrics.messages_processed.load(Ordering::Relaxed) >= n }
        }
    };
    let patience = Duration::from_secs(20);
    eventually("all but the last four", patience, processed(MESSAGES - 8)).await;
    produce_indexed(&client, "big-batches", MESSAGES - 4..MESSAGES, 250 << 10).await;
    eventually("all but the newest four", patience, processed(MESSAGES - 4)).await;
    stream.stop().await.unwrap();
    let batches = batches.0.lock().clone();
    // Batches of four (one may close a message short, when a fetch task given its room has
    // not run yet as the router looks).
    assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
    let all: Vec<u64> = batches.concat();
    assert_eq!(all[..], (0..all.len() as u64).collect::<Vec<_>>()[..]);
    assert!(all.len() as u64 >= MESSAGES - 4);
}

/// Records the size of each batch it is given; each batch takes a while (50 ms), as a
/// database transaction would.
#[derive(Clone, Default)]
struct SlowBatches(Arc<parking_lot::Mutex<Vec<usize>>>);

#[async_trait]
impl MessageProcessor for SlowBatches {
    async fn process(&self, _: &Message) -> Result<Option<Message>> {
        unreachable!("batch mode")
    }

    async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.0.lock().push(messages.len());
        Ok(vec![])
    }
}

#[tokio::test]
async fn batches_stay_full_while_max_in_flight_binds_under_a_slow_processor() {
    let (_broker, client) = broker().await;
    client.create_topic("busy", 2).await.unwrap();
    let inputs: Vec<(u32, String, u64)> = (0..120)
        .map(|i| (i % 2, format!("m{i:03}"), 1000 + i as u64))
        .collect();
    send(&client, "busy", &inputs).await;
    // Room for two batches: fetch tasks wait for room most of the time, but a batch being
    // processed always gives room back, so the open batch keeps filling to its size.
    let config = StreamConfig {
        input_topics: vec!["busy".into()],
        consumer_group: "busy".into(),
        parallelism: 2,
        max_in_flight: 20,
        mode: StreamMode::Batch {
            batch_size: 10,
            batch_timeout: Duration::from_secs(120),
        },
        ..Default::default()
    };
    let slow = SlowBatches::default();
    let stream = MessageStream::new(client.clone(), config)
        .await
        .unwrap()
        .with_processor(slow.clone());
    stream.start().await.unwrap();
    let metrics = stream.metrics().await;
    eventually(
        "every message processed",
        Duration::from_secs(20),
        || async { metrics.messages_processed.load(Ordering::Relaxed) == 120 },
    )
    .await;
    stream.stop().await.unwrap();
    assert_eq!(*slow.0.lock(), vec![10; 12]);
}

#[tokio::test]
async fn a_batch_closes_when_a_finished_batch_leaves_the_waiting_input_short() {
    let (_broker, client) = broker().await;
    client.create_topic("mixed", 1).await.unwrap();
    // Ten small messages (a full batch, processed slowly), then two of 600 KiB: the first
    // opens the next batch, the second waits for room with part of its bytes. When the small
    // batch is done, what it gives back still leaves the second short: only the open batch
    // can make room, and it must close then, not at its timeout.
    let sizes = (0..10)
        .map(|i| (i, 1024))
        .chain([(10, 600 << 10), (11, 600 << 10)]);
    produce_sized(&client, "mixed", sizes).await;
    let slow = SlowBatches::default();
    let stream = tight_batches(&client, "mixed", 10, slow.clone()).await;
    let metrics = stream.metrics().await;
    // The small batch, then the first large message alone (the second, last, waits for its
    // timeout like any partial batch at the end of the input).
    eventually(
        "the first large message processed",
        Duration::from_secs(20),
        || async { metrics.messages_processed.load(Ordering::Relaxed) >= 11 },
    )
    .await;
    stream.stop().await.unwrap();
    assert_eq!(slow.0.lock()[..2], [10, 1]);
}

/// A committed position past the log end (committed by hand here; a log that lost records
/// does the same) moves back to the log end, as the consumer's does: the records the
/// partition gets from there on are all processed, none skipped.
#[tokio::test]
async fn a_committed_position_past_the_log_end_moves_back_to_it() {
    use rustmq::protocol::{CommitOffsetsRequest, PartitionOffset, Request, Response};
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    let commit = Request::CommitOffsets(CommitOffsetsRequest {
        group: "g".into(),
        member_id: String::new(),
        generation: 0,
        offsets: vec![PartitionOffset {
            topic: "in".into(),
            partition: 0,
            offset: 100,
        }],
    });
    let answer = client.raw_request(commit).await;
    assert!(
        matches!(answer, Ok(Response::CommitOffsets(_))),
        "{answer:?}"
    );
    let mut c = config(&["in"], "out", "g", StreamMode::Individual);
    c.parallelism = 1;
    let stream = MessageStream::new(client.clone(), c)
        .await
        .unwrap()
        .with_processor(Upper::new(0));
    stream.start().await.unwrap();
    // The stream finds its position out of range before anything arrives, and commits the
    // log end it moved back to.
    eventually(
        "the position moved back to 0",
        Duration::from_secs(20),
        || {
            let client = client.clone();
            async move { committed(&client, "g").await.get(&("in".to_string(), 0)) == Some(&0) }
        },
    )
    .await;
    let inputs: Vec<(u32, String, u64)> = (0..5).map(|i| (0, format!("m{i}"), 1000 + i)).collect();
    send(&client, "in", &inputs).await;
    let outs = wait_records(&client, "out", 5).await;
    stream.stop().await.unwrap();
    let got: Vec<String> = outs.into_iter().map(|o| o.payload).collect();
    assert_eq!(got, ["M0", "M1", "M2", "M3", "M4"]);
    assert_eq!(
        committed(&client, "g").await.get(&("in".to_string(), 0)),
        Some(&5)
    );
}

/// `Duration::MAX` passes `validate` as a processing timeout and a batch timeout ("none"):
/// the stream starts and processes with them rather than overflow.
#[tokio::test]
async fn timeouts_of_duration_max_mean_none() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    let mode = StreamMode::Batch {
        batch_size: 2,
        batch_timeout: Duration::MAX,
    };
    let mut c = config(&["in"], "out", "g", mode);
    c.parallelism = 1;
    c.processing_timeout = Duration::MAX;
    let stream = MessageStream::new(client.clone(), c)
        .await
        .unwrap()
        .with_processor(Join(Upper::new(0)));
    stream.start().await.unwrap();
    let inputs: Vec<(u32, String, u64)> = (0..4).map(|i| (0, format!("m{i}"), 1000 + i)).collect();
    send(&client, "in", &inputs).await;
    let outs = wait_records(&client, "out", 2).await;
    stream.stop().await.unwrap();
    let got: Vec<String> = outs.into_iter().map(|o| o.payload).collect();
    assert_eq!(got, ["M0|M1", "M2|M3"]);
}

/// Counts the processor calls running at once; each takes a while.
struct Slow {
    running: Arc<std::sync::atomic::AtomicUsize>,
    most: Arc<std::sync::atomic::AtomicUsize>,
    calls: Arc<std::sync::atomic::AtomicUsize>,
}

/// One call running, until dropped (finished, or cancelled with its task).
struct Running(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait]
impl MessageProcessor for Slow {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        let _running = Running(Arc::clone(&self.running));
        self.most.fetch_max(now, Ordering::SeqCst);
        self.calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(50)).await;
        Ok(Some(m.clone()))
    }
}

/// A session that loses its membership ends at once, its workers with it: the units they had
/// queued are not processed beside the next session's (one worker: never two calls at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_sessions_workers_end_with_it() {
    use rustmq::protocol::{LeaveGroupRequest, Request};
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    let inputs: Vec<(u32, String, u64)> = (0..200).map(|i| (0, format!("m{i:03}"), 1)).collect();
    send(&client, "in", &inputs).await;
    let mut c = config(&["in"], "out", "g", StreamMode::Individual);
    c.parallelism = 1;
    // Enough queued for the worker to go on for a second; little for `stop` to drain.
    c.max_in_flight = 20;
    let (running, most, calls) = Default::default();
    let slow = Slow {
        running: Arc::clone(&running),
        most: Arc::clone(&most),
        calls: Arc::clone(&calls),
    };
    let stream = MessageStream::new(client.clone(), c)
        .await
        .unwrap()
        .with_session_timeout(Duration::from_millis(900))
        .with_processor(slow);
    stream.start().await.unwrap();
    eventually("processing", Duration::from_secs(10), || {
        let calls = Arc::clone(&calls);
        async move { calls.load(Ordering::SeqCst) >= 3 }
    })
    .await;
    // Another client removes the member: its next heartbeat finds it unknown, and the session
    // aborts with units queued for its worker.
    let member = client.describe_group("g").await.unwrap().members[0]
        .member_id
        .clone();
    client
        .raw_request(Request::LeaveGroup(LeaveGroupRequest {
            group: "g".into(),
            member_id: member.clone(),
        }))
        .await
        .unwrap();
    // The next session joins as a new member and processes.
    eventually("a new session", Duration::from_secs(10), || {
        let (client, member) = (client.clone(), member.clone());
        async move {
            client
                .describe_group("g")
                .await
                .is_ok_and(|g| g.members.iter().any(|m| m.member_id != member))
        }
    })
    .await;
    let at_rejoin = calls.load(Ordering::SeqCst);
    eventually("the new session's work", Duration::from_secs(10), || {
        let calls = Arc::clone(&calls);
        async move { calls.load(Ordering::SeqCst) >= at_rejoin + 10 }
    })
    .await;
    stream.stop().await.unwrap();
    assert_eq!(
        most.load(Ordering::SeqCst),
        1,
        "the aborted session's worker went on beside the next session's"
    );
}

/// Echoes each message of a batch to `wide-out`.
struct EchoBatches;

#[async_trait]
impl MessageProcessor for EchoBatches {
    async fn process(&self, _: &Message) -> Result<Option<Message>> {
        unreachable!("batch mode")
    }

    async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
        Ok(messages
            .iter()
            .map(|m| {
                Message::builder()
                    .topic("wide-out")
                    .payload(m.payload.clone())
                    .build()
                    .ok()
            })
            .collect())
    }
}

/// At least once, the outputs of a unit too large for one record batch (a batch of 40 inputs
/// of 4 KiB echoed, on a broker that takes batches of at most 64 KiB) are stored in several,
/// in order, and the stream goes on; before, the broker refused the one batch they were put
/// in, and the stream stopped with that error.
#[tokio::test]
async fn outputs_too_large_for_one_batch_are_stored_in_several_at_least_once() {
    tests::init_tracing();
    let mut config = rustmq::testing::BrokerConfig::default();
    config.limits.max_batch_bytes = 64 << 10;
    let broker = rustmq::testing::TestBroker::start_with(config)
        .await
        .unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("wide-in", 1).await.unwrap();
    client.create_topic("wide-out", 1).await.unwrap();
    produce_indexed(&client, "wide-in", 0..40, 4 << 10).await;
    let stream = tight_batches(&client, "wide-in", 40, EchoBatches).await;
    let outputs = wait_records(&client, "wide-out", 40).await;
    let indexes: Vec<u64> = outputs
        .iter()
        .map(|o| u64::from_be_bytes(o.payload.as_bytes()[..8].try_into().unwrap()))
        .collect();
    assert_eq!(indexes, (0..40).collect::<Vec<_>>());
    assert!(stream.is_running());
    stream.stop().await.unwrap();
}
