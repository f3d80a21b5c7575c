//! Topics: their partitions' logs, persisted settings, creation and deletion.
//!
//! Layout: `<data_dir>/topics/<topic>/topic.toml` holds the partition count and settings;
//! `<data_dir>/topics/<topic>/<partition>/` holds that partition's segments.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use rustmq_protocol::{ErrorCode, PartitionDescription, TopicSettings};
use serde::{Deserialize, Serialize};

use crate::config::LogSettings;
use crate::error::BrokerError;
use crate::storage::{sync_dir, write_atomic, PartitionLog};

/// Longest topic name accepted.
pub const MAX_TOPIC_NAME_LEN: usize = 249;
/// Most partitions one topic may have.
pub use rustmq_protocol::MAX_PARTITIONS;
/// Smallest `segment_bytes` a topic may set.
pub const MIN_SEGMENT_BYTES: u64 = 1024;
/// Largest `segment_bytes` a topic (or `log.segment_bytes`) may set: index entries hold
/// 32-bit file positions, so a log rolls its segments at this size whatever is set.
pub use crate::storage::MAX_SEGMENT_BYTES;
/// A deleted topic's directory is renamed to this prefix and a random number before its
/// removal (its name, which with the prefix could exceed a file name's 255 bytes, is written
/// in [`TOMB_NAME_FILE`] inside it first). `~` is not allowed in topic names, so a tomb a crash
/// left behind is never taken for a topic.
const TOMB_PREFIX: &str = "~deleted~";
/// The file in a topic's directory that names the topic once the directory is a tomb.
const TOMB_NAME_FILE: &str = "~deleted";

/// One topic and its open partition logs.
#[derive(Debug)]
pub struct Topic {
    /// Topic name.
    pub name: String,
    /// Per-topic settings (overrides of the broker's log settings).
    pub settings: TopicSettings,
    /// Partition logs, index = partition number.
    pub partitions: Vec<Arc<PartitionLog>>,
    dir: PathBuf,
    pub(crate) metrics: crate::metrics::TopicMetrics,
}

impl Topic {
    /// The log of `partition`, or an `UnknownPartition` error.
    pub fn partition(&self, partition: u32) -> Result<&Arc<PartitionLog>, BrokerError> {
        self.partitions.get(partition as usize).ok_or_else(|| {
            BrokerError::new(
                ErrorCode::UnknownPartition,
                format!(
                    "topic {} has no partition {partition} (it has {})",
                    self.name,
                    self.partitions.len()
                ),
            )
        })
    }

    /// State of every partition.
    pub fn describe(&self) -> Vec<PartitionDescription> {
        self.partitions
            .iter()
            .enumerate()
            .map(|(i, log)| PartitionDescription {
                partition: i as u32,
                log_start_offset: log.log_start_offset(),
                high_watermark: log.high_watermark(),
                size_bytes: log.size_bytes(),
                segments: log.segment_count(),
            })
            .collect()
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct TopicFile {
    partitions: u32,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    segment_bytes: Option<u64>,
}

/// Why a deleted topic's name cannot be created (yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reserved {
    /// Its deletion is going on: a retry soon succeeds.
    Deleting,
    /// Its deletion could not be finished until a restart: what refers to the deleted topic
    /// (the groups' offsets) could not be dropped, or its data could not be told apart from
    /// a new topic's deletion (its name file stayed), and a new topic of the name would lose
    /// or inherit what refers to it.
    UntilRestart,
}

/// All topics of a broker.
#[derive(Debug)]
pub struct TopicManager {
    root: PathBuf,
    log: LogSettings,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    /// Held by a creation or deletion for its whole disk work (one at a time), so that the
    /// topics' lock, which every produce and fetch reads, is written only for the moment a
    /// topic comes or goes.
    changes: Mutex<()>,
    /// Most partitions over all topics that creations may reach (`limits.max_partitions`).
    max_partitions: u32,
    /// Names of topics being deleted (between `begin_delete` and `finish_delete`), and of
    /// those whose deletion could not drop what refers to them (reserved until a restart).
    deleting: Mutex<HashMap<String, Reserved>>,
    /// What deletions the broker did not finish left (found when the topics were opened):
    /// each tomb and the topic it held, if it says.
    tombs: Mutex<Vec<(Option<String>, PathBuf)>>,
}

/// Whether `name` is 1 to `longest` of `[A-Za-z0-9._-]`, and not `.` or `..`: the shape of a
/// topic name (and of what is stored under one, such as a group's committed entries).
pub(crate) fn is_name(name: &str, longest: usize) -> bool {
    !name.is_empty()
        && name.len() <= longest
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Checks a topic name: 1 to 249 of `[A-Za-z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), BrokerError> {
    if is_name(name, MAX_TOPIC_NAME_LEN) {
        Ok(())
    } else {
        Err(BrokerError::new(
            ErrorCode::InvalidTopic,
            format!("invalid topic name {name:?}: use 1 to {MAX_TOPIC_NAME_LEN} characters of [A-Za-z0-9._-]"),
        ))
    }
}

impl TopicManager {
    /// Opens every topic under `data_dir/topics`, recovering each partition.
    pub fn open(data_dir: &Path, log: LogSettings) -> Result<Self, BrokerError> {
        let root = data_dir.join("topics");
        std::fs::create_dir_all(&root)
            .map_err(|e| BrokerError::io("create topics directory", e))?;
        let manager = Self {
            root,
            log,
            topics: RwLock::new(BTreeMap::new()),
            changes: Mutex::new(()),
            max_partitions: crate::config::Limits::default().max_partitions,
            deleting: Mutex::default(),
            tombs: Mutex::default(),
        };
        let entries =
            std::fs::read_dir(&manager.root).map_err(|e| BrokerError::io("list topics", e))?;
        for entry in entries {
            let entry = entry.map_err(|e| BrokerError::io("list topics", e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let dir = entry.path();
            if name.starts_with(TOMB_PREFIX) {
                // A deletion the broker did not finish (it stopped, or the removal failed):
                // removed by `remove_tombs`, once what refers to the topic is dropped.
                let deleted = std::fs::read_to_string(dir.join(TOMB_NAME_FILE)).ok();
                manager.tombs.lock().push((deleted, dir));
                continue;
            }
            if validate_topic_name(&name).is_err() || !dir.join("topic.toml").exists() {
                tracing::warn!(path = %dir.display(), "skipping a directory that is not a topic");
                continue;
            }
            let text = std::fs::read_to_string(dir.join("topic.toml"))
                .map_err(|e| BrokerError::io("read topic.toml", e))?;
            let corrupt = |why: String| {
                BrokerError::new(
                    ErrorCode::StorageError,
                    format!("corrupt {}/topic.toml: {why}", dir.display()),
                )
            };
            let file: TopicFile = toml::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
            let settings = TopicSettings {
                retention_ms: file.retention_ms,
                retention_bytes: file.retention_bytes,
                segment_bytes: file.segment_bytes,
            };
            // Checked as a creation checks them: a damaged file must not make the broker
            // create partitions until the disk is full, or roll a segment per batch.
            check_topic(file.partitions, &settings).map_err(|e| corrupt(e.message))?;
            let topic = manager.open_topic(&name, file.partitions, settings)?;
            manager.topics.write().insert(name, Arc::new(topic));
        }
        Ok(manager)
    }

    /// Sets the most partitions over all topics that creations may reach
    /// (`limits.max_partitions`; the default's otherwise).
    pub fn with_max_partitions(mut self, most: u32) -> Self {
        self.max_partitions = most;
        self
    }

    fn open_topic(
        &self,
        name: &str,
        partitions: u32,
        settings: TopicSettings,
    ) -> Result<Topic, BrokerError> {
        let dir = self.root.join(name);
        let config = self.log.log_config(&settings);
        let logs = (0..partitions)
            .map(|p| {
                PartitionLog::open(dir.join(p.to_string()), config.clone())
                    .map(Arc::new)
                    .map_err(|e| BrokerError::storage(format!("open {name}/{p}"), e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Topic {
            name: name.to_owned(),
            settings,
            partitions: logs,
            dir,
            metrics: crate::metrics::TopicMetrics::new(name),
        })
    }

    /// The topic, if it exists.
    pub fn get(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics.read().get(name).cloned()
    }

    /// The topic, or an `UnknownTopic` error.
    pub fn require(&self, name: &str) -> Result<Arc<Topic>, BrokerError> {
        self.get(name).ok_or_else(|| {
            BrokerError::new(ErrorCode::UnknownTopic, format!("unknown topic {name:?}"))
        })
    }

    /// Creates a topic; fails with `TopicAlreadyExists` if it exists. It waits for the disk
    /// (a directory and an fsync per partition): async callers run it on a blocking thread.
    pub fn create(
        &self,
        name: &str,
        partitions: u32,
        settings: TopicSettings,
    ) -> Result<Arc<Topic>, BrokerError> {
        self.create_with(name, partitions, settings, |_| {})
    }

    /// Runs `f` while no topic is created or deleted (`f` must not create or delete one).
    pub(crate) fn without_changes<R>(&self, f: impl FnOnce() -> R) -> R {
        let _changing = self.changes.lock();
        f()
    }

    /// [`create`](Self::create), with `prepare` run on the new topic before any request can
    /// reach it (before it is in the topic map).
    pub fn create_with(
        &self,
        name: &str,
        partitions: u32,
        settings: TopicSettings,
        prepare: impl FnOnce(&Topic),
    ) -> Result<Arc<Topic>, BrokerError> {
        validate_topic_name(name)?;
        check_topic(partitions, &settings)?;
        // Checked at creation only: a topic made before this check keeps opening, and rolls
        // at the cap (its description says so).
        if settings
            .segment_bytes
            .is_some_and(|b| b > MAX_SEGMENT_BYTES)
        {
            return Err(BrokerError::new(
                ErrorCode::InvalidTopic,
                format!(
                    "segment_bytes must be at most {MAX_SEGMENT_BYTES} (index entries hold \
                     32-bit file positions)"
                ),
            ));
        }
        let _changing = self.changes.lock();
        if self.topics.read().contains_key(name) {
            return Err(BrokerError::new(
                ErrorCode::TopicAlreadyExists,
                format!("topic {name:?} already exists"),
            ));
        }
        // Under `changes`: no other creation can come between the count and the insert.
        let held: u64 = self
            .topics
            .read()
            .values()
            .map(|t| t.partitions.len() as u64)
            .sum();
        if held + u64::from(partitions) > u64::from(self.max_partitions) {
            return Err(BrokerError::new(
                ErrorCode::InvalidTopic,
                format!(
                    "topic {name:?} with {partitions} partitions would take the broker past \
                     its limit of {} partitions over all topics (limits.max_partitions; it \
                     holds {held})",
                    self.max_partitions
                ),
            ));
        }
        match self.deleting.lock().get(name) {
            Some(Reserved::Deleting) => {
                return Err(BrokerError::new(
                    ErrorCode::Throttled,
                    format!("topic {name:?} is being deleted; try again"),
                ))
            }
            // Not retryable: retrying would get the same answer until the broker restarts.
            Some(Reserved::UntilRestart) => {
                return Err(BrokerError::new(
                    ErrorCode::InvalidTopic,
                    format!(
                        "topic {name:?} was deleted, but its deletion cannot be finished until \
                         the broker restarts (see the broker's log); the name is free once the \
                         broker restarts"
                    ),
                ))
            }
            None => {}
        }
        let dir = self.root.join(name);
        make_topic_dir(name, &dir)?;
        let made = (|| {
            // The topic's own entry in `topics/`, or a crash could lose the whole directory
            // with the records acknowledged in it.
            sync_dir(&self.root).map_err(|e| BrokerError::io("create topic directory", e))?;
            let topic = Arc::new(self.open_topic(name, partitions, settings.clone())?);
            let file = TopicFile {
                partitions,
                retention_ms: settings.retention_ms,
                retention_bytes: settings.retention_bytes,
                segment_bytes: settings.segment_bytes,
            };
            let text = toml::to_string(&file)
                .map_err(|e| BrokerError::new(ErrorCode::Internal, e.to_string()))?;
            write_durably(&dir.join("topic.toml"), text.as_bytes())
                .map_err(|e| BrokerError::io("write topic.toml", e))?;
            Ok(topic)
        })();
        let topic = match made {
            Ok(topic) => topic,
            Err(e) => {
                // Nothing was stored in it yet: gone, so that the name can be created again
                // (a directory left without `topic.toml` would refuse it).
                if let Err(removing) = std::fs::remove_dir_all(&dir) {
                    tracing::warn!(topic = name, path = %dir.display(), error = %removing, "cannot remove the directory of a topic whose creation failed");
                }
                return Err(e);
            }
        };
        prepare(&topic);
        self.topics
            .write()
            .insert(name.to_owned(), Arc::clone(&topic));
        tracing::info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    /// The topic, created with the default partition count if it does not exist.
    pub fn get_or_create(&self, name: &str, partitions: u32) -> Result<Arc<Topic>, BrokerError> {
        self.get_or_create_with(name, partitions, |_| {})
    }

    /// [`get_or_create`](Self::get_or_create), with `prepare` run on a topic it creates, as
    /// [`create_with`](Self::create_with) does.
    pub fn get_or_create_with(
        &self,
        name: &str,
        partitions: u32,
        prepare: impl FnOnce(&Topic),
    ) -> Result<Arc<Topic>, BrokerError> {
        if let Some(t) = self.get(name) {
            return Ok(t);
        }
        match self.create_with(name, partitions, TopicSettings::default(), prepare) {
            Err(e) if e.code == ErrorCode::TopicAlreadyExists => self.require(name),
            other => other,
        }
    }

    /// Deletes a topic and its data. Readers still holding its logs finish undisturbed.
    /// [`begin_delete`](Self::begin_delete), then [`finish_delete`](Self::finish_delete).
    pub fn delete(&self, name: &str) -> Result<(), BrokerError> {
        let tomb = self.begin_delete(name)?;
        self.finish_delete(name, &tomb);
        Ok(())
    }

    /// The first half of a deletion: the topic is gone from the broker, its name reserved
    /// (creating it fails with a retryable error) until [`finish_delete`](Self::finish_delete).
    /// In between, the caller drops what refers to the topic elsewhere (the groups' offsets),
    /// so that nothing of the old topic applies to a new one of the same name. Answers where
    /// the data went.
    ///
    /// The topic's logs are retired first (see [`PartitionLog::retire`]): a request or a
    /// retention pass holding one writes nothing more to the files at its paths. The
    /// directory, naming its topic inside, is then renamed out of the way; a failed rename
    /// leaves the topic as it was. The topics' lock is written only to take the topic out.
    pub fn begin_delete(&self, name: &str) -> Result<PathBuf, BrokerError> {
        let changing = self.changes.lock();
        let topic = self.require(name)?;
        for log in &topic.partitions {
            log.retire();
        }
        let tomb = self
            .root
            .join(format!("{TOMB_PREFIX}{}", fastrand::u64(..)));
        let moved = write_durably(&topic.dir.join(TOMB_NAME_FILE), name.as_bytes())
            .and_then(|()| std::fs::rename(&topic.dir, &tomb));
        if let Err(e) = moved {
            // Nothing moved (and no topic of the name can have come meanwhile: `changes` is
            // held): the topic goes on as it was.
            let _ = std::fs::remove_file(topic.dir.join(TOMB_NAME_FILE));
            for log in &topic.partitions {
                log.reinstate();
            }
            return Err(BrokerError::io("delete topic", e));
        }
        self.topics.write().remove(name);
        // Long polls on its partitions answer now (it is gone from the map, and its logs are
        // retired), rather than at their deadline.
        for log in &topic.partitions {
            log.wake_readers();
        }
        self.deleting
            .lock()
            .insert(name.to_owned(), Reserved::Deleting);
        drop(changing);
        if let Err(e) = sync_dir(&self.root) {
            tracing::warn!(topic = name, error = %e, "cannot sync the topics directory");
        }
        Ok(tomb)
    }

    /// The second half of a deletion: the data is removed and the name free again (or, when
    /// the data's name file cannot be removed, reserved until the next start). A removal
    /// that fails (or that a crash interrupts) is finished at the next start
    /// ([`remove_tombs`](Self::remove_tombs)).
    pub fn finish_delete(&self, name: &str, tomb: &Path) {
        // The name first: the data's place is its own, and removing it may take a while. But
        // not while the data still carries it: should the removal fail, the next start would
        // take the data for a deletion it has to finish, and drop what refers to a new topic
        // of the name (the groups' offsets). So the name file goes first, and if it cannot,
        // the name stays reserved until that start.
        match std::fs::remove_file(tomb.join(TOMB_NAME_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::warn!(topic = name, path = %tomb.display(), error = %e, "cannot unname a deleted topic's data; the name is free once the broker restarts");
                self.reserve_until_restart(name);
            }
            _ => {
                self.deleting.lock().remove(name);
            }
        }
        if let Err(e) = std::fs::remove_dir_all(tomb) {
            tracing::warn!(topic = name, path = %tomb.display(), error = %e, "cannot remove a deleted topic's data; it is removed when the broker restarts");
        }
        tracing::info!(topic = name, "deleted topic");
    }

    /// Names of the topics whose deletion the broker stopped in (found when the topics were
    /// opened): what else refers to them may be left too (see
    /// `GroupCoordinator::forget_deleted`); then [`remove_tombs`](Self::remove_tombs).
    pub fn deleted_at_open(&self) -> Vec<String> {
        self.tombs
            .lock()
            .iter()
            .filter_map(|(name, _)| name.clone())
            .collect()
    }

    /// Keeps the names of the topics whose deletion the broker stopped in reserved for as long
    /// as this broker runs (creating one answers `InvalidTopic`, not the retryable answer of a
    /// deletion in progress): what refers to them could not be dropped at the start, and a
    /// new topic of such a name would inherit it.
    pub fn reserve_deleted(&self) {
        let names = self.deleted_at_open();
        let mut deleting = self.deleting.lock();
        for name in names {
            deleting.insert(name, Reserved::UntilRestart);
        }
    }

    /// Keeps `name`, whose deletion began, reserved until the broker restarts (creating it
    /// answers `InvalidTopic`): what refers to the topic could not be dropped, or its data
    /// could not be unnamed (see `finish_delete`). The next start finishes the deletion.
    pub fn reserve_until_restart(&self, name: &str) {
        self.deleting
            .lock()
            .insert(name.to_owned(), Reserved::UntilRestart);
    }

    /// Removes what the deletions the broker stopped in left of their topics' data.
    pub fn remove_tombs(&self) {
        for (_, dir) in self.tombs.lock().drain(..) {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::info!(path = %dir.display(), "removed a deleted topic's data"),
                Err(e) => {
                    tracing::warn!(path = %dir.display(), error = %e, "cannot remove a deleted topic's data")
                }
            }
        }
    }

    /// Every topic, sorted by name.
    pub fn list(&self) -> Vec<Arc<Topic>> {
        self.topics.read().values().cloned().collect()
    }

    /// The effective settings of a topic (its overrides over the broker defaults).
    pub fn effective_settings(&self, topic: &Topic) -> TopicSettings {
        let c = self.log.log_config(&topic.settings);
        TopicSettings {
            retention_ms: c.retention_ms,
            retention_bytes: c.retention_bytes,
            // What the log rolls at (see `MAX_SEGMENT_BYTES`).
            segment_bytes: Some(c.segment_bytes.min(MAX_SEGMENT_BYTES)),
        }
    }

    /// Every partition log of every topic.
    pub fn all_logs(&self) -> Vec<Arc<PartitionLog>> {
        self.topics
            .read()
            .values()
            .flat_map(|t| t.partitions.iter().cloned())
            .collect()
    }
}

/// Whether `dir` holds a segment file with anything in it (or cannot be read through).
fn stores_records(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return true;
    };
    entries.into_iter().any(|entry| {
        let Ok(entry) = entry else { return true };
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => stores_records(&path),
            Ok(_) => {
                path.extension()
                    .is_some_and(|e| e == crate::storage::LOG_EXT)
                    && entry.metadata().map_or(true, |m| m.len() > 0)
            }
            Err(_) => true,
        }
    })
}

/// Makes topic `name`'s directory, `dir`, which must be new: one that is there already
/// belongs to no topic of this broker under this name, and is not taken over. It is another
/// topic's, on a file system that ignores case (`Orders` and `orders` would share their
/// files), or a damaged topic's, left with records but without its `topic.toml`: both are
/// refused. One with neither, which a creation cut short by a crash leaves, is made anew.
fn make_topic_dir(name: &str, dir: &Path) -> Result<(), BrokerError> {
    let io = |e| BrokerError::io("create topic directory", e);
    match std::fs::create_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(e)),
        Err(_) => {}
    }
    if dir.join("topic.toml").exists() {
        // Not `TopicAlreadyExists`: callers take that for the topic being there, and it is
        // not (a producer's auto-creation would look it up, an `ensure_topic` succeed).
        return Err(BrokerError::new(
            ErrorCode::InvalidTopic,
            format!(
                "topic {name:?} would use the directory of another topic, {}: the data \
                 directory's file system ignores the case of names, or the like",
                dir.display()
            ),
        ));
    }
    if stores_records(dir) {
        return Err(BrokerError::new(
            ErrorCode::StorageError,
            format!(
                "topic {name:?}: {} is there already, with records but without a topic.toml \
                 (a damaged topic's); restore its topic.toml and restart the broker, or remove \
                 it",
                dir.display()
            ),
        ));
    }
    tracing::warn!(topic = name, path = %dir.display(), "removing a directory without topic.toml or records, left by an unfinished creation");
    std::fs::remove_dir_all(dir)
        .and_then(|()| std::fs::create_dir(dir))
        .map_err(io)
}

/// Checks a topic's partition count and settings (at creation, and when a topic is opened).
fn check_topic(partitions: u32, settings: &TopicSettings) -> Result<(), BrokerError> {
    if partitions == 0 || partitions > MAX_PARTITIONS {
        return Err(BrokerError::new(
            ErrorCode::InvalidTopic,
            format!("a topic needs 1 to {MAX_PARTITIONS} partitions, not {partitions}"),
        ));
    }
    // A topic's settings are kept in its TOML file, whose integers are signed 64-bit.
    let too_large = [
        ("retention_ms", settings.retention_ms),
        ("retention_bytes", settings.retention_bytes),
        ("segment_bytes", settings.segment_bytes),
    ]
    .into_iter()
    .find(|(_, value)| value.is_some_and(|v| i64::try_from(v).is_err()));
    if let Some((name, _)) = too_large {
        return Err(BrokerError::new(
            ErrorCode::InvalidTopic,
            format!("{name} must be at most {} (i64::MAX)", i64::MAX),
        ));
    }
    if settings
        .segment_bytes
        .is_some_and(|b| b < MIN_SEGMENT_BYTES)
    {
        return Err(BrokerError::new(
            ErrorCode::InvalidTopic,
            format!("segment_bytes must be at least {MIN_SEGMENT_BYTES}"),
        ));
    }
    Ok(())
}

/// Writes a small file atomically and durably: temp file, fsync, rename, fsync the directory.
pub(crate) fn write_durably(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic(path, data)?;
    match path.parent() {
        Some(dir) => sync_dir(dir),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names() {
        for ok in ["a", "orders.v1", "A_b-c", &"x".repeat(249)] {
            validate_topic_name(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn topics_survive_reopen_and_delete_removes_data() {
        let dir = tempfile::tempdir().unwrap();
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        m.create("t", 3, TopicSettings::default()).unwrap();
        assert_eq!(
            m.create("t", 1, TopicSettings::default()).unwrap_err().code,
            ErrorCode::TopicAlreadyExists
        );
        drop(m);
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        assert_eq!(m.require("t").unwrap().partitions.len(), 3);
        m.delete("t").unwrap();
        assert!(!dir.path().join("topics/t").exists());
        assert!(m.get("t").is_none());
    }

    /// A deletion a crash interrupted leaves its renamed directory behind: it is removed when
    /// the topics are next opened, never taken for a topic.
    #[test]
    fn a_deletion_left_unfinished_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let long = "x".repeat(MAX_TOPIC_NAME_LEN);
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        for name in ["orders", long.as_str()] {
            m.create(name, 2, TopicSettings::default()).unwrap();
        }
        // What a deletion leaves if the broker stops between its halves (a name of the
        // longest length too: the tomb's own name stays short).
        let tombs = [
            m.begin_delete("orders").unwrap(),
            m.begin_delete(&long).unwrap(),
        ];
        drop(m);
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        assert!(m.list().is_empty(), "{:?}", m.list());
        let mut deleted = m.deleted_at_open();
        deleted.sort();
        assert_eq!(deleted, ["orders", long.as_str()]);
        // The data stays until what refers to the topics is dropped.
        assert!(tombs.iter().all(|t| t.exists()));
        m.remove_tombs();
        assert!(tombs.iter().all(|t| !t.exists()));
        // A topic of the same name starts empty.
        let t = m.create("orders", 1, TopicSettings::default()).unwrap();
        assert_eq!(t.partitions[0].high_watermark(), 0);
        assert!(m.get(&long).is_none());
    }

    /// A topic deleted and created again at once gets a directory of its own: what the new one
    /// writes survives a reopen.
    #[test]
    fn a_topic_created_again_after_a_delete_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        m.create("t", 1, TopicSettings::default()).unwrap();
        m.delete("t").unwrap();
        m.create("t", 3, TopicSettings::default()).unwrap();
        drop(m);
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        assert_eq!(m.require("t").unwrap().partitions.len(), 3);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("topics"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, ["t"]);
    }

    /// A handle to a deleted topic's log, taken before the deletion, writes nothing more to
    /// the files at its old paths, which a topic of the same name created after it now uses:
    /// its appends fail and its retention passes remove nothing.
    #[test]
    fn a_deleted_topics_logs_leave_a_new_topic_of_the_same_name_alone() {
        use crate::storage::StorageError;
        let dir = tempfile::tempdir().unwrap();
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        // Small segments, and a retention that every sealed one is past.
        let small = TopicSettings {
            segment_bytes: Some(1024),
            retention_ms: Some(1),
            ..TopicSettings::default()
        };
        let batch = |ts: i64| {
            let mut b = rustmq_protocol::RecordBatchBuilder::new();
            b.push(ts, None, Some(&[7u8; 600][..]), []);
            b.build().unwrap()
        };
        let old = Arc::clone(&m.create("t", 1, small.clone()).unwrap().partitions[0]);
        for _ in 0..4 {
            old.append(batch(1)).unwrap();
        }
        assert!(old.segment_count() > 1);
        m.delete("t").unwrap();
        let new = Arc::clone(
            &m.create("t", 1, TopicSettings::default())
                .unwrap()
                .partitions[0],
        );
        new.append(batch(1)).unwrap();
        assert!(matches!(old.append(batch(1)), Err(StorageError::Retired)));
        // Every old sealed segment is past the retention: a pass on the old handle would remove
        // the files at the old paths, the new topic's among them; its close would write index
        // files there.
        assert_eq!(old.apply_retention(i64::MAX).unwrap(), 0);
        old.close().unwrap();
        new.append(batch(1)).unwrap();
        assert_eq!(new.high_watermark(), 2);
        let files = |dir: &Path| {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names
        };
        // Only the new topic's files, all of its one segment (based at 0): no index files of
        // the old handle's active segment (based at 3), which its close would have written.
        let only_the_new_segment = |names: &[String]| {
            !names.is_empty() && names.iter().all(|f| f.starts_with("00000000000000000000."))
        };
        let partition_dir = dir.path().join("topics/t/0");
        let before = files(&partition_dir);
        assert!(only_the_new_segment(&before), "{before:?}");
        drop((old, new, m));
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        let reopened = &m.require("t").unwrap().partitions[0];
        assert_eq!(reopened.high_watermark(), 2);
        assert_eq!(reopened.read(0, 1 << 20).unwrap().len(), 2 * batch(1).len());
        let after = files(&partition_dir);
        assert!(only_the_new_segment(&after), "{after:?}");
    }

    /// Between the two halves of a deletion the name is reserved: creating the topic again
    /// fails with a retryable error until the deletion is finished.
    #[test]
    fn a_topic_being_deleted_cannot_be_created_until_the_deletion_ends() {
        let dir = tempfile::tempdir().unwrap();
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        m.create("t", 1, TopicSettings::default()).unwrap();
        let tomb = m.begin_delete("t").unwrap();
        assert!(m.get("t").is_none());
        let e = m.create("t", 1, TopicSettings::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::Throttled);
        assert!(e.code.is_retryable());
        m.finish_delete("t", &tomb);
        assert!(!tomb.exists());
        m.create("t", 1, TopicSettings::default()).unwrap();

        // A deletion that could not drop the groups' offsets keeps the name until a restart,
        // and says so with an answer that is not retried (a retry would get it again).
        let tomb = m.begin_delete("t").unwrap();
        m.reserve_until_restart("t");
        let e = m.create("t", 1, TopicSettings::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTopic);
        assert!(!e.code.is_retryable());
        assert!(e.message.contains("once the broker restarts"), "{e}");
        assert!(tomb.exists(), "its data is removed by the next start");
    }

    /// Creations, auto-creations included, stop at `limits.max_partitions` over all topics;
    /// a deletion makes room again, and topics already there open whatever the limit.
    #[test]
    fn creations_stop_at_the_brokers_partition_limit() {
        let dir = tempfile::tempdir().unwrap();
        let m = TopicManager::open(dir.path(), LogSettings::default())
            .unwrap()
            .with_max_partitions(5);
        m.create("a", 3, TopicSettings::default()).unwrap();
        m.get_or_create("b", 2).unwrap();
        for e in [
            m.create("c", 1, TopicSettings::default()).unwrap_err(),
            m.get_or_create("c", 1).unwrap_err(),
        ] {
            assert_eq!(e.code, ErrorCode::InvalidTopic);
            assert!(!e.code.is_retryable());
            assert!(e.message.contains("limits.max_partitions"), "{e}");
        }
        assert!(m.get("c").is_none());
        assert!(!dir.path().join("topics/c").exists());
        m.delete("a").unwrap();
        m.create("c", 3, TopicSettings::default()).unwrap();
        drop(m);
        let m = TopicManager::open(dir.path(), LogSettings::default())
            .unwrap()
            .with_max_partitions(1);
        assert_eq!(m.list().len(), 2, "both open, though past the limit now");
        assert!(m.create("d", 1, TopicSettings::default()).is_err());
    }

    /// A segment size past what index entries can address is refused at creation; a topic
    /// made before with one opens, and its description gives the size it rolls at.
    #[test]
    fn a_segment_size_past_the_indexes_reach_is_refused_and_described_as_rolled() {
        let dir = tempfile::tempdir().unwrap();
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        let huge = TopicSettings {
            segment_bytes: Some(MAX_SEGMENT_BYTES + 1),
            ..TopicSettings::default()
        };
        let e = m.create("t", 1, huge).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTopic);
        assert!(e.message.contains("segment_bytes must be at most"), "{e}");
        assert!(!dir.path().join("topics/t").exists());
        let at_most = TopicSettings {
            segment_bytes: Some(MAX_SEGMENT_BYTES),
            ..TopicSettings::default()
        };
        m.create("t", 1, at_most).unwrap();
        drop(m);
        std::fs::write(
            dir.path().join("topics/t/topic.toml"),
            "partitions = 1\nsegment_bytes = 8589934592\n",
        )
        .unwrap();
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        let t = m.require("t").unwrap();
        assert_eq!(
            m.effective_settings(&t).segment_bytes,
            Some(MAX_SEGMENT_BYTES)
        );
    }

    /// A topic's directory that is there already is not taken over: another topic's (as on a
    /// file system that ignores case) or a damaged one's with records is refused, and one an
    /// unfinished creation left (no `topic.toml`, no record) is made anew.
    #[test]
    fn a_directory_there_already_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        m.create("orders", 1, TopicSettings::default()).unwrap();
        let root = dir.path().join("topics");

        // "Orders" on a file system that ignores case names the directory of "orders".
        std::fs::create_dir_all(root.join("folded/0")).unwrap();
        std::fs::copy(
            root.join("orders/topic.toml"),
            root.join("folded/topic.toml"),
        )
        .unwrap();
        let e = m.create("folded", 1, TopicSettings::default()).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidTopic);
        assert!(e.message.contains("another topic"), "{e}");
        assert!(m.get("folded").is_none());

        // A damaged topic's records, without its topic.toml.
        std::fs::create_dir_all(root.join("damaged/0")).unwrap();
        std::fs::write(root.join("damaged/0/00000000000000000000.log"), b"records").unwrap();
        let e = m
            .create("damaged", 1, TopicSettings::default())
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::StorageError);
        assert!(e.message.contains("without a topic.toml"), "{e}");
        assert_eq!(
            std::fs::read(root.join("damaged/0/00000000000000000000.log")).unwrap(),
            b"records",
            "left as it was"
        );

        // An unfinished creation: empty segments, no topic.toml.
        std::fs::create_dir_all(root.join("unfinished/0")).unwrap();
        std::fs::write(root.join("unfinished/0/00000000000000000000.log"), b"").unwrap();
        std::fs::write(
            root.join("unfinished/0/00000000000000000000.index"),
            [0u8; 64],
        )
        .unwrap();
        m.create("unfinished", 2, TopicSettings::default()).unwrap();
        drop(m);
        let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
        assert_eq!(m.require("unfinished").unwrap().partitions.len(), 2);
    }

    /// A damaged `topic.toml` with an impossible partition count or segment size is refused
    /// with a clear error rather than opened.
    #[test]
    fn a_damaged_topic_file_is_refused() {
        for (text, says) in [
            ("partitions = 4294967295\n", "partitions"),
            ("partitions = 1\nsegment_bytes = 0\n", "segment_bytes"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let m = TopicManager::open(dir.path(), LogSettings::default()).unwrap();
            m.create("t", 1, TopicSettings::default()).unwrap();
            drop(m);
            std::fs::write(dir.path().join("topics/t/topic.toml"), text).unwrap();
            let e = TopicManager::open(dir.path(), LogSettings::default()).unwrap_err();
            assert_eq!(e.code, ErrorCode::StorageError);
            assert!(
                e.message.contains("topic.toml") && e.message.contains(says),
                "{e}"
            );
        }
    }
}
