//! What passes from one generation of a server to the next, for both
//! servers under test (the upgrade master and the hand-over server): the
//! exec of its own program with the listening fds and the generation number
//! in the environment, adopting those fds on the other side, and reaping the
//! generations that ended.

use std::ffi::CString;
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::FcntlArg;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};

/// The generation of a master: 1 for the first, +1 for each new binary.
pub const GENERATION: &str = "SWAPLAB_GENERATION";

/// The variable that passes listening sockets to a new binary: `3;4;`.
pub const LISTEN_FDS: &str = "SWAPLAB_LISTEN_FDS";

/// This program's executable and command line (without the arguments
/// `drop` names), to exec the next generation with: the same program, the
/// same options.
pub fn own_command(drop: &[&str]) -> Result<(PathBuf, Vec<CString>), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find my own executable: {e}"))?;
    let argv = std::env::args_os()
        .filter(|a| !drop.iter().any(|d| a == d))
        .map(|a| CString::new(a.as_bytes()).map_err(|_| "an argument has a NUL".to_string()))
        .collect::<Result<_, _>>()?;
    Ok((exe, argv))
}

/// The generation this process is (`SWAPLAB_GENERATION`, set by the one
/// that exec'ed it); the first one without.
pub fn own_generation() -> u32 {
    std::env::var(GENERATION)
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(1)
}

/// Reaps one child that has ended, without blocking: its pid and how it
/// ended (`exit code N`, `signal NAME`); `None` once no ended child is left.
pub fn reap_ended_child() -> Option<(Pid, String)> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) => return Some((p, format!("exit code {code}"))),
            Ok(WaitStatus::Signaled(p, s, _)) => {
                return Some((p, format!("signal {}", s.as_str())))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return None,
            // Stopped or continued: not an end.
            Ok(_) => {}
        }
    }
}

/// Adopts the listening sockets whose numbers `list` names (`3;4;`), as an
/// old master passes them across `execve` in [`LISTEN_FDS`]. Each must be an
/// open TCP socket in the listening state.
pub fn adopt_listeners(list: &str) -> Result<Vec<TcpListener>, String> {
    let mut fds: Vec<RawFd> = Vec::new();
    for part in list.split(';').filter(|p| !p.is_empty()) {
        let fd: RawFd = part
            .parse()
            .map_err(|_| format!("{LISTEN_FDS}={list:?}: `{part}` is not an fd"))?;
        // Each entry becomes a TcpListener that owns its fd: two owners of
        // one fd would close it twice (the second close may hit an
        // unrelated fd opened meanwhile).
        if fds.contains(&fd) {
            return Err(format!(
                "{LISTEN_FDS}={list:?}: fd {fd} is named twice; an inherited fd has one owner"
            ));
        }
        fds.push(fd);
    }
    let mut out = Vec::new();
    for fd in fds {
        if fd < 3 || nix::fcntl::fcntl(probe_fd(fd), FcntlArg::F_GETFD).is_err() {
            return Err(format!("{LISTEN_FDS}: fd {fd} is not open"));
        }
        // SAFETY: the old process passed this open fd to us across exec;
        // this image owns it from here on.
        let l = unsafe { TcpListener::from_raw_fd(fd) };
        let listening = nix::sys::socket::getsockopt(&l, nix::sys::socket::sockopt::AcceptConn)
            .unwrap_or(false);
        if !listening || l.local_addr().is_err() {
            std::mem::forget(l);
            return Err(format!(
                "{LISTEN_FDS}: fd {fd} is not an inherited listening socket"
            ));
        }
        out.push(l);
    }
    Ok(out)
}

fn probe_fd<'a>(fd: RawFd) -> std::os::fd::BorrowedFd<'a> {
    // SAFETY: only used for a probe (F_GETFD) on a number that may or may
    // not be open; the kernel answers EBADF for a closed one.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// This process's environment as `KEY=VALUE` strings for `execve`, without
/// the variables named in `drop`.
pub fn environment_without(drop: &[&str]) -> Vec<CString> {
    std::env::vars_os()
        .filter(|(k, _)| !drop.iter().any(|d| k == d))
        .filter_map(|(k, v)| {
            let mut kv = k.as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            CString::new(kv).ok()
        })
        .collect()
}

/// Forks a child that execs `exe` (with `argv`) as the next generation: the
/// environment is this one's, with [`LISTEN_FDS`] naming `fds` (which must
/// not be close-on-exec) and [`GENERATION`] set to `gen`. Everything the
/// child needs is built before the fork (the C strings, the NULL-terminated
/// pointer arrays, the text of the failure line), so the child calls only
/// `execve`, and if that fails `getpid`, `write` and `_exit`: safe also in a
/// multi-threaded process (the hand-over server has threads).
pub fn spawn_new_binary(exe: &Path, argv: &[CString], fds: &[RawFd], gen: u32) -> nix::Result<Pid> {
    let list: String = fds.iter().map(|fd| format!("{fd};")).collect();
    let mut env = environment_without(&[LISTEN_FDS, GENERATION]);
    env.extend(CString::new(format!("{LISTEN_FDS}={list}")));
    env.extend(CString::new(format!("{GENERATION}={gen}")));
    let path = CString::new(exe.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let argv_ptrs: Vec<*const libc::c_char> = argv
        .iter()
        .map(|a| a.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    let env_ptrs: Vec<*const libc::c_char> = env
        .iter()
        .map(|e| e.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect();
    // The failure line, `alert pid=N: execve() failed while executing new
    // binary process "PATH": REASON`, in pieces: only N and REASON are
    // known in the child, and both are written without allocating.
    let head: &[u8] = b"alert pid=";
    let middle = format!(
        ": execve() failed while executing new binary process {:?}: ",
        exe.display().to_string()
    )
    .into_bytes();
    // The child starts the new image with no signal blocked, as Command
    // would (this process blocks the ones its signalfd reads).
    // SAFETY: sigemptyset only fills in the set it is given.
    let unblocked = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    };
    // SAFETY: fork in a process that may have other threads: the child
    // touches no lock and no allocator. It calls execve with the arrays
    // built above (its copy of the parent's memory holds them); on failure
    // it reads errno, calls getpid, writes the pid's digits into a stack
    // buffer, takes errno's static description (a match on a number), and
    // calls write and _exit. sigprocmask, execve, getpid, write and _exit
    // are async-signal-safe (signal-safety(7)).
    match unsafe { fork() }? {
        ForkResult::Child => unsafe {
            libc::sigprocmask(libc::SIG_SETMASK, &unblocked, std::ptr::null_mut());
            libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr());
            let err = Errno::last();
            let mut digits = [0u8; 20];
            let pid = decimal(libc::getpid() as u64, &mut digits);
            let reason = err.desc().as_bytes();
            for part in [head, pid, &middle[..], reason, &b"\n"[..]] {
                libc::write(1, part.as_ptr().cast(), part.len());
            }
            libc::_exit(1)
        },
        ForkResult::Parent { child } => Ok(child),
    }
}

/// `n` in decimal, written at the end of `buf` without allocating; returns
/// the digits.
fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

#[cfg(test)]
mod fork_safe_tests {
    use super::*;

    #[test]
    fn decimal_writes_digits_without_allocating() {
        let mut buf = [0u8; 20];
        assert_eq!(decimal(0, &mut buf), b"0");
        assert_eq!(decimal(4_194_304, &mut buf), b"4194304");
        assert_eq!(decimal(u64::MAX, &mut buf), u64::MAX.to_string().as_bytes());
    }

    #[test]
    fn an_inherited_fd_has_one_owner() {
        let e = adopt_listeners("3;4;03;").unwrap_err();
        assert!(e.contains("fd 3 is named twice"), "{e}");
        assert!(adopt_listeners("").unwrap().is_empty());
    }
}
