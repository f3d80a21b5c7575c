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
//! Every `TestBroker` has its own port and data directory, removed when it is dropped, so
//! tests never share state.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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

    /// Starts a broker with exactly `config` (its data directory is kept after drop).
    pub async fn start_in(config: BrokerConfig) -> Result<Self> {
        let handle = Broker::builder()
            .config(config.clone())
            .start()
            .await
            .map_err(|e| {
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

    /// A client configuration that reaches this broker and verifies its certificate.
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

    /// Stops the broker cleanly (flushing every partition); the data directory stays.
    pub async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }

    /// Stops and starts the broker again on the same port and data directory.
    pub async fn restart(&mut self) -> Result<()> {
        self.stop().await;
        let mut config = self.config.clone();
        config.listen = self.addr;
        let handle = Broker::builder()
            .config(config)
            .start()
            .await
            .map_err(|e| {
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
/// and assert on what they did. Add its layer last (outermost) to see final settlements:
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
            let result = fut.await;
            recorder.record(Settled {
                message,
                attempt,
                settlement: result.as_ref().map(Clone::clone).map_err(|e| e.to_string()),
            });
            result
        })
    }
}
