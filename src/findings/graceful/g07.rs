//! G07: IPv6 link-local needs a scope id.

use std::io::{Read, Write};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpStream};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::{vol, Lab};
use crate::harness::netns::NetNs;
use crate::findings::GRACEFUL_RESTART;

/// Runs `ip ARGS` inside `ns`, narrated with `shown` for the namespace paths.
fn ip(lab: &mut Lab, ns: &NetNs, args: &[&str], shown: &str) -> Result<()> {
    // A namespace path (`/proc/PID/fd/N`) shows as the variable `$NS_B`.
    let words: Vec<&str> = args
        .iter()
        .map(|a| if a.starts_with("/proc/") { "$NS_B" } else { a })
        .collect();
    lab.shell(format!("nsenter --net=$NS_{shown} ip {}", words.join(" ")));
    let ip = crate::harness::programs::find("ip").context("ip (iproute2) is not installed")?;
    let mut cmd = std::process::Command::new(ip);
    cmd.args(args);
    ns.enter_on_exec(&mut cmd);
    let out = cmd.output().context("cannot run ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn link_local(lab: &mut Lab, ns: &NetNs, ifname: &str) -> Result<(Ipv6Addr, u32)> {
    let (addr, index) = lab.wait_until(
        &format!("{ifname} has a usable (not tentative) link-local address"),
        || {
            let a = ns.ipv6_addrs(ifname).map_err(|e| e.to_string())?;
            match a.iter().find(|(ip, _, _)| ip.segments()[0] == 0xfe80) {
                Some((ip, index, false)) => Ok((*ip, *index)),
                Some((ip, _, true)) => Err(format!("{ip} tentative")),
                None => Err("no fe80:: address yet".into()),
            }
        },
    )?;
    lab.proof(format!(
        "$ ip -6 addr show dev {ifname}   # (in its namespace)"
    ));
    lab.proof(format!(
        "{}: {ifname}: inet6 {}/64 scope link",
        vol(index),
        vol(addr)
    ));
    Ok((addr, index))
}

pub static G07: Finding = Finding {
    id: "G07",
    slug: "ipv6_link_local_needs_a_scope_id",
    claim: "IPv6 link-local addresses need a scope id: connecting to `fe80::…` without `%ifname` fails with EINVAL, a wrong scope id gives ENETUNREACH, and with the right one it succeeds (shown between two network namespaces joined by a veth pair).",
    source: GRACEFUL_RESTART,
    steps: &[
        "make two network namespaces A and B and a veth pair swl-a (in A) / swl-b (in B); bring both up",
        "duplicate address detection off inside both (accept_dad=0: the two ends are alone on the link); wait until both link-local addresses are usable",
        "B listens on [::] and answers every connection until the end (with a deadline); from A connect to B's fe80:: address without a scope id, with %lo, with %swl-a (connects and reads with deadlines)",
        "B accepted exactly one connection, from A's link-local address",
    ],
    experiment: g07,
    scope: Scope::Host,
    needs: &[
        Need::NetNs("joins two hosts with a veth pair"),
        Need::Tool {
            program: "ip",
            package: "iproute2",
        },
        Need::Ipv6,
    ],
    lesson: Lesson {
        title: "IPv6 link-local addresses",
        question: "The article's appendix connects to `fe80::223:7dff:ff95:a98d%ib0`. Why is the `%ib0` needed?",
        exercise: "What does connecting to B's `fe80::` address return without a scope id, with the wrong interface (`lo`), and with the right one?",
        answer: "Without a scope id: EINVAL (the kernel cannot tell which link is meant). With `%lo`: ENETUNREACH. With the right interface (`%swl-a`) the connection succeeds, and B accepted exactly that one connection, from A's link-local address.",
    },
    ..Finding::DEFAULTS
};

pub fn g07(lab: &mut Lab) -> Result<()> {
    lab.note("two fresh network namespaces, A and B, joined by a veth pair");
    // The two ends are alone on their link: duplicate address detection
    // (a second or two in which the fe80:: addresses are tentative and
    // unusable) has nothing to find, so it is off in both namespaces.
    lab.note("no duplicate address detection: net.ipv6.conf.default.accept_dad=0 inside both");
    let no_dad = [("net.ipv6.conf.default.accept_dad", "0")];
    let a = NetNs::new(&no_dad)?;
    let b = NetNs::new(&no_dad)?;
    let b_path = b.path();
    ip(
        lab,
        &a,
        &[
            "link", "add", "swl-a", "type", "veth", "peer", "name", "swl-b", "netns", &b_path,
        ],
        "A",
    )?;
    ip(lab, &a, &["link", "set", "swl-a", "up"], "A")?;
    ip(lab, &b, &["link", "set", "swl-b", "up"], "B")?;
    let t0 = std::time::Instant::now();
    let (a_ip, a_index) = link_local(lab, &a, "swl-a")?;
    let (b_ip, _b_index) = link_local(lab, &b, "swl-b")?;
    lab.observe("link_local_ms", t0.elapsed().as_millis() as u64);
    let listener = b.run(|| std::net::TcpListener::bind("[::]:0"))??;
    listener.set_nonblocking(true)?;
    let port = listener.local_addr()?.port();
    lab.note(format!("B listens on [::]:{}", vol(port)));
    // B answers every connection until told to stop or the deadline: a
    // platform that lets an unscoped connect through gets its answer too,
    // and nothing here waits without a deadline.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let server = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || -> Vec<SocketAddr> {
            let until = std::time::Instant::now() + crate::harness::process::deadline();
            let mut seen = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst)
                && std::time::Instant::now() < until
            {
                match listener.accept() {
                    Ok((mut c, from)) => {
                        let _ = c.set_nonblocking(false);
                        let _ = c.set_write_timeout(Some(Duration::from_secs(5)));
                        let _ = c.write_all(b"hello from B\n");
                        seen.push(from);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
            seen
        })
    };
    let try_connect = |lab: &mut Lab,
                       scope: u32,
                       shown: &str|
     -> Result<std::result::Result<String, std::io::Error>> {
        lab.shell(format!("connect [{shown}]:{}   # from A", vol(port)));
        let sa = SocketAddr::V6(SocketAddrV6::new(b_ip, port, 0, scope));
        let r = a.run(move || {
            TcpStream::connect_timeout(&sa, Duration::from_secs(5)).and_then(|mut s| {
                s.set_read_timeout(Some(crate::harness::process::deadline()))?;
                let mut got = String::new();
                s.read_to_string(&mut got)?;
                Ok(got.trim().to_string())
            })
        })?;
        match &r {
            Ok(got) => lab.say(got.clone()),
            Err(e) => lab.say(format!("connect: {e}")),
        }
        Ok(r)
    };
    let plain = try_connect(lab, 0, "fe80::…")?;
    let errno = |r: &std::result::Result<String, std::io::Error>| {
        r.as_ref().err().and_then(|e| e.raw_os_error())
    };
    lab.check(
        "without a scope id the kernel cannot tell which link is meant: EINVAL",
        errno(&plain) == Some(libc::EINVAL),
        format!("{plain:?}"),
    );
    let wrong = try_connect(lab, 1, "fe80::…%lo")?;
    lab.check(
        "with the wrong interface (lo) the address is unreachable: ENETUNREACH",
        errno(&wrong) == Some(libc::ENETUNREACH),
        format!("{wrong:?}"),
    );
    let right = try_connect(lab, a_index, "fe80::…%swl-a")?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen = server
        .join()
        .map_err(|_| anyhow!("the listener thread panicked"))?;
    let from_a: Vec<&SocketAddr> = seen
        .iter()
        .filter(|f| matches!(f, SocketAddr::V6(v) if *v.ip() == a_ip))
        .collect();
    lab.say(format!(
        "# B accepted {} connection(s), {} from A's link-local address",
        vol(seen.len()),
        vol(from_a.len())
    ));
    lab.check(
        "with the right scope id (%swl-a) the connection succeeds: A reads B's answer, and B accepted exactly that one connection, from A's link-local address",
        matches!(&right, Ok(g) if g == "hello from B") && seen.len() == 1 && from_a.len() == 1,
        format!("{right:?}; B accepted {seen:?}"),
    );
    let from: Vec<String> = seen.iter().map(|a| a.to_string()).collect();
    lab.observe("client_seen_by_b", from);
    Ok(())
}
