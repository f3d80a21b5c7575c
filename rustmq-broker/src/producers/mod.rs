//! Allocation of idempotent producer ids and epochs, persisted across restarts.
//!
//! The registry is `<data_dir>/producers.toml` and the changes since it was last written, in
//! `producers.journal` (see `producers/journal.rs`: each initialisation appends a line, and the file is
//! rewritten once the journal holds as many lines as it has names).
//!
//! Ids are handed out from blocks of [`ID_BLOCK`] reserved in the registry
//! (as Kafka's broker takes them from its controller): an unnamed producer's initialisation
//! writes nothing unless it starts a new block, and a restart goes on from the end of the
//! last block reserved (the ids of it never handed out are skipped); a named producer
//! keeps its id and gets a higher epoch each time it initialises, which fences older instances
//! (their batches fail with `InvalidProducerEpoch`). Once a name has used every epoch (32,767
//! initialisations: an exactly-once stream initialises at every session start), it moves to a
//! new id at epoch 0, as Kafka's producers do, and its old id is retired: every partition
//! refuses every batch of a retired id, whatever its epoch (`PartitionLog::retire_producer`).
//!
//! A name that has not been initialised for `log.named_producer_expiration_ms` (7 days, as
//! Kafka's `transactional.id.expiration.ms`) and whose id has not written to any partition for
//! as long is forgotten ([`ProducerIds::expire_names`]), so that names that come and go (one
//! per deployment, say) do not stay in every partition's producer table for good. Its next
//! initialisation gets a new id at epoch 0, as a new name does, and the old id is refused
//! broker-wide ([`ProducerIds::forgotten`]: an instance that comes back after so long must
//! initialise again, as Kafka answers it `INVALID_PRODUCER_ID_MAPPING`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};

use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::topics::write_durably;
use rustmq_protocol::ErrorCode;

mod journal;

use journal::{Entry, Journal};

/// How many producer ids one write of the registry reserves.
pub const ID_BLOCK: i64 = 1_000;

/// Where a new registry's first id is drawn: far below `i64::MAX`, so that its ids never run
/// out, and far apart from another registry's, whose ids it would otherwise take as issued.
const FIRST_IDS: std::ops::Range<i64> = 1 << 40..1 << 62;

/// A first id drawn from `FIRST_IDS` with the operating system's randomness (through
/// `RandomState`'s keys), so that brokers started at the same moment draw apart.
fn random_first_id() -> i64 {
    use std::hash::{BuildHasher, Hasher};
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let span = (FIRST_IDS.end - FIRST_IDS.start) as u64;
    FIRST_IDS.start + (random % span) as i64
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

/// The longest producer name taken, in bytes: a stream processor's (`rustmq.stream.` and a
/// group name of up to 120 bytes) with room to spare.
pub const MAX_PRODUCER_NAME_LEN: usize = 255;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct State {
    /// The first id of this registry: random, chosen when the registry is made (0 in a file
    /// of an earlier build). A client that fails over to another broker, or whose broker lost
    /// its data, then carries ids the broker it now reaches did not issue, rather than ids that
    /// broker handed out to producers of its own: refused as unknown, they are replaced.
    #[serde(default)]
    first_id: i64,
    /// The end of the ids a registry of an earlier build handed out from 0, before it moved to
    /// a random first id: those stay issued (named producers keep theirs).
    #[serde(default, skip_serializing_if = "is_zero")]
    legacy_end: i64,
    /// The end of the ids reserved on disk: every id from `first_id` below it may have been
    /// handed out.
    next_id: i64,
    /// The next id to hand out, at most `next_id` (not stored: a restart goes on from
    /// `next_id`).
    #[serde(skip)]
    next_free: i64,
    named: BTreeMap<String, (i64, i16)>,
    /// Ids of names that used every epoch and moved to a new id.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    retired: BTreeSet<i64>,
    /// When each name was last initialised (the broker's clock, ms). A name missing here (a
    /// file of an earlier build) counts from when the registry was first opened by this build.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    initialised_at: BTreeMap<String, i64>,
    /// Ids of names that were forgotten: refused broker-wide (8 bytes each, never removed).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    forgotten: BTreeSet<i64>,
    /// Grows with every rewrite of the file: the journal that follows it names it (see
    /// `journal.rs`). 0 in a file of an earlier build.
    #[serde(default)]
    generation: u64,
}

impl State {
    /// Applies a journal entry (see `journal.rs`).
    fn apply(&mut self, entry: Entry) {
        match entry {
            Entry::Generation(_) => {}
            Entry::Block { next_id } => self.next_id = self.next_id.max(next_id),
            Entry::Init {
                name,
                id,
                epoch,
                at,
                next_id,
                retired,
            } => {
                self.next_id = self.next_id.max(next_id);
                if let Some(retired) = retired {
                    self.retired.insert(retired);
                }
                self.initialised_at.insert(name.clone(), at);
                self.named.insert(name, (id, epoch));
            }
        }
    }
}

/// Hands out producer ids: every id handed out is below a bound on disk, and a named producer's
/// epoch is on disk, before it is answered.
#[derive(Debug)]
pub struct ProducerIds {
    path: PathBuf,
    state: Mutex<State>,
    /// Appended to by each change (taken after `state`, while it is held).
    journal: Mutex<Journal>,
    /// `state.legacy_end` and `state.first_id`: the ids issued are `0..legacy_end` and
    /// `first_id..issued`.
    legacy_end: i64,
    first_id: i64,
    /// `state.next_free`: every id from `first_id` below it was handed out, by this process
    /// or before a restart (up to the last block reserved then); read per idempotent batch
    /// without the lock.
    issued: AtomicI64,
    /// `state.forgotten`, read per idempotent batch (without the registry's lock, which an
    /// initialisation holds across its fsync) when `any_forgotten`.
    forgotten: RwLock<HashSet<i64>>,
    /// The name of each named producer's id (`state.named` the other way round), read per
    /// idempotent batch when ACLs apply: a batch of a named id needs `write` on its name.
    names: RwLock<HashMap<i64, String>>,
    any_forgotten: AtomicBool,
}

/// What an initialisation handed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initialised {
    /// The producer id.
    pub producer_id: i64,
    /// Its epoch.
    pub epoch: i16,
    /// The name's previous id, retired by this initialisation (the name had used every
    /// epoch): every partition must refuse its batches from now on.
    pub retired: Option<i64>,
}

impl ProducerIds {
    /// Loads the state from `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, BrokerError> {
        let path = data_dir.join("producers.toml");
        let state = match std::fs::read_to_string(&path) {
            Ok(text) => toml::from_str(&text).map_err(|e| {
                BrokerError::new(
                    rustmq_protocol::ErrorCode::StorageError,
                    format!("corrupt {}: {e}", path.display()),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(BrokerError::io("read producers.toml", e)),
        };
        let mut state: State = state;
        let (journal, entries) =
            Journal::open(&data_dir.join("producers.journal"), state.generation)
                .map_err(|e| BrokerError::io("open producers.journal", e))?;
        for entry in entries {
            state.apply(entry);
        }
        let mut next = state.clone();
        // A registry without a first id (new, or of an earlier build, which numbered its ids
        // from 0) moves to a random one, written below before any id is handed out from it;
        // the ids an earlier build handed out stay issued. One whose first id was lost (an
        // earlier build ran on it again and rewrote the file) counts every id below the
        // range's start as its earlier build's, as that build did.
        let moved = next.first_id == 0;
        if moved {
            next.legacy_end = next.next_id.min(FIRST_IDS.start);
            next.first_id = if next.next_id >= FIRST_IDS.start {
                FIRST_IDS.start
            } else {
                random_first_id()
            };
            next.next_id = next.next_id.max(next.first_id);
        }
        state.next_free = state.next_id;
        let opened_at = crate::storage::now_ms();
        for name in next.named.keys() {
            next.initialised_at.entry(name.clone()).or_insert(opened_at);
        }
        let State {
            named,
            initialised_at,
            ..
        } = &mut next;
        initialised_at.retain(|name, _| named.contains_key(name));
        let ids = Self {
            path,
            legacy_end: state.legacy_end,
            first_id: state.first_id,
            issued: AtomicI64::new(state.next_id),
            forgotten: RwLock::new(state.forgotten.iter().copied().collect()),
            any_forgotten: AtomicBool::new(!state.forgotten.is_empty()),
            names: RwLock::new(
                state
                    .named
                    .iter()
                    .map(|(name, &(id, _))| (id, name.clone()))
                    .collect(),
            ),
            state: Mutex::new(state),
            journal: Mutex::new(journal),
        };
        // Names of a file of an earlier build get their time on disk now, or every start
        // would restart their clock; a registry that moved its first id.
        let mut state = ids.state.lock();
        if moved || next.initialised_at != state.initialised_at {
            ids.store(&mut state, next)?;
            state.next_free = state.next_id;
        }
        let (legacy_end, first_id, next_free) = (state.legacy_end, state.first_id, state.next_free);
        drop(state);
        let ids = Self {
            legacy_end,
            first_id,
            ..ids
        };
        ids.issued.store(next_free, Ordering::Release);
        Ok(ids)
    }

    /// Whether `producer_id` belonged to a name that was forgotten after it was idle for the
    /// expiration ([`expire_names`](Self::expire_names)): its batches are refused, and its
    /// instance must initialise again.
    pub fn forgotten(&self, producer_id: i64) -> bool {
        self.any_forgotten.load(Ordering::Acquire) && self.forgotten.read().contains(&producer_id)
    }

    /// The ids retired by their names (each had used every epoch and moved to a new id).
    pub fn retired(&self) -> Vec<i64> {
        self.state.lock().retired.iter().copied().collect()
    }

    /// Whether this broker handed out `producer_id` (now or before a restart). A batch of an
    /// id it never issued is refused: each id a peer makes up would otherwise take a place in
    /// the producer table of every partition it writes to, for good.
    pub fn issued(&self, producer_id: i64) -> bool {
        (0..self.legacy_end).contains(&producer_id)
            || (self.first_id..self.issued.load(Ordering::Acquire)).contains(&producer_id)
    }

    /// The first id of this registry (see `State::first_id`).
    #[cfg(test)]
    pub(crate) fn first_id(&self) -> i64 {
        self.first_id
    }

    /// Every named producer's id and current epoch.
    pub fn named(&self) -> Vec<(i64, i16)> {
        self.state.lock().named.values().copied().collect()
    }

    /// A fresh id (epoch 0), or for a name its id with the next epoch; a name that used every
    /// epoch gets a new id at epoch 0 and retires its old one. On disk before it is answered
    /// (an unnamed id writes only when it starts a new block); nothing changes when the write
    /// fails.
    pub fn init(&self, name: Option<&str>) -> Result<Initialised, BrokerError> {
        self.init_at(name, crate::storage::now_ms())
    }

    /// [`init`](Self::init) at `now` (the broker's clock, ms).
    fn init_at(&self, name: Option<&str>, now: i64) -> Result<Initialised, BrokerError> {
        if let Some(name) = name {
            if name.is_empty() || name.len() > MAX_PRODUCER_NAME_LEN {
                return Err(BrokerError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "a producer name needs 1 to {MAX_PRODUCER_NAME_LEN} bytes, not {}",
                        name.len()
                    ),
                ));
            }
        }
        let mut state = self.state.lock();
        // The state is not copied (it holds every name): the change is worked out on the id
        // counters, and applied once it is on disk.
        let mut ids = IdCursor {
            next_free: state.next_free,
            next_id: state.next_id,
        };
        let Some(name) = name else {
            let producer_id = ids.take()?;
            if ids.next_id != state.next_id {
                // A new block: on disk first.
                let entry = Entry::Block {
                    next_id: ids.next_id,
                };
                self.record(&mut state, entry)?;
            }
            state.next_free = ids.next_free;
            self.issued.store(state.next_free, Ordering::Release);
            return Ok(Initialised {
                producer_id,
                epoch: 0,
                retired: None,
            });
        };
        let result = match state.named.get(name).copied() {
            // A new name: a new id at epoch 0.
            None => Initialised {
                producer_id: ids.take()?,
                epoch: 0,
                retired: None,
            },
            Some((producer_id, epoch)) => match epoch.checked_add(1) {
                Some(epoch) => Initialised {
                    producer_id,
                    epoch,
                    retired: None,
                },
                // Every epoch used: a new id, and the old one retired.
                None => Initialised {
                    producer_id: ids.take()?,
                    epoch: 0,
                    retired: Some(producer_id),
                },
            },
        };
        let entry = Entry::Init {
            name: name.to_owned(),
            id: result.producer_id,
            epoch: result.epoch,
            at: now,
            next_id: ids.next_id,
            retired: result.retired,
        };
        self.record(&mut state, entry)?;
        state.next_free = ids.next_free;
        self.issued.store(state.next_free, Ordering::Release);
        {
            let mut names = self.names.write();
            if let Some(retired) = result.retired {
                names.remove(&retired);
            }
            names.insert(result.producer_id, name.to_owned());
        }
        Ok(result)
    }

    /// The name whose id `producer_id` is, if it is a named producer's.
    pub fn name_of(&self, producer_id: i64) -> Option<String> {
        self.names.read().get(&producer_id).cloned()
    }

    /// Applies `entry` to `state` once it is in the journal (synced), or, when the journal is
    /// due for compaction, once the state with it is in `producers.toml`; nothing changes when
    /// the write fails. (Unnamed ids handed out from the reserved block since the last write
    /// need none: `next_free` is not stored.)
    fn record(&self, state: &mut State, entry: Entry) -> Result<(), BrokerError> {
        let mut journal = self.journal.lock();
        if journal.wants_compaction(state.named.len()) {
            // Rewrites every name anyway: a copy is no extra order of cost.
            let mut next = state.clone();
            next.apply(entry);
            return self.compact(state, next, &mut journal);
        }
        journal
            .append(&entry)
            .map_err(|e| BrokerError::io("write producers.journal", e))?;
        state.apply(entry);
        Ok(())
    }

    /// Writes `next` durably to `producers.toml` (compacting the journal), then makes it the
    /// state; nothing changes when the write fails.
    fn store(&self, state: &mut State, next: State) -> Result<(), BrokerError> {
        let mut journal = self.journal.lock();
        self.compact(state, next, &mut journal)
    }

    /// [`store`](Self::store), with the journal's lock held: the file of the next generation,
    /// then the journal started again for it (a crash in between leaves a journal of the
    /// previous generation, which the next open ignores: the file holds all of it).
    fn compact(
        &self,
        state: &mut State,
        mut next: State,
        journal: &mut Journal,
    ) -> Result<(), BrokerError> {
        next.generation = state.generation.max(journal.generation()) + 1;
        let text = toml::to_string(&next)
            .map_err(|e| BrokerError::new(rustmq_protocol::ErrorCode::Internal, e.to_string()))?;
        if let Err(err) = write_durably(&self.path, text.as_bytes()) {
            // The file may have been replaced all the same (a failed directory sync after
            // the rename): appended to, the journal would follow the file of the previous
            // generation, and be ignored. The next change compacts instead.
            journal.mark_broken();
            return Err(BrokerError::io("write producers.toml", err));
        }
        *state = next;
        if let Err(err) = journal.reset(state.generation) {
            // The file holds everything: changes compact until the journal starts again.
            tracing::warn!(%err, "could not start the producer journal again");
        }
        Ok(())
    }

    /// Forgets the names last initialised more than `expiration_ms` before `now` (the broker's
    /// clock, ms) whose id `active` says has not written since then either; returns their ids,
    /// which are refused from now on ([`forgotten`](Self::forgotten)) and which the caller
    /// unpins in every partition (`PartitionLog::unpin_producer`). On disk before it returns;
    /// nothing is forgotten when the write fails.
    ///
    /// `active` (which asks every partition) runs without the registry's lock, so that
    /// initialisations do not wait for it; a name initialised meanwhile is kept. A producer
    /// that writes its first batch in days just while it is asked about can be forgotten: its
    /// batches are then refused, and it initialises again.
    pub fn expire_names(
        &self,
        now: i64,
        expiration_ms: u64,
        active: impl Fn(i64) -> bool,
    ) -> Result<Vec<i64>, BrokerError> {
        let idle_before = now.saturating_sub(i64::try_from(expiration_ms).unwrap_or(i64::MAX));
        // (name, id, last initialisation) of the names not initialised since `idle_before`.
        let due: Vec<(String, i64, i64)> = {
            let state = self.state.lock();
            state
                .named
                .iter()
                .filter_map(|(name, &(id, _))| {
                    let at = *state.initialised_at.get(name)?;
                    (at < idle_before).then(|| (name.clone(), id, at))
                })
                .collect()
        };
        let idle: Vec<(String, i64, i64)> = due.into_iter().filter(|d| !active(d.1)).collect();
        if idle.is_empty() {
            return Ok(Vec::new());
        }
        let mut state = self.state.lock();
        let expired: Vec<(String, i64)> = idle
            .into_iter()
            .filter(|(name, id, at)| {
                state.named.get(name).map(|&(i, _)| i) == Some(*id)
                    && state.initialised_at.get(name) == Some(at)
            })
            .map(|(name, id, _)| (name, id))
            .collect();
        if expired.is_empty() {
            return Ok(Vec::new());
        }
        let mut next = state.clone();
        for (name, id) in &expired {
            next.named.remove(name);
            next.initialised_at.remove(name);
            next.forgotten.insert(*id);
        }
        self.store(&mut state, next)?;
        let ids: Vec<i64> = expired.into_iter().map(|(_, id)| id).collect();
        self.forgotten.write().extend(ids.iter().copied());
        self.any_forgotten.store(true, Ordering::Release);
        {
            let mut names = self.names.write();
            for id in &ids {
                names.remove(id);
            }
        }
        Ok(ids)
    }
}

/// The id counters of the state, worked on before a change is on disk.
struct IdCursor {
    next_free: i64,
    next_id: i64,
}

impl IdCursor {
    /// The next id to hand out, reserving a new block when the last one is used up.
    fn take(&mut self) -> Result<i64, BrokerError> {
        let id = self.next_free;
        let exhausted = || {
            BrokerError::new(
                rustmq_protocol::ErrorCode::StorageError,
                "producer ids exhausted (producers.toml's next_id is at the end of the range)",
            )
        };
        self.next_free = id.checked_add(1).ok_or_else(exhausted)?;
        if self.next_free > self.next_id {
            self.next_id = id.checked_add(ID_BLOCK).ok_or_else(exhausted)?;
        }
        Ok(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name is kept in memory, in the journal and in `producers.toml` until it expires: one
    /// as long as a frame is refused (and so is an empty one), and nothing is written.
    #[test]
    fn names_out_of_bounds_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        for name in [String::new(), "n".repeat(MAX_PRODUCER_NAME_LEN + 1)] {
            let e = p.init(Some(&name)).unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidRequest, "{}", name.len());
        }
        assert!(p.named().is_empty());
        assert!(p.init(Some(&"n".repeat(MAX_PRODUCER_NAME_LEN))).is_ok());
    }

    #[test]
    fn ids_are_unique_and_named_epochs_grow_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        let base = p.first_id();
        assert!(!p.issued(0) && !p.issued(base));
        let a = p.init(None).unwrap();
        let b = p.init(None).unwrap();
        assert_ne!(a.producer_id, b.producer_id);
        assert!(p.issued(a.producer_id) && p.issued(b.producer_id));
        assert!(!p.issued(b.producer_id + 1) && !p.issued(-1));
        let n1 = p.init(Some("stream-1")).unwrap();
        assert!(!p.issued(n1.producer_id + 1));
        drop(p);
        // A restart goes on from the end of the block reserved: the ids of it never handed out
        // count as issued (at most a block's worth), none is handed out twice.
        let p = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(p.first_id(), base, "the first id is kept");
        assert!(
            p.issued(a.producer_id) && p.issued(n1.producer_id) && p.issued(base + ID_BLOCK - 1)
        );
        assert!(!p.issued(base + ID_BLOCK) && !p.issued(base - 1));
        let n2 = p.init(Some("stream-1")).unwrap();
        assert_eq!(n1.producer_id, n2.producer_id);
        assert_eq!(n2.epoch, n1.epoch + 1);
        let c = p.init(None).unwrap();
        assert_eq!(c.producer_id, base + ID_BLOCK);
    }

    /// A named producer's id is known by its name (what a produce's ACL check asks), after a
    /// restart too; unnamed ids have none, and a forgotten name's id loses its own.
    #[test]
    fn named_ids_are_known_by_their_names() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        let named = p.init(Some("pay")).unwrap();
        let unnamed = p.init(None).unwrap();
        assert_eq!(p.name_of(named.producer_id).as_deref(), Some("pay"));
        assert_eq!(p.name_of(unnamed.producer_id), None);
        drop(p);
        let p = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(p.name_of(named.producer_id).as_deref(), Some("pay"));
        let hour = 3_600_000;
        let forgotten = p.expire_names(i64::MAX / 2, hour, |_| false).unwrap();
        assert_eq!(forgotten, [named.producer_id]);
        assert_eq!(p.name_of(named.producer_id), None);
    }

    /// A registry of an earlier build, which numbered its ids from 0, moves to a random first
    /// id for its new ids, and the ids it handed out stay issued, across restarts; one whose
    /// first id an earlier build dropped again counts the ids below the range as before.
    #[test]
    fn a_registry_of_an_earlier_build_moves_to_a_random_first_id() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("producers.toml");
        std::fs::write(&file, "next_id = 1000\n[named]\nold = [2, 4]\n").unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        let base = p.first_id();
        assert!(FIRST_IDS.contains(&base));
        assert!(p.issued(2) && p.issued(999) && !p.issued(1000));
        let fresh = p.init(None).unwrap();
        assert_eq!(fresh.producer_id, base);
        assert_eq!(
            p.init(Some("old")).unwrap().producer_id,
            2,
            "a name keeps its id"
        );
        drop(p);
        let p = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(p.first_id(), base);
        assert!(p.issued(999) && p.issued(fresh.producer_id) && !p.issued(1000));

        // An earlier build ran on it again and dropped the first id from the file.
        let high = FIRST_IDS.start + 5;
        std::fs::write(&file, format!("next_id = {high}\n[named]\n")).unwrap();
        std::fs::remove_file(dir.path().join("producers.journal")).unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        assert!(p.issued(0) && p.issued(FIRST_IDS.start) && p.issued(high - 1));
        assert_eq!(p.init(None).unwrap().producer_id, high);
    }

    /// A new registry's ids start at a random first id, far from another registry's: a
    /// broker does not take another broker's ids (or its own before it lost its data) for
    /// ones it issued.
    #[test]
    fn registries_draw_their_ids_apart() {
        let (one, two) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (one, two) = (
            ProducerIds::open(one.path()).unwrap(),
            ProducerIds::open(two.path()).unwrap(),
        );
        let (a, b) = (one.init(None).unwrap(), two.init(None).unwrap());
        assert!(FIRST_IDS.contains(&a.producer_id) && FIRST_IDS.contains(&b.producer_id));
        assert!(!one.issued(b.producer_id) && !two.issued(a.producer_id));
        assert!((a.producer_id - b.producer_id).abs() > ID_BLOCK);
    }

    /// Unnamed ids come from a block reserved on disk: one write per block, not per id.
    #[test]
    fn unnamed_ids_are_handed_out_from_reserved_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("producers.journal");
        let p = ProducerIds::open(dir.path()).unwrap();
        let base = p.first_id();
        assert_eq!(p.init(None).unwrap().producer_id, base);
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(
            written.contains(&format!("\"next_id\":{}", base + ID_BLOCK)),
            "{written}"
        );
        for id in 1..ID_BLOCK {
            assert_eq!(p.init(None).unwrap().producer_id, base + id);
        }
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            written,
            "no write within the block"
        );
        assert!(p.issued(base + ID_BLOCK - 1) && !p.issued(base + ID_BLOCK));
        // The next block, and a name, take ids from it.
        assert_eq!(p.init(None).unwrap().producer_id, base + ID_BLOCK);
        let written = std::fs::read_to_string(&path).unwrap();
        assert!(
            written.contains(&format!("\"next_id\":{}", base + 2 * ID_BLOCK)),
            "{written}"
        );
        assert_eq!(p.init(Some("n")).unwrap().producer_id, base + ID_BLOCK + 1);
        assert!(p.issued(base + ID_BLOCK + 1) && !p.issued(base + ID_BLOCK + 2));
    }

    /// A name that used every epoch moves to a new id at epoch 0 and its old id is retired,
    /// across a restart too; other names and ids are not affected.
    #[test]
    fn a_name_that_used_every_epoch_moves_to_a_new_id_and_retires_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        let init = |name| {
            let i = p.init(name).unwrap();
            (i.producer_id, i.epoch, i.retired)
        };
        let (old, ..) = init(Some("busy"));
        let other = init(Some("calm"));
        p.state.lock().named.get_mut("busy").unwrap().1 = i16::MAX - 1;
        assert_eq!(init(Some("busy")), (old, i16::MAX, None));
        assert!(p.retired().is_empty());
        let (new, epoch, retired) = init(Some("busy"));
        assert_eq!((epoch, retired), (0, Some(old)));
        assert!(new != old && new != other.0 && p.issued(new));
        assert_eq!(p.retired(), [old]);
        assert_eq!(p.named(), [(new, 0), (other.0, other.1)]);
        drop(p);
        let p = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(p.retired(), [old]);
        let again = p.init(Some("busy")).unwrap();
        assert_eq!((again.producer_id, again.epoch), (new, 1));
        assert_ne!(p.init(None).unwrap().producer_id, new);
    }
    /// A name is forgotten once it was last initialised longer ago than the expiration and its
    /// id has not written since; a forgotten name's next initialisation is a new id at epoch 0,
    /// and the registry on disk says so.
    #[test]
    fn idle_names_are_forgotten_and_come_back_as_new() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        let hour = 3_600_000;
        let idle = p.init_at(Some("idle"), 1_000).unwrap();
        let writing = p.init_at(Some("writing"), 1_000).unwrap();
        let fresh = p.init_at(Some("fresh"), 1_000).unwrap();
        p.init_at(Some("fresh"), 1_000 + hour).unwrap();
        let active = |id| id == writing.producer_id;
        assert_eq!(
            p.expire_names(1_000 + hour, hour as u64, active).unwrap(),
            [] as [i64; 0],
            "none idle for the whole expiration yet"
        );
        let expired = p.expire_names(2_000 + hour, hour as u64, active).unwrap();
        assert_eq!(expired, [idle.producer_id]);
        assert_eq!(p.named().len(), 2);
        drop(p);
        let p = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(p.named().len(), 2, "forgotten on disk");
        let again = p.init_at(Some("idle"), 3_000 + hour).unwrap();
        assert_eq!(again.epoch, 0);
        assert!(![idle, writing, fresh]
            .iter()
            .any(|i| i.producer_id == again.producer_id));
        assert_eq!(p.init_at(Some("fresh"), 3_000 + hour).unwrap().epoch, 2);
    }

    /// A registry written by an earlier build has no initialisation times: its names count
    /// from when it is opened.
    #[test]
    fn names_of_an_older_registry_count_from_its_opening() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("producers.toml"),
            "next_id = 3\n[named]\nold = [2, 4]\n",
        )
        .unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        let now = crate::storage::now_ms();
        let day = 86_400_000;
        let text = std::fs::read_to_string(dir.path().join("producers.toml")).unwrap();
        assert!(
            text.contains("[initialised_at]"),
            "written at the first open, so that later ones do not restart the clock: {text}"
        );
        assert!(p.expire_names(now, day, |_| false).unwrap().is_empty());
        assert_eq!(
            p.expire_names(now + 2 * day as i64, day, |_| false)
                .unwrap(),
            [2]
        );
        assert!(p.forgotten(2) && !p.forgotten(1));
        drop(p);
        assert!(
            ProducerIds::open(dir.path()).unwrap().forgotten(2),
            "on disk"
        );
    }

    /// A name initialised while the partitions are asked about it is kept (they are asked
    /// without the registry's lock, so the initialisation did not wait).
    #[test]
    fn a_name_initialised_during_the_pass_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        let hour = 3_600_000;
        let first = p.init_at(Some("racing"), 1_000).unwrap();
        let expired = p
            .expire_names(2_000 + hour, hour as u64, |_| {
                p.init_at(Some("racing"), 1_500 + hour).unwrap();
                false
            })
            .unwrap();
        assert!(expired.is_empty());
        assert!(!p.forgotten(first.producer_id));
        assert_eq!(p.named(), [(first.producer_id, first.epoch + 1)]);
    }

    /// Named initialisations go to the journal, not the registry file, and come back after a
    /// restart; once the journal holds more entries than the registry has names, the next
    /// one rewrites the file and starts the journal again.
    #[test]
    fn initialisations_are_journaled_and_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("producers.toml");
        let p = ProducerIds::open(dir.path()).unwrap();
        // Written once at the start: a new registry's first id.
        let made = std::fs::read_to_string(&file).unwrap();
        assert!(made.contains("generation = 1"), "{made}");
        let a = p.init(Some("a")).unwrap();
        for _ in 0..3 {
            p.init(Some("a")).unwrap();
        }
        let b = p.init(Some("b")).unwrap();
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            made,
            "nothing rewritten yet"
        );
        drop(p);
        let p = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(p.named(), [(a.producer_id, 3), (b.producer_id, 0)]);
        assert!(p.issued(b.producer_id));
        // Eight entries with two names: the next change compacts.
        for _ in 0..3 {
            p.init(Some("b")).unwrap();
        }
        assert_eq!(std::fs::read_to_string(&file).unwrap(), made);
        p.init(Some("b")).unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("generation = 2"), "{text}");
        let journal = std::fs::read(dir.path().join("producers.journal")).unwrap();
        assert_eq!(
            journal.iter().filter(|&&b| b == b'\n').count(),
            1,
            "header only"
        );
        p.init(Some("a")).unwrap();
        drop(p);
        let p = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(p.named(), [(a.producer_id, 4), (b.producer_id, 4)]);
    }

    /// A crash after a compaction wrote the registry but before it started the journal
    /// again leaves the journal of the previous generation: ignored, its entries (all in the
    /// registry, and older) do not undo later ones.
    #[test]
    fn a_journal_older_than_the_registry_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let journal = dir.path().join("producers.journal");
        let p = ProducerIds::open(dir.path()).unwrap();
        for _ in 0..8 {
            p.init(Some("a")).unwrap();
        }
        let old = std::fs::read(&journal).unwrap();
        let compacted = p.init(Some("a")).unwrap();
        assert_eq!(compacted.epoch, 8);
        drop(p);
        std::fs::write(&journal, &old).unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        assert_eq!(p.named(), [(compacted.producer_id, 8)]);
        assert_eq!(p.init(Some("a")).unwrap().epoch, 9);
    }

    /// A rewrite of the registry whose directory sync failed may have replaced the file all
    /// the same: the initialisations after it are not appended to the journal of the file it
    /// replaced (which the next open ignores) but compact again, and survive a restart.
    #[test]
    fn initialisations_after_a_failed_rewrite_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        p.init_at(Some("old"), 1_000).unwrap();
        let a = p.init(Some("a")).unwrap();
        crate::storage::FAIL_SYNC_DIR.with(|n| n.set(1));
        assert!(p.expire_names(i64::MAX, 1, |_| false).is_err());
        let again = p.init(Some("a")).unwrap();
        let block = p.init(None).unwrap();
        drop(p);
        let p = ProducerIds::open(dir.path()).unwrap();
        assert!(p.named().contains(&(a.producer_id, again.epoch)));
        assert_ne!(p.init(None).unwrap().producer_id, block.producer_id);
    }
}
