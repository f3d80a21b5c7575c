//! Bad arguments and unreachable brokers: a message on stderr and a non-zero exit code.

mod support;

use support::rustmq;

#[test]
fn bad_arguments_fail_with_a_message_and_exit_code_2() {
    let missing = rustmq(&["consume"]).output().failure(2);
    assert!(
        missing.contains("<TOPIC>") && missing.contains("Usage"),
        "{missing}"
    );

    let header = rustmq(&["produce", "t", "--header", "no-value"])
        .output()
        .failure(2);
    assert!(header.contains("is not NAME=VALUE"), "{header}");

    let partitions = rustmq(&["topics", "create", "t", "--partitions", "0"])
        .output()
        .failure(2);
    assert!(partitions.contains("--partitions"), "{partitions}");

    let conflict = rustmq(&["consume", "t", "--from-beginning", "--offset", "3"])
        .output()
        .failure(2);
    assert!(conflict.contains("cannot be used with"), "{conflict}");

    let unknown = rustmq(&["topics", "frobnicate"]).output().failure(2);
    assert!(unknown.contains("unrecognized subcommand"), "{unknown}");

    let workload = rustmq(&["bench", "--workload", "W9"]).output().failure(2);
    assert!(workload.contains("W9"), "{workload}");

    let flush = rustmq(&["broker", "--flush", "sometimes"])
        .output()
        .failure(2);
    assert!(flush.contains("flush"), "{flush}");
}

#[test]
fn an_unreachable_broker_is_a_clear_failure() {
    // A bound UDP socket that never answers QUIC.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let err = rustmq(&["--broker", &addr, "--timeout", "300ms", "topics", "list"])
        .output()
        .failure(1);
    assert!(
        err.starts_with(&format!("error: cannot connect to {addr}")),
        "{err}"
    );
}

#[test]
fn every_command_has_help() {
    let commands: &[&[&str]] = &[
        &[],
        &["topics"],
        &["topics", "create"],
        &["topics", "list"],
        &["topics", "describe"],
        &["topics", "delete"],
        &["produce"],
        &["consume"],
        &["groups"],
        &["groups", "list"],
        &["groups", "describe"],
        &["bench"],
        &["bench", "produce"],
        &["bench", "consume"],
        &["bench", "e2e"],
        &["broker"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let help = rustmq(&args).output().success();
        assert!(help.contains("Usage: rustmq"), "{command:?}: {help}");
    }
}
