//! The request and response enums, and their frames.

use bytes::Bytes;

use crate::codec::{Decode, Encode, Reader, SHARE_MIN_BYTES};
use crate::error::{ProtocolError, Result};
use crate::frame::{encode_frame, encode_frame_chunks_with_room, Frame, ERROR_KIND, RESPONSE_BIT};
use crate::messages::*;

macro_rules! api {
    ($( $kind:literal $variant:ident($req:ty) => $resp:ty; )*) => {
        /// Every request kind, by number.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ApiKind {
            $(
                #[doc = concat!("[`", stringify!($req), "`]")]
                $variant,
            )*
        }

        impl ApiKind {
            /// Every kind.
            pub const ALL: &'static [ApiKind] = &[$(ApiKind::$variant),*];

            /// The wire number of the request kind.
            pub fn code(self) -> u16 {
                match self { $( ApiKind::$variant => $kind, )* }
            }

            /// The kind for a request number.
            pub fn from_code(code: u16) -> Option<Self> {
                match code { $( $kind => Some(ApiKind::$variant), )* _ => None }
            }

            /// The kind's name (its variant name, e.g. `CreateTopic`) for logs and metrics.
            pub fn name(self) -> &'static str {
                match self { $( ApiKind::$variant => stringify!($variant), )* }
            }
        }

        /// A request, decoded.
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Request {
            $(
                #[doc = concat!("[`", stringify!($req), "`]")]
                $variant($req),
            )*
        }

        impl Request {
            /// The kind of this request.
            pub fn kind(&self) -> ApiKind {
                match self { $( Request::$variant(_) => ApiKind::$variant, )* }
            }

            /// Encodes the request as a frame.
            pub fn to_frame(&self, request_id: u32) -> Bytes {
                match self {
                    $( Request::$variant(body) => encode_frame($kind, 1, request_id, |b| body.encode(b)), )*
                }
            }

            /// Encodes the request as buffers to send in order, sharing a produce request's
            /// batch instead of copying it. Concatenated, they are [`to_frame`](Self::to_frame).
            pub fn to_frame_chunks(&self, request_id: u32) -> Vec<Bytes> {
                let room = self.copied_len();
                match self {
                    $( Request::$variant(body) => encode_frame_chunks_with_room($kind, 1, request_id, room, |b| body.encode_chunked(b)), )*
                }
            }

            /// Decodes a request frame; the whole body must be consumed.
            pub fn from_frame(frame: &Frame) -> Result<Self> {
                let kind = frame.header.kind;
                if frame.header.version != 1 && ApiKind::from_code(kind).is_some() {
                    return Err(ProtocolError::UnsupportedVersion { kind, version: frame.header.version });
                }
                let mut r = Reader::new(frame.body.clone());
                let req = match kind {
                    $( $kind => Request::$variant(<$req>::decode(&mut r)?), )*
                    other => return Err(ProtocolError::UnknownKind(other)),
                };
                r.finish()?;
                Ok(req)
            }
        }

        /// A response, decoded.
        #[derive(Debug, Clone, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Response {
            $(
                #[doc = concat!("[`", stringify!($resp), "`]")]
                $variant($resp),
            )*
            /// An error answer to any request.
            Error(ErrorResponse),
        }

        impl Response {
            /// Encodes the response as a frame.
            pub fn to_frame(&self, request_id: u32) -> Bytes {
                match self {
                    $( Response::$variant(body) => encode_frame($kind | RESPONSE_BIT, 1, request_id, |b| body.encode(b)), )*
                    Response::Error(body) => encode_frame(ERROR_KIND, 1, request_id, |b| body.encode(b)),
                }
            }

            /// Encodes the response as buffers to send in order, sharing a fetch answer's
            /// records instead of copying them. Concatenated, they are
            /// [`to_frame`](Self::to_frame).
            pub fn to_frame_chunks(&self, request_id: u32) -> Vec<Bytes> {
                let room = self.copied_len();
                match self {
                    $( Response::$variant(body) => encode_frame_chunks_with_room($kind | RESPONSE_BIT, 1, request_id, room, |b| body.encode_chunked(b)), )*
                    Response::Error(body) => encode_frame_chunks_with_room(ERROR_KIND, 1, request_id, room, |b| body.encode_chunked(b)),
                }
            }

            /// Decodes a response frame; the whole body must be consumed.
            pub fn from_frame(frame: &Frame) -> Result<Self> {
                let kind = frame.header.kind;
                if frame.header.version != 1 {
                    return Err(ProtocolError::UnsupportedVersion { kind, version: frame.header.version });
                }
                let mut r = Reader::new(frame.body.clone());
                let resp = match kind {
                    $( k if k == $kind | RESPONSE_BIT => Response::$variant(<$resp>::decode(&mut r)?), )*
                    ERROR_KIND => Response::Error(ErrorResponse::decode(&mut r)?),
                    other => return Err(ProtocolError::UnknownKind(other)),
                };
                r.finish()?;
                Ok(resp)
            }

            /// The request kind this answers, `None` for an error.
            pub fn kind(&self) -> Option<ApiKind> {
                match self {
                    $( Response::$variant(_) => Some(ApiKind::$variant), )*
                    Response::Error(_) => None,
                }
            }
        }
    };
}

api! {
    1 Hello(HelloRequest) => HelloResponse;
    2 Ping(PingRequest) => PingResponse;
    3 Metadata(MetadataRequest) => MetadataResponse;
    4 CreateTopic(CreateTopicRequest) => CreateTopicResponse;
    5 DeleteTopic(DeleteTopicRequest) => DeleteTopicResponse;
    6 ListTopics(ListTopicsRequest) => ListTopicsResponse;
    7 DescribeTopic(DescribeTopicRequest) => DescribeTopicResponse;
    8 Produce(ProduceRequest) => ProduceResponse;
    9 Fetch(FetchRequest) => FetchResponse;
    10 ListOffsets(ListOffsetsRequest) => ListOffsetsResponse;
    11 InitProducer(InitProducerRequest) => InitProducerResponse;
    12 JoinGroup(JoinGroupRequest) => JoinGroupResponse;
    13 Heartbeat(HeartbeatRequest) => HeartbeatResponse;
    14 LeaveGroup(LeaveGroupRequest) => LeaveGroupResponse;
    15 CommitOffsets(CommitOffsetsRequest) => CommitOffsetsResponse;
    16 FetchOffsets(FetchOffsetsRequest) => FetchOffsetsResponse;
    17 DescribeGroup(DescribeGroupRequest) => DescribeGroupResponse;
    18 ListGroups(ListGroupsRequest) => ListGroupsResponse;
    19 AutoCreateTopic(AutoCreateTopicRequest) => CreateTopicResponse;
}

/// How many bytes of `field` a chunked encoding copies: all of a short one, none of one long
/// enough to go as a chunk of its own.
fn copied(field: &Bytes) -> usize {
    if field.len() < SHARE_MIN_BYTES {
        field.len()
    } else {
        0
    }
}

impl Request {
    /// The bytes of this request's variable-length fields that its chunked encoding copies,
    /// for the requests where they can be many: room reserved before encoding.
    fn copied_len(&self) -> usize {
        match self {
            Request::Produce(r) => r.topic.len() + copied(&r.batch),
            _ => 0,
        }
    }
}

impl Response {
    /// As [`Request::copied_len`].
    fn copied_len(&self) -> usize {
        match self {
            Response::Fetch(r) => copied(&r.records),
            Response::Error(e) => e.message.len(),
            _ => 0,
        }
    }
}

impl std::fmt::Display for ApiKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::FrameDecoder;

    fn reparse(bytes: Bytes) -> Frame {
        let mut d = FrameDecoder::new(u32::MAX);
        d.extend(&bytes);
        d.next_frame().unwrap().unwrap()
    }

    #[test]
    fn request_and_response_round_trip() {
        let req = Request::Fetch(FetchRequest {
            topic: "t".into(),
            partition: 3,
            offset: 99,
            max_bytes: 1 << 20,
            max_wait_ms: 500,
        });
        let frame = reparse(req.to_frame(7));
        assert_eq!(frame.header.request_id, 7);
        assert_eq!(Request::from_frame(&frame).unwrap(), req);

        let resp = Response::Error(ErrorResponse {
            code: crate::ErrorCode::UnknownTopic,
            message: "no such topic".into(),
        });
        assert_eq!(
            Response::from_frame(&reparse(resp.to_frame(7))).unwrap(),
            resp
        );
    }

    #[test]
    fn unknown_kind_and_version() {
        let f = reparse(encode_frame(0x7777, 1, 1, |_| {}));
        assert_eq!(
            Request::from_frame(&f),
            Err(ProtocolError::UnknownKind(0x7777))
        );
        let f = reparse(encode_frame(2, 9, 1, |b| 5u64.encode(b)));
        assert!(matches!(
            Request::from_frame(&f),
            Err(ProtocolError::UnsupportedVersion { .. })
        ));
    }

    #[test]
    fn trailing_bytes_are_rejected() {
        let f = reparse(encode_frame(2, 1, 1, |b| {
            5u64.encode(b);
            b.extend_from_slice(b"x");
        }));
        assert_eq!(
            Request::from_frame(&f),
            Err(ProtocolError::TrailingBytes(1))
        );
    }
}
