//! [`RecordDeserializer`]: whole records out of a channel's buffers. Flink:
//! `SpillingAdaptiveSpanningRecordDeserializer`.

use std::fmt;

use super::error::NetworkError;

/// The default largest record accepted: 64 MiB.
pub const DEFAULT_MAX_RECORD_LEN: usize = 64 << 20;

/// What [`RecordDeserializer::feed`] can fail with: a corrupt stream, or the caller's own error
/// from processing a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FeedError<E> {
    /// The stream is malformed ([`NetworkError::Corrupt`]).
    Corrupt(NetworkError),
    /// The record callback failed.
    Record(E),
}

impl<E: fmt::Display> fmt::Display for FeedError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FeedError::Corrupt(e) => e.fmt(f),
            FeedError::Record(e) => e.fmt(f),
        }
    }
}

impl<E: fmt::Debug + fmt::Display> std::error::Error for FeedError<E> {}

/// Turns one input channel's buffers back into records (`u32` little-endian length + bytes),
/// reassembling records and length prefixes that span buffers. One per input channel.
///
/// Records that lie whole inside a buffer are handed out without copying; only spanning ones are
/// assembled in an internal buffer that is reused.
#[derive(Debug)]
pub struct RecordDeserializer {
    max_record_len: usize,
    header: [u8; 4],
    header_len: usize,
    /// The length of the record being assembled, once its header is complete.
    pending: Option<usize>,
    spill: Vec<u8>,
}

impl Default for RecordDeserializer {
    fn default() -> Self {
        RecordDeserializer::new()
    }
}

impl RecordDeserializer {
    /// A deserializer accepting records up to [`DEFAULT_MAX_RECORD_LEN`].
    pub fn new() -> RecordDeserializer {
        RecordDeserializer::with_max_record_len(DEFAULT_MAX_RECORD_LEN)
    }

    /// A deserializer accepting records up to `max_record_len` bytes.
    pub fn with_max_record_len(max_record_len: usize) -> RecordDeserializer {
        RecordDeserializer {
            max_record_len,
            header: [0; 4],
            header_len: 0,
            pending: None,
            spill: Vec::new(),
        }
    }

    fn check_len(&self, len: usize) -> Result<(), NetworkError> {
        if len > self.max_record_len {
            Err(NetworkError::Corrupt {
                detail: format!(
                    "record length {len} exceeds the maximum of {} bytes",
                    self.max_record_len
                ),
            })
        } else {
            Ok(())
        }
    }

    /// Feeds one buffer, calling `f` with every record completed by it, in order.
    pub fn feed<E>(
        &mut self,
        mut buf: &[u8],
        mut f: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), FeedError<E>> {
        // Finish a record (or header) begun in an earlier buffer.
        if self.header_len > 0 || self.pending.is_some() {
            if self.pending.is_none() {
                let n = (4 - self.header_len).min(buf.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&buf[..n]);
                self.header_len += n;
                buf = &buf[n..];
                if self.header_len < 4 {
                    return Ok(());
                }
                let len = u32::from_le_bytes(self.header) as usize;
                self.check_len(len).map_err(FeedError::Corrupt)?;
                self.header_len = 0;
                self.pending = Some(len);
                self.spill.clear();
            }
            let len = self.pending.unwrap_or(0);
            let n = (len - self.spill.len()).min(buf.len());
            self.spill.extend_from_slice(&buf[..n]);
            buf = &buf[n..];
            if self.spill.len() < len {
                return Ok(());
            }
            self.pending = None;
            f(&self.spill).map_err(FeedError::Record)?;
        }
        // Whole records, borrowed from the buffer.
        loop {
            if buf.len() < 4 {
                self.header[..buf.len()].copy_from_slice(buf);
                self.header_len = buf.len();
                return Ok(());
            }
            let len = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
            self.check_len(len).map_err(FeedError::Corrupt)?;
            let rest = &buf[4..];
            if rest.len() < len {
                self.pending = Some(len);
                self.spill.clear();
                self.spill.extend_from_slice(rest);
                return Ok(());
            }
            f(&rest[..len]).map_err(FeedError::Record)?;
            buf = &rest[len..];
        }
    }

    /// Checks that no record is cut off; call at the channel's `EndOfPartition`.
    pub fn check_complete(&self) -> Result<(), NetworkError> {
        if self.header_len > 0 || self.pending.is_some() {
            Err(NetworkError::Corrupt {
                detail: format!(
                    "the partition ended inside a record ({} bytes of it received)",
                    self.header_len + self.spill.len()
                ),
            })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(records: &[Vec<u8>]) -> Vec<u8> {
        let mut out = Vec::new();
        for r in records {
            out.extend_from_slice(&(r.len() as u32).to_le_bytes());
            out.extend_from_slice(r);
        }
        out
    }

    #[test]
    fn reassembles_records_across_any_split() {
        let records: Vec<Vec<u8>> = vec![vec![], vec![1], vec![2; 7], vec![], vec![3; 20]];
        let stream = encode(&records);
        for chunk in 1..=stream.len() {
            let mut d = RecordDeserializer::new();
            let mut got = Vec::new();
            for piece in stream.chunks(chunk) {
                d.feed(piece, |r| {
                    got.push(r.to_vec());
                    Ok::<_, ()>(())
                })
                .unwrap();
            }
            d.check_complete().unwrap();
            assert_eq!(got, records, "chunk size {chunk}");
        }
    }

    #[test]
    fn rejects_oversized_and_truncated_records() {
        let mut d = RecordDeserializer::with_max_record_len(10);
        let err = d
            .feed(&11u32.to_le_bytes(), |_| Ok::<_, ()>(()))
            .unwrap_err();
        assert!(matches!(
            err,
            FeedError::Corrupt(NetworkError::Corrupt { .. })
        ));
        let mut d = RecordDeserializer::new();
        d.feed(&[5, 0, 0, 0, 1], |_| Ok::<_, ()>(())).unwrap();
        assert!(d.check_complete().is_err());
        let mut d = RecordDeserializer::new();
        d.feed(&[5, 0], |_| Ok::<_, ()>(())).unwrap();
        assert!(d.check_complete().is_err());
    }
}
