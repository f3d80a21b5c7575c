//! The consumer: group membership, concurrent long-poll fetches, bounded buffers, per-message
//! acknowledgements, offset commits, seeking, lag, pause/resume, retries and dead letters.
//!
//! ```text
//!   JoinGroup ──► assignment (generation g) ──► start position per partition
//!        ▲            (committed offset, else `start_position`)
//!        │                     │
//!        │        one fetch task per assigned partition (long poll, `fetch_timeout`),
//!        │        skipped while paused or while its buffer is more than half full
//!        │                     ▼
//!        │        bounded buffer per partition (`max_buffered_messages_per_partition`
//!        │        or `fetch_size` if larger, and `max_buffered_bytes_per_partition`)
//!        │                     ▼
//!        │        receive() / stream(): due retries first, then partitions round-robin
//!        │                     ▼
//!        │        ConsumerMessage::ack() ─────────────┐
//!        │        ConsumerMessage::nack() ─► retry after retry_backoff·2^(n-1)
//!        │                     │            └─► retries exhausted: dead-letter topic ─┤
//!        │                     ▼                                                      ▼
//!        │        offset tracker per partition: the contiguous resolved prefix is committable
//!        │                     ▼
//!        │        commit(): auto-commit timer, commit(), rebalance and close —
//!        │        CommitOffsets(member id, generation) — fenced by the broker
//!        │
//!   group task: heartbeat every `heartbeat_interval`; on `rebalance` (or a stale
//!   generation): commit, stop delivering, rejoin, drop revoked partitions, start new ones
//!
//!   failures of the tasks: retried with a jittered backoff; those retrying cannot mend are
//!   told once to receive(); a closed client ends the consumer (see `failures`)
//! ```
//!
//! Delivery is at least once: what was acknowledged **and committed** is never delivered
//! again to the group; a message delivered but not committed when its partition moves (or the
//! consumer dies) is delivered again to the partition's next owner.
//!
//! ```no_run
//! use rustmq::{ClientConfig, RustMqClient};
//!
//! # async fn demo() -> rustmq::Result<()> {
//! let client = RustMqClient::new(ClientConfig::default()).await?;
//! let consumer = client.create_consumer("my-topic", "my-group").await?;
//! while let Some(consumer_message) = consumer.receive().await? {
//!     let message = &consumer_message.message;
//!     println!("received: {}", message.payload_as_string()?);
//!     consumer_message.ack().await?;
//! }
//! # Ok(()) }
//! ```

mod buffer;
mod builder;
mod config;
mod delivery;
mod failures;
pub(crate) mod fetcher;
mod group;
mod metrics;
mod offsets;
mod receive;
pub(crate) mod retry;
mod state;
mod stream;
pub(crate) mod timing;
mod tracker;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;

pub use self::builder::ConsumerBuilder;
pub use self::config::{ConsumerConfig, StartPosition};
pub use self::delivery::ConsumerMessage;
pub use self::group::PartitionAssignment;
pub use self::metrics::ConsumerMetrics;
pub use self::offsets::timestamp_ms;
pub use self::receive::Receive;
pub use self::retry::{
    DLQ_ATTEMPTS, DLQ_CONTENT_DROPPED, DLQ_ERROR, DLQ_ORIGINAL_OFFSET, DLQ_ORIGINAL_PARTITION,
    DLQ_ORIGINAL_TOPIC, MAX_DLQ_ERROR_BYTES,
};
pub use self::stream::ConsumerStream;

use self::group::Membership;
use self::state::State;
use crate::client::RustMqClient;
use crate::error::{ClientError, Result};
use crate::producer::Producer;

/// Everything the consumer's handles, messages and tasks share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) topic: String,
    pub(crate) group: String,
    /// Sent as the member's client id (the broker derives the member id from it).
    pub(crate) consumer_id: String,
    pub(crate) config: ConsumerConfig,
    pub(crate) client: RustMqClient,
    pub(crate) state: Mutex<State>,
    /// Wakes waiting `receive` calls and streams: records buffered, a retry scheduled, a
    /// resume, close. Always notified (`notify_waiters`) after the change is made to `state`,
    /// under its lock: a receive registers only when it finds nothing, then looks again, so a
    /// notification sent before the change would be missed.
    pub(crate) data: Arc<Notify>,
    pub(crate) membership: Mutex<Membership>,
    /// Asks the group task to check its standing now (a commit was refused as stale).
    pub(crate) rejoin: Notify,
    /// Serializes commits so that an older snapshot never lands after a newer one.
    pub(crate) commit_lock: tokio::sync::Mutex<()>,
    pub(crate) metrics: Arc<ConsumerMetrics>,
    /// The same counts, through the `metrics` facade.
    pub(crate) instruments: crate::telemetry::ConsumerInstruments,
    pub(crate) dead_letters: OnceCell<Producer>,
    pub(crate) group_task: Mutex<Option<JoinHandle<()>>>,
    pub(crate) closed: AtomicBool,
    /// Awaited by every commit after it has taken the positions to commit and before it sends
    /// them: the typed layer's runner flushes what its handlers sent, so that an input is not
    /// committed while an output its handling sent (fire and forget) may still fail.
    pub(crate) before_commit: std::sync::OnceLock<BeforeCommit>,
}

/// What a commit awaits before it sends its positions (see `Inner::before_commit`).
pub(crate) struct BeforeCommit(
    pub(crate) Box<dyn Fn() -> futures::future::BoxFuture<'static, ()> + Send + Sync>,
);

impl std::fmt::Debug for BeforeCommit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BeforeCommit")
    }
}

impl Inner {
    /// Stops every task at once, without committing or leaving (a crash, as far as the group
    /// can tell).
    fn abort_tasks(&self) {
        if let Some(task) = self.group_task.lock().take() {
            task.abort();
        }
        self.state.lock().closed = true;
        self.revoke_all();
        self.data.notify_waiters();
    }

    /// Gives up every partition, and zeroes and forgets their lag (the gauges would go on
    /// reporting the last lag of partitions this consumer no longer has).
    pub(crate) fn revoke_all(&self) {
        let mut state = self.state.lock();
        state.revoke_all();
        // Under the state's lock: a fetch sets its lag under it too (see `fetcher`).
        self.metrics.retain_lag(&[]);
        self.instruments.retain_lag(&[]);
    }

    pub(crate) fn not_assigned(&self, partition: u32) -> ClientError {
        ClientError::PartitionNotAssigned {
            topic: self.topic.clone(),
            partition,
        }
    }
}

/// Stops the tasks when the last [`Consumer`] handle is dropped.
#[derive(Debug)]
struct DropGuard(Arc<Inner>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        if !self.0.closed.load(Ordering::Acquire) {
            tracing::debug!(topic = %self.0.topic, group = %self.0.group, "consumer dropped without close(): the group reassigns its partitions after session_timeout");
        }
        self.0.abort_tasks();
    }
}

/// A member of a consumer group reading one topic.
///
/// Created with [`RustMqClient::create_consumer`] or [`ConsumerBuilder`]. Cheap to clone:
/// clones share the membership, buffers and metrics. Call [`close`](Self::close) to commit
/// and leave the group; dropping the last handle without closing stops at once, and the
/// group moves the partitions only after `session_timeout` (as if the process had died).
#[derive(Debug, Clone)]
pub struct Consumer {
    inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

impl Consumer {
    fn from_inner(inner: Arc<Inner>) -> Self {
        Self {
            _guard: Arc::new(DropGuard(Arc::clone(&inner))),
            inner,
        }
    }

    /// Has every commit await `hook` once it has taken its positions (set once; a second
    /// hook is ignored).
    pub(crate) fn before_commit(&self, hook: BeforeCommit) {
        let _ = self.inner.before_commit.set(hook);
    }

    /// The next message, waiting as long as it takes; `Ok(None)` once the consumer is closed,
    /// or once the [`RustMqClient`] it was built from is closed (it then stops as if closed,
    /// without committing or leaving).
    ///
    /// Due redeliveries of nacked messages come first, then the partitions' buffers in turn
    /// (paused partitions are skipped). Failures of the background work (fetches, heartbeats,
    /// rejoining the group) that retrying cannot mend by itself, such as a refused
    /// authorization, are returned once per streak of failures, while the work keeps being
    /// retried (backing off as the client's `retry_config` says): a later call continues, and
    /// the consumer recovers by itself if the cause is lifted. An application that would rather stop closes it.
    #[inline]
    pub fn receive(&self) -> Receive<'_> {
        Receive::new(&self.inner)
    }

    /// The messages as a [`futures::Stream`]; it ends when the consumer is closed. Errors are
    /// items: the stream goes on after one.
    ///
    /// ```no_run
    /// # async fn demo(consumer: rustmq::consumer::Consumer) -> rustmq::Result<()> {
    /// use futures::StreamExt;
    /// let mut stream = consumer.stream();
    /// while let Some(result) = stream.next().await {
    ///     let consumer_message = result?;
    ///     consumer_message.ack().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream(&self) -> ConsumerStream {
        ConsumerStream::new(self.clone())
    }

    /// The topic this consumer reads.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The consumer group.
    pub fn group(&self) -> &str {
        &self.inner.group
    }

    /// The settings in force.
    pub fn config(&self) -> &ConsumerConfig {
        &self.inner.config
    }

    /// This consumer's member id in its group: `<consumer id>-<16 hex digits>`, chosen before
    /// its first join and kept across rejoins until it leaves the group (empty once it has).
    pub fn member_id(&self) -> String {
        self.inner.membership.lock().member_id.clone()
    }

    /// Partitions currently assigned to this consumer, in order.
    pub async fn assigned_partitions(&self) -> Vec<u32> {
        self.inner.state.lock().owned()
    }

    /// The current assignment (generation-based id, time, partitions); `None` while the
    /// consumer holds none (before joining, or while it rejoins as a new member).
    pub async fn partition_assignment(&self) -> Option<PartitionAssignment> {
        self.inner.membership.lock().assignment.clone()
    }

    /// Stops fetching and delivering `partitions` (messages already buffered wait too) until
    /// they are resumed. Fails with [`ClientError::PartitionNotAssigned`] (pausing nothing)
    /// if one is not assigned. A pause lasts until resumed or until the partition is revoked,
    /// as Kafka's does: a rebalance that moves the partition, or one that starts every
    /// partition over (a member the broker dropped or no longer knows, as after a broker
    /// restart), ends its pause even if the partition comes back to this consumer. An
    /// application that must keep a partition paused across rebalances watches
    /// [`partition_assignment`](Self::partition_assignment) (its id changes with every
    /// rebalance) and pauses again.
    pub async fn pause_partitions(&self, partitions: Vec<u32>) -> Result<()> {
        self.inner
            .state
            .lock()
            .pause(&partitions)
            .map_err(|p| self.inner.not_assigned(p))?;
        tracing::debug!(topic = %self.inner.topic, ?partitions, "paused");
        Ok(())
    }

    /// Resumes fetching and delivering `partitions`. Fails with
    /// [`ClientError::PartitionNotAssigned`] (resuming nothing) if one is not assigned.
    pub async fn resume_partitions(&self, partitions: Vec<u32>) -> Result<()> {
        self.inner
            .state
            .lock()
            .resume(&partitions)
            .map_err(|p| self.inner.not_assigned(p))?;
        self.inner.data.notify_waiters();
        tracing::debug!(topic = %self.inner.topic, ?partitions, "resumed");
        Ok(())
    }

    /// Partitions currently paused, in order.
    pub async fn paused_partitions(&self) -> Vec<u32> {
        self.inner.state.lock().paused.iter().copied().collect()
    }

    /// The consumer's counters.
    pub async fn metrics(&self) -> Arc<ConsumerMetrics> {
        Arc::clone(&self.inner.metrics)
    }

    /// Messages fetched but not yet received, over all partitions. Bounded by
    /// `max_buffered_messages_per_partition` (or `fetch_size` if larger) times the number of
    /// assigned partitions.
    pub fn buffered_messages(&self) -> usize {
        self.inner.state.lock().buffered()
    }

    /// Bytes the buffered messages hold in memory (the records sections of their batches,
    /// decompressed, and 32 bytes per record for where its fields lie), over all partitions. About `max_buffered_bytes_per_partition` times the
    /// number of assigned partitions at most (see that setting for the exact bound).
    pub fn buffered_bytes(&self) -> usize {
        self.inner.state.lock().buffered_bytes()
    }

    /// Commits, for every assigned partition, the end of its contiguous acknowledged prefix.
    ///
    /// Fenced by generation: after a rebalance the broker refuses a commit from the previous
    /// generation (`ClientError::Broker` with `ErrorCode::IllegalGeneration`); the consumer
    /// then rejoins, and what it still owns is committed by the next commit.
    pub async fn commit(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        group::commit(&self.inner).await
    }

    /// From now on, messages dropped without ack or nack are abandoned rather than nacked: not
    /// committed, so delivered again after a restart, but not counted as a failed attempt
    /// either (which could dead-letter a message never handled). For a typed service's
    /// shutdown, which drops the messages it did not get to.
    pub(crate) fn abandon_unsettled(&self) {
        self.inner.state.lock().abandoning = true;
    }

    /// Commits what is acknowledged, leaves the group (its partitions move to the other
    /// members at once) and stops. Later `receive` calls return `Ok(None)`; closing twice is
    /// harmless. The client stays open.
    ///
    /// Close consumers before their client: after the client is closed, the consumer has
    /// stopped already, and this fails with [`ClientError::Closed`] since it can neither
    /// commit nor leave the group any more.
    pub async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        if let Some(task) = self.inner.group_task.lock().take() {
            task.abort();
        }
        {
            let mut state = self.inner.state.lock();
            state.closed = true;
            state.wake_fetchers();
        }
        self.inner.data.notify_waiters();
        let committed = group::commit(&self.inner).await;
        let left = group::leave(&self.inner).await;
        self.inner.revoke_all();
        // Every step is taken whatever the others gave; the first failure is the answer.
        let dead_letters = match self.inner.dead_letters.get() {
            Some(producer) => producer.close().await,
            None => Ok(()),
        };
        tracing::info!(topic = %self.inner.topic, group = %self.inner.group, "consumer closed");
        committed.and(left).and(dead_letters)
    }
}
