//! The open loop: a scheduler that hands each request its slot, and the
//! pool of client threads that grows while every thread is busy.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::workers::one_request;
use super::{LoadOptions, Shared, MAX_POOL};

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
pub(super) fn scheduler(shared: &Arc<Shared>, opts: &LoadOptions, rate: f64, t0: Instant) {
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
    opts: &LoadOptions,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drivers::load::test_server::{quit, serial_server, OK};
    use crate::drivers::load::{tally, Kind, Load, Sample};

    #[test]
    fn a_stall_is_counted_from_each_request_s_slot() {
        // 200 requests a second for at most 1.5 s; the server freezes for
        // 400 ms before its 40th answer (about 0.2 s in).
        let stall = Duration::from_millis(400);
        let (addr, server) = serial_server(OK, 40, stall, 400);
        let mut o = LoadOptions::new(addr);
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
}
