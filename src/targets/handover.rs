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

use std::ffi::CString;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, ValueEnum};
use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, sigprocmask, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::socket::{
    self, recvmsg, sendmsg, sockopt, AddressFamily, Backlog, ControlMessage, ControlMessageOwned,
    MsgFlags, SockFlag, SockType, SockaddrStorage,
};
use nix::unistd::{getpid, Pid};

use crate::targets::agent::emit;
use crate::targets::generation::{
    adopt_listeners, environment_without, own_command, own_generation, reap_ended_child,
    spawn_new_binary, GENERATION, LISTEN_FDS,
};
use crate::targets::keepalive::{self, Drain, DrainSignal};

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
    let mut ls: Vec<TcpListener> = Vec::new();
    for a in addrs {
        let mut a = *a;
        if a.port() == 0 {
            if let Some(first) = ls.first().and_then(|l| l.local_addr().ok()) {
                a.set_port(first.port());
            }
        }
        ls.push(bind_listener(a, reuseport).unwrap_or_else(|e| fail(&e)));
    }
    ls
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
        holder(opts)
    }
    serve_main(opts)
}

// ---- the server ---------------------------------------------------------

struct Handover {
    conn: UnixStream,
    peer: i32,
    until: Instant,
    buf: Vec<u8>,
}

struct Server {
    me: i32,
    gen: u32,
    opts: Opts,
    exe: PathBuf,
    argv: Vec<CString>,
    listeners: Vec<TcpListener>,
    signals: SignalFd,
    accepting: bool,
    control: Option<(UnixListener, PathBuf)>,
    handover: Option<Handover>,
    exec_child: Option<Pid>,
    /// Downloads being served, and a pipe each one writes a byte to when it
    /// ends (so the main thread's poll sees it).
    active: Arc<AtomicUsize>,
    done_rx: OwnedFd,
    done_tx: Arc<OwnedFd>,
    draining: Option<Instant>,
    /// Tells the keep-alive connections that the drain began.
    drain_signal: DrainSignal,
}

fn serve_main(opts: Opts) -> ! {
    let me = getpid().as_raw();
    let signals = signal_fd();
    let (exe, argv) = own_command(&[]).unwrap_or_else(|e| fail(&e));
    let mut gen = own_generation();
    if opts.startup_ms > 0 {
        log(me, &format!("starting up ({} ms)", opts.startup_ms));
        std::thread::sleep(Duration::from_millis(opts.startup_ms));
    }
    let mut takeover_conn = None;
    let listeners = if let Some(path) = &opts.takeover {
        let (ls, old_gen, conn) = take_over(me, path, &opts);
        if std::env::var_os(GENERATION).is_none() {
            gen = old_gen + 1;
        }
        takeover_conn = Some(conn);
        ls
    } else if let Some(ls) = activated(me) {
        ls
    } else if let Ok(list) = std::env::var(LISTEN_FDS) {
        let ls = adopt_listeners(&list).unwrap_or_else(|e| fail(&e));
        log(
            me,
            &format!("using inherited listening sockets {}", describe(&ls)),
        );
        ls
    } else {
        let ls = bind_all(&opts.listen, opts.reuseport);
        log(
            me,
            &format!(
                "listening {}{}",
                describe(&ls),
                if opts.reuseport {
                    " (SO_REUSEPORT)"
                } else {
                    ""
                }
            ),
        );
        ls
    };
    for l in &listeners {
        let _ = l.set_nonblocking(true);
        // Not close-on-exec: the exec strategy passes them on.
        let _ = nix::fcntl::fcntl(
            l,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()),
        );
    }
    let (done_rx, done_tx) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .unwrap_or_else(|e| fail(&format!("pipe: {e}")));
    let mut s = Server {
        me,
        gen,
        accepting: !opts.paused,
        opts,
        exe,
        argv,
        listeners,
        signals,
        control: None,
        handover: None,
        exec_child: None,
        active: Arc::new(AtomicUsize::new(0)),
        done_rx,
        done_tx: Arc::new(done_tx),
        draining: None,
        drain_signal: DrainSignal::new().unwrap_or_else(|e| fail(&format!("pipe: {e}"))),
    };
    if s.accepting {
        s.say_accepting();
    } else {
        log(me, "paused: listening, not accepting");
    }
    emit(&format!("ready pid={me}"));
    match takeover_conn {
        Some(conn) => s.finish_takeover(conn),
        None => {
            if let Some(path) = s.opts.control.clone() {
                s.bind_control(&path);
            }
        }
    }
    if let Ok(sock) = std::env::var("NOTIFY_SOCKET") {
        notify_ready(me, &sock);
    }
    s.run()
}

/// systemd's `sd_notify(READY=1)`: one datagram to `NOTIFY_SOCKET` (`@name`
/// for the abstract namespace).
fn notify_ready(me: i32, sock: &str) {
    let msg = format!("READY=1\nMAINPID={me}\n");
    let sent = UnixDatagram::unbound().and_then(|d| match sock.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            d.send_to_addr(msg.as_bytes(), &addr)
        }
        None => d.send_to(msg.as_bytes(), sock),
    });
    if let Err(e) = sent {
        log(me, &format!("cannot notify {sock}: {e}"));
    }
}

/// Socket activation: the fds from 3 when `LISTEN_PID` names this process.
fn activated(me: i32) -> Option<Vec<TcpListener>> {
    let pid: i32 = std::env::var("LISTEN_PID").ok()?.parse().ok()?;
    if pid != me {
        return None;
    }
    let n: i32 = std::env::var("LISTEN_FDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| fail("LISTEN_PID is set but LISTEN_FDS is not a number"));
    let list: String = (3..3 + n).map(|fd| format!("{fd};")).collect();
    let ls = adopt_listeners(&list).unwrap_or_else(|e| fail(&format!("LISTEN_FDS={n}: {e}")));
    // Like sd_listen_fds(unset_environment=1): children must not adopt them.
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDS");
    log(
        me,
        &format!(
            "activated with LISTEN_FDS={n} LISTEN_PID={me}: {}",
            describe(&ls)
        ),
    );
    Some(ls)
}

/// The new process's side of the SCM_RIGHTS hand-over, up to having the
/// sockets: returns them, the old generation and the open connection.
pub(crate) fn take_over(me: i32, path: &Path, opts: &Opts) -> (Vec<TcpListener>, u32, UnixStream) {
    let conn = UnixStream::connect(path).unwrap_or_else(|e| {
        eprintln!(
            "swaplab-handover: cannot reach the old process at {}: {e}",
            path.display()
        );
        std::process::exit(TAKEOVER_FAILED)
    });
    let mut data = [0u8; 256];
    let mut cmsg = nix::cmsg_space!([RawFd; 16]);
    let (n, fds) = {
        let mut iov = [IoSliceMut::new(&mut data)];
        let msg = recvmsg::<()>(
            conn.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .unwrap_or_else(|e| fail(&format!("recvmsg: {e}")));
        let mut fds = Vec::new();
        let mut messages = 0;
        if let Ok(cmsgs) = msg.cmsgs() {
            for c in cmsgs {
                if let ControlMessageOwned::ScmRights(v) = c {
                    messages += 1;
                    fds.extend(v);
                }
            }
        }
        (msg.bytes, (fds, messages))
    };
    let (fds, messages) = fds;
    let mut got = data[..n].to_vec();
    if fds.is_empty() {
        // A refusal is a text line: read the rest of it.
        let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
        let mut byte = [0u8; 1];
        while !got.contains(&b'\n') && got.len() < 4096 {
            match (&conn).read(&mut byte) {
                Ok(1) => got.push(byte[0]),
                _ => break,
            }
        }
    }
    let text = String::from_utf8_lossy(&got).trim().to_string();
    if fds.is_empty() {
        eprintln!(
            "swaplab-handover: the old process at {} did not hand over: {}",
            path.display(),
            if text.is_empty() {
                "it closed the connection"
            } else {
                &text
            }
        );
        std::process::exit(TAKEOVER_FAILED)
    }
    let old: i32 = crate::targets::protocol::field_i32(&text, "pid").unwrap_or(0);
    let old_gen: u32 = crate::targets::protocol::field_u32(&text, "gen").unwrap_or(0);
    // SAFETY: SCM_RIGHTS installed these fds in this process for us alone.
    let ls: Vec<TcpListener> = fds
        .iter()
        .map(|fd| unsafe { TcpListener::from_raw_fd(*fd) })
        .collect();
    log(
        me,
        &format!(
            "received {} fds in {messages} message from pid={old}: {}",
            ls.len(),
            describe(&ls)
        ),
    );
    match opts.fault {
        Some(Fault::CrashBeforeReady) => {
            log(me, "fault: crashing before ready");
            std::process::abort()
        }
        Some(Fault::HangBeforeReady) => {
            log(me, "fault: hanging before ready");
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            std::process::exit(1)
        }
        None => {}
    }
    (ls, old_gen, conn)
}

impl Server {
    fn log(&self, what: &str) {
        log(self.me, what);
    }

    fn say_accepting(&self) {
        emit(&format!(
            "accepting pid={} gen={} at_ns={} {}",
            self.me,
            self.gen,
            mono_ns(),
            describe(&self.listeners)
        ));
    }

    /// After `ready`: tell the old process, wait for it to let go, then
    /// take its place on the control socket.
    fn finish_takeover(&mut self, mut conn: UnixStream) {
        let path = self
            .opts
            .control
            .clone()
            .or_else(|| self.opts.takeover.clone())
            .expect("takeover is set");
        let limit = Duration::from_millis(self.opts.handover_timeout_ms);
        let _ = conn.set_read_timeout(Some(limit));
        let answer = conn.write_all(b"ready\n").and_then(|_| {
            let mut line = String::new();
            BufReader::new(&conn).read_line(&mut line)?;
            Ok(line)
        });
        match answer {
            Ok(l) if l.trim() == "released" => {
                self.log("the old process released the sockets");
                self.bind_control(&path);
            }
            other => self.log(&format!(
                "the old process did not say `released` ({other:?}); no control socket"
            )),
        }
    }

    fn bind_control(&mut self, path: &Path) {
        let l = UnixListener::bind(path).unwrap_or_else(|e| {
            fail(&format!(
                "cannot serve take-overs on {}: {e}",
                path.display()
            ))
        });
        let _ = l.set_nonblocking(true);
        self.log(&format!("control socket {}", path.display()));
        self.control = Some((l, path.to_path_buf()));
    }

    fn drop_control(&mut self) {
        if let Some((_, path)) = self.control.take() {
            let _ = std::fs::remove_file(path);
        }
    }

    fn run(&mut self) -> ! {
        let stdin = std::io::stdin();
        let mut lines = Vec::<u8>::new();
        loop {
            let mut timeout = PollTimeout::NONE;
            let mut wait = |until: Instant| {
                let ms = until
                    .saturating_duration_since(Instant::now())
                    .as_millis()
                    .min(60_000) as u16;
                timeout = PollTimeout::from(ms);
            };
            if let Some(h) = &self.handover {
                wait(h.until);
            }
            if let Some(d) = self.draining {
                wait(d);
            }
            let mut fds = vec![
                PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.done_rx.as_fd(), PollFlags::POLLIN),
            ];
            let ctl = self.control.as_ref().map(|(l, _)| {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let hand = self.handover.as_ref().map(|h| {
                fds.push(PollFd::new(h.conn.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let first_listener = fds.len();
            if self.accepting {
                for l in &self.listeners {
                    fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                }
            }
            let ready = poll_ready(&mut fds, timeout);
            drop(fds);
            if ready[0] {
                while let Ok(Some(info)) = self.signals.read_signal() {
                    if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                        self.on_signal(sig, info.ssi_pid as i32);
                    }
                }
            }
            if ready[1] {
                self.on_stdin(&mut lines);
            }
            if ready[2] {
                let mut buf = [0u8; 256];
                let _ = nix::unistd::read(&self.done_rx, &mut buf);
            }
            if ctl.is_some_and(|i| ready[i]) {
                self.on_control();
            }
            if hand.is_some_and(|i| ready[i]) {
                self.on_handover_data();
            }
            if let Some(h) = &self.handover {
                if Instant::now() >= h.until {
                    let peer = h.peer;
                    self.handover = None;
                    let _ = kill(Pid::from_raw(peer), Signal::SIGKILL);
                    self.log(&format!(
                        "take-over by pid={peer} failed: no ready within {} ms; killed it; still serving",
                        self.opts.handover_timeout_ms
                    ));
                }
            }
            if self.accepting {
                for i in 0..self.listeners.len() {
                    if ready.get(first_listener + i) == Some(&true) {
                        self.accept_from(i);
                    }
                }
            }
            if let Some(until) = self.draining {
                let left = self.active.load(Ordering::SeqCst);
                if left == 0 {
                    self.log("drained: every download finished; exit");
                    std::process::exit(0)
                }
                if Instant::now() >= until {
                    self.log(&format!("drain timeout: {left} downloads cut; exit"));
                    std::process::exit(0)
                }
            }
        }
    }

    fn on_stdin(&mut self, lines: &mut Vec<u8>) {
        let mut buf = [0u8; 512];
        let n = match std::io::stdin().lock().read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return,
            Err(_) => 0,
        };
        if n == 0 {
            self.log("stdin closed: the harness is gone; exiting");
            self.drop_control();
            std::process::exit(1)
        }
        lines.extend_from_slice(&buf[..n]);
        while let Some(i) = lines.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = lines.drain(..=i).collect();
            match String::from_utf8_lossy(&line).trim() {
                "pause" => {
                    self.accepting = false;
                    self.log("paused: not accepting");
                }
                "resume" => {
                    if !self.accepting && self.draining.is_none() {
                        self.accepting = true;
                        self.say_accepting();
                    }
                }
                other => self.log(&format!("unknown command `{other}` (pause, resume)")),
            }
        }
    }

    fn on_signal(&mut self, sig: Signal, from: i32) {
        match sig {
            Signal::SIGTERM | Signal::SIGINT => {
                let cut = self.active.load(Ordering::SeqCst);
                self.log(&format!(
                    "signal {} received from pid={from}: exiting now, {cut} downloads cut",
                    sig.as_str()
                ));
                self.drop_control();
                std::process::exit(0)
            }
            Signal::SIGQUIT => self.stop(&format!("signal QUIT received from pid={from}")),
            Signal::SIGUSR2 => self.exec_next(from),
            Signal::SIGCHLD => {
                while let Some((pid, how)) = reap_ended_child() {
                    self.child_gone(pid, how)
                }
            }
            _ => {}
        }
    }

    fn child_gone(&mut self, pid: Pid, how: String) {
        if self.exec_child == Some(pid) {
            self.exec_child = None;
            self.log(&format!("new binary process child={pid} exited with {how}"));
        }
    }

    /// Stops accepting (the listening sockets closed here), then drains.
    fn stop(&mut self, why: &str) {
        if self.draining.is_some() {
            return;
        }
        self.accepting = false;
        self.listeners.clear();
        self.drop_control();
        self.drain_signal.begin();
        let n = self.active.load(Ordering::SeqCst);
        self.log(&format!(
            "{why}: stopped accepting, listening sockets closed; draining {n} downloads"
        ));
        self.draining = Some(Instant::now() + Duration::from_millis(self.opts.drain_timeout_ms));
    }

    fn exec_next(&mut self, from: i32) {
        if let Some(c) = self.exec_child {
            self.log(&format!(
                "signal USR2 received from pid={from}, ignoring: the new binary child={c} is running"
            ));
            return;
        }
        if self.draining.is_some() || self.listeners.is_empty() {
            return;
        }
        let fds: Vec<RawFd> = self.listeners.iter().map(|l| l.as_raw_fd()).collect();
        match spawn_new_binary(&self.exe, &self.argv, &fds, self.gen + 1) {
            Ok(child) => {
                self.exec_child = Some(child);
                self.log(&format!(
                    "signal USR2 received from pid={from}: new binary process child={child} started"
                ));
            }
            Err(e) => self.log(&format!("fork failed while changing binary: {e}")),
        }
    }

    fn on_control(&mut self) {
        let Some((l, _)) = &self.control else { return };
        let Ok((mut conn, _)) = l.accept() else {
            return;
        };
        let _ = conn.set_nonblocking(false);
        let peer = socket::getsockopt(&conn, sockopt::PeerCredentials)
            .map(|c| c.pid())
            .unwrap_or(0);
        if let Some(h) = &self.handover {
            // One write: the asker reads one message.
            let _ =
                conn.write_all(format!("busy pid={} taking-over={}\n", self.me, h.peer).as_bytes());
            self.log(&format!(
                "take-over request from pid={peer} refused: pid={} is taking over",
                h.peer
            ));
            return;
        }
        if self.draining.is_some() {
            let _ = conn.write_all(format!("busy pid={} stopping\n", self.me).as_bytes());
            return;
        }
        let fds: Vec<RawFd> = self.listeners.iter().map(|l| l.as_raw_fd()).collect();
        let text = format!(
            "fds n={} pid={} gen={} {}\n",
            fds.len(),
            self.me,
            self.gen,
            describe(&self.listeners).replace(", ", " ")
        );
        let iov = [IoSlice::new(text.as_bytes())];
        let cmsg = [ControlMessage::ScmRights(&fds)];
        match sendmsg::<()>(conn.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
            Ok(_) => {
                self.log(&format!(
                    "take-over request from pid={peer}: sent {} fds in one message ({})",
                    fds.len(),
                    describe(&self.listeners)
                ));
                let _ = conn.set_nonblocking(true);
                self.handover = Some(Handover {
                    conn,
                    peer,
                    until: Instant::now() + Duration::from_millis(self.opts.handover_timeout_ms),
                    buf: Vec::new(),
                });
            }
            Err(e) => self.log(&format!("take-over by pid={peer}: sendmsg failed: {e}")),
        }
    }

    fn on_handover_data(&mut self) {
        let Some(h) = self.handover.as_mut() else {
            return;
        };
        let mut buf = [0u8; 256];
        let n = match h.conn.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return,
            Err(_) => 0,
        };
        if n == 0 {
            let peer = h.peer;
            self.handover = None;
            self.log(&format!(
                "take-over by pid={peer} failed: it closed the connection before ready; still serving"
            ));
            return;
        }
        h.buf.extend_from_slice(&buf[..n]);
        if !h.buf.contains(&b'\n') {
            return;
        }
        let Some(mut h) = self.handover.take() else {
            return;
        };
        let peer = h.peer;
        if String::from_utf8_lossy(&h.buf).trim() != "ready" {
            self.log(&format!(
                "take-over by pid={peer} failed: it said {:?}; still serving",
                String::from_utf8_lossy(&h.buf)
            ));
            return;
        }
        self.stop(&format!("pid={peer} is ready and accepting"));
        let _ = h.conn.set_nonblocking(false);
        let _ = h.conn.write_all(b"released\n");
    }

    fn accept_from(&mut self, i: usize) {
        loop {
            let (conn, _) = match self.listeners[i].accept() {
                Ok(c) => c,
                Err(_) => return,
            };
            let _ = conn.set_nonblocking(false);
            self.active.fetch_add(1, Ordering::SeqCst);
            let active = Arc::clone(&self.active);
            let done = Arc::clone(&self.done_tx);
            let (me, gen, body, ms) = (self.me, self.gen, self.opts.body, self.opts.download_ms);
            let keep_alive = self.opts.keep_alive.then(|| {
                let idle = Duration::from_millis(self.opts.idle_timeout_ms);
                (self.opts.drain, self.drain_signal.watcher(), idle)
            });
            std::thread::spawn(move || {
                match keep_alive {
                    Some((drain, draining, idle)) => keepalive::Conn {
                        conn,
                        me,
                        gen,
                        body,
                        drain,
                        draining,
                        idle,
                    }
                    .serve(),
                    None => download(conn, me, gen, body, ms),
                }
                active.fetch_sub(1, Ordering::SeqCst);
                let _ = nix::unistd::write(done.as_fd(), b".");
            });
        }
    }
}

/// Serves one download: reads the request head, then sends `body` bytes
/// whose first line is `pid=N gen=G`, spread over `ms` milliseconds.
fn download(mut conn: TcpStream, me: i32, gen: u32, body: u64, ms: u64) {
    if !crate::targets::server::read_request_head(&mut conn) {
        return;
    }
    let head = format!(
        "HTTP/1.1 200 OK\r\nServer: swaplab-handover\r\nContent-Type: text/plain\r\n\
         Content-Length: {body}\r\nConnection: close\r\n\r\n"
    );
    if conn.write_all(head.as_bytes()).is_err() {
        return;
    }
    let first = format!("pid={me} gen={gen}\n");
    let mut chunk = vec![b'.'; 64 * 1024];
    chunk[..first.len()].copy_from_slice(first.as_bytes());
    let started = Instant::now();
    let mut sent: u64 = 0;
    while sent < body {
        let n = (body - sent).min(chunk.len() as u64) as usize;
        if conn.write_all(&chunk[..n]).is_err() {
            return;
        }
        if sent == 0 {
            chunk[..first.len()].fill(b'.');
        }
        sent += n as u64;
        if ms > 0 && sent < body {
            let due = Duration::from_millis(ms).mul_f64(sent as f64 / body as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
    let _ = conn.shutdown(std::net::Shutdown::Write);
}

// ---- the socket holder (activation) ---------------------------------------

struct Generation {
    pid: Pid,
    gen: u32,
    ready: bool,
    started: Instant,
}

fn holder(opts: Opts) -> ! {
    let me = getpid().as_raw();
    let signals = signal_fd();
    // Each generation runs the same command line without --holder.
    let (exe, argv) = own_command(&["--holder"]).unwrap_or_else(|e| fail(&e));
    let ls = bind_all(&opts.listen, false);
    for l in &ls {
        // The holder never accepts; the fds reach each generation by dup2.
        let _ = nix::fcntl::fcntl(
            l,
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        );
    }
    let name = format!("swaplab-notify-{me}");
    let notify = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| UnixDatagram::bind_addr(&a))
            .unwrap_or_else(|e| fail(&format!("cannot bind the notify socket @{name}: {e}")))
    };
    let _ = notify.set_nonblocking(true);
    // The kernel attaches the sender's real pid to every datagram
    // (SCM_CREDENTIALS): what a sender writes in MAINPID= proves nothing.
    if let Err(e) = socket::setsockopt(&notify, sockopt::PassCred, &true) {
        fail(&format!("SO_PASSCRED on the notify socket: {e}"))
    }
    log(
        me,
        &format!(
            "holder: listening {} (the holder never accepts)",
            describe(&ls)
        ),
    );
    let timeout = Duration::from_millis(opts.handover_timeout_ms);
    let mut h = Holder {
        me,
        exe,
        argv,
        ls,
        notify_name: name,
        gens: Vec::new(),
        next: 1,
    };
    h.start_generation();
    let stdin = std::io::stdin();
    let mut said_ready = false;
    loop {
        let starting = h
            .gens
            .iter()
            .find(|g| !g.ready)
            .map(|g| g.started + timeout);
        let pt = starting
            .map(|u| {
                PollTimeout::from(
                    u.saturating_duration_since(Instant::now())
                        .as_millis()
                        .min(60_000) as u16,
                )
            })
            .unwrap_or(PollTimeout::NONE);
        let mut fds = [
            PollFd::new(signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            PollFd::new(notify.as_fd(), PollFlags::POLLIN),
        ];
        let ready = poll_ready(&mut fds, pt);
        if ready[1] {
            let mut buf = [0u8; 512];
            if !matches!(stdin.lock().read(&mut buf), Ok(n) if n > 0) {
                log(
                    me,
                    "stdin closed: the harness is gone; killing the generations",
                );
                h.kill_all();
                std::process::exit(1)
            }
        }
        if ready[2] {
            while let Some((sender, text)) = recv_notify(&notify) {
                h.on_notify(sender, &text);
            }
            if !said_ready && h.gens.iter().any(|g| g.ready) {
                said_ready = true;
                emit(&format!("ready pid={me}"));
            }
        }
        if ready[0] {
            while let Ok(Some(info)) = signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGHUP) => h.restart(info.ssi_pid as i32),
                    Ok(Signal::SIGCHLD) => h.reap(),
                    Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) | Ok(Signal::SIGQUIT) => {
                        log(me, "holder: stopping every generation");
                        h.kill_all();
                        std::process::exit(0)
                    }
                    _ => {}
                }
            }
        }
        let late: Vec<Pid> = h
            .gens
            .iter()
            .filter(|g| !g.ready && g.started + timeout <= Instant::now())
            .map(|g| g.pid)
            .collect();
        for pid in late {
            let _ = kill(pid, Signal::SIGKILL);
            log(
                me,
                &format!(
                    "holder: generation pid={pid} not ready within {} ms; killed it; the previous one keeps serving",
                    opts.handover_timeout_ms
                ),
            );
            h.gens.retain(|g| g.pid != pid);
        }
    }
}

/// One datagram from the notify socket, with the sender's pid from the
/// credentials the kernel attached (SO_PASSCRED); `None` when nothing is
/// waiting.
fn recv_notify(notify: &UnixDatagram) -> Option<(Option<i32>, String)> {
    let mut buf = [0u8; 512];
    let mut cmsg = nix::cmsg_space!(libc::ucred);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = recvmsg::<()>(
        notify.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .ok()?;
    let sender = msg.cmsgs().ok().and_then(|mut c| {
        c.find_map(|m| match m {
            ControlMessageOwned::ScmCredentials(cred) => Some(cred.pid()),
            _ => None,
        })
    });
    let n = msg.bytes;
    Some((sender, String::from_utf8_lossy(&buf[..n]).to_string()))
}

struct Holder {
    me: i32,
    exe: PathBuf,
    argv: Vec<CString>,
    ls: Vec<TcpListener>,
    notify_name: String,
    gens: Vec<Generation>,
    next: u32,
}

impl Holder {
    fn start_generation(&mut self) {
        let gen = self.next;
        self.next += 1;
        let n = self.ls.len() as i32;
        let src: Vec<RawFd> = self.ls.iter().map(|l| l.as_raw_fd()).collect();
        let mut env = environment_without(&[
            "LISTEN_FDS",
            "LISTEN_PID",
            "NOTIFY_SOCKET",
            GENERATION,
            LISTEN_FDS,
        ]);
        env.extend(CString::new(format!("LISTEN_FDS={n}")));
        env.extend(CString::new(format!("NOTIFY_SOCKET=@{}", self.notify_name)));
        env.extend(CString::new(format!("{GENERATION}={gen}")));
        // LISTEN_PID must be the child's own pid: written into this
        // buffer in the child, after fork, without allocating.
        let mut pid_var = *b"LISTEN_PID=0000000000\0";
        let path = CString::new(self.exe.as_os_str().as_bytes()).unwrap_or_default();
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        let slot = envp.len();
        envp.push(std::ptr::null());
        envp.push(std::ptr::null());
        let argvp: Vec<*const libc::c_char> = self
            .argv
            .iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect();
        let parent = self.me;
        // SAFETY: the holder is single-threaded; the child uses only
        // async-signal-safe calls (dup, dup2, fcntl, prctl, getpid, execve,
        // _exit) and writes into buffers prepared before the fork.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
                // Move the sockets out of the way, then to 3, 4, ...
                let mut high = [0 as RawFd; 16];
                for (i, fd) in src.iter().enumerate().take(16) {
                    high[i] = libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100);
                }
                for (i, fd) in high.iter().enumerate().take(src.len().min(16)) {
                    libc::dup2(*fd, 3 + i as RawFd);
                    libc::fcntl(3 + i as RawFd, libc::F_SETFD, 0);
                }
                let mut pid = libc::getpid() as u32;
                let digits = &mut pid_var[11..21];
                for d in digits.iter_mut().rev() {
                    *d = b'0' + (pid % 10) as u8;
                    pid /= 10;
                }
                envp[slot] = pid_var.as_ptr().cast();
                libc::execve(path.as_ptr(), argvp.as_ptr(), envp.as_ptr());
                libc::_exit(127)
            },
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                log(
                    self.me,
                    &format!(
                        "holder: started generation gen={gen} pid={child} with LISTEN_FDS={n}"
                    ),
                );
                self.gens.push(Generation {
                    pid: child,
                    gen,
                    ready: false,
                    started: Instant::now(),
                });
            }
            Err(e) => log(self.me, &format!("holder: fork failed: {e}")),
        }
    }

    /// A datagram on the notify socket from `sender` (the pid the kernel
    /// attached). Like systemd's `NotifyAccess=main`, only a generation
    /// this holder started may say `READY=1`; anyone else is ignored and
    /// logged (any local process can send to an abstract socket).
    fn on_notify(&mut self, sender: Option<i32>, text: &str) {
        if !text.lines().any(|l| l == "READY=1") {
            return;
        }
        let Some(g) = self
            .gens
            .iter_mut()
            .find(|g| Some(g.pid.as_raw()) == sender)
        else {
            let who = sender.map_or("an unknown sender".to_string(), |p| format!("pid={p}"));
            log(
                self.me,
                &format!(
                    "holder: ignored READY=1 from {who}: not a generation this holder started"
                ),
            );
            return;
        };
        let pid = g.pid.as_raw();
        g.ready = true;
        let gen = g.gen;
        log(
            self.me,
            &format!("holder: generation gen={gen} pid={pid} is ready (READY=1)"),
        );
        for old in self.gens.iter().filter(|o| o.gen < gen) {
            let _ = kill(old.pid, Signal::SIGQUIT);
            log(
                self.me,
                &format!(
                    "holder: QUIT to the previous generation gen={} pid={}",
                    old.gen, old.pid
                ),
            );
        }
    }

    fn restart(&mut self, from: i32) {
        if let Some(g) = self.gens.iter().find(|g| !g.ready) {
            log(
                self.me,
                &format!(
                    "holder: signal HUP received from pid={from}, refused: generation gen={} pid={} is still starting",
                    g.gen, g.pid
                ),
            );
            return;
        }
        log(
            self.me,
            &format!("holder: signal HUP received from pid={from}: starting the next generation"),
        );
        self.start_generation();
    }

    fn reap(&mut self) {
        while let Some((pid, how)) = reap_ended_child() {
            if let Some(i) = self.gens.iter().position(|g| g.pid == pid) {
                let g = self.gens.remove(i);
                log(
                    self.me,
                    &format!(
                        "holder: generation gen={} pid={pid} exited with {how}{}",
                        g.gen,
                        if g.ready {
                            ""
                        } else {
                            " before it was ready; the previous one keeps serving"
                        }
                    ),
                );
            }
        }
    }

    fn kill_all(&self) {
        for g in &self.gens {
            let _ = kill(g.pid, Signal::SIGKILL);
        }
    }
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
