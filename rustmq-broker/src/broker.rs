//! The embeddable broker: a builder, and the handle of a running broker.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{BrokerConfig, ConfigError};
use crate::error::BrokerError;
use crate::groups::GroupCoordinator;
use crate::handler::Core;
use crate::producers::ProducerIds;
use crate::server::{Server, ServerError};
use crate::storage::FlushPolicy;
use crate::tls::BrokerIdentity;
use crate::topics::TopicManager;

/// Why a broker could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be opened or recovered.
    #[error("cannot open data directory: {0}")]
    Storage(#[from] BrokerError),
    /// The QUIC endpoint could not start.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// The certificate could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// The users file, a token digest or an ACL rule cannot be used.
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    /// Another broker (in this process or another) holds the data directory's lock.
    #[error(
        "data directory {} is in use by another broker (it holds {}); stop that broker or \
         give this one another data directory",
        .dir.display(),
        .dir.join(LOCK_FILE).display()
    )]
    DataDirInUse {
        /// The data directory.
        dir: PathBuf,
    },
}

/// The file in a data directory that a running broker holds an exclusive `flock` on.
pub const LOCK_FILE: &str = ".lock";

/// Takes the exclusive lock on `dir` that a broker holds while it runs: two brokers writing one
/// data directory would each cut and rewrite what the other wrote. An advisory `flock`, so it
/// goes with the process, however it ends, and two handles in one process exclude each other
/// too. On a file system that has no such locks (some network and FUSE mounts), the broker
/// runs unlocked, with a warning, rather than not at all.
fn lock_data_dir(dir: &Path) -> Result<Option<Flock<std::fs::File>>, StartError> {
    let path = dir.join(LOCK_FILE);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| BrokerError::io("open the data directory's lock file", e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(lock)),
        Err((_, Errno::EWOULDBLOCK)) => Err(StartError::DataDirInUse {
            dir: dir.to_owned(),
        }),
        Err((_, errno @ (Errno::ENOLCK | Errno::EOPNOTSUPP | Errno::ENOSYS))) => {
            tracing::warn!(dir = %dir.display(), %errno, "the data directory's file system has no locks: nothing keeps a second broker from opening it");
            Ok(None)
        }
        Err((_, errno)) => {
            Err(BrokerError::io("lock the data directory", std::io::Error::from(errno)).into())
        }
    }
}

/// Entry point: `Broker::builder()`.
#[derive(Debug)]
pub struct Broker;

impl Broker {
    /// A builder with the default configuration (127.0.0.1:9092, `./rustmq-data`).
    pub fn builder() -> BrokerBuilder {
        BrokerBuilder {
            config: BrokerConfig::default(),
        }
    }
}

/// Configures and starts a broker.
///
/// ```no_run
/// # async fn run() -> Result<(), rustmq_broker::StartError> {
/// let broker = rustmq_broker::Broker::builder()
///     .data_dir("/tmp/rustmq")
///     .listen("127.0.0.1:0".parse().unwrap())
///     .start()
///     .await?;
/// println!("listening on {}, trust {}", broker.local_addr(), broker.cert_path().display());
/// broker.shutdown().await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct BrokerBuilder {
    config: BrokerConfig,
}

impl BrokerBuilder {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: BrokerConfig) -> Self {
        self.config = config;
        self
    }

    /// Where data lives.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.config.data_dir = dir.into();
        self
    }

    /// Address to listen on; port 0 picks a free port.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen = addr;
        self
    }

    /// Whether producing to an unknown topic creates it.
    pub fn auto_create_topics(mut self, enabled: bool) -> Self {
        self.config.auto_create_topics = enabled;
        self
    }

    /// Starts serving on the current tokio runtime.
    pub async fn start(self) -> Result<BrokerHandle, StartError> {
        let config = self.config;
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| BrokerError::io("create data directory", e))?;
        // Before any file in it is read or written.
        let dir_lock = lock_data_dir(&config.data_dir)?;
        let identity = BrokerIdentity::load_or_generate(&config.tls, &config.data_dir)?;
        let security = crate::security::Security::from_config(&config)?;
        let topics = TopicManager::open(&config.data_dir, config.log.clone())?
            .with_max_partitions(config.limits.max_partitions);
        let groups = GroupCoordinator::open(&config.data_dir)?;
        // What deletions the broker stopped in left: the groups forget those topics first, then
        // the data goes (kept for the next start if a group's file could not be rewritten).
        if groups.forget_deleted(&topics, &topics.deleted_at_open()) {
            topics.remove_tombs();
        } else {
            topics.reserve_deleted();
        }
        let producer_ids = ProducerIds::open(&config.data_dir)?;
        // Producer tables come from snapshots and batch headers, which know nothing of an epoch
        // that was initialised but has not written yet, nor of retired ids, nor which
        // producers are named (pinned against expiry): fence named producers again, and
        // retire those ids again.
        crate::handler::fence_all(
            &topics.all_logs(),
            &producer_ids.named(),
            &producer_ids.retired(),
        );
        let server = Server::bind(
            config.listen,
            &identity,
            &config.tls,
            &config.limits,
            &config.quic,
        )?;
        let local_addr = server
            .local_addr()
            .map_err(|e| BrokerError::io("read bound address", e))?;
        let request_memory = crate::memory::RequestMemory::new(
            config.limits.max_request_memory_bytes,
            config.limits.max_request_memory_per_connection,
        );
        let core_limits_decompressing = config.limits.max_decompressing_bytes;
        let core = Arc::new(Core {
            port: local_addr.port(),
            config,
            topics,
            producer_ids,
            groups,
            shutting_down: Default::default(),
            drop_produce_answers: Default::default(),
            security,
            request_memory,
            decompressing: Arc::new(tokio::sync::Semaphore::new(
                crate::handler::decompressing_permits(core_limits_decompressing),
            )),
            dir_lock: parking_lot::Mutex::new(dir_lock),
        });
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = vec![tokio::spawn(server.run(Arc::clone(&core), stop_rx.clone()))];
        tasks.push(spawn_periodic(
            core.config.log.retention_check_interval,
            true,
            stop_rx.clone(),
            {
                let core = Arc::clone(&core);
                move || core.apply_retention()
            },
        ));
        tasks.push(tokio::spawn(expire_idle_groups(
            Arc::clone(&core),
            stop_rx.clone(),
        )));
        tasks.push(spawn_periodic(
            Duration::from_millis(100),
            false,
            stop_rx.clone(),
            {
                let core = Arc::clone(&core);
                move || core.groups.reap(&core.topics)
            },
        ));
        if let FlushPolicy::Interval(every) = core.config.log.flush.0 {
            tasks.push(spawn_periodic(every, true, stop_rx, {
                let core = Arc::clone(&core);
                move || core.flush_all()
            }));
        }
        tracing::info!(%local_addr, data_dir = %core.config.data_dir.display(), "broker started");
        Ok(BrokerHandle {
            local_addr,
            trust_pem: identity.trust_pem,
            trust_path: identity.trust_path,
            core,
            stop: stop_tx,
            tasks,
        })
    }
}

/// Forgets the groups idle for `log.group_expiration_ms`, at each retention interval, until
/// `stop`.
async fn expire_idle_groups(core: Arc<Core>, mut stop: watch::Receiver<bool>) {
    let expiration = Duration::from_millis(core.config.log.group_expiration_ms);
    let mut tick = tokio::time::interval(core.config.log.retention_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => break,
        }
        core.groups
            .expire_idle(tokio::time::Instant::now(), expiration)
            .await;
    }
}

/// Runs `f` every `every` until `stop`. With `blocking`, each run goes to a blocking thread
/// (work that waits for the disk: fdatasyncs, deleting segments), so that the connections the
/// runtime's threads serve do not wait with it; runs do not overlap.
fn spawn_periodic(
    every: Duration,
    blocking: bool,
    mut stop: watch::Receiver<bool>,
    f: impl Fn() + Send + Sync + 'static,
) -> JoinHandle<()> {
    let f = Arc::new(f);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            let stopped = tokio::select! {
                _ = tick.tick() => false,
                _ = stop.wait_for(|s| *s) => true,
            };
            if stopped {
                break;
            }
            if blocking {
                let f = Arc::clone(&f);
                if let Err(e) = tokio::task::spawn_blocking(move || f()).await {
                    tracing::error!(error = %e, "a periodic task failed");
                }
            } else {
                f();
            }
        }
    })
}

/// A running broker. Dropping it stops the broker without waiting; prefer
/// [`BrokerHandle::shutdown`], which flushes every partition first.
#[derive(Debug)]
pub struct BrokerHandle {
    local_addr: SocketAddr,
    trust_pem: String,
    trust_path: PathBuf,
    core: Arc<Core>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl BrokerHandle {
    /// The address the broker listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// PEM of the certificate a client should trust to reach this broker.
    pub fn cert_pem(&self) -> &str {
        &self.trust_pem
    }

    /// Path of that PEM file (pass it as the client's `ca_cert`).
    pub fn cert_path(&self) -> &Path {
        &self.trust_path
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.core.config.data_dir
    }

    /// The broker's topics (for inspection in tests and tools).
    pub fn topics(&self) -> &TopicManager {
        &self.core.topics
    }

    /// Runs a retention pass now, as the periodic one does (`log.retention_check_interval`),
    /// but as if the broker's clock read `now_ms` (ms since the Unix epoch): for tests that
    /// check what retention and the expiries of producers and producer names do without
    /// waiting for them. With a future `now_ms` it deletes and forgets what the pass at that
    /// time would: not for use on data that matters. Blocks on the disk.
    #[doc(hidden)]
    pub fn run_retention_at(&self, now_ms: i64) {
        self.core.apply_retention_at(now_ms);
    }

    /// Fault injection for tests: the next `n` produce requests are stored as usual but their
    /// streams are reset instead of answered, exactly as a lost answer looks to a client.
    pub fn drop_next_produce_answers(&self, n: u32) {
        self.core.drop_produce_answers.store(n, Ordering::Release);
    }

    /// Fault injection for tests: `group`'s commits wait until the returned guard is
    /// dropped, as behind a slow disk (heartbeats and joins go on). `None` if the group does
    /// not exist.
    pub async fn hold_group_commits(
        &self,
        group: &str,
    ) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        self.core.groups.hold_writes(group).await
    }

    /// Fault injection for tests: the whole budget of bytes being decompressed
    /// (`limits.max_decompressing_bytes`) is taken until the returned guard is dropped, as by
    /// other requests decompressing large batches: what needs room from it waits.
    pub async fn hold_decompression_budget(&self) -> tokio::sync::OwnedSemaphorePermit {
        let whole =
            crate::handler::decompressing_permits(self.core.config.limits.max_decompressing_bytes);
        Arc::clone(&self.core.decompressing)
            .acquire_many_owned(u32::try_from(whole).unwrap_or(u32::MAX))
            .await
            .expect("the budget is never closed")
    }

    /// Fault injection for tests: every password check's turn is taken until the returned
    /// guard is dropped, as by other hellos' argon2 checks: hellos with passwords queue.
    #[doc(hidden)]
    pub async fn hold_password_checks(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.core
            .security
            .authenticator
            .hold_password_checks()
            .await
    }

    /// Password checks started so far (for tests of what reaches them).
    #[doc(hidden)]
    pub fn password_checks_run(&self) -> u64 {
        self.core.security.authenticator.password_checks_run()
    }

    /// Bytes reserved now in the request budget, over all connections: frames being read or
    /// handled, fetch answers not yet let go of (`limits.max_request_memory_bytes` bounds it;
    /// see [`crate::memory`]).
    pub fn request_memory_in_use(&self) -> u64 {
        self.core.request_memory.in_use()
    }

    /// The configuration in force.
    pub fn config(&self) -> &BrokerConfig {
        &self.core.config
    }

    /// Stops accepting, closes connections, flushes and closes every partition.
    pub async fn shutdown(mut self) {
        self.stop_now();
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        let core = Arc::clone(&self.core);
        let closed = tokio::task::spawn_blocking(move || {
            for log in core.topics.all_logs() {
                if let Err(e) = log.close() {
                    tracing::error!(error = %e, "closing a partition failed");
                }
            }
        })
        .await;
        if closed.is_err() {
            tracing::error!("closing partitions panicked");
        }
        // Every partition closed: another broker may have the directory.
        self.core.dir_lock.lock().take();
        tracing::info!("broker stopped");
    }

    /// Resolves once nothing of this broker is left running: its tasks, and the requests and
    /// connections they served, have let go of its state (and with it of its data
    /// directory's lock). For a handle that is dropped rather than shut down (a test's crash,
    /// say), to know when its directory may go. Holds nothing of the broker itself; it looks
    /// every 10 ms.
    #[doc(hidden)]
    pub fn released(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let core = Arc::downgrade(&self.core);
        async move {
            while core.strong_count() > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }

    fn stop_now(&self) {
        self.core.shutting_down.store(true, Ordering::Relaxed);
        self.stop.send_replace(true);
    }
}

impl Drop for BrokerHandle {
    fn drop(&mut self) {
        if !self.tasks.is_empty() {
            self.stop_now();
            self.core.flush_all();
        }
    }
}
