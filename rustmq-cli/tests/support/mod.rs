//! Running the built `rustmq` binary against a broker started by the test.

#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustmq::{ClientConfig, RustMqClient, TlsConfig};
use rustmq_broker::{Broker, BrokerBuilder, BrokerHandle};

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
        Self::start_with(|b| b)
    }

    /// A broker whose builder `configure` adjusts (data directory and address are set after).
    pub fn start_with(configure: impl FnOnce(BrokerBuilder) -> BrokerBuilder) -> Self {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let handle = rt
            .block_on(
                configure(Broker::builder())
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

    /// The running broker (fault injection, retention, inspection).
    pub fn handle(&self) -> &BrokerHandle {
        self.handle.as_ref().expect("the broker runs until dropped")
    }

    /// Runs `f` on the broker's runtime (for library clients of the test).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// A library client of this broker (run it with [`block_on`](Self::block_on)).
    pub async fn client(&self) -> RustMqClient {
        RustMqClient::new(ClientConfig {
            brokers: vec![self.addr.to_string()],
            tls_config: Some(TlsConfig {
                ca_cert: Some(self.cert.display().to_string()),
                server_name: Some("localhost".to_owned()),
                ..TlsConfig::default()
            }),
            ..ClientConfig::default()
        })
        .await
        .unwrap()
    }

    /// The high watermark of `topic`/`partition`, `None` while the topic does not exist.
    pub fn high_watermark(&self, topic: &str, partition: u32) -> Option<u64> {
        let topic = self.handle().topics().get(topic)?;
        let log = topic.partition(partition).ok()?;
        Some(log.high_watermark())
    }

    /// Waits (up to 20 s) until `cond` holds.
    pub fn wait_until(&self, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `rustmq <args>` with the options that reach this broker.
    /// Creates `topic` with `partitions` through `rustmq topics create`, which must succeed.
    pub fn create_topic(&self, topic: &str, partitions: u32) {
        self.rustmq(&[
            "topics",
            "create",
            topic,
            "--partitions",
            &partitions.to_string(),
        ])
        .output()
        .success();
    }

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
    stdin: Option<Vec<u8>>,
    env: Vec<(String, std::ffi::OsString)>,
}

impl Run {
    pub fn new(args: Vec<String>) -> Self {
        Self {
            args,
            stdin: None,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable of the command (`TMPDIR`, to see what it leaves there).
    pub fn env(mut self, key: &str, value: impl Into<std::ffi::OsString>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    pub fn stdin(self, input: &str) -> Self {
        self.stdin_bytes(input.as_bytes())
    }

    pub fn stdin_bytes(mut self, input: &[u8]) -> Self {
        self.stdin = Some(input.to_owned());
        self
    }

    /// The command, with every standard stream piped.
    pub fn command(&self) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_rustmq"));
        command
            .args(&self.args)
            .env_remove("RUST_LOG")
            .env_remove("RUSTMQ_BROKERS")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        command
    }

    /// Runs to completion (bounded by the command's own --timeout / --idle-timeout options).
    pub fn output(self) -> Done {
        let mut child = self.command().spawn().expect("the rustmq binary runs");
        {
            let mut stdin = child.stdin.take().unwrap();
            if let Some(input) = &self.stdin {
                // A command that fails early stops reading: its answer is what is checked.
                let _ = stdin.write_all(input);
            }
        }
        Done {
            args: self.args,
            output: child.wait_with_output().unwrap(),
        }
    }

    /// Starts the command with stdin kept open (see [`Running`]).
    pub fn spawn(self) -> Running {
        let mut child = self.command().spawn().expect("the rustmq binary runs");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stderr.read_to_end(&mut all);
            all
        });
        let mut running = Running {
            args: self.args,
            child,
            stdin,
            stdout,
            seen: Vec::new(),
            stderr,
        };
        if let Some(input) = &self.stdin {
            running.write(input);
        }
        running
    }
}

/// A command still running: its stdin open, its stdout read on demand, its stderr collected.
pub struct Running {
    args: Vec<String>,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    seen: Vec<u8>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Writes to the command's stdin.
    pub fn write(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        stdin.write_all(bytes).unwrap();
        stdin.flush().unwrap();
    }

    /// Closes the command's stdin (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends SIGINT (Ctrl-C) to the command.
    pub fn interrupt(&self) {
        let status = Command::new("kill")
            .args(["-INT", &self.pid().to_string()])
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -INT {} failed", self.pid());
    }

    /// The next line the command prints (without its newline); `None` at the end of its output.
    pub fn read_line(&mut self) -> Option<String> {
        let mut line = Vec::new();
        let n = self.stdout.read_until(b'\n', &mut line).unwrap();
        if n == 0 {
            return None;
        }
        self.seen.extend_from_slice(&line);
        if line.ends_with(b"\n") {
            line.pop();
        }
        Some(String::from_utf8_lossy(&line).into_owned())
    }

    /// Whether the command is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Waits up to `within` for the command to exit (its stdin closed first unless
    /// `keep_stdin`); kills it and fails the test if it does not.
    pub fn wait(mut self, within: Duration) -> Done {
        let mut rest = self.stdout;
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = rest.read_to_end(&mut all);
            all
        });
        let deadline = Instant::now() + within;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        drop(self.stdin);
        let mut stdout = self.seen;
        stdout.extend(reader.join().unwrap());
        let stderr = self.stderr.join().unwrap();
        let Some(status) = status else {
            panic!(
                "rustmq {:?} did not exit within {within:?}\nstdout: {}\nstderr: {}",
                self.args,
                String::from_utf8_lossy(&stdout),
                String::from_utf8_lossy(&stderr)
            );
        };
        Done {
            args: self.args,
            output: Output {
                status,
                stdout,
                stderr,
            },
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

    /// Asserts exit code 0 and that stderr says `said` (a command's summary line); returns
    /// stdout.
    pub fn success_saying(&self, said: &str) -> String {
        let stdout = self.success();
        assert!(self.stderr().contains(said), "{}", self.stderr());
        stdout
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

/// Each line of `s` as JSON (`--format json` output).
pub fn json_lines(s: &str) -> Vec<serde_json::Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}
