//! [`BlobKey`]: the SHA-256 of a blob's content.
//!
//! Flink's `BlobKey` is a SHA-1 plus a type byte plus 16 random bytes (so equal content may get
//! distinct keys). Here a blob is always a job-scoped permanent blob addressed by
//! `(JobId, BlobKey)`, and the key is only the content hash: equal content of one job is stored
//! once, and anyone holding the key can check the bytes they got.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// The SHA-256 of a blob's content, shown as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobKey([u8; BlobKey::LEN]);

impl BlobKey {
    /// Length of a key in bytes.
    pub const LEN: usize = 32;

    /// The key of `content`. Hashes at roughly memory speed: for large content call it off the
    /// async runtime (`spawn_blocking`).
    pub fn of(content: &[u8]) -> Self {
        let mut hasher = BlobHasher::new();
        hasher.update(content);
        hasher.finish()
    }

    /// The key with the given hash bytes.
    pub const fn from_bytes(bytes: [u8; BlobKey::LEN]) -> Self {
        BlobKey(bytes)
    }

    /// The hash bytes.
    pub const fn as_bytes(&self) -> &[u8; BlobKey::LEN] {
        &self.0
    }
}

impl fmt::Display for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BlobKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BlobKey({self})")
    }
}

/// Why a string is not a blob key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a 64-character hex blob key")]
pub struct ParseBlobKeyError {
    /// The rejected input.
    pub input: String,
}

impl FromStr for BlobKey {
    type Err = ParseBlobKeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut bytes = [0u8; BlobKey::LEN];
        if s.len() != 2 * BlobKey::LEN {
            return Err(ParseBlobKeyError { input: s.into() });
        }
        hex::decode_to_slice(s, &mut bytes).map_err(|_| ParseBlobKeyError { input: s.into() })?;
        Ok(BlobKey(bytes))
    }
}

impl Serialize for BlobKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BlobKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Incremental SHA-256 producing a [`BlobKey`], for content that arrives in chunks.
#[derive(Clone, Default)]
pub(crate) struct BlobHasher(Sha256);

impl BlobHasher {
    pub(crate) fn new() -> Self {
        BlobHasher(Sha256::new())
    }

    pub(crate) fn update(&mut self, chunk: &[u8]) {
        self.0.update(chunk);
    }

    pub(crate) fn finish(self) -> BlobKey {
        BlobKey(self.0.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_sha256_and_round_trips_as_hex() {
        // SHA-256("abc"), FIPS 180-2 test vector.
        let key = BlobKey::of(b"abc");
        let hex = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(key.to_string(), hex);
        assert_eq!(hex.parse::<BlobKey>().unwrap(), key);
        assert_eq!(hex.to_uppercase().parse::<BlobKey>().unwrap(), key);
        assert!(hex[1..].parse::<BlobKey>().is_err());
        assert!(format!("{hex}0").parse::<BlobKey>().is_err());
        assert!(hex.replace('b', "g").parse::<BlobKey>().is_err());
        // A multi-byte character must not make the parser slice inside it.
        assert!("é".repeat(32).parse::<BlobKey>().is_err());
    }

    #[test]
    fn key_serializes_as_its_hex_string() {
        let key = BlobKey::of(b"serde");
        let yaml = serde_yaml_ng::to_string(&key).unwrap();
        assert_eq!(yaml.trim(), key.to_string());
        assert_eq!(serde_yaml_ng::from_str::<BlobKey>(&yaml).unwrap(), key);
        assert!(serde_yaml_ng::from_str::<BlobKey>("nothex").is_err());
    }

    #[test]
    fn chunked_hash_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
        let mut hasher = BlobHasher::new();
        for chunk in data.chunks(4093) {
            hasher.update(chunk);
        }
        assert_eq!(hasher.finish(), BlobKey::of(&data));
    }
}
