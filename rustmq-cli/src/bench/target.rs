//! Where the load goes: an embedded broker on its own thread and runtime (as a separate
//! process would have), or external brokers given with --broker.
//!
//! ```text
//!   main thread: client runtime (current-thread, or --client-threads N)
//!        │ QUIC over 127.0.0.1
//!   "rustmq-server" thread: current-thread runtime ── embedded broker, baseline echo server
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;

use rustmq::{ClientConfig, TlsConfig};
use rustmq_broker::{Broker, BrokerConfig, BrokerHandle};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

use crate::args::GlobalArgs;
use crate::error::CliError;

/// A current-thread runtime on a thread of its own, for the server side.
pub(crate) struct ServerThread {
    handle: Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServerThread {
    pub(crate) fn start() -> Result<Self, CliError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| CliError::io("cannot start the server runtime", e))?;
        let handle = rt.handle().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("rustmq-server".into())
            .spawn(move || {
                rt.block_on(async {
                    let _ = stopped.await;
                });
                // Tasks still running (connections) are dropped with the runtime.
            })
            .map_err(|e| CliError::io("cannot start the server thread", e))?;
        Ok(Self {
            handle,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// The runtime to spawn server tasks on.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The brokers under load.
pub(crate) enum Target {
    /// A broker started here, on the server thread, in a temporary (or given) directory.
    Embedded {
        /// Boxed: the handle is large, and the other variant small.
        broker: Option<Box<BrokerHandle>>,
        /// The server thread's runtime, where the broker is shut down.
        server: Handle,
        addr: SocketAddr,
        cert: PathBuf,
        /// The temporary data directory, removed when the target is dropped (after the
        /// broker's shutdown); `None` for a `--data-dir`.
        dir: Option<tempfile::TempDir>,
    },
    /// Brokers given on the command line, reached with the global options.
    External(Box<ClientConfig>),
}

impl Target {
    /// Starts an embedded broker on `server`.
    pub(crate) async fn embedded(
        server: &ServerThread,
        data_dir: Option<PathBuf>,
    ) -> Result<Self, CliError> {
        let (dir, temp) = match data_dir {
            Some(d) => (d, None),
            None => {
                let t = tempfile::Builder::new()
                    .prefix("rustmq-bench-")
                    .tempdir()
                    .map_err(|e| CliError::io("cannot create a temporary directory", e))?;
                (t.path().to_owned(), Some(t))
            }
        };
        let config = BrokerConfig {
            data_dir: dir,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..BrokerConfig::default()
        };
        let broker = server
            .handle()
            .spawn(async move { Broker::builder().config(config).start().await })
            .await
            .map_err(|e| CliError::Failed(format!("embedded broker task failed: {e}")))?
            .map_err(|e| CliError::Failed(format!("embedded broker failed to start: {e}")))?;
        Ok(Target::Embedded {
            addr: broker.local_addr(),
            cert: broker.cert_path().to_owned(),
            broker: Some(Box::new(broker)),
            server: server.handle().clone(),
            dir: temp,
        })
    }

    /// How a client reaches the target: an embedded broker with its own certificate, and the
    /// global options that are not about reaching a broker (`--client-id`, `--timeout`).
    pub(crate) fn client_config(&self, global: &GlobalArgs) -> ClientConfig {
        match self {
            Target::Embedded { addr, cert, .. } => ClientConfig {
                brokers: vec![addr.to_string()],
                client_id: Some(
                    global
                        .client_id
                        .clone()
                        .unwrap_or_else(|| "rustmq-bench".into()),
                ),
                request_timeout: global.timeout,
                connect_timeout: global.timeout,
                tls_config: Some(TlsConfig {
                    ca_cert: Some(cert.display().to_string()),
                    server_name: Some("localhost".into()),
                    ..TlsConfig::default()
                }),
                ..ClientConfig::default()
            },
            Target::External(config) => (**config).clone(),
        }
    }

    /// Whether what the run writes outlives it: on external brokers, or an embedded one in a
    /// `--data-dir` (a temporary directory goes with the run).
    pub(crate) fn keeps_data(&self) -> bool {
        match self {
            Target::Embedded { dir, .. } => dir.is_none(),
            Target::External(_) => true,
        }
    }

    /// The embedded broker's runtime (whose thread's CPU clock is read); `None` for external
    /// brokers.
    pub(crate) fn server(&self) -> Option<&Handle> {
        match self {
            Target::Embedded { server, .. } => Some(server),
            Target::External(_) => None,
        }
    }

    /// "embedded" or the broker list.
    pub(crate) fn describe(&self) -> String {
        match self {
            Target::Embedded { addr, .. } => format!("embedded broker on {addr}"),
            Target::External(c) => c.brokers.join(","),
        }
    }

    /// Stops an embedded broker cleanly (on its own runtime), then removes its temporary
    /// directory.
    pub(crate) async fn shutdown(self) {
        if let Target::Embedded {
            mut broker,
            server,
            dir,
            ..
        } = self
        {
            if let Some(b) = broker.take() {
                let _ = server.spawn((*b).shutdown()).await;
            }
            drop(dir);
        }
    }
}
