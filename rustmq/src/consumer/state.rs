//! The consumer's IO-free core: per-partition buffers, offset trackers, pending retries,
//! pause flags and the delivery order. The fetch tasks, the group task and the application
//! all act on it under one short-held lock; nothing here awaits.
//!
//! Every partition carries an *epoch*, renewed when it is assigned or sought. A fetch answer,
//! an ack or a retry that carries an older epoch belongs to a position that no longer exists
//! and is ignored, so a seek or a rebalance never mixes old and new positions.

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::buffer::Records;
use super::fetcher::{to_message, RecordSizes};
use super::tracker::OffsetTracker;
use crate::error::ClientError;
use crate::message::{Message, TopicName};

/// What [`State::next_step`] found.
#[derive(Debug)]
pub(crate) enum Step {
    /// A message to deliver, still in place: [`State::take`] takes it.
    Deliver(Pick),
    Error(ClientError),
    Closed,
    /// Nothing to deliver; wait for a notification, or until this instant (a retry falls due).
    Wait(Option<Instant>),
}

/// Where the next message lies: found by [`State::next_step`], taken by [`State::take`] under
/// the same lock.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Pick {
    /// A due retry of this partition, under this key of its retries.
    Retry(u32, (Instant, u64)),
    /// The front of this partition's buffer.
    Buffered(u32),
}

/// Whether a partition's fetch task should fetch now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FetchGate {
    Go {
        offset: u64,
        epoch: u64,
        /// Records the buffer can take.
        room: usize,
        /// Bytes the buffer can take (`Records::bytes`).
        room_bytes: usize,
        /// Record sizes seen so far, to size the request.
        sizes: RecordSizes,
    },
    Wait,
    Stop,
}

#[derive(Debug)]
struct RetryEntry {
    message: Message,
    attempt: u32,
}

/// State of one assigned partition.
#[derive(Debug)]
pub(crate) struct PartitionState {
    pub(crate) epoch: u64,
    /// Next offset to fetch.
    pub(crate) fetch_offset: u64,
    /// Fetched records not yet delivered.
    buffer: Records,
    pub(crate) tracker: OffsetTracker,
    /// High watermark from the latest fetch.
    pub(crate) high_watermark: Option<u64>,
    sizes: RecordSizes,
    retries: BTreeMap<(Instant, u64), RetryEntry>,
    /// Payload and key bytes of `retries`' messages: with their count, held against the
    /// buffer's bounds, so that nacked messages waiting for their retry do not let fetching run
    /// on without limit.
    retry_bytes: usize,
    /// Wakes the partition's fetch task (room in the buffer, resume, seek, close).
    pub(crate) wake: Arc<Notify>,
    /// The fetch task was told to wait for room in the buffer (`fetch_gate`): `take` wakes it
    /// once there is.
    waiting_for_room: bool,
    task: Option<JoinHandle<()>>,
}

/// Everything the consumer's tasks share.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) partitions: BTreeMap<u32, PartitionState>,
    pub(crate) paused: BTreeSet<u32>,
    pub(crate) closed: bool,
    /// Messages dropped unsettled from now on are abandoned, not nacked: a typed service
    /// shutting down drops those it did not get to (redelivered after a restart, as they are
    /// not committed, without counting as failed attempts).
    pub(crate) abandoning: bool,
    /// Deliveries stop while the consumer rejoins its group.
    pub(crate) rebalancing: bool,
    errors: VecDeque<ClientError>,
    /// Refusals already told to the application (by their text) and not lifted since: the
    /// consumer's tasks meeting the same one tell it once between them.
    pub(crate) refusals: HashSet<String>,
    cursor: Option<u32>,
    next_epoch: u64,
    retry_seq: u64,
    cap: usize,
    cap_bytes: usize,
    /// The topic, shared by the messages decoded from the buffers.
    topic: TopicName,
}

impl State {
    /// Empty state of a consumer of `topic` with at most `cap` buffered messages and about
    /// `cap_bytes` buffered bytes per partition.
    pub(crate) fn new(topic: &str, cap: usize, cap_bytes: usize) -> Self {
        Self {
            partitions: BTreeMap::new(),
            paused: BTreeSet::new(),
            closed: false,
            abandoning: false,
            rebalancing: false,
            errors: VecDeque::new(),
            refusals: HashSet::new(),
            cursor: None,
            next_epoch: 1,
            retry_seq: 0,
            cap,
            cap_bytes,
            topic: topic.into(),
        }
    }

    fn epoch(&mut self) -> u64 {
        self.next_epoch += 1;
        self.next_epoch
    }

    /// Takes ownership of a partition that starts at `position`.
    pub(crate) fn assign(
        &mut self,
        partition: u32,
        position: u64,
        committed: Option<u64>,
    ) -> Arc<Notify> {
        let epoch = self.epoch();
        let wake = Arc::new(Notify::new());
        self.partitions.insert(
            partition,
            PartitionState {
                epoch,
                fetch_offset: position,
                buffer: Records::default(),
                tracker: OffsetTracker::new(position, committed),
                high_watermark: None,
                sizes: RecordSizes::INITIAL,
                retries: BTreeMap::new(),
                retry_bytes: 0,
                wake: Arc::clone(&wake),
                waiting_for_room: false,
                task: None,
            },
        );
        wake
    }

    /// Records the fetch task of a partition.
    pub(crate) fn set_task(&mut self, partition: u32, task: JoinHandle<()>) {
        match self.partitions.get_mut(&partition) {
            Some(p) => p.task = Some(task),
            None => task.abort(),
        }
    }

    /// Gives a partition up: its buffer, retries and pause flag are dropped and its fetch task
    /// stopped.
    pub(crate) fn revoke(&mut self, partition: u32) {
        self.paused.remove(&partition);
        if let Some(p) = self.partitions.remove(&partition) {
            if let Some(task) = p.task {
                task.abort();
            }
        }
    }

    /// Gives every partition up.
    pub(crate) fn revoke_all(&mut self) {
        let owned: Vec<u32> = self.partitions.keys().copied().collect();
        for p in owned {
            self.revoke(p);
        }
    }

    /// Assigned partitions, in order.
    pub(crate) fn owned(&self) -> Vec<u32> {
        self.partitions.keys().copied().collect()
    }

    /// Queues an error for the next `receive`.
    pub(crate) fn push_error(&mut self, error: ClientError) {
        // One pending error per kind of failure is enough to tell the application.
        if self.errors.len() < 16 {
            self.errors.push_back(error);
        }
    }

    /// Where the next message for the application is: a due retry first (oldest due first),
    /// then the buffers round-robin, skipping paused partitions.
    ///
    /// `now` is read only when a retry is pending (most calls find none, and a clock read per
    /// message is measurable).
    pub(crate) fn next_step(&mut self, now: impl FnOnce() -> Instant) -> Step {
        if self.closed {
            return Step::Closed;
        }
        if let Some(e) = self.errors.pop_front() {
            return Step::Error(e);
        }
        if self.rebalancing {
            return Step::Wait(None);
        }
        // One pass over the partitions: the earliest pending retry, and the next partition with
        // buffered messages in round-robin order (from the one after the last served, wrapping).
        let start = self.cursor.map_or(0, |c| c.saturating_add(1));
        let mut earliest: Option<(Instant, u32, (Instant, u64))> = None;
        let (mut next, mut wrapped) = (None, None);
        for (&id, p) in &self.partitions {
            if self.paused.contains(&id) {
                continue;
            }
            if let Some((&key, _)) = p.retries.first_key_value() {
                if earliest.is_none_or(|(due, _, _)| key.0 < due) {
                    earliest = Some((key.0, id, key));
                }
            }
            if !p.buffer.is_empty() {
                if id >= start {
                    next = next.or(Some(id));
                } else {
                    wrapped = wrapped.or(Some(id));
                }
            }
        }
        if let Some((due, id, key)) = earliest {
            if due <= now() {
                return Step::Deliver(Pick::Retry(id, key));
            }
        }
        match next.or(wrapped) {
            Some(id) => Step::Deliver(Pick::Buffered(id)),
            None => Step::Wait(earliest.map(|(due, _, _)| due)),
        }
    }

    /// Takes the message `pick` names (found by [`State::next_step`] under the same lock) and
    /// hands it to `make` with the partition's epoch and the delivery attempt (1 for the first
    /// delivery, n + 1 for the n-th retry); `gone` answers if it is not there after all.
    ///
    /// The caller builds its final value around the message in `make` (`receive` builds the
    /// `Poll` it returns), so that the ~200-byte message is not moved through wrappers on its
    /// way out: each move is a copy, and at millions of messages a second they show.
    #[inline(always)]
    pub(crate) fn take<T>(
        &mut self,
        pick: Pick,
        make: impl FnOnce(Message, u64, u32) -> T,
        gone: impl FnOnce() -> T,
    ) -> T {
        match pick {
            Pick::Retry(id, key) => {
                let Some(p) = self.partitions.get_mut(&id) else {
                    return gone();
                };
                match p.retries.remove(&key) {
                    Some(entry) => {
                        p.retry_bytes -= retry_size(&entry.message);
                        p.wake_if_room(self.cap, self.cap_bytes);
                        make(entry.message, p.epoch, entry.attempt + 1)
                    }
                    None => gone(),
                }
            }
            Pick::Buffered(id) => {
                self.cursor = Some(id);
                let Some(p) = self.partitions.get_mut(&id) else {
                    return gone();
                };
                let Some(record) = p.buffer.pop_record() else {
                    return gone();
                };
                p.tracker.delivered(record.offset);
                p.wake_if_room(self.cap, self.cap_bytes);
                make(to_message(&self.topic, id, record), p.epoch, 1)
            }
        }
    }

    /// Whether the fetch task of `partition` should fetch, and from where.
    pub(crate) fn fetch_gate(&mut self, partition: u32) -> FetchGate {
        if self.closed {
            return FetchGate::Stop;
        }
        let Some(p) = self.partitions.get_mut(&partition) else {
            return FetchGate::Stop;
        };
        if self.paused.contains(&partition) {
            return FetchGate::Wait;
        }
        if p.above_refill(self.cap, self.cap_bytes) {
            p.waiting_for_room = true;
            return FetchGate::Wait;
        }
        let (held, held_bytes) = p.held();
        FetchGate::Go {
            offset: p.fetch_offset,
            epoch: p.epoch,
            room: self.cap.saturating_sub(held),
            room_bytes: self.cap_bytes.saturating_sub(held_bytes),
            sizes: p.sizes,
        }
    }

    /// Buffers what a fetch at `epoch` returned; `next_offset` is where the next fetch starts.
    /// Returns false (and drops everything) if the partition was sought or revoked meanwhile.
    pub(crate) fn apply_fetch(
        &mut self,
        partition: u32,
        epoch: u64,
        records: Records,
        next_offset: u64,
        high_watermark: u64,
        sizes: Option<RecordSizes>,
    ) -> bool {
        let cap = self.cap;
        let Some(p) = self
            .partitions
            .get_mut(&partition)
            .filter(|p| p.epoch == epoch)
        else {
            return false;
        };
        debug_assert!(
            p.buffer.len() + records.len() <= cap,
            "a fetch overfilled its buffer"
        );
        p.buffer.append(records);
        p.fetch_offset = p.fetch_offset.max(next_offset);
        p.high_watermark = Some(high_watermark);
        if let Some(seen) = sizes {
            p.sizes = p.sizes.follow(seen);
        }
        true
    }

    /// Moves the fetch position of a partition whose offset fell outside the log to `offset`,
    /// the nearest stored one.
    ///
    /// Below the position fetched, the log ends short of what this consumer fetched: its tail
    /// was lost (a broker that did not sync it crashed) or the topic made again. The records
    /// fetched from `offset` on are not the log's any more, so the partition starts over as
    /// after a seek (acknowledgements of earlier deliveries no longer count) from `offset`, or
    /// from the first message not yet resolved if that is earlier (it is delivered again): a
    /// commit then never passes a record that was not delivered.
    pub(crate) fn clamp(&mut self, partition: u32, epoch: u64, offset: u64) {
        let Some(p) = self
            .partitions
            .get_mut(&partition)
            .filter(|p| p.epoch == epoch)
        else {
            return;
        };
        if offset < p.fetch_offset {
            let from = offset.min(p.tracker.commit_position());
            self.seek(partition, from);
            return;
        }
        p.fetch_offset = offset;
        if p.buffer.is_empty() && p.tracker.unresolved() == 0 && p.retries.is_empty() {
            p.tracker.reset(offset);
        }
    }

    /// An acknowledgement (or a dead-lettering). False if it no longer counts (seek, revoke,
    /// or already resolved).
    pub(crate) fn resolve(&mut self, partition: u32, epoch: u64, offset: u64) -> bool {
        match self
            .partitions
            .get_mut(&partition)
            .filter(|p| p.epoch == epoch)
        {
            Some(p) => p.tracker.resolve(offset),
            None => false,
        }
    }

    /// Whether a delivered message still counts (its partition was neither sought nor
    /// revoked, and it is unresolved).
    pub(crate) fn is_live(&self, partition: u32, epoch: u64, offset: u64) -> bool {
        self.partitions
            .get(&partition)
            .is_some_and(|p| p.epoch == epoch && p.tracker.is_unresolved(offset))
    }

    /// Redelivers `message` (delivered `attempt` times so far) at `due`. False if it no
    /// longer counts.
    pub(crate) fn schedule_retry(
        &mut self,
        epoch: u64,
        message: Message,
        attempt: u32,
        due: Instant,
    ) -> bool {
        if !self.is_live(message.partition, epoch, message.offset) {
            return false;
        }
        self.retry_seq += 1;
        let key = (due, self.retry_seq);
        let p = self
            .partitions
            .get_mut(&message.partition)
            .expect("live partition");
        p.retry_bytes += retry_size(&message);
        p.retries.insert(key, RetryEntry { message, attempt });
        true
    }

    /// Restarts a partition at `offset`: buffered messages and pending retries are dropped,
    /// deliveries forgotten, and the fetch task woken. False if the partition is not assigned.
    pub(crate) fn seek(&mut self, partition: u32, offset: u64) -> bool {
        let epoch = self.epoch();
        let Some(p) = self.partitions.get_mut(&partition) else {
            return false;
        };
        p.epoch = epoch;
        p.buffer.clear();
        p.retries.clear();
        p.retry_bytes = 0;
        p.tracker.reset(offset);
        p.fetch_offset = offset;
        p.wake.notify_one();
        true
    }

    /// Pauses partitions; fails with the first one that is not assigned (changing nothing).
    pub(crate) fn pause(&mut self, partitions: &[u32]) -> Result<(), u32> {
        self.check_owned(partitions)?;
        self.paused.extend(partitions.iter().copied());
        Ok(())
    }

    /// Resumes partitions; fails with the first one that is not assigned (changing nothing).
    pub(crate) fn resume(&mut self, partitions: &[u32]) -> Result<(), u32> {
        self.check_owned(partitions)?;
        for id in partitions {
            self.paused.remove(id);
            if let Some(p) = self.partitions.get(id) {
                p.wake.notify_one();
            }
        }
        Ok(())
    }

    fn check_owned(&self, partitions: &[u32]) -> Result<(), u32> {
        match partitions.iter().find(|p| !self.partitions.contains_key(p)) {
            Some(p) => Err(*p),
            None => Ok(()),
        }
    }

    /// `(partition, epoch, position)` of every partition whose commit position moved.
    pub(crate) fn pending_commits(&self) -> Vec<(u32, u64, u64)> {
        self.partitions
            .iter()
            .filter_map(|(&id, p)| p.tracker.pending_commit().map(|o| (id, p.epoch, o)))
            .collect()
    }

    /// The broker stored `offset` for `partition` (committed while at `epoch`).
    pub(crate) fn mark_committed(&mut self, partition: u32, offset: u64) {
        if let Some(p) = self.partitions.get_mut(&partition) {
            p.tracker.mark_committed(offset);
        }
    }

    /// Messages buffered across partitions (fetched, not yet received).
    pub(crate) fn buffered(&self) -> usize {
        self.partitions.values().map(|p| p.buffer.len()).sum()
    }

    /// Bytes those messages hold (`Records::bytes`), across partitions.
    pub(crate) fn buffered_bytes(&self) -> usize {
        self.partitions.values().map(|p| p.buffer.bytes()).sum()
    }

    /// Wakes every fetch task (close, resume after a rebalance).
    pub(crate) fn wake_fetchers(&self) {
        for p in self.partitions.values() {
            p.wake.notify_one();
        }
    }
}

/// A fetch is issued once a buffer is down to half its capacity, so the next records arrive
/// while the application works through the rest.
fn refill_level(cap: usize) -> usize {
    cap / 2
}

/// The bytes a message waiting for its retry is counted for: its payload and key (its
/// payload may share a larger fetched batch's memory, which this does not count).
fn retry_size(message: &Message) -> usize {
    message.payload.len() + message.key.as_ref().map_or(0, Bytes::len)
}

impl PartitionState {
    /// Messages and bytes held for the application: the buffer's and the pending retries'.
    fn held(&self) -> (usize, usize) {
        (
            self.buffer.len() + self.retries.len(),
            self.buffer.bytes() + self.retry_bytes,
        )
    }

    /// Whether what this partition holds is above the refill level of its messages (`cap`) or
    /// of its bytes (`cap_bytes`): its fetch task then waits.
    fn above_refill(&self, cap: usize, cap_bytes: usize) -> bool {
        let (held, held_bytes) = self.held();
        held > refill_level(cap) || held_bytes > refill_level(cap_bytes)
    }

    /// Wakes a fetch task waiting for room once what the partition holds comes down to the
    /// refill levels of both messages and bytes; a wake-up before it waits is kept for it
    /// (`notify_one` stores one permit).
    #[inline(always)]
    fn wake_if_room(&mut self, cap: usize, cap_bytes: usize) {
        if self.waiting_for_room && !self.above_refill(cap, cap_bytes) {
            self.waiting_for_room = false;
            self.wake.notify_one();
        }
    }
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
