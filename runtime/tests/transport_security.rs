//! Issue 10 on the blob and data ports: every connection proves the cluster secret and/or runs
//! mutual TLS before a byte of its protocol, over real loopback sockets.
//!
//! What passes (secret, TLS, both), and what is refused with a typed error and no state change
//! while the node keeps serving everyone else: a wrong secret, no secret, a certificate of
//! another CA, an expired certificate, plaintext against TLS, and raw garbage.
//!
//! Every wait is bounded (`bounded`, `wait_until`, `eventually`); every port is ephemeral.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use rflink_rpc::security::certgen::{CertificateAuthority, Validity};
use rflink_rpc::security::{ClusterSecret, SecurityFailure, TlsContext, TransportSecurity};
use rflink_runtime::blob::{
    BlobClient, BlobClientConfig, BlobError, BlobKey, BlobServer, BlobServerConfig,
};
use rflink_runtime::network::{
    ChannelLocation, GateItem, InputChannelSpec, InputGate, NetworkConfig, NetworkError,
    RecordDeserializer, ResultPartitionId, ShuffleEnvironment,
};
use rflink_runtime::types::{
    ExecutionAttemptId, ExecutionGraphId, ExecutionVertexId, JobId, JobVertexId,
};

/// Upper bound of any single step.
const STEP: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Security material.

fn ca(name: &str) -> CertificateAuthority {
    CertificateAuthority::generate(name, Validity::days(1)).expect("ca")
}

/// A node's TLS context: a certificate of `issuer` with `validity`, trusting `trusted`.
fn tls_of(
    issuer: &CertificateAuthority,
    trusted: &CertificateAuthority,
    validity: Validity,
) -> Arc<TlsContext> {
    let issued = issuer.issue("node", &[], validity).expect("issue");
    TlsContext::from_pem(
        issued.cert_pem.as_bytes(),
        issued.key_pem.expose().as_bytes(),
        trusted.cert_pem().as_bytes(),
    )
    .expect("tls context")
}

fn tls(ca: &CertificateAuthority) -> Arc<TlsContext> {
    tls_of(ca, ca, Validity::days(1))
}

fn secret(text: &str) -> ClusterSecret {
    ClusterSecret::new(text).expect("long enough")
}

const SECRET: &str = "the-cluster-secret-of-this-test";
const OTHER_SECRET: &str = "another-cluster-secret-entirely";

/// The three secured modes of one cluster: secret only, TLS only, both.
fn secured_modes(ca: &CertificateAuthority) -> Vec<TransportSecurity> {
    let tls = tls(ca);
    vec![
        TransportSecurity::new(Some(secret(SECRET)), None),
        TransportSecurity::new(None, Some(tls.clone())),
        TransportSecurity::new(Some(secret(SECRET)), Some(tls)),
    ]
}

// ---------------------------------------------------------------------------------------------
// Blob helpers.

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

async fn start_blob_server(dir: &Path, security: TransportSecurity) -> BlobServer {
    bounded(BlobServer::start(BlobServerConfig {
        bind_host: "127.0.0.1".into(),
        port: 0,
        storage_dir: dir.join("server"),
        security,
        ..BlobServerConfig::default()
    }))
    .await
    .expect("blob server starts")
}

fn blob_client(security: TransportSecurity) -> BlobClient {
    BlobClient::new(BlobClientConfig {
        connect_timeout: Duration::from_secs(10),
        io_timeout: Duration::from_secs(20),
        security,
        ..BlobClientConfig::default()
    })
}

/// Every file under `dir` with its content, sorted: the server's storage, to compare before
/// and after refused connections.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                let content = std::fs::read(&path).expect("read stored file");
                out.push((path, content));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn security_failure(err: &BlobError) -> &SecurityFailure {
    match err {
        BlobError::Security { failure, .. } => failure,
        other => panic!("expected a security error, got {other:?}: {other}"),
    }
}

/// Sends `bytes` on a raw TCP connection to `addr` and reads until the server closes it;
/// returns what came back.
async fn raw_exchange(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = bounded(tokio::net::TcpStream::connect(addr))
        .await
        .expect("connect");
    // The server may close (even reset) while we still write: that is a refusal too.
    let _ = s.write_all(bytes).await;
    let mut reply = Vec::new();
    let _ = bounded(s.read_to_end(&mut reply)).await;
    reply
}

// ---------------------------------------------------------------------------------------------
// Blob service.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_round_trip_with_a_secret_with_tls_and_with_both() {
    let cluster = ca("cluster");
    for security in secured_modes(&cluster) {
        let mode = security.describe();
        let dir = tempfile::tempdir().unwrap();
        let server = start_blob_server(dir.path(), security.clone()).await;
        let client = blob_client(security);
        let job = JobId::generate();
        // One small blob and one of several chunks (TLS records and flushes on every write).
        for data in [b"jar bytes".to_vec(), payload(3 * 64 * 1024 + 17, 3)] {
            let key = bounded(client.put(server.address(), job, data.clone()))
                .await
                .unwrap_or_else(|e| panic!("{mode}: put failed: {e}"));
            assert_eq!(key, BlobKey::of(&data));
            let got = bounded(client.get(server.address(), job, key))
                .await
                .unwrap_or_else(|e| panic!("{mode}: get failed: {e}"));
            assert_eq!(&got[..], &data[..], "{mode}");
            let file = dir.path().join("download");
            let len = bounded(client.get_to_file(server.address(), job, key, &file))
                .await
                .unwrap_or_else(|e| panic!("{mode}: get to file failed: {e}"));
            assert_eq!(len, data.len() as u64);
            assert_eq!(std::fs::read(&file).unwrap(), data, "{mode}");
        }
        let stats = server.stats();
        assert_eq!(stats.connections_refused, 0, "{mode}");
        assert_eq!(stats.blobs_stored, 2, "{mode}");
        assert_eq!(stats.blobs_served, 4, "{mode}");
        bounded(server.close()).await;
    }
}

#[tokio::test]
async fn a_blob_client_with_a_wrong_or_no_secret_is_refused_and_the_server_keeps_serving() {
    let cluster = ca("cluster");
    let tls = tls(&cluster);
    // Without TLS and under it: the secret is checked the same way.
    for tls in [None, Some(tls)] {
        let good_security = TransportSecurity::new(Some(secret(SECRET)), tls.clone());
        let mode = good_security.describe();
        let dir = tempfile::tempdir().unwrap();
        let server = start_blob_server(dir.path(), good_security.clone()).await;
        let good = blob_client(good_security);
        let job = JobId::generate();
        let stored = payload(100_000, 1);
        let key = bounded(good.put(server.address(), job, stored.clone()))
            .await
            .expect("good put");
        let before = snapshot(&dir.path().join("server"));
        let stats_before = server.stats();

        // Another secret: the client checks the server's proof first and refuses it; neither
        // its PUT nor its GET reaches the server.
        let wrong = blob_client(TransportSecurity::new(
            Some(secret(OTHER_SECRET)),
            tls.clone(),
        ));
        let err = bounded(wrong.put(server.address(), job, b"intruder".to_vec()))
            .await
            .unwrap_err();
        assert_eq!(
            security_failure(&err),
            &SecurityFailure::WrongSecret,
            "{mode}: {err}"
        );
        assert!(
            err.to_string().contains("blob server") && err.to_string().contains("proof"),
            "{mode}: {err}"
        );
        assert!(!err.is_retryable(), "{mode}: {err}");
        let err = bounded(wrong.get(server.address(), job, key))
            .await
            .unwrap_err();
        assert_eq!(security_failure(&err), &SecurityFailure::WrongSecret);

        // No secret at all: the server hangs up on the preamble; the client cannot tell a
        // security refusal from a broken connection, but says what to check.
        let none = blob_client(TransportSecurity::new(None, tls.clone()));
        let err = bounded(none.put(server.address(), job, b"intruder".to_vec()))
            .await
            .unwrap_err();
        match &err {
            BlobError::Connection { reason, .. } => {
                assert!(reason.contains("security.cluster-secret"), "{mode}: {err}")
            }
            other => panic!("{mode}: unexpected {other:?}"),
        }

        wait_until("the server counted three refusals", || {
            server.stats().connections_refused == 3
        })
        .await;
        let stats = server.stats();
        assert_eq!(stats.put_requests, stats_before.put_requests, "{mode}");
        assert_eq!(stats.get_requests, stats_before.get_requests, "{mode}");
        assert_eq!(stats.blobs_stored, stats_before.blobs_stored, "{mode}");
        assert_eq!(stats.protocol_violations, 0, "{mode}");
        assert_eq!(stats.bytes_received, stats_before.bytes_received, "{mode}");
        assert_eq!(snapshot(&dir.path().join("server")), before, "{mode}");

        // The good client is served as before.
        let got = bounded(good.get(server.address(), job, key))
            .await
            .expect("good get after the refusals");
        assert_eq!(&got[..], &stored[..]);
        let other = bounded(good.put(server.address(), job, b"more".to_vec()))
            .await
            .expect("good put after the refusals");
        assert_eq!(other, BlobKey::of(b"more"));
        bounded(server.close()).await;
    }
}

#[tokio::test]
async fn garbage_to_a_protected_blob_port_is_refused_and_good_clients_still_work() {
    let cluster = ca("cluster");
    for security in secured_modes(&cluster) {
        let mode = security.describe();
        let dir = tempfile::tempdir().unwrap();
        let server = start_blob_server(dir.path(), security.clone()).await;
        let good = blob_client(security.clone());
        let job = JobId::generate();
        let key = bounded(good.put(server.address(), job, b"kept".to_vec()))
            .await
            .expect("good put");
        let before = snapshot(&dir.path().join("server"));

        // An HTTP request, a well-formed blob GET without any handshake, and random bytes.
        let mut get = b"RFBL\x00\x01\x02".to_vec();
        get.extend_from_slice(&[0u8; 48]);
        let garbage: Vec<Vec<u8>> = vec![
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            get,
            payload(4096, 9),
        ];
        for (i, bytes) in garbage.iter().enumerate() {
            let reply = raw_exchange(server.address(), bytes).await;
            // Nothing of the blob protocol comes back: at most a TLS alert.
            assert!(
                reply.is_empty() || (security.has_tls() && reply[0] == 0x15),
                "{mode}: garbage {i} got {reply:02x?}"
            );
            wait_until("the server counted the refusal", || {
                server.stats().connections_refused == i as u64 + 1
            })
            .await;
        }
        let stats = server.stats();
        assert_eq!(
            stats.protocol_violations, 0,
            "{mode}: never reached the protocol"
        );
        assert_eq!(stats.get_requests, 0, "{mode}");
        assert_eq!(stats.put_requests, 1, "{mode}");
        assert_eq!(snapshot(&dir.path().join("server")), before, "{mode}");

        let got = bounded(good.get(server.address(), job, key))
            .await
            .expect("good get after the garbage");
        assert_eq!(&got[..], b"kept");
        bounded(server.close()).await;
    }
}

#[tokio::test]
async fn a_silent_connection_is_cut_off_by_the_handshake_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let security =
        TransportSecurity::new(Some(secret(SECRET)), None).with_timeout(Duration::from_secs(1));
    let server = start_blob_server(dir.path(), security.clone()).await;
    // Connects and says nothing: the server closes it once the handshake's bound passes.
    let reply = raw_exchange(server.address(), b"").await;
    assert!(reply.is_empty());
    wait_until("the silent connection was refused", || {
        server.stats().connections_refused == 1
    })
    .await;
    let good = blob_client(security);
    let key = bounded(good.put(server.address(), JobId::generate(), b"x".to_vec()))
        .await
        .expect("good put");
    assert_eq!(key, BlobKey::of(b"x"));
    bounded(server.close()).await;
}

#[tokio::test]
async fn blob_clients_with_a_foreign_or_expired_certificate_or_no_tls_are_refused() {
    let cluster = ca("cluster");
    let intruder = ca("intruder");
    let dir = tempfile::tempdir().unwrap();
    let server_security = TransportSecurity::new(Some(secret(SECRET)), Some(tls(&cluster)));
    let server = start_blob_server(dir.path(), server_security.clone()).await;
    let good = blob_client(server_security);
    let job = JobId::generate();
    let key = bounded(good.put(server.address(), job, b"kept".to_vec()))
        .await
        .expect("good put");
    let before = snapshot(&dir.path().join("server"));
    let with_tls =
        |tls: Arc<TlsContext>| blob_client(TransportSecurity::new(Some(secret(SECRET)), Some(tls)));

    // A node of another cluster: trusts only its own CA, so it refuses the server first.
    let foreign = with_tls(tls(&intruder));
    let err = bounded(foreign.get(server.address(), job, key))
        .await
        .unwrap_err();
    assert_eq!(
        security_failure(&err),
        &SecurityFailure::UntrustedCertificate,
        "{err}"
    );

    // Trusts the cluster CA but holds a certificate of another: the server refuses it.
    let sneaky = with_tls(tls_of(&intruder, &cluster, Validity::days(1)));
    let err = bounded(sneaky.put(server.address(), job, b"intruder".to_vec()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            security_failure(&err),
            SecurityFailure::CertificateRefusedByPeer(_)
        ),
        "{err}"
    );

    // A certificate of the cluster CA that expired yesterday.
    let expired = with_tls(tls_of(
        &cluster,
        &cluster,
        Validity::expired(Duration::from_secs(86_400)),
    ));
    let err = bounded(expired.put(server.address(), job, b"intruder".to_vec()))
        .await
        .unwrap_err();
    assert_eq!(
        security_failure(&err),
        &SecurityFailure::CertificateRefusedByPeer("our certificate has expired".into()),
        "{err}"
    );

    // The secret but no TLS: the server's TLS reads the handshake as garbage.
    let plain_secret = blob_client(TransportSecurity::new(Some(secret(SECRET)), None));
    let err = bounded(plain_secret.get(server.address(), job, key))
        .await
        .unwrap_err();
    assert!(
        matches!(err, BlobError::Security { .. }),
        "a handshake failure: {err}"
    );

    // Neither: a plaintext client gets a refusal, never a blob.
    let plain = blob_client(TransportSecurity::plaintext());
    let err = bounded(plain.get(server.address(), job, key))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BlobError::Protocol { .. } | BlobError::Connection { .. }
        ),
        "{err}"
    );

    wait_until("the server counted five refusals", || {
        server.stats().connections_refused == 5
    })
    .await;
    let stats = server.stats();
    assert_eq!(stats.put_requests, 1);
    assert_eq!(stats.get_requests, 0);
    assert_eq!(snapshot(&dir.path().join("server")), before);
    let got = bounded(good.get(server.address(), job, key))
        .await
        .expect("good get after the refusals");
    assert_eq!(&got[..], b"kept");
    bounded(server.close()).await;
}

// ---------------------------------------------------------------------------------------------
// Data plane helpers (plain threads, like the task threads that use it).

/// Runs `f` on its own thread and fails the test if it does not finish within `STEP`.
fn within_deadline(f: impl FnOnce() + Send + 'static) {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(STEP) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {STEP:?}"),
    }
}

/// Polls `check` until it holds; panics naming `what` after `STEP`.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < STEP, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn partition_id(n: u128) -> ResultPartitionId {
    ResultPartitionId {
        producer: ExecutionAttemptId {
            execution_graph_id: ExecutionGraphId::from_u128(n),
            vertex: ExecutionVertexId {
                job_vertex_id: JobVertexId::from_u128(n + 100),
                subtask_index: 0,
            },
            attempt_number: 0,
        },
        result_index: 0,
    }
}

fn data_env(security: TransportSecurity) -> ShuffleEnvironment {
    let config = NetworkConfig {
        segment_size: 1024,
        total_buffers: 256,
        request_backoff_initial: Duration::from_millis(10),
        request_backoff_max: Duration::from_millis(40),
        security,
        ..NetworkConfig::default()
    };
    ShuffleEnvironment::start(config, "127.0.0.1", "127.0.0.1", 0).expect("environment starts")
}

/// Record `i` of subpartition `sub`: empty, tiny, and spanning several 1 KiB buffers.
fn record(sub: usize, i: usize) -> Vec<u8> {
    let len = match i % 5 {
        0 => 0,
        1 => 7,
        2 => 3 * 1024 + 77,
        3 => 500,
        _ => 1021,
    };
    (0..len).map(|j| (sub * 31 + i * 7 + j) as u8).collect()
}

fn remote(partition: ResultPartitionId, sub: u32, address: &str) -> InputChannelSpec {
    InputChannelSpec {
        partition,
        subpartition: sub,
        location: ChannelLocation::Remote {
            address: address.to_string(),
        },
    }
}

/// Reads the gate to its end; the records per channel.
fn read_all(gate: &mut InputGate) -> Result<Vec<Vec<Vec<u8>>>, NetworkError> {
    let n = gate.num_channels();
    let mut deserializers: Vec<RecordDeserializer> =
        (0..n).map(|_| RecordDeserializer::new()).collect();
    let mut records = vec![Vec::new(); n];
    loop {
        match gate.next()? {
            GateItem::Buffer { channel, buffer } => {
                let out = &mut records[channel];
                deserializers[channel]
                    .feed(&buffer, |r| {
                        out.push(r.to_vec());
                        Ok::<_, ()>(())
                    })
                    .expect("well-formed records");
            }
            GateItem::EndOfPartition { channel } => deserializers[channel].check_complete()?,
            GateItem::End => return Ok(records),
            other => panic!("unexpected {other:?}"),
        }
    }
}

/// Producer side: a partition of `subs` remote subpartitions with `n` records each, written on
/// its own thread (it blocks on backpressure until consumers read).
fn produce(
    env: &ShuffleEnvironment,
    id: ResultPartitionId,
    subs: usize,
    n: usize,
) -> std::thread::JoinHandle<()> {
    let mut writer = env
        .create_result_partition(id, vec![false; subs])
        .expect("partition");
    std::thread::spawn(move || {
        for i in 0..n {
            for sub in 0..subs {
                writer.write_record(sub, &record(sub, i)).expect("write");
            }
        }
        writer.finish().expect("finish");
    })
}

fn expected(sub: usize, n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| record(sub, i)).collect()
}

/// The gate's first error, which must be a channel's connection failure naming `peer`.
fn connection_failure(gate: &mut InputGate, peer: &str) -> String {
    let err = match gate.next() {
        Ok(item) => panic!("a refused consumer got {item:?}"),
        Err(err) => err,
    };
    let NetworkError::Channel {
        source, peer: p, ..
    } = &err
    else {
        panic!("unexpected error {err}");
    };
    assert_eq!(p, peer);
    let NetworkError::Connection { peer: p, detail } = &**source else {
        panic!("expected a connection error, got {err}");
    };
    assert_eq!(p, peer);
    detail.clone()
}

// ---------------------------------------------------------------------------------------------
// Data plane.

#[test]
fn records_cross_a_remote_channel_with_a_secret_with_tls_and_with_both() {
    within_deadline(|| {
        let cluster = ca("cluster");
        for (k, security) in secured_modes(&cluster).into_iter().enumerate() {
            let mode = security.describe();
            let producer_env = data_env(security.clone());
            let consumer_env = data_env(security);
            let id = partition_id(10 + k as u128);
            const N: usize = 2000;
            let producer = produce(&producer_env, id, 2, N);
            let addr = producer_env.data_address();
            let mut gate = consumer_env
                .create_input_gate(vec![remote(id, 0, &addr), remote(id, 1, &addr)])
                .expect("gate");
            let records = read_all(&mut gate).unwrap_or_else(|e| panic!("{mode}: {e}"));
            producer.join().expect("producer");
            assert_eq!(records[0], expected(0, N), "{mode}");
            assert_eq!(records[1], expected(1, N), "{mode}");
            assert!(producer_env.remote_bytes_sent() > 0, "{mode}");
            assert_eq!(producer_env.refused_connections(), 0, "{mode}");
            drop(gate);
            eventually("receiver buffers to return", || {
                consumer_env.buffer_stats().in_use == 0
            });
        }
    });
}

#[test]
fn a_consumer_with_a_wrong_secret_cannot_read_and_the_producer_keeps_serving() {
    within_deadline(|| {
        let cluster = ca("cluster");
        let tls = tls(&cluster);
        let good = TransportSecurity::new(Some(secret(SECRET)), Some(tls.clone()));
        let producer_env = data_env(good.clone());
        let addr = producer_env.data_address();
        let id = partition_id(20);
        const N: usize = 500;
        let producer = produce(&producer_env, id, 2, N);

        // Another secret: the consumer refuses the producer's proof; its channels fail with a
        // connection error that says why.
        let wrong_env = data_env(TransportSecurity::new(
            Some(secret(OTHER_SECRET)),
            Some(tls.clone()),
        ));
        let mut gate = wrong_env
            .create_input_gate(vec![remote(id, 0, &addr)])
            .expect("gate");
        let detail = connection_failure(&mut gate, &addr);
        assert!(detail.contains("security handshake refused"), "{detail}");
        assert!(detail.contains("proof does not match"), "{detail}");
        // The gate keeps failing, and gives its buffers back.
        assert!(gate.next().is_err());
        drop(gate);
        eventually("the refused consumer's buffers to return", || {
            wrong_env.buffer_stats().in_use == 0
        });

        // No secret (TLS only): the producer hangs up on the preamble.
        let no_secret_env = data_env(TransportSecurity::new(None, Some(tls.clone())));
        let mut gate = no_secret_env
            .create_input_gate(vec![remote(id, 1, &addr)])
            .expect("gate");
        let detail = connection_failure(&mut gate, &addr);
        assert!(detail.contains("security.cluster-secret"), "{detail}");
        drop(gate);

        eventually("the producer counted both refusals", || {
            producer_env.refused_connections() == 2
        });
        // Neither request reached the partition: a good consumer reads all of it.
        assert!(producer_env.has_partition(&id));
        let good_env = data_env(good);
        let mut gate = good_env
            .create_input_gate(vec![remote(id, 0, &addr), remote(id, 1, &addr)])
            .expect("gate");
        let records = read_all(&mut gate).expect("the good consumer reads everything");
        producer.join().expect("producer");
        assert_eq!(records[0], expected(0, N));
        assert_eq!(records[1], expected(1, N));
        assert_eq!(producer_env.refused_connections(), 2);
    });
}

#[test]
fn garbage_and_plaintext_to_a_protected_data_port_are_refused() {
    within_deadline(|| {
        let cluster = ca("cluster");
        for (k, security) in secured_modes(&cluster).into_iter().enumerate() {
            let mode = security.describe();
            let producer_env = data_env(security.clone());
            let addr = producer_env.data_address();
            let id = partition_id(30 + k as u128);
            let producer = produce(&producer_env, id, 1, 300);

            // The data protocol's preamble and a partition request's start, without any
            // handshake, then random bytes.
            let mut request = b"RFDP\x00\x02".to_vec();
            request.extend_from_slice(&[0, 0, 0, 61, 0xBA, 0xDC, 0x0F, 0xFE, 2]);
            for (i, bytes) in [request, payload(2048, 5)].iter().enumerate() {
                let mut s = std::net::TcpStream::connect(&addr).expect("connect");
                s.set_read_timeout(Some(STEP)).expect("timeout");
                let _ = s.write_all(bytes);
                let mut reply = Vec::new();
                let _ = s.read_to_end(&mut reply);
                // No data preamble, no partition data: at most a TLS alert.
                assert!(
                    reply.is_empty() || (security.has_tls() && reply[0] == 0x15),
                    "{mode}: garbage {i} got {reply:02x?}"
                );
                eventually("the data server counted the refusal", || {
                    producer_env.refused_connections() == i as u64 + 1
                });
            }

            // A plaintext TaskManager: refused with a connection or protocol error.
            let plain_env = data_env(TransportSecurity::plaintext());
            let mut gate = plain_env
                .create_input_gate(vec![remote(id, 0, &addr)])
                .expect("gate");
            let err = read_all(&mut gate).unwrap_err();
            let NetworkError::Channel { source, .. } = &err else {
                panic!("{mode}: unexpected error {err}");
            };
            assert!(
                matches!(
                    **source,
                    NetworkError::Connection { .. } | NetworkError::Protocol { .. }
                ),
                "{mode}: {err}"
            );
            drop(gate);
            eventually("the data server counted the plaintext refusal", || {
                producer_env.refused_connections() == 3
            });

            // A correctly configured consumer still reads everything.
            let good_env = data_env(security);
            let mut gate = good_env
                .create_input_gate(vec![remote(id, 0, &addr)])
                .expect("gate");
            let records = read_all(&mut gate).expect("good consumer");
            producer.join().expect("producer");
            assert_eq!(records[0], expected(0, 300), "{mode}");
        }
    });
}
