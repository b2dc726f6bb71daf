//! The C ABI between rflink and a *job library*: a user's crate built as a `cdylib` against this
//! crate, loaded by the `rflink` client (to build the job graph) and by every TaskExecutor (to
//! run the job's operator chains). Flink ships user code as a jar fetched from the BlobServer;
//! rflink ships a shared library the same way.
//!
//! # What a library exports
//! [`export_jobs!`](crate::export_jobs) defines two symbols in the user's crate:
//!
//! * `RFLINK_ABI_NOTE`, a 256-byte static ([`NOTE`]): the magic `RFLINK-ABI\0`, the
//!   [`ABI_VERSION`] as a little-endian `u32`, then the [`BUILD_FINGERPRINT`] (rflink version,
//!   rustc version, target), NUL-padded. A node reads it **from the file**, without loading the
//!   library, and refuses a library whose ABI version or fingerprint differs from its own,
//!   naming both; after loading it reads the symbol again.
//! * `rflink_plugin_entry`, the only function a node calls by name. Given the node's
//!   [`HostApi`] it returns the library's [`PluginApi`]: a table of `extern "C"` functions.
//!
//! # The rules at the boundary
//! * **Only `#[repr(C)]` data crosses**: integers, [`RfSlice`] (borrowed bytes), [`RfBuf`]
//!   (owned bytes), [`RfBatch`], [`HostWriter`] and opaque pointers. Plans, arguments and
//!   contexts travel encoded with [`Codec`]. No Rust type's layout is shared, so the two sides
//!   may even use different versions of their other dependencies.
//! * **Memory is freed on the side that allocated it.** An [`RfBuf`] carries the function that
//!   frees it (the allocating side's); a vertex, a typed batch and a host writer each come with
//!   their own drop function. The node and a library may use different global allocators.
//! * **Nothing unwinds across.** Every exported function runs inside `catch_unwind`: a panic in
//!   user code becomes an error status with the panic message (a panicking user function fails
//!   its task, not the TaskExecutor), and the vertex is poisoned: later calls fail, closing and
//!   dropping it stay safe. The node's callbacks into itself are guarded the same way.
//! * **Logging is the node's.** The library's `tracing` events go to the node's log through
//!   [`HostApi::log`] (level, target, message and fields), at the node's level.
//! * **No runtime of its own.** This crate has no tokio, actix or networking: a library never
//!   starts a runtime; it runs on the task threads the node gives it.
//! * **Never unloaded.** A node keeps every library it loaded until the process exits (unloading
//!   Rust code with thread-locals and `'static` data is unsound); a TaskManager that has run too
//!   many different libraries is recycled by restarting it.

#![allow(unsafe_code)]

pub mod host;
#[doc(hidden)]
pub mod plugin;

use std::collections::BTreeMap;
use std::ffi::c_void;

use crate::codec::{Codec, DecodeError};
use crate::graph::{JobPlan, Partitioner, PlanEdge, PlanVertex};
use crate::task::VertexContext;

/// The version of this ABI. A node and a library must agree on it.
///
/// * 1: the first.
/// * 2: event time: [`PluginApi`] gained the vertex's watermark, watermark-status and
///   processing-time functions and `vertex_uses_time`; [`HostWriter`] gained
///   `broadcast_watermark` and `broadcast_watermark_status`. Both tables changed layout, so a
///   library of version 1 cannot be driven by this node (nor the other way round).
pub const ABI_VERSION: u32 = 2;

/// What must be equal in a node and a library built for it: the rflink version, the rustc
/// version and the target, e.g.
/// `rflink 0.1.0 / rustc 1.95.0 (59807616e 2026-04-14) / x86_64-unknown-linux-gnu`.
pub const BUILD_FINGERPRINT: &str = concat!(
    "rflink ",
    env!("CARGO_PKG_VERSION"),
    " / ",
    env!("RFLINK_RUSTC_VERSION"),
    " / ",
    env!("RFLINK_TARGET")
);

/// The exported static a node reads from a library file before loading it.
pub const NOTE_SYMBOL: &str = "RFLINK_ABI_NOTE";
/// The library's entry point.
pub const ENTRY_SYMBOL: &str = "rflink_plugin_entry";
/// The size of the note.
pub const NOTE_LEN: usize = 256;
const NOTE_MAGIC: &[u8; 11] = b"RFLINK-ABI\0";
const NOTE_HEADER: usize = NOTE_MAGIC.len() + 4;

/// The note of a library with `abi_version` and `fingerprint` (truncated to fit, always
/// NUL-terminated).
pub const fn note(abi_version: u32, fingerprint: &str) -> [u8; NOTE_LEN] {
    let mut out = [0u8; NOTE_LEN];
    let mut i = 0;
    while i < NOTE_MAGIC.len() {
        out[i] = NOTE_MAGIC[i];
        i += 1;
    }
    let version = abi_version.to_le_bytes();
    let mut j = 0;
    while j < 4 {
        out[NOTE_MAGIC.len() + j] = version[j];
        j += 1;
    }
    let text = fingerprint.as_bytes();
    let room = NOTE_LEN - NOTE_HEADER - 1;
    let n = if text.len() < room { text.len() } else { room };
    let mut k = 0;
    while k < n {
        out[NOTE_HEADER + k] = text[k];
        k += 1;
    }
    out
}

/// The note of this build: what [`export_jobs!`](crate::export_jobs) exports.
pub const NOTE: [u8; NOTE_LEN] = note(ABI_VERSION, BUILD_FINGERPRINT);

/// A parsed note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbiNote {
    /// The library's ABI version.
    pub abi_version: u32,
    /// The library's build fingerprint.
    pub fingerprint: String,
}

/// Why a note could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// Fewer bytes than a note has.
    #[error("the ABI note has {0} bytes, expected {NOTE_LEN}")]
    WrongSize(usize),
    /// Not a note.
    #[error("the ABI note does not start with the magic RFLINK-ABI")]
    BadMagic,
    /// The fingerprint is not text.
    #[error("the ABI note's fingerprint is not UTF-8")]
    NotUtf8,
}

/// Parses a note as [`note`] writes it.
///
/// # Errors
/// A wrong size, magic or encoding.
pub fn parse_note(bytes: &[u8]) -> Result<AbiNote, NoteError> {
    if bytes.len() != NOTE_LEN {
        return Err(NoteError::WrongSize(bytes.len()));
    }
    if &bytes[..NOTE_MAGIC.len()] != NOTE_MAGIC {
        return Err(NoteError::BadMagic);
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[NOTE_MAGIC.len()..NOTE_HEADER]);
    let text = &bytes[NOTE_HEADER..];
    let end = text.iter().position(|b| *b == 0).unwrap_or(text.len());
    let fingerprint = std::str::from_utf8(&text[..end]).map_err(|_| NoteError::NotUtf8)?;
    Ok(AbiNote {
        abi_version: u32::from_le_bytes(version),
        fingerprint: fingerprint.to_string(),
    })
}

/// A call's outcome.
pub type Status = i32;
/// The call succeeded.
pub const STATUS_OK: Status = 0;
/// The call failed; the error buffer holds the message.
pub const STATUS_ERROR: Status = 1;
/// User code panicked (caught); the error buffer holds the message.
pub const STATUS_PANIC: Status = 2;

/// Bytes borrowed for the duration of one call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RfSlice {
    /// The first byte (may be null when `len` is 0).
    pub ptr: *const u8,
    /// The number of bytes.
    pub len: usize,
}

impl RfSlice {
    /// Borrows `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        RfSlice {
            ptr: bytes.as_ptr(),
            len: bytes.len(),
        }
    }

    /// The bytes.
    ///
    /// # Safety
    /// `ptr` must point to `len` readable bytes that outlive `'a` (or `len` must be 0).
    pub unsafe fn as_bytes<'a>(self) -> &'a [u8] {
        if self.ptr.is_null() || self.len == 0 {
            &[]
        } else {
            // SAFETY: the caller guarantees `len` readable bytes at `ptr` for `'a`.
            unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
        }
    }
}

/// The function that frees an [`RfBuf`]: `(ptr, len, capacity)`.
pub type FreeFn = unsafe extern "C" fn(*mut u8, usize, usize);

/// Bytes owned by the side that allocated them, handed to the other side, which copies them
/// and calls `free` (code of the allocating side).
#[repr(C)]
#[derive(Debug)]
pub struct RfBuf {
    /// The first byte, null for an empty buffer.
    pub ptr: *mut u8,
    /// The number of bytes.
    pub len: usize,
    /// The allocation's capacity.
    pub cap: usize,
    /// Frees the allocation; `None` for an empty buffer.
    pub free: Option<FreeFn>,
}

unsafe extern "C" fn free_vec(ptr: *mut u8, len: usize, cap: usize) {
    if !ptr.is_null() {
        // SAFETY: `ptr`, `len` and `cap` come from `Vec::into_raw_parts`-style decomposition in
        // `RfBuf::from_vec` of this very module, so this allocator owns them.
        drop(unsafe { Vec::from_raw_parts(ptr, len, cap) });
    }
}

impl RfBuf {
    /// An empty buffer (nothing to free).
    pub const EMPTY: RfBuf = RfBuf {
        ptr: std::ptr::null_mut(),
        len: 0,
        cap: 0,
        free: None,
    };

    /// Hands over `bytes`, to be freed by this side's allocator.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        let mut bytes = std::mem::ManuallyDrop::new(bytes);
        RfBuf {
            ptr: bytes.as_mut_ptr(),
            len: bytes.len(),
            cap: bytes.capacity(),
            free: Some(free_vec),
        }
    }

    /// Copies the bytes out, frees the buffer with its own `free`, and leaves `self` empty.
    ///
    /// # Safety
    /// The buffer must be empty or come from [`RfBuf::from_vec`] (of either side) and not have
    /// been taken before.
    pub unsafe fn take(&mut self) -> Vec<u8> {
        let buf = std::mem::replace(self, RfBuf::EMPTY);
        if buf.ptr.is_null() {
            return Vec::new();
        }
        // SAFETY: a non-empty buffer holds `len` initialized bytes at `ptr` (see `from_vec`).
        let bytes = unsafe { std::slice::from_raw_parts(buf.ptr, buf.len) }.to_vec();
        if let Some(free) = buf.free {
            // SAFETY: `free` is the allocating side's function for exactly this allocation.
            unsafe { free(buf.ptr, buf.len, buf.cap) };
        }
        bytes
    }

    /// [`RfBuf::take`] as text (lossy).
    ///
    /// # Safety
    /// As [`RfBuf::take`].
    pub unsafe fn take_string(&mut self) -> String {
        // SAFETY: forwarded to the caller.
        let bytes = unsafe { self.take() };
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Writes `message` into `*err` (if `err` is not null), to be freed by this side.
///
/// # Safety
/// `err` is null or points to a writable, empty [`RfBuf`].
pub(crate) unsafe fn set_error(err: *mut RfBuf, message: impl Into<String>) {
    if !err.is_null() {
        // SAFETY: the caller guarantees `err` is writable; it held no allocation.
        unsafe { err.write(RfBuf::from_vec(message.into().into_bytes())) };
    }
}

/// The text of a caught panic's payload.
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".to_string())
}

/// A checkpoint barrier at the boundary.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RfBarrier {
    /// The checkpoint id.
    pub id: u64,
    /// When it was triggered (ms since the epoch).
    pub timestamp: i64,
    /// True for a savepoint.
    pub savepoint: bool,
}

/// A typed batch (`Box<Vec<T>>` of a library's record type) travelling from a library's
/// producer through the node's local channel to the same library's consumer. The node never
/// looks inside; if it must drop the batch (a cancelled channel) it calls `drop`, the library's
/// code.
#[repr(C)]
#[derive(Debug)]
pub struct RfBatch {
    /// The batch (a library-side `Box<Box<dyn Any + Send>>`).
    pub ptr: *mut c_void,
    /// Frees it, in the library.
    pub drop: unsafe extern "C" fn(*mut c_void),
}

/// One output of a vertex subtask, implemented by the node: the library's operator chain
/// writes into it. Every function takes `ctx` first; `release` frees it (node code) once the
/// library is done with the writer.
#[repr(C)]
#[derive(Debug)]
pub struct HostWriter {
    /// The node's writer.
    pub ctx: *mut c_void,
    /// `PartitionWriter::num_subpartitions`.
    pub num_subpartitions: unsafe extern "C" fn(*mut c_void) -> usize,
    /// `PartitionWriter::is_local`.
    pub is_local: unsafe extern "C" fn(*mut c_void, usize) -> bool,
    /// `PartitionWriter::local_batch_records`.
    pub local_batch_records: unsafe extern "C" fn(*mut c_void) -> usize,
    /// `PartitionWriter::write_record`.
    pub write_record: unsafe extern "C" fn(*mut c_void, usize, RfSlice, *mut RfBuf) -> Status,
    /// `PartitionWriter::write_batch`; the node owns the batch from the call on.
    pub write_batch: unsafe extern "C" fn(*mut c_void, usize, RfBatch, usize, *mut RfBuf) -> Status,
    /// `PartitionWriter::flush`.
    pub flush: unsafe extern "C" fn(*mut c_void, *mut RfBuf) -> Status,
    /// `PartitionWriter::broadcast_barrier`.
    pub broadcast_barrier: unsafe extern "C" fn(*mut c_void, RfBarrier, *mut RfBuf) -> Status,
    /// `PartitionWriter::broadcast_watermark`.
    pub broadcast_watermark: unsafe extern "C" fn(*mut c_void, i64, *mut RfBuf) -> Status,
    /// `PartitionWriter::broadcast_watermark_status` (`true`: idle).
    pub broadcast_watermark_status: unsafe extern "C" fn(*mut c_void, bool, *mut RfBuf) -> Status,
    /// `PartitionWriter::end_of_data`.
    pub end_of_data: unsafe extern "C" fn(*mut c_void, *mut RfBuf) -> Status,
    /// `PartitionWriter::finish`.
    pub finish: unsafe extern "C" fn(*mut c_void, *mut RfBuf) -> Status,
    /// Frees the writer (node code).
    pub release: unsafe extern "C" fn(*mut c_void),
}

/// What the node gives a library at its entry point.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct HostApi {
    /// The node's [`ABI_VERSION`].
    pub abi_version: u32,
    /// The most verbose level the node logs: 0 off, 1 error, 2 warn, 3 info, 4 debug, 5 trace.
    pub max_log_level: u8,
    /// Logs one event: level (as above), target, message with its fields.
    pub log: unsafe extern "C" fn(u8, RfSlice, RfSlice),
}

/// A library's functions. Every function catches panics; every error is an [`RfBuf`] with the
/// message, freed by the caller through its `free`.
#[repr(C)]
#[derive(Debug)]
pub struct PluginApi {
    /// The library's [`ABI_VERSION`].
    pub abi_version: u32,
    /// The library's [`BUILD_FINGERPRINT`] (static in the library).
    pub fingerprint: RfSlice,
    /// The jobs: `Vec<(name, description)>` encoded with [`Codec`].
    pub list_jobs: unsafe extern "C" fn(*mut RfBuf, *mut RfBuf) -> Status,
    /// Builds a job's plan: request [`encode_build_request`], answer [`encode_plan_info`].
    pub build_plan: unsafe extern "C" fn(RfSlice, *mut RfBuf, *mut RfBuf) -> Status,
    /// Instantiates a vertex subtask: request [`encode_instantiate_request`], the writers (the
    /// library owns them from the call on, whatever the outcome), the vertex handle and whether
    /// it is a source.
    pub instantiate: unsafe extern "C" fn(
        RfSlice,
        *mut HostWriter,
        usize,
        *mut *mut c_void,
        *mut bool,
        *mut RfBuf,
    ) -> Status,
    /// `VertexInstance::open`.
    pub vertex_open: unsafe extern "C" fn(*mut c_void, *mut RfBuf) -> Status,
    /// `VertexInstance::restore`.
    pub vertex_restore: unsafe extern "C" fn(*mut c_void, RfSlice, *mut RfBuf) -> Status,
    /// `VertexInstance::snapshot`: the state in the out buffer.
    pub vertex_snapshot:
        unsafe extern "C" fn(*mut c_void, RfBarrier, *mut RfBuf, *mut RfBuf) -> Status,
    /// `VertexInstance::notify_checkpoint_complete`.
    pub vertex_notify_complete: unsafe extern "C" fn(*mut c_void, u64, *mut RfBuf) -> Status,
    /// `VertexInstance::notify_checkpoint_aborted`.
    pub vertex_notify_aborted: unsafe extern "C" fn(*mut c_void, u64),
    /// `VertexInstance::poll_source`: the status (0 more, 1 idle, 2 finished) in the out byte.
    pub vertex_poll_source: unsafe extern "C" fn(*mut c_void, usize, *mut u8, *mut RfBuf) -> Status,
    /// `VertexInstance::process_record`.
    pub vertex_process_record:
        unsafe extern "C" fn(*mut c_void, usize, RfSlice, *mut RfBuf) -> Status,
    /// `VertexInstance::process_batch`; the library owns the batch from the call on.
    pub vertex_process_batch:
        unsafe extern "C" fn(*mut c_void, usize, RfBatch, *mut RfBuf) -> Status,
    /// `VertexInstance::end_input`.
    pub vertex_end_input: unsafe extern "C" fn(*mut c_void, *mut RfBuf) -> Status,
    /// `VertexInstance::finish_outputs`.
    pub vertex_finish_outputs: unsafe extern "C" fn(*mut c_void, *mut RfBuf) -> Status,
    /// `VertexInstance::flush`.
    pub vertex_flush: unsafe extern "C" fn(*mut c_void, *mut RfBuf) -> Status,
    /// `VertexInstance::process_watermark`.
    pub vertex_process_watermark: unsafe extern "C" fn(*mut c_void, i64, *mut RfBuf) -> Status,
    /// `VertexInstance::process_watermark_status` (`true`: idle).
    pub vertex_process_watermark_status:
        unsafe extern "C" fn(*mut c_void, bool, *mut RfBuf) -> Status,
    /// `VertexInstance::advance_processing_time`.
    pub vertex_advance_processing_time:
        unsafe extern "C" fn(*mut c_void, i64, *mut RfBuf) -> Status,
    /// `VertexInstance::next_processing_time`: true with the time in the out value, false for
    /// `None`. Never fails: a poisoned vertex (or a null handle) answers false, and a panic
    /// while asking poisons the vertex and answers false (the next fallible call reports it).
    pub vertex_next_processing_time: unsafe extern "C" fn(*mut c_void, *mut i64) -> bool,
    /// `VertexInstance::uses_time`: fixed when the vertex is instantiated (the node asks once,
    /// right after `instantiate`); runs no user code, so it answers even for a poisoned vertex.
    pub vertex_uses_time: unsafe extern "C" fn(*mut c_void) -> bool,
    /// `VertexInstance::close`.
    pub vertex_close: unsafe extern "C" fn(*mut c_void),
    /// Drops the vertex (closing it first).
    pub vertex_drop: unsafe extern "C" fn(*mut c_void),
}

// SAFETY: the table is immutable; its only pointer is to static bytes.
unsafe impl Sync for PluginApi {}

/// The signature of `rflink_plugin_entry`: the node's API in, the library's table (a static)
/// out, or an error.
pub type EntryFn =
    unsafe extern "C" fn(*const HostApi, *mut *const PluginApi, *mut RfBuf) -> Status;

/// What building a job's plan yields, as the client needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanInfo {
    /// The plan.
    pub plan: JobPlan,
    /// The job's configuration (`env.configure`, `env.enable_checkpointing`).
    pub job_config: BTreeMap<String, String>,
    /// Batch-style emission.
    pub batch_emission: bool,
}

/// A request to instantiate one vertex subtask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstantiateRequest {
    /// The job's registry name.
    pub entry: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// The plan fingerprint the client built.
    pub fingerprint: String,
    /// The vertex's index in the plan.
    pub vertex: usize,
    /// The subtask.
    pub context: VertexContext,
}

fn partitioner_tag(p: Partitioner) -> u8 {
    match p {
        Partitioner::Forward => 0,
        Partitioner::Rebalance => 1,
        Partitioner::Hash => 2,
        Partitioner::Broadcast => 3,
        Partitioner::Shuffle => 4,
    }
}

fn partitioner_of(tag: u8) -> Result<Partitioner, DecodeError> {
    Ok(match tag {
        0 => Partitioner::Forward,
        1 => Partitioner::Rebalance,
        2 => Partitioner::Hash,
        3 => Partitioner::Broadcast,
        4 => Partitioner::Shuffle,
        tag => {
            return Err(DecodeError::InvalidTag {
                tag,
                what: "Partitioner",
            })
        }
    })
}

fn finish_decode(input: &[u8]) -> Result<(), DecodeError> {
    if input.is_empty() {
        Ok(())
    } else {
        Err(DecodeError::TrailingBytes(input.len()))
    }
}

/// Encodes a `build_plan` request.
pub fn encode_build_request(entry: &str, args: &[String]) -> Vec<u8> {
    let mut out = Vec::new();
    entry.to_string().encode(&mut out);
    args.to_vec().encode(&mut out);
    out
}

/// Decodes a `build_plan` request.
///
/// # Errors
/// Malformed bytes.
pub fn decode_build_request(bytes: &[u8]) -> Result<(String, Vec<String>), DecodeError> {
    let mut input = bytes;
    let entry = String::decode(&mut input)?;
    let args = Vec::<String>::decode(&mut input)?;
    finish_decode(input)?;
    Ok((entry, args))
}

/// Encodes a plan answer.
pub fn encode_plan_info(info: &PlanInfo) -> Vec<u8> {
    let mut out = Vec::new();
    let plan = &info.plan;
    plan.job_name.encode(&mut out);
    plan.fingerprint.encode(&mut out);
    plan.bounded.encode(&mut out);
    plan.vertices.len().encode(&mut out);
    for v in &plan.vertices {
        v.name.encode(&mut out);
        v.parallelism.encode(&mut out);
        v.max_parallelism.encode(&mut out);
        v.nodes.encode(&mut out);
        v.inputs.encode(&mut out);
        v.outputs.encode(&mut out);
        v.is_source.encode(&mut out);
    }
    plan.edges.len().encode(&mut out);
    for e in &plan.edges {
        e.source_vertex.encode(&mut out);
        e.target_vertex.encode(&mut out);
        e.source_node.encode(&mut out);
        e.target_node.encode(&mut out);
        partitioner_tag(e.partitioner).encode(&mut out);
    }
    let config: Vec<(String, String)> = info
        .job_config
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    config.encode(&mut out);
    info.batch_emission.encode(&mut out);
    out
}

fn decode_count(input: &mut &[u8], min_item: usize) -> Result<usize, DecodeError> {
    let n = usize::decode(input)?;
    if n.saturating_mul(min_item) > input.len() {
        return Err(DecodeError::UnexpectedEnd {
            needed: n.saturating_mul(min_item),
            remaining: input.len(),
        });
    }
    Ok(n)
}

/// Decodes a plan answer.
///
/// # Errors
/// Malformed bytes.
pub fn decode_plan_info(bytes: &[u8]) -> Result<PlanInfo, DecodeError> {
    let mut input = bytes;
    let job_name = String::decode(&mut input)?;
    let fingerprint = String::decode(&mut input)?;
    let bounded = bool::decode(&mut input)?;
    let n = decode_count(&mut input, 8)?;
    let mut vertices = Vec::with_capacity(n);
    for _ in 0..n {
        vertices.push(PlanVertex {
            name: String::decode(&mut input)?,
            parallelism: u32::decode(&mut input)?,
            max_parallelism: u32::decode(&mut input)?,
            nodes: Vec::<u32>::decode(&mut input)?,
            inputs: Vec::<usize>::decode(&mut input)?,
            outputs: Vec::<usize>::decode(&mut input)?,
            is_source: bool::decode(&mut input)?,
        });
    }
    let n = decode_count(&mut input, 8)?;
    let mut edges = Vec::with_capacity(n);
    for _ in 0..n {
        edges.push(PlanEdge {
            source_vertex: usize::decode(&mut input)?,
            target_vertex: usize::decode(&mut input)?,
            source_node: u32::decode(&mut input)?,
            target_node: u32::decode(&mut input)?,
            partitioner: partitioner_of(u8::decode(&mut input)?)?,
        });
    }
    let config = Vec::<(String, String)>::decode(&mut input)?;
    let batch_emission = bool::decode(&mut input)?;
    finish_decode(input)?;
    Ok(PlanInfo {
        plan: JobPlan {
            job_name,
            fingerprint,
            vertices,
            edges,
            bounded,
        },
        job_config: config.into_iter().collect(),
        batch_emission,
    })
}

/// Encodes an instantiate request.
pub fn encode_instantiate_request(request: &InstantiateRequest) -> Vec<u8> {
    let mut out = Vec::new();
    request.entry.encode(&mut out);
    request.args.encode(&mut out);
    request.fingerprint.encode(&mut out);
    request.vertex.encode(&mut out);
    let c = &request.context;
    c.subtask_index.encode(&mut out);
    c.parallelism.encode(&mut out);
    c.max_parallelism.encode(&mut out);
    c.attempt_number.encode(&mut out);
    c.task_name.encode(&mut out);
    c.checkpointing.encode(&mut out);
    out
}

/// Decodes an instantiate request.
///
/// # Errors
/// Malformed bytes.
pub fn decode_instantiate_request(bytes: &[u8]) -> Result<InstantiateRequest, DecodeError> {
    let mut input = bytes;
    let request = InstantiateRequest {
        entry: String::decode(&mut input)?,
        args: Vec::<String>::decode(&mut input)?,
        fingerprint: String::decode(&mut input)?,
        vertex: usize::decode(&mut input)?,
        context: VertexContext {
            subtask_index: u32::decode(&mut input)?,
            parallelism: u32::decode(&mut input)?,
            max_parallelism: u32::decode(&mut input)?,
            attempt_number: u32::decode(&mut input)?,
            task_name: String::decode(&mut input)?,
            checkpointing: bool::decode(&mut input)?,
        },
    };
    finish_decode(input)?;
    Ok(request)
}

/// Log levels at the boundary.
pub(crate) fn level_number(level: &tracing::Level) -> u8 {
    match *level {
        tracing::Level::ERROR => 1,
        tracing::Level::WARN => 2,
        tracing::Level::INFO => 3,
        tracing::Level::DEBUG => 4,
        tracing::Level::TRACE => 5,
    }
}

#[cfg(test)]
mod tests;
