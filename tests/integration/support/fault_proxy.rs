//! A fault-injecting HTTP/1.1 proxy for S3 tests. It forwards requests from a client to an
//! upstream server and, by a seeded schedule, answers some with 500 or 503 SlowDown,
//! resets the connection, stalls, cuts the response body short, or damages the request
//! body on its way to the server. The schedule is
//! reproducible from its seed, which tests print on failure.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// What the proxy does to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Forward untouched.
    None,
    /// Answer `500 InternalError` without forwarding.
    Error500,
    /// Answer `503 SlowDown` without forwarding.
    SlowDown503,
    /// Close the connection with a TCP reset without answering.
    Reset,
    /// Hold the request without answering for the given time, then close.
    Stall(Duration),
    /// Forward, then send the response head and only half of its body.
    Truncate,
    /// Answer every eligible request with this status line and S3 error code.
    Respond(&'static str, &'static str),
    /// Forward, then send the body twice over, chunked, with no `Content-Length`: a
    /// server sending more than was asked for without declaring a length, which only
    /// counting the body as it arrives can catch.
    Overlong,
    /// Flip one bit in the middle of the request body before forwarding it: damage in
    /// transit, which only a checksum of the body the server checks can catch. Requests
    /// without a body pass untouched.
    CorruptBody,
}

/// Probabilities (per mille) of each fault, drawn per request from a seeded generator.
#[derive(Clone, Debug)]
pub struct Schedule {
    /// Seed of the generator; print it to replay a failure.
    pub seed: u64,
    /// 500 responses.
    pub error500: u32,
    /// 503 SlowDown responses.
    pub slowdown: u32,
    /// Connection resets.
    pub reset: u32,
    /// Stalls.
    pub stall: u32,
    /// How long a stall lasts.
    pub stall_for: Duration,
    /// Truncated response bodies.
    pub truncate: u32,
    /// Bodies sent twice over, chunked and undeclared.
    pub overlong: u32,
    /// Request bodies damaged on the way to the server.
    pub corrupt_body: u32,
    /// Only requests whose method is listed are eligible (empty: all).
    pub methods: Vec<&'static str>,
    /// Only requests whose request line contains this text are eligible.
    pub target_contains: Option<&'static str>,
    /// When set, eligible requests get this answer (status line, S3 error code): every
    /// one, or `respond_rate` per mille of them.
    pub respond: Option<(&'static str, &'static str)>,
    /// Per mille of eligible requests that get `respond`'s answer; 0 means all of them.
    pub respond_rate: u32,
    /// When set, every eligible request waits this long before it is forwarded: latency,
    /// not a fault, so that requests a client makes at once overlap in the proxy.
    pub delay: Option<Duration>,
}

impl Schedule {
    /// No faults.
    pub fn clean() -> Self {
        Schedule {
            seed: 1,
            error500: 0,
            slowdown: 0,
            reset: 0,
            stall: 0,
            stall_for: Duration::from_secs(0),
            truncate: 0,
            overlong: 0,
            corrupt_body: 0,
            methods: Vec::new(),
            target_contains: None,
            respond: None,
            respond_rate: 0,
            delay: None,
        }
    }

    /// Every kind of fault at `per_mille` each.
    pub fn all(seed: u64, per_mille: u32, stall_for: Duration) -> Self {
        Schedule {
            seed,
            error500: per_mille,
            slowdown: per_mille,
            reset: per_mille,
            stall: per_mille,
            stall_for,
            truncate: per_mille,
            overlong: 0,
            corrupt_body: 0,
            methods: Vec::new(),
            target_contains: None,
            respond: None,
            respond_rate: 0,
            delay: None,
        }
    }
}

/// Counters the tests read.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests seen.
    pub requests: AtomicU64,
    /// Faults injected.
    pub faults: AtomicU64,
    /// PUT requests forwarded.
    pub puts: AtomicU64,
    /// Response body bytes sent to clients.
    pub response_bytes: AtomicU64,
    /// Delayed requests (those a schedule's `delay` applies to) in the proxy right now.
    pub in_flight: AtomicU64,
    /// The most delayed requests ever in the proxy at once.
    pub max_in_flight: AtomicU64,
    /// The request line of every request, as it reached the proxy (before any delay):
    /// a test knows a client has asked for something the proxy still holds back.
    pub received: Mutex<Vec<String>>,
}

/// Counts one delayed request as in flight until dropped.
struct InFlight<'a>(&'a Stats);

impl<'a> InFlight<'a> {
    fn start(stats: &'a Stats) -> Self {
        let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        stats.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(stats)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

struct State {
    schedule: Schedule,
    rng: u64,
}

impl State {
    fn eligible(&self, method: &str, request_line: &str) -> bool {
        let s = &self.schedule;
        (s.methods.is_empty() || s.methods.contains(&method))
            && s.target_contains.is_none_or(|t| request_line.contains(t))
    }

    fn draw(&mut self, method: &str, request_line: &str) -> Fault {
        if !self.eligible(method, request_line) {
            return Fault::None;
        }
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let mut roll = (self.rng % 1000) as u32;
        let s = &self.schedule;
        if let Some((status, code)) = s.respond {
            return if s.respond_rate == 0 || roll < s.respond_rate {
                Fault::Respond(status, code)
            } else {
                Fault::None
            };
        }
        for (p, f) in [
            (s.error500, Fault::Error500),
            (s.slowdown, Fault::SlowDown503),
            (s.reset, Fault::Reset),
            (s.stall, Fault::Stall(s.stall_for)),
            (s.truncate, Fault::Truncate),
            (s.overlong, Fault::Overlong),
            (s.corrupt_body, Fault::CorruptBody),
        ] {
            if roll < p {
                return f;
            }
            roll -= p;
        }
        Fault::None
    }
}

/// A running proxy; stopped on drop.
pub struct FaultProxy {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Counters.
    pub stats: Arc<Stats>,
    state: Arc<Mutex<State>>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Start a proxy in front of `127.0.0.1:upstream`.
    pub fn start(upstream: u16, schedule: Schedule) -> Self {
        let state = Arc::new(Mutex::new(State {
            rng: schedule.seed | 1,
            schedule,
        }));
        let stats = Arc::new(Stats::default());
        let (stop_tx, stop_rx) = oneshot::channel();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (st, stt) = (state.clone(), stats.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("proxy runtime");
            rt.block_on(run(upstream, st, stt, port_tx, stop_rx));
            rt.shutdown_timeout(Duration::from_millis(200));
        });
        let port = port_rx.recv().expect("proxy did not start");
        FaultProxy {
            port,
            stats,
            state,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Replace the schedule (e.g. to heal a failing destination).
    pub fn set_schedule(&self, schedule: Schedule) {
        if let Ok(mut s) = self.state.lock() {
            s.rng = schedule.seed | 1;
            s.schedule = schedule;
        }
    }

    /// Faults injected so far.
    pub fn faults(&self) -> u64 {
        self.stats.faults.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn run(
    upstream: u16,
    state: Arc<Mutex<State>>,
    stats: Arc<Stats>,
    port_tx: std::sync::mpsc::Sender<u16>,
    mut stop: oneshot::Receiver<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    port_tx
        .send(listener.local_addr().expect("addr").port())
        .expect("port");
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((client, _)) = accepted else { continue };
                let (state, stats) = (state.clone(), stats.clone());
                tokio::spawn(async move {
                    let _ = handle(client, upstream, state, stats).await;
                });
            }
            _ = &mut stop => break,
        }
    }
}

/// One HTTP message head plus body, as raw bytes.
struct Message {
    head: Vec<u8>,
    body: Vec<u8>,
    /// Lower-cased header names and values.
    headers: Vec<(String, String)>,
    first_line: String,
}

impl Message {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Read a head (up to the blank line) from `r`, with `buf` holding bytes already read.
async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Option<Vec<u8>>> {
    loop {
        if let Some(pos) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = buf.drain(..pos + 4).collect();
            return Ok(Some(head));
        }
        let mut chunk = [0u8; 16 * 1024];
        let n = r.read(&mut chunk).await?;
        if n == 0 {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn parse_head(head: &[u8]) -> (String, Vec<(String, String)>) {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let first = lines.next().unwrap_or("").to_string();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    (first, headers)
}

async fn read_exact_from<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    n: usize,
) -> std::io::Result<Vec<u8>> {
    while buf.len() < n {
        let mut chunk = vec![0u8; (n - buf.len()).min(1 << 20)];
        let got = r.read(&mut chunk).await?;
        if got == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..got]);
    }
    Ok(buf.drain(..n).collect())
}

/// Raw chunked body, including chunk framing and the terminating chunk.
async fn read_chunked<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = loop {
            if let Some(pos) = buf.windows(2).position(|w| w == b"\r\n") {
                break buf.drain(..pos + 2).collect::<Vec<u8>>();
            }
            let mut chunk = [0u8; 8192];
            let n = r.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        };
        out.extend_from_slice(&line);
        let size_text = String::from_utf8_lossy(&line);
        let size = usize::from_str_radix(size_text.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        // Chunk data plus its CRLF; the last chunk is followed by (empty) trailers + CRLF.
        let data = read_exact_from(r, buf, size + 2).await?;
        out.extend_from_slice(&data);
        if size == 0 {
            return Ok(out);
        }
    }
}

async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    is_response: bool,
    method: &str,
) -> std::io::Result<Option<Message>> {
    let Some(head) = read_head(r, buf).await? else {
        return Ok(None);
    };
    let (first_line, headers) = parse_head(&head);
    let mut m = Message {
        head,
        body: Vec::new(),
        headers,
        first_line,
    };
    let status_has_no_body = is_response
        && (method == "HEAD"
            || m.first_line.contains(" 204 ")
            || m.first_line.contains(" 304 ")
            || m.first_line
                .split(' ')
                .nth(1)
                .is_some_and(|c| c.starts_with('1')));
    if status_has_no_body {
        return Ok(Some(m));
    }
    if let Some(len) = m
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        m.body = read_exact_from(r, buf, len).await?;
    } else if m
        .header("transfer-encoding")
        .is_some_and(|v| v.to_lowercase().contains("chunked"))
    {
        m.body = read_chunked(r, buf).await?;
    } else if is_response {
        r.read_to_end(buf).await?;
        m.body = std::mem::take(buf);
    }
    Ok(Some(m))
}

/// A message head without the header `name` (lower case).
fn without_header(head: &[u8], name: &str) -> Vec<u8> {
    let text = String::from_utf8_lossy(head);
    text.split_inclusive("\r\n")
        .filter(|line| {
            !line
                .split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case(name))
        })
        .collect::<String>()
        .into_bytes()
}

fn canned(status: &str, code: &str) -> Vec<u8> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>injected by the test proxy</Message></Error>"
    );
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

async fn handle(
    mut client: TcpStream,
    upstream: u16,
    state: Arc<Mutex<State>>,
    stats: Arc<Stats>,
) -> std::io::Result<()> {
    let mut cbuf = Vec::new();
    loop {
        // Answer "Expect: 100-continue" before reading the body.
        let Some(head) = read_head(&mut client, &mut cbuf).await? else {
            return Ok(());
        };
        let (first_line, headers) = parse_head(&head);
        let method = first_line.split(' ').next().unwrap_or("").to_string();
        let expects = headers
            .iter()
            .any(|(k, v)| k == "expect" && v.eq_ignore_ascii_case("100-continue"));
        if expects {
            client.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await?;
        }
        let mut req = Message {
            head,
            body: Vec::new(),
            headers,
            first_line,
        };
        if let Some(len) = req
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            req.body = read_exact_from(&mut client, &mut cbuf, len).await?;
        } else if req
            .header("transfer-encoding")
            .is_some_and(|v| v.to_lowercase().contains("chunked"))
        {
            req.body = read_chunked(&mut client, &mut cbuf).await?;
        }
        stats.requests.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut r) = stats.received.lock() {
            r.push(req.first_line.clone());
        }
        let (fault, delay) = state
            .lock()
            .map(|mut s| {
                let delay = s
                    .eligible(&method, &req.first_line)
                    .then_some(s.schedule.delay)
                    .flatten();
                (s.draw(&method, &req.first_line), delay)
            })
            .unwrap_or((Fault::None, None));
        let fault = match fault {
            Fault::CorruptBody if req.body.is_empty() => Fault::None,
            f => f,
        };
        if fault != Fault::None {
            stats.faults.fetch_add(1, Ordering::Relaxed);
        }
        match fault {
            Fault::Error500 => {
                client
                    .write_all(&canned("500 Internal Server Error", "InternalError"))
                    .await?;
                return Ok(());
            }
            Fault::SlowDown503 => {
                client
                    .write_all(&canned("503 Slow Down", "SlowDown"))
                    .await?;
                return Ok(());
            }
            Fault::Respond(status, code) => {
                client.write_all(&canned(status, code)).await?;
                return Ok(());
            }
            Fault::Reset => {
                client.set_zero_linger()?;
                return Ok(());
            }
            Fault::Stall(d) => {
                tokio::time::sleep(d).await;
                return Ok(());
            }
            Fault::CorruptBody => {
                let middle = req.body.len() / 2;
                req.body[middle] ^= 0x20;
            }
            Fault::None | Fault::Truncate | Fault::Overlong => {}
        }
        if method == "PUT" {
            stats.puts.fetch_add(1, Ordering::Relaxed);
        }
        let _in_flight = delay.map(|_| InFlight::start(&stats));
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let mut up = TcpStream::connect(("127.0.0.1", upstream)).await?;
        up.write_all(&req.head).await?;
        up.write_all(&req.body).await?;
        let mut ubuf = Vec::new();
        let resp = loop {
            let Some(m) = read_message(&mut up, &mut ubuf, true, &method).await? else {
                return Ok(());
            };
            // Interim 1xx responses were already answered to the client above.
            if m.first_line
                .split(' ')
                .nth(1)
                .is_some_and(|c| c.starts_with('1'))
            {
                continue;
            }
            break m;
        };
        if fault == Fault::Overlong && !resp.body.is_empty() {
            let head = without_header(&resp.head, "content-length");
            let head = String::from_utf8_lossy(&head).replacen(
                "\r\n\r\n",
                "\r\nTransfer-Encoding: chunked\r\n\r\n",
                1,
            );
            client.write_all(head.as_bytes()).await?;
            for _ in 0..2 {
                client
                    .write_all(format!("{:x}\r\n", resp.body.len()).as_bytes())
                    .await?;
                client.write_all(&resp.body).await?;
                client.write_all(b"\r\n").await?;
            }
            client.write_all(b"0\r\n\r\n").await?;
            stats
                .response_bytes
                .fetch_add(2 * resp.body.len() as u64, Ordering::Relaxed);
            continue;
        }
        client.write_all(&resp.head).await?;
        if fault == Fault::Truncate && resp.body.len() > 1 {
            client.write_all(&resp.body[..resp.body.len() / 2]).await?;
            client.set_zero_linger()?;
            return Ok(());
        }
        client.write_all(&resp.body).await?;
        stats
            .response_bytes
            .fetch_add(resp.body.len() as u64, Ordering::Relaxed);
        if resp
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"))
        {
            return Ok(());
        }
    }
}
