//! Group commit: concurrent requests for durability share one fdatasync.
//!
//! ```text
//!  waiter A ─┐                      ┌─ syncer: capture (unsealed files, high watermark)
//!  waiter B ─┼─► synced >= end? ─no─┤          fdatasync each (blocking pool)
//!  waiter C ─┘        │yes          │          synced = captured end, wake everyone
//!                     ▼             └─ others: wait for the syncer, then check again
//!                   done
//! ```
//!
//! The syncer captures the end offset only after it has taken the role, so one fdatasync
//! covers every append that completed before it started. Only the active segment needs it, and
//! a rolled one until its seal (`super::seal`) has synced it. A failed fdatasync poisons the log, because
//! Linux may drop the dirty pages it could not write and a later sync would then "succeed"
//! without the data.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::{Condvar, Mutex};
use tokio::sync::Notify;
use tracing::{error, warn};

use super::{FlushPolicy, PartitionLog, StorageError};

#[derive(Debug)]
struct State {
    /// Every offset below this is on disk.
    synced: u64,
    /// A syncer is running.
    syncing: bool,
    /// Bumped whenever a sync attempt ends, so waiters know to look again.
    generation: u64,
    poisoned: bool,
}

enum Turn {
    Done,
    Sync,
    Wait(u64),
}

/// The group-commit state of one partition log.
#[derive(Debug)]
pub(crate) struct GroupCommit {
    state: Mutex<State>,
    blocking_waiters: Condvar,
    async_waiters: Notify,
    syncs: AtomicU64,
    /// Tests: this many of the next sync attempts fail (an injected writeback error).
    #[cfg(test)]
    pub(crate) fail_syncs: std::sync::atomic::AtomicU32,
}

/// Ends a sync attempt even if the closure doing it is dropped unrun (runtime shutdown), so
/// waiters are never stranded behind a syncer that no longer exists.
struct Attempt {
    commit: Arc<GroupCommit>,
    end: u64,
    finished: bool,
}

impl Attempt {
    /// Syncs `files` in turn (the first failure ends it).
    fn run(mut self, files: &[Arc<File>]) -> io::Result<()> {
        #[cfg(test)]
        if self
            .commit
            .fail_syncs
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
        {
            let result = Err(io::Error::other("injected writeback error"));
            self.commit.finish(self.end, Some(&result));
            self.finished = true;
            return result;
        }
        let result = files.iter().try_for_each(|file| timed_sync(file));
        self.commit.finish(self.end, Some(&result));
        self.finished = true;
        result
    }
}

/// One fdatasync, counted and timed in the broker's metrics.
fn timed_sync(file: &File) -> io::Result<()> {
    let started = std::time::Instant::now();
    let result = file.sync_data();
    crate::metrics::record_fsync(started.elapsed());
    result
}

impl Drop for Attempt {
    fn drop(&mut self) {
        if !self.finished {
            self.commit.finish(self.end, None);
        }
    }
}

impl GroupCommit {
    /// Everything below `synced` is already durable.
    pub(crate) fn new(synced: u64) -> Self {
        Self {
            state: Mutex::new(State {
                synced,
                syncing: false,
                generation: 0,
                poisoned: false,
            }),
            blocking_waiters: Condvar::new(),
            async_waiters: Notify::new(),
            syncs: AtomicU64::new(0),
            #[cfg(test)]
            fail_syncs: std::sync::atomic::AtomicU32::new(0),
        }
    }

    /// fdatasync calls made so far.
    pub(crate) fn count(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// `Err(Poisoned)` once a sync has failed.
    pub(crate) fn check(&self) -> Result<(), StorageError> {
        if self.state.lock().poisoned {
            return Err(StorageError::Poisoned);
        }
        Ok(())
    }

    fn turn(&self, end: u64) -> Result<Turn, StorageError> {
        let mut state = self.state.lock();
        if state.poisoned {
            Err(StorageError::Poisoned)
        } else if state.synced >= end {
            Ok(Turn::Done)
        } else if state.syncing {
            Ok(Turn::Wait(state.generation))
        } else {
            state.syncing = true;
            Ok(Turn::Sync)
        }
    }

    /// Ends an attempt that covered offsets below `end`; `None` if it never ran.
    fn finish(&self, end: u64, result: Option<&io::Result<()>>) {
        {
            let mut state = self.state.lock();
            match result {
                Some(Ok(())) => state.synced = state.synced.max(end),
                Some(Err(err)) => {
                    error!(%err, "fdatasync failed; the partition log refuses further writes");
                    state.poisoned = true;
                }
                None => {}
            }
            state.syncing = false;
            state.generation += 1;
        }
        self.blocking_waiters.notify_all();
        self.async_waiters.notify_waiters();
    }

    /// Waits until every offset below `end` is durable, syncing if no one else is.
    /// `capture` names the files to sync (the active one, and rolled ones not sealed yet)
    /// and the end offset they hold.
    pub(crate) async fn sync_async(
        self: &Arc<Self>,
        end: u64,
        capture: impl Fn() -> (Vec<Arc<File>>, u64),
    ) -> Result<(), StorageError> {
        loop {
            // Registered before the state is checked, so a finish in between is not missed.
            let notified = self.async_waiters.notified();
            match self.turn(end)? {
                Turn::Done => return Ok(()),
                Turn::Wait(_) => notified.await,
                Turn::Sync => {
                    let (files, captured) = capture();
                    let attempt = self.attempt(captured);
                    // The attempt finishes inside the blocking task, so dropping this future
                    // (a cancelled request) does not leave the other waiters hanging.
                    tokio::task::spawn_blocking(move || attempt.run(&files))
                        .await
                        .map_err(io::Error::other)??;
                }
            }
        }
    }

    /// Blocking form of [`sync_async`](Self::sync_async), for synchronous callers.
    pub(crate) fn sync_blocking(
        self: &Arc<Self>,
        end: u64,
        capture: impl Fn() -> (Vec<Arc<File>>, u64),
    ) -> Result<(), StorageError> {
        loop {
            match self.turn(end)? {
                Turn::Done => return Ok(()),
                Turn::Wait(generation) => {
                    let mut state = self.state.lock();
                    while state.generation == generation {
                        self.blocking_waiters.wait(&mut state);
                    }
                }
                Turn::Sync => {
                    let (files, captured) = capture();
                    self.attempt(captured).run(&files)?;
                }
            }
        }
    }

    /// Takes the syncer role until the returned value is dropped, as a sync under way would
    /// (tests of what waits for one).
    #[cfg(test)]
    pub(crate) fn hold_role(self: &Arc<Self>) -> impl Sized {
        assert!(matches!(self.turn(u64::MAX), Ok(Turn::Sync)), "role free");
        self.attempt(0)
    }

    /// Syncs `files` (holding the offsets below `end`) now, even if those offsets are durable
    /// already: their bytes changed below the durable end (a cut of what a failed append
    /// left). One sync at a time with the group commits, as every sync of the log is.
    pub(crate) fn sync_again_blocking(
        self: &Arc<Self>,
        files: Vec<Arc<File>>,
        end: u64,
    ) -> Result<(), StorageError> {
        let mut state = self.state.lock();
        loop {
            if state.poisoned {
                return Err(StorageError::Poisoned);
            }
            if !state.syncing {
                break;
            }
            let generation = state.generation;
            while state.generation == generation {
                self.blocking_waiters.wait(&mut state);
            }
        }
        state.syncing = true;
        drop(state);
        Ok(self.attempt(end).run(&files)?)
    }

    fn attempt(self: &Arc<Self>, end: u64) -> Attempt {
        self.syncs.fetch_add(1, Ordering::Relaxed);
        Attempt {
            commit: Arc::clone(self),
            end,
            finished: false,
        }
    }
}

/// Starts the background task that makes [`FlushPolicy::Interval`] hold: every interval it
/// syncs whatever was appended since the last sync (sharing the group-commit path, so it never
/// adds a sync that a waiting producer is already doing). Returns `None` for other policies.
/// The task ends when the log is dropped. Must be called inside a Tokio runtime.
pub fn spawn_interval_flusher(log: &Arc<PartitionLog>) -> Option<tokio::task::JoinHandle<()>> {
    let FlushPolicy::Interval(period) = log.config().flush else {
        return None;
    };
    let weak: Weak<PartitionLog> = Arc::downgrade(log);
    Some(tokio::spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(log) = weak.upgrade() else { return };
            match log.sync_all().await {
                Ok(()) => {}
                Err(StorageError::Poisoned) => return,
                Err(err) => warn!(%err, "interval flush failed"),
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_syncer_at_a_time_and_a_dropped_attempt_frees_the_role() {
        let commit = Arc::new(GroupCommit::new(0));
        assert!(matches!(commit.turn(5), Ok(Turn::Sync)));
        assert!(matches!(commit.turn(5), Ok(Turn::Wait(0))));
        // The closure that would have run the sync is dropped (runtime shutting down).
        drop(commit.attempt(5));
        assert!(matches!(commit.turn(5), Ok(Turn::Sync)), "role released");
        commit.finish(5, Some(&Ok(())));
        assert!(matches!(commit.turn(5), Ok(Turn::Done)));
        assert!(matches!(commit.turn(6), Ok(Turn::Sync)));
    }

    #[test]
    fn a_failed_sync_poisons_every_waiter() {
        let commit = Arc::new(GroupCommit::new(0));
        assert!(matches!(commit.turn(5), Ok(Turn::Sync)));
        commit.finish(5, Some(&Err(io::Error::other("disk gone"))));
        assert!(matches!(commit.turn(1), Err(StorageError::Poisoned)));
        assert!(matches!(commit.check(), Err(StorageError::Poisoned)));
        let file = Arc::new(tempfile::tempfile().unwrap());
        assert!(matches!(
            commit.sync_blocking(1, || (vec![Arc::clone(&file)], 1)),
            Err(StorageError::Poisoned)
        ));
    }

    #[test]
    fn blocking_waiters_share_one_sync() {
        let commit = Arc::new(GroupCommit::new(0));
        let file = Arc::new(tempfile::tempfile().unwrap());
        // Hold the syncer role so every thread below has to wait for it.
        assert!(matches!(commit.turn(10), Ok(Turn::Sync)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (commit, file) = (Arc::clone(&commit), Arc::clone(&file));
                std::thread::spawn(move || {
                    commit.sync_blocking(10, || (vec![Arc::clone(&file)], 10))
                })
            })
            .collect();
        commit.attempt(10).run(&[Arc::clone(&file)]).unwrap();
        for thread in threads {
            thread.join().unwrap().unwrap();
        }
        assert_eq!(commit.count(), 1);
    }
}
