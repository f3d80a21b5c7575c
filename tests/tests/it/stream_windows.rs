//! Windowed streams over several partitions: each member's windows hold its own partitions'
//! messages; a partition that moves to a member far ahead in event time does not lose the
//! messages of the window it had open, nor are they late there (the watermark waits for the
//! slowest partition); and partitions that go idle let the windows close with no message.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
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

/// No lateness allowed, late messages dead-lettered to "late", partitions idle after a minute
/// (longer than any test here).
fn late_to_dead_letters() -> WindowOptions {
    WindowOptions {
        allowed_lateness: Duration::ZERO,
        late_messages: LatePolicy::DeadLetter {
            topic: "late".into(),
        },
        idle_timeout: Duration::from_secs(60),
    }
}

/// A broker with topics "in" (2 partitions), "out" and "late", a client, and the settings of
/// a stream in group "g" from "in" to "out" with tumbling windows of 100 ms.
async fn two_partitions_windowed() -> (
    rustmq::testing::TestBroker,
    rustmq::RustMqClient,
    StreamConfig,
) {
    windowed(2).await
}

/// [`two_partitions_windowed`], with `partitions` input partitions.
async fn windowed(
    partitions: u32,
) -> (
    rustmq::testing::TestBroker,
    rustmq::RustMqClient,
    StreamConfig,
) {
    let (broker, client) = broker().await;
    client.create_topic("in", partitions).await.unwrap();
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
    (broker, client, config)
}

/// Member A owns partition 0, whose messages are old (window [0,100) open); member B owns
/// partition 1, far ahead (windows closed up to ~5,000). A stops: B takes partition 0 over,
/// committing its own progress on the way. B must not take its progress for partition 0's:
/// the open window's messages were placed by A but never emitted, and must be placed again —
/// in their window, not as late messages judged against partition 1's timestamps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_moving_to_a_member_ahead_in_event_time_does_not_lose_its_open_window() {
    let (_broker, client, config) = two_partitions_windowed().await;
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
            // Idle timeout longer than the test: partition 0 holds B's watermark back throughout.
            .with_window_options(late_to_dead_letters());
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
    // B places partition 0's messages again, and partition 1's `y` (its window is open),
    // in either order: partition 0 holds B's watermark back (from B's start, and once it has
    // delivered), so they join their window rather than being judged late against `y`.
    // Given time to read both partitions again (so that with one watermark for all of a
    // member's partitions, the largest timestamp, `c` would be late for certain; `a` and `b`
    // were whenever `y` came first), partition 0 goes on: `c` joins the same window. Then
    // both partitions move on, far apart, and the window closes at the least of them (150).
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(&client, "in", &[behind("c", 30)]).await;
    send(&client, "in", &[ahead("z", 20_000), behind("d", 150)]).await;
    eventually(
        "partition 0's window out (or its messages late)",
        Duration::from_secs(20),
        || async {
            payloads(&client, "out")
                .await
                .iter()
                .any(|w| w.contains('A'))
                || !payloads(&client, "late").await.is_empty()
        },
    )
    .await;
    let out = payloads(&client, "out").await;
    assert!(
        out.iter().any(|w| w == "A|B|C"),
        "partition 0's messages in their window: {out:?}"
    );
    assert_eq!(payloads(&client, "late").await, Vec::<String>::new());
    assert_eq!(b.metrics().await.late_messages.load(Ordering::Relaxed), 0);
    b.stop().await.unwrap();
}

/// Partitions that deliver nothing for the idle timeout stop holding the watermark back, and
/// the windows close then, with no message arriving: partition 0 holds the window [0,100)
/// open against partition 1 far ahead until both are idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_close_when_partitions_become_idle() {
    let (_broker, client, config) = two_partitions_windowed().await;
    send(
        &client,
        "in",
        &[
            (0, "a".to_owned(), 10),
            (0, "b".to_owned(), 20),
            (1, "y".to_owned(), 5_000),
        ],
    )
    .await;
    let idle_timeout = Duration::from_secs(1);
    let started = tokio::time::Instant::now();
    let stream = MessageStream::new(client.clone(), config)
        .await
        .unwrap()
        .with_processor(Join(Upper::new(0)))
        .with_window_options(WindowOptions {
            late_messages: LatePolicy::DeadLetter {
                topic: "late".into(),
            },
            idle_timeout,
            ..Default::default()
        });
    stream.start().await.unwrap();
    let out = wait_records(&client, "out", 1).await;
    // Not before both partitions were idle (with one watermark for all partitions, the
    // largest timestamp, `y` closed the window at once).
    assert!(
        started.elapsed() >= idle_timeout,
        "closed after {:?}",
        started.elapsed()
    );
    let out: Vec<String> = out.into_iter().map(|o| o.payload).collect();
    assert_eq!(out, ["A|B"]);
    stream.stop().await.unwrap();
    assert_eq!(payloads(&client, "late").await, Vec::<String>::new());
    assert_eq!(payloads(&client, "out").await, ["A|B"]);
}

/// Joins a window's payloads (as [`Join`]), but holds any window with a `hold` member until
/// the gate opens.
struct Gated {
    join: Join,
    gate: Arc<tokio::sync::Semaphore>,
}

#[async_trait]
impl MessageProcessor for Gated {
    async fn process(&self, m: &Message) -> Result<Option<Message>> {
        self.join.process(m).await
    }

    async fn process_batch(&self, messages: &[Message]) -> Result<Vec<Option<Message>>> {
        if messages.iter().any(|m| m.payload.as_ref() == b"hold") {
            let _ = self.gate.acquire().await;
        }
        self.join.process_batch(messages).await
    }
}

/// Windows finished out of order (the later one first, the earlier one held by its
/// processor) commit in window order: a partition whose messages are all in the finished
/// later window is not committed past them while the earlier window is unfinished, as a
/// restart then would build that later window again without them and emit it with members
/// missing. Once the earlier window is done, every partition commits up to its open window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_finished_out_of_order_are_committed_in_window_order() {
    let (_broker, client, config) = two_partitions_windowed().await;
    let config = StreamConfig {
        parallelism: 2,
        ..config
    };
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let stream = MessageStream::new(client.clone(), config)
        .await
        .unwrap()
        .with_processor(Gated {
            join: Join(Upper::new(0)),
            gate: Arc::clone(&gate),
        })
        .with_commit_interval(Duration::from_millis(20));
    stream.start().await.unwrap();
    // [0,100): p0's `hold`; [100,200): p0's `b` and p1's `c`; [200,300) open: p0's `d` and
    // p1's `e`, which close the two before.
    send(
        &client,
        "in",
        &[
            (0, "hold".into(), 50),
            (0, "b".into(), 150),
            (1, "c".into(), 150),
            (0, "d".into(), 250),
            (1, "e".into(), 250),
        ],
    )
    .await;
    let outs = wait_records(&client, "out", 1).await;
    assert_eq!(outs[0].payload, "B|C", "the later window first");
    let metrics = stream.metrics().await;
    eventually("the later window finished", Duration::from_secs(10), || {
        let m = Arc::clone(&metrics);
        async move { m.messages_processed.load(Ordering::Relaxed) >= 2 }
    })
    .await;
    // One more message placed after that, and a commit that has it: that commit was made
    // after the later window finished. It may not pass p1's `c` (offset 0).
    send(&client, "in", &[(0, "f".into(), 260)]).await;
    let entry = |c: &std::collections::HashMap<(String, u32), u64>, name: &str, p: u32| {
        c.get(&(name.to_owned(), p)).copied().unwrap_or(0)
    };
    eventually(
        "a commit after `f` was placed",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            async move { entry(&committed(&client, "g").await, "__seen.in", 0) == 4 }
        },
    )
    .await;
    let position = |c: &std::collections::HashMap<(String, u32), u64>, p: u32| entry(c, "in", p);
    let held = committed(&client, "g").await;
    assert_eq!(
        (position(&held, 0), position(&held, 1)),
        (0, 0),
        "nothing past the unfinished window's or the finished later window's messages: {held:?}"
    );
    gate.add_permits(1);
    wait_records(&client, "out", 2).await;
    eventually(
        "commits up to the open window",
        Duration::from_secs(10),
        || {
            let client = client.clone();
            async move {
                let c = committed(&client, "g").await;
                (position(&c, 0), position(&c, 1)) == (2, 1)
            }
        },
    )
    .await;
    stream.stop().await.unwrap();
}

/// Exactly once, sliding windows of 100 ms every 50 ms, late messages dead-lettered: `c`
/// (60) comes after [0,100) closed, so it is late there, but it joins [50,150), still open.
/// The stream stops (its open window's members left uncommitted), or crashes before any
/// commit, once `c`'s late dead letter is written. Started again, it places `c` in [50,150)
/// again (its dead letter claims the dead letter, not the message) and writes no second dead
/// letter. It used to pass `c` over as claimed, and emit [50,150) without it.
#[tokio::test]
async fn a_late_message_rejoins_its_open_window_after_a_restart() {
    for crash in [false, true] {
        late_message_after_a_restart(crash).await;
    }
}

async fn late_message_after_a_restart(crash: bool) {
    let (_broker, client, config) = windowed(1).await;
    let config = StreamConfig {
        exactly_once: true,
        mode: StreamMode::Windowed {
            window_size: Duration::from_millis(100),
            slide_interval: Duration::from_millis(50),
        },
        ..config
    };
    let start = |commit: Duration| {
        let (client, config) = (client.clone(), config.clone());
        async move {
            let stream = MessageStream::new(client, config)
                .await
                .unwrap()
                .with_processor(Join(Upper::new(0)))
                .with_commit_interval(commit)
                .with_session_timeout(Duration::from_secs(2))
                .with_window_options(late_to_dead_letters());
            stream.start().await.unwrap();
            stream
        }
    };
    let first = start(Duration::from_secs(3600)).await;
    let input = |payload: &str, ts| (0, payload.to_owned(), ts);
    send(&client, "in", &[input("a", 10), input("b", 120)]).await;
    // [0,100) closed by `b` (windows start at 0 or later).
    wait_records(&client, "out", 1).await;
    send(&client, "in", &[input("c", 60)]).await;
    wait_records(&client, "late", 1).await;
    if crash {
        drop(first);
    } else {
        first.stop().await.unwrap();
    }

    let second = start(Duration::from_millis(50)).await;
    send(&client, "in", &[input("d", 1_000)]).await;
    // [50,150) and [100,200) closed by `d`.
    let outs = wait_records(&client, "out", 3).await;
    second.stop().await.unwrap();
    let payloads: Vec<String> = outs.into_iter().map(|o| o.payload).collect();
    assert_eq!(
        payloads,
        ["A", "C|B", "B"],
        "[50,150) holds `c` (crash: {crash})"
    );
    let late = read_all(&client, "late").await;
    assert_eq!(
        late.len(),
        1,
        "one dead letter for `c` (crash: {crash}): {late:?}"
    );
}
