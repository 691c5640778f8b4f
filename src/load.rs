//! The load client: threads that open new loopback connections one after
//! another, send one HTTP/1.1 request on each and classify every outcome.
//!
//! Bounded in count and in time, and loopback only: [`Load::start`] refuses
//! any other address. Each request is a [`Sample`]: when it started, how long
//! it took, how it ended ([`Kind`]) and, when it completed, who answered (the
//! `pid=… gen=… version=… greeting=…` body of swaplab's server, or the
//! `pid=…` body of the nginx configuration the experiments write).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A 200 response with the whole body.
    Completed,
    /// The connection was refused (nobody listening).
    Refused,
    /// The connection was reset (RST, or a broken pipe while sending).
    Reset,
    /// The connection ended (EOF) before the whole response arrived.
    ShortRead,
    /// No connection or no answer within the request timeout.
    Timeout,
    /// Anything else: another status code, another error.
    Other,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Completed,
        Kind::Refused,
        Kind::Reset,
        Kind::ShortRead,
        Kind::Timeout,
        Kind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Completed => "completed",
            Kind::Refused => "refused",
            Kind::Reset => "reset",
            Kind::ShortRead => "short read",
            Kind::Timeout => "timeout",
            Kind::Other => "other",
        }
    }
}

/// Who answered a completed request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub pid: i32,
    pub gen: Option<u32>,
    pub version: Option<String>,
    pub greeting: Option<String>,
}

impl Answer {
    /// Parses a body such as `pid=7 gen=1 version=1.0.0 greeting=Hell World`.
    pub fn parse(body: &str) -> Option<Answer> {
        let line = body.lines().next()?;
        let (head, greeting) = match line.split_once(" greeting=") {
            Some((h, g)) => (h, Some(g.to_string())),
            None => (line, None),
        };
        let mut a = Answer {
            greeting,
            ..Answer::default()
        };
        let mut has_pid = false;
        for w in head.split_whitespace() {
            match w.split_once('=') {
                Some(("pid", v)) => {
                    a.pid = v.parse().ok()?;
                    has_pid = true;
                }
                Some(("gen", v)) => a.gen = v.parse().ok(),
                Some(("version", v)) => a.version = Some(v.to_string()),
                _ => {}
            }
        }
        has_pid.then_some(a)
    }
}

/// One request.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// When it started, from the start of the load.
    pub start: Duration,
    pub latency: Duration,
    pub kind: Kind,
    pub answer: Option<Answer>,
    /// What went wrong, for failures.
    pub detail: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub addr: SocketAddr,
    /// Connections in flight at once (one thread each).
    pub connections: usize,
    /// Stop after this many requests in all...
    pub max_requests: u64,
    /// ...or after this long, whichever comes first.
    pub max_duration: Duration,
    /// Per request: connect, send, and the whole answer.
    pub timeout: Duration,
}

impl Options {
    pub fn new(addr: SocketAddr) -> Options {
        Options {
            addr,
            connections: 2,
            max_requests: 200_000,
            max_duration: Duration::from_secs(60),
            timeout: Duration::from_secs(5),
        }
    }
}

struct Shared {
    samples: Mutex<Vec<Sample>>,
    grew: Condvar,
    stop: AtomicBool,
}

/// A running load. Dropping it stops the threads and waits for them.
pub struct Load {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    t0: Instant,
}

/// A point in the load's history: requests started after it.
#[derive(Clone, Copy, Debug)]
pub struct Mark {
    pub at: Duration,
    /// Samples recorded before the mark (those after it start no earlier).
    pub index: usize,
}

impl Load {
    /// Starts the threads. Refuses any address outside loopback.
    pub fn start(opts: Options) -> Result<Load> {
        if !opts.addr.ip().is_loopback() {
            bail!(
                "the load client sends traffic to loopback only (127.0.0.0/8, ::1), not {}",
                opts.addr
            );
        }
        if opts.connections == 0 || opts.connections > 256 {
            bail!("connections must be 1 to 256, not {}", opts.connections);
        }
        let shared = Arc::new(Shared {
            samples: Mutex::new(Vec::new()),
            grew: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let t0 = Instant::now();
        let threads = (0..opts.connections)
            .map(|_| {
                let shared = Arc::clone(&shared);
                let opts = opts.clone();
                std::thread::spawn(move || worker(&shared, &opts, t0))
            })
            .collect();
        Ok(Load {
            shared,
            threads,
            t0,
        })
    }

    fn samples(&self) -> std::sync::MutexGuard<'_, Vec<Sample>> {
        self.shared
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub fn mark(&self) -> Mark {
        // The time first: a sample recorded after `index` was taken may have
        // started before `at`, never the other way round.
        let at = self.t0.elapsed();
        let index = self.samples().len();
        Mark { at, index }
    }

    /// The requests that started after `since` and have ended by now.
    pub fn since(&self, since: Mark) -> Vec<Sample> {
        self.samples()[since.index..]
            .iter()
            .filter(|s| s.start >= since.at)
            .cloned()
            .collect()
    }

    /// Waits until `n` requests that started after `since` satisfy `pred`;
    /// returns the last of them. Fails at the deadline, or if the load ended
    /// (its bounds reached) first, with a summary of what was seen.
    pub fn wait_for(
        &self,
        since: Mark,
        n: usize,
        what: &str,
        pred: impl Fn(&Sample) -> bool,
    ) -> Result<Sample> {
        let limit = crate::process::deadline();
        let until = Instant::now() + limit;
        let mut seen = 0;
        let mut from = since.index;
        let mut guard = self.samples();
        loop {
            for s in &guard[from..] {
                if s.start >= since.at && pred(s) {
                    seen += 1;
                    if seen >= n {
                        return Ok(s.clone());
                    }
                }
            }
            from = guard.len();
            let finished = self.threads.iter().all(|t| t.is_finished());
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || finished {
                let tally = tally(&guard[since.index..]);
                bail!(
                    "{} waiting for {n} requests where {what} (saw {seen}); requests since then: {tally}",
                    if finished {
                        "the load client reached its bounds".to_string()
                    } else {
                        format!("timed out after {:.1} s", limit.as_secs_f64())
                    }
                );
            }
            let step = left.min(Duration::from_millis(50));
            guard = self
                .shared
                .grew
                .wait_timeout(guard, step)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stops the threads (each finishes the request it is on) and returns
    /// every sample, in the order they ended.
    pub fn stop(mut self) -> Vec<Sample> {
        self.halt();
        std::mem::take(&mut *self.samples())
    }

    fn halt(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.halt();
    }
}

/// `completed 812, reset 1` (kinds seen, most common first).
pub fn tally(samples: &[Sample]) -> String {
    let mut parts: Vec<(usize, Kind)> = Kind::ALL
        .iter()
        .map(|k| (samples.iter().filter(|s| s.kind == *k).count(), *k))
        .filter(|(n, _)| *n > 0)
        .collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.0));
    if parts.is_empty() {
        return "none".into();
    }
    parts
        .iter()
        .map(|(n, k)| format!("{} {n}", k.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn worker(shared: &Shared, opts: &Options, t0: Instant) {
    let deadline = t0 + opts.max_duration;
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < deadline {
        {
            let samples = shared.samples.lock().unwrap_or_else(|p| p.into_inner());
            if samples.len() as u64 >= opts.max_requests {
                break;
            }
        }
        let start = t0.elapsed();
        let began = Instant::now();
        let (kind, answer, detail) = request(opts);
        let sample = Sample {
            start,
            latency: began.elapsed(),
            kind,
            answer,
            detail,
        };
        shared
            .samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sample);
        shared.grew.notify_all();
    }
}

fn classify(e: &std::io::Error) -> Kind {
    match e.kind() {
        ErrorKind::ConnectionRefused => Kind::Refused,
        ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
            Kind::Reset
        }
        ErrorKind::TimedOut | ErrorKind::WouldBlock => Kind::Timeout,
        ErrorKind::UnexpectedEof => Kind::ShortRead,
        _ => Kind::Other,
    }
}

fn request(opts: &Options) -> (Kind, Option<Answer>, Option<String>) {
    let fail = |e: std::io::Error, stage: &str| (classify(&e), None, Some(format!("{stage}: {e}")));
    let began = Instant::now();
    let mut conn = match TcpStream::connect_timeout(&opts.addr, opts.timeout) {
        Ok(c) => c,
        Err(e) => return fail(e, "connect"),
    };
    let left = opts
        .timeout
        .saturating_sub(began.elapsed())
        .max(Duration::from_millis(1));
    let _ = conn.set_read_timeout(Some(left));
    let _ = conn.set_write_timeout(Some(left));
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nUser-Agent: swaplab-load\r\nConnection: close\r\n\r\n",
        opts.addr
    );
    if let Err(e) = conn.write_all(req.as_bytes()) {
        return fail(e, "send");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if began.elapsed() > opts.timeout {
            return (Kind::Timeout, None, Some("answer: too slow".into()));
        }
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return fail(e, "receive"),
        }
    }
    parse_response(&got)
}

fn parse_response(got: &[u8]) -> (Kind, Option<Answer>, Option<String>) {
    let text = String::from_utf8_lossy(got);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return (
            Kind::ShortRead,
            None,
            Some(format!(
                "EOF after {} bytes, before the headers ended",
                got.len()
            )),
        );
    };
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") && !status.starts_with("HTTP/1.0 200") {
        return (Kind::Other, None, Some(format!("status line `{status}`")));
    }
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())
            .flatten()
    });
    match length {
        Some(n) if body.len() < n => (
            Kind::ShortRead,
            None,
            Some(format!("EOF after {} of {n} body bytes", body.len())),
        ),
        _ => match Answer::parse(body) {
            Some(a) => (Kind::Completed, Some(a), None),
            None => (Kind::Other, None, Some(format!("unexpected body `{body}`"))),
        },
    }
}

/// Latency figures of a set of samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub requests: usize,
    /// Failures by kind (every kind but completed).
    pub failures: std::collections::BTreeMap<String, usize>,
    pub failed: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Requests per second over the span the samples cover.
    pub rate: f64,
}

impl Stats {
    pub fn of(samples: &[&Sample]) -> Stats {
        let mut lat: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        lat.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let pick = |q: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
            ms(lat[i])
        };
        let mut failures = std::collections::BTreeMap::new();
        for k in Kind::ALL.iter().filter(|k| **k != Kind::Completed) {
            failures.insert(
                k.name().to_string(),
                samples.iter().filter(|s| s.kind == *k).count(),
            );
        }
        let span = match (
            samples.iter().map(|s| s.start).min(),
            samples.iter().map(|s| s.start + s.latency).max(),
        ) {
            (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        let failed = failures.values().sum();
        Stats {
            requests: samples.len(),
            failures,
            failed,
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            max_ms: lat.last().copied().map(ms).unwrap_or(0.0),
            rate: if span > 0.0 {
                samples.len() as f64 / span
            } else {
                0.0
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_name_who_answered() {
        let a = Answer::parse("pid=42 gen=2 version=2.0.0 greeting=Hello World\n").unwrap();
        assert_eq!(a.pid, 42);
        assert_eq!(a.gen, Some(2));
        assert_eq!(a.version.as_deref(), Some("2.0.0"));
        assert_eq!(a.greeting.as_deref(), Some("Hello World"));
        let n = Answer::parse("pid=7 nginx=1.22.1\n").unwrap();
        assert_eq!((n.pid, n.gen), (7, None));
        assert!(Answer::parse("hello").is_none());
    }

    #[test]
    fn responses_are_classified() {
        let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npid=1\n";
        assert_eq!(parse_response(ok).0, Kind::Completed);
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\npid=1\n";
        assert_eq!(parse_response(short).0, Kind::ShortRead);
        assert_eq!(parse_response(b"HTTP/1.1 20").0, Kind::ShortRead);
        let bad = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(bad).0, Kind::Other);
    }

    #[test]
    fn only_loopback_is_loaded() {
        let o = Options::new("192.0.2.1:80".parse().unwrap());
        assert!(Load::start(o).is_err());
    }
}
