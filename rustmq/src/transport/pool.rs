//! The connection pool: connections per broker, opened on demand, spread by load, replaced
//! with backoff when they die.
//!
//! Policy, in order, for each request:
//! 1. use the live connection with the fewest requests in flight that has a free slot;
//! 2. if all are busy (or none is live), open another to the broker with the fewest
//!    connections, up to `max_connections` per broker;
//! 3. otherwise wait for a slot on the least loaded connection.
//!
//! A connection QUIC reports closed is dropped the next time the pool looks at it. Opening a
//! connection to a broker whose last attempt failed waits out that broker's backoff first, so
//! a down broker is probed at a decreasing rate rather than hammered by every request.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rustmq_protocol::{BrokerLimits, Request, Response};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use super::backoff::Backoff;
use super::connector::Connector;
use super::{is_safe_to_repeat, BrokerAddress, Connection, Counters};
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};

/// All connections of one client.
#[derive(Debug)]
pub(crate) struct Pool {
    connector: Connector,
    slots: Vec<Slot>,
    max_connections: usize,
    max_retries: u32,
    backoff: Backoff,
    health_check_timeout: Duration,
    counters: Arc<Counters>,
    closed: AtomicBool,
    /// Rotates the first broker tried, so that equal candidates share the load.
    next_slot: AtomicUsize,
    limits: parking_lot::Mutex<Option<BrokerLimits>>,
}

/// Connections to one broker.
#[derive(Debug)]
struct Slot {
    address: BrokerAddress,
    connections: parking_lot::Mutex<Vec<Arc<Connection>>>,
    /// Serialises opening, so that a burst of requests opens one connection, not one each.
    opening: tokio::sync::Mutex<()>,
    state: parking_lot::Mutex<SlotState>,
}

#[derive(Debug, Default)]
struct SlotState {
    /// Consecutive failed connection attempts.
    failures: u32,
    /// No attempt before this instant.
    retry_at: Option<Instant>,
    /// Connections dropped as dead and not yet replaced (for the reconnect counter).
    lost: usize,
}

/// Outcome of pinging every connection.
#[derive(Debug, Default)]
pub(crate) struct HealthReport {
    /// Connections that answered.
    pub(crate) healthy: usize,
    /// Connections pinged.
    pub(crate) total: usize,
    /// Round-trip times of the answered pings.
    pub(crate) latencies: Vec<Duration>,
    /// Why the others failed (including failed attempts to open a connection).
    pub(crate) errors: Vec<ClientError>,
}

/// Point-in-time counts for `connection_stats`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PoolStats {
    pub(crate) active_connections: usize,
    pub(crate) in_flight: usize,
    pub(crate) udp_payload_size: Option<u16>,
}

impl Pool {
    /// A pool for the configured brokers, with no connection yet.
    pub(crate) fn new(config: &ClientConfig, client_id: String) -> Result<Self> {
        let counters = Arc::new(Counters::default());
        let slots = config
            .brokers
            .iter()
            .map(|b| {
                Ok(Slot {
                    address: BrokerAddress::parse(b)?,
                    connections: parking_lot::Mutex::new(Vec::new()),
                    opening: tokio::sync::Mutex::new(()),
                    state: parking_lot::Mutex::new(SlotState::default()),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Pool {
            connector: Connector::new(config, client_id, counters.clone())?,
            slots,
            max_connections: config.max_connections,
            max_retries: config.retry_config.max_retries,
            backoff: Backoff::new(&config.retry_config),
            health_check_timeout: config.health_check_timeout,
            counters,
            closed: AtomicBool::new(false),
            next_slot: AtomicUsize::new(0),
            limits: parking_lot::Mutex::new(None),
        })
    }

    /// Opens one connection per broker, retrying per the retry policy until at least one
    /// broker is reachable. Brokers that stay unreachable are retried later on demand.
    pub(crate) async fn connect_initial(&self) -> Result<()> {
        let mut errors = Vec::new();
        for round in 0..=self.max_retries {
            let results =
                futures::future::join_all(self.slots.iter().map(|s| self.open(s, None))).await;
            if results.iter().any(Result::is_ok) {
                for (slot, result) in self.slots.iter().zip(&results) {
                    if let Err(error) = result {
                        tracing::warn!(broker = %slot.address, %error, "broker unreachable; will retry on demand");
                    }
                }
                return Ok(());
            }
            errors.clear();
            for (slot, result) in self.slots.iter().zip(results) {
                let Err(error) = result else { continue };
                if !error.is_retryable() {
                    return Err(error);
                }
                errors.push(format!("{}: {error}", slot.address));
            }
            tracing::debug!(round, "no broker reachable yet");
        }
        Err(ClientError::Connection(format!(
            "cannot connect to any broker after {} attempts: {}",
            self.max_retries + 1,
            errors.join("; ")
        )))
    }

    /// Sends a request and reads its answer within `timeout`, re-sending requests that are
    /// safe to repeat after a lost connection.
    pub(crate) async fn request(&self, request: &Request, timeout: Duration) -> Result<Response> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        self.counters.total_requests.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("request", kind = %request.kind());
        let started = Instant::now();
        let result = self
            .send_with_retries(request, started + timeout, timeout)
            .instrument(span.clone())
            .await
            // Closing the client fails requests in flight with a lost connection; say why.
            .map_err(|e| {
                if self.is_closed() && e.is_transport_loss() {
                    ClientError::Closed
                } else {
                    e
                }
            });
        if result.is_err() {
            self.counters
                .failed_requests
                .fetch_add(1, Ordering::Relaxed);
        }
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "request done"),
            Err(error) => tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, %error, "request failed"),
        });
        result
    }

    async fn send_with_retries(
        &self,
        request: &Request,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Response> {
        let safe = is_safe_to_repeat(request);
        let mut retries = 0;
        loop {
            // A free slot on a live connection is taken without setting up the timeout.
            let (conn, permit) = match self.reserve_least_busy() {
                Some(reserved) => reserved,
                None => tokio::time::timeout_at(deadline.into(), self.acquire(deadline))
                    .await
                    .map_err(|_| ClientError::timeout(timeout))??,
            };
            let error =
                match tokio::time::timeout_at(deadline.into(), conn.request(request, permit)).await
                {
                    Ok(Ok(response)) => return Ok(response),
                    Ok(Err(error)) => error,
                    Err(_) => {
                        // A broker that restarted without telling us looks exactly like this:
                        // check the connection rather than wait for QUIC's idle timeout.
                        self.probe(&conn);
                        return Err(ClientError::timeout(timeout));
                    }
                };
            let lost = conn.is_closed();
            if !safe
                || !error.is_transport_loss()
                || retries >= self.max_retries
                || self.is_closed()
            {
                return Err(error);
            }
            retries += 1;
            tracing::debug!(%error, retries, broker = conn.broker(), "re-sending after connection loss");
            // A dead connection is replaced through the broker's backoff; a live one that
            // failed this stream gets a pause of its own before the next try.
            if !lost {
                tokio::time::sleep_until(
                    deadline
                        .min(Instant::now() + self.backoff.delay(retries - 1))
                        .into(),
                )
                .await;
            }
        }
    }

    /// A connection with a free in-flight slot, opening one if needed.
    async fn acquire(&self, deadline: Instant) -> Result<(Arc<Connection>, OwnedSemaphorePermit)> {
        loop {
            if self.is_closed() {
                return Err(ClientError::Closed);
            }
            let mut live = self.live_connections();
            live.sort_by_key(|c| c.in_flight());
            if let Some((conn, permit)) = live.iter().find_map(|c| c.try_reserve().map(|p| (c, p)))
            {
                return Ok((conn.clone(), permit));
            }
            if live.is_empty() {
                let conn = self.connect_any(deadline).await?;
                if let Some(permit) = conn.try_reserve() {
                    return Ok((conn, permit));
                }
                continue;
            }
            // Every live connection is busy: add one where there is room, without waiting
            // out a broker's backoff (a busy connection frees up sooner).
            if let Some(slot) = self.slot_with_room() {
                match self.open(slot, Some(Instant::now())).await {
                    Ok(conn) => {
                        if let Some(permit) = conn.try_reserve() {
                            return Ok((conn, permit));
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "cannot add a connection; waiting for a busy one")
                    }
                }
            }
            let least = &live[0];
            let permit = least.reserve().await?;
            if !least.is_closed() {
                return Ok((least.clone(), permit));
            }
        }
    }

    /// A slot on the live connection with the fewest requests in flight, if it has one free
    /// now (and the pool is open): the common case, found without collecting the connections.
    /// A request that finds none goes on to [`acquire`](Self::acquire), which searches every
    /// connection, opens one, or waits.
    fn reserve_least_busy(&self) -> Option<(Arc<Connection>, OwnedSemaphorePermit)> {
        if self.is_closed() {
            return None;
        }
        let mut least: Option<(usize, Arc<Connection>)> = None;
        for slot in self.slots.iter() {
            for conn in slot.live_guard().iter() {
                let in_flight = conn.in_flight();
                if least.as_ref().is_none_or(|(n, _)| in_flight < *n) {
                    least = Some((in_flight, Arc::clone(conn)));
                }
            }
        }
        let (_, conn) = least?;
        let permit = conn.try_reserve()?;
        Some((conn, permit))
    }

    /// Opens a connection to some broker, trying each in turn for `max_retries + 1` rounds.
    async fn connect_any(&self, deadline: Instant) -> Result<Arc<Connection>> {
        let mut errors = Vec::new();
        for _ in 0..=self.max_retries {
            errors.clear();
            for slot in self.slots_in_order() {
                match self.open(slot, Some(deadline)).await {
                    Ok(conn) => return Ok(conn),
                    Err(error) if !error.is_retryable() => return Err(error),
                    Err(error) => errors.push((slot, error)),
                }
            }
            if errors
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

    /// Opens a connection to `slot`'s broker after its backoff, unless another task opened
    /// one meanwhile. With a `deadline`, a backoff ending after it fails fast with
    /// [`ClientError::NoConnectionsAvailable`].
    async fn open(&self, slot: &Slot, deadline: Option<Instant>) -> Result<Arc<Connection>> {
        let live_before = slot.live().len();
        let _guard = slot.opening.lock().await;
        let live = slot.live();
        if live.len() > live_before || live.len() >= self.max_connections {
            // Opened by the task we waited for, or no room: the least loaded will do.
            if let Some(conn) = live.into_iter().min_by_key(|c| c.in_flight()) {
                return Ok(conn);
            }
        }
        let retry_at = slot.state.lock().retry_at;
        if let Some(at) = retry_at.filter(|at| *at > Instant::now()) {
            if deadline.is_some_and(|d| at > d) {
                return Err(ClientError::NoConnectionsAvailable);
            }
            tokio::time::sleep_until(at.into()).await;
        }
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        match self.connector.connect(&slot.address).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                if self.is_closed() {
                    conn.close("client closed");
                    return Err(ClientError::Closed);
                }
                {
                    let mut state = slot.state.lock();
                    state.failures = 0;
                    state.retry_at = None;
                    if state.lost > 0 {
                        state.lost -= 1;
                        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                }
                *self.limits.lock() = Some(conn.limits());
                slot.connections.lock().push(conn.clone());
                Ok(conn)
            }
            Err(error) => {
                let mut state = slot.state.lock();
                let delay = self.backoff.delay(state.failures);
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(Instant::now() + delay);
                tracing::debug!(broker = %slot.address, %error, failures = state.failures, retry_in_ms = delay.as_millis() as u64, "connection attempt failed");
                Err(error)
            }
        }
    }

    /// Brokers by number of live connections, rotating among equals.
    fn slots_in_order(&self) -> Vec<&Slot> {
        let start = self.next_slot.fetch_add(1, Ordering::Relaxed);
        let n = self.slots.len();
        let mut order: Vec<&Slot> = (0..n).map(|i| &self.slots[(start + i) % n]).collect();
        order.sort_by_key(|s| s.live().len());
        order
    }

    fn slot_with_room(&self) -> Option<&Slot> {
        self.slots_in_order()
            .into_iter()
            .find(|s| s.live().len() < self.max_connections)
    }

    /// Every live connection; dead ones are dropped on the way.
    fn live_connections(&self) -> Vec<Arc<Connection>> {
        self.slots.iter().flat_map(Slot::live).collect()
    }

    /// quinn's counters of every live connection (what went over the wire).
    #[cfg(test)]
    pub(crate) fn quic_stats(&self) -> Vec<quinn::ConnectionStats> {
        self.live_connections()
            .iter()
            .map(|c| c.quic_stats())
            .collect()
    }

    /// Pings the connection in the background and closes it if it does not answer.
    fn probe(&self, conn: &Arc<Connection>) {
        if !conn.start_probe() {
            return;
        }
        let conn = conn.clone();
        let timeout = self.health_check_timeout;
        tokio::spawn(async move {
            if let Err(error) = conn.ping(timeout).await {
                if !matches!(error, ClientError::Broker { .. }) {
                    tracing::warn!(broker = conn.broker(), %error, "connection failed its probe; closing it");
                    conn.close("health check failed");
                }
            }
            conn.end_probe();
        });
    }

    /// Pings every connection within `health_check_timeout`; those that fail are closed and
    /// dropped. Brokers without a connection get an attempt first (if not backing off).
    pub(crate) async fn check_health(&self) -> HealthReport {
        let mut report = HealthReport::default();
        let missing = self.slots.iter().filter(|s| s.live().is_empty());
        let opened =
            futures::future::join_all(missing.map(|s| self.open(s, Some(Instant::now())))).await;
        let live = self.live_connections();
        let pings =
            futures::future::join_all(live.iter().map(|c| c.ping(self.health_check_timeout))).await;
        report.total = live.len();
        for (conn, result) in live.iter().zip(pings) {
            match result {
                Ok(rtt) => {
                    report.healthy += 1;
                    report.latencies.push(rtt);
                }
                // An error answer (say, throttled) still proves the broker is there.
                Err(ClientError::Broker { .. }) => report.healthy += 1,
                Err(error) => {
                    tracing::warn!(broker = conn.broker(), %error, "health check failed; closing connection");
                    conn.close("health check failed");
                    report.errors.push(error);
                }
            }
        }
        if report.total == 0 {
            report
                .errors
                .extend(opened.into_iter().filter_map(Result::err));
        }
        report
    }

    /// Closes every connection; later requests fail with [`ClientError::Closed`].
    pub(crate) async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for slot in &self.slots {
            for conn in slot.connections.lock().drain(..) {
                conn.close("client closed");
            }
        }
        self.connector.close().await;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The limits of the most recently connected broker.
    pub(crate) fn limits(&self) -> Option<BrokerLimits> {
        self.limits.lock().clone()
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let live = self.live_connections();
        PoolStats {
            active_connections: live.len(),
            in_flight: live.iter().map(|c| c.in_flight()).sum(),
            udp_payload_size: live.iter().map(|c| c.udp_payload_size()).min(),
        }
    }
}

impl Slot {
    /// Live connections; closed ones are removed and counted as lost.
    fn live(&self) -> Vec<Arc<Connection>> {
        self.live_guard().clone()
    }

    /// The list of connections, closed ones removed (and counted as lost), held locked.
    fn live_guard(&self) -> parking_lot::MutexGuard<'_, Vec<Arc<Connection>>> {
        let mut connections = self.connections.lock();
        let before = connections.len();
        connections.retain(|c| !c.is_closed());
        let dropped = before - connections.len();
        if dropped > 0 {
            self.state.lock().lost += dropped;
            tracing::debug!(broker = %self.address, dropped, "dropped closed connections");
        }
        connections
    }
}

/// Runs [`Pool::check_health`] every `interval` until the pool is dropped or closed.
pub(crate) fn spawn_health_task(
    pool: Weak<Pool>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            if pool.is_closed() {
                return;
            }
            let report = pool.check_health().await;
            tracing::debug!(
                healthy = report.healthy,
                total = report.total,
                "health check"
            );
        }
    })
}
