//! What several of G01–G07 share: the listening sockets as the kernel
//! lists them, clients queued on a listener and read, its accept queue.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};

use crate::drivers::load;
use crate::harness::lab::{vol, Lab};
use crate::harness::listeners;
use crate::harness::netns::NetNs;

/// The listening TCP sockets on `addrs` in this network namespace, as the
/// kernel lists them (/proc/net/tcp and /proc/net/tcp6): their inodes,
/// sorted (to compare as a set).
pub(super) fn listening_on(addrs: &[SocketAddr]) -> Result<Vec<u64>> {
    let mut v: Vec<u64> = listeners::all()
        .context("cannot list the listening sockets (sock_diag netlink)")?
        .into_iter()
        .filter(|l| addrs.contains(&l.addr))
        .map(|l| l.inode)
        .collect();
    v.sort_unstable();
    Ok(v)
}

/// [`listening_on`], narrated as the `grep` that shows it: the inodes in
/// `known` first, in that order (the kernel's own order, and the inode
/// numbers', change from run to run), then any other.
pub(super) fn show_listening_on(
    lab: &mut Lab,
    addrs: &[SocketAddr],
    known: &[u64],
    why: &str,
) -> Result<Vec<u64>> {
    let v = listening_on(addrs)?;
    let shown: Vec<String> = addrs.iter().map(|a| a.to_string()).collect();
    lab.proof(format!(
        "$ ss -lte   # listening on {}: {why}",
        shown.join(" and ")
    ));
    let mut ordered: Vec<u64> = known.iter().filter(|i| v.contains(i)).copied().collect();
    ordered.extend(v.iter().filter(|i| !known.contains(i)));
    for ino in &ordered {
        lab.proof(format!("listening socket:[{ino}]"));
    }
    if v.is_empty() {
        lab.proof("(no lines)");
    }
    Ok(v)
}

/// `v` sorted (to compare with [`listening_on`]).
pub(super) fn sorted(mut v: Vec<u64>) -> Vec<u64> {
    v.sort_unstable();
    v
}

/// The first address of a `listening fd=N addr=A…` line.
pub(super) fn listening_addr(line: &str) -> Result<SocketAddr> {
    line.split("addr=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .ok_or_else(|| anyhow!("no address in `{line}`"))?
        .trim_end_matches(',')
        .parse()
        .with_context(|| format!("bad address in `{line}`"))
}

/// What is left of one deadline shared by many steps (at least 1 ms: a
/// zero timeout means none to the socket calls).
pub(super) fn left(until: std::time::Instant) -> Duration {
    until
        .saturating_duration_since(std::time::Instant::now())
        .max(Duration::from_millis(1))
}

/// Connects `n` clients and sends each a request; nobody accepts yet. One
/// deadline covers every connect.
pub(super) fn queue_clients(addr: SocketAddr, n: usize) -> Result<Vec<TcpStream>> {
    let until = std::time::Instant::now() + crate::harness::process::deadline();
    (0..n)
        .map(|i| {
            let mut c = TcpStream::connect_timeout(&addr, left(until).min(Duration::from_secs(5)))
                .with_context(|| format!("connect client {} of {n} to {addr}", i + 1))?;
            c.set_write_timeout(Some(left(until)))?;
            c.write_all(b"GET / HTTP/1.1\r\nHost: queued\r\nConnection: close\r\n\r\n")?;
            Ok(c)
        })
        .collect()
}

/// Reads each client's answer: who answered, or how it failed. One
/// deadline covers every read: a client that gets neither an answer nor
/// an error by then counts as `timed out` (a verdict, never a hang).
pub(super) fn read_all(clients: Vec<TcpStream>) -> Vec<std::result::Result<i32, String>> {
    let until = std::time::Instant::now() + crate::harness::process::deadline();
    clients
        .into_iter()
        .map(|mut c| {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                if std::time::Instant::now() >= until {
                    return Err(format!("timed out ({} bytes in)", got.len()));
                }
                let _ = c.set_read_timeout(Some(left(until)));
                match c.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) =>
                    {
                        return Err(format!("timed out ({} bytes in)", got.len()))
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
            if got.is_empty() {
                return Err("EOF".to_string());
            }
            let text = String::from_utf8_lossy(&got);
            text.split_once("\r\n\r\n")
                .and_then(|(_, b)| load::Answer::parse(b))
                .map(|a| a.pid)
                .ok_or_else(|| "no answer".to_string())
        })
        .collect()
}

/// The accept queues of the listening sockets on `port`, from the
/// kernel's list (sock_diag, as `ss -lt` reads it) in `ns`, or in this
/// thread's namespace: (inode, queued connections).
/// The listening sockets on `addr` (the whole address: another process may
/// listen on the same port elsewhere) with their accept queues.
pub(super) fn accept_queue(ns: Option<&NetNs>, addr: SocketAddr) -> Result<Vec<(u64, u32)>> {
    let all = match ns {
        Some(ns) => ns.run(listeners::all)?,
        None => listeners::all(),
    }
    .context("cannot list the listening sockets (sock_diag netlink)")?;
    Ok(all
        .into_iter()
        .filter(|l| l.addr == addr)
        .map(|l| (l.inode, l.queued))
        .collect())
}

pub(super) fn show_queue(lab: &mut Lab, ns: Option<&NetNs>, addr: SocketAddr) -> Result<Vec<(u64, u32)>> {
    let q = accept_queue(ns, addr)?;
    let port = addr.port();
    let net = if ns.is_some() {
        "nsenter --net=$NS "
    } else {
        ""
    };
    lab.proof(format!(
        "$ {net}ss -lte   # listening on 127.0.0.1:{port}: Recv-Q is the accept queue"
    ));
    for (ino, n) in &q {
        lab.proof(format!("listening socket:[{ino}] Recv-Q={}", vol(n)));
    }
    Ok(q)
}
