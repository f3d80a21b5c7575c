//! The producer: batched, partitioned, compressed, optionally idempotent.
//!
//! ```text
//!  send / send_async / send_batch
//!        │  size check, default headers, buffer permits (backpressure)
//!        ▼
//!   Partitioner ──► partition p
//!        ▼
//!   Accumulator[p] (IO-free: count, bytes, age) ──► ReadyBatch
//!        ▼
//!   sender task[p]: encode (producer id + sequence, compression over min_size),
//!   one request in flight, retries with backoff on retryable errors (order kept);
//!   with AckLevel::None: the next batch once this one is written, its answer read by a task
//!   of its own (no order kept), at most five batches unanswered
//!   (or the awaited `send` itself, when it finds its partition idle: see `DirectDelivery`;
//!   the sender task drives that one too while it waits)
//!        ▼
//!   broker answer ──► every waiter of the batch resolved with (partition, offset)
//! ```
//!
//! Memory is bounded by `buffer_memory`: a message holds its bytes of the buffer from the moment
//! it is accepted until its batch is answered.

mod accumulator;
mod config;
mod metrics;
mod partitioner;
mod send;
mod sender;

pub(crate) use sender::check_offsets;

use std::collections::VecDeque;
use std::future::{ready, Ready};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use futures::future::{BoxFuture, Either};
use parking_lot::{Mutex, RwLock};
use rustmq_protocol::batch::BATCH_HEADER_LEN;
use tokio::sync::{oneshot, watch, Notify, Semaphore, TryAcquireError};
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub use self::config::{AckLevel, ProducerConfig};
use self::metrics::ProducerInstruments;
pub use self::metrics::ProducerMetrics;
pub use self::partitioner::{
    murmur2, partition_for_key, DefaultPartitioner, Partitioner, RoundRobinPartitioner,
};
pub use self::send::SendAsync;

use self::accumulator::{Accumulator, BatchLimits, ReadyBatch, TryPush};
use crate::client::RustMqClient;
use crate::config::CompressionConfig;
use crate::error::{ClientError, Result};
use crate::message::{validate_topic, Message};

/// Where a message was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendResult {
    /// Partition it went to.
    pub partition: u32,
    /// Its offset in that partition; [`SendResult::UNKNOWN_OFFSET`] with
    /// [`AckLevel::None`], whose sends resolve before the broker answers.
    pub offset: u64,
    /// Its timestamp (ms since the Unix epoch).
    pub timestamp: u64,
}

impl SendResult {
    /// The offset of a send that did not wait for the broker's answer ([`AckLevel::None`]):
    /// no record has it (a produce answer that would give a record this offset fails its
    /// batch with [`ClientError::UnexpectedResponse`]).
    pub const UNKNOWN_OFFSET: u64 = u64::MAX;
}

/// A callback for [`Producer::send_async`]: exactly one of the two arguments is `Some`.
pub type SendCallback = fn(Option<SendResult>, Option<ClientError>);

/// Who is told how a message fared.
pub(crate) enum Waiter {
    Future(oneshot::Sender<Result<SendResult>>),
    Callback(Box<dyn FnOnce(Result<SendResult>) + Send>),
    Detached,
}

impl std::fmt::Debug for Waiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Waiter::Future(_) => "Waiter::Future",
            Waiter::Callback(_) => "Waiter::Callback",
            Waiter::Detached => "Waiter::Detached",
        })
    }
}

impl Waiter {
    pub(crate) fn complete(self, result: Result<SendResult>) {
        match self {
            Waiter::Future(tx) => {
                let _ = tx.send(result);
            }
            // A panicking callback must not take the partition's sender task with it: the
            // rest of the batch would go unresolved, its buffer room never given back, and
            // `flush` would wait for it for ever.
            Waiter::Callback(f) => {
                let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(result)));
                if let Err(panic) = called {
                    let panic = crate::error::panic_message(&*panic);
                    tracing::error!(
                        panic,
                        "a `send_async` callback panicked; the producer goes on"
                    );
                }
            }
            Waiter::Detached => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "fire-and-forget message failed");
                }
            }
        }
    }
}

/// Per-partition state shared by the senders of messages and the partition's sender task.
#[derive(Debug)]
pub(crate) struct Slot {
    pub(crate) partition: u32,
    pub(crate) acc: Mutex<Accumulator>,
    /// Batches closed by senders (full or out of room), in order. Locked after `acc`.
    pub(crate) ready: Mutex<VecDeque<ReadyBatch>>,
    pub(crate) wake: Notify,
    /// Messages accepted into this partition.
    pub(crate) accepted: AtomicU64,
    /// Messages of this partition resolved (acknowledged or failed), in order.
    pub(crate) completed: watch::Sender<u64>,
    /// Idempotent producer state; used only by the holder of the sending role.
    pub(crate) sequence: Mutex<Option<sender::Sequence>>,
    /// The batch an awaited `send` is sending, if it holds the sending role.
    pub(crate) direct: Mutex<Option<DirectDelivery>>,
    /// With [`AckLevel::None`]: signalled (dropped) once the last batch written has been
    /// counted in `completed`, which the next batch waits for, so that `completed` counts
    /// batches in order whatever order their answers arrive in. Used only by the holder of the
    /// sending role.
    pub(crate) last_unanswered: Mutex<Option<oneshot::Receiver<()>>>,
    /// With [`AckLevel::None`]: a permit per batch written and not yet counted in `completed`,
    /// at most [`MAX_UNANSWERED_BATCHES`](config::MAX_UNANSWERED_BATCHES).
    pub(crate) unanswered_room: Arc<Semaphore>,
}

impl Slot {
    /// Gives up the sending role taken with the batch just delivered, and wakes the sender task
    /// if batches are waiting (or the producer closes, so that it can end).
    pub(crate) fn finish_sending(&self, inner: &Inner) {
        let pending = {
            let mut acc = self.acc.lock();
            acc.set_in_flight(false);
            acc.opened_at().is_some() || !self.ready.lock().is_empty()
        };
        if pending || inner.closing.load(Ordering::Acquire) {
            self.wake.notify_one();
        }
    }
}

/// A batch sent by an awaited `send` that found its partition idle (see [`Producer::send`]).
/// Shared: the `send` drives it, and so does the partition's sender task while it waits for
/// the sending role, so it progresses whether or not that `send` is still polled (dropped by
/// a timeout, or parked in a `select!`), and neither `flush`/`close` nor the partition's later
/// batches ever wait on a future nobody polls.
pub(crate) type DirectDelivery = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

fn direct_delivery(inner: Arc<Inner>, slot: Arc<Slot>, batch: ReadyBatch) -> DirectDelivery {
    /// Gives the sending role back however the delivery ends (completed, or dropped unfinished
    /// with its runtime).
    struct Role(Arc<Inner>, Arc<Slot>);
    impl Drop for Role {
        fn drop(&mut self) {
            *self.1.direct.lock() = None;
            self.1.finish_sending(&self.0);
        }
    }
    let role = Role(inner, slot);
    futures::FutureExt::shared(Box::pin(async move {
        sender::deliver(&role.0, &role.1, batch).await;
        drop(role);
    }) as futures::future::BoxFuture<'static, ()>)
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) topic: String,
    /// `config.producer_id`, or `"<client id>/<topic>"`: the `producer` field of every log line.
    pub(crate) name: String,
    pub(crate) config: ProducerConfig,
    pub(crate) client: RustMqClient,
    partitioner: Arc<dyn Partitioner>,
    slots: RwLock<Vec<Arc<Slot>>>,
    partition_count: AtomicU32,
    partitions_known: AtomicBool,
    /// Taken by a refresh of the partition count (one at a time; those that waited for one
    /// asked after them take its answer), with when the last one that got an answer started.
    refreshed: tokio::sync::Mutex<Option<Instant>>,
    limits: BatchLimits,
    /// The broker's `max_batch_bytes` (`usize::MAX` if not known): without compression, a
    /// message whose record cannot fit a batch of it is refused before it is sent.
    broker_max_batch: usize,
    pub(crate) buffer: Semaphore,
    pub(crate) metrics: Arc<ProducerMetrics>,
    pub(crate) instruments: ProducerInstruments,
    closed: AtomicBool,
    pub(crate) closing: AtomicBool,
    /// Sends waiting for buffer room now (with a linger): while there are any, a partition's
    /// open batch goes as soon as the partition has nothing on the way, not at the end of its
    /// linger (room comes back only as batches are answered, so a batch lingering in a full
    /// buffer would keep them waiting for its whole linger).
    room_wanted: AtomicUsize,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl Inner {
    /// Whether a send waits for buffer room.
    pub(crate) fn room_wanted(&self) -> bool {
        self.room_wanted.load(Ordering::Acquire) > 0
    }

    /// Buffer room is wanted: the open batch of every partition with nothing on the way goes
    /// now rather than at the end of its linger. A partition with a request on the way keeps
    /// filling its batch: it could not go sooner, only smaller.
    fn release_open_batches(&self) {
        for slot in self.slots.read().iter() {
            {
                let mut acc = slot.acc.lock();
                let mut ready = slot.ready.lock();
                if acc.in_flight() || !ready.is_empty() {
                    continue;
                }
                match acc.take() {
                    Some(b) => ready.push_back(b),
                    None => continue,
                }
            }
            slot.wake.notify_one();
        }
    }

    /// Wakes every partition's sender task, to look at its open batch again.
    fn wake_senders(&self) {
        for slot in self.slots.read().iter() {
            slot.wake.notify_one();
        }
    }
}

/// A send waiting for buffer room, counted in `Inner::room_wanted` while it waits: the
/// partitions' sender tasks send their open batches as soon as they have nothing on the way
/// (see `sender::next_batch`).
struct WantsRoom<'a>(&'a Inner);

impl<'a> WantsRoom<'a> {
    /// `None` without a linger: a partition's open batch then goes as soon as it has nothing
    /// on the way anyway, and the sends that wait (every one, while a fast producer keeps
    /// its buffer full) are spared the count and the wake-ups.
    fn new(inner: &'a Inner) -> Option<Self> {
        if inner.config.batch_timeout.is_zero() {
            return None;
        }
        if inner.room_wanted.fetch_add(1, Ordering::AcqRel) == 0 {
            inner.wake_senders();
        }
        Some(WantsRoom(inner))
    }
}

impl Drop for WantsRoom<'_> {
    fn drop(&mut self) {
        self.0.room_wanted.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Closes the producer's tasks when the last handle is dropped (after delivering what they hold).
#[derive(Debug)]
struct DropGuard(Arc<Inner>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.closing.store(true, Ordering::Release);
        for slot in self.0.slots.read().iter() {
            slot.wake.notify_one();
        }
    }
}

/// Sends messages to one topic. Cheap to clone; clones share batches and metrics.
#[derive(Debug, Clone)]
pub struct Producer {
    inner: Arc<Inner>,
    _guard: Arc<DropGuard>,
}

/// Builds a [`Producer`].
#[derive(Debug, Default)]
pub struct ProducerBuilder {
    topic: Option<String>,
    config: Option<ProducerConfig>,
    client: Option<RustMqClient>,
    partitioner: Option<Arc<dyn Partitioner>>,
}

impl ProducerBuilder {
    /// A builder with nothing set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The topic (required).
    pub fn topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// The settings (default: [`ProducerConfig::default`] with the client's compression).
    pub fn config(mut self, config: ProducerConfig) -> Self {
        self.config = Some(config);
        self
    }

    /// The client to send through (required).
    pub fn client(mut self, client: RustMqClient) -> Self {
        self.client = Some(client);
        self
    }

    /// A custom partitioner (default: [`DefaultPartitioner`]).
    pub fn partitioner(mut self, partitioner: impl Partitioner + 'static) -> Self {
        self.partitioner = Some(Arc::new(partitioner));
        self
    }

    /// Looks up the topic's partitions and starts the producer.
    pub async fn build(self) -> Result<Producer> {
        let topic = self
            .topic
            .ok_or_else(|| ClientError::InvalidConfig("a producer needs a topic".into()))?;
        validate_topic(&topic)?;
        let client = self
            .client
            .ok_or_else(|| ClientError::InvalidConfig("a producer needs a client".into()))?;
        let mut config = self.config.unwrap_or_default();
        // The client's compression is the default of its producers: a config that leaves its
        // own at the default takes the client's.
        if config.compression == CompressionConfig::default() {
            config.compression = client.config().compression.clone();
        }
        config.validate()?;
        let broker_max = client
            .broker_limits()
            .map_or(usize::MAX, |l| l.max_batch_bytes as usize);
        let limits = BatchLimits {
            max_records: config.batch_size,
            // Leave room for the batch header and compression framing under the broker's limit.
            max_bytes: config
                .batch_max_bytes
                .min(broker_max.saturating_sub(1024))
                .max(1024),
        };
        let partitioner = self
            .partitioner
            .unwrap_or_else(|| Arc::new(DefaultPartitioner::new(config.batch_size)));
        let known = sender::partition_count_to_produce(&client, &topic).await?;
        let name = config
            .producer_id
            .clone()
            .unwrap_or_else(|| format!("{}/{topic}", client.client_id()));
        let inner = Arc::new(Inner {
            instruments: ProducerInstruments::new(&topic),
            name,
            topic,
            buffer: Semaphore::new(config.buffer_memory),
            config,
            client,
            partitioner,
            slots: RwLock::new(Vec::new()),
            partition_count: AtomicU32::new(known.unwrap_or(1)),
            partitions_known: AtomicBool::new(known.is_some()),
            refreshed: tokio::sync::Mutex::new(None),
            limits,
            broker_max_batch: broker_max,
            metrics: Arc::new(ProducerMetrics::default()),
            closed: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            room_wanted: AtomicUsize::new(0),
            tasks: Mutex::new(Vec::new()),
        });
        inner.ensure_slots(known.unwrap_or(1));
        tracing::debug!(topic = %inner.topic, producer = %inner.name, partitions = known.unwrap_or(1), "producer started");
        Ok(Producer {
            _guard: Arc::new(DropGuard(Arc::clone(&inner))),
            inner,
        })
    }
}

/// The least time between two refreshes of a producer's partition count after failed
/// batches: a burst of them asks the broker once.
const REFRESH_SPACING: std::time::Duration = std::time::Duration::from_millis(100);

impl Inner {
    /// Makes sure a slot and sender task exist for every partition below `n`.
    pub(crate) fn ensure_slots(self: &Arc<Self>, n: u32) {
        let mut slots = self.slots.write();
        while (slots.len() as u32) < n {
            let slot = Arc::new(Slot {
                partition: slots.len() as u32,
                acc: Mutex::new(Accumulator::new(self.limits)),
                ready: Mutex::new(VecDeque::new()),
                wake: Notify::new(),
                accepted: AtomicU64::new(0),
                completed: watch::channel(0).0,
                sequence: Mutex::new(None),
                direct: Mutex::new(None),
                last_unanswered: Mutex::new(None),
                unanswered_room: Arc::new(Semaphore::new(config::MAX_UNANSWERED_BATCHES)),
            });
            let task = tokio::spawn(sender::run(Arc::clone(self), Arc::clone(&slot)));
            self.tasks.lock().push(task);
            slots.push(slot);
        }
        self.partition_count.fetch_max(n, Ordering::AcqRel);
    }

    /// Called by a sender after a successful produce: learns the real partition count of an
    /// auto-created topic.
    pub(crate) async fn learn_partitions(self: &Arc<Self>) {
        if self.partitions_known.swap(true, Ordering::AcqRel) {
            return;
        }
        match sender::partition_count(&self.client, &self.topic).await {
            Ok(Some(n)) => self.ensure_slots(n),
            _ => self.partitions_known.store(false, Ordering::Release),
        }
    }

    /// Asks the topic's partition count again, after a partition the producer did not know
    /// of was asked for, or the broker answered that a partition or the topic is unknown: a
    /// topic made again may have more partitions, or fewer. Keys are spread over the count it
    /// answers from then on (the producer's senders of partitions past it stay, idle).
    ///
    /// One at a time: a caller that waited for one that started after it asked takes that
    /// one's answer (a caller given up midway lets go of its turn, its lock guard dropped
    /// with it); one that failed counts for nobody. With `spaced`, not again within
    /// [`REFRESH_SPACING`] of the last either (failed batches: a burst asks once); a send to
    /// a partition the producer does not know asks each time.
    pub(crate) async fn refresh_partitions(self: &Arc<Self>, spaced: bool) {
        let asked = Instant::now();
        let mut last = self.refreshed.lock().await;
        let recent = |spacing| last.is_some_and(|started| started + spacing >= asked);
        if last.is_some_and(|started| started >= asked) || (spaced && recent(REFRESH_SPACING)) {
            return;
        }
        let started = Instant::now();
        if let Ok(Some(n)) = sender::partition_count(&self.client, &self.topic).await {
            let before = self.partition_count.load(Ordering::Acquire);
            self.ensure_slots(n);
            self.partition_count.store(n, Ordering::Release);
            if before != n {
                tracing::info!(topic = %self.topic, producer = %self.name, before, partitions = n, "the topic's partition count changed");
            }
            *last = Some(started);
        }
    }

    fn slot(&self, partition: u32) -> Result<Arc<Slot>> {
        self.slots
            .read()
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| {
                ClientError::InvalidMessage(format!(
                    "topic {} has no partition {partition} (it has {})",
                    self.topic,
                    self.partition_count.load(Ordering::Acquire)
                ))
            })
    }
}

impl Producer {
    /// The topic this producer sends to.
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    /// The settings in force.
    pub fn config(&self) -> &ProducerConfig {
        &self.inner.config
    }

    /// Sends a message and resolves once the broker acknowledged it (per `ack_level`).
    ///
    /// Once accepted, the message is sent whatever becomes of this future: dropping it (a
    /// timeout around it) gives up the answer, not the send. When the partition has nothing
    /// else open, queued or in flight, the request goes out from the calling task itself, which
    /// saves a hand-over to the partition's sender task on the way out and on the way back.
    ///
    /// Runs in a `send` span (target `rustmq::produce`, level debug) that records the
    /// partition and offset; with the `opentelemetry` feature, the message carries that span's
    /// trace context in `traceparent` (or, when OpenTelemetry does not track it, the context
    /// of the nearest span around it that it tracks).
    pub async fn send(&self, mut message: Message) -> Result<SendResult> {
        let span = tracing::debug_span!(
            target: "rustmq::produce",
            "send",
            topic = %self.inner.topic,
            producer = %self.inner.name,
            partition = tracing::field::Empty,
            offset = tracing::field::Empty,
        );
        let sent = async {
            cooperate().await;
            let (tx, mut rx) = oneshot::channel();
            if let Some((slot, batch)) =
                self.enqueue(&mut message, Waiter::Future(tx), true).await?
            {
                let mut delivery =
                    direct_delivery(Arc::clone(&self.inner), Arc::clone(&slot), batch);
                *slot.direct.lock() = Some(delivery.clone());
                // Write the request before anything else runs; then the sender task drives the
                // delivery too, and this send returns as soon as its answer is in.
                if futures::poll!(&mut delivery).is_pending() {
                    slot.wake.notify_one();
                    tokio::select! {
                        biased;
                        answer = &mut rx => return answer.map_err(|_| ClientError::Closed)?,
                        () = &mut delivery => {}
                    }
                }
            }
            rx.await.map_err(|_| ClientError::Closed)?
        };
        let result = tracing::Instrument::instrument(sent, span.clone()).await;
        if let Ok(r) = &result {
            span.record("partition", r.partition)
                .record("offset", r.offset);
        }
        result
    }

    /// Sends without waiting for the acknowledgement; the optional callback is told the outcome.
    /// Resolves once the message is accepted (which may wait for buffer room).
    ///
    /// For a callback that captures state, use [`Producer::send_async_with`].
    #[inline]
    pub fn send_async(&self, message: Message, callback: Option<SendCallback>) -> SendAsync<'_> {
        let waiter = match callback {
            Some(cb) => Waiter::Callback(Box::new(move |r: Result<SendResult>| match r {
                Ok(ok) => cb(Some(ok), None),
                Err(e) => cb(None, Some(e)),
            })),
            None => Waiter::Detached,
        };
        SendAsync::new(self, message, waiter)
    }

    /// Sends without waiting; `callback` gets the outcome.
    #[inline]
    pub fn send_async_with(
        &self,
        message: Message,
        callback: impl FnOnce(Result<SendResult>) + Send + 'static,
    ) -> SendAsync<'_> {
        SendAsync::new(self, message, Waiter::Callback(Box::new(callback)))
    }

    /// Sends every message and waits for all of them; the first failure (in the order of
    /// `messages`) is returned, after every message was attempted: a message refused at once
    /// (too large, say) does not keep the others from being sent.
    pub async fn send_batch(&self, messages: Vec<Message>) -> Result<Vec<SendResult>> {
        let mut pending = Vec::with_capacity(messages.len());
        for mut message in messages {
            cooperate().await;
            let (tx, rx) = oneshot::channel();
            let accepted = self.enqueue(&mut message, Waiter::Future(tx), false).await;
            pending.push(accepted.map(|_| rx));
        }
        let mut results = Vec::with_capacity(pending.len());
        let mut first_error = None;
        for accepted in pending {
            let outcome = match accepted {
                Ok(rx) => rx.await.map_err(|_| ClientError::Closed).and_then(|r| r),
                Err(e) => Err(e),
            };
            match outcome {
                Ok(r) => results.push(r),
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(results),
        }
    }

    /// Accepts `message` into its partition's open batch. With `direct`, if the partition is
    /// idle (nothing open, queued or in flight), the message's batch is returned instead, with
    /// the partition's sending role: the caller sends it itself.
    ///
    /// The work is done in this call, not in the returned future, unless the buffer is full
    /// and the producer waits for room: the message is then taken (`Message::take`) into a
    /// boxed future. Otherwise it is lent, not moved: a send's future keeps its message
    /// argument where it is (each move of the ~200-byte message is a copy), does not hold it
    /// twice, and is moved around lighter for every message sent. Every caller spends the
    /// task's coop budget first ([`poll_budget`]): the budget is spent in a poll, and before
    /// the message is accepted.
    fn enqueue(&self, message: &mut Message, waiter: Waiter, direct: bool) -> Enqueue<'_> {
        let inner = &self.inner;
        let permits = match self.admit(message) {
            Ok(permits) => permits,
            Err(e) => return Either::Left(ready(Err(e))),
        };
        if message.explicit_partition
            && message.partition >= inner.partition_count.load(Ordering::Acquire)
        {
            // A partition this producer does not know of (the topic grew, or was made after
            // the producer): the count is asked again first. Rare: the message moves.
            let mut message = message.take();
            return Either::Right(Box::pin(async move {
                inner.refresh_partitions(false).await;
                let count = inner.partition_count.load(Ordering::Acquire);
                if message.partition >= count {
                    return Err(ClientError::InvalidMessage(format!(
                        "topic {} has no partition {} (it has {count})",
                        inner.topic, message.partition
                    )));
                }
                self.enqueue(&mut message, waiter, direct).await
            }));
        }
        // Room in the buffer, taken at once when there is some (the semaphore is fair: waiting
        // senders are served first as permits come back).
        match inner.buffer.try_acquire_many(permits) {
            Ok(permit) => permit.forget(),
            Err(TryAcquireError::NoPermits) if inner.config.block_on_buffer_full => {
                // The rare path: the message moves into the wait.
                let mut message = message.take();
                return Either::Right(Box::pin(async move {
                    let wants = WantsRoom::new(inner);
                    inner
                        .buffer
                        .acquire_many(permits)
                        .await
                        .map_err(|_| ClientError::Closed)?
                        .forget();
                    drop(wants);
                    self.accept(&mut message, waiter, direct, permits)
                }));
            }
            Err(TryAcquireError::Closed) if inner.config.block_on_buffer_full => {
                return Either::Left(ready(Err(ClientError::Closed)))
            }
            Err(_) => {
                // The room comes back as batches are answered: send the open ones of idle
                // partitions now, for the caller's next try (without a linger they go anyway).
                if !inner.config.batch_timeout.is_zero() {
                    inner.release_open_batches();
                }
                return Either::Left(ready(Err(ClientError::BufferFull {
                    limit: inner.config.buffer_memory,
                })));
            }
        }
        Either::Left(ready(self.accept(message, waiter, direct, permits)))
    }

    /// Checks `message` for this producer and adds the default properties; returns the buffer
    /// permits it needs. (The message is lent, here and to `accept`, not moved: it is ~200
    /// bytes, and every move is a copy.)
    fn admit(&self, message: &mut Message) -> Result<u32> {
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(ClientError::Closed);
        }
        if message.topic != inner.topic {
            return Err(ClientError::InvalidMessage(format!(
                "message for topic {:?} given to the producer of {:?}",
                message.topic, inner.topic
            )));
        }
        for (k, v) in &inner.config.default_properties {
            message
                .headers
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        #[cfg(feature = "opentelemetry")]
        crate::telemetry::otel::inject(&mut message.headers);
        let size = message.size();
        if size > inner.config.max_message_size {
            return Err(ClientError::MessageTooLarge {
                size,
                max_size: inner.config.max_message_size,
            });
        }
        // A record the broker's largest batch cannot hold is refused before it is sent,
        // counted as `RecordBatchBuilder::record_size_bound` counts it: each varint at its
        // longest, so one within a few dozen bytes of the limit is refused too. Compressed,
        // the batch's size is not known before it is built.
        let record = size + 46 + 20 * message.headers.len();
        if record + BATCH_HEADER_LEN > inner.broker_max_batch
            && inner.config.compression.codec() == rustmq_protocol::Compression::None
        {
            return Err(ClientError::MessageTooLarge {
                size: record + BATCH_HEADER_LEN,
                max_size: inner.broker_max_batch,
            });
        }
        // `size <= max_message_size <= buffer_memory < 4 GiB` so this fits.
        Ok(size.max(1) as u32)
    }

    /// Puts an admitted message, whose buffer permits are taken, into its partition's batch.
    fn accept(
        &self,
        message: &mut Message,
        waiter: Waiter,
        direct: bool,
        permits: u32,
    ) -> Result<Option<(Arc<Slot>, ReadyBatch)>> {
        let inner = &self.inner;
        let partition = if message.explicit_partition {
            message.partition
        } else {
            let n = inner.partition_count.load(Ordering::Acquire).max(1);
            inner.partitioner.partition(message, n)
        };
        let slot = match inner.slot(partition) {
            Ok(s) => s,
            Err(e) => {
                inner.buffer.add_permits(permits as usize);
                return Err(e);
            }
        };
        message.partition = partition;
        let direct_batch = {
            let mut acc = slot.acc.lock();
            // A send that waited for room may get it after `close` counted this partition's
            // messages (under this lock) and its sender task ended: accepted now, the message
            // would sit in a batch nobody sends, its waiter never told. `close` sets `closed`
            // before it counts, so every message accepted here is one it waits for.
            if inner.closed.load(Ordering::Acquire) {
                drop(acc);
                inner.buffer.add_permits(permits as usize);
                return Err(ClientError::Closed);
            }
            let idle = direct
                && !acc.in_flight()
                && acc.opened_at().is_none()
                && slot.ready.lock().is_empty();
            // The message stays here: the accumulator copies its bytes into the batch.
            let mut waiter = waiter;
            loop {
                match acc.try_push(message, waiter, Instant::now) {
                    TryPush::Aggregated { full } => {
                        if full {
                            if let Some(b) = acc.take() {
                                slot.ready.lock().push_back(b);
                            }
                        }
                        break;
                    }
                    TryPush::NoCapacity(rejected) => {
                        if let Some(b) = acc.take() {
                            slot.ready.lock().push_back(b);
                        }
                        waiter = rejected;
                    }
                }
            }
            slot.accepted.fetch_add(1, Ordering::AcqRel);
            if idle {
                // The message's batch: the open one, or the ready one if it filled it alone.
                let batch = slot.ready.lock().pop_front().or_else(|| acc.take());
                acc.set_in_flight(batch.is_some());
                batch
            } else {
                None
            }
        };
        match direct_batch {
            Some(batch) => Ok(Some((slot, batch))),
            None => {
                slot.wake.notify_one();
                Ok(None)
            }
        }
    }

    /// Sends every open batch now and waits until every message accepted before this call is
    /// acknowledged or failed.
    pub async fn flush(&self) -> Result<()> {
        let slots: Vec<Arc<Slot>> = self.inner.slots.read().clone();
        let mut targets = Vec::with_capacity(slots.len());
        for slot in &slots {
            {
                let mut acc = slot.acc.lock();
                if let Some(b) = acc.take() {
                    slot.ready.lock().push_back(b);
                }
                targets.push(slot.accepted.load(Ordering::Acquire));
            }
            slot.wake.notify_one();
        }
        for (slot, target) in slots.iter().zip(targets) {
            let mut rx = slot.completed.subscribe();
            rx.wait_for(|done| *done >= target)
                .await
                .map_err(|_| ClientError::Closed)?;
        }
        tracing::debug!(topic = %self.inner.topic, "flushed");
        Ok(())
    }

    /// Delivers (or reports failed) everything accepted so far, then stops. Later sends fail
    /// with `ClientError::Closed`, and so do sends still waiting for buffer room.
    pub async fn close(&self) -> Result<()> {
        self.inner.closed.store(true, Ordering::Release);
        let flushed = self.flush().await;
        self.inner.closing.store(true, Ordering::Release);
        for slot in self.inner.slots.read().iter() {
            slot.wake.notify_one();
        }
        let tasks: Vec<JoinHandle<()>> = std::mem::take(&mut *self.inner.tasks.lock());
        for t in tasks {
            let _ = t.await;
        }
        flushed
    }

    /// Counters of this producer.
    pub async fn metrics(&self) -> Arc<ProducerMetrics> {
        Arc::clone(&self.inner.metrics)
    }

    /// Bytes of accepted messages not yet acknowledged (at most `buffer_memory`).
    pub fn buffered_bytes(&self) -> usize {
        self.inner.config.buffer_memory - self.inner.buffer.available_permits()
    }

    /// Partitions currently known for the topic.
    pub fn partition_count(&self) -> u32 {
        self.inner.partition_count.load(Ordering::Acquire)
    }
}

impl RustMqClient {
    /// A producer for `topic` with the default [`ProducerConfig`] (and this client's
    /// compression settings).
    pub async fn create_producer(&self, topic: &str) -> Result<Producer> {
        ProducerBuilder::new()
            .topic(topic)
            .client(self.clone())
            .build()
            .await
    }
}

/// Spends a unit of the task's coop budget, yielding to the scheduler when it is spent, as
/// tokio's own resources (the buffer's semaphore among them) do. A send that does not wait
/// spends it before its message is accepted (awaiting [`cooperate`], or in `SendAsync::poll`):
/// a loop of sends then yields now and then, and the partitions' senders and the connection
/// run while the batches fill (without it a sending loop ran until the buffer was full, and W1
/// lost a quarter of its throughput), and a send dropped at that point has accepted nothing.
fn poll_budget(cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
    tokio::task::coop::poll_proceed(cx).map(|p| p.made_progress())
}

/// [`poll_budget`] as a future.
fn cooperate() -> impl std::future::Future<Output = ()> {
    std::future::poll_fn(poll_budget)
}

/// A message accepted into its batch (with the batch itself when the caller is to send it).
type Accepted = Option<(Arc<Slot>, ReadyBatch)>;

/// The outcome of [`Producer::enqueue`]: already known, or (the buffer full) a wait for room.
type Enqueue<'a> = Either<Ready<Result<Accepted>>, BoxFuture<'a, Result<Accepted>>>;
