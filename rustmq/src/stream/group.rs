//! The stream's requests to the broker outside produce and fetch: group membership (one member
//! subscribed to every input topic), commits, committed offsets, log ends and producer ids.

use std::collections::HashMap;
use std::time::Duration;

use rustmq_protocol::{
    CommitOffsetsRequest, DescribeGroupRequest, ErrorCode, HeartbeatRequest, InitProducerRequest,
    JoinGroupRequest, LeaveGroupRequest, ListOffsetsRequest, MetadataRequest, OffsetSpec,
    PartitionOffset, Request, Response,
};

use super::ledger::Snapshot;
use super::Tp;
use crate::client::RustMqClient;
use crate::consumer::ConsumerConfig;
use crate::error::{ClientError, Result};

/// The stream's standing in its group for one generation.
#[derive(Debug, Clone, Default)]
pub(crate) struct Member {
    pub(crate) group: String,
    pub(crate) member_id: String,
    pub(crate) generation: u32,
}

fn unexpected(what: &str, r: &Response) -> ClientError {
    ClientError::UnexpectedResponse(format!("{:?} to a {what} request", r.kind()))
}

/// Joins (or rejoins with `member_id`) and waits for the assignment.
pub(crate) async fn join(
    client: &RustMqClient,
    group: &str,
    member_id: &str,
    topics: &[String],
    session_timeout: Duration,
    rebalance_timeout: Duration,
) -> Result<(Member, Vec<Tp>)> {
    let request = Request::JoinGroup(JoinGroupRequest {
        group: group.to_owned(),
        member_id: member_id.to_owned(),
        client_id: client.client_id().to_owned(),
        topics: topics.to_vec(),
        session_timeout_ms: ConsumerConfig::ms(session_timeout),
        rebalance_timeout_ms: ConsumerConfig::ms(rebalance_timeout),
    });
    // The broker answers once the rebalance settles, which may take the whole rebalance timeout
    // (as sent: in ms, at most `u32::MAX`; an `Instant` cannot go as far as `Duration::MAX`).
    let sent = Duration::from_millis(u64::from(ConsumerConfig::ms(rebalance_timeout)));
    let wait = sent.saturating_add(client.config().request_timeout);
    match client.request_with_timeout(request, wait).await? {
        Response::JoinGroup(r) => {
            let mut assigned: Vec<Tp> = r
                .assignment
                .iter()
                .flat_map(|tp| tp.partitions.iter().map(|p| Tp::new(&tp.topic, *p)))
                .collect();
            assigned.sort();
            let member = Member {
                group: group.to_owned(),
                member_id: r.member_id,
                generation: r.generation,
            };
            Ok((member, assigned))
        }
        other => Err(unexpected("join-group", &other)),
    }
}

/// `Ok(true)` when the member must rejoin.
pub(crate) async fn heartbeat(client: &RustMqClient, member: &Member) -> Result<bool> {
    let request = Request::Heartbeat(HeartbeatRequest {
        group: member.group.clone(),
        member_id: member.member_id.clone(),
        generation: member.generation,
    });
    match client.request(request).await? {
        Response::Heartbeat(r) => Ok(r.rebalance),
        other => Err(unexpected("heartbeat", &other)),
    }
}

/// Leaves the group: its partitions move at once.
pub(crate) async fn leave(client: &RustMqClient, member: &Member) -> Result<()> {
    let request = Request::LeaveGroup(LeaveGroupRequest {
        group: member.group.clone(),
        member_id: member.member_id.clone(),
    });
    match client.request(request).await? {
        Response::LeaveGroup(_) => Ok(()),
        other => Err(unexpected("leave-group", &other)),
    }
}

/// Commits every entry of `snapshot` in one request, fenced by the member's generation.
pub(crate) async fn commit(
    client: &RustMqClient,
    member: &Member,
    snapshot: Snapshot,
) -> Result<()> {
    let request = Request::CommitOffsets(CommitOffsetsRequest {
        group: member.group.clone(),
        member_id: member.member_id.clone(),
        generation: member.generation,
        offsets: snapshot
            .into_iter()
            .map(|(topic, partition, offset)| PartitionOffset {
                topic,
                partition,
                offset,
            })
            .collect(),
    });
    match client.request(request).await? {
        Response::CommitOffsets(_) => Ok(()),
        other => Err(unexpected("commit", &other)),
    }
}

/// Whether an error means the group moved on to a generation after the member's (a
/// rebalance, or a subscribed topic deleted): the member rejoins under its id, as at a
/// rebalance, rather than as a new member.
pub(crate) fn generation_moved(e: &ClientError) -> bool {
    matches!(
        e.error_code(),
        Some(ErrorCode::IllegalGeneration | ErrorCode::RebalanceInProgress)
    )
}

/// Whether an error means the member lost its standing (it must rejoin).
pub(crate) fn lost_membership(e: &ClientError) -> bool {
    matches!(
        e.error_code(),
        Some(
            ErrorCode::IllegalGeneration
                | ErrorCode::UnknownMember
                | ErrorCode::RebalanceInProgress
        )
    )
}

/// Every committed entry of the group, reserved ones included.
pub(crate) async fn group_offsets(
    client: &RustMqClient,
    group: &str,
) -> Result<HashMap<(String, u32), u64>> {
    let request = Request::DescribeGroup(DescribeGroupRequest {
        group: group.to_owned(),
    });
    match client.request(request).await {
        Ok(Response::DescribeGroup(r)) => Ok(r
            .offsets
            .into_iter()
            .map(|o| ((o.topic, o.partition), o.offset))
            .collect()),
        Ok(other) => Err(unexpected("describe-group", &other)),
        Err(e) if e.error_code() == Some(ErrorCode::UnknownGroup) => Ok(HashMap::new()),
        Err(e) => Err(e),
    }
}

/// The first (`Earliest`) or next (`Latest`) offset of a partition.
pub(crate) async fn log_offset(
    client: &RustMqClient,
    topic: &str,
    partition: u32,
    spec: OffsetSpec,
) -> Result<u64> {
    let request = Request::ListOffsets(ListOffsetsRequest {
        topic: topic.to_owned(),
        partition,
        spec,
    });
    match client
        .request(request)
        .await
        .map_err(|e| e.for_topic(topic))?
    {
        Response::ListOffsets(r) => Ok(r.offset),
        other => Err(unexpected("list-offsets", &other)),
    }
}

/// The first offset of a partition and its high watermark (the offset of its next record).
pub(crate) async fn log_bounds(
    client: &RustMqClient,
    topic: &str,
    partition: u32,
) -> Result<(u64, u64)> {
    let request = Request::ListOffsets(ListOffsetsRequest {
        topic: topic.to_owned(),
        partition,
        spec: OffsetSpec::Earliest,
    });
    match client
        .request(request)
        .await
        .map_err(|e| e.for_topic(topic))?
    {
        Response::ListOffsets(r) => Ok((r.offset, r.high_watermark)),
        other => Err(unexpected("list-offsets", &other)),
    }
}

/// Partition count of `topic`, `None` if it does not exist.
pub(crate) async fn partition_count(client: &RustMqClient, topic: &str) -> Result<Option<u32>> {
    let request = Request::Metadata(MetadataRequest {
        topics: Some(vec![topic.to_owned()]),
    });
    match client.request(request).await? {
        Response::Metadata(m) => Ok(m
            .topics
            .iter()
            .find(|t| t.name == topic)
            .map(|t| t.partitions.len() as u32)),
        other => Err(unexpected("metadata", &other)),
    }
}

/// An idempotent producer id; a name gives the same id with a higher epoch, which fences
/// every earlier holder of the name on every partition at once.
pub(crate) async fn init_producer(
    client: &RustMqClient,
    name: Option<String>,
) -> Result<(i64, i16)> {
    match client
        .request(Request::InitProducer(InitProducerRequest { name }))
        .await?
    {
        Response::InitProducer(r) => Ok((r.producer_id, r.epoch)),
        other => Err(unexpected("init-producer", &other)),
    }
}
