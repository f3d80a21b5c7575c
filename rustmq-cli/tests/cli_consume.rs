//! `rustmq consume` against a broker: short timeouts, records the message builder would
//! refuse, retention passing a reader, start positions with a group, and Ctrl-C.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustmq::consumer::ConsumerConfig;
use rustmq::protocol::{
    Acks, JoinGroupRequest, ProduceRequest, RecordBatchBuilder, Request, Response,
};
use rustmq_broker::BrokerConfig;
use support::{json_lines, TestBroker};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Without a group, a fetch waits at the broker for up to 500 ms; with `--timeout 300ms` the
/// request must still be given that wait on top of its timeout, or every fetch on an idle
/// partition fails.
#[test]
fn a_short_timeout_does_not_fail_fetches_on_an_idle_partition() {
    let broker = TestBroker::start();
    broker.create_topic("cli-idle", 1);
    let done = broker
        .rustmq(&[
            "--timeout",
            "300ms",
            "consume",
            "cli-idle",
            "--idle-timeout",
            "2s",
        ])
        .output();
    assert_eq!(done.success(), "");
    assert_eq!(done.stderr(), "");
}

/// A stored record with an empty header name (which `Message::builder` refuses to build) is
/// printed without a group, as a group member receives it.
#[test]
fn a_record_with_an_empty_header_name_is_printed() {
    let broker = TestBroker::start();
    broker.create_topic("cli-odd", 1);
    broker.block_on(async {
        let client = broker.client().await;
        let mut batch = RecordBatchBuilder::new();
        let ts = now_ms();
        batch.push(ts, Some(b"k"), Some(b"odd"), [("", b"v".as_slice())]);
        batch.push(ts, None, Some(b"plain"), std::iter::empty());
        let answer = client
            .raw_request(Request::Produce(ProduceRequest {
                topic: "cli-odd".into(),
                partition: 0,
                acks: Acks::Leader,
                timeout_ms: 5_000,
                batch: batch.build().unwrap(),
            }))
            .await
            .unwrap();
        assert!(matches!(answer, Response::Produce(_)), "{answer:?}");
        client.close().await.unwrap();
    });
    let records = json_lines(
        &broker
            .rustmq(&[
                "consume",
                "cli-odd",
                "--from-beginning",
                "-n",
                "2",
                "--format",
                "json",
            ])
            .output()
            .success(),
    );
    assert_eq!(records.len(), 2);
    assert_eq!(records[0]["payload"], "odd");
    assert_eq!(records[0]["headers"][""], "v");
    assert_eq!(records[0]["offset"], 0);
    assert_eq!(records[1]["payload"], "plain");
    assert_eq!(records[1]["offset"], 1);
}

/// Retention deletes the segments a reader without a group has not read yet: the reader
/// warns, skips to the first stored offset and goes on.
#[test]
fn retention_passing_the_reader_skips_ahead_with_a_warning() {
    // No periodic retention pass: the test runs the one that matters.
    let mut config = BrokerConfig::default();
    config.log.retention_check_interval = Duration::from_secs(24 * 3600);
    let broker = TestBroker::start_with(|b| b.config(config));
    broker
        .rustmq(&[
            "topics",
            "create",
            "cli-retained",
            "--partitions",
            "1",
            "--segment-bytes",
            "65536",
            "--retention-bytes",
            "200000",
        ])
        .output()
        .success();
    const N: usize = 30_000;
    let input: String = (0..N)
        .map(|i| format!("{i:06}{}\n", "x".repeat(94)))
        .collect();
    broker
        .rustmq(&["produce", "cli-retained"])
        .stdin(&input)
        .output()
        .success();
    assert_eq!(broker.high_watermark("cli-retained", 0), Some(N as u64));

    // Nobody reads the reader's output for now: it stops after a pipe and a channel full.
    let mut running = broker
        .rustmq(&[
            "consume",
            "cli-retained",
            "--from-beginning",
            "--idle-timeout",
            "3s",
        ])
        .spawn();
    assert!(running.read_line().unwrap().starts_with("000000"));
    std::thread::sleep(Duration::from_secs(2));
    broker.handle().run_retention_at(now_ms());
    let start = broker
        .handle()
        .topics()
        .get("cli-retained")
        .unwrap()
        .partition(0)
        .unwrap()
        .log_start_offset();
    assert!(start > 20_000, "retention kept from {start}");

    let done = running.wait(Duration::from_secs(60));
    let stdout = done.success();
    let stderr = done.stderr();
    assert!(
        stderr.contains("warning:") && stderr.contains("no longer stored"),
        "{stderr}"
    );
    let offsets: Vec<usize> = stdout.lines().map(|l| l[..6].parse().unwrap()).collect();
    assert!(offsets.len() < N, "every record was printed");
    assert!(
        offsets.windows(2).all(|w| w[0] < w[1]),
        "printed in order, each once"
    );
    assert_eq!(offsets[0], 0);
    assert_eq!(*offsets.last().unwrap(), N - 1, "read on to the end");
    // Everything from the new start on was printed.
    let tail = offsets.iter().filter(|&&o| o as u64 >= start).count() as u64;
    assert_eq!(tail, N as u64 - start);
}

/// `--group` with `--offset`: the partitions assigned when another member leaves later start
/// at the offset too, not at the group's commits.
#[test]
fn an_offset_applies_to_partitions_assigned_later() {
    let broker = TestBroker::start();
    broker.create_topic("cli-later", 2);
    for p in ["0", "1"] {
        broker
            .rustmq(&["produce", "cli-later", "--partition", p])
            .stdin(&format!("p{p}-a\np{p}-b\n"))
            .output()
            .success();
    }
    // The group commits the end of both partitions.
    broker
        .rustmq(&[
            "consume",
            "cli-later",
            "--group",
            "cli-later-g",
            "--from-beginning",
            "-n",
            "4",
        ])
        .output()
        .success();

    let (client, holder) = broker.block_on(async {
        let client = broker.client().await;
        let holder = client
            .create_consumer_with_config(
                "cli-later",
                "cli-later-g",
                ConsumerConfig {
                    heartbeat_interval: Duration::from_millis(100),
                    ..ConsumerConfig::default()
                },
            )
            .await
            .unwrap();
        (client, holder)
    });
    let mut running = broker
        .rustmq(&[
            "consume",
            "cli-later",
            "--group",
            "cli-later-g",
            "--offset",
            "0",
            "-n",
            "4",
            "--idle-timeout",
            "10s",
        ])
        .spawn();
    // The CLI shares the partitions with the holder: it reads its one from offset 0.
    let first = [running.read_line().unwrap(), running.read_line().unwrap()];
    let kept = broker.block_on(holder.assigned_partitions());
    assert_eq!(kept.len(), 1, "the holder keeps one partition");
    assert_eq!(
        first,
        [format!("p{}-a", 1 - kept[0]), format!("p{}-b", 1 - kept[0])]
    );
    // The holder leaves: the CLI is assigned its partition, and starts it at offset 0 too.
    broker.block_on(holder.close()).unwrap();
    let done = running.wait(Duration::from_secs(30));
    let mut lines: Vec<String> = done.success().lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(lines, ["p0-a", "p0-b", "p1-a", "p1-b"], "{}", done.stderr());
    broker.block_on(client.close()).unwrap();
}

/// Ctrl-C while the CLI waits to join its group (the group waits for another member to
/// rejoin): the CLI finishes joining, then leaves the group at once and exits 0, rather than
/// dying and leaving its membership behind until its session expires.
#[test]
fn ctrl_c_while_joining_leaves_the_group() {
    let broker = TestBroker::start();
    broker.create_topic("cli-join", 1);
    let join = |member_id: String| {
        Request::JoinGroup(JoinGroupRequest {
            group: "cli-join-g".into(),
            member_id,
            client_id: "holder".into(),
            topics: vec!["cli-join".into()],
            session_timeout_ms: 60_000,
            rebalance_timeout_ms: 60_000,
        })
    };
    let (client, holder) = broker.block_on(async {
        let client = broker.client().await;
        // A member that rejoins only when the test says: the CLI's join waits for it.
        let holder = match client.raw_request(join(String::new())).await.unwrap() {
            Response::JoinGroup(r) => r.member_id,
            other => panic!("{other:?}"),
        };
        (client, holder)
    });
    let members = || -> Vec<String> {
        broker
            .block_on(client.describe_group("cli-join-g"))
            .unwrap()
            .members
            .into_iter()
            .map(|m| m.client_id)
            .collect()
    };
    let running = broker
        .rustmq(&[
            "--client-id",
            "cli-joiner",
            "consume",
            "cli-join",
            "--group",
            "cli-join-g",
        ])
        .spawn();
    broker.wait_until("the CLI asked to join", || members().len() == 2);
    running.interrupt();
    std::thread::sleep(Duration::from_millis(200));
    // The holder rejoins: the rebalance completes and the CLI's join is answered.
    broker.block_on(async {
        let rejoined = client.raw_request(join(holder)).await.unwrap();
        assert!(matches!(rejoined, Response::JoinGroup(_)), "{rejoined:?}");
    });
    let done = running.wait(Duration::from_secs(20));
    assert_eq!(done.success(), "");
    assert_eq!(
        members(),
        ["holder"],
        "the CLI's membership was left behind"
    );
    broker.block_on(client.close()).unwrap();
}

/// The first Ctrl-C stops and leaves the group (committing first); a second one, while that
/// commit hangs, exits at once with 130.
#[test]
fn a_second_ctrl_c_exits_at_once() {
    let broker = TestBroker::start();
    broker
        .rustmq(&["produce", "cli-twice"])
        .stdin("a\n")
        .output()
        .success();
    let mut running = broker
        .rustmq(&[
            "consume",
            "cli-twice",
            "--group",
            "cli-twice-g",
            "--from-beginning",
        ])
        .spawn();
    assert_eq!(running.read_line().as_deref(), Some("a"));
    let hold = broker
        .block_on(broker.handle().hold_group_commits("cli-twice-g"))
        .expect("the group exists");
    running.interrupt();
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        running.is_running(),
        "the first Ctrl-C waits for the commit"
    );
    running.interrupt();
    let done = running.wait(Duration::from_secs(5));
    let stderr = done.failure(130);
    assert!(stderr.contains("interrupted again"), "{stderr}");
    drop(hold);
}
