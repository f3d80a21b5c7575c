//! The producer against the real broker: ordering across retries, idempotence, size limits,
//! close() delivering everything, key partitioning, bounded buffers, compression and headers.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rustmq::producer::partition_for_key;
use rustmq::testing::TestBroker;
use rustmq::*;
use rustmq_protocol::{BatchHeader, Compression};
use tests::fetch_all;

fn fast_retries(broker: &TestBroker) -> ClientConfig {
    ClientConfig {
        retry_config: RetryConfig {
            max_retries: 5,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
            multiplier: 2.0,
            jitter: true,
        },
        ..broker.client_config()
    }
}

async fn producer(client: &RustMqClient, topic: &str, config: ProducerConfig) -> Producer {
    ProducerBuilder::new()
        .topic(topic)
        .config(config)
        .client(client.clone())
        .build()
        .await
        .unwrap()
}

/// A broker, a client with fast retries, `topic` with one partition, and a producer of it
/// (the broker is returned to keep it running and to reach its test handle).
async fn one_partition(
    topic: &str,
    config: ProducerConfig,
) -> (TestBroker, RustMqClient, Producer) {
    let broker = TestBroker::start().await.unwrap();
    let client = RustMqClient::new(fast_retries(&broker)).await.unwrap();
    client.create_topic(topic, 1).await.unwrap();
    let p = producer(&client, topic, config).await;
    (broker, client, p)
}

fn msg(topic: &str, payload: impl Into<String>) -> Message {
    Message::builder()
        .topic(topic)
        .payload(payload.into())
        .build()
        .unwrap()
}

async fn stored_payloads(client: &RustMqClient, topic: &str, partition: u32) -> Vec<String> {
    fetch_all(client, topic, partition, 0)
        .await
        .0
        .into_iter()
        .map(|r| String::from_utf8(r.value.unwrap().to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn order_holds_across_retries_and_idempotence_drops_the_resends() {
    tests::init_tracing();
    for idempotent in [false, true] {
        let (broker, client, p) = one_partition(
            "ordered",
            ProducerConfig {
                batch_size: 10,
                idempotent,
                ..Default::default()
            },
        )
        .await;
        // Three answers are lost: those batches are stored, then sent again.
        broker.handle().unwrap().drop_next_produce_answers(3);
        for i in 0..200 {
            p.send_async(msg("ordered", format!("{i:04}")), None)
                .await
                .unwrap();
        }
        p.flush().await.unwrap();
        let stored = stored_payloads(&client, "ordered", 0).await;
        let metrics = p.metrics().await;
        assert!(
            metrics.retries.load(Ordering::Relaxed) >= 3,
            "answers were dropped, so batches were resent"
        );
        assert_eq!(metrics.messages_sent.load(Ordering::Relaxed), 200);
        let expected: Vec<String> = (0..200).map(|i| format!("{i:04}")).collect();
        if idempotent {
            assert_eq!(stored, expected, "idempotent: every message once, in order");
        } else {
            assert!(
                stored.len() > 200,
                "without idempotence the resent batches are stored twice"
            );
            // A resend repeats only the batch in flight (10 messages), never anything older, and
            // the first copies of all messages are in order.
            let mut firsts = Vec::new();
            let mut highest = -1i64;
            for s in &stored {
                let v: i64 = s.parse().unwrap();
                assert!(v > highest - 10, "{v} stored after {highest}: order broken");
                if v > highest {
                    firsts.push(s.clone());
                    highest = v;
                }
            }
            assert_eq!(firsts, expected, "order holds across retries");
        }
    }
}

#[tokio::test]
async fn a_resent_batch_is_stored_once_with_idempotence_and_twice_without() {
    tests::init_tracing();
    for (idempotent, copies) in [(true, 1u64), (false, 2)] {
        let (broker, client, p) = one_partition(
            "once",
            ProducerConfig {
                idempotent,
                ..Default::default()
            },
        )
        .await;
        broker.handle().unwrap().drop_next_produce_answers(1);
        let result = p.send(msg("once", "only")).await.unwrap();
        // Idempotent: the resend is answered with the stored copy's offset.
        assert_eq!(result.offset, copies - 1);
        assert_eq!(
            stored_payloads(&client, "once", 0).await.len() as u64,
            copies,
            "idempotent = {idempotent}"
        );
    }
}

/// An awaited `send` on an idle partition sends its batch from the caller's task. Dropped
/// mid-request (a timeout or `select!` around it), or kept without being polled, the message
/// must still be delivered and the partition must not stay blocked (nor `flush`); a `send`
/// behind queued messages must not overtake them; and the idempotent sequence must carry
/// across both senders (answers are lost on purpose).
#[tokio::test]
async fn a_send_dropped_mid_request_is_still_delivered_and_order_holds() {
    tests::init_tracing();
    for idempotent in [false, true] {
        let (broker, client, p) = one_partition(
            "direct",
            ProducerConfig {
                idempotent,
                ..Default::default()
            },
        )
        .await;
        if idempotent {
            broker.handle().unwrap().drop_next_produce_answers(2);
        }
        let mut first = Box::pin(p.send(msg("direct", "0000")));
        assert!(futures::poll!(first.as_mut()).is_pending());
        drop(first);
        for i in 1..=100 {
            p.send_async(msg("direct", format!("{i:04}")), None)
                .await
                .unwrap();
        }
        let behind = tokio::time::timeout(Duration::from_secs(10), p.send(msg("direct", "0101")))
            .await
            .expect("a dropped send does not block its partition")
            .unwrap();
        assert_eq!(behind.offset, 101, "idempotent = {idempotent}");
        let alone = tokio::time::timeout(Duration::from_secs(10), p.send(msg("direct", "0102")))
            .await
            .expect("the partition is not left blocked")
            .unwrap();
        assert_eq!(alone.offset, 102, "idempotent = {idempotent}");
        // Polled once, then parked: the partition still moves, and flush does not hang.
        let mut parked = Box::pin(p.send(msg("direct", "0103")));
        assert!(futures::poll!(parked.as_mut()).is_pending());
        p.send_async(msg("direct", "0104"), None).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), p.flush())
            .await
            .expect("flush does not wait on a parked send")
            .unwrap();
        assert_eq!(
            parked.await.unwrap().offset,
            103,
            "idempotent = {idempotent}"
        );
        let expected: Vec<String> = (0..=104).map(|i| format!("{i:04}")).collect();
        assert_eq!(stored_payloads(&client, "direct", 0).await, expected);
        // Every accepted message was resolved, the dropped one included.
        tokio::time::timeout(Duration::from_secs(10), p.close())
            .await
            .expect("close finds every message resolved")
            .unwrap();
    }
}

#[tokio::test]
async fn message_too_large_fails_before_sending_and_the_limit_itself_passes() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let p = producer(
        &client,
        "sized",
        ProducerConfig {
            max_message_size: 1000,
            buffer_memory: 4096,
            ..Default::default()
        },
    )
    .await;
    match p.send(msg("sized", "x".repeat(1001))).await {
        Err(ClientError::MessageTooLarge {
            size: 1001,
            max_size: 1000,
        }) => {}
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    let ok = p.send(msg("sized", "x".repeat(1000))).await.unwrap();
    assert_eq!(ok.offset, 0, "nothing was stored for the oversized message");
}

/// A message within `max_message_size` whose record the broker's largest batch cannot hold
/// is refused before it is sent, as one past `max_message_size` is (not with the broker's
/// `BatchTooLarge` after a round trip); the producer goes on.
#[tokio::test]
async fn a_message_past_the_brokers_largest_batch_fails_before_sending() {
    let mut config = rustmq::testing::BrokerConfig::default();
    config.limits.max_batch_bytes = 64 * 1024;
    let broker = TestBroker::start_with(config).await.unwrap();
    let client = broker.client().await.unwrap();
    let p = producer(&client, "capped", ProducerConfig::default()).await;
    match p.send(msg("capped", "x".repeat(100 * 1024))).await {
        Err(ClientError::MessageTooLarge {
            size,
            max_size: 65_536,
        }) if size > 100 * 1024 => {}
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    let ok = p.send(msg("capped", "x".repeat(60 * 1024))).await.unwrap();
    assert_eq!(ok.offset, 0, "nothing was stored for the oversized message");
    // So with compression enabled and no codec chosen (no compression either).
    let uncompressed = ProducerConfig {
        compression: rustmq::CompressionConfig {
            enabled: true,
            algorithm: rustmq::CompressionAlgorithm::None,
            ..Default::default()
        },
        ..ProducerConfig::default()
    };
    let p = producer(&client, "capped", uncompressed).await;
    assert!(matches!(
        p.send(msg("capped", "x".repeat(100 * 1024))).await,
        Err(ClientError::MessageTooLarge { .. })
    ));
}

/// A message stamped further ahead of the broker's clock than it accepts
/// (`log.message_timestamp_after_max_ms`, 1 hour by default: time-based retention goes by a
/// segment's largest timestamp) is refused with a typed, non-retryable `InvalidTimestamp` and
/// stores nothing; the producer goes on, a message within the limit is stored with its own
/// timestamp, and a broker configured for it accepts any timestamp.
#[tokio::test]
async fn a_timestamp_too_far_ahead_is_refused_and_the_producer_goes_on() {
    const HOUR: u64 = 3_600_000;
    let (_broker, client, p) = one_partition("stamped", ProducerConfig::default()).await;
    let now = rustmq::message::now_ms();
    let stamped = |at: u64| {
        Message::builder()
            .topic("stamped")
            .payload("x")
            .timestamp(at)
            .build()
            .unwrap()
    };
    let refused = p.send(stamped(now + 2 * HOUR)).await.unwrap_err();
    assert_eq!(
        refused.error_code(),
        Some(rustmq_protocol::ErrorCode::InvalidTimestamp),
        "{refused}"
    );
    assert!(!refused.is_retryable(), "{refused}");
    assert!(
        refused
            .to_string()
            .contains("message_timestamp_after_max_ms"),
        "{refused}"
    );
    let stored = p.send(stamped(now + HOUR / 2)).await.unwrap();
    assert_eq!(
        stored.offset, 0,
        "nothing was stored for the refused message"
    );
    let (records, _) = fetch_all(&client, "stamped", 0, 0).await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].timestamp, (now + HOUR / 2) as i64);

    // An idempotent producer goes on too, after a batch the partition knows it by: with a new
    // producer id, since its sequences stop at the refused batch (the same id's next sequence
    // would be out of order).
    let idempotent = producer(
        &client,
        "stamped",
        ProducerConfig {
            idempotent: true,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(idempotent.send(stamped(now)).await.unwrap().offset, 1);
    idempotent.send(stamped(now + 2 * HOUR)).await.unwrap_err();
    assert_eq!(idempotent.send(stamped(now)).await.unwrap().offset, 2);

    let mut config = rustmq::testing::BrokerConfig::default();
    config.log.message_timestamp_after_max_ms = u64::MAX;
    let lenient = TestBroker::start_with(config).await.unwrap();
    let client = lenient.client().await.unwrap();
    client.create_topic("stamped", 1).await.unwrap();
    let p = producer(&client, "stamped", ProducerConfig::default()).await;
    p.send(stamped(now + 10_000 * 24 * HOUR)).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_send_async_then_close_stores_each_exactly_once() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("bulk", 4).await.unwrap();
    let p = client.create_producer("bulk").await.unwrap();
    for i in 0..100_000u32 {
        p.send_async(msg("bulk", i.to_string()), None)
            .await
            .unwrap();
    }
    p.close().await.unwrap();
    assert!(matches!(
        p.send(msg("bulk", "late")).await,
        Err(ClientError::Closed)
    ));
    let mut seen = HashSet::new();
    for partition in 0..4 {
        for payload in stored_payloads(&client, "bulk", partition).await {
            assert!(seen.insert(payload.clone()), "{payload} stored twice");
        }
    }
    assert_eq!(seen.len(), 100_000);
}

#[tokio::test]
async fn the_same_key_lands_on_the_same_partition_across_producers() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("keyed", 8).await.unwrap();
    let a = client.create_producer("keyed").await.unwrap();
    let b = producer(&client, "keyed", ProducerConfig::default()).await;
    let mut used = HashSet::new();
    for k in 0..64 {
        let key = format!("user-{k}");
        let m = || {
            Message::builder()
                .topic("keyed")
                .key(&key)
                .payload("x")
                .build()
                .unwrap()
        };
        let (ra, rb) = (a.send(m()).await.unwrap(), b.send(m()).await.unwrap());
        assert_eq!(ra.partition, rb.partition, "key {key}");
        assert_eq!(
            ra.partition,
            partition_for_key(key.as_bytes(), 8),
            "stable hash for {key}"
        );
        used.insert(ra.partition);
    }
    assert!(used.len() > 4, "keys spread over partitions: {used:?}");
    // An explicit partition wins over the key.
    let explicit = Message::builder()
        .topic("keyed")
        .key("user-0")
        .partition(7)
        .payload("x")
        .build()
        .unwrap();
    assert_eq!(a.send(explicit).await.unwrap().partition, 7);
}

/// A producer built for a topic that does not exist yet, on a broker that auto-creates topics
/// with 4 partitions, partitions its very first keyed message as the later ones: a key's
/// messages all land on one partition, in order.
#[tokio::test]
async fn keyed_messages_to_an_auto_created_topic_keep_one_partition_from_the_first() {
    let config = rustmq::testing::BrokerConfig {
        default_partitions: 4,
        ..Default::default()
    };
    let broker = TestBroker::start_with(config).await.unwrap();
    let client = broker.client().await.unwrap();
    let producer = client.create_producer("fresh").await.unwrap();
    assert_eq!(
        producer.partition_count(),
        4,
        "the topic was created at build"
    );
    assert_eq!(
        client
            .describe_topic("fresh")
            .await
            .unwrap()
            .partition_count(),
        4
    );
    for round in 0..3 {
        for k in 0..8 {
            let key = format!("user-{k}");
            let m = Message::builder()
                .topic("fresh")
                .key(&key)
                .payload(format!("{round}"))
                .build()
                .unwrap();
            let sent = producer.send(m).await.unwrap();
            assert_eq!(
                sent.partition,
                partition_for_key(key.as_bytes(), 4),
                "round {round}, key {key}"
            );
        }
    }

    // Without auto-creation, a producer of a missing topic is built (the topic may be created
    // later) and its sends are refused as for an unknown topic; nothing is created.
    let config = rustmq::testing::BrokerConfig {
        auto_create_topics: false,
        ..Default::default()
    };
    let strict = TestBroker::start_with(config).await.unwrap();
    let client = strict.client().await.unwrap();
    let producer = client.create_producer("absent").await.unwrap();
    let refused = producer.send(msg("absent", "x")).await.unwrap_err();
    assert_eq!(
        refused.error_code(),
        Some(rustmq_protocol::ErrorCode::UnknownTopic),
        "{refused:?}"
    );
    assert!(client.describe_topic("absent").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_makes_send_wait_and_memory_stays_bounded() {
    let broker = TestBroker::start().await.unwrap();
    let mut config = fast_retries(&broker);
    // Three lost answers, each retried after 100-200 ms: the buffer stays full for >= 300 ms.
    config.retry_config.base_delay = Duration::from_millis(200);
    config.retry_config.max_delay = Duration::from_millis(200);
    let client = RustMqClient::new(config).await.unwrap();
    client.create_topic("tight", 1).await.unwrap();
    let limit = 8 * 1024;
    let p = producer(
        &client,
        "tight",
        ProducerConfig {
            buffer_memory: limit,
            max_message_size: 1024,
            batch_size: 4,
            ..Default::default()
        },
    )
    .await;
    // While answers are dropped, acknowledged bytes cannot drain.
    broker.handle().unwrap().drop_next_produce_answers(3);
    let accepted = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let (p, accepted) = (p.clone(), Arc::clone(&accepted));
        tasks.push(tokio::spawn(async move {
            p.send_async(msg("tight", format!("{i:0>1024}")), None)
                .await
                .unwrap();
            accepted.fetch_add(1, Ordering::SeqCst);
        }));
    }
    let mut max_seen = 0;
    for _ in 0..25 {
        max_seen = max_seen.max(p.buffered_bytes());
        assert!(p.buffered_bytes() <= limit, "buffer grew past its bound");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert!(
        accepted.load(Ordering::SeqCst) < 100,
        "senders were held back by the full buffer"
    );
    assert!(
        max_seen > limit / 2,
        "the buffer was actually used ({max_seen} bytes)"
    );
    for t in tasks {
        t.await.unwrap();
    }
    p.flush().await.unwrap();
    assert_eq!(p.buffered_bytes(), 0);
    assert_eq!(
        stored_payloads(&client, "tight", 0)
            .await
            .iter()
            .collect::<HashSet<_>>()
            .len(),
        100
    );

    // Configured to fail instead of waiting.
    let failing = producer(
        &client,
        "tight",
        ProducerConfig {
            buffer_memory: 1024,
            max_message_size: 1024,
            block_on_buffer_full: false,
            ..Default::default()
        },
    )
    .await;
    broker.handle().unwrap().drop_next_produce_answers(1);
    failing
        .send_async(msg("tight", "x".repeat(1000)), None)
        .await
        .unwrap();
    assert!(matches!(
        failing
            .send_async(msg("tight", "y".repeat(100)), None)
            .await,
        Err(ClientError::BufferFull { limit: 1024 })
    ));
}

#[tokio::test]
async fn compression_above_min_size_and_default_headers() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("zipped", 1).await.unwrap();
    let config = ProducerConfig {
        compression: CompressionConfig {
            enabled: true,
            algorithm: CompressionAlgorithm::Zstd,
            level: 3,
            min_size: 2048,
        },
        default_properties: [("service".to_string(), "billing".to_string())].into(),
        batch_size: 100,
        ..Default::default()
    };
    let p = producer(&client, "zipped", config).await;
    // A small batch stays uncompressed; a large one is compressed.
    p.send(msg("zipped", "tiny")).await.unwrap();
    let big: Vec<Message> = (0..100)
        .map(|i| msg("zipped", format!("{i} {}", "compressible ".repeat(20))))
        .collect();
    p.send_batch(big).await.unwrap();
    let own = Message::builder()
        .topic("zipped")
        .payload("own")
        .header("service", "mine")
        .build()
        .unwrap();
    p.send(own).await.unwrap();
    let (records, raw) = fetch_all(&client, "zipped", 0, 0).await;
    let codecs: Vec<Compression> = raw
        .iter()
        .map(|b| BatchHeader::parse(b).unwrap().compression())
        .collect();
    assert_eq!(codecs.first(), Some(&Compression::None));
    assert!(codecs.contains(&Compression::Zstd), "{codecs:?}");
    let service = |i: usize| {
        records[i]
            .headers
            .iter()
            .find(|h| h.key == "service")
            .map(|h| h.value.to_vec())
    };
    assert_eq!(
        service(0),
        Some(b"billing".to_vec()),
        "default properties become headers"
    );
    assert_eq!(
        service(records.len() - 1),
        Some(b"mine".to_vec()),
        "a message's own header wins"
    );
}

/// The client's compression is its producers' default: a `ProducerConfig` that tunes other
/// settings and leaves compression alone compresses as the client says (the seed README's
/// advice for low throughput turns it on in `ClientConfig`); `algorithm: None` keeps one
/// producer uncompressed, and a producer's own codec wins.
#[tokio::test]
async fn a_producer_config_that_leaves_compression_alone_takes_the_clients() {
    let broker = TestBroker::start().await.unwrap();
    let client = RustMqClient::new(ClientConfig {
        compression: CompressionConfig {
            enabled: true,
            algorithm: CompressionAlgorithm::Lz4,
            min_size: 0,
            ..Default::default()
        },
        ..broker.client_config()
    })
    .await
    .unwrap();
    client.create_topic("inherit", 1).await.unwrap();
    let codec_of = |compression: Option<CompressionConfig>| {
        let client = client.clone();
        async move {
            let config = ProducerConfig {
                ack_level: AckLevel::All,
                compression: compression.unwrap_or_default(),
                ..Default::default()
            };
            let p = producer(&client, "inherit", config).await;
            let payload = "compressible ".repeat(20);
            let sent = p.send(msg("inherit", payload)).await.unwrap();
            let (_, raw) = fetch_all(&client, "inherit", 0, sent.offset).await;
            BatchHeader::parse(&raw[0]).unwrap().compression()
        }
    };
    assert_eq!(codec_of(None).await, Compression::Lz4);
    let none = CompressionConfig {
        algorithm: CompressionAlgorithm::None,
        ..Default::default()
    };
    assert_eq!(codec_of(Some(none)).await, Compression::None);
    let zstd = CompressionConfig {
        enabled: true,
        algorithm: CompressionAlgorithm::Zstd,
        min_size: 0,
        ..Default::default()
    };
    assert_eq!(codec_of(Some(zstd)).await, Compression::Zstd);
}

/// `send_async` and `send_async_with` return futures that, as futures do, send nothing until
/// polled; once awaited, the callback hears the stored offset.
#[tokio::test]
async fn a_send_async_never_polled_sends_nothing_and_the_callback_hears_the_outcome() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("lazy", 1).await.unwrap();
    let p = producer(&client, "lazy", ProducerConfig::default()).await;
    drop(p.send_async(msg("lazy", "dropped"), None));
    drop(p.send_async_with(msg("lazy", "dropped too"), |_| {}));
    let (tx, rx) = tokio::sync::oneshot::channel();
    p.send_async_with(msg("lazy", "kept"), move |r| {
        let _ = tx.send(r.map(|ok| ok.offset));
    })
    .await
    .unwrap();
    p.flush().await.unwrap();
    assert_eq!(rx.await.unwrap().unwrap(), 0, "the first stored message");
    assert_eq!(stored_payloads(&client, "lazy", 0).await, ["kept"]);
}

/// A callback that counts its calls in `told`.
fn counting(told: &Arc<AtomicUsize>) -> impl FnOnce(Result<SendResult>) + Send + 'static {
    let told = Arc::clone(told);
    move |_| {
        told.fetch_add(1, Ordering::SeqCst);
    }
}

/// A send waiting for buffer room when `close` starts gets its room only once `close` counted
/// what it must deliver: it is refused then (accepted, it would sit in a batch nobody sends,
/// its callback never told, and every later `flush` would wait for it).
#[tokio::test]
async fn a_send_waiting_for_room_when_close_starts_is_refused() {
    let broker = TestBroker::start().await.unwrap();
    // The producer reaches the broker through a relay: cut, the first batch's answer waits
    // and the buffer stays full while `close` starts.
    let relay = tests::UdpRelay::start(broker.addr(), Duration::ZERO).await;
    let client = RustMqClient::new(ClientConfig {
        brokers: vec![relay.addr.to_string()],
        request_timeout: Duration::from_secs(30),
        ..fast_retries(&broker)
    })
    .await
    .unwrap();
    client.create_topic("closing", 1).await.unwrap();
    let p = producer(
        &client,
        "closing",
        ProducerConfig {
            buffer_memory: 1024,
            max_message_size: 1024,
            batch_timeout: Duration::from_secs(60),
            ..Default::default()
        },
    )
    .await;
    let told = Arc::new(AtomicUsize::new(0));
    p.send_async_with(msg("closing", "a".repeat(1000)), counting(&told))
        .await
        .unwrap();
    relay.cut(true);
    let waiting = {
        let (p, callback) = (p.clone(), counting(&told));
        tokio::spawn(async move {
            p.send_async_with(msg("closing", "b".repeat(1000)), callback)
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(!waiting.is_finished(), "the second send waits for room");
    let close = tokio::spawn({
        let p = p.clone();
        async move { p.close().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    relay.cut(false);
    tokio::time::timeout(Duration::from_secs(20), close)
        .await
        .expect("close ends")
        .unwrap()
        .unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("the waiting send ends")
        .unwrap();
    assert!(matches!(waited, Err(ClientError::Closed)), "{waited:?}");
    assert_eq!(told.load(Ordering::SeqCst), 1, "the first send was told");
    tokio::time::timeout(Duration::from_secs(5), p.flush())
        .await
        .expect("a flush after close has nothing to wait for")
        .unwrap();
    assert_eq!(stored_payloads(&client, "closing", 0).await.len(), 1);
}

/// A send waiting for buffer room has the open batches sent at once: room comes back only
/// as batches are answered, so one lingering in a full buffer would hold the send for its
/// whole linger (for ever, with no linger limit).
#[tokio::test]
async fn a_send_waiting_for_room_does_not_wait_for_the_linger() {
    let (_broker, client, p) = one_partition(
        "lingering",
        ProducerConfig {
            buffer_memory: 16 * 1024,
            max_message_size: 16 * 1024,
            batch_size: 1_000,
            batch_timeout: Duration::MAX,
            ..Default::default()
        },
    )
    .await;
    let sends = async {
        for i in 0..64 {
            p.send_async(msg("lingering", format!("{i:04}{}", "x".repeat(996))), None)
                .await?;
        }
        Ok::<_, ClientError>(())
    };
    tokio::time::timeout(Duration::from_secs(20), sends)
        .await
        .expect("sends that wait for room are not held by the linger")
        .unwrap();
    p.flush().await.unwrap();
    assert_eq!(stored_payloads(&client, "lingering", 0).await.len(), 64);
}

/// Without waiting for room (`block_on_buffer_full: false`), a send refused with `BufferFull`
/// has the open batches sent: trying again soon succeeds, however long their linger.
#[tokio::test]
async fn a_full_buffer_sends_its_open_batches_for_the_next_try() {
    let (_broker, client, p) = one_partition(
        "refusing",
        ProducerConfig {
            buffer_memory: 4 * 1024,
            max_message_size: 4 * 1024,
            batch_timeout: Duration::from_secs(600),
            block_on_buffer_full: false,
            ..Default::default()
        },
    )
    .await;
    let payload = || msg("refusing", "x".repeat(1000));
    let mut accepted = 0;
    loop {
        match p.send_async(payload(), None).await {
            Ok(()) => accepted += 1,
            Err(ClientError::BufferFull { .. }) => break,
            Err(e) => panic!("{e:?}"),
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while let Err(e) = p.send_async(payload(), None).await {
        assert!(matches!(e, ClientError::BufferFull { .. }), "{e:?}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "the buffer never had room again"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    p.flush().await.unwrap();
    assert_eq!(
        stored_payloads(&client, "refusing", 0).await.len(),
        accepted + 1
    );
}

/// Many sends waiting for room while `close` runs: every send that returned `Ok` has its
/// callback called by the time `close` returns.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_send_accepted_around_close_is_told_its_outcome() {
    for round in 0..5 {
        let (_broker, _client, p) = one_partition(
            "racing",
            ProducerConfig {
                buffer_memory: 1024,
                max_message_size: 1024,
                ..Default::default()
            },
        )
        .await;
        let told = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (p, told, accepted) = (p.clone(), Arc::clone(&told), Arc::clone(&accepted));
            tasks.push(tokio::spawn(async move {
                while p
                    .send_async_with(msg("racing", "x".repeat(1000)), counting(&told))
                    .await
                    .is_ok()
                {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
            }));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        tokio::time::timeout(Duration::from_secs(10), p.close())
            .await
            .expect("close ends")
            .unwrap();
        let told_at_close = told.load(Ordering::SeqCst);
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .expect("every sender sees the producer closed")
                .unwrap();
        }
        assert!(accepted.load(Ordering::SeqCst) > 0);
        assert_eq!(
            accepted.load(Ordering::SeqCst),
            told_at_close,
            "round {round}: every accepted send was told by the time close returned"
        );
        assert_eq!(told.load(Ordering::SeqCst), told_at_close);
    }
}

/// `send_batch` attempts every message: one refused at once does not keep the others back,
/// and the refusal is the answer.
#[tokio::test]
async fn send_batch_sends_the_others_when_one_message_is_too_large() {
    let (_broker, client, p) = one_partition(
        "mixed",
        ProducerConfig {
            max_message_size: 1024,
            buffer_memory: 4096,
            ..Default::default()
        },
    )
    .await;
    let batch = vec![
        msg("mixed", "first"),
        msg("mixed", "x".repeat(2048)),
        msg("mixed", "last"),
    ];
    match p.send_batch(batch).await {
        Err(ClientError::MessageTooLarge { max_size: 1024, .. }) => {}
        other => panic!("expected MessageTooLarge, got {other:?}"),
    }
    assert_eq!(
        stored_payloads(&client, "mixed", 0).await,
        ["first", "last"]
    );
}

/// An idempotent producer asks for its producer id with its first batch: a transient failure
/// of that request (the broker restarting) is retried as the produce request would be, rather
/// than failing the batch at once.
#[tokio::test]
async fn an_idempotent_producer_retries_its_producer_id_across_a_broker_restart() {
    tests::init_tracing();
    let mut broker = TestBroker::start().await.unwrap();
    let mut config = fast_retries(&broker);
    config.retry_config.max_retries = 30;
    config.retry_config.base_delay = Duration::from_millis(50);
    config.retry_config.max_delay = Duration::from_millis(200);
    // While the broker is down, the request for a producer id fails (times out) well before
    // the broker is back.
    config.connect_timeout = Duration::from_millis(300);
    config.request_timeout = Duration::from_secs(1);
    let client = RustMqClient::new(config).await.unwrap();
    client.create_topic("restarting", 1).await.unwrap();
    let p = producer(
        &client,
        "restarting",
        ProducerConfig {
            idempotent: true,
            ..Default::default()
        },
    )
    .await;
    broker.stop().await;
    let sending = {
        let p = p.clone();
        tokio::spawn(async move { p.send(msg("restarting", "after")).await })
    };
    tokio::time::sleep(Duration::from_millis(2500)).await;
    tests::restart_broker(&mut broker).await;
    let sent = tokio::time::timeout(Duration::from_secs(30), sending)
        .await
        .expect("the send ends")
        .unwrap();
    assert_eq!(sent.expect("the send outlives the restart").offset, 0);
    assert_eq!(stored_payloads(&client, "restarting", 0).await, ["after"]);
}

/// `AckLevel::None`: a send resolves once its batch is written, not when (or whether) the broker
/// answers. Every answer is lost here (the broker stores each batch and resets its stream): the
/// sends still succeed, and the lost answers are counted, not reported to them.
#[tokio::test]
async fn fire_and_forget_sends_do_not_wait_for_their_answers() {
    tests::init_tracing();
    const SENDS: usize = 50;
    let (broker, client, p) = one_partition(
        "unanswered",
        ProducerConfig {
            ack_level: AckLevel::None,
            batch_size: 1,
            ..Default::default()
        },
    )
    .await;
    broker
        .handle()
        .unwrap()
        .drop_next_produce_answers(SENDS as u32);
    let outcomes = Arc::new(parking_lot::Mutex::new(Vec::new()));
    for i in 0..SENDS {
        let outcomes = Arc::clone(&outcomes);
        p.send_async_with(msg("unanswered", format!("{i:04}")), move |r| {
            outcomes.lock().push(r)
        })
        .await
        .unwrap();
    }
    // Flush waits for the answers too (here: their loss).
    p.flush().await.unwrap();
    let outcomes = std::mem::take(&mut *outcomes.lock());
    assert_eq!(outcomes.len(), SENDS);
    for outcome in outcomes {
        let sent = outcome.expect("a fire-and-forget send does not wait for its answer");
        assert_eq!(sent.offset, SendResult::UNKNOWN_OFFSET);
    }
    let metrics = p.metrics().await;
    assert_eq!(metrics.errors.load(Ordering::Relaxed), SENDS as u64);
    assert_eq!(
        metrics.messages_failed.load(Ordering::Relaxed),
        SENDS as u64
    );
    assert_eq!(metrics.retries.load(Ordering::Relaxed), 0);
    // Each batch was stored once (no order is promised between pipelined batches).
    let mut stored = stored_payloads(&client, "unanswered", 0).await;
    stored.sort();
    let expected: Vec<String> = (0..SENDS).map(|i| format!("{i:04}")).collect();
    assert_eq!(stored, expected);
}

/// A producer whose topic is deleted and made again with other partitions learns the new
/// count: keys that went to a partition the new topic lacks go where it has room (the
/// broker's `UnknownPartition` answer has the count asked again; that first answer is the
/// send's error), and an explicit partition the producer did not know of has the count asked
/// before it is refused. Before, the count read when the producer was built stayed for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_learns_a_topic_made_again_with_other_partitions() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("remade", 3).await.unwrap();
    let producer = client.create_producer("remade").await.unwrap();
    let keyed = |key: &str| {
        rustmq::Message::builder()
            .topic("remade")
            .key(key.to_owned())
            .payload("v")
            .build()
            .unwrap()
    };
    let mut key = None;
    for i in 0..100 {
        let k = format!("k{i}");
        if producer.send(keyed(&k)).await.unwrap().partition == 2 {
            key = Some(k);
            break;
        }
    }
    let key = key.expect("a key of partition 2");
    client.delete_topic("remade").await.unwrap();
    client.create_topic("remade", 1).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let stored = loop {
        match producer.send(keyed(&key)).await {
            Ok(stored) => break stored,
            Err(e) if std::time::Instant::now() < deadline => {
                tracing::info!(error = %e, "send refused while the count is asked again");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => panic!("the producer kept the old partition count: {e}"),
        }
    };
    assert_eq!(stored.partition, 0);
    assert_eq!(producer.partition_count(), 1);
    // Made again with more: an explicit partition past the known count is asked for first.
    client.delete_topic("remade").await.unwrap();
    client.create_topic("remade", 4).await.unwrap();
    let third = || {
        rustmq::Message::builder()
            .topic("remade")
            .partition(3)
            .payload("v")
            .build()
            .unwrap()
    };
    // A send given up while the count is asked does not keep later ones from asking.
    {
        let given_up = producer.send(third());
        futures::pin_mut!(given_up);
        assert!(
            futures::poll!(&mut given_up).is_pending(),
            "it waits for the count"
        );
    }
    assert_eq!(producer.send(third()).await.unwrap().partition, 3);
    let fifth = rustmq::Message::builder()
        .topic("remade")
        .partition(4)
        .payload("v")
        .build()
        .unwrap();
    assert!(matches!(
        producer.send(fifth).await,
        Err(rustmq::ClientError::InvalidMessage(_))
    ));
}
