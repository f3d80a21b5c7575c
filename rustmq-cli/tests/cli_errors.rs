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

/// Global options that make no client configuration are bad arguments (exit 2), reported
/// with what is wrong, before any broker is tried.
#[test]
fn bad_global_options_are_usage_errors() {
    // Nothing listens there: a usage error must come before any attempt to connect.
    let broker = "127.0.0.1:9";
    let run = |args: &[&str]| {
        let mut all = vec!["--broker", broker];
        all.extend_from_slice(args);
        rustmq(&all).output().failure(2)
    };
    let zero = run(&["--timeout", "0s", "topics", "list"]);
    assert!(
        zero.contains("--timeout") && zero.contains("greater than zero"),
        "{zero}"
    );
    let empty = run(&["--client-id", "", "topics", "list"]);
    assert!(
        empty.contains("--client-id") && empty.contains("empty"),
        "{empty}"
    );
    let both = run(&["--insecure", "--ca-cert", "ca.pem", "topics", "list"]);
    assert!(both.contains("cannot be used with"), "{both}");
    // Refused by the client's own checks: the message is the configuration's.
    let long_id = "x".repeat(300);
    let long = run(&["--client-id", &long_id, "topics", "list"]);
    assert!(
        long.starts_with("error: invalid configuration: client_id has 300 bytes"),
        "{long}"
    );
    assert!(!long.contains("cannot connect"), "{long}");
    // A log filter that does not parse, rather than logging at some other level than asked.
    let log = run(&["--log", "rustmq=loud", "topics", "list"]);
    assert!(
        log.contains("invalid log filter") && log.contains("--log"),
        "{log}"
    );
}

#[test]
fn an_empty_key_separator_is_a_usage_error() {
    let err = rustmq(&["produce", "t", "--key-separator", ""])
        .output()
        .failure(2);
    assert!(
        err.contains("--key-separator") && err.contains("empty"),
        "{err}"
    );
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

/// Values a bench run could not use are bad arguments (exit 2, naming the option), not a run
/// that fails late or silently runs with another value.
#[test]
fn bad_bench_values_are_usage_errors() {
    let cases: &[(&[&str], &str)] = &[
        // Was run at 1 message a second.
        (&["bench", "e2e", "--rate", "0"], "--rate"),
        (&["bench", "produce", "-p", "0"], "--partitions"),
        (&["bench", "consume", "--partitions", "0"], "--partitions"),
        (&["bench", "produce", "--batch-size", "0"], "--batch-size"),
        (
            &["bench", "produce", "--batch-bytes", "1000"],
            "--batch-bytes",
        ),
    ];
    for (args, option) in cases {
        let err = rustmq(args).output().failure(2);
        assert!(err.contains(option), "{args:?}: {err}");
    }
}

/// A payload larger than the largest message (4 MiB) is refused before any is made (a pool
/// of 16 of them was made first: 32 GB for `-s 2000000000`).
#[test]
fn a_payload_larger_than_the_largest_message_is_a_usage_error() {
    for command in ["produce", "consume", "e2e"] {
        let err = rustmq(&["bench", command, "-s", "2000000000"])
            .output()
            .failure(2);
        assert!(err.contains("--size") && err.contains("4194304"), "{err}");
    }
    let err = rustmq(&["bench", "e2e", "-s", "4194305"])
        .output()
        .failure(2);
    assert!(err.contains("--size"), "{err}");
}

/// With --baseline, a broker that cannot be reached fails the run before the baseline is
/// measured: no baseline line, and the connection's error.
#[test]
fn a_bench_against_an_unreachable_broker_fails_before_its_baseline() {
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let done = rustmq(&[
        "--broker",
        &addr,
        "--timeout",
        "300ms",
        "bench",
        "-w",
        "W1",
        "--baseline",
        "--quiet",
    ])
    .output();
    let err = done.failure(1);
    assert!(
        err.contains(&format!("error: cannot connect to {addr}")),
        "{err}"
    );
    assert_eq!(done.stdout(), "", "nothing was measured");
}

/// The embedded broker's client takes the global options too: a --client-id the client
/// refuses is a usage error there as against --broker (it was replaced by `rustmq-bench`).
#[test]
fn a_bench_on_the_embedded_broker_takes_the_global_client_options() {
    let long_id = "x".repeat(300);
    let err = rustmq(&["--client-id", &long_id, "bench", "e2e", "-n", "100", "-q"])
        .output()
        .failure(2);
    assert!(
        err.contains("error: invalid configuration: client_id has 300 bytes"),
        "{err}"
    );
    // `--timeout` bounds the embedded broker's client too: nothing connects in a nanosecond.
    let err = rustmq(&["--timeout", "1ns", "bench", "e2e", "-n", "100", "-q"])
        .output()
        .failure(1);
    assert!(
        err.contains("cannot connect to embedded broker") && err.contains("timed out after 0 ms"),
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
