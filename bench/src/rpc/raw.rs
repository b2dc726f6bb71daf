//! The physical baselines: plain tokio TCP with a 4-byte big-endian length prefix, each side on its
//! own OS thread with a current-thread runtime (like an actix arbiter), `TCP_NODELAY` on both ends.
//!
//! * `rtt_round`: ping-pong, one frame in flight, the server echoes each frame.
//! * `stream_round`: the client writes frames through a `BufWriter`; the server reads and parses
//!   them; a zero-length frame asks the server to answer with how many it has read so far.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};

use super::Options;
use crate::stats::nanos;
use crate::threads::{self, Worker};
use crate::BoxError;

const IO_BUFFER: usize = 64 * 1024;
/// A server gives up if no client connects within this time (the client failed first).
const ACCEPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame either side accepts.
const MAX_FRAME: usize = 16 * 1024 * 1024;

/// Binds a loopback listener on an ephemeral port, ready to hand to another thread.
fn bind() -> Result<(std::net::TcpListener, SocketAddr), BoxError> {
    let listener = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

async fn accept(listener: std::net::TcpListener) -> Result<TcpStream, BoxError> {
    let listener = TcpListener::from_std(listener)?;
    let (stream, _) = tokio::time::timeout(ACCEPT_TIMEOUT, listener.accept())
        .await
        .map_err(|_| "no client connected")??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// `[len:u32be][payload]`.
fn frame(payload: &[u8]) -> Result<Vec<u8>, BoxError> {
    let len = u32::try_from(payload.len()).map_err(|_| "payload too large for a frame")?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload);
    Ok(frame)
}

/// Reads one length prefix; `None` at a clean end of stream.
async fn read_len<R: AsyncRead + Unpin>(rd: &mut R) -> Result<Option<usize>, BoxError> {
    let mut len = [0u8; 4];
    match rd.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(format!("frame of {len} bytes exceeds {MAX_FRAME}").into());
    }
    Ok(Some(len))
}

// ---- round-trip latency ----

/// Echoes every frame until the client closes. Returns how many it echoed.
async fn echo_server(listener: std::net::TcpListener) -> Result<u64, BoxError> {
    let (rd, mut wr) = accept(listener).await?.into_split();
    let mut rd = BufReader::with_capacity(IO_BUFFER, rd);
    let mut frame = Vec::new();
    let mut echoed = 0;
    while let Some(len) = read_len(&mut rd).await? {
        frame.clear();
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        frame.resize(4 + len, 0);
        rd.read_exact(&mut frame[4..]).await?;
        wr.write_all(&frame).await?;
        echoed += 1;
    }
    Ok(echoed)
}

async fn rtt_client(addr: SocketAddr, options: Options) -> Result<Vec<u64>, BoxError> {
    let (rd, mut wr) = connect(addr).await?.into_split();
    let mut rd = BufReader::with_capacity(IO_BUFFER, rd);
    let request = frame(&super::payload(options.payload))?;
    let mut reply = vec![0u8; request.len()];
    let mut samples = Vec::with_capacity(options.samples);
    for i in 0..options.warmup + options.samples {
        let start = Instant::now();
        wr.write_all(&request).await?;
        rd.read_exact(&mut reply).await?;
        let elapsed = start.elapsed();
        if reply != request {
            return Err("the echo differs from the request".into());
        }
        if i >= options.warmup {
            samples.push(nanos(elapsed));
        }
    }
    wr.shutdown().await?;
    Ok(samples)
}

/// One ping-pong round: the samples of the timed round trips, in nanoseconds.
pub fn rtt_round(options: &Options) -> Result<Vec<u64>, BoxError> {
    let (listener, addr) = bind()?;
    let server = Worker::spawn("raw-echo-server", move || {
        threads::tokio_task(echo_server(listener))
    })?;
    let opts = options.clone();
    let samples = threads::run("raw-rtt-client", move || {
        threads::tokio_task(rtt_client(addr, opts))
    })?;
    let echoed = server.join()?;
    let expected = (options.warmup + options.samples) as u64;
    if echoed != expected {
        return Err(
            format!("the echo server answered {echoed} frames, expected {expected}").into(),
        );
    }
    Ok(samples)
}

// ---- one-way throughput ----

/// Reads and parses frames until the client closes; a zero-length frame is answered with the
/// number of payload frames read so far (u64 big-endian). Returns the total.
async fn sink_server(listener: std::net::TcpListener) -> Result<u64, BoxError> {
    let (rd, mut wr) = accept(listener).await?.into_split();
    let mut rd = BufReader::with_capacity(IO_BUFFER, rd);
    let mut body = Vec::new();
    let (mut frames, mut checksum) = (0u64, 0u64);
    while let Some(len) = read_len(&mut rd).await? {
        if len == 0 {
            wr.write_all(&frames.to_be_bytes()).await?;
            continue;
        }
        body.resize(len, 0);
        rd.read_exact(&mut body).await?;
        // "Parse": touch the payload so the read cannot be skipped.
        checksum = checksum.wrapping_add(u64::from(body[0]) + u64::from(body[len - 1]));
        frames += 1;
    }
    std::hint::black_box(checksum);
    Ok(frames)
}

/// Writes `count` frames and the count request, and waits for the answer.
async fn send_batch<W, R>(
    wr: &mut W,
    rd: &mut R,
    frame: &[u8],
    count: usize,
) -> Result<u64, BoxError>
where
    W: tokio::io::AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    for _ in 0..count {
        wr.write_all(frame).await?;
    }
    wr.write_all(&0u32.to_be_bytes()).await?;
    wr.flush().await?;
    let mut ack = [0u8; 8];
    rd.read_exact(&mut ack).await?;
    Ok(u64::from_be_bytes(ack))
}

async fn stream_client(addr: SocketAddr, options: Options) -> Result<Duration, BoxError> {
    let (mut rd, wr) = connect(addr).await?.into_split();
    let mut wr = BufWriter::with_capacity(IO_BUFFER, wr);
    let frame = frame(&super::payload(options.payload))?;
    let warmup = options.tell_warmup();
    let seen = send_batch(&mut wr, &mut rd, &frame, warmup).await?;
    if seen != warmup as u64 {
        return Err(format!("the server read {seen} warm-up frames, expected {warmup}").into());
    }
    let start = Instant::now();
    let seen = send_batch(&mut wr, &mut rd, &frame, options.tells).await?;
    let elapsed = start.elapsed();
    let expected = (warmup + options.tells) as u64;
    if seen != expected {
        return Err(format!("the server read {seen} frames, expected {expected}").into());
    }
    wr.shutdown().await?;
    Ok(elapsed)
}

/// One streaming round: the time from the first of `options.tells` frames until the server has
/// read them all.
pub fn stream_round(options: &Options) -> Result<Duration, BoxError> {
    let (listener, addr) = bind()?;
    let server = Worker::spawn("raw-sink-server", move || {
        threads::tokio_task(sink_server(listener))
    })?;
    let opts = options.clone();
    let elapsed = threads::run("raw-stream-client", move || {
        threads::tokio_task(stream_client(addr, opts))
    })?;
    server.join()?;
    Ok(elapsed)
}
