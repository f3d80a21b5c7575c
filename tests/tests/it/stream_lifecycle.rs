//! A stream's start, commits and stop against a real broker: the first session's failure is
//! `start`'s error, a stop while `start` waits ends it, a failed commit is made again (and one
//! at stop is `stop`'s error), outputs are on disk when acknowledged in at-least-once mode too.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::stream_support::*;
use rustmq::protocol::{JoinGroupRequest, Request, Response};
use rustmq::stream::{
    ErrorStrategy, LatePolicy, MessageProcessor, MessageStream, StreamConfig, StreamMode,
    WindowOptions,
};
use rustmq::{async_trait, ClientError, Message};

fn config(group: &str) -> StreamConfig {
    StreamConfig {
        input_topics: vec!["in".into()],
        output_topic: Some("out".into()),
        consumer_group: group.into(),
        parallelism: 1,
        error_strategy: ErrorStrategy::Skip,
        ..Default::default()
    }
}

fn inputs(payloads: &[&str]) -> Vec<(u32, String, u64)> {
    payloads.iter().map(|p| (0, p.to_string(), 10)).collect()
}

/// A join the broker refuses with an error a new session could not fix either (a group name
/// longer than the broker takes, answered `InvalidRequest`, which the supervisor would retry
/// once the stream runs) fails `start` at once, instead of leaving it waiting for ever.
#[tokio::test]
async fn start_fails_with_the_first_sessions_error() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    let group = "g".repeat(rustmq::protocol::MAX_GROUP_NAME_LEN + 1);
    let stream = MessageStream::new(client.clone(), config(&group))
        .await
        .unwrap()
        .with_processor(Upper::new(0));
    let err = tokio::time::timeout(Duration::from_secs(10), stream.start())
        .await
        .expect("start returns")
        .expect_err("the broker refuses the join");
    assert!(err.to_string().contains("group name"), "{err}");
    assert!(!stream.is_running());
    // The stream has ended, with that error.
    let stopped = tokio::time::timeout(Duration::from_secs(5), stream.stop())
        .await
        .expect("stop returns");
    assert!(stopped.is_err(), "{stopped:?}");
}

/// A late messages' dead-letter topic that is not a valid topic name fails `start`, rather
/// than the first late message.
#[tokio::test]
async fn start_checks_the_late_dead_letter_topic() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    let windowed = StreamConfig {
        mode: StreamMode::Windowed {
            window_size: Duration::from_millis(100),
            slide_interval: Duration::from_millis(100),
        },
        ..config("g-late")
    };
    let stream = MessageStream::new(client.clone(), windowed)
        .await
        .unwrap()
        .with_processor(Join(Upper::new(0)))
        .with_window_options(WindowOptions {
            late_messages: LatePolicy::DeadLetter {
                topic: "late ones".into(),
            },
            ..Default::default()
        });
    let err = stream.start().await.expect_err("an invalid topic name");
    assert!(matches!(err, ClientError::InvalidConfig(_)), "{err:?}");
    assert!(!stream.is_running());
}

/// A session timeout the broker would not keep (over 10 min: the member was removed between
/// two heartbeats, a third of it apart), none at all, or no commit interval (heartbeats or
/// commits back to back) fail `start`, as a consumer's config does.
#[tokio::test]
async fn start_checks_the_group_timings() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    for (session, commits) in [
        (Duration::from_secs(3600), Duration::from_millis(500)),
        (Duration::ZERO, Duration::from_millis(500)),
        (Duration::from_secs(10), Duration::ZERO),
    ] {
        let stream = MessageStream::new(client.clone(), config("g-timings"))
            .await
            .unwrap()
            .with_processor(Upper::new(0))
            .with_session_timeout(session)
            .with_commit_interval(commits);
        let err = stream.start().await.expect_err("timings refused");
        assert!(matches!(err, ClientError::InvalidConfig(_)), "{err:?}");
        assert!(!stream.is_running());
    }
}

/// A recovery longer than the session timeout (here a producer's initialisation, the group's
/// offsets and the partitions' start offsets, a round trip of 300 ms each) keeps the
/// membership alive: the stream starts and
/// processes. Its first heartbeat used to come only once processing ran, after the broker
/// had removed the member, and the start failed with `UnknownMember` (every later session
/// the same).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recovery_longer_than_the_session_keeps_the_membership() {
    let (broker, client) = broker().await;
    client.create_topic("in", 24).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    let far = tests::UdpRelay::start(broker.addr(), Duration::from_millis(150)).await;
    let mut through = broker.client_config();
    through.brokers = vec![far.addr.to_string()];
    let far_client = rustmq::RustMqClient::new(through).await.unwrap();
    let stream = MessageStream::new(far_client, config("g-far"))
        .await
        .unwrap()
        .with_processor(Upper::new(0))
        .with_session_timeout(Duration::from_millis(900));
    tokio::time::timeout(Duration::from_secs(30), stream.start())
        .await
        .expect("start returns")
        .expect("the stream starts");
    send(&client, "in", &inputs(&["a"])).await;
    let out = tokio::time::timeout(Duration::from_secs(30), wait_records(&client, "out", 1))
        .await
        .expect("the input processed");
    assert_eq!(out[0].payload, "A");
    stream.stop().await.unwrap();
}

/// A stream whose input topic is deleted and made again rejoins its group under its own id
/// (the deletion moved the group to a new generation, and its commits were refused) and goes
/// on with the new topic. Before, the refused commit aborted the session, which rejoined as a
/// new member and left its old id in the group, holding the rebalance up for a session
/// timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_rejoins_under_its_id_when_its_input_is_made_again() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    let stream = MessageStream::new(client.clone(), config("g-redo"))
        .await
        .unwrap()
        .with_processor(Upper::new(0))
        .with_commit_interval(Duration::from_millis(50))
        // Heartbeats 10 s apart: the commits hear of the new generation first.
        .with_session_timeout(Duration::from_secs(30));
    stream.start().await.unwrap();
    send(&client, "in", &inputs(&["a"])).await;
    wait_records(&client, "out", 1).await;
    let members = |d: rustmq::admin::GroupDescription| {
        d.members
            .into_iter()
            .map(|m| m.member_id)
            .collect::<Vec<_>>()
    };
    let before = members(client.describe_group("g-redo").await.unwrap());
    assert_eq!(before.len(), 1);
    client.delete_topic("in").await.unwrap();
    client.create_topic("in", 1).await.unwrap();
    send(&client, "in", &inputs(&["b"])).await;
    let out = wait_records(&client, "out", 2).await;
    assert_eq!(out[1].payload, "B");
    assert_eq!(
        members(client.describe_group("g-redo").await.unwrap()),
        before
    );
    stream.stop().await.unwrap();
}

/// `stop` while `start` waits for the join (another member holds up the rebalance) ends the
/// wait: `start` fails with `Closed` rather than return as if the stream ran, and `stop`
/// returns at once.
#[tokio::test]
async fn stop_while_start_waits_ends_the_start() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    // A member that never rejoins: the stream's join waits for it (up to its rebalance
    // timeout, ten minutes).
    let ghost = Request::JoinGroup(JoinGroupRequest {
        group: "g-ghost".into(),
        member_id: "ghost".into(),
        client_id: "ghost".into(),
        topics: vec!["in".into()],
        session_timeout_ms: 600_000,
        rebalance_timeout_ms: 600_000,
    });
    match client.raw_request(ghost).await.unwrap() {
        Response::JoinGroup(_) => {}
        other => panic!("unexpected answer to the join: {other:?}"),
    }
    let stream = MessageStream::new(client.clone(), config("g-ghost"))
        .await
        .unwrap()
        .with_processor(Upper::new(0));
    let starting = tokio::spawn({
        let stream = stream.clone();
        async move { stream.start().await }
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!starting.is_finished(), "the join waits for the ghost");
    tokio::time::timeout(Duration::from_secs(10), stream.stop())
        .await
        .expect("stop does not wait for the join")
        .unwrap();
    let started = tokio::time::timeout(Duration::from_secs(10), starting)
        .await
        .expect("start returns once stopped")
        .unwrap();
    assert!(
        matches!(started, Err(ClientError::Closed)),
        "start must not report a stream that never ran as started: {started:?}"
    );
    assert!(!stream.is_running());
}

/// A processor whose `on_start` takes a while, counting its `on_start` and `on_stop` calls.
struct SlowStart {
    started: Arc<AtomicUsize>,
    stopped: Arc<AtomicUsize>,
}

#[async_trait]
impl MessageProcessor for SlowStart {
    async fn process(&self, m: &Message) -> rustmq::Result<Option<Message>> {
        Ok(Some(m.clone()))
    }

    async fn on_start(&self) -> rustmq::Result<()> {
        self.started.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }

    async fn on_stop(&self) -> rustmq::Result<()> {
        self.stopped.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// `stop` while `start` still runs the processor's `on_start` (before the stream's task
/// exists) is not lost: `start` fails with `Closed`, nothing runs, and `on_stop` undoes the
/// `on_start`. A `stop` before any `start` still does nothing.
#[tokio::test]
async fn stop_while_on_start_runs_ends_the_start() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    let (started, stopped) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stream = MessageStream::new(client.clone(), config("g-slow-start"))
        .await
        .unwrap()
        .with_processor(SlowStart {
            started: Arc::clone(&started),
            stopped: Arc::clone(&stopped),
        });
    stream.stop().await.unwrap();
    let starting = tokio::spawn({
        let stream = stream.clone();
        async move { stream.start().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(started.load(Ordering::SeqCst), 1, "on_start runs");
    stream.stop().await.unwrap();
    let result = tokio::time::timeout(Duration::from_secs(10), starting)
        .await
        .expect("start returns")
        .unwrap();
    assert!(matches!(result, Err(ClientError::Closed)), "{result:?}");
    assert!(!stream.is_running());
    assert_eq!(stopped.load(Ordering::SeqCst), 1, "on_stop undoes on_start");
    let group = client.describe_group("g-slow-start").await;
    assert!(
        group.map_or(true, |g| g.members.is_empty()),
        "the stream never joined"
    );
}

/// A processor whose `on_start` fails after a while.
struct FailingStart;

#[async_trait]
impl MessageProcessor for FailingStart {
    async fn process(&self, m: &Message) -> rustmq::Result<Option<Message>> {
        Ok(Some(m.clone()))
    }

    async fn on_start(&self) -> rustmq::Result<()> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Err(ClientError::Connection("no database".into()))
    }
}

/// `wait` on a stream whose `start` failed before processing ran (here its `on_start`)
/// returns that error, whether it was waiting already or came after; on a stream never
/// started it returns at once. It used to wait for ever in both cases.
#[tokio::test]
async fn wait_returns_when_start_failed_before_the_stream_ran() {
    let (_broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    let stream = MessageStream::new(client.clone(), config("g-failing-start"))
        .await
        .unwrap()
        .with_processor(FailingStart);
    async fn within<T>(what: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), what)
            .await
            .expect("wait returns")
    }
    within(stream.wait())
        .await
        .expect("never started: nothing to wait for");
    let starting = tokio::spawn({
        let stream = stream.clone();
        async move { stream.start().await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let waiting = tokio::spawn({
        let stream = stream.clone();
        async move { stream.wait().await }
    });
    let started = starting.await.unwrap();
    assert!(
        matches!(&started, Err(ClientError::Connection(m)) if m == "no database"),
        "{started:?}"
    );
    let waited = within(waiting).await.unwrap();
    assert!(
        matches!(&waited, Err(ClientError::Connection(m)) if m == "no database"),
        "a wait begun during the start: {waited:?}"
    );
    let after = within(stream.wait()).await;
    assert!(
        matches!(&after, Err(ClientError::Connection(m)) if m == "no database"),
        "a wait after the start: {after:?}"
    );
    assert!(!stream.is_running());
}

/// The temporary file the broker writes a group's offsets through: a directory there makes
/// every commit of the group fail (an I/O error), removing it lets them succeed again.
fn offsets_blocker(broker: &rustmq::testing::TestBroker, group: &str) -> PathBuf {
    let hex: String = group.bytes().map(|b| format!("{b:02x}")).collect();
    broker
        .data_dir()
        .join("groups")
        .join(format!("{hex}.offsets.tmp"))
}

/// A commit that failed is made again at the next interval even though nothing changed since
/// (the stream is idle); a final commit that fails at stop is `stop`'s error.
#[tokio::test]
async fn a_failed_commit_is_retried_and_a_failed_final_commit_fails_stop() {
    let (broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    let blocker = offsets_blocker(&broker, "g-commit");
    std::fs::create_dir_all(&blocker).unwrap();
    send(&client, "in", &inputs(&["a", "b", "c"])).await;
    let stream = MessageStream::new(client.clone(), config("g-commit"))
        .await
        .unwrap()
        .with_processor(Upper::new(0))
        .with_commit_interval(Duration::from_millis(50));
    stream.start().await.unwrap();
    wait_records(&client, "out", 3).await;
    // Every input is finished; the commits of several intervals fail meanwhile.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let position =
        |c: std::collections::HashMap<(String, u32), u64>| c.get(&("in".to_string(), 0)).copied();
    assert_eq!(position(committed(&client, "g-commit").await), None);
    std::fs::remove_dir(&blocker).unwrap();
    eventually(
        "the failed commit to be made again",
        Duration::from_secs(5),
        || {
            let client = client.clone();
            async move { position(committed(&client, "g-commit").await) == Some(3) }
        },
    )
    .await;

    std::fs::create_dir_all(&blocker).unwrap();
    send(&client, "in", &inputs(&["d", "e"])).await;
    wait_records(&client, "out", 5).await;
    let stopped = tokio::time::timeout(Duration::from_secs(10), stream.stop())
        .await
        .expect("stop returns");
    assert!(
        stopped.is_err(),
        "stop must report that the work is not committed"
    );
    assert_eq!(position(committed(&client, "g-commit").await), Some(3));
}

/// In at-least-once mode too, outputs and dead letters are on disk when acknowledged (the
/// broker syncs them: acks=all), as the commits of their inputs are.
#[tokio::test]
async fn at_least_once_outputs_and_dead_letters_are_synced() {
    let (broker, client) = broker().await;
    client.create_topic("in", 1).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    client.create_topic("dlq", 1).await.unwrap();
    send(&client, "in", &inputs(&["a", "bad", "c"])).await;
    let config = StreamConfig {
        error_strategy: ErrorStrategy::DeadLetter {
            topic: "dlq".into(),
        },
        exactly_once: false,
        ..config("g-synced")
    };
    let stream = MessageStream::new(client.clone(), config)
        .await
        .unwrap()
        .with_processor(Upper::new(0));
    stream.start().await.unwrap();
    wait_records(&client, "out", 2).await;
    wait_records(&client, "dlq", 1).await;
    let topics = broker.handle().unwrap().topics();
    for topic in ["out", "dlq"] {
        let log = std::sync::Arc::clone(&topics.require(topic).unwrap().partitions[0]);
        // (Readable once appended, acknowledged once synced.)
        eventually(
            &format!("{topic} to be synced"),
            Duration::from_secs(5),
            || {
                let log = std::sync::Arc::clone(&log);
                async move { log.sync_count() > 0 }
            },
        )
        .await;
    }
    stream.stop().await.unwrap();
}

/// A client without a request timeout (`Duration::MAX`, "none") runs streams as any other:
/// the fetches' long-poll allowance added to it saturates.
#[tokio::test]
async fn a_stream_runs_on_a_client_without_a_request_timeout() {
    let (broker, _) = broker().await;
    let client = rustmq::RustMqClient::new(rustmq::ClientConfig {
        request_timeout: Duration::MAX,
        ..broker.client_config()
    })
    .await
    .unwrap();
    client.create_topic("in", 1).await.unwrap();
    client.create_topic("out", 1).await.unwrap();
    send(&client, "in", &inputs(&["a", "b"])).await;
    let stream = MessageStream::new(client.clone(), config("g-no-timeout"))
        .await
        .unwrap()
        .with_processor(Upper::new(0));
    stream.start().await.unwrap();
    let outs = wait_records(&client, "out", 2).await;
    let mut got: Vec<String> = outs.into_iter().map(|o| o.payload).collect();
    got.sort();
    assert_eq!(got, ["A", "B"]);
    stream.stop().await.unwrap();
}
