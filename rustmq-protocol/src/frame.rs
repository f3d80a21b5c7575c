//! Framing: every request and response is `length | kind | version | request_id | body`.
//!
//! ```text
//! offset  size  field
//!      0     4  body_length   bytes of body after this 12-byte header
//!      4     2  kind          request kind; a response sets the high bit; 0xffff is an error
//!      6     2  version       version of the body's layout for that kind
//!      8     4  request_id    echoed in the response
//!     12     -  body
//! ```
//!
//! Sizes are checked against a limit before a single body byte is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::codec::ChunkedEncoder;
use crate::error::{ProtocolError, Result};

/// Size of a frame header.
pub const FRAME_HEADER_LEN: usize = 12;
/// Default largest frame body accepted (16 MiB).
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 16 * 1024 * 1024;
/// Bit set in the kind of every response frame.
pub const RESPONSE_BIT: u16 = 0x8000;
/// Kind of an error response.
pub const ERROR_KIND: u16 = 0xffff;
/// Most the decoder reserves ahead of received bytes for a body still in transit.
const MAX_RESERVE: usize = 64 * 1024;

/// The fixed header of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Length of the body.
    pub body_len: u32,
    /// Frame kind.
    pub kind: u16,
    /// Body version.
    pub version: u16,
    /// Correlates a response with its request.
    pub request_id: u32,
}

impl FrameHeader {
    /// Reads a header from exactly [`FRAME_HEADER_LEN`] bytes.
    pub fn parse(buf: &[u8; FRAME_HEADER_LEN]) -> Self {
        let mut b = &buf[..];
        FrameHeader {
            body_len: b.get_u32(),
            kind: b.get_u16(),
            version: b.get_u16(),
            request_id: b.get_u32(),
        }
    }

    /// Reads a header and checks the body length against `max_body`.
    pub fn parse_checked(buf: &[u8; FRAME_HEADER_LEN], max_body: u32) -> Result<Self> {
        let header = Self::parse(buf);
        if header.body_len > max_body {
            return Err(ProtocolError::FrameTooLarge {
                size: header.body_len as usize,
                max: max_body as usize,
            });
        }
        Ok(header)
    }

    /// Appends the header.
    pub fn write(&self, out: &mut impl BufMut) {
        out.put_u32(self.body_len);
        out.put_u16(self.kind);
        out.put_u16(self.version);
        out.put_u32(self.request_id);
    }

    /// Whether this is a response (or error) frame.
    pub fn is_response(&self) -> bool {
        self.kind & RESPONSE_BIT != 0
    }
}

/// A complete frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The header.
    pub header: FrameHeader,
    /// The body, `header.body_len` bytes.
    pub body: Bytes,
}

/// Writes a frame whose body is produced by `body` into one buffer.
pub fn encode_frame(
    kind: u16,
    version: u16,
    request_id: u32,
    body: impl FnOnce(&mut BytesMut),
) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    buf.put_bytes(0, FRAME_HEADER_LEN);
    body(&mut buf);
    let body_len = (buf.len() - FRAME_HEADER_LEN) as u32;
    let header = FrameHeader {
        body_len,
        kind,
        version,
        request_id,
    };
    header.write(&mut &mut buf[..FRAME_HEADER_LEN]);
    buf.freeze()
}

/// Writes a frame as buffers to send in order: like [`encode_frame`], but large byte fields
/// the body encodes with [`Encode::encode_chunked`](crate::codec::Encode::encode_chunked) (a
/// produce request's batch, a fetch answer's records) are shared, not copied.
pub fn encode_frame_chunks(
    kind: u16,
    version: u16,
    request_id: u32,
    body: impl FnOnce(&mut ChunkedEncoder),
) -> Vec<Bytes> {
    encode_frame_chunks_with_room(kind, version, request_id, 0, body)
}

/// [`encode_frame_chunks`] with `room` bytes more than usual reserved up front for the fields
/// the body copies (a short batch), so that its first buffer does not grow while it is written.
pub(crate) fn encode_frame_chunks_with_room(
    kind: u16,
    version: u16,
    request_id: u32,
    room: usize,
    body: impl FnOnce(&mut ChunkedEncoder),
) -> Vec<Bytes> {
    let mut out = ChunkedEncoder::with_room(FRAME_HEADER_LEN, room);
    body(&mut out);
    let header = FrameHeader {
        body_len: (out.len() - FRAME_HEADER_LEN) as u32,
        kind,
        version,
        request_id,
    };
    out.finish(|head| header.write(&mut &mut head[..FRAME_HEADER_LEN]))
}

/// One buffer of `total` bytes from `chunks` as they came off a stream; a single chunk is
/// handed on without a copy, several are copied once into a buffer of the exact size.
pub fn join_chunks(mut chunks: Vec<Bytes>, total: usize) -> Bytes {
    if chunks.len() == 1 {
        return chunks.pop().unwrap_or_default();
    }
    let mut buf = BytesMut::with_capacity(total);
    for c in chunks {
        buf.extend_from_slice(&c);
    }
    buf.freeze()
}

/// Incremental frame decoder for a byte stream (sans-IO).
///
/// Feed it bytes with [`FrameDecoder::extend`]; [`FrameDecoder::next_frame`] returns each
/// complete frame, or an error as soon as a header announces an oversized body.
#[derive(Debug)]
pub struct FrameDecoder {
    max_body: u32,
    buf: BytesMut,
}

impl FrameDecoder {
    /// A decoder accepting bodies of at most `max_body` bytes.
    pub fn new(max_body: u32) -> Self {
        Self {
            max_body,
            buf: BytesMut::new(),
        }
    }

    /// Appends received bytes.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet returned as frames.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next complete frame, `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        let Some(head) = self.buf.get(..FRAME_HEADER_LEN) else {
            return Ok(None);
        };
        let header =
            FrameHeader::parse_checked(head.try_into().expect("header size"), self.max_body)?;
        let total = FRAME_HEADER_LEN + header.body_len as usize;
        if self.buf.len() < total {
            // Grow with what arrives, not on the header's word: a 12-byte header must not pin
            // `max_body` bytes of memory while its body never comes.
            self.buf.reserve((total - self.buf.len()).min(MAX_RESERVE));
            return Ok(None);
        }
        let mut frame = self.buf.split_to(total);
        frame.advance(FRAME_HEADER_LEN);
        Ok(Some(Frame {
            header,
            body: frame.freeze(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoder_handles_partial_input() {
        let frame = encode_frame(3, 1, 9, |b| b.put_slice(b"hello"));
        let mut dec = FrameDecoder::new(1024);
        for chunk in frame.chunks(3) {
            dec.extend(chunk);
        }
        let f = dec.next_frame().unwrap().unwrap();
        assert_eq!(
            (f.header.kind, f.header.request_id, &f.body[..]),
            (3, 9, &b"hello"[..])
        );
        assert!(dec.next_frame().unwrap().is_none());
    }

    #[test]
    fn header_alone_does_not_reserve_its_body() {
        let mut dec = FrameDecoder::new(DEFAULT_MAX_FRAME_BYTES);
        let mut head = BytesMut::new();
        FrameHeader {
            body_len: DEFAULT_MAX_FRAME_BYTES,
            kind: 1,
            version: 1,
            request_id: 1,
        }
        .write(&mut head);
        dec.extend(&head);
        assert_eq!(dec.next_frame(), Ok(None));
        let reserved = dec.buf.capacity();
        assert!(reserved <= 2 * MAX_RESERVE, "reserved {reserved} bytes");
    }

    #[test]
    fn oversized_frame_rejected_from_header() {
        let mut dec = FrameDecoder::new(4);
        dec.extend(&encode_frame(1, 1, 1, |b| b.put_slice(b"too long")));
        assert!(matches!(
            dec.next_frame(),
            Err(ProtocolError::FrameTooLarge { size: 8, max: 4 })
        ));
    }
}
