//! [`MessageStream`]: start, stop, metrics, and the supervisor that runs sessions.

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::config::{StreamConfig, WindowOptions};
use super::group::{self, Member};
use super::metrics::StreamMetrics;
use super::processor::MessageProcessor;
use super::session::{self, Outcome};
use super::typed::{TypedAdapter, TypedProcessor};
use super::Settings;
use crate::client::RustMqClient;
use crate::error::{ClientError, Result};

/// A stream processor over a consumer group: see the [module documentation](super).
///
/// Cheap to clone; clones control the same stream. Dropping the last clone of a running
/// stream without [`stop`](Self::stop) aborts its work at once — nothing more is produced or
/// committed, and uncommitted inputs are processed again by the group's next instance — and
/// leaves the group so that its partitions move at once.
#[derive(Clone)]
pub struct MessageStream {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for MessageStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MessageStream")
            .field("config", &self.inner.config)
            .field("running", &self.is_running())
            .finish()
    }
}

/// `with_max_in_flight_bytes`'s default.
const DEFAULT_MAX_IN_FLIGHT_BYTES: usize = 64 << 20;

#[derive(Debug, Clone)]
struct Tuning {
    window_options: WindowOptions,
    session_timeout: Duration,
    commit_interval: Duration,
    max_in_flight_bytes: usize,
}

struct Inner {
    client: RustMqClient,
    config: StreamConfig,
    processor: Mutex<Option<Arc<dyn MessageProcessor>>>,
    tuning: Mutex<Tuning>,
    metrics: Arc<StreamMetrics>,
    member: Arc<Mutex<Member>>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// Set while `start` runs before the stream's task exists (the processor's `on_start`,
    /// the partition count): a `stop` then still reaches the start.
    starting: AtomicBool,
    stop: watch::Sender<bool>,
    /// `Some` once the stream has ended, with how.
    result: watch::Sender<Option<std::result::Result<(), Arc<ClientError>>>>,
}

/// Clears [`Inner::starting`] when `start` returns, however it does.
struct Starting<'a>(&'a AtomicBool);

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let Some(task) = self.task.get_mut().take() else {
            return;
        };
        if task.is_finished() {
            return;
        }
        task.abort();
        let member = self.member.lock().clone();
        if member.member_id.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            runtime.spawn(async move {
                let _ = group::leave(&client, &member).await;
            });
        }
        tracing::debug!(group = %self.config.consumer_group, "stream dropped while running: aborted");
    }
}

impl MessageStream {
    /// Checks `config` and that the input topics exist. Nothing runs before
    /// [`start`](Self::start), which needs a processor ([`with_processor`](Self::with_processor)).
    pub async fn new(client: RustMqClient, config: StreamConfig) -> Result<Self> {
        config.validate()?;
        for topic in &config.input_topics {
            if group::partition_count(&client, topic).await?.is_none() {
                return Err(ClientError::TopicNotFound(topic.clone()));
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                config,
                processor: Mutex::new(None),
                tuning: Mutex::new(Tuning {
                    window_options: WindowOptions::default(),
                    session_timeout: Duration::from_secs(10),
                    commit_interval: Duration::from_millis(500),
                    max_in_flight_bytes: DEFAULT_MAX_IN_FLIGHT_BYTES,
                }),
                metrics: Arc::new(StreamMetrics::default()),
                member: Arc::new(Mutex::new(Member::default())),
                task: Mutex::new(None),
                starting: AtomicBool::new(false),
                stop: watch::channel(false).0,
                result: watch::channel(None).0,
            }),
        })
    }

    /// Sets the processor.
    pub fn with_processor(self, processor: impl MessageProcessor) -> Self {
        *self.inner.processor.lock() = Some(Arc::new(processor));
        self
    }

    /// Sets a typed processor: inputs decoded as `P::Input`, outputs encoded as `P::Output`
    /// (to `P::Output`'s topic unless the config names an `output_topic`).
    pub fn with_typed_processor<P: TypedProcessor>(self, processor: P) -> Self {
        self.with_processor(TypedAdapter::new(processor))
    }

    /// Allowed lateness and late-message policy of windowed mode (default: no lateness, late
    /// messages dropped and counted).
    pub fn with_window_options(self, options: WindowOptions) -> Self {
        self.inner.tuning.lock().window_options = options;
        self
    }

    /// The group session timeout (default 10 s; between 100 ms and 10 min, else `start`
    /// fails with `InvalidConfig`): how long the group waits for a silent instance before
    /// moving its partitions.
    pub fn with_session_timeout(self, timeout: Duration) -> Self {
        self.inner.tuning.lock().session_timeout = timeout;
        self
    }

    /// How often finished work is committed (default 500 ms; zero makes `start` fail with
    /// `InvalidConfig`); `stop` and rebalances commit too.
    pub fn with_commit_interval(self, interval: Duration) -> Self {
        self.inner.tuning.lock().commit_interval = interval;
        self
    }

    /// Most bytes of input messages (payload, key and headers) fetched and not yet finished
    /// (default 64 MiB), counted as [`StreamConfig::max_in_flight`] counts messages: with
    /// large messages this binds first. A message larger than this waits until nothing else
    /// is in flight, then goes alone. In batch mode an open batch that holds every message in
    /// flight closes before its `batch_size` as soon as more input waits for room, rather
    /// than at its `batch_timeout`: nothing more could join it. Not counted: the fetch answer
    /// each partition's fetch task holds while it waits for room (at most 1 MiB, or one
    /// larger batch), and the messages windows keep until they close. Above 4 GiB counts as
    /// 4 GiB; 0 fails [`start`](Self::start).
    pub fn with_max_in_flight_bytes(self, bytes: usize) -> Self {
        self.inner.tuning.lock().max_in_flight_bytes = bytes;
        self
    }

    /// The settings in force.
    pub fn config(&self) -> &StreamConfig {
        &self.inner.config
    }

    /// Calls the processor's `on_start`, joins the group, recovers (exactly-once: reads back
    /// the outputs written since the last commit) and starts processing; returns once
    /// processing runs. Fails if there is no processor, the stream was started before, the
    /// [window options](Self::with_window_options) are invalid, or joining or recovery fails
    /// (with that error, retryable or not: the stream has then ended, as after
    /// [`stop`](Self::stop)). Once processing runs, a failed session is retried by a new one
    /// unless its error cannot be fixed by retrying. If [`stop`](Self::stop) is called (from
    /// another task) before processing runs, the join or recovery is given up and `start`
    /// fails with [`ClientError::Closed`].
    pub async fn start(&self) -> Result<()> {
        let processor = self.inner.processor.lock().clone().ok_or_else(|| {
            ClientError::InvalidConfig("a stream needs a processor: call with_processor".into())
        })?;
        if self.inner.task.lock().is_some() {
            return Err(ClientError::InvalidConfig(
                "the stream was already started".into(),
            ));
        }
        let config = &self.inner.config;
        let tuning = self.inner.tuning.lock().clone();
        if tuning.max_in_flight_bytes == 0 {
            return Err(ClientError::InvalidConfig(
                "stream max_in_flight_bytes must be at least 1".into(),
            ));
        }
        tuning.window_options.validate()?;
        // As a consumer's: the broker keeps a member between 100 ms and 10 min whatever it
        // asks, and heartbeats come at a third of it (a longer one had the member removed
        // between two heartbeats, and a new session every ten minutes; zero, heartbeats and
        // commits back to back).
        if !(100..=600_000).contains(&tuning.session_timeout.as_millis()) {
            return Err(ClientError::InvalidConfig(
                "stream session timeout must be between 100 ms and 10 min".into(),
            ));
        }
        if tuning.commit_interval.is_zero() {
            return Err(ClientError::InvalidConfig(
                "stream commit interval must be greater than zero".into(),
            ));
        }
        // What a start that failed early left for `wait`.
        self.inner.result.send_replace(None);
        self.inner.starting.store(true, Ordering::SeqCst);
        let _starting = Starting(&self.inner.starting);
        let prepared = async {
            let default_partitions =
                group::partition_count(&self.inner.client, &config.input_topics[0])
                    .await?
                    .ok_or_else(|| ClientError::TopicNotFound(config.input_topics[0].clone()))?;
            processor.on_start().await?;
            if *self.inner.stop.borrow() {
                // Stopped while `on_start` ran: it is undone, and nothing else runs.
                if let Err(e) = processor.on_stop().await {
                    tracing::warn!(group = %config.consumer_group, error = %e, "on_stop failed");
                }
                return Err(ClientError::Closed);
            }
            Ok(default_partitions)
        };
        let default_partitions = match prepared.await {
            Ok(partitions) => partitions,
            Err(e) => {
                // Ended before it ran: `wait` (from another task too) returns how; a stop is
                // no failure.
                let stopped = matches!(e, ClientError::Closed) && *self.inner.stop.borrow();
                let ended = if stopped {
                    Ok(())
                } else {
                    Err(Arc::new(e.duplicate()))
                };
                self.inner.result.send_replace(Some(ended));
                return Err(e);
            }
        };
        let settings = Settings {
            client: self.inner.client.clone(),
            config: config.clone(),
            window_options: tuning.window_options,
            processor,
            metrics: Arc::clone(&self.inner.metrics),
            session_timeout: tuning.session_timeout,
            // Saturating: `Duration::MAX` is a valid processing timeout ("none").
            rebalance_timeout: tuning
                .session_timeout
                .max(config.processing_timeout)
                .saturating_add(Duration::from_secs(10)),
            commit_interval: tuning.commit_interval,
            max_in_flight_bytes: tuning.max_in_flight_bytes,
            default_partitions,
        };
        let (running_tx, mut running) = watch::channel(false);
        let supervisor = supervise(
            settings,
            Arc::clone(&self.inner.member),
            self.inner.stop.subscribe(),
            running_tx,
            self.inner.result.clone(),
        );
        {
            let mut task = self.inner.task.lock();
            if task.is_some() {
                return Err(ClientError::InvalidConfig(
                    "the stream was already started".into(),
                ));
            }
            *task = Some(tokio::spawn(supervisor));
        }
        let mut result = self.inner.result.subscribe();
        tokio::select! {
            _ = running.wait_for(|r| *r) => {}
            _ = result.wait_for(Option::is_some) => {}
        }
        if *running.borrow() {
            return Ok(());
        }
        // The stream ended before processing ran: the first session's error, or a stop.
        let ended = self.inner.result.borrow().clone();
        match ended {
            Some(Err(e)) => Err(e.duplicate()),
            _ => Err(ClientError::Closed),
        }
    }

    /// Stops gracefully: fetching stops, every message already fetched is processed and its
    /// outputs stored (a partial batch is processed as it is; open windows are not closed —
    /// their messages stay uncommitted and are read again by the next start), the work is
    /// committed, the group is left and the processor's `on_stop` runs. Returns the error
    /// that stopped the stream, if one did — a failure under
    /// [`ErrorStrategy::Stop`](super::ErrorStrategy::Stop) (also one while stopping: then
    /// nothing fetched after it is processed), or a write or the final commit that failed
    /// while stopping (the work not committed is processed again by the next start).
    /// Stopping a stream that never started does nothing.
    pub async fn stop(&self) -> Result<()> {
        if self.inner.task.lock().is_none() {
            if self.inner.starting.load(Ordering::SeqCst) {
                // `start` is under way: it fails with `Closed` instead of starting.
                self.inner.stop.send_replace(true);
            }
            return Ok(());
        }
        self.inner.stop.send_replace(true);
        self.wait().await
    }

    /// Waits until the stream has ended, by [`stop`](Self::stop) or by itself (a failure under
    /// [`ErrorStrategy::Stop`](super::ErrorStrategy::Stop), or an error retrying cannot fix),
    /// and returns how. A stream that is not running and not starting has nothing to wait
    /// for: this returns at once, with the error of a [`start`](Self::start) that failed
    /// (after its settings were checked), else `Ok`.
    pub async fn wait(&self) -> Result<()> {
        let mut result = self.inner.result.subscribe();
        // `start` sets `starting` before its work and spawns the task before clearing it.
        if self.inner.task.lock().is_none() && !self.inner.starting.load(Ordering::SeqCst) {
            return match &*result.borrow() {
                Some(Err(e)) => Err(e.duplicate()),
                _ => Ok(()),
            };
        }
        let ended = result
            .wait_for(Option::is_some)
            .await
            .map_err(|_| ClientError::Closed)?;
        match &*ended {
            Some(Err(e)) => Err(e.duplicate()),
            _ => Ok(()),
        }
    }

    /// Whether the stream was started and has not ended.
    pub fn is_running(&self) -> bool {
        self.inner.task.lock().is_some() && self.inner.result.borrow().is_none()
    }

    /// The stream's counters.
    pub async fn metrics(&self) -> Arc<StreamMetrics> {
        Arc::clone(&self.inner.metrics)
    }
}

/// Failures a new session cannot fix.
pub(crate) fn is_fatal(e: &ClientError) -> bool {
    use rustmq_protocol::ErrorCode as C;
    match e {
        ClientError::TopicNotFound(_)
        | ClientError::Authentication(_)
        | ClientError::Authorization(_)
        | ClientError::InvalidConfig(_)
        | ClientError::MessageTooLarge { .. } => true,
        ClientError::Broker { code, .. } => {
            matches!(
                code,
                C::InvalidProducerEpoch
                    | C::BatchTooLarge
                    | C::InvalidTopic
                    | C::UnknownPartition
                    | C::InvalidTimestamp
                    // A request the broker refuses whatever its state (a commit of more
                    // entries than it takes, say).
                    | C::InvalidRequest
                    // A code this build does not know: not retryable (`is_retryable`), and
                    // a new session would meet it again.
                    | C::Other(_)
            )
        }
        _ => false,
    }
}

async fn supervise(
    settings: Settings,
    member: Arc<Mutex<Member>>,
    mut stop: watch::Receiver<bool>,
    running: watch::Sender<bool>,
    result: watch::Sender<Option<std::result::Result<(), Arc<ClientError>>>>,
) {
    let group = settings.config.consumer_group.clone();
    let backoff = crate::consumer::timing::retry_backoff(&settings.client.config().retry_config);
    let mut failures = 0u32;
    let outcome: Result<()> = loop {
        let session = session::run(&settings, &member, stop.clone(), &running).await;
        let error = match session {
            Ok(Outcome::Stopped) => break Ok(()),
            Ok(Outcome::Rebalance) => {
                failures = 0;
                continue;
            }
            Ok(Outcome::Failed(e)) => break Err(e),
            Ok(Outcome::Aborted(e)) | Err(e) => e,
        };
        // The first session never ran: `start` is waiting, and fails with its error (the
        // stream is not retried behind the caller's back before it has started).
        if !*running.borrow() {
            break Err(error);
        }
        // An error that would have ended the stream is the answer to a stop that came while
        // the session ended with it; another one would only have started a new session, as
        // a stop during the pause before it does not.
        if is_fatal(&error) {
            break Err(error);
        }
        if *stop.borrow() {
            break Ok(());
        }
        let delay = backoff.delay(failures);
        failures += 1;
        tracing::warn!(%group, error = %error, ?delay, "stream session failed; starting a new one");
        // A member the group no longer knows joins as a new one; after a generation it
        // missed, it rejoins under its id (the group still counts it, and would wait for it).
        if error.error_code() == Some(rustmq_protocol::ErrorCode::UnknownMember) {
            member.lock().member_id.clear();
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => break Ok(()),
        }
    };
    let me = std::mem::take(&mut *member.lock());
    if !me.member_id.is_empty() {
        if let Err(e) = group::leave(&settings.client, &me).await {
            tracing::debug!(%group, error = %e, "leave failed");
        }
    }
    // A panic in the user's `on_stop` must not leave `stop` and `wait` waiting for ever.
    match AssertUnwindSafe(settings.processor.on_stop())
        .catch_unwind()
        .await
    {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(%group, error = %e, "on_stop failed"),
        Err(panic) => {
            let panic = crate::error::panic_message(&*panic);
            tracing::warn!(%group, %panic, "on_stop panicked");
        }
    }
    match &outcome {
        Ok(()) => tracing::info!(%group, "stream stopped"),
        Err(e) => tracing::error!(%group, error = %e, "stream stopped on error"),
    }
    result.send_replace(Some(outcome.map_err(Arc::new)));
}

#[cfg(test)]
mod tests {
    use rustmq_protocol::ErrorCode;

    use super::*;

    fn broker(code: ErrorCode) -> ClientError {
        ClientError::Broker {
            code,
            message: String::new(),
        }
    }

    /// A refusal a new session would meet again ends the stream; one that may pass does not.
    #[test]
    fn refusals_no_session_can_fix_are_fatal() {
        for code in [
            ErrorCode::InvalidTimestamp,
            ErrorCode::BatchTooLarge,
            ErrorCode::InvalidProducerEpoch,
            ErrorCode::InvalidRequest,
            ErrorCode::from_code(999),
        ] {
            assert!(is_fatal(&broker(code)), "{code}");
        }
        for code in [
            ErrorCode::Throttled,
            ErrorCode::ShuttingDown,
            ErrorCode::RebalanceInProgress,
            ErrorCode::OutOfOrderSequence,
            // The producer's name was forgotten after a long stall: a new session initialises
            // it again.
            ErrorCode::UnknownProducer,
        ] {
            assert!(!is_fatal(&broker(code)), "{code}");
        }
    }
}
