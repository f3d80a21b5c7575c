//! Metrics under their documented names (docs/OBSERVABILITY.md) with the values a known
//! workload must produce: producer, broker and handler, recorded through the `metrics` facade
//! into a recorder this test binary installs (the library never installs one). A binary of its
//! own: every event of the process must reach the recorder, which each test installs before
//! it starts a broker.

use std::sync::OnceLock;
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use rustmq::prelude::*;
use rustmq::testing::{Recorder, TestBroker};
use rustmq::{AckLevel, MetricsLayer, ProducerBuilder, ProducerConfig, Topic};

const WAIT: Duration = Duration::from_secs(20);

/// The process-wide recorder; every test of this binary shares it, so each uses its own topics.
fn snapshotter() -> &'static Snapshotter {
    static SNAPSHOTTER: OnceLock<Snapshotter> = OnceLock::new();
    SNAPSHOTTER.get_or_init(|| {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .expect("no other recorder in this test binary");
        snapshotter
    })
}

/// Snapshots drain histograms: tests of this binary take turns.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// This test's turn (the tests of this binary run one at a time), with the recorder installed,
/// a broker, a client, and `topic` made with one partition.
async fn start_with(
    topic: &str,
) -> (
    tokio::sync::MutexGuard<'static, ()>,
    TestBroker,
    rustmq::RustMqClient,
) {
    let turn = SERIAL.lock().await;
    snapshotter();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic(topic, 1).await.unwrap();
    (turn, broker, client)
}

/// One metric of a snapshot.
#[derive(Debug)]
struct Sample {
    kind: MetricKind,
    name: String,
    labels: Vec<(String, String)>,
    value: DebugValue,
}

fn snapshot() -> Vec<Sample> {
    snapshotter()
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let (kind, key) = key.into_parts();
            Sample {
                kind,
                name: key.name().to_owned(),
                labels: key
                    .labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
                value,
            }
        })
        .collect()
}

/// The samples named `name` whose labels include every one of `labels`.
fn find<'a>(samples: &'a [Sample], name: &str, labels: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .collect()
}

fn counter(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> u64 {
    find(samples, name, labels)
        .iter()
        .map(|s| match s.value {
            DebugValue::Counter(n) => n,
            ref other => panic!("{name} is not a counter: {other:?}"),
        })
        .sum()
}

fn histogram(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Vec<f64> {
    find(samples, name, labels)
        .iter()
        .flat_map(|s| match &s.value {
            DebugValue::Histogram(v) => v.iter().map(|x| x.into_inner()).collect::<Vec<_>>(),
            other => panic!("{name} is not a histogram: {other:?}"),
        })
        .collect()
}

#[derive(Debug, Clone, Serialize, Deserialize, Topic)]
#[topic(name = "obs-metrics-orders")]
struct Order {
    id: u32,
}

async fn accept_even(order: Order) -> Settlement {
    if order.id.is_multiple_of(2) {
        Settlement::Ack
    } else {
        Settlement::Skip
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn producer_broker_and_handler_metrics_follow_the_documented_scheme() {
    let _turn = SERIAL.lock().await;
    // Drains what earlier tests left in histograms; the base of the unlabelled counters.
    let s0 = snapshot();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();

    // Producer and broker: 10 messages of 10 bytes with acks=all (so the broker syncs).
    let topic = "obs-metrics-raw";
    client.create_topic(topic, 1).await.unwrap();
    let producer = ProducerBuilder::new()
        .topic(topic)
        .client(client.clone())
        .config(ProducerConfig {
            ack_level: AckLevel::All,
            ..ProducerConfig::default()
        })
        .build()
        .await
        .unwrap();
    for i in 0..10 {
        let m = Message::builder()
            .topic(topic)
            .payload(format!("payload-{i:02}"))
            .build()
            .unwrap();
        producer.send(m).await.unwrap();
    }
    producer.close().await.unwrap();

    let s = snapshot();
    let t = [("topic", topic)];
    assert_eq!(counter(&s, "rustmq_producer_messages_sent_total", &t), 10);
    assert_eq!(counter(&s, "rustmq_producer_bytes_sent_total", &t), 100);
    let batches = counter(&s, "rustmq_producer_batches_sent_total", &t);
    assert!((1..=10).contains(&batches), "{batches} batches");
    assert_eq!(counter(&s, "rustmq_producer_messages_failed_total", &t), 0);
    assert_eq!(counter(&s, "rustmq_producer_errors_total", &t), 0);
    assert_eq!(counter(&s, "rustmq_producer_retries_total", &t), 0);
    let latencies = histogram(&s, "rustmq_producer_send_latency_seconds", &t);
    assert_eq!(latencies.len() as u64, batches);
    assert!(
        latencies
            .iter()
            .all(|l| *l > 0.0 && *l < WAIT.as_secs_f64()),
        "{latencies:?}"
    );

    assert_eq!(counter(&s, "rustmq_broker_produce_records_total", &t), 10);
    assert!(counter(&s, "rustmq_broker_produce_bytes_total", &t) > 100);
    assert!(counter(&s, "rustmq_broker_requests_total", &[("kind", "Produce")]) >= batches);
    assert!(counter(&s, "rustmq_broker_requests_total", &[("kind", "Hello")]) >= 1);
    let fsyncs = counter(&s, "rustmq_broker_fsyncs_total", &[])
        - counter(&s0, "rustmq_broker_fsyncs_total", &[]);
    assert!(fsyncs >= 1, "acks=all syncs");
    // Unlabelled: a previous test's broker may still be finishing a sync, so no equality.
    let sync_times = histogram(&s, "rustmq_broker_fsync_duration_seconds", &[]);
    assert!(
        !sync_times.is_empty() && sync_times.iter().all(|t| *t > 0.0 && *t < 10.0),
        "{sync_times:?}"
    );
    let connections = find(&s, "rustmq_broker_connections", &[]);
    assert!(
        matches!(connections.first().map(|c| (&c.kind, &c.value)), Some((MetricKind::Gauge, DebugValue::Gauge(g))) if g.into_inner() >= 1.0),
        "{connections:?}"
    );
    let s1 = s;

    // Handler: 6 typed orders through a MetricsLayer; odd ids are skipped.
    let recorder = Recorder::new();
    let running = Service::new(client.clone())
        .layer(MetricsLayer::new())
        .layer(recorder.layer())
        .handler(accept_even)
        .start()
        .await
        .unwrap();
    let orders = client.producer::<Order>();
    for id in 0..6 {
        orders.send(&Order { id }).await.unwrap();
    }
    recorder.wait_for(6, WAIT).await;
    running.shutdown().await.unwrap();

    let s = snapshot();
    assert!(
        counter(
            &s,
            "rustmq_broker_fetch_bytes_total",
            &[("topic", "obs-metrics-orders")]
        ) > 0
    );
    let h = [("topic", "obs-metrics-orders"), ("handler", "accept_even")];
    assert_eq!(
        counter(
            &s,
            "rustmq_handler_handled_total",
            &[h[0], h[1], ("settlement", "ack")]
        ),
        3
    );
    assert_eq!(
        counter(
            &s,
            "rustmq_handler_handled_total",
            &[h[0], h[1], ("settlement", "skip")]
        ),
        3
    );
    assert_eq!(
        counter(
            &s,
            "rustmq_handler_handled_total",
            &[h[0], h[1], ("settlement", "error")]
        ),
        0
    );
    let handled = find(&s, "rustmq_handler_handled_total", &h);
    assert!(
        handled
            .iter()
            .all(|m| m.labels.iter().any(|(k, _)| k == "group")),
        "{handled:?}"
    );
    assert_eq!(
        histogram(&s, "rustmq_handler_duration_seconds", &h).len(),
        6
    );

    // Every name follows the scheme.
    for sample in s1.iter().chain(&s) {
        let n = &sample.name;
        assert!(n.starts_with("rustmq_"), "{n}");
        match sample.kind {
            MetricKind::Counter => assert!(n.ends_with("_total"), "{n}"),
            MetricKind::Histogram => assert!(n.ends_with("_seconds"), "{n}"),
            MetricKind::Gauge => assert!(!n.ends_with("_total"), "{n}"),
        }
    }
}

fn gauge(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    find(samples, name, labels).first().map(|s| match s.value {
        DebugValue::Gauge(g) => g.into_inner(),
        ref other => panic!("{name} is not a gauge: {other:?}"),
    })
}

/// Sends `m0` to `m4` to `topic`, each acknowledged.
async fn send_five(client: &rustmq::RustMqClient, topic: &str) {
    let producer = client.create_producer(topic).await.unwrap();
    for i in 0..5 {
        let m = Message::builder()
            .topic(topic)
            .payload(format!("m{i}"))
            .build()
            .unwrap();
        producer.send(m).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_metrics_count_acks_nacks_retries_and_dead_letters() {
    let topic = "obs-metrics-consumed";
    let (_turn, _broker, client) = start_with(topic).await;
    send_five(&client, topic).await;
    let consumer = client
        .create_consumer_with_config(
            topic,
            "obs-metrics-group",
            rustmq::consumer::ConsumerConfig {
                max_retry_attempts: 1,
                retry_backoff: Duration::from_millis(10),
                max_retry_backoff: Duration::from_millis(10),
                dead_letter_queue: Some("obs-metrics-dlq".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // Acknowledge m0..m3; nack m4 twice: one retry, then the dead-letter topic.
    let mut nacks = 0;
    while nacks < 2 {
        let delivery = tokio::time::timeout(WAIT, consumer.receive())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if delivery.message.payload.as_ref() == b"m4" {
            delivery.nack().await.unwrap();
            nacks += 1;
        } else {
            delivery.ack().await.unwrap();
        }
    }
    consumer.get_lag().await.unwrap();
    consumer.close().await.unwrap();

    let s = snapshot();
    let l = [("topic", topic), ("group", "obs-metrics-group")];
    assert_eq!(
        counter(&s, "rustmq_consumer_messages_received_total", &l),
        5
    );
    assert_eq!(
        counter(&s, "rustmq_consumer_messages_processed_total", &l),
        4
    );
    assert_eq!(counter(&s, "rustmq_consumer_messages_failed_total", &l), 2);
    assert_eq!(counter(&s, "rustmq_consumer_messages_retried_total", &l), 1);
    assert_eq!(
        counter(&s, "rustmq_consumer_messages_dead_lettered_total", &l),
        1
    );
    assert_eq!(
        gauge(&s, "rustmq_consumer_lag", &[l[0], l[1], ("partition", "0")]),
        Some(0.0)
    );
    // The dead letter was produced like any message.
    assert_eq!(
        counter(
            &s,
            "rustmq_producer_messages_sent_total",
            &[("topic", "obs-metrics-dlq")]
        ),
        1
    );
}

/// Each retention pass reports the bytes of segment index entries the broker holds in memory,
/// summed over its partitions.
#[tokio::test]
async fn a_retention_pass_reports_the_index_memory() {
    let topic = "obs-index-memory";
    let (_turn, broker, client) = start_with(topic).await;
    let producer = ProducerBuilder::new()
        .topic(topic)
        .client(client.clone())
        .build()
        .await
        .unwrap();
    // One batch per awaited send: ~40 KiB of batches, an index entry every 4 KiB.
    for i in 0..300 {
        let m = Message::builder()
            .topic(topic)
            .payload(vec![b'x'; 100 + i % 7])
            .build()
            .unwrap();
        producer.send(m).await.unwrap();
    }
    producer.close().await.unwrap();
    let handle = broker.handle().unwrap();
    handle.run_retention_at(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64,
    );
    let held: usize = handle
        .topics()
        .all_logs()
        .iter()
        .map(|log| log.index_memory())
        .sum();
    assert!(held > 0);
    assert_eq!(
        gauge(&snapshot(), "rustmq_broker_index_memory_bytes", &[]),
        Some(held as f64)
    );
}

/// A closed consumer's lag gauges are zeroed: they would go on reporting the last lag of
/// partitions it no longer has, for as long as the process runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_consumers_lag_is_zeroed() {
    let topic = "obs-lag-closed";
    let (_turn, _broker, client) = start_with(topic).await;
    send_five(&client, topic).await;
    let consumer = client
        .create_consumer_with_config(
            topic,
            "obs-lag-group",
            rustmq::consumer::ConsumerConfig {
                fetch_size: 1,
                max_buffered_messages_per_partition: 1,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let first = tokio::time::timeout(WAIT, consumer.receive())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    first.ack().await.unwrap();
    consumer.get_lag().await.unwrap();
    let labels = [
        ("topic", topic),
        ("group", "obs-lag-group"),
        ("partition", "0"),
    ];
    // (A snapshot drains gauges: the one after the close reads what the gauge holds then.)
    let metrics = consumer.metrics().await;
    assert!(metrics.total_lag() > 0, "{:?}", metrics.partition_lag());
    consumer.close().await.unwrap();
    assert_eq!(
        gauge(&snapshot(), "rustmq_consumer_lag", &labels),
        Some(0.0)
    );
    assert!(metrics.partition_lag().is_empty());
}
