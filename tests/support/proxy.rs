//! An in-harness TCP proxy for fault injection between two nodes: no root, no iptables.
//!
//! [`Proxy::start`] listens on `127.0.0.1:0` and forwards every accepted connection to its
//! target (settable later with [`Proxy::set_target`], so a proxy can be advertised before the
//! node behind it has bound its port; new connections wait for a target, bounded). Each
//! connection is pumped by std threads, one reader and one writer per direction, so a stalled
//! direction exerts real TCP backpressure on its sender.
//!
//! Faults, all undone by [`Proxy::heal`]:
//! - [`blackhole`](Proxy::blackhole): a network partition as peers see one: connections stay
//!   open (existing ones, and new ones are accepted), but nothing is forwarded either way:
//!   silence, never a reset. Bytes sent meanwhile wait in the proxy and the socket buffers and are
//!   delivered after `heal`, as TCP delivers them after a partition that is shorter than its
//!   retransmission timeout.
//! - [`isolate`](Proxy::isolate): blackhole only the connections whose client sent a given byte
//!   pattern among its first bytes. An RPC dialer's `Hello` carries its advertised address, so
//!   one TaskManager's connections through a proxy shared by every TaskManager can be told apart
//!   ([`super::hello_pattern`]).
//! - [`stall`](Proxy::stall): stop forwarding in one direction only.
//! - [`reset`](Proxy::reset): close every current connection (both sockets shut down, so both
//!   peers read end-of-stream: a FIN, not an RST, which std cannot send) and refuse new ones
//!   (accepted and closed at once) until healed.
//! - [`delay`](Proxy::delay): every chunk is forwarded no earlier than `delay` after it was read.
//!
//! Bytes are never dropped from the middle of a stream (that corrupts it rather than modelling a
//! network fault). [`Proxy::bytes`] counts the bytes forwarded in each direction.
//!
//! Dropping the proxy closes its listener and every connection.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a new connection waits for a target before it is closed.
const TARGET_WAIT: Duration = Duration::from_secs(30);
/// How long connecting to the target may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often waiting pump threads look at the proxy's state again (they are also woken on
/// every change); bounds how long a thread outlives a closed connection.
const RECHECK: Duration = Duration::from_millis(100);
/// How many of a client's first bytes are kept for [`Proxy::isolate`].
const PREFIX_LEN: usize = 1024;

/// A direction of traffic through the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From the connecting client to the target.
    ToTarget,
    /// From the target back to the client.
    FromTarget,
}

impl Direction {
    fn index(self) -> usize {
        match self {
            Direction::ToTarget => 0,
            Direction::FromTarget => 1,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[derive(Debug, Default, Clone)]
struct Faults {
    stalled: [bool; 2],
    refuse: bool,
    delay: Duration,
    isolated: Vec<Vec<u8>>,
}

struct Conn {
    client: TcpStream,
    server: TcpStream,
    /// The first bytes the client sent.
    prefix: Arc<Mutex<Vec<u8>>>,
    dead: Arc<AtomicBool>,
}

impl Conn {
    fn close(&self) {
        self.dead.store(true, Ordering::SeqCst);
        let _ = self.client.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

struct Inner {
    name: String,
    target: Mutex<Option<SocketAddr>>,
    faults: Mutex<Faults>,
    changed: Condvar,
    conns: Mutex<HashMap<u64, Conn>>,
    next_conn: AtomicU64,
    accepted: AtomicU64,
    bytes: [AtomicU64; 2],
    closed: AtomicBool,
}

impl Inner {
    fn notify(&self) {
        // Taking the lock orders the notification after any waiter's check.
        let _guard = lock(&self.faults);
        self.changed.notify_all();
    }

    fn stalled(faults: &Faults, dir: Direction, prefix: &Mutex<Vec<u8>>) -> bool {
        if faults.stalled[dir.index()] {
            return true;
        }
        if faults.isolated.is_empty() {
            return false;
        }
        let prefix = lock(prefix);
        faults
            .isolated
            .iter()
            .any(|p| prefix.windows(p.len()).any(|w| w == p.as_slice()))
    }

    /// Blocks while `dir` of this connection may not forward; false once it should end.
    fn wait_until_flowing(
        &self,
        dir: Direction,
        prefix: &Mutex<Vec<u8>>,
        dead: &AtomicBool,
    ) -> bool {
        let mut faults = lock(&self.faults);
        loop {
            if self.closed.load(Ordering::SeqCst) || dead.load(Ordering::SeqCst) {
                return false;
            }
            if !Self::stalled(&faults, dir, prefix) {
                return true;
            }
            faults = self
                .changed
                .wait_timeout(faults, RECHECK)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    fn wait_for_target(&self) -> Option<SocketAddr> {
        let deadline = Instant::now() + TARGET_WAIT;
        loop {
            if let Some(target) = *lock(&self.target) {
                return Some(target);
            }
            if Instant::now() >= deadline || self.closed.load(Ordering::SeqCst) {
                return None;
            }
            let faults = lock(&self.faults);
            drop(
                self.changed
                    .wait_timeout(faults, RECHECK)
                    .unwrap_or_else(|p| p.into_inner()),
            );
        }
    }
}

/// A TCP proxy on `127.0.0.1:0`; see the module documentation.
pub struct Proxy {
    inner: Arc<Inner>,
    address: SocketAddr,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy named `name` (for messages) forwarding to `target`, or, with `None`, waiting for
    /// [`set_target`](Self::set_target).
    pub fn start(name: &str, target: Option<SocketAddr>) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("the proxy binds a port");
        let address = listener.local_addr().expect("the proxy's address");
        let inner = Arc::new(Inner {
            name: name.to_string(),
            target: Mutex::new(target),
            faults: Mutex::default(),
            changed: Condvar::new(),
            conns: Mutex::default(),
            next_conn: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            closed: AtomicBool::new(false),
        });
        let acceptor = std::thread::Builder::new()
            .name(format!("proxy-{name}"))
            .spawn({
                let inner = Arc::clone(&inner);
                move || accept_loop(&inner, &listener)
            })
            .expect("the proxy's thread starts");
        Proxy {
            inner,
            address,
            acceptor: Some(acceptor),
        }
    }

    /// Where clients connect: `127.0.0.1:<port>`.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// The port clients connect to.
    pub fn port(&self) -> u16 {
        self.address.port()
    }

    /// Forwards new connections to `target` (existing ones keep theirs).
    pub fn set_target(&self, target: SocketAddr) {
        *lock(&self.inner.target) = Some(target);
        self.inner.notify();
    }

    fn update(&self, change: impl FnOnce(&mut Faults)) {
        let mut faults = lock(&self.inner.faults);
        change(&mut faults);
        self.inner.changed.notify_all();
    }

    /// Forwards nothing, either way, on existing and new connections; see the module doc.
    pub fn blackhole(&self) {
        self.update(|f| f.stalled = [true, true]);
    }

    /// Stops forwarding in `direction` only.
    pub fn stall(&self, direction: Direction) {
        self.update(|f| f.stalled[direction.index()] = true);
    }

    /// Blackholes the connections (existing and new) whose client sent `pattern` among its first
    /// bytes.
    pub fn isolate(&self, pattern: &[u8]) {
        let pattern = pattern.to_vec();
        self.update(|f| f.isolated.push(pattern));
    }

    /// Forwards every chunk no earlier than `delay` after it was read.
    pub fn delay(&self, delay: Duration) {
        self.update(|f| f.delay = delay);
    }

    /// Closes every current connection and refuses new ones until [`heal`](Self::heal).
    pub fn reset(&self) {
        self.update(|f| f.refuse = true);
        let conns: Vec<Conn> = lock(&self.inner.conns).drain().map(|(_, c)| c).collect();
        for conn in &conns {
            conn.close();
        }
        self.inner.notify();
    }

    /// Undoes every fault: forwards everything again, at once, and accepts new connections.
    pub fn heal(&self) {
        self.update(|f| *f = Faults::default());
    }

    /// Bytes forwarded so far in `direction`, over every connection.
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.inner.bytes[direction.index()].load(Ordering::SeqCst)
    }

    /// Connections accepted so far (refused ones included).
    pub fn accepted(&self) -> u64 {
        self.inner.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open through the proxy.
    pub fn open_connections(&self) -> usize {
        lock(&self.inner.conns).len()
    }
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("name", &self.inner.name)
            .field("address", &self.address)
            .field("target", &*lock(&self.inner.target))
            .field("faults", &*lock(&self.inner.faults))
            .field("to_target", &self.bytes(Direction::ToTarget))
            .field("from_target", &self.bytes(Direction::FromTarget))
            .finish()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.closed.store(true, Ordering::SeqCst);
        let conns: Vec<Conn> = lock(&self.inner.conns).drain().map(|(_, c)| c).collect();
        for conn in &conns {
            conn.close();
        }
        self.inner.notify();
        // Wake the acceptor blocked in accept().
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn accept_loop(inner: &Arc<Inner>, listener: &TcpListener) {
    for stream in listener.incoming() {
        if inner.closed.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = stream else { continue };
        inner.accepted.fetch_add(1, Ordering::SeqCst);
        if lock(&inner.faults).refuse {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let inner = Arc::clone(inner);
        let _ = std::thread::Builder::new()
            .name(format!("proxy-{}-conn", inner.name))
            .spawn(move || open(&inner, client));
    }
}

/// Connects `client` to the target and starts pumping.
fn open(inner: &Arc<Inner>, client: TcpStream) {
    let Some(target) = inner.wait_for_target() else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let Ok(server) = TcpStream::connect_timeout(&target, CONNECT_TIMEOUT) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (Ok(c2), Ok(s2), Ok(c3), Ok(s3), Ok(c4), Ok(s4)) = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    ) else {
        return;
    };
    let id = inner.next_conn.fetch_add(1, Ordering::SeqCst);
    let prefix: Arc<Mutex<Vec<u8>>> = Arc::default();
    let dead = Arc::new(AtomicBool::new(false));
    {
        let mut conns = lock(&inner.conns);
        if lock(&inner.faults).refuse || inner.closed.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        }
        conns.insert(
            id,
            Conn {
                client: c2,
                server: s2,
                prefix: Arc::clone(&prefix),
                dead: Arc::clone(&dead),
            },
        );
    }
    let pumps = [
        (Direction::ToTarget, client, server),
        (Direction::FromTarget, s3, c3),
    ];
    let mut handles = Vec::new();
    for (dir, from, to) in pumps {
        let inner = Arc::clone(inner);
        let prefix = Arc::clone(&prefix);
        let dead = Arc::clone(&dead);
        if let Ok(h) = std::thread::Builder::new()
            .name(format!("proxy-{}-{dir:?}", inner.name))
            .spawn(move || pump(&inner, dir, from, to, &prefix, &dead))
        {
            handles.push(h);
        }
    }
    for h in handles {
        let _ = h.join();
    }
    let _ = c4.shutdown(Shutdown::Both);
    let _ = s4.shutdown(Shutdown::Both);
    lock(&inner.conns).remove(&id);
}

/// Forwards `from` → `to` until either side ends: a reader thread and the writer (this
/// thread), joined by a small bounded channel (so a stalled writer stops the reader, and the
/// sender feels TCP backpressure). A clean end of stream is passed on as a half-close; an error
/// on either side, or the connection's close, shuts both sockets down, which ends every thread
/// of the connection.
fn pump(
    inner: &Arc<Inner>,
    dir: Direction,
    from: TcpStream,
    mut to: TcpStream,
    prefix: &Arc<Mutex<Vec<u8>>>,
    dead: &Arc<AtomicBool>,
) {
    let (tx, rx) = mpsc::sync_channel::<(Instant, Vec<u8>)>(8);
    let Ok(mut from_reader) = from.try_clone() else {
        dead.store(true, Ordering::SeqCst);
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
        return;
    };
    let reader = {
        let prefix = Arc::clone(prefix);
        let dead = Arc::clone(dead);
        std::thread::Builder::new()
            .name(format!("proxy-{}-{dir:?}-read", inner.name))
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match from_reader.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(_) => {
                            dead.store(true, Ordering::SeqCst);
                            break;
                        }
                    };
                    if dir == Direction::ToTarget {
                        let mut prefix = lock(&prefix);
                        let room = PREFIX_LEN.saturating_sub(prefix.len()).min(n);
                        prefix.extend_from_slice(&buf[..room]);
                    }
                    if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                        break;
                    }
                }
            })
    };
    let mut failed = reader.is_err();
    while let Ok((read_at, chunk)) = rx.recv() {
        if !inner.wait_until_flowing(dir, prefix, dead) {
            failed = true;
            break;
        }
        let delay = lock(&inner.faults).delay;
        let due = read_at + delay;
        let now = Instant::now();
        if due > now {
            // The injected delay itself: a bounded wait.
            std::thread::sleep(due - now);
        }
        // Counted before the write: a peer that has received the bytes must find them counted.
        inner.bytes[dir.index()].fetch_add(chunk.len() as u64, Ordering::SeqCst);
        if to.write_all(&chunk).is_err() {
            failed = true;
            break;
        }
    }
    if failed || dead.load(Ordering::SeqCst) {
        dead.store(true, Ordering::SeqCst);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    } else {
        let _ = to.shutdown(Shutdown::Write);
    }
    drop(rx);
    if let Ok(reader) = reader {
        let _ = reader.join();
    }
}
