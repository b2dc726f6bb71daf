//! File-system checkpoint storage. Flink: `FileSystemCheckpointStorage`,
//! `FsCheckpointStorageLocation`, `Checkpoints.storeCheckpointMetadata` / `loadCheckpointMetadata`.
//!
//! # Layout
//!
//! ```text
//! <dir>/<job id>/chk-<n>/                       a checkpoint
//!     <vertex id>-<subtask>.state                one file per subtask with state
//!     _metadata                                  written last: the directory is a checkpoint
//! <savepoint dir>/savepoint-<6 hex of the job id>-<12 random hex>/
//!     (the same content)
//! ```
//!
//! Every file is written atomically: a temp file in the same directory, `fsync`, rename, `fsync`
//! of the directory. `_metadata` is written only once every subtask acknowledged, so a directory
//! without it is a torn checkpoint and never restored. State files are checked against the size
//! and SHA-256 in their [`TaskStateHandle`] when read.
//!
//! # `_metadata` format
//!
//! ```text
//! magic "RFLKCKPT" (8) | format version u32 BE | body length u64 BE | SHA-256 of the body (32)
//! | body: the CheckpointMetadata as MessagePack (rmp-serde, named fields)
//! ```
//!
//! A truncated, extended or bit-flipped file is [`CheckpointError::Corrupt`], never garbage; a
//! file of another format version is [`CheckpointError::VersionMismatch`].
//!
//! All functions block on the file system: call them off actor threads (`spawn_blocking`).

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{CheckpointError, CheckpointKind, CheckpointMetadata, SubtaskKey, TaskStateHandle};
use crate::types::JobId;

/// Name of the file that makes a directory a checkpoint.
pub const METADATA_FILE: &str = "_metadata";

/// The format version of `_metadata` files this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

const MAGIC: &[u8; 8] = b"RFLKCKPT";
const HEADER_LEN: usize = MAGIC.len() + 4 + 8 + 32;

/// `_metadata` files above this are refused before being read (they hold handles, not state).
const MAX_METADATA_SIZE: u64 = 64 * 1024 * 1024;

/// The directory of checkpoint `id` of a job: `<base>/<job_id>/chk-<id>`.
pub fn checkpoint_dir(base: &Path, job_id: JobId, id: u64) -> PathBuf {
    base.join(job_id.to_string()).join(format!("chk-{id}"))
}

/// A fresh savepoint directory under `base`: `savepoint-<first 6 hex of the job id>-<12 random
/// hex>`, as Flink names them. Not created.
pub fn new_savepoint_dir(base: &Path, job_id: JobId) -> PathBuf {
    let job = job_id.to_string();
    let prefix = job.get(..6).unwrap_or(&job);
    let random = rand::random::<u64>() & 0xffff_ffff_ffff;
    base.join(format!("savepoint-{prefix}-{random:012x}"))
}

/// How REST shows a checkpoint directory (`external_path`): `file:` and the absolute path, as
/// Flink's pointers. [`load_metadata`] accepts it back.
pub fn external_pointer(dir: &Path) -> String {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    format!("file:{}", abs.display())
}

/// The file name of a subtask's state.
pub fn state_file_name(key: &SubtaskKey) -> String {
    format!("{}-{}.state", key.vertex, key.subtask)
}

/// Writes one subtask's state into `checkpoint_dir` (created if needed), atomically, and returns
/// its handle: the file name, size and SHA-256.
pub fn write_task_state(
    checkpoint_dir: &Path,
    key: &SubtaskKey,
    bytes: &[u8],
) -> Result<TaskStateHandle, CheckpointError> {
    let name = state_file_name(key);
    write_atomically(checkpoint_dir, &name, bytes)?;
    Ok(TaskStateHandle {
        path: PathBuf::from(name),
        size: bytes.len() as u64,
        sha256: sha256_hex(bytes),
    })
}

/// Writes `_metadata` into `checkpoint_dir` (created if needed), atomically, and syncs the parent
/// directory too, so the checkpoint survives a crash once this returns. Returns the file's path.
pub fn write_metadata(
    checkpoint_dir: &Path,
    meta: &CheckpointMetadata,
) -> Result<PathBuf, CheckpointError> {
    let path = checkpoint_dir.join(METADATA_FILE);
    for handle in meta.tasks.iter().filter_map(|(_, h)| h.as_ref()) {
        check_relative(checkpoint_dir, &handle.path)?;
    }
    let bytes = encode_metadata(meta).map_err(|reason| CheckpointError::Io {
        action: "encode the metadata for".into(),
        path: path.clone(),
        reason,
    })?;
    write_atomically(checkpoint_dir, METADATA_FILE, &bytes)?;
    if let Some(parent) = checkpoint_dir.parent() {
        sync_dir(parent)?;
    }
    Ok(path)
}

/// Reads a checkpoint's or savepoint's metadata. `path` is its directory or its `_metadata` file,
/// optionally as a `file:` pointer (what REST shows and Flink's `--fromSavepoint` accepts).
/// Returns the directory and the verified metadata.
pub fn load_metadata(path: &Path) -> Result<(PathBuf, CheckpointMetadata), CheckpointError> {
    let path = strip_file_scheme(path);
    let info = match std::fs::metadata(&path) {
        Ok(info) => info,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CheckpointError::NotFound { path });
        }
        Err(e) => return Err(CheckpointError::io("inspect", &path, &e)),
    };
    let (dir, file) = if info.is_dir() {
        let file = path.join(METADATA_FILE);
        (path, file)
    } else {
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (dir, path)
    };
    let bytes = read_capped(&file, MAX_METADATA_SIZE)?;
    let meta = decode_metadata(&file, &bytes)?;
    for handle in meta.tasks.iter().filter_map(|(_, h)| h.as_ref()) {
        if check_relative(&dir, &handle.path).is_err() {
            return Err(CheckpointError::corrupt(
                &file,
                format!(
                    "state handle {} escapes the checkpoint directory",
                    handle.path.display()
                ),
            ));
        }
    }
    Ok((dir, meta))
}

/// Reads one subtask's state, verifying its size and SHA-256 ([`CheckpointError::Corrupt`] when
/// they differ). A handle path that is absolute or leaves the directory (`..`) is refused.
pub fn read_task_state(
    checkpoint_dir: &Path,
    handle: &TaskStateHandle,
) -> Result<Vec<u8>, CheckpointError> {
    check_relative(checkpoint_dir, &handle.path)?;
    let path = checkpoint_dir.join(&handle.path);
    let mut file = File::open(&path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CheckpointError::corrupt(&path, "state file is missing"),
        _ => CheckpointError::io("open", &path, &e),
    })?;
    let len = file
        .metadata()
        .map_err(|e| CheckpointError::io("inspect", &path, &e))?
        .len();
    if len != handle.size {
        return Err(CheckpointError::corrupt(
            &path,
            format!(
                "state file has {len} bytes, its handle says {}",
                handle.size
            ),
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    // Read one byte more than expected to notice a file that grew after the check.
    (&mut file)
        .take(len.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|e| CheckpointError::io("read", &path, &e))?;
    if bytes.len() as u64 != handle.size {
        return Err(CheckpointError::corrupt(
            &path,
            format!(
                "read {} bytes of state, its handle says {}",
                bytes.len(),
                handle.size
            ),
        ));
    }
    let actual = sha256_hex(&bytes);
    if !actual.eq_ignore_ascii_case(&handle.sha256) {
        return Err(CheckpointError::corrupt(
            &path,
            format!(
                "state hashes to {actual}, its handle says {}",
                handle.sha256
            ),
        ));
    }
    Ok(bytes)
}

/// Deletes a checkpoint directory. `_metadata` goes first, so a directory that is only partly
/// deleted is no longer a checkpoint. A missing directory is fine.
pub fn discard(checkpoint_dir: &Path) -> Result<(), CheckpointError> {
    let meta = checkpoint_dir.join(METADATA_FILE);
    match std::fs::remove_file(&meta) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(CheckpointError::io("remove", &meta, &e)),
    }
    match std::fs::remove_dir_all(checkpoint_dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CheckpointError::io("remove", checkpoint_dir, &e)),
    }
}

/// The newest restorable checkpoint of a job under `base`, for recovery: the highest `chk-<n>`
/// whose `_metadata` is valid, names this job and id `n`, and whose state files exist with their
/// recorded sizes. Directories that fail a check are skipped (logged).
pub fn find_latest(base: &Path, job_id: JobId) -> Option<(u64, PathBuf)> {
    let job_dir = base.join(job_id.to_string());
    let entries = std::fs::read_dir(&job_dir).ok()?;
    let mut candidates: Vec<(u64, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name();
            let id = name.to_str()?.strip_prefix("chk-")?.parse::<u64>().ok()?;
            entry
                .file_type()
                .ok()
                .filter(|t| t.is_dir())
                .map(|_| (id, entry.path()))
        })
        .collect();
    candidates.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    candidates
        .into_iter()
        .find(|(id, dir)| match restorable(dir, job_id, *id) {
            Ok(()) => true,
            Err(reason) => {
                tracing::warn!(dir = %dir.display(), %reason, "skipping checkpoint directory");
                false
            }
        })
}

fn restorable(dir: &Path, job_id: JobId, id: u64) -> Result<(), String> {
    let (_, meta) = load_metadata(dir).map_err(|e| e.to_string())?;
    if meta.job_id != job_id || meta.checkpoint_id != id {
        return Err(format!(
            "metadata is of job {} checkpoint {}",
            meta.job_id, meta.checkpoint_id
        ));
    }
    if meta.kind != CheckpointKind::Checkpoint {
        return Err("metadata is of a savepoint".into());
    }
    for handle in meta.tasks.iter().filter_map(|(_, h)| h.as_ref()) {
        let path = dir.join(&handle.path);
        match std::fs::metadata(&path) {
            Ok(info) if info.len() == handle.size => {}
            Ok(info) => {
                return Err(format!(
                    "{} has {} bytes, expected {}",
                    path.display(),
                    info.len(),
                    handle.size
                ))
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    }
    Ok(())
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Encodes metadata in the `_metadata` format (header + checksummed MessagePack body).
pub fn encode_metadata(meta: &CheckpointMetadata) -> Result<Vec<u8>, String> {
    let body = rmp_serde::to_vec_named(meta).map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    out.extend_from_slice(&(body.len() as u64).to_be_bytes());
    out.extend_from_slice(&Sha256::digest(&body));
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes and verifies a `_metadata` file's bytes; `path` only names it in errors. Never
/// panics, whatever the bytes.
pub fn decode_metadata(path: &Path, bytes: &[u8]) -> Result<CheckpointMetadata, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::corrupt(path, reason);
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a checkpoint metadata file (bad magic)".into()));
    }
    if bytes.len() < HEADER_LEN {
        return Err(corrupt(format!(
            "truncated header: {} of {HEADER_LEN} bytes",
            bytes.len()
        )));
    }
    let (header, body) = bytes.split_at(HEADER_LEN);
    let field = |range: std::ops::Range<usize>| header.get(range).unwrap_or_default();
    let version = u32::from_be_bytes(field(8..12).try_into().unwrap_or([0; 4]));
    if version != FORMAT_VERSION {
        return Err(CheckpointError::VersionMismatch {
            path: path.to_path_buf(),
            supported: FORMAT_VERSION,
            found: version,
        });
    }
    let body_len = u64::from_be_bytes(field(12..20).try_into().unwrap_or([0; 8]));
    if body_len != body.len() as u64 {
        return Err(corrupt(format!(
            "the header announces {body_len} bytes of metadata, the file holds {}",
            body.len()
        )));
    }
    if Sha256::digest(body).as_slice() != field(20..HEADER_LEN) {
        return Err(corrupt("checksum mismatch".into()));
    }
    let meta: CheckpointMetadata =
        rmp_serde::from_slice(body).map_err(|e| corrupt(format!("undecodable metadata: {e}")))?;
    if meta.version != CheckpointMetadata::VERSION {
        return Err(CheckpointError::VersionMismatch {
            path: path.to_path_buf(),
            supported: CheckpointMetadata::VERSION,
            found: meta.version,
        });
    }
    Ok(meta)
}

/// Refuses a handle path that is absolute or not a plain descent into `dir`.
fn check_relative(dir: &Path, path: &Path) -> Result<(), CheckpointError> {
    let plain = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(CheckpointError::PathEscape {
            path: path.to_path_buf(),
            dir: dir.to_path_buf(),
        })
    }
}

fn strip_file_scheme(path: &Path) -> PathBuf {
    match path.to_str() {
        Some(s) => {
            let stripped = s
                .strip_prefix("file://")
                .or_else(|| s.strip_prefix("file:"))
                .unwrap_or(s);
            PathBuf::from(stripped)
        }
        None => path.to_path_buf(),
    }
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, CheckpointError> {
    let mut file = File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => CheckpointError::NotFound {
            path: path.to_path_buf(),
        },
        _ => CheckpointError::io("open", path, &e),
    })?;
    let mut bytes = Vec::new();
    (&mut file)
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| CheckpointError::io("read", path, &e))?;
    if bytes.len() as u64 > max {
        return Err(CheckpointError::corrupt(
            path,
            format!("metadata file larger than {max} bytes"),
        ));
    }
    Ok(bytes)
}

/// Writes `dir/name` through a synced temp file in `dir`, renamed into place, then syncs `dir`.
fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CheckpointError> {
    std::fs::create_dir_all(dir).map_err(|e| CheckpointError::io("create directory", dir, &e))?;
    let dest = dir.join(name);
    let temp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let result = (|| {
        let mut file = File::create(&temp).map_err(|e| CheckpointError::io("create", &temp, &e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| CheckpointError::io("write", &temp, &e))?;
        drop(file);
        std::fs::rename(&temp, &dest).map_err(|e| CheckpointError::io("rename into", &dest, &e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result?;
    sync_dir(dir)
}

/// Makes a directory's entries (a rename, a new file) durable.
fn sync_dir(dir: &Path) -> Result<(), CheckpointError> {
    #[cfg(unix)]
    {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| CheckpointError::io("sync directory", dir, &e))
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::JobVertexId;

    fn key(subtask: u32) -> SubtaskKey {
        SubtaskKey {
            vertex: JobVertexId::from_u128(0xabc),
            subtask,
        }
    }

    fn meta(
        job_id: JobId,
        id: u64,
        tasks: Vec<(SubtaskKey, Option<TaskStateHandle>)>,
    ) -> CheckpointMetadata {
        CheckpointMetadata {
            version: CheckpointMetadata::VERSION,
            job_id,
            checkpoint_id: id,
            timestamp: 1_795_222_058_782,
            kind: CheckpointKind::Checkpoint,
            tasks,
            fingerprint: Some("f1ng3r".into()),
        }
    }

    /// Writes a checkpoint with two stateful subtasks and a stateless one.
    fn write_checkpoint(base: &Path, job_id: JobId, id: u64) -> (PathBuf, CheckpointMetadata) {
        let dir = checkpoint_dir(base, job_id, id);
        let h0 = write_task_state(&dir, &key(0), b"state of subtask zero").unwrap();
        let h1 = write_task_state(&dir, &key(1), &vec![7u8; 100_000]).unwrap();
        let m = meta(
            job_id,
            id,
            vec![(key(0), Some(h0)), (key(1), Some(h1)), (key(2), None)],
        );
        write_metadata(&dir, &m).unwrap();
        (dir, m)
    }

    #[test]
    fn layout_is_flinks() {
        let job = JobId::from_u128(0xaf5f890e0fe95a33eacd05209ff65c97);
        let base = Path::new("/ckpt");
        assert_eq!(
            checkpoint_dir(base, job, 16),
            Path::new("/ckpt/af5f890e0fe95a33eacd05209ff65c97/chk-16")
        );
        let sp = new_savepoint_dir(Path::new("/sp"), job);
        let name = sp.file_name().unwrap().to_str().unwrap();
        assert_eq!(sp.parent(), Some(Path::new("/sp")));
        assert!(name.starts_with("savepoint-af5f89-"), "{name}");
        let random = name.strip_prefix("savepoint-af5f89-").unwrap();
        assert_eq!(random.len(), 12);
        assert!(random.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(new_savepoint_dir(Path::new("/sp"), job), sp);
        assert_eq!(
            state_file_name(&key(3)),
            format!("{}-3.state", JobVertexId::from_u128(0xabc))
        );
    }

    #[test]
    fn round_trip_of_state_and_metadata() {
        let tmp = tempfile::tempdir().unwrap();
        let job = JobId::generate();
        let (dir, m) = write_checkpoint(tmp.path(), job, 3);

        let (loaded_dir, loaded) = load_metadata(&dir).unwrap();
        assert_eq!(loaded_dir, dir);
        assert_eq!(loaded, m);
        assert_eq!(loaded.state_size(), 21 + 100_000);
        assert_eq!(
            read_task_state(&dir, loaded.task_state(&key(0)).unwrap()).unwrap(),
            b"state of subtask zero"
        );
        assert_eq!(
            read_task_state(&dir, loaded.task_state(&key(1)).unwrap()).unwrap(),
            vec![7u8; 100_000]
        );
        assert!(loaded.task_state(&key(2)).is_none());
        // Only the final files are left: no temp files.
        let mut names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(
            names,
            vec![
                state_file_name(&key(0)),
                state_file_name(&key(1)),
                METADATA_FILE.to_string(),
            ]
        );
    }

    #[test]
    fn load_metadata_accepts_the_directory_the_file_and_a_pointer() {
        let tmp = tempfile::tempdir().unwrap();
        let job = JobId::generate();
        let (dir, m) = write_checkpoint(tmp.path(), job, 1);
        for path in [
            dir.clone(),
            dir.join(METADATA_FILE),
            PathBuf::from(external_pointer(&dir)),
            PathBuf::from(format!("file://{}", dir.display())),
        ] {
            let (d, loaded) = load_metadata(&path).unwrap();
            assert_eq!(d, dir, "{}", path.display());
            assert_eq!(loaded, m);
        }
        assert!(external_pointer(&dir).starts_with("file:/"));
    }

    #[test]
    fn missing_paths_and_torn_directories_are_not_found() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("nope");
        assert_eq!(
            load_metadata(&missing).unwrap_err(),
            CheckpointError::NotFound {
                path: missing.clone()
            }
        );
        // A directory with state but without `_metadata` is not a checkpoint.
        let torn = checkpoint_dir(tmp.path(), JobId::generate(), 1);
        write_task_state(&torn, &key(0), b"x").unwrap();
        assert!(matches!(
            load_metadata(&torn),
            Err(CheckpointError::NotFound { path }) if path == torn.join(METADATA_FILE)
        ));
    }

    #[test]
    fn find_latest_skips_torn_and_corrupt_checkpoints() {
        let tmp = tempfile::tempdir().unwrap();
        let job = JobId::generate();
        assert_eq!(find_latest(tmp.path(), job), None);

        let (dir2, _) = write_checkpoint(tmp.path(), job, 2);
        write_checkpoint(tmp.path(), job, 1);
        assert_eq!(find_latest(tmp.path(), job), Some((2, dir2.clone())));

        // chk-5: state written, no _metadata (the JobMaster died before finalizing).
        write_task_state(&checkpoint_dir(tmp.path(), job, 5), &key(0), b"torn").unwrap();
        // chk-4: metadata corrupt.
        let (dir4, _) = write_checkpoint(tmp.path(), job, 4);
        flip_byte(&dir4.join(METADATA_FILE), 60);
        // chk-3: valid metadata but a state file deleted.
        let (dir3, m3) = write_checkpoint(tmp.path(), job, 3);
        let h = m3.task_state(&key(1)).unwrap();
        std::fs::remove_file(dir3.join(&h.path)).unwrap();
        // chk-7: the metadata of another checkpoint id copied in.
        let (dir6, _) = write_checkpoint(tmp.path(), job, 6);
        let dir7 = checkpoint_dir(tmp.path(), job, 7);
        std::fs::create_dir_all(&dir7).unwrap();
        std::fs::copy(dir6.join(METADATA_FILE), dir7.join(METADATA_FILE)).unwrap();
        // Noise: a file named like a checkpoint, a temp file, an unparsable name.
        std::fs::write(tmp.path().join(job.to_string()).join("chk-9"), b"file").unwrap();
        std::fs::create_dir_all(tmp.path().join(job.to_string()).join("chk-x")).unwrap();

        assert_eq!(find_latest(tmp.path(), job), Some((6, dir6.clone())));
        discard(&dir6).unwrap();
        assert_eq!(find_latest(tmp.path(), job), Some((2, dir2)));
        // Another job's checkpoints are not found.
        assert_eq!(find_latest(tmp.path(), JobId::generate()), None);
    }

    fn flip_byte(path: &Path, at: usize) {
        let mut bytes = std::fs::read(path).unwrap();
        let at = at.min(bytes.len() - 1);
        bytes[at] ^= 0x10;
        std::fs::write(path, bytes).unwrap();
    }

    #[test]
    fn truncated_or_flipped_metadata_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = write_checkpoint(tmp.path(), JobId::generate(), 1);
        let file = dir.join(METADATA_FILE);
        let good = std::fs::read(&file).unwrap();

        // Every truncation, and a bit flip at every position, is detected.
        for len in 0..good.len() {
            std::fs::write(&file, &good[..len]).unwrap();
            assert!(
                matches!(load_metadata(&dir), Err(CheckpointError::Corrupt { .. })),
                "truncated to {len}"
            );
        }
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            std::fs::write(&file, &bad).unwrap();
            match load_metadata(&dir) {
                Err(CheckpointError::Corrupt { path, reason }) => {
                    assert_eq!(path, file);
                    assert!(!reason.is_empty());
                }
                // The version field: a flipped bit reads as another version.
                Err(CheckpointError::VersionMismatch { found, .. }) => {
                    assert!((8..12).contains(&at) && found != FORMAT_VERSION)
                }
                other => panic!("flip at {at}: {other:?}"),
            }
        }
        // Extra bytes at the end too.
        let mut longer = good.clone();
        longer.push(0);
        std::fs::write(&file, &longer).unwrap();
        assert!(matches!(
            load_metadata(&dir),
            Err(CheckpointError::Corrupt { .. })
        ));
        std::fs::write(&file, &good).unwrap();
        assert!(load_metadata(&dir).is_ok());
    }

    #[test]
    fn corrupt_metadata_messages_name_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, _) = write_checkpoint(tmp.path(), JobId::generate(), 1);
        let file = dir.join(METADATA_FILE);
        flip_byte(&file, 100);
        let msg = load_metadata(&dir).unwrap_err().to_string();
        assert!(msg.contains(&file.display().to_string()), "{msg}");
        assert!(msg.contains("checksum mismatch"), "{msg}");
    }

    #[test]
    fn another_format_version_is_a_version_mismatch() {
        let m = meta(JobId::generate(), 1, vec![]);
        let mut bytes = encode_metadata(&m).unwrap();
        bytes[8..12].copy_from_slice(&7u32.to_be_bytes());
        assert_eq!(
            decode_metadata(Path::new("x/_metadata"), &bytes).unwrap_err(),
            CheckpointError::VersionMismatch {
                path: PathBuf::from("x/_metadata"),
                supported: FORMAT_VERSION,
                found: 7
            }
        );
        // A newer schema inside a valid frame.
        let mut newer = m.clone();
        newer.version = 2;
        let bytes = encode_metadata(&newer).unwrap();
        assert!(matches!(
            decode_metadata(Path::new("m"), &bytes),
            Err(CheckpointError::VersionMismatch { found: 2, .. })
        ));
    }

    #[test]
    fn truncated_or_flipped_state_is_corrupt() {
        let tmp = tempfile::tempdir().unwrap();
        let (dir, m) = write_checkpoint(tmp.path(), JobId::generate(), 1);
        let h = m.task_state(&key(0)).unwrap().clone();
        let file = dir.join(&h.path);

        flip_byte(&file, 3);
        let err = read_task_state(&dir, &h).unwrap_err();
        assert!(
            matches!(&err, CheckpointError::Corrupt { path, reason } if path == &file && reason.contains("hashes to")),
            "{err:?}"
        );

        std::fs::write(&file, b"state of subtask").unwrap();
        let err = read_task_state(&dir, &h).unwrap_err();
        assert!(
            matches!(&err, CheckpointError::Corrupt { reason, .. } if reason.contains("bytes")),
            "{err:?}"
        );

        std::fs::remove_file(&file).unwrap();
        assert!(matches!(
            read_task_state(&dir, &h),
            Err(CheckpointError::Corrupt { .. })
        ));
    }

    #[test]
    fn handle_paths_escaping_the_directory_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("chk-1");
        std::fs::create_dir_all(&dir).unwrap();
        let secret = tmp.path().join("secret");
        std::fs::write(&secret, b"secret").unwrap();
        for path in [
            PathBuf::from("../secret"),
            PathBuf::from("a/../../secret"),
            secret.clone(),
            PathBuf::from("./x"),
            PathBuf::new(),
        ] {
            let handle = TaskStateHandle {
                path: path.clone(),
                size: 6,
                sha256: sha256_hex(b"secret"),
            };
            assert_eq!(
                read_task_state(&dir, &handle).unwrap_err(),
                CheckpointError::PathEscape {
                    path: path.clone(),
                    dir: dir.clone()
                }
            );
            // Metadata naming it is refused when written, and when loaded.
            let m = meta(JobId::generate(), 1, vec![(key(0), Some(handle))]);
            assert!(matches!(
                write_metadata(&dir, &m),
                Err(CheckpointError::PathEscape { .. })
            ));
            std::fs::write(dir.join(METADATA_FILE), encode_metadata(&m).unwrap()).unwrap();
            assert!(matches!(
                load_metadata(&dir),
                Err(CheckpointError::Corrupt { reason, .. }) if reason.contains("escapes")
            ));
        }
    }

    #[test]
    fn discard_removes_the_directory_and_tolerates_missing_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let job = JobId::generate();
        let (dir, _) = write_checkpoint(tmp.path(), job, 1);
        discard(&dir).unwrap();
        assert!(!dir.exists());
        discard(&dir).unwrap();
        assert!(tmp.path().join(job.to_string()).exists());
    }

    #[test]
    fn stateless_checkpoints_have_metadata_only() {
        let tmp = tempfile::tempdir().unwrap();
        let job = JobId::generate();
        let dir = checkpoint_dir(tmp.path(), job, 1);
        let m = meta(job, 1, vec![(key(0), None), (key(1), None)]);
        let path = write_metadata(&dir, &m).unwrap();
        assert_eq!(path, dir.join(METADATA_FILE));
        assert_eq!(load_metadata(&path).unwrap(), (dir.clone(), m));
        assert_eq!(find_latest(tmp.path(), job), Some((1, dir)));
    }

    /// A small deterministic generator (splitmix64), so failures reproduce.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }
        fn bytes(&mut self, max: usize) -> Vec<u8> {
            let len = (self.next() % (max as u64 + 1)) as usize;
            (0..len).map(|_| self.next() as u8).collect()
        }
    }

    /// Frames `body` with a valid header and checksum, so the decoder itself is exercised.
    fn framed(body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
        out.extend_from_slice(&(body.len() as u64).to_be_bytes());
        out.extend_from_slice(&Sha256::digest(body));
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn arbitrary_bytes_as_metadata_never_panic() {
        let mut rng = Rng(0x5eed);
        let valid = encode_metadata(&meta(
            JobId::generate(),
            9,
            vec![(
                key(0),
                Some(TaskStateHandle {
                    path: "a.state".into(),
                    size: 1,
                    sha256: sha256_hex(b"a"),
                }),
            )],
        ))
        .unwrap();
        let valid_body = valid[HEADER_LEN..].to_vec();
        let path = Path::new("fuzz/_metadata");
        for i in 0..3000 {
            let input = match i % 4 {
                // Pure noise.
                0 => rng.bytes(300),
                // Noise behind a valid magic.
                1 => {
                    let mut b = MAGIC.to_vec();
                    b.extend(rng.bytes(300));
                    b
                }
                // Noise as a correctly framed body: exercises the MessagePack decoder.
                2 => framed(&rng.bytes(300)),
                // A valid body with random bytes mutated, re-framed.
                _ => {
                    let mut body = valid_body.clone();
                    for _ in 0..=(rng.next() % 4) {
                        let at = (rng.next() as usize) % body.len();
                        body[at] = rng.next() as u8;
                    }
                    framed(&body)
                }
            };
            let _ = decode_metadata(path, &input);
        }
        assert!(decode_metadata(path, &valid).is_ok());
    }
}
