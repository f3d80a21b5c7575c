//! Output into a pipe that closes early (`rustmq topics list | head -1`): not an error.

mod support;

use std::process::Stdio;

use support::TestBroker;

/// Every listing and description, text and JSON, into a pipe whose reader is gone: exit 0,
/// no panic ("failed printing to stdout").
#[test]
fn listings_into_a_closed_pipe_end_quietly() {
    let broker = TestBroker::start();
    broker.create_topic("cli-piped", 2);
    broker
        .rustmq(&["produce", "cli-piped"])
        .stdin("a\n")
        .output()
        .success();
    broker
        .rustmq(&[
            "consume",
            "cli-piped",
            "--group",
            "cli-piped-g",
            "--from-beginning",
            "-n",
            "1",
        ])
        .output()
        .success();
    let commands: &[&[&str]] = &[
        &["topics", "list"],
        &["topics", "describe", "cli-piped"],
        &["groups", "list"],
        &["groups", "describe", "cli-piped-g"],
    ];
    for command in commands {
        for format in ["text", "json"] {
            let mut args = command.to_vec();
            args.extend(["--format", format]);
            let mut child = broker
                .rustmq(&args)
                .command()
                .stdin(Stdio::null())
                .spawn()
                .unwrap();
            // The reader goes away before anything is printed.
            drop(child.stdout.take());
            let out = child.wait_with_output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
            assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        }
    }
}
