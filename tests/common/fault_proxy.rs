//! A small TCP proxy that injects S3 faults in front of a real S3 server.
//!
//! [`FaultProxy::start`] listens on `127.0.0.1:0` (loopback only) and, for
//! every accepted connection, reads the HTTP request head (up to the blank
//! line). The [`FaultPlan`] then decides what happens to that request:
//!
//! - [`Fault::SlowDown`]: `503 Slow Down` with S3's `SlowDown` XML error body;
//! - [`Fault::InternalError`]: `500 Internal Server Error` with `InternalError`;
//! - [`Fault::Drop`]: the connection is closed without any answer;
//! - pass: the head is forwarded to the upstream server (with
//!   `Connection: close` added, so that every connection carries exactly one
//!   request and every request is seen by the proxy), then bytes are piped in
//!   both directions until both sides are done.
//!
//! The proxy runs on its own thread with its own tokio runtime, so it works
//! the same whatever runtime the test uses; dropping the [`FaultProxy`] stops
//! it and every connection it still serves.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Longest request head accepted (S3 heads are a few KiB at most).
const MAX_HEAD: usize = 64 * 1024;
/// How long a faulted connection is drained after the answer (so the client
/// reads the answer instead of a reset caused by its unread body).
const DRAIN_FOR: Duration = Duration::from_secs(5);

/// One injected fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// `503 Slow Down`, S3 error code `SlowDown`.
    SlowDown,
    /// The connection is closed without an answer.
    Drop,
    /// `500 Internal Server Error`, S3 error code `InternalError`.
    InternalError,
}

/// What the proxy does with each request.
#[derive(Clone, Debug)]
pub enum FaultPlan {
    /// Request number `n` (0-based, in the order their heads arrive) gets
    /// `script[n]`: `Some(fault)` or `None` (passed). Requests past the end
    /// of the script pass.
    Script(Vec<Option<Fault>>),
    /// Every request whose target (path and query) contains `substring`
    /// fails with `fault`; every other request passes.
    FailPathContaining { substring: String, fault: Fault },
    /// Every request passes.
    PassAll,
}

impl FaultPlan {
    /// The first `n` requests fail, cycling through 503 SlowDown, a dropped
    /// connection and 500 InternalError; the rest pass.
    pub fn fail_first(n: usize) -> FaultPlan {
        let mix = [Fault::SlowDown, Fault::Drop, Fault::InternalError];
        FaultPlan::Script((0..n).map(|i| Some(mix[i % mix.len()])).collect())
    }

    /// Every request for a path containing `substring` fails with `fault`.
    pub fn fail_path_containing(substring: &str, fault: Fault) -> FaultPlan {
        FaultPlan::FailPathContaining {
            substring: substring.to_string(),
            fault,
        }
    }

    /// The fault (if any) for request number `n` with this request target.
    fn decide(&self, n: u64, target: &str) -> Option<Fault> {
        match self {
            FaultPlan::Script(script) => usize::try_from(n)
                .ok()
                .and_then(|i| script.get(i).copied())
                .flatten(),
            FaultPlan::FailPathContaining { substring, fault } => {
                target.contains(substring.as_str()).then_some(*fault)
            }
            FaultPlan::PassAll => None,
        }
    }

    /// The substring whose requests are counted in [`ProxyCounters::matching`].
    fn watched(&self) -> Option<&str> {
        match self {
            FaultPlan::FailPathContaining { substring, .. } => Some(substring),
            _ => None,
        }
    }
}

/// What the proxy saw and did.
#[derive(Debug, Default)]
pub struct ProxyCounters {
    /// Request heads read (every request, faulted or passed).
    pub requests: AtomicU64,
    /// Faults injected (all kinds).
    pub faults: AtomicU64,
    pub slow_downs: AtomicU64,
    pub drops: AtomicU64,
    pub internal_errors: AtomicU64,
    /// Requests forwarded to the upstream server.
    pub passed: AtomicU64,
    /// Requests whose target contains the plan's substring
    /// ([`FaultPlan::FailPathContaining`] only).
    pub matching: AtomicU64,
    /// `METHOD TARGET -> outcome`, in arrival order (for failure messages).
    log: Mutex<Vec<String>>,
    /// Every request head as it arrived (request line and headers).
    heads: Mutex<Vec<String>>,
}

impl ProxyCounters {
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }
    pub fn faults(&self) -> u64 {
        self.faults.load(Ordering::SeqCst)
    }
    pub fn passed(&self) -> u64 {
        self.passed.load(Ordering::SeqCst)
    }
    pub fn matching(&self) -> u64 {
        self.matching.load(Ordering::SeqCst)
    }
    pub fn slow_downs(&self) -> u64 {
        self.slow_downs.load(Ordering::SeqCst)
    }
    pub fn drops(&self) -> u64 {
        self.drops.load(Ordering::SeqCst)
    }
    pub fn internal_errors(&self) -> u64 {
        self.internal_errors.load(Ordering::SeqCst)
    }
    /// Every request head seen, in arrival order.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().map(|h| h.clone()).unwrap_or_default()
    }

    /// The byte ranges of the GetObject requests for keys ending in `suffix`
    /// (the whole `size` for a GET without a Range header).
    pub fn get_ranges(&self, suffix: &str, size: u64) -> Vec<std::ops::Range<u64>> {
        let key = format!("{suffix}?");
        self.heads()
            .iter()
            .filter(|h| {
                let line = h.lines().next().unwrap_or_default();
                line.starts_with("GET ") && line.contains(&key) && line.contains("x-id=GetObject")
            })
            .map(|h| {
                let range = h.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.trim()
                        .eq_ignore_ascii_case("range")
                        .then(|| value.trim().to_string())
                });
                match range {
                    None => 0..size,
                    Some(r) => {
                        let (a, b) = r
                            .strip_prefix("bytes=")
                            .and_then(|r| r.split_once('-'))
                            .unwrap_or_else(|| panic!("a range not in bytes=A-B form: {r}"));
                        let a: u64 = a.parse().expect("range start");
                        let b: u64 = b.parse().expect("range end");
                        a..b + 1
                    }
                }
            })
            .collect()
    }

    /// Every request seen, as `METHOD TARGET -> outcome`.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Requests seen with `method` whose target contains every one of `parts`.
    pub fn count(&self, method: &str, parts: &[&str]) -> usize {
        let head = format!("{method} ");
        self.log()
            .iter()
            .filter(|l| l.starts_with(&head) && parts.iter().all(|p| l.contains(p)))
            .count()
    }

    fn note(&self, line: String) {
        if let Ok(mut l) = self.log.lock() {
            l.push(line);
        }
    }
}

/// A running proxy; dropping it stops it.
pub struct FaultProxy {
    /// `http://127.0.0.1:PORT`, to pass as `--endpoint-url`.
    pub endpoint: String,
    pub counters: Arc<ProxyCounters>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy in front of `upstream` (`http://host:port` or
    /// `host:port`) on a fresh loopback port.
    pub fn start(upstream: &str, plan: FaultPlan) -> FaultProxy {
        let upstream = upstream_addr(upstream);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("make the proxy listener non-blocking");
        let port = listener.local_addr().expect("proxy address").port();
        let counters = Arc::new(ProxyCounters::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("fault proxy runtime");
                runtime.block_on(async move {
                    let listener =
                        TcpListener::from_std(listener).expect("register the proxy listener");
                    let plan = Arc::new(plan);
                    tokio::select! {
                        _ = accept_loop(listener, upstream, plan, c) => {}
                        _ = rx => {}
                    }
                });
                // Connections still open are abandoned (and closed) here.
                runtime.shutdown_background();
            })
            .expect("start the fault proxy thread");
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            counters,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn upstream_addr(upstream: &str) -> String {
    let rest = upstream
        .strip_prefix("http://")
        .unwrap_or(upstream)
        .trim_end_matches('/');
    assert!(
        !rest.contains('/') && rest.contains(':'),
        "fault proxy upstream must be http://host:port, got {upstream:?}"
    );
    rest.to_string()
}

async fn accept_loop(
    listener: TcpListener,
    upstream: String,
    plan: Arc<FaultPlan>,
    counters: Arc<ProxyCounters>,
) {
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if !is_loopback(&peer) {
            continue;
        }
        let (upstream, plan, counters) = (upstream.clone(), plan.clone(), counters.clone());
        tokio::spawn(async move {
            let _ = serve(conn, &upstream, &plan, &counters).await;
        });
    }
}

fn is_loopback(peer: &SocketAddr) -> bool {
    peer.ip().is_loopback()
}

/// Reads until the end of the request head; returns the bytes read (the head
/// and whatever of the body came with it) and the head's length. `None` when
/// the client closed (or sent garbage) first.
async fn read_head(conn: &mut TcpStream) -> std::io::Result<Option<(Vec<u8>, usize)>> {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(pos) = find(&buf, b"\r\n\r\n") {
            return Ok(Some((buf, pos + 4)));
        }
        if buf.len() > MAX_HEAD {
            return Ok(None);
        }
        let n = conn.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn serve(
    mut conn: TcpStream,
    upstream: &str,
    plan: &FaultPlan,
    counters: &ProxyCounters,
) -> std::io::Result<()> {
    let Some((buf, head_len)) = read_head(&mut conn).await? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let request_line = head.lines().next().unwrap_or_default().to_string();
    let mut parts = request_line.split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();

    if let Ok(mut h) = counters.heads.lock() {
        h.push(head.clone());
    }
    let n = counters.requests.fetch_add(1, Ordering::SeqCst);
    if let Some(watched) = plan.watched() {
        if target.contains(watched) {
            counters.matching.fetch_add(1, Ordering::SeqCst);
        }
    }
    match plan.decide(n, &target) {
        Some(fault) => {
            counters.faults.fetch_add(1, Ordering::SeqCst);
            counters.note(format!("{method} {target} -> {fault:?}"));
            inject(conn, fault, &method, counters).await
        }
        None => {
            counters.passed.fetch_add(1, Ordering::SeqCst);
            counters.note(format!("{method} {target} -> passed"));
            pass(conn, upstream, &buf, head_len).await
        }
    }
}

fn error_response(status: &str, code: &str, message: &str, method: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
    );
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nx-amz-request-id: fault-proxy\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    // A HEAD response has headers only.
    if !method.eq_ignore_ascii_case("HEAD") {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

async fn inject(
    mut conn: TcpStream,
    fault: Fault,
    method: &str,
    counters: &ProxyCounters,
) -> std::io::Result<()> {
    let response = match fault {
        Fault::Drop => {
            counters.drops.fetch_add(1, Ordering::SeqCst);
            // Closed with no answer at all.
            drop(conn);
            return Ok(());
        }
        Fault::SlowDown => {
            counters.slow_downs.fetch_add(1, Ordering::SeqCst);
            error_response(
                "503 Slow Down",
                "SlowDown",
                "Please reduce your request rate.",
                method,
            )
        }
        Fault::InternalError => {
            counters.internal_errors.fetch_add(1, Ordering::SeqCst);
            error_response(
                "500 Internal Server Error",
                "InternalError",
                "We encountered an internal error. Please try again.",
                method,
            )
        }
    };
    conn.write_all(&response).await?;
    conn.flush().await?;
    let _ = conn.shutdown().await;
    // Read (and discard) whatever body the client still sends, so that
    // closing does not reset the connection before it read the answer.
    let mut sink = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(DRAIN_FOR, async {
        loop {
            match conn.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    Ok(())
}

/// The head with `Connection: close` (replacing any Connection header), so
/// the upstream answers one request and closes.
fn close_after_one(head: &str) -> String {
    let mut out = String::with_capacity(head.len() + 20);
    let mut lines = head.split("\r\n");
    if let Some(first) = lines.next() {
        out.push_str(first);
        out.push_str("\r\n");
    }
    for line in lines {
        if line.is_empty() {
            continue;
        }
        let is_connection = line
            .split_once(':')
            .is_some_and(|(name, _)| name.trim().eq_ignore_ascii_case("connection"));
        if !is_connection {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    out
}

async fn pass(
    mut conn: TcpStream,
    upstream: &str,
    buf: &[u8],
    head_len: usize,
) -> std::io::Result<()> {
    let mut up = TcpStream::connect(upstream).await?;
    let head = close_after_one(&String::from_utf8_lossy(&buf[..head_len]));
    up.write_all(head.as_bytes()).await?;
    up.write_all(&buf[head_len..]).await?;
    let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
    Ok(())
}

impl FaultPlan {
    /// Random faults for the first `requests` requests (the rest pass):
    /// each fails independently, with probability `p_5xx` as a 503
    /// SlowDown or a 500 InternalError (one or the other at even odds) and
    /// with probability `p_drop` as a dropped connection. Seeded, so a
    /// failing run can be replayed.
    pub fn random(requests: usize, p_5xx: f64, p_drop: f64, seed: u64) -> FaultPlan {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let script = (0..requests)
            .map(|_| {
                let x: f64 = rng.random();
                if x < p_drop {
                    Some(Fault::Drop)
                } else if x < p_drop + p_5xx / 2.0 {
                    Some(Fault::SlowDown)
                } else if x < p_drop + p_5xx {
                    Some(Fault::InternalError)
                } else {
                    None
                }
            })
            .collect();
        FaultPlan::Script(script)
    }
}

impl FaultProxy {
    /// A proxy that passes every request to `upstream`, except that for the
    /// first `n` requests with `method` whose target contains `substring`
    /// the answer is lost: the server gets the request and answers it, then
    /// the client's connection is closed without that answer (what a reset
    /// on the way back does). Logged as `METHOD TARGET -> answer lost`.
    pub fn losing_answers(upstream: &str, method: &str, substring: &str, n: u64) -> FaultProxy {
        let upstream = upstream_addr(upstream);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        listener
            .set_nonblocking(true)
            .expect("make the proxy listener non-blocking");
        let port = listener.local_addr().expect("proxy address").port();
        let counters = Arc::new(ProxyCounters::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let c = counters.clone();
        let lose = Arc::new((method.to_string(), substring.to_string(), n));
        let thread = std::thread::Builder::new()
            .name(format!("lossy-proxy-{port}"))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("lossy proxy runtime");
                runtime.block_on(async move {
                    let listener =
                        TcpListener::from_std(listener).expect("register the proxy listener");
                    tokio::select! {
                        _ = lossy_accept_loop(listener, upstream, lose, c) => {}
                        _ = rx => {}
                    }
                });
                runtime.shutdown_background();
            })
            .expect("start the lossy proxy thread");
        FaultProxy {
            endpoint: format!("http://127.0.0.1:{port}"),
            counters,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }
}

async fn lossy_accept_loop(
    listener: TcpListener,
    upstream: String,
    lose: Arc<(String, String, u64)>,
    counters: Arc<ProxyCounters>,
) {
    loop {
        let Ok((conn, peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if !is_loopback(&peer) {
            continue;
        }
        let (upstream, lose, counters) = (upstream.clone(), lose.clone(), counters.clone());
        tokio::spawn(async move {
            let _ = serve_lossy(conn, &upstream, &lose, &counters).await;
        });
    }
}

async fn serve_lossy(
    mut conn: TcpStream,
    upstream: &str,
    lose: &(String, String, u64),
    counters: &ProxyCounters,
) -> std::io::Result<()> {
    let Some((buf, head_len)) = read_head(&mut conn).await? else {
        return Ok(());
    };
    let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
    let mut parts = head.lines().next().unwrap_or_default().split(' ');
    let method = parts.next().unwrap_or_default().to_string();
    let target = parts.next().unwrap_or_default().to_string();
    counters.requests.fetch_add(1, Ordering::SeqCst);
    let (lost_method, substring, n) = lose;
    let chosen = method == *lost_method
        && target.contains(substring.as_str())
        && counters.matching.fetch_add(1, Ordering::SeqCst) < *n;
    if !chosen {
        counters.passed.fetch_add(1, Ordering::SeqCst);
        counters.note(format!("{method} {target} -> passed"));
        return pass(conn, upstream, &buf, head_len).await;
    }
    counters.faults.fetch_add(1, Ordering::SeqCst);
    counters.drops.fetch_add(1, Ordering::SeqCst);
    counters.note(format!("{method} {target} -> answer lost"));
    let mut up = TcpStream::connect(upstream).await?;
    up.write_all(close_after_one(&head).as_bytes()).await?;
    up.write_all(&buf[head_len..]).await?;
    let (mut from_client, _to_client) = conn.split();
    let (mut from_up, mut to_up) = up.split();
    // The rest of the body goes up while the whole answer is read, then
    // dropped with the client's connection (unless the client left first).
    let mut answer = Vec::new();
    tokio::select! {
        _ = tokio::io::copy(&mut from_client, &mut to_up) => {}
        _ = from_up.read_to_end(&mut answer) => {}
    }
    Ok(())
}
