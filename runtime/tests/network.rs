//! The data plane over real threads and sockets on 127.0.0.1: record delivery (local and
//! remote), in-band events and channel blocking for checkpoints, backpressure, partition
//! request retries, malformed input, cancellation and buffer accounting. Every test runs under a deadline and waits on conditions, never on time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rflink_runtime::network::{
    ChannelLocation, GateItem, InputChannelSpec, InputGate, NetworkConfig, NetworkError,
    NetworkEvent, RecordDeserializer, ResultPartitionId, ResultPartitionWriter, ShuffleEnvironment,
};
use rflink_runtime::types::{ExecutionAttemptId, ExecutionGraphId, ExecutionVertexId, JobVertexId};

const DEADLINE: Duration = Duration::from_secs(60);

/// Runs `f` on its own thread and fails the test if it does not finish within the deadline.
fn bounded(f: impl FnOnce() + Send + 'static) {
    let _ = tracing_subscriber::fmt().with_test_writer().try_init();
    let (tx, rx) = mpsc::channel();
    let t = std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    match rx.recv_timeout(DEADLINE) {
        Ok(()) => t.join().unwrap(),
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            if let Err(panic) = t.join() {
                std::panic::resume_unwind(panic);
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {DEADLINE:?}"),
    }
}

/// Polls `check` until it holds; panics naming `what` after the deadline.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
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

fn small_config() -> NetworkConfig {
    NetworkConfig {
        segment_size: 1024,
        total_buffers: 256,
        request_backoff_initial: Duration::from_millis(10),
        request_backoff_max: Duration::from_millis(40),
        ..NetworkConfig::default()
    }
}

fn env(config: NetworkConfig) -> ShuffleEnvironment {
    ShuffleEnvironment::start(config, "127.0.0.1", "127.0.0.1", 0).unwrap()
}

/// Record `i` of subpartition `sub`: sizes cycle through empty, tiny, and ones spanning 3+
/// buffers of 1 KiB.
fn record(sub: usize, i: usize) -> Vec<u8> {
    let len = match i % 7 {
        0 => 0,
        1 => 1,
        2 => 13,
        3 => 3 * 1024 + 77,
        4 => 4,
        5 => 500,
        _ => 1021,
    };
    (0..len).map(|j| (sub * 31 + i * 7 + j) as u8).collect()
}

fn remote(address: &str) -> ChannelLocation {
    ChannelLocation::Remote {
        address: address.to_string(),
    }
}

fn spec(partition: ResultPartitionId, sub: u32, location: ChannelLocation) -> InputChannelSpec {
    InputChannelSpec {
        partition,
        subpartition: sub,
        location,
    }
}

/// Reads the gate to its end; returns the records per channel.
fn read_all(gate: &mut InputGate) -> Result<Vec<Vec<Vec<u8>>>, NetworkError> {
    let n = gate.num_channels();
    let mut deserializers: Vec<RecordDeserializer> =
        (0..n).map(|_| RecordDeserializer::new()).collect();
    let mut records = vec![Vec::new(); n];
    let mut ended = vec![false; n];
    loop {
        match gate.next()? {
            GateItem::Buffer { channel, buffer } => {
                assert!(!ended[channel]);
                let out = &mut records[channel];
                deserializers[channel]
                    .feed(&buffer, |r| {
                        out.push(r.to_vec());
                        Ok::<_, ()>(())
                    })
                    .unwrap();
            }
            GateItem::Batch { .. } => panic!("no batches written"),
            other @ (GateItem::Event { .. } | GateItem::Woken) => panic!("unexpected {other:?}"),
            GateItem::EndOfPartition { channel } => {
                deserializers[channel].check_complete()?;
                ended[channel] = true;
            }
            GateItem::End => {
                assert!(ended.iter().all(|e| *e));
                return Ok(records);
            }
        }
    }
}

fn write_records(writer: &mut ResultPartitionWriter, sub: usize, count: usize) {
    for i in 0..count {
        writer.write_record(sub, &record(sub, i)).unwrap();
    }
}

#[test]
fn local_and_remote_channels_deliver_every_record_in_order() {
    bounded(|| {
        let producer_env = env(small_config());
        let consumer_env = env(small_config());
        let id = partition_id(1);
        const N: usize = 3000;
        // Subpartition 0 is consumed locally, 1 and 2 by one remote gate.
        let mut local_gate = producer_env
            .create_input_gate(vec![spec(id, 0, ChannelLocation::Local)])
            .unwrap();
        let addr = producer_env.data_address();
        let mut remote_gate = consumer_env
            .create_input_gate(vec![spec(id, 1, remote(&addr)), spec(id, 2, remote(&addr))])
            .unwrap();
        let mut writer = producer_env
            .create_result_partition(id, vec![true, false, false])
            .unwrap();
        let producer = std::thread::spawn(move || {
            for i in 0..N {
                for sub in 0..3 {
                    writer.write_record(sub, &record(sub, i)).unwrap();
                }
                if i % 500 == 0 {
                    writer.flush().unwrap();
                }
            }
            writer.finish().unwrap();
            writer.stats()
        });
        let local = std::thread::spawn(move || read_all(&mut local_gate).unwrap());
        let remote_records = read_all(&mut remote_gate).unwrap();
        let local_records = local.join().unwrap();
        let stats = producer.join().unwrap();
        assert_eq!(stats.records_written, 3 * N as u64);
        let expected = |sub: usize| (0..N).map(|i| record(sub, i)).collect::<Vec<_>>();
        assert_eq!(local_records[0], expected(0));
        assert_eq!(remote_records[0], expected(1));
        assert_eq!(remote_records[1], expected(2));
        // Every buffer came back; the partition left the manager once consumed.
        eventually("producer buffers to return", || {
            producer_env.buffer_stats().in_use == 0
        });
        drop(remote_gate);
        eventually("receiver buffers to return", || {
            consumer_env.buffer_stats().in_use == 0
        });
        assert!(!producer_env.has_partition(&id));
    });
}

/// A producer writing into one subpartition whose consumer reads one buffer and stops: the
/// writer blocks within the configured buffers, then everything arrives once it resumes.
fn backpressure(local: bool) {
    let config = NetworkConfig {
        total_buffers: 64,
        floating_buffers_per_gate: 4,
        ..small_config()
    };
    let producer_env = env(config.clone());
    let consumer_env = if local {
        producer_env.clone()
    } else {
        env(config.clone())
    };
    let id = partition_id(2);
    let location = if local {
        ChannelLocation::Local
    } else {
        remote(&producer_env.data_address())
    };
    let mut gate = consumer_env
        .create_input_gate(vec![spec(id, 0, location)])
        .unwrap();
    let mut writer = producer_env
        .create_result_partition(id, vec![local])
        .unwrap();
    let stats = writer.stats_handle();
    const N: usize = 5000;
    const LEN: usize = 100;
    let producer = std::thread::spawn(move || {
        for i in 0..N {
            writer.write_record(0, &[i as u8; LEN]).unwrap();
        }
        writer.finish().unwrap();
    });
    let first = loop {
        if let GateItem::Buffer { buffer, .. } = gate.next().unwrap() {
            break buffer;
        }
    };
    eventually("the writer to block", || stats.get().blocked);
    let blocked = stats.get();
    // Producer pool max (1 * 2 + 4 floating), receiver buffers (2 exclusive + 4 floating), the
    // buffer held by the consumer and the writer's current one.
    let buffers = 6 + if local { 0 } else { 6 } + 2;
    let bound = buffers * config.segment_size / (LEN + 4) + 1;
    assert!(
        blocked.records_written as usize <= bound,
        "{} records written while blocked, at most {bound} fit",
        blocked.records_written
    );
    assert!(blocked.records_written < N as u64);
    let total = producer_env
        .buffer_stats()
        .max_in_use
        .max(consumer_env.buffer_stats().max_in_use);
    assert!(total <= config.total_buffers);
    // Resume: everything arrives, in order.
    let mut d = RecordDeserializer::new();
    let mut got = Vec::new();
    d.feed(&first, |r| {
        got.push(r.to_vec());
        Ok::<_, ()>(())
    })
    .unwrap();
    drop(first);
    loop {
        match gate.next().unwrap() {
            GateItem::Buffer { buffer, .. } => d
                .feed(&buffer, |r| {
                    got.push(r.to_vec());
                    Ok::<_, ()>(())
                })
                .unwrap(),
            GateItem::EndOfPartition { .. } => d.check_complete().unwrap(),
            GateItem::End => break,
            GateItem::Batch { .. } => panic!("no batches written"),
            other @ (GateItem::Event { .. } | GateItem::Woken) => panic!("unexpected {other:?}"),
        }
    }
    producer.join().unwrap();
    assert_eq!(got.len(), N);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r, &vec![i as u8; LEN]);
    }
    assert!(stats.get().blocked_time > Duration::ZERO);
    drop(gate);
    eventually("buffers to return", || {
        producer_env.buffer_stats().in_use == 0 && consumer_env.buffer_stats().in_use == 0
    });
}

#[test]
fn remote_slow_consumer_backpressures_the_producer() {
    bounded(|| backpressure(false));
}

#[test]
fn local_slow_consumer_backpressures_the_producer() {
    bounded(|| backpressure(true));
}

fn request_before_registration(local: bool) {
    let config = NetworkConfig {
        request_backoff_initial: Duration::from_millis(5),
        request_backoff_max: Duration::from_secs(30),
        ..small_config()
    };
    let producer_env = env(config.clone());
    let consumer_env = if local {
        producer_env.clone()
    } else {
        env(config)
    };
    let id = partition_id(3);
    let location = if local {
        ChannelLocation::Local
    } else {
        remote(&producer_env.data_address())
    };
    let mut gate = consumer_env
        .create_input_gate(vec![spec(id, 0, location)])
        .unwrap();
    eventually("a retried partition request", || {
        gate.stats().request_retries >= 2
    });
    let mut writer = producer_env
        .create_result_partition(id, vec![local])
        .unwrap();
    let producer = std::thread::spawn(move || {
        write_records(&mut writer, 0, 100);
        writer.finish().unwrap();
    });
    let records = read_all(&mut gate).unwrap();
    producer.join().unwrap();
    assert_eq!(
        records[0],
        (0..100).map(|i| record(0, i)).collect::<Vec<_>>()
    );
}

#[test]
fn requests_before_the_producer_registers_are_retried_remote() {
    bounded(|| request_before_registration(false));
}

#[test]
fn requests_before_the_producer_registers_are_retried_local() {
    bounded(|| request_before_registration(true));
}

#[test]
fn a_partition_that_never_appears_fails_the_gate_after_the_backoff_cap() {
    bounded(|| {
        let producer_env = env(small_config());
        let consumer_env = env(small_config());
        let id = partition_id(4);
        for location in [ChannelLocation::Local, remote(&producer_env.data_address())] {
            let mut gate = consumer_env
                .create_input_gate(vec![spec(id, 0, location)])
                .unwrap();
            let err = gate.next().unwrap_err();
            let NetworkError::Channel { source, .. } = &err else {
                panic!("unexpected error {err}");
            };
            // 10 ms, 20 ms, 40 ms, then the cap is reached.
            assert!(
                matches!(
                    **source,
                    NetworkError::PartitionNotFound { attempts: 4, .. }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("not found"), "{err}");
            // The gate keeps failing.
            assert!(gate.next().is_err());
        }
        eventually("receiver buffers to return", || {
            consumer_env.buffer_stats().in_use == 0
        });
    });
}

/// Sends `bytes` on a raw connection to `addr` and waits for the server to close it.
fn expect_closed_after(addr: &str, bytes: &[u8]) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(bytes).unwrap();
    let mut buf = Vec::new();
    // The server's preamble, maybe an ErrorResponse, then end of stream (or a reset).
    let _ = s.read_to_end(&mut buf);
    assert!(buf.len() >= 6, "no preamble");
}

/// The data protocol's preamble: magic and version (2: watermark events).
fn preamble() -> Vec<u8> {
    let mut p = b"RFDP".to_vec();
    p.extend_from_slice(&2u16.to_be_bytes());
    p
}

#[test]
fn malformed_frames_close_only_their_connection() {
    bounded(|| {
        let producer_env = env(small_config());
        let consumer_env = env(small_config());
        let addr = producer_env.data_address();
        let id = partition_id(5);
        let mut gate = consumer_env
            .create_input_gate(vec![spec(id, 0, remote(&addr))])
            .unwrap();
        let mut writer = producer_env
            .create_result_partition(id, vec![false])
            .unwrap();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let producer = std::thread::spawn(move || {
            write_records(&mut writer, 0, 200);
            writer.flush().unwrap();
            go_rx.recv().unwrap();
            write_records(&mut writer, 0, 200);
            writer.finish().unwrap();
        });

        // Garbage instead of a preamble.
        expect_closed_after(&addr, b"GET / HTTP/1.1\r\n\r\n");
        // A bad frame magic.
        let mut bad_magic = preamble();
        bad_magic.extend_from_slice(&13u32.to_be_bytes());
        bad_magic.extend_from_slice(&0xDEAD_BEEFu32.to_be_bytes());
        bad_magic.extend_from_slice(&[6, 0, 0, 0, 0, 0, 0, 0, 1]);
        expect_closed_after(&addr, &bad_magic);
        // An oversized length.
        let mut oversized = preamble();
        oversized.extend_from_slice(&u32::MAX.to_be_bytes());
        expect_closed_after(&addr, &oversized);
        // An unknown message id.
        let mut unknown = preamble();
        unknown.extend_from_slice(&5u32.to_be_bytes());
        unknown.extend_from_slice(&0xBADC_0FFEu32.to_be_bytes());
        unknown.push(99);
        expect_closed_after(&addr, &unknown);

        // The good consumer is still served on its own connection.
        go_tx.send(()).unwrap();
        let records = read_all(&mut gate).unwrap();
        producer.join().unwrap();
        assert_eq!(records[0].len(), 400);
    });
}

/// A fake data server that answers the first PartitionRequest with `reply(channel id)`.
fn fake_server(reply: impl FnOnce(u64) -> Vec<u8> + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut pre = [0u8; 6];
        s.read_exact(&mut pre).unwrap();
        s.write_all(&preamble()).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut frame = vec![0u8; u32::from_be_bytes(len) as usize];
        s.read_exact(&mut frame).unwrap();
        assert_eq!(frame[4], 2, "expected a PartitionRequest");
        // magic(4) id(1) graph(16) vertex(16) subtask(4) attempt(4) result(4) sub(4) channel(8)
        let channel = u64::from_be_bytes(frame[53..61].try_into().unwrap());
        let _ = s.write_all(&reply(channel));
        // Keep the socket open until the client closes it.
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    });
    addr
}

fn buffer_response(channel: u64, seq: u32, payload: &[u8]) -> Vec<u8> {
    data_response(channel, seq, 0, payload)
}

/// A BufferResponse carrying an event payload (data type 1).
fn event_response(channel: u64, seq: u32, payload: &[u8]) -> Vec<u8> {
    data_response(channel, seq, 1, payload)
}

fn data_response(channel: u64, seq: u32, data_type: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((5 + 21 + payload.len()) as u32).to_be_bytes());
    out.extend_from_slice(&0xBADC_0FFEu32.to_be_bytes());
    out.push(0);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.push(data_type);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn expect_protocol_error(reply: impl FnOnce(u64) -> Vec<u8> + Send + 'static, what: &str) {
    let consumer_env = env(small_config());
    expect_protocol_error_in(&consumer_env, reply, what);
    eventually("receiver buffers to return", || {
        consumer_env.buffer_stats().in_use == 0
    });
}

/// A gate of `consumer_env` reading from a fake server that answers with `reply` fails with a
/// protocol error naming the fake server and mentioning `what`.
fn expect_protocol_error_in(
    consumer_env: &ShuffleEnvironment,
    reply: impl FnOnce(u64) -> Vec<u8> + Send + 'static,
    what: &str,
) {
    let addr = fake_server(reply);
    let mut gate = consumer_env
        .create_input_gate(vec![spec(partition_id(6), 0, remote(&addr))])
        .unwrap();
    let mut held = Vec::new();
    let err = loop {
        match gate.next() {
            Ok(GateItem::Buffer { buffer, .. }) => held.push(buffer),
            Ok(GateItem::Event { .. }) => {}
            Ok(other) => panic!("unexpected {other:?}"),
            Err(err) => break err,
        }
    };
    let NetworkError::Channel { source, peer, .. } = &err else {
        panic!("unexpected error {err}");
    };
    assert_eq!(peer, &addr);
    assert!(matches!(**source, NetworkError::Protocol { .. }), "{err}");
    assert!(
        err.to_string().contains(what),
        "{err} should mention {what:?}"
    );
    drop(held);
    drop(gate);
}

#[test]
fn a_misbehaving_server_fails_the_gate_with_a_protocol_error() {
    bounded(|| {
        expect_protocol_error(|_| vec![0xFF; 64], "exceeds the maximum");
        expect_protocol_error(
            |_| {
                let mut f = 5u32.to_be_bytes().to_vec();
                f.extend_from_slice(&0x1234_5678u32.to_be_bytes());
                f.push(0);
                f
            },
            "bad frame magic",
        );
        // Credit: 2 exclusive buffers, then the gate's 8 floating ones as they are used (the
        // consumer holds every buffer): the eleventh buffer has none.
        expect_protocol_error(
            |ch| {
                (0..11)
                    .flat_map(|seq| buffer_response(ch, seq, b"x"))
                    .collect()
            },
            "without credit",
        );
        expect_protocol_error(|ch| buffer_response(ch, 5, b"x"), "sequence gap");
        expect_protocol_error(|ch| buffer_response(ch, 0, &[0; 2000]), "segment size");
    });
}

fn cancel_unblocks_producer(local: bool) {
    let config = NetworkConfig {
        total_buffers: 64,
        ..small_config()
    };
    let producer_env = env(config.clone());
    let consumer_env = if local {
        producer_env.clone()
    } else {
        env(config)
    };
    let id = partition_id(7);
    let location = if local {
        ChannelLocation::Local
    } else {
        remote(&producer_env.data_address())
    };
    // The partition exists before the gate asks for it: a request still waiting for its
    // partition has no view to release (Flink then relies on the JobMaster's release).
    let mut writer = producer_env
        .create_result_partition(id, vec![local])
        .unwrap();
    let gate = consumer_env
        .create_input_gate(vec![spec(id, 0, location)])
        .unwrap();
    let stats = writer.stats_handle();
    let producer = std::thread::spawn(move || {
        for i in 0..20_000 {
            writer.write_record(0, &[i as u8; 200]).unwrap();
        }
        writer.finish().unwrap();
    });
    eventually("the writer to block", || stats.get().blocked);
    drop(gate);
    producer.join().unwrap();
    eventually("every buffer to return", || {
        producer_env.buffer_stats().in_use == 0 && consumer_env.buffer_stats().in_use == 0
    });
    eventually("the partition to be released", || {
        !producer_env.has_partition(&id)
    });
}

#[test]
fn dropping_a_remote_gate_unblocks_the_producer() {
    bounded(|| cancel_unblocks_producer(false));
}

#[test]
fn dropping_a_local_gate_unblocks_the_producer() {
    bounded(|| cancel_unblocks_producer(true));
}

#[test]
fn releasing_the_producer_fails_consumers_and_frees_buffers() {
    bounded(|| {
        let producer_env = env(small_config());
        let consumer_env = env(small_config());
        let id = partition_id(8);
        let mut writer = producer_env
            .create_result_partition(id, vec![true, false])
            .unwrap();
        let mut local_gate = producer_env
            .create_input_gate(vec![spec(id, 0, ChannelLocation::Local)])
            .unwrap();
        let mut remote_gate = consumer_env
            .create_input_gate(vec![spec(id, 1, remote(&producer_env.data_address()))])
            .unwrap();
        // Both consumers are connected once they received their first buffer.
        write_records(&mut writer, 0, 5);
        write_records(&mut writer, 1, 5);
        writer.flush().unwrap();
        let mut held = Vec::new();
        for gate in [&mut local_gate, &mut remote_gate] {
            let GateItem::Buffer { buffer, .. } = gate.next().unwrap() else {
                panic!("no buffer")
            };
            held.push(buffer);
        }
        write_records(&mut writer, 0, 5);
        writer.release("task failed: boom");
        drop(writer);
        for gate in [&mut local_gate, &mut remote_gate] {
            let err = loop {
                match gate.next() {
                    Ok(_) => {}
                    Err(err) => break err,
                }
            };
            assert!(err.to_string().contains("boom"), "{err}");
        }
        drop(held);
        drop(local_gate);
        drop(remote_gate);
        eventually("every buffer to return", || {
            producer_env.buffer_stats().in_use == 0 && consumer_env.buffer_stats().in_use == 0
        });
    });
}

#[test]
fn interrupt_wakes_a_blocked_writer_and_a_blocked_reader() {
    bounded(|| {
        let env = env(small_config());
        let id = partition_id(9);
        let gate = env
            .create_input_gate(vec![spec(id, 0, ChannelLocation::Local)])
            .unwrap();
        let mut writer = env.create_result_partition(id, vec![true]).unwrap();
        let stats = writer.stats_handle();
        let interrupter = writer.interrupter();
        let producer = std::thread::spawn(move || loop {
            if let Err(err) = writer.write_record(0, &[1; 300]) {
                return err;
            }
        });
        eventually("the writer to block", || stats.get().blocked);
        interrupter.interrupt();
        assert_eq!(producer.join().unwrap(), NetworkError::Interrupted);
        drop(gate);

        let id = partition_id(10);
        let mut gate = env
            .create_input_gate(vec![spec(id, 0, ChannelLocation::Local)])
            .unwrap();
        let _writer = env.create_result_partition(id, vec![true]).unwrap();
        let interrupter = gate.interrupter();
        let consumer = std::thread::spawn(move || gate.next().map(|_| ()));
        interrupter.interrupt();
        assert_eq!(consumer.join().unwrap(), Err(NetworkError::Interrupted));
    });
}

#[test]
fn buffer_pool_refuses_what_it_cannot_hold_and_leaks_nothing() {
    bounded(|| {
        let config = NetworkConfig {
            total_buffers: 20,
            ..small_config()
        };
        let env = env(config);
        let other = self::env(small_config());
        let addr = other.data_address();
        // 4 subpartitions reserve 5 buffers.
        let a = env
            .create_result_partition(partition_id(11), vec![true; 4])
            .unwrap();
        // 2 remote channels: 2 * 2 exclusive + 8 floating = 12.
        let g = env
            .create_input_gate(vec![
                spec(partition_id(12), 0, remote(&addr)),
                spec(partition_id(12), 1, remote(&addr)),
            ])
            .unwrap();
        assert_eq!(env.buffer_stats().in_use, 12);
        // 3 left: a partition of 3 subpartitions needs 4.
        let err = env
            .create_result_partition(partition_id(13), vec![true; 3])
            .unwrap_err();
        assert!(
            matches!(
                err,
                NetworkError::InsufficientBuffers {
                    required: 4,
                    available: 3,
                    total: 20
                }
            ),
            "{err}"
        );
        let err = env
            .create_input_gate(vec![spec(partition_id(14), 0, remote(&addr))])
            .unwrap_err();
        assert!(
            matches!(err, NetworkError::InsufficientBuffers { .. }),
            "{err}"
        );
        // Failed creations took nothing; dropping gives everything back.
        let b = env
            .create_result_partition(partition_id(15), vec![true; 2])
            .unwrap();
        drop(a);
        drop(b);
        drop(g);
        assert_eq!(env.buffer_stats().in_use, 0);
        let _all = env
            .create_result_partition(partition_id(16), vec![true; 19])
            .unwrap();
        assert!(env.buffer_stats().max_in_use <= 20);
    });
}

#[test]
fn typed_batches_move_locally_and_hold_a_permit() {
    bounded(|| {
        let env = env(small_config());
        let id = partition_id(17);
        let mut gate = env
            .create_input_gate(vec![spec(id, 0, ChannelLocation::Local)])
            .unwrap();
        let mut writer = env.create_result_partition(id, vec![true, false]).unwrap();
        writer
            .write_batch(0, Box::new(vec![1u64, 2, 3]), 3)
            .unwrap();
        assert!(matches!(
            writer.write_batch(1, Box::new(()), 1),
            Err(NetworkError::NotLocal { .. })
        ));
        assert_eq!(env.buffer_stats().in_use, 1);
        let GateItem::Batch { batch, .. } = gate.next().unwrap() else {
            panic!("not a batch")
        };
        assert_eq!(batch.records(), 3);
        let inner = batch.take();
        assert_eq!(env.buffer_stats().in_use, 0);
        assert_eq!(inner.downcast_ref::<Vec<u64>>(), Some(&vec![1, 2, 3]));
    });
}

// ---------------------------------------------------------------------------------------------
// In-band events and channel blocking (checkpoint barriers, end of data, alignment).
// ---------------------------------------------------------------------------------------------

fn barrier(id: u64) -> NetworkEvent {
    NetworkEvent::CheckpointBarrier {
        id,
        timestamp: 1_700_000_000_000 + id as i64,
        savepoint: id.is_multiple_of(2),
    }
}

/// What a consumer saw on one channel, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Record(Vec<u8>),
    Event(NetworkEvent),
    EndOfPartition,
}

/// Reads a gate's items into per-channel [`Seen`] sequences, with one deserializer per channel
/// (checked complete at every event: an event never splits a record).
struct Observer {
    deserializers: Vec<RecordDeserializer>,
    seen: Vec<Vec<Seen>>,
}

impl Observer {
    fn new(channels: usize) -> Self {
        Observer {
            deserializers: (0..channels).map(|_| RecordDeserializer::new()).collect(),
            seen: vec![Vec::new(); channels],
        }
    }

    /// Records `item`; returns its channel (`None` for `End` and `Woken`).
    fn observe(&mut self, item: GateItem) -> Option<usize> {
        match item {
            GateItem::Buffer { channel, buffer } => {
                let out = &mut self.seen[channel];
                self.deserializers[channel]
                    .feed(&buffer, |r| {
                        out.push(Seen::Record(r.to_vec()));
                        Ok::<_, ()>(())
                    })
                    .unwrap();
                Some(channel)
            }
            GateItem::Batch { channel, batch } => {
                self.deserializers[channel].check_complete().unwrap();
                let records = batch.take().downcast::<Vec<Vec<u8>>>().unwrap();
                self.seen[channel].extend(records.into_iter().map(Seen::Record));
                Some(channel)
            }
            GateItem::Event { channel, event } => {
                assert_ne!(event, NetworkEvent::EndOfPartition);
                self.deserializers[channel].check_complete().unwrap();
                self.seen[channel].push(Seen::Event(event));
                Some(channel)
            }
            GateItem::EndOfPartition { channel } => {
                self.deserializers[channel].check_complete().unwrap();
                self.seen[channel].push(Seen::EndOfPartition);
                Some(channel)
            }
            GateItem::End | GateItem::Woken => None,
        }
    }

    /// Reads to `End`; a `Woken` fails the test.
    fn read_to_end(&mut self, gate: &mut InputGate) {
        loop {
            match gate.next().unwrap() {
                GateItem::End => return,
                GateItem::Woken => panic!("nobody woke the gate"),
                item => {
                    self.observe(item);
                }
            }
        }
    }
}

fn records_seen(sub: usize, range: std::ops::Range<usize>) -> Vec<Seen> {
    range.map(|i| Seen::Record(record(sub, i))).collect()
}

/// Writes records `range` of subpartition `sub`; on a local subpartition every third one goes
/// as a typed batch of one (`Vec<Vec<u8>>`), mixing batches and buffers.
fn write_mixed(writer: &mut ResultPartitionWriter, sub: usize, range: std::ops::Range<usize>) {
    for i in range {
        if writer.is_local(sub) && i % 3 == 0 {
            writer
                .write_batch(sub, Box::new(vec![record(sub, i)]), 1)
                .unwrap();
        } else {
            writer.write_record(sub, &record(sub, i)).unwrap();
        }
    }
}

#[test]
fn events_follow_the_records_written_before_them_local_and_remote() {
    bounded(|| {
        let producer_env = env(small_config());
        let consumer_env = env(small_config());
        let id = partition_id(30);
        const A: usize = 400;
        const B: usize = 300;
        // Subpartitions 0 and 1 are read locally, 2 and 3 by a remote gate.
        let mut local_gate = producer_env
            .create_input_gate(vec![
                spec(id, 0, ChannelLocation::Local),
                spec(id, 1, ChannelLocation::Local),
            ])
            .unwrap();
        let addr = producer_env.data_address();
        let mut remote_gate = consumer_env
            .create_input_gate(vec![spec(id, 2, remote(&addr)), spec(id, 3, remote(&addr))])
            .unwrap();
        let mut writer = producer_env
            .create_result_partition(id, vec![true, true, false, false])
            .unwrap();
        let producer = std::thread::spawn(move || {
            for sub in 0..4 {
                write_mixed(&mut writer, sub, 0..A);
            }
            writer.broadcast_event(barrier(1)).unwrap();
            for sub in 0..4 {
                write_mixed(&mut writer, sub, A..A + B);
            }
            assert!(!writer.is_data_ended());
            writer.end_of_data().unwrap();
            assert!(writer.is_data_ended());
            // No records after EndOfData, on any path; nor a second EndOfData.
            for sub in 0..4 {
                let err = writer.write_record(sub, b"late").unwrap_err();
                assert!(matches!(err, NetworkError::DataEnded { .. }), "{err}");
                assert!(err.to_string().contains("EndOfData"), "{err}");
            }
            let err = writer.write_batch(0, Box::new(Vec::<Vec<u8>>::new()), 0);
            assert!(
                matches!(err, Err(NetworkError::DataEnded { .. })),
                "{err:?}"
            );
            assert!(matches!(
                writer.end_of_data(),
                Err(NetworkError::DataEnded { .. })
            ));
            // A flush is harmless; barriers and the end still go out.
            writer.flush().unwrap();
            writer.broadcast_event(barrier(2)).unwrap();
            writer.finish().unwrap();
            // Nothing after the end.
            assert!(matches!(
                writer.broadcast_event(barrier(3)),
                Err(NetworkError::WriterClosed { .. })
            ));
            assert!(matches!(
                writer.end_of_data(),
                Err(NetworkError::WriterClosed { .. })
            ));
            assert!(matches!(
                writer.write_record(0, b"x"),
                Err(NetworkError::WriterClosed { .. })
            ));
        });
        let local = std::thread::spawn(move || {
            let mut o = Observer::new(2);
            o.read_to_end(&mut local_gate);
            (o.seen, local_gate.stats())
        });
        let mut o = Observer::new(2);
        o.read_to_end(&mut remote_gate);
        let (local_seen, local_stats) = local.join().unwrap();
        producer.join().unwrap();
        let expected = |sub: usize| {
            let mut e = records_seen(sub, 0..A);
            e.push(Seen::Event(barrier(1)));
            e.extend(records_seen(sub, A..A + B));
            e.push(Seen::Event(NetworkEvent::EndOfData));
            e.push(Seen::Event(barrier(2)));
            e.push(Seen::EndOfPartition);
            e
        };
        assert_eq!(local_seen[0], expected(0));
        assert_eq!(local_seen[1], expected(1));
        assert_eq!(o.seen[0], expected(2));
        assert_eq!(o.seen[1], expected(3));
        // Three events and the end per channel.
        assert_eq!(local_stats.events_received, 2 * 4);
        assert_eq!(remote_gate.stats().events_received, 2 * 4);
        assert!(local_stats.batches_received > 0 && local_stats.buffers_received > 0);
        assert!(remote_gate.is_channel_ended(0) && remote_gate.is_channel_ended(1));
        drop(remote_gate);
        eventually("every buffer to return", || {
            producer_env.buffer_stats().in_use == 0 && consumer_env.buffer_stats().in_use == 0
        });
        assert!(!producer_env.has_partition(&id));
    });
}

/// A remote consumer that holds every buffer it got (no credit left) still receives the events
/// behind them: events need no credit.
#[test]
fn remote_events_need_no_credit() {
    bounded(|| {
        let config = NetworkConfig {
            buffers_per_channel: 2,
            floating_buffers_per_gate: 0,
            ..small_config()
        };
        let producer_env = env(config.clone());
        let consumer_env = env(config.clone());
        let id = partition_id(31);
        let mut gate = consumer_env
            .create_input_gate(vec![spec(id, 0, remote(&producer_env.data_address()))])
            .unwrap();
        let mut writer = producer_env
            .create_result_partition(id, vec![false])
            .unwrap();
        // Two full buffers: one record of segment_size - 4 bytes each.
        let big = |i: u8| vec![i; config.segment_size - 4];
        writer.write_record(0, &big(1)).unwrap();
        writer.write_record(0, &big(2)).unwrap();
        let mut held = Vec::new();
        while held.len() < 2 {
            match gate.next().unwrap() {
                GateItem::Buffer { buffer, .. } => held.push(buffer),
                other => panic!("unexpected {other:?}"),
            }
        }
        // The gate's whole credit is held by the task now.
        writer.broadcast_event(barrier(7)).unwrap();
        writer.end_of_data().unwrap();
        writer.finish().unwrap();
        let mut o = Observer::new(1);
        o.read_to_end(&mut gate);
        assert_eq!(
            o.seen[0],
            vec![
                Seen::Event(barrier(7)),
                Seen::Event(NetworkEvent::EndOfData),
                Seen::EndOfPartition
            ]
        );
        let mut d = RecordDeserializer::new();
        let mut got = Vec::new();
        for b in &held {
            d.feed(b, |r| {
                got.push(r.to_vec());
                Ok::<_, ()>(())
            })
            .unwrap();
        }
        assert_eq!(got, vec![big(1), big(2)]);
        drop(held);
        drop(gate);
        eventually("every buffer to return", || {
            producer_env.buffer_stats().in_use == 0 && consumer_env.buffer_stats().in_use == 0
        });
    });
}

/// Two producers into one gate. Channel 0 is blocked after its barrier: the consumer gets only
/// channel 1's items (to its end) while producer 0 is backpressured; after the resume it gets
/// channel 0's held items in order and producer 0 finishes.
fn blocking(local: [bool; 2], resume_all: bool) {
    let config = NetworkConfig {
        total_buffers: 128,
        floating_buffers_per_gate: 4,
        ..small_config()
    };
    let gate_env = env(config.clone());
    let remote_env = env(config.clone());
    const A: usize = 60;
    const B0: usize = 3000;
    const B1: usize = 1500;
    let ids = [partition_id(40), partition_id(41)];
    let specs = (0..2)
        .map(|i| {
            let location = if local[i] {
                ChannelLocation::Local
            } else {
                remote(&remote_env.data_address())
            };
            spec(ids[i], 0, location)
        })
        .collect();
    let mut gate = gate_env.create_input_gate(specs).unwrap();
    let mut writers: Vec<ResultPartitionWriter> = (0..2)
        .map(|i| {
            let env = if local[i] { &gate_env } else { &remote_env };
            env.create_result_partition(ids[i], vec![local[i]]).unwrap()
        })
        .collect();
    let mut w1 = writers.pop().unwrap();
    let mut w0 = writers.pop().unwrap();
    let stats0 = w0.stats_handle();
    // Record contents are those of "subpartition" 0 and 1, to tell the channels apart.
    let p0 = std::thread::spawn(move || {
        for i in 0..A {
            w0.write_record(0, &record(0, i)).unwrap();
        }
        w0.broadcast_event(barrier(1)).unwrap();
        for i in A..A + B0 {
            w0.write_record(0, &record(0, i)).unwrap();
        }
        w0.finish().unwrap();
    });
    let p1 = std::thread::spawn(move || {
        for i in 0..A {
            w1.write_record(0, &record(1, i)).unwrap();
        }
        w1.broadcast_event(barrier(1)).unwrap();
        for i in A..A + B1 {
            w1.write_record(0, &record(1, i)).unwrap();
        }
        w1.finish().unwrap();
    });
    let mut o = Observer::new(2);
    let waker = gate.waker();
    // Until channel 0's barrier: then block it.
    while o.seen[0].last() != Some(&Seen::Event(barrier(1))) {
        let item = gate.next().unwrap();
        assert!(o.observe(item).is_some());
    }
    assert!(!gate.is_blocked(0));
    gate.block_channel(0);
    assert!(gate.is_blocked(0) && !gate.is_blocked(1));
    let held_from = o.seen[0].len();
    // Channel 1 keeps flowing to its end; nothing of channel 0 comes out.
    while !gate.is_channel_ended(1) {
        let item = gate.next().unwrap();
        assert_eq!(o.observe(item), Some(1), "an item of the blocked channel");
    }
    assert_eq!(o.seen[0].len(), held_from);
    // Producer 0 is stuck: its consumer does not read (local) or return credit (remote).
    eventually("producer 0 to be backpressured", || stats0.get().blocked);
    assert!(stats0.get().records_written < (A + B0) as u64);
    // Only the blocked channel has data: nothing is ready, and a blocked `next` returns only
    // for a wake-up.
    assert!(gate.poll_next().unwrap().is_none());
    let reader = std::thread::spawn(move || {
        let item = gate.next();
        (gate, item)
    });
    waker.wake();
    let (mut gate, item) = reader.join().unwrap();
    assert!(matches!(item, Ok(GateItem::Woken)), "{item:?}");
    assert!(gate.poll_next().unwrap().is_none());
    assert!(gate.is_blocked(0));
    assert!(!gate.is_channel_ended(0));
    // Resume: the held items, in their order, then the end.
    if resume_all {
        gate.resume_all();
    } else {
        gate.resume_channel(0);
    }
    assert!(!gate.is_blocked(0));
    o.read_to_end(&mut gate);
    p0.join().unwrap();
    p1.join().unwrap();
    for (ch, b) in [(0, B0), (1, B1)] {
        let mut expected = records_seen(ch, 0..A);
        expected.push(Seen::Event(barrier(1)));
        expected.extend(records_seen(ch, A..A + b));
        expected.push(Seen::EndOfPartition);
        assert_eq!(o.seen[ch], expected, "channel {ch}");
    }
    assert!(stats0.get().blocked_time > Duration::ZERO);
    drop(gate);
    eventually("every buffer to return", || {
        gate_env.buffer_stats().in_use == 0 && remote_env.buffer_stats().in_use == 0
    });
}

#[test]
fn blocking_a_local_channel_holds_it_while_the_other_flows() {
    bounded(|| blocking([true, true], true));
}

#[test]
fn blocking_a_remote_channel_backpressures_its_sender_by_credit() {
    bounded(|| blocking([false, false], true));
}

#[test]
fn blocking_works_on_mixed_local_and_remote_channels() {
    bounded(|| {
        blocking([true, false], false);
        blocking([false, true], true);
    });
}

/// A producer that fails while its channel is blocked fails the gate: no hang.
fn failure_while_blocked(local: bool) {
    let producer_env = env(small_config());
    let consumer_env = if local {
        producer_env.clone()
    } else {
        env(small_config())
    };
    let id = partition_id(if local { 50 } else { 51 });
    let location = if local {
        ChannelLocation::Local
    } else {
        remote(&producer_env.data_address())
    };
    let mut gate = consumer_env
        .create_input_gate(vec![spec(id, 0, location)])
        .unwrap();
    let mut writer = producer_env
        .create_result_partition(id, vec![local])
        .unwrap();
    // Little enough for the producer's pool: this thread writes before it reads.
    for i in 0..20u8 {
        writer.write_record(0, &[i; 40]).unwrap();
    }
    writer.broadcast_event(barrier(4)).unwrap();
    for i in 0..20u8 {
        writer.write_record(0, &[i; 40]).unwrap();
    }
    writer.flush().unwrap();
    let mut o = Observer::new(1);
    while o.seen[0].last() != Some(&Seen::Event(barrier(4))) {
        let item = gate.next().unwrap();
        o.observe(item);
    }
    gate.block_channel(0);
    writer.release("task failed: boom while aligned");
    drop(writer);
    let err = gate.next().unwrap_err();
    assert!(
        matches!(err, NetworkError::Channel { channel: 0, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("boom while aligned"), "{err}");
    // The gate keeps failing, blocked or not.
    assert!(gate.next().is_err());
    gate.resume_all();
    assert!(gate.poll_next().is_err());
    drop(gate);
    eventually("every buffer to return", || {
        producer_env.buffer_stats().in_use == 0 && consumer_env.buffer_stats().in_use == 0
    });
}

#[test]
fn a_failure_on_a_blocked_local_channel_fails_the_gate() {
    bounded(|| failure_while_blocked(true));
}

#[test]
fn a_failure_on_a_blocked_remote_channel_fails_the_gate() {
    bounded(|| failure_while_blocked(false));
}

#[test]
fn a_waker_wakes_a_reader_blocked_on_an_empty_gate() {
    bounded(|| {
        let env = env(small_config());
        let other = self::env(small_config());
        let id = partition_id(60);
        let remote_id = partition_id(61);
        let mut gate = env
            .create_input_gate(vec![
                spec(id, 0, ChannelLocation::Local),
                spec(remote_id, 0, remote(&other.data_address())),
            ])
            .unwrap();
        let mut writer = env.create_result_partition(id, vec![true]).unwrap();
        let mut remote_writer = other
            .create_result_partition(remote_id, vec![false])
            .unwrap();
        let waker = gate.waker();
        // A reader blocked (or about to block) in `next` on a gate with no data.
        for _ in 0..20 {
            let reader = std::thread::spawn(move || {
                let item = gate.next();
                (gate, item)
            });
            waker.clone().wake();
            let (g, item) = reader.join().unwrap();
            gate = g;
            assert!(matches!(item, Ok(GateItem::Woken)), "{item:?}");
            // Returned once: the flag is cleared.
            assert!(gate.poll_next().unwrap().is_none());
        }
        // Wake-ups before the call collapse into one, returned before data.
        writer.write_record(0, b"a").unwrap();
        writer.flush().unwrap();
        waker.wake();
        waker.wake();
        assert!(matches!(gate.next().unwrap(), GateItem::Woken));
        assert!(matches!(
            gate.next().unwrap(),
            GateItem::Buffer { channel: 0, .. }
        ));
        // A waker is Send + Sync: wake from another thread.
        std::thread::spawn({
            let waker = waker.clone();
            move || waker.wake()
        })
        .join()
        .unwrap();
        assert!(matches!(gate.next().unwrap(), GateItem::Woken));
        // The gate still reads to its end; an interrupt still fails a read.
        writer.finish().unwrap();
        remote_writer.finish().unwrap();
        let mut o = Observer::new(2);
        o.read_to_end(&mut gate);
        assert_eq!(o.seen[0], vec![Seen::EndOfPartition]);
        assert_eq!(o.seen[1], vec![Seen::EndOfPartition]);
        drop(gate);
        // Waking a dropped gate does nothing.
        waker.wake();

        let id = partition_id(62);
        let mut gate = env
            .create_input_gate(vec![spec(id, 0, ChannelLocation::Local)])
            .unwrap();
        let _writer = env.create_result_partition(id, vec![true]).unwrap();
        gate.interrupter().interrupt();
        assert_eq!(gate.next().unwrap_err(), NetworkError::Interrupted);
    });
}

#[test]
fn malformed_events_fail_the_gate_and_the_data_server_keeps_serving() {
    bounded(|| {
        let consumer_env = env(small_config());
        let producer_env = env(small_config());
        let downstream_env = env(small_config());
        // Good streams on other connections: producer -> consumer, consumer -> downstream.
        let upstream_id = partition_id(70);
        let served_id = partition_id(71);
        let upstream_gate = consumer_env
            .create_input_gate(vec![spec(
                upstream_id,
                0,
                remote(&producer_env.data_address()),
            )])
            .unwrap();
        let downstream_gate = downstream_env
            .create_input_gate(vec![spec(
                served_id,
                0,
                remote(&consumer_env.data_address()),
            )])
            .unwrap();
        let mut upstream = producer_env
            .create_result_partition(upstream_id, vec![false])
            .unwrap();
        let mut served = consumer_env
            .create_result_partition(served_id, vec![false])
            .unwrap();
        let (go_tx, go_rx) = mpsc::channel::<()>();
        let producers = std::thread::spawn(move || {
            for w in [&mut upstream, &mut served] {
                write_records(w, 0, 100);
                w.broadcast_event(barrier(1)).unwrap();
                w.flush().unwrap();
            }
            go_rx.recv().unwrap();
            for w in [&mut upstream, &mut served] {
                write_records(w, 0, 100);
                w.end_of_data().unwrap();
                w.finish().unwrap();
            }
        });

        // Raw producers sending bad events to gates of the consumer's TaskExecutor.
        expect_protocol_error_in(
            &consumer_env,
            |ch| event_response(ch, 0, &[9]),
            "unknown event tag 9",
        );
        expect_protocol_error_in(
            &consumer_env,
            |ch| event_response(ch, 0, &[2, 0, 0, 0, 1]),
            "CheckpointBarrier event of 5 bytes, expected 18",
        );
        expect_protocol_error_in(
            &consumer_env,
            |ch| {
                let mut p = vec![2];
                p.extend_from_slice(&1u64.to_be_bytes());
                p.extend_from_slice(&2i64.to_be_bytes());
                p.push(0x04);
                event_response(ch, 0, &p)
            },
            "unknown flags",
        );
        expect_protocol_error_in(&consumer_env, |ch| event_response(ch, 0, &[]), "empty");
        expect_protocol_error_in(
            &consumer_env,
            |ch| event_response(ch, 0, &[3, 0, 1]),
            "Watermark event of 3 bytes, expected 9",
        );
        expect_protocol_error_in(
            &consumer_env,
            |ch| event_response(ch, 0, &[4, 7]),
            "watermark status 7 is neither 0 (active) nor 1 (idle)",
        );
        // A good event then a data buffer after EndOfData.
        expect_protocol_error_in(
            &consumer_env,
            |ch| {
                let mut f = event_response(ch, 0, &[1]);
                f.extend(buffer_response(ch, 1, b"x"));
                f
            },
            "after EndOfData",
        );

        // Everyone else is still served.
        go_tx.send(()).unwrap();
        // One reader per gate: the producers write both partitions from one thread.
        let readers: Vec<_> = [upstream_gate, downstream_gate]
            .into_iter()
            .map(|mut gate| {
                std::thread::spawn(move || {
                    let mut o = Observer::new(1);
                    o.read_to_end(&mut gate);
                    (gate, o.seen)
                })
            })
            .collect();
        let mut gates = Vec::new();
        for reader in readers {
            let (gate, seen) = reader.join().unwrap();
            let mut expected = records_seen(0, 0..100);
            expected.push(Seen::Event(barrier(1)));
            expected.extend(records_seen(0, 0..100));
            expected.push(Seen::Event(NetworkEvent::EndOfData));
            expected.push(Seen::EndOfPartition);
            assert_eq!(seen[0], expected);
            gates.push(gate);
        }
        producers.join().unwrap();
        drop(gates);
        eventually("every buffer to return", || {
            consumer_env.buffer_stats().in_use == 0
                && producer_env.buffer_stats().in_use == 0
                && downstream_env.buffer_stats().in_use == 0
        });
    });
}
