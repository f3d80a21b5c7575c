//! The broker's budget for request and answer bytes: what bounds the memory its requests take
//! whatever its peers send or leave unread.
//!
//! A request's body is read into memory whole before it is handled, and a connection may have
//! `limits.max_in_flight_per_connection` requests on the way at once (and one more stream,
//! which clients keep for pings), each up to `limits.max_frame_bytes`: with the defaults,
//! 257 x 16 MiB per connection. Every frame body
//! therefore reserves its length, announced in its header, before a byte of it is read:
//! first from its connection's budget (`limits.max_request_memory_per_connection`), then from
//! the broker's (`limits.max_request_memory_bytes`). A produce keeps its body's room until it
//! has been handled (the batch is part of the body); any other request gives it back as soon
//! as it is decoded. A frame that finds no room waits, its bytes left unread: QUIC's flow
//! control then holds its sender back once [`STREAM_RECEIVE_WINDOW`] bytes of the stream are
//! buffered, and a frame not finished within `limits.request_read_timeout_ms` is dropped.
//!
//! A fetch answer's records take room the same way: their length, right after the log is read
//! (if there is no room, the records are let go while the fetch waits for it, then read again;
//! a long poll waiting for data holds nothing), held until the transport has let go of them
//! (sent, and acknowledged by the peer's transport). A
//! peer that leaves its answers unread stops getting more once its connection's share is spent,
//! and an answer it takes nothing of for `limits.request_read_timeout_ms` is given up (its
//! stream reset, its room returned).
//!
//! So one connection holds at most its share of bodies and answers, plus a stream window for
//! each frame waiting. Reserving a whole body up front rather than as chunks arrive means a
//! reserved frame can always be read to its end, and no task waits for room while it holds
//! some: no two waits can wait on each other. For the same reason the connection's
//! flow-control window is left unlimited: waiting streams could otherwise fill it and starve
//! the reserved ones. What the budget does not give is fairness between connections: a few
//! connections that spend their shares (`max_request_memory_bytes /
//! max_request_memory_per_connection` of them, 8 with the defaults) can hold the broker's whole
//! budget, and others then wait until their frames time out or their answers are taken.
//! When a connection ends, its waits end with it (`ConnectionMemory::close`).

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

/// Frames and answers of at most this many bytes take no room: they are most requests and
/// answers (a small produce, a fetch request, a tail read's answer), whose room would cost more
/// to count than it holds, and a connection's streams (`limits.max_in_flight_per_connection`
/// and one, 257 by default) can hold about 1 MiB of them, less than the transport may buffer
/// for one waiting stream.
pub const UNCOUNTED_BYTES: u32 = 4096;

/// Bytes of a request stream the transport buffers before the broker reads them (its QUIC
/// stream receive window): quinn's default, stated here because it bounds what a frame waiting
/// for room in the budget costs.
pub const STREAM_RECEIVE_WINDOW: u32 = 1_250_000;

/// The broker-wide budget, shared by every connection.
#[derive(Debug)]
pub struct RequestMemory {
    broker: Arc<Semaphore>,
    limit: u64,
    per_connection: usize,
}

/// `bytes` as semaphore permits (a semaphore holds at most `Semaphore::MAX_PERMITS`).
fn permits(bytes: u64) -> usize {
    usize::try_from(bytes)
        .unwrap_or(usize::MAX)
        .min(Semaphore::MAX_PERMITS)
}

impl RequestMemory {
    /// A budget of `limit` bytes in all and `per_connection` bytes for each connection.
    pub fn new(limit: u64, per_connection: u32) -> Self {
        let limit = permits(limit);
        Self {
            broker: Arc::new(Semaphore::new(limit)),
            limit: limit as u64,
            per_connection: permits(per_connection.into()),
        }
    }

    /// Bytes reserved now over all connections, including room already set aside for a frame
    /// or a fetch still waiting for the rest of its room.
    pub fn in_use(&self) -> u64 {
        self.limit - self.broker.available_permits() as u64
    }

    /// A new connection's budget.
    pub(crate) fn connection(&self) -> ConnectionMemory {
        ConnectionMemory {
            connection: Arc::new(Semaphore::new(self.per_connection)),
            broker: Arc::clone(&self.broker),
            largest: self.per_connection.min(self.limit as usize),
            closed: Arc::new(Notify::new()),
        }
    }
}

/// Why no room was reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// More than a whole budget: it could never be granted (the configuration's validation
    /// rules that out for frames within `limits.max_frame_bytes`).
    TooLarge,
    /// The connection has ended.
    Closed,
}

/// One connection's budget, drawing on the broker's.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionMemory {
    connection: Arc<Semaphore>,
    broker: Arc<Semaphore>,
    /// The largest reservation either budget can ever grant.
    largest: usize,
    /// Woken by [`ConnectionMemory::close`].
    closed: Arc<Notify>,
}

impl ConnectionMemory {
    /// Reserves `bytes`, waiting for room.
    pub(crate) async fn reserve(&self, bytes: u32) -> Result<Reservation, Refused> {
        if let Some(reservation) = self.try_reserve(bytes) {
            return Ok(reservation);
        }
        if bytes as usize > self.largest {
            return Err(Refused::TooLarge);
        }
        crate::metrics::request_memory_wait();
        // The connection's part first: a connection waiting for the broker's part then holds
        // back only itself. A closed connection's semaphore ends the first wait; the second
        // listens for the close itself.
        let connection = Arc::clone(&self.connection)
            .acquire_many_owned(bytes)
            .await
            .map_err(|_| Refused::Closed)?;
        let closed = self.closed.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if self.connection.is_closed() {
            return Err(Refused::Closed);
        }
        let broker = tokio::select! {
            permit = Arc::clone(&self.broker).acquire_many_owned(bytes) => {
                permit.map_err(|_| Refused::Closed)?
            }
            () = closed => return Err(Refused::Closed),
        };
        Ok(Reservation::new(bytes, connection, broker))
    }

    /// `bytes` reserved at once if both budgets have room, without making a future: how nearly
    /// every frame gets its room.
    #[inline]
    pub(crate) fn try_reserve(&self, bytes: u32) -> Option<Reservation> {
        if bytes <= UNCOUNTED_BYTES {
            return Some(Reservation::default());
        }
        let connection = Arc::clone(&self.connection)
            .try_acquire_many_owned(bytes)
            .ok()?;
        let broker = Arc::clone(&self.broker)
            .try_acquire_many_owned(bytes)
            .ok()?;
        Some(Reservation::new(bytes, connection, broker))
    }

    /// `records`, read with `room` reserved for them: the room is cut to their length (or
    /// taken again for it, when a read after a wait for room returned more than before) and
    /// given back when the last copy of them is dropped, once the transport has sent them and
    /// the peer's transport has acknowledged them.
    pub(crate) async fn hold(&self, records: Bytes, mut room: Reservation) -> Bytes {
        if records.len() <= UNCOUNTED_BYTES as usize {
            return records;
        }
        let held = room.bytes();
        if records.len() < held {
            room.shrink_to(records.len());
        } else if records.len() > held {
            // Taken again whole, waiting with no room held (a task never waits for room while
            // it holds some). If the connection ended meanwhile, the answer goes nowhere.
            drop(room);
            let bytes = u32::try_from(records.len()).unwrap_or(u32::MAX);
            room = self.reserve(bytes).await.unwrap_or_default();
        }
        Bytes::from_owner(Held {
            records,
            _room: room,
        })
    }

    /// Ends every wait for room on this connection, now and later: called when the connection
    /// ends. Its streams' tasks then end, and with them what they hold.
    pub(crate) fn close(&self) {
        self.connection.close();
        self.closed.notify_waiters();
    }
}

/// Bytes reserved for one frame or answer, returned to both budgets when dropped.
#[derive(Debug, Default)]
pub(crate) struct Reservation {
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Reservation {
    fn new(bytes: u32, connection: OwnedSemaphorePermit, broker: OwnedSemaphorePermit) -> Self {
        crate::metrics::request_memory_reserved(bytes);
        Self {
            permits: Some((connection, broker)),
        }
    }

    /// The bytes reserved.
    fn bytes(&self) -> usize {
        self.permits
            .as_ref()
            .map_or(0, |(connection, _)| connection.num_permits())
    }

    /// Gives back all but `bytes`.
    fn shrink_to(&mut self, bytes: usize) {
        if let Some((connection, broker)) = &mut self.permits {
            let excess = connection.num_permits().saturating_sub(bytes);
            if excess > 0 {
                drop((connection.split(excess), broker.split(excess)));
                crate::metrics::request_memory_released(excess);
            }
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some((connection, _)) = &self.permits {
            crate::metrics::request_memory_released(connection.num_permits());
        }
    }
}

/// Records holding their room in the budget.
struct Held {
    records: Bytes,
    _room: Reservation,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.records
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A connection's reservations stop at its share and the broker's at its total; dropping
    /// one lets a waiting frame in, and a frame larger than a whole budget is refused at once.
    #[tokio::test]
    async fn reservations_wait_for_room_in_both_budgets() {
        const K: u32 = 10_000;
        let memory = RequestMemory::new(30 * u64::from(K), 20 * K);
        let (a, b) = (memory.connection(), memory.connection());
        let first = a.reserve(15 * K).await.unwrap();
        assert_eq!(memory.in_use(), 15 * u64::from(K));
        // The connection has 5 K left: 10 K more waits...
        let waiting = tokio::spawn({
            let a = a.clone();
            async move { a.reserve(10 * K).await.unwrap() }
        });
        // ...while another connection gets the broker's remaining 15 K, and no more.
        let other = b.reserve(15 * K).await.unwrap();
        assert_eq!(memory.in_use(), 30 * u64::from(K));
        assert!(
            tokio::time::timeout(Duration::from_millis(20), b.reserve(K))
                .await
                .is_err(),
            "the broker's total is spent"
        );
        // Small frames take no room, even now.
        assert!(b.reserve(UNCOUNTED_BYTES).await.unwrap().permits.is_none());
        drop(first);
        let second = waiting.await.unwrap();
        assert_eq!(memory.in_use(), 25 * u64::from(K));
        assert_eq!(
            a.reserve(20 * K + 1).await.unwrap_err(),
            Refused::TooLarge,
            "beyond the connection's share"
        );
        drop((second, other));
        assert_eq!(memory.in_use(), 0);
    }

    /// Records read with room keep exactly their length reserved (cut, or grown for a first
    /// batch larger than asked for) until their last copy is dropped.
    #[tokio::test]
    async fn held_records_keep_their_length_until_the_last_copy_goes() {
        let memory = RequestMemory::new(100_000, 100_000);
        let conn = memory.connection();
        let room = conn.reserve(40_000).await.unwrap();
        let records = conn.hold(Bytes::from(vec![1u8; 15_000]), room).await;
        assert_eq!(memory.in_use(), 15_000, "cut to the records");
        let copy = records.slice(10..20);
        drop(records);
        assert_eq!(memory.in_use(), 15_000, "a slice still holds them");
        drop(copy);
        assert_eq!(memory.in_use(), 0);

        let room = conn.reserve(10_000).await.unwrap();
        let records = conn.hold(Bytes::from(vec![2u8; 25_000]), room).await;
        assert_eq!(memory.in_use(), 25_000, "taken again for more records");
        assert_eq!(&records[..], &[2u8; 25_000][..]);
        drop(records);
        let room = conn.reserve(10_000).await.unwrap();
        assert_eq!(
            conn.hold(Bytes::from(vec![3u8; 100]), room).await.len(),
            100
        );
        assert_eq!(memory.in_use(), 0, "a small answer holds nothing");
    }

    /// Closing a connection ends its waits, whether for its own share or for the broker's, and
    /// refuses later ones; what its reservations held comes back as they are dropped.
    #[tokio::test]
    async fn a_closed_connection_waits_no_more() {
        let memory = RequestMemory::new(300_000, 200_000);
        let (a, b) = (memory.connection(), memory.connection());
        let held = a.reserve(200_000).await.unwrap();
        let taken = b.reserve(100_000).await.unwrap();
        // `a` waits for its own share, `b` (with its share free) for the broker's.
        let own = tokio::spawn({
            let a = a.clone();
            async move { a.reserve(10_000).await }
        });
        let brokers = tokio::spawn({
            let b = b.clone();
            async move { b.reserve(50_000).await }
        });
        tokio::task::yield_now().await;
        a.close();
        b.close();
        assert_eq!(own.await.unwrap().unwrap_err(), Refused::Closed);
        assert_eq!(brokers.await.unwrap().unwrap_err(), Refused::Closed);
        assert_eq!(a.reserve(10_000).await.unwrap_err(), Refused::Closed);
        drop((held, taken));
        assert_eq!(memory.in_use(), 0);
    }
}
