//! The data plane over real threads and sockets on 127.0.0.1: record delivery (local and
//! remote), backpressure, partition request retries, malformed input, cancellation and buffer
//! accounting. Every test runs under a deadline and waits on conditions, never on time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rflink_runtime::network::{
    ChannelLocation, GateItem, InputChannelSpec, InputGate, NetworkConfig, NetworkError,
    RecordDeserializer, ResultPartitionId, ResultPartitionWriter, ShuffleEnvironment,
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

fn preamble() -> Vec<u8> {
    let mut p = b"RFDP".to_vec();
    p.extend_from_slice(&1u16.to_be_bytes());
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
    let mut out = Vec::new();
    out.extend_from_slice(&((5 + 21 + payload.len()) as u32).to_be_bytes());
    out.extend_from_slice(&0xBADC_0FFEu32.to_be_bytes());
    out.push(0);
    out.extend_from_slice(&channel.to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(&0u32.to_be_bytes());
    out.push(0);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn expect_protocol_error(reply: impl FnOnce(u64) -> Vec<u8> + Send + 'static, what: &str) {
    let consumer_env = env(small_config());
    let addr = fake_server(reply);
    let mut gate = consumer_env
        .create_input_gate(vec![spec(partition_id(6), 0, remote(&addr))])
        .unwrap();
    let mut held = Vec::new();
    let err = loop {
        match gate.next() {
            Ok(GateItem::Buffer { buffer, .. }) => held.push(buffer),
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
    eventually("receiver buffers to return", || {
        consumer_env.buffer_stats().in_use == 0
    });
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
