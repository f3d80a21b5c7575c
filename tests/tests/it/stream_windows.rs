//! Windowed streams with several members in one group: each member's windows hold its own
//! partitions' messages, and a partition that moves to a member far ahead in event time does
//! not lose the messages of the window it had open.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::stream_support::*;
use rustmq::stream::{
    LatePolicy, MessageProcessor, MessageStream, StreamConfig, StreamMode, WindowOptions,
};
use rustmq::{async_trait, Message, Result};

/// Joins a window's payloads (as [`Join`]) and records the partitions its messages came from.
struct Recording {
    join: Join,
    partitions: Arc<parking_lot::Mutex<HashSet<u32>>>,
}

#[async_trait]
impl MessageProcessor for Recording {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        self.join.process(m).await
    }

    async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
        self.partitions
            .lock()
            .extend(messages.iter().map(|m| m.partition));
        self.join.process_batch(messages).await
    }
}

/// Member A owns partition 0, whose messages are old (window [0,100) open); member B owns
/// partition 1, far ahead (windows closed up to ~5,000). A stops: B takes partition 0 over,
/// committing its own progress on the way. B must not take its progress for partition 0's:
/// the open window's messages were placed by A but never emitted, and must be placed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moving_to_a_member_ahead_in_event_time_does_not_lose_its_open_window() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 2).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    client.create_topic("late", 1).await.unwrap();
    let config = StreamConfig {
        input_topics: vec!["in".into()],
        output_topic: Some("out".into()),
        consumer_group: "g".into(),
        mode: StreamMode::Windowed {
            window_size: Duration::from_millis(100),
            slide_interval: Duration::from_millis(100),
        },
        ..Default::default()
    };
    let member = || async {
        let partitions = Arc::new(parking_lot::Mutex::new(HashSet::new()));
        let stream = MessageStream::new(client.clone(), config.clone())
            .await
            .unwrap()
            .with_processor(Recording {
                join: Join(Upper::new(0)),
                partitions: Arc::clone(&partitions),
            })
            .with_commit_interval(Duration::from_millis(50))
            .with_window_options(WindowOptions {
                allowed_lateness: Duration::ZERO,
                late_messages: LatePolicy::DeadLetter {
                    topic: "late".into(),
                },
            });
        stream.start().await.unwrap();
        (stream, partitions)
    };
    let (first, first_saw) = member().await;
    let (second, second_saw) = member().await;
    eventually("a partition each", Duration::from_secs(20), || async {
        let g = client.describe_group("g").await.unwrap();
        g.state == "stable"
            && g.members.len() == 2
            && g.members
                .iter()
                .all(|m| m.assignment.iter().any(|a| a.1.len() == 1))
    })
    .await;

    // Partition 1 runs ahead: its first window is emitted by its owner.
    let ahead = |payload: &str, ts| (1, payload.to_owned(), ts);
    send(&client, "in", &[ahead("x", 1_000), ahead("y", 5_000)]).await;
    wait_records(&client, "out", 1).await;
    let (a, b) = if second_saw.lock().contains(&1) {
        (first, second)
    } else {
        assert!(first_saw.lock().contains(&1));
        (second, first)
    };
    // Partition 0 is behind: its window [0,100) stays open at A, its messages placed.
    let behind = |payload: &str, ts| (0, payload.to_owned(), ts);
    send(&client, "in", &[behind("a", 10), behind("b", 20)]).await;
    eventually(
        "A placed partition 0's messages",
        Duration::from_secs(20),
        || async {
            committed(&client, "g")
                .await
                .get(&("__seen.in".to_owned(), 0))
                == Some(&2)
        },
    )
    .await;

    a.stop().await.unwrap();
    eventually(
        "B owns both partitions",
        Duration::from_secs(20),
        || async {
            let g = client.describe_group("g").await.unwrap();
            g.state == "stable" && g.members.len() == 1
        },
    )
    .await;
    // A message far ahead closes every window. B places partition 0's messages again: into
    // their window, or, when it has read partition 1's again first (one watermark for all of a
    // member's partitions), as late messages (dead-lettered). Either way they are not passed
    // over as emitted already.
    send(&client, "in", &[ahead("z", 20_000)]).await;
    eventually(
        "partition 0's messages out or late",
        Duration::from_secs(20),
        || async {
            let mut got: Vec<String> = payloads(&client, "out")
                .await
                .iter()
                .flat_map(|w| w.split('|').map(str::to_lowercase).collect::<Vec<_>>())
                .chain(payloads(&client, "late").await)
                .collect();
            got.sort();
            got.dedup();
            got == ["a", "b", "x", "y"]
        },
    )
    .await;
    b.stop().await.unwrap();
}
