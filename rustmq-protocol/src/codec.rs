//! Primitive encoding: a bounds-checked reader, the [`Encode`]/[`Decode`] traits and varints.
//!
//! Integers are big-endian. Strings and byte strings carry an unsigned LEB128 length; a
//! decoder never trusts a length or a count further than the bytes that remain in its input,
//! so a hostile peer cannot make it allocate more than it sent.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{ProtocolError, Result};

/// A bounds-checked cursor over a [`Bytes`] buffer.
///
/// Byte-string fields are returned as zero-copy slices of the input.
#[derive(Debug, Clone)]
pub struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    /// Wraps `buf`.
    pub fn new(buf: Bytes) -> Self {
        Self { buf, pos: 0 }
    }

    /// Bytes left to read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Current position from the start of the input.
    pub fn position(&self) -> usize {
        self.pos
    }

    #[inline]
    fn need(&self, n: usize) -> Result<()> {
        if self.remaining() < n {
            Err(ProtocolError::Truncated {
                needed: n,
                remaining: self.remaining(),
            })
        } else {
            Ok(())
        }
    }

    /// Takes the next `n` bytes as a zero-copy slice.
    #[inline]
    pub fn bytes(&mut self, n: usize) -> Result<Bytes> {
        self.need(n)?;
        let out = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(out)
    }

    /// The `len` bytes at `start` from the start of the input, as a zero-copy slice, wherever
    /// the cursor is; `None` past the end.
    #[inline]
    pub fn bytes_at(&self, start: usize, len: usize) -> Option<Bytes> {
        let end = start.checked_add(len)?;
        (end <= self.buf.len()).then(|| self.buf.slice(start..end))
    }

    /// Moves the cursor to `position` from the start of the input (at most its length).
    pub fn seek(&mut self, position: usize) {
        self.pos = position.min(self.buf.len());
    }

    /// Borrows the next `n` bytes.
    #[inline]
    pub fn slice(&mut self, n: usize) -> Result<&[u8]> {
        self.need(n)?;
        let out = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        self.need(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    /// Reads one byte.
    #[inline]
    pub fn u8(&mut self) -> Result<u8> {
        let byte = *self.buf.get(self.pos).ok_or(ProtocolError::Truncated {
            needed: 1,
            remaining: 0,
        })?;
        self.pos += 1;
        Ok(byte)
    }
    /// Reads a big-endian `u16`.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    /// Reads a big-endian `u32`.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    /// Reads a big-endian `u64`.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    /// Reads a big-endian `i16`.
    pub fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.array()?))
    }
    /// Reads a big-endian `i32`.
    pub fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.array()?))
    }
    /// Reads a big-endian `i64`.
    pub fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// Reads an unsigned LEB128 varint (at most 10 bytes).
    ///
    /// Every record field is one, and nearly all take one or two bytes: those are read
    /// inline, the rest in a loop (`benches/records_callgrind.rs` measures the record path).
    #[inline]
    pub fn uvarint(&mut self) -> Result<u64> {
        match self.buf.get(self.pos..self.pos + 2) {
            Some(&[b0, _]) if b0 < 0x80 => {
                self.pos += 1;
                Ok(u64::from(b0))
            }
            Some(&[b0, b1]) if b1 < 0x80 => {
                self.pos += 2;
                Ok(u64::from(b0 & 0x7f) | u64::from(b1) << 7)
            }
            _ => self.long_uvarint(),
        }
    }

    fn long_uvarint(&mut self) -> Result<u64> {
        let rest = &self.buf[self.pos..];
        let mut value = 0u64;
        for (i, &byte) in rest.iter().take(10).enumerate() {
            if i == 9 && byte > 1 {
                return Err(ProtocolError::BadVarint);
            }
            value |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                self.pos += i + 1;
                return Ok(value);
            }
        }
        Err(if rest.len() < 10 {
            ProtocolError::Truncated {
                needed: 1,
                remaining: 0,
            }
        } else {
            ProtocolError::BadVarint
        })
    }

    /// Reads a zigzag-encoded signed varint.
    #[inline]
    pub fn varint(&mut self) -> Result<i64> {
        let v = self.uvarint()?;
        Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
    }

    /// Reads a length that must fit in what remains of the input.
    #[inline]
    pub fn length(&mut self) -> Result<usize> {
        let len = self.uvarint()?;
        let len = usize::try_from(len).map_err(|_| ProtocolError::BadVarint)?;
        self.need(len)?;
        Ok(len)
    }

    /// Fails if any byte is left.
    pub fn finish(&self) -> Result<()> {
        match self.remaining() {
            0 => Ok(()),
            n => Err(ProtocolError::TrailingBytes(n)),
        }
    }
}

/// Writes an unsigned LEB128 varint.
pub fn put_uvarint(buf: &mut impl BufMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Writes a zigzag-encoded signed varint.
pub fn put_varint(buf: &mut impl BufMut, v: i64) {
    put_uvarint(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Encoded size of an unsigned varint.
pub fn uvarint_len(mut v: u64) -> usize {
    let mut n = 1;
    while v >= 0x80 {
        v >>= 7;
        n += 1;
    }
    n
}

/// Encoded size of a zigzag varint.
pub fn varint_len(v: i64) -> usize {
    uvarint_len(((v << 1) ^ (v >> 63)) as u64)
}

/// A value with a wire encoding.
pub trait Encode {
    /// Appends the encoding of `self` to `buf`.
    fn encode(&self, buf: &mut BytesMut);

    /// Appends the encoding of `self` to `out`, sharing large byte fields rather than copying
    /// them. The bytes written are the same as [`encode`](Self::encode)'s.
    fn encode_chunked(&self, out: &mut ChunkedEncoder) {
        self.encode(out.buf());
    }
}

/// Byte fields at least this long are shared by [`ChunkedEncoder`] rather than copied.
pub const SHARE_MIN_BYTES: usize = 4096;

/// An encoding as a list of buffers: small fields are copied into the current buffer, large
/// [`Bytes`] fields (record batches) go in as chunks of their own without a copy. Written in
/// order, the chunks are the encoding; QUIC sends them with one `write_all_chunks`.
#[derive(Debug)]
pub struct ChunkedEncoder {
    /// The first buffer, kept mutable so that a frame header can be written once the length
    /// of everything after it is known.
    head: Option<BytesMut>,
    chunks: Vec<Bytes>,
    buf: BytesMut,
}

impl ChunkedEncoder {
    /// An encoder whose first buffer starts with `reserve` zero bytes (room for a header).
    pub fn new(reserve: usize) -> Self {
        Self::with_room(reserve, 0)
    }

    /// An encoder as [`new`](Self::new) whose first buffer has room for `room` more bytes.
    pub fn with_room(reserve: usize, room: usize) -> Self {
        let mut buf = BytesMut::with_capacity(reserve + 64 + room);
        buf.put_bytes(0, reserve);
        Self {
            head: None,
            chunks: Vec::new(),
            buf,
        }
    }

    /// The buffer small fields are copied into.
    pub fn buf(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Appends `bytes`: copied when short, otherwise shared as a chunk of its own.
    pub fn put_shared(&mut self, bytes: &Bytes) {
        if bytes.len() < SHARE_MIN_BYTES {
            self.buf.put_slice(bytes);
            return;
        }
        let current = self.buf.split();
        match self.head {
            None => self.head = Some(current),
            Some(_) if current.is_empty() => {}
            Some(_) => self.chunks.push(current.freeze()),
        }
        self.chunks.push(bytes.clone());
    }

    /// Total length of everything written so far.
    pub fn len(&self) -> usize {
        self.head.as_ref().map_or(0, BytesMut::len)
            + self.chunks.iter().map(Bytes::len).sum::<usize>()
            + self.buf.len()
    }

    /// True if nothing was written (not even a reserved header).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The chunks in order; `patch_head` may rewrite the first buffer (e.g. its reserved
    /// header) before it is frozen.
    pub fn finish(mut self, patch_head: impl FnOnce(&mut BytesMut)) -> Vec<Bytes> {
        let mut head = match self.head.take() {
            Some(head) => {
                if !self.buf.is_empty() {
                    self.chunks.push(self.buf.freeze());
                }
                head
            }
            None => self.buf,
        };
        patch_head(&mut head);
        let mut out = Vec::with_capacity(1 + self.chunks.len());
        out.push(head.freeze());
        out.append(&mut self.chunks);
        out
    }
}

/// A value that can be read back from its wire encoding.
pub trait Decode: Sized {
    /// Reads one value; fails without panicking on any input.
    fn decode(r: &mut Reader) -> Result<Self>;
}

macro_rules! int_codec {
    ($($ty:ty => $get:ident, $put:ident);* $(;)?) => {$(
        impl Encode for $ty {
            fn encode(&self, buf: &mut BytesMut) {
                buf.$put(*self);
            }
        }
        impl Decode for $ty {
            fn decode(r: &mut Reader) -> Result<Self> {
                r.$get()
            }
        }
    )*};
}

int_codec! {
    u8 => u8, put_u8;
    u16 => u16, put_u16;
    u32 => u32, put_u32;
    u64 => u64, put_u64;
    i16 => i16, put_i16;
    i32 => i32, put_i32;
    i64 => i64, put_i64;
}

impl Encode for bool {
    fn encode(&self, buf: &mut BytesMut) {
        buf.put_u8(u8::from(*self));
    }
}

impl Decode for bool {
    fn decode(r: &mut Reader) -> Result<Self> {
        match r.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            v => Err(ProtocolError::InvalidValue {
                field: "bool",
                value: v.into(),
            }),
        }
    }
}

impl Encode for String {
    fn encode(&self, buf: &mut BytesMut) {
        self.as_str().encode(buf);
    }
}

impl Encode for str {
    fn encode(&self, buf: &mut BytesMut) {
        put_uvarint(buf, self.len() as u64);
        buf.put_slice(self.as_bytes());
    }
}

impl Decode for String {
    fn decode(r: &mut Reader) -> Result<Self> {
        let len = r.length()?;
        let raw = r.slice(len)?;
        std::str::from_utf8(raw)
            .map(str::to_owned)
            .map_err(|_| ProtocolError::InvalidUtf8)
    }
}

impl Encode for Bytes {
    fn encode(&self, buf: &mut BytesMut) {
        put_uvarint(buf, self.len() as u64);
        buf.put_slice(self);
    }

    fn encode_chunked(&self, out: &mut ChunkedEncoder) {
        put_uvarint(out.buf(), self.len() as u64);
        out.put_shared(self);
    }
}

impl Decode for Bytes {
    fn decode(r: &mut Reader) -> Result<Self> {
        let len = r.length()?;
        r.bytes(len)
    }
}

impl<T: Encode> Encode for Option<T> {
    fn encode(&self, buf: &mut BytesMut) {
        match self {
            None => buf.put_u8(0),
            Some(v) => {
                buf.put_u8(1);
                v.encode(buf);
            }
        }
    }
}

impl<T: Decode> Decode for Option<T> {
    fn decode(r: &mut Reader) -> Result<Self> {
        match r.u8()? {
            0 => Ok(None),
            1 => Ok(Some(T::decode(r)?)),
            v => Err(ProtocolError::InvalidValue {
                field: "option tag",
                value: v.into(),
            }),
        }
    }
}

impl<T: Encode> Encode for Vec<T> {
    fn encode(&self, buf: &mut BytesMut) {
        put_uvarint(buf, self.len() as u64);
        for item in self {
            item.encode(buf);
        }
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn decode(r: &mut Reader) -> Result<Self> {
        // Every element takes at least one byte, so a count larger than the input is a lie.
        let count = r.length()?;
        let mut out = Vec::with_capacity(count.min(1024));
        for _ in 0..count {
            out.push(T::decode(r)?);
        }
        Ok(out)
    }
}

impl<A: Encode, B: Encode> Encode for (A, B) {
    fn encode(&self, buf: &mut BytesMut) {
        self.0.encode(buf);
        self.1.encode(buf);
    }
}

impl<A: Decode, B: Decode> Decode for (A, B) {
    fn decode(r: &mut Reader) -> Result<Self> {
        Ok((A::decode(r)?, B::decode(r)?))
    }
}

/// Declares a struct whose wire form is its fields in order.
macro_rules! wire_struct {
    (
        $(#[$meta:meta])*
        pub struct $name:ident {
            $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct $name {
            $( $(#[$fmeta])* pub $field: $ty, )*
        }

        impl $crate::codec::Encode for $name {
            #[allow(unused_variables)]
            fn encode(&self, buf: &mut ::bytes::BytesMut) {
                $( $crate::codec::Encode::encode(&self.$field, buf); )*
            }

            #[allow(unused_variables)]
            fn encode_chunked(&self, out: &mut $crate::codec::ChunkedEncoder) {
                $( $crate::codec::Encode::encode_chunked(&self.$field, out); )*
            }
        }

        impl $crate::codec::Decode for $name {
            #[allow(unused_variables)]
            fn decode(r: &mut $crate::codec::Reader) -> $crate::error::Result<Self> {
                Ok(Self { $( $field: $crate::codec::Decode::decode(r)?, )* })
            }
        }
    };
}
pub(crate) use wire_struct;

/// Declares a fieldless enum encoded as one byte.
macro_rules! wire_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $value:expr ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant = $value, )*
        }

        impl $name {
            /// Every variant, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant),*];
        }

        impl $crate::codec::Encode for $name {
            fn encode(&self, buf: &mut ::bytes::BytesMut) {
                ::bytes::BufMut::put_u8(buf, *self as u8);
            }
        }

        impl $crate::codec::Decode for $name {
            fn decode(r: &mut $crate::codec::Reader) -> $crate::error::Result<Self> {
                match r.u8()? {
                    $( v if v == $value => Ok($name::$variant), )*
                    v => Err($crate::error::ProtocolError::InvalidValue {
                        field: stringify!($name),
                        value: v.into(),
                    }),
                }
            }
        }
    };
}
pub(crate) use wire_enum;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip_edges() {
        for v in [0u64, 1, 127, 128, 16383, 16384, u64::MAX] {
            let mut buf = BytesMut::new();
            put_uvarint(&mut buf, v);
            assert_eq!(buf.len(), uvarint_len(v));
            assert_eq!(Reader::new(buf.freeze()).uvarint().unwrap(), v);
        }
        for v in [0i64, -1, 1, i64::MIN, i64::MAX] {
            let mut buf = BytesMut::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v));
            assert_eq!(Reader::new(buf.freeze()).varint().unwrap(), v);
        }
    }

    #[test]
    fn overlong_varint_is_an_error() {
        let bytes = Bytes::from_static(&[0xff; 11]);
        assert_eq!(Reader::new(bytes).uvarint(), Err(ProtocolError::BadVarint));
    }

    #[test]
    fn huge_vec_count_does_not_allocate() {
        let mut buf = BytesMut::new();
        put_uvarint(&mut buf, u64::MAX >> 1);
        assert!(Vec::<u64>::decode(&mut Reader::new(buf.freeze())).is_err());
    }
}
