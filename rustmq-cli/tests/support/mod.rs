//! Running the built `rustmq` binary against a broker started by the test.

#![allow(dead_code, unreachable_pub)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use rustmq_broker::{Broker, BrokerHandle};

/// A broker on its own runtime (the binary under test runs as a child process meanwhile).
pub struct TestBroker {
    pub addr: SocketAddr,
    pub cert: PathBuf,
    handle: Option<BrokerHandle>,
    rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl TestBroker {
    pub fn start() -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let handle = rt
            .block_on(
                Broker::builder()
                    .data_dir(dir.path())
                    .listen("127.0.0.1:0".parse().unwrap())
                    .start(),
            )
            .unwrap();
        Self {
            addr: handle.local_addr(),
            cert: handle.cert_path().to_owned(),
            handle: Some(handle),
            rt,
            _dir: dir,
        }
    }

    /// `rustmq <args>` with the options that reach this broker.
    pub fn rustmq(&self, args: &[&str]) -> Run {
        let mut all = vec![
            "--broker".to_owned(),
            self.addr.to_string(),
            "--ca-cert".to_owned(),
            self.cert.display().to_string(),
            "--server-name".to_owned(),
            "localhost".to_owned(),
        ];
        all.extend(args.iter().map(|s| (*s).to_owned()));
        Run::new(all)
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            self.rt.block_on(h.shutdown());
        }
    }
}

/// One invocation of the binary.
pub struct Run {
    args: Vec<String>,
    stdin: Option<String>,
}

impl Run {
    pub fn new(args: Vec<String>) -> Self {
        Self { args, stdin: None }
    }

    pub fn stdin(mut self, input: &str) -> Self {
        self.stdin = Some(input.to_owned());
        self
    }

    /// Runs to completion (bounded by the command's own --timeout / --idle-timeout options).
    pub fn output(self) -> Done {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rustmq"))
            .args(&self.args)
            .env_remove("RUST_LOG")
            .env_remove("RUSTMQ_BROKERS")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the rustmq binary runs");
        {
            let mut stdin = child.stdin.take().unwrap();
            if let Some(input) = &self.stdin {
                stdin.write_all(input.as_bytes()).unwrap();
            }
        }
        Done {
            args: self.args,
            output: child.wait_with_output().unwrap(),
        }
    }
}

/// A finished invocation.
pub struct Done {
    args: Vec<String>,
    pub output: Output,
}

impl Done {
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    /// Asserts exit code 0 and returns stdout.
    pub fn success(&self) -> String {
        assert_eq!(
            self.code(),
            Some(0),
            "rustmq {:?} failed\nstdout: {}\nstderr: {}",
            self.args,
            self.stdout(),
            self.stderr()
        );
        self.stdout()
    }

    /// Asserts exit code `code` and returns stderr.
    pub fn failure(&self, code: i32) -> String {
        assert_eq!(
            self.code(),
            Some(code),
            "rustmq {:?}: expected exit code {code}\nstdout: {}\nstderr: {}",
            self.args,
            self.stdout(),
            self.stderr()
        );
        self.stderr()
    }
}

/// `rustmq <args>` with no broker options.
pub fn rustmq(args: &[&str]) -> Run {
    Run::new(args.iter().map(|s| (*s).to_owned()).collect())
}
