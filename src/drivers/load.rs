//! The load client: requests each on a new loopback connection, one
//! HTTP/1.1 GET each, every outcome classified; or, with [`KeepAlive`],
//! threads that each keep one connection and send request after request on
//! it, a random think time apart.
//!
//! With a rate, new connections follow a fixed schedule (an open loop, as
//! wrk2 does it): request k is due at k / rate, a pool of client threads
//! sends each at its time and grows when every thread is busy (a stalled
//! server does not hold the next requests back), and a request's latency
//! runs from the time it was due, not from when it could be sent: what a
//! client arriving then lives. Requests that went out more than [`LATE`]
//! after their slot are counted ([`Stats::late`]). Without a rate, the
//! threads send as fast as the answers come (a closed loop), and keep-alive
//! clients wait for each answer before they think and send the next: their
//! latency runs from the send, and a stall delays the next requests instead
//! of piling them up. An emulated guest cannot keep a schedule: there a
//! rate paces each thread of a closed loop ([`Options::pace`]).
//!
//! Bounded in count and in time, and loopback only: [`Load::start`] refuses
//! any other address. Each request is a [`Sample`]: when it was due, how
//! long the client waited, how it ended ([`Kind`]) and, when it completed,
//! who answered (the `pid=… gen=… version=… greeting=…` body of swaplab's
//! server, or the `pid=…` body of the nginx configuration the experiments
//! write).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::harness::platform;

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

/// A request that went out later than this after its slot on the
/// schedule went out late (every client thread was busy, or the machine
/// did not run the client in time).
pub const LATE: Duration = Duration::from_millis(10);

/// One request.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// When it was due, from the start of the load: its slot on the
    /// schedule (open loop), else when it was sent.
    pub start: Duration,
    /// From `start` to its end: with a schedule, the wait for a late send
    /// included.
    pub latency: Duration,
    /// How long after its slot it was sent (open loop).
    #[serde(skip_serializing_if = "Duration::is_zero")]
    pub late: Duration,
    pub kind: Kind,
    pub answer: Option<Answer>,
    /// What went wrong, for failures.
    pub detail: Option<String>,
    /// Body bytes received.
    pub bytes: u64,
    /// Sent on a connection that had already carried a request (keep-alive).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// The first attempt failed on a reused connection before any byte of
    /// an answer, and the request was sent again on a new connection (the
    /// client's retry of an idempotent request): `kind` is the retry's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retried: bool,
    /// Any byte of an answer arrived (a failure without one: the server
    /// never answered this request).
    pub answered: bool,
    /// The answer said `Connection: close` (the server ends the
    /// connection after it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
}

impl Sample {
    /// When it was sent, from the start of the load.
    pub fn sent(&self) -> Duration {
        self.start + self.late
    }

    /// When it ended, from the start of the load.
    pub fn end(&self) -> Duration {
        self.start + self.latency
    }

    /// It went out more than [`LATE`] after its slot.
    pub fn went_out_late(&self) -> bool {
        self.late > LATE
    }

    /// A request that failed on a connection that had carried one before:
    /// the server closed it under the client (G08).
    pub fn failed_on_reused(&self) -> bool {
        self.reused && self.kind != Kind::Completed
    }
}

/// Keep-alive clients: one connection per thread carrying request after
/// request, each sent at a random moment after the previous answer.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct KeepAlive {
    /// The pause before each next request: uniform in [0, think).
    pub think: Duration,
    /// Send a request that failed on a reused connection with no byte of
    /// an answer again, once, on a new connection (a GET is idempotent).
    pub retry: bool,
}

#[derive(Clone, Debug)]
pub struct Options {
    /// Where to connect: request k of a thread goes to `addrs[k % len]`.
    pub addrs: Vec<SocketAddr>,
    /// Client threads, one connection each at a time. With a rate, the
    /// pool starts with them and grows while every thread is busy, up to
    /// the requests that can be in flight (rate × timeout, at most
    /// [`MAX_POOL`]).
    pub connections: usize,
    /// Stop after this many requests in all...
    pub max_requests: u64,
    /// ...or after this long, whichever comes first.
    pub max_duration: Duration,
    /// Per request: connect, send, and the whole answer.
    pub timeout: Duration,
    /// Requests per second in all (open loop: request k is due at
    /// k / rate, and its latency counts from then); `None`: as fast as the
    /// answers come (closed loop). New connections only.
    pub rate: Option<f64>,
    /// The path requested (`/` unless told).
    pub path: String,
    /// Keep connections open and reuse them (instead of one per request).
    pub keep_alive: Option<KeepAlive>,
}

impl Options {
    pub fn new(addr: SocketAddr) -> Options {
        Options {
            addrs: vec![addr],
            connections: 2,
            max_requests: 200_000,
            max_duration: Duration::from_secs(60),
            timeout: request_timeout(),
            rate: None,
            path: "/".into(),
            keep_alive: None,
        }
    }
}

/// How long one request may take before it is a timeout: 5 s, or 20 s in
/// an emulated guest, where a 1 MiB download under load took over 5 s with
/// nothing wrong (G03 in Debian 11's kernel column, on a busy host). A
/// timeout stands for a hang, not for a slow machine.
fn request_timeout() -> Duration {
    if platform::emulated() {
        Duration::from_secs(20)
    } else {
        Duration::from_secs(5)
    }
}

/// The most client threads an open loop grows to.
pub const MAX_POOL: usize = 1024;

/// How the requests of a load go out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loop {
    /// On a fixed schedule: latency from each slot.
    Open,
    /// Each client thread sends its next request once the last has ended,
    /// no sooner than its slot: latency from each send.
    Closed,
}

impl Loop {
    /// How the load note says it.
    pub fn says(self) -> &'static str {
        match self {
            Loop::Open => "on a fixed schedule (more clients while all are busy); latency counts from the moment a request was due",
            Loop::Closed if platform::emulated() => "paced per client, each request sent once the last one ended (an emulated guest cannot keep a schedule: its client and server are both slowed a hundredfold); latency counts from each send",
            Loop::Closed => "each client sends its next request once the last one ended; latency counts from each send",
        }
    }
}

impl Options {
    /// How this load's requests go out: a rate on new connections is kept
    /// as a schedule, except in an emulated guest, where a schedule the
    /// machine cannot keep queues requests without bound and times them
    /// out (measured in Debian 11's kernel column under TCG).
    pub fn pace(&self) -> Loop {
        match (self.rate, self.keep_alive) {
            (Some(_), None) if !platform::emulated() => Loop::Open,
            _ => Loop::Closed,
        }
    }
}

/// The sockets one open loop may hold at once: a quarter of this process's
/// descriptor limit (each pool thread holds one), so that a pool grown
/// behind a slow server (an emulated guest, where the soft limit is 1024)
/// leaves descriptors to the rest of the harness.
fn socket_budget() -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let ok = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0;
    if ok {
        (lim.rlim_cur as usize / 4).max(16)
    } else {
        256
    }
}

struct Shared {
    samples: Mutex<Vec<Sample>>,
    /// Requests connected and not yet ended (downloads in flight).
    in_flight: AtomicUsize,
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
        let pace = opts.pace();
        Load::start_as(opts, pace)
    }

    fn start_as(opts: Options, pace: Loop) -> Result<Load> {
        if opts.addrs.is_empty() {
            bail!("the load client needs an address");
        }
        if let Some(a) = opts.addrs.iter().find(|a| !a.ip().is_loopback()) {
            bail!("the load client sends traffic to loopback only (127.0.0.0/8, ::1), not {a}");
        }
        if opts.rate.is_some_and(|r| !(r > 0.0 && r <= 1e6)) {
            bail!("the rate must be above 0 and at most 1,000,000 requests/s");
        }
        if opts.connections == 0 || opts.connections > 256 {
            bail!("connections must be 1 to 256, not {}", opts.connections);
        }
        if !opts.path.starts_with('/') || opts.path.chars().any(|c| c.is_whitespace()) {
            bail!(
                "the path must start with / and hold no spaces, not `{}`",
                opts.path
            );
        }
        let shared = Arc::new(Shared {
            samples: Mutex::new(Vec::new()),
            in_flight: Default::default(),
            grew: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let t0 = Instant::now();
        // An open loop has one scheduler, which runs the pool.
        let threads = match pace {
            Loop::Open => 1,
            _ => opts.connections,
        };
        let threads = (0..threads)
            .map(|i| {
                let shared = Arc::clone(&shared);
                let opts = opts.clone();
                std::thread::spawn(move || match (opts.keep_alive, opts.rate, pace) {
                    (Some(ka), _, _) => keep_alive_worker(&shared, &opts, ka, t0, i),
                    (None, Some(rate), Loop::Open) => scheduler(&shared, &opts, rate, t0),
                    _ => worker(&shared, &opts, t0, i),
                })
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

    /// Requests connected and not yet ended: downloads in flight now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The load's own clock: time since it started.
    pub fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    /// The mark of the load's start: every request is after it.
    pub fn origin(&self) -> Mark {
        Mark {
            at: Duration::ZERO,
            index: 0,
        }
    }

    pub fn mark(&self) -> Mark {
        // The time first: a sample recorded after `index` was taken may have
        // started before `at`, never the other way round.
        let at = self.t0.elapsed();
        let index = self.samples().len();
        Mark { at, index }
    }

    /// The requests sent after `since` and ended by now.
    pub fn since(&self, since: Mark) -> Vec<Sample> {
        self.samples()[since.index..]
            .iter()
            .filter(|s| s.sent() >= since.at)
            .cloned()
            .collect()
    }

    /// Waits until `n` requests sent after `since` satisfy `pred`;
    /// returns the last of them. Fails at the deadline, or if the load ended
    /// (its bounds reached) first, with a summary of what was seen.
    pub fn wait_for(
        &self,
        since: Mark,
        n: usize,
        what: &str,
        pred: impl Fn(&Sample) -> bool,
    ) -> Result<Sample> {
        let limit = crate::harness::process::deadline();
        let until = Instant::now() + limit;
        let mut seen = 0;
        let mut from = since.index;
        let mut guard = self.samples();
        loop {
            for s in &guard[from..] {
                if s.sent() >= since.at && pred(s) {
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

/// `completed 812, reset 1` (kinds seen, most common first), and how many
/// went out late, failed on a reused connection and were retried, if any.
pub fn tally(samples: &[Sample]) -> String {
    let mut t = kinds(samples);
    let late = samples.iter().filter(|s| s.went_out_late()).count();
    if late > 0 {
        t.push_str(&format!(
            " ({late} sent over {} ms after their slot)",
            LATE.as_millis()
        ));
    }
    let reused = samples.iter().filter(|s| s.failed_on_reused()).count();
    if reused > 0 {
        t.push_str(&format!(" ({reused} failed on a reused connection)"));
    }
    let retried = samples.iter().filter(|s| s.retried).count();
    if retried > 0 {
        t.push_str(&format!(" ({retried} retried on a new connection)"));
    }
    t
}

fn kinds(samples: &[Sample]) -> String {
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

/// A closed loop: one request after another on new connections, as fast
/// as the answers come or, with a rate in an emulated guest ([`Loop::Closed`]),
/// each thread's request k due at (k × threads + me) / rate and sent at
/// once when late. Latency counts from each send.
fn worker(shared: &Shared, opts: &Options, t0: Instant, me: usize) {
    let deadline = t0 + opts.max_duration;
    let threads = opts.connections as f64;
    let mut k: usize = 0;
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < deadline && !shared.full(opts) {
        if let Some(rate) = opts.rate {
            let due = t0 + Duration::from_secs_f64((k as f64 * threads + me as f64) / rate);
            let now = Instant::now();
            if due > now {
                // Wait for the slot, but notice a stop within 50 ms.
                std::thread::sleep((due - now).min(Duration::from_millis(50)));
                continue;
            }
        }
        let addr = opts.addrs[(k + me) % opts.addrs.len()];
        k += 1;
        let now = Instant::now();
        shared.record(one_request(shared, opts, addr, t0, now));
    }
}

/// One request on a new connection to `addr`, due at `due`: its sample,
/// its latency counted from `due`.
fn one_request(
    shared: &Shared,
    opts: &Options,
    addr: SocketAddr,
    t0: Instant,
    due: Instant,
) -> Sample {
    let began = Instant::now();
    let x = match connect(opts, addr, began) {
        Ok(mut conn) => {
            let _counted = InFlight::new(&shared.in_flight);
            exchange(&mut conn, opts, addr, began, false)
        }
        Err(o) => Exchanged::failed(o, false),
    };
    let mut s = x.sample(due - t0, due.elapsed(), false, false);
    s.late = began.saturating_duration_since(due);
    s
}

/// An open loop's slot: request `k`, due at `due`.
struct Slot {
    k: u64,
    due: Instant,
}

/// The open loop's pool: slots handed out, taken, and threads waiting for
/// one.
#[derive(Default)]
struct Pool {
    handed: AtomicU64,
    taken: AtomicU64,
    idle: AtomicUsize,
}

/// An open loop: request k is due at t0 + k / rate. The scheduler hands
/// each slot, at its time, to an idle client thread of the pool, and
/// starts another thread when none is idle (up to the requests that can be
/// in flight at once: rate × timeout, at most [`MAX_POOL`]); a slot no
/// thread can take at once waits, and goes out late.
fn scheduler(shared: &Arc<Shared>, opts: &Options, rate: f64, t0: Instant) {
    let deadline = t0 + opts.max_duration;
    let cap = ((rate * opts.timeout.as_secs_f64()).ceil() as usize)
        .saturating_add(opts.connections)
        .min(MAX_POOL)
        .min(socket_budget())
        .max(opts.connections);
    let (tx, rx) = std::sync::mpsc::channel::<Slot>();
    let rx = Arc::new(Mutex::new(rx));
    let pool = Arc::new(Pool::default());
    let mut threads: Vec<JoinHandle<()>> = Vec::new();
    let grow = |threads: &mut Vec<JoinHandle<()>>| {
        let (shared, opts, rx, pool) = (
            Arc::clone(shared),
            opts.clone(),
            Arc::clone(&rx),
            Arc::clone(&pool),
        );
        // A small stack: a thread holds one request's buffers.
        let spawned = std::thread::Builder::new()
            .stack_size(256 << 10)
            .spawn(move || pool_worker(&shared, &opts, &rx, &pool, t0));
        if let Ok(t) = spawned {
            threads.push(t);
        }
    };
    for _ in 0..opts.connections {
        grow(&mut threads);
    }
    'slots: for k in 0..opts.max_requests {
        let due = t0 + Duration::from_secs_f64(k as f64 / rate);
        if due >= deadline {
            break;
        }
        // Wait for the slot, but notice a stop within 50 ms.
        loop {
            if shared.stop.load(Ordering::SeqCst) {
                break 'slots;
            }
            let now = Instant::now();
            if now >= due {
                break;
            }
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
        }
        // Slots handed out and not yet taken wait for the idle threads.
        let waiting = pool.handed.load(Ordering::SeqCst) - pool.taken.load(Ordering::SeqCst);
        if pool.idle.load(Ordering::SeqCst) as u64 <= waiting && threads.len() < cap {
            grow(&mut threads);
        }
        pool.handed.fetch_add(1, Ordering::SeqCst);
        if tx.send(Slot { k, due }).is_err() {
            break;
        }
    }
    // The threads finish the slots handed out (each bounded by the
    // timeout), unless stopped, then end.
    drop(tx);
    for t in threads {
        let _ = t.join();
    }
}

/// A client thread of the open loop's pool: takes slot after slot.
fn pool_worker(
    shared: &Shared,
    opts: &Options,
    rx: &Mutex<std::sync::mpsc::Receiver<Slot>>,
    pool: &Pool,
    t0: Instant,
) {
    loop {
        pool.idle.fetch_add(1, Ordering::SeqCst);
        let slot = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
        pool.idle.fetch_sub(1, Ordering::SeqCst);
        let Ok(slot) = slot else { return };
        pool.taken.fetch_add(1, Ordering::SeqCst);
        if shared.stop.load(Ordering::SeqCst) {
            // Stopped: the slots still queued are not sent.
            continue;
        }
        let addr = opts.addrs[(slot.k % opts.addrs.len() as u64) as usize];
        shared.record(one_request(shared, opts, addr, t0, slot.due));
    }
}

impl Shared {
    fn record(&self, sample: Sample) {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sample);
        self.grew.notify_all();
    }

    fn full(&self, opts: &Options) -> bool {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.len() as u64 >= opts.max_requests
    }
}

/// One keep-alive client: a connection carried from request to request
/// until the server closes it (or it fails), then a new one.
fn keep_alive_worker(shared: &Shared, opts: &Options, ka: KeepAlive, t0: Instant, me: usize) {
    let deadline = t0 + opts.max_duration;
    let addr = opts.addrs[me % opts.addrs.len()];
    let mut rng = fastrand::Rng::new();
    let mut conn: Option<TcpStream> = None;
    let mut failed = false;
    while !shared.stop.load(Ordering::SeqCst) && Instant::now() < deadline && !shared.full(opts) {
        // After an answer, and after a failure too (a refused client does
        // not spin).
        if conn.is_some() || failed {
            // The think time, in slices that notice a stop.
            let until = Instant::now() + ka.think.mul_f64(rng.f64());
            while Instant::now() < until && !shared.stop.load(Ordering::SeqCst) {
                std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
            }
        }
        let start = t0.elapsed();
        let began = Instant::now();
        let reused = conn.is_some();
        let counted = InFlight::new(&shared.in_flight);
        let mut x = keep_alive_request(opts, addr, began, &mut conn);
        let mut retried = false;
        if reused && ka.retry && x.outcome.0 != Kind::Completed && !x.answered {
            retried = true;
            let mut fresh = None;
            x = keep_alive_request(opts, addr, Instant::now(), &mut fresh);
            conn = fresh;
        }
        drop(counted);
        if !x.reusable {
            conn = None;
        }
        failed = x.outcome.0 != Kind::Completed;
        shared.record(x.sample(start, began.elapsed(), reused && !retried, retried));
    }
}

/// One request on `conn` (a new connection if it is `None`, left in it).
fn keep_alive_request(
    opts: &Options,
    addr: SocketAddr,
    began: Instant,
    conn: &mut Option<TcpStream>,
) -> Exchanged {
    if conn.is_none() {
        match connect(opts, addr, began) {
            Ok(c) => *conn = Some(c),
            Err(o) => return Exchanged::failed(o, false),
        }
    }
    let Some(c) = conn.as_mut() else {
        unreachable!("connected above")
    };
    exchange(c, opts, addr, began, true)
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

type Outcome = (Kind, Option<Answer>, Option<String>, u64);

/// Counts a request as in flight from connect to its end.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn new(n: &'a AtomicUsize) -> InFlight<'a> {
        n.fetch_add(1, Ordering::SeqCst);
        InFlight(n)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn connect(opts: &Options, addr: SocketAddr, began: Instant) -> Result<TcpStream, Outcome> {
    TcpStream::connect_timeout(&addr, opts.timeout)
        .map_err(|e| (classify(&e), None, Some(format!("connect: {e}")), 0))
        .inspect(|c| {
            let left = opts
                .timeout
                .saturating_sub(began.elapsed())
                .max(Duration::from_millis(1));
            let _ = c.set_read_timeout(Some(left));
            let _ = c.set_write_timeout(Some(left));
            let _ = c.set_nodelay(true);
        })
}

/// How one exchange on a connection ended, besides its outcome.
struct Exchanged {
    outcome: Outcome,
    /// The server keeps the connection open for the next request.
    reusable: bool,
    /// Any byte of an answer arrived.
    answered: bool,
    /// The answer said `Connection: close`.
    closed: bool,
}

impl Exchanged {
    /// The request's sample: it started at `start` and took `latency`.
    fn sample(self, start: Duration, latency: Duration, reused: bool, retried: bool) -> Sample {
        let (kind, answer, detail, bytes) = self.outcome;
        Sample {
            start,
            latency,
            late: Duration::ZERO,
            kind,
            answer,
            detail,
            bytes,
            reused,
            retried,
            answered: self.answered,
            closed: self.closed,
        }
    }

    fn failed(outcome: Outcome, answered: bool) -> Exchanged {
        Exchanged {
            outcome,
            reusable: false,
            answered,
            closed: false,
        }
    }
}

/// Where a chunked body ends: walks the chunks as they arrive (a size line
/// with optional extensions, the data, CRLF; a zero-size chunk, then
/// trailer lines up to an empty one).
#[derive(Default)]
struct Chunks {
    /// Body bytes not yet walked.
    pending: Vec<u8>,
    /// Bytes of the current chunk (and its CRLF) still to skip.
    skip: usize,
    /// Past the zero-size chunk: reading trailer lines.
    trailers: bool,
    done: bool,
}

impl Chunks {
    fn feed(&mut self, more: &[u8]) {
        self.pending.extend_from_slice(more);
        while !self.done {
            if self.skip > 0 {
                let n = self.skip.min(self.pending.len());
                self.pending.drain(..n);
                self.skip -= n;
                if self.skip > 0 {
                    return;
                }
            }
            let Some(eol) = self.pending.windows(2).position(|w| w == b"\r\n") else {
                return;
            };
            let line: Vec<u8> = self.pending.drain(..eol + 2).take(eol).collect();
            if self.trailers {
                self.done = line.is_empty();
                continue;
            }
            let text = String::from_utf8_lossy(&line);
            let size = text.split(';').next().unwrap_or_default().trim();
            match usize::from_str_radix(size, 16) {
                Ok(0) => self.trailers = true,
                Ok(n) => self.skip = n.saturating_add(2),
                // Not chunks after all: the answer then ends with the
                // connection (or the request times out).
                Err(_) => return,
            }
        }
    }
}

/// Sends one GET on `conn` and reads its answer: to the end of the
/// connection, or (`keep_alive`) to the end of the announced body
/// (Content-Length, or the last chunk).
fn exchange(
    conn: &mut TcpStream,
    opts: &Options,
    addr: SocketAddr,
    began: Instant,
    keep_alive: bool,
) -> Exchanged {
    let left = opts
        .timeout
        .saturating_sub(began.elapsed())
        .max(Duration::from_millis(1));
    let _ = conn.set_read_timeout(Some(left));
    let _ = conn.set_write_timeout(Some(left));
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: swaplab-load\r\nConnection: {}\r\n\r\n",
        opts.path,
        if keep_alive { "keep-alive" } else { "close" }
    );
    if let Err(e) = conn.write_all(req.as_bytes()) {
        return Exchanged::failed((classify(&e), None, Some(format!("send: {e}")), 0), false);
    }
    // The head, then the body counted as it streams (downloads can be
    // large): only its first bytes are kept, to see who answered.
    let mut got = Vec::new();
    let mut body_bytes: u64 = 0;
    let mut head_len = None;
    let mut length: Option<u64> = None;
    let mut chunks: Option<Chunks> = None;
    let mut buf = [0u8; 65536];
    loop {
        let ended =
            length.is_some_and(|n| body_bytes >= n) || chunks.as_ref().is_some_and(|c| c.done);
        if keep_alive && ended {
            break;
        }
        if began.elapsed() > opts.timeout {
            let o = (
                Kind::Timeout,
                None,
                Some(format!("answer: too slow ({body_bytes} body bytes in)")),
                body_bytes,
            );
            return Exchanged::failed(o, !got.is_empty());
        }
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => match head_len {
                Some(_) => {
                    body_bytes += n as u64;
                    let keep = 512usize.saturating_sub(got.len()).min(n);
                    got.extend_from_slice(&buf[..keep]);
                    if let Some(c) = chunks.as_mut() {
                        c.feed(&buf[..n]);
                    }
                }
                None => {
                    got.extend_from_slice(&buf[..n]);
                    if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                        head_len = Some(i + 4);
                        body_bytes = (got.len() - i - 4) as u64;
                        length = header(&got[..i], "content-length").and_then(|v| v.parse().ok());
                        let te = header(&got[..i], "transfer-encoding").unwrap_or_default();
                        if has_token(&te, "chunked") {
                            let mut c = Chunks::default();
                            c.feed(&got[i + 4..]);
                            chunks = Some(c);
                        }
                        got.truncate((i + 4 + 512).min(got.len()));
                    } else if got.len() > 65536 {
                        let o = (Kind::Other, None, Some("a head over 64 KiB".into()), 0);
                        return Exchanged::failed(o, true);
                    }
                }
            },
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => {
                let at = match head_len {
                    Some(_) => format!(" after {body_bytes} body bytes"),
                    None if got.is_empty() => " (no answer)".to_string(),
                    None => String::new(),
                };
                let o = (
                    classify(&e),
                    None,
                    Some(format!("receive{at}: {e}")),
                    body_bytes,
                );
                return Exchanged::failed(o, !got.is_empty());
            }
        }
    }
    let cut = chunks.as_ref().is_some_and(|c| !c.done);
    let (kind, answer, detail) = parse_response(&got, body_bytes, cut);
    let head = head_len.map(|h| &got[..h]).unwrap_or_default();
    let connection = header(head, "connection").unwrap_or_default();
    let closed = has_token(&connection, "close");
    // HTTP/1.1 keeps a connection unless told otherwise; HTTP/1.0 only
    // when told so.
    let kept = if head.starts_with(b"HTTP/1.1 ") {
        !closed
    } else {
        has_token(&connection, "keep-alive")
    };
    let reusable = keep_alive
        && kind == Kind::Completed
        && kept
        && (length.is_some() || chunks.as_ref().is_some_and(|c| c.done));
    Exchanged {
        outcome: (kind, answer, detail, body_bytes),
        reusable,
        answered: !got.is_empty(),
        closed,
    }
}

/// Whether a comma-separated header value holds `token` (any case).
fn has_token(value: &str, token: &str) -> bool {
    value
        .split(',')
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// The value of header `name` in a response head (case-insensitive).
fn header(head: &[u8], name: &str) -> Option<String> {
    String::from_utf8_lossy(head).lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// One GET of `path` at `addr` on a connection of its own (a readiness
/// probe): who answered a whole 200 answer (if it said), or what went
/// wrong.
pub fn get_once(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Option<Answer>, String> {
    let mut opts = Options::new(addr);
    opts.path = path.to_string();
    opts.timeout = timeout;
    let began = Instant::now();
    let mut conn = connect(&opts, addr, began).map_err(|o| o.2.unwrap_or_default())?;
    match exchange(&mut conn, &opts, addr, began, false).outcome {
        (Kind::Completed, answer, _, _) => Ok(answer),
        (kind, _, detail, _) => Err(format!("{}: {}", kind.name(), detail.unwrap_or_default())),
    }
}

/// Judges a whole response: `got` holds the head and the first bytes of the
/// body, `body_bytes` how many body bytes arrived in all; `cut`: a chunked
/// body ended (EOF) before its last chunk.
fn parse_response(
    got: &[u8],
    body_bytes: u64,
    cut: bool,
) -> (Kind, Option<Answer>, Option<String>) {
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
    if cut {
        return (
            Kind::ShortRead,
            None,
            Some(format!(
                "EOF after {body_bytes} body bytes, before the last chunk"
            )),
        );
    }
    let length = header(head.as_bytes(), "content-length").and_then(|v| v.parse::<u64>().ok());
    match length {
        Some(n) if body_bytes < n => (
            Kind::ShortRead,
            None,
            Some(format!("EOF after {body_bytes} of {n} body bytes")),
        ),
        // Any server's whole 200 answer is complete; swaplab's servers and
        // the configurations it writes also say who answered.
        _ => (Kind::Completed, Answer::parse(body), None),
    }
}

/// Latency figures of a set of samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub requests: usize,
    /// Failures by kind (every kind but completed).
    pub failures: std::collections::BTreeMap<String, usize>,
    pub failed: usize,
    /// Requests sent over [`LATE`] after their slot on the schedule (open
    /// loop): the client could not keep its rate.
    pub late: usize,
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
            samples.iter().map(|s| s.end()).max(),
        ) {
            (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        let failed = failures.values().sum();
        Stats {
            requests: samples.len(),
            failures,
            failed,
            late: samples.iter().filter(|s| s.went_out_late()).count(),
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

/// `NAME: requests sent over 10 ms after their slot: 0/412/0 (before,
/// during, after)`, for a table's foot; `None` when none was late.
pub fn late_line(name: &str, phases: &[(&str, &Stats)]) -> Option<String> {
    if phases.iter().all(|(_, s)| s.late == 0) {
        return None;
    }
    let counts: Vec<String> = phases.iter().map(|(_, s)| s.late.to_string()).collect();
    let names: Vec<&str> = phases.iter().map(|(n, _)| *n).collect();
    Some(format!(
        "{name}: requests sent over {} ms after their slot: {} ({})",
        LATE.as_millis(),
        counts.join("/"),
        names.join(", ")
    ))
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
        assert_eq!(parse_response(ok, 6, false).0, Kind::Completed);
        let short = b"HTTP/1.1 200 OK\r\nContent-Length: 60\r\n\r\npid=1\n";
        assert_eq!(parse_response(short, 6, false).0, Kind::ShortRead);
        assert_eq!(parse_response(b"HTTP/1.1 20", 0, false).0, Kind::ShortRead);
        let bad = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(bad, 0, false).0, Kind::Other);
        // A large body counted, not kept: 1 MiB announced, 1 MiB arrived.
        let big = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\npid=9 gen=3\n....";
        let (k, a, _) = parse_response(big, 1 << 20, false);
        assert_eq!((k, a.map(|a| a.gen)), (Kind::Completed, Some(Some(3))));
    }

    #[test]
    fn chunked_bodies_end_at_their_last_chunk() {
        let whole = |parts: &[&[u8]]| {
            let mut c = Chunks::default();
            for p in parts {
                c.feed(p);
            }
            c.done
        };
        assert!(whole(&[b"5\r\nhello\r\n0\r\n\r\n"]));
        // Data that looks like an end, cut anywhere, is data.
        assert!(!whole(&[b"7\r\nab0\r\n\r\n"]));
        assert!(whole(&[b"7\r\nab0\r", b"\n\r\n", b"\r\n0\r\n\r\n"]));
        // Extensions and trailers.
        assert!(whole(&[b"3;x=1\r\nabc\r\n0;end\r\nX-T: 1\r\n\r\n"]));
        assert!(!whole(&[b"3\r\nabc\r\n0\r\nX-T: 1\r\n"]));
    }

    #[test]
    fn tokens_in_header_lists() {
        assert!(has_token("gzip, chunked", "chunked"));
        assert!(has_token("Keep-Alive, Upgrade", "keep-alive"));
        assert!(!has_token("closed", "close"));
    }

    /// A tiny serial server on loopback for the tests: it answers the
    /// connections it accepts one after another with `answer`, except that
    /// before answering the `stall_at`-th (from 0) it stalls for `stall`
    /// (frozen: the kernel queues the connections meanwhile). It ends after
    /// `max` connections, or on a request for `/quit`; its result is when
    /// the stall began and ended.
    fn serial_server(
        answer: &'static [u8],
        stall_at: usize,
        stall: Duration,
        max: usize,
    ) -> (SocketAddr, JoinHandle<Option<(Instant, Instant)>>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let mut stalled = None;
            for i in 0..max {
                let Ok((mut c, _)) = l.accept() else { break };
                let _ = c.set_read_timeout(Some(Duration::from_secs(5)));
                let mut req = Vec::new();
                let mut buf = [0u8; 1024];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                if req.starts_with(b"GET /quit ") {
                    break;
                }
                if i == stall_at {
                    let began = Instant::now();
                    std::thread::sleep(stall);
                    stalled = Some((began, Instant::now()));
                }
                let _ = c.write_all(answer);
            }
            stalled
        });
        (addr, t)
    }

    /// Ends a [`serial_server`] that still waits for connections.
    fn quit(
        addr: SocketAddr,
        server: JoinHandle<Option<(Instant, Instant)>>,
    ) -> Option<(Instant, Instant)> {
        if let Ok(mut c) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
            let _ = c.write_all(b"GET /quit HTTP/1.1\r\n\r\n");
        }
        server.join().unwrap()
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\nConnection: close\r\n\r\npid=1\n";

    #[test]
    fn a_closed_loop_keeps_its_pace_and_counts_from_each_send() {
        // What an emulated guest runs: 100 requests a second from 2
        // threads; the server freezes 300 ms before its 10th answer.
        let stall = Duration::from_millis(300);
        let (addr, server) = serial_server(OK, 10, stall, 400);
        let mut o = Options::new(addr);
        o.rate = Some(100.0);
        o.connections = 2;
        o.max_requests = 60;
        o.max_duration = Duration::from_secs(3);
        let load = Load::start_as(o, Loop::Closed).unwrap();
        load.wait_for(load.origin(), 60, "a request ended", |_| true)
            .unwrap();
        let samples = load.stop();
        quit(addr, server).expect("the server stalled");
        assert!(
            samples
                .iter()
                .all(|s| s.kind == Kind::Completed && !s.went_out_late()),
            "{}",
            tally(&samples)
        );
        // Two threads, so at most two requests waited out the stall, each
        // from its own send: the others went out after it.
        let waited = samples.iter().filter(|s| s.latency >= stall / 2).count();
        assert!((1..=2).contains(&waited), "{waited} requests waited");
        // Never faster than the pace: 60 requests at 100/s span 0.59 s.
        let last = samples.iter().map(|s| s.start).max().unwrap();
        assert!(last >= Duration::from_millis(580), "last sent at {last:?}");
    }

    #[test]
    fn a_stall_is_counted_from_each_request_s_slot() {
        // 200 requests a second for at most 1.5 s; the server freezes for
        // 400 ms before its 40th answer (about 0.2 s in).
        let stall = Duration::from_millis(400);
        let (addr, server) = serial_server(OK, 40, stall, 400);
        let mut o = Options::new(addr);
        o.rate = Some(200.0);
        o.connections = 2;
        o.max_requests = 300;
        o.max_duration = Duration::from_secs(3);
        let load = Load::start(o).unwrap();
        let t0 = Instant::now() - load.now();
        load.wait_for(load.origin(), 300, "a request ended", |_| true)
            .unwrap();
        let samples = load.stop();
        let (began, ended) = quit(addr, server).expect("the server stalled");
        let (began, ended) = (began - t0, ended - t0);
        assert!(
            samples.iter().all(|s| s.kind == Kind::Completed),
            "{}",
            tally(&samples)
        );
        // The requests due while the server was frozen (but for the last
        // 50 ms): the schedule held, so about 70 of them; each waited from
        // its slot until the server woke up.
        let frozen: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.start >= began && s.start + Duration::from_millis(50) < ended)
            .collect();
        assert!(
            frozen.len() >= 50,
            "{} requests due in the {stall:?} stall at 200/s",
            frozen.len()
        );
        for s in &frozen {
            let waited = ended.saturating_sub(s.start);
            assert!(
                s.latency + Duration::from_millis(2) >= waited,
                "due {:?}, the stall ended at {ended:?}: latency {:?}",
                s.start,
                s.latency
            );
        }
    }

    #[test]
    fn a_chunked_answer_cut_by_fin_is_a_short_read() {
        // The last chunk never comes: the server closes after the first.
        let cut: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\npid=1\n\r\n";
        let (addr, server) = serial_server(cut, usize::MAX, Duration::ZERO, 1);
        let got = get_once(addr, "/", Duration::from_secs(5));
        server.join().unwrap();
        let e = got.expect_err("a chunked answer without its last chunk");
        assert!(e.starts_with("short read"), "{e}");
        // The whole answer, last chunk and all, is complete.
        let whole: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n6\r\npid=1\n\r\n0\r\n\r\n";
        let (addr, server) = serial_server(whole, usize::MAX, Duration::ZERO, 1);
        let got = get_once(addr, "/", Duration::from_secs(5));
        server.join().unwrap();
        assert!(got.is_ok(), "{got:?}");
    }

    #[test]
    fn only_loopback_is_loaded() {
        let o = Options::new("192.0.2.1:80".parse().unwrap());
        assert!(Load::start(o).is_err());
    }
}
