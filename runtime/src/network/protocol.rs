//! The data-plane wire format, modelled on Flink's `NettyMessage`.
//!
//! A connection starts with a 6-byte preamble from each side, `b"RFDP"` then the protocol
//! version as a big-endian `u16`. Then frames, every integer big-endian:
//!
//! ```text
//! frame := len:u32  magic:u32 = 0xBADC0FFE  id:u8  body      len counts magic + id + body
//!
//! id 0  BufferResponse          server -> client
//!       channel:u64 seq:u32 backlog:u32 type:u8 (0 buffer, 1 event) size:u32 payload[size]
//! id 1  ErrorResponse           server -> client
//!       channel:u64 (u64::MAX = the whole connection) kind:u8 mlen:u32 message[mlen] (UTF-8)
//!       kind: 0 PartitionNotFound, 1 ProducerFailed, 2 Protocol, 3 Rejected
//! id 2  PartitionRequest        client -> server
//!       graph:u128 vertex:u128 subtask:u32 attempt:u32 result:u32   (the ResultPartitionId)
//!       subpartition:u32 channel:u64 credit:u32
//! id 4  CancelPartitionRequest  client -> server   channel:u64
//! id 5  CloseRequest            client -> server   (empty)
//! id 6  AddCredit               client -> server   channel:u64 credit:u32
//! ```
//!
//! An event payload (a BufferResponse of type 1, sent without credit) is a tag byte and the
//! event's fields:
//!
//! ```text
//! tag 0  EndOfPartition     (nothing else)
//! tag 1  EndOfData          (nothing else)
//! tag 2  CheckpointBarrier  id:u64 timestamp:i64 flags:u8 (bit 0: savepoint; others must be 0)
//! tag 3  Watermark          watermark:i64
//! tag 4  WatermarkStatus    status:u8 (0 active, 1 idle)
//! ```
//!
//! An unknown tag, a payload of the wrong length for its tag or unknown flag bits is an
//! [`EventDecodeError`], a protocol violation. A buffer payload is at most
//! `segment_size` bytes of serialized records (`u32` little-endian length + bytes each, possibly
//! spanning buffers). Both ends must use the same `segment_size`.
//!
//! Decoding checks the magic and the length against the maximum before anything is allocated,
//! and every field read is bounds-checked: malformed input is a [`ProtocolViolation`], never a
//! panic. Order of fields must match between the `encode_*` functions and the decoders; a new
//! field means a new protocol version.

use super::{NetworkEvent, ResultPartitionId};
use crate::types::{ExecutionAttemptId, ExecutionGraphId, ExecutionVertexId, JobVertexId};

/// The first four bytes each side sends.
pub(crate) const PREAMBLE_MAGIC: [u8; 4] = *b"RFDP";
/// The protocol version, checked in the preamble.
/// 2: watermark and watermark status events.
pub(crate) const PROTOCOL_VERSION: u16 = 2;
/// Length of the preamble.
pub(crate) const PREAMBLE_LEN: usize = 6;
/// Every frame's magic number (Flink's).
pub(crate) const FRAME_MAGIC: u32 = 0xBADC_0FFE;
/// The channel id of a connection-wide ErrorResponse.
pub(crate) const CONNECTION_WIDE: u64 = u64::MAX;
/// Longest error message sent; longer ones are cut.
pub(crate) const MAX_ERROR_MESSAGE: usize = 16 * 1024;

const ID_BUFFER_RESPONSE: u8 = 0;
const ID_ERROR_RESPONSE: u8 = 1;
const ID_PARTITION_REQUEST: u8 = 2;
const ID_CANCEL: u8 = 4;
const ID_CLOSE: u8 = 5;
const ID_ADD_CREDIT: u8 = 6;

const BUFFER_HEADER_BODY: usize = 8 + 4 + 4 + 1 + 4;
const DATA_BUFFER: u8 = 0;
const DATA_EVENT: u8 = 1;
const EVENT_END_OF_PARTITION: u8 = 0;
const EVENT_END_OF_DATA: u8 = 1;
const EVENT_CHECKPOINT_BARRIER: u8 = 2;
/// Tag + id + timestamp + flags.
const BARRIER_PAYLOAD_LEN: usize = 1 + 8 + 8 + 1;
const BARRIER_FLAG_SAVEPOINT: u8 = 1;
/// The longest event payload.
const EVENT_WATERMARK: u8 = 3;
const WATERMARK_PAYLOAD_LEN: usize = 1 + 8;
const EVENT_WATERMARK_STATUS: u8 = 4;
const WATERMARK_STATUS_PAYLOAD_LEN: usize = 2;
const MAX_EVENT_PAYLOAD: usize = BARRIER_PAYLOAD_LEN;

/// A frame or preamble that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProtocolViolation(pub(crate) String);

fn violation(detail: impl Into<String>) -> ProtocolViolation {
    ProtocolViolation(detail.into())
}

/// Why an event payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventDecodeError {
    /// The payload has no tag byte.
    Empty,
    /// A tag this side does not know.
    UnknownTag(u8),
    /// The payload length does not match the tag's event.
    WrongLength {
        event: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A checkpoint barrier with flag bits this side does not know.
    UnknownFlags(u8),
    /// A watermark status that is neither 0 (active) nor 1 (idle).
    UnknownWatermarkStatus(u8),
}

impl std::fmt::Display for EventDecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EventDecodeError::Empty => write!(f, "empty event payload"),
            EventDecodeError::UnknownTag(tag) => write!(f, "unknown event tag {tag}"),
            EventDecodeError::WrongLength {
                event,
                expected,
                actual,
            } => write!(
                f,
                "{event} event of {actual} bytes, expected {expected} bytes"
            ),
            EventDecodeError::UnknownFlags(flags) => {
                write!(f, "checkpoint barrier with unknown flags {flags:#04x}")
            }
            EventDecodeError::UnknownWatermarkStatus(status) => write!(
                f,
                "watermark status {status} is neither 0 (active) nor 1 (idle)"
            ),
        }
    }
}

impl From<EventDecodeError> for ProtocolViolation {
    fn from(err: EventDecodeError) -> Self {
        ProtocolViolation(err.to_string())
    }
}

/// The preamble this build sends.
pub(crate) fn preamble() -> [u8; PREAMBLE_LEN] {
    let v = PROTOCOL_VERSION.to_be_bytes();
    [
        PREAMBLE_MAGIC[0],
        PREAMBLE_MAGIC[1],
        PREAMBLE_MAGIC[2],
        PREAMBLE_MAGIC[3],
        v[0],
        v[1],
    ]
}

/// Checks a peer's preamble.
pub(crate) fn check_preamble(bytes: &[u8; PREAMBLE_LEN]) -> Result<(), ProtocolViolation> {
    if bytes[..4] != PREAMBLE_MAGIC {
        return Err(violation(format!("bad preamble {:02x?}", &bytes[..])));
    }
    let version = u16::from_be_bytes([bytes[4], bytes[5]]);
    if version != PROTOCOL_VERSION {
        return Err(violation(format!(
            "protocol version {version}, this side speaks {PROTOCOL_VERSION}"
        )));
    }
    Ok(())
}

/// The largest `len` a receiver with `segment_size` accepts.
pub(crate) fn max_frame_len(segment_size: usize) -> usize {
    5 + BUFFER_HEADER_BODY + segment_size.max(MAX_ERROR_MESSAGE + 16)
}

/// What a BufferResponse carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataType {
    Buffer,
    Event,
}

/// Why an ErrorResponse was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    PartitionNotFound,
    ProducerFailed,
    Protocol,
    Rejected,
}

/// A message from a consumer to a producer's server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ClientMessage {
    PartitionRequest {
        partition: ResultPartitionId,
        subpartition: u32,
        channel: u64,
        credit: u32,
    },
    AddCredit {
        channel: u64,
        credit: u32,
    },
    Cancel {
        channel: u64,
    },
    Close,
}

/// A message from a producer's server, borrowing its payload from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServerMessage<'a> {
    Buffer {
        channel: u64,
        seq: u32,
        backlog: u32,
        data_type: DataType,
        payload: &'a [u8],
    },
    Error {
        channel: Option<u64>,
        kind: ErrorKind,
        message: String,
    },
}

fn put_header(out: &mut Vec<u8>, id: u8, body_len: usize) {
    let len = u32::try_from(5 + body_len).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&FRAME_MAGIC.to_be_bytes());
    out.push(id);
}

/// Appends a client message.
pub(crate) fn encode_client(out: &mut Vec<u8>, msg: &ClientMessage) {
    match msg {
        ClientMessage::PartitionRequest {
            partition,
            subpartition,
            channel,
            credit,
        } => {
            put_header(out, ID_PARTITION_REQUEST, 16 + 16 + 4 + 4 + 4 + 4 + 8 + 4);
            let p = &partition.producer;
            out.extend_from_slice(
                &p.execution_graph_id
                    .as_abstract_id()
                    .as_u128()
                    .to_be_bytes(),
            );
            out.extend_from_slice(
                &p.vertex
                    .job_vertex_id
                    .as_abstract_id()
                    .as_u128()
                    .to_be_bytes(),
            );
            out.extend_from_slice(&p.vertex.subtask_index.to_be_bytes());
            out.extend_from_slice(&p.attempt_number.to_be_bytes());
            out.extend_from_slice(&partition.result_index.to_be_bytes());
            out.extend_from_slice(&subpartition.to_be_bytes());
            out.extend_from_slice(&channel.to_be_bytes());
            out.extend_from_slice(&credit.to_be_bytes());
        }
        ClientMessage::AddCredit { channel, credit } => {
            put_header(out, ID_ADD_CREDIT, 12);
            out.extend_from_slice(&channel.to_be_bytes());
            out.extend_from_slice(&credit.to_be_bytes());
        }
        ClientMessage::Cancel { channel } => {
            put_header(out, ID_CANCEL, 8);
            out.extend_from_slice(&channel.to_be_bytes());
        }
        ClientMessage::Close => put_header(out, ID_CLOSE, 0),
    }
}

/// Appends a BufferResponse carrying `payload`.
pub(crate) fn encode_buffer(
    out: &mut Vec<u8>,
    channel: u64,
    seq: u32,
    backlog: u32,
    data_type: DataType,
    payload: &[u8],
) {
    put_header(out, ID_BUFFER_RESPONSE, BUFFER_HEADER_BODY + payload.len());
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&backlog.to_be_bytes());
    out.push(match data_type {
        DataType::Buffer => DATA_BUFFER,
        DataType::Event => DATA_EVENT,
    });
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    out.extend_from_slice(payload);
}

/// Appends an event as a BufferResponse.
pub(crate) fn encode_event(out: &mut Vec<u8>, channel: u64, seq: u32, event: NetworkEvent) {
    let mut payload = [0u8; MAX_EVENT_PAYLOAD];
    let len = encode_event_payload(&mut payload, event);
    encode_buffer(out, channel, seq, 0, DataType::Event, &payload[..len]);
}

/// Writes `event`'s payload at the start of `out`; returns its length.
fn encode_event_payload(out: &mut [u8; MAX_EVENT_PAYLOAD], event: NetworkEvent) -> usize {
    match event {
        NetworkEvent::EndOfPartition => {
            out[0] = EVENT_END_OF_PARTITION;
            1
        }
        NetworkEvent::EndOfData => {
            out[0] = EVENT_END_OF_DATA;
            1
        }
        NetworkEvent::CheckpointBarrier {
            id,
            timestamp,
            savepoint,
        } => {
            out[0] = EVENT_CHECKPOINT_BARRIER;
            out[1..9].copy_from_slice(&id.to_be_bytes());
            out[9..17].copy_from_slice(&timestamp.to_be_bytes());
            out[17] = if savepoint { BARRIER_FLAG_SAVEPOINT } else { 0 };
            BARRIER_PAYLOAD_LEN
        }
        NetworkEvent::Watermark(watermark) => {
            out[0] = EVENT_WATERMARK;
            out[1..9].copy_from_slice(&watermark.to_be_bytes());
            WATERMARK_PAYLOAD_LEN
        }
        NetworkEvent::WatermarkStatus { idle } => {
            out[0] = EVENT_WATERMARK_STATUS;
            out[1] = u8::from(idle);
            WATERMARK_STATUS_PAYLOAD_LEN
        }
    }
}

/// Decodes an event payload.
pub(crate) fn decode_event(payload: &[u8]) -> Result<NetworkEvent, EventDecodeError> {
    let Some((&tag, rest)) = payload.split_first() else {
        return Err(EventDecodeError::Empty);
    };
    let expect_len = |event: &'static str, expected: usize| {
        if payload.len() == expected {
            Ok(())
        } else {
            Err(EventDecodeError::WrongLength {
                event,
                expected,
                actual: payload.len(),
            })
        }
    };
    match tag {
        EVENT_END_OF_PARTITION => {
            expect_len("EndOfPartition", 1)?;
            Ok(NetworkEvent::EndOfPartition)
        }
        EVENT_END_OF_DATA => {
            expect_len("EndOfData", 1)?;
            Ok(NetworkEvent::EndOfData)
        }
        EVENT_CHECKPOINT_BARRIER => {
            expect_len("CheckpointBarrier", BARRIER_PAYLOAD_LEN)?;
            let (id, rest) = rest.split_at(8);
            let (timestamp, flags) = rest.split_at(8);
            let mut a = [0u8; 8];
            a.copy_from_slice(id);
            let id = u64::from_be_bytes(a);
            a.copy_from_slice(timestamp);
            let timestamp = i64::from_be_bytes(a);
            let flags = flags.first().copied().unwrap_or(0);
            if flags & !BARRIER_FLAG_SAVEPOINT != 0 {
                return Err(EventDecodeError::UnknownFlags(flags));
            }
            Ok(NetworkEvent::CheckpointBarrier {
                id,
                timestamp,
                savepoint: flags & BARRIER_FLAG_SAVEPOINT != 0,
            })
        }
        EVENT_WATERMARK => {
            expect_len("Watermark", WATERMARK_PAYLOAD_LEN)?;
            let mut a = [0u8; 8];
            a.copy_from_slice(rest);
            Ok(NetworkEvent::Watermark(i64::from_be_bytes(a)))
        }
        EVENT_WATERMARK_STATUS => {
            expect_len("WatermarkStatus", WATERMARK_STATUS_PAYLOAD_LEN)?;
            match rest.first().copied().unwrap_or(u8::MAX) {
                0 => Ok(NetworkEvent::WatermarkStatus { idle: false }),
                1 => Ok(NetworkEvent::WatermarkStatus { idle: true }),
                status => Err(EventDecodeError::UnknownWatermarkStatus(status)),
            }
        }
        other => Err(EventDecodeError::UnknownTag(other)),
    }
}

/// Appends an ErrorResponse (`channel` None: the whole connection).
pub(crate) fn encode_error(
    out: &mut Vec<u8>,
    channel: Option<u64>,
    kind: ErrorKind,
    message: &str,
) {
    let mut end = message.len().min(MAX_ERROR_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let message = &message.as_bytes()[..end];
    put_header(out, ID_ERROR_RESPONSE, 8 + 1 + 4 + message.len());
    out.extend_from_slice(&channel.unwrap_or(CONNECTION_WIDE).to_be_bytes());
    out.push(match kind {
        ErrorKind::PartitionNotFound => 0,
        ErrorKind::ProducerFailed => 1,
        ErrorKind::Protocol => 2,
        ErrorKind::Rejected => 3,
    });
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(message);
}

/// Finds the next whole frame at the start of `buf`: `Ok(None)` until it has arrived, else
/// `(frame length including the prefix, message id, body)`. The length and magic are checked
/// as soon as the header is there, before the caller reserves room for the body.
pub(crate) fn next_frame(
    buf: &[u8],
    max_len: usize,
) -> Result<Option<Frame<'_>>, ProtocolViolation> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len < 5 {
        return Err(violation(format!(
            "frame length {len} is shorter than a header"
        )));
    }
    if len > max_len {
        return Err(violation(format!(
            "frame length {len} exceeds the maximum of {max_len}"
        )));
    }
    if buf.len() >= 8 {
        let magic = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if magic != FRAME_MAGIC {
            return Err(violation(format!("bad frame magic {magic:#010x}")));
        }
    }
    let total = 4 + len;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((total, buf[8], &buf[9..total])))
}

/// A whole frame at the start of a buffer: its length including the prefix, message id, body.
pub(crate) type Frame<'a> = (usize, u8, &'a [u8]);

/// Bounds-checked big-endian reads.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], ProtocolViolation> {
        if self.0.len() < n {
            return Err(violation(format!("frame truncated reading {what}")));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self, what: &str) -> Result<u8, ProtocolViolation> {
        Ok(self.take(1, what)?[0])
    }
    fn u32(&mut self, what: &str) -> Result<u32, ProtocolViolation> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self, what: &str) -> Result<u64, ProtocolViolation> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8, what)?);
        Ok(u64::from_be_bytes(a))
    }
    fn u128(&mut self, what: &str) -> Result<u128, ProtocolViolation> {
        let mut a = [0u8; 16];
        a.copy_from_slice(self.take(16, what)?);
        Ok(u128::from_be_bytes(a))
    }
    fn end(&self) -> Result<(), ProtocolViolation> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(violation(format!(
                "{} unexpected bytes after the message",
                self.0.len()
            )))
        }
    }
}

/// Decodes a frame a server received.
pub(crate) fn decode_client(id: u8, body: &[u8]) -> Result<ClientMessage, ProtocolViolation> {
    let mut r = Reader(body);
    let msg = match id {
        ID_PARTITION_REQUEST => {
            let graph = r.u128("execution graph id")?;
            let vertex = r.u128("job vertex id")?;
            let subtask = r.u32("subtask index")?;
            let attempt = r.u32("attempt number")?;
            let result_index = r.u32("result index")?;
            let subpartition = r.u32("subpartition")?;
            let channel = r.u64("channel id")?;
            let credit = r.u32("credit")?;
            ClientMessage::PartitionRequest {
                partition: ResultPartitionId {
                    producer: ExecutionAttemptId {
                        execution_graph_id: ExecutionGraphId::from_u128(graph),
                        vertex: ExecutionVertexId {
                            job_vertex_id: JobVertexId::from_u128(vertex),
                            subtask_index: subtask,
                        },
                        attempt_number: attempt,
                    },
                    result_index,
                },
                subpartition,
                channel,
                credit,
            }
        }
        ID_ADD_CREDIT => ClientMessage::AddCredit {
            channel: r.u64("channel id")?,
            credit: r.u32("credit")?,
        },
        ID_CANCEL => ClientMessage::Cancel {
            channel: r.u64("channel id")?,
        },
        ID_CLOSE => ClientMessage::Close,
        other => return Err(violation(format!("unknown client message id {other}"))),
    };
    r.end()?;
    Ok(msg)
}

/// Decodes a frame a client received.
pub(crate) fn decode_server(id: u8, body: &[u8]) -> Result<ServerMessage<'_>, ProtocolViolation> {
    let mut r = Reader(body);
    let msg = match id {
        ID_BUFFER_RESPONSE => {
            let channel = r.u64("channel id")?;
            let seq = r.u32("sequence number")?;
            let backlog = r.u32("backlog")?;
            let data_type = match r.u8("data type")? {
                DATA_BUFFER => DataType::Buffer,
                DATA_EVENT => DataType::Event,
                other => return Err(violation(format!("unknown data type {other}"))),
            };
            let size = r.u32("size")? as usize;
            let payload = r.take(size, "payload")?;
            ServerMessage::Buffer {
                channel,
                seq,
                backlog,
                data_type,
                payload,
            }
        }
        ID_ERROR_RESPONSE => {
            let channel = r.u64("channel id")?;
            let kind = match r.u8("error kind")? {
                0 => ErrorKind::PartitionNotFound,
                1 => ErrorKind::ProducerFailed,
                2 => ErrorKind::Protocol,
                3 => ErrorKind::Rejected,
                other => return Err(violation(format!("unknown error kind {other}"))),
            };
            let len = r.u32("message length")? as usize;
            let message = String::from_utf8_lossy(r.take(len, "message")?).into_owned();
            ServerMessage::Error {
                channel: (channel != CONNECTION_WIDE).then_some(channel),
                kind,
                message,
            }
        }
        other => return Err(violation(format!("unknown server message id {other}"))),
    };
    r.end()?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition() -> ResultPartitionId {
        ResultPartitionId {
            producer: ExecutionAttemptId {
                execution_graph_id: ExecutionGraphId::from_u128(7),
                vertex: ExecutionVertexId {
                    job_vertex_id: JobVertexId::from_u128(u128::MAX - 3),
                    subtask_index: 2,
                },
                attempt_number: 1,
            },
            result_index: 5,
        }
    }

    #[test]
    fn client_messages_round_trip() {
        let msgs = [
            ClientMessage::PartitionRequest {
                partition: partition(),
                subpartition: 3,
                channel: 99,
                credit: 2,
            },
            ClientMessage::AddCredit {
                channel: 1,
                credit: 4,
            },
            ClientMessage::Cancel { channel: 8 },
            ClientMessage::Close,
        ];
        let mut out = Vec::new();
        for m in &msgs {
            encode_client(&mut out, m);
        }
        let mut rest = &out[..];
        for m in &msgs {
            let (n, id, body) = next_frame(rest, 1000).unwrap().unwrap();
            assert_eq!(&decode_client(id, body).unwrap(), m);
            rest = &rest[n..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn server_messages_round_trip() {
        let mut out = Vec::new();
        encode_buffer(&mut out, 3, 9, 2, DataType::Buffer, b"abc");
        encode_event(&mut out, 3, 10, NetworkEvent::EndOfPartition);
        encode_error(&mut out, None, ErrorKind::Protocol, "bad");
        let (n, id, body) = next_frame(&out, 1000).unwrap().unwrap();
        assert_eq!(
            decode_server(id, body).unwrap(),
            ServerMessage::Buffer {
                channel: 3,
                seq: 9,
                backlog: 2,
                data_type: DataType::Buffer,
                payload: b"abc"
            }
        );
        let (m, id, body) = next_frame(&out[n..], 1000).unwrap().unwrap();
        let ServerMessage::Buffer { payload, .. } = decode_server(id, body).unwrap() else {
            panic!("not a buffer");
        };
        assert_eq!(decode_event(payload).unwrap(), NetworkEvent::EndOfPartition);
        let (_, id, body) = next_frame(&out[n + m..], 1000).unwrap().unwrap();
        assert_eq!(
            decode_server(id, body).unwrap(),
            ServerMessage::Error {
                channel: None,
                kind: ErrorKind::Protocol,
                message: "bad".into()
            }
        );
    }

    #[test]
    fn malformed_frames_are_violations_not_panics() {
        // Oversized length, before the body arrives.
        assert!(next_frame(&[0xff, 0xff, 0xff, 0xff], 1000).is_err());
        // Too short to hold a header.
        assert!(next_frame(&[0, 0, 0, 2, 1, 2], 1000).is_err());
        // Bad magic.
        assert!(next_frame(&[0, 0, 0, 5, 1, 2, 3, 4, 0], 1000).is_err());
        // Truncated and trailing bodies, unknown ids.
        assert!(decode_client(ID_ADD_CREDIT, &[0; 3]).is_err());
        assert!(decode_client(ID_CANCEL, &[0; 9]).is_err());
        assert!(decode_client(77, &[]).is_err());
        assert!(decode_server(ID_BUFFER_RESPONSE, &[0; 21]).is_ok());
        assert!(decode_server(
            ID_BUFFER_RESPONSE,
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]
        )
        .is_err());
        assert!(decode_event(&[9]).is_err());
        // Every prefix of a good stream is either incomplete or decodes; never a panic.
        let mut out = Vec::new();
        encode_buffer(&mut out, 3, 9, 2, DataType::Buffer, b"abcdef");
        for cut in 0..out.len() {
            assert!(matches!(next_frame(&out[..cut], 1000), Ok(None)));
        }
        // Arbitrary bytes never panic.
        let mut seed = 0x1234_5678_u64;
        for _ in 0..2000 {
            let bytes: Vec<u8> = (0..40)
                .map(|_| {
                    seed = seed
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (seed >> 33) as u8
                })
                .collect();
            if let Ok(Some((_, id, body))) = next_frame(&bytes, 1000) {
                let _ = decode_client(id, body);
                let _ = decode_server(id, body);
            }
            let _ = decode_client(bytes[0] % 8, &bytes[1..]);
            let _ = decode_server(bytes[0] % 3, &bytes[1..]);
        }
    }

    fn barrier(id: u64, timestamp: i64, savepoint: bool) -> NetworkEvent {
        NetworkEvent::CheckpointBarrier {
            id,
            timestamp,
            savepoint,
        }
    }

    #[test]
    fn events_round_trip_through_frames() {
        let events = [
            NetworkEvent::EndOfPartition,
            NetworkEvent::EndOfData,
            barrier(0, 0, false),
            barrier(7, 1_700_000_000_123, true),
            barrier(u64::MAX, i64::MIN, false),
            barrier(1, -1, true),
            NetworkEvent::Watermark(i64::MIN),
            NetworkEvent::Watermark(1_700_000_000_123),
            NetworkEvent::Watermark(i64::MAX),
            NetworkEvent::WatermarkStatus { idle: true },
            NetworkEvent::WatermarkStatus { idle: false },
        ];
        let mut out = Vec::new();
        for (seq, event) in events.iter().enumerate() {
            encode_event(&mut out, 42, seq as u32, *event);
        }
        let mut rest = &out[..];
        for (seq, event) in events.iter().enumerate() {
            let (n, id, body) = next_frame(rest, 1000).unwrap().unwrap();
            let ServerMessage::Buffer {
                channel,
                seq: got_seq,
                data_type,
                payload,
                ..
            } = decode_server(id, body).unwrap()
            else {
                panic!("not a buffer response");
            };
            assert_eq!(
                (channel, got_seq, data_type),
                (42, seq as u32, DataType::Event)
            );
            assert_eq!(decode_event(payload).unwrap(), *event);
            rest = &rest[n..];
        }
        assert!(rest.is_empty());
    }

    #[test]
    fn event_payloads_have_the_documented_layout() {
        let mut p = [0u8; MAX_EVENT_PAYLOAD];
        assert_eq!(
            encode_event_payload(&mut p, NetworkEvent::EndOfPartition),
            1
        );
        assert_eq!(p[0], 0);
        assert_eq!(encode_event_payload(&mut p, NetworkEvent::EndOfData), 1);
        assert_eq!(p[0], 1);
        let n = encode_event_payload(&mut p, barrier(0x0102_0304_0506_0708, -2, true));
        assert_eq!(
            &p[..n],
            &[2, 1, 2, 3, 4, 5, 6, 7, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 1]
        );
        let n = encode_event_payload(&mut p, NetworkEvent::Watermark(0x0102_0304_0506_0708));
        assert_eq!(&p[..n], &[3, 1, 2, 3, 4, 5, 6, 7, 8]);
        let n = encode_event_payload(&mut p, NetworkEvent::WatermarkStatus { idle: true });
        assert_eq!(&p[..n], &[4, 1]);
    }

    #[test]
    fn malformed_events_are_typed_errors() {
        assert_eq!(decode_event(&[]), Err(EventDecodeError::Empty));
        assert_eq!(decode_event(&[5]), Err(EventDecodeError::UnknownTag(5)));
        assert!(matches!(
            decode_event(&[3, 1, 2]),
            Err(EventDecodeError::WrongLength {
                event: "Watermark",
                ..
            })
        ));
        assert!(matches!(
            decode_event(&[4]),
            Err(EventDecodeError::WrongLength {
                event: "WatermarkStatus",
                ..
            })
        ));
        assert_eq!(
            decode_event(&[4, 2]),
            Err(EventDecodeError::UnknownWatermarkStatus(2))
        );
        assert_eq!(
            decode_event(&[0xff, 0]),
            Err(EventDecodeError::UnknownTag(0xff))
        );
        assert_eq!(
            decode_event(&[0, 0]),
            Err(EventDecodeError::WrongLength {
                event: "EndOfPartition",
                expected: 1,
                actual: 2
            })
        );
        assert!(matches!(
            decode_event(&[1, 9]),
            Err(EventDecodeError::WrongLength { .. })
        ));
        // A barrier cut short, or with a trailing byte.
        let mut p = [0u8; MAX_EVENT_PAYLOAD];
        let n = encode_event_payload(&mut p, barrier(5, 6, false));
        for cut in 1..n {
            assert_eq!(
                decode_event(&p[..cut]),
                Err(EventDecodeError::WrongLength {
                    event: "CheckpointBarrier",
                    expected: BARRIER_PAYLOAD_LEN,
                    actual: cut
                })
            );
        }
        let mut long = p.to_vec();
        long.push(0);
        assert!(matches!(
            decode_event(&long),
            Err(EventDecodeError::WrongLength { actual: 19, .. })
        ));
        // Unknown flag bits.
        for flags in [2u8, 3, 0x80, 0xff] {
            p[17] = flags;
            assert_eq!(decode_event(&p), Err(EventDecodeError::UnknownFlags(flags)));
        }
        let v: ProtocolViolation = EventDecodeError::UnknownTag(9).into();
        assert!(v.0.contains("unknown event tag 9"), "{}", v.0);
    }

    #[test]
    fn arbitrary_event_payloads_never_panic() {
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        };
        let mut decoded = 0;
        for i in 0..20_000 {
            let len = usize::from(next()) % 24;
            let mut bytes: Vec<u8> = (0..len).map(|_| next()).collect();
            // Bias towards known tags so that the field decoding is exercised too.
            if let Some(first) = bytes.first_mut() {
                if i % 2 == 0 {
                    *first %= 4;
                }
            }
            if let Ok(event) = decode_event(&bytes) {
                decoded += 1;
                // What decodes encodes back to the same bytes.
                let mut p = [0u8; MAX_EVENT_PAYLOAD];
                let n = encode_event_payload(&mut p, event);
                assert_eq!(&p[..n], &bytes[..]);
            }
        }
        assert!(decoded > 0);
        // Every well-formed barrier decodes.
        for _ in 0..1000 {
            let mut p = [0u8; MAX_EVENT_PAYLOAD];
            for b in &mut p {
                *b = next();
            }
            p[0] = EVENT_CHECKPOINT_BARRIER;
            p[17] &= BARRIER_FLAG_SAVEPOINT;
            assert!(matches!(
                decode_event(&p),
                Ok(NetworkEvent::CheckpointBarrier { .. })
            ));
        }
    }
}
