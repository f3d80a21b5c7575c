//! Produce -> fetch over real QUIC: every codec, keys, headers and timestamps intact; list
//! offsets by timestamp.

use rustmq::testing::TestBroker;
use rustmq_protocol::*;
use tests::{batch, fetch_all, produce, TestRecord};

fn records(n: usize, base_ts: i64) -> Vec<TestRecord> {
    (0..n)
        .map(|i| TestRecord {
            key: (i % 3 != 0).then(|| format!("key-{i}").into_bytes()),
            value: format!("value {i} ").repeat(20).into_bytes(),
            headers: vec![
                ("idx".into(), i.to_string().into_bytes()),
                ("bin".into(), vec![0, 255, i as u8]),
            ],
            timestamp: base_ts + i as i64 * 10,
        })
        .collect()
}

#[tokio::test]
async fn every_codec_round_trips_keys_headers_and_timestamps() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("codecs", 1).await.unwrap();

    let mut expected = Vec::new();
    let mut next = 0;
    for codec in Compression::ALL {
        let recs = records(50, 1_700_000_000_000);
        let ack = produce(&client, "codecs", 0, batch(&recs, codec), Acks::Leader)
            .await
            .unwrap();
        assert_eq!(ack.base_offset, next, "offsets are assigned contiguously");
        assert!(!ack.duplicate);
        next += recs.len() as u64;
        expected.extend(recs.into_iter().map(|r| (codec, r)));
    }
    let (got, raw) = fetch_all(&client, "codecs", 0, 0).await;
    assert_eq!(got.len(), expected.len());
    for (i, (rec, (codec, want))) in got.iter().zip(&expected).enumerate() {
        assert_eq!(rec.offset, i as u64);
        assert_eq!(
            rec.key.as_deref(),
            want.key.as_deref(),
            "{codec}: key of {i}"
        );
        assert_eq!(
            rec.value.as_deref(),
            Some(&want.value[..]),
            "{codec}: value of {i}"
        );
        assert_eq!(rec.timestamp, want.timestamp, "{codec}: timestamp of {i}");
        let headers: Vec<(String, Vec<u8>)> = rec
            .headers
            .iter()
            .map(|h| (h.key.clone(), h.value.to_vec()))
            .collect();
        assert_eq!(headers, want.headers, "{codec}: headers of {i}");
    }
    // Stored batches come back as they were sent: the compressed ones still compressed.
    let codecs: Vec<Compression> = raw
        .iter()
        .map(|b| BatchHeader::parse(b).unwrap().compression())
        .collect();
    assert_eq!(codecs, Compression::ALL.to_vec());
}

#[tokio::test]
async fn list_offsets_by_timestamp_finds_first_record_at_or_after() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("times", 1).await.unwrap();
    // Three batches: timestamps 1000..1090, 2000..2090, 3000..3090 (step 10).
    for base in [1000, 2000, 3000] {
        let recs: Vec<_> = (0..10)
            .map(|i| TestRecord::new(vec![i as u8], base + i * 10))
            .collect();
        produce(
            &client,
            "times",
            0,
            batch(&recs, Compression::Lz4),
            Acks::Leader,
        )
        .await
        .unwrap();
    }
    let lookup = |spec| {
        let client = client.clone();
        async move {
            match client
                .raw_request(Request::ListOffsets(ListOffsetsRequest {
                    topic: "times".into(),
                    partition: 0,
                    spec,
                }))
                .await
                .unwrap()
            {
                Response::ListOffsets(r) => r,
                other => panic!("{other:?}"),
            }
        }
    };
    let cases = [
        (0, 0, Some(1000)),
        (1000, 0, Some(1000)),
        (1001, 1, Some(1010)),
        (1090, 9, Some(1090)),
        (1091, 10, Some(2000)),
        (2055, 16, Some(2060)),
        (3090, 29, Some(3090)),
    ];
    for (ts, offset, found) in cases {
        let r = lookup(OffsetSpec::Timestamp(ts)).await;
        assert_eq!((r.offset, r.timestamp), (offset, found), "timestamp {ts}");
    }
    let after = lookup(OffsetSpec::Timestamp(5000)).await;
    assert_eq!(
        (after.offset, after.timestamp),
        (30, None),
        "past the end: the high watermark"
    );
    assert_eq!(lookup(OffsetSpec::Earliest).await.offset, 0);
    assert_eq!(lookup(OffsetSpec::Latest).await.offset, 30);
}

#[tokio::test]
async fn admin_calls_create_list_describe_delete() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("a", 3).await.unwrap();
    client.create_topic("b", 1).await.unwrap();
    let err = client.create_topic("a", 3).await.unwrap_err();
    assert!(!err.is_retryable(), "{err}");
    let names: Vec<String> = client
        .list_topics()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["a", "b"]);
    let described = client.describe_topic("a").await.unwrap();
    assert_eq!(described.partitions.len(), 3);
    client.delete_topic("a").await.unwrap();
    assert!(client.describe_topic("a").await.is_err());
    assert!(client.create_topic("bad name", 1).await.is_err());
}

/// `ensure_topic` creates a missing topic and leaves an existing one as it is; other failures
/// (here an invalid name) still come back.
#[tokio::test]
async fn ensure_topic_creates_once_and_keeps_existing_partitions() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.ensure_topic("ensured", 3).await.unwrap();
    client.ensure_topic("ensured", 5).await.unwrap();
    let description = client.describe_topic("ensured").await.unwrap();
    assert_eq!(description.partition_count(), 3);
    assert!(client.ensure_topic("bad name!", 1).await.is_err());
}

/// Produces `batches` batches of 200 records of 1 KiB (random bytes, so no codec shrinks
/// them), fetches everything back and checks every value; then waits (at most two seconds)
/// for the datagram size the client's connection sends to reach `until`, and returns it.
async fn bulk_round_trip(
    client: &rustmq::RustMqClient,
    topic: &str,
    batches: usize,
    until: impl Fn(u16) -> bool,
) -> u16 {
    client.create_topic(topic, 1).await.unwrap();
    let mut sent = Vec::new();
    for b in 0..batches {
        let recs: Vec<_> = (0..200)
            .map(|i| {
                let value: Vec<u8> = (0..1024).map(|_| fastrand::u8(..)).collect();
                TestRecord::new(value, (b * 200 + i) as i64)
            })
            .collect();
        produce(
            client,
            topic,
            0,
            batch(&recs, Compression::None),
            Acks::Leader,
        )
        .await
        .unwrap();
        sent.extend(recs.into_iter().map(|r| r.value));
    }
    let (got, _) = fetch_all(client, topic, 0, 0).await;
    assert_eq!(got.len(), sent.len(), "every record comes back");
    for (i, (rec, want)) in got.iter().zip(&sent).enumerate() {
        assert_eq!(rec.value.as_deref(), Some(&want[..]), "value of record {i}");
    }
    // Discovery probes run alongside the traffic and settle within a few hundred
    // milliseconds on loopback.
    let mut size = 0;
    for _ in 0..200 {
        size = client
            .connection_stats()
            .await
            .unwrap()
            .udp_payload_size
            .expect("an open connection");
        if until(size) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    size
}

/// Over loopback, path MTU discovery takes the client's datagrams past quinn's default limit
/// (1,472 bytes, what a broker would accept without its own bound) to the configured bound,
/// and megabytes carried in such datagrams arrive intact. The bound is the smaller of the
/// client's and the broker's; 1,200 keeps datagrams at QUIC's minimum.
#[tokio::test]
async fn loopback_datagrams_grow_to_the_configured_bound_and_carry_everything() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let size = bulk_round_trip(&client, "large-datagrams", 20, |s| {
        s == MAX_UDP_PAYLOAD_SIZE
    })
    .await;
    assert!(
        size > 1472 && size <= MAX_UDP_PAYLOAD_SIZE,
        "datagrams of {size} bytes"
    );

    // Discovery would have finished within the wait (as it did above): the bound holds.
    let mut config = broker.client_config();
    config.quic_config.max_udp_payload_size = MIN_UDP_PAYLOAD_SIZE;
    let small = rustmq::RustMqClient::new(config).await.unwrap();
    let size = bulk_round_trip(&small, "small-datagrams", 5, |_| false).await;
    assert_eq!(size, MIN_UDP_PAYLOAD_SIZE);

    let mut config = rustmq::testing::BrokerConfig::default();
    config.quic.max_udp_payload_size = 1400;
    let capped = TestBroker::start_with(config).await.unwrap();
    let client = capped.client().await.unwrap();
    // The search goes 1,300, 1,350, 1,375, then 1,400.
    let size = bulk_round_trip(&client, "capped-datagrams", 5, |s| s >= 1375).await;
    assert!((1375..=1400).contains(&size), "datagrams of {size} bytes");
}

/// `InitProducer` for the producer named `name`.
async fn init_named(client: &rustmq::RustMqClient, name: &str) -> InitProducerResponse {
    let request = Request::InitProducer(InitProducerRequest {
        name: Some(name.into()),
    });
    match client.raw_request(request).await.unwrap() {
        Response::InitProducer(r) => r,
        other => panic!("unexpected answer to InitProducer: {other:?}"),
    }
}

/// A one-record batch of producer `id` at `epoch`, sequence 0.
fn idempotent(id: i64, epoch: i16) -> bytes::Bytes {
    let mut builder = RecordBatchBuilder::new().producer(id, epoch, 0);
    builder.push(1, None, Some(b"x"), []);
    builder.build().unwrap()
}

/// Produces `batch` to `topic`/0 and checks that it is refused as of a fenced producer.
async fn refused_as_fenced(client: &rustmq::RustMqClient, topic: &str, batch: bytes::Bytes) {
    let refused = produce(client, topic, 0, batch, Acks::Leader)
        .await
        .unwrap_err();
    assert_eq!(
        refused.error_code(),
        Some(ErrorCode::InvalidProducerEpoch),
        "{topic}: {refused}"
    );
}

/// A named producer's initialisation fences its older instance in topics created after it too
/// (by `CreateTopic`, or auto-created by a produce), as in the topics that existed then: a
/// batch of the older epoch is refused there, and the new epoch writes from sequence 0.
#[tokio::test]
async fn a_named_producers_older_epoch_is_refused_in_topics_created_after_its_init() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let old = init_named(&client, "fenced").await;
    let new = init_named(&client, "fenced").await;
    assert_eq!(
        (new.producer_id, new.epoch),
        (old.producer_id, old.epoch + 1)
    );
    client.create_topic("made-after", 1).await.unwrap();
    for topic in ["made-after", "auto-created"] {
        refused_as_fenced(&client, topic, idempotent(new.producer_id, old.epoch)).await;
        let batch = idempotent(new.producer_id, new.epoch);
        let stored = produce(&client, topic, 0, batch, Acks::Leader)
            .await
            .unwrap();
        assert_eq!(stored.base_offset, 0, "{topic}");
    }
}

/// A named producer that has used every epoch (an exactly-once stream initialises at every
/// session start) gets a new producer id at epoch 0 instead of failing for good, and its old id
/// is retired: the old id's batches are refused whatever their epoch, the new id writes.
#[tokio::test]
async fn a_named_producer_out_of_epochs_moves_to_a_new_id_and_the_old_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("producers.toml"),
        format!("next_id = 1\n\n[named]\nworn = [0, {}]\n", i16::MAX),
    )
    .unwrap();
    let config = rustmq::testing::BrokerConfig {
        data_dir: dir.path().to_owned(),
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Default::default()
    };
    let mut broker = TestBroker::start_in(config).await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("outputs", 1).await.unwrap();
    // A new id (from the registry's random first id, which this earlier build's file moved
    // to at the start), at epoch 0.
    let fresh = init_named(&client, "worn").await;
    assert!(fresh.producer_id != 0 && fresh.epoch == 0, "{fresh:?}");
    refused_as_fenced(&client, "outputs", idempotent(0, i16::MAX)).await;
    let stored = produce(
        &client,
        "outputs",
        0,
        idempotent(fresh.producer_id, 0),
        Acks::Leader,
    )
    .await
    .unwrap();
    assert_eq!(stored.base_offset, 0);

    // Still refused after a restart, which loads the partitions' producers from their
    // snapshots and the log.
    tests::restart_broker(&mut broker).await;
    let client = broker.client().await.unwrap();
    refused_as_fenced(&client, "outputs", idempotent(0, i16::MAX)).await;
}

/// A producer name that has not been initialised, nor written, for
/// `log.named_producer_expiration_ms` is forgotten by a retention pass, on disk too: its next
/// initialisation is a new id at epoch 0, and the old id is refused broker-wide (an instance
/// stalled that long must initialise again, as Kafka's is answered
/// `INVALID_PRODUCER_ID_MAPPING`). Within the expiration nothing changes.
#[tokio::test]
async fn an_idle_producer_name_is_forgotten_at_a_retention_pass() {
    let hour = 3_600_000;
    let mut config = rustmq::testing::BrokerConfig::default();
    config.log.named_producer_expiration_ms = hour;
    let mut broker = TestBroker::start_with(config).await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("named", 1).await.unwrap();
    let first = init_named(&client, "short-lived").await;
    produce(
        &client,
        "named",
        0,
        idempotent(first.producer_id, first.epoch),
        Acks::Leader,
    )
    .await
    .unwrap();
    let now = now_ms();
    let handle = broker.handle().unwrap();
    handle.run_retention_at(now + hour as i64 / 2);
    let second = init_named(&client, "short-lived").await;
    assert_eq!(
        (second.producer_id, second.epoch),
        (first.producer_id, first.epoch + 1),
        "kept within the expiration"
    );
    refused_as_fenced(&client, "named", idempotent(first.producer_id, first.epoch)).await;

    handle.run_retention_at(now + 2 * hour as i64);
    for restarted in [false, true] {
        if restarted {
            tests::restart_broker(&mut broker).await;
        }
        let client = broker.client().await.unwrap();
        let stale = produce(
            &client,
            "named",
            0,
            idempotent(first.producer_id, second.epoch),
            Acks::Leader,
        )
        .await
        .unwrap_err();
        assert_eq!(
            stale.error_code(),
            Some(ErrorCode::UnknownProducer),
            "restarted: {restarted}: {stale}"
        );
    }
    let client = broker.client().await.unwrap();
    let third = init_named(&client, "short-lived").await;
    assert_eq!(third.epoch, 0, "a new name's first epoch");
    assert_ne!(third.producer_id, first.producer_id);
}

/// The broker's clock, ms since the Unix epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// A name initialised long ago is kept while its id writes: the pass asks every partition
/// when it last wrote, and a restart does not make it active again (the partition's producer
/// snapshot keeps when it last wrote).
#[tokio::test]
async fn a_producer_name_that_writes_is_kept() {
    let hour = 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    // A registry whose name was last initialised in 1970.
    std::fs::write(
        dir.path().join("producers.toml"),
        "next_id = 1\n[named]\nold-but-busy = [0, 0]\n[initialised_at]\nold-but-busy = 1\n",
    )
    .unwrap();
    let mut config = rustmq::testing::BrokerConfig::default();
    config.log.named_producer_expiration_ms = hour;
    config.data_dir = dir.path().to_owned();
    config.listen = "127.0.0.1:0".parse().unwrap();
    let mut broker = TestBroker::start_in(config).await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("busy", 1).await.unwrap();
    let batch = |seq: i32| {
        let mut builder = RecordBatchBuilder::new().producer(0, 0, seq);
        builder.push(1, None, Some(b"x"), []);
        builder.build().unwrap()
    };
    produce(&client, "busy", 0, batch(0), Acks::Leader)
        .await
        .unwrap();
    let written = now_ms();
    broker
        .handle()
        .unwrap()
        .run_retention_at(written + hour as i64 - 60_000);
    produce(&client, "busy", 0, batch(1), Acks::Leader)
        .await
        .expect("kept while it writes");
    // Restarted after its last write: a pass a full expiration after that write (but not
    // after the restart) forgets it, as the partition's snapshot kept when it last wrote.
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let before_restart = now_ms();
    tests::restart_broker(&mut broker).await;
    broker
        .handle()
        .unwrap()
        .run_retention_at(before_restart + hour as i64 - 1);
    let client = broker.client().await.unwrap();
    let forgotten = produce(&client, "busy", 0, batch(2), Acks::Leader)
        .await
        .unwrap_err();
    assert_eq!(forgotten.error_code(), Some(ErrorCode::UnknownProducer));
}

/// A fetch of partition 0 of `topic` at `offset` waiting up to 20 s for records, given time
/// to reach the broker and wait there.
async fn long_poll(
    client: &rustmq::RustMqClient,
    topic: &'static str,
    offset: u64,
) -> tokio::task::JoinHandle<rustmq::Result<FetchResponse>> {
    let poll = tokio::spawn({
        let client = client.clone();
        async move { tests::fetch(&client, topic, 0, offset, 20_000).await }
    });
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    poll
}

/// A long poll whose topic is deleted while it waits is answered at once, as a fetch of any
/// missing topic is (`UnknownTopic`), not at its deadline with the deleted log's positions
/// (and its files held open until then); a topic made again under the name is unaffected.
#[tokio::test]
async fn a_long_poll_on_a_deleted_topic_is_told_at_once() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("ephemeral", 1).await.unwrap();
    produce(
        &client,
        "ephemeral",
        0,
        batch(&records(3, 1_000), Compression::None),
        Acks::Leader,
    )
    .await
    .unwrap();
    let poll = long_poll(&client, "ephemeral", 3).await;
    client.delete_topic("ephemeral").await.unwrap();
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), poll)
        .await
        .expect("answered well before its 20 s wait")
        .unwrap();
    assert!(
        matches!(&answered, Err(rustmq::ClientError::TopicNotFound(_))),
        "{answered:?}"
    );
    client.create_topic("ephemeral", 1).await.unwrap();
    let fresh = tests::fetch(&client, "ephemeral", 0, 0, 0).await.unwrap();
    assert_eq!((fresh.high_watermark, fresh.records.len()), (0, 0));
}

/// "Unlimited" topic settings (`Duration::MAX`, `u64::MAX`) are taken as the largest a broker
/// keeps; a raw request with more is refused as an invalid topic (not retryable), before any
/// directory is made.
#[tokio::test]
async fn unlimited_topic_settings_are_taken_and_larger_ones_refused() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let unlimited = rustmq::TopicSettings::new()
        .with_retention(std::time::Duration::MAX)
        .with_retention_bytes(u64::MAX)
        .with_segment_bytes(u64::MAX);
    client
        .create_topic_with("forever", 1, unlimited)
        .await
        .unwrap();
    assert_eq!(
        client
            .describe_topic("forever")
            .await
            .unwrap()
            .partition_count(),
        1
    );
    let raw = Request::CreateTopic(CreateTopicRequest {
        name: "too-far".into(),
        partitions: 1,
        settings: TopicSettings {
            retention_ms: None,
            retention_bytes: Some(u64::MAX),
            segment_bytes: None,
        },
    });
    let refused = client.raw_request(raw).await.unwrap_err();
    assert_eq!(
        refused.error_code(),
        Some(ErrorCode::InvalidTopic),
        "{refused}"
    );
    assert!(!refused.is_retryable());
    assert!(!broker.data_dir().join("topics/too-far").exists());
}

/// A deletion that fails before the topic is gone (here its data cannot be moved aside)
/// leaves the topic as it was: a long poll on it goes on and is answered by the next append,
/// not with `UnknownTopic`.
#[tokio::test]
async fn a_long_poll_outlives_a_failed_deletion() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("sticky", 1).await.unwrap();
    let poll = long_poll(&client, "sticky", 0).await;
    // The deletion's marker file cannot be written where a non-empty directory stands.
    let obstacle = broker.data_dir().join("topics/sticky/~deleted");
    std::fs::create_dir_all(obstacle.join("x")).unwrap();
    assert!(client.delete_topic("sticky").await.is_err());
    std::fs::remove_dir_all(&obstacle).unwrap();
    produce(
        &client,
        "sticky",
        0,
        batch(&records(1, 1_000), Compression::None),
        Acks::Leader,
    )
    .await
    .unwrap();
    let answered = tokio::time::timeout(std::time::Duration::from_secs(10), poll)
        .await
        .expect("answered by the append")
        .unwrap()
        .unwrap();
    assert_eq!(answered.high_watermark, 1);
    assert!(!answered.records.is_empty());
}
