//! Blob files on disk, shared by the server and the cache: the layout, atomic writes, verified
//! reads. Every file operation runs on tokio's blocking pool (`spawn_blocking`), never on an
//! async worker.
//!
//! Layout under a storage directory (server and cache alike):
//!
//! ```text
//! <storage_dir>/job_<job id, 32 hex>/<key, 64 hex>     a complete, verified blob
//! <storage_dir>/incoming/<random>.part                   an upload in progress (server)
//! <storage_dir>/job_<job id>/.<key>.<random>.part        a download in progress (client, cache)
//! ```
//!
//! **Invariant:** a file named after a key was written to a temp file *in the same file system*,
//! synced, hashed to exactly that key, and then renamed into place. Readers therefore never see a
//! partial blob; a blob that changed afterwards (disk corruption, a stray writer) is caught by the
//! hash check every reader performs.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::error::BlobError;
use super::key::{BlobHasher, BlobKey};
use super::protocol::CHUNK_SIZE;
use crate::types::JobId;

/// Name of the directory holding a server's uploads in progress.
pub(crate) const INCOMING_DIR: &str = "incoming";

/// The directory of a job's blobs.
pub(crate) fn job_dir(root: &Path, job_id: JobId) -> PathBuf {
    root.join(format!("job_{job_id}"))
}

/// The file of a blob.
pub(crate) fn blob_path(root: &Path, job_id: JobId, key: BlobKey) -> PathBuf {
    job_dir(root, job_id).join(key.to_string())
}

/// A fresh temp file name for a download of `dest`, in `dest`'s directory (so the final rename
/// stays within one file system).
pub(crate) fn temp_beside(dest: &Path) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    dest.with_file_name(format!(".{name}.{:016x}.part", rand::random::<u64>()))
}

/// A fresh temp file name in `dir`.
pub(crate) fn temp_in(dir: &Path) -> PathBuf {
    dir.join(format!("{:016x}.part", rand::random::<u64>()))
}

/// Runs blocking file work on tokio's blocking pool.
pub(crate) async fn blocking<T, F>(f: F) -> Result<T, BlobError>
where
    F: FnOnce() -> Result<T, BlobError> + Send + 'static,
    T: Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result,
        Err(join) => Err(BlobError::Io {
            action: "run blocking blob file work".into(),
            detail: join.to_string(),
        }),
    }
}

/// Creates a directory and its parents.
pub(crate) fn create_dir_all_blocking(dir: &Path) -> Result<(), BlobError> {
    std::fs::create_dir_all(dir)
        .map_err(|e| BlobError::io(format!("create directory {}", dir.display()), &e))
}

/// Removes a directory tree; `Ok(false)` if it did not exist.
pub(crate) fn remove_dir_all_blocking(dir: &Path) -> Result<bool, BlobError> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(BlobError::io(
            format!("remove directory {}", dir.display()),
            &e,
        )),
    }
}

/// Removes a file; a missing file is fine.
pub(crate) fn remove_file_blocking(path: &Path) -> Result<(), BlobError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(BlobError::io(format!("remove file {}", path.display()), &e)),
    }
}

/// Hashes a whole file: its key and length, or `None` if there is no such file.
pub(crate) fn hash_file_blocking(path: &Path) -> Result<Option<(BlobKey, u64)>, BlobError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BlobError::io(format!("open {}", path.display()), &e)),
    };
    hash_open_file(&mut file, path).map(Some)
}

fn hash_open_file(file: &mut File, path: &Path) -> Result<(BlobKey, u64), BlobError> {
    let mut hasher = BlobHasher::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    let mut len = 0u64;
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok((hasher.finish(), len)),
            Ok(n) => {
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(BlobError::io(format!("read {}", path.display()), &e)),
        }
    }
}

/// Writes `data` atomically to `dest` through a synced temp file at `temp`.
pub(crate) fn write_atomically_blocking(
    temp: &Path,
    dest: &Path,
    data: &[u8],
) -> Result<(), BlobError> {
    let result = (|| {
        for dir in [temp.parent(), dest.parent()].into_iter().flatten() {
            create_dir_all_blocking(dir)?;
        }
        let mut file = File::create(temp)
            .map_err(|e| BlobError::io(format!("create {}", temp.display()), &e))?;
        file.write_all(data)
            .and_then(|()| file.sync_all())
            .map_err(|e| BlobError::io(format!("write {}", temp.display()), &e))?;
        drop(file);
        std::fs::rename(temp, dest).map_err(|e| {
            BlobError::io(format!("move {} to {}", temp.display(), dest.display()), &e)
        })
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(temp);
    }
    result
}

enum WriterMsg {
    Chunk(Bytes),
    Commit { expected: BlobKey, dest: PathBuf },
}

/// Streams a blob into a temp file on the blocking pool while hashing it, then either renames it
/// to its final place (the hash equals the expected key) or deletes it. Dropping the writer
/// without committing deletes the temp file. The channel to the blocking side is bounded, so a
/// fast network waits for a slow disk.
pub(crate) struct BlobFileWriter {
    tx: Option<mpsc::Sender<WriterMsg>>,
    task: Option<JoinHandle<Result<u64, BlobError>>>,
    failed: Option<BlobError>,
}

impl BlobFileWriter {
    /// Starts a writer whose temp file is `temp` (its directory is created if missing).
    pub(crate) fn create(temp: PathBuf) -> Self {
        let (tx, rx) = mpsc::channel(4);
        let task = tokio::task::spawn_blocking(move || run_writer(temp, rx));
        BlobFileWriter {
            tx: Some(tx),
            task: Some(task),
            failed: None,
        }
    }

    /// Appends a chunk. After an error every later call returns the same error.
    pub(crate) async fn write(&mut self, chunk: Bytes) -> Result<(), BlobError> {
        if let Some(err) = &self.failed {
            return Err(err.clone());
        }
        let sent = match &self.tx {
            Some(tx) => tx.send(WriterMsg::Chunk(chunk)).await.is_ok(),
            None => false,
        };
        if sent {
            return Ok(());
        }
        let err = self.writer_error().await;
        self.failed = Some(err.clone());
        Err(err)
    }

    /// Finishes the file: if its content hashes to `expected` it is moved to `dest` (replacing
    /// any file there) and its length returned; otherwise it is deleted and the result is
    /// [`BlobError::Corrupt`].
    pub(crate) async fn commit(
        mut self,
        expected: BlobKey,
        dest: PathBuf,
    ) -> Result<u64, BlobError> {
        if let Some(err) = self.failed.take() {
            return Err(err);
        }
        if let Some(tx) = self.tx.take() {
            if tx.send(WriterMsg::Commit { expected, dest }).await.is_err() {
                return Err(self.writer_error().await);
            }
        }
        match self.task.take() {
            Some(task) => join_writer(task).await,
            None => Err(writer_gone()),
        }
    }

    /// The error that ended the blocking side early.
    async fn writer_error(&mut self) -> BlobError {
        self.tx = None;
        match self.task.take() {
            Some(task) => match join_writer(task).await {
                Ok(_) => writer_gone(),
                Err(err) => err,
            },
            None => writer_gone(),
        }
    }
}

fn writer_gone() -> BlobError {
    BlobError::Io {
        action: "write blob file".into(),
        detail: "the file writer stopped early".into(),
    }
}

async fn join_writer(task: JoinHandle<Result<u64, BlobError>>) -> Result<u64, BlobError> {
    match task.await {
        Ok(result) => result,
        Err(join) => Err(BlobError::Io {
            action: "run the blob file writer".into(),
            detail: join.to_string(),
        }),
    }
}

fn run_writer(temp: PathBuf, mut rx: mpsc::Receiver<WriterMsg>) -> Result<u64, BlobError> {
    let result = write_and_commit(&temp, &mut rx);
    if result.is_err() {
        // Nothing half-written survives: no-op if the rename already happened or no file exists.
        let _ = std::fs::remove_file(&temp);
    }
    result
}

fn write_and_commit(temp: &Path, rx: &mut mpsc::Receiver<WriterMsg>) -> Result<u64, BlobError> {
    if let Some(dir) = temp.parent() {
        create_dir_all_blocking(dir)?;
    }
    let mut file =
        File::create(temp).map_err(|e| BlobError::io(format!("create {}", temp.display()), &e))?;
    let mut hasher = BlobHasher::new();
    let mut len = 0u64;
    loop {
        match rx.blocking_recv() {
            Some(WriterMsg::Chunk(chunk)) => {
                file.write_all(&chunk)
                    .map_err(|e| BlobError::io(format!("write {}", temp.display()), &e))?;
                hasher.update(&chunk);
                len += chunk.len() as u64;
            }
            Some(WriterMsg::Commit { expected, dest }) => {
                file.sync_all()
                    .map_err(|e| BlobError::io(format!("sync {}", temp.display()), &e))?;
                drop(file);
                let actual = hasher.finish();
                if actual != expected {
                    return Err(BlobError::Corrupt {
                        key: expected,
                        actual,
                    });
                }
                if let Some(dir) = dest.parent() {
                    create_dir_all_blocking(dir)?;
                }
                std::fs::rename(temp, &dest).map_err(|e| {
                    BlobError::io(format!("move {} to {}", temp.display(), dest.display()), &e)
                })?;
                return Ok(len);
            }
            None => {
                return Err(BlobError::Io {
                    action: format!("write {}", temp.display()),
                    detail: "the transfer was abandoned".into(),
                })
            }
        }
    }
}

/// What the reader of a stored blob hands to the connection that serves it.
pub(crate) enum ReadMsg {
    /// The file hashes to its key and has this many bytes; chunks follow.
    Ready(u64),
    /// The next chunk.
    Chunk(Bytes),
    /// The blob cannot be served (before `Ready`), or reading failed midway (after it).
    Failed(BlobError),
}

/// Opens a stored blob on the blocking pool, hashes it, and if it matches `key` streams it in
/// chunks. A file that no longer hashes to its key is deleted (it can never be served again;
/// a new PUT of the content repairs it) and reported as [`BlobError::Corrupt`]. The same open
/// handle is used for the check and the stream, so a concurrent delete or replace of the path
/// cannot slip an unchecked file in between.
pub(crate) fn read_verified(path: PathBuf, job_id: JobId, key: BlobKey) -> mpsc::Receiver<ReadMsg> {
    let (tx, rx) = mpsc::channel(4);
    tokio::task::spawn_blocking(move || {
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(e) => {
                let err = if e.kind() == std::io::ErrorKind::NotFound {
                    BlobError::NotFound { job_id, key }
                } else {
                    BlobError::io(format!("open {}", path.display()), &e)
                };
                let _ = tx.blocking_send(ReadMsg::Failed(err));
                return;
            }
        };
        let (actual, len) = match hash_open_file(&mut file, &path) {
            Ok(found) => found,
            Err(err) => {
                let _ = tx.blocking_send(ReadMsg::Failed(err));
                return;
            }
        };
        if actual != key {
            tracing::warn!(
                %job_id, %key, %actual, path = %path.display(),
                "stored blob does not hash to its key: deleting it"
            );
            if is_same_file(&file, &path) {
                let _ = remove_file_blocking(&path);
            }
            let _ = tx.blocking_send(ReadMsg::Failed(BlobError::Corrupt { key, actual }));
            return;
        }
        if let Err(e) = file.seek(SeekFrom::Start(0)) {
            let err = BlobError::io(format!("seek {}", path.display()), &e);
            let _ = tx.blocking_send(ReadMsg::Failed(err));
            return;
        }
        if tx.blocking_send(ReadMsg::Ready(len)).is_err() {
            return;
        }
        loop {
            let mut buf = vec![0u8; CHUNK_SIZE];
            let msg = match file.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    ReadMsg::Chunk(Bytes::from(buf))
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => ReadMsg::Failed(BlobError::io(format!("read {}", path.display()), &e)),
            };
            let failed = matches!(msg, ReadMsg::Failed(_));
            if tx.blocking_send(msg).is_err() || failed {
                return;
            }
        }
    });
    rx
}

/// Whether `path` still names the file `file` is open on (so we delete only what we checked).
#[cfg(unix)]
fn is_same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn is_same_file(_file: &File, _path: &Path) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writer_commits_only_matching_content() {
        let dir = tempfile::tempdir().unwrap();
        let data = Bytes::from(vec![7u8; 200_000]);
        let key = BlobKey::of(&data);
        let dest = dir.path().join("job").join(key.to_string());

        let mut w = BlobFileWriter::create(temp_beside(&dest));
        for chunk in data.chunks(CHUNK_SIZE) {
            w.write(Bytes::copy_from_slice(chunk)).await.unwrap();
        }
        assert_eq!(w.commit(key, dest.clone()).await.unwrap(), 200_000);
        assert_eq!(std::fs::read(&dest).unwrap(), data);

        // Wrong content: Corrupt, and neither the destination nor a temp file appears.
        let other = dir.path().join("other");
        let mut w = BlobFileWriter::create(temp_beside(&other));
        w.write(Bytes::from_static(b"not it")).await.unwrap();
        let err = w.commit(key, other.clone()).await.unwrap_err();
        assert_eq!(
            err,
            BlobError::Corrupt {
                key,
                actual: BlobKey::of(b"not it")
            }
        );
        assert!(!other.exists());

        // Abandoned: the temp file is removed once the blocking side sees the channel close.
        let temp = temp_beside(&other);
        let mut w = BlobFileWriter::create(temp.clone());
        w.write(Bytes::from_static(b"half")).await.unwrap();
        let task = w.task.take().unwrap();
        drop(w);
        assert!(task.await.unwrap().is_err());
        assert!(!temp.exists());
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the job directory remains");
    }

    #[tokio::test]
    async fn reader_refuses_and_deletes_a_corrupt_file() {
        let dir = tempfile::tempdir().unwrap();
        let job = JobId::generate();
        let key = BlobKey::of(b"hello");
        let path = blob_path(dir.path(), job, key);
        write_atomically_blocking(&temp_in(dir.path()), &path, b"hello").unwrap();

        let mut rx = read_verified(path.clone(), job, key);
        assert!(matches!(rx.recv().await, Some(ReadMsg::Ready(5))));
        assert!(matches!(rx.recv().await, Some(ReadMsg::Chunk(c)) if &c[..] == b"hello"));
        assert!(rx.recv().await.is_none());

        std::fs::write(&path, b"jello").unwrap();
        let mut rx = read_verified(path.clone(), job, key);
        match rx.recv().await {
            Some(ReadMsg::Failed(BlobError::Corrupt { key: k, actual })) => {
                assert_eq!(k, key);
                assert_eq!(actual, BlobKey::of(b"jello"));
            }
            _ => panic!("expected a corrupt blob"),
        }
        assert!(!path.exists());
        let mut rx = read_verified(path, job, key);
        assert!(matches!(
            rx.recv().await,
            Some(ReadMsg::Failed(BlobError::NotFound { .. }))
        ));
    }
}
