//! The byte format of a vertex subtask's snapshot (what [`crate::task::VertexInstance::snapshot`]
//! returns and [`crate::task::VertexInstance::restore`] reads back).
//!
//! ```text
//! snapshot := "RFCK" version:u16 count:u32 section{count}        (integers little-endian)
//! section  := node:u32 len:u64 bytes[len]                         (one per stateful operator)
//! ```
//!
//! `node` is the operator's node id in the [`crate::StreamGraph`] (deterministic for the same
//! build function and arguments). A section's bytes belong to the operator: a source's or sink's
//! own state, or the keyed state of a `reduce`, `sum` or `process` operator (entry maps encoded
//! with [`crate::Codec`]). Decoding never panics: every length is checked against the input.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;

use rustc_hash::FxHashMap;

use crate::codec::{read_varint, write_varint};
use crate::Codec;

/// The first bytes of every snapshot.
pub(crate) const MAGIC: &[u8; 4] = b"RFCK";
/// The format version this build writes and reads.
/// 2: keyed `process` sections hold timers after the keyed state (and window operators exist).
pub(crate) const VERSION: u16 = 2;
const HEADER_LEN: usize = 4 + 2 + 4;
const SECTION_HEADER_LEN: usize = 4 + 8;

/// Builds a snapshot, one section per stateful operator.
pub(crate) struct SnapshotWriter {
    buf: Vec<u8>,
    nodes: Vec<u32>,
}

impl SnapshotWriter {
    pub(crate) fn new() -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(MAGIC);
        buf.extend_from_slice(&VERSION.to_le_bytes());
        buf.extend_from_slice(&0u32.to_le_bytes());
        SnapshotWriter {
            buf,
            nodes: Vec::new(),
        }
    }

    /// Appends the section of operator `node`, whose bytes `write` appends to the buffer.
    ///
    /// # Errors
    /// The error of `write`, or a second section for the same node (an internal error).
    pub(crate) fn section(
        &mut self,
        node: u32,
        write: impl FnOnce(&mut Vec<u8>) -> Result<(), String>,
    ) -> Result<(), String> {
        if self.nodes.contains(&node) {
            return Err(format!(
                "internal error: two snapshot sections for operator {node}"
            ));
        }
        self.nodes.push(node);
        self.buf.extend_from_slice(&node.to_le_bytes());
        let len_at = self.buf.len();
        self.buf.extend_from_slice(&0u64.to_le_bytes());
        let start = self.buf.len();
        write(&mut self.buf)?;
        let len = (self.buf.len() - start) as u64;
        if let Some(slot) = self.buf.get_mut(len_at..start) {
            slot.copy_from_slice(&len.to_le_bytes());
        }
        Ok(())
    }

    /// The finished snapshot.
    pub(crate) fn finish(mut self) -> Vec<u8> {
        let count = self.nodes.len() as u32;
        if let Some(slot) = self.buf.get_mut(6..HEADER_LEN) {
            slot.copy_from_slice(&count.to_le_bytes());
        }
        self.buf
    }
}

/// A parsed snapshot: the sections by node id, taken one by one while a chain restores.
#[derive(Debug)]
pub(crate) struct SnapshotSections<'a> {
    sections: BTreeMap<u32, &'a [u8]>,
}

fn split<'a>(input: &mut &'a [u8], n: usize, what: &str) -> Result<&'a [u8], String> {
    if input.len() < n {
        return Err(format!(
            "malformed snapshot: truncated {what} (needs {n} bytes, {} left)",
            input.len()
        ));
    }
    let (head, tail) = input.split_at(n);
    *input = tail;
    Ok(head)
}

fn fixed<const N: usize>(input: &mut &[u8], what: &str) -> Result<[u8; N], String> {
    let bytes = split(input, N, what)?;
    let mut array = [0u8; N];
    array.copy_from_slice(bytes);
    Ok(array)
}

impl<'a> SnapshotSections<'a> {
    /// Parses the header and the section table of `bytes`.
    ///
    /// # Errors
    /// A wrong magic or version, a truncated section, a repeated node, or trailing bytes.
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, String> {
        let mut input = bytes;
        if input.len() < HEADER_LEN {
            return Err(format!(
                "malformed snapshot: {} bytes, shorter than the {HEADER_LEN}-byte header",
                input.len()
            ));
        }
        let magic = fixed::<4>(&mut input, "header")?;
        if &magic != MAGIC {
            return Err(format!(
                "not an rflink snapshot (magic {magic:02x?}, expected {MAGIC:02x?})"
            ));
        }
        let version = u16::from_le_bytes(fixed::<2>(&mut input, "header")?);
        if version != VERSION {
            return Err(format!(
                "unsupported snapshot version {version} (this build reads version {VERSION})"
            ));
        }
        let count = u32::from_le_bytes(fixed::<4>(&mut input, "header")?);
        let mut sections = BTreeMap::new();
        for _ in 0..count {
            if input.len() < SECTION_HEADER_LEN {
                return Err(format!(
                    "malformed snapshot: {count} sections announced, only {} complete",
                    sections.len()
                ));
            }
            let node = u32::from_le_bytes(fixed::<4>(&mut input, "section header")?);
            let len = u64::from_le_bytes(fixed::<8>(&mut input, "section header")?);
            let len = usize::try_from(len)
                .map_err(|_| format!("malformed snapshot: section length {len} out of range"))?;
            let body = split(&mut input, len, "section")?;
            if sections.insert(node, body).is_some() {
                return Err(format!(
                    "malformed snapshot: two sections for operator {node}"
                ));
            }
        }
        if !input.is_empty() {
            return Err(format!(
                "malformed snapshot: {} trailing bytes after {count} sections",
                input.len()
            ));
        }
        Ok(SnapshotSections { sections })
    }

    /// Takes the section of operator `node`, if the snapshot has one.
    pub(crate) fn take(&mut self, node: u32) -> Option<&'a [u8]> {
        self.sections.remove(&node)
    }

    /// The nodes whose sections nobody took.
    pub(crate) fn remaining(&self) -> Vec<u32> {
        self.sections.keys().copied().collect()
    }
}

/// Appends `map` as `len:varint (key value)*`, values written by `value`.
pub(crate) fn encode_map_with<K: Codec, V, S>(
    map: &HashMap<K, V, S>,
    out: &mut Vec<u8>,
    mut value: impl FnMut(&V, &mut Vec<u8>),
) {
    write_varint(map.len() as u64, out);
    for (k, v) in map {
        k.encode(out);
        value(v, out);
    }
}

/// Appends `map` as `len:varint (key value)*`.
pub(crate) fn encode_map<K: Codec, V: Codec, S>(map: &HashMap<K, V, S>, out: &mut Vec<u8>) {
    encode_map_with(map, out, |v, out| v.encode(out));
}

/// Reads a map written by [`encode_map_with`]. A repeated key is an error, so every entry
/// either consumes input or fails: a corrupt length cannot make this loop for long, and the
/// map's capacity is bounded by the input's length.
pub(crate) fn decode_map_with<K: Codec + Hash + Eq, V>(
    input: &mut &[u8],
    mut value: impl FnMut(&mut &[u8]) -> Result<V, String>,
) -> Result<FxHashMap<K, V>, String> {
    let len = read_varint(input).map_err(|e| format!("map length: {e}"))?;
    let capacity = usize::try_from(len).unwrap_or(usize::MAX).min(input.len());
    let mut map: FxHashMap<K, V> =
        HashMap::with_capacity_and_hasher(capacity, rustc_hash::FxBuildHasher);
    for _ in 0..len {
        let key = K::decode(input).map_err(|e| format!("key: {e}"))?;
        let v = value(input)?;
        if map.insert(key, v).is_some() {
            return Err("a key occurs twice".to_owned());
        }
    }
    Ok(map)
}

/// Reads a map written by [`encode_map`].
pub(crate) fn decode_map<K: Codec + Hash + Eq, V: Codec>(
    input: &mut &[u8],
) -> Result<FxHashMap<K, V>, String> {
    decode_map_with(input, |input| {
        V::decode(input).map_err(|e| format!("value: {e}"))
    })
}

/// Fails when `input` is not used up.
pub(crate) fn expect_end(input: &[u8], what: &str) -> Result<(), String> {
    if input.is_empty() {
        Ok(())
    } else {
        Err(format!("{what}: {} trailing bytes", input.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_round_trip_and_are_taken_once() {
        let mut writer = SnapshotWriter::new();
        writer
            .section(3, |out| {
                out.extend_from_slice(b"abc");
                Ok(())
            })
            .unwrap();
        writer.section(7, |_| Ok(())).unwrap();
        assert!(writer.section(3, |_| Ok(())).is_err());
        let bytes = writer.finish();
        assert_eq!(&bytes[..4], MAGIC);
        let mut sections = SnapshotSections::parse(&bytes).unwrap();
        assert_eq!(sections.remaining(), vec![3, 7]);
        assert_eq!(sections.take(3), Some(&b"abc"[..]));
        assert_eq!(sections.take(3), None);
        assert_eq!(sections.take(7), Some(&b""[..]));
        assert!(sections.remaining().is_empty());
        // An empty snapshot is valid.
        let empty = SnapshotWriter::new().finish();
        assert!(SnapshotSections::parse(&empty)
            .unwrap()
            .remaining()
            .is_empty());
    }

    #[test]
    fn malformed_snapshots_are_errors() {
        let mut writer = SnapshotWriter::new();
        writer
            .section(1, |out| {
                out.extend_from_slice(&[9; 20]);
                Ok(())
            })
            .unwrap();
        let bytes = writer.finish();
        for cut in 0..bytes.len() {
            assert!(SnapshotSections::parse(&bytes[..cut]).is_err(), "cut {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(SnapshotSections::parse(&longer)
            .unwrap_err()
            .contains("trailing"));
        let mut magic = bytes.clone();
        magic[0] = b'X';
        assert!(SnapshotSections::parse(&magic)
            .unwrap_err()
            .contains("not an rflink snapshot"));
        let mut version = bytes.clone();
        version[4] = 9;
        assert!(SnapshotSections::parse(&version)
            .unwrap_err()
            .contains("version"));
        let mut huge = bytes.clone();
        huge[14..22].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(SnapshotSections::parse(&huge).is_err());
        // Two sections for one node.
        let mut twice = bytes[..HEADER_LEN].to_vec();
        twice[6..10].copy_from_slice(&2u32.to_le_bytes());
        for _ in 0..2 {
            twice.extend_from_slice(&1u32.to_le_bytes());
            twice.extend_from_slice(&0u64.to_le_bytes());
        }
        assert!(SnapshotSections::parse(&twice)
            .unwrap_err()
            .contains("two sections"));
    }

    #[test]
    fn maps_round_trip_and_reject_repeated_keys() {
        let mut map: FxHashMap<String, u64> = FxHashMap::default();
        map.insert("a".into(), 1);
        map.insert("b".into(), 2);
        let mut out = Vec::new();
        encode_map(&map, &mut out);
        let mut input = &out[..];
        assert_eq!(decode_map::<String, u64>(&mut input).unwrap(), map);
        assert!(input.is_empty());
        // `()` keys encode to nothing: a huge length fails on the second entry.
        let mut units = Vec::new();
        write_varint(u64::MAX, &mut units);
        assert!(decode_map::<(), ()>(&mut &units[..])
            .unwrap_err()
            .contains("twice"));
    }
}
