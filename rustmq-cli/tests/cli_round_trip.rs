//! The `rustmq` binary end to end against a broker: topics, produce, consume, group lag.

mod support;

use support::{json_lines, TestBroker};

#[test]
fn create_produce_consume_and_describe_the_group_lag() {
    let broker = TestBroker::start();

    let out = broker
        .rustmq(&["topics", "create", "cli-orders", "--partitions", "1"])
        .output()
        .success();
    assert!(out.contains("created topic cli-orders"), "{out}");
    let listed = broker.rustmq(&["topics", "list"]).output().success();
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("cli-orders") && l.trim_end().ends_with('1')),
        "{listed}"
    );

    broker
        .rustmq(&[
            "produce",
            "cli-orders",
            "--key",
            "user-1",
            "--header",
            "source=cli",
        ])
        .stdin("one\ntwo\nthree\n")
        .output()
        .success_saying("produced 3 message(s) to cli-orders");

    // Back as a group member: exactly the three payloads, in order; the group commits them.
    let consumed = broker
        .rustmq(&[
            "consume",
            "cli-orders",
            "--group",
            "cli-readers",
            "--from-beginning",
            "--max-messages",
            "3",
        ])
        .output()
        .success();
    assert_eq!(consumed, "one\ntwo\nthree\n");

    // Without a group, as JSON records: key, header, offsets.
    let records = json_lines(
        &broker
            .rustmq(&[
                "consume",
                "cli-orders",
                "--from-beginning",
                "-n",
                "3",
                "--format",
                "json",
            ])
            .output()
            .success(),
    );
    assert_eq!(records.len(), 3);
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r["offset"], i as u64);
        assert_eq!(r["partition"], 0);
        assert_eq!(r["key"], "user-1");
        assert_eq!(r["headers"]["source"], "cli");
    }
    assert_eq!(records[1]["payload"], "two");

    // --offset skips the first record.
    let from_one = broker
        .rustmq(&["consume", "cli-orders", "--offset", "1", "-n", "2"])
        .output()
        .success();
    assert_eq!(from_one, "two\nthree\n");

    // Two more messages: the group committed 3, the end is 5, so the lag is 2.
    broker
        .rustmq(&["produce", "cli-orders"])
        .stdin("four\nfive\n")
        .output()
        .success();
    let described = json_lines(
        &broker
            .rustmq(&["groups", "describe", "cli-readers", "--format", "json"])
            .output()
            .success(),
    );
    let partition = &described[0]["partitions"][0];
    assert_eq!(partition["topic"], "cli-orders");
    assert_eq!(partition["committed"], 3);
    assert_eq!(partition["end"], 5);
    assert_eq!(partition["lag"], 2);
    let table = broker
        .rustmq(&["groups", "describe", "cli-readers"])
        .output()
        .success();
    let row = table
        .lines()
        .find(|l| l.starts_with("cli-orders"))
        .unwrap_or_else(|| panic!("no partition row in {table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(&cells[..5], ["cli-orders", "0", "3", "5", "2"], "{table}");
    let groups = broker.rustmq(&["groups", "list"]).output().success();
    assert!(groups.lines().any(|g| g == "cli-readers"), "{groups}");

    let described = json_lines(
        &broker
            .rustmq(&["topics", "describe", "cli-orders", "--format", "json"])
            .output()
            .success(),
    );
    assert_eq!(described[0]["partitions"][0]["high_watermark"], 5);

    broker
        .rustmq(&["topics", "delete", "cli-orders"])
        .output()
        .success();
    let gone = broker
        .rustmq(&["topics", "describe", "cli-orders"])
        .output()
        .failure(1);
    assert!(
        gone.starts_with("error: ") && gone.contains("cli-orders"),
        "{gone}"
    );
}

#[test]
fn consume_by_timestamp_and_idle_timeout() {
    let broker = TestBroker::start();
    broker
        .rustmq(&["produce", "cli-times"])
        .stdin("early\n")
        .output()
        .success();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let cut = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(20));
    broker
        .rustmq(&["produce", "cli-times"])
        .stdin("late\n")
        .output()
        .success();
    // Nothing more arrives: the idle timeout ends the run before --max-messages is reached.
    let done = broker
        .rustmq(&[
            "consume",
            "cli-times",
            "--timestamp",
            &cut,
            "-n",
            "5",
            "--idle-timeout",
            "1s",
        ])
        .output();
    assert_eq!(done.success(), "late\n");
    assert!(
        done.stderr().contains("stopped after 1 of 5"),
        "{}",
        done.stderr()
    );
}

/// A `--timestamp` in seconds (a number below 10^11) is read as seconds with a group and
/// without one, as the consumer API reads it: both start at the same message.
#[test]
fn a_timestamp_in_seconds_means_the_same_with_and_without_a_group() {
    let broker = TestBroker::start();
    broker
        .rustmq(&["produce", "cli-seconds"])
        .stdin("early\n")
        .output()
        .success();
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
    };
    let cut = now().as_secs() + 1;
    while now().as_millis() < u128::from(cut) * 1000 + 20 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    broker
        .rustmq(&["produce", "cli-seconds"])
        .stdin("late\n")
        .output()
        .success();
    let cut = cut.to_string();
    let consume = |extra: &[&str]| {
        let mut args = vec!["consume", "cli-seconds", "--timestamp", &cut, "-n", "1"];
        args.extend_from_slice(extra);
        broker.rustmq(&args).output().success()
    };
    assert_eq!(consume(&[]), "late\n");
    assert_eq!(consume(&["--group", "cli-seconds-group"]), "late\n");
}

/// A line the producer refuses (larger than a message may be) ends the input with an error
/// naming its line, exit code 1, but the lines before it are still sent: the producer is
/// closed, sending what it holds, however the input ended.
#[test]
fn the_lines_before_a_bad_one_are_still_produced() {
    let broker = TestBroker::start();
    broker.create_topic("cli-cut", 1);
    let huge = "x".repeat(5 * 1024 * 1024);
    let produced = broker
        .rustmq(&["produce", "cli-cut"])
        .stdin(&format!("one\ntwo\n{huge}\nthree\n"))
        .output();
    let stderr = produced.failure(1);
    assert!(
        stderr.contains("produced 2 message(s) to cli-cut before the error"),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: line 3 is longer than the largest message"),
        "{stderr}"
    );
    let consumed = broker
        .rustmq(&["consume", "cli-cut", "--from-beginning", "-n", "2"])
        .output()
        .success();
    assert_eq!(consumed, "one\ntwo\n");
}
