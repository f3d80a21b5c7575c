//! The connection pool: connections to one broker at a time, opened on demand, spread by
//! load, replaced with backoff when they die.
//!
//! The configured brokers are bootstrap and failover addresses, not a cluster: every broker is
//! standalone (it names only itself as the leader of its partitions), so a partition's records,
//! a group's members and its commits must all go to the same one. At start every broker of the
//! list is tried at once, and the pool uses the first of the list that answers (a broker
//! answering is taken once every broker before it in the list has failed); it then keeps to it
//! while it is reachable. Only when it is lost (no live connection left, and reconnecting to it
//! fails or is backing off past the request's deadline) does the pool move on to the next
//! broker of the list (wrapping around), which it then keeps to in turn.
//!
//! Policy, in order, for each request, on the broker in use:
//! 1. use the live connection with the fewest requests in flight that has a free slot;
//! 2. if all are busy, open another, up to `max_connections`;
//! 3. otherwise wait for the first slot freed on any of them;
//! 4. with no live connection, reconnect, or fail over as above.
//!
//! Only the broker in use holds connections. A move to another broker is a compare-exchange
//! from the broker the failover began from, made under that broker's list of connections: if
//! the broker came back meanwhile (another request reconnected to it), the new connection is
//! closed and the pool stays; a connection opened to a broker that is no longer in use is
//! closed rather than kept. So a move never cuts requests in flight on a broker that works.
//!
//! A connection QUIC reports closed, or on which the broker answered `ShuttingDown`, is dropped
//! the next time the pool looks at it (requests in flight on it keep it until they end). Opening a
//! connection to a broker whose last attempt failed (or was cut off by its request's deadline)
//! waits out that broker's backoff first, so a down broker is probed at a decreasing rate
//! rather than hammered by every request. An attempt its caller abandons before its deadline
//! (a `timeout` or `select!` around a request) is no failure of the broker's: it delays the
//! next attempt by the current backoff without growing it. Closing the pool wakes requests
//! waiting out a backoff.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use rustmq_protocol::{BrokerLimits, ErrorCode, Request, Response};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument;

use self::connect::Pace;
use super::backoff::Backoff;
use super::connector::Connector;
use super::{deadline_after, is_safe_to_repeat, BrokerAddress, Connection, Counters, Written};
use crate::config::ClientConfig;
use crate::error::{ClientError, Result};

mod connect;

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
    /// Notified once, by [`close`](Pool::close): wakes the requests waiting out a backoff.
    closing: tokio::sync::Notify,
    /// The broker in use: an index into `slots`.
    active: AtomicUsize,
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
            closing: tokio::sync::Notify::new(),
            active: AtomicUsize::new(0),
            limits: parking_lot::Mutex::new(None),
        })
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
            .send_with_retries(request, deadline_after(started, timeout), timeout)
            .instrument(span.clone())
            .await;
        let result = self.settle(result);
        span.in_scope(|| match &result {
            Ok(_) => tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "request done"),
            Err(error) => tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, %error, "request failed"),
        });
        result
    }

    /// Writes a request within `timeout` without waiting for its answer, which
    /// [`Unanswered::answer`] reads (within the same `timeout`, counted from now). The request
    /// holds its connection's in-flight slot until then. Never re-sent.
    pub(crate) async fn write_request(
        self: &Arc<Self>,
        request: &Request,
        timeout: Duration,
    ) -> Result<Unanswered> {
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        self.counters.total_requests.fetch_add(1, Ordering::Relaxed);
        let deadline = deadline_after(Instant::now(), timeout);
        let written = async {
            let (conn, permit) = self.reserve(deadline, timeout).await?;
            match tokio::time::timeout_at(deadline.into(), conn.write(request)).await {
                Ok(Ok(written)) => Ok(Unanswered {
                    pool: Arc::clone(self),
                    conn,
                    written,
                    permit,
                    deadline,
                    timeout,
                }),
                Ok(Err(error)) => Err(error),
                Err(_) => {
                    self.probe(&conn);
                    Err(ClientError::timeout(timeout))
                }
            }
        }
        .await;
        match written {
            Ok(unanswered) => Ok(unanswered),
            Err(error) => self.settle(Err(error)),
        }
    }

    /// Counts a failed request. Closing the client fails its requests in flight with a lost
    /// connection: those get [`ClientError::Closed`], which says why.
    fn settle<T>(&self, result: Result<T>) -> Result<T> {
        result.map_err(|e| {
            self.counters
                .failed_requests
                .fetch_add(1, Ordering::Relaxed);
            if self.is_closed() && e.is_transport_loss() {
                ClientError::Closed
            } else {
                e
            }
        })
    }

    /// A connection and an in-flight slot on it before `deadline` (`timeout` after the
    /// request began).
    async fn reserve(
        &self,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<(Arc<Connection>, OwnedSemaphorePermit)> {
        // A free slot on a live connection is taken without setting up the timeout.
        if let Some(reserved) = self.reserve_least_busy() {
            return Ok(reserved);
        }
        match tokio::time::timeout_at(deadline.into(), self.acquire(deadline)).await {
            Ok(Ok(reserved)) => Ok(reserved),
            // An attempt to connect cut off by the deadline is the request's timeout.
            Ok(Err(error)) if error.is_retryable() && Instant::now() >= deadline => {
                tracing::debug!(%error, "no connection before the deadline");
                Err(ClientError::timeout(timeout))
            }
            Ok(Err(error)) => Err(error),
            Err(_) => Err(ClientError::timeout(timeout)),
        }
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
            let (conn, permit) = self.reserve(deadline, timeout).await?;
            // Not sent past its deadline (a reserve may end as it comes, and the send's first
            // poll writes the request before its timeout is looked at).
            if Instant::now() >= deadline {
                return Err(ClientError::timeout(timeout));
            }
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
            // A broker that answered `ShuttingDown` is still there: the retry waits as after
            // any failed stream, then opens a new connection (this one takes no new request).
            let lost = conn.is_lost();
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
                let pause = deadline_after(Instant::now(), self.backoff.delay(retries - 1));
                self.sleep_until(deadline.min(pause)).await?;
            }
        }
    }

    /// A connection to the broker in use with a free in-flight slot, opening one if needed
    /// (failing over to the next broker if the one in use is lost).
    async fn acquire(&self, deadline: Instant) -> Result<(Arc<Connection>, OwnedSemaphorePermit)> {
        loop {
            if self.is_closed() {
                return Err(ClientError::Closed);
            }
            let index = self.active.load(Ordering::Acquire);
            let mut live = self.slots[index].live();
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
            // Every live connection is busy: add one if there is room, without waiting out
            // the broker's backoff (a busy connection frees up sooner).
            if live.len() < self.max_connections {
                // Refused if the pool moved to another broker meanwhile.
                match self.open(index, index, Some(deadline), Pace::Skip).await {
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
            // The first slot freed on any of them: one connection may hold long polls while
            // another's requests end at once.
            let waits = live
                .iter()
                .map(|conn| Box::pin(async move { (conn, conn.reserve().await) }));
            let ((conn, permit), _, _) = futures::future::select_all(waits).await;
            let permit = permit?;
            if !conn.is_closed() {
                return Ok((conn.clone(), permit));
            }
        }
    }

    /// A slot on the live connection to the broker in use with the fewest requests in
    /// flight, if it has one free now (and the pool is open): the common case, found without
    /// collecting the connections. A request that finds none goes on to
    /// [`acquire`](Self::acquire), which searches every connection, opens one, or waits.
    fn reserve_least_busy(&self) -> Option<(Arc<Connection>, OwnedSemaphorePermit)> {
        if self.is_closed() {
            return None;
        }
        let conn = self
            .active_slot()
            .live_guard()
            .iter()
            .min_by_key(|c| c.in_flight())
            .cloned()?;
        let permit = conn.try_reserve()?;
        Some((conn, permit))
    }

    /// Sleeps until `at`, or until the pool closes: then [`ClientError::Closed`].
    async fn sleep_until(&self, at: Instant) -> Result<()> {
        let closing = self.closing.notified();
        tokio::pin!(closing);
        // Registered before the check: a close from now on wakes it.
        closing.as_mut().enable();
        if self.is_closed() {
            return Err(ClientError::Closed);
        }
        tokio::select! {
            () = tokio::time::sleep_until(at.into()) => Ok(()),
            () = closing => Err(ClientError::Closed),
        }
    }

    /// The broker in use.
    fn active_slot(&self) -> &Slot {
        &self.slots[self.active.load(Ordering::Acquire)]
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

    /// The UDP ports the client's endpoints are bound to.
    #[cfg(test)]
    pub(crate) fn local_ports(&self) -> Vec<u16> {
        self.connector.local_ports()
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
    /// dropped. Without a live connection to the broker in use, it gets an attempt first
    /// (backing off or not: one attempt per health check paces itself), or else the next
    /// brokers not backing off, as in a failover.
    pub(crate) async fn check_health(&self) -> HealthReport {
        let mut report = HealthReport::default();
        let mut opened = Vec::new();
        if self.live_in_use().is_none() {
            // Opening one is bounded by the check's timeout too (a silent broker would
            // otherwise hold the check for a `connect_timeout` per broker of the list).
            let start = self.active.load(Ordering::Acquire);
            let reopen = async {
                for (index, _) in self.failover_order(start) {
                    let pace = if index == start {
                        Pace::Ignore
                    } else {
                        Pace::Skip
                    };
                    match self.open(start, index, None, pace).await {
                        Ok(_) => break,
                        Err(error) => opened.push(error),
                    }
                    if self.active.load(Ordering::Acquire) != start || self.is_closed() {
                        break;
                    }
                }
            };
            if tokio::time::timeout(self.health_check_timeout, reopen)
                .await
                .is_err()
            {
                opened.push(ClientError::timeout(self.health_check_timeout));
            }
        }
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
                // A broker going away: the pool drops the connection (see
                // `Connection::is_closed`), its requests in flight left to finish.
                Err(
                    error @ ClientError::Broker {
                        code: ErrorCode::ShuttingDown,
                        ..
                    },
                ) => report.errors.push(error),
                // Any other error answer (say, throttled) still proves the broker is there.
                Err(ClientError::Broker { .. }) => report.healthy += 1,
                Err(error) => {
                    tracing::warn!(broker = conn.broker(), %error, "health check failed; closing connection");
                    conn.close("health check failed");
                    report.errors.push(error);
                }
            }
        }
        if report.total == 0 {
            report.errors.extend(opened);
        }
        report
    }

    /// Closes every connection; later requests fail with [`ClientError::Closed`].
    pub(crate) async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.closing.notify_waiters();
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

/// A request written by [`Pool::write_request`], its answer not yet read. Holds the request's
/// in-flight slot on its connection until [`answer`](Self::answer) is done (or it is dropped).
#[derive(Debug)]
pub(crate) struct Unanswered {
    pool: Arc<Pool>,
    conn: Arc<Connection>,
    written: Written,
    permit: OwnedSemaphorePermit,
    deadline: Instant,
    timeout: Duration,
}

impl Unanswered {
    /// Reads the answer before the request's deadline; an error answer becomes the matching
    /// [`ClientError`].
    pub(crate) async fn answer(self) -> Result<Response> {
        let Unanswered {
            pool,
            conn,
            written,
            permit,
            deadline,
            timeout,
        } = self;
        let answer = match tokio::time::timeout_at(deadline.into(), conn.read_answer(written)).await
        {
            Ok(answer) => answer,
            Err(_) => {
                pool.probe(&conn);
                Err(ClientError::timeout(timeout))
            }
        };
        drop(permit);
        pool.settle(answer)
    }
}

/// Runs [`Pool::check_health`] every `interval` until the pool is dropped or closed.
pub(crate) fn spawn_health_task(
    pool: Weak<Pool>,
    interval: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let first = deadline_after(Instant::now(), interval);
        let mut ticks = tokio::time::interval_at(first.into(), interval);
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

#[cfg(test)]
mod tests;
