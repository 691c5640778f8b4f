//! The hand-over server's UDP mode (`swaplab-handover --udp`, G09): it
//! echoes numbered datagrams, `seq=N` answered `seq=N pid=P gen=G`, so a
//! client can tell which datagrams were answered, and by which process.
//!
//! Two of the hand-over strategies apply to a UDP socket, and they speak the
//! TCP mode's lines (`accepting pid=N gen=G at_ns=T fd=4 addr=…`, `notice
//! pid=N: …`), so the harness drives both modes alike:
//!
//! | strategy | how |
//! |---|---|
//! | reuseport | each generation binds a UDP socket of its own with SO_REUSEPORT on the same port; QUIT stops the old one |
//! | scm-rights | the new process (`--takeover PATH`) receives the very UDP sockets over the old one's control socket (SCM_RIGHTS), reads, says `ready`; the old one stops, says `released` |
//!
//! Stopping is the same in both, and models a real server's shutdown: it
//! stops reading, finishes the work it has (`--udp-finish-ms`), then closes
//! its sockets and exits. What the kernel queued on a socket meanwhile is
//! read by whoever else holds that socket, or freed with it when no one
//! does: that difference is G09's.

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
use nix::unistd::{getpid, Pid};

use crate::targets::agent::emit;
use crate::targets::generation::own_generation;
use crate::targets::handover::{
    bind_each, fail, log, mono_ns, poll_ready, send_fds, signal_fd, take_over, Opts,
};

/// A datagram's text is at most this long; longer ones are cut.
const MAX_DATAGRAM: usize = 512;

/// Datagrams read from one socket before the loop looks at its signals
/// and control connections again.
const BATCH: usize = 64;

/// Binds a UDP socket on `addr`: SO_REUSEPORT if asked (no SO_REUSEADDR:
/// for UDP it would let a second socket share the port too, unasked),
/// non-blocking, close-on-exec.
fn bind_udp(addr: SocketAddr, reuseport: bool) -> Result<UdpSocket, String> {
    let family = if addr.is_ipv4() {
        AddressFamily::Inet
    } else {
        AddressFamily::Inet6
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket::socket(family, SockType::Datagram, flags, None)
        .map_err(|e| format!("socket: {e}"))?;
    if reuseport {
        socket::setsockopt(&fd, sockopt::ReusePort, &true)
            .map_err(|e| format!("SO_REUSEPORT: {e}"))?;
    }
    if addr.is_ipv6() {
        socket::setsockopt(&fd, sockopt::Ipv6V6Only, &true)
            .map_err(|e| format!("IPV6_V6ONLY: {e}"))?;
    }
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)).map_err(|e| {
        let hint = if e == Errno::EADDRINUSE {
            " (another socket is bound there: both would need --reuseport)"
        } else {
            ""
        };
        format!("cannot bind UDP {addr}: {}{hint}", std::io::Error::from(e))
    })?;
    Ok(UdpSocket::from(fd))
}

/// Binds every `--listen` address; a port 0 after the first means the
/// first one's port (one port on 127.0.0.1 and ::1).
fn bind_all(addrs: &[SocketAddr], reuseport: bool) -> Vec<UdpSocket> {
    bind_each(addrs, |a| bind_udp(a, reuseport), UdpSocket::local_addr)
}

/// `fd=4 addr=127.0.0.1:P, fd=5 addr=[::1]:P`: the TCP mode's format, which
/// the harness parses.
fn describe(sockets: &[UdpSocket]) -> String {
    sockets
        .iter()
        .map(|s| {
            let addr = s.local_addr().map(|a| a.to_string()).unwrap_or_default();
            format!("fd={} addr={addr}", s.as_raw_fd())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A take-over in progress, waiting for a line from the other process by
/// a deadline: on the old process's side the new one's `ready`, on the new
/// process's side the old one's `released`.
struct Handover {
    conn: UnixStream,
    peer: i32,
    until: Instant,
    buf: Vec<u8>,
}

impl Handover {
    fn new(conn: UnixStream, timeout_ms: u64) -> Handover {
        let _ = conn.set_nonblocking(true);
        let peer = socket::getsockopt(&conn, sockopt::PeerCredentials)
            .map(|c| c.pid())
            .unwrap_or(0);
        Handover {
            conn,
            peer,
            until: Instant::now() + Duration::from_millis(timeout_ms),
            buf: Vec::new(),
        }
    }

    /// The line the other process said, once it is whole; `""` if the
    /// connection ended first; `None` while it is still coming.
    fn line(&mut self) -> Option<String> {
        let mut buf = [0u8; 256];
        let n = match self.conn.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return None,
            Err(_) => 0,
        };
        self.buf.extend_from_slice(&buf[..n]);
        (n == 0 || self.buf.contains(&b'\n'))
            .then(|| String::from_utf8_lossy(&self.buf).trim().to_string())
    }
}

struct Server {
    me: i32,
    gen: u32,
    opts: Opts,
    sockets: Vec<UdpSocket>,
    reading: bool,
    control: Option<(UnixListener, PathBuf)>,
    handover: Option<Handover>,
    /// The new process's side: `ready` said, `released` awaited.
    releasing: Option<Handover>,
    /// When the work of a stopping process is finished: then it closes its
    /// sockets and exits.
    finishing: Option<Instant>,
}

/// The UDP mode's entry point: `swaplab-handover --udp …`.
pub fn main(opts: Opts) -> ! {
    if opts.holder || std::env::var_os(crate::targets::generation::LISTEN_FDS).is_some() {
        fail(
            "--udp serves the reuseport and scm-rights strategies only (not --holder, not an exec)",
        );
    }
    let me = getpid().as_raw();
    let signals = signal_fd();
    let mut gen = own_generation();
    if opts.startup_ms > 0 {
        log(me, &format!("starting up ({} ms)", opts.startup_ms));
        std::thread::sleep(Duration::from_millis(opts.startup_ms));
    }
    let mut takeover_conn = None;
    let sockets = if let Some(path) = &opts.takeover {
        let (fds, old_gen, conn) = take_over(me, path, &opts);
        if std::env::var_os(crate::targets::generation::GENERATION).is_none() {
            gen = old_gen + 1;
        }
        takeover_conn = Some(conn);
        // take_over hands any socket over as a TcpListener: these must be
        // the UDP sockets of an old process in the UDP mode.
        let fds: Vec<OwnedFd> = fds.into_iter().map(OwnedFd::from).collect();
        if fds
            .iter()
            .any(|fd| socket::getsockopt(fd, sockopt::SockType) != Ok(SockType::Datagram))
        {
            fail("the old process sent sockets that are not UDP: does it run without --udp?");
        }
        fds.into_iter().map(UdpSocket::from).collect()
    } else {
        let v = bind_all(&opts.listen, opts.reuseport);
        let how = if opts.reuseport {
            " (SO_REUSEPORT)"
        } else {
            ""
        };
        log(me, &format!("bound UDP {}{how}", describe(&v)));
        v
    };
    for s in &sockets {
        let _ = s.set_nonblocking(true);
    }
    let mut s = Server {
        me,
        gen,
        opts,
        sockets,
        reading: true,
        control: None,
        handover: None,
        releasing: None,
        finishing: None,
    };
    // `accepting`, as the TCP mode says it: here, reading datagrams.
    emit(&format!(
        "accepting pid={me} gen={gen} at_ns={} {}",
        mono_ns(),
        describe(&s.sockets)
    ));
    emit(&format!("ready pid={me}"));
    match takeover_conn {
        Some(conn) => s.finish_takeover(conn),
        None => {
            if let Some(path) = s.opts.control.clone() {
                s.bind_control(&path);
            }
        }
    }
    s.run(signals)
}

impl Server {
    fn log(&self, what: &str) {
        log(self.me, what);
    }

    /// The new process, reading: says `ready`; the old one's `released`
    /// comes in the loop, which reads datagrams meanwhile (the old one has
    /// stopped reading by then).
    fn finish_takeover(&mut self, mut conn: UnixStream) {
        if let Err(e) = conn.write_all(b"ready\n") {
            self.log(&format!(
                "cannot say ready to the old process: {e}; no control socket"
            ));
            return;
        }
        self.releasing = Some(Handover::new(conn, self.opts.handover_timeout_ms));
    }

    /// The old process's answer to `ready`: `released` makes this one serve
    /// take-overs on the control socket in its place.
    fn on_release_data(&mut self) {
        let Some(said) = self.releasing.as_mut().and_then(Handover::line) else {
            return;
        };
        self.releasing = None;
        if said != "released" {
            self.log(&format!(
                "the old process did not say `released` ({said:?}); no control socket"
            ));
            return;
        }
        self.log("the old process released the sockets");
        let path = self
            .opts
            .control
            .clone()
            .or_else(|| self.opts.takeover.clone());
        if let Some(path) = path {
            self.bind_control(&path);
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

    fn run(&mut self, signals: nix::sys::signalfd::SignalFd) -> ! {
        let stdin = std::io::stdin();
        loop {
            let until = [&self.handover, &self.releasing]
                .into_iter()
                .flatten()
                .map(|h| h.until)
                .chain(self.finishing)
                .min();
            let timeout = until.map_or(PollTimeout::NONE, |u| {
                let ms = u.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::from(ms.min(60_000) as u16)
            });
            let mut fds = vec![
                PollFd::new(signals.as_fd(), PollFlags::POLLIN),
                PollFd::new(stdin.as_fd(), PollFlags::POLLIN),
            ];
            let ctl = self.control.as_ref().map(|(l, _)| {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let hand = self.handover.as_ref().map(|h| {
                fds.push(PollFd::new(h.conn.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let rel = self.releasing.as_ref().map(|h| {
                fds.push(PollFd::new(h.conn.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let first = fds.len();
            if self.reading {
                for s in &self.sockets {
                    fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
                }
            }
            let ready = poll_ready(&mut fds, timeout);
            drop(fds);
            if ready[0] {
                while let Ok(Some(info)) = signals.read_signal() {
                    if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                        self.on_signal(sig, info.ssi_pid as i32);
                    }
                }
            }
            if ready[1] {
                self.on_stdin();
            }
            if ctl.is_some_and(|i| ready[i]) {
                self.on_control();
            }
            if hand.is_some_and(|i| ready[i]) {
                self.on_handover_data();
            }
            if rel.is_some_and(|i| ready[i]) {
                self.on_release_data();
            }
            self.late();
            if self.reading {
                for i in 0..self.sockets.len() {
                    if ready.get(first + i) == Some(&true) {
                        self.echo(i);
                    }
                }
            }
            if self.finishing.is_some_and(|u| Instant::now() >= u) {
                let n = self.sockets.len();
                self.sockets.clear();
                self.log(&format!(
                    "drained: work finished ({} ms); closed its {n} UDP sockets; exit",
                    self.opts.udp.udp_finish_ms
                ));
                std::process::exit(0)
            }
        }
    }

    /// Answers what socket `i` holds, up to [`BATCH`] datagrams.
    fn echo(&mut self, i: usize) {
        let mut buf = [0u8; MAX_DATAGRAM];
        for _ in 0..BATCH {
            let (n, from) = match self.sockets[i].recv_from(&mut buf) {
                Ok(got) => got,
                Err(_) => return,
            };
            let text = String::from_utf8_lossy(&buf[..n]);
            let answer = format!("{} pid={} gen={}", text.trim_end(), self.me, self.gen);
            // A client that went away is no concern of the server's.
            let _ = self.sockets[i].send_to(answer.as_bytes(), from);
        }
    }

    fn on_stdin(&mut self) {
        let mut buf = [0u8; 512];
        match std::io::stdin().lock().read(&mut buf) {
            Ok(0) | Err(_) => {
                self.log("stdin closed: the harness is gone; exiting");
                self.drop_control();
                std::process::exit(1)
            }
            Ok(_) => self.log("the UDP mode takes no commands"),
        }
    }

    fn on_signal(&mut self, sig: Signal, from: i32) {
        match sig {
            Signal::SIGTERM | Signal::SIGINT => {
                self.log(&format!(
                    "signal {} received from pid={from}: exiting now",
                    sig.as_str()
                ));
                self.drop_control();
                std::process::exit(0)
            }
            Signal::SIGQUIT => self.stop(&format!("signal QUIT received from pid={from}")),
            Signal::SIGUSR2 | Signal::SIGHUP => self.log(&format!(
                "signal {} received from pid={from}, ignoring: the UDP mode hands over by reuseport or scm-rights",
                sig.as_str()
            )),
            _ => {}
        }
    }

    /// Stops reading and starts finishing the work; the sockets stay open
    /// until it is done.
    fn stop(&mut self, why: &str) {
        if self.finishing.is_some() {
            return;
        }
        self.reading = false;
        self.drop_control();
        let ms = self.opts.udp.udp_finish_ms;
        self.log(&format!(
            "{why}: stopped reading; finishing its work ({ms} ms), then closing its UDP sockets"
        ));
        self.finishing = Some(Instant::now() + Duration::from_millis(ms));
    }

    /// A take-over request on the control socket: every UDP socket goes in
    /// one `sendmsg`, then the old process waits for `ready`.
    fn on_control(&mut self) {
        let Some((l, _)) = &self.control else { return };
        let Ok((mut conn, _)) = l.accept() else {
            return;
        };
        let _ = conn.set_nonblocking(false);
        let peer = socket::getsockopt(&conn, sockopt::PeerCredentials)
            .map(|c| c.pid())
            .unwrap_or(0);
        if self.handover.is_some() || self.finishing.is_some() {
            let _ = conn.write_all(format!("busy pid={}\n", self.me).as_bytes());
            self.log(&format!("take-over request from pid={peer} refused: busy"));
            return;
        }
        let fds: Vec<RawFd> = self.sockets.iter().map(|s| s.as_raw_fd()).collect();
        let described = describe(&self.sockets);
        match send_fds(&conn, self.me, self.gen, &fds, &described) {
            Ok(_) => {
                self.log(&format!(
                    "take-over request from pid={peer}: sent {} fds in one message ({described})",
                    fds.len()
                ));
                self.handover = Some(Handover::new(conn, self.opts.handover_timeout_ms));
            }
            Err(e) => self.log(&format!("take-over by pid={peer}: sendmsg failed: {e}")),
        }
    }

    /// The new process's answer: `ready` stops this one; anything else, or
    /// the end of the connection, leaves it serving.
    fn on_handover_data(&mut self) {
        let Some(said) = self.handover.as_mut().and_then(Handover::line) else {
            return;
        };
        let Some(mut h) = self.handover.take() else {
            return;
        };
        if said != "ready" {
            self.log(&format!(
                "take-over by pid={} failed: it said {said:?}; still serving",
                h.peer
            ));
            return;
        }
        self.stop(&format!("pid={} is ready and reading", h.peer));
        let _ = h.conn.set_nonblocking(false);
        let _ = h.conn.write_all(b"released\n");
    }

    /// Deadlines: a new process that never said `ready` is killed, and this
    /// one serves on; an old one that never said `released` keeps the
    /// control socket.
    fn late(&mut self) {
        let now = Instant::now();
        if let Some(h) = self.handover.take_if(|h| now >= h.until) {
            let _ = kill(Pid::from_raw(h.peer), Signal::SIGKILL);
            self.log(&format!(
                "take-over by pid={} failed: no ready within {} ms; killed it; still serving",
                h.peer, self.opts.handover_timeout_ms
            ));
        }
        if self.releasing.take_if(|h| now >= h.until).is_some() {
            self.log(&format!(
                "the old process did not say `released` within {} ms; no control socket",
                self.opts.handover_timeout_ms
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn the_udp_options_parse_beside_the_tcp_ones() {
        let o =
            Opts::try_parse_from(["x", "--udp", "--udp-finish-ms", "250", "--reuseport"]).unwrap();
        assert!(o.udp.enabled && o.reuseport);
        assert_eq!(o.udp.udp_finish_ms, 250);
        assert!(!Opts::try_parse_from(["x"]).unwrap().udp.enabled);
        assert!(Opts::try_parse_from(["x", "--udp-finish-ms", "-1"]).is_err());
    }

    #[test]
    fn a_second_bind_needs_reuseport_on_both() {
        let a = bind_udp("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = a.local_addr().unwrap();
        assert!(bind_udp(addr, false).is_err());
        assert!(bind_udp(addr, true).is_ok());
    }
}
