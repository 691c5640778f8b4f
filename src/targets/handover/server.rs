//! The server: one generation serving downloads (or keep-alive
//! connections), handing its listening sockets over or taking them over.

use std::ffi::CString;
use std::io::{BufRead, BufReader, IoSlice, IoSliceMut, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{
    self, recvmsg, sendmsg, sockopt, ControlMessage, ControlMessageOwned, MsgFlags,
};
use nix::unistd::{getpid, Pid};

use crate::targets::agent::emit;
use crate::targets::generation::{
    adopt_listeners, own_command, own_generation, reap_ended_child, spawn_new_binary, GENERATION,
    LISTEN_FDS,
};
use crate::targets::keepalive::{self, DrainSignal};

use super::{
    bind_all, describe, fail, log, mono_ns, poll_ready, signal_fd, Fault, Opts, TAKEOVER_FAILED,
};

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

pub(super) fn serve_main(opts: Opts) -> ! {
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
    match takeover_conn {
        Some(conn) => {
            emit(&format!("ready pid={me}"));
            s.finish_takeover(conn)
        }
        None => {
            // Bound before `ready`: whoever waits for it may start the
            // next generation at once, which connects to this socket.
            if let Some(path) = s.opts.control.clone() {
                s.bind_control(&path);
            }
            emit(&format!("ready pid={me}"));
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

/// The old process's side of the SCM_RIGHTS hand-over: every listening fd
/// in one `sendmsg`, with the line `fds n=… pid=… gen=… ADDR…` that
/// [`take_over`] reads; `described` names the sockets (`a, b`).
pub(crate) fn send_fds(
    conn: &UnixStream,
    me: i32,
    gen: u32,
    fds: &[RawFd],
    described: &str,
) -> nix::Result<usize> {
    let text = format!(
        "fds n={} pid={me} gen={gen} {}\n",
        fds.len(),
        described.replace(", ", " ")
    );
    let iov = [IoSlice::new(text.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(conn.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
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
        let described = describe(&self.listeners);
        match send_fds(&conn, self.me, self.gen, &fds, &described) {
            Ok(_) => {
                self.log(&format!(
                    "take-over request from pid={peer}: sent {} fds in one message ({described})",
                    fds.len()
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
