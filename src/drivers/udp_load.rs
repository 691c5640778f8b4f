//! The UDP load client of G09, and the hand-over server's UDP mode as a
//! [`Setup`](crate::drivers::handover::Setup) asks for it.
//!
//! Several client sockets (each its own source port, so that the kernel's
//! SO_REUSEPORT hash spreads them over every socket of a group) send
//! numbered datagrams, `seq=N`, at a constant rate in all; the server
//! answers `seq=N pid=P gen=G`, and each answer is matched to its datagram
//! by its number. A datagram still unanswered `answer_timeout` after the
//! last one was sent is lost. Bounded in count and in time, loopback only;
//! one thread, joined when the load stops or is dropped.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::Serialize;

use crate::drivers::load::Answer;
use crate::targets::handover::mono_ns;
use crate::targets::protocol::field;

/// The hand-over server in its UDP mode: each stopping generation finishes
/// its work for `finish_ms`, no longer reading, before it closes its
/// sockets.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct UdpMode {
    pub finish_ms: u64,
}

impl UdpMode {
    /// The server's arguments for it.
    pub fn args(&self) -> Vec<String> {
        vec![
            "--udp".into(),
            "--udp-finish-ms".into(),
            self.finish_ms.to_string(),
        ]
    }
}

#[derive(Clone, Debug)]
pub struct UdpOptions {
    /// The server (loopback only).
    pub addr: SocketAddr,
    /// Client sockets; datagram `seq` goes out on socket `seq % sockets`.
    pub sockets: usize,
    /// Datagrams per second, in all.
    pub rate: f64,
    /// Stop sending after this many datagrams...
    pub max_datagrams: u64,
    /// ...or after this long, whichever comes first.
    pub max_duration: Duration,
    /// After the last datagram, how long the answers may take.
    pub answer_timeout: Duration,
}

impl UdpOptions {
    pub fn new(addr: SocketAddr, sockets: usize, rate: f64) -> UdpOptions {
        UdpOptions {
            addr,
            sockets,
            rate,
            max_datagrams: 200_000,
            max_duration: Duration::from_secs(120),
            answer_timeout: Duration::from_secs(2),
        }
    }
}

/// Who answered a datagram, and when (CLOCK_MONOTONIC).
#[derive(Clone, Debug, Serialize)]
pub struct Answered {
    pub pid: i32,
    pub gen: Option<u32>,
    pub at_ns: u64,
}

/// One numbered datagram.
#[derive(Clone, Debug, Serialize)]
pub struct Datagram {
    pub seq: u64,
    /// The client socket it went out on.
    pub socket: usize,
    /// When it was sent (CLOCK_MONOTONIC, the clock of the server's
    /// `at_ns` and of [`Switch`](crate::drivers::handover::Switch)).
    pub sent_ns: u64,
    pub answer: Option<Answered>,
}

/// Everything the load saw.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UdpReport {
    /// Every datagram, in the order of their numbers.
    pub datagrams: Vec<Datagram>,
    /// Answers to a datagram already answered.
    pub duplicates: usize,
    /// Answers that match no datagram sent (or came on another socket).
    pub strange: Vec<String>,
    /// Errors of `send` and `recv` (an ICMP port unreachable, say).
    pub errors: usize,
    pub first_errors: Vec<String>,
}

/// Datagrams sent in a span of time, and what became of them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Tally {
    pub sent: usize,
    pub answered: usize,
    pub lost: usize,
    /// Answers by generation.
    pub by_gen: std::collections::BTreeMap<u32, usize>,
}

impl UdpReport {
    /// The datagrams sent from `from_ns` (included) to `to_ns` (excluded).
    pub fn tally(&self, from_ns: u64, to_ns: u64) -> Tally {
        let mut t = Tally::default();
        for d in self
            .datagrams
            .iter()
            .filter(|d| d.sent_ns >= from_ns && d.sent_ns < to_ns)
        {
            t.sent += 1;
            match &d.answer {
                Some(a) => {
                    t.answered += 1;
                    *t.by_gen.entry(a.gen.unwrap_or(0)).or_default() += 1;
                }
                None => t.lost += 1,
            }
        }
        t
    }

    pub fn lost(&self) -> impl Iterator<Item = &Datagram> {
        self.datagrams.iter().filter(|d| d.answer.is_none())
    }

    /// The slowest answer, in milliseconds.
    pub fn slowest_ms(&self) -> f64 {
        self.datagrams
            .iter()
            .filter_map(|d| Some(d.answer.as_ref()?.at_ns.saturating_sub(d.sent_ns)))
            .max()
            .unwrap_or(0) as f64
            / 1e6
    }
}

struct Shared {
    report: Mutex<UdpReport>,
    /// Datagrams not answered yet.
    outstanding: std::sync::atomic::AtomicUsize,
    grew: Condvar,
    /// Stop sending, collect the last answers, end.
    stop: AtomicBool,
    /// End now (the load is dropped without a stop).
    abandon: AtomicBool,
}

impl Shared {
    fn report(&self) -> MutexGuard<'_, UdpReport> {
        self.report.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running UDP load. Dropping it ends the thread and waits for it.
pub struct UdpLoad {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl UdpLoad {
    /// Opens the client sockets and starts sending. Refuses any address
    /// outside loopback.
    pub fn start(opts: UdpOptions) -> Result<UdpLoad> {
        if !opts.addr.ip().is_loopback() {
            bail!(
                "the UDP load client sends to loopback only (127.0.0.0/8, ::1), not {}",
                opts.addr
            );
        }
        if !(opts.rate > 0.0 && opts.rate <= 100_000.0) {
            bail!("the rate must be above 0 and at most 100,000 datagrams/s");
        }
        if opts.sockets == 0 || opts.sockets > 256 {
            bail!("sockets must be 1 to 256, not {}", opts.sockets);
        }
        let local = if opts.addr.is_ipv4() {
            "127.0.0.1:0"
        } else {
            "[::1]:0"
        };
        let mut sockets = Vec::new();
        for _ in 0..opts.sockets {
            let s = UdpSocket::bind(local).context("a UDP client socket")?;
            // Connected: the kernel passes on only the server's answers, and
            // an ICMP error (nobody bound) comes back as an error of recv.
            s.connect(opts.addr)
                .with_context(|| format!("connect to {}", opts.addr))?;
            s.set_nonblocking(true)?;
            sockets.push(s);
        }
        let shared = Arc::new(Shared {
            report: Mutex::new(UdpReport::default()),
            outstanding: Default::default(),
            grew: Condvar::new(),
            stop: AtomicBool::new(false),
            abandon: AtomicBool::new(false),
        });
        let s = Arc::clone(&shared);
        let thread = std::thread::spawn(move || worker(&s, &opts, &sockets));
        Ok(UdpLoad {
            shared,
            thread: Some(thread),
        })
    }

    /// Waits until `n` datagrams sent at or after `since_ns` have an answer
    /// that satisfies `pred`. Fails at the deadline, or when the load has
    /// ended, with what it saw.
    pub fn wait_answered(
        &self,
        since_ns: u64,
        n: usize,
        what: &str,
        pred: impl Fn(&Answered) -> bool,
    ) -> Result<()> {
        let limit = crate::harness::process::deadline();
        let until = Instant::now() + limit;
        let mut r = self.shared.report();
        loop {
            // The datagrams are in the order they were sent: the first
            // one at or after `since_ns` starts the span.
            let from = r.datagrams.partition_point(|d| d.sent_ns < since_ns);
            let span = &r.datagrams[from..];
            let seen = span
                .iter()
                .filter(|d| d.answer.as_ref().is_some_and(&pred))
                .count();
            if seen >= n {
                return Ok(());
            }
            let ended = self.thread.as_ref().is_none_or(|t| t.is_finished());
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || ended {
                let answered = span.iter().filter(|d| d.answer.is_some()).count();
                bail!(
                    "{} waiting for {n} answers where {what} (saw {seen}); since then {} datagrams sent, {answered} answered",
                    if ended {
                        "the UDP load ended".to_string()
                    } else {
                        format!("timed out after {:.1} s", limit.as_secs_f64())
                    },
                    span.len()
                );
            }
            r = self
                .shared
                .grew
                .wait_timeout(r, left.min(Duration::from_millis(50)))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Stops sending, waits for the last answers (until every datagram is
    /// answered, or `answer_timeout` after the last one went), and returns
    /// what the load saw.
    pub fn stop(mut self) -> UdpReport {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut *self.shared.report())
    }
}

impl Drop for UdpLoad {
    fn drop(&mut self) {
        self.shared.abandon.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn worker(shared: &Shared, opts: &UdpOptions, sockets: &[UdpSocket]) {
    let t0 = Instant::now();
    let due = |seq: u64| t0 + Duration::from_secs_f64(seq as f64 / opts.rate);
    let mut next: u64 = 0;
    let mut ended: Option<Instant> = None;
    while !shared.abandon.load(Ordering::SeqCst) {
        let now = Instant::now();
        if ended.is_none()
            && (shared.stop.load(Ordering::SeqCst)
                || next >= opts.max_datagrams
                || now >= t0 + opts.max_duration)
        {
            ended = Some(now);
        }
        // Wait for answers until the next datagram is due; at most 10 ms,
        // so that a stop is noticed.
        let wait = match ended {
            None => {
                while next < opts.max_datagrams && due(next) <= now {
                    send(shared, sockets, next);
                    next += 1;
                }
                due(next).saturating_duration_since(Instant::now())
            }
            Some(at) => {
                if shared.outstanding.load(Ordering::SeqCst) == 0
                    || at.elapsed() >= opts.answer_timeout
                {
                    break;
                }
                Duration::from_millis(10)
            }
        };
        let ms = wait.as_millis().clamp(1, 10) as u16;
        let mut fds: Vec<PollFd> = sockets
            .iter()
            .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
            .collect();
        if poll(&mut fds, PollTimeout::from(ms)).unwrap_or(0) > 0 {
            let readable: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            for (i, s) in sockets.iter().enumerate().filter(|(i, _)| readable[*i]) {
                receive(shared, s, i, sockets.len());
            }
        }
    }
    shared.grew.notify_all();
}

fn error(r: &mut UdpReport, what: String) {
    r.errors += 1;
    if r.first_errors.len() < 5 {
        r.first_errors.push(what);
    }
}

/// Sends datagram `seq` on its socket. A datagram that `send` refused is
/// recorded all the same: never answered, it counts as lost.
fn send(shared: &Shared, sockets: &[UdpSocket], seq: u64) {
    let socket = (seq % sockets.len() as u64) as usize;
    let sent_ns = mono_ns();
    let result = sockets[socket].send(format!("seq={seq}").as_bytes());
    let mut r = shared.report();
    if let Err(e) = result {
        error(&mut r, format!("send seq={seq}: {e}"));
    }
    r.datagrams.push(Datagram {
        seq,
        socket,
        sent_ns,
        answer: None,
    });
    shared.outstanding.fetch_add(1, Ordering::SeqCst);
}

/// Reads every answer waiting on client socket `i` and matches each to
/// its datagram.
fn receive(shared: &Shared, s: &UdpSocket, i: usize, sockets: usize) {
    let mut buf = [0u8; 512];
    loop {
        let n = match s.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => {
                error(&mut shared.report(), format!("recv on socket {i}: {e}"));
                continue;
            }
        };
        let at_ns = mono_ns();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        let seq = field(&text, "seq").ok().and_then(|v| v.parse::<u64>().ok());
        let who = Answer::parse(&text);
        let mut r = shared.report();
        let (Some(seq), Some(who)) = (seq, who) else {
            r.strange.push(text);
            continue;
        };
        let len = r.datagrams.len() as u64;
        match r.datagrams.get_mut(seq as usize) {
            Some(d) if d.answer.is_some() => r.duplicates += 1,
            Some(d) if d.socket == i => {
                d.answer = Some(Answered {
                    pid: who.pid,
                    gen: who.gen,
                    at_ns,
                });
                shared.outstanding.fetch_sub(1, Ordering::SeqCst);
            }
            _ => r.strange.push(format!(
                "{text} (on socket {i} of {sockets}; {len} datagrams sent)"
            )),
        }
    }
    shared.grew.notify_all();
}

/// The receive queues of the UDP sockets bound to a port on 127.0.0.1, as
/// `/proc/net/udp` shows them (`rx_queue`: the memory of the datagrams the
/// kernel holds for a socket, not read yet), sampled every 5 ms by
/// a thread until [`QueueWatch::stop`]: the largest seen per socket inode.
/// Shown, not judged: a sample may catch a datagram on its way to a
/// reader as well as a queue that nobody reads. It also reads each
/// socket's `drops` (datagrams the kernel threw away because the receive
/// buffer was full), for the server's sockets and the clients' (connected
/// to the port): a loss by overflow is not a loss on close.
pub struct QueueWatch {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Watched>>,
}

/// What a [`QueueWatch`] saw, per socket inode.
#[derive(Default)]
pub struct Watched {
    /// The largest `rx_queue` of the server's sockets.
    pub queues: std::collections::BTreeMap<u64, u32>,
    /// The largest `drops` of the server's and the clients' sockets.
    pub drops: std::collections::BTreeMap<u64, u64>,
}

impl Watched {
    pub fn dropped(&self) -> u64 {
        self.drops.values().sum()
    }
}

/// `(local port, remote port, inode, drops)` of each line of
/// /proc/net/udp and /proc/net/udp6 (drops is the last column, which the
/// procfs crate does not read).
fn udp_drops() -> Vec<(u16, u16, u64, u64)> {
    let port = |a: &str| {
        a.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
            .unwrap_or(0)
    };
    ["/proc/net/udp", "/proc/net/udp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|l| {
                    let w: Vec<&str> = l.split_whitespace().collect();
                    let (inode, drops) = (w.get(9)?.parse().ok()?, w.last()?.parse().ok()?);
                    Some((port(w.get(1)?), port(w.get(2)?), inode, drops))
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

impl QueueWatch {
    pub fn start(port: u16) -> QueueWatch {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut seen = Watched::default();
            while !flag.load(Ordering::SeqCst) {
                for e in procfs::net::udp().unwrap_or_default() {
                    if e.local_address.port() == port && e.local_address.ip().is_loopback() {
                        let q = seen.queues.entry(e.inode).or_insert(0);
                        *q = e.rx_queue.max(*q);
                    }
                }
                for (local, remote, inode, drops) in udp_drops() {
                    if local == port || remote == port {
                        let d = seen.drops.entry(inode).or_insert(0);
                        *d = drops.max(*d);
                    }
                }
                // A sampling rate, not a wait for something: often enough
                // to see a queue that grows for a hundred milliseconds,
                // seldom enough to cost an emulated guest little.
                std::thread::sleep(Duration::from_millis(5));
            }
            seen
        });
        QueueWatch {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops sampling: the largest `rx_queue` and `drops` seen per socket.
    pub fn stop(mut self) -> Watched {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for QueueWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_on_a_full_receive_buffer_are_read() {
        let rx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        nix::sys::socket::setsockopt(&rx, nix::sys::socket::sockopt::RcvBuf, &1024).unwrap();
        let port = rx.local_addr().unwrap().port();
        let tx = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for _ in 0..200 {
            let _ = tx.send_to(&[0u8; 512], ("127.0.0.1", port));
        }
        let drops: u64 = udp_drops()
            .into_iter()
            .filter(|(local, ..)| *local == port)
            .map(|(.., d)| d)
            .sum();
        assert!(drops > 0, "no drops read for port {port}");
    }

    #[test]
    fn only_loopback_is_loaded() {
        let o = UdpOptions::new("192.0.2.1:9".parse().unwrap(), 2, 10.0);
        assert!(UdpLoad::start(o).is_err());
    }

    /// Against an echo of the server's format on a plain socket: every
    /// datagram answered, each once; then the echo stops answering, and
    /// what follows is lost.
    #[test]
    fn answers_are_matched_by_number_and_the_unanswered_are_lost() {
        let echo = UdpSocket::bind("127.0.0.1:0").unwrap();
        echo.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut o = UdpOptions::new(echo.local_addr().unwrap(), 3, 2_000.0);
        o.max_datagrams = 30;
        o.answer_timeout = Duration::from_millis(200);
        let load = UdpLoad::start(o).unwrap();
        let mut buf = [0u8; 512];
        // All 30 read (so all were sent), the first 20 answered.
        for k in 0..30 {
            let (n, from) = echo.recv_from(&mut buf).unwrap();
            let text = String::from_utf8_lossy(&buf[..n]);
            if k < 20 {
                echo.send_to(format!("{text} pid=7 gen=3").as_bytes(), from)
                    .unwrap();
            }
        }
        load.wait_answered(0, 20, "gen 3", |a| a.gen == Some(3))
            .unwrap();
        let r = load.stop();
        let all = r.tally(0, u64::MAX);
        assert_eq!((all.sent, all.answered, all.lost), (30, 20, 10));
        assert_eq!(all.by_gen.get(&3), Some(&20));
        assert!(r.lost().all(|d| d.seq >= 20));
        assert_eq!((r.duplicates, r.strange.len(), r.errors), (0, 0, 0));
    }
}
