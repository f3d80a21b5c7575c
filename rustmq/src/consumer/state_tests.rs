//! Unit tests of the consumer's IO-free state: delivery order, pause, backpressure, seek,
//! retries, revoke.

use super::*;
use std::time::Duration;

/// Fetched records at `offsets`, as the fetch task hands them over.
fn records(offsets: std::ops::Range<u64>) -> Records {
    let mut batch = rustmq_protocol::RecordBatchBuilder::new();
    for _ in offsets.clone() {
        batch.push(0, None, Some(b"v"), std::iter::empty());
    }
    let mut batch = batch.build().unwrap().to_vec();
    rustmq_protocol::batch::set_base_offset(&mut batch, offsets.start);
    super::super::fetcher::decode(offsets.start, usize::MAX, usize::MAX, batch.into())
        .unwrap()
        .records
}

fn fill(s: &mut State, partition: u32, offsets: std::ops::Range<u64>) {
    let epoch = s.partitions[&partition].epoch;
    let end = offsets.end;
    assert!(s.apply_fetch(partition, epoch, records(offsets), end, end, None));
}

/// A message handed to the application, as `receive` takes it.
#[derive(Debug)]
struct Delivery {
    message: Message,
    epoch: u64,
    attempt: u32,
}

#[derive(Debug)]
enum Next {
    Deliver(Delivery),
    Error(#[allow(dead_code)] ClientError),
    Closed,
    Wait(#[allow(dead_code)] Option<Instant>),
}

impl State {
    /// The next delivery, as `receive` finds and takes it.
    fn next_delivery(&mut self, now: impl FnOnce() -> Instant) -> Next {
        match self.next_step(now) {
            Step::Deliver(pick) => self.take(
                pick,
                |message, epoch, attempt| {
                    Next::Deliver(Delivery {
                        message,
                        epoch,
                        attempt,
                    })
                },
                || Next::Wait(None),
            ),
            Step::Error(e) => Next::Error(e),
            Step::Closed => Next::Closed,
            Step::Wait(due) => Next::Wait(due),
        }
    }
}

fn deliver(s: &mut State) -> Delivery {
    match s.next_delivery(Instant::now) {
        Next::Deliver(d) => d,
        other => panic!("expected a delivery, got {other:?}"),
    }
}

#[test]
fn partitions_are_served_round_robin_and_paused_ones_are_skipped() {
    let mut s = State::new("t", 10, usize::MAX);
    for p in 0..3 {
        s.assign(p, 0, None);
        fill(&mut s, p, 0..2);
    }
    let order: Vec<u32> = (0..3).map(|_| deliver(&mut s).message.partition).collect();
    assert_eq!(order, [0, 1, 2]);
    s.pause(&[1]).unwrap();
    let order: Vec<u32> = (0..2).map(|_| deliver(&mut s).message.partition).collect();
    assert_eq!(order, [0, 2]);
    assert!(matches!(s.next_delivery(Instant::now), Next::Wait(None)));
    assert_eq!(
        s.fetch_gate(1),
        FetchGate::Wait,
        "a paused partition is not fetched"
    );
    s.resume(&[1]).unwrap();
    assert_eq!(deliver(&mut s).message.offset, 1);
    assert_eq!(s.pause(&[7]), Err(7));
}

#[test]
fn a_full_buffer_stops_fetching_until_half_is_drained() {
    let mut s = State::new("t", 4, usize::MAX);
    s.assign(0, 0, None);
    assert!(matches!(
        s.fetch_gate(0),
        FetchGate::Go {
            room: 4,
            offset: 0,
            ..
        }
    ));
    fill(&mut s, 0, 0..4);
    assert_eq!(s.fetch_gate(0), FetchGate::Wait);
    let wake = Arc::clone(&s.partitions[&0].wake);
    let woken = || futures::FutureExt::now_or_never(wake.notified()).is_some();
    deliver(&mut s);
    assert_eq!(s.fetch_gate(0), FetchGate::Wait);
    assert!(!woken());
    deliver(&mut s);
    // The waiting fetch task is woken as the buffer comes down to half.
    assert!(woken());
    assert!(matches!(
        s.fetch_gate(0),
        FetchGate::Go {
            room: 2,
            offset: 4,
            ..
        }
    ));
    assert_eq!(s.buffered(), 2);
}

/// Nacked messages waiting for their retry count against the buffer's bound: an application
/// that nacks everything (its downstream is down) does not let fetching run on without limit.
#[test]
fn pending_retries_count_against_the_buffer_bound() {
    let mut s = State::new("t", 4, usize::MAX);
    s.assign(0, 0, None);
    fill(&mut s, 0, 0..4);
    let later = Instant::now() + Duration::from_secs(60);
    for _ in 0..4 {
        let d = deliver(&mut s);
        assert!(s.schedule_retry(d.epoch, d.message, d.attempt, later));
    }
    // The buffer is empty, but four messages wait for their retry: no more is fetched.
    assert_eq!(s.buffered(), 0);
    assert_eq!(s.fetch_gate(0), FetchGate::Wait);
    let wake = Arc::clone(&s.partitions[&0].wake);
    let woken = || futures::FutureExt::now_or_never(wake.notified()).is_some();
    // Retries taken as they come due bring it down to the refill level, and the fetch task
    // is woken then, with room for what is no longer held.
    let due = || later + Duration::from_secs(1);
    for expected in [false, true] {
        assert!(matches!(s.next_delivery(due), Next::Deliver(_)));
        assert_eq!(woken(), expected);
    }
    assert!(matches!(
        s.fetch_gate(0),
        FetchGate::Go {
            room: 2,
            offset: 4,
            ..
        }
    ));
    // A seek drops the retries, and with them what they held.
    s.seek(0, 0);
    assert!(matches!(s.fetch_gate(0), FetchGate::Go { room: 4, .. }));
}

#[test]
fn a_buffer_over_half_its_bytes_stops_fetching_until_a_batch_is_taken() {
    use futures::FutureExt;
    // Batches of two records, all the same size; room for three, so half is one and a half.
    let batch = records(0..2).bytes();
    let mut s = State::new("t", 100, 3 * batch);
    s.assign(0, 0, None);
    let wake = Arc::clone(&s.partitions[&0].wake);
    let room = |s: &mut State| match s.fetch_gate(0) {
        FetchGate::Go {
            room_bytes, offset, ..
        } => Some((room_bytes, offset)),
        _ => None,
    };
    assert_eq!(room(&mut s), Some((3 * batch, 0)));
    fill(&mut s, 0, 0..2);
    assert_eq!(room(&mut s), Some((2 * batch, 2)));
    fill(&mut s, 0, 2..4);
    assert_eq!(s.fetch_gate(0), FetchGate::Wait);
    assert_eq!(s.buffered_bytes(), 2 * batch);
    // A batch holds its bytes until its last record is taken.
    deliver(&mut s);
    assert_eq!(
        (s.fetch_gate(0), s.buffered_bytes()),
        (FetchGate::Wait, 2 * batch)
    );
    assert!(wake.notified().now_or_never().is_none());
    deliver(&mut s);
    assert_eq!(s.buffered_bytes(), batch);
    assert_eq!(room(&mut s), Some((2 * batch, 4)));
    // The waiting fetch task is woken as the buffer comes under half.
    assert!(wake.notified().now_or_never().is_some());
    assert_eq!(s.buffered(), 2);
}

#[test]
fn seek_discards_buffer_retries_and_stale_fetches() {
    let mut s = State::new("t", 10, usize::MAX);
    s.assign(0, 0, None);
    fill(&mut s, 0, 0..5);
    let d = deliver(&mut s);
    let old_epoch = d.epoch;
    assert!(s.schedule_retry(d.epoch, d.message, 1, Instant::now()));
    assert!(s.seek(0, 100));
    assert_eq!(s.buffered(), 0);
    assert!(
        !s.apply_fetch(0, old_epoch, records(5..6), 6, 6, None),
        "stale fetch dropped"
    );
    assert!(!s.resolve(0, old_epoch, 0), "stale ack ignored");
    assert!(
        matches!(s.next_delivery(Instant::now), Next::Wait(None)),
        "retry dropped"
    );
    assert!(matches!(s.fetch_gate(0), FetchGate::Go { offset: 100, .. }));
    assert_eq!(s.pending_commits().len(), 1);
    assert!(!s.seek(3, 0));
}

/// A log cut below what was delivered (an unsynced tail lost, a topic made again): the
/// partition starts over from the cut, or from the first unresolved message before it, and
/// a commit never passes records that were not delivered. Before, the tracker kept the old
/// position while a message was unresolved, and committed it once that was acknowledged.
#[test]
fn a_log_cut_below_the_deliveries_starts_the_partition_over() {
    let mut s = State::new("t", 20, usize::MAX);
    s.assign(0, 0, Some(0));
    fill(&mut s, 0, 0..10);
    let delivered: Vec<Delivery> = (0..10).map(|_| deliver(&mut s)).collect();
    let old_epoch = delivered[0].epoch;
    for d in &delivered[..9] {
        assert!(s.resolve(0, old_epoch, d.message.offset));
    }
    // Offset 9 still unresolved; the log now ends at 5.
    s.clamp(0, old_epoch, 5);
    assert_eq!(s.buffered(), 0);
    assert!(matches!(s.fetch_gate(0), FetchGate::Go { offset: 5, .. }));
    fill(&mut s, 0, 5..8);
    for _ in 5..8 {
        let d = deliver(&mut s);
        assert!(s.resolve(0, d.epoch, d.message.offset));
    }
    assert!(
        !s.resolve(0, old_epoch, 9),
        "the old delivery no longer counts"
    );
    assert_eq!(s.pending_commits().last().map(|c| c.2), Some(8));

    // An unresolved message before the cut is delivered again rather than skipped.
    let mut s = State::new("t", 20, usize::MAX);
    s.assign(0, 0, Some(0));
    fill(&mut s, 0, 0..10);
    let first = deliver(&mut s);
    for _ in 1..10 {
        let d = deliver(&mut s);
        assert!(s.resolve(0, d.epoch, d.message.offset));
    }
    s.clamp(0, first.epoch, 5);
    assert!(matches!(s.fetch_gate(0), FetchGate::Go { offset: 0, .. }));
    assert!(s.pending_commits().is_empty(), "nothing past 0 to commit");

    // Forward (retention passed the position): delivered state is kept.
    let mut s = State::new("t", 20, usize::MAX);
    s.assign(0, 0, Some(0));
    fill(&mut s, 0, 0..2);
    let d = deliver(&mut s);
    s.clamp(0, d.epoch, 50);
    assert!(
        s.resolve(0, d.epoch, 0),
        "a forward move keeps the deliveries"
    );
}

#[test]
fn due_retries_come_first_and_the_earliest_sets_the_wait() {
    let mut s = State::new("t", 10, usize::MAX);
    s.assign(0, 0, None);
    fill(&mut s, 0, 0..2);
    let first = deliver(&mut s);
    let later = Instant::now() + Duration::from_secs(60);
    assert!(s.schedule_retry(first.epoch, first.message, 1, later));
    let second = deliver(&mut s);
    assert_eq!(second.message.offset, 1);
    match s.next_delivery(Instant::now) {
        Next::Wait(Some(t)) => assert_eq!(t, later),
        other => panic!("{other:?}"),
    }
    let again = match s.next_delivery(|| later) {
        Next::Deliver(d) => d,
        other => panic!("{other:?}"),
    };
    assert_eq!((again.message.offset, again.attempt), (0, 2));
    // The retried message still holds the commit back until it is resolved.
    assert!(s.resolve(0, second.epoch, 1));
    assert_eq!(s.pending_commits(), vec![(0, again.epoch, 0)]);
    assert!(s.resolve(0, again.epoch, 0));
    assert_eq!(s.pending_commits(), vec![(0, again.epoch, 2)]);
}

#[test]
fn revoke_drops_everything_and_closing_ends_delivery() {
    let mut s = State::new("t", 10, usize::MAX);
    s.assign(0, 0, None);
    fill(&mut s, 0, 0..3);
    s.pause(&[0]).unwrap();
    s.revoke(0);
    assert!(s.paused.is_empty() && s.buffered() == 0 && s.owned().is_empty());
    assert_eq!(s.fetch_gate(0), FetchGate::Stop);
    s.push_error(ClientError::Closed);
    assert!(matches!(s.next_delivery(Instant::now), Next::Error(_)));
    s.closed = true;
    assert!(matches!(s.next_delivery(Instant::now), Next::Closed));
}
