//! The hand-over server, the target of the graceful-restart experiments
//! (G01–G06, `swaplab bench handover`): `src/bin/swaplab-handover.rs`.
//!
//! It serves the article's workload: every connection downloads a body of
//! `--body` bytes whose first line names the serving process
//! (`pid=N gen=G`), spread over `--download-ms` so that downloads are in
//! flight when a restart comes. One process, one thread per download; the
//! main thread polls the listening sockets, the signals (a signalfd), stdin
//! and, for the SCM_RIGHTS hand-over, a Unix control socket.
//!
//! How a new generation gets the listening sockets decides the strategy:
//!
//! | strategy | how |
//! |---|---|
//! | stop-start | TERM: the old process exits at once, cutting its downloads; the harness then starts a new one that binds again |
//! | scm-rights | the new process (`--takeover PATH`) connects to the old one's control socket (`--control PATH`) and receives every listening fd in one `sendmsg` (SCM_RIGHTS); it starts accepting and says `ready`; only then the old one stops accepting, removes the control socket, says `released`, drains its downloads and exits; the new one binds the control socket |
//! | reuseport | both bind their own socket with SO_REUSEPORT (`--reuseport`); QUIT makes the old one close its socket and drain |
//! | exec | USR2: fork + execve of the own executable with the fds in `SWAPLAB_LISTEN_FDS` (everything built before the fork: this process has a thread per download); QUIT the old one |
//! | activation | a holder (`--holder`) binds once and runs each generation with the fds from 3 (`LISTEN_FDS`, `LISTEN_PID`, systemd's protocol); HUP starts the next one, which says `READY=1` on `NOTIFY_SOCKET`, and the holder QUITs the previous. Like systemd's `NotifyAccess=main`, the holder believes `READY=1` only from a generation it started (the sender's pid from SCM_CREDENTIALS, not the message's `MAINPID=`) |
//!
//! Signals: TERM/INT exit now; QUIT stops accepting, drains, exits; USR2
//! starts the next generation by exec. Stdin commands: `pause` and
//! `resume` (accepting), and the end of stdin ends the process (the
//! harness's lifeline). Every event is one line on stdout
//! (`notice pid=N: …`); `accepting pid=N gen=G at_ns=T` carries the
//! CLOCK_MONOTONIC time, which the harness compares with its own.
//!
//! Failure paths (what users of tableflip, Envoy and HAProxy report): if
//! the new process closes the control connection before `ready` (it
//! crashed), or says nothing within `--handover-timeout-ms` (it hangs; the
//! old one kills it), the old one keeps serving. A take-over requested
//! while one is in progress is answered `busy` and the requester exits 3.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use clap::{Args, Parser, ValueEnum};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollTimeout};
use nix::sys::signal::{sigprocmask, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    self, sockopt, AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage,
};

use crate::targets::agent::emit;
use crate::targets::keepalive::Drain;

mod holder;
mod server;

pub(crate) use server::{send_fds, take_over};

/// Exit status of a new process whose take-over was refused or failed.
pub const TAKEOVER_FAILED: i32 = 3;

/// Fault injection for the failure-path experiments.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Fault {
    /// Receive the sockets, then abort before saying `ready`.
    CrashBeforeReady,
    /// Receive the sockets, then never say `ready` (until stdin ends).
    HangBeforeReady,
}

#[derive(Parser, Debug, Clone)]
#[command(
    name = "swaplab-handover",
    about = "The graceful-restart target: serves downloads on loopback and hands its listening sockets over"
)]
pub struct Opts {
    /// Address to listen on (loopback only); repeat for several listeners.
    #[arg(long = "listen", default_value = "127.0.0.1:0")]
    pub listen: Vec<SocketAddr>,
    /// Bytes each download sends (the body).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(64..=1 << 30))]
    pub body: u64,
    /// Spread each body over this many milliseconds (0: as fast as the
    /// client reads).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub download_ms: u64,
    /// Set SO_REUSEPORT before binding.
    #[arg(long)]
    pub reuseport: bool,
    /// Serve take-over requests on this Unix socket (SCM_RIGHTS).
    #[arg(long)]
    pub control: Option<PathBuf>,
    /// Take the listening sockets over from the process behind this Unix
    /// socket instead of binding (then serve the control socket there).
    #[arg(long)]
    pub takeover: Option<PathBuf>,
    /// Listen, but do not accept until `resume` arrives on stdin.
    #[arg(long)]
    pub paused: bool,
    /// How long an old process waits for the new one's `ready`.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub handover_timeout_ms: u64,
    /// How long a stopping process lets its downloads finish.
    #[arg(long, default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(0..=600_000))]
    pub drain_timeout_ms: u64,
    /// Take this long to start before binding or taking the sockets over
    /// (a real server reads its configuration, warms caches...).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub startup_ms: u64,
    /// Misbehave on purpose during a take-over.
    #[arg(long, value_enum)]
    pub fault: Option<Fault>,
    /// Be the socket holder of the activation strategy: bind, and run each
    /// generation of the server with the sockets from fd 3.
    #[arg(long)]
    pub holder: bool,
    /// Keep connections open for request after request (each answer is
    /// `--body` bytes at once) instead of one download per connection.
    #[arg(long)]
    pub keep_alive: bool,
    /// With --keep-alive: how a stopping process ends the connections it
    /// holds.
    #[arg(long, value_enum, default_value = "close", requires = "keep_alive")]
    pub drain: Drain,
    /// With --keep-alive: how long a connection may stay idle.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub idle_timeout_ms: u64,
    /// The UDP mode (G09): `--udp`, `--udp-finish-ms`.
    #[command(flatten)]
    pub udp: UdpOpts,
}

/// The options of the UDP mode (flattened into the server's [`Opts`]).
#[derive(Args, Debug, Clone)]
pub struct UdpOpts {
    /// Serve UDP: echo numbered datagrams (`seq=N` answered `seq=N pid=P
    /// gen=G`) on every `--listen` address (reuseport and scm-rights
    /// strategies).
    #[arg(long = "udp")]
    pub enabled: bool,
    /// How long a stopping UDP server goes on finishing its work, no longer
    /// reading, before it closes its sockets.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub udp_finish_ms: u64,
}

/// CLOCK_MONOTONIC in nanoseconds: the clock the harness's `Instant` reads
/// too, so times printed by a target compare with the harness's.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(crate) fn fail(msg: &str) -> ! {
    eprintln!("swaplab-handover: {msg}");
    std::process::exit(2)
}

pub(crate) fn log(me: i32, what: &str) {
    emit(&format!("notice pid={me}: {what}"));
}

/// Blocks the handled signals (before any thread starts, so every thread
/// inherits the mask) and returns a signalfd for them.
pub(crate) fn signal_fd() -> SignalFd {
    let mask = crate::targets::server::signal_set(&[
        Signal::SIGUSR2,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
    ]);
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None) {
        fail(&format!("cannot block signals: {e}"));
    }
    SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .unwrap_or_else(|e| fail(&format!("signalfd: {e}")))
}

/// Binds a listening socket: SO_REUSEADDR (a restart must not wait for the
/// old connections' TIME_WAIT), SO_REUSEPORT if asked, a backlog of 1024,
/// not close-on-exec (the exec strategy passes it on), non-blocking.
pub fn bind_listener(addr: SocketAddr, reuseport: bool) -> Result<TcpListener, String> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let fd = socket::socket(family, SockType::Stream, SockFlag::SOCK_NONBLOCK, None)
        .map_err(|e| format!("socket: {e}"))?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true).map_err(|e| format!("SO_REUSEADDR: {e}"))?;
    if reuseport {
        socket::setsockopt(&fd, sockopt::ReusePort, &true)
            .map_err(|e| format!("SO_REUSEPORT: {e}"))?;
    }
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)
            .map_err(|e| format!("IPV6_V6ONLY: {e}"))?;
    }
    let sa = SockaddrStorage::from(addr);
    socket::bind(fd.as_raw_fd(), &sa).map_err(|e| {
        let hint = if e == Errno::EADDRINUSE {
            " (the port is in use: another process listens there; both would need --reuseport)"
        } else if e == Errno::EADDRNOTAVAIL && addr.is_ipv6() {
            " (no IPv6 loopback here: is IPv6 disabled?)"
        } else {
            ""
        };
        format!("cannot listen on {addr}: {}{hint}", std::io::Error::from(e))
    })?;
    socket::listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))
        .map_err(|e| format!("listen: {e}"))?;
    Ok(TcpListener::from(fd))
}

/// Polls `fds`; which of them have something to say.
pub(crate) fn poll_ready(fds: &mut [PollFd], timeout: PollTimeout) -> Vec<bool> {
    match poll(fds, timeout) {
        Ok(_) | Err(Errno::EINTR) => {}
        Err(e) => fail(&format!("poll: {e}")),
    }
    fds.iter()
        .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
        .collect()
}

/// Binds every `--listen` address, or fails with the reason. A port 0
/// after the first listener means the first one's port (one port on
/// 127.0.0.1 and ::1).
fn bind_all(addrs: &[SocketAddr], reuseport: bool) -> Vec<TcpListener> {
    bind_each(
        addrs,
        |a| bind_listener(a, reuseport),
        TcpListener::local_addr,
    )
}

/// Binds every address with `bind`, or fails with its reason; a port 0
/// after the first socket means the first one's port (`local` reads it).
/// The TCP and the UDP servers both bind this way.
pub(crate) fn bind_each<S>(
    addrs: &[SocketAddr],
    bind: impl Fn(SocketAddr) -> Result<S, String>,
    local: impl Fn(&S) -> std::io::Result<SocketAddr>,
) -> Vec<S> {
    let mut bound: Vec<S> = Vec::new();
    for a in addrs {
        let mut a = *a;
        if a.port() == 0 {
            if let Some(first) = bound.first().and_then(|s| local(s).ok()) {
                a.set_port(first.port());
            }
        }
        bound.push(bind(a).unwrap_or_else(|e| fail(&e)));
    }
    bound
}

fn describe(ls: &[TcpListener]) -> String {
    ls.iter()
        .map(|l| {
            format!(
                "fd={} addr={}",
                l.as_raw_fd(),
                l.local_addr().map(|a| a.to_string()).unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The command line, checked: loopback addresses only. The program's entry
/// point (`src/bin/swaplab-handover.rs`) then runs the UDP mode
/// (`crate::targets::handover_udp`) or [`main`].
pub fn options() -> Opts {
    let opts = Opts::parse();
    for a in &opts.listen {
        if !a.ip().is_loopback() {
            fail(&format!(
                "--listen {a}: swaplab listens on loopback only (127.0.0.0/8, ::1)"
            ));
        }
    }
    opts
}

/// The TCP server (or the activation strategy's holder).
pub fn main(opts: Opts) -> ! {
    if opts.holder {
        holder::holder(opts)
    }
    server::serve_main(opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_refuse_nonsense() {
        let o = Opts::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--body",
            "4096",
        ])
        .unwrap();
        assert_eq!(o.listen.len(), 2);
        assert!(Opts::try_parse_from(["x", "--body", "1"]).is_err());
        assert!(Opts::try_parse_from(["x", "--listen", "nowhere"]).is_err());
        assert!(Opts::try_parse_from(["x", "--fault", "explode"]).is_err());
    }
}
