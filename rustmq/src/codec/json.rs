//! JSON encoding for [`Json`](super::Json): serde_json's compact output, byte for byte, with
//! strings checked for characters to escape a word at a time.
//!
//! serde_json's serializer looks at a string's bytes one at a time for a `"`, a `\` or a
//! control character, at about 11 instructions per byte: for a typical event (a few short
//! strings) that scan was over half of the typed producer's work per message. Here a string is
//! checked eight bytes at a time and copied run by run between the characters to escape (in
//! one run, commonly), which get serde_json's escapes. Numbers and every other scalar go
//! through serde_json itself. The framing (`[`, `,`, `{`,
//! `:`) is written here, as serde_json's `CompactFormatter` writes it.

use std::fmt::Display;

use serde::ser::{self, Serialize, Serializer};

use super::{Append, Out};

type Error = serde_json::Error;
type Result<T = ()> = std::result::Result<T, Error>;

/// serde_json's compact serializer writing to `out` (a writer and a unit formatter: making one
/// costs nothing).
#[inline]
fn json<O: Out>(out: &mut O) -> serde_json::Serializer<Append<'_, O>> {
    serde_json::Serializer::new(Append(out))
}

/// Writes `value` as serde_json's `to_writer` would.
pub(super) fn write<T: Serialize + ?Sized, O: Out>(value: &T, out: &mut O) -> Result {
    value.serialize(Ser { out })
}

/// Whether JSON escapes `b`: `"`, `\`, or a control character (below 0x20).
#[inline]
fn escaped(b: u8) -> bool {
    b < 0x20 || b == b'"' || b == b'\\'
}

/// Where the first byte JSON escapes is in `bytes`, if anywhere. Eight bytes at a time: a word
/// has a byte below `n` (`n` <= 128) when `(w - n * ONES) & !w` has a high bit set (bytes of
/// UTF-8 sequences, 0x80 and up, never do), and a byte equal to `c` when `w ^ (c * ONES)` has a
/// zero byte; a word that has one is then looked at byte by byte.
#[inline]
fn first_escape(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::MAX / 255;
    const HIGH: u64 = ONES << 7;
    let below = |w: u64, n: u8| w.wrapping_sub(ONES * u64::from(n)) & !w;
    let mut words = bytes.chunks_exact(8);
    let mut at = 0;
    for word in &mut words {
        let w = u64::from_le_bytes(word.try_into().expect("eight bytes"));
        let found = below(w, 0x20)
            | below(w ^ (ONES * u64::from(b'"')), 1)
            | below(w ^ (ONES * u64::from(b'\\')), 1);
        if found & HIGH != 0 {
            break;
        }
        at += 8;
    }
    bytes[at..].iter().position(|&b| escaped(b)).map(|i| at + i)
}

/// What follows the backslash when JSON escapes a byte (`u` for `\u00XX`), or 0: serde_json's
/// escapes (`\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, and `\u00XX` with lowercase hex digits for
/// the other control characters).
static ESCAPES: [u8; 256] = {
    let mut table = [0; 256];
    let mut b = 0;
    while b < 0x20 {
        table[b] = b'u';
        b += 1;
    }
    table[0x08] = b'b';
    table[0x0c] = b'f';
    table[b'\n' as usize] = b'n';
    table[b'\r' as usize] = b'r';
    table[b'\t' as usize] = b't';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// Writes `s` as a JSON string: each run of characters that need no escape as it is (the whole
/// string, commonly), found eight bytes at a time.
#[inline]
fn write_str<O: Out>(out: &mut O, s: &str) {
    out.put(b"\"");
    let mut rest = s.as_bytes();
    while let Some(at) = first_escape(rest) {
        out.put(&rest[..at]);
        let b = rest[at];
        match ESCAPES[usize::from(b)] {
            b'u' => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.put(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ]);
            }
            escape => out.put(&[b'\\', escape]),
        }
        rest = &rest[at + 1..];
    }
    out.put(rest);
    out.put(b"\"");
}

/// The names serde_json gives the one-field structs whose value it writes as it is: `RawValue`
/// (feature `raw_value`) and `Number` (feature `arbitrary_precision`). They are raw only when
/// serde_json's feature is on, which shows in its output: asked once.
const RAW_TOKENS: [&str; 2] = [
    "$serde_json::private::RawValue",
    "$serde_json::private::Number",
];

/// Whether serde_json writes the struct named `name` (one of [`RAW_TOKENS`]) as it is.
fn raw_in_serde_json(name: &'static str) -> bool {
    static RAW: [std::sync::OnceLock<bool>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    let Some(i) = RAW_TOKENS.iter().position(|t| *t == name) else {
        return false;
    };
    *RAW[i].get_or_init(|| {
        struct Probe(&'static str);
        impl Serialize for Probe {
            fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                use ser::SerializeStruct;
                let mut st = s.serialize_struct(self.0, 1)?;
                st.serialize_field(self.0, "1")?;
                st.end()
            }
        }
        serde_json::to_vec(&Probe(name)).is_ok_and(|v| v == b"1")
    })
}

/// The value serializer.
struct Ser<'a, O> {
    out: &'a mut O,
}

/// Delegates scalar methods to serde_json's serializer.
macro_rules! to_serde_json {
    ($($method:ident($($arg:ident: $ty:ty),*);)*) => {$(
        #[inline]
        fn $method(self, $($arg: $ty),*) -> Result {
            json(self.out).$method($($arg),*)
        }
    )*};
}

/// The methods a value and a map key write alike: strings, and what serde_json passes
/// through to what it wraps.
macro_rules! string_methods {
    () => {
        #[inline]
        fn serialize_char(self, v: char) -> Result {
            write_str(self.out, v.encode_utf8(&mut [0; 4]));
            Ok(())
        }

        #[inline]
        fn serialize_str(self, v: &str) -> Result {
            write_str(self.out, v);
            Ok(())
        }

        #[inline]
        fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result {
            write_str(self.out, variant);
            Ok(())
        }

        #[inline]
        fn serialize_newtype_struct<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            value: &T,
        ) -> Result {
            value.serialize(self)
        }

        #[inline]
        fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result {
            value.serialize(self)
        }

        fn collect_str<T: Display + ?Sized>(self, value: &T) -> Result {
            json(self.out).collect_str(value)
        }
    };
}

impl<'a, O: Out> Serializer for Ser<'a, O> {
    type Ok = ();
    type Error = Error;
    type SerializeSeq = Seq<'a, O>;
    type SerializeTuple = Seq<'a, O>;
    type SerializeTupleStruct = Seq<'a, O>;
    type SerializeTupleVariant = Seq<'a, O>;
    type SerializeMap = Map<'a, O>;
    type SerializeStruct = Map<'a, O>;
    type SerializeStructVariant = Map<'a, O>;

    to_serde_json! {
        serialize_bool(v: bool);
        serialize_i8(v: i8);
        serialize_i16(v: i16);
        serialize_i32(v: i32);
        serialize_i64(v: i64);
        serialize_i128(v: i128);
        serialize_u8(v: u8);
        serialize_u16(v: u16);
        serialize_u32(v: u32);
        serialize_u64(v: u64);
        serialize_u128(v: u128);
        serialize_f32(v: f32);
        serialize_f64(v: f64);
        serialize_bytes(v: &[u8]);
        serialize_unit();
        serialize_none();
        serialize_unit_struct(name: &'static str);
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        value: &T,
    ) -> Result {
        open_variant(self.out, variant);
        value.serialize(Ser {
            out: &mut *self.out,
        })?;
        self.out.put(b"}");
        Ok(())
    }

    #[inline]
    fn serialize_seq(self, len: Option<usize>) -> Result<Seq<'a, O>> {
        Ok(Seq(Open::new(self.out, b"[", b"]", b"", len)))
    }

    #[inline]
    fn serialize_tuple(self, len: usize) -> Result<Seq<'a, O>> {
        self.serialize_seq(Some(len))
    }

    #[inline]
    fn serialize_tuple_struct(self, _: &'static str, len: usize) -> Result<Seq<'a, O>> {
        self.serialize_seq(Some(len))
    }

    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Seq<'a, O>> {
        open_variant(self.out, variant);
        Ok(Seq(Open::new(self.out, b"[", b"]", b"}", Some(len))))
    }

    #[inline]
    fn serialize_map(self, len: Option<usize>) -> Result<Map<'a, O>> {
        Ok(Map {
            open: Open::new(self.out, b"{", b"}", b"", len),
            raw: None,
        })
    }

    #[inline]
    fn serialize_struct(self, name: &'static str, len: usize) -> Result<Map<'a, O>> {
        if name.starts_with('$') && raw_in_serde_json(name) {
            return Ok(Map {
                open: Open::new(self.out, b"", b"", b"", None),
                raw: Some(name),
            });
        }
        self.serialize_map(Some(len))
    }

    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<Map<'a, O>> {
        open_variant(self.out, variant);
        Ok(Map {
            open: Open::new(self.out, b"{", b"}", b"}", Some(len)),
            raw: None,
        })
    }

    string_methods!();
}

/// `{"variant":`, as serde_json opens an enum's non-unit variant.
fn open_variant<O: Out>(out: &mut O, variant: &str) {
    out.put(b"{");
    write_str(out, variant);
    out.put(b":");
}

/// Where an array or an object is, as serde_json keeps track: written whole already (its
/// length was announced as 0), at its first element, or past it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    First,
    Rest,
}

/// An array or an object being written.
struct Open<'a, O> {
    out: &'a mut O,
    state: State,
    /// Its closing bracket, written at its end unless it was written at its start.
    close: &'static [u8],
    /// What a variant writes after it (its `}`), always.
    after: &'static [u8],
}

impl<'a, O: Out> Open<'a, O> {
    /// Opens with `open`; closed at once (and empty from then on, as far as its end goes)
    /// when `len` is `Some(0)`, as serde_json does, whatever comes after.
    #[inline]
    fn new(
        out: &'a mut O,
        open: &'static [u8],
        close: &'static [u8],
        after: &'static [u8],
        len: Option<usize>,
    ) -> Self {
        out.put(open);
        let state = if len == Some(0) {
            out.put(close);
            State::Empty
        } else {
            State::First
        };
        Self {
            out,
            state,
            close,
            after,
        }
    }

    /// Moves to the next element; whether it is the first (a comma goes before any other).
    #[inline]
    fn next(&mut self) -> bool {
        std::mem::replace(&mut self.state, State::Rest) == State::First
    }

    /// Writes the comma before the next element, if it is not the first.
    #[inline]
    fn comma(&mut self) {
        if !self.next() {
            self.out.put(b",");
        }
    }

    #[inline]
    fn end(self) -> Result {
        if self.state != State::Empty {
            self.out.put(self.close);
        }
        self.out.put(self.after);
        Ok(())
    }
}

/// An array (a sequence, a tuple, a tuple variant's fields).
struct Seq<'a, O>(Open<'a, O>);

impl<O: Out> Seq<'_, O> {
    #[inline]
    fn element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.0.comma();
        value.serialize(Ser {
            out: &mut *self.0.out,
        })
    }
}

macro_rules! seq_impls {
    ($($trait:ident::$method:ident),*) => {$(
        impl<O: Out> ser::$trait for Seq<'_, O> {
            type Ok = ();
            type Error = Error;

            #[inline]
            fn $method<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
                self.element(value)
            }

            #[inline]
            fn end(self) -> Result {
                self.0.end()
            }
        }
    )*};
}

seq_impls!(
    SerializeSeq::serialize_element,
    SerializeTuple::serialize_element,
    SerializeTupleStruct::serialize_field,
    SerializeTupleVariant::serialize_field
);

/// An object (a map, a struct, a struct variant's fields), or one of serde_json's raw values.
struct Map<'a, O> {
    open: Open<'a, O>,
    /// The token of a struct that serde_json writes as it is (see [`RAW_TOKENS`]).
    raw: Option<&'static str>,
}

impl<O: Out> Map<'_, O> {
    #[inline]
    fn field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result {
        if let Some(token) = self.raw {
            if key != token {
                return Err(ser::Error::custom(format!("invalid {token}")));
            }
            return value.serialize(RawStr {
                out: &mut *self.open.out,
            });
        }
        // `,"key":` in three writes rather than five when the key needs no escapes (a field
        // name hardly ever does).
        if first_escape(key.as_bytes()).is_some() {
            self.open.comma();
            write_str(self.open.out, key);
            self.open.out.put(b":");
        } else {
            let open: &[u8] = if self.open.next() { b"\"" } else { b",\"" };
            self.open.out.put(open);
            self.open.out.put(key.as_bytes());
            self.open.out.put(b"\":");
        }
        value.serialize(Ser {
            out: &mut *self.open.out,
        })
    }
}

impl<O: Out> ser::SerializeMap for Map<'_, O> {
    type Ok = ();
    type Error = Error;

    #[inline]
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result {
        self.open.comma();
        key.serialize(Key {
            out: &mut *self.open.out,
        })
    }

    #[inline]
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result {
        self.open.out.put(b":");
        value.serialize(Ser {
            out: &mut *self.open.out,
        })
    }

    #[inline]
    fn end(self) -> Result {
        self.open.end()
    }
}

/// A struct's fields and a struct variant's are written alike.
macro_rules! struct_impls {
    ($($trait:ident),*) => {$(
        impl<O: Out> ser::$trait for Map<'_, O> {
            type Ok = ();
            type Error = Error;

            #[inline]
            fn serialize_field<T: Serialize + ?Sized>(
                &mut self,
                key: &'static str,
                value: &T,
            ) -> Result {
                self.field(key, value)
            }

            #[inline]
            fn end(self) -> Result {
                self.open.end()
            }
        }
    )*};
}

struct_impls!(SerializeStruct, SerializeStructVariant);

fn key_must_be_a_string() -> Error {
    ser::Error::custom("key must be a string")
}

/// A map's key, as serde_json writes it: a string, or a number or `bool` in quotes.
struct Key<'a, O> {
    out: &'a mut O,
}

impl<O: Out> Key<'_, O> {
    /// `"` + what serde_json writes for `value` + `"`.
    #[inline]
    fn quoted(
        self,
        value: impl FnOnce(&mut serde_json::Serializer<Append<'_, O>>) -> Result,
    ) -> Result {
        self.out.put(b"\"");
        value(&mut json(self.out))?;
        self.out.put(b"\"");
        Ok(())
    }
}

/// Quotes what serde_json writes for the scalar (as its map-key serializer does).
macro_rules! quoted {
    ($($method:ident($ty:ty);)*) => {$(
        #[inline]
        fn $method(self, v: $ty) -> Result {
            self.quoted(|json| json.$method(v))
        }
    )*};
}

/// Methods that answer `$error()`.
macro_rules! refused {
    ($error:ident; $($method:ident($($arg:ty),*) -> $ret:ty;)*) => {$(
        fn $method(self, $(_: $arg),*) -> Result<$ret> {
            Err($error())
        }
    )*};
}

/// What a serializer of strings and scalars only has: compounds refused as a map key refuses
/// them, answering `$error()`.
macro_rules! refused_like_keys {
    ($error:ident) => {
        type Ok = ();
        type Error = Error;
        type SerializeSeq = ser::Impossible<(), Error>;
        type SerializeTuple = ser::Impossible<(), Error>;
        type SerializeTupleStruct = ser::Impossible<(), Error>;
        type SerializeTupleVariant = ser::Impossible<(), Error>;
        type SerializeMap = ser::Impossible<(), Error>;
        type SerializeStruct = ser::Impossible<(), Error>;
        type SerializeStructVariant = ser::Impossible<(), Error>;

        fn serialize_newtype_variant<T: Serialize + ?Sized>(
            self,
            _: &'static str,
            _: u32,
            _: &'static str,
            _: &T,
        ) -> Result {
            Err($error())
        }

        refused! { $error;
            serialize_bytes(&[u8]) -> ();
            serialize_unit() -> ();
            serialize_none() -> ();
            serialize_unit_struct(&'static str) -> ();
            serialize_seq(Option<usize>) -> Self::SerializeSeq;
            serialize_tuple(usize) -> Self::SerializeTuple;
            serialize_tuple_struct(&'static str, usize) -> Self::SerializeTupleStruct;
            serialize_tuple_variant(&'static str, u32, &'static str, usize) -> Self::SerializeTupleVariant;
            serialize_map(Option<usize>) -> Self::SerializeMap;
            serialize_struct(&'static str, usize) -> Self::SerializeStruct;
            serialize_struct_variant(&'static str, u32, &'static str, usize) -> Self::SerializeStructVariant;
        }
    };
}

impl<O: Out> Serializer for Key<'_, O> {
    quoted! {
        serialize_bool(bool);
        serialize_i8(i8);
        serialize_i16(i16);
        serialize_i32(i32);
        serialize_i64(i64);
        serialize_i128(i128);
        serialize_u8(u8);
        serialize_u16(u16);
        serialize_u32(u32);
        serialize_u64(u64);
        serialize_u128(u128);
    }

    fn serialize_f32(self, v: f32) -> Result {
        if !v.is_finite() {
            return Err(float_key_must_be_finite());
        }
        self.quoted(|json| json.serialize_f32(v))
    }

    fn serialize_f64(self, v: f64) -> Result {
        if !v.is_finite() {
            return Err(float_key_must_be_finite());
        }
        self.quoted(|json| json.serialize_f64(v))
    }

    refused_like_keys! { key_must_be_a_string }

    string_methods!();
}

fn float_key_must_be_finite() -> Error {
    ser::Error::custom("float key must be finite (got NaN or +/-inf)")
}

/// The value of one of serde_json's raw structs: a string written as it is.
struct RawStr<'a, O> {
    out: &'a mut O,
}

impl<O: Out> Serializer for RawStr<'_, O> {
    fn serialize_str(self, v: &str) -> Result {
        self.out.put(v.as_bytes());
        Ok(())
    }

    fn serialize_some<T: Serialize + ?Sized>(self, _: &T) -> Result {
        Err(not_raw())
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, _: &T) -> Result {
        Err(not_raw())
    }

    refused! { not_raw;
        serialize_bool(bool) -> ();
        serialize_i8(i8) -> ();
        serialize_i16(i16) -> ();
        serialize_i32(i32) -> ();
        serialize_i64(i64) -> ();
        serialize_u8(u8) -> ();
        serialize_u16(u16) -> ();
        serialize_u32(u32) -> ();
        serialize_u64(u64) -> ();
        serialize_f32(f32) -> ();
        serialize_f64(f64) -> ();
        serialize_char(char) -> ();
        serialize_unit_variant(&'static str, u32, &'static str) -> ();
    }

    refused_like_keys! { not_raw }
}

fn not_raw() -> Error {
    ser::Error::custom("expected a raw JSON string")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::Serialize;
    use serde_json::Value;

    use bytes::BytesMut;

    use super::*;
    use crate::codec::{Codec, Json};

    /// Ours against serde_json's `to_vec`: the same bytes, or errors with the same text.
    fn same<T: Serialize + ?Sized + std::fmt::Debug>(value: &T) {
        let theirs = serde_json::to_vec(value).map_err(|e| e.to_string());
        let mut vec = Vec::new();
        let ours = write(value, &mut vec)
            .map(|()| vec)
            .map_err(|e| e.to_string());
        assert_eq!(
            ours.as_ref().map(|b| String::from_utf8_lossy(b)),
            theirs.as_ref().map(|b| String::from_utf8_lossy(b)),
            "{value:?}"
        );
        let mut bytes = BytesMut::from(&b"kept"[..]);
        if write(value, &mut bytes).is_ok() {
            assert_eq!(&bytes[4..], &ours.unwrap()[..], "{value:?} into BytesMut");
            assert_eq!(&bytes[..4], b"kept");
        }
    }

    #[test]
    fn the_scan_finds_the_first_byte_json_escapes_wherever_it_is() {
        for len in 0..=20 {
            let plain = "a".repeat(len);
            assert_eq!(first_escape(plain.as_bytes()), None, "{len}");
            for at in 0..len {
                for b in (0u8..0x20).chain([b'"', b'\\']) {
                    let mut bytes = plain.clone().into_bytes();
                    bytes[at] = b;
                    assert_eq!(first_escape(&bytes), Some(at), "{len} {at} {b:#x}");
                    // A later one does not move it.
                    bytes[len - 1] = b'"';
                    assert_eq!(first_escape(&bytes), Some(at), "{len} {at} {b:#x}");
                }
                for b in [
                    0x20u8, b'!', b'#', b'/', b'[', b']', 0x7f, 0x80, 0xbc, 0xdc, 0xe2, 0xff,
                ] {
                    let mut bytes = plain.clone().into_bytes();
                    bytes[at] = b;
                    assert_eq!(first_escape(&bytes), None, "{len} {at} {b:#x}");
                }
            }
        }
    }

    #[derive(Debug, Serialize)]
    struct Unit;

    #[derive(Debug, Serialize)]
    struct Newtype(String);

    #[derive(Debug, Serialize)]
    struct Pair(i32, Option<String>);

    #[derive(Debug, Serialize)]
    enum Kind {
        Plain,
        Wrapped(String),
        Two(u8, char),
        Named { at: f64, why: Option<Vec<u8>> },
    }

    #[derive(Debug, Serialize)]
    #[serde(rename_all = "kebab-case")]
    struct Everything {
        text: String,
        escaped: &'static str,
        ch: char,
        quote_char: char,
        small: i8,
        big: i128,
        huge: u128,
        float: f32,
        double: f64,
        nan: f64,
        flag: bool,
        none: Option<u8>,
        unit: (),
        unit_struct: Unit,
        newtype: Newtype,
        pair: Pair,
        empty_seq: Vec<u8>,
        empty_map: BTreeMap<String, u8>,
        kinds: Vec<Kind>,
        #[serde(with = "as_bytes")]
        bytes: Vec<u8>,
        int_keys: BTreeMap<i64, bool>,
        bool_keys: BTreeMap<bool, u8>,
        char_keys: BTreeMap<char, u8>,
        newtype_keys: BTreeMap<NewKey, u8>,
        unit_variant_keys: BTreeMap<UnitKey, u8>,
        float_keys: Vec<Entry<f64>>,
        #[serde(flatten)]
        extra: BTreeMap<String, Value>,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
        shown: Shown,
    }

    mod as_bytes {
        pub(super) fn serialize<S: serde::Serializer>(
            v: &[u8],
            s: S,
        ) -> std::result::Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }

    #[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
    struct NewKey(u16);

    #[derive(Debug, Serialize, PartialEq, Eq, PartialOrd, Ord)]
    enum UnitKey {
        North,
        South,
    }

    /// A map with one key, of any type.
    #[derive(Debug)]
    struct Entry<K>(K);

    impl<K: Serialize> Serialize for Entry<K> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry(&self.0, &1)?;
            m.end()
        }
    }

    /// Serialized through `collect_str`.
    #[derive(Debug)]
    struct Shown(&'static str);

    impl Serialize for Shown {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            s.collect_str(&format_args!("shown: {}", self.0))
        }
    }

    #[test]
    fn every_kind_of_value_is_written_as_serde_json_writes_it() {
        let everything = Everything {
            text: "plain text, long enough to take several words".into(),
            escaped: "tab\there \"quoted\" back\\slash \u{1} \u{7f} ünï 😀 \n",
            ch: 'é',
            quote_char: '"',
            small: -8,
            big: i128::MIN,
            huge: u128::MAX,
            float: 1.5e-7,
            double: -0.0,
            nan: f64::NAN,
            flag: true,
            none: None,
            unit: (),
            unit_struct: Unit,
            newtype: Newtype("inner \\ value".into()),
            pair: Pair(-1, Some("x".into())),
            empty_seq: vec![],
            empty_map: BTreeMap::new(),
            kinds: vec![
                Kind::Plain,
                Kind::Wrapped("w\"".into()),
                Kind::Two(7, '\n'),
                Kind::Named {
                    at: f64::INFINITY,
                    why: Some(vec![1, 2]),
                },
                Kind::Named { at: 2.0, why: None },
            ],
            bytes: vec![0, 1, 255],
            int_keys: BTreeMap::from([(-3, true), (i64::MAX, false)]),
            bool_keys: BTreeMap::from([(false, 0), (true, 1)]),
            char_keys: BTreeMap::from([('"', 1), ('k', 2)]),
            newtype_keys: BTreeMap::from([(NewKey(9), 1)]),
            unit_variant_keys: BTreeMap::from([(UnitKey::North, 1), (UnitKey::South, 2)]),
            float_keys: vec![Entry(0.25), Entry(-1e300)],
            extra: BTreeMap::from([("flattened".into(), serde_json::json!({"a": [1, "b"]}))]),
            skipped: None,
            shown: Shown("\"displayed\""),
        };
        same(&everything);
        same("");
        same(&'x');
        same(&Some(Kind::Plain));
    }

    #[test]
    fn errors_are_serde_jsons() {
        same(&vec![Entry(f64::NAN)]);
        same(&Entry(f32::INFINITY));
        same(&BTreeMap::from([(vec![1u8], 1)]));
        same(&BTreeMap::from([((), 1)]));
        same(&BTreeMap::from([(Some(3u8), 1)]));
        same(&Entry(Kind::Wrapped("k".into())));
        same(&Entry(Kind::Named { at: 1.0, why: None }));
        same(&Entry(Kind::Two(1, 'a')));
        same(&Entry(Unit));
        same(&Entry(Shown("a key")));
        same(&Entry(Kind::Plain));
        same(&Entry(Pair(1, None)));
        same(&Entry(BTreeMap::from([(1, 2)])));
        same(&Entry(1u128));
        same(&Entry(-1.5f32));

        /// Fails half-way, after writing part of itself.
        #[derive(Debug)]
        struct Fails;
        impl Serialize for Fails {
            fn serialize<S: serde::Serializer>(
                &self,
                _: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                Err(serde::ser::Error::custom("refused"))
            }
        }
        same(&vec![Some(Fails)]);
    }

    /// Announces a length of 0, then has elements all the same (an iterator whose size hint
    /// is wrong, say): serde_json writes the brackets at once and the elements after them.
    #[derive(Debug)]
    struct Misannounced;

    impl Serialize for Misannounced {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            use serde::ser::{
                SerializeMap, SerializeSeq, SerializeStruct, SerializeTuple, SerializeTupleVariant,
            };
            struct Seq;
            impl Serialize for Seq {
                fn serialize<S: serde::Serializer>(
                    &self,
                    s: S,
                ) -> std::result::Result<S::Ok, S::Error> {
                    let mut seq = s.serialize_seq(Some(0))?;
                    seq.serialize_element(&1)?;
                    seq.serialize_element(&2)?;
                    seq.end()
                }
            }
            struct Map;
            impl Serialize for Map {
                fn serialize<S: serde::Serializer>(
                    &self,
                    s: S,
                ) -> std::result::Result<S::Ok, S::Error> {
                    let mut map = s.serialize_map(Some(0))?;
                    map.serialize_entry("a", &1)?;
                    map.end()
                }
            }
            struct Variants;
            impl Serialize for Variants {
                fn serialize<S: serde::Serializer>(
                    &self,
                    s: S,
                ) -> std::result::Result<S::Ok, S::Error> {
                    let mut tuple = s.serialize_tuple(2)?;
                    let none: [u8; 0] = [];
                    tuple.serialize_element(&none)?;
                    tuple.serialize_element(&TupleVariant)?;
                    tuple.end()
                }
            }
            struct TupleVariant;
            impl Serialize for TupleVariant {
                fn serialize<S: serde::Serializer>(
                    &self,
                    s: S,
                ) -> std::result::Result<S::Ok, S::Error> {
                    let mut v = s.serialize_tuple_variant("E", 0, "T", 0)?;
                    v.serialize_field(&true)?;
                    v.end()
                }
            }
            let mut st = s.serialize_struct("Misannounced", 0)?;
            st.serialize_field("seq", &Seq)?;
            st.serialize_field("map", &Map)?;
            st.serialize_field("variants", &Variants)?;
            st.serialize_field("struct_variant", &StructVariant)?;
            st.end()
        }
    }

    struct StructVariant;

    impl Serialize for StructVariant {
        fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
            use serde::ser::SerializeStructVariant;
            let mut v = s.serialize_struct_variant("E", 1, "S", 0)?;
            v.serialize_field("a", &1)?;
            v.end()
        }
    }

    impl std::fmt::Debug for StructVariant {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("StructVariant")
        }
    }

    #[test]
    fn lengths_announced_wrong_are_written_as_serde_json_writes_them() {
        same(&Misannounced);
        same(&StructVariant);
        same(&Entry(Misannounced));
    }

    /// Keys of every integer width, bytes as a key, and a field name to escape.
    #[test]
    fn every_kind_of_key_is_written_as_serde_json_writes_it() {
        #[derive(Debug, Serialize)]
        struct Odd {
            #[serde(rename = "quote\"d\tname")]
            quoted: u8,
            #[serde(rename = "ünï")]
            unicode: u8,
        }
        same(&Odd {
            quoted: 1,
            unicode: 2,
        });
        same(&Entry(-8i8));
        same(&Entry(-16i16));
        same(&Entry(-32i32));
        same(&Entry(8u8));
        same(&Entry(16u16));
        same(&Entry(32u32));
        same(&Entry(i128::MIN));
        same(&Entry(true));
        same(&Entry('\n'));
        same(&Entry("key \"quoted\""));

        #[derive(Debug)]
        struct Bytes;
        impl Serialize for Bytes {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_bytes(b"key")
            }
        }
        same(&Entry(Bytes));
    }

    /// Characters to escape next to each other and to multi-byte characters, within one word
    /// and across words.
    #[test]
    fn escapes_among_other_characters_are_written_as_serde_json_writes_them() {
        for text in [
            "é\"ü\n",
            "\u{1}\u{1f}\"\\",
            "😀\t😀\r😀",
            "abcdefg\"hijklmn\\opqrstu\u{7}",
            "\u{8}\u{c}\u{b}\u{7f}\u{80}\u{ff}",
            "ünï\\cödé",
        ] {
            same(text);
            for cut in 0..text.len() {
                if text.is_char_boundary(cut) {
                    same(&text[cut..]);
                }
            }
        }
    }

    /// serde_json's `RawValue` (its feature `raw_value`, on in this crate's tests) is written as
    /// it is, alone and as a field.
    #[test]
    fn a_raw_value_is_written_as_serde_json_writes_it() {
        use serde_json::value::RawValue;
        let raw = RawValue::from_string("[1, {\"a\" : 2}]".into()).unwrap();
        same(&raw);
        #[derive(Debug, Serialize)]
        struct Holder<'a> {
            before: u8,
            raw: &'a RawValue,
            after: Vec<&'a RawValue>,
        }
        same(&Holder {
            before: 1,
            raw: &raw,
            after: vec![&raw, &raw],
        });
        assert_eq!(
            String::from_utf8(Json::encode(&raw).unwrap()).unwrap(),
            "[1, {\"a\" : 2}]"
        );
    }

    /// A struct named as serde_json's raw values are is written as serde_json writes it.
    #[test]
    fn serde_jsons_raw_value_tokens_follow_serde_json() {
        #[derive(Debug)]
        struct Token(&'static str);
        impl Serialize for Token {
            fn serialize<S: serde::Serializer>(
                &self,
                s: S,
            ) -> std::result::Result<S::Ok, S::Error> {
                use serde::ser::SerializeStruct;
                let mut st = s.serialize_struct(self.0, 1)?;
                st.serialize_field(self.0, "[1, 2]")?;
                st.end()
            }
        }
        for token in RAW_TOKENS {
            same(&Token(token));
        }
    }

    fn values() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            any::<String>().prop_map(Value::String),
            "[a-z\"\\\\\u{0}-\u{1f}é😀 ]{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                prop::collection::btree_map(any::<String>(), inner, 0..8)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn any_json_value_is_written_as_serde_json_writes_it(value in values()) {
            same(&value);
        }

        #[test]
        fn any_string_is_written_as_serde_json_writes_it(text in any::<String>(), ascii in "[ -~\t\n]{0,70}") {
            same(&text);
            same(&ascii);
            same(&BTreeMap::from([(text.clone(), ascii.clone())]));
        }
    }
}
