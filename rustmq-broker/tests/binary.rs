//! The `rustmq-broker` binary: documented options, clear errors on bad arguments, and a clean
//! exit (status 0, data flushed) on SIGTERM and SIGINT.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_rustmq-broker");

#[test]
fn help_documents_every_option() {
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for option in [
        "--config",
        "--data-dir",
        "--listen",
        "--tls-cert",
        "--tls-key",
        "--flush",
        "--auto-create-topics",
    ] {
        assert!(
            help.contains(option),
            "--help does not mention {option}:\n{help}"
        );
    }
}

#[test]
fn bad_arguments_fail_with_a_message() {
    let cases: [&[&str]; 3] = [
        &["--listen", "not-an-address"],
        &["--flush", "sometimes"],
        &["--no-such-flag"],
    ];
    for args in cases {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains("error"), "{args:?}: {err}");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broker.toml");
    std::fs::write(&config, "listne = \"127.0.0.1:1\"\n").unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("listne"), "the unknown key is named: {err}");
}

/// A running broker process, killed and reaped if a test fails before waiting for it.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn start(dir: &std::path::Path) -> (Running, String) {
    let mut child = Running(
        Command::new(BIN)
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "the broker did not report its address"
        );
        let line = lines.next().expect("stderr open").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            let addr = rest.split_whitespace().next().unwrap().to_owned();
            // Keep draining stderr so the broker never blocks on a full pipe.
            std::thread::spawn(move || lines.for_each(drop));
            return (child, addr);
        }
    }
}

#[test]
fn sigterm_and_sigint_stop_cleanly_with_status_zero() {
    for signal in ["-TERM", "-INT"] {
        let dir = tempfile::tempdir().unwrap();
        let (mut child, addr) = start(dir.path());
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        assert!(
            dir.path().join("tls/cert.pem").exists(),
            "a development certificate was generated"
        );
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.0.id().to_string())
            .status()
            .unwrap();
        assert!(status.success());
        let status = child.0.wait().unwrap();
        assert_eq!(status.code(), Some(0), "{signal}: clean exit");
    }
}

/// A log filter that does not parse is a usage error naming where it came from, not a broker
/// logging at some other level than asked.
#[test]
fn a_log_filter_that_does_not_parse_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let run = |log: Option<&str>, env: Option<&str>| {
        let mut command = Command::new(BIN);
        command
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path());
        if let Some(log) = log {
            command.args(["--log", log]);
        }
        match env {
            Some(env) => command.env("RUST_LOG", env),
            None => command.env_remove("RUST_LOG"),
        };
        let out = command.output().unwrap();
        (out.status.code(), String::from_utf8(out.stderr).unwrap())
    };
    let (code, err) = run(Some("rustmq=loud"), None);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("invalid log filter") && err.contains("--log"),
        "{err}"
    );
    let (code, err) = run(None, Some("rustmq=loud"));
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("RUST_LOG"), "{err}");
}

/// A second broker process on a data directory in use exits with the reason, and the first
/// goes on serving.
#[test]
fn a_second_broker_on_the_same_data_directory_exits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _) = start(dir.path());
    let out = Command::new(BIN)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("in use by another broker"), "{err}");
    assert!(
        matches!(first.0.try_wait(), Ok(None)),
        "the first broker still runs"
    );
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(first.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(first.0.wait().unwrap().code(), Some(0));
}
