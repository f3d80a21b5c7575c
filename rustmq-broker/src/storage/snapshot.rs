//! Producer-state snapshots: the idempotent producer table as it stood at a segment's base
//! offset, written when the segment before it is sealed.
//!
//! Opening a log replays batch headers into the producer table only from the latest usable
//! snapshot on; the sealed segments below it are opened from their index files, reading only
//! their last few batches (`Segment::open_indexed`). Without snapshots, an open read every
//! batch header of every segment: for batches smaller than the scan's 16 KiB read-ahead, the
//! whole log (as Kafka, which writes a snapshot at every roll for the same reason).
//!
//! A clean close writes one more, at the end of the log, with a marker
//! ([`CleanShutdown`]): the next open then replays nothing and opens the active segment from its
//! index files too, so that it reads only the last few batches of each segment.
//!
//! A snapshot is only an optimisation: one that is missing, damaged or does not fit the
//! segments found is ignored, and the open replays from an earlier one or from the start. A
//! roll removes the snapshots below the segment it seals (the roll's own snapshot may be of a
//! segment that never got a batch, which the open does not take, so the one before stays), a
//! close those inside the active segment, and removing a segment's files removes its snapshot.
//!
//! `dir/{offset:020}.snapshot`, big-endian:
//!
//! ```text
//! magic "RMQPSNP2" | offset u64 | producer count u64
//!   | per producer: id i64 | epoch i16 | last sequence i32 | last write (ms) i64 | n u8
//!                   | n x (first sequence i32 | last sequence i32 | base offset u64)
//! | crc32c u32 of everything before it
//! ```

use std::fs;
use std::io;
use std::path::Path;

use bytes::Bytes;
use rustmq_protocol::codec::Reader;
use tracing::warn;

use super::index::{read_optional, write_atomic};
use super::producer_state::ProducerTable;
use super::segment::segment_path;

pub(crate) const SNAPSHOT_EXT: &str = "snapshot";
const MAGIC: &[u8; 8] = b"RMQPSNP2";
/// Magic, offset and count before the entries, the CRC after them.
const FRAME_LEN: usize = 8 + 8 + 8 + 4;

/// The snapshot file's bytes for `table` at `offset`.
pub(crate) fn encode(offset: u64, table: &ProducerTable) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_LEN + table.encoded_len_bound());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&offset.to_be_bytes());
    table.encode_entries(&mut out);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

/// The table in a snapshot file's `bytes`, if they are a whole snapshot at `offset`.
fn decode(bytes: Vec<u8>, offset: u64, now: i64) -> Result<ProducerTable, &'static str> {
    if bytes.len() < FRAME_LEN || &bytes[..8] != MAGIC {
        return Err("not a producer snapshot");
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_be_bytes(crc.try_into().expect("4 bytes")) {
        return Err("checksum mismatch");
    }
    let mut r = Reader::new(Bytes::from(bytes));
    r.bytes(MAGIC.len()).map_err(|_| "truncated")?;
    if r.u64().map_err(|_| "truncated")? != offset {
        return Err("its offset differs from its file name");
    }
    let table = ProducerTable::decode_entries(&mut r, now)?;
    if r.remaining() != 4 {
        return Err("trailing bytes");
    }
    Ok(table)
}

/// Writes the snapshot of `table` at `offset` (atomically, synced; the directory entry is
/// made durable by the caller's next directory sync).
pub(crate) fn write(dir: &Path, offset: u64, table: &ProducerTable) -> io::Result<()> {
    write_encoded(dir, offset, &encode(offset, table))
}

/// [`write`] of a snapshot [`encode`]d earlier (a roll encodes it under the append lock and
/// writes it after).
pub(crate) fn write_encoded(dir: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
    write_atomic(&segment_path(dir, offset, SNAPSHOT_EXT), bytes)
}

/// Offsets of the snapshots in `dir`, oldest first.
pub(crate) fn list(dir: &Path) -> io::Result<Vec<u64>> {
    let mut offsets = Vec::new();
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".snapshot")) else {
            continue;
        };
        if let (20, Ok(offset)) = (stem.len(), stem.parse::<u64>()) {
            offsets.push(offset);
        }
    }
    offsets.sort_unstable();
    Ok(offsets)
}

/// The latest snapshot in `dir` that `usable` accepts and that reads back whole, with its
/// offset; its producers were last active when they last wrote before it, and not after `now`
/// (see [`ProducerTable::decode_entries`]). Damaged snapshots are skipped with a warning.
#[cfg(test)]
pub(crate) fn load_latest(
    dir: &Path,
    now: i64,
    usable: impl Fn(u64) -> bool,
) -> io::Result<Option<(u64, ProducerTable)>> {
    load_latest_of(dir, &list(dir)?, now, usable)
}

/// [`load_latest`] among `offsets`, the snapshots [`list`]ed in `dir` (an open lists them once).
pub(crate) fn load_latest_of(
    dir: &Path,
    offsets: &[u64],
    now: i64,
    usable: impl Fn(u64) -> bool,
) -> io::Result<Option<(u64, ProducerTable)>> {
    for &offset in offsets.iter().rev().filter(|&&o| usable(o)) {
        let path = segment_path(dir, offset, SNAPSHOT_EXT);
        let bytes = match read_optional(&path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => continue,
            Err(err) => {
                warn!(snapshot = %path.display(), %err, "ignoring an unreadable producer snapshot");
                continue;
            }
        };
        match decode(bytes, offset, now) {
            Ok(table) => return Ok(Some((offset, table))),
            Err(reason) => warn!(snapshot = %path.display(), reason,
                "ignoring a damaged producer snapshot"),
        }
    }
    Ok(None)
}

/// Removes the snapshots in `dir` whose offset `unwanted` picks.
pub(crate) fn remove(dir: &Path, unwanted: impl Fn(u64) -> bool) -> io::Result<()> {
    for offset in list(dir)?.into_iter().filter(|&o| unwanted(o)) {
        match fs::remove_file(segment_path(dir, offset, SNAPSHOT_EXT)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Removes the snapshots in `dir` below the latest one at or below `offset` (none when there is
/// no such one).
pub(crate) fn remove_below_latest_at(dir: &Path, offset: u64) -> io::Result<()> {
    let offsets = list(dir)?;
    let Some(&keep) = offsets.iter().rev().find(|&&o| o <= offset) else {
        return Ok(());
    };
    remove(dir, |o| o < keep)
}

/// The marker a clean close leaves: the log ended at `next_offset`, its active segment (based
/// at `active_base`) was `active_size` bytes long, synced, with its index files written, and a
/// snapshot at `next_offset` holds the producers; its first batch was appended at
/// `first_append_ms` (the broker's clock, for the time-based roll). The next open then reads no
/// batch but the last few of each segment; it removes the marker first, so that a crash after
/// it appended leaves none behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CleanShutdown {
    pub(crate) active_base: u64,
    pub(crate) active_size: u64,
    pub(crate) next_offset: u64,
    pub(crate) first_append_ms: i64,
}

/// The marker's file in the partition directory.
pub(crate) const CLEAN_SHUTDOWN: &str = "clean-shutdown";
const CLEAN_MAGIC: &[u8; 8] = b"RMQCLEAN";
const CLEAN_LEN: usize = 8 + 4 * 8 + 4;

/// Writes the clean-shutdown marker (atomically, synced; the caller syncs the directory).
pub(crate) fn write_clean(dir: &Path, clean: CleanShutdown) -> io::Result<()> {
    let mut out = Vec::with_capacity(CLEAN_LEN);
    out.extend_from_slice(CLEAN_MAGIC);
    let first_append = clean.first_append_ms as u64;
    for field in [
        clean.active_base,
        clean.active_size,
        clean.next_offset,
        first_append,
    ] {
        out.extend_from_slice(&field.to_be_bytes());
    }
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    write_atomic(&dir.join(CLEAN_SHUTDOWN), &out)
}

/// Reads and removes the clean-shutdown marker, durably (the directory is synced when there
/// was one): `None` when there is none, or it is damaged (with a warning).
pub(crate) fn take_clean(dir: &Path) -> io::Result<Option<CleanShutdown>> {
    let path = dir.join(CLEAN_SHUTDOWN);
    let Some(bytes) = read_optional(&path)? else {
        return Ok(None);
    };
    fs::remove_file(&path)?;
    super::segment::sync_dir(dir)?;
    let field =
        |i: usize| u64::from_be_bytes(bytes[8 + 8 * i..16 + 8 * i].try_into().expect("8 bytes"));
    let whole = bytes.len() == CLEAN_LEN
        && &bytes[..8] == CLEAN_MAGIC
        && crc32c::crc32c(&bytes[..CLEAN_LEN - 4]).to_be_bytes() == bytes[CLEAN_LEN - 4..];
    if !whole {
        warn!(marker = %path.display(), "ignoring a damaged clean-shutdown marker");
        return Ok(None);
    }
    Ok(Some(CleanShutdown {
        active_base: field(0),
        active_size: field(1),
        next_offset: field(2),
        first_append_ms: field(3) as i64,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::test_util::idem;
    use crate::storage::StorageError;
    use rustmq_protocol::BatchHeader;

    fn header(producer: (i64, i16, i32), count: u32) -> BatchHeader {
        BatchHeader::parse(&idem("x", count, producer)).unwrap()
    }

    /// A table with a producer whose ring of recent batches wrapped, one with two batches and
    /// one at a later epoch.
    fn table() -> ProducerTable {
        let mut t = ProducerTable::default();
        let mut offset = 0;
        for i in 0..7 {
            t.record(&header((1, 0, i * 2), 2), offset, 5);
            offset += 2;
        }
        t.record(&header((2, 3, 0), 1), offset, 5);
        t.record(&header((2, 3, 1), 4), offset + 1, 5);
        t.record(&header((3, 9, 0), 1), offset + 5, 5);
        t
    }

    #[test]
    fn a_snapshot_reads_back_the_same_sequence_state() {
        let dir = tempfile::tempdir().unwrap();
        let t = table();
        write(dir.path(), 42, &t).unwrap();
        let (offset, back) = load_latest(dir.path(), 77, |_| true).unwrap().unwrap();
        assert_eq!(offset, 42);
        assert_eq!(back.len(), 3);
        // Last written at 5, not at the load (77): their expiration goes on from there.
        assert!(back.active_since(1, 5) && !back.active_since(1, 6));
        let (_, clock_back) = load_latest(dir.path(), 3, |_| true).unwrap().unwrap();
        assert!(clock_back.active_since(1, 3) && !clock_back.active_since(1, 4));
        // Every recent batch is still a duplicate, with its offset; what came before the ring
        // and what did not happen are not.
        for i in 2..7 {
            let h = header((1, 0, i * 2), 2);
            assert!(
                matches!(back.check(&h), Err(StorageError::DuplicateSequence { base_offset }) if base_offset == i as u64 * 2),
                "batch {i}"
            );
        }
        assert!(matches!(
            back.check(&header((1, 0, 0), 2)),
            Err(StorageError::OutOfOrderSequence { .. })
        ));
        assert!(back.check(&header((1, 0, 14), 1)).is_ok());
        assert!(matches!(
            back.check(&header((2, 3, 1), 4)),
            Err(StorageError::DuplicateSequence { base_offset: 15 })
        ));
        assert!(back.check(&header((2, 3, 5), 1)).is_ok());
        assert!(matches!(
            back.check(&header((3, 8, 0), 1)),
            Err(StorageError::InvalidProducerEpoch { current: 9, .. })
        ));
        let mut back = back;
        assert_eq!(back.expire(1_005, 500), 3, "idle since 5, past 500 ms");
    }

    #[test]
    fn damaged_or_misnamed_snapshots_are_skipped_for_an_earlier_one() {
        let dir = tempfile::tempdir().unwrap();
        let t = table();
        write(dir.path(), 10, &t).unwrap();
        write(dir.path(), 20, &t).unwrap();
        let latest = segment_path(dir.path(), 20, SNAPSHOT_EXT);
        let mut bytes = fs::read(&latest).unwrap();
        bytes[30] ^= 1;
        fs::write(&latest, &bytes).unwrap();
        let (offset, _) = load_latest(dir.path(), 0, |_| true).unwrap().unwrap();
        assert_eq!(offset, 10, "a flipped bit fails the checksum");
        fs::copy(segment_path(dir.path(), 10, SNAPSHOT_EXT), &latest).unwrap();
        let (offset, _) = load_latest(dir.path(), 0, |_| true).unwrap().unwrap();
        assert_eq!(
            offset, 10,
            "a snapshot under another offset's name is refused"
        );
        let (offset, _) = load_latest(dir.path(), 0, |o| o < 10).unwrap().unzip();
        assert_eq!(offset, None, "nothing usable");
        for len in [0, 8, FRAME_LEN - 1, 40] {
            assert!(decode(encode(10, &t)[..len].to_vec(), 10, 0).is_err());
        }
    }

    #[test]
    fn snapshots_are_listed_in_offset_order_and_removed_by_offset() {
        let dir = tempfile::tempdir().unwrap();
        for offset in [5, 1, 9, 7] {
            write(dir.path(), offset, &ProducerTable::default()).unwrap();
        }
        assert_eq!(list(dir.path()).unwrap(), [1, 5, 7, 9]);
        remove(dir.path(), |o| o < 5).unwrap();
        assert_eq!(list(dir.path()).unwrap(), [5, 7, 9]);
        remove_below_latest_at(dir.path(), 8).unwrap();
        assert_eq!(
            list(dir.path()).unwrap(),
            [7, 9],
            "the latest at or below 8 is kept"
        );
        remove_below_latest_at(dir.path(), 6).unwrap();
        assert_eq!(list(dir.path()).unwrap(), [7, 9], "none at or below 6");
    }

    #[test]
    fn the_clean_shutdown_marker_is_read_once_and_damage_ignores_it() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(take_clean(dir.path()).unwrap(), None);
        let clean = CleanShutdown {
            active_base: 40,
            active_size: 4_000,
            next_offset: 77,
            first_append_ms: -5,
        };
        write_clean(dir.path(), clean).unwrap();
        assert_eq!(take_clean(dir.path()).unwrap(), Some(clean));
        assert_eq!(take_clean(dir.path()).unwrap(), None, "taken");
        write_clean(dir.path(), clean).unwrap();
        let path = dir.path().join(CLEAN_SHUTDOWN);
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert_eq!(take_clean(dir.path()).unwrap(), None);
        assert!(!path.exists(), "a damaged marker is removed too");
    }
}
