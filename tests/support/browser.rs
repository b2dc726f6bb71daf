//! A small, synchronous client of the Chrome DevTools Protocol (CDP), for driving headless
//! Chromium in tests (`tests/dashboard.rs`).
//!
//! [`Browser::launch`] starts `chromium --headless=new --remote-debugging-port=0` with a fresh
//! profile in a temporary directory, reads the `DevTools listening on ws://...` line from its
//! stderr, connects to that WebSocket (`tungstenite`), opens one page target and attaches to
//! it in flat mode (`Target.attachToTarget` with `flatten: true`: page commands carry the
//! session id on the same socket). Every call is bounded by a timeout. Dropping the browser
//! closes it (`Browser.close`), and kills its process group if it does not exit in time.
//!
//! JavaScript exceptions and `console.error` calls of the page are recorded (see
//! [`Browser::page_errors`]), so a test can assert the page ran cleanly. After
//! [`Browser::record_responses`], so is the status of every HTTP response the page receives (see
//! [`Browser::responses`]).

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tungstenite::{Message, WebSocket};

/// How long Chromium may take to print its DevTools address.
pub const LAUNCH_TIMEOUT: Duration = Duration::from_secs(30);
/// The default bound of one CDP command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(20);
/// The page's viewport (and so the screenshots' size).
pub const VIEWPORT: (u32, u32) = (1280, 800);

/// The environment variable naming the browser binary, for a Chromium or Chrome that is not
/// `chromium` on the PATH.
pub const CHROMIUM_ENV: &str = "RFLINK_CHROMIUM";

/// Why a browser operation failed.
#[derive(Debug)]
pub enum BrowserError {
    /// Chromium could not be started, or printed no DevTools address.
    Launch(String),
    /// The DevTools WebSocket failed.
    Socket(String),
    /// No answer to `method` within the timeout.
    Timeout { method: String, after: Duration },
    /// Chromium answered `method` with an error.
    Protocol { method: String, error: Value },
    /// The evaluated JavaScript threw.
    Script {
        expression: String,
        exception: String,
    },
    /// A [`Browser::wait_for`] condition did not hold in time.
    WaitTimeout {
        what: String,
        after: Duration,
        last: Value,
    },
    /// A file could not be written.
    Io(std::io::Error),
}

impl fmt::Display for BrowserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BrowserError::Launch(why) => write!(f, "chromium did not start: {why}"),
            BrowserError::Socket(why) => write!(f, "DevTools socket: {why}"),
            BrowserError::Timeout { method, after } => {
                write!(f, "no answer to {method} within {after:?}")
            }
            BrowserError::Protocol { method, error } => write!(f, "{method} failed: {error}"),
            BrowserError::Script {
                expression,
                exception,
            } => write!(f, "script threw {exception}\nscript: {expression}"),
            BrowserError::WaitTimeout { what, after, last } => {
                write!(f, "not within {after:?}: {what}; last value: {last}")
            }
            BrowserError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for BrowserError {}

impl From<std::io::Error> for BrowserError {
    fn from(e: std::io::Error) -> Self {
        BrowserError::Io(e)
    }
}

/// The Chromium binary: `$RFLINK_CHROMIUM` if set, else `chromium` (or `chromium-browser`)
/// on the PATH; `None` if there is none.
pub fn find_chromium() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(CHROMIUM_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser"].iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// One HTTP response the page received (`Network.responseReceived`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status.
    pub status: u16,
    /// The requested URL.
    pub url: String,
    /// What asked for it, as Chromium names it: `Document`, `Script`, `XHR`, `Fetch`, ...
    pub kind: String,
}

/// A headless Chromium with one page, driven over CDP.
pub struct Browser {
    child: Child,
    socket: WebSocket<TcpStream>,
    next_id: u64,
    /// The flat-mode session of the page target.
    session: String,
    /// Chromium's stderr (after the DevTools line), for failure messages.
    stderr: Arc<Mutex<Vec<String>>>,
    /// Uncaught exceptions and `console.error` calls of the page.
    page_errors: Vec<String>,
    /// The HTTP responses the page received, once [`record_responses`](Self::record_responses)
    /// was called.
    responses: Vec<Response>,
    /// The profile directory; removed after the browser is gone (fields drop after `drop`).
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromium` headless with a fresh profile and opens a blank page.
    pub fn launch(chromium: &Path) -> Result<Browser, BrowserError> {
        let profile = tempfile::tempdir()?;
        let (width, height) = VIEWPORT;
        let mut command = Command::new(chromium);
        command
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--remote-debugging-port=0",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
                "--mute-audio",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            // Its own process group: the renderer and GPU processes can be killed with it.
            .process_group(0);
        let mut child = command
            .spawn()
            .map_err(|e| BrowserError::Launch(format!("{}: {e}", chromium.display())))?;
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (url_tx, url_rx) = mpsc::channel::<String>();
        {
            let pipe = child.stderr.take().expect("stderr is piped");
            let stderr = Arc::clone(&stderr);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(at) = line.find("ws://") {
                        if line.contains("DevTools listening on") {
                            let _ = url_tx.send(line[at..].trim().to_string());
                            continue;
                        }
                    }
                    let mut lines = stderr.lock().unwrap_or_else(|p| p.into_inner());
                    if lines.len() < 500 {
                        lines.push(line);
                    }
                }
            });
        }
        let url = match url_rx.recv_timeout(LAUNCH_TIMEOUT) {
            Ok(url) => url,
            Err(e) => {
                kill_group(&mut child);
                let lines = stderr.lock().unwrap_or_else(|p| p.into_inner()).join("\n");
                return Err(BrowserError::Launch(format!(
                    "no DevTools address on stderr ({e}):\n{lines}"
                )));
            }
        };
        let socket = match connect(&url) {
            Ok(socket) => socket,
            Err(e) => {
                kill_group(&mut child);
                return Err(e);
            }
        };
        let mut browser = Browser {
            child,
            socket,
            next_id: 1,
            session: String::new(),
            stderr,
            page_errors: Vec::new(),
            responses: Vec::new(),
            _profile: profile,
        };
        let target = browser.browser_call("Target.createTarget", json!({"url": "about:blank"}))?;
        let target_id = target["targetId"].as_str().unwrap_or_default().to_string();
        let attached = browser.browser_call(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        )?;
        browser.session = attached["sessionId"]
            .as_str()
            .ok_or_else(|| BrowserError::Protocol {
                method: "Target.attachToTarget".into(),
                error: attached.clone(),
            })?
            .to_string();
        browser.call("Page.enable", json!({}))?;
        browser.call("Runtime.enable", json!({}))?;
        browser.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )?;
        Ok(browser)
    }

    /// A command to the page's session, bounded by [`COMMAND_TIMEOUT`]; its `result`.
    pub fn call(&mut self, method: &str, params: Value) -> Result<Value, BrowserError> {
        let session = self.session.clone();
        self.send(Some(&session), method, params, COMMAND_TIMEOUT)
    }

    /// A command to the browser target itself (no session).
    fn browser_call(&mut self, method: &str, params: Value) -> Result<Value, BrowserError> {
        self.send(None, method, params, COMMAND_TIMEOUT)
    }

    fn send(
        &mut self,
        session: Option<&str>,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<Value, BrowserError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = Value::from(session);
        }
        let deadline = Instant::now() + timeout;
        let timed_out = || BrowserError::Timeout {
            method: method.to_string(),
            after: timeout,
        };
        self.socket
            .get_mut()
            .set_write_timeout(Some(timeout))
            .map_err(|e| BrowserError::Socket(e.to_string()))?;
        self.socket
            .send(Message::text(message.to_string()))
            .map_err(|e| BrowserError::Socket(format!("sending {method}: {e}")))?;
        loop {
            let remaining = deadline
                .checked_duration_since(Instant::now())
                .filter(|d| !d.is_zero())
                .ok_or_else(timed_out)?;
            self.socket
                .get_mut()
                .set_read_timeout(Some(remaining))
                .map_err(|e| BrowserError::Socket(e.to_string()))?;
            let text = match self.socket.read() {
                Ok(Message::Text(text)) => text,
                Ok(Message::Close(frame)) => {
                    return Err(BrowserError::Socket(format!(
                        "closed while waiting for {method}: {frame:?}"
                    )))
                }
                Ok(_) => continue,
                // A read timeout: tungstenite keeps a partly read frame, so reading on resumes.
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(e) => {
                    return Err(BrowserError::Socket(format!(
                        "waiting for {method}: {e}\nchromium stderr:\n{}",
                        self.stderr_lines()
                    )))
                }
            };
            let value: Value = serde_json::from_str(text.as_str())
                .map_err(|e| BrowserError::Socket(format!("not JSON ({e}): {text}")))?;
            if value["id"].as_u64() == Some(id) {
                if let Some(error) = value.get("error") {
                    return Err(BrowserError::Protocol {
                        method: method.to_string(),
                        error: error.clone(),
                    });
                }
                return Ok(value.get("result").cloned().unwrap_or(Value::Null));
            }
            self.on_event(&value);
        }
    }

    /// Records the page's uncaught exceptions and `console.error` calls; other events are
    /// dropped.
    fn on_event(&mut self, event: &Value) {
        let params = &event["params"];
        match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or_else(|| details["text"].as_str())
                    .unwrap_or("an exception");
                self.page_errors.push(format!("uncaught: {text}"));
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                let args: Vec<String> = params["args"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| {
                        a["value"]
                            .as_str()
                            .map(str::to_string)
                            .or_else(|| a["description"].as_str().map(str::to_string))
                            .unwrap_or_else(|| a["value"].to_string())
                    })
                    .collect();
                self.page_errors
                    .push(format!("console.error: {}", args.join(" ")));
            }
            Some("Network.responseReceived") => {
                let response = &params["response"];
                self.responses.push(Response {
                    status: response["status"].as_u64().unwrap_or(0) as u16,
                    url: response["url"].as_str().unwrap_or_default().to_string(),
                    kind: params["type"].as_str().unwrap_or_default().to_string(),
                });
            }
            _ => {}
        }
    }

    /// The page's uncaught exceptions and `console.error` calls seen so far (events arrive
    /// while commands are waited for).
    pub fn page_errors(&self) -> &[String] {
        &self.page_errors
    }

    /// Records every HTTP response the page receives from now on (`Network.enable`); see
    /// [`responses`](Self::responses).
    pub fn record_responses(&mut self) -> Result<(), BrowserError> {
        self.call("Network.enable", json!({}))?;
        Ok(())
    }

    /// The HTTP responses received since [`record_responses`](Self::record_responses), in
    /// order (events arrive while commands are waited for).
    pub fn responses(&self) -> &[Response] {
        &self.responses
    }

    /// Chromium's stderr so far (without the DevTools line).
    pub fn stderr_lines(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .join("\n")
    }

    /// Navigates the page to `url` (`Page.navigate`); fails if Chromium reports a load error.
    /// Does not wait for the page's scripts: poll with [`wait_for`](Self::wait_for).
    pub fn navigate(&mut self, url: &str) -> Result<(), BrowserError> {
        let result = self.call("Page.navigate", json!({"url": url}))?;
        match result["errorText"].as_str() {
            Some(error) if !error.is_empty() => Err(BrowserError::Protocol {
                method: format!("Page.navigate {url}"),
                error: Value::from(error),
            }),
            _ => Ok(()),
        }
    }

    /// Evaluates `expression` in the page (promises awaited) and returns its value as JSON
    /// (`undefined` as null); a thrown exception is an error.
    pub fn evaluate(&mut self, expression: &str) -> Result<Value, BrowserError> {
        let result = self.call(
            "Runtime.evaluate",
            json!({
                "expression": expression,
                "returnByValue": true,
                "awaitPromise": true,
                "timeout": COMMAND_TIMEOUT.as_millis() as u64,
            }),
        )?;
        if let Some(exception) = result.get("exceptionDetails") {
            let text = exception["exception"]["description"]
                .as_str()
                .or_else(|| exception["text"].as_str())
                .unwrap_or("an exception")
                .to_string();
            return Err(BrowserError::Script {
                expression: expression.to_string(),
                exception: text,
            });
        }
        Ok(result["result"]
            .get("value")
            .cloned()
            .unwrap_or(Value::Null))
    }

    /// Evaluates `expression` every 100 ms until `check` holds on its value, at most
    /// `timeout`; returns that value. A throwing expression is retried (the page may be
    /// between two renders) until the deadline.
    pub fn wait_for(
        &mut self,
        what: &str,
        expression: &str,
        timeout: Duration,
        check: impl Fn(&Value) -> bool,
    ) -> Result<Value, BrowserError> {
        let deadline = Instant::now() + timeout;
        loop {
            let last = match self.evaluate(expression) {
                Ok(value) if check(&value) => return Ok(value),
                Ok(value) => value,
                Err(BrowserError::Script { exception, .. }) => {
                    Value::from(format!("threw {exception}"))
                }
                Err(e) => return Err(e),
            };
            if Instant::now() >= deadline {
                return Err(BrowserError::WaitTimeout {
                    what: what.to_string(),
                    after: timeout,
                    last,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Saves a PNG screenshot of the viewport to `path` (its directory created).
    pub fn screenshot(&mut self, path: &Path) -> Result<(), BrowserError> {
        let result = self.call("Page.captureScreenshot", json!({"format": "png"}))?;
        let data = result["data"]
            .as_str()
            .ok_or_else(|| BrowserError::Protocol {
                method: "Page.captureScreenshot".into(),
                error: Value::from("no data in the answer"),
            })?;
        let png = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| BrowserError::Protocol {
                method: "Page.captureScreenshot".into(),
                error: Value::from(format!("bad base64: {e}")),
            })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, png)?;
        Ok(())
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Politely first: Chromium then ends its renderer and GPU processes itself.
        let _ = self.send(None, "Browser.close", json!({}), Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill_group(&mut self.child);
    }
}

/// Kills `child`'s process group (Chromium and every helper process it started) and reaps
/// `child`.
fn kill_group(child: &mut Child) {
    // `kill -KILL -- -PGID` through the command (no libc dependency, no unsafe), then the child
    // itself in case the group is gone already.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let _ = child.kill();
    let _ = child.wait();
}

/// Opens the DevTools WebSocket at `url` (`ws://host:port/devtools/browser/...`), bounded.
fn connect(url: &str) -> Result<WebSocket<TcpStream>, BrowserError> {
    let host_port = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| BrowserError::Launch(format!("unexpected DevTools address {url}")))?;
    let address = host_port
        .to_socket_addrs()
        .map_err(|e| BrowserError::Socket(format!("{host_port}: {e}")))?
        .next()
        .ok_or_else(|| BrowserError::Socket(format!("{host_port}: no address")))?;
    let stream = TcpStream::connect_timeout(&address, COMMAND_TIMEOUT)
        .map_err(|e| BrowserError::Socket(format!("connecting to {address}: {e}")))?;
    stream.set_read_timeout(Some(COMMAND_TIMEOUT))?;
    stream.set_write_timeout(Some(COMMAND_TIMEOUT))?;
    stream.set_nodelay(true)?;
    let (socket, _response) = tungstenite::client(url, stream)
        .map_err(|e| BrowserError::Socket(format!("handshake with {url}: {e}")))?;
    Ok(socket)
}

/// The Chromium binary for browser test `test`, or `None` when browser tests are skipped on
/// purpose (`RFLINK_SKIP_BROWSER=1`); panics with what to do when there is none.
pub fn chromium_for(test: &str) -> Option<PathBuf> {
    if std::env::var("RFLINK_SKIP_BROWSER").as_deref() == Ok("1") {
        println!("SKIPPED: {test} (RFLINK_SKIP_BROWSER=1)");
        return None;
    }
    match find_chromium() {
        Some(path) => Some(path),
        None => panic!(
            "{test} needs Chromium and found no `chromium` on the PATH: run \
             scripts/install-test-tools (or set {CHROMIUM_ENV} to a Chromium/Chrome binary, or \
             RFLINK_SKIP_BROWSER=1 to skip browser tests)"
        ),
    }
}

/// `<target dir>/<name>`: where browser tests put their screenshots (next to the binaries
/// under test).
pub fn artifact_dir(name: &str) -> PathBuf {
    let node = PathBuf::from(env!("CARGO_BIN_EXE_rflink-node"));
    let target = node
        .parent()
        .and_then(|profile| profile.parent())
        .expect("the binary sits in <target>/<profile>/");
    target.join(name)
}

/// Unwraps a browser result, or panics with the error, the page's errors, the responses that
/// failed (when recorded) and every node's logs.
pub fn ok<T>(result: Result<T, BrowserError>, browser: &Browser, cluster: &super::Cluster) -> T {
    result.unwrap_or_else(|e| {
        let failed: Vec<String> = browser
            .responses()
            .iter()
            .filter(|r| r.status >= 400)
            .map(|r| format!("{} {}", r.status, r.url))
            .collect();
        panic!(
            "{e}\npage errors: {:?}\nfailed responses: {failed:#?}\nchromium stderr:\n{}\n{}",
            browser.page_errors(),
            browser.stderr_lines(),
            cluster.logs()
        )
    })
}
