//! Stable hashing: key-group assignment (Flink's `KeyGroupRangeAssignment`) and the FNV-1a hash
//! behind graph fingerprints.
//!
//! # Invariants
//! Every function here gives the same answer in every process running the same build: no
//! `RandomState`, no addresses.

use std::hash::{Hash, Hasher};
use std::ops::Range;

use rustc_hash::FxHasher;

/// Flink's upper bound for max parallelism (`1 << 15`).
pub const UPPER_BOUND_MAX_PARALLELISM: u32 = 1 << 15;

/// MurmurHash3's 64-bit finaliser: spreads FxHash's output over all bits.
#[inline]
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

/// The stable hash of a key: its FxHash, murmur-finalised.
#[inline]
pub fn key_hash<K: Hash + ?Sized>(key: &K) -> u64 {
    let mut hasher = FxHasher::default();
    key.hash(&mut hasher);
    fmix64(hasher.finish())
}

/// The key group of `key` among `max_parallelism` groups (a `max_parallelism` of 0 counts as 1).
#[inline]
pub fn assign_to_key_group<K: Hash + ?Sized>(key: &K, max_parallelism: u32) -> u32 {
    (key_hash(key) % u64::from(max_parallelism.max(1))) as u32
}

/// The subtask that owns `key_group`: `key_group * parallelism / max_parallelism`.
#[inline]
pub fn compute_operator_index_for_key_group(
    max_parallelism: u32,
    parallelism: u32,
    key_group: u32,
) -> u32 {
    let max_parallelism = u64::from(max_parallelism.max(1));
    let index = u64::from(key_group) * u64::from(parallelism.max(1)) / max_parallelism;
    index.min(u64::from(parallelism.max(1)) - 1) as u32
}

/// The subtask (of `parallelism`) that processes `key`, as Flink's
/// `KeyGroupRangeAssignment.assignKeyToParallelOperator`. Always `< parallelism` (0 when
/// `parallelism` is 0).
#[inline]
pub fn assign_key_to_subtask<K: Hash + ?Sized>(
    key: &K,
    max_parallelism: u32,
    parallelism: u32,
) -> u32 {
    compute_operator_index_for_key_group(
        max_parallelism,
        parallelism,
        assign_to_key_group(key, max_parallelism),
    )
}

/// The key groups owned by `subtask_index` (half-open), as Flink's
/// `computeKeyGroupRangeForOperatorIndex`. Empty when the subtask owns none (more subtasks than key groups) or the arguments
/// are out of range.
pub fn key_group_range_for_subtask(
    max_parallelism: u32,
    parallelism: u32,
    subtask_index: u32,
) -> Range<u32> {
    if parallelism == 0 || max_parallelism == 0 || subtask_index >= parallelism {
        return 0..0;
    }
    let (max, p, i) = (
        u64::from(max_parallelism),
        u64::from(parallelism),
        u64::from(subtask_index),
    );
    let start = (i * max).div_ceil(p);
    let end = ((i + 1) * max - 1) / p;
    if end < start {
        return 0..0;
    }
    (start as u32)..(end as u32 + 1)
}

/// A 128-bit FNV-1a hasher, used for graph fingerprints.
#[derive(Debug, Clone)]
pub struct Fnv128 {
    state: u128,
}

impl Default for Fnv128 {
    fn default() -> Self {
        Fnv128 {
            state: 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d,
        }
    }
}

impl Fnv128 {
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;

    /// Feeds raw bytes.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        for &b in bytes {
            self.state ^= u128::from(b);
            self.state = self.state.wrapping_mul(Self::PRIME);
        }
        self
    }

    /// Feeds a length-prefixed string (so `"ab","c"` and `"a","bc"` differ).
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }

    /// Feeds an integer.
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }

    /// The hash as 32 lowercase hex digits.
    pub fn hex(&self) -> String {
        format!("{:032x}", self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_assignment_is_in_range_and_stable() {
        for parallelism in 1..=7u32 {
            for key in 0..500u64 {
                let subtask = assign_key_to_subtask(&key, 128, parallelism);
                assert!(subtask < parallelism);
                assert_eq!(subtask, assign_key_to_subtask(&key, 128, parallelism));
                let group = assign_to_key_group(&key, 128);
                assert!(key_group_range_for_subtask(128, parallelism, subtask).contains(&group));
            }
        }
        // Pinned values: a change here breaks exchanges between processes of different builds.
        assert_eq!(key_hash("hello"), key_hash(&String::from("hello")));
        assert_eq!(assign_key_to_subtask("word", 0, 0), 0);
        assert_eq!(assign_key_to_subtask(&1u32, 1, 5), 0);
    }

    #[test]
    fn keys_spread_over_subtasks() {
        let mut counts = [0u32; 4];
        for key in 0..4000u64 {
            counts[assign_key_to_subtask(&format!("k{key}"), 128, 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700), "{counts:?}");
    }

    #[test]
    fn key_group_ranges_partition_all_groups() {
        for parallelism in 1..=10u32 {
            let mut next = 0u32;
            for i in 0..parallelism {
                let range = key_group_range_for_subtask(128, parallelism, i);
                assert_eq!(range.start, next);
                next = range.end;
                for g in range {
                    assert_eq!(compute_operator_index_for_key_group(128, parallelism, g), i);
                }
            }
            assert_eq!(next, 128);
        }
        assert!(key_group_range_for_subtask(128, 2, 2).is_empty());
    }

    #[test]
    fn fnv_distinguishes_boundaries() {
        let a = Fnv128::default().str("ab").str("c").hex();
        let b = Fnv128::default().str("a").str("bc").hex();
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert_eq!(a, Fnv128::default().str("ab").str("c").hex());
    }
}
