//! Payloads: random alphanumeric bytes, and payloads that carry the time they count as sent.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};

const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// Distinct payloads in a pool: 1,024, or as many as fit in [`POOL_BYTES`] (at least 16) when
/// payloads are large. A batch holds at most a few MiB, so it never repeats a payload either
/// way, and a run of 1 MiB payloads does not make (and hold) a GiB of them first.
const POOL_PAYLOADS: usize = 1024;
const POOL_BYTES: usize = 64 << 20;

/// Payloads in the pool of payloads of `size` bytes.
fn pool_len(size: usize) -> usize {
    (POOL_BYTES / size.max(1)).clamp(16, POOL_PAYLOADS)
}

/// A pool of distinct random payloads, handed out in turn (cloning `Bytes` copies nothing, so
/// generating payloads stays out of the measurement).
#[derive(Debug)]
pub(crate) struct Payloads {
    pool: Vec<Bytes>,
    next: usize,
}

impl Payloads {
    pub(crate) fn new(size: usize) -> Self {
        let mut rng = fastrand::Rng::with_seed(0x5eed);
        let pool = (0..pool_len(size))
            .map(|_| {
                let v: Vec<u8> = (0..size)
                    .map(|_| ALPHANUMERIC[rng.usize(..ALPHANUMERIC.len())])
                    .collect();
                Bytes::from(v)
            })
            .collect();
        Self { pool, next: 0 }
    }

    pub(crate) fn next(&mut self) -> Bytes {
        let p = self.pool[self.next].clone();
        self.next = (self.next + 1) % self.pool.len();
        p
    }
}

/// Bytes at the start of a stamped payload: the time it counts as sent, then its sequence
/// number.
pub(crate) const STAMP_BYTES: usize = 16;

/// Payloads of `size` bytes (at least [`STAMP_BYTES`]) that start with the time they count as
/// sent (microseconds since a shared epoch, little endian; see [`Stamped::payload`])
/// and then their sequence number (little endian), which the receiver checks off to see each
/// message once. Sender and receiver run in one process, so one clock serves.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stamped {
    epoch: Instant,
    size: usize,
}

impl Stamped {
    pub(crate) fn new(size: usize) -> Self {
        Self {
            epoch: Instant::now(),
            size: size.max(STAMP_BYTES),
        }
    }

    /// Bytes of each payload: the size asked for, at least the [`STAMP_BYTES`] of the stamp.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Message `seq`'s payload, stamped with `sent`: when the message counts as sent
    /// (`Pacer::tick`: when its tick came, or its due time for a send the sender missed), not
    /// the time it is made. A sender that fell behind makes the messages it owes late and all
    /// at once; stamped with when they were made, their wait to be sent would be left out of
    /// the latency (coordinated omission). Made before the epoch (never, as the pacer starts
    /// after it), it counts from the epoch.
    pub(crate) fn payload(&self, sent: Instant, seq: u64) -> Bytes {
        let stamp = sent.saturating_duration_since(self.epoch).as_micros() as u64;
        let mut b = BytesMut::with_capacity(self.size);
        b.put_u64_le(stamp);
        b.put_u64_le(seq);
        b.resize(self.size, b'x');
        b.freeze()
    }

    /// How long ago the payload counts as sent; `None` if it is not a stamped payload.
    pub(crate) fn age(&self, payload: &[u8]) -> Option<Duration> {
        let stamp = u64::from_le_bytes(payload.get(..8)?.try_into().ok()?);
        let now = self.epoch.elapsed().as_micros() as u64;
        Some(Duration::from_micros(now.saturating_sub(stamp)))
    }

    /// The payload's sequence number; `None` if it is not a stamped payload.
    pub(crate) fn seq(&self, payload: &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(
            payload.get(8..STAMP_BYTES)?.try_into().ok()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_payloads_make_a_smaller_pool() {
        assert_eq!(pool_len(1 << 20), 64);
        assert_eq!(pool_len(16 << 20), 16);
        assert_eq!(pool_len(1024), 1024);
        assert_eq!(pool_len(0), 1024);
    }

    #[test]
    fn payloads_are_alphanumeric_and_cycle() {
        let mut p = Payloads::new(100);
        let first = p.next();
        assert_eq!(first.len(), 100);
        assert!(first.iter().all(|b| b.is_ascii_alphanumeric()));
        assert_ne!(first, p.next());
        for _ in 0..1022 {
            p.next();
        }
        assert_eq!(p.next(), first);
    }

    /// A stamped payload holds at least its 16-byte stamp, and says so: the end-to-end
    /// report's `payload_bytes` is the size sent, not a smaller one asked for.
    #[test]
    fn a_stamped_payload_is_at_least_its_stamp() {
        let s = Stamped::new(3);
        assert_eq!(s.size(), STAMP_BYTES);
        assert_eq!(s.payload(Instant::now(), 0).len(), s.size());
    }

    #[test]
    fn stamps_measure_age_and_carry_the_sequence_number() {
        let s = Stamped::new(100);
        let payload = s.payload(Instant::now(), 7);
        assert_eq!(payload.len(), 100);
        std::thread::sleep(Duration::from_millis(2));
        assert!(s.age(&payload).unwrap() >= Duration::from_millis(2));
        assert_eq!(s.seq(&payload), Some(7));
        assert_eq!(s.age(b"short"), None);
        assert_eq!(s.seq(b"only eight"), None);
    }

    /// The age counts from the time the message counts as sent, not from when its payload was
    /// made:
    /// a message made 30 ms late is 30 ms old at once.
    #[test]
    fn the_age_counts_from_the_due_time() {
        let s = Stamped::new(100);
        let due = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        let late = s.payload(due, 0);
        assert!(s.age(&late).unwrap() >= Duration::from_millis(30));
    }
}
