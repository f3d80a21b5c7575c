//! Consumer groups: membership, rebalancing, assignment, and durable committed offsets.
//!
//! ```text
//!  JoinGroup ──► member added ──► group Rebalancing (generation g)
//!                                   │  members learn it from their next heartbeat and rejoin
//!                                   ▼
//!          every member rejoined, or the rebalance timeout passed (stragglers removed)
//!                                   │
//!                                   ▼
//!            assignment computed, generation g+1, every pending JoinGroup answered
//! ```
//!
//! A member that sends no heartbeat within its session timeout is removed by the reaper and the
//! group rebalances. Commits from a member are fenced by generation: a member of an older
//! generation cannot overwrite the offsets of the partitions' new owner. Committed offsets are
//! kept in one file per group, replaced atomically and fsynced on every commit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustmq_protocol::*;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::BrokerError;
use crate::topics::{write_durably, TopicManager};

#[derive(Debug)]
struct Member {
    client_id: String,
    topics: Vec<String>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    last_seen: Instant,
    assignment: Vec<TopicPartitions>,
}

#[derive(Debug)]
struct Group {
    generation: u32,
    members: BTreeMap<String, Member>,
    rebalancing: bool,
    joined: BTreeSet<String>,
    deadline: Instant,
    completed: watch::Sender<u32>,
    offsets: BTreeMap<(String, u32), u64>,
    /// Whether the offsets file may hold other entries than `offsets`: a commit is writing it,
    /// or wrote it and did not get to update `offsets` (its write failed after the file was
    /// replaced, or it was given up). A deletion's `forget_topic` then rewrites the file
    /// even if `offsets` does not name the topic.
    unsure: bool,
    /// Taken by a commit (and by a deleted topic's removal from the offsets, and by the
    /// group's expiry) for as long as it writes the group's offsets file: one at a time, in
    /// turn. A group made again after it expired has a turn of its own: whoever waited for the
    /// old one checks that it is still the group's ([`Group::is_turn`]).
    writes: Arc<tokio::sync::Mutex<()>>,
    /// When a member last joined, sent a heartbeat or left, or an offset was committed: a
    /// group without members idle for `log.group_expiration_ms` is forgotten.
    last_active: Instant,
    /// Not forgotten before this: a group read at the broker's start is kept for
    /// [`MIN_GROUP_EXPIRATION_MS`](crate::config::MIN_GROUP_EXPIRATION_MS) whatever its file's
    /// age, so that its members have the time of a restart to come back (the clock may also
    /// have jumped while the broker was down).
    kept_until: Instant,
}

impl Group {
    fn new(offsets: BTreeMap<(String, u32), u64>) -> Self {
        // Generations are not stored: a group made again (after a restart, or its expiry)
        // starts from a random one, so that its generations do not repeat the earlier ones a
        // member may still hold. A member whose join was answered across a restart then sees
        // a generation other than the one after its own, and starts its partitions over
        // rather than keep what others may have consumed meanwhile.
        let generation = fastrand::u32(1..1 << 30);
        Self {
            generation,
            members: BTreeMap::new(),
            rebalancing: false,
            joined: BTreeSet::new(),
            deadline: Instant::now(),
            completed: watch::channel(generation).0,
            offsets,
            unsure: false,
            writes: Arc::default(),
            last_active: Instant::now(),
            kept_until: Instant::now(),
        }
    }

    /// A new group, made in `writes`, a turn its maker holds.
    fn in_turn(writes: Arc<tokio::sync::Mutex<()>>) -> Self {
        Self {
            writes,
            ..Self::new(BTreeMap::new())
        }
    }

    /// Whether `writes` is this group's turn (not one of a group of the name that expired).
    fn is_turn(&self, writes: &Arc<tokio::sync::Mutex<()>>) -> bool {
        Arc::ptr_eq(&self.writes, writes)
    }

    /// Whether a member of the group subscribes to `topic`.
    fn subscribes_to(&self, topic: &str) -> bool {
        self.members
            .values()
            .any(|m| m.topics.iter().any(|t| t == topic))
    }

    /// Whether the group may be forgotten at `now`: no members, and idle for `expiration`.
    fn is_expired(&self, now: Instant, expiration: Duration) -> bool {
        self.members.is_empty()
            && !self.rebalancing
            && now >= self.kept_until
            && now.saturating_duration_since(self.last_active) >= expiration
    }

    fn start_rebalance(&mut self) {
        if !self.rebalancing {
            self.rebalancing = true;
            self.joined.clear();
            let timeout = self
                .members
                .values()
                .map(|m| m.rebalance_timeout)
                .max()
                .unwrap_or(Duration::from_secs(10));
            self.deadline = Instant::now() + timeout;
        }
    }

    /// Round-robin over every subscribed partition, members in id order, so that partitions of
    /// one topic spread evenly.
    fn complete_rebalance(&mut self, topics: &TopicManager) {
        let stragglers: Vec<String> = self
            .members
            .keys()
            .filter(|id| !self.joined.contains(*id))
            .cloned()
            .collect();
        for id in stragglers {
            tracing::info!(member = %id, "removed from group: did not rejoin in time");
            self.members.remove(&id);
        }
        for m in self.members.values_mut() {
            m.assignment.clear();
        }
        let subscribed: BTreeSet<String> = self
            .members
            .values()
            .flat_map(|m| m.topics.iter().cloned())
            .collect();
        for topic in subscribed {
            let Some(t) = topics.get(&topic) else {
                continue;
            };
            let owners: Vec<&String> = self
                .members
                .iter()
                .filter(|(_, m)| m.topics.contains(&topic))
                .map(|(id, _)| id)
                .collect();
            let mut per_member: HashMap<String, Vec<u32>> = HashMap::new();
            for p in 0..t.partitions.len() as u32 {
                let owner = owners[p as usize % owners.len()].clone();
                per_member.entry(owner).or_default().push(p);
            }
            for (id, partitions) in per_member {
                if let Some(m) = self.members.get_mut(&id) {
                    m.assignment.push(TopicPartitions {
                        topic: topic.clone(),
                        partitions,
                    });
                }
            }
        }
        self.generation += 1;
        self.rebalancing = false;
        self.joined.clear();
        let now = Instant::now();
        for m in self.members.values_mut() {
            m.last_seen = now;
        }
        self.completed.send_replace(self.generation);
        tracing::info!(
            generation = self.generation,
            members = self.members.len(),
            "group rebalanced"
        );
    }

    fn state(&self) -> &'static str {
        if self.rebalancing {
            "rebalancing"
        } else if self.members.is_empty() {
            "empty"
        } else {
            "stable"
        }
    }
}

/// All consumer groups of a broker.
#[derive(Debug)]
pub struct GroupCoordinator {
    dir: PathBuf,
    groups: Mutex<HashMap<String, Group>>,
}

/// Longest group name, in bytes: a group's offsets file is named by the hex of its name (and
/// written through a `.tmp` beside it), within a file name's 255 bytes.
pub use rustmq_protocol::MAX_GROUP_NAME_LEN;

pub use rustmq_protocol::MAX_MEMBER_ID_LEN;

/// Checks a group name: 1 to [`MAX_GROUP_NAME_LEN`] bytes.
fn validate_group_name(group: &str) -> Result<(), BrokerError> {
    if group.is_empty() || group.len() > MAX_GROUP_NAME_LEN {
        return Err(BrokerError::new(
            ErrorCode::InvalidRequest,
            format!(
                "a group name needs 1 to {MAX_GROUP_NAME_LEN} bytes, not {}",
                group.len()
            ),
        ));
    }
    Ok(())
}

/// The group of that name, made (empty) if there is none.
fn group_mut<'a>(groups: &'a mut HashMap<String, Group>, name: &str) -> &'a mut Group {
    groups
        .entry(name.to_owned())
        .or_insert_with(|| Group::new(BTreeMap::new()))
}

fn group_file(dir: &Path, group: &str) -> PathBuf {
    let hex: String = group.bytes().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("{hex}.offsets"))
}

fn persist_offsets(
    dir: &Path,
    group: &str,
    offsets: &BTreeMap<(String, u32), u64>,
) -> std::io::Result<()> {
    let text: String = offsets
        .iter()
        .map(|((t, p), o)| format!("{t}\t{p}\t{o}\n"))
        .collect();
    write_durably(&group_file(dir, group), text.as_bytes())
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// Most committed entries named `__...` that name no topic (the client libraries' own, such
/// as a stream's `__closed`) a group may hold.
pub const MAX_RESERVED_ENTRIES: usize = 1_024;

/// The client libraries' entries about a topic: `__out.<topic>` (where a stream's recovery
/// scans an output partition), `__seen.<topic>` and `__closed.<topic>` (a windowed stream's
/// input).
const ABOUT_TOPIC: [&str; 3] = rustmq_protocol::ENTRY_PREFIXES_ABOUT_TOPIC;

/// The topic a committed entry is about: a topic of that very name if there is one (topic
/// names may start with `__` too); else the one an `__out.`/`__seen.` entry names; else, for
/// other `__...` entries, none. A name without `__` is always about itself.
fn about_topic<'a>(topics: &TopicManager, entry: &'a str) -> Option<&'a str> {
    if !entry.starts_with("__") || topics.get(entry).is_some() {
        return Some(entry);
    }
    ABOUT_TOPIC
        .iter()
        .find_map(|prefix| entry.strip_prefix(prefix))
}

/// Whether a committed entry is `topic`'s own or one of the client libraries' entries about
/// it (unless the entry is the name of a topic of its own).
fn is_about(topics: &TopicManager, entry: &str, topic: &str) -> bool {
    entry == topic
        || (ABOUT_TOPIC
            .iter()
            .any(|prefix| entry.strip_prefix(prefix) == Some(topic))
            && topics.get(entry).is_none())
}

/// Whether a committed entry may be kept: the partition it is about exists in `topics`, or
/// it is about no topic.
pub(crate) fn entry_exists(topics: &TopicManager, entry: &str, partition: u32) -> bool {
    about_topic(topics, entry).is_none_or(|topic| {
        topics
            .get(topic)
            .is_some_and(|t| (partition as usize) < t.partitions.len())
    })
}

/// Checks the name of a committed entry: a topic name, or one of the client libraries' own
/// entries (`__` and a topic name, with a prefix of their own: up to 32 characters more). The
/// offsets file keeps one `topic<TAB>partition<TAB>offset` line per entry, and a name holding
/// a tab or a line break would read back as other entries.
fn validate_entry_name(name: &str) -> Result<(), BrokerError> {
    if !name.starts_with("__") {
        return crate::topics::validate_topic_name(name);
    }
    let longest = crate::topics::MAX_TOPIC_NAME_LEN + 32;
    if crate::topics::is_name(name, longest) {
        Ok(())
    } else {
        Err(BrokerError::new(
            ErrorCode::InvalidTopic,
            format!("invalid committed entry {name:?}: use up to {longest} characters of [A-Za-z0-9._-]"),
        ))
    }
}

/// Whether `r` may commit to `group`: a member of its current generation, or anyone while
/// the group has no members.
fn check_committer(r: &CommitOffsetsRequest, group: &Group) -> Result<(), BrokerError> {
    if r.member_id.is_empty() {
        if group.members.is_empty() {
            return Ok(());
        }
        return Err(BrokerError::new(
            ErrorCode::UnknownMember,
            format!(
                "a commit without a member id is refused while group {:?} has members",
                r.group
            ),
        ));
    }
    if !group.members.contains_key(&r.member_id) {
        return Err(unknown_member(&r.group, &r.member_id));
    }
    if r.generation != group.generation {
        return Err(BrokerError::new(
            ErrorCode::IllegalGeneration,
            format!(
                "commit from generation {} refused; the group is at {}",
                r.generation, group.generation
            ),
        ));
    }
    Ok(())
}

fn unknown_member(group: &str, member: &str) -> BrokerError {
    BrokerError::new(
        ErrorCode::UnknownMember,
        format!("member {member:?} is not in group {group:?}"),
    )
}

impl GroupCoordinator {
    /// Loads committed offsets from `data_dir/groups`.
    pub fn open(data_dir: &Path) -> Result<Self, BrokerError> {
        let dir = data_dir.join("groups");
        std::fs::create_dir_all(&dir).map_err(|e| BrokerError::io("create groups directory", e))?;
        let mut groups = HashMap::new();
        for entry in std::fs::read_dir(&dir).map_err(|e| BrokerError::io("list groups", e))? {
            let path = entry.map_err(|e| BrokerError::io("list groups", e))?.path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".offsets"))
                .and_then(unhex)
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path)
                .map_err(|e| BrokerError::io("read group offsets", e))?;
            let mut offsets = BTreeMap::new();
            for line in text.lines() {
                let mut parts = line.split('\t');
                match (
                    parts.next(),
                    parts.next().and_then(|p| p.parse().ok()),
                    parts.next().and_then(|o| o.parse().ok()),
                ) {
                    (Some(topic), Some(partition), Some(offset)) => {
                        offsets.insert((topic.to_owned(), partition), offset);
                    }
                    _ => {
                        tracing::warn!(path = %path.display(), line, "skipping malformed offset line")
                    }
                }
            }
            // Idle since the file was last written (each commit replaces it, and the expiry
            // pass touches the files of groups with members): a broker restarted more often
            // than the expiration still forgets idle groups, after the start's grace.
            let mut group = Group::new(offsets);
            group.kept_until =
                Instant::now() + Duration::from_millis(crate::config::MIN_GROUP_EXPIRATION_MS);
            if let Some(idle) = std::fs::metadata(&path)
                .and_then(|m| m.modified())
                .ok()
                .and_then(|written| written.elapsed().ok())
            {
                group.last_active = Instant::now()
                    .checked_sub(idle)
                    .unwrap_or(group.last_active);
            }
            groups.insert(name, group);
        }
        Ok(Self {
            dir,
            groups: Mutex::new(groups),
        })
    }

    /// Joins or rejoins; resolves when the group's next generation is settled.
    pub async fn join(
        &self,
        r: JoinGroupRequest,
        topics: &TopicManager,
    ) -> Result<JoinGroupResponse, BrokerError> {
        validate_group_name(&r.group)?;
        if r.member_id.len() > MAX_MEMBER_ID_LEN {
            return Err(BrokerError::new(
                ErrorCode::InvalidRequest,
                format!(
                    "a member id has at most {MAX_MEMBER_ID_LEN} bytes, not {}",
                    r.member_id.len()
                ),
            ));
        }
        if r.topics.is_empty() {
            return Err(BrokerError::new(
                ErrorCode::InvalidRequest,
                "a member must subscribe to at least one topic",
            ));
        }
        for topic in &r.topics {
            crate::topics::validate_topic_name(topic)?;
        }
        // Each topic once, in order: the member keeps them for its session, and a join sent
        // again with the same topics in another order is no change.
        let mut subscribed = r.topics.clone();
        subscribed.sort_unstable();
        subscribed.dedup();
        let session_timeout =
            Duration::from_millis(u64::from(r.session_timeout_ms.clamp(100, 600_000)));
        let rebalance_timeout =
            Duration::from_millis(u64::from(r.rebalance_timeout_ms.clamp(100, 600_000)));
        let (member_id, mut completed, target) = {
            let mut groups = self.groups.lock();
            let group = group_mut(&mut groups, &r.group);
            // A member may name itself: a join sent again (its answer lost, or timed out while
            // the rebalance waited for others) is then the same member's, not a new one that
            // would hold partitions until its session expired. An unknown id is a new member
            // (a member that was removed, or one that names itself), as an empty one is.
            let member_id = if r.member_id.is_empty() {
                rustmq_protocol::member_id(&r.client_id, fastrand::u64(..))
            } else {
                r.member_id.clone()
            };
            let is_new = !group.members.contains_key(&member_id);
            let member = group
                .members
                .entry(member_id.clone())
                .or_insert_with(|| Member {
                    client_id: r.client_id.clone(),
                    topics: Vec::new(),
                    session_timeout,
                    rebalance_timeout,
                    last_seen: Instant::now(),
                    assignment: Vec::new(),
                });
            let changed = member.topics != subscribed;
            member.topics = subscribed;
            member.session_timeout = session_timeout;
            member.rebalance_timeout = rebalance_timeout;
            member.last_seen = Instant::now();
            group.last_active = member.last_seen;
            if !group.rebalancing && !is_new && !changed {
                // A member of a stable group rejoining with nothing changed gets its assignment back.
                return Ok(JoinGroupResponse {
                    member_id: member_id.clone(),
                    generation: group.generation,
                    assignment: member.assignment.clone(),
                });
            }
            group.start_rebalance();
            group.joined.insert(member_id.clone());
            let target = group.generation + 1;
            if group.joined.len() == group.members.len() {
                group.complete_rebalance(topics);
            }
            (member_id, group.completed.subscribe(), target)
        };
        loop {
            if *completed.borrow_and_update() >= target {
                let groups = self.groups.lock();
                let group = groups
                    .get(&r.group)
                    .ok_or_else(|| unknown_member(&r.group, &member_id))?;
                let member = group
                    .members
                    .get(&member_id)
                    .ok_or_else(|| unknown_member(&r.group, &member_id))?;
                return Ok(JoinGroupResponse {
                    member_id,
                    generation: group.generation,
                    assignment: member.assignment.clone(),
                });
            }
            let deadline = {
                let groups = self.groups.lock();
                groups
                    .get(&r.group)
                    .map(|g| g.deadline)
                    .unwrap_or_else(Instant::now)
            };
            if tokio::time::timeout_at(deadline, completed.changed())
                .await
                .is_err()
            {
                self.expire(&r.group, topics);
            }
        }
    }

    /// Completes the group's rebalance if its deadline passed.
    fn expire(&self, group: &str, topics: &TopicManager) {
        let mut groups = self.groups.lock();
        if let Some(g) = groups.get_mut(group) {
            if g.rebalancing && Instant::now() >= g.deadline {
                g.complete_rebalance(topics);
            }
        }
    }

    /// Removes members whose session expired and finishes overdue rebalances.
    pub fn reap(&self, topics: &TopicManager) {
        let now = Instant::now();
        let mut groups = self.groups.lock();
        for (name, g) in groups.iter_mut() {
            let expired: Vec<String> = g
                .members
                .iter()
                .filter(|(id, m)| {
                    now.duration_since(m.last_seen) > m.session_timeout && !g.joined.contains(*id)
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &expired {
                tracing::info!(group = %name, member = %id, "session expired");
                g.members.remove(id);
            }
            if !expired.is_empty() {
                g.start_rebalance();
                if !g.members.is_empty() && g.joined.len() == g.members.len() {
                    g.complete_rebalance(topics);
                }
            }
            // Also completes a rebalance whose last missing member left instead of rejoining
            // (`leave` cannot complete it: it has no topic manager), which would otherwise wait
            // for the whole rebalance timeout.
            if g.rebalancing && (now >= g.deadline || g.joined.len() == g.members.len()) {
                g.complete_rebalance(topics);
            }
        }
    }

    /// Records liveness; tells the member whether it must rejoin.
    pub fn heartbeat(&self, r: HeartbeatRequest) -> Result<HeartbeatResponse, BrokerError> {
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(&r.group)
            .ok_or_else(|| unknown_member(&r.group, &r.member_id))?;
        let rebalancing = group.rebalancing;
        let generation = group.generation;
        let member = group
            .members
            .get_mut(&r.member_id)
            .ok_or_else(|| unknown_member(&r.group, &r.member_id))?;
        let now = Instant::now();
        member.last_seen = now;
        group.last_active = now;
        if !rebalancing && r.generation != generation {
            return Err(BrokerError::new(
                ErrorCode::IllegalGeneration,
                format!(
                    "generation {} is stale; the group is at {generation}",
                    r.generation
                ),
            ));
        }
        Ok(HeartbeatResponse {
            rebalance: rebalancing || r.generation != generation,
        })
    }

    /// Removes a member at once; the others rebalance.
    pub fn leave(&self, r: LeaveGroupRequest) -> Result<(), BrokerError> {
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(&r.group)
            .ok_or_else(|| unknown_member(&r.group, &r.member_id))?;
        if group.members.remove(&r.member_id).is_none() {
            return Err(unknown_member(&r.group, &r.member_id));
        }
        group.last_active = Instant::now();
        group.joined.remove(&r.member_id);
        if !group.members.is_empty() {
            group.start_rebalance();
        } else {
            group.rebalancing = false;
            group.generation += 1;
            group.completed.send_replace(group.generation);
        }
        tracing::info!(group = %r.group, member = %r.member_id, "member left");
        Ok(())
    }

    /// Stores offsets durably; a group member's commit must carry the current generation. A
    /// commit without a member id (a standalone consumer's, or a tool's) is taken only while
    /// the group has no members: it would otherwise move partitions a member owns.
    ///
    /// Entries of partitions that do not exist in `topics` are left out (a deleted input must
    /// not keep a stream from committing the others): the client libraries' `__out.<topic>`
    /// and `__seen.<topic>` count as their topic's; other entries named `__...` (but for
    /// topics of such names) name no partition and are kept, at most [`MAX_RESERVED_ENTRIES`]
    /// per group.
    ///
    /// The group's offsets file is rewritten on a blocking thread (it takes two fsyncs), one
    /// commit of the group at a time: the coordinator's lock is held only to check the
    /// committer and to update the offsets, so heartbeats, joins and other groups' commits do
    /// not wait for this group's disk.
    pub async fn commit(
        &self,
        r: CommitOffsetsRequest,
        topics: &TopicManager,
    ) -> Result<(), BrokerError> {
        validate_group_name(&r.group)?;
        for o in &r.offsets {
            validate_entry_name(&o.topic)?;
        }
        let writes = {
            let mut groups = self.groups.lock();
            // A member of a group that does not exist is refused without making the group (a
            // made-up group and member id would otherwise leave an empty group behind).
            if !r.member_id.is_empty() && !groups.contains_key(&r.group) {
                return Err(unknown_member(&r.group, &r.member_id));
            }
            let group = group_mut(&mut groups, &r.group);
            check_committer(&r, group)?;
            Arc::clone(&group.writes)
        };
        // Held until the new offsets are in memory (or, if this commit is given up while its
        // file is written, until the write ends): commits of the group, a deleted topic's
        // removal from them and the group's expiry take turns.
        let mut writes = writes;
        let (turn, offsets) = loop {
            let turn = Arc::clone(&writes).lock_owned().await;
            let mut groups = self.groups.lock();
            let group = match groups.entry(r.group.clone()) {
                std::collections::hash_map::Entry::Occupied(group) => group.into_mut(),
                // Expired while this commit waited: made again, in the turn it holds.
                std::collections::hash_map::Entry::Vacant(_) if !r.member_id.is_empty() => {
                    return Err(unknown_member(&r.group, &r.member_id));
                }
                std::collections::hash_map::Entry::Vacant(vacant) => {
                    vacant.insert(Group::in_turn(Arc::clone(&writes)))
                }
            };
            if !group.is_turn(&writes) {
                // Expired while this commit waited and made again by another: its turn.
                writes = Arc::clone(&group.writes);
                continue;
            }
            // Again: the group may have moved on while this commit waited for its turn.
            check_committer(&r, group)?;
            let mut offsets = group.offsets.clone();
            // Existence is checked in the turn too: a topic deleted meanwhile has had its
            // offsets dropped (`forget_topic` takes the turn), and must not get them back.
            for o in &r.offsets {
                if entry_exists(topics, &o.topic, o.partition) {
                    offsets.insert((o.topic.clone(), o.partition), o.offset);
                } else {
                    tracing::debug!(group = %r.group, topic = %o.topic, partition = o.partition, "commit of a partition that does not exist left out");
                }
            }
            let reserved = offsets
                .keys()
                .filter(|(t, _)| about_topic(topics, t).is_none())
                .count();
            if reserved > MAX_RESERVED_ENTRIES {
                return Err(BrokerError::new(
                    ErrorCode::InvalidRequest,
                    format!(
                        "group {:?} would hold {reserved} entries named `__...` that name no \
                         topic, over the limit of {MAX_RESERVED_ENTRIES}",
                        r.group
                    ),
                ));
            }
            group.unsure = true;
            group.last_active = Instant::now();
            break (turn, offsets);
        };
        let (_turn, written) = self.write_in_turn(&r.group, offsets, turn).await;
        let offsets = written.map_err(|e| BrokerError::io("write group offsets", e))?;
        if let Some(group) = self.groups.lock().get_mut(&r.group) {
            group.offsets = offsets;
            group.unsure = false;
        }
        Ok(())
    }

    /// Writes `group`'s offsets file on a blocking thread, holding the group's `turn` until
    /// the write ends (even if the caller gives up meanwhile); the turn and the offsets come
    /// back with the outcome.
    async fn write_in_turn(
        &self,
        group: &str,
        offsets: BTreeMap<(String, u32), u64>,
        turn: tokio::sync::OwnedMutexGuard<()>,
    ) -> (
        Option<tokio::sync::OwnedMutexGuard<()>>,
        std::io::Result<BTreeMap<(String, u32), u64>>,
    ) {
        let (dir, name) = (self.dir.clone(), group.to_owned());
        let written = tokio::task::spawn_blocking(move || {
            let written = persist_offsets(&dir, &name, &offsets).map(|()| offsets);
            (turn, written)
        })
        .await;
        match written {
            Ok((turn, written)) => (Some(turn), written),
            Err(e) => (None, Err(std::io::Error::other(e))),
        }
    }

    /// Committed offsets of the requested partitions.
    pub fn fetch_offsets(
        &self,
        r: FetchOffsetsRequest,
    ) -> Result<FetchOffsetsResponse, BrokerError> {
        for tp in &r.partitions {
            validate_entry_name(&tp.topic)?;
        }
        let groups = self.groups.lock();
        let group = groups.get(&r.group);
        let offsets = r
            .partitions
            .iter()
            .flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic.clone(), *p)))
            .map(|(topic, partition)| CommittedOffset {
                offset: group.and_then(|g| g.offsets.get(&(topic.clone(), partition)).copied()),
                topic,
                partition,
            })
            .collect();
        Ok(FetchOffsetsResponse { offsets })
    }

    /// Members, assignment and offsets of a group.
    pub fn describe(&self, name: &str) -> Result<DescribeGroupResponse, BrokerError> {
        let groups = self.groups.lock();
        let g = groups.get(name).ok_or_else(|| {
            BrokerError::new(ErrorCode::UnknownGroup, format!("unknown group {name:?}"))
        })?;
        Ok(DescribeGroupResponse {
            group: name.to_owned(),
            state: g.state().to_owned(),
            generation: g.generation,
            members: g
                .members
                .iter()
                .map(|(id, m)| MemberDescription {
                    member_id: id.clone(),
                    client_id: m.client_id.clone(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
            offsets: g
                .offsets
                .iter()
                .map(|((topic, partition), offset)| PartitionOffset {
                    topic: topic.clone(),
                    partition: *partition,
                    offset: *offset,
                })
                .collect(),
        })
    }

    /// Forgets the groups that have had no member, and no commit, for `expiration` at `now`
    /// (Kafka's `offsets.retention.minutes`): each is removed in its turn, and its offsets
    /// file with it, so that a group name used once (a command-line consumer's, a test's)
    /// does not stay in memory, on disk and in `ListGroups` for good. Returns the names
    /// forgotten. A commit that was waiting for the turn makes the group again, in that turn.
    pub async fn expire_idle(&self, now: Instant, expiration: Duration) -> Vec<String> {
        // The files of groups with members are touched: their age is what a restart reads as
        // the time the group has been idle (only commits write them, and a group may go on
        // for days without one).
        let active: Vec<PathBuf> = self
            .groups
            .lock()
            .iter()
            .filter(|(_, g)| !g.members.is_empty())
            .map(|(name, _)| group_file(&self.dir, name))
            .collect();
        if !active.is_empty() {
            let touched = tokio::task::spawn_blocking(move || {
                for path in active {
                    let touched = std::fs::File::options()
                        .write(true)
                        .open(&path)
                        .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                    match touched {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            tracing::debug!(path = %path.display(), error = %e, "cannot touch an active group's offsets file");
                        }
                        _ => {}
                    }
                }
            });
            let _ = touched.await;
        }
        let idle: Vec<(String, Arc<tokio::sync::Mutex<()>>)> = self
            .groups
            .lock()
            .iter()
            .filter(|(_, g)| g.is_expired(now, expiration))
            .map(|(name, g)| (name.clone(), Arc::clone(&g.writes)))
            .collect();
        let mut forgotten = Vec::new();
        for (name, writes) in idle {
            let turn = Arc::clone(&writes).lock_owned().await;
            // Again in the turn: a member may have joined, or a commit been made.
            let expired = |groups: &HashMap<String, Group>| {
                groups
                    .get(&name)
                    .is_some_and(|g| g.is_turn(&writes) && g.is_expired(now, expiration))
            };
            if !expired(&self.groups.lock()) {
                continue;
            }
            // The file goes first, on a blocking thread, in the turn, while the group stays in
            // the map: whatever makes it active meanwhile (a join) finds this group, not a new
            // one whose file the removal could take.
            let path = group_file(&self.dir, &name);
            let unlinked = tokio::task::spawn_blocking(move || {
                let unlinked = match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                    _ => Ok(()),
                };
                (turn, unlinked)
            })
            .await;
            let turn = match unlinked {
                Ok((turn, Ok(()))) => turn,
                Ok((_, Err(e))) => {
                    tracing::warn!(group = %name, error = %e, "cannot remove an expired group's offsets file");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(group = %name, error = %e, "removing an expired group's offsets file failed");
                    continue;
                }
            };
            let kept = {
                let mut groups = self.groups.lock();
                if expired(&groups) {
                    groups.remove(&name);
                    None
                } else {
                    // Active again: its file is written back from memory.
                    groups.get(&name).map(|g| g.offsets.clone())
                }
            };
            match kept {
                None => {
                    drop(turn);
                    tracing::info!(group = %name, "forgot a group idle for log.group_expiration_ms");
                    forgotten.push(name);
                }
                Some(offsets) => {
                    if let (_, Err(e)) = self.write_in_turn(&name, offsets, turn).await {
                        tracing::warn!(group = %name, error = %e, "cannot write back the offsets of a group active again");
                    }
                }
            }
        }
        forgotten
    }

    /// Names of all groups, sorted.
    pub fn list(&self) -> Vec<String> {
        let mut names: Vec<String> = self.groups.lock().keys().cloned().collect();
        names.sort();
        names
    }

    /// Drops the entries about `deleted` topics that do not exist in `topics` (deletions the
    /// broker stopped in before the groups forgot the topic: see
    /// `TopicManager::deleted_at_open`), rewriting every group's file. For a broker's start,
    /// before it serves. A topic of such a name that exists again keeps its entries. Whether
    /// every file was written: until then, what the deletions left must stay, for the next
    /// start to try again.
    pub fn forget_deleted(&self, topics: &TopicManager, deleted: &[String]) -> bool {
        let gone: Vec<&String> = deleted
            .iter()
            .filter(|name| topics.get(name).is_none())
            .collect();
        if gone.is_empty() {
            return true;
        }
        let mut written = true;
        let mut groups = self.groups.lock();
        for (name, g) in groups.iter_mut() {
            let before = g.offsets.len();
            g.offsets
                .retain(|(t, _), _| !gone.iter().any(|topic| is_about(topics, t, topic)));
            if g.offsets.len() != before {
                tracing::info!(group = %name, dropped = before - g.offsets.len(), "committed offsets of deleted topics dropped");
            }
            if let Err(e) = persist_offsets(&self.dir, name, &g.offsets) {
                tracing::warn!(group = %name, error = %e, "cannot rewrite group offsets");
                written = false;
            }
        }
        written
    }

    /// Takes `group`'s turn to write its offsets until the returned guard is dropped: its
    /// commits wait meanwhile, as behind a slow disk (fault injection for tests). `None` if
    /// the group does not exist.
    pub async fn hold_writes(&self, group: &str) -> Option<tokio::sync::OwnedMutexGuard<()>> {
        let writes = Arc::clone(&self.groups.lock().get(group)?.writes);
        Some(writes.lock_owned().await)
    }

    /// A topic was created: every group with a member subscribed to it rebalances, so that
    /// its partitions get owners. A topic made again after its deletion, or first made after
    /// its subscribers joined, was left out of their assignment (only existing topics are
    /// assigned), and nothing else would have brought it in until a member came or went.
    pub fn topic_created(&self, topic: &str) {
        let mut groups = self.groups.lock();
        for (name, group) in groups.iter_mut() {
            if group.subscribes_to(topic) {
                tracing::info!(group = %name, topic, "topic created: its subscribers rebalance");
                group.start_rebalance();
            }
        }
    }

    /// A topic is being deleted: every group with a member subscribed to it moves to a new
    /// generation and rebalances. Its members' commits of the old generation are refused from
    /// now on (they would give a topic made again under the name the deleted one's
    /// positions), and their rejoin is answered a generation later than the one after theirs,
    /// which makes them start their partitions over from the committed offsets: for a topic
    /// made again, none, so its start position. Before, a live member kept reading a topic
    /// made again from the deleted one's positions, skipping its first records.
    pub fn topic_deleted(&self, topic: &str) {
        let mut groups = self.groups.lock();
        for (name, group) in groups.iter_mut() {
            if group.subscribes_to(topic) {
                tracing::info!(group = %name, topic, "topic deleted: its subscribers start over");
                group.generation += 1;
                group.start_rebalance();
            }
        }
    }

    /// Drops a deleted topic's committed offsets from every group, and the client libraries'
    /// entries about it (`__out.<topic>`, `__seen.<topic>`), in each group's turn to write.
    /// Whether every file that may name the topic was rewritten: if not, the deletion must
    /// not be finished (its tomb kept for the next start's [`forget_deleted`](Self::forget_deleted)).
    pub async fn forget_topic(&self, topic: &str, topics: &TopicManager) -> bool {
        // Every group, not only those that name the topic now: a commit in its turn may be
        // about to add it (it then finds the topic gone and leaves it out).
        let all: Vec<(String, Arc<tokio::sync::Mutex<()>>)> = self
            .groups
            .lock()
            .iter()
            .map(|(name, g)| (name.clone(), Arc::clone(&g.writes)))
            .collect();
        let mut all_written = true;
        for (name, mut writes) in all {
            let (turn, offsets) = loop {
                let turn = Arc::clone(&writes).lock_owned().await;
                let mut groups = self.groups.lock();
                let Some(g) = groups.get_mut(&name) else {
                    break (turn, None);
                };
                if !g.is_turn(&writes) {
                    // Expired and made again meanwhile: the group of the name now, in its turn.
                    writes = Arc::clone(&g.writes);
                    continue;
                }
                let before = g.offsets.len();
                g.offsets.retain(|(t, _), _| !is_about(topics, t, topic));
                if g.offsets.len() == before && !g.unsure {
                    break (turn, None);
                }
                break (turn, Some(g.offsets.clone()));
            };
            let Some(offsets) = offsets else {
                continue;
            };
            // The turn comes back with the result: `unsure` is cleared before another commit
            // of the group can set it.
            match self.write_in_turn(&name, offsets, turn).await {
                (_turn, Ok(_)) => {
                    if let Some(g) = self.groups.lock().get_mut(&name) {
                        g.unsure = false;
                    }
                }
                (_, Err(e)) => {
                    tracing::warn!(group = %name, error = %e, "cannot rewrite group offsets");
                    all_written = false;
                }
            }
        }
        all_written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn commit(group: &str, topic: &str, partition: u32, offset: u64) -> CommitOffsetsRequest {
        CommitOffsetsRequest {
            group: group.into(),
            member_id: String::new(),
            generation: 0,
            offsets: vec![PartitionOffset {
                topic: topic.into(),
                partition,
                offset,
            }],
        }
    }

    fn committed(
        groups: &GroupCoordinator,
        group: &str,
        topic: &str,
        partition: u32,
    ) -> Option<u64> {
        groups
            .fetch_offsets(FetchOffsetsRequest {
                group: group.into(),
                partitions: vec![TopicPartitions {
                    topic: topic.into(),
                    partitions: vec![partition],
                }],
            })
            .unwrap()
            .offsets[0]
            .offset
    }

    fn topics_with(dir: &Path, names: &[(&str, u32)]) -> TopicManager {
        let topics = TopicManager::open(dir, crate::config::LogSettings::default()).unwrap();
        for &(name, partitions) in names {
            topics
                .create(name, partitions, TopicSettings::default())
                .unwrap();
        }
        topics
    }

    fn join_as(member_id: &str) -> JoinGroupRequest {
        JoinGroupRequest {
            group: "g".into(),
            member_id: member_id.into(),
            client_id: "c".into(),
            topics: vec!["t".into()],
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
        }
    }

    /// A group without members idle for the expiration is forgotten with its offsets file; a
    /// group with a member, or one committed to since, is kept. After a restart the forgotten
    /// group stays forgotten.
    #[tokio::test]
    async fn idle_groups_without_members_are_forgotten_with_their_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let topics = topics_with(dir.path(), &[("t", 1)]);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        let idle = Duration::from_millis(50);
        groups
            .commit(commit("idle", "t", 0, 1), &topics)
            .await
            .unwrap();
        groups.join(join_as(""), &topics).await.unwrap();
        tokio::time::sleep(idle * 2).await;
        let now = Instant::now();
        groups
            .commit(commit("fresh", "t", 0, 1), &topics)
            .await
            .unwrap();
        assert_eq!(groups.expire_idle(now, idle).await, ["idle"]);
        assert_eq!(groups.list(), ["fresh", "g"]);
        assert!(!group_file(&groups.dir, "idle").exists());
        assert!(group_file(&groups.dir, "fresh").exists());
        drop(groups);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        assert_eq!(groups.list(), ["fresh"]);
        // A restart does not restart the idle clock: it starts from the file's last write.
        drop(groups);
        std::fs::File::options()
            .write(true)
            .open(group_file(&dir.path().join("groups"), "fresh"))
            .unwrap()
            .set_modified(std::time::SystemTime::now() - Duration::from_secs(10))
            .unwrap();
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        // Kept for the start's grace whatever its age (its members may be restarting too),
        // and forgotten after it.
        let grace = Duration::from_millis(crate::config::MIN_GROUP_EXPIRATION_MS);
        let five = Duration::from_secs(5);
        assert!(groups.expire_idle(Instant::now(), five).await.is_empty());
        let expired = groups.expire_idle(Instant::now() + grace, five).await;
        assert_eq!(expired, ["fresh"]);
    }

    /// A group whose members go on without committing (nothing new on a quiet topic) has its
    /// file touched by the expiry pass, so that a restart does not read it as idle since its
    /// last commit and forget it once the start's grace is over. Before, a broker restarted
    /// while such a group's consumers were away deleted its offsets within 30 s.
    #[tokio::test]
    async fn a_group_with_members_is_not_read_as_idle_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let topics = topics_with(dir.path(), &[("t", 1)]);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        groups
            .commit(commit("g", "t", 0, 1), &topics)
            .await
            .unwrap();
        groups.join(join_as(""), &topics).await.unwrap();
        let path = group_file(&groups.dir, "g");
        let week = Duration::from_secs(7 * 24 * 3600);
        std::fs::File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(std::time::SystemTime::now() - week - week)
            .unwrap();
        assert!(groups.expire_idle(Instant::now(), week).await.is_empty());
        drop(groups);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        let grace = Duration::from_millis(crate::config::MIN_GROUP_EXPIRATION_MS);
        assert!(
            groups
                .expire_idle(Instant::now() + grace, week)
                .await
                .is_empty(),
            "the group's members were there at the last pass"
        );
        assert_eq!(groups.list(), ["g"]);
    }

    /// A deleted topic's removal that waited for the turn of a group that expired and was made
    /// again meanwhile goes on in the new group's turn, and drops the topic's entries there:
    /// nothing of the deleted topic is left in the group of that name.
    #[tokio::test]
    async fn a_topics_removal_follows_a_group_made_again_to_its_turn() {
        let dir = tempfile::tempdir().unwrap();
        let topics = topics_with(dir.path(), &[("gone", 1), ("kept", 1)]);
        let groups = Arc::new(GroupCoordinator::open(dir.path()).unwrap());
        groups
            .commit(commit("g", "gone", 0, 1), &topics)
            .await
            .unwrap();
        let old = Arc::clone(&groups.groups.lock()["g"].writes);
        let held = Arc::clone(&old).lock_owned().await;
        let removal = tokio::spawn({
            let (groups, topics) = (Arc::clone(&groups), topics_with(dir.path(), &[]));
            async move { groups.forget_topic("gone", &topics).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Meanwhile the group expired and was made again, with its own turn, by commits that
        // named the topic and another.
        groups.groups.lock().remove("g");
        groups
            .commit(commit("g", "gone", 0, 5), &topics)
            .await
            .unwrap();
        groups
            .commit(commit("g", "kept", 0, 7), &topics)
            .await
            .unwrap();
        assert!(!groups.groups.lock()["g"].is_turn(&old));
        drop(held);
        assert!(removal.await.unwrap());
        let left: Vec<String> = groups
            .describe("g")
            .unwrap()
            .offsets
            .into_iter()
            .map(|o| o.topic)
            .collect();
        assert_eq!(left, ["kept"]);
        drop(groups);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        let offsets = groups.describe("g").unwrap().offsets;
        assert_eq!((offsets.len(), offsets[0].topic.as_str()), (1, "kept"));
    }

    /// A commit that waited for the turn of a group that expired meanwhile makes the group
    /// again, in that turn, and its offsets are kept: nothing it committed is lost to the
    /// expiry, and a later commit takes the same turn.
    #[tokio::test]
    async fn a_commit_waiting_for_an_expiring_groups_turn_makes_it_again() {
        let dir = tempfile::tempdir().unwrap();
        let topics = topics_with(dir.path(), &[("t", 1)]);
        let groups = Arc::new(GroupCoordinator::open(dir.path()).unwrap());
        let idle = Duration::from_millis(50);
        groups
            .commit(commit("g", "t", 0, 1), &topics)
            .await
            .unwrap();
        tokio::time::sleep(idle * 2).await;
        let writes = Arc::clone(&groups.groups.lock()["g"].writes);
        let held = Arc::clone(&writes).lock_owned().await;
        // The expiry waits for the turn first, the commit behind it.
        let expiry = tokio::spawn({
            let groups = Arc::clone(&groups);
            let now = Instant::now();
            async move { groups.expire_idle(now, idle).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let committed = tokio::spawn({
            let (groups, topics) = (Arc::clone(&groups), topics_with(dir.path(), &[]));
            async move { groups.commit(commit("g", "t", 0, 2), &topics).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(held);
        assert_eq!(expiry.await.unwrap(), ["g"]);
        committed.await.unwrap().unwrap();
        assert!(groups.groups.lock()["g"].is_turn(&writes));
        assert_eq!(groups.describe("g").unwrap().offsets.len(), 1);
        assert!(group_file(&groups.dir, "g").exists());
        drop(groups);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        let offsets = groups.describe("g").unwrap().offsets;
        assert_eq!((offsets[0].partition, offsets[0].offset), (0, 2));
    }

    /// Creating a topic rebalances the groups subscribed to it, and only those.
    #[tokio::test]
    async fn a_topic_created_rebalances_its_subscribers() {
        let dir = tempfile::tempdir().unwrap();
        let topics = topics_with(dir.path(), &[("t", 4)]);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        groups.join(join_as("a"), &topics).await.unwrap();
        let other = JoinGroupRequest {
            group: "other".into(),
            topics: vec!["u".into()],
            ..join_as("b")
        };
        groups.join(other, &topics).await.unwrap();
        groups.topic_created("t");
        assert_eq!(groups.describe("g").unwrap().state, "rebalancing");
        assert_eq!(groups.describe("other").unwrap().state, "stable");
        groups.topic_created("u");
        assert_eq!(groups.describe("other").unwrap().state, "rebalancing");
    }

    /// A group made again after a restart does not start at the generation it started at
    /// before, nor at the one after: a member answered across the restart would take that for
    /// the rebalance it asked for and keep partitions others may have consumed meanwhile.
    #[tokio::test]
    async fn a_group_made_again_after_a_restart_does_not_repeat_its_generations() {
        let dir = tempfile::tempdir().unwrap();
        let topics = topics_with(dir.path(), &[("t", 4)]);
        let mut seen = Vec::new();
        for _ in 0..3 {
            let groups = GroupCoordinator::open(dir.path()).unwrap();
            let first = groups.join(join_as("a"), &topics).await.unwrap();
            assert!(first.generation > 0, "0 is no generation");
            for before in &seen {
                assert!(
                    first.generation != *before && first.generation != before + 1,
                    "generation {} after {seen:?}",
                    first.generation
                );
            }
            seen.push(first.generation);
        }
    }

    /// A join that names its member and is sent again (the first given up while the
    /// rebalance waited for another member) is the same member's: the group gets one member
    /// for it, not one per attempt that would hold partitions until its session expired.
    #[tokio::test]
    async fn a_join_sent_again_under_the_members_own_id_adds_no_member() {
        let dir = tempfile::tempdir().unwrap();
        let topics = topics_with(dir.path(), &[("t", 4)]);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        let first = groups.join(join_as(""), &topics).await.unwrap();
        // The newcomer's joins wait for the first member to rejoin; each is given up.
        for _ in 0..3 {
            let attempt = groups.join(join_as("newcomer-1"), &topics);
            assert!(
                tokio::time::timeout(Duration::from_millis(50), attempt)
                    .await
                    .is_err(),
                "the rebalance waits for the first member"
            );
        }
        let rejoined = groups.join(join_as(&first.member_id), &topics);
        let newcomer = groups.join(join_as("newcomer-1"), &topics);
        let (rejoined, newcomer) = tokio::join!(rejoined, newcomer);
        let (rejoined, newcomer) = (rejoined.unwrap(), newcomer.unwrap());
        assert_eq!(newcomer.member_id, "newcomer-1");
        assert_eq!(rejoined.generation, newcomer.generation);
        let described = groups.describe("g").unwrap();
        assert_eq!(described.members.len(), 2, "{described:?}");
        let assigned = |r: &JoinGroupResponse| -> usize {
            r.assignment.iter().map(|a| a.partitions.len()).sum()
        };
        assert_eq!((assigned(&rejoined), assigned(&newcomer)), (2, 2));
        let too_long = "m".repeat(MAX_MEMBER_ID_LEN + 1);
        let e = groups.join(join_as(&too_long), &topics).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
    }

    /// A commit of a member of a group that does not exist is refused, and leaves no group
    /// behind; a commit without a member id makes the group, as before.
    #[tokio::test]
    async fn a_refused_commit_to_an_unknown_group_makes_no_group() {
        let dir = tempfile::tempdir().unwrap();
        let topics = topics_with(dir.path(), &[("orders", 1)]);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        let e = groups
            .commit(
                CommitOffsetsRequest {
                    member_id: "made-up".into(),
                    ..commit("nope", "orders", 0, 1)
                },
                &topics,
            )
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownMember);
        assert!(groups.list().is_empty(), "{:?}", groups.list());
        groups
            .commit(commit("standalone", "orders", 0, 1), &topics)
            .await
            .unwrap();
        assert_eq!(groups.list(), ["standalone"]);
    }

    /// A topic name that is not one (a tab, a line break) is refused: written to the offsets
    /// file, it would read back after a restart as other entries, moving another topic's
    /// committed offset. Valid names survive the restart as committed; so do the client
    /// libraries' `__` entries, even about a topic of the longest name. Partitions that do
    /// not exist are left out.
    #[tokio::test]
    async fn commits_of_names_that_are_not_topics_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let long = "t".repeat(crate::topics::MAX_TOPIC_NAME_LEN);
        let topics = topics_with(dir.path(), &[("orders", 4), (&long, 1)]);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        groups
            .commit(commit("g", "orders", 3, 40), &topics)
            .await
            .unwrap();
        for bad in ["zz\norders\t3\t999999", "a\tb", "", "a/b", "__a\tb"] {
            let e = groups
                .commit(commit("g", bad, 0, 0), &topics)
                .await
                .unwrap_err();
            assert_eq!(e.code, ErrorCode::InvalidTopic, "{bad:?}");
        }
        let out = format!("__seen.{long}");
        groups
            .commit(commit("g", &out, 0, 5), &topics)
            .await
            .unwrap();
        // `__out.`/`__seen.` entries count as their topic's; other `__` entries name none.
        for (entry, partition) in [
            (format!("__out.{long}"), 1),
            ("__out.missing".into(), 0),
            ("__closed".into(), 0),
        ] {
            groups
                .commit(commit("g", &entry, partition, 7), &topics)
                .await
                .unwrap();
        }
        groups
            .commit(commit("g", "orders", 4, 9), &topics)
            .await
            .unwrap();
        groups
            .commit(commit("g", "missing", 0, 9), &topics)
            .await
            .unwrap();
        drop(groups);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        assert_eq!(committed(&groups, "g", "orders", 3), Some(40));
        assert_eq!(committed(&groups, "g", &out, 0), Some(5));
        assert_eq!(committed(&groups, "g", "orders", 4), None);
        assert_eq!(committed(&groups, "g", "missing", 0), None);
        assert_eq!(committed(&groups, "g", &format!("__out.{long}"), 1), None);
        assert_eq!(committed(&groups, "g", "__out.missing", 0), None);
        assert_eq!(committed(&groups, "g", "__closed", 0), Some(7));
        // Entries named `__...` that name no topic cannot be checked: their number is bounded
        // (`__closed` is one of them already).
        let mut many = commit("g", "__many", 0, 0);
        many.offsets = (0..MAX_RESERVED_ENTRIES as u32)
            .map(|partition| PartitionOffset {
                topic: "__many".into(),
                partition,
                offset: 1,
            })
            .collect();
        let e = groups.commit(many, &topics).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(e.message.contains(&MAX_RESERVED_ENTRIES.to_string()), "{e}");
        assert_eq!(committed(&groups, "g", "__many", 0), None);
    }

    /// Commits of one group run their file writes one at a time, off the coordinator's lock:
    /// concurrent commits of different partitions all land, in memory and on disk. A topic
    /// deleted while commits of it are in flight stays forgotten, with the client libraries'
    /// entries about it, whichever comes first.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_commits_of_a_group_all_land() {
        let dir = tempfile::tempdir().unwrap();
        let topics = std::sync::Arc::new(topics_with(dir.path(), &[("t", 40), ("gone", 40)]));
        let groups = std::sync::Arc::new(GroupCoordinator::open(dir.path()).unwrap());
        groups
            .commit(commit("g", "__out.gone", 0, 1), &topics)
            .await
            .unwrap();
        let commits: Vec<_> = (0..40u32)
            .flat_map(|p| [("t", p), ("gone", p), ("__out.gone", p)])
            .map(|(topic, p)| {
                let (groups, topics) = (
                    std::sync::Arc::clone(&groups),
                    std::sync::Arc::clone(&topics),
                );
                tokio::spawn(async move {
                    groups
                        .commit(commit("g", topic, p, u64::from(p) + 100), &topics)
                        .await
                })
            })
            .collect();
        topics.delete("gone").unwrap();
        assert!(groups.forget_topic("gone", &topics).await);
        for c in commits {
            c.await.unwrap().unwrap();
        }
        let check = |groups: &GroupCoordinator| {
            for p in 0..40u32 {
                assert_eq!(committed(groups, "g", "t", p), Some(u64::from(p) + 100));
                assert_eq!(committed(groups, "g", "gone", p), None);
            }
            for p in 0..40u32 {
                assert_eq!(committed(groups, "g", "__out.gone", p), None);
            }
        };
        check(&groups);
        drop(groups);
        check(&GroupCoordinator::open(dir.path()).unwrap());
    }

    /// A deletion the broker stopped in before the groups forgot the topic: the next start
    /// drops the entries about it (the client libraries' too), and only about it: a topic
    /// that is merely not opened, and topics named `__...`, keep theirs.
    #[test]
    fn a_start_drops_the_offsets_of_a_deletion_it_did_not_finish() {
        let dir = tempfile::tempdir().unwrap();
        let topics = topics_with(
            dir.path(),
            &[("kept", 1), ("gone", 2), ("__sys", 1), ("__seen.gone", 1)],
        );
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (entry, partition) in [
            ("kept", 0),
            ("gone", 1),
            ("__out.gone", 0),
            ("__closed", 0),
            ("__sys", 0),
            ("__seen.gone", 0),
        ] {
            rt.block_on(groups.commit(commit("g", entry, partition, 3), &topics))
                .unwrap();
        }
        drop(groups);
        // The broker stops between the two halves of the deletion.
        topics.begin_delete("gone").unwrap();
        drop(topics);
        let topics = TopicManager::open(dir.path(), crate::config::LogSettings::default()).unwrap();
        assert_eq!(topics.deleted_at_open(), ["gone"]);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        assert!(groups.forget_deleted(&topics, &topics.deleted_at_open()));
        topics.remove_tombs();
        drop(groups);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        // A topic named like an entry about the deleted one is a topic of its own.
        for kept in ["kept", "__closed", "__sys", "__seen.gone"] {
            assert_eq!(committed(&groups, "g", kept, 0), Some(3), "{kept}");
        }
        assert_eq!(committed(&groups, "g", "gone", 1), None);
        assert_eq!(committed(&groups, "g", "__out.gone", 0), None);
    }

    /// Makes the group's offsets file impossible to replace (its temporary file's path is a
    /// directory), or possible again.
    fn block_writes(dir: &Path, group: &str, blocked: bool) {
        let mut tmp = group_file(&dir.join("groups"), group).into_os_string();
        tmp.push(".tmp");
        if blocked {
            std::fs::create_dir_all(&tmp).unwrap();
        } else {
            std::fs::remove_dir(&tmp).unwrap();
        }
    }

    /// A group name too long for its file is refused at once, rather than failing every
    /// write of it (and every deletion after).
    #[tokio::test]
    async fn a_group_name_too_long_for_its_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let topics = topics_with(dir.path(), &[("t", 1)]);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        let longest = "g".repeat(MAX_GROUP_NAME_LEN);
        groups
            .commit(commit(&longest, "t", 0, 1), &topics)
            .await
            .unwrap();
        let e = groups
            .commit(commit(&format!("{longest}g"), "t", 0, 1), &topics)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidRequest);
        assert!(groups.forget_topic("t", &topics).await);
    }

    /// A deletion whose groups cannot all be rewritten says so (it is then not finished); at a
    /// start, the names of unfinished deletions stay reserved until one can rewrite them, and
    /// their data stays.
    #[test]
    fn groups_that_cannot_be_rewritten_keep_a_deletion_unfinished() {
        let dir = tempfile::tempdir().unwrap();
        let topics = topics_with(dir.path(), &[("gone", 1)]);
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(groups.commit(commit("g", "gone", 0, 4), &topics))
            .unwrap();
        let tomb = topics.begin_delete("gone").unwrap();
        block_writes(dir.path(), "g", true);
        assert!(!rt.block_on(groups.forget_topic("gone", &topics)));
        drop((groups, topics));
        // The next start cannot rewrite the group either.
        let topics = TopicManager::open(dir.path(), crate::config::LogSettings::default()).unwrap();
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        assert!(!groups.forget_deleted(&topics, &topics.deleted_at_open()));
        topics.reserve_deleted();
        let e = topics
            .create("gone", 1, TopicSettings::default())
            .unwrap_err();
        // Reserved until a restart: an answer that retrying would only get again.
        assert_eq!(e.code, ErrorCode::InvalidTopic);
        assert!(e.message.contains("once the broker restarts"), "{e}");
        assert!(tomb.exists());
        drop((groups, topics));
        // Once it can, the start finishes the deletion.
        block_writes(dir.path(), "g", false);
        let topics = TopicManager::open(dir.path(), crate::config::LogSettings::default()).unwrap();
        let groups = GroupCoordinator::open(dir.path()).unwrap();
        assert!(groups.forget_deleted(&topics, &topics.deleted_at_open()));
        topics.remove_tombs();
        assert!(!tomb.exists());
        assert_eq!(committed(&groups, "g", "gone", 0), None);
        topics.create("gone", 1, TopicSettings::default()).unwrap();
    }
}
