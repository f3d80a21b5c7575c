//! Group membership: join, heartbeats, rebalances, commits fenced by generation, leave.
//!
//! The broker assigns partitions (see `rustmq_broker::groups`); this side keeps the
//! membership alive and reacts:
//!
//! ```text
//!   every heartbeat_interval ── Heartbeat(member, generation) ──► broker
//!        rebalance: false ──► nothing to do
//!        rebalance: true  ──► stop delivering, commit (still generation g), JoinGroup (waits
//!                             until every member rejoined), keep the partitions that stay,
//!                             revoke the others (buffers and retries dropped), start the new
//!                             ones at their committed offset (else `start_position`)
//!        IllegalGeneration ─► the same, revoking everything first (our view is stale)
//!        UnknownMember ─────► the same as a new member (our session expired)
//!   every auto_commit_interval ── CommitOffsets(member, generation, positions)
//! ```

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use futures::future::try_join_all;
use rustmq_protocol::{
    CommitOffsetsRequest, ErrorCode, FetchOffsetsRequest, HeartbeatRequest, JoinGroupRequest,
    LeaveGroupRequest, OffsetSpec, PartitionOffset, Request, Response, TopicPartitions,
};
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use super::config::{ConsumerConfig, StartPosition};
use super::failures::Streak;
use super::{fetcher, offsets, timing, Inner};
use crate::error::{ClientError, Result};

/// The partitions a consumer holds in one generation of its group.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionAssignment {
    /// Identifies the assignment: `<member id>@<generation>`; it changes with every rebalance.
    pub assignment_id: String,
    /// When this consumer received the assignment.
    pub assigned_at: SystemTime,
    /// The assigned partitions of the consumer's topic, in order.
    pub partitions: Vec<u32>,
    /// The group generation the assignment belongs to.
    pub generation: u32,
    /// The member id the broker gave this consumer.
    pub member_id: String,
}

/// This consumer's standing in its group.
#[derive(Debug, Default)]
pub(crate) struct Membership {
    /// Empty before the first join (and after the broker forgot the member).
    pub(crate) member_id: String,
    pub(crate) generation: u32,
    pub(crate) assignment: Option<PartitionAssignment>,
}

/// How to rejoin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejoin {
    /// A rebalance of a group we are in good standing with: keep what stays assigned.
    Keep,
    /// Our generation is stale, or the broker does not know us (any more): revoke
    /// everything, then join again under the same member id (which a broker that does not
    /// know it takes as a new member's).
    RevokeAll,
}

/// Whether a member of generation `previous`, rejoining in good standing, was answered with
/// a `generation` that is neither its own (nothing changed) nor the next one: generations
/// passed without it (the broker dropped it while it was away, gave its partitions to others
/// and took it back as a new member), or the broker restarted and made the group again (its
/// generations start anew, at a random number). Either way what it held is stale, as others
/// may have consumed and committed past it.
fn missed_generations(previous: u32, generation: u32) -> bool {
    previous != 0 && generation != previous && generation != previous.wrapping_add(1)
}

/// Joins the group and applies the assignment it answers with.
pub(crate) async fn join(inner: &Arc<Inner>, how: Rejoin) -> Result<()> {
    if how != Rejoin::Keep {
        inner.revoke_all();
        inner.membership.lock().assignment = None;
    }
    // A member names itself before its first join and keeps its name (a broker that does not
    // know it, or no longer does, takes it as a new member's): a join sent again, given up
    // while the rebalance waited for the others or its connection lost, is then the same
    // member's to the broker, not one more member holding partitions until its session
    // expires.
    let (member_id, previous) = {
        let mut m = inner.membership.lock();
        if m.member_id.is_empty() {
            m.member_id = rustmq_protocol::member_id(&inner.consumer_id, fastrand::u64(..));
        }
        (m.member_id.clone(), m.generation)
    };
    let config = &inner.config;
    let request = Request::JoinGroup(JoinGroupRequest {
        group: inner.group.clone(),
        member_id,
        client_id: inner.consumer_id.clone(),
        topics: vec![inner.topic.clone()],
        session_timeout_ms: ConsumerConfig::ms(config.session_timeout),
        rebalance_timeout_ms: ConsumerConfig::ms(config.rebalance_timeout),
    });
    // The broker answers once every member has rejoined, which may take the whole
    // rebalance timeout.
    let timeout = inner
        .client
        .config()
        .request_timeout
        .saturating_add(config.rebalance_timeout);
    let response = match inner.client.request_with_timeout(request, timeout).await? {
        Response::JoinGroup(r) => r,
        other => return Err(ClientError::unexpected_response(&other)),
    };
    let mut partitions: Vec<u32> = response
        .assignment
        .iter()
        .filter(|tp| tp.topic == inner.topic)
        .flat_map(|tp| tp.partitions.iter().copied())
        .collect();
    partitions.sort_unstable();
    let missed = how == Rejoin::Keep && missed_generations(previous, response.generation);
    let new: Vec<u32> = {
        let mut state = inner.state.lock();
        if missed {
            tracing::info!(group = %inner.group, previous, generation = response.generation, "rejoined after missing a generation: partitions start over from the committed offsets");
            state.revoke_all();
        }
        for p in state.owned() {
            if !partitions.contains(&p) {
                tracing::debug!(partition = p, "partition revoked");
                state.revoke(p);
            }
        }
        partitions
            .iter()
            .copied()
            .filter(|p| !state.partitions.contains_key(p))
            .collect()
    };
    {
        let mut m = inner.membership.lock();
        m.member_id = response.member_id.clone();
        m.generation = response.generation;
        m.assignment = Some(PartitionAssignment {
            assignment_id: format!("{}@{}", response.member_id, response.generation),
            assigned_at: SystemTime::now(),
            partitions: partitions.clone(),
            generation: response.generation,
            member_id: response.member_id.clone(),
        });
    }
    let starts = start_positions(inner, &new).await?;
    {
        let mut state = inner.state.lock();
        if state.closed {
            return Ok(());
        }
        for (partition, position, committed) in starts {
            let wake = state.assign(partition, position, committed);
            let task = tokio::spawn(fetcher::run(Arc::clone(inner), partition, wake));
            state.set_task(partition, task);
        }
        state.rebalancing = false;
        inner.metrics.retain_lag(&state.owned());
        inner.instruments.retain_lag(&state.owned());
    }
    inner.data.notify_waiters();
    tracing::info!(
        topic = %inner.topic,
        group = %inner.group,
        member = %response.member_id,
        generation = response.generation,
        ?partitions,
        "joined group"
    );
    Ok(())
}

/// The first join of a new consumer; retryable failures are retried up to the client's
/// `retry_config.max_retries` times.
pub(crate) async fn join_initial(inner: &Arc<Inner>) -> Result<()> {
    let retry = &inner.client.config().retry_config;
    let backoff = timing::retry_backoff(retry);
    let mut attempt = 0;
    loop {
        match join(inner, Rejoin::RevokeAll).await {
            Err(e) if e.is_retryable() && attempt < retry.max_retries => {
                tracing::debug!(error = %e, "join failed, retrying");
                tokio::time::sleep(backoff.delay(attempt)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// `(partition, start, committed)` of newly assigned partitions: the committed offset, else
/// the configured start position.
async fn start_positions(
    inner: &Arc<Inner>,
    partitions: &[u32],
) -> Result<Vec<(u32, u64, Option<u64>)>> {
    if partitions.is_empty() {
        return Ok(Vec::new());
    }
    let request = Request::FetchOffsets(FetchOffsetsRequest {
        group: inner.group.clone(),
        partitions: vec![TopicPartitions {
            topic: inner.topic.clone(),
            partitions: partitions.to_vec(),
        }],
    });
    let committed: HashMap<u32, Option<u64>> = match inner.client.request(request).await? {
        Response::FetchOffsets(r) => r
            .offsets
            .into_iter()
            .filter(|o| o.topic == inner.topic)
            .map(|o| (o.partition, o.offset))
            .collect(),
        other => return Err(ClientError::unexpected_response(&other)),
    };
    try_join_all(partitions.iter().map(|&p| {
        let committed = committed.get(&p).copied().flatten();
        async move {
            let start = match (committed, inner.config.start_position) {
                (Some(offset), _) => offset,
                (None, StartPosition::Offset(offset)) => offset,
                (None, StartPosition::Earliest) => {
                    offsets::list_offset(inner, p, OffsetSpec::Earliest)
                        .await?
                        .offset
                }
                (None, StartPosition::Latest) => {
                    offsets::list_offset(inner, p, OffsetSpec::Latest)
                        .await?
                        .offset
                }
                (None, StartPosition::Timestamp(ts)) => {
                    offsets::list_offset(inner, p, offsets::timestamp_spec(ts))
                        .await?
                        .offset
                }
            };
            tracing::debug!(partition = p, start, ?committed, "partition assigned");
            Ok::<_, ClientError>((p, start, committed))
        }
    }))
    .await
}

/// Commits the contiguous acknowledged prefix of every assigned partition whose position
/// moved, with the member id and generation in force.
pub(crate) async fn commit(inner: &Arc<Inner>) -> Result<()> {
    commit_within(inner, inner.client.config().request_timeout).await
}

/// [`commit`], waiting at most `hook_bound` for the `before_commit` hook.
async fn commit_within(inner: &Arc<Inner>, hook_bound: std::time::Duration) -> Result<()> {
    let _serial = inner.commit_lock.lock().await;
    let (member_id, generation) = {
        let m = inner.membership.lock();
        (m.member_id.clone(), m.generation)
    };
    let pending = inner.state.lock().pending_commits();
    if pending.is_empty() || member_id.is_empty() {
        return Ok(());
    }
    // The positions are taken first: what was acknowledged up to now was sent (if its
    // handling sent anything) before the hook looks. Within `hook_bound`: outputs whose
    // producer retries longer leave their inputs to a later commit.
    if let Some(before) = inner.before_commit.get() {
        let bound = hook_bound;
        let within = super::timing::deadline(tokio::time::Instant::now(), bound);
        if tokio::time::timeout_at(within, (before.0)()).await.is_err() {
            tracing::warn!(topic = %inner.topic, group = %inner.group, ?bound, "the handlers' outputs were not answered in time: their inputs are committed later");
            return Err(ClientError::Timeout {
                timeout_ms: u64::try_from(bound.as_millis()).unwrap_or(u64::MAX),
            });
        }
    }
    let offsets = pending
        .iter()
        .map(|&(partition, _, offset)| PartitionOffset {
            topic: inner.topic.clone(),
            partition,
            offset,
        })
        .collect();
    let request = Request::CommitOffsets(CommitOffsetsRequest {
        group: inner.group.clone(),
        member_id,
        generation,
        offsets,
    });
    match inner.client.request(request).await {
        Ok(Response::CommitOffsets(_)) => {
            let mut state = inner.state.lock();
            for &(partition, _, offset) in &pending {
                state.mark_committed(partition, offset);
            }
            drop(state);
            inner.metrics.commits.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(topic = %inner.topic, generation, offsets = ?pending, "committed");
            Ok(())
        }
        Ok(other) => Err(ClientError::unexpected_response(&other)),
        Err(e) => {
            if matches!(
                e.error_code(),
                Some(ErrorCode::IllegalGeneration | ErrorCode::UnknownMember)
            ) && inner.membership.lock().generation == generation
            {
                // The group moved on without us noticing yet: rejoin now rather than at the
                // next heartbeat.
                inner.rejoin.notify_one();
            }
            Err(e)
        }
    }
}

/// Leaves the group (its partitions move to the other members at once).
pub(crate) async fn leave(inner: &Arc<Inner>) -> Result<()> {
    let member_id = std::mem::take(&mut inner.membership.lock().member_id);
    if member_id.is_empty() {
        return Ok(());
    }
    let request = Request::LeaveGroup(LeaveGroupRequest {
        group: inner.group.clone(),
        member_id,
    });
    match inner.client.request(request).await {
        Ok(_) => Ok(()),
        Err(e) if e.error_code() == Some(ErrorCode::UnknownMember) => Ok(()),
        Err(e) => Err(e),
    }
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Standing {
    /// Nothing to do (in good standing, or the heartbeat failed and the next one retries).
    Fine,
    /// Rejoin, this way.
    Rejoin(Rejoin),
    /// The client is closed: the consumer ended.
    Stop,
}

/// One heartbeat; says whether and how to rejoin. A failure that retrying cannot mend (the
/// group's rights withdrawn) is reported to the application once per streak.
async fn heartbeat(inner: &Arc<Inner>, failures: &mut Streak) -> Standing {
    let (member_id, generation) = {
        let m = inner.membership.lock();
        (m.member_id.clone(), m.generation)
    };
    if member_id.is_empty() {
        return Standing::Rejoin(Rejoin::RevokeAll);
    }
    let request = Request::Heartbeat(HeartbeatRequest {
        group: inner.group.clone(),
        member_id,
        generation,
    });
    let timeout = inner
        .client
        .config()
        .request_timeout
        .min(inner.config.session_timeout);
    let e = match inner.client.request_with_timeout(request, timeout).await {
        Ok(response) => {
            inner.succeeded(failures);
            return match response {
                Response::Heartbeat(r) if r.rebalance => Standing::Rejoin(Rejoin::Keep),
                _ => Standing::Fine,
            };
        }
        Err(e) => e,
    };
    match e.error_code() {
        Some(ErrorCode::IllegalGeneration) => {
            inner.succeeded(failures);
            Standing::Rejoin(Rejoin::RevokeAll)
        }
        Some(ErrorCode::UnknownMember) => {
            inner.succeeded(failures);
            tracing::warn!(group = %inner.group, "the group forgot this member (session expired?); joining again");
            Standing::Rejoin(Rejoin::RevokeAll)
        }
        _ => standing_after(inner, failures, e, "heartbeat failed"),
    }
}

/// [`commit`], with a heartbeat at every tick of `heartbeats` while it waits: a commit can
/// wait longer than the session timeout (the broker's disk slow, a connection being
/// replaced), and a member silent that long is dropped from the group while it still
/// delivers, its partitions read by another meanwhile. Returns the commit's result and the
/// first standing other than `Fine` a heartbeat found, for the caller to act on once the
/// commit is done.
async fn commit_heartbeating(
    inner: &Arc<Inner>,
    hook_bound: std::time::Duration,
    heartbeats: &mut tokio::time::Interval,
    failures: &mut Streak,
) -> (Result<()>, Standing) {
    let committing = commit_within(inner, hook_bound);
    tokio::pin!(committing);
    let mut found = Standing::Fine;
    loop {
        tokio::select! {
            committed = &mut committing => return (committed, found),
            _ = heartbeats.tick() => {
                let standing = heartbeat(inner, failures).await;
                if found == Standing::Fine {
                    found = standing;
                }
            }
        }
    }
}

/// Commits, then rejoins until it succeeds (or the consumer closes).
///
/// Deliveries wait meanwhile, so a failure that retrying cannot mend (the group's or the
/// topic's rights withdrawn, the topic deleted) is reported through `receive`, once per
/// streak; the rejoin goes on, backing off as the client's `retry_config` says, so that the
/// consumer carries on by itself once the cause is lifted. A closed client ends the consumer.
async fn rebalance(inner: &Arc<Inner>, mut how: Rejoin) {
    inner.state.lock().rebalancing = true;
    if how == Rejoin::Keep {
        let mut heartbeats = heartbeat_ticks(inner);
        let mut failures = Streak::default();
        // The commit before a rejoin waits for the handlers' outputs (the typed layer's hook)
        // a quarter of the rebalance timeout at most: the rejoin must keep its time.
        let bound = inner
            .client
            .config()
            .request_timeout
            .min(inner.config.rebalance_timeout / 4);
        let (committed, found) =
            commit_heartbeating(inner, bound, &mut heartbeats, &mut failures).await;
        if let Err(e) = committed {
            tracing::warn!(group = %inner.group, error = %e, "commit before rejoining failed");
        }
        // Dropped meanwhile after all (the commit outlasted the rebalance): start over.
        if found == Standing::Rejoin(Rejoin::RevokeAll) {
            how = Rejoin::RevokeAll;
        }
    }
    let backoff = timing::retry_backoff(&inner.client.config().retry_config);
    let mut failures = Streak::default();
    loop {
        let e = match join(inner, how).await {
            Ok(()) => {
                inner.joined();
                inner.metrics.rebalances.fetch_add(1, Ordering::Relaxed);
                return;
            }
            Err(e) => e,
        };
        if inner.state.lock().closed {
            return;
        }
        if matches!(
            e.error_code(),
            Some(ErrorCode::UnknownMember | ErrorCode::IllegalGeneration)
        ) {
            how = Rejoin::RevokeAll;
        }
        let logged = |e: &ClientError, _| {
            tracing::warn!(group = %inner.group, error = %e, "rejoin failed; retrying");
        };
        let Some(attempt) = inner.failed(&mut failures, e, logged) else {
            return;
        };
        tokio::time::sleep(backoff.delay(attempt)).await;
    }
}

/// How the group task stands after a heartbeat or an auto-commit failed with `e` (see
/// [`Inner::failed`]): stopped once the client is closed, else fine until the next tick.
fn standing_after(inner: &Inner, failures: &mut Streak, e: ClientError, what: &str) -> Standing {
    let logged = |e: &ClientError, _| tracing::warn!(group = %inner.group, error = %e, "{what}");
    match inner.failed(failures, e, logged) {
        None => Standing::Stop,
        Some(_) => Standing::Fine,
    }
}

/// A tick every `heartbeat_interval`, the first one interval from now; a tick missed (a
/// heartbeat slower than the interval) is delayed rather than sent in a burst after it.
fn heartbeat_ticks(inner: &Inner) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(timing::period(inner.config.heartbeat_interval));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks.reset();
    ticks
}

/// The group task: heartbeats, auto-commits and rebalances until the consumer closes.
pub(crate) async fn run(inner: Arc<Inner>) {
    let span = tracing::info_span!("consumer_group", topic = %inner.topic, group = %inner.group);
    group_loop(inner).instrument(span).await;
}

async fn group_loop(inner: Arc<Inner>) {
    let config = &inner.config;
    let mut heartbeats = heartbeat_ticks(&inner);
    let commit_every = if config.enable_auto_commit {
        config.auto_commit_interval
    } else {
        // Never fires in practice; keeps one `select!` for both modes.
        timing::FAR_FUTURE
    };
    let mut commits = tokio::time::interval(timing::period(commit_every));
    commits.set_missed_tick_behavior(MissedTickBehavior::Delay);
    commits.reset();
    let mut heartbeat_failures = Streak::default();
    let mut commit_failures = Streak::default();
    loop {
        let standing = tokio::select! {
            _ = heartbeats.tick() => heartbeat(&inner, &mut heartbeat_failures).await,
            _ = commits.tick() => {
                let (committed, found) =
                    commit_heartbeating(
                        &inner,
                        inner.client.config().request_timeout,
                        &mut heartbeats,
                        &mut heartbeat_failures,
                    )
                    .await;
                let after = match committed {
                    Ok(()) => {
                        inner.succeeded(&mut commit_failures);
                        Standing::Fine
                    }
                    // A refusal that retrying cannot mend (the group's commit right withdrawn)
                    // is told to the application once: else it would go on receiving with
                    // nothing committed, and a restart would deliver everything again.
                    Err(e) => standing_after(&inner, &mut commit_failures, e, "auto-commit failed"),
                };
                // A stop first, then what the heartbeats found meanwhile.
                if after == Standing::Stop { after } else if found != Standing::Fine { found } else { after }
            }
            // A commit was refused: a heartbeat tells how we stand with the group.
            _ = inner.rejoin.notified() => heartbeat(&inner, &mut heartbeat_failures).await,
        };
        if let Standing::Rejoin(how) = standing {
            tracing::info!(group = %inner.group, ?how, "rebalancing");
            rebalance(&inner, how).await;
            heartbeats.reset();
        }
        if standing == Standing::Stop || inner.state.lock().closed {
            tracing::debug!(group = %inner.group, "group task stopped");
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::missed_generations;

    /// A rejoin answered with its own generation (nothing changed) or the next keeps what the
    /// member holds; one answered later, or earlier (a restarted broker made the group again),
    /// starts over.
    #[test]
    fn a_rejoin_keeps_its_partitions_only_in_its_own_or_the_next_generation() {
        assert!(!missed_generations(7, 7));
        assert!(!missed_generations(7, 8));
        assert!(missed_generations(7, 9));
        assert!(missed_generations(7, 1), "a restarted broker's group");
        assert!(missed_generations(7, 6));
        assert!(!missed_generations(u32::MAX, 0));
    }
}
