//! Choosing a partition for each message.

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use crate::message::Message;

/// Picks the partition of a message. Implement it for custom routing.
pub trait Partitioner: Send + Sync + std::fmt::Debug {
    /// A partition in `0..partitions` for `message` (`partitions` is at least 1).
    fn partition(&self, message: &Message, partitions: u32) -> u32;
}

/// Kafka's murmur2 hash: stable across processes, runs and platforms.
pub fn murmur2(data: &[u8]) -> u32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= u32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= u32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= u32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h
}

/// The partition of a key: `murmur2(key) & 0x7fffffff % partitions`, as Kafka computes it.
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    (murmur2(key) & 0x7fff_ffff) % partitions.max(1)
}

/// The default: keyed messages by key hash; unkeyed ones stick to one partition for a
/// batch's worth of messages, then move on (fewer, fuller batches than round-robin).
#[derive(Debug)]
pub struct DefaultPartitioner {
    sticky: AtomicU32,
    count: AtomicUsize,
    switch_every: usize,
}

impl DefaultPartitioner {
    /// Sticks to a partition for `switch_every` unkeyed messages.
    pub fn new(switch_every: usize) -> Self {
        Self {
            sticky: AtomicU32::new(fastrand::u32(..)),
            count: AtomicUsize::new(0),
            switch_every: switch_every.max(1),
        }
    }
}

impl Partitioner for DefaultPartitioner {
    fn partition(&self, message: &Message, partitions: u32) -> u32 {
        if let Some(key) = &message.key {
            return partition_for_key(key, partitions);
        }
        let n = self.count.fetch_add(1, Ordering::Relaxed);
        if n > 0 && n.is_multiple_of(self.switch_every) {
            self.sticky.fetch_add(1, Ordering::Relaxed);
        }
        self.sticky.load(Ordering::Relaxed) % partitions.max(1)
    }
}

/// Keyed messages by key hash; unkeyed ones in turn over every partition.
#[derive(Debug, Default)]
pub struct RoundRobinPartitioner {
    next: AtomicU32,
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(&self, message: &Message, partitions: u32) -> u32 {
        match &message.key {
            Some(key) => partition_for_key(key, partitions),
            None => self.next.fetch_add(1, Ordering::Relaxed) % partitions.max(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_kafka() {
        // Reference values from Kafka's Utils.murmur2.
        assert_eq!(murmur2(b"21") as i32, -973_932_308);
        assert_eq!(murmur2(b"foobar") as i32, -790_332_482);
        assert_eq!(murmur2(b"a-little-bit-long-string") as i32, -985_981_536);
        assert_eq!(
            murmur2(b"a-little-bit-longer-string") as i32,
            -1_486_304_829
        );
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8") as i32,
            -58_897_971
        );
        assert_eq!(murmur2(b"abc") as i32, 479_470_107);
    }

    #[test]
    fn unkeyed_messages_stick_then_move() {
        let p = DefaultPartitioner::new(3);
        let m = Message::builder().topic("t").build().unwrap();
        let picks: Vec<u32> = (0..9).map(|_| p.partition(&m, 4)).collect();
        assert_eq!(picks[0], picks[2]);
        assert_ne!(picks[2], picks[3]);
        assert_eq!(picks[3], picks[5]);
    }

    #[test]
    fn round_robin_cycles() {
        let p = RoundRobinPartitioner::default();
        let m = Message::builder().topic("t").build().unwrap();
        let picks: Vec<u32> = (0..6).map(|_| p.partition(&m, 3)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    }
}
