//! Allocation of idempotent producer ids and epochs, persisted across restarts.
//!
//! Ids are handed out from a counter stored in `<data_dir>/producers.toml`; a named producer
//! keeps its id and gets a higher epoch each time it initialises, which fences older instances
//! (their batches fail with `InvalidProducerEpoch`). Once a name has used every epoch (32,767
//! initialisations: an exactly-once stream initialises at every session start), it moves to a
//! new id at epoch 0, as Kafka's producers do, and its old id is retired: every batch of a
//! retired id is refused, whatever its epoch.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::BrokerError;
use crate::topics::write_durably;

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    next_id: i64,
    named: BTreeMap<String, (i64, i16)>,
    /// Ids of names that used every epoch and moved to a new id.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    retired: BTreeSet<i64>,
}

/// Hands out producer ids; every allocation is on disk before it is answered.
#[derive(Debug)]
pub struct ProducerIds {
    path: PathBuf,
    state: Mutex<State>,
    /// `state.next_id` as last stored: every id below it was handed out (read per idempotent
    /// batch without the lock).
    issued: AtomicI64,
    /// How many ids are retired: while none is (almost always), a batch's id is not looked up.
    retired: AtomicUsize,
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
        Ok(Self {
            path,
            issued: AtomicI64::new(state.next_id),
            retired: AtomicUsize::new(state.retired.len()),
            state: Mutex::new(state),
        })
    }

    /// Whether `producer_id` belonged to a name that has used every epoch and moved to a new id:
    /// none of its batches may be written any more (the instance of its last epoch could
    /// otherwise still write beside the name's new one).
    pub fn retired(&self, producer_id: i64) -> bool {
        self.retired.load(Ordering::Acquire) > 0 && self.state.lock().retired.contains(&producer_id)
    }

    /// Whether this broker handed out `producer_id` (now or before a restart). A batch of an
    /// id it never issued is refused: each id a peer makes up would otherwise take a place in
    /// the producer table of every partition it writes to, for good.
    pub fn issued(&self, producer_id: i64) -> bool {
        (0..self.issued.load(Ordering::Acquire)).contains(&producer_id)
    }

    /// Every named producer's id and current epoch.
    pub fn named(&self) -> Vec<(i64, i16)> {
        self.state.lock().named.values().copied().collect()
    }

    /// A fresh id (epoch 0), or for a name its id with the next epoch.
    pub fn init(&self, name: Option<&str>) -> Result<(i64, i16), BrokerError> {
        let mut state = self.state.lock();
        let result = match name {
            None => {
                let id = state.next_id;
                state.next_id += 1;
                (id, 0)
            }
            Some(name) => {
                let next = state.next_id;
                let entry = *state.named.entry(name.to_owned()).or_insert((next, -1));
                let entry = match entry.1.checked_add(1) {
                    Some(epoch) => (entry.0, epoch),
                    // Every epoch used: a new id, and the old one retired.
                    None => {
                        state.retired.insert(entry.0);
                        (next, 0)
                    }
                };
                if entry.0 == next {
                    state.next_id += 1;
                }
                state.named.insert(name.to_owned(), entry);
                entry
            }
        };
        let text = toml::to_string(&*state)
            .map_err(|e| BrokerError::new(rustmq_protocol::ErrorCode::Internal, e.to_string()))?;
        write_durably(&self.path, text.as_bytes())
            .map_err(|e| BrokerError::io("write producers.toml", e))?;
        self.issued.store(state.next_id, Ordering::Release);
        self.retired.store(state.retired.len(), Ordering::Release);
        Ok(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_and_named_epochs_grow_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        assert!(!p.issued(0));
        let a = p.init(None).unwrap();
        let b = p.init(None).unwrap();
        assert_ne!(a.0, b.0);
        assert!(p.issued(a.0) && p.issued(b.0));
        assert!(!p.issued(b.0 + 1) && !p.issued(-1));
        let n1 = p.init(Some("stream-1")).unwrap();
        drop(p);
        let p = ProducerIds::open(dir.path()).unwrap();
        assert!(p.issued(a.0) && p.issued(n1.0) && !p.issued(n1.0 + 1));
        let n2 = p.init(Some("stream-1")).unwrap();
        assert_eq!(n1.0, n2.0);
        assert_eq!(n2.1, n1.1 + 1);
        let c = p.init(None).unwrap();
        assert!(c.0 != a.0 && c.0 != b.0 && c.0 != n1.0);
    }

    /// A name that used every epoch moves to a new id at epoch 0 and its old id is retired,
    /// across a restart too; other names and ids are not affected.
    #[test]
    fn a_name_that_used_every_epoch_moves_to_a_new_id_and_retires_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let p = ProducerIds::open(dir.path()).unwrap();
        let (old, _) = p.init(Some("busy")).unwrap();
        let other = p.init(Some("calm")).unwrap();
        p.state.lock().named.get_mut("busy").unwrap().1 = i16::MAX - 1;
        assert_eq!(p.init(Some("busy")).unwrap(), (old, i16::MAX));
        assert!(!p.retired(old));
        let (new, epoch) = p.init(Some("busy")).unwrap();
        assert_eq!(epoch, 0);
        assert!(new != old && new != other.0 && p.issued(new));
        assert!(p.retired(old) && !p.retired(new) && !p.retired(other.0));
        assert_eq!(p.named(), [(new, 0), (other.0, other.1)]);
        drop(p);
        let p = ProducerIds::open(dir.path()).unwrap();
        assert!(p.retired(old) && !p.retired(new));
        assert_eq!(p.init(Some("busy")).unwrap(), (new, 1));
        assert_ne!(p.init(None).unwrap().0, new);
    }
}
