//! Offsets against a real broker: out-of-order acks commit the contiguous prefix, commits
//! survive a restart of broker and consumer, auto-commit, start positions apply only where
//! nothing is committed.

use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::consumer_support::*;
use rustmq::consumer::{ConsumerConfig, StartPosition};
use rustmq::testing::TestBroker;
use rustmq::ClientError;

/// A record timestamp of November 2023, in milliseconds.
const BASE_TS: i64 = 1_700_000_000_000;

#[tokio::test]
async fn out_of_order_acks_commit_the_contiguous_prefix_and_restarts_resume_there() {
    tests::init_tracing();
    let mut broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("ledger", 2).await.unwrap();
    for p in 0..2 {
        produce_n(&client, "ledger", p, 0, 10).await;
    }
    let consumer = client
        .create_consumer_with_config("ledger", "auditors", config("auditors"))
        .await
        .unwrap();
    assert!(matches!(
        consumer.committed_offset(0).await,
        Err(ClientError::NoCommittedOffset { partition: 0, .. })
    ));

    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(recv(&consumer).await);
    }
    held.sort_by_key(|m| (m.message.partition, m.message.offset));
    // Partition 0: ack 0, 1, 2, 4, 5 and 9 but not 3; partition 1: all, in reverse.
    for m in held.iter().filter(|m| m.message.partition == 0) {
        if [0, 1, 2, 4, 5, 9].contains(&m.message.offset) {
            m.ack().await.unwrap();
        }
    }
    for m in held.iter().rev().filter(|m| m.message.partition == 1) {
        m.ack().await.unwrap();
    }
    consumer.commit().await.unwrap();
    assert_eq!(
        consumer.committed_offset(0).await.unwrap(),
        3,
        "offset 3 is unacked"
    );
    assert_eq!(consumer.committed_offset(1).await.unwrap(), 10);

    // Acking 3 moves the commit to the next gap (6).
    held.iter()
        .find(|m| m.message.partition == 0 && m.message.offset == 3)
        .unwrap()
        .ack()
        .await
        .unwrap();
    consumer.commit().await.unwrap();
    assert_eq!(consumer.committed_offset(0).await.unwrap(), 6);
    let metrics = consumer.metrics().await;
    assert_eq!(metrics.messages_received.load(Ordering::Relaxed), 20);
    assert_eq!(metrics.messages_processed.load(Ordering::Relaxed), 17);
    // Close commits the same prefix; the unacked messages are still held (dropping them after
    // close does nothing).
    consumer.close().await.unwrap();
    assert_eq!(consumer.committed_offset(0).await.unwrap(), 6);
    drop(held);

    // Restart everything: broker, client, consumer. Partition 0 resumes at 6 (6, 7, 8 were
    // never acked; 9 was, but a commit is a prefix, so it comes again), partition 1 at 10.
    client.close().await.unwrap();
    restart(&mut broker).await;
    let client = broker.client().await.unwrap();
    let consumer = client
        .create_consumer_with_config("ledger", "auditors", config("auditors"))
        .await
        .unwrap();
    assert_eq!(consumer.committed_offset(0).await.unwrap(), 6);
    produce_n(&client, "ledger", 1, 10, 2).await;
    let mut got = recv_ack(&consumer, 6).await;
    got.sort();
    assert_eq!(got, vec![(0, 6), (0, 7), (0, 8), (0, 9), (1, 10), (1, 11)]);
    consumer.close().await.unwrap();
    assert_eq!(
        client
            .create_consumer("ledger", "auditors")
            .await
            .unwrap()
            .committed_offset(1)
            .await
            .unwrap(),
        12,
        "close() commits"
    );
}

#[tokio::test]
async fn auto_commit_stores_acked_offsets_on_its_interval() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("auto", 1).await.unwrap();
    produce_n(&client, "auto", 0, 0, 25).await;
    let auto = ConsumerConfig {
        enable_auto_commit: true,
        auto_commit_interval: Duration::from_millis(100),
        ..config("auto-group")
    };
    let consumer = client
        .create_consumer_with_config("auto", "auto-group", auto)
        .await
        .unwrap();
    recv_ack(&consumer, 25).await;
    eventually("an auto-commit", || async {
        consumer.committed_offset(0).await.ok() == Some(25)
    })
    .await;
    assert!(consumer.metrics().await.commits.load(Ordering::Relaxed) >= 1);

    // Without auto-commit nothing is committed until commit() or close().
    let manual = ConsumerConfig {
        enable_auto_commit: false,
        ..config("manual-group")
    };
    let consumer = client
        .create_consumer_with_config("auto", "manual-group", manual)
        .await
        .unwrap();
    recv_ack(&consumer, 25).await;
    // Several auto-commit intervals' worth: a commit would have happened if one were running.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(matches!(
        consumer.committed_offset(0).await,
        Err(ClientError::NoCommittedOffset { .. })
    ));
    consumer.close().await.unwrap();
    assert_eq!(consumer.committed_offset(0).await.unwrap(), 25);
}

#[tokio::test]
async fn start_position_applies_only_without_a_committed_offset() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("events", 1).await.unwrap();
    // Timestamps BASE_TS, BASE_TS + 1 s, ... BASE_TS + 9 s (milliseconds).
    produce_range(&client, "events", 0, 0, 10, |i| BASE_TS + i as i64 * 1000).await;

    let start = |group: &str, position| ConsumerConfig {
        start_position: position,
        ..config(group)
    };
    let latest = client
        .create_consumer_with_config("events", "latest", start("latest", StartPosition::Latest))
        .await
        .unwrap();
    produce_range(&client, "events", 0, 10, 12, |i| BASE_TS + i as i64 * 1000).await;
    assert_eq!(
        recv(&latest).await.message.offset,
        10,
        "Latest starts at the high watermark"
    );

    let by_offset = client
        .create_consumer_with_config(
            "events",
            "by-offset",
            start("by-offset", StartPosition::Offset(7)),
        )
        .await
        .unwrap();
    assert_eq!(recv(&by_offset).await.message.offset, 7);

    let by_time = start("by-time", StartPosition::Timestamp(BASE_TS as u64 + 4_500));
    let by_time_consumer = client
        .create_consumer_with_config("events", "by-time", by_time.clone())
        .await
        .unwrap();
    let m = recv(&by_time_consumer).await;
    assert_eq!(
        (m.message.offset, m.message.timestamp),
        (5, BASE_TS as u64 + 5_000),
        "first record at or after BASE_TS + 4.5 s"
    );

    let earliest = client.create_consumer("events", "earliest").await.unwrap();
    assert_eq!(earliest.config().start_position, StartPosition::Earliest);
    let m = recv(&earliest).await;
    assert_eq!(m.message.offset, 0);
    m.ack().await.unwrap();
    earliest.close().await.unwrap();

    // A committed offset wins over the start position.
    by_time_consumer.close().await.unwrap();
    let c = client
        .create_consumer_with_config("events", "by-time", by_time)
        .await
        .unwrap();
    c.seek(0, 2).await.unwrap();
    c.commit().await.unwrap();
    c.close().await.unwrap();
    let c = client
        .create_consumer_with_config("events", "by-time", start("by-time", StartPosition::Latest))
        .await
        .unwrap();
    assert_eq!(recv(&c).await.message.offset, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_consumer_rides_out_a_broker_restart_from_its_committed_offsets() {
    let mut broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("survivor", 2).await.unwrap();
    for p in 0..2 {
        produce_n(&client, "survivor", p, 0, 5).await;
    }
    let consumer = client
        .create_consumer_with_config("survivor", "riders", config("riders"))
        .await
        .unwrap();
    recv_ack(&consumer, 10).await;
    consumer.commit().await.unwrap();

    // The broker forgets the group's members (not its offsets): the consumer reconnects,
    // learns it is unknown, joins again as a new member (under the id it chose, which it
    // keeps) and resumes from its commits.
    let before = consumer.partition_assignment().await.expect("assigned");
    restart(&mut broker).await;
    eventually("a new membership", || {
        let consumer = consumer.clone();
        let before = before.assigned_at;
        async move {
            consumer
                .partition_assignment()
                .await
                .is_some_and(|a| a.assigned_at != before)
        }
    })
    .await;
    assert_eq!(consumer.member_id(), before.member_id);
    eventually("the partitions back", || async {
        consumer.assigned_partitions().await == [0, 1]
    })
    .await;
    let admin = broker.client().await.unwrap();
    for p in 0..2 {
        produce_n(&admin, "survivor", p, 5, 3).await;
    }
    let mut got = recv_ack(&consumer, 6).await;
    got.sort();
    assert_eq!(got, vec![(0, 5), (0, 6), (0, 7), (1, 5), (1, 6), (1, 7)]);
    consumer.close().await.unwrap();
    assert_eq!(consumer.committed_offset(1).await.unwrap(), 8);
}
