//! The blob service end to end: BlobServer, BlobClient and BlobCache over real sockets
//! (Flink scenarios 33 and 34), corruption in transit and on disk, and bad input.
//!
//! Every wait is bounded (`bounded`, `wait_until`); every port is ephemeral; every storage
//! directory is a fresh temp dir.

use std::future::Future;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rflink_runtime::blob::protocol::{
    self, decode_error, preamble, Request, OP_GET, OP_PUT, STATUS_ERR, STATUS_OK,
};
use rflink_runtime::blob::{
    BlobCache, BlobCacheConfig, BlobClient, BlobClientConfig, BlobError, BlobKey, BlobServer,
    BlobServerConfig,
};
use rflink_runtime::types::JobId;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Upper bound for any single step of a test.
const STEP: Duration = Duration::from_secs(30);

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(STEP, f)
        .await
        .expect("test step did not finish within its bound")
}

/// Polls `cond` every 10 ms until it holds, failing after `STEP`.
async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + STEP;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// SHA-256 computed independently of the blob module.
fn sha256(data: &[u8]) -> BlobKey {
    let digest: [u8; 32] = Sha256::digest(data).into();
    BlobKey::from_bytes(digest)
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = vec![0u8; len];
    rng.fill(&mut data[..]);
    data
}

async fn start_server(dir: &Path, tweak: impl FnOnce(&mut BlobServerConfig)) -> BlobServer {
    let mut config = BlobServerConfig {
        bind_host: "127.0.0.1".into(),
        port: 0,
        storage_dir: dir.join("server"),
        ..BlobServerConfig::default()
    };
    tweak(&mut config);
    bounded(BlobServer::start(config))
        .await
        .expect("server starts")
}

fn client() -> BlobClient {
    BlobClient::new(BlobClientConfig {
        connect_timeout: Duration::from_secs(5),
        io_timeout: Duration::from_secs(10),
        ..BlobClientConfig::default()
    })
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

fn job_bytes(job_id: JobId) -> [u8; 16] {
    job_id.as_abstract_id().as_u128().to_be_bytes()
}

fn flip_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x5a;
    std::fs::write(path, bytes).unwrap();
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy that flips one byte of the stream in one direction, for the first N connections.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

struct Proxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start_proxy(
    target: SocketAddr,
    direction: Direction,
    offset: usize,
    corrupt_first: usize,
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut accepted = 0;
        while let Ok((client, _)) = listener.accept().await {
            let corrupt = accepted < corrupt_first;
            accepted += 1;
            tokio::spawn(async move {
                let Ok(server) = TcpStream::connect(target).await else {
                    return;
                };
                let (client_r, client_w) = client.into_split();
                let (server_r, server_w) = server.into_split();
                let flip = |d| (corrupt && direction == d).then_some(offset);
                tokio::join!(
                    pump(client_r, server_w, flip(Direction::ToServer)),
                    pump(server_r, client_w, flip(Direction::ToClient)),
                );
            });
        }
    });
    Proxy { addr, task }
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, flip_at: Option<usize>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut pos = 0usize;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(at) = flip_at {
            if (pos..pos + n).contains(&at) {
                buf[at - pos] ^= 0xff;
            }
        }
        pos += n;
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

#[test]
fn handles_can_be_shared_across_threads_and_actors() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<BlobServer>();
    assert_send_sync::<BlobClient>();
    assert_send_sync::<BlobCache>();
    assert_send_sync::<BlobError>();
}

// ---------------------------------------------------------------------------------------------
// Scenario 33: put / get.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_then_get_round_trips_small_and_large_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let client = client();
    let job = JobId::generate();

    let sizes = [0usize, 1, 1000, 3 * 64 * 1024 + 7, 5 * 1024 * 1024 + 3];
    for (i, &size) in sizes.iter().enumerate() {
        let data = pattern(size, i as u64);
        let key = bounded(client.put(server.address(), job, data.clone()))
            .await
            .unwrap();
        assert_eq!(key, sha256(&data), "the key is the SHA-256 of the content");
        assert_eq!(key.to_string().len(), 64);
        let back = bounded(client.get(server.address(), job, key))
            .await
            .unwrap();
        assert_eq!(&back[..], &data[..], "{size} bytes come back identical");
        let stored = std::fs::read(server.blob_path(job, key)).unwrap();
        assert_eq!(stored, data);
    }

    // The same content again: the same key, stored once.
    let data = pattern(1000, 2);
    let key = bounded(client.put(server.address().to_string(), job, data))
        .await
        .unwrap();
    assert_eq!(key, sha256(&pattern(1000, 2)));

    // Into a file, and a blob stored locally by the JobManager.
    let local = bounded(server.put(job, b"local blob".to_vec()))
        .await
        .unwrap();
    assert_eq!(local, sha256(b"local blob"));
    let dest = dir.path().join("downloads").join("local.bin");
    let len = bounded(client.get_to_file(server.address(), job, local, &dest))
        .await
        .unwrap();
    assert_eq!(len, 10);
    assert_eq!(std::fs::read(&dest).unwrap(), b"local blob");
    assert_eq!(files_under(&dir.path().join("downloads")), vec![dest]);

    let stats = server.stats();
    assert_eq!(stats.put_requests, sizes.len() as u64 + 1);
    assert_eq!(stats.blobs_stored, sizes.len() as u64 + 2);
    assert_eq!(stats.blobs_served, sizes.len() as u64 + 1);
    assert_eq!(stats.protocol_violations, 0);
    assert!(files_under(&server.storage_dir().join("incoming")).is_empty());

    // Job cleanup removes every blob of the job.
    bounded(server.delete_job(job)).await.unwrap();
    assert!(!server.blob_path(job, key).exists());
    let err = bounded(client.get(server.address(), job, key))
        .await
        .unwrap_err();
    assert_eq!(err, BlobError::NotFound { job_id: job, key });
    bounded(server.close()).await;
}

#[tokio::test]
async fn get_of_an_unknown_blob_is_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let client = client();
    let job = JobId::generate();
    let missing = sha256(b"never uploaded");
    let err = bounded(client.get(server.address(), job, missing))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BlobError::NotFound {
            job_id: job,
            key: missing
        }
    );
    assert!(!err.is_retryable());

    // A key that exists for another job only.
    let key = bounded(client.put(server.address(), job, b"mine".to_vec()))
        .await
        .unwrap();
    let other = JobId::generate();
    let err = bounded(client.get(server.address(), other, key))
        .await
        .unwrap_err();
    assert_eq!(err, BlobError::NotFound { job_id: other, key });
    assert_eq!(server.stats().not_found, 2);
    bounded(server.close()).await;
}

#[tokio::test]
async fn oversized_blob_is_refused_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let max = 1024 * 1024;
    let server = start_server(dir.path(), |c| c.max_blob_size = max).await;
    let client = client();
    let job = JobId::generate();

    let err = bounded(client.put(server.address(), job, vec![1u8; max as usize + 1]))
        .await
        .unwrap_err();
    assert_eq!(err, BlobError::TooLarge { size: max + 1, max });
    assert_eq!(server.stats().too_large, 1);
    assert_eq!(server.stats().bytes_received, 0, "no body byte was sent");

    // Exactly the limit is fine, and others are served as before.
    let data = pattern(max as usize, 7);
    let key = bounded(client.put(server.address(), job, data.clone()))
        .await
        .unwrap();
    assert_eq!(
        &bounded(client.get(server.address(), job, key))
            .await
            .unwrap()[..],
        &data[..]
    );

    // The client's own limit fails before connecting; a GET over it fails before buffering.
    let small = BlobClient::new(BlobClientConfig {
        max_blob_size: 10,
        ..client.config().clone()
    });
    let connections = server.stats().connections_accepted;
    let err = bounded(small.put(server.address(), job, vec![0u8; 11]))
        .await
        .unwrap_err();
    assert_eq!(err, BlobError::TooLarge { size: 11, max: 10 });
    assert_eq!(server.stats().connections_accepted, connections);
    let err = bounded(small.get(server.address(), job, key))
        .await
        .unwrap_err();
    assert_eq!(err, BlobError::TooLarge { size: max, max: 10 });
    bounded(server.close()).await;
}

// ---------------------------------------------------------------------------------------------
// Corruption.

#[tokio::test]
async fn a_byte_flipped_in_a_get_response_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let client = client();
    let job = JobId::generate();
    let data = pattern(300_000, 11);
    let key = bounded(client.put(server.address(), job, data.clone()))
        .await
        .unwrap();

    // Response: status (1) + size (8) + data; flip data byte 100 on every connection.
    let proxy = start_proxy(server.address(), Direction::ToClient, 9 + 100, usize::MAX).await;
    let mut altered = data.clone();
    altered[100] ^= 0xff;
    let err = bounded(client.get(proxy.addr, job, key)).await.unwrap_err();
    assert_eq!(
        err,
        BlobError::Corrupt {
            key,
            actual: sha256(&altered)
        }
    );
    assert!(err.is_retryable());
    assert!(err.to_string().contains("data corruption"), "{err}");

    // Into a file: nothing is left behind, not even the temp file.
    let downloads = dir.path().join("downloads");
    let dest = downloads.join("blob");
    let err = bounded(client.get_to_file(proxy.addr, job, key, &dest))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Corrupt { .. }), "{err}");
    assert!(
        files_under(&downloads).is_empty(),
        "{:?}",
        files_under(&downloads)
    );

    // Directly, the same blob is fine.
    assert_eq!(
        &bounded(client.get(server.address(), job, key))
            .await
            .unwrap()[..],
        &data[..]
    );
    bounded(server.close()).await;
}

#[tokio::test]
async fn a_byte_flipped_in_a_put_upload_is_rejected_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let client = client();
    let job = JobId::generate();
    let data = pattern(200_000, 12);
    let key = sha256(&data);

    // Request: preamble (6) + op (1) + job (16) + size (8) = 31 bytes, then the data.
    let proxy = start_proxy(server.address(), Direction::ToServer, 31 + 5000, 1).await;
    let mut altered = data.clone();
    altered[5000] ^= 0xff;
    let err = bounded(client.put(proxy.addr, job, data.clone()))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BlobError::Corrupt {
            key,
            actual: sha256(&altered)
        }
    );
    assert_eq!(server.stats().corrupt_uploads, 1);
    assert!(!server.blob_path(job, key).exists());
    assert!(!server.blob_path(job, sha256(&altered)).exists());
    let err = bounded(client.get(server.address(), job, key))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::NotFound { .. }), "{err}");

    // The proxy corrupts only its first connection: a retry through it succeeds.
    assert_eq!(
        bounded(client.put(proxy.addr, job, data)).await.unwrap(),
        key
    );
    bounded(server.close()).await;
}

#[tokio::test]
async fn a_file_corrupted_on_the_server_disk_is_refused_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let client = client();
    let job = JobId::generate();
    let data = pattern(100_000, 13);
    let key = bounded(client.put(server.address(), job, data.clone()))
        .await
        .unwrap();
    let path = server.blob_path(job, key);
    flip_byte(&path, 4242);
    let mut altered = data.clone();
    altered[4242] ^= 0x5a;

    let err = bounded(client.get(server.address(), job, key))
        .await
        .unwrap_err();
    assert_eq!(
        err,
        BlobError::Corrupt {
            key,
            actual: sha256(&altered)
        }
    );
    assert_eq!(server.stats().corrupt_stored, 1);
    assert!(!path.exists(), "a corrupt file is deleted");
    let err = bounded(client.get(server.address(), job, key))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::NotFound { .. }), "{err}");

    // Uploading the content again repairs it.
    bounded(client.put(server.address(), job, data.clone()))
        .await
        .unwrap();
    assert_eq!(
        &bounded(client.get(server.address(), job, key))
            .await
            .unwrap()[..],
        &data[..]
    );
    bounded(server.close()).await;
}

// ---------------------------------------------------------------------------------------------
// Bad input.

/// A `tracing` writer collecting everything into a buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Sends `bytes` on a fresh connection, half-closes if asked, and reads until the server
/// closes. Returns what the server sent.
async fn raw_exchange(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The server may close before taking everything; that is allowed.
    let _ = stream.write_all(bytes).await;
    if half_close {
        let _ = stream.shutdown().await;
    }
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    reply
}

/// Decodes a reply that must be exactly one error frame.
fn error_reply(reply: &[u8]) -> BlobError {
    assert!(reply.len() >= 5, "expected an error frame, got {reply:?}");
    assert_eq!(reply[0], STATUS_ERR, "reply {reply:?}");
    let len = u32::from_be_bytes([reply[1], reply[2], reply[3], reply[4]]) as usize;
    assert_eq!(reply.len(), 5 + len, "exactly one frame");
    decode_error(&reply[5..]).expect("a well-formed error frame")
}

async fn assert_still_serving(server: &BlobServer, job: JobId, key: BlobKey, data: &[u8]) {
    let back = bounded(client().get(server.address(), job, key))
        .await
        .unwrap();
    assert_eq!(&back[..], data);
}

#[tokio::test]
async fn malformed_requests_end_only_their_connection() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    // Current-thread runtime: the server's connection tasks log on this thread.
    let _guard = tracing::subscriber::set_default(subscriber);

    let dir = tempfile::tempdir().unwrap();
    let max = 4 * 1024 * 1024;
    let server = start_server(dir.path(), |c| {
        c.max_blob_size = max;
        c.io_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = server.address();
    let job = JobId::generate();
    let data = pattern(2 * 1024 * 1024, 21);
    let key = bounded(client().put(addr, job, data.clone()))
        .await
        .unwrap();

    // Garbage that is not a preamble.
    let garbage = pattern(64, 22);
    let err = error_reply(&bounded(raw_exchange(addr, &garbage, false)).await);
    assert!(matches!(err, BlobError::Protocol { .. }), "{err}");
    assert_still_serving(&server, job, key, &data).await;

    // Another protocol on the port.
    let err = error_reply(&bounded(raw_exchange(addr, b"GET / HTTP/1.1\r\n\r\n", false)).await);
    assert!(
        matches!(err, BlobError::Protocol { ref detail } if detail.contains("magic")),
        "{err}"
    );

    // Another version.
    let mut wrong_version = protocol::MAGIC.to_vec();
    wrong_version.extend_from_slice(&2u16.to_be_bytes());
    Request::Get { job_id: job, key }.encode(&mut wrong_version);
    let err = error_reply(&bounded(raw_exchange(addr, &wrong_version, false)).await);
    assert_eq!(
        err,
        BlobError::VersionMismatch {
            supported: 1,
            found: 2
        }
    );

    // Unknown operation.
    let mut unknown = preamble().to_vec();
    unknown.extend_from_slice(&[0x7f; 40]);
    let err = error_reply(&bounded(raw_exchange(addr, &unknown, false)).await);
    assert!(
        matches!(err, BlobError::Protocol { ref detail } if detail.contains("0x7f")),
        "{err}"
    );

    // Truncated header.
    let mut truncated = preamble().to_vec();
    truncated.push(OP_GET);
    truncated.extend_from_slice(&[1u8; 10]);
    let err = error_reply(&bounded(raw_exchange(addr, &truncated, true)).await);
    assert!(
        matches!(err, BlobError::Protocol { ref detail } if detail.contains("truncated")),
        "{err}"
    );

    // Truncated preamble.
    let err = error_reply(&bounded(raw_exchange(addr, b"RFB", true)).await);
    assert!(matches!(err, BlobError::Protocol { .. }), "{err}");

    // Absurd length: refused before the body, without allocating it.
    let mut absurd = preamble().to_vec();
    Request::Put {
        job_id: job,
        size: u64::MAX,
    }
    .encode(&mut absurd);
    let err = error_reply(&bounded(raw_exchange(addr, &absurd, false)).await);
    assert_eq!(
        err,
        BlobError::TooLarge {
            size: u64::MAX,
            max
        }
    );

    // A PUT whose body ends early: the connection closes, no temp file survives.
    let mut short_body = preamble().to_vec();
    short_body.push(OP_PUT);
    short_body.extend_from_slice(&job_bytes(JobId::generate()));
    short_body.extend_from_slice(&1000u64.to_be_bytes());
    short_body.extend_from_slice(&[9u8; 10]);
    let reply = bounded(raw_exchange(addr, &short_body, true)).await;
    assert_eq!(reply[0], STATUS_OK, "the go-ahead");
    let err = error_reply(&reply[1..]);
    assert!(
        matches!(err, BlobError::Protocol { ref detail } if detail.contains("truncated")),
        "{err}"
    );
    let incoming = server.storage_dir().join("incoming");
    wait_until("the aborted upload's temp file is removed", || {
        files_under(&incoming).is_empty()
    })
    .await;

    // A client that stalls mid-header is cut off after the I/O timeout.
    let mut stalled = TcpStream::connect(addr).await.unwrap();
    let mut partial = preamble().to_vec();
    partial.extend_from_slice(&[OP_GET, 0, 0]);
    stalled.write_all(&partial).await.unwrap();
    let mut reply = Vec::new();
    bounded(stalled.read_to_end(&mut reply)).await.unwrap();
    let err = error_reply(&reply);
    assert!(
        matches!(err, BlobError::Protocol { ref detail } if detail.contains("stalled")),
        "{err}"
    );
    assert!(server.stats().stalled_connections >= 1);

    // Connecting and leaving is not an error.
    assert!(bounded(raw_exchange(addr, b"", true)).await.is_empty());

    // Random byte streams after a valid preamble, while a large download runs alongside.
    let download = tokio::spawn(async move { client().get(addr, job, key).await });
    let before = server.stats();
    let mut rng = StdRng::seed_from_u64(23);
    for i in 0..60 {
        let mut bytes = preamble().to_vec();
        // A third each: pure noise, a GET header then noise, a small PUT then noise (shorter or
        // longer than the size it announces).
        match i % 3 {
            0 => {}
            1 => bytes.push(OP_GET),
            _ => {
                bytes.push(OP_PUT);
                bytes.extend_from_slice(&job_bytes(JobId::generate()));
                bytes.extend_from_slice(&rng.random_range(0..300u64).to_be_bytes());
            }
        }
        let len = rng.random_range(0..400);
        let mut tail = vec![0u8; len];
        rng.fill(&mut tail[..]);
        bytes.extend_from_slice(&tail);
        let reply = bounded(raw_exchange(addr, &bytes, true)).await;
        // Whatever it is, the server answered with well-formed frames or nothing.
        if let Some(&status) = reply.first() {
            assert!(status == STATUS_OK || status == STATUS_ERR, "{reply:?}");
        }
    }
    let downloaded = bounded(download).await.unwrap().unwrap();
    assert_eq!(&downloaded[..], &data[..]);
    assert_still_serving(&server, job, key, &data).await;

    assert!(before.protocol_violations >= 6, "{before:?}");
    assert_eq!(before.too_large, 1);
    let after = server.stats();
    assert!(after.protocol_violations > before.protocol_violations);
    assert!(after.put_requests > before.put_requests && after.get_requests > before.get_requests);
    let text = logs.text();
    assert!(
        text.contains("WARN"),
        "bad input is logged at warn:\n{text}"
    );
    assert!(text.contains("bad blob request"), "{text}");
    bounded(server.close()).await;
}

#[tokio::test]
async fn several_requests_on_one_connection_and_errors_keep_it_in_sync() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let job = JobId::generate();
    let key = bounded(server.put(job, b"abc".to_vec())).await.unwrap();
    let missing = sha256(b"missing");

    let mut bytes = preamble().to_vec();
    Request::Get {
        job_id: job,
        key: missing,
    }
    .encode(&mut bytes);
    Request::Get { job_id: job, key }.encode(&mut bytes);
    let reply = bounded(raw_exchange(server.address(), &bytes, true)).await;
    // First an error frame (NotFound), then the blob: status, size 3, "abc".
    let len = u32::from_be_bytes([reply[1], reply[2], reply[3], reply[4]]) as usize;
    assert_eq!(
        error_reply(&reply[..5 + len]),
        BlobError::NotFound {
            job_id: job,
            key: missing
        }
    );
    let rest = &reply[5 + len..];
    assert_eq!(rest[0], STATUS_OK);
    assert_eq!(u64::from_be_bytes(rest[1..9].try_into().unwrap()), 3);
    assert_eq!(&rest[9..], b"abc");
    bounded(server.close()).await;
}

#[tokio::test]
async fn a_closed_server_refuses_connections() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let addr = server.address();
    let job = JobId::generate();
    let key = bounded(client().put(addr, job, b"x".to_vec()))
        .await
        .unwrap();
    bounded(server.close()).await;
    bounded(server.close()).await;
    let err = bounded(client().get(addr, job, key)).await.unwrap_err();
    assert!(matches!(err, BlobError::Connection { .. }), "{err}");
    let err = bounded(server.put(job, b"y".to_vec())).await.unwrap_err();
    assert!(matches!(err, BlobError::Closed { .. }), "{err}");
    assert!(server.blob_path(job, key).exists(), "blobs survive close");

    let bad = BlobServerConfig {
        max_blob_size: 0,
        max_connections: 0,
        storage_dir: dir.path().join("x"),
        ..BlobServerConfig::default()
    };
    match BlobServer::start(bad).await {
        Err(BlobError::InvalidConfig { detail }) => {
            assert!(detail.contains("max blob size") && detail.contains("max connections"));
        }
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Scenario 34: the TaskManager's cache.

fn cache_config(dir: &Path, cleanup: Duration) -> BlobCacheConfig {
    BlobCacheConfig {
        storage_dir: dir.join("cache"),
        cleanup_interval: cleanup,
        fetch_retries: 5,
        retry_backoff: Duration::from_millis(10),
        client: BlobClientConfig {
            connect_timeout: Duration::from_secs(5),
            io_timeout: Duration::from_secs(10),
            ..BlobClientConfig::default()
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_requests_for_one_blob_download_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let job = JobId::generate();
    let jar = pattern(3 * 1024 * 1024, 31);
    let key = bounded(client().put(server.address(), job, jar.clone()))
        .await
        .unwrap();
    let cache = bounded(BlobCache::new(
        cache_config(dir.path(), Duration::from_secs(3600)),
        server.address(),
    ))
    .await
    .unwrap();
    cache.register_job(job).unwrap();
    cache.register_job(job).unwrap();

    // Eight tasks of the job ask for the jar at once.
    let requests = (0..8).map(|_| {
        let cache = cache.clone();
        tokio::spawn(async move { cache.get_file(job, key).await })
    });
    let paths: Vec<PathBuf> = bounded(futures::future::join_all(requests))
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert!(paths.iter().all(|p| *p == paths[0]));
    assert_eq!(std::fs::read(&paths[0]).unwrap(), jar);
    assert_eq!(paths[0], cache.job_dir(job).join(key.to_string()));
    assert_eq!(server.stats().get_requests, 1, "downloaded once");
    let stats = cache.stats();
    assert_eq!(stats.downloads, 1);
    // Requests either joined the download in flight or found the verified file afterwards.
    assert_eq!(stats.joined + stats.local_hits + 1, 8, "{stats:?}");

    // A later request is a cache hit.
    let again = bounded(cache.get_file(job, key)).await.unwrap();
    assert_eq!(again, paths[0]);
    assert_eq!(server.stats().get_requests, 1);
    assert!(cache.stats().local_hits >= 1);
    assert_eq!(files_under(&cache.job_dir(job)), vec![paths[0].clone()]);

    bounded(cache.close()).await;
    assert!(
        !cache.job_dir(job).exists(),
        "close deletes job directories"
    );
    let err = bounded(cache.get_file(job, key)).await.unwrap_err();
    assert!(matches!(err, BlobError::Closed { .. }), "{err}");
    bounded(server.close()).await;
}

#[tokio::test]
async fn concurrent_requests_join_the_download_in_flight() {
    // Deterministic variant: on a current-thread runtime, both requests start before the
    // download task can run, so the second must join the first.
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let job = JobId::generate();
    let key = bounded(server.put(job, pattern(100_000, 32)))
        .await
        .unwrap();
    let cache = bounded(BlobCache::new(
        cache_config(dir.path(), Duration::from_secs(3600)),
        server.address(),
    ))
    .await
    .unwrap();
    cache.register_job(job).unwrap();
    let (a, b) =
        bounded(async { tokio::join!(cache.get_file(job, key), cache.get_file(job, key)) }).await;
    assert_eq!(a.unwrap(), b.unwrap());
    assert_eq!(server.stats().get_requests, 1);
    let stats = cache.stats();
    assert_eq!((stats.requests, stats.joined, stats.downloads), (2, 1, 1));
    bounded(server.close()).await;
}

#[tokio::test]
async fn a_released_job_is_cleaned_up_after_the_interval() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let job = JobId::generate();
    let key = bounded(server.put(job, b"jar".to_vec())).await.unwrap();
    let cache = bounded(BlobCache::new(
        cache_config(dir.path(), Duration::from_millis(100)),
        server.address(),
    ))
    .await
    .unwrap();
    cache.register_job(job).unwrap();
    let path = bounded(cache.get_file(job, key)).await.unwrap();
    assert!(path.exists());
    cache.release_job(job).unwrap();
    assert!(path.exists(), "kept until the cleanup interval has passed");

    wait_until("the job's directory is cleaned up", || {
        cache.stats().jobs_cleaned == 1
    })
    .await;
    assert!(!cache.job_dir(job).exists());
    let err = bounded(cache.get_file(job, key)).await.unwrap_err();
    assert_eq!(err, BlobError::UnknownJob { job_id: job });
    let err = cache.release_job(job).unwrap_err();
    assert_eq!(err, BlobError::UnknownJob { job_id: job });
    bounded(server.close()).await;
}

#[tokio::test]
async fn a_job_registered_again_before_the_cleanup_keeps_its_files() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let job = JobId::generate();
    let key = bounded(server.put(job, b"jar".to_vec())).await.unwrap();
    let cache = bounded(BlobCache::new(
        cache_config(dir.path(), Duration::from_millis(100)),
        server.address(),
    ))
    .await
    .unwrap();
    cache.register_job(job).unwrap();
    let path = bounded(cache.get_file(job, key)).await.unwrap();
    cache.release_job(job).unwrap();
    cache.register_job(job).unwrap();

    wait_until("the cleanup timer has fired", || {
        cache.stats().cleanup_checks == 1
    })
    .await;
    assert_eq!(cache.stats().jobs_cleaned, 0);
    assert!(path.exists(), "a re-registered job keeps its files");
    assert_eq!(bounded(cache.get_file(job, key)).await.unwrap(), path);
    assert_eq!(server.stats().get_requests, 1, "served from the cache");

    // Released for good, it goes.
    cache.release_job(job).unwrap();
    wait_until("the job's directory is cleaned up", || {
        cache.stats().jobs_cleaned == 1
    })
    .await;
    assert!(!path.exists());
    bounded(server.close()).await;
}

#[tokio::test]
async fn a_cached_file_corrupted_on_local_disk_is_downloaded_again() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let job = JobId::generate();
    let jar = pattern(150_000, 41);
    let key = bounded(server.put(job, jar.clone())).await.unwrap();
    let cache = bounded(BlobCache::new(
        cache_config(dir.path(), Duration::from_secs(3600)),
        server.address(),
    ))
    .await
    .unwrap();
    cache.register_job(job).unwrap();
    let path = bounded(cache.get_file(job, key)).await.unwrap();
    flip_byte(&path, 777);

    let again = bounded(cache.get_file(job, key)).await.unwrap();
    assert_eq!(again, path);
    assert_eq!(std::fs::read(&path).unwrap(), jar);
    assert_eq!(cache.stats().corrupt_local, 1);
    assert_eq!(server.stats().get_requests, 2);

    // Truncated to nothing counts too.
    std::fs::File::create(&path).unwrap().flush().unwrap();
    bounded(cache.get_file(job, key)).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), jar);
    assert_eq!(cache.stats().corrupt_local, 2);
    bounded(server.close()).await;
}

#[tokio::test]
async fn the_cache_retries_a_corrupt_transfer_but_not_a_missing_blob() {
    let dir = tempfile::tempdir().unwrap();
    let server = start_server(dir.path(), |_| {}).await;
    let job = JobId::generate();
    let jar = pattern(100_000, 51);
    let key = bounded(server.put(job, jar.clone())).await.unwrap();
    // The first download through the proxy arrives with a flipped byte.
    let proxy = start_proxy(server.address(), Direction::ToClient, 9 + 50, 1).await;
    let cache = bounded(BlobCache::new(
        cache_config(dir.path(), Duration::from_secs(3600)),
        proxy.addr,
    ))
    .await
    .unwrap();
    cache.register_job(job).unwrap();
    let path = bounded(cache.get_file(job, key)).await.unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), jar);
    let stats = cache.stats();
    assert_eq!((stats.download_attempts, stats.downloads), (2, 1));
    assert_eq!(
        files_under(&cache.job_dir(job)),
        vec![path],
        "no partial file left"
    );

    // NotFound is final at once.
    let missing = sha256(b"missing");
    let err = bounded(cache.get_file(job, missing)).await.unwrap_err();
    assert_eq!(
        err,
        BlobError::NotFound {
            job_id: job,
            key: missing
        }
    );
    assert_eq!(cache.stats().download_attempts, 3);

    // Not registered: refused without contacting the server.
    let other = JobId::generate();
    let err = bounded(cache.get_file(other, key)).await.unwrap_err();
    assert_eq!(err, BlobError::UnknownJob { job_id: other });
    assert_eq!(cache.stats().download_attempts, 3);
    bounded(server.close()).await;
}

#[tokio::test]
async fn an_unreachable_server_fails_after_the_retries() {
    let dir = tempfile::tempdir().unwrap();
    // A port nobody listens on: bound but never listening, and held for the whole test, so no
    // other test's server can take it in between (a freed port can be reused at once).
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let free = reserved.local_addr().unwrap();
    let mut config = cache_config(dir.path(), Duration::from_secs(3600));
    config.fetch_retries = 2;
    let cache = bounded(BlobCache::new(config, free)).await.unwrap();
    let job = JobId::generate();
    cache.register_job(job).unwrap();
    let err = bounded(cache.get_file(job, sha256(b"x")))
        .await
        .unwrap_err();
    assert!(matches!(err, BlobError::Connection { .. }), "{err}");
    assert_eq!(
        cache.stats().download_attempts,
        3,
        "one try and two retries"
    );

    // Pointing the cache at a live server makes the next request succeed.
    let server = start_server(dir.path(), |_| {}).await;
    let key = bounded(server.put(job, b"now".to_vec())).await.unwrap();
    cache.set_server_address(server.address());
    let path = bounded(cache.get_file(job, key)).await.unwrap();
    assert_eq!(std::fs::read(path).unwrap(), b"now");
    bounded(server.close()).await;
}

#[tokio::test]
async fn a_new_cache_removes_job_directories_left_by_a_previous_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = cache_config(dir.path(), Duration::from_secs(3600));
    let stale = config
        .storage_dir
        .join(format!("job_{}", JobId::generate()));
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("leftover"), b"x").unwrap();
    let keep = config.storage_dir.join("not-ours");
    std::fs::write(&keep, b"y").unwrap();
    let _cache = bounded(BlobCache::new(config, "127.0.0.1:1"))
        .await
        .unwrap();
    assert!(!stale.exists());
    assert!(keep.exists());
}
