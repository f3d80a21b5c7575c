//! One session: a generation of group membership, from join to drain.
//!
//! ```text
//!  join ──► producer id (exactly-once: named, fencing the previous instance) ──► recover
//!  fetch task per partition ──► router ──┬─ individual: worker[hash(partition) % parallelism]
//!   (max_in_flight, bytes in flight,     ├─ batch: batcher ──► shared worker queue
//!    ledger: received)                   └─ windowed: windows ──► closed windows, late ones
//!                                           (and on a timer: partitions becoming idle)
//!  workers: unit::run (processor, error strategy) ──► sink lanes ──► ledger: finished
//!  committer: ledger snapshot ──► CommitOffsets every commit interval (and again at the next
//!             interval after a failed one, changed or not)
//!  heartbeat (from the join on): rebalance, or a generation moved (also a commit's
//!             answer) ──► drain, rejoin under the same member id
//!  end: stop or rebalance ── drain: fetchers stop, router flushes, workers finish, outputs
//!       stored, final commit (failed at stop: stop's error);  Stop strategy ── the same drain,
//!       but no further unit is processed or emitted (queued units are dropped, uncommitted);
//!       sink failure, unknown member, commit refused for good ── abort: final commit of what
//!       is finished, tasks aborted
//!  (a failure under the Stop strategy wins over a stop or rebalance already draining; an
//!   abort cuts any drain short)
//! ```

use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use parking_lot::Mutex;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use super::batcher::Batcher;
use super::claims::Claims;
use super::config::{StreamConfig, StreamMode, WindowOptions};
use super::fetch::{self, Incoming};
use super::group::{self, Member};
use super::ledger::Ledger;
use super::metrics::StreamMetrics;
use super::processor::MessageProcessor;
use super::recovery;
use super::sink::Sink;
use super::unit::{self, Kind, Unit};
use super::window::{Span, WindowRecovery, WindowSpec, Windows};
use super::{Settings, Tp};
use crate::client::RustMqClient;
use crate::error::{ClientError, Result};
use crate::message::Message;

/// Why a session ends.
#[derive(Debug)]
pub(crate) enum End {
    /// Asked to stop: drain, commit.
    Stop,
    /// The group rebalances: drain, commit, rejoin.
    Rebalance,
    /// A unit failed under `ErrorStrategy::Stop`: drain (processing nothing more), commit,
    /// stop with the error.
    Failed(ClientError),
    /// Writing, fetching or membership failed: commit what is finished, end at once.
    Abort(ClientError),
}

/// What a session shares with its tasks.
pub(crate) struct Ctx {
    pub(crate) client: RustMqClient,
    pub(crate) config: StreamConfig,
    pub(crate) window_options: WindowOptions,
    pub(crate) group: String,
    pub(crate) processor: Arc<dyn MessageProcessor>,
    pub(crate) metrics: Arc<StreamMetrics>,
    pub(crate) ledger: Mutex<Ledger>,
    pub(crate) default_partitions: u32,
    member: Member,
    sink: Sink,
    end: Mutex<Option<End>>,
    ended: Notify,
    /// A unit failed under `ErrorStrategy::Stop`: no further unit is processed or emitted.
    failed: AtomicBool,
    /// The session aborts: any drain is cut short.
    aborting: AtomicBool,
    in_flight: AtomicUsize,
    idle: Notify,
    /// Every task of the session (workers and router too): aborted when it ends, so that
    /// none of them outlives it (an aborted session's workers would otherwise go on with
    /// their queued units after `stop` returned, or beside the next session's).
    tasks: Mutex<Vec<AbortHandle>>,
    /// Held by a commit; `true` while the ledger's state is not committed because the last
    /// commit failed (the ledger counts its snapshot as committed): the next one commits even
    /// if nothing changed since.
    commit_lock: tokio::sync::Mutex<bool>,
    /// Input partitions whose log ended below their position, with the new end, for the
    /// router to forget what recovery claimed of them from there (see [`Ctx::rewind_to`]).
    rewinds: Mutex<Vec<(Tp, u64)>>,
    /// Whether `rewinds` holds any (read by the router for every message).
    rewound: AtomicBool,
}

impl Ctx {
    pub(crate) fn sink(&self) -> &Sink {
        &self.sink
    }

    pub(crate) fn spawn(
        self: &Arc<Self>,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) {
        let handle = tokio::spawn(self.guarded(task));
        self.tasks.lock().push(handle.abort_handle());
    }

    /// Spawns a task that ends with the session like those of [`spawn`](Self::spawn), and
    /// returns its handle for the drain to await.
    fn spawn_joined(
        self: &Arc<Self>,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> JoinHandle<()> {
        let handle = tokio::spawn(self.guarded(task));
        self.tasks.lock().push(handle.abort_handle());
        handle
    }

    /// `task`, aborting the session if it panics: a session waits for its end, which a
    /// panicked task (a fetch loop, a lane, a worker) would never bring, and the stream would
    /// stall without a word.
    fn guarded(
        self: &Arc<Self>,
        task: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        use futures::FutureExt;
        let ctx = Arc::downgrade(self);
        async move {
            if let Err(panic) = std::panic::AssertUnwindSafe(task).catch_unwind().await {
                let what = crate::error::panic_message(&*panic);
                tracing::error!(panic = %what, "a stream task panicked: the session ends");
                if let Some(ctx) = ctx.upgrade() {
                    ctx.abort(ClientError::Connection(format!(
                        "a stream task panicked: {what}"
                    )));
                }
            }
        }
    }

    fn end_with(&self, end: End) {
        match &end {
            End::Failed(_) => self.failed.store(true, Ordering::Release),
            End::Abort(_) => self.aborting.store(true, Ordering::Release),
            End::Stop | End::Rebalance => {}
        }
        let mut slot = self.end.lock();
        let replace = match (&*slot, &end) {
            (None, _) => true,
            // The first failure stays: the stream stops with it, even if the session aborts
            // (that still cuts the drain short: `aborting`).
            (Some(End::Failed(_)), _) => false,
            // A failure wins over a stop or a rebalance already draining, and over an abort:
            // `stop` (or `wait`) must report it, and the supervisor must not go on.
            (Some(_), End::Failed(_)) => true,
            // An abort during a drain still cuts it short.
            (Some(End::Rebalance | End::Stop), End::Abort(_)) => true,
            _ => false,
        };
        if replace {
            tracing::debug!(group = %self.group, ?end, "session ending");
            *slot = Some(end);
        }
        drop(slot);
        self.ended.notify_waiters();
        self.idle.notify_waiters();
    }

    /// `ErrorStrategy::Stop`: drain and stop with `error`.
    pub(crate) fn fail(&self, error: ClientError) {
        self.end_with(End::Failed(error));
    }

    /// A failure that ends the session at once.
    pub(crate) fn abort(&self, error: ClientError) {
        self.end_with(End::Abort(error));
    }

    fn aborted(&self) -> bool {
        self.aborting.load(Ordering::Acquire)
    }

    /// Whether a unit failed under `ErrorStrategy::Stop`: from then on no unit is processed
    /// or emitted (those still queued are dropped uncommitted, and read again at the next
    /// start).
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    fn unit_started(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
    }

    /// A unit was finished (or given up under `Stop`).
    pub(crate) fn unit_finished(&self) {
        if self.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle.notify_waiters();
        }
    }

    /// The log start moved past `tp`'s position: nothing below it will arrive.
    pub(crate) fn skip_to(&self, tp: &Tp, offset: u64) {
        self.ledger.lock().skip_to(tp, offset);
    }

    /// `tp`'s log ends below its position: it goes on from the log end, `offset`. Called by
    /// the fetch task of `tp` before it fetches from there: the router learns of it before
    /// the first record it sends from there. `false` (nothing changed) while inputs of `tp`
    /// the log no longer holds are being processed: see [`Ledger::rewind_to`].
    pub(crate) fn rewind_to(&self, tp: &Tp, offset: u64) -> bool {
        if !self.ledger.lock().rewind_to(tp, offset) {
            return false;
        }
        self.rewinds.lock().push((tp.clone(), offset));
        self.rewound.store(true, Ordering::Release);
        true
    }

    /// Commits the ledger's positions if they changed since the last commit, or if the last
    /// commit failed (the ledger's snapshot forgets that anything changed: a failed commit
    /// would otherwise not be made again until something else changes).
    async fn commit(&self) -> Result<()> {
        let mut behind = self.commit_lock.lock().await;
        let snapshot = {
            let mut ledger = self.ledger.lock();
            if !ledger.changed() && !*behind {
                return Ok(());
            }
            ledger.snapshot()
        };
        // Until it succeeds (a commit cancelled half-way counts as failed).
        *behind = true;
        group::commit(&self.client, &self.member, snapshot).await?;
        *behind = false;
        StreamMetrics::add(&self.metrics.commits, 1);
        Ok(())
    }

    fn abort_tasks(&self) {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
    }
}

/// Aborts a session's tasks however the session future ends (dropped included).
struct AbortOnDrop(Arc<Ctx>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort_tasks();
    }
}

/// How a session ended, for the supervisor.
#[derive(Debug)]
pub(crate) enum Outcome {
    Stopped,
    Rebalance,
    Failed(ClientError),
    Aborted(ClientError),
}

/// Runs one session. `member` holds the member id across sessions and is updated on join;
/// `running` is told once the session processes. A stop asked for while the session joins
/// or recovers ends it there (`Stopped`, nothing processed).
pub(crate) async fn run(
    settings: &Settings,
    member: &Mutex<Member>,
    mut stop: watch::Receiver<bool>,
    running: &watch::Sender<bool>,
) -> Result<Outcome> {
    let config = &settings.config;
    let client = &settings.client;
    let group = config.consumer_group.clone();
    // A new member names itself before its first join: a join sent again (the session
    // failed while the rebalance waited for others) is then the same member's to the broker,
    // not one more member holding partitions until its session expires.
    let previous = {
        let mut m = member.lock();
        if m.member_id.is_empty() {
            m.group = group.clone();
            m.member_id = rustmq_protocol::member_id(client.client_id(), fastrand::u64(..));
        }
        m.member_id.clone()
    };
    let setup = async {
        // A broker takes an id it does not know (the member was dropped) as a new member's.
        let (me, assigned) = group::join(
            client,
            &group,
            &previous,
            &config.input_topics,
            settings.session_timeout,
            settings.rebalance_timeout,
        )
        .await?;
        *member.lock() = me.clone();
        tracing::info!(%group, member = %me.member_id, generation = me.generation, partitions = assigned.len(), "stream joined");
        let name = config
            .exactly_once
            .then(|| format!("rustmq.stream.{group}"));
        let prepared = async {
            let identity = group::init_producer(client, name).await?;
            let recovered =
                recovery::recover(client, &group, &assigned, config.exactly_once).await?;
            Ok::<_, ClientError>((identity, recovered))
        };
        // The membership is kept alive from the join on: a recovery longer than the session
        // timeout (a scan of a busy output partition, many partitions' offsets over a slow
        // link) had the member removed before its first heartbeat, and every new session
        // the same. A rebalance heard meanwhile is heard again by the session's heartbeats.
        let keep_alive = async {
            loop {
                tokio::time::sleep(settings.session_timeout / 3).await;
                match group::heartbeat(client, &me).await {
                    // The group rebalances (another member joins, say): this session rejoins
                    // now rather than hold the others up until its setup ends.
                    Ok(true) => break Ok(Outcome::Rebalance),
                    Ok(false) => {}
                    Err(e) if group::generation_moved(&e) => break Ok(Outcome::Rebalance),
                    Err(e) if group::lost_membership(&e) => break Err(e),
                    Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
                }
            }
        };
        let (identity, recovered) = tokio::select! {
            prepared = prepared => prepared?,
            ended = keep_alive => return Ok(Err(ended?)),
        };
        Ok::<_, ClientError>(Ok((me, identity, recovered)))
    };
    // A join may wait for the whole rebalance timeout: a stop does not wait for it (the
    // supervisor leaves the group, under the id named above).
    let (me, identity, recovered) = tokio::select! {
        set_up = setup => match set_up? {
            Ok(set_up) => set_up,
            Err(rebalance) => {
                tracing::info!(%group, "the group rebalanced while the stream set up: joining again");
                return Ok(rebalance);
            }
        },
        _ = stop.wait_for(|s| *s) => {
            tracing::info!(%group, "stream stopped before it started processing");
            return Ok(Outcome::Stopped);
        }
    };
    let windowed = matches!(config.mode, StreamMode::Windowed { .. });
    let mut ledger = Ledger::new(windowed, recovered.closed_up_to);
    ledger.closed_floors(recovered.closed.clone());
    for (tp, position, seen) in &recovered.positions {
        ledger.start_partition(tp.clone(), *position, *seen);
    }
    for lane in &recovered.lanes {
        ledger.open_lane(Arc::clone(&lane.topic), lane.partition, lane.end);
        for (offset, coverage) in &lane.uncovered {
            ledger.output_stored(
                &lane.topic,
                lane.partition,
                *offset,
                *offset,
                coverage.clone(),
            );
        }
    }
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        config: config.clone(),
        window_options: settings.window_options.clone(),
        group: group.clone(),
        processor: Arc::clone(&settings.processor),
        metrics: Arc::clone(&settings.metrics),
        ledger: Mutex::new(ledger),
        default_partitions: settings.default_partitions,
        sink: Sink::new(client, identity, me.clone()),
        member: me.clone(),
        end: Mutex::new(None),
        ended: Notify::new(),
        failed: AtomicBool::new(false),
        aborting: AtomicBool::new(false),
        in_flight: AtomicUsize::new(0),
        idle: Notify::new(),
        tasks: Mutex::new(Vec::new()),
        commit_lock: tokio::sync::Mutex::new(false),
        rewinds: Mutex::new(Vec::new()),
        rewound: AtomicBool::new(false),
    });
    let _guard = AbortOnDrop(Arc::clone(&ctx));

    // Workers.
    let workers_n = config.parallelism;
    let mut worker_handles = Vec::new();
    let mut individual = Vec::new();
    let mut shared_tx = None;
    if matches!(config.mode, StreamMode::Individual) {
        for _ in 0..workers_n {
            let (tx, mut rx) = mpsc::channel::<Unit>(64);
            individual.push(tx);
            let worker_ctx = Arc::clone(&ctx);
            worker_handles.push(ctx.spawn_joined(async move {
                while let Some(u) = rx.recv().await {
                    run_unit(&worker_ctx, u).await;
                }
            }));
        }
    } else {
        let (tx, rx) = mpsc::channel::<Unit>(workers_n * 2);
        shared_tx = Some(tx);
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        for _ in 0..workers_n {
            let worker_ctx = Arc::clone(&ctx);
            let rx = Arc::clone(&rx);
            worker_handles.push(ctx.spawn_joined(async move {
                loop {
                    let next = rx.lock().await.recv().await;
                    match next {
                        Some(u) => run_unit(&worker_ctx, u).await,
                        None => return,
                    }
                }
            }));
        }
    }

    // Router.
    let (in_tx, in_rx) = mpsc::channel::<Incoming>(config.max_in_flight.min(4096));
    let windows = match config.mode {
        StreamMode::Windowed {
            window_size,
            slide_interval,
        } => {
            let spec = WindowSpec {
                size: window_size.as_millis() as u64,
                slide: slide_interval.as_millis() as u64,
                lateness: settings.window_options.allowed_lateness.as_millis() as u64,
            };
            let recovery = WindowRecovery {
                closed_up_to: recovered.closed_up_to,
                closed: recovered.closed.clone(),
                seen: recovered
                    .positions
                    .iter()
                    .filter_map(|(tp, _, s)| Some((tp.clone(), (*s)?)))
                    .collect(),
                emitted: recovery::emitted_windows(&recovered.claims),
            };
            Some(Windows::new(
                spec,
                settings.window_options.idle_timeout,
                recovery,
                recovered.positions.iter().map(|(tp, _, _)| tp.clone()),
                Instant::now(),
            ))
        }
        _ => None,
    };
    let batcher = match config.mode {
        StreamMode::Batch {
            batch_size,
            batch_timeout,
        } => Some(Batcher::new(batch_size, batch_timeout)),
        _ => None,
    };
    let limits = Arc::new(fetch::Limits::new(
        config.max_in_flight,
        settings.max_in_flight_bytes,
        Arc::clone(&ctx.metrics),
    ));
    let router = Router {
        ctx: Arc::clone(&ctx),
        limits: Arc::clone(&limits),
        claims: recovered.claims,
        windows,
        batcher,
        individual,
        shared: shared_tx,
        paused: Duration::ZERO,
    };
    let router_handle = ctx.spawn_joined(router.run(in_rx));

    // Fetchers, heartbeat, committer.
    let (stop_fetch, stop_fetch_rx) = watch::channel(false);
    for (tp, position, _) in &recovered.positions {
        ctx.spawn(fetch::run(
            Arc::clone(&ctx),
            tp.clone(),
            *position,
            Arc::clone(&limits),
            in_tx.clone(),
            stop_fetch_rx.clone(),
        ));
    }
    drop(in_tx);
    ctx.spawn(heartbeat(Arc::clone(&ctx), settings.session_timeout / 3));
    ctx.spawn(committer(Arc::clone(&ctx), settings.commit_interval));
    running.send_replace(true);

    // Wait for the end. The reason stays in `ctx.end`, where a failure or an abort during the
    // drain can replace it.
    loop {
        let notified = ctx.ended.notified();
        if ctx.end.lock().is_some() {
            break;
        }
        tokio::select! {
            _ = notified => {}
            _ = stop.wait_for(|s| *s) => {
                ctx.end_with(End::Stop);
                break;
            }
        }
    }
    let stopping = matches!(&*ctx.end.lock(), Some(End::Stop));
    if !ctx.aborted() {
        stop_fetch.send_replace(true);
        let drained = async {
            let _ = router_handle.await;
            for w in worker_handles {
                let _ = w.await;
            }
            loop {
                let idle = ctx.idle.notified();
                if ctx.in_flight.load(Ordering::Acquire) == 0 || ctx.aborted() {
                    break;
                }
                idle.await;
            }
        };
        tokio::select! {
            _ = drained => {}
            _ = wait_abort(&ctx) => {}
        }
    }
    let outcome = match ctx.end.lock().take().expect("the session's end is set") {
        // `stop` promises that the work is stored and committed: the abort that cut its
        // drain short is its error.
        End::Abort(e) if stopping => Outcome::Failed(e),
        End::Abort(e) => Outcome::Aborted(e),
        End::Failed(e) => Outcome::Failed(e),
        End::Stop => Outcome::Stopped,
        End::Rebalance => Outcome::Rebalance,
    };
    ctx.abort_tasks();
    let outcome = match ctx.commit().await {
        Ok(()) => outcome,
        Err(e) => {
            tracing::warn!(%group, error = %e, "final commit failed");
            match outcome {
                // `stop` promises that the work is committed: it fails with this.
                Outcome::Stopped => Outcome::Failed(e),
                // Uncommitted work is processed again by the next session (or instance).
                other => other,
            }
        }
    };
    tracing::info!(%group, ?outcome, "stream session ended");
    Ok(outcome)
}

/// Runs a unit on a worker. The user's callbacks cannot unwind out of it (`unit::run` turns
/// their panics into the unit's processing error); a panic of the stream's own code there
/// would leave the unit neither finished nor given up, which no drain could wait out: it
/// aborts the session.
async fn run_unit(ctx: &Arc<Ctx>, unit: Unit) {
    if let Err(panic) = AssertUnwindSafe(unit::run(ctx, unit)).catch_unwind().await {
        let message = crate::error::panic_message(&*panic);
        tracing::error!(group = %ctx.group, panic = %message, "stream worker panicked");
        ctx.abort(ClientError::InvalidMessage(format!(
            "a stream worker panicked: {message}"
        )));
    }
}

async fn wait_abort(ctx: &Ctx) {
    loop {
        let n = ctx.ended.notified();
        if ctx.aborted() {
            return;
        }
        n.await;
    }
}

async fn heartbeat(ctx: Arc<Ctx>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match group::heartbeat(&ctx.client, &ctx.member).await {
            Ok(true) => ctx.end_with(End::Rebalance),
            Ok(false) => {}
            Err(e) if group::generation_moved(&e) => ctx.end_with(End::Rebalance),
            Err(e) if group::lost_membership(&e) => ctx.abort(e),
            Err(e) => tracing::debug!(error = %e, "heartbeat failed"),
        }
    }
}

async fn committer(ctx: Arc<Ctx>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        match ctx.commit().await {
            Ok(()) => {}
            // The group moved on (a rebalance, or a subscribed topic deleted): rejoin, as
            // the heartbeat would have said.
            Err(e) if group::generation_moved(&e) => ctx.end_with(End::Rebalance),
            // A refusal no new session can mend (no right to commit to the group, say) ends
            // the stream: else it would run on committing nothing.
            Err(e) if group::lost_membership(&e) || super::handle::is_fatal(&e) => ctx.abort(e),
            Err(e) => {
                tracing::warn!(error = %e, "commit failed; trying again at the next interval")
            }
        }
    }
}

/// Turns fetched messages into units.
struct Router {
    ctx: Arc<Ctx>,
    limits: Arc<fetch::Limits>,
    claims: Claims,
    windows: Option<Windows<(Tp, Message)>>,
    batcher: Option<Batcher<Incoming>>,
    individual: Vec<mpsc::Sender<Unit>>,
    shared: Option<mpsc::Sender<Unit>>,
    /// Windowed mode: time spent waiting for room in the workers' queue, when no partition
    /// could deliver. The windows' clock leaves it out: waiting for the processors does not
    /// make a partition idle.
    paused: Duration,
}

impl Router {
    async fn run(mut self, mut rx: mpsc::Receiver<Incoming>) {
        loop {
            let open = self.batcher.as_ref().is_some_and(Batcher::is_open);
            // An open batch that nothing more can join is closed now rather than at its
            // timeout: a fetch task waits for room, and the batch holds every place taken (no
            // message queued, being processed, or given its place and on its way), so only
            // processing this batch can give room back. (A fetch task takes its bytes before
            // its place: one waiting for bytes, even given part of them, holds no place. One
            // given all its bytes and not yet run still counts as waiting: then the batch
            // closes short of what could have joined. The router is woken when a wait starts
            // and when a message gives its room back while a fetch task waits.)
            if open
                && self.limits.starving()
                && self.batcher.as_ref().map(Batcher::len) == Some(self.limits.places_taken())
            {
                if let Some(batch) = self.batcher.as_mut().and_then(Batcher::flush) {
                    self.dispatch_batch(batch).await;
                }
                continue;
            }
            // The open batch's timeout, or when a partition becomes idle (on the windows'
            // clock): the windows are looked at again then, without a message.
            let deadline = match (&self.batcher, &self.windows) {
                (Some(batcher), _) => batcher.deadline(),
                (None, Some(windows)) => {
                    windows.next_idle().and_then(|d| d.checked_add(self.paused))
                }
                (None, None) => None,
            };
            let incoming = tokio::select! {
                i = rx.recv() => i,
                _ = sleep_until(deadline) => {
                    if let Some(batch) = self.batcher.as_mut().and_then(|b| b.take_due(Instant::now())) {
                        self.dispatch_batch(batch).await;
                    }
                    if self.windows.is_some() {
                        self.tick_windows().await;
                    }
                    continue;
                }
                _ = self.limits.starved(), if open => continue,
            };
            match incoming {
                Some(i) => self.route(i).await,
                None => break,
            }
        }
        if !self.ctx.aborted() {
            if let Some(batch) = self.batcher.as_mut().and_then(Batcher::flush) {
                self.dispatch_batch(batch).await;
            }
        }
    }

    /// Forgets what recovery claimed of inputs whose log ended below their position: the
    /// records they get from the new end on are new ones.
    fn apply_rewinds(&mut self) {
        let rewinds = {
            let mut pending = self.ctx.rewinds.lock();
            self.ctx.rewound.store(false, Ordering::Release);
            std::mem::take(&mut *pending)
        };
        for (tp, offset) in rewinds {
            self.claims.forget_from(&tp, offset);
            if let Some(windows) = self.windows.as_mut() {
                windows.forget_from(&tp, offset);
            }
        }
    }

    async fn route(&mut self, i: Incoming) {
        if self.ctx.rewound.load(Ordering::Acquire) {
            self.apply_rewinds();
        }
        let ctx = &self.ctx;
        if !self.claims.is_empty() && self.claims.is_claimed(&i.tp, i.message.offset) {
            ctx.ledger.lock().adjust(&i.tp, i.message.offset, -1);
            StreamMetrics::add(&ctx.metrics.messages_recovered, 1);
            return;
        }
        if let Some(batcher) = self.batcher.as_mut() {
            if let Some(batch) = batcher.push(i, Instant::now()) {
                self.dispatch_batch(batch).await;
            }
            return;
        }
        if self.windows.is_some() {
            self.place(i).await;
            return;
        }
        let lane = {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            i.tp.hash(&mut h);
            (h.finish() % self.individual.len() as u64) as usize
        };
        let unit = Unit {
            kind: Kind::Single,
            tps: vec![i.tp],
            messages: vec![i.message],
            permits: vec![i.permit],
        };
        self.send(Some(lane), unit).await;
    }

    /// Now, on the windows' clock: real time less the time [`paused`](Self::paused).
    fn clock(&self) -> Instant {
        let now = Instant::now();
        now.checked_sub(self.paused).unwrap_or(now)
    }

    async fn send(&mut self, lane: Option<usize>, unit: Unit) {
        let started = self.windows.is_some().then(Instant::now);
        self.ctx.unit_started();
        let sent = match lane {
            Some(l) => self.individual[l].send(unit).await,
            None => {
                self.shared
                    .as_ref()
                    .expect("shared queue in batch and windowed modes")
                    .send(unit)
                    .await
            }
        };
        if sent.is_err() {
            self.ctx.unit_finished();
        }
        if let Some(started) = started {
            self.paused += started.elapsed();
        }
    }

    async fn dispatch_batch(&mut self, batch: Vec<Incoming>) {
        let mut unit = Unit {
            kind: Kind::Batch,
            tps: Vec::with_capacity(batch.len()),
            messages: Vec::with_capacity(batch.len()),
            permits: Vec::with_capacity(batch.len()),
        };
        for i in batch {
            unit.tps.push(i.tp);
            unit.messages.push(i.message);
            unit.permits.push(i.permit);
        }
        self.send(None, unit).await;
    }

    async fn place(&mut self, i: Incoming) {
        let now = self.clock();
        let windows = self.windows.as_mut().expect("windowed");
        let (tp, offset, ts) = (i.tp.clone(), i.message.offset, i.message.timestamp);
        let placed = windows.place(&tp, offset, ts, &(tp.clone(), i.message.clone()));
        let closed = windows.advance(&tp, ts, now);
        let watermark = windows.watermark();
        // Its dead letter may be written already (read back by recovery): not twice.
        let late_unit = placed.late
            && matches!(
                self.ctx.window_options.late_messages,
                super::config::LatePolicy::DeadLetter { .. }
            )
            && !self.claims.is_late_claimed(&tp, offset);
        {
            let mut ledger = self.ctx.ledger.lock();
            ledger.adjust(&tp, offset, placed.joined as i64 + i64::from(late_unit) - 1);
            ledger.placed(&tp, offset);
            ledger.windows_closed(closed.iter().map(|(span, _)| span.1), watermark);
        }
        if placed.late {
            StreamMetrics::add(&self.ctx.metrics.late_messages, 1);
            tracing::debug!(topic = %tp.topic, partition = tp.partition, offset, ts, "late message");
        }
        if late_unit {
            let unit = Unit {
                kind: Kind::Late,
                tps: vec![tp],
                messages: vec![i.message],
                permits: vec![],
            };
            self.send(None, unit).await;
        }
        drop(i.permit);
        self.emit_windows(closed).await;
    }

    /// Windowed mode, on the timer: partitions that became idle may let the watermark move
    /// on and close windows with no message arriving.
    async fn tick_windows(&mut self) {
        let now = self.clock();
        let windows = self.windows.as_mut().expect("windowed");
        let before = windows.watermark();
        let closed = windows.tick(now);
        let watermark = windows.watermark();
        if closed.is_empty() && watermark == before {
            return;
        }
        self.ctx
            .ledger
            .lock()
            .windows_closed(closed.iter().map(|(span, _)| span.1), watermark);
        self.emit_windows(closed).await;
    }

    /// Hands closed windows (in end order) to the workers.
    async fn emit_windows(&mut self, closed: Vec<(Span, Vec<(Tp, Message)>)>) {
        for (span, mut members) in closed {
            members.sort_by(|a, b| {
                (a.1.timestamp, &a.0, a.1.offset).cmp(&(b.1.timestamp, &b.0, b.1.offset))
            });
            StreamMetrics::add(&self.ctx.metrics.windows_closed, 1);
            let (tps, messages) = members.into_iter().unzip();
            let unit = Unit {
                kind: Kind::Window(span),
                tps,
                messages,
                permits: vec![],
            };
            self.send(None, unit).await;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
