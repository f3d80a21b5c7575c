//! Opening connections, and choosing the broker they go to: the first of the list that
//! answers at start, the broker in use afterwards, the next of the list once it is lost (see
//! the [pool's docs](super)).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};

use super::{Pool, Slot};
use crate::error::{ClientError, Result};
use crate::transport::{deadline_after, Connection};

impl Pool {
    /// Opens a connection to the first broker of the list that answers, which the pool then
    /// uses; the list is tried again per the retry policy until one does.
    ///
    /// Every broker is tried at once, so that a dead broker early in the list costs one
    /// `connect_timeout`, not one per dead broker. A broker that answers is taken once every
    /// broker before it has failed (a live first broker always wins); the others' attempts
    /// are dropped and their connections closed.
    pub(crate) async fn connect_initial(&self) -> Result<()> {
        let mut errors = Vec::new();
        for round in 0..=self.max_retries {
            let mut attempts: FuturesUnordered<_> =
                self.slots
                    .iter()
                    .enumerate()
                    .map(|(index, slot)| async move {
                        (index, self.attempt(slot, None, Pace::Wait).await)
                    })
                    .collect();
            let mut ended: Vec<Option<Result<Connection>>> =
                self.slots.iter().map(|_| None).collect();
            let mut chosen = None;
            while let Some((index, result)) = attempts.next().await {
                ended[index] = Some(result);
                let first = ended.iter().position(|r| !matches!(r, Some(Err(_))));
                if let Some(first) = first.filter(|&i| matches!(ended[i], Some(Ok(_)))) {
                    chosen = Some(first);
                    break;
                }
            }
            // The attempts still running are to brokers after the chosen one: dropped, they
            // tell nothing about those brokers, which must not be paced for it.
            drop(attempts);
            for (slot, result) in self.slots.iter().zip(&ended) {
                if result.is_none() {
                    let mut state = slot.state.lock();
                    if state.failures == 0 {
                        state.retry_at = None;
                    }
                }
            }
            let mut failed = Vec::new();
            let mut winner = None;
            for (index, result) in ended.into_iter().enumerate() {
                match result {
                    Some(Ok(conn)) if Some(index) == chosen => winner = Some((index, conn)),
                    Some(Ok(conn)) => conn.close("client uses a broker earlier in the list"),
                    Some(Err(error)) => failed.push((index, &self.slots[index].address, error)),
                    None => {}
                }
            }
            if let Some((index, conn)) = winner {
                for (_, broker, error) in failed.iter().filter(|(i, ..)| *i < index) {
                    tracing::warn!(%broker, %error, "broker unreachable; using the next in the list");
                }
                let start = self.active.load(Ordering::Acquire);
                self.register(start, index, Arc::new(conn))?;
                return Ok(());
            }
            if let Some(i) = failed.iter().position(|(.., e)| !e.is_retryable()) {
                return Err(failed.swap_remove(i).2);
            }
            errors = failed
                .into_iter()
                .map(|(_, address, error)| format!("{address}: {error}"))
                .collect::<Vec<_>>();
            tracing::debug!(round, "no broker reachable yet");
        }
        Err(ClientError::Connection(format!(
            "cannot connect to any broker after {} attempts: {}",
            self.max_retries + 1,
            errors.join("; ")
        )))
    }

    /// Opens a connection to the broker in use, or else to the next of the list that answers
    /// (which is then used), trying them all for `max_retries + 1` rounds. The broker in use
    /// is waited for if its backoff ends before `deadline`; with several brokers the first
    /// round skips the others while they back off (the next not backing off is tried at once),
    /// and later rounds wait out their backoffs too.
    pub(super) async fn connect_any(&self, deadline: Instant) -> Result<Arc<Connection>> {
        let mut errors = Vec::new();
        for round in 0..=self.max_retries {
            // Every move of this round is from this broker: one a request made meanwhile
            // is not undone.
            let start = self.active.load(Ordering::Acquire);
            errors.clear();
            for (index, slot) in self.failover_order(start) {
                // Another request may have reconnected or failed over meanwhile.
                if let Some(conn) = self.live_in_use() {
                    return Ok(conn);
                }
                let pace = if round > 0 || self.slots.len() == 1 {
                    Pace::Wait
                } else if index == start {
                    // Waited for only if a whole attempt still fits before the deadline:
                    // a broker gone silent would otherwise take every request's time, and
                    // the next broker none.
                    Pace::WaitLeaving(self.connector.connect_timeout())
                } else {
                    Pace::Skip
                };
                match self.open(start, index, Some(deadline), pace).await {
                    Ok(conn) => return Ok(conn),
                    Err(error) if !error.is_retryable() => return Err(error),
                    Err(error) => errors.push((slot, error)),
                }
            }
            if let Some(conn) = self.live_in_use() {
                return Ok(conn);
            }
            if (round > 0 || self.slots.len() == 1 || round == self.max_retries)
                && errors
                    .iter()
                    .all(|(_, e)| matches!(e, ClientError::NoConnectionsAvailable))
            {
                return Err(ClientError::NoConnectionsAvailable);
            }
        }
        let reasons: Vec<String> = errors
            .iter()
            .map(|(s, e)| format!("{}: {e}", s.address))
            .collect();
        Err(ClientError::Connection(format!(
            "no broker reachable: {}",
            reasons.join("; ")
        )))
    }

    /// Opens a connection to broker `index` (the broker in use if it is `from`, else the one
    /// to move to from `from`), unless another task opened one meanwhile; see
    /// [`register`](Self::register) for what becomes of it. Fails with
    /// [`ClientError::NoConnectionsAvailable`] once `from` is no longer in use, or if the
    /// broker is backing off and `pace` says not to wait (see [`Pace`]). The attempt ends by
    /// `deadline` (and `connect_timeout`).
    pub(super) async fn open(
        &self,
        from: usize,
        index: usize,
        deadline: Option<Instant>,
        pace: Pace,
    ) -> Result<Arc<Connection>> {
        let slot = &self.slots[index];
        let live_before = slot.live().len();
        let _guard = slot.opening.lock().await;
        if self.active.load(Ordering::Acquire) != from {
            return Err(ClientError::NoConnectionsAvailable);
        }
        if index != from {
            // The broker in use came back while this failover waited for the lock.
            if let Some(back) = self.live_in_use() {
                return Ok(back);
            }
        }
        let live = slot.live();
        if live.len() > live_before || live.len() >= self.max_connections {
            // Opened by the task we waited for, or no room: the least loaded will do.
            if let Some(conn) = live.into_iter().min_by_key(|c| c.in_flight()) {
                return Ok(conn);
            }
        }
        let conn = self.attempt(slot, deadline, pace).await?;
        self.register(from, index, Arc::new(conn))
    }

    /// Connects to `slot`'s broker, waiting out its backoff first as `pace` says, and records
    /// the outcome in its backoff state; the connection is not added to the pool.
    pub(super) async fn attempt(
        &self,
        slot: &Slot,
        deadline: Option<Instant>,
        pace: Pace,
    ) -> Result<Connection> {
        let (retry_at, failures) = {
            let state = slot.state.lock();
            (state.retry_at, state.failures)
        };
        if let Some(at) = retry_at.filter(|at| *at > Instant::now()) {
            match pace {
                Pace::Ignore => {}
                // A broker that never failed is only paced (an attempt abandoned by its
                // caller): nothing says it is gone, so it is waited for as by `Wait`, not left.
                Pace::Wait | Pace::WaitLeaving(_)
                    if (failures == 0 || matches!(pace, Pace::Wait))
                        && deadline.is_none_or(|d| at <= d) =>
                {
                    self.sleep_until(at).await?
                }
                Pace::WaitLeaving(attempt)
                    if deadline.is_none_or(|d| deadline_after(at, attempt) <= d) =>
                {
                    self.sleep_until(at).await?
                }
                Pace::Wait | Pace::WaitLeaving(_) | Pace::Skip => {
                    return Err(ClientError::NoConnectionsAvailable)
                }
            }
        }
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        if deadline.is_some_and(|d| d <= Instant::now()) {
            // No time left to try: not a failure of the broker's.
            return Err(ClientError::NoConnectionsAvailable);
        }
        // Dropped unfinished, it counts as failed if cut off by its deadline, so that the
        // broker's backoff applies to the next attempt all the same.
        let mut attempt = Attempt {
            pool: self,
            slot,
            deadline,
            done: false,
        };
        let connected = self.connector.connect(&slot.address, deadline).await;
        attempt.done = true;
        match connected {
            Ok(conn) => {
                let mut state = slot.state.lock();
                state.failures = 0;
                state.retry_at = None;
                if state.lost > 0 {
                    state.lost -= 1;
                    self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                Ok(conn)
            }
            Err(error) => {
                self.record_failure(slot, &error);
                Err(error)
            }
        }
    }

    /// Adds `conn`, a new connection to broker `to`, to the pool, `from` being the broker in
    /// use when its attempt began; gives the connection to use.
    ///
    /// With `to == from`, it joins the broker's connections. Otherwise the pool moves to `to`,
    /// unless `from` has live connections again (another request reconnected to it): then
    /// `conn` is closed and the least loaded of those is given instead, so that a broker that
    /// came back is not cut off with requests in flight. Fails (closing `conn`) once `from` is
    /// no longer in use, or the pool is closed.
    ///
    /// `from`'s list of connections stays locked from the check to the move: a connection
    /// registered to `from` is either seen by a move (which is then called off) or refused.
    pub(super) fn register(
        &self,
        from: usize,
        to: usize,
        conn: Arc<Connection>,
    ) -> Result<Arc<Connection>> {
        let in_use = &self.slots[from];
        let mut connections = in_use.live_guard();
        if self.is_closed() {
            conn.close("client closed");
            return Err(ClientError::Closed);
        }
        if self.active.load(Ordering::Acquire) != from {
            drop(connections);
            conn.close("client moved to another broker");
            return Err(ClientError::NoConnectionsAvailable);
        }
        if from == to {
            connections.push(conn.clone());
        } else if let Some(back) = connections.iter().min_by_key(|c| c.in_flight()).cloned() {
            drop(connections);
            tracing::debug!(broker = %in_use.address, "broker in use is back; staying on it");
            conn.close("client stays on the broker in use");
            return Ok(back);
        } else {
            if self
                .active
                .compare_exchange(from, to, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                drop(connections);
                conn.close("client moved to another broker");
                return Err(ClientError::NoConnectionsAvailable);
            }
            drop(connections);
            tracing::info!(from = %in_use.address, to = %self.slots[to].address, "using another broker");
            // No request goes to `to` before this: one that finds it without connections
            // waits for its opening lock, which the caller holds.
            let mut moved_to = self.slots[to].connections.lock();
            if self.is_closed() {
                // Closed since the check above: `close` may have drained `to` already.
                drop(moved_to);
                conn.close("client closed");
                return Err(ClientError::Closed);
            }
            moved_to.push(conn.clone());
        }
        *self.limits.lock() = Some(conn.limits());
        Ok(conn)
    }

    /// Sets `slot`'s broker's backoff after a failed connection attempt (or one cut off by
    /// its request's deadline).
    pub(super) fn record_failure(&self, slot: &Slot, error: &dyn std::fmt::Display) {
        let mut state = slot.state.lock();
        let delay = self.backoff.delay(state.failures);
        state.failures = state.failures.saturating_add(1);
        state.retry_at = Some(deadline_after(Instant::now(), delay));
        tracing::debug!(broker = %slot.address, %error, failures = state.failures, retry_in_ms = delay.as_millis() as u64, "connection attempt failed");
    }

    /// Delays the next attempt to `slot`'s broker by its current backoff, without growing it:
    /// an attempt its caller abandoned before its deadline tells nothing about the broker,
    /// but requests cancelled in a loop must not each start a handshake.
    pub(super) fn pace(&self, slot: &Slot) {
        let mut state = slot.state.lock();
        let delay = self.backoff.delay(state.failures.saturating_sub(1));
        let at = deadline_after(Instant::now(), delay);
        state.retry_at = Some(state.retry_at.map_or(at, |r| r.max(at)));
        tracing::debug!(broker = %slot.address, failures = state.failures, retry_in_ms = delay.as_millis() as u64, "connection attempt abandoned");
    }

    /// The live connection to the broker in use with the fewest requests in flight.
    pub(super) fn live_in_use(&self) -> Option<Arc<Connection>> {
        self.active_slot()
            .live_guard()
            .iter()
            .min_by_key(|c| c.in_flight())
            .cloned()
    }

    /// The brokers, with their index, in the order a lost broker `start` is replaced: itself,
    /// then those after it in the list, then those before it.
    pub(super) fn failover_order(&self, start: usize) -> impl Iterator<Item = (usize, &Slot)> {
        let n = self.slots.len();
        (0..n).map(move |i| {
            let index = (start + i) % n;
            (index, &self.slots[index])
        })
    }
}

/// How [`Pool::open`] treats a broker backing off after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pace {
    /// Fail fast with [`ClientError::NoConnectionsAvailable`].
    Skip,
    /// Wait the backoff out if it ends before the deadline (any backoff without one), else
    /// fail fast.
    Wait,
    /// As `Wait`, if the backoff ends at least this long (a whole attempt) before the
    /// deadline; as `Wait` whatever is left if the broker never failed (it is only paced).
    WaitLeaving(Duration),
    /// Attempt at once.
    Ignore,
}

/// A connection attempt in progress. Dropped unfinished at or past its deadline, it counts
/// as a failed attempt; dropped before (its caller gave up: a `timeout` or `select!` around
/// the request), it only delays the next attempt (see [`Pool::pace`]).
struct Attempt<'a> {
    pool: &'a Pool,
    slot: &'a Slot,
    deadline: Option<Instant>,
    done: bool,
}

impl Drop for Attempt<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.pool
                .record_failure(self.slot, &"attempt cut off by its request's deadline");
        } else {
            self.pool.pace(self.slot);
        }
    }
}
