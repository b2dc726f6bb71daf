//! Test support: a real etcd server in a child process, and a TCP proxy that can partition a
//! client from it. Public (behind no feature) so other test suites can use them.
//!
//! The etcd binary is `$RFLINK_ETCD`, else `/usr/bin/etcd`, else `etcd` on the `PATH`. Tests
//! that need one call [`start_or_skip`]: with `RFLINK_SKIP_ETCD=1` they print `SKIPPED` and
//! return; otherwise a missing etcd fails them, saying how to install it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rand::Rng;

/// How long a started etcd may take to answer `/health`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How many port pairs to try when etcd exits at start (a port in use).
const START_ATTEMPTS: usize = 10;

/// An etcd server of its own: a fresh data directory, random local ports. Dropping it kills
/// the process, reaps it and removes the directory.
pub struct EtcdProcess {
    child: Child,
    dir: PathBuf,
    endpoint: String,
}

impl EtcdProcess {
    /// Starts etcd and waits until its client port answers `/health` (at most 20 s). Ports are
    /// random in 20000..60000; when etcd exits at start (a port taken) other ports are tried,
    /// up to 10 times.
    pub fn start() -> Result<EtcdProcess, String> {
        let binary = etcd_binary()?;
        let mut failures = Vec::new();
        for _ in 0..START_ATTEMPTS {
            let mut rng = rand::rng();
            let client_port: u16 = rng.random_range(20000..60000);
            let peer_port: u16 = loop {
                let port = rng.random_range(20000..60000);
                if port != client_port {
                    break port;
                }
            };
            let dir = fresh_dir()?;
            match start_once(&binary, &dir, client_port, peer_port) {
                Ok(Started::Ready(child)) => {
                    return Ok(EtcdProcess {
                        child,
                        dir,
                        endpoint: format!("http://127.0.0.1:{client_port}"),
                    });
                }
                Ok(Started::Exited(why)) => {
                    failures.push(why);
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            }
        }
        Err(format!(
            "etcd ({}) did not start in {START_ATTEMPTS} attempts: {}",
            binary.display(),
            failures.join(" | ")
        ))
    }

    /// The client URL, `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }
}

impl Drop for EtcdProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts etcd for a test, or returns `None` (after printing `SKIPPED`) when
/// `RFLINK_SKIP_ETCD=1`.
///
/// # Panics
///
/// When etcd cannot be started: the test fails, naming the cause (and how to install etcd).
pub fn start_or_skip(test: &str) -> Option<EtcdProcess> {
    if skip_etcd() {
        eprintln!("SKIPPED {test}: RFLINK_SKIP_ETCD=1");
        return None;
    }
    match EtcdProcess::start() {
        Ok(etcd) => Some(etcd),
        Err(e) => panic!("{test} needs etcd: {e} (RFLINK_SKIP_ETCD=1 skips it)"),
    }
}

/// Whether `RFLINK_SKIP_ETCD=1` asks to skip the etcd tests.
pub fn skip_etcd() -> bool {
    std::env::var("RFLINK_SKIP_ETCD").is_ok_and(|v| v == "1")
}

/// The etcd binary to run.
fn etcd_binary() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("RFLINK_ETCD") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!("RFLINK_ETCD={} is not a file", path.display()))
        };
    }
    let system = Path::new("/usr/bin/etcd");
    if system.is_file() {
        return Ok(system.to_path_buf());
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("etcd"))
                .find(|candidate| candidate.is_file())
        })
        .ok_or_else(|| {
            "etcd is not installed: run `apt-get install etcd-server` (or set RFLINK_ETCD to an \
             etcd binary)"
                .to_string()
        })
}

fn fresh_dir() -> Result<PathBuf, String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!(
        "rflink-etcd-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    Ok(dir)
}

enum Started {
    Ready(Child),
    Exited(String),
}

fn start_once(
    binary: &Path,
    dir: &Path,
    client_port: u16,
    peer_port: u16,
) -> Result<Started, String> {
    let log_path = dir.join("etcd.log");
    let log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
    let client_url = format!("http://127.0.0.1:{client_port}");
    let peer_url = format!("http://127.0.0.1:{peer_port}");
    let mut child = Command::new(binary)
        .arg("--name")
        .arg("default")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--listen-client-urls")
        .arg(&client_url)
        .arg("--advertise-client-urls")
        .arg(&client_url)
        .arg("--listen-peer-urls")
        .arg(&peer_url)
        .arg("--initial-advertise-peer-urls")
        .arg(&peer_url)
        .arg("--initial-cluster")
        .arg(format!("default={peer_url}"))
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => {
                return Ok(Started::Exited(format!(
                    "etcd exited ({status}) on ports {client_port}/{peer_port}: {}",
                    log_tail(&log_path)
                )));
            }
            Ok(None) => {}
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot wait for etcd: {e}"));
            }
        }
        if healthy(client_port) {
            return Ok(Started::Ready(child));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "etcd did not answer {client_url}/health within {READY_TIMEOUT:?}: {}",
                log_tail(&log_path)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Whether `GET /health` on the client port says `"health":"true"`.
fn healthy(port: u16) -> bool {
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request =
        format!("GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

fn log_tail(path: &Path) -> String {
    let log = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" / ")
}

/// A TCP proxy to one target, on a random local port, that can cut the connection: for
/// partition tests. Runs on its own threads, independent of any async runtime.
pub struct TcpProxy {
    address: SocketAddr,
    shared: Arc<ProxyShared>,
    acceptor: Option<JoinHandle<()>>,
}

struct ProxyShared {
    target: String,
    cut: AtomicBool,
    stopped: AtomicBool,
    /// Both ends of every live forwarded connection.
    connections: Mutex<Vec<TcpStream>>,
}

impl TcpProxy {
    /// A proxy to `target` (`host:port`, or a URL `http://host:port`).
    pub fn start(target: &str) -> std::io::Result<TcpProxy> {
        let target = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let shared = Arc::new(ProxyShared {
            target,
            cut: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            connections: Mutex::new(Vec::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("tcp-proxy".into())
                .spawn(move || accept(listener, shared))?
        };
        Ok(TcpProxy {
            address,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Where clients connect: `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Partitions: closes every current connection, and closes new ones as soon as they are
    /// accepted, until [`restore`](Self::restore).
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.close_all();
    }

    /// Heals the partition: new connections are forwarded again.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.shared.close_all();
        // Wake the acceptor blocked in `accept`.
        let _ = TcpStream::connect_timeout(&self.address, Duration::from_secs(1));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

impl ProxyShared {
    fn close_all(&self) {
        let connections = std::mem::take(
            &mut *self
                .connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for connection in connections {
            let _ = connection.shutdown(Shutdown::Both);
        }
    }
}

fn accept(listener: TcpListener, shared: Arc<ProxyShared>) {
    for client in listener.incoming() {
        if shared.stopped.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = client else { continue };
        if shared.cut.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let upstream = shared
            .target
            .to_socket_addrs()
            .ok()
            .and_then(|mut addresses| addresses.next())
            .and_then(|address| TcpStream::connect_timeout(&address, Duration::from_secs(2)).ok());
        let Some(upstream) = upstream else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let clones = (
            client.try_clone(),
            upstream.try_clone(),
            client.try_clone(),
            upstream.try_clone(),
        );
        let (Ok(client_read), Ok(upstream_write), Ok(client_keep), Ok(upstream_keep)) = clones
        else {
            continue;
        };
        {
            let mut connections = shared
                .connections
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Forget connections that have ended.
            connections.retain(|c| c.peer_addr().is_ok());
            connections.push(client_keep);
            connections.push(upstream_keep);
        }
        // A cut between the check above and the registration: close at once.
        if shared.cut.load(Ordering::SeqCst) {
            shared.close_all();
        }
        let _ = std::thread::Builder::new()
            .name("tcp-proxy-up".into())
            .spawn(move || pipe(client_read, upstream_write));
        let _ = std::thread::Builder::new()
            .name("tcp-proxy-down".into())
            .spawn(move || pipe(upstream, client));
    }
}

/// Copies one direction until either side closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
