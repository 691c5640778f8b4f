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
//! rate paces each thread of a closed loop ([`LoadOptions::pace`]).
//!
//! Bounded in count and in time, and loopback only: [`Load::start`] refuses
//! any other address. Each request is a [`Sample`]: when it was due, how
//! long the client waited, how it ended ([`Kind`]) and, when it completed,
//! who answered (the `pid=… gen=… version=… greeting=…` body of swaplab's
//! server, or the `pid=…` body of the nginx configuration the experiments
//! write).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde::Serialize;

use crate::harness::platform;

mod exchange;
mod samples;
mod schedule;
#[cfg(test)]
mod test_server;
mod workers;

pub use exchange::get_once;
pub use samples::{late_line, tally, Answer, Kind, Sample, Stats, LATE};
use schedule::scheduler;
use workers::{keep_alive_worker, worker};

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
pub struct LoadOptions {
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

impl LoadOptions {
    pub fn new(addr: SocketAddr) -> LoadOptions {
        LoadOptions {
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

impl LoadOptions {
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
    pub fn start(opts: LoadOptions) -> Result<Load> {
        let pace = opts.pace();
        Load::start_as(opts, pace)
    }

    fn start_as(opts: LoadOptions, pace: Loop) -> Result<Load> {
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

impl Shared {
    fn record(&self, sample: Sample) {
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(sample);
        self.grew.notify_all();
    }

    fn full(&self, opts: &LoadOptions) -> bool {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        samples.len() as u64 >= opts.max_requests
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_loaded() {
        let o = LoadOptions::new("192.0.2.1:80".parse().unwrap());
        assert!(Load::start(o).is_err());
    }
}
