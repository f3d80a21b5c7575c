//! Flow control against a real broker: pause/resume per partition, bounded buffers under a
//! large backlog, and the `Stream` interface.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::consumer_support::*;
use futures::StreamExt;
use rustmq::consumer::ConsumerConfig;
use rustmq::protocol::{Acks, Compression};
use rustmq::testing::TestBroker;
use rustmq::ClientError;
use tests::{batch, produce, TestRecord};

#[tokio::test]
async fn a_paused_partition_delivers_nothing_until_resumed_while_others_flow() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("lanes", 3).await.unwrap();
    for p in 0..3 {
        produce_n(&client, "lanes", p, 0, 30).await;
    }
    let consumer = client
        .create_consumer_with_config("lanes", "lane-group", config("lane-group"))
        .await
        .unwrap();
    // Records of partition 1 are (or will be) buffered already: pausing holds them back too.
    let first = recv(&consumer).await;
    first.ack().await.unwrap();
    consumer.pause_partitions(vec![1]).await.unwrap();
    assert_eq!(consumer.paused_partitions().await, vec![1]);

    let mut counts: HashMap<u32, u64> = HashMap::from([(first.message.partition, 1)]);
    let expected_others = 60;
    let mut got_others = u64::from(first.message.partition != 1);
    while got_others < expected_others {
        let m = recv(&consumer).await;
        assert_ne!(
            m.message.partition, 1,
            "a paused partition delivered offset {}",
            m.message.offset
        );
        *counts.entry(m.message.partition).or_default() += 1;
        got_others += 1;
        m.ack().await.unwrap();
    }
    // More records for every partition: the others keep flowing, the paused one stays quiet.
    for p in 0..3 {
        produce_n(&client, "lanes", p, 30, 5).await;
    }
    for _ in 0..10 {
        let m = recv(&consumer).await;
        assert_ne!(m.message.partition, 1);
        m.ack().await.unwrap();
    }
    nothing_within(&consumer, Duration::from_millis(500)).await;

    consumer.resume_partitions(vec![1]).await.unwrap();
    assert!(consumer.paused_partitions().await.is_empty());
    let from_paused = 35 - counts.get(&1).copied().unwrap_or(0);
    let got = recv_ack(&consumer, from_paused as usize).await;
    assert!(got.iter().all(|&(p, _)| p == 1));
    let mut offsets: Vec<u64> = got.iter().map(|&(_, o)| o).collect();
    offsets.sort_unstable();
    assert_eq!(offsets, ((35 - from_paused)..35).collect::<Vec<_>>());

    assert!(matches!(
        consumer.pause_partitions(vec![0, 7]).await,
        Err(ClientError::PartitionNotAssigned { partition: 7, .. })
    ));
    assert!(
        consumer.paused_partitions().await.is_empty(),
        "a failed pause changes nothing"
    );
    consumer.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_holds_a_bounded_buffer_over_a_100k_backlog() {
    const BACKLOG: u64 = 100_000;
    const CAP: usize = 1_000;
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("backlog", 2).await.unwrap();
    for p in 0..2 {
        produce_n(&client, "backlog", p, 0, BACKLOG / 2).await;
    }
    // Fetches as large as the buffer, which is never empty when one starts: the room left,
    // not the fetch size, bounds what a fetch hands over.
    let consumer = consumer_with_fetches(&client, "backlog", "slow", CAP, CAP).await;

    // The application takes nothing: fetching stops once each buffer is full.
    eventually("full buffers", || async {
        consumer.buffered_messages() == 2 * CAP
    })
    .await;
    let lag = consumer.get_lag().await.unwrap();
    assert_eq!(
        lag.values().sum::<u64>(),
        BACKLOG,
        "nothing handed over yet"
    );
    assert!(consumer.buffered_messages() <= 2 * CAP);

    // Draining everything never lets the buffers grow past their bound, and every record
    // arrives in order per partition.
    let mut next = [0u64; 2];
    let mut peak = 0;
    let mut stream = consumer.stream();
    for _ in 0..BACKLOG {
        let m = within("a message", stream.next())
            .await
            .expect("open")
            .expect("receive");
        let p = m.message.partition as usize;
        assert_eq!(m.message.offset, next[p]);
        next[p] += 1;
        m.ack().await.unwrap();
        peak = peak.max(consumer.buffered_messages());
    }
    assert!(peak <= 2 * CAP, "buffered {peak} > {}", 2 * CAP);
    assert_eq!(next, [BACKLOG / 2; 2]);
    assert_eq!(consumer.buffered_messages(), 0);
    let metrics = consumer.metrics().await;
    assert_eq!(metrics.messages_received.load(Ordering::Relaxed), BACKLOG);
    assert_eq!(metrics.messages_processed.load(Ordering::Relaxed), BACKLOG);
    consumer.close().await.unwrap();
    assert!(
        stream.next().await.is_none(),
        "the stream ends when the consumer closes"
    );
}

#[tokio::test]
async fn a_fetch_size_above_the_buffer_cap_is_fetched_whole() {
    const BACKLOG: u64 = 5_000;
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("bulk", 1).await.unwrap();
    produce_n(&client, "bulk", 0, 0, BACKLOG).await;
    // The seed README's tuning: a large fetch_size with the default buffer of 1,000 messages.
    let config = ConsumerConfig {
        fetch_size: BACKLOG as usize,
        ..config("bulk")
    };
    assert_eq!(config.max_buffered_messages_per_partition, 1_000);
    let consumer = client
        .create_consumer_with_config("bulk", "bulk", config)
        .await
        .unwrap();

    // The application takes nothing: the buffer holds one whole fetch.
    eventually("the whole backlog buffered", || async {
        consumer.buffered_messages() == BACKLOG as usize
    })
    .await;
    let mut stream = consumer.stream();
    for i in 0..BACKLOG {
        let m = within("a message", stream.next())
            .await
            .expect("open")
            .expect("receive");
        assert_eq!(m.message.offset, i);
        m.ack().await.unwrap();
        assert!(consumer.buffered_messages() <= BACKLOG as usize);
    }
    consumer.close().await.unwrap();
}

#[tokio::test]
async fn large_messages_fill_the_buffer_up_to_its_bytes_and_all_arrive() {
    const MESSAGES: u64 = 40;
    const SIZE: usize = 256 << 10;
    const CAP_BYTES: usize = 1 << 20;
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("large", 1).await.unwrap();
    // One record per batch, every other batch compressed: stored, those take a few hundred
    // bytes, so a fetch's byte budget lets many through, but each holds 256 KiB once
    // decompressed.
    let payload = |i: u64| {
        let mut p = vec![b'x'; SIZE];
        p[..8].copy_from_slice(&i.to_be_bytes());
        p
    };
    for i in 0..MESSAGES {
        let codec = if i % 2 == 1 {
            Compression::Lz4
        } else {
            Compression::None
        };
        let records = [TestRecord::new(payload(i), 0)];
        produce(&client, "large", 0, batch(&records, codec), Acks::Leader)
            .await
            .unwrap();
    }
    // Far more messages than the backlog: only the bytes can bound this buffer.
    let config = ConsumerConfig {
        max_buffered_bytes_per_partition: CAP_BYTES,
        ..config("large-group")
    };
    let consumer = client
        .create_consumer_with_config("large", "large-group", config)
        .await
        .unwrap();

    // The application takes nothing: fetching stops for good once the buffer holds more than
    // half its bytes, and it never holds more than all of them.
    eventually("a buffer more than half full", || async {
        consumer.buffered_bytes() > CAP_BYTES / 2
    })
    .await;
    let (held, bytes) = (consumer.buffered_messages(), consumer.buffered_bytes());
    assert!(bytes <= CAP_BYTES, "{bytes} bytes buffered");
    // Each batch holds a little over 256 KiB, so two are just over half of 1 MiB: the first
    // request (sized from the initial estimate of 1 KiB per record) brings two or three.
    assert!((2..=3).contains(&held), "{held} messages buffered");
    assert!(bytes >= held * SIZE, "{bytes} bytes for {held} messages");
    let lag = consumer.get_lag().await.unwrap();
    assert_eq!(lag[&0], MESSAGES, "nothing handed over yet");

    // Draining never lets it grow past its bytes, and every message arrives whole, in order.
    let mut peak = 0;
    let mut stream = consumer.stream();
    for i in 0..MESSAGES {
        let m = within("a message", stream.next())
            .await
            .expect("open")
            .expect("receive");
        assert_eq!(m.message.offset, i);
        assert_eq!(m.message.payload, payload(i));
        m.ack().await.unwrap();
        peak = peak.max(consumer.buffered_bytes());
    }
    assert!(peak <= CAP_BYTES, "peak {peak} bytes buffered");
    assert_eq!(
        (consumer.buffered_messages(), consumer.buffered_bytes()),
        (0, 0)
    );
    consumer.close().await.unwrap();
}

#[tokio::test]
async fn fetches_that_fill_up_inside_a_batch_lose_and_repeat_nothing() {
    tests::init_tracing();
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("batched", 1).await.unwrap();
    // 12 batches of 10 records, every other one compressed: a fetch of 7 records always ends
    // inside a batch, with more batches after it in the same answer.
    produce_batched(
        &client,
        "batched",
        0,
        0..120,
        10,
        |_| 0,
        |first| {
            if (first / 10) % 2 == 0 {
                rustmq::protocol::Compression::None
            } else {
                rustmq::protocol::Compression::Lz4
            }
        },
    )
    .await;
    let consumer = consumer_with_fetches(&client, "batched", "batch-readers", 7, 14).await;
    let mut got = Vec::new();
    for _ in 0..120 {
        let m = recv(&consumer).await;
        assert_eq!(
            m.message.payload_as_string().unwrap(),
            value(0, m.message.offset),
            "offset {} carries its own record",
            m.message.offset
        );
        got.push(m.message.offset);
        m.ack().await.unwrap();
    }
    assert_eq!(got, (0..120).collect::<Vec<u64>>());
    nothing_within(&consumer, Duration::from_millis(300)).await;
}
