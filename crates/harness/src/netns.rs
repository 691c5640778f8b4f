//! Network namespaces the experiments make for themselves (G05, G07): a
//! fresh namespace has only `lo`, its own sysctls (`net.ipv4.*`) and no
//! route to the host's network, so settings changed inside it never touch
//! the host's, and traffic inside it stays inside it.
//!
//! A namespace is made by a short-lived thread (`unshare(CLONE_NEWNET)`
//! moves only that thread) and kept alive by an fd to it; the harness's
//! threads enter it with `setns` to open sockets there, target processes
//! enter it before they exec. It is gone once the fd and every socket and
//! process in it are. Making one needs CAP_SYS_ADMIN (root).

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::{anyhow, bail, Context, Result};

pub struct NetNs {
    fd: OwnedFd,
}

/// Brings `lo` up in the calling thread's namespace (what `ip link set lo
/// up` does, by ioctl).
fn lo_up() -> std::io::Result<()> {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq we own.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo".iter().enumerate() {
            ifr.ifr_name[i] = *b as libc::c_char;
        }
        let r = if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr) < 0 {
            Err(std::io::Error::last_os_error())
        } else {
            ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            if libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr) < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        libc::close(s);
        r
    }
}

impl NetNs {
    /// A fresh namespace with `lo` up and each `(sysctl path under
    /// /proc/sys, value)` written inside it.
    pub fn new(sysctls: &[(&str, &str)]) -> Result<NetNs> {
        let sysctls: Vec<(String, String)> = sysctls
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        std::thread::spawn(move || -> Result<NetNs> {
            // SAFETY: unshare affects only this thread, which ends here.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                let e = std::io::Error::last_os_error();
                bail!("cannot make a network namespace (unshare(CLONE_NEWNET)): {e}");
            }
            lo_up().context("cannot bring lo up in the new namespace")?;
            for (k, v) in &sysctls {
                let path = format!("/proc/sys/{}", k.replace('.', "/"));
                std::fs::write(&path, v)
                    .with_context(|| format!("cannot set {k}={v} inside the namespace"))?;
            }
            let f = File::open("/proc/thread-self/ns/net")
                .context("cannot open /proc/thread-self/ns/net")?;
            Ok(NetNs { fd: f.into() })
        })
        .join()
        .map_err(|_| anyhow!("the namespace thread panicked"))?
    }

    /// Whether this machine lets swaplab make one, and if not why.
    pub fn available() -> std::result::Result<(), String> {
        NetNs::new(&[]).map(|_| ()).map_err(|e| format!("{e:#}"))
    }

    /// A path that names the namespace for other programs (`ip … netns
    /// PATH`): this process's fd to it.
    pub fn path(&self) -> String {
        format!("/proc/{}/fd/{}", std::process::id(), self.fd.as_raw_fd())
    }

    /// Runs `f` on a thread inside the namespace: sockets it opens belong
    /// to the namespace, wherever they are used afterwards.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T> {
        let fd = self.fd.as_raw_fd();
        std::thread::scope(|s| {
            s.spawn(move || -> Result<T> {
                // SAFETY: setns moves only this thread, which ends after f.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    bail!(
                        "cannot enter the namespace: {}",
                        std::io::Error::last_os_error()
                    );
                }
                Ok(f())
            })
            .join()
            .map_err(|_| anyhow!("a thread inside the namespace panicked"))?
        })
    }

    /// Makes `cmd` enter the namespace before it execs.
    pub fn enter_on_exec(&self, cmd: &mut Command) {
        let fd = self.fd.as_raw_fd();
        // SAFETY: setns is a plain system call, safe between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// The IPv6 addresses of `ifname` in this namespace, from
    /// `/proc/net/if_inet6`: (address, scope id = interface index,
    /// tentative). procfs does not read this file; its format is one line
    /// per address: hex address, index, prefix length, scope, flags, name.
    pub fn ipv6_addrs(&self, ifname: &str) -> Result<Vec<(std::net::Ipv6Addr, u32, bool)>> {
        let text = self.run(|| std::fs::read_to_string("/proc/thread-self/net/if_inet6"))??;
        let mut out = Vec::new();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() < 6 || f[5] != ifname {
                continue;
            }
            let bits = u128::from_str_radix(f[0], 16)
                .with_context(|| format!("bad address in if_inet6: {line}"))?;
            let index = u32::from_str_radix(f[1], 16).unwrap_or(0);
            let flags = u32::from_str_radix(f[4], 16).unwrap_or(0);
            // IFA_F_TENTATIVE: duplicate address detection still running.
            out.push((std::net::Ipv6Addr::from(bits), index, flags & 0x40 != 0));
        }
        Ok(out)
    }
}
