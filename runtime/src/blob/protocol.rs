//! The blob wire protocol, version 1.
//!
//! TCP on the BlobServer's own port (never the RPC transport), after the connection's security
//! handshake (`rflink_rpc::security`, channel `Blob`; nothing when the cluster runs plaintext),
//! over TLS when the cluster runs it. Every write is flushed. All integers are big-endian;
//! a job id is its 128 bits as 16 bytes; a key is its 32 hash bytes.
//!
//! ```text
//! connection := preamble request*                 client speaks first; requests one at a time,
//!                                                  each fully answered before the next is sent
//! preamble   := "RFBL" version:u16                 version = 1
//!
//! PUT   c→s  0x01 job:[16] size:u64                header
//!       s→c  status                                OK = go ahead; ERR (TooLarge, ...) = refused,
//!                                                  the server then closes the connection
//!       c→s  data:[size] key:[32]                  the content, then the client's SHA-256 of it
//!       s→c  status key:[32]                       key only after OK: the stored key (== client's);
//!                                                  ERR Corrupt if the data does not hash to `key`
//!                                                  (nothing is stored), ERR Io if the disk failed
//!
//! GET   c→s  0x02 job:[16] key:[32]
//!       s→c  status size:u64 data:[size]           size and data only after OK; ERR NotFound,
//!                                                  Corrupt (the stored file no longer hashes to
//!                                                  its key: the server deletes it), Io
//!
//! status     := 0x00                               OK
//!             | 0x01 len:u32 error:[len]           ERR, 1 <= len <= MAX_ERROR_LEN
//! error      := code:u8 fields                     one layout per BlobError variant:
//!     0x01 NotFound         job:[16] key:[32]
//!     0x02 Corrupt          key:[32] actual:[32]
//!     0x03 TooLarge         size:u64 max:u64
//!     0x04 Io               action:str detail:str
//!     0x05 Protocol         detail:str
//!     0x06 VersionMismatch  supported:u16 found:u16
//!     0x07 Connection       address:str reason:str
//!     0x08 Timeout          address:str operation:str timeout_ms:u64
//!     0x09 UnknownJob       job:[16]
//!     0x0a Closed           service:str
//!     0x0b InvalidConfig    detail:str
//!     0x0c Security         address:str failure:str   the SecurityFailure as JSON; a client-side
//!                                                  error (a refused handshake ends the connection
//!                                                  before the protocol), encoded for completeness
//! str        := len:u16 utf8:[len]                 encoders cut at MAX_STR_LEN on a char boundary
//! ```
//!
//! Rules both sides keep:
//!
//! * **Limits before allocation.** A PUT's `size` is checked against the server's `max_blob_size`
//!   *before* the go-ahead, so an oversized upload is refused without a byte of its body crossing
//!   the wire; a GET's `size` is checked against the client's limit before anything is buffered;
//!   an error frame's `len` against [`MAX_ERROR_LEN`]. Data is read in chunks of at most
//!   [`CHUNK_SIZE`], so a peer that lies about a size costs one chunk, not `size` bytes.
//! * **Integrity end to end.** The key is the SHA-256 of the content. The server hashes what it
//!   receives and stores it only if it matches the client's trailer key; the client hashes what a
//!   GET returns and fails with [`BlobError::Corrupt`] on a mismatch; the server re-hashes a
//!   stored file before serving it.
//! * **Sync or close.** An ERR that answers a complete request (NotFound, Corrupt, Io) leaves the
//!   connection usable. An ERR that answers a preamble or a header the server cannot (or will not)
//!   read on from — bad magic, other version, unknown operation, TooLarge — is the last frame: the
//!   server closes the connection after it. Truncated input and stalls (no progress within the
//!   I/O timeout) close the connection without a reply.
//! * **No panics.** Every decoder here takes a byte slice and returns a typed error for any input;
//!   the unit tests feed them arbitrary bytes.
//!
//! A new field or operation means a new version; a server answers a preamble of another version
//! with `VersionMismatch` and closes.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::BlobError;
use super::key::BlobKey;
use crate::types::JobId;

/// The first four bytes of every connection.
pub const MAGIC: [u8; 4] = *b"RFBL";
/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u16 = 1;
/// Length of the preamble (magic + version).
pub const PREAMBLE_LEN: usize = 6;
/// Operation byte of a PUT.
pub const OP_PUT: u8 = 0x01;
/// Operation byte of a GET.
pub const OP_GET: u8 = 0x02;
/// Status byte: success.
pub const STATUS_OK: u8 = 0x00;
/// Status byte: an error frame follows.
pub const STATUS_ERR: u8 = 0x01;
/// The largest error payload either side accepts.
pub const MAX_ERROR_LEN: usize = 4096;
/// The longest string an encoder writes into an error (longer ones are cut).
pub const MAX_STR_LEN: usize = 1024;
/// Data is read and written in chunks of at most this many bytes.
pub const CHUNK_SIZE: usize = 64 * 1024;

const JOB_LEN: usize = 16;
/// Length of a PUT header after the operation byte.
pub(crate) const PUT_HEADER_LEN: usize = JOB_LEN + 8;
/// Length of a GET header after the operation byte.
pub(crate) const GET_HEADER_LEN: usize = JOB_LEN + BlobKey::LEN;

const CODE_NOT_FOUND: u8 = 0x01;
const CODE_CORRUPT: u8 = 0x02;
const CODE_TOO_LARGE: u8 = 0x03;
const CODE_IO: u8 = 0x04;
const CODE_PROTOCOL: u8 = 0x05;
const CODE_VERSION_MISMATCH: u8 = 0x06;
const CODE_CONNECTION: u8 = 0x07;
const CODE_TIMEOUT: u8 = 0x08;
const CODE_UNKNOWN_JOB: u8 = 0x09;
const CODE_CLOSED: u8 = 0x0a;
const CODE_INVALID_CONFIG: u8 = 0x0b;
const CODE_SECURITY: u8 = 0x0c;

/// The preamble this build sends.
pub fn preamble() -> [u8; PREAMBLE_LEN] {
    let v = PROTOCOL_VERSION.to_be_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1]]
}

/// Checks a client's preamble: magic, then version.
pub fn check_preamble(bytes: &[u8; PREAMBLE_LEN]) -> Result<(), BlobError> {
    if bytes[..4] != MAGIC {
        return Err(BlobError::protocol(format!(
            "bad preamble {}: expected magic \"RFBL\"",
            hex::encode(bytes)
        )));
    }
    let found = u16::from_be_bytes([bytes[4], bytes[5]]);
    if found != PROTOCOL_VERSION {
        return Err(BlobError::VersionMismatch {
            supported: PROTOCOL_VERSION,
            found,
        });
    }
    Ok(())
}

/// A client request's header (a PUT's data and trailer key follow it separately).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// Upload `size` bytes for `job_id`.
    Put {
        /// The job the blob belongs to.
        job_id: JobId,
        /// The number of data bytes that follow the go-ahead.
        size: u64,
    },
    /// Download the blob `key` of `job_id`.
    Get {
        /// The job the blob belongs to.
        job_id: JobId,
        /// The blob.
        key: BlobKey,
    },
}

impl Request {
    /// Appends the request (operation byte and header) to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Request::Put { job_id, size } => {
                out.push(OP_PUT);
                out.extend_from_slice(&job_bytes(*job_id));
                out.extend_from_slice(&size.to_be_bytes());
            }
            Request::Get { job_id, key } => {
                out.push(OP_GET);
                out.extend_from_slice(&job_bytes(*job_id));
                out.extend_from_slice(key.as_bytes());
            }
        }
    }

    /// How many header bytes follow operation byte `op`; an unknown operation is a protocol error.
    pub fn header_len(op: u8) -> Result<usize, BlobError> {
        match op {
            OP_PUT => Ok(PUT_HEADER_LEN),
            OP_GET => Ok(GET_HEADER_LEN),
            other => Err(BlobError::protocol(format!(
                "unknown operation 0x{other:02x}"
            ))),
        }
    }

    /// Decodes a request from its operation byte and exactly [`header_len`](Self::header_len)
    /// header bytes.
    pub fn decode(op: u8, header: &[u8]) -> Result<Request, BlobError> {
        let expected = Request::header_len(op)?;
        if header.len() != expected {
            return Err(BlobError::protocol(format!(
                "operation 0x{op:02x} needs a {expected}-byte header, got {} bytes",
                header.len()
            )));
        }
        let mut cur = Cursor::new(header);
        let job_id = cur.job()?;
        let request = if op == OP_PUT {
            Request::Put {
                job_id,
                size: cur.u64()?,
            }
        } else {
            Request::Get {
                job_id,
                key: cur.key()?,
            }
        };
        cur.finish()?;
        Ok(request)
    }
}

/// Encodes an error's payload (code and fields, without the status byte and length).
pub fn encode_error(err: &BlobError) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    match err {
        BlobError::NotFound { job_id, key } => {
            out.push(CODE_NOT_FOUND);
            out.extend_from_slice(&job_bytes(*job_id));
            out.extend_from_slice(key.as_bytes());
        }
        BlobError::Corrupt { key, actual } => {
            out.push(CODE_CORRUPT);
            out.extend_from_slice(key.as_bytes());
            out.extend_from_slice(actual.as_bytes());
        }
        BlobError::TooLarge { size, max } => {
            out.push(CODE_TOO_LARGE);
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&max.to_be_bytes());
        }
        BlobError::Io { action, detail } => {
            out.push(CODE_IO);
            put_str(&mut out, action);
            put_str(&mut out, detail);
        }
        BlobError::Protocol { detail } => {
            out.push(CODE_PROTOCOL);
            put_str(&mut out, detail);
        }
        BlobError::VersionMismatch { supported, found } => {
            out.push(CODE_VERSION_MISMATCH);
            out.extend_from_slice(&supported.to_be_bytes());
            out.extend_from_slice(&found.to_be_bytes());
        }
        BlobError::Connection { address, reason } => {
            out.push(CODE_CONNECTION);
            put_str(&mut out, address);
            put_str(&mut out, reason);
        }
        BlobError::Timeout {
            address,
            operation,
            timeout,
        } => {
            out.push(CODE_TIMEOUT);
            put_str(&mut out, address);
            put_str(&mut out, operation);
            let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
            out.extend_from_slice(&ms.to_be_bytes());
        }
        BlobError::UnknownJob { job_id } => {
            out.push(CODE_UNKNOWN_JOB);
            out.extend_from_slice(&job_bytes(*job_id));
        }
        BlobError::Closed { service } => {
            out.push(CODE_CLOSED);
            put_str(&mut out, service);
        }
        BlobError::InvalidConfig { detail } => {
            out.push(CODE_INVALID_CONFIG);
            put_str(&mut out, detail);
        }
        BlobError::Security { address, failure } => {
            out.push(CODE_SECURITY);
            put_str(&mut out, address);
            // A unit variant or a short struct: far below MAX_STR_LEN.
            let json = serde_json::to_string(failure).unwrap_or_default();
            put_str(&mut out, &json);
        }
    }
    out
}

/// Decodes an error payload. `Ok` is the error the peer sent; `Err` says why the payload itself
/// is malformed (a [`BlobError::Protocol`]).
pub fn decode_error(payload: &[u8]) -> Result<BlobError, BlobError> {
    let mut cur = Cursor::new(payload);
    let err = match cur.u8()? {
        CODE_NOT_FOUND => BlobError::NotFound {
            job_id: cur.job()?,
            key: cur.key()?,
        },
        CODE_CORRUPT => BlobError::Corrupt {
            key: cur.key()?,
            actual: cur.key()?,
        },
        CODE_TOO_LARGE => BlobError::TooLarge {
            size: cur.u64()?,
            max: cur.u64()?,
        },
        CODE_IO => BlobError::Io {
            action: cur.str()?,
            detail: cur.str()?,
        },
        CODE_PROTOCOL => BlobError::Protocol { detail: cur.str()? },
        CODE_VERSION_MISMATCH => BlobError::VersionMismatch {
            supported: cur.u16()?,
            found: cur.u16()?,
        },
        CODE_CONNECTION => BlobError::Connection {
            address: cur.str()?,
            reason: cur.str()?,
        },
        CODE_TIMEOUT => BlobError::Timeout {
            address: cur.str()?,
            operation: cur.str()?,
            timeout: Duration::from_millis(cur.u64()?),
        },
        CODE_UNKNOWN_JOB => BlobError::UnknownJob { job_id: cur.job()? },
        CODE_CLOSED => BlobError::Closed {
            service: cur.str()?,
        },
        CODE_INVALID_CONFIG => BlobError::InvalidConfig { detail: cur.str()? },
        CODE_SECURITY => BlobError::Security {
            address: cur.str()?,
            failure: serde_json::from_str(&cur.str()?).map_err(|e| {
                BlobError::protocol(format!("malformed security failure in an error frame: {e}"))
            })?,
        },
        other => {
            return Err(BlobError::protocol(format!(
                "unknown error code 0x{other:02x} in an error frame"
            )))
        }
    };
    cur.finish()?;
    Ok(err)
}

/// A whole ERR status frame: status byte, length, payload.
pub fn encode_error_frame(err: &BlobError) -> Vec<u8> {
    let payload = encode_error(err);
    let mut out = Vec::with_capacity(5 + payload.len());
    out.push(STATUS_ERR);
    // The payload is bounded: fixed fields plus at most two strings of MAX_STR_LEN.
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// Checks an error frame's length prefix against [`MAX_ERROR_LEN`].
pub fn check_error_len(len: u32) -> Result<usize, BlobError> {
    let len = len as usize;
    if len == 0 || len > MAX_ERROR_LEN {
        return Err(BlobError::protocol(format!(
            "error frame of {len} bytes (allowed 1..={MAX_ERROR_LEN})"
        )));
    }
    Ok(len)
}

pub(crate) fn job_bytes(job_id: JobId) -> [u8; JOB_LEN] {
    job_id.as_abstract_id().as_u128().to_be_bytes()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let mut end = s.len().min(MAX_STR_LEN);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&(end as u16).to_be_bytes());
    out.extend_from_slice(&s.as_bytes()[..end]);
}

/// A bounds-checked reader over a byte slice: every getter returns a protocol error instead of
/// reading past the end.
struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Cursor { buf }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], BlobError> {
        if self.buf.len() < n {
            return Err(BlobError::protocol(format!(
                "truncated frame: needed {n} more bytes, {} left",
                self.buf.len()
            )));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], BlobError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, BlobError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, BlobError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, BlobError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn job(&mut self) -> Result<JobId, BlobError> {
        Ok(JobId::from_u128(u128::from_be_bytes(self.array()?)))
    }

    fn key(&mut self) -> Result<BlobKey, BlobError> {
        Ok(BlobKey::from_bytes(self.array()?))
    }

    fn str(&mut self) -> Result<String, BlobError> {
        let len = self.u16()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| BlobError::protocol("string field is not valid utf-8"))
    }

    fn finish(&self) -> Result<(), BlobError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(BlobError::protocol(format!(
                "{} unexpected trailing bytes in frame",
                self.buf.len()
            )))
        }
    }
}

/// Why an async read did not fill its buffer.
#[derive(Debug)]
pub(crate) enum ReadFailure {
    /// The peer closed the connection after `read` of the buffer's bytes.
    Eof { read: usize },
    /// No complete buffer within the timeout.
    TimedOut,
    /// The socket failed.
    Io(std::io::Error),
}

/// Fills `buf` from `reader`, failing if that takes longer than `timeout`.
pub(crate) async fn read_exact_within<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    timeout: Duration,
) -> Result<(), ReadFailure> {
    let fill = async {
        let mut read = 0;
        while read < buf.len() {
            match reader.read(&mut buf[read..]).await {
                Ok(0) => return Err(ReadFailure::Eof { read }),
                Ok(n) => read += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(ReadFailure::Io(e)),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(timeout, fill).await {
        Ok(result) => result,
        Err(_) => Err(ReadFailure::TimedOut),
    }
}

/// Why an async write did not complete.
#[derive(Debug)]
pub(crate) enum WriteFailure {
    /// The peer did not take the bytes within the timeout.
    TimedOut,
    /// The socket failed.
    Io(std::io::Error),
}

/// Writes all of `buf` to `writer` and flushes it, failing if that takes longer than `timeout`.
/// The flush is what makes the bytes leave over TLS (whose session buffers what the socket did
/// not take); on plain TCP it costs nothing.
pub(crate) async fn write_all_within<W: AsyncWrite + Unpin>(
    writer: &mut W,
    buf: &[u8],
    timeout: Duration,
) -> Result<(), WriteFailure> {
    let write = async {
        writer.write_all(buf).await?;
        writer.flush().await
    };
    match tokio::time::timeout(timeout, write).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(WriteFailure::Io(e)),
        Err(_) => Err(WriteFailure::TimedOut),
    }
}

#[cfg(test)]
mod tests {
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rflink_rpc::security::{Channel, SecurityFailure};

    use super::*;

    fn every_error() -> Vec<BlobError> {
        let job_id = JobId::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        let key = BlobKey::of(b"one");
        let actual = BlobKey::of(b"two");
        vec![
            BlobError::NotFound { job_id, key },
            BlobError::Corrupt { key, actual },
            BlobError::TooLarge {
                size: u64::MAX,
                max: 1 << 30,
            },
            BlobError::Io {
                action: "write /tmp/x".into(),
                detail: "disk full".into(),
            },
            BlobError::protocol("bad"),
            BlobError::VersionMismatch {
                supported: 1,
                found: 7,
            },
            BlobError::Connection {
                address: "h:1".into(),
                reason: "refused".into(),
            },
            BlobError::Timeout {
                address: "h:1".into(),
                operation: "get".into(),
                timeout: Duration::from_millis(1500),
            },
            BlobError::UnknownJob { job_id },
            BlobError::Closed {
                service: "blob server".into(),
            },
            BlobError::InvalidConfig { detail: "x".into() },
            BlobError::Security {
                address: "h:1".into(),
                failure: SecurityFailure::WrongSecret,
            },
            BlobError::Security {
                address: "h:1".into(),
                failure: SecurityFailure::WrongChannel {
                    expected: Channel::Blob,
                    requested: Channel::Data,
                },
            },
        ]
    }

    #[test]
    fn every_error_round_trips() {
        for err in every_error() {
            let payload = encode_error(&err);
            assert_eq!(decode_error(&payload).unwrap(), err);
            // Every strict prefix is truncated, every extension has trailing bytes: both typed.
            for cut in 0..payload.len() {
                assert!(matches!(
                    decode_error(&payload[..cut]),
                    Err(BlobError::Protocol { .. })
                ));
            }
            let mut longer = payload.clone();
            longer.push(0);
            assert!(matches!(
                decode_error(&longer),
                Err(BlobError::Protocol { .. })
            ));
            // The frame's length prefix is within bounds.
            let frame = encode_error_frame(&err);
            assert_eq!(frame[0], STATUS_ERR);
            let len = u32::from_be_bytes([frame[1], frame[2], frame[3], frame[4]]);
            assert_eq!(check_error_len(len).unwrap(), payload.len());
        }
    }

    #[test]
    fn long_strings_are_cut_on_a_char_boundary() {
        let err = BlobError::Io {
            action: "é".repeat(MAX_STR_LEN),
            detail: "x".repeat(10 * MAX_STR_LEN),
        };
        let payload = encode_error(&err);
        assert!(payload.len() <= MAX_ERROR_LEN);
        match decode_error(&payload).unwrap() {
            BlobError::Io { action, detail } => {
                assert_eq!(action, "é".repeat(MAX_STR_LEN / 2));
                assert_eq!(detail.len(), MAX_STR_LEN);
            }
            other => panic!("decoded {other:?}"),
        }
    }

    #[test]
    fn requests_round_trip() {
        let job_id = JobId::generate();
        for req in [
            Request::Put { job_id, size: 0 },
            Request::Put {
                job_id,
                size: u64::MAX,
            },
            Request::Get {
                job_id,
                key: BlobKey::of(b"k"),
            },
        ] {
            let mut buf = Vec::new();
            req.encode(&mut buf);
            let len = Request::header_len(buf[0]).unwrap();
            assert_eq!(buf.len(), 1 + len);
            assert_eq!(Request::decode(buf[0], &buf[1..]).unwrap(), req);
            assert!(Request::decode(buf[0], &buf[1..len]).is_err());
        }
        assert!(matches!(
            Request::header_len(0x7f),
            Err(BlobError::Protocol { .. })
        ));
    }

    #[test]
    fn preamble_is_checked() {
        assert!(check_preamble(&preamble()).is_ok());
        assert!(matches!(
            check_preamble(b"HTTP/1"),
            Err(BlobError::Protocol { .. })
        ));
        let mut other = preamble();
        other[5] = 2;
        assert_eq!(
            check_preamble(&other),
            Err(BlobError::VersionMismatch {
                supported: 1,
                found: 2
            })
        );
    }

    #[test]
    fn error_length_is_bounded() {
        assert!(check_error_len(0).is_err());
        assert!(check_error_len(MAX_ERROR_LEN as u32 + 1).is_err());
        assert!(check_error_len(u32::MAX).is_err());
        assert_eq!(check_error_len(1).unwrap(), 1);
    }

    /// Arbitrary bytes through every decoder: typed results, never a panic.
    #[test]
    fn decoding_arbitrary_bytes_never_panics() {
        let mut rng = StdRng::seed_from_u64(0x5eed_b10b);
        let mut valid = every_error().iter().map(encode_error).collect::<Vec<_>>();
        for _ in 0..20_000 {
            let len = rng.random_range(0..96);
            let mut bytes = vec![0u8; len];
            rng.fill(&mut bytes[..]);
            // Bias half the inputs towards plausible ones: a known code, or a mutated valid frame.
            if rng.random_bool(0.5) {
                if let Some(first) = bytes.first_mut() {
                    *first = rng.random_range(0..=0x0d);
                }
            }
            let _ = decode_error(&bytes);
            let op = rng.random_range(0..4u8);
            let _ = Request::decode(op, &bytes);
            if bytes.len() >= PREAMBLE_LEN {
                let mut pre = [0u8; PREAMBLE_LEN];
                pre.copy_from_slice(&bytes[..PREAMBLE_LEN]);
                let _ = check_preamble(&pre);
            }
            let i = rng.random_range(0..valid.len());
            let frame = &mut valid[i];
            if !frame.is_empty() {
                let at = rng.random_range(0..frame.len());
                frame[at] = rng.random();
                let _ = decode_error(frame);
            }
        }
    }
}
