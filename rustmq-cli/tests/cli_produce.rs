//! `rustmq produce` against a broker: retried batches, Ctrl-C, long and binary lines,
//! refusals under acks=none.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::{json_lines, TestBroker};

/// The broker stores the first batch but its answer is lost: the producer sends it again.
/// The CLI's producer is idempotent, so the broker drops the resend and every line is stored
/// once.
#[test]
fn a_resent_batch_is_stored_once() {
    let broker = TestBroker::start();
    broker.create_topic("cli-once", 1);
    broker.handle().drop_next_produce_answers(1);
    broker
        .rustmq(&["produce", "cli-once"])
        .stdin("one\ntwo\nthree\n")
        .output()
        .success_saying("produced 3 message(s) to cli-once");
    assert_eq!(broker.high_watermark("cli-once", 0), Some(3));
    let consumed = broker
        .rustmq(&["consume", "cli-once", "--from-beginning", "-n", "3"])
        .output()
        .success();
    assert_eq!(consumed, "one\ntwo\nthree\n");
}

/// Ctrl-C while stdin is still open: the lines read are sent and acknowledged, the summary
/// is printed, and the exit code says the input was cut short (130).
#[test]
fn ctrl_c_sends_what_was_read_and_prints_the_summary() {
    let broker = TestBroker::start();
    let mut running = broker.rustmq(&["produce", "cli-interrupted"]).spawn();
    // The producer is built (and Ctrl-C handled) once its topic exists.
    broker.wait_until("the topic exists", || {
        broker.high_watermark("cli-interrupted", 0).is_some()
    });
    running.write(b"one\ntwo\n");
    broker.wait_until("two lines are stored", || {
        broker.high_watermark("cli-interrupted", 0) == Some(2)
    });
    running.write(b"three\n");
    running.interrupt();
    // stdin stays open: the command must not wait for it.
    let done = running.wait(Duration::from_secs(20));
    let stderr = done.failure(130);
    let stored = broker.high_watermark("cli-interrupted", 0).unwrap();
    assert!(stored == 2 || stored == 3, "{stored} stored");
    assert!(
        stderr.contains(&format!("produced {stored} message(s) to cli-interrupted")),
        "{stderr}"
    );
    assert!(stderr.contains("interrupted"), "{stderr}");
    let consumed = broker
        .rustmq(&[
            "consume",
            "cli-interrupted",
            "--from-beginning",
            "-n",
            &stored.to_string(),
        ])
        .output()
        .success();
    let expected: String = ["one\n", "two\n", "three\n"][..stored as usize].concat();
    assert_eq!(consumed, expected);
}

/// Lines are bytes: a line that is not UTF-8 is sent as it is (and the lines after it too),
/// the key separator splits bytes, and a line's "\r\n" or "\n" is not part of it.
#[test]
fn lines_that_are_not_utf8_are_sent_as_bytes() {
    let broker = TestBroker::start();
    broker.create_topic("cli-bytes", 1);
    broker
        .rustmq(&["produce", "cli-bytes", "--key-separator", ":"])
        .stdin_bytes(b"k1:one\r\nk2:\xff\xfe\n\xfe:v\nno-key\nlast:\xc3")
        .output()
        .success();
    let records = json_lines(
        &broker
            .rustmq(&[
                "consume",
                "cli-bytes",
                "--from-beginning",
                "-n",
                "5",
                "--format",
                "json",
            ])
            .output()
            .success(),
    );
    assert_eq!(records.len(), 5);
    assert_eq!(
        (&records[0]["key"], &records[0]["payload"]),
        (&"k1".into(), &"one".into())
    );
    assert_eq!(records[1]["key"], "k2");
    assert_eq!(records[1]["payload_hex"], "fffe");
    assert_eq!(records[2]["key_hex"], "fe");
    assert_eq!(records[2]["payload"], "v");
    assert_eq!(records[3]["key"], Value::Null);
    assert_eq!(records[3]["payload"], "no-key");
    assert_eq!(records[4]["key"], "last");
    assert_eq!(records[4]["payload_hex"], "c3");
}

/// A file without a newline, larger than a message may be, is refused as an over-long first
/// line (it is not read into memory whole); nothing was sent.
#[test]
fn a_file_without_newlines_is_an_over_long_line() {
    let broker = TestBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one-line.txt");
    std::fs::write(&path, vec![b'x'; 6 * 1024 * 1024]).unwrap();
    let stderr = broker
        .rustmq(&["produce", "cli-no-newline", "--file"])
        .command()
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(stderr.status.code(), Some(1), "{stderr:?}");
    let stderr = String::from_utf8_lossy(&stderr.stderr);
    assert!(stderr.contains("line 1 is longer than"), "{stderr}");
    assert!(
        stderr.contains("produced 0 message(s) to cli-no-newline before the error"),
        "{stderr}"
    );
}

/// With acks=none the sends do not wait for answers, but the command still reads them all
/// before it exits: messages the broker refused (here: an unknown topic on a broker that does
/// not create topics) fail the command.
#[test]
fn refusals_under_acks_none_fail_the_command() {
    let broker = TestBroker::start_with(|b| b.auto_create_topics(false));
    let done = broker
        .rustmq(&["produce", "cli-missing", "--acks", "none"])
        .stdin("a\nb\n")
        .output();
    let stderr = done.failure(1);
    assert!(
        stderr.contains("the broker refused 2 of 2 message(s)"),
        "{stderr}"
    );
    assert!(!stderr.contains("produced 2 message(s)"), "{stderr}");
}
