//! Many producers on one partition: every acknowledged record stored once, at its own offset.

use std::collections::HashSet;

use rustmq::testing::TestBroker;
use rustmq_protocol::*;
use tests::{batch, fetch_all, produce, TestRecord};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_producers_a_thousand_records_each() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("busy", 1).await.unwrap();
    let mut tasks = Vec::new();
    for producer in 0..16 {
        let client = broker.client().await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut offsets = Vec::new();
            for i in 0..1000 {
                let rec = TestRecord::new(format!("p{producer}-r{i}"), i);
                let ack = produce(
                    &client,
                    "busy",
                    0,
                    batch(&[rec], Compression::None),
                    Acks::Leader,
                )
                .await
                .unwrap();
                offsets.push(ack.base_offset);
            }
            offsets
        }));
    }
    let mut all = HashSet::new();
    let mut acks = 0;
    for t in tasks {
        for o in t.await.unwrap() {
            acks += 1;
            assert!(all.insert(o), "offset {o} acknowledged twice");
        }
    }
    assert_eq!(acks, 16_000);
    let (records, _) = fetch_all(&client, "busy", 0, 0).await;
    assert_eq!(records.len(), 16_000);
    let values: HashSet<_> = records.iter().map(|r| r.value.clone().unwrap()).collect();
    assert_eq!(values.len(), 16_000, "every record is distinct");
    let offsets: HashSet<u64> = records.iter().map(|r| r.offset).collect();
    assert_eq!(
        offsets, all,
        "fetched offsets are exactly the acknowledged ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_acks_all_share_fdatasyncs() {
    let broker = TestBroker::start().await.unwrap();
    let client = broker.client().await.unwrap();
    client.create_topic("synced", 1).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..64 {
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            produce(
                &client,
                "synced",
                0,
                batch(&[TestRecord::new(vec![1; 100], i)], Compression::None),
                Acks::All,
            )
            .await
            .unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Group commit: concurrent acks=All requests share fdatasyncs.
    let topic = broker.handle().unwrap().topics().require("synced").unwrap();
    let syncs = topic.partitions[0].sync_count();
    assert!(
        (1..64).contains(&syncs),
        "64 acks=All requests took {syncs} fdatasyncs"
    );
}
