//! The service: many handlers on one client, each on its own consumer group, each a tower
//! service wrapped in the same layers.
//!
//! ```text
//!  consumer (group g, topic T) ──receive──► dispatcher ──by key (or partition)──► worker[i]
//!                                                                                  │
//!        ack / nack ◄── settle ◄── layers(Trace, Timeout, Retry, DeadLetter, ..)(handler)
//! ```
//!
//! Each worker handles its messages one at a time, so order holds per key (per partition for
//! unkeyed messages); with `concurrency = 1` (the default) there is one worker. Acks go to the
//! consumer's offset tracker, which commits only the contiguous acknowledged prefix.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tower::layer::util::{Identity, Stack};
use tower::{Layer, ServiceExt};

use super::boxed::BoxService;
use super::delivery::{Context, Delivery, Spare};
use super::handler::{Handler, HandlerArgs, HandlerOptions, StartFrom, MAX_CONCURRENCY};
use super::layers::publish_dead_letter;
use super::settle::{BoxError, Settlement};
use super::topic::TopicInfo;
use crate::consumer::{Consumer, ConsumerBuilder, ConsumerConfig, ConsumerMessage, StartPosition};
use crate::error::{panic_message, ClientError, Result};
use crate::producer::partition_for_key;
use crate::RustMqClient;

/// A layer (or a stack of them) that a [`Service`] can wrap its handlers in: any
/// `tower::Layer` over the erased handler whose service takes a [`Delivery`] and answers a
/// [`Settlement`], and can be cloned and sent to the handler's task.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot wrap RustMQ handlers",
    label = "not a handler layer",
    note = "a handler layer is a `tower::Layer<BoxService>` whose service is a `tower::Service<Delivery, Response = Settlement, Error = BoxError>` that is `Clone + Send` with a `Send` future"
)]
pub trait HandlerLayer: Send + Sync + 'static {
    /// The layered service.
    type Service: tower::Service<Delivery, Response = Settlement, Error = BoxError, Future: Send + 'static>
        + Clone
        + Send
        + 'static;

    /// Wraps a handler.
    fn wrap(&self, handler: BoxService) -> Self::Service;
}

impl<L> HandlerLayer for L
where
    L: Layer<BoxService> + Send + Sync + 'static,
    L::Service:
        tower::Service<Delivery, Response = Settlement, Error = BoxError> + Clone + Send + 'static,
    <L::Service as tower::Service<Delivery>>::Future: Send + 'static,
{
    type Service = L::Service;

    fn wrap(&self, handler: BoxService) -> L::Service {
        self.layer(handler)
    }
}

/// What to do with a message whose payload does not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoisonPolicy {
    /// Publish it to the dead-letter topic and go on (the default).
    #[default]
    DeadLetter,
    /// Acknowledge it and go on.
    Skip,
    /// Stop the handler without acknowledging it (it is redelivered after a restart).
    Stop,
}

struct Registered<S> {
    options: HandlerOptions,
    topic: TopicInfo,
    make: Box<dyn Fn(S) -> BoxService + Send + Sync>,
}

/// Runs handlers. Build it with [`Service::new`], add layers and handlers, then
/// [`Service::run_until`] a shutdown signal (or [`Service::start`] for a handle).
///
/// Layers apply to every handler, innermost first: the first layer added wraps the handler
/// directly, the last one is outermost. `L` is the stack of layers added so far.
pub struct Service<S = (), L = Identity> {
    client: RustMqClient,
    state: S,
    layers: L,
    handlers: Vec<Registered<S>>,
    consumer_config: ConsumerConfig,
    poison: PoisonPolicy,
    shutdown_timeout: Duration,
}

impl<S, L> std::fmt::Debug for Service<S, L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field(
                "handlers",
                &self
                    .handlers
                    .iter()
                    .map(|h| h.options.name)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Service<()> {
    /// A service without state.
    pub fn new(client: RustMqClient) -> Self {
        Service::with_state(client, ())
    }
}

impl<S: Clone + Send + Sync + 'static> Service<S> {
    /// A service whose handlers can take `State<S>`.
    pub fn with_state(client: RustMqClient, state: S) -> Self {
        Service {
            client,
            state,
            layers: Identity::new(),
            handlers: Vec::new(),
            consumer_config: ConsumerConfig {
                start_position: StartPosition::Earliest,
                ..ConsumerConfig::default()
            },
            poison: PoisonPolicy::default(),
            shutdown_timeout: Duration::from_secs(30),
        }
    }
}

impl<S: Clone + Send + Sync + 'static, L: HandlerLayer> Service<S, L> {
    /// Wraps every handler in `layer` (outside the layers added before).
    ///
    /// Layers are composed statically, as `tower::ServiceBuilder` composes them: only the
    /// handler itself is erased, and the layers' futures nest inside the handler task's own,
    /// without an allocation per layer and message. (`ServiceBuilder` lists layers outermost
    /// first, the reverse of successive calls here; passing one works too.)
    pub fn layer<N>(self, layer: N) -> Service<S, Stack<L, N>>
    where
        Stack<L, N>: HandlerLayer,
    {
        Service {
            client: self.client,
            state: self.state,
            layers: Stack::new(self.layers, layer),
            handlers: self.handlers,
            consumer_config: self.consumer_config,
            poison: self.poison,
            shutdown_timeout: self.shutdown_timeout,
        }
    }

    /// Adds a handler. Its topic is its payload argument's; its group comes from
    /// `#[handler(group = ..)]`, else `"<topic>.<function name>"`.
    pub fn handler<H, M>(mut self, handler: H) -> Self
    where
        H: Handler<M, S>,
        M: HandlerArgs + 'static,
    {
        let mut options = handler.options();
        if options.name.is_empty() {
            let full = std::any::type_name::<H>();
            options.name = full.rsplit("::").next().unwrap_or(full);
        }
        let topic = handler.topic().unwrap_or_else(|| {
            panic!(
                "handler {} has no payload argument (a type that derives `Topic`)",
                options.name
            )
        });
        // `#[handler]` refuses this at compile time; a plain `async fn` gets here.
        let payloads = M::payloads();
        assert!(
            payloads == 1,
            "handler {} has {payloads} payload arguments (types that derive `Topic`); a handler \
             consumes one topic, so it takes one payload",
            options.name
        );
        self.handlers.push(Registered {
            options,
            topic,
            make: Box::new(move |state| BoxService::handler(handler.clone(), state)),
        });
        self
    }

    /// Consumer settings for every handler (group and start position are per handler). A
    /// `dead_letter_queue` set here takes every handler's dead letters: those of the
    /// consumer's retries and those of the typed paths (poison messages,
    /// [`Settlement::DeadLetter`](super::Settlement::DeadLetter), the dead-letter layer).
    /// Unset, each handler's go to its topic's dead-letter topic (`#[topic(dead_letter =
    /// ..)]`, else `<topic>.dlq`).
    pub fn consumer_config(mut self, config: ConsumerConfig) -> Self {
        self.consumer_config = config;
        self
    }

    /// What happens to poison messages (default: dead-letter).
    pub fn on_poison(mut self, policy: PoisonPolicy) -> Self {
        self.poison = policy;
        self
    }

    /// How long a shutdown waits for in-flight messages before abandoning them (they are not
    /// acknowledged, so they are delivered again after a restart). Default 30 s.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Runs until `signal` completes, then shuts down cleanly. A handler that stops on its own
    /// (see [`RunningService::shutdown`]) shuts the service down too, and its error is returned.
    pub async fn run_until(self, signal: impl Future) -> Result<()> {
        let running = self.start().await?;
        let mut stopped = running.stopped.clone();
        tokio::select! {
            _ = signal => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
        running.shutdown().await
    }

    /// Starts every handler and returns a handle to stop them.
    pub async fn start(self) -> Result<RunningService> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let (stopped_tx, stopped_rx) = watch::channel(false);
        let stopped_tx = Arc::new(stopped_tx);
        // Every handler's settings are checked, and every consumer joins its group, before
        // any handler starts: a service that cannot start handles nothing.
        let configs = consumer_configs(&self.handlers, &self.consumer_config)?;
        let mut joined = Vec::with_capacity(configs.len());
        for (reg, config) in self.handlers.into_iter().zip(configs) {
            match consumer_for(&self.client, &reg, config).await {
                Ok(consumer) => joined.push((reg, consumer)),
                Err(e) => {
                    // Nothing was handled, so nothing is committed: they only leave.
                    for (_, consumer) in joined {
                        let _ = consumer.close().await;
                    }
                    return Err(e);
                }
            }
        }
        let mut tasks = Vec::new();
        for (reg, consumer) in joined {
            let service = self.layers.wrap((reg.make)(self.state.clone()));
            let ctx = Arc::new(Context {
                topic: reg.topic.name.into(),
                client: Some(self.client.clone()),
                handler: reg.options.name,
                group: consumer.group().to_owned(),
                // One topic for all of a handler's dead letters: those of the consumer's
                // retries and of the typed paths (poison, `Settlement::DeadLetter`, the
                // dead-letter layer) alike.
                dead_letter: self
                    .consumer_config
                    .dead_letter_queue
                    .clone()
                    .unwrap_or_else(|| reg.topic.dead_letter.clone()),
                producers: Default::default(),
                poison: self.poison,
                detached: false,
            });
            // A commit waits for the outputs the handler sent to be answered.
            let flushed = Arc::clone(&ctx);
            consumer.before_commit(crate::consumer::BeforeCommit(Box::new(move || {
                let ctx = Arc::clone(&flushed);
                Box::pin(async move { ctx.flush_producers().await })
            })));
            let runner = Runner::<L> {
                consumer,
                service,
                ctx,
                concurrency: reg.options.concurrency.unwrap_or(1).max(1),
                poison: self.poison,
                shutdown_timeout: self.shutdown_timeout,
                stopped: Arc::clone(&stopped_tx),
            };
            tracing::info!(
                handler = reg.options.name,
                topic = reg.topic.name,
                "handler started"
            );
            tasks.push(tokio::spawn(runner.run(stop_rx.clone())));
        }
        Ok(RunningService {
            stop: stop_tx,
            stopped: stopped_rx,
            tasks,
        })
    }
}

/// A handler's consumer, joined to its group. A consumer needs its topic to exist: it is
/// created with the declared partitions, else the broker's default (0), which a producer's
/// auto-creation would give it too.
async fn consumer_for<S>(
    client: &RustMqClient,
    reg: &Registered<S>,
    config: ConsumerConfig,
) -> Result<Consumer> {
    client
        .ensure_topic(reg.topic.name, reg.topic.partitions.unwrap_or(0))
        .await?;
    ConsumerBuilder::new()
        .topic(reg.topic.name)
        .consumer_group(config.consumer_group.clone())
        .config(config)
        .client(client.clone())
        .build()
        .await
}

/// Each handler's consumer settings: `base` with the handler's group (`#[handler(group =
/// ..)]`, else `"<topic>.<function name>"`), start position and dead-letter topic, checked.
/// Two handlers of one topic in one group are refused: they would split its partitions, and
/// each would see only part of the messages.
fn consumer_configs<S>(
    handlers: &[Registered<S>],
    base: &ConsumerConfig,
) -> Result<Vec<ConsumerConfig>> {
    let mut consumers: HashMap<(&str, String), &str> = HashMap::new();
    handlers
        .iter()
        .map(|reg| {
            let mut config = base.clone();
            let name = reg.options.name;
            if let Some(n) = reg.options.concurrency.filter(|&n| n > MAX_CONCURRENCY) {
                return Err(ClientError::InvalidConfig(format!(
                    "handler {name}: concurrency {n} is more than {MAX_CONCURRENCY}, the most \
                     worker tasks a handler may have"
                )));
            }
            config.consumer_group = match reg.options.group {
                Some(g) => g.to_owned(),
                None => {
                    let group = format!("{}.{name}", reg.topic.name);
                    if group.len() > rustmq_protocol::MAX_GROUP_NAME_LEN {
                        return Err(ClientError::InvalidConfig(format!(
                            "handler {name}: its default group {group:?} (\"<topic>.<handler>\") \
                             is {} bytes long, and brokers take group names of at most {}; name \
                             one with `#[handler(group = \"...\")]`",
                            group.len(),
                            rustmq_protocol::MAX_GROUP_NAME_LEN
                        )));
                    }
                    group
                }
            };
            if let Some(start) = reg.options.start {
                config.start_position = match start {
                    StartFrom::Earliest => StartPosition::Earliest,
                    StartFrom::Latest => StartPosition::Latest,
                };
            }
            if config.dead_letter_queue.is_none() {
                config.dead_letter_queue = Some(reg.topic.dead_letter.clone());
            }
            config.validate().map_err(|e| {
                ClientError::InvalidConfig(format!("handler {}: {e}", reg.options.name))
            })?;
            let key = (reg.topic.name, config.consumer_group.clone());
            if let Some(other) = consumers.insert(key, reg.options.name) {
                return Err(ClientError::InvalidConfig(format!(
                    "handlers {other} and {} both consume topic {:?} in group {:?}: each would \
                     get only part of its messages; give one of them a group of its own \
                     (`#[handler(group = \"...\")]`)",
                    reg.options.name, reg.topic.name, config.consumer_group
                )));
            }
            Ok(config)
        })
        .collect()
}

/// Running handlers; [`RunningService::shutdown`] stops them cleanly.
///
/// Dropping it stops them too, as a shutdown does but without waiting for it: keep it for as
/// long as the handlers should run.
#[derive(Debug)]
#[must_use = "dropping a `RunningService` stops its handlers; keep it, and call `shutdown`"]
pub struct RunningService {
    stop: watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<Result<()>>>,
}

impl RunningService {
    /// Stops fetching, finishes in-flight messages (up to the shutdown timeout), closes the
    /// producers the handlers sent with (once what they hold is acknowledged or has failed),
    /// commits what was acknowledged and leaves the groups.
    ///
    /// Returns an error if a handler's task ended with one (the first, in the order the
    /// handlers were added): why it stopped on its own (a poison message under
    /// [`PoisonPolicy::Stop`], its client closed), else a failure to close.
    pub async fn shutdown(self) -> Result<()> {
        self.stop.send_replace(true);
        let mut first_error = None;
        for t in self.tasks {
            match t.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_error.get_or_insert(e);
                }
                Err(e) => {
                    first_error.get_or_insert(ClientError::Connection(format!(
                        "handler task failed: {e}"
                    )));
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Whether a handler stopped on its own (poison policy `Stop`, its client closed).
    pub fn is_stopped(&self) -> bool {
        *self.stopped.borrow()
    }
}

struct Runner<L: HandlerLayer> {
    consumer: Consumer,
    service: L::Service,
    ctx: Arc<Context>,
    concurrency: usize,
    poison: PoisonPolicy,
    shutdown_timeout: Duration,
    stopped: Arc<watch::Sender<bool>>,
}

impl<L: HandlerLayer> Runner<L> {
    async fn run(self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let halt = Arc::new(AtomicBool::new(false));
        // Why the handler stopped on its own, if it did (the first reason, of any worker).
        let ended = Arc::new(Ended {
            reason: parking_lot::Mutex::new(None),
            consumer: self.consumer.clone(),
        });
        let mut senders = Vec::with_capacity(self.concurrency);
        let mut workers = Vec::with_capacity(self.concurrency);
        // With one worker, messages are handled in this task (see below).
        let spawned = if self.concurrency == 1 {
            0
        } else {
            self.concurrency
        };
        for _ in 0..spawned {
            let (tx, rx) = mpsc::channel::<ConsumerMessage>(64);
            senders.push(tx);
            workers.push(tokio::spawn(worker::<L>(
                rx,
                self.service.clone(),
                Arc::clone(&self.ctx),
                self.poison,
                Arc::clone(&halt),
                Arc::clone(&ended),
                Arc::clone(&self.stopped),
            )));
        }
        // With one worker, its service.
        let mut driven = Driven::new(self.service.clone());
        let mut messages = self.consumer.stream();
        loop {
            if *stop.borrow() {
                break;
            }
            // A buffered message is taken without arming the stop watch (registering with it
            // takes a lock, twice per message); only a receive that has to wait races the stop.
            // The consumer's stream keeps its registration for wake-ups across messages,
            // where each `receive` would make its own.
            let received = match futures::poll!(messages.next()) {
                std::task::Poll::Ready(r) => r,
                std::task::Poll::Pending => tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => break,
                    r = messages.next() => r,
                },
            };
            match received {
                // One worker: handle the message here, without a channel and a task switch per
                // message. A shutdown still abandons it after the shutdown timeout.
                Some(Ok(message)) if self.concurrency == 1 => {
                    let handled = driven.handle(&self.ctx, message, self.poison);
                    tokio::pin!(handled);
                    // Most messages are handled without waiting: then there is nothing to race
                    // against the shutdown (and the future is not moved into a `select!`).
                    let handled = match futures::poll!(handled.as_mut()) {
                        std::task::Poll::Ready(handled) => handled,
                        std::task::Poll::Pending => {
                            let timeout = self.shutdown_timeout;
                            let abandon = async {
                                let _ = stop.wait_for(|s| *s).await;
                                tokio::time::sleep(timeout).await;
                            };
                            tokio::select! {
                                biased;
                                handled = &mut handled => handled,
                                _ = abandon => {
                                    warn_abandoned(self.ctx.handler);
                                    // Dropped unsettled as the loop ends: not a failed attempt.
                                    self.consumer.abandon_unsettled();
                                    break;
                                }
                            }
                        }
                    };
                    if let Err(e) = handled {
                        ended.end(&self.stopped, e);
                        break;
                    }
                    // A runner whose buffer stays full would otherwise never yield: the
                    // consumer's fetch task and the connection then run only once the buffer
                    // is empty, and the handler waits for the next fetch's round trip. Spending
                    // tokio's budget yields every 128 messages or so, so the next fetch goes
                    // out while the buffer drains (W7 consume 1.07x, pairwise 1.12x).
                    tokio::task::consume_budget().await;
                }
                Some(Ok(message)) => {
                    let worker = route(&message, self.concurrency);
                    // The worker's queue may stay full (its handler hangs): a shutdown must
                    // not wait for room there, past its timeout. Only a full queue races the
                    // stop watch (registering with it takes a lock).
                    // The message waits for room outside the select (`reserve`): dropped in
                    // a `send` future the stop cancels, it would be nacked, a failed attempt
                    // that can dead-letter a message never handled.
                    let unsent = match senders[worker].try_send(message) {
                        Ok(()) => None,
                        Err(mpsc::error::TrySendError::Closed(message)) => Some(message),
                        Err(mpsc::error::TrySendError::Full(message)) => tokio::select! {
                            biased;
                            _ = stop.wait_for(|s| *s) => Some(message),
                            permit = senders[worker].reserve() => match permit {
                                Ok(permit) => {
                                    permit.send(message);
                                    None
                                }
                                Err(_) => Some(message),
                            },
                        },
                    };
                    if let Some(message) = unsent {
                        // Never handled: abandoned with the queued ones, not nacked.
                        self.consumer.abandon_unsettled();
                        drop(message);
                        break;
                    }
                }
                None => {
                    // The consumer ended without a stop being asked for (its client was
                    // closed): the handler cannot go on, and `run_until` must hear of it.
                    if !*stop.borrow() {
                        tracing::error!(
                            handler = self.ctx.handler,
                            "the consumer ended (its client was closed): the handler stops"
                        );
                        ended.end(&self.stopped, ClientError::Closed);
                    }
                    break;
                }
                // The consumer reports each failure of its fetches once and keeps retrying
                // them in the background (a closed consumer ends the stream with `None`): a
                // receive after a failure goes on, whether the failure is retryable or not (a
                // missing topic or permission may come back). Stopping here would stop the
                // handler for good without a word to `run_until` or `is_stopped`.
                Some(Err(e)) => {
                    if e.is_retryable() {
                        tracing::warn!(handler = self.ctx.handler, error = %e, "receive failed; retrying");
                    } else {
                        tracing::error!(handler = self.ctx.handler, error = %e, "receive failed; retrying");
                    }
                    tokio::select! {
                        biased;
                        _ = stop.wait_for(|s| *s) => break,
                        () = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                }
            }
        }
        // Messages queued but not started, and those still in hand at the shutdown timeout,
        // are abandoned: neither acknowledged nor counted as a failed attempt (which could
        // dead-letter a message never handled), so delivered again after a restart.
        self.consumer.abandon_unsettled();
        halt.store(true, Ordering::Release);
        drop(senders);
        // Checked: `Duration::MAX` is a valid timeout ("wait for the workers for ever").
        let deadline =
            crate::consumer::timing::deadline(tokio::time::Instant::now(), self.shutdown_timeout);
        for mut w in workers {
            if tokio::time::timeout_at(deadline, &mut w).await.is_err() {
                w.abort();
                warn_abandoned(self.ctx.handler);
                // Ended before the producers are closed: an aborted worker mid-poll on another
                // thread could otherwise start one after.
                let _ = w.await;
            }
        }
        // What the handlers sent is sent before the messages whose handling sent it are
        // committed.
        let flushed = self.ctx.close_producers().await;
        let closed = self.consumer.close().await;
        let reason = ended.reason.lock().take();
        match reason {
            Some(e) => {
                if let Err(also) = flushed.and(closed) {
                    tracing::warn!(handler = self.ctx.handler, error = %also, "closing the stopped handler failed too");
                }
                Err(e)
            }
            None => flushed.and(closed),
        }
    }
}

/// Why a handler stopped on its own: the first reason of its runner and workers.
struct Ended {
    reason: parking_lot::Mutex<Option<ClientError>>,
    /// The handler's consumer, whose unsettled messages the stop abandons.
    consumer: Consumer,
}

impl Ended {
    /// Notes why the handler stops (the first reason is kept) and tells `run_until`. Called
    /// before the stopping worker lets the others see it (`halt`) and drops its queue: the
    /// messages dropped from then on are abandoned, not failed (see `abandon_unsettled`).
    fn end(&self, stopped: &watch::Sender<bool>, e: ClientError) {
        self.consumer.abandon_unsettled();
        self.reason.lock().get_or_insert(e);
        stopped.send_replace(true);
    }
}

/// A message given up at the shutdown timeout: not acknowledged, so delivered again.
fn warn_abandoned(handler: &str) {
    tracing::warn!(handler, "shutdown timeout: abandoning an in-flight message");
}

/// The worker of a message, with several: by key, else by partition.
fn route(message: &ConsumerMessage, workers: usize) -> usize {
    match &message.message.key {
        Some(key) => partition_for_key(key, workers as u32) as usize,
        None => message.message.partition as usize % workers,
    }
}

async fn worker<L: HandlerLayer>(
    mut rx: mpsc::Receiver<ConsumerMessage>,
    service: L::Service,
    ctx: Arc<Context>,
    poison: PoisonPolicy,
    halt: Arc<AtomicBool>,
    ended: Arc<Ended>,
    stopped: Arc<watch::Sender<bool>>,
) {
    let mut driven = Driven::new(service);
    while let Some(message) = rx.recv().await {
        if halt.load(Ordering::Acquire) {
            break;
        }
        if let Err(e) = driven.handle(&ctx, message, poison).await {
            ended.end(&stopped, e);
            halt.store(true, Ordering::Release);
            break;
        }
    }
}

/// A worker's layered service, driven for all of its messages (`ready`, then `call`; not a
/// clone per message, so state a layer keeps in its service, a counter or a window, holds
/// across messages and nothing is cloned), with the untouched service it is cloned from again
/// if it fails (tower's contract: a service whose `poll_ready` failed is not used again), and
/// the last delivery's allocation, in which the next delivery is made.
struct Driven<S> {
    service: S,
    pristine: S,
    spare: Option<Spare>,
}

impl<S> Driven<S>
where
    S: tower::Service<Delivery, Response = Settlement, Error = BoxError> + Clone,
{
    fn new(service: S) -> Self {
        Driven {
            pristine: service.clone(),
            service,
            spare: None,
        }
    }

    /// Runs one message through the layered handler and settles it; an error means the
    /// handler stops, for that reason.
    ///
    /// A panic in the handler or a layer is caught and is the delivery's failure (nacked:
    /// retried, then dead-lettered), as a server built on tower catches a handler's panic:
    /// it must not end the handler's task, which would stop consuming without a word to
    /// `run_until`.
    fn handle<'a>(
        &'a mut self,
        ctx: &Arc<Context>,
        message: ConsumerMessage,
        poison: PoisonPolicy,
    ) -> impl Future<Output = Result<()>> + 'a {
        // Made before the future, which would otherwise hold (and move) the message until its
        // first poll.
        let delivery = Delivery::receiving(self.spare.take(), message, ctx);
        let handler = ctx.handler;
        async move {
            let called = AssertUnwindSafe(async {
                match self.service.ready().await {
                    Ok(ready) => Ok(ready.call(delivery.clone()).await),
                    Err(e) => Err(e),
                }
            })
            .catch_unwind()
            .await;
            let result = match called {
                Ok(Ok(result)) => result,
                // Settled as a failure; the next message gets a working service.
                Ok(Err(not_ready)) => {
                    self.service = self.pristine.clone();
                    Err(not_ready)
                }
                Err(panic) => {
                    self.service = self.pristine.clone();
                    Err(panicked(handler, &*panic))
                }
            };
            let handled = match delivery.received() {
                Some(message) => settle(handler, message, &delivery, result, poison).await,
                None => unreachable!("a delivery made by `Delivery::receiving` holds its message"),
            };
            self.spare = delivery.into_spare();
            handled
        }
    }
}

/// The failure a handler's (or a layer's) panic is: logged here, as the handler's other
/// failures are by the trace layer.
#[cold]
fn panicked(handler: &str, panic: &(dyn std::any::Any + Send)) -> BoxError {
    let reason = format!("the handler panicked: {}", panic_message(panic));
    tracing::error!(handler, "{reason}");
    reason.into()
}

/// Acknowledges or nacks per the settlement; an error means the handler must stop.
async fn settle(
    handler: &str,
    message: &ConsumerMessage,
    delivery: &Delivery,
    result: Result<Settlement, BoxError>,
    poison: PoisonPolicy,
) -> Result<()> {
    let outcome = match result {
        Ok(Settlement::Ack | Settlement::Skip | Settlement::DeadLettered { .. }) => {
            message.ack().await
        }
        Ok(Settlement::Poison(reason)) => match poison {
            PoisonPolicy::Skip => message.ack().await,
            PoisonPolicy::Stop => {
                tracing::error!(reason, "poison message: handler stops");
                // Neither acknowledged nor failed (a failed attempt could dead-letter it):
                // delivered again after a restart.
                message.abandon();
                let m = &message.message;
                return Err(ClientError::Deserialization(format!(
                    "handler {handler} stopped on a poison message ({}/{} at offset {}): \
                     {reason}",
                    m.topic, m.partition, m.offset
                )));
            }
            PoisonPolicy::DeadLetter => {
                dead_letter_then_ack(message, delivery, "poison", &reason).await
            }
        },
        Ok(Settlement::DeadLetter(reason)) => {
            dead_letter_then_ack(message, delivery, "rejected", &reason).await
        }
        Ok(Settlement::Retry(reason)) => message.nack_with_error(reason).await,
        Err(e) => message.nack_with_error(e.to_string()).await,
    };
    if let Err(e) = outcome {
        tracing::warn!(error = %e, "settling a message failed");
    }
    Ok(())
}

async fn dead_letter_then_ack(
    message: &ConsumerMessage,
    delivery: &Delivery,
    kind: &str,
    reason: &str,
) -> Result<()> {
    match publish_dead_letter(delivery, None, kind, reason).await {
        Ok(_) => message.ack().await,
        Err(e) => {
            message
                .nack_with_error(format!("dead-lettering failed: {e}"))
                .await
        }
    }
}
