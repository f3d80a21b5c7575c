//! Seeking by offset and by timestamp, on one partition and on all, and lag as high watermark
//! minus position, against a real broker.

use std::collections::HashMap;

use crate::consumer_support::*;
use rustmq::consumer::{Consumer, ConsumerConfig, StartPosition};
use rustmq::testing::TestBroker;
use rustmq::ClientError;

const BASE_TS: i64 = 1_700_000_000_000;

/// A consumer of "history" (3 partitions of 20 records, timestamps BASE_TS + i seconds) with
/// small buffers so that seeks land while records are buffered.
async fn setup() -> (TestBroker, Consumer) {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("history", 3).await.unwrap();
    for p in 0..3 {
        produce_range(&client, "history", p, 0, 20, |i| BASE_TS + i as i64 * 1000).await;
    }
    let consumer = consumer_with_fetches(&client, "history", "historians", 4, 8).await;
    assert_eq!(consumer.assigned_partitions().await, vec![0, 1, 2]);
    (broker, consumer)
}

/// Receives (and acks) until `want` messages of each partition in `partitions` arrived;
/// returns the offsets per partition in delivery order.
async fn take(consumer: &Consumer, partitions: &[u32], want: usize) -> HashMap<u32, Vec<u64>> {
    let mut got: HashMap<u32, Vec<u64>> = HashMap::new();
    while partitions
        .iter()
        .any(|p| got.get(p).map_or(0, Vec::len) < want)
    {
        let m = recv(consumer).await;
        got.entry(m.message.partition)
            .or_default()
            .push(m.message.offset);
        m.ack().await.unwrap();
    }
    got
}

#[tokio::test]
async fn seek_one_and_all_partitions_to_offsets() {
    let (_broker, consumer) = setup().await;
    let got = take(&consumer, &[0, 1, 2], 2).await;
    assert_eq!(got[&1][..2], [0, 1]);

    // Partition 1 jumps to 15: nothing below 15 from it after the seek, buffered or not.
    consumer.seek(1, 15).await.unwrap();
    assert_eq!(consumer.position(1), Some(15));
    let got = take(&consumer, &[1], 5).await;
    assert_eq!(got[&1], vec![15, 16, 17, 18, 19]);
    for p in [0, 2] {
        let offsets = got.get(&p).cloned().unwrap_or_default();
        assert!(
            offsets.windows(2).all(|w| w[1] == w[0] + 1),
            "partition {p} continues in order: {offsets:?}"
        );
    }

    // Every partition back to 5, buffers discarded.
    consumer.seek_all(5).await.unwrap();
    let got = take(&consumer, &[0, 1, 2], 3).await;
    for p in 0..3 {
        assert_eq!(got[&p][..3], [5, 6, 7], "partition {p}");
    }
    // The next commit stores where the application stands, here after the seek.
    consumer.commit().await.unwrap();
    assert!(consumer.committed_offset(0).await.unwrap() >= 8);

    assert!(matches!(
        consumer.seek(9, 0).await,
        Err(ClientError::PartitionNotAssigned { partition: 9, .. })
    ));
    consumer.close().await.unwrap();
}

#[tokio::test]
async fn seek_one_and_all_partitions_to_timestamps() {
    let (_broker, consumer) = setup().await;
    take(&consumer, &[0, 1, 2], 1).await;

    // Record i has timestamp BASE_TS + i s; milliseconds throughout.
    let offset = consumer
        .seek_to_timestamp(2, BASE_TS as u64 + 12_000)
        .await
        .unwrap();
    assert_eq!(offset, 12);
    let got = take(&consumer, &[2], 2).await;
    assert_eq!(got[&2], vec![12, 13]);

    let offsets = consumer
        .seek_all_to_timestamp(BASE_TS as u64 + 7_500)
        .await
        .unwrap();
    assert_eq!(offsets, HashMap::from([(0, 8), (1, 8), (2, 8)]));
    let got = take(&consumer, &[0, 1, 2], 2).await;
    for p in 0..3 {
        let m = &got[&p];
        assert_eq!(m[..2], [8, 9], "partition {p}");
    }

    // Past the last record: the high watermark, and nothing more until something arrives.
    let offsets = consumer
        .seek_all_to_timestamp(BASE_TS as u64 + 3_600_000)
        .await
        .unwrap();
    assert_eq!(offsets, HashMap::from([(0, 20), (1, 20), (2, 20)]));
    assert!(matches!(
        consumer.seek_to_timestamp(5, 0).await,
        Err(ClientError::PartitionNotAssigned { partition: 5, .. })
    ));
    consumer.close().await.unwrap();
}

#[tokio::test]
async fn lag_is_high_watermark_minus_position_per_partition() {
    let (broker, consumer) = setup().await;
    // Nothing handed over yet: the whole partition is lag (buffered records count).
    let lag = consumer.get_lag().await.unwrap();
    assert_eq!(lag, HashMap::from([(0, 20), (1, 20), (2, 20)]));

    let got = take(&consumer, &[0, 1, 2], 3).await;
    consumer.seek(2, 18).await.unwrap();
    let client = broker.client().await.unwrap();
    produce_n(&client, "history", 1, 20, 5).await;

    let lag = consumer.get_lag().await.unwrap();
    let position = |p: u32| got[&p].last().unwrap() + 1;
    assert_eq!(lag[&0], 20 - position(0));
    assert_eq!(lag[&1], 25 - position(1));
    assert_eq!(lag[&2], 2, "after the seek to 18");
    for p in 0..3 {
        assert_eq!(
            lag[&p],
            [20, 25, 20][p as usize] - consumer.position(p).unwrap()
        );
    }
    assert_eq!(
        consumer.metrics().await.partition_lag(),
        lag,
        "metrics follow get_lag"
    );
    consumer.close().await.unwrap();
}

#[tokio::test]
async fn timestamps_in_seconds_as_the_seed_readme_passes_them_seek_like_milliseconds() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("recent", 2).await.unwrap();
    // The seed README's `one_hour_ago`: seconds since the epoch.
    let now_s = rustmq::message::now_ms() / 1000;
    let one_hour_ago = now_s - 3600;
    let later: Vec<u64> = (10..20).collect();
    // Records 0..10 two hours old, 10..20 half an hour old, on both partitions.
    for p in 0..2 {
        produce_range(&client, "recent", p, 0, 20, |i| {
            let age_s = if i < 10 { 7200 } else { 1800 };
            ((now_s - age_s) * 1000 + i) as i64
        })
        .await;
    }
    let consumer = consumer_with_fetches(&client, "recent", "readers", 4, 8).await;
    take(&consumer, &[0, 1], 1).await;

    // Seconds and the same instant in milliseconds land on the same record.
    let in_seconds = consumer.seek_to_timestamp(0, one_hour_ago).await.unwrap();
    let in_ms = consumer
        .seek_to_timestamp(0, one_hour_ago * 1000)
        .await
        .unwrap();
    assert_eq!((in_seconds, in_ms), (10, 10));
    let offsets = consumer.seek_all_to_timestamp(one_hour_ago).await.unwrap();
    assert_eq!(offsets, HashMap::from([(0, 10), (1, 10)]));
    let got = take(&consumer, &[0, 1], 10).await;
    for p in 0..2 {
        assert_eq!(got[&p][..10], later[..], "partition {p}");
    }
    consumer.close().await.unwrap();

    // A start position in seconds too.
    let since = ConsumerConfig {
        start_position: StartPosition::Timestamp(one_hour_ago),
        ..config("latecomers")
    };
    let latecomer = client
        .create_consumer_with_config("recent", "latecomers", since)
        .await
        .unwrap();
    let got = take(&latecomer, &[0, 1], 10).await;
    for p in 0..2 {
        assert_eq!(got[&p][..10], later[..], "partition {p}");
    }
    latecomer.close().await.unwrap();
}

/// Records retention deleted before they were read are not lag: they can never be consumed.
/// A paused partition keeps its position while its log start moves past it.
#[tokio::test]
async fn records_retention_deleted_unread_are_not_lag() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    let settings = rustmq::TopicSettings::new()
        .with_retention(std::time::Duration::from_secs(3_600))
        .with_segment_bytes(1024);
    client
        .create_topic_with("shrinking", 1, settings)
        .await
        .unwrap();
    // Old records, ten to a batch: several segments, each past the retention.
    produce_batched(
        &client,
        "shrinking",
        0,
        0..100,
        10,
        |i| BASE_TS + i as i64,
        |_| rustmq_protocol::Compression::None,
    )
    .await;
    let consumer = consumer_with_fetches(&client, "shrinking", "laggards", 4, 8).await;
    recv_ack(&consumer, 1).await;
    consumer.pause_partitions(vec![0]).await.unwrap();
    assert_eq!(consumer.get_lag().await.unwrap()[&0], 99);
    // Rolled segments are sealed by a thread of their own, and retention leaves a segment
    // until it is: on a loaded machine the first pass may find none sealed yet.
    let mut log_start = 0;
    for _ in 0..200 {
        broker
            .handle()
            .unwrap()
            .run_retention_at(rustmq::message::now_ms() as i64);
        log_start =
            client.describe_topic("shrinking").await.unwrap().partitions[0].log_start_offset;
        if log_start > 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        log_start > 1,
        "retention deleted segments: log start {log_start}"
    );
    let lag = consumer.get_lag().await.unwrap();
    assert_eq!(lag[&0], 100 - log_start, "only what is still stored");
    assert_eq!(consumer.metrics().await.partition_lag(), lag);
    consumer.close().await.unwrap();
}
