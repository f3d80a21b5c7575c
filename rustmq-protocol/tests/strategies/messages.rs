//! Generators for every request and response, and the values inside them.

use bytes::Bytes;
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;
use proptest::sample::select;
use rustmq_protocol::*;

// ---- leaf strategies -------------------------------------------------------------------------

/// Names: mostly short ASCII, sometimes any Unicode (multi-byte lengths matter for the prefix).
pub(crate) fn string() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z0-9._-]{0,12}",
        1 => "\\PC{0,8}",
    ]
}

pub(crate) fn bytes(max: usize) -> impl Strategy<Value = Bytes> {
    vec(any::<u8>(), 0..max).prop_map(Bytes::from)
}

/// Lengths around the one-byte varint boundary (127/128) are where length prefixes break.
pub(crate) fn long_bytes() -> impl Strategy<Value = Bytes> {
    prop_oneof![
        3 => bytes(24),
        1 => (120usize..140, any::<u8>()).prop_map(|(n, b)| Bytes::from(vec![b; n])),
    ]
}

pub(crate) fn strings() -> impl Strategy<Value = Vec<String>> {
    vec(string(), 0..5)
}

pub(crate) fn acks() -> impl Strategy<Value = Acks> {
    select(Acks::ALL)
}

pub(crate) fn error_code() -> impl Strategy<Value = ErrorCode> {
    // `from_code` keeps the value canonical: `Other(n)` never holds a known code.
    prop_oneof![
        3 => (1u16..=28).prop_map(ErrorCode::from_code),
        1 => any::<u16>().prop_map(ErrorCode::from_code),
    ]
}

pub(crate) fn credentials() -> impl Strategy<Value = Credentials> {
    prop_oneof![
        (string(), string())
            .prop_map(|(username, password)| Credentials::Plain { username, password }),
        string().prop_map(Credentials::Token),
    ]
}

pub(crate) fn offset_spec() -> impl Strategy<Value = OffsetSpec> {
    prop_oneof![
        Just(OffsetSpec::Earliest),
        Just(OffsetSpec::Latest),
        any::<i64>().prop_map(OffsetSpec::Timestamp),
    ]
}

pub(crate) fn topic_settings() -> impl Strategy<Value = TopicSettings> {
    (
        option::of(any::<u64>()),
        option::of(any::<u64>()),
        option::of(any::<u64>()),
    )
        .prop_map(
            |(retention_ms, retention_bytes, segment_bytes)| TopicSettings {
                retention_ms,
                retention_bytes,
                segment_bytes,
            },
        )
}

pub(crate) fn broker_limits() -> impl Strategy<Value = BrokerLimits> {
    (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(max_frame_bytes, max_batch_bytes, max_in_flight)| BrokerLimits {
            max_frame_bytes,
            max_batch_bytes,
            max_in_flight,
        },
    )
}

pub(crate) fn topic_partitions() -> impl Strategy<Value = TopicPartitions> {
    (string(), vec(any::<u32>(), 0..6))
        .prop_map(|(topic, partitions)| TopicPartitions { topic, partitions })
}

pub(crate) fn partition_offset() -> impl Strategy<Value = PartitionOffset> {
    (string(), any::<u32>(), any::<u64>()).prop_map(|(topic, partition, offset)| PartitionOffset {
        topic,
        partition,
        offset,
    })
}

// ---- requests --------------------------------------------------------------------------------

pub(crate) fn hello_request() -> impl Strategy<Value = HelloRequest> {
    (
        any::<u16>(),
        any::<u16>(),
        string(),
        option::of(credentials()),
    )
        .prop_map(
            |(min_version, max_version, client_id, credentials)| HelloRequest {
                min_version,
                max_version,
                client_id,
                credentials,
            },
        )
}

pub(crate) fn create_topic_request() -> impl Strategy<Value = CreateTopicRequest> {
    (string(), any::<u32>(), topic_settings()).prop_map(|(name, partitions, settings)| {
        CreateTopicRequest {
            name,
            partitions,
            settings,
        }
    })
}

pub(crate) fn produce_request() -> impl Strategy<Value = ProduceRequest> {
    (string(), any::<u32>(), acks(), any::<u32>(), long_bytes()).prop_map(
        |(topic, partition, acks, timeout_ms, batch)| ProduceRequest {
            topic,
            partition,
            acks,
            timeout_ms,
            batch,
        },
    )
}

pub(crate) fn fetch_request() -> impl Strategy<Value = FetchRequest> {
    (
        string(),
        any::<u32>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(topic, partition, offset, max_bytes, max_wait_ms)| FetchRequest {
                topic,
                partition,
                offset,
                max_bytes,
                max_wait_ms,
            },
        )
}

pub(crate) fn join_group_request() -> impl Strategy<Value = JoinGroupRequest> {
    (
        string(),
        string(),
        string(),
        strings(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(group, member_id, client_id, topics, session_timeout_ms, rebalance_timeout_ms)| {
                JoinGroupRequest {
                    group,
                    member_id,
                    client_id,
                    topics,
                    session_timeout_ms,
                    rebalance_timeout_ms,
                }
            },
        )
}

pub(crate) fn commit_offsets_request() -> impl Strategy<Value = CommitOffsetsRequest> {
    (
        string(),
        string(),
        any::<u32>(),
        vec(partition_offset(), 0..4),
    )
        .prop_map(
            |(group, member_id, generation, offsets)| CommitOffsetsRequest {
                group,
                member_id,
                generation,
                offsets,
            },
        )
}

/// Every request kind. [`every_kind_is_generated`] fails when a kind is added without an arm.
pub(crate) fn request() -> impl Strategy<Value = Request> {
    prop_oneof![
        hello_request().prop_map(Request::Hello).boxed(),
        any::<u64>()
            .prop_map(|nonce| Request::Ping(PingRequest { nonce }))
            .boxed(),
        option::of(strings())
            .prop_map(|topics| Request::Metadata(MetadataRequest { topics }))
            .boxed(),
        create_topic_request()
            .prop_map(Request::CreateTopic)
            .boxed(),
        string()
            .prop_map(|name| Request::DeleteTopic(DeleteTopicRequest { name }))
            .boxed(),
        Just(Request::ListTopics(ListTopicsRequest {})).boxed(),
        string()
            .prop_map(|name| Request::DescribeTopic(DescribeTopicRequest { name }))
            .boxed(),
        produce_request().prop_map(Request::Produce).boxed(),
        fetch_request().prop_map(Request::Fetch).boxed(),
        (string(), any::<u32>(), offset_spec())
            .prop_map(
                |(topic, partition, spec)| Request::ListOffsets(ListOffsetsRequest {
                    topic,
                    partition,
                    spec
                })
            )
            .boxed(),
        option::of(string())
            .prop_map(|name| Request::InitProducer(InitProducerRequest { name }))
            .boxed(),
        join_group_request().prop_map(Request::JoinGroup).boxed(),
        (string(), string(), any::<u32>())
            .prop_map(
                |(group, member_id, generation)| Request::Heartbeat(HeartbeatRequest {
                    group,
                    member_id,
                    generation
                })
            )
            .boxed(),
        (string(), string())
            .prop_map(|(group, member_id)| Request::LeaveGroup(LeaveGroupRequest {
                group,
                member_id
            }))
            .boxed(),
        commit_offsets_request()
            .prop_map(Request::CommitOffsets)
            .boxed(),
        (string(), vec(topic_partitions(), 0..4))
            .prop_map(
                |(group, partitions)| Request::FetchOffsets(FetchOffsetsRequest {
                    group,
                    partitions
                })
            )
            .boxed(),
        string()
            .prop_map(|group| Request::DescribeGroup(DescribeGroupRequest { group }))
            .boxed(),
        Just(Request::ListGroups(ListGroupsRequest {})).boxed(),
        string()
            .prop_map(|name| Request::AutoCreateTopic(AutoCreateTopicRequest { name }))
            .boxed(),
    ]
}

// ---- responses -------------------------------------------------------------------------------

pub(crate) fn hello_response() -> impl Strategy<Value = HelloResponse> {
    (any::<u16>(), any::<u32>(), broker_limits(), string()).prop_map(
        |(version, broker_id, limits, principal)| HelloResponse {
            version,
            broker_id,
            limits,
            principal,
        },
    )
}

pub(crate) fn metadata_response() -> impl Strategy<Value = MetadataResponse> {
    let broker = (any::<u32>(), string(), any::<u16>()).prop_map(|(id, host, port)| BrokerInfo {
        id,
        host,
        port,
    });
    let partition = (any::<u32>(), any::<u32>())
        .prop_map(|(partition, leader)| PartitionMetadata { partition, leader });
    let topic = (string(), vec(partition, 0..4))
        .prop_map(|(name, partitions)| TopicMetadata { name, partitions });
    (any::<u32>(), vec(broker, 0..4), vec(topic, 0..4)).prop_map(|(broker_id, brokers, topics)| {
        MetadataResponse {
            broker_id,
            brokers,
            topics,
        }
    })
}

pub(crate) fn describe_topic_response() -> impl Strategy<Value = DescribeTopicResponse> {
    let partition = (
        any::<u32>(),
        any::<u64>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(
            |(partition, log_start_offset, high_watermark, size_bytes, segments)| {
                PartitionDescription {
                    partition,
                    log_start_offset,
                    high_watermark,
                    size_bytes,
                    segments,
                }
            },
        );
    (string(), topic_settings(), vec(partition, 0..4)).prop_map(|(name, settings, partitions)| {
        DescribeTopicResponse {
            name,
            settings,
            partitions,
        }
    })
}

pub(crate) fn produce_response() -> impl Strategy<Value = ProduceResponse> {
    (any::<u64>(), any::<i64>(), any::<u64>(), any::<bool>()).prop_map(
        |(base_offset, log_append_time, log_start_offset, duplicate)| ProduceResponse {
            base_offset,
            log_append_time,
            log_start_offset,
            duplicate,
        },
    )
}

pub(crate) fn describe_group_response() -> impl Strategy<Value = DescribeGroupResponse> {
    let member = (string(), string(), vec(topic_partitions(), 0..3)).prop_map(
        |(member_id, client_id, assignment)| MemberDescription {
            member_id,
            client_id,
            assignment,
        },
    );
    (
        string(),
        string(),
        any::<u32>(),
        vec(member, 0..3),
        vec(partition_offset(), 0..3),
    )
        .prop_map(
            |(group, state, generation, members, offsets)| DescribeGroupResponse {
                group,
                state,
                generation,
                members,
                offsets,
            },
        )
}

/// Every response kind, and the error answer.
pub(crate) fn response() -> impl Strategy<Value = Response> {
    let committed = (string(), any::<u32>(), option::of(any::<u64>())).prop_map(
        |(topic, partition, offset)| CommittedOffset {
            topic,
            partition,
            offset,
        },
    );
    prop_oneof![
        hello_response().prop_map(Response::Hello).boxed(),
        any::<u64>()
            .prop_map(|nonce| Response::Ping(PingResponse { nonce }))
            .boxed(),
        metadata_response().prop_map(Response::Metadata).boxed(),
        (string(), any::<u32>())
            .prop_map(
                |(name, partitions)| Response::CreateTopic(CreateTopicResponse {
                    name,
                    partitions
                })
            )
            .boxed(),
        (string(), any::<u32>())
            .prop_map(
                |(name, partitions)| Response::AutoCreateTopic(CreateTopicResponse {
                    name,
                    partitions
                })
            )
            .boxed(),
        string()
            .prop_map(|name| Response::DeleteTopic(DeleteTopicResponse { name }))
            .boxed(),
        vec(
            (string(), any::<u32>())
                .prop_map(|(name, partitions)| TopicSummary { name, partitions }),
            0..5
        )
        .prop_map(|topics| Response::ListTopics(ListTopicsResponse { topics }))
        .boxed(),
        describe_topic_response()
            .prop_map(Response::DescribeTopic)
            .boxed(),
        produce_response().prop_map(Response::Produce).boxed(),
        (any::<u64>(), any::<u64>(), long_bytes())
            .prop_map(
                |(high_watermark, log_start_offset, records)| Response::Fetch(FetchResponse {
                    high_watermark,
                    log_start_offset,
                    records
                })
            )
            .boxed(),
        (any::<u64>(), option::of(any::<i64>()), any::<u64>())
            .prop_map(|(offset, timestamp, high_watermark)| Response::ListOffsets(
                ListOffsetsResponse {
                    offset,
                    timestamp,
                    high_watermark
                }
            ))
            .boxed(),
        (any::<i64>(), any::<i16>())
            .prop_map(
                |(producer_id, epoch)| Response::InitProducer(InitProducerResponse {
                    producer_id,
                    epoch
                })
            )
            .boxed(),
        (string(), any::<u32>(), vec(topic_partitions(), 0..4))
            .prop_map(|(member_id, generation, assignment)| Response::JoinGroup(
                JoinGroupResponse {
                    member_id,
                    generation,
                    assignment
                }
            ))
            .boxed(),
        any::<bool>()
            .prop_map(|rebalance| Response::Heartbeat(HeartbeatResponse { rebalance }))
            .boxed(),
        Just(Response::LeaveGroup(LeaveGroupResponse {})).boxed(),
        Just(Response::CommitOffsets(CommitOffsetsResponse {})).boxed(),
        vec(committed, 0..4)
            .prop_map(|offsets| Response::FetchOffsets(FetchOffsetsResponse { offsets }))
            .boxed(),
        describe_group_response()
            .prop_map(Response::DescribeGroup)
            .boxed(),
        strings()
            .prop_map(|groups| Response::ListGroups(ListGroupsResponse { groups }))
            .boxed(),
        (error_code(), string())
            .prop_map(|(code, message)| Response::Error(ErrorResponse { code, message }))
            .boxed(),
    ]
}
