//! Durability: a clean restart keeps every acknowledged byte; a torn tail is truncated on
//! recovery; an existing client survives a broker restart on the same port.

use rustmq::testing::TestBroker;
use rustmq_protocol::*;
use tests::{batch, fetch_all, produce, TestRecord};

fn recs(n: usize, tag: &str) -> Vec<TestRecord> {
    (0..n)
        .map(|i| TestRecord::new(format!("{tag}-{i}"), 1_000 + i as i64))
        .collect()
}

#[tokio::test]
async fn everything_acknowledged_before_a_clean_stop_comes_back_byte_identical() {
    tests::init_tracing();
    let mut broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("durable", 2).await.unwrap();
    for i in 0..20 {
        let codec = Compression::ALL[i % 4];
        for p in 0..2 {
            produce(
                &client,
                "durable",
                p,
                batch(&recs(25, "r"), codec),
                Acks::Leader,
            )
            .await
            .unwrap();
        }
    }
    let before = [
        fetch_all(&client, "durable", 0, 0).await.1,
        fetch_all(&client, "durable", 1, 0).await.1,
    ];
    broker.restart().await.unwrap();
    let client2 = broker.client().await.unwrap();
    for p in 0..2u32 {
        let after = fetch_all(&client2, "durable", p, 0).await.1;
        assert_eq!(
            after, before[p as usize],
            "partition {p} differs after restart"
        );
    }
    // Appends continue after the recovered data.
    let ack = produce(
        &client2,
        "durable",
        0,
        batch(&recs(1, "new"), Compression::None),
        Acks::All,
    )
    .await
    .unwrap();
    assert_eq!(ack.base_offset, 500);
}

#[tokio::test]
async fn torn_tail_is_truncated_and_appends_continue_after_it() {
    for damage in ["cut", "garble"] {
        let mut broker = TestBroker::start().await.unwrap();
        let client = broker.client().await.unwrap();
        client.create_topic("torn", 1).await.unwrap();
        for i in 0..10 {
            produce(
                &client,
                "torn",
                0,
                batch(&recs(10, &format!("b{i}")), Compression::None),
                Acks::Leader,
            )
            .await
            .unwrap();
        }
        broker.stop().await;
        let dir = broker.data_dir().join("topics/torn/0");
        let segment = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "log"))
            .max()
            .unwrap();
        let mut data = std::fs::read(&segment).unwrap();
        match damage {
            "cut" => data.truncate(data.len() - 7),
            _ => {
                let at = data.len() - 5;
                data[at] ^= 0x5a;
            }
        }
        std::fs::write(&segment, &data).unwrap();

        broker.restart().await.unwrap();
        let client = broker.client().await.unwrap();
        let (records, _) = fetch_all(&client, "torn", 0, 0).await;
        assert_eq!(
            records.len(),
            90,
            "{damage}: the nine complete batches are served"
        );
        assert_eq!(records[89].value.as_deref(), Some(&b"b8-9"[..]));
        let ack = produce(
            &client,
            "torn",
            0,
            batch(&recs(3, "after"), Compression::None),
            Acks::All,
        )
        .await
        .unwrap();
        assert_eq!(
            ack.base_offset, 90,
            "{damage}: appends continue after the last good batch"
        );
        let (records, _) = fetch_all(&client, "torn", 0, 0).await;
        assert_eq!(records.len(), 93);
        assert_eq!(records[90].value.as_deref(), Some(&b"after-0"[..]));
    }
}

#[tokio::test]
async fn existing_client_survives_a_broker_restart_on_the_same_port() {
    let mut broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("restart", 1).await.unwrap();
    produce(
        &client,
        "restart",
        0,
        batch(&recs(5, "x"), Compression::None),
        Acks::Leader,
    )
    .await
    .unwrap();
    let addr = broker.addr();
    broker.restart().await.unwrap();
    assert_eq!(broker.addr(), addr);
    // Read-only requests are retried over a fresh connection transparently.
    assert_eq!(client.list_topics().await.unwrap().len(), 1);
    let (records, _) = fetch_all(&client, "restart", 0, 0).await;
    assert_eq!(records.len(), 5);
    // A produce may see the lost connection once (it is not blindly retried); then it works.
    let mut acked = None;
    for _ in 0..3 {
        match produce(
            &client,
            "restart",
            0,
            batch(&recs(1, "y"), Compression::None),
            Acks::Leader,
        )
        .await
        {
            Ok(a) => {
                acked = Some(a);
                break;
            }
            Err(e) => assert!(e.is_retryable(), "a lost connection is retryable: {e}"),
        }
    }
    assert_eq!(
        acked.expect("produce succeeds after reconnect").base_offset,
        5
    );
    assert!(client.health_check().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pending_long_poll_does_not_hold_the_port_across_a_restart() {
    let mut broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("idle", 1).await.unwrap();
    // A fetch that would wait 30 s for data that never comes.
    let waiting = {
        let client = client.clone();
        tokio::spawn(async move { tests::fetch(&client, "idle", 0, 0, 30_000).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    broker
        .restart()
        .await
        .expect("the port is free again at once");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "shutdown did not wait for the poll"
    );
    // The broker answered the poll `ShuttingDown`; the client retried it on the new broker,
    // where it now waits for data: producing some answers it.
    produce(
        &client,
        "idle",
        0,
        batch(&recs(1, "wake"), Compression::None),
        Acks::Leader,
    )
    .await
    .unwrap();
    let fetched = tokio::time::timeout(std::time::Duration::from_secs(10), waiting)
        .await
        .expect("the retried poll is answered")
        .unwrap()
        .unwrap();
    assert!(!fetched.records.is_empty());
}

/// A group's committed offset of `topic`'s `partition`, as the broker answers it.
async fn committed(
    client: &rustmq::RustMqClient,
    group: &str,
    topic: &str,
    partition: u32,
) -> Option<u64> {
    let req = Request::FetchOffsets(FetchOffsetsRequest {
        group: group.into(),
        partitions: vec![TopicPartitions {
            topic: topic.into(),
            partitions: vec![partition],
        }],
    });
    match client.raw_request(req).await.unwrap() {
        Response::FetchOffsets(r) => r.offsets[0].offset,
        other => panic!("unexpected answer to fetch offsets: {other:?}"),
    }
}

/// A deletion that cannot rewrite a group's offsets answers a storage error through the
/// handler, and leaves what it could not finish: the topic is gone, its name stays reserved
/// (creating it again is refused, retryably), and the next start that can rewrite the group
/// drops the offsets and frees the name, so that a new topic of that name starts empty and
/// without the old offsets.
#[tokio::test]
async fn a_deletion_that_cannot_rewrite_a_group_is_answered_and_finished_at_the_next_start() {
    tests::init_tracing();
    let mut broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("gone", 1).await.unwrap();
    produce(
        &client,
        "gone",
        0,
        batch(&recs(5, "old"), Compression::None),
        Acks::Leader,
    )
    .await
    .unwrap();
    let commit = Request::CommitOffsets(CommitOffsetsRequest {
        group: "g".into(),
        member_id: String::new(),
        generation: 0,
        offsets: vec![PartitionOffset {
            topic: "gone".into(),
            partition: 0,
            offset: 4,
        }],
    });
    client.raw_request(commit).await.unwrap();
    assert_eq!(committed(&client, "g", "gone", 0).await, Some(4));

    // The group's file cannot be replaced while its temporary path ("g" is 67 in hex) is a
    // directory.
    let blocked = broker.data_dir().join("groups").join("67.offsets.tmp");
    std::fs::create_dir_all(&blocked).unwrap();
    let e = client.delete_topic("gone").await.unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::StorageError), "{e}");
    assert!(
        client.describe_topic("gone").await.is_err(),
        "the topic is gone"
    );
    // Reserved until the restart, and said so with an answer that retrying would only get
    // again.
    let e = client.create_topic("gone", 1).await.unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::InvalidTopic), "{e}");
    assert!(!e.is_retryable(), "{e}");
    assert!(e.to_string().contains("once the broker restarts"), "{e}");

    std::fs::remove_dir(&blocked).unwrap();
    tests::restart_broker(&mut broker).await;
    let client = broker.client().await.unwrap();
    assert_eq!(committed(&client, "g", "gone", 0).await, None);
    client.create_topic("gone", 1).await.unwrap();
    assert!(fetch_all(&client, "gone", 0, 0).await.1.is_empty());
}

/// An idempotent batch of `(producer id, epoch)`: `n` records from sequence `seq`, stamped
/// `ts, ts + 1, ...`.
fn idempotent(producer: (i64, i16), seq: i32, n: usize, ts: i64) -> bytes::Bytes {
    let mut builder = RecordBatchBuilder::new().producer(producer.0, producer.1, seq);
    for i in 0..n {
        let value = format!("p{}-{}", producer.0, seq as usize + i).repeat(8);
        builder.push(ts + i as i64, None, Some(value.as_bytes()), []);
    }
    builder.build().unwrap()
}

/// A restart after a clean stop, which opens every segment from its index files and loads
/// the producers from the stop's snapshot (the storage unit tests count how segments are
/// opened; here the stop's marker is seen and taken): the partition still serves every record, answers a retry of an idempotent producer whose batches all lie in
/// sealed segments as a duplicate (with the stored offset), refuses its stale sequences, and
/// finds records by timestamp in those segments.
#[tokio::test]
async fn a_restart_keeps_producers_and_timestamps_of_sealed_segments() {
    let mut config = rustmq::testing::BrokerConfig::default();
    config.log.segment_bytes = 4096;
    let mut broker = TestBroker::start_with(config).await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("sealed", 1).await.unwrap();
    let producer = match client
        .raw_request(Request::InitProducer(InitProducerRequest { name: None }))
        .await
        .unwrap()
    {
        Response::InitProducer(r) => (r.producer_id, r.epoch),
        other => panic!("{other:?}"),
    };
    let mut stored = Vec::new();
    for i in 0..30 {
        let ack = produce(
            &client,
            "sealed",
            0,
            idempotent(producer, i * 5, 5, 1_000 + i64::from(i) * 100),
            Acks::Leader,
        )
        .await
        .unwrap();
        stored.push(ack.base_offset);
    }
    // Others' batches after them, so that the producer's are all in sealed segments.
    for i in 0..30 {
        produce(
            &client,
            "sealed",
            0,
            batch(&recs(5, &format!("o{i}")), Compression::None),
            Acks::Leader,
        )
        .await
        .unwrap();
    }
    let before = fetch_all(&client, "sealed", 0, 0).await.1;
    broker.stop().await;
    let dir = broker.data_dir().join("topics/sealed/0");
    let marker = dir.join("clean-shutdown");
    assert!(marker.exists(), "the clean stop's marker");
    broker.restart().await.unwrap();
    assert!(!marker.exists(), "taken by the open");
    let files = |ext: &str| {
        std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                let path = e.as_ref().unwrap().path();
                path.extension().is_some_and(|e| e == ext)
            })
            .count()
    };
    let active_base: u64 = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".log").map(|b| b.parse().unwrap())
        })
        .max()
        .unwrap();
    assert!(files("log") > 3, "several segments");
    assert!(
        active_base > stored[29],
        "the producer's batches are all in sealed segments"
    );
    assert_eq!(
        files("snapshot"),
        3,
        "the snapshots of the two latest rolls, and of the clean stop"
    );

    let client = broker.client().await.unwrap();
    assert_eq!(fetch_all(&client, "sealed", 0, 0).await.1, before);
    for i in 25..30 {
        let retry = idempotent(producer, i * 5, 5, 1_000 + i64::from(i) * 100);
        let ack = produce(&client, "sealed", 0, retry, Acks::Leader)
            .await
            .unwrap();
        assert!(ack.duplicate, "batch {i} is answered as stored");
        assert_eq!(ack.base_offset, stored[i as usize]);
    }
    let stale = produce(
        &client,
        "sealed",
        0,
        idempotent(producer, 0, 5, 1),
        Acks::Leader,
    )
    .await
    .unwrap_err();
    assert_eq!(stale.error_code(), Some(ErrorCode::OutOfOrderSequence));
    let next = produce(
        &client,
        "sealed",
        0,
        idempotent(producer, 150, 1, 9_000),
        Acks::Leader,
    )
    .await
    .unwrap();
    assert!(!next.duplicate);
    for i in [0, 7, 21] {
        let found = match client
            .raw_request(Request::ListOffsets(ListOffsetsRequest {
                topic: "sealed".into(),
                partition: 0,
                spec: OffsetSpec::Timestamp(1_000 + i64::from(i) * 100 + 2),
            }))
            .await
            .unwrap()
        {
            Response::ListOffsets(r) => r,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            (found.offset, found.timestamp),
            (stored[i as usize] + 2, Some(1_000 + i64::from(i) * 100 + 2)),
            "batch {i}'s third record"
        );
    }
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    let mut out = std::collections::BTreeMap::new();
    let mut todo = vec![dir.to_owned()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// Two brokers on one data directory would each cut and rewrite what the other wrote: the
/// second is refused before it reads or writes a file there, the first goes on serving, and the
/// directory is free again once the first has stopped.
#[tokio::test]
async fn a_second_broker_on_a_data_directory_in_use_is_refused() {
    let mut broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("locked", 1).await.unwrap();
    produce(
        &client,
        "locked",
        0,
        batch(&recs(3, "a"), Compression::None),
        Acks::All,
    )
    .await
    .unwrap();
    let dir = broker.data_dir().to_owned();
    let before = snapshot(&dir);
    let mut config = broker.handle().unwrap().config().clone();
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let refused = rustmq_broker::Broker::builder()
        .config(config.clone())
        .start()
        .await
        .expect_err("a second broker on the same directory");
    assert!(
        matches!(&refused, rustmq_broker::StartError::DataDirInUse { dir: d } if *d == dir),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("in use by another broker"),
        "{refused}"
    );
    assert_eq!(
        snapshot(&dir),
        before,
        "the refused broker changed the directory"
    );
    // The first broker still serves.
    let ack = produce(
        &client,
        "locked",
        0,
        batch(&recs(1, "b"), Compression::None),
        Acks::All,
    )
    .await
    .unwrap();
    assert_eq!(ack.base_offset, 3);
    broker.stop().await;
    let again = rustmq_broker::Broker::builder()
        .config(config.clone())
        .start()
        .await
        .expect("the directory is free once its broker has stopped");
    assert_eq!(again.topics().get("locked").unwrap().partitions.len(), 1);
    // Dropped without a shutdown: the lock goes with the last of its tasks, not for ever.
    drop(again);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let third = loop {
        match rustmq_broker::Broker::builder()
            .config(config.clone())
            .start()
            .await
        {
            Ok(broker) => break broker,
            Err(rustmq_broker::StartError::DataDirInUse { .. })
                if tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(20)).await
            }
            Err(e) => panic!("the dropped broker's tasks did not let the directory go: {e}"),
        }
    };
    third.shutdown().await;
}

/// A test that drops a broker, as a crash would stop it, starts another on its data directory
/// at once: in a current-thread runtime the dropped broker's tasks have not run yet, and still
/// hold the directory's lock; `start_in` waits for them to let go (it was refused with
/// `DataDirInUse`). A `TestBroker`'s own temporary directory goes once they have.
#[tokio::test]
async fn a_broker_started_on_a_dropped_brokers_directory_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = rustmq::testing::BrokerConfig {
        data_dir: dir.path().to_owned(),
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        ..Default::default()
    };
    let broker = TestBroker::start_in(config.clone()).await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("kept", 1).await.unwrap();
    produce(
        &client,
        "kept",
        0,
        batch(&recs(3, "a"), Compression::None),
        Acks::All,
    )
    .await
    .unwrap();
    drop(client);
    drop(broker);
    let broker = TestBroker::start_in(config).await.unwrap();
    let client = broker.client().await.unwrap();
    assert_eq!(fetch_all(&client, "kept", 0, 0).await.0.len(), 3);

    let temporary = TestBroker::start().await.unwrap();
    let path = temporary.data_dir().to_owned();
    drop(temporary);
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        while path.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a dropped broker's temporary directory is removed once its tasks are done");
}

/// A data directory that a running broker holds (not one letting go of it) is refused at once,
/// not waited for.
#[tokio::test]
async fn a_broker_started_on_a_running_brokers_directory_is_refused_at_once() {
    let running = TestBroker::start().await.unwrap();
    let mut config = running.handle().unwrap().config().clone();
    config.listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let refused = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        TestBroker::start_in(config),
    )
    .await
    .expect("refused at once, not after waiting for a broker that is not stopping");
    let e = refused.unwrap_err();
    assert!(e.to_string().contains("in use"), "{e}");
    drop(running);
}
