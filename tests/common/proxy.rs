//! A fault-injecting HTTP/1.1 proxy for registry tests: it listens on a
//! loopback port and forwards every request to the registry, byte for byte
//! (the `Host` header too, so the registry's `Location`s name the proxy),
//! except where a rule set at run time says otherwise:
//!
//! - answer the next N matching requests with a status (503, or 429 with
//!   `Retry-After`, or any status and registry error code such as 400
//!   `DIGEST_INVALID`), with a registry-style JSON error body, without
//!   forwarding them;
//! - forward the head and the first K bytes of a request's body (as on the
//!   wire), then close both connections: a connection lost mid-upload (a
//!   rule's use is taken only by a body longer than K);
//! - hold a response back D before passing it on;
//! - hold a request at a [`Gate`] before forwarding it, or its answer
//!   after, until the test opens the gate: an order of events between
//!   clients made certain, not likely; or forward it untouched (a rule
//!   that keeps a later one from taking it);
//! - cut a connection: before the request is read, mid-body (the
//!   request's, or the answer's when the request has none), or after the
//!   request went through but before its answer;
//! - answer itself, with given bytes or an endless body (counting what it
//!   sent), or pass the answer on with a header replaced.
//!
//! With [`Proxy::chaos`], every request that no rule matches meets a fault
//! drawn from a seed: 503, 429 with `Retry-After: 1`, or one of the three
//! cuts, at the rates given. With [`Proxy::start_with_token`] the proxy
//! fronts a token server too (`/token`), and rewrites the registry's
//! `WWW-Authenticate` realm to itself, so token requests meet faults too.
//!
//! A rule matches a method (`*` for any) and a part of the request target
//! (path and query). The first matching rule with uses left applies. Every
//! request is recorded.
//!
//! Threads and `TcpStream`s, one upstream connection per client
//! connection; the message parsing is `registry.rs`'.
#![allow(dead_code)]

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use super::registry::{Framing, Head, read_head, request_framing, response_framing, transfer_body};

/// What a rule does to a request it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status (with `Retry-After: N` when given) and a JSON
    /// error body (with this registry error code, else one that fits the
    /// status); the request goes no further.
    Status {
        status: u16,
        retry_after: Option<u32>,
        code: Option<&'static str>,
    },
    /// Forward the head and this many bytes of the body, then close both
    /// connections. A body no longer than that passes, and the rule keeps
    /// its use.
    DropAfter(u64),
    /// Forward, and hold the response back this long.
    Delay(Duration),
    /// Close the connection at this point.
    Cut(Cut),
    /// Answer this, without forwarding (`Content-Length` is added).
    Answer {
        status: u16,
        headers: Vec<(String, String)>,
        body: Vec<u8>,
    },
    /// Answer 200 with these headers and a chunked body of `limit` bytes
    /// (endless, to the client), or until the client stops reading.
    Endless {
        headers: Vec<(String, String)>,
        limit: u64,
    },
    /// Forward, and set this header of the answer.
    SetHeader(String, String),
    /// Wait at the gate until it opens, then forward.
    HoldRequest(Gate),
    /// Forward, and wait at the gate until it opens before passing the
    /// answer on (the registry has done the work).
    HoldAnswer(Gate),
    /// Forward untouched.
    Pass,
}

/// Where requests wait until the test opens it (at most [`Gate::MOST`]:
/// a test that fails before opening it leaves no client hanging).
#[derive(Clone, Default)]
pub struct Gate(Arc<(Mutex<GateState>, Condvar)>);

#[derive(Default)]
struct GateState {
    open: bool,
    arrived: usize,
}

impl Gate {
    pub const MOST: Duration = Duration::from_secs(120);

    pub fn new() -> Gate {
        Gate::default()
    }

    /// Lets every request waiting here, and every later one, through.
    pub fn open(&self) {
        let (state, cv) = &*self.0;
        state.lock().unwrap().open = true;
        cv.notify_all();
    }

    /// Waits until `n` requests have come to the gate (at most
    /// [`Gate::MOST`]); whether they did.
    pub fn arrived(&self, n: usize) -> bool {
        let (state, cv) = &*self.0;
        let guard = state.lock().unwrap();
        let (guard, _) = cv
            .wait_timeout_while(guard, Gate::MOST, |s| s.arrived < n)
            .unwrap();
        guard.arrived >= n
    }

    /// A request waits here until the gate opens.
    fn pass(&self) {
        let (state, cv) = &*self.0;
        let mut guard = state.lock().unwrap();
        guard.arrived += 1;
        cv.notify_all();
        let _ = cv
            .wait_timeout_while(guard, Gate::MOST, |s| !s.open)
            .unwrap();
    }
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.0.0.lock().unwrap();
        write!(f, "Gate(open: {}, arrived: {})", s.open, s.arrived)
    }
}

impl PartialEq for Gate {
    fn eq(&self, other: &Gate) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Gate {}

/// Where a `Fault::Cut` closes the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Right after the request's head, nothing forwarded.
    BeforeRequest,
    /// Half-way through the request's body; for a request without one,
    /// half-way through the answer's (before its head if it has none).
    MidBody,
    /// The request went through whole; its answer is dropped.
    BeforeAnswer,
}

/// Fault rates for [`Proxy::chaos`], each a fraction of all requests.
#[derive(Debug, Clone, Copy)]
pub struct Chaos {
    pub seed: u64,
    /// 503 Service Unavailable.
    pub unavailable: f64,
    /// A cut, its kind drawn among the three.
    pub dropped: f64,
    /// 429 Too Many Requests with `Retry-After: 1`.
    pub throttled: f64,
}

#[derive(Debug, Clone)]
struct Rule {
    method: String,
    part: String,
    left: usize,
    fault: Fault,
}

/// A request the proxy saw, and the fault it met if any.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub fault: Option<Fault>,
    /// Body bytes the proxy itself sent in answer (`Answer`, `Endless`).
    pub answered: u64,
}

#[derive(Default)]
struct State {
    rules: Mutex<Vec<Rule>>,
    seen: Mutex<Vec<Seen>>,
    /// The chaos rates and the state of their random numbers.
    chaos: Mutex<Option<(Chaos, u64)>>,
}

impl State {
    /// The fault for this request, taking one use of its rule (a drop
    /// rule's use is taken only when the body reaches its limit).
    fn take(&self, method: &str, target: &str) -> Option<(usize, Fault)> {
        let mut rules = self.rules.lock().unwrap();
        let (i, rule) = rules.iter_mut().enumerate().find(|(_, r)| {
            r.left > 0
                && (r.method == "*" || r.method.eq_ignore_ascii_case(method))
                && target.contains(&r.part)
        })?;
        if !matches!(rule.fault, Fault::DropAfter(_)) {
            rule.left -= 1;
        }
        Some((i, rule.fault.clone()))
    }

    /// A fault drawn by chaos, if it is on.
    fn roll(&self) -> Option<Fault> {
        let mut chaos = self.chaos.lock().unwrap();
        let (c, x) = chaos.as_mut()?;
        let mut next = || {
            // xorshift64*
            *x ^= *x >> 12;
            *x ^= *x << 25;
            *x ^= *x >> 27;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let u = (next() >> 11) as f64 / (1u64 << 53) as f64;
        if u < c.unavailable {
            Some(Fault::Status {
                status: 503,
                retry_after: None,
                code: None,
            })
        } else if u < c.unavailable + c.throttled {
            Some(Fault::Status {
                status: 429,
                retry_after: Some(1),
                code: None,
            })
        } else if u < c.unavailable + c.throttled + c.dropped {
            let cut = [Cut::BeforeRequest, Cut::MidBody, Cut::BeforeAnswer][(next() % 3) as usize];
            Some(Fault::Cut(cut))
        } else {
            None
        }
    }

    fn answered(&self, index: usize, bytes: u64) {
        if let Some(s) = self.seen.lock().unwrap().get_mut(index) {
            s.answered += bytes;
        }
    }

    /// Takes a use of a rule if it has one left.
    fn consume(&self, rule: usize) -> bool {
        match self.rules.lock().unwrap().get_mut(rule) {
            Some(r) if r.left > 0 => {
                r.left -= 1;
                true
            }
            _ => false,
        }
    }

    fn record(&self, method: &str, target: &str, fault: Option<Fault>) -> usize {
        let mut seen = self.seen.lock().unwrap();
        seen.push(Seen {
            method: method.to_string(),
            target: target.to_string(),
            fault,
            answered: 0,
        });
        seen.len() - 1
    }

    fn mark_fault(&self, index: usize, fault: Fault) {
        if let Some(s) = self.seen.lock().unwrap().get_mut(index) {
            s.fault = Some(fault);
        }
    }
}

/// The proxy, served by threads until dropped.
pub struct Proxy {
    /// The address it listens on.
    ip: std::net::IpAddr,
    port: u16,
    upstream: String,
    token: Option<String>,
    state: Arc<State>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    /// A proxy to `upstream` ("127.0.0.1:PORT").
    pub fn start(upstream: &str) -> Proxy {
        Proxy::launch(upstream, None, "127.0.0.1".parse().unwrap())
    }

    /// A proxy to `upstream` listening on `ip` (one of this machine's
    /// addresses): a registry that is not on loopback, for clients that
    /// treat loopback specially.
    pub fn start_at(ip: std::net::IpAddr, upstream: &str) -> Proxy {
        Proxy::launch(upstream, None, ip)
    }

    /// A proxy to the registry `upstream` and its token server `token`
    /// ("127.0.0.1:PORT" each): requests for `/token…` go to the token
    /// server, and the registry's challenges name the proxy as the realm.
    pub fn start_with_token(upstream: &str, token: &str) -> Proxy {
        Proxy::launch(upstream, Some(token), "127.0.0.1".parse().unwrap())
    }

    fn launch(upstream: &str, token: Option<&str>, ip: std::net::IpAddr) -> Proxy {
        let listener = TcpListener::bind((ip, 0)).expect("bind the proxy");
        let port = listener.local_addr().expect("its address").port();
        let state = Arc::new(State::default());
        let stop = Arc::new(AtomicBool::new(false));
        let route = Arc::new(Route {
            upstream: upstream.to_string(),
            token: token.map(str::to_string),
            me: std::net::SocketAddr::new(ip, port).to_string(),
        });
        let thread = {
            let (state, stop, route) = (state.clone(), stop.clone(), route.clone());
            thread::spawn(move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let (state, route) = (state.clone(), route.clone());
                    thread::spawn(move || {
                        let _ = serve(conn, &route, &state);
                    });
                }
            })
        };
        Proxy {
            ip,
            port,
            upstream: upstream.to_string(),
            token: token.map(str::to_string),
            state,
            stop,
            thread: Some(thread),
        }
    }

    /// "127.0.0.1:PORT" (or its `start_at` address): use it in place of the
    /// registry's host.
    pub fn host(&self) -> String {
        std::net::SocketAddr::new(self.ip, self.port).to_string()
    }

    pub fn upstream(&self) -> &str {
        &self.upstream
    }

    /// Adds a rule for the next `times` requests of `method` ("*": any)
    /// whose target contains `part`.
    pub fn rule(&self, method: &str, part: &str, times: usize, fault: Fault) {
        self.state.rules.lock().unwrap().push(Rule {
            method: method.to_string(),
            part: part.to_string(),
            left: times,
            fault,
        });
    }

    /// 503 Service Unavailable, `times` times.
    pub fn fail(&self, method: &str, part: &str, times: usize) {
        self.reject(method, part, times, 503, "UNAVAILABLE");
    }

    /// A registry error: `status` with error `code` (`DIGEST_INVALID`,
    /// `BLOB_UPLOAD_UNKNOWN`…) in its body, `times` times.
    pub fn reject(&self, method: &str, part: &str, times: usize, status: u16, code: &'static str) {
        self.rule(
            method,
            part,
            times,
            Fault::Status {
                status,
                retry_after: None,
                code: Some(code),
            },
        );
    }

    /// 429 Too Many Requests with `Retry-After: SECS`, `times` times.
    pub fn throttle(&self, method: &str, part: &str, times: usize, retry_after_secs: u32) {
        self.rule(
            method,
            part,
            times,
            Fault::Status {
                status: 429,
                retry_after: Some(retry_after_secs),
                code: None,
            },
        );
    }

    /// Closes the connection after `bytes` of a request body, `times` times.
    pub fn drop_after(&self, method: &str, part: &str, bytes: u64, times: usize) {
        self.rule(method, part, times, Fault::DropAfter(bytes));
    }

    /// Holds responses back `delay`, `times` times.
    pub fn delay(&self, method: &str, part: &str, delay: Duration, times: usize) {
        self.rule(method, part, times, Fault::Delay(delay));
    }

    /// Holds the next `times` requests at `gate` until it opens, before
    /// they go on to the registry.
    pub fn hold(&self, method: &str, part: &str, gate: &Gate, times: usize) {
        self.rule(method, part, times, Fault::HoldRequest(gate.clone()));
    }

    /// Forwards the next `times` requests, and holds their answers at
    /// `gate` until it opens.
    pub fn hold_answer(&self, method: &str, part: &str, gate: &Gate, times: usize) {
        self.rule(method, part, times, Fault::HoldAnswer(gate.clone()));
    }

    /// Forwards the next `times` requests untouched: rules added after
    /// this one do not take them.
    pub fn pass(&self, method: &str, part: &str, times: usize) {
        self.rule(method, part, times, Fault::Pass);
    }

    /// Each fault chaos draws from, once, on the next requests of
    /// `method` ("*": any) whose target contains `part`: 503, 429 with
    /// `Retry-After: 1`, and the three cuts. With chaos on, each kind of
    /// request then surely meets each fault, whatever the draws.
    pub fn every_fault(&self, method: &str, part: &str) {
        for status in [503, 429] {
            self.rule(
                method,
                part,
                1,
                Fault::Status {
                    status,
                    retry_after: (status == 429).then_some(1),
                    code: None,
                },
            );
        }
        for cut in [Cut::BeforeRequest, Cut::MidBody, Cut::BeforeAnswer] {
            self.rule(method, part, 1, Fault::Cut(cut));
        }
    }

    /// Removes every rule, and stops chaos.
    pub fn clear(&self) {
        self.state.rules.lock().unwrap().clear();
        *self.state.chaos.lock().unwrap() = None;
    }

    /// From now on, every request no rule matches meets a fault at the
    /// rates of `c`, drawn from its seed.
    pub fn chaos(&self, c: Chaos) {
        *self.state.chaos.lock().unwrap() = Some((c, c.seed | 1));
    }

    /// Uses left, over all rules: 0 once every fault has been injected.
    pub fn pending(&self) -> usize {
        self.state
            .rules
            .lock()
            .unwrap()
            .iter()
            .map(|r| r.left)
            .sum()
    }

    /// Requests that met a fault.
    pub fn injected(&self) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|s| s.fault.is_some())
            .collect()
    }

    /// Every request seen, in order.
    pub fn requests(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Requests of `method` ("*": any) whose target contains `part`.
    pub fn count(&self, method: &str, part: &str) -> usize {
        self.requests()
            .iter()
            .filter(|s| method == "*" || s.method.eq_ignore_ascii_case(method))
            .filter(|s| s.target.contains(part))
            .count()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect((self.ip, self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A writer that passes at most `left` bytes (when set) if the drop rule
/// `gate` still has a use then, and remembers whether it stopped there or
/// its writer failed.
struct Valve<'a, W> {
    inner: W,
    left: Option<u64>,
    gate: Option<(&'a State, usize)>,
    /// Trip at the limit whatever the rules say (a chaos cut).
    force: bool,
    tripped: bool,
    failed: bool,
}

impl<W: Write> Write for Valve<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.left == Some(0) && !buf.is_empty() {
            if self.force {
                self.tripped = true;
                return Err(io::Error::other("the proxy cuts this connection"));
            }
            match self.gate {
                Some((state, rule)) if state.consume(rule) => {
                    self.tripped = true;
                    return Err(io::Error::other("the proxy drops this connection"));
                }
                // Another request used the rule up meanwhile.
                _ => self.left = None,
            }
        }
        let n = match self.left {
            Some(left) => buf.len().min(usize::try_from(left).unwrap_or(usize::MAX)),
            None => buf.len(),
        };
        let written = self
            .inner
            .write(&buf[..n])
            .inspect_err(|_| self.failed = true)?;
        if let Some(left) = &mut self.left {
            *left -= written as u64;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush().inspect_err(|_| self.failed = true)
    }
}

/// The answer of a `Status` fault.
fn fault_response(
    status: u16,
    retry_after: Option<u32>,
    code: Option<&str>,
    close: bool,
) -> Vec<u8> {
    let (reason, fitting) = match status {
        400 => ("Bad Request", "UNKNOWN"),
        429 => ("Too Many Requests", "TOOMANYREQUESTS"),
        500 => ("Internal Server Error", "UNKNOWN"),
        502 => ("Bad Gateway", "UNAVAILABLE"),
        503 => ("Service Unavailable", "UNAVAILABLE"),
        504 => ("Gateway Timeout", "UNAVAILABLE"),
        _ => ("Injected Fault", "UNKNOWN"),
    };
    let code = code.unwrap_or(fitting);
    let body = format!(
        r#"{{"errors":[{{"code":"{code}","message":"{reason} (injected by the test proxy)","detail":null}}]}}"#
    );
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json; charset=utf-8\r\n\
         Docker-Distribution-Api-Version: registry/2.0\r\nContent-Length: {}\r\n",
        body.len()
    );
    if let Some(secs) = retry_after {
        head.push_str(&format!("Retry-After: {secs}\r\n"));
    }
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    out
}

struct Upstream {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// Connected to the token server, not the registry.
    token: bool,
}

/// Where requests go.
struct Route {
    upstream: String,
    token: Option<String>,
    /// The proxy's own "127.0.0.1:PORT".
    me: String,
}

/// Changes to an answer's head before it is passed on.
struct Edits<'a> {
    route: &'a Route,
    set: Option<(&'a str, &'a str)>,
}

impl Edits<'_> {
    /// The head with its realm pointing at the proxy and the header set.
    fn apply(&self, mut head: Head) -> Head {
        let mut changed = false;
        if let Some(token) = &self.route.token {
            let (from, to) = (
                format!("http://{token}"),
                format!("http://{}", self.route.me),
            );
            for (k, v) in &mut head.headers {
                if k.eq_ignore_ascii_case("www-authenticate") && v.contains(&from) {
                    *v = v.replace(&from, &to);
                    changed = true;
                }
            }
        }
        if let Some((name, value)) = self.set {
            head.headers.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
            head.headers.push((name.to_string(), value.to_string()));
            changed = true;
        }
        if changed {
            let mut raw = format!("{}\r\n", head.start);
            for (k, v) in &head.headers {
                raw.push_str(&format!("{k}: {v}\r\n"));
            }
            raw.push_str("\r\n");
            head.raw = raw.into_bytes();
        }
        head
    }
}

/// Reads the final head of an answer, passing interim ones on.
fn final_head(up: &mut Upstream, client: &mut dyn Write, first: Option<Head>) -> io::Result<Head> {
    let mut next = first;
    loop {
        let h = match next.take() {
            Some(h) => h,
            None => read_head(&mut up.reader)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed"))?,
        };
        if (100..200).contains(&h.status()) && h.status() != 101 {
            client.write_all(&h.raw)?;
            continue;
        }
        return Ok(h);
    }
}

/// Passes one response (and any interim ones before it) from upstream to
/// the client, after `delay`; with `cut`, only half its body, then fails.
/// Returns whether the connection must close.
#[allow(clippy::too_many_arguments)]
fn pass_response(
    up: &mut Upstream,
    client: &mut TcpStream,
    method: &str,
    first: Option<Head>,
    delay: Option<Duration>,
    edits: &Edits,
    cut: bool,
) -> io::Result<bool> {
    let head = edits.apply(final_head(up, client, first)?);
    if let Some(d) = delay {
        thread::sleep(d);
    }
    let framing = response_framing(method, &head);
    if cut && framing == Framing::Empty {
        return Err(io::Error::other("the proxy cuts this answer"));
    }
    client.write_all(&head.raw)?;
    if cut {
        let mut valve = Valve {
            inner: &mut *client,
            left: Some(match framing {
                Framing::Length(n) => n / 2,
                _ => 64,
            }),
            gate: None,
            force: true,
            tripped: false,
            failed: false,
        };
        let _ = transfer_body(&mut up.reader, &mut valve, framing, true);
        let _ = valve.flush();
        return Err(io::Error::other("the proxy cut this answer"));
    }
    transfer_body(&mut up.reader, client, framing, true)?;
    client.flush()?;
    Ok(framing == Framing::UntilClose || head.has_token("connection", "close"))
}

/// Writes `headers` and `body` as an answer of `status`.
fn answer(
    client: &mut TcpStream,
    status: u16,
    headers: &[(String, String)],
    body: &[u8],
    close: bool,
) -> io::Result<()> {
    let mut head = format!("HTTP/1.1 {status} Answered By The Proxy\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    if close {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    client.write_all(head.as_bytes())?;
    client.write_all(body)?;
    client.flush()
}

/// Writes an endless chunked answer, up to `limit` body bytes or until the
/// client stops reading; the body bytes written.
fn endless(client: &mut TcpStream, headers: &[(String, String)], limit: u64) -> u64 {
    let mut head = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n".to_string();
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    if client.write_all(head.as_bytes()).is_err() {
        return 0;
    }
    let chunk = vec![b' '; 64 * 1024];
    let mut sent = 0u64;
    while sent < limit {
        let n = chunk.len().min((limit - sent) as usize);
        let framed = [
            format!("{n:x}\r\n").as_bytes(),
            &chunk[..n],
            b"\r\n".as_slice(),
        ]
        .concat();
        if client.write_all(&framed).is_err() {
            break;
        }
        sent += n as u64;
    }
    let _ = client.write_all(b"0\r\n\r\n");
    sent
}

fn serve(client: TcpStream, route: &Route, state: &State) -> io::Result<()> {
    let mut client_reader = BufReader::new(client.try_clone()?);
    let mut client_writer = client;
    // A TLS handshake (clients that try HTTPS first): answer as Go's HTTP
    // server does, so the client falls back to HTTP at once.
    if client_reader.fill_buf()?.first() == Some(&0x16) {
        client_writer.write_all(
            b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n",
        )?;
        return Ok(());
    }
    let mut up: Option<Upstream> = None;
    let close_all = |c: &TcpStream, up: &Option<Upstream>| {
        let _ = c.shutdown(Shutdown::Both);
        if let Some(u) = up {
            let _ = u.writer.shutdown(Shutdown::Both);
        }
    };
    loop {
        let Some(head) = read_head(&mut client_reader)? else {
            close_all(&client_writer, &up);
            return Ok(());
        };
        let (method, target) = head.request();
        let (method, target) = (method.to_string(), target.to_string());
        let framing = request_framing(&head);
        let expect_continue = head.has_token("expect", "100-continue");
        let client_close = head.has_token("connection", "close");
        let taken = state
            .take(&method, &target)
            .or_else(|| state.roll().map(|f| (usize::MAX, f)));
        let recorded = taken
            .as_ref()
            .map(|(_, f)| f.clone())
            .filter(|f| !matches!(f, Fault::DropAfter(_)));
        let seen = state.record(&method, &target, recorded);

        match &taken {
            Some((
                _,
                Fault::Status {
                    status,
                    retry_after,
                    code,
                },
            )) => {
                if expect_continue && framing != Framing::Empty {
                    // The client waits for 100 Continue: answer and close.
                    client_writer.write_all(&fault_response(*status, *retry_after, *code, true))?;
                    close_all(&client_writer, &up);
                    return Ok(());
                }
                transfer_body(&mut client_reader, &mut io::sink(), framing, true)?;
                client_writer.write_all(&fault_response(
                    *status,
                    *retry_after,
                    *code,
                    client_close,
                ))?;
                client_writer.flush()?;
                if client_close {
                    close_all(&client_writer, &up);
                    return Ok(());
                }
                continue;
            }
            Some((_, Fault::Cut(Cut::BeforeRequest))) => {
                close_all(&client_writer, &up);
                return Ok(());
            }
            Some((
                _,
                Fault::Answer {
                    status,
                    headers,
                    body,
                },
            )) => {
                if !expect_continue {
                    transfer_body(&mut client_reader, &mut io::sink(), framing, true)?;
                }
                let close = client_close || expect_continue;
                let body = if method.eq_ignore_ascii_case("HEAD") {
                    &[][..]
                } else {
                    &body[..]
                };
                answer(&mut client_writer, *status, headers, body, close)?;
                state.answered(seen, body.len() as u64);
                if close {
                    close_all(&client_writer, &up);
                    return Ok(());
                }
                continue;
            }
            Some((_, Fault::Endless { headers, limit })) => {
                let _ = transfer_body(&mut client_reader, &mut io::sink(), framing, true);
                let sent = endless(&mut client_writer, headers, *limit);
                state.answered(seen, sent);
                close_all(&client_writer, &up);
                return Ok(());
            }
            _ => {}
        }
        let delay = match &taken {
            Some((_, Fault::Delay(d))) => Some(*d),
            _ => None,
        };
        let drop_after = match &taken {
            Some((i, Fault::DropAfter(k))) => Some((*i, *k)),
            _ => None,
        };
        let cut = match &taken {
            Some((_, Fault::Cut(c))) => Some(*c),
            _ => None,
        };
        let edits = Edits {
            route,
            set: match &taken {
                Some((_, Fault::SetHeader(k, v))) => Some((k.as_str(), v.as_str())),
                _ => None,
            },
        };

        if let Some((_, Fault::HoldRequest(gate))) = &taken {
            gate.pass();
        }
        let hold_answer = match &taken {
            Some((_, Fault::HoldAnswer(gate))) => Some(gate.clone()),
            _ => None,
        };

        // Token requests go to the token server, on a connection of their own.
        let to_token = route.token.is_some() && target.starts_with("/token");
        if up.as_ref().is_some_and(|u| u.token != to_token)
            && let Some(u) = up.take()
        {
            let _ = u.writer.shutdown(Shutdown::Both);
        }
        if up.is_none() {
            let addr = match (&route.token, to_token) {
                (Some(t), true) => t.as_str(),
                _ => route.upstream.as_str(),
            };
            let s = TcpStream::connect(addr)?;
            up = Some(Upstream {
                reader: BufReader::new(s.try_clone()?),
                writer: s,
                token: to_token,
            });
        }
        let u = up.as_mut().expect("connected");
        u.writer.write_all(&head.raw)?;

        if expect_continue && framing != Framing::Empty {
            let interim = read_head(&mut u.reader)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "upstream closed"))?;
            if interim.status() == 100 {
                client_writer.write_all(&interim.raw)?;
            } else {
                // A final answer before the body: pass it on and close.
                let _ = pass_response(
                    u,
                    &mut client_writer,
                    &method,
                    Some(interim),
                    delay,
                    &edits,
                    false,
                );
                close_all(&client_writer, &up);
                return Ok(());
            }
        }

        let cut_request = cut == Some(Cut::MidBody) && framing != Framing::Empty;
        let mut valve = Valve {
            inner: &mut u.writer,
            left: if cut_request {
                Some(match framing {
                    Framing::Length(n) => n / 2,
                    _ => 1,
                })
            } else {
                drop_after.map(|(_, k)| k)
            },
            gate: drop_after.map(|(rule, _)| (state, rule)),
            force: cut_request,
            tripped: false,
            failed: false,
        };
        let sent = transfer_body(&mut client_reader, &mut valve, framing, true);
        let (tripped, failed) = (valve.tripped, valve.failed);
        if tripped {
            if let Some((_, k)) = drop_after {
                state.mark_fault(seen, Fault::DropAfter(k));
            }
            // Closed with the client's next bytes unread, the socket sends
            // a reset: the client's next write fails with ECONNRESET, as
            // when a connection is lost (a FIN first would give EPIPE).
            thread::sleep(Duration::from_millis(20));
            if let Some(u) = &up {
                let _ = u.writer.shutdown(Shutdown::Both);
            }
            return Ok(());
        }
        if let Err(e) = sent {
            if failed {
                // The registry answered early and closed (a 401 before the
                // body, say): pass its answer on if there is one.
                let _ = pass_response(u, &mut client_writer, &method, None, delay, &edits, false);
            }
            close_all(&client_writer, &up);
            return Err(e);
        }
        u.writer.flush()?;
        if cut == Some(Cut::BeforeAnswer) {
            // Wait until the upstream has answered (it did the work), then
            // lose the answer.
            let _ = final_head(u, &mut io::sink(), None);
            close_all(&client_writer, &up);
            return Ok(());
        }
        let cut_answer = cut == Some(Cut::MidBody);
        // The answer's head read first: the registry has done the work
        // when the gate counts the request as come.
        let first = match hold_answer {
            Some(gate) => {
                let head = final_head(u, &mut client_writer, None)?;
                gate.pass();
                Some(head)
            }
            None => None,
        };
        let close = match pass_response(
            u,
            &mut client_writer,
            &method,
            first,
            delay,
            &edits,
            cut_answer,
        ) {
            Ok(close) => close,
            Err(e) => {
                close_all(&client_writer, &up);
                return if cut_answer { Ok(()) } else { Err(e) };
            }
        };
        if close || client_close {
            close_all(&client_writer, &up);
            return Ok(());
        }
    }
}
