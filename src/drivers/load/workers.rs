//! The client threads that need no scheduler: the closed loop (one request
//! after another on new connections) and the keep-alive clients.

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::exchange::{connect, exchange, Exchanged};
use super::samples::{Kind, Sample};
use super::{KeepAlive, LoadOptions, Shared};

/// A closed loop: one request after another on new connections, as fast
/// as the answers come or, with a rate in an emulated guest
/// ([`Loop::Closed`](super::Loop::Closed)), each thread's request k due at (k × threads + me) / rate and sent at
/// once when late. Latency counts from each send.
pub(super) fn worker(shared: &Shared, opts: &LoadOptions, t0: Instant, me: usize) {
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
pub(super) fn one_request(
    shared: &Shared,
    opts: &LoadOptions,
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

/// One keep-alive client: a connection carried from request to request
/// until the server closes it (or it fails), then a new one.
pub(super) fn keep_alive_worker(
    shared: &Shared,
    opts: &LoadOptions,
    ka: KeepAlive,
    t0: Instant,
    me: usize,
) {
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
        if reused && ka.retry && x.outcome.kind != Kind::Completed && !x.answered {
            retried = true;
            let mut fresh = None;
            x = keep_alive_request(opts, addr, Instant::now(), &mut fresh);
            conn = fresh;
        }
        drop(counted);
        if !x.reusable {
            conn = None;
        }
        failed = x.outcome.kind != Kind::Completed;
        shared.record(x.sample(start, began.elapsed(), reused && !retried, retried));
    }
}

/// One request on `conn` (a new connection if it is `None`, left in it).
fn keep_alive_request(
    opts: &LoadOptions,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::load::test_server::{quit, serial_server, OK};
    use crate::drivers::load::{tally, Load, Loop};

    #[test]
    fn a_closed_loop_keeps_its_pace_and_counts_from_each_send() {
        // What an emulated guest runs: 100 requests a second from 2
        // threads; the server freezes 300 ms before its 10th answer.
        let stall = Duration::from_millis(300);
        let (addr, server) = serial_server(OK, 10, stall, 400);
        let mut o = LoadOptions::new(addr);
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
}
