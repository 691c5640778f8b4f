//! An nginx-style master/worker HTTP server, the target of the upgrade
//! experiments (U03–U07): `src/bin/swaplab-server.rs` (version 1.0.0) and
//! `src/bin/swaplab-server-2.rs` (2.0.0) are two builds of this code.
//!
//! The master binds a TCP listening socket on loopback (or adopts the ones
//! named in `SWAPLAB_LISTEN_FDS`, like nginx's `NGINX` variable), writes its
//! pid file, forks the workers, and then only handles signals, as nginx's
//! `ngx_master_process_cycle` does:
//!
//! | signal | master |
//! |---|---|
//! | USR2 | renames the pid file to `<pid file>.oldbin`, forks, and the child execs the program's own path with the listening fd numbers in `SWAPLAB_LISTEN_FDS`. Ignored while that new binary runs, and, in a master started that way, while its parent (the old master) is alive. If the exec fails the child exits 1 and the master renames the pid file back. |
//! | WINCH | stop accepting: the workers finish what they serve and exit; the master stays |
//! | HUP | fork fresh workers; while a new binary runs that is all (rollback), otherwise the old workers are then told to quit |
//! | QUIT | graceful exit: workers finish, listening sockets closed, pid file removed |
//! | TERM, INT | fast exit: workers are told to stop now |
//!
//! When a new binary it started exits, the master renames `.oldbin` back
//! and, if it was not accepting, starts workers again (nginx's rollback).
//!
//! A worker answers every request with one HTTP/1.1 response whose body names
//! it: `pid=W gen=G version=V greeting=TEXT` (the greeting comes from
//! libexample, called at request time).
//!
//! Every process logs one line per event on stdout (`notice pid=N: …`),
//! which all generations share. With `--exit-with-stdin` the masters leave
//! (killing their workers) when stdin reaches its end: the harness holds the
//! other end, so no generation outlives it, whichever master is the parent of
//! which. Workers die with their master (`PR_SET_PDEATHSIG`).

use std::ffi::{CStr, CString};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, sigprocmask, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::unistd::{fork, getpid, getppid, ForkResult, Pid};

use crate::targets::agent::{emit, GreetingFn};
use crate::targets::generation::{
    adopt_listeners, own_command, own_generation, reap_ended_child, spawn_new_binary, LISTEN_FDS,
};

/// `comm` of the two roles, as `ps` and the process tables show them.
pub const MASTER_COMM: &str = "swaplab master";
pub const WORKER_COMM: &str = "swaplab worker";

/// The server's command line (with `--help`); the masters started by USR2
/// get the same one.
#[derive(Parser, Debug)]
#[command(
    name = "swaplab-server",
    about = "The nginx-style master/worker server of the upgrade experiments",
    args_override_self = true
)]
struct ServerOptions {
    /// Address to listen on, loopback only; port 0 takes a free one.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", value_parser = loopback_address)]
    listen: SocketAddr,
    /// Worker processes per master.
    #[arg(long, value_name = "N", default_value_t = 2, value_parser = worker_count)]
    workers: usize,
    /// The master's pid file (renamed to `<PATH>.oldbin` during an upgrade).
    #[arg(long, value_name = "PATH")]
    pid_file: PathBuf,
    /// Leave, killing the workers, when stdin reaches its end.
    #[arg(long)]
    exit_with_stdin: bool,
}

fn loopback_address(s: &str) -> Result<SocketAddr, String> {
    let a: SocketAddr = s
        .parse()
        .map_err(|_| "not an address like 127.0.0.1:8080".to_string())?;
    if !a.ip().is_loopback() {
        return Err("swaplab listens on loopback only (127.0.0.0/8, ::1)".into());
    }
    Ok(a)
}

fn worker_count(s: &str) -> Result<usize, String> {
    s.parse()
        .ok()
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| "give 1 to 64".to_string())
}

fn fail(msg: &str) -> ! {
    eprintln!("swaplab-server: {msg}");
    std::process::exit(2)
}

/// The options, or the end: `--help` prints on stdout and exits 0; a bad
/// command line exits 2, its message on stderr named after the server, as
/// every other failure of it is.
fn parse_options() -> ServerOptions {
    ServerOptions::try_parse().unwrap_or_else(|e| {
        if !e.use_stderr() {
            e.exit()
        }
        let text = e.render().to_string();
        fail(text.strip_prefix("error: ").unwrap_or(&text).trim_end())
    })
}

fn set_comm(name: &str) {
    if let Ok(c) = CString::new(name) {
        let _ = nix::sys::prctl::set_name(&c);
    }
}

fn clear_cloexec(fd: RawFd) -> std::io::Result<()> {
    // SAFETY: fd is open for as long as the listener that owns it.
    let b = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    fcntl(b, FcntlArg::F_SETFD(FdFlag::empty()))?;
    Ok(())
}

/// The listening sockets: inherited through `SWAPLAB_LISTEN_FDS`, or bound.
fn listeners(o: &ServerOptions, me: i32) -> Vec<TcpListener> {
    if let Ok(list) = std::env::var(LISTEN_FDS) {
        let out = adopt_listeners(&list).unwrap_or_else(|e| fail(&e));
        for l in &out {
            let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
            emit(&format!(
                "notice pid={me}: using inherited listening socket fd={} addr={addr}",
                l.as_raw_fd()
            ));
        }
        return out;
    }
    let l = TcpListener::bind(o.listen).unwrap_or_else(|e| {
        let hint = if e.kind() == std::io::ErrorKind::AddrInUse {
            " (the port is in use: pick another with --listen, or 127.0.0.1:0 for a free one)"
        } else {
            ""
        };
        fail(&format!("cannot listen on {}: {e}{hint}", o.listen))
    });
    // The socket must survive execve (USR2), and workers poll it.
    if let Err(e) = clear_cloexec(l.as_raw_fd()).and_then(|_| l.set_nonblocking(true)) {
        fail(&format!("cannot set up the listening socket: {e}"));
    }
    let addr = l.local_addr().map(|a| a.to_string()).unwrap_or_default();
    emit(&format!(
        "notice pid={me}: listening fd={} addr={addr}",
        l.as_raw_fd()
    ));
    vec![l]
}

fn oldbin(pid_file: &Path) -> PathBuf {
    let mut s = pid_file.as_os_str().to_owned();
    s.push(".oldbin");
    PathBuf::from(s)
}

/// Writes the pid file whole (a temporary file renamed into place), so a
/// reader never sees it half written.
fn write_pid_file(path: &Path, pid: i32) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    std::fs::write(&tmp, format!("{pid}\n"))?;
    std::fs::rename(&tmp, path)
}

/// Reads an HTTP request's head (up to the blank line), with 5 s timeouts
/// on the connection from here on; `false` if the client went away first.
pub fn read_request_head(conn: &mut TcpStream) -> bool {
    let limit = Some(Duration::from_secs(5));
    let _ = conn.set_read_timeout(limit);
    let _ = conn.set_write_timeout(limit);
    let mut req = Vec::new();
    let mut buf = [0u8; 2048];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < 16384 {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
    }
    true
}

/// The set of `signals` (to block and read through a signalfd).
pub fn signal_set(signals: &[Signal]) -> SigSet {
    let mut s = SigSet::empty();
    for sig in signals {
        s.add(*sig);
    }
    s
}

fn handled_signals() -> SigSet {
    signal_set(&[
        Signal::SIGUSR2,
        Signal::SIGWINCH,
        Signal::SIGQUIT,
        Signal::SIGHUP,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGCHLD,
    ])
}

struct Master {
    pid: i32,
    gen: u32,
    version: &'static str,
    greeting: GreetingFn,
    exe: PathBuf,
    argv: Vec<CString>,
    opts: ServerOptions,
    listeners: Vec<TcpListener>,
    signals: SignalFd,
    workers: Vec<Pid>,
    /// The master a USR2 exec started, while it runs.
    new_binary: Option<Pid>,
    /// For a master started by USR2: its parent then (the old master).
    inherited_from: Option<i32>,
    noaccepting: bool,
    quitting: bool,
    terminating: bool,
}

/// Runs the server. `version` names this build; `greeting` is libexample's.
pub fn main(version: &'static str, greeting: GreetingFn) -> ! {
    let opts = parse_options();
    let me = getpid().as_raw();
    let inherited = std::env::var_os(LISTEN_FDS).is_some();
    let gen = own_generation();
    let (exe, argv) = own_command(&[]).unwrap_or_else(|e| fail(&e));
    set_comm(MASTER_COMM);
    let mask = handled_signals();
    if let Err(e) = sigprocmask(SigmaskHow::SIG_BLOCK, Some(&mask), None) {
        fail(&format!("cannot block signals: {e}"));
    }
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .unwrap_or_else(|e| fail(&format!("signalfd: {e}")));
    let listeners = listeners(&opts, me);
    if let Err(e) = write_pid_file(&opts.pid_file, me) {
        fail(&format!(
            "cannot write the pid file {}: {e}",
            opts.pid_file.display()
        ));
    }
    let mut m = Master {
        pid: me,
        gen,
        version,
        greeting,
        exe,
        argv,
        opts,
        listeners,
        signals,
        workers: Vec::new(),
        new_binary: None,
        inherited_from: inherited.then(|| getppid().as_raw()),
        noaccepting: false,
        quitting: false,
        terminating: false,
    };
    emit(&format!(
        "notice pid={me}: master gen={gen} version={version} exe={}",
        m.exe.display()
    ));
    m.start_workers();
    emit(&format!("ready pid={me}"));
    m.run()
}

impl Master {
    fn log(&self, what: &str) {
        emit(&format!("notice pid={}: {what}", self.pid));
    }

    fn run(&mut self) -> ! {
        let stdin = std::io::stdin();
        loop {
            let mut fds = vec![PollFd::new(self.signals.as_fd(), PollFlags::POLLIN)];
            if self.opts.exit_with_stdin {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => fail(&format!("poll: {e}")),
            }
            let lifeline = fds
                .get(1)
                .and_then(|f| f.revents())
                .is_some_and(|r| !r.is_empty());
            drop(fds);
            if lifeline && self.stdin_ended() {
                self.log("stdin closed: the harness is gone; killing workers and exiting");
                for w in &self.workers {
                    let _ = kill(*w, Signal::SIGKILL);
                }
                std::process::exit(1);
            }
            while let Ok(Some(info)) = self.signals.read_signal() {
                if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                    self.on_signal(sig, info.ssi_pid as i32);
                }
            }
            if (self.quitting || self.terminating) && self.workers.is_empty() {
                self.exit();
            }
        }
    }

    /// Whether stdin has ended (data, if any, is read and ignored).
    fn stdin_ended(&self) -> bool {
        let mut buf = [0u8; 512];
        !matches!(std::io::stdin().lock().read(&mut buf), Ok(n) if n > 0)
    }

    fn on_signal(&mut self, sig: Signal, from: i32) {
        match sig {
            Signal::SIGCHLD => self.reap(),
            Signal::SIGUSR2 => self.change_binary(from),
            Signal::SIGWINCH => {
                self.log(&format!(
                    "signal WINCH received from pid={from}, stop accepting connections"
                ));
                self.noaccepting = true;
                self.signal_workers(Signal::SIGQUIT);
            }
            Signal::SIGHUP => {
                self.log(&format!(
                    "signal HUP received from pid={from}, starting workers"
                ));
                let old = std::mem::take(&mut self.workers);
                self.start_workers();
                self.noaccepting = false;
                if self.new_binary.is_none() {
                    // A reload: the old workers finish and leave.
                    for w in &old {
                        let _ = kill(*w, Signal::SIGQUIT);
                    }
                }
                self.workers.extend(old);
            }
            Signal::SIGQUIT => {
                self.log(&format!(
                    "signal QUIT received from pid={from}, shutting down gracefully"
                ));
                self.quitting = true;
                self.signal_workers(Signal::SIGQUIT);
                self.listeners.clear();
            }
            Signal::SIGTERM | Signal::SIGINT => {
                self.log(&format!(
                    "signal {} received from pid={from}, exiting now",
                    sig.as_str()
                ));
                self.terminating = true;
                self.signal_workers(Signal::SIGTERM);
                self.listeners.clear();
            }
            _ => {}
        }
    }

    fn signal_workers(&self, sig: Signal) {
        for w in &self.workers {
            let _ = kill(*w, sig);
        }
    }

    fn reap(&mut self) {
        while let Some((pid, how)) = reap_ended_child() {
            if let Some(i) = self.workers.iter().position(|w| *w == pid) {
                self.workers.remove(i);
                self.log(&format!("worker child={pid} exited with {how}"));
            } else if self.new_binary == Some(pid) {
                self.new_binary = None;
                let old = oldbin(&self.opts.pid_file);
                let renamed = std::fs::rename(&old, &self.opts.pid_file);
                self.log(&format!(
                    "new binary process child={pid} exited with {how}; pid file renamed back: {}",
                    match renamed {
                        Ok(()) => "ok".to_string(),
                        Err(e) => e.to_string(),
                    }
                ));
                if self.noaccepting && !self.quitting && !self.terminating {
                    self.noaccepting = false;
                    self.start_workers();
                }
            }
        }
    }

    fn change_binary(&mut self, from: i32) {
        if let Some(nb) = self.new_binary {
            self.log(&format!(
                "signal USR2 received from pid={from}, ignoring: the new binary child={nb} is running"
            ));
            return;
        }
        if let Some(parent) = self.inherited_from {
            if getppid().as_raw() == parent {
                self.log(&format!(
                    "signal USR2 received from pid={from}, ignoring: the old master pid={parent} is still alive"
                ));
                return;
            }
        }
        if self.quitting || self.terminating {
            return;
        }
        self.log(&format!(
            "signal USR2 received from pid={from}, changing binary"
        ));
        let pid_file = self.opts.pid_file.clone();
        let old = oldbin(&pid_file);
        if let Err(e) = std::fs::rename(&pid_file, &old) {
            self.log(&format!(
                "rename {} to {} failed before executing the new binary: {e}",
                pid_file.display(),
                old.display()
            ));
            return;
        }
        let fds: Vec<RawFd> = self.listeners.iter().map(|l| l.as_raw_fd()).collect();
        match spawn_new_binary(&self.exe, &self.argv, &fds, self.gen + 1) {
            Ok(child) => {
                self.new_binary = Some(child);
                self.log(&format!("new binary process child={child} started"));
            }
            Err(e) => {
                let _ = std::fs::rename(&old, &pid_file);
                self.log(&format!("fork failed while changing binary: {e}"));
            }
        }
    }

    fn start_workers(&mut self) {
        for _ in 0..self.opts.workers {
            // SAFETY: the master is single-threaded, so the child may
            // allocate; it never returns into the master's loop.
            match unsafe { fork() } {
                Ok(ForkResult::Child) => self.worker(),
                Ok(ForkResult::Parent { child }) => self.workers.push(child),
                Err(e) => self.log(&format!("fork failed while starting a worker: {e}")),
            }
        }
    }

    fn exit(&self) -> ! {
        // nginx removes the pid file it owns: `.oldbin` while a new binary
        // runs, the pid file otherwise.
        let name = if self.new_binary.is_some() {
            oldbin(&self.opts.pid_file)
        } else {
            self.opts.pid_file.clone()
        };
        let _ = std::fs::remove_file(&name);
        self.log("exit");
        std::process::exit(0)
    }

    // ---- the worker ----------------------------------------------------

    fn worker(&mut self) -> ! {
        let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
        if getppid().as_raw() != self.pid {
            std::process::exit(1);
        }
        set_comm(WORKER_COMM);
        let me = getpid().as_raw();
        self.workers.clear();
        emit(&format!(
            "notice pid={me}: worker gen={} version={} started",
            self.gen, self.version
        ));
        loop {
            let mut fds: Vec<PollFd> = self
                .listeners
                .iter()
                .map(|l| PollFd::new(l.as_fd(), PollFlags::POLLIN))
                .collect();
            fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => fail(&format!("worker poll: {e}")),
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            drop(fds);
            while let Ok(Some(info)) = self.signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGQUIT) => {
                        emit(&format!("notice pid={me}: gracefully shutting down"));
                        std::process::exit(0)
                    }
                    Ok(Signal::SIGTERM) | Ok(Signal::SIGINT) => std::process::exit(0),
                    _ => {}
                }
            }
            for (i, l) in self.listeners.iter().enumerate() {
                if ready[i] {
                    if let Ok((conn, _)) = l.accept() {
                        self.serve(me, conn);
                    }
                }
            }
        }
    }

    fn serve(&self, me: i32, mut conn: TcpStream) {
        if !read_request_head(&mut conn) {
            return;
        }
        // SAFETY: greeting() returns a static NUL-terminated string.
        let text = unsafe { CStr::from_ptr((self.greeting)()) }.to_string_lossy();
        let body = format!(
            "pid={me} gen={} version={} greeting={text}\n",
            self.gen, self.version
        );
        let resp = format!(
            "HTTP/1.1 200 OK\r\nServer: swaplab/{}\r\nContent-Type: text/plain\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.version,
            body.len()
        );
        let _ = conn.write_all(resp.as_bytes());
        let _ = conn.shutdown(std::net::Shutdown::Write);
    }
}
