//! The frame format of the RPC transport.
//!
//! A connection starts with a 6-byte preamble from each side, `b"RFLK"` then the protocol version
//! as a big-endian `u16`, followed by length-prefixed frames:
//!
//! ```text
//! frame    := len:u32be  kind:u8  body            (len counts kind + body; 1 <= len <= max)
//! Hello         0x01  rmp(Hello)                  dialer -> acceptor, first frame
//! HelloOk       0x02  rmp(HelloOk)                acceptor -> dialer
//! HelloRejected 0x03  rmp(RpcError)               acceptor -> dialer, then close
//! Request       0x10  flags:u8 id:u64be [token:16] elen:u8 endpoint mlen:u8 message payload
//!                     flags bit 0: a reply is expected (ask); bit 1: a fencing token follows
//!                     payload: rmp(message struct), the rest of the frame
//! Response      0x11  id:u64be status:u8 body      status 0: body = rmp(reply); 1: rmp(RpcError)
//! Resolve       0x12  id:u64be elen:u8 endpoint glen:u8 gateway   (answered with a Response)
//! TellBatch     0x13  flags:u8 [token:16] elen:u8 endpoint mlen:u8 message (plen:u32be payload)+
//!                     consecutive tells of one message kind to one endpoint, in order; flags bit 1:
//!                     a fencing token follows
//! GoAway        0x20  (empty)                     no more requests from me on this connection
//! Fatal         0x21  rmp(RpcError)               protocol error; the sender closes next
//! ```
//!
//! Order of fields must match between `encode_*` and [`decode`]; a new field means a new protocol
//! version. The length is checked against the receiver's `rpc.max-frame-size` before any buffer is
//! reserved, and every read below is bounds-checked: malformed input is a [`FrameError`], never a
//! panic.

use bytes::{Buf, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use crate::error::RpcError;
use crate::id::AbstractId;

/// The first four bytes each side sends.
pub const MAGIC: [u8; 4] = *b"RFLK";
/// The wire protocol version, checked in the preamble.
pub const PROTOCOL_VERSION: u16 = 1;
/// Length of the preamble.
pub const PREAMBLE_LEN: usize = 6;
/// Length of the length prefix.
pub const LEN_PREFIX: usize = 4;
/// Offset of the request id inside an encoded request frame (prefix, kind, flags).
const REQUEST_ID_OFFSET: usize = LEN_PREFIX + 2;

const KIND_HELLO: u8 = 0x01;
const KIND_HELLO_OK: u8 = 0x02;
const KIND_HELLO_REJECTED: u8 = 0x03;
const KIND_REQUEST: u8 = 0x10;
const KIND_RESPONSE: u8 = 0x11;
const KIND_RESOLVE: u8 = 0x12;
const KIND_TELL_BATCH: u8 = 0x13;
const KIND_GO_AWAY: u8 = 0x20;
const KIND_FATAL: u8 = 0x21;

const FLAG_EXPECTS_REPLY: u8 = 0b01;
const FLAG_TOKEN: u8 = 0b10;

/// The preamble this build sends.
pub fn preamble() -> [u8; PREAMBLE_LEN] {
    let v = PROTOCOL_VERSION.to_be_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], v[0], v[1]]
}

/// Checks a peer's preamble and returns its protocol version.
pub fn check_preamble(bytes: &[u8; PREAMBLE_LEN]) -> Result<u16, crate::error::HandshakeFailure> {
    if bytes[..4] != MAGIC {
        return Err(crate::error::HandshakeFailure::BadPreamble {
            found: bytes.to_vec(),
        });
    }
    Ok(u16::from_be_bytes([bytes[4], bytes[5]]))
}

/// The dialer's introduction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Must equal the acceptor's cluster id.
    pub cluster_id: String,
    /// The dialer's service instance, to break ties between simultaneous connections.
    pub instance: AbstractId,
    /// `host:port` the dialer is reachable at: the acceptor files the connection under it.
    pub advertised: String,
}

/// The acceptor's answer to a good [`Hello`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HelloOk {
    /// The acceptor's service instance.
    pub instance: AbstractId,
    /// `host:port` the acceptor advertises.
    pub advertised: String,
}

/// A UTF-8 name (endpoint, message kind) borrowed from a received frame: no copy, no allocation.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Name(Bytes);

impl Name {
    /// Checks `bytes` are UTF-8.
    fn new(bytes: Bytes) -> Option<Name> {
        std::str::from_utf8(&bytes).ok()?;
        Some(Name(bytes))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        // Checked in `new`; the fallback is never taken.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl std::fmt::Debug for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl From<&str> for Name {
    fn from(s: &str) -> Name {
        Name(Bytes::copy_from_slice(s.as_bytes()))
    }
}

/// A decoded request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestFrame {
    /// Correlates the response; unused for tells.
    pub id: u64,
    /// Ask (true) or tell (false).
    pub expects_reply: bool,
    /// The fencing token stamped by a fenced gateway.
    pub token: Option<AbstractId>,
    /// Target endpoint name.
    pub endpoint: Name,
    /// Message kind (the message type's name).
    pub message: Name,
    /// rmp-serde encoded message.
    pub payload: Bytes,
}

/// A decoded batch of tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TellBatchFrame {
    /// The fencing token stamped by a fenced gateway.
    pub token: Option<AbstractId>,
    /// Target endpoint name.
    pub endpoint: Name,
    /// Message kind of every tell in the batch.
    pub message: Name,
    /// The tells' payloads, each `plen:u32be` then rmp-serde bytes; checked well-formed.
    payloads: Bytes,
}

impl TellBatchFrame {
    /// The payloads, in order.
    pub fn payloads(&self) -> TellPayloads {
        TellPayloads(self.payloads.clone())
    }

    /// How many tells.
    pub fn len(&self) -> usize {
        self.payloads().count()
    }

    /// True without tells (never, for a decoded frame).
    pub fn is_empty(&self) -> bool {
        self.payloads.is_empty()
    }
}

/// Iterates over a batch's payloads.
#[derive(Debug, Clone)]
pub struct TellPayloads(Bytes);

impl TellPayloads {
    /// Calls `f` with each payload in order, borrowing them from the frame (no refcounting).
    pub fn for_each_slice(&self, mut f: impl FnMut(&[u8])) {
        let mut rest = &self.0[..];
        while rest.len() >= 4 {
            let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
            let Some(payload) = rest.get(4..4 + len) else {
                return;
            };
            f(payload);
            rest = &rest[4 + len..];
        }
    }
}

impl Iterator for TellPayloads {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        if self.0.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes([self.0[0], self.0[1], self.0[2], self.0[3]]) as usize;
        if self.0.len() < 4 + len {
            return None;
        }
        self.0.advance(4);
        Some(self.0.split_to(len))
    }
}

/// The tell batch a sender is appending to: the last frame in its outbox.
#[derive(Debug, Clone)]
pub struct OpenTellBatch {
    start: usize,
    endpoint: String,
    message: String,
    token: Option<AbstractId>,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// See [`Hello`].
    Hello(Hello),
    /// See [`HelloOk`].
    HelloOk(HelloOk),
    /// The acceptor refused the handshake.
    HelloRejected(RpcError),
    /// A message for an endpoint.
    Request(RequestFrame),
    /// The answer to a request or resolve with the same id.
    Response {
        /// The request's id.
        id: u64,
        /// The encoded reply or the error.
        result: Result<Bytes, RpcError>,
    },
    /// Asks whether `endpoint` exists and implements `gateway` (Flink's `RemoteHandshakeMessage`).
    Resolve {
        /// Correlates the response.
        id: u64,
        /// Endpoint name.
        endpoint: String,
        /// Gateway type the caller wants.
        gateway: String,
    },
    /// Tells of one message kind to one endpoint.
    TellBatch(TellBatchFrame),
    /// The sender will send no more requests on this connection.
    GoAway,
    /// The sender saw a protocol error and closes the connection.
    Fatal(RpcError),
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The length prefix exceeds the receiver's maximum.
    #[error("frame of {size} bytes exceeds the maximum of {max}")]
    TooLarge {
        /// Announced length including the prefix.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A zero length prefix.
    #[error("empty frame")]
    Empty,
    /// An unknown frame kind byte.
    #[error("unknown frame kind 0x{0:02x}")]
    UnknownKind(u8),
    /// The frame ends before a field does.
    #[error("truncated {0} frame")]
    Truncated(&'static str),
    /// A name is not UTF-8.
    #[error("a name in a {0} frame is not utf-8")]
    BadName(&'static str),
    /// Unknown bits in a request's flags or a response's status.
    #[error("invalid {0} in a frame")]
    BadField(&'static str),
    /// An rmp-serde body did not decode.
    #[error("undecodable {what} body: {detail}")]
    Body {
        /// Which frame.
        what: &'static str,
        /// The decoder's message.
        detail: String,
    },
    /// Bytes follow the last field of a fixed-size frame.
    #[error("{0} frame has trailing bytes")]
    Trailing(&'static str),
}

impl FrameError {
    /// The error to report to the peer and the caller.
    pub fn into_rpc(self, peer: &str) -> RpcError {
        match self {
            FrameError::TooLarge { size, max } => RpcError::FrameTooLarge { size, max },
            other => RpcError::ProtocolViolation {
                peer: peer.to_string(),
                detail: other.to_string(),
            },
        }
    }
}

// ---- encoding ----

fn begin(buf: &mut Vec<u8>, kind: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; LEN_PREFIX]);
    buf.push(kind);
    start
}

/// Patches the length prefix and checks the frame against `max`.
fn finish(buf: &mut Vec<u8>, start: usize, max: usize) -> Result<(), RpcError> {
    let size = buf.len() - start;
    if size > max {
        buf.truncate(start);
        return Err(RpcError::FrameTooLarge {
            size: size as u64,
            max: max as u64,
        });
    }
    let Ok(len) = u32::try_from(size - LEN_PREFIX) else {
        buf.truncate(start);
        return Err(RpcError::FrameTooLarge {
            size: size as u64,
            max: max as u64,
        });
    };
    buf[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

fn put_name(buf: &mut Vec<u8>, name: &str, what: &str) -> Result<(), RpcError> {
    let len = u8::try_from(name.len())
        .map_err(|_| RpcError::serialize(what, "name longer than 255 bytes"))?;
    buf.push(len);
    buf.extend_from_slice(name.as_bytes());
    Ok(())
}

fn encode_rmp<T: Serialize>(
    kind: u8,
    value: &T,
    what: &str,
    max: usize,
) -> Result<Vec<u8>, RpcError> {
    let mut buf = Vec::with_capacity(64);
    let start = begin(&mut buf, kind);
    rmp_serde::encode::write(&mut buf, value).map_err(|e| RpcError::serialize(what, e))?;
    finish(&mut buf, start, max)?;
    Ok(buf)
}

/// Encodes a [`Hello`] frame.
pub fn encode_hello(hello: &Hello, max: usize) -> Result<Vec<u8>, RpcError> {
    encode_rmp(KIND_HELLO, hello, "hello", max)
}

/// Encodes a [`HelloOk`] frame.
pub fn encode_hello_ok(ok: &HelloOk, max: usize) -> Result<Vec<u8>, RpcError> {
    encode_rmp(KIND_HELLO_OK, ok, "hello reply", max)
}

/// Encodes a handshake rejection.
pub fn encode_hello_rejected(err: &RpcError, max: usize) -> Result<Vec<u8>, RpcError> {
    encode_rmp(KIND_HELLO_REJECTED, err, "handshake rejection", max)
}

/// Encodes a fatal-error frame.
pub fn encode_fatal(err: &RpcError, max: usize) -> Result<Vec<u8>, RpcError> {
    encode_rmp(KIND_FATAL, err, "fatal error", max)
}

/// Encodes a go-away frame.
pub fn encode_go_away() -> Vec<u8> {
    let mut buf = Vec::with_capacity(5);
    buf.extend_from_slice(&1u32.to_be_bytes());
    buf.push(KIND_GO_AWAY);
    buf
}

/// The header fields of a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestHeader<'a> {
    /// Ask or tell.
    pub expects_reply: bool,
    /// Fencing token to stamp.
    pub token: Option<AbstractId>,
    /// Target endpoint.
    pub endpoint: &'a str,
    /// Message kind.
    pub message: &'a str,
}

/// Encodes a request whose payload is `msg`, with request id 0 (see [`set_request_id`]). Fails with
/// `FrameTooLarge` when the frame would exceed `max`, before anything is sent.
pub fn encode_request<M: Serialize>(
    header: RequestHeader<'_>,
    msg: &M,
    max: usize,
) -> Result<Vec<u8>, RpcError> {
    // Room for the header and a small message, so small frames need one allocation.
    let mut buf = Vec::with_capacity(192 + header.endpoint.len() + header.message.len());
    encode_request_into(&mut buf, header, msg, 0, max)?;
    Ok(buf)
}

/// Appends a request frame with request id `id` to `buf`. On any error `buf` is left as it was.
pub fn encode_request_into<M: Serialize>(
    buf: &mut Vec<u8>,
    header: RequestHeader<'_>,
    msg: &M,
    id: u64,
    max: usize,
) -> Result<(), RpcError> {
    let start = begin(buf, KIND_REQUEST);
    let mut flags = 0;
    if header.expects_reply {
        flags |= FLAG_EXPECTS_REPLY;
    }
    if header.token.is_some() {
        flags |= FLAG_TOKEN;
    }
    buf.push(flags);
    buf.extend_from_slice(&id.to_be_bytes());
    if let Some(token) = header.token {
        buf.extend_from_slice(&token.as_u128().to_be_bytes());
    }
    let body = put_name(buf, header.endpoint, "endpoint name")
        .and_then(|()| put_name(buf, header.message, "message name"))
        .and_then(|()| {
            rmp_serde::encode::write(buf, msg)
                .map_err(|e| RpcError::serialize(format!("message {}", header.message), e))
        });
    if let Err(err) = body {
        buf.truncate(start);
        return Err(err);
    }
    finish(buf, start, max)
}

/// Appends a tell to `buf`: to the batch in `open` when that is for the same endpoint, message
/// and token and stays within `max`, else as a new batch frame (then `open` describes it). On any
/// error `buf` is left as it was.
pub fn encode_tell_into<M: Serialize>(
    buf: &mut Vec<u8>,
    open: &mut Option<OpenTellBatch>,
    header: RequestHeader<'_>,
    msg: &M,
    max: usize,
) -> Result<(), RpcError> {
    let extend = open.as_ref().is_some_and(|b| {
        b.endpoint == header.endpoint
            && b.message == header.message
            && b.token == header.token
            && b.start < buf.len()
    });
    if extend {
        if let Some(batch) = open.as_ref() {
            let start = batch.start;
            let mark = buf.len();
            append_tell(buf, msg, header.message)?;
            if buf.len() - start > max {
                // Too big to grow: this tell starts a new batch instead.
                buf.truncate(mark);
            } else {
                let len = (buf.len() - start - LEN_PREFIX) as u32;
                buf[start..start + LEN_PREFIX].copy_from_slice(&len.to_be_bytes());
                return Ok(());
            }
        }
    }
    let start = begin(buf, KIND_TELL_BATCH);
    buf.push(if header.token.is_some() {
        FLAG_TOKEN
    } else {
        0
    });
    if let Some(token) = header.token {
        buf.extend_from_slice(&token.as_u128().to_be_bytes());
    }
    let body = put_name(buf, header.endpoint, "endpoint name")
        .and_then(|()| put_name(buf, header.message, "message name"))
        .and_then(|()| append_tell(buf, msg, header.message));
    if let Err(err) = body {
        buf.truncate(start);
        return Err(err);
    }
    finish(buf, start, max)?;
    *open = Some(OpenTellBatch {
        start,
        endpoint: header.endpoint.to_string(),
        message: header.message.to_string(),
        token: header.token,
    });
    Ok(())
}

/// Appends `plen:u32be` and the encoded message.
fn append_tell<M: Serialize>(buf: &mut Vec<u8>, msg: &M, name: &str) -> Result<(), RpcError> {
    let at = buf.len();
    buf.extend_from_slice(&[0; 4]);
    if let Err(e) = rmp_serde::encode::write(buf, msg) {
        buf.truncate(at);
        return Err(RpcError::serialize(format!("message {name}"), e));
    }
    let len = (buf.len() - at - 4) as u32;
    buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Writes the request id into a frame made by [`encode_request`].
pub fn set_request_id(frame: &mut [u8], id: u64) {
    if let Some(slot) = frame.get_mut(REQUEST_ID_OFFSET..REQUEST_ID_OFFSET + 8) {
        slot.copy_from_slice(&id.to_be_bytes());
    }
}

/// Encodes a successful response carrying `value`.
pub fn encode_response_ok<T: Serialize + ?Sized>(
    id: u64,
    value: &T,
    what: &str,
    max: usize,
) -> Result<Vec<u8>, RpcError> {
    let mut buf = Vec::with_capacity(192);
    encode_response_ok_into(&mut buf, id, value, what, max)?;
    Ok(buf)
}

/// Appends a successful response carrying `value` to `buf`. On any error `buf` is left as it was.
pub fn encode_response_ok_into<T: Serialize + ?Sized>(
    buf: &mut Vec<u8>,
    id: u64,
    value: &T,
    what: &str,
    max: usize,
) -> Result<(), RpcError> {
    let start = begin(buf, KIND_RESPONSE);
    buf.extend_from_slice(&id.to_be_bytes());
    buf.push(0);
    if let Err(e) = rmp_serde::encode::write(buf, value) {
        buf.truncate(start);
        return Err(RpcError::serialize(what, e));
    }
    finish(buf, start, max)
}

/// Encodes a successful response whose body is already encoded.
pub fn encode_response_raw(id: u64, body: &[u8], max: usize) -> Result<Vec<u8>, RpcError> {
    let mut buf = Vec::with_capacity(LEN_PREFIX + 10 + body.len());
    let start = begin(&mut buf, KIND_RESPONSE);
    buf.extend_from_slice(&id.to_be_bytes());
    buf.push(0);
    buf.extend_from_slice(body);
    finish(&mut buf, start, max)?;
    Ok(buf)
}

/// Encodes a failed response. An error too large for a frame is replaced by a short one.
pub fn encode_response_err(id: u64, err: &RpcError, max: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    encode_response_err_into(&mut buf, id, err, max);
    buf
}

/// Appends a failed response to `buf`; an error too large for a frame is replaced by a short one.
pub fn encode_response_err_into(buf: &mut Vec<u8>, id: u64, err: &RpcError, max: usize) {
    let mut encode = |err: &RpcError| -> Result<(), RpcError> {
        let start = begin(buf, KIND_RESPONSE);
        buf.extend_from_slice(&id.to_be_bytes());
        buf.push(1);
        if let Err(e) = rmp_serde::encode::write(buf, err) {
            buf.truncate(start);
            return Err(RpcError::serialize("error reply", e));
        }
        finish(buf, start, max)
    };
    if encode(err).is_err() {
        let short = RpcError::FrameTooLarge {
            size: u64::MAX,
            max: max as u64,
        };
        // A fixed small error always encodes and fits in MIN_FRAME_SIZE.
        let _ = encode(&short);
    }
}

/// Encodes a resolve request.
pub fn encode_resolve(
    id: u64,
    endpoint: &str,
    gateway: &str,
    max: usize,
) -> Result<Vec<u8>, RpcError> {
    let mut buf = Vec::with_capacity(32 + endpoint.len() + gateway.len());
    let start = begin(&mut buf, KIND_RESOLVE);
    buf.extend_from_slice(&id.to_be_bytes());
    put_name(&mut buf, endpoint, "endpoint name")?;
    put_name(&mut buf, gateway, "gateway name")?;
    finish(&mut buf, start, max)?;
    Ok(buf)
}

// ---- decoding ----

/// Splits one whole frame body (kind and body, without the length prefix) off the front of `buf`,
/// if one has fully arrived. The length is checked against `max` before anything is reserved.
pub fn split_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < LEN_PREFIX {
        return Ok(None);
    }
    let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    let total = len + LEN_PREFIX;
    if total > max {
        return Err(FrameError::TooLarge {
            size: total as u64,
            max: max as u64,
        });
    }
    if buf.len() < total {
        buf.reserve(total - buf.len());
        return Ok(None);
    }
    buf.advance(LEN_PREFIX);
    Ok(Some(buf.split_to(len).freeze()))
}

struct Cursor {
    bytes: Bytes,
    what: &'static str,
}

impl Cursor {
    fn u8(&mut self) -> Result<u8, FrameError> {
        if self.bytes.is_empty() {
            return Err(FrameError::Truncated(self.what));
        }
        Ok(self.bytes.get_u8())
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        if self.bytes.len() < 8 {
            return Err(FrameError::Truncated(self.what));
        }
        Ok(self.bytes.get_u64())
    }

    fn u128(&mut self) -> Result<u128, FrameError> {
        if self.bytes.len() < 16 {
            return Err(FrameError::Truncated(self.what));
        }
        Ok(self.bytes.get_u128())
    }

    fn name(&mut self) -> Result<Name, FrameError> {
        let len = self.u8()? as usize;
        if self.bytes.len() < len {
            return Err(FrameError::Truncated(self.what));
        }
        Name::new(self.bytes.split_to(len)).ok_or(FrameError::BadName(self.what))
    }

    fn end(self) -> Result<(), FrameError> {
        if self.bytes.is_empty() {
            Ok(())
        } else {
            Err(FrameError::Trailing(self.what))
        }
    }
}

fn rmp_body<T: for<'de> Deserialize<'de>>(
    body: &[u8],
    what: &'static str,
) -> Result<T, FrameError> {
    rmp_serde::from_slice(body).map_err(|e| FrameError::Body {
        what,
        detail: e.to_string(),
    })
}

/// Decodes one frame body as split off by [`split_frame`].
pub fn decode(mut frame: Bytes) -> Result<Frame, FrameError> {
    if frame.is_empty() {
        return Err(FrameError::Empty);
    }
    let kind = frame.get_u8();
    match kind {
        KIND_HELLO => rmp_body(&frame, "hello").map(Frame::Hello),
        KIND_HELLO_OK => rmp_body(&frame, "hello reply").map(Frame::HelloOk),
        KIND_HELLO_REJECTED => rmp_body(&frame, "handshake rejection").map(Frame::HelloRejected),
        KIND_FATAL => rmp_body(&frame, "fatal").map(Frame::Fatal),
        KIND_GO_AWAY => Cursor {
            bytes: frame,
            what: "go-away",
        }
        .end()
        .map(|()| Frame::GoAway),
        KIND_REQUEST => {
            let mut c = Cursor {
                bytes: frame,
                what: "request",
            };
            let flags = c.u8()?;
            if flags & !(FLAG_EXPECTS_REPLY | FLAG_TOKEN) != 0 {
                return Err(FrameError::BadField("request flags"));
            }
            let id = c.u64()?;
            let token = if flags & FLAG_TOKEN != 0 {
                Some(AbstractId::from_u128(c.u128()?))
            } else {
                None
            };
            let endpoint = c.name()?;
            let message = c.name()?;
            Ok(Frame::Request(RequestFrame {
                id,
                expects_reply: flags & FLAG_EXPECTS_REPLY != 0,
                token,
                endpoint,
                message,
                payload: c.bytes,
            }))
        }
        KIND_RESPONSE => {
            let mut c = Cursor {
                bytes: frame,
                what: "response",
            };
            let id = c.u64()?;
            let result = match c.u8()? {
                0 => Ok(c.bytes),
                1 => Err(rmp_body::<RpcError>(&c.bytes, "error response")?),
                _ => return Err(FrameError::BadField("response status")),
            };
            Ok(Frame::Response { id, result })
        }
        KIND_TELL_BATCH => {
            let mut c = Cursor {
                bytes: frame,
                what: "tell batch",
            };
            let flags = c.u8()?;
            if flags & !FLAG_TOKEN != 0 {
                return Err(FrameError::BadField("tell batch flags"));
            }
            let token = if flags & FLAG_TOKEN != 0 {
                Some(AbstractId::from_u128(c.u128()?))
            } else {
                None
            };
            let endpoint = c.name()?;
            let message = c.name()?;
            // Check the payload list is well formed now, so iterating it later cannot fail.
            let mut rest = &c.bytes[..];
            if rest.is_empty() {
                return Err(FrameError::Truncated("tell batch"));
            }
            while !rest.is_empty() {
                if rest.len() < 4 {
                    return Err(FrameError::Truncated("tell batch"));
                }
                let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
                if rest.len() - 4 < len {
                    return Err(FrameError::Truncated("tell batch"));
                }
                rest = &rest[4 + len..];
            }
            Ok(Frame::TellBatch(TellBatchFrame {
                token,
                endpoint,
                message,
                payloads: c.bytes,
            }))
        }
        KIND_RESOLVE => {
            let mut c = Cursor {
                bytes: frame,
                what: "resolve",
            };
            let id = c.u64()?;
            let endpoint = c.name()?.to_string();
            let gateway = c.name()?.to_string();
            c.end()?;
            Ok(Frame::Resolve {
                id,
                endpoint,
                gateway,
            })
        }
        other => Err(FrameError::UnknownKind(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MAX: usize = 1 << 20;

    fn split_one(encoded: &[u8]) -> Bytes {
        let mut buf = BytesMut::from(encoded);
        let frame = split_frame(&mut buf, MAX)
            .expect("valid")
            .expect("complete");
        assert!(buf.is_empty());
        frame
    }

    fn roundtrip(encoded: &[u8]) -> Frame {
        decode(split_one(encoded)).expect("decodes")
    }

    #[test]
    fn request_round_trips_with_and_without_token() {
        for token in [None, Some(AbstractId::from_u128(42))] {
            let header = RequestHeader {
                expects_reply: token.is_some(),
                token,
                endpoint: "taskmanager_0",
                message: "SubmitTask",
            };
            let mut encoded = encode_request(header, &("hello", 7u32), MAX).expect("encodes");
            set_request_id(&mut encoded, 99);
            match roundtrip(&encoded) {
                Frame::Request(r) => {
                    assert_eq!(r.id, 99);
                    assert_eq!(r.token, token);
                    assert_eq!(r.expects_reply, token.is_some());
                    assert_eq!(r.endpoint.as_str(), "taskmanager_0");
                    assert_eq!(r.message.as_str(), "SubmitTask");
                    let (s, n): (String, u32) = rmp_serde::from_slice(&r.payload).expect("payload");
                    assert_eq!((s.as_str(), n), ("hello", 7));
                }
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn tells_batch_up_and_round_trip() {
        let header = RequestHeader {
            expects_reply: false,
            token: Some(AbstractId::from_u128(9)),
            endpoint: "taskmanager_0",
            message: "Add",
        };
        let mut buf = Vec::new();
        let mut open = None;
        for i in 0..3u32 {
            encode_tell_into(&mut buf, &mut open, header, &i, MAX).expect("encodes");
        }
        // Another message kind starts a new batch.
        let other = RequestHeader {
            message: "Sub",
            ..header
        };
        encode_tell_into(&mut buf, &mut open, other, &7u32, MAX).expect("encodes");
        let mut stream = BytesMut::from(&buf[..]);
        let first = decode(split_frame(&mut stream, MAX).unwrap().unwrap()).expect("decodes");
        let second = decode(split_frame(&mut stream, MAX).unwrap().unwrap()).expect("decodes");
        assert!(stream.is_empty());
        match (first, second) {
            (Frame::TellBatch(a), Frame::TellBatch(b)) => {
                assert_eq!(a.token, Some(AbstractId::from_u128(9)));
                assert_eq!(a.endpoint.as_str(), "taskmanager_0");
                assert_eq!(a.message.as_str(), "Add");
                let values: Vec<u32> = a
                    .payloads()
                    .map(|p| rmp_serde::from_slice(&p).unwrap())
                    .collect();
                assert_eq!(values, vec![0, 1, 2]);
                assert_eq!(b.message.as_str(), "Sub");
                assert_eq!(b.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        // A batch never grows past the frame limit.
        let mut buf = Vec::new();
        let mut open = None;
        let big = vec![0u8; 600];
        for _ in 0..4 {
            encode_tell_into(&mut buf, &mut open, header, &big, 1024).expect("encodes");
        }
        let mut stream = BytesMut::from(&buf[..]);
        let mut frames = 0;
        while let Some(f) = split_frame(&mut stream, 1024).expect("within the limit") {
            assert!(matches!(decode(f), Ok(Frame::TellBatch(_))));
            frames += 1;
        }
        assert_eq!(frames, 4);
        // Malformed payload lists are refused.
        for body in [
            vec![KIND_TELL_BATCH, 0, 1, b'e', 1, b'm'],
            vec![KIND_TELL_BATCH, 0, 1, b'e', 1, b'm', 0, 0, 0, 9, 1],
        ] {
            assert_eq!(
                decode(Bytes::from(body)),
                Err(FrameError::Truncated("tell batch"))
            );
        }
    }

    #[test]
    fn other_frames_round_trip() {
        let err = RpcError::ServiceShutdown;
        let hello = Hello {
            cluster_id: "c".into(),
            instance: AbstractId::from_u128(1),
            advertised: "h:1".into(),
        };
        let ok = HelloOk {
            instance: AbstractId::from_u128(2),
            advertised: "h:2".into(),
        };
        assert_eq!(
            roundtrip(&encode_hello(&hello, MAX).unwrap()),
            Frame::Hello(hello)
        );
        assert_eq!(
            roundtrip(&encode_hello_ok(&ok, MAX).unwrap()),
            Frame::HelloOk(ok)
        );
        assert_eq!(
            roundtrip(&encode_hello_rejected(&err, MAX).unwrap()),
            Frame::HelloRejected(err.clone())
        );
        assert_eq!(
            roundtrip(&encode_fatal(&err, MAX).unwrap()),
            Frame::Fatal(err.clone())
        );
        assert_eq!(roundtrip(&encode_go_away()), Frame::GoAway);
        assert_eq!(
            roundtrip(&encode_response_err(5, &err, MAX)),
            Frame::Response {
                id: 5,
                result: Err(err)
            }
        );
        match roundtrip(&encode_response_ok(6, &123u64, "reply", MAX).unwrap()) {
            Frame::Response {
                id: 6,
                result: Ok(body),
            } => {
                assert_eq!(rmp_serde::from_slice::<u64>(&body).unwrap(), 123)
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            roundtrip(&encode_resolve(7, "dispatcher_0", "DispatcherGateway", MAX).unwrap()),
            Frame::Resolve {
                id: 7,
                endpoint: "dispatcher_0".into(),
                gateway: "DispatcherGateway".into()
            }
        );
    }

    #[test]
    fn sender_refuses_oversized_frames() {
        let header = RequestHeader {
            expects_reply: true,
            token: None,
            endpoint: "e",
            message: "M",
        };
        let big = vec![0u8; 2048];
        match encode_request(header, &serde_bytes_like(&big), 1024) {
            Err(RpcError::FrameTooLarge { size, max }) => {
                assert!(size > 2048);
                assert_eq!(max, 1024);
            }
            other => panic!("{other:?}"),
        }
        let err = RpcError::ProtocolViolation {
            peer: "x".repeat(4000),
            detail: String::new(),
        };
        let encoded = encode_response_err(1, &err, 1024);
        assert!(encoded.len() <= 1024);
        assert!(matches!(
            roundtrip(&encoded),
            Frame::Response {
                id: 1,
                result: Err(RpcError::FrameTooLarge { .. })
            }
        ));
    }

    fn serde_bytes_like(v: &[u8]) -> Vec<u8> {
        v.to_vec()
    }

    #[test]
    fn receiver_checks_length_before_reserving() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, KIND_REQUEST][..]);
        assert_eq!(
            split_frame(&mut buf, MAX),
            Err(FrameError::TooLarge {
                size: 0xffff_ffff + 4,
                max: MAX as u64
            })
        );
        assert!(
            buf.capacity() < 1024,
            "reserved {} bytes for a refused frame",
            buf.capacity()
        );
        let mut empty = BytesMut::from(&[0, 0, 0, 0][..]);
        assert_eq!(split_frame(&mut empty, MAX), Err(FrameError::Empty));
        let mut partial = BytesMut::from(&[0, 0, 0, 9, KIND_GO_AWAY][..]);
        assert_eq!(split_frame(&mut partial, MAX), Ok(None));
    }

    #[test]
    fn malformed_bodies_are_typed_errors() {
        let cases: Vec<(Vec<u8>, FrameError)> = vec![
            (vec![0x7f], FrameError::UnknownKind(0x7f)),
            (vec![KIND_REQUEST], FrameError::Truncated("request")),
            (
                vec![KIND_REQUEST, 0xf0],
                FrameError::BadField("request flags"),
            ),
            (
                vec![KIND_REQUEST, 0, 0, 0, 0, 0, 0, 0, 0, 1, 5, b'a'],
                FrameError::Truncated("request"),
            ),
            (
                vec![KIND_REQUEST, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0xff, 0],
                FrameError::BadName("request"),
            ),
            (
                vec![KIND_RESPONSE, 0, 0, 0, 0, 0, 0, 0, 1, 9],
                FrameError::BadField("response status"),
            ),
            (vec![KIND_GO_AWAY, 1], FrameError::Trailing("go-away")),
        ];
        for (bytes, expected) in cases {
            assert_eq!(
                decode(Bytes::from(bytes.clone())),
                Err(expected),
                "{bytes:02x?}"
            );
        }
        assert!(matches!(
            decode(Bytes::from_static(&[KIND_HELLO, 0xc1])),
            Err(FrameError::Body { what: "hello", .. })
        ));
    }

    /// Decodes every frame in `bytes` the way a connection's reader does.
    fn decode_stream(bytes: &[u8]) -> Result<Vec<Frame>, FrameError> {
        let mut buf = BytesMut::from(bytes);
        let mut frames = Vec::new();
        while let Some(frame) = split_frame(&mut buf, MAX)? {
            frames.push(decode(frame)?);
        }
        Ok(frames)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Arbitrary bytes never panic the decoder. They are refused, unless they happen to be
        /// well-formed: then re-encoding gives them back.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_stream(&bytes);
            let _ = decode(Bytes::from(bytes.clone()));
        }

        /// Arbitrary frame bodies behind a valid length prefix are refused with a typed error.
        #[test]
        fn arbitrary_bodies_are_refused(kind in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = vec![kind];
            bytes.extend_from_slice(&body);
            match decode(Bytes::from(bytes)) {
                Err(_) => {}
                // Some bodies are valid by construction: a request's payload is opaque here (the
                // endpoint decodes it), and GoAway has no body.
                Ok(Frame::Request(_)) | Ok(Frame::TellBatch(_)) | Ok(Frame::GoAway) | Ok(Frame::Response { .. }) => {}
                Ok(other) => {
                    // rmp bodies: only accept if a real encoder could have produced them.
                    let reencoded = match &other {
                        Frame::Hello(h) => encode_hello(h, MAX),
                        Frame::HelloOk(h) => encode_hello_ok(h, MAX),
                        Frame::HelloRejected(e) => encode_hello_rejected(e, MAX),
                        Frame::Fatal(e) => encode_fatal(e, MAX),
                        _ => unreachable!(),
                    };
                    prop_assert!(reencoded.is_ok());
                }
            }
        }

        /// Truncating or corrupting a valid frame never panics.
        #[test]
        fn corrupted_frames_never_panic(cut in 0usize..80, flip in 0usize..80, bit in 0u8..8) {
            let header = RequestHeader { expects_reply: true, token: Some(AbstractId::from_u128(3)), endpoint: "jobmanager_1", message: "OfferSlots" };
            let mut encoded = encode_request(header, &vec![1u32, 2, 3], MAX).unwrap();
            if flip < encoded.len() { encoded[flip] ^= 1 << bit; }
            let cut = cut.min(encoded.len());
            let _ = decode_stream(&encoded[..cut]);
            let _ = decode_stream(&encoded);
        }
    }
}
