//! An embedded broker for tests and quick starts (feature `testing`).
//!
//! ```no_run
//! # async fn demo() -> rustmq::Result<()> {
//! let broker = rustmq::testing::TestBroker::start().await?;   // ephemeral port, temp dir
//! let client = broker.client().await?;                        // trusts the broker's certificate
//! client.create_topic("orders", 3).await?;
//! # Ok(()) }
//! ```
//!
//! Every `TestBroker` has its own port and temporary data directory, so tests never share
//! state. Dropping one stops its broker without waiting: its tasks wind down on the runtime
//! that started it (they answer requests still waiting, a long poll or a join parked in a
//! rebalance, with `ShuttingDown`, and close its connections), and the temporary directory is
//! removed once they are done (by a task on the
//! runtime that drops it; dropped outside any runtime, at once). A broker of this process
//! started again on that port or data directory meanwhile ([`TestBroker::restart`],
//! [`TestBroker::start_in`]) waits for them to let go, up to [`LET_GO_TIMEOUT`]; one held by
//! anything else is refused at once.
//!
//! The broker's tasks live on the runtime that started it: a `TestBroker` kept in a `static`
//! stops serving when the test that started it ends. Under paused time
//! (`#[tokio::test(start_paused = true)]`) the clock jumps ahead whenever every task waits,
//! and QUIC waits on real sockets: timeouts then fire early.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use rustmq_broker::{Broker, BrokerConfig, BrokerHandle};

use crate::config::{ClientConfig, TlsConfig};
use crate::error::{ClientError, Result};
use crate::RustMqClient;

/// A broker running in this process on 127.0.0.1 with a temporary data directory.
#[derive(Debug)]
pub struct TestBroker {
    handle: Option<BrokerHandle>,
    config: BrokerConfig,
    addr: SocketAddr,
    cert_path: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for TestBroker {
    /// Stops the broker without waiting (see the module's docs); its temporary directory is
    /// removed once the broker's tasks are done with it, not under them.
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let dir = self._dir.take();
            let letting_go = LettingGo::note(&self.config.data_dir, self.addr, &handle);
            drop(handle);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    letting_go.wait().await;
                    drop(dir);
                });
            }
        }
    }
}

/// How long a broker started on the port or data directory of one stopped or dropped in this
/// process waits for the old one's tasks to let go of them: they answer its waiting requests
/// (long polls, joins parked in a rebalance) and close its connections, which takes
/// milliseconds once they run, but a dropped broker's tasks run only when the runtime that
/// started it gets to them (in a current-thread test, when the test next waits).
pub const LET_GO_TIMEOUT: Duration = Duration::from_secs(60);

/// The data directories and addresses of this process's brokers, stopped or dropped, whose
/// tasks have not let go of them yet: a start waits only for these, and fails at once on a
/// directory or port that anything else holds.
static LETTING_GO: parking_lot::Mutex<Vec<(PathBuf, SocketAddr)>> =
    parking_lot::const_mutex(Vec::new());

/// One entry of [`LETTING_GO`], taken out when its broker has let go (or when this is
/// dropped: a runtime that ends first cancels the wait).
struct LettingGo {
    entry: (PathBuf, SocketAddr),
    released: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

impl LettingGo {
    fn note(dir: &Path, addr: SocketAddr, handle: &BrokerHandle) -> Self {
        let entry = (dir.to_owned(), addr);
        LETTING_GO.lock().push(entry.clone());
        Self {
            entry,
            released: Box::pin(handle.released()),
        }
    }

    async fn wait(mut self) {
        self.released.as_mut().await;
    }

    /// Whether a broker of this process is letting go of `dir` or `addr`.
    fn holds(dir: &Path, addr: SocketAddr) -> bool {
        LETTING_GO
            .lock()
            .iter()
            .any(|(d, a)| d == dir || *a == addr)
    }
}

impl Drop for LettingGo {
    fn drop(&mut self) {
        let mut letting_go = LETTING_GO.lock();
        if let Some(i) = letting_go.iter().position(|e| *e == self.entry) {
            letting_go.swap_remove(i);
        }
    }
}

/// Starts a broker with `config`; a port or data directory that a broker of this process is
/// still letting go of (see the module's docs) is waited for, up to [`LET_GO_TIMEOUT`].
async fn start_when_free(config: &BrokerConfig) -> std::result::Result<BrokerHandle, String> {
    let deadline = std::time::Instant::now() + LET_GO_TIMEOUT;
    loop {
        let error = match Broker::builder().config(config.clone()).start().await {
            Ok(handle) => return Ok(handle),
            Err(e) => e,
        };
        let held = match &error {
            rustmq_broker::StartError::DataDirInUse { .. } => true,
            rustmq_broker::StartError::Server(rustmq_broker::ServerError::Bind {
                source, ..
            }) => source.kind() == std::io::ErrorKind::AddrInUse,
            _ => false,
        };
        if !held
            || !LettingGo::holds(&config.data_dir, config.listen)
            || std::time::Instant::now() >= deadline
        {
            return Err(error.to_string());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl TestBroker {
    /// Starts a broker on an ephemeral port in a new temporary directory.
    pub async fn start() -> Result<Self> {
        Self::start_with(BrokerConfig::default()).await
    }

    /// Starts a broker with `config`, overriding its listen address (ephemeral port on
    /// 127.0.0.1) and data directory (a new temporary directory).
    pub async fn start_with(mut config: BrokerConfig) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("rustmq-test-")
            .tempdir()
            .map_err(ClientError::Io)?;
        config.data_dir = dir.path().to_owned();
        config.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut broker = Self::start_in(config).await?;
        broker._dir = Some(dir);
        Ok(broker)
    }

    /// Starts a broker with exactly `config` (its data directory is kept after drop). A data
    /// directory or port that a broker of this process, stopped or dropped, is still letting
    /// go of is waited for (see the module's docs), so that a test can drop a broker, as a
    /// crash would stop it, and start another on its directory.
    pub async fn start_in(config: BrokerConfig) -> Result<Self> {
        let handle = start_when_free(&config).await.map_err(|e| {
            ClientError::Connection(format!("embedded broker failed to start: {e}"))
        })?;
        Ok(Self {
            addr: handle.local_addr(),
            cert_path: handle.cert_path().to_owned(),
            handle: Some(handle),
            config,
            _dir: None,
        })
    }

    /// The broker's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The broker's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    /// The certificate a client must trust.
    pub fn cert_path(&self) -> &Path {
        &self.cert_path
    }

    /// The running broker, `None` while stopped.
    pub fn handle(&self) -> Option<&BrokerHandle> {
        self.handle.as_ref()
    }

    /// A client configuration that reaches this broker and verifies its certificate, which it
    /// trusts as its anchor: the broker's generated one, or the file of `tls.cert` when the
    /// configuration sets one. A CA-issued certificate verifies only if that file holds the
    /// CA's certificate too; otherwise build the client's configuration with the CA as
    /// `ca_cert`.
    pub fn client_config(&self) -> ClientConfig {
        ClientConfig {
            brokers: vec![self.addr.to_string()],
            client_id: Some("rustmq-test".into()),
            tls_config: Some(TlsConfig {
                ca_cert: Some(self.cert_path.display().to_string()),
                server_name: Some("localhost".into()),
                ..TlsConfig::default()
            }),
            ..ClientConfig::default()
        }
    }

    /// A connected client.
    pub async fn client(&self) -> Result<RustMqClient> {
        RustMqClient::new(self.client_config()).await
    }

    /// Stops the broker cleanly (flushing every partition); the data directory stays. Requests
    /// still waiting in it (a long poll, a join parked in a rebalance) are answered
    /// `ShuttingDown`.
    pub async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            let letting_go = LettingGo::note(&self.config.data_dir, self.addr, &handle);
            handle.shutdown().await;
            tokio::spawn(letting_go.wait());
        }
    }

    /// Stops and starts the broker again on the same port and data directory. The start waits
    /// (up to [`LET_GO_TIMEOUT`]) for the old broker's tasks to let go of the port.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        let mut config = self.config.clone();
        config.listen = self.addr;
        let handle = start_when_free(&config).await.map_err(|e| {
            ClientError::Connection(format!("embedded broker failed to restart: {e}"))
        })?;
        self.handle = Some(handle);
        Ok(())
    }
}

/// One settled delivery, as a [`Recorder`] saw it.
#[derive(Debug, Clone)]
pub struct Settled {
    /// The message as delivered.
    pub message: crate::Message,
    /// Its delivery attempt.
    pub attempt: u32,
    /// The settlement, or the error text of a transient failure.
    pub settlement: std::result::Result<crate::Settlement, String>,
}

#[derive(Debug, Default)]
struct RecorderInner {
    settled: parking_lot::Mutex<Vec<Settled>>,
    changed: tokio::sync::Notify,
}

/// Records every settlement that passes its layer, so a test can wait for handlers to finish
/// and assert on what they did. A handler's panic is recorded as the failure the service
/// settles it as (`Err("the handler panicked: ...")`). Add its layer last (outermost) to see final settlements:
///
/// ```no_run
/// # async fn demo(client: rustmq::RustMqClient) {
/// # async fn handle(_: ()) {}
/// let recorder = rustmq::testing::Recorder::new();
/// let service = rustmq::Service::new(client).layer(recorder.layer());
/// // ... add handlers, start, publish ...
/// let settled = recorder.wait_for(10, std::time::Duration::from_secs(10)).await;
/// # }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    inner: std::sync::Arc<RecorderInner>,
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The layer that records into this recorder.
    pub fn layer(&self) -> RecordLayer {
        RecordLayer {
            recorder: self.clone(),
        }
    }

    /// Everything settled so far, in order.
    pub fn settled(&self) -> Vec<Settled> {
        self.inner.settled.lock().clone()
    }

    /// Waits until at least `n` deliveries settled; panics after `timeout` with what was seen.
    pub async fn wait_for(&self, n: usize, timeout: std::time::Duration) -> Vec<Settled> {
        let deadline = crate::consumer::timing::deadline(tokio::time::Instant::now(), timeout);
        loop {
            let notified = self.inner.changed.notified();
            {
                let settled = self.inner.settled.lock();
                if settled.len() >= n {
                    return settled.clone();
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let settled = self.settled();
                panic!(
                    "waited {timeout:?} for {n} settlements, saw {}: {settled:#?}",
                    settled.len()
                );
            }
        }
    }

    fn record(&self, s: Settled) {
        self.inner.settled.lock().push(s);
        self.inner.changed.notify_waiters();
    }
}

/// The layer of a [`Recorder`].
#[derive(Debug, Clone)]
pub struct RecordLayer {
    recorder: Recorder,
}

impl<S> tower::Layer<S> for RecordLayer {
    type Service = Record<S>;

    fn layer(&self, inner: S) -> Record<S> {
        Record {
            inner,
            recorder: self.recorder.clone(),
        }
    }
}

/// The service of [`RecordLayer`].
#[derive(Debug, Clone)]
pub struct Record<S> {
    inner: S,
    recorder: Recorder,
}

impl<S> tower::Service<crate::Delivery> for Record<S>
where
    S: tower::Service<crate::Delivery, Response = crate::Settlement, Error = crate::BoxError>,
    S::Future: Send + 'static,
{
    type Response = crate::Settlement;
    type Error = crate::BoxError;
    type Future = crate::typed::HandlerFuture;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::result::Result<(), crate::BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, delivery: crate::Delivery) -> Self::Future {
        let recorder = self.recorder.clone();
        let message = delivery.message().clone();
        let attempt = delivery.attempt();
        let fut = self.inner.call(delivery);
        crate::typed::HandlerFuture::new(async move {
            use futures::FutureExt;
            // A panic is recorded as the failure the service settles it as, then goes on to
            // the service, which catches it outside every layer.
            let result = match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
                Ok(result) => result,
                Err(panic) => {
                    recorder.record(Settled {
                        message,
                        attempt,
                        settlement: Err(format!(
                            "the handler panicked: {}",
                            crate::error::panic_message(&*panic)
                        )),
                    });
                    std::panic::resume_unwind(panic);
                }
            };
            recorder.record(Settled {
                message,
                attempt,
                settlement: result.as_ref().map(Clone::clone).map_err(|e| e.to_string()),
            });
            result
        })
    }
}
