//! The socket holder of the activation strategy: binds once and runs each
//! generation of the server with the sockets from fd 3 (systemd's protocol).

use std::ffi::CString;
use std::io::{IoSliceMut, Read};
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{self, recvmsg, sockopt, ControlMessageOwned, MsgFlags};
use nix::unistd::{getpid, Pid};

use crate::targets::agent::emit;
use crate::targets::generation::{
    environment_without, own_command, reap_ended_child, GENERATION, LISTEN_FDS,
};

use super::{bind_all, describe, fail, log, poll_ready, signal_fd, Opts};

struct Generation {
    pid: Pid,
    gen: u32,
    ready: bool,
    started: Instant,
}

pub(super) fn holder(opts: Opts) -> ! {
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
