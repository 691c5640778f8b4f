//! G01: a second bind fails with EADDRINUSE unless SO_REUSEPORT is set.

use std::net::SocketAddr;

use anyhow::{Context, Result};

use crate::drivers::handover::{accepting_line, socket_inode, Accepting};
use crate::drivers::load::{self, Load};
use crate::harness::finding::{Finding, Scope, Lesson};
use crate::harness::lab::{vol, Lab};
use crate::harness::process::{hermetic, Program};
use crate::findings::GRACEFUL_RESTART;

use super::common::{show_listening_on, sorted};

/// Runs the server to its end (it is expected to fail at start): exit
/// status and stderr.
fn run_to_end(lab: &mut Lab, args: &[&str]) -> Result<(i32, String)> {
    let exe = lab.sandbox.program(Program::Handover)?;
    let mut cmd = hermetic(&exe, &lab.sandbox.lib_dir());
    cmd.current_dir(lab.sandbox.root())
        .args(args)
        .stdin(std::process::Stdio::null());
    lab.shell(format!("bin/swaplab-handover {}", args.join(" ")));
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {}", exe.display()))?;
    let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
    for l in err.lines() {
        lab.say(l.to_string());
    }
    let code = out.status.code().unwrap_or(-1);
    lab.shell("echo $?");
    lab.say(code.to_string());
    Ok((code, err))
}

fn port_of(a: &Accepting) -> u16 {
    a.fds[0].1.port()
}

/// Requests `n` downloads one after another; returns who answered each
/// (`Err` with what happened to one that failed).
fn answers(addr: SocketAddr, n: usize) -> Result<Vec<std::result::Result<i32, String>>> {
    let mut o = load::LoadOptions::new(addr);
    o.connections = 1;
    o.max_requests = n as u64;
    let l = Load::start(o)?;
    // From the load's start: a mark taken now may come after the first
    // request began, and that request would not count.
    l.wait_for(l.origin(), n, "a request ended", |_| true)?;
    Ok(l.stop()
        .iter()
        .map(|s| match &s.answer {
            Some(a) => Ok(a.pid),
            None => Err(format!(
                "{:?} {}",
                s.kind,
                s.detail.clone().unwrap_or_default()
            )),
        })
        .collect())
}

pub static G01: Finding = Finding {
    id: "G01",
    slug: "a_second_bind_fails_with_eaddrinuse_unless_reuseport",
    claim: "A second process cannot bind a port that a listening socket holds (EADDRINUSE), unless both use SO_REUSEPORT.",
    source: GRACEFUL_RESTART,
    steps: &[
        "start A listening on 127.0.0.1 (an ephemeral port)",
        "start a second process on the same address: it fails with EADDRINUSE",
        "start C and D on one port, both with SO_REUSEPORT: two listening sockets (two inodes); new connections reach both",
        "a third process without SO_REUSEPORT on that port: EADDRINUSE",
    ],
    experiment: g01,
    scope: Scope::Host,
    lesson: Lesson {
        title: "Two processes on one port",
        question: "A restart has to put a new process on the port the old one listens on. Why can it not simply start the new server first and stop the old one after?",
        exercise: "What does the second bind on A's port return, and how many listening sockets does the kernel list there? What changes when both set SO_REUSEPORT, and when only one does?",
        answer: "Without SO_REUSEPORT the second bind fails with EADDRINUSE and the kernel lists one listening socket, A's. With SO_REUSEPORT on both the bind succeeds: two listening sockets (two inodes) on one port, and new connections are spread over both. A third process without the option is refused again: both sides must set it.",
    },
    ..Finding::DEFAULTS
};

pub fn g01(lab: &mut Lab) -> Result<()> {
    let small = ["--body", "256"];
    let mut args: Vec<&str> = vec!["--listen", "127.0.0.1:0"];
    args.extend(small);
    let mut a = lab.start_with(Program::Handover, "A", &args, |_| String::new())?;
    let acc_a = accepting_line(lab, &mut a, 1)?;
    let port = port_of(&acc_a);
    lab.note("a second process binds the same address: refused by the kernel");
    let addr = format!("127.0.0.1:{port}");
    let (code, err) = run_to_end(lab, &["--listen", &addr, "--body", "256"])?;
    let ia = socket_inode(a.pid(), acc_a.fds[0].0);
    let listed = show_listening_on(lab, &acc_a.addrs(), &[ia], "after the second try")?;
    lab.check(
        "a second bind of a port a listening socket holds fails with EADDRINUSE: the kernel still lists one listening socket there, A's",
        code == 2 && err.contains("Address already in use") && ia != 0 && listed == [ia],
        format!("exit {code}: {err}; listening inodes {listed:?}, A's {ia}"),
    );
    lab.observe("plain_second_bind", &err);

    lab.part("both with SO_REUSEPORT");
    let mut args: Vec<&str> = vec!["--reuseport", "--listen", "127.0.0.1:0"];
    args.extend(small);
    let mut c = lab.start_with(Program::Handover, "C", &args, |_| String::new())?;
    let acc_c = accepting_line(lab, &mut c, 1)?;
    let addr = format!("127.0.0.1:{}", port_of(&acc_c));
    let mut args: Vec<&str> = vec!["--reuseport", "--listen", &addr];
    args.extend(small);
    let mut d = lab.start_with(Program::Handover, "D", &args, |_| String::new())?;
    let acc_d = accepting_line(lab, &mut d, 1)?;
    let (ic, id) = (
        socket_inode(c.pid(), acc_c.fds[0].0),
        socket_inode(d.pid(), acc_d.fds[0].0),
    );
    lab.proof(format!(
        "$ readlink /proc/{}/fd/{} /proc/{}/fd/{}",
        c.pid(),
        acc_c.fds[0].0,
        d.pid(),
        acc_d.fds[0].0
    ));
    lab.proof(format!("socket:[{ic}]"));
    lab.proof(format!("socket:[{id}]"));
    let both = sorted(vec![ic, id]);
    let listed = show_listening_on(lab, &acc_c.addrs(), &[ic, id], "C's and D's")?;
    lab.check(
        "with SO_REUSEPORT on both, the second bind succeeds: two listening sockets (two inodes) on one port, both in the kernel's list",
        ic != 0 && id != 0 && ic != id && listed == both,
        format!("inodes {ic} and {id}; listening {listed:?}"),
    );
    let sa: SocketAddr = addr.parse().context("address")?;
    let who = answers(sa, 64)?;
    let (by_c, by_d) = (
        who.iter().filter(|p| p.as_ref() == Ok(&c.pid())).count(),
        who.iter().filter(|p| p.as_ref() == Ok(&d.pid())).count(),
    );
    let failed: Vec<&String> = who.iter().filter_map(|r| r.as_ref().err()).collect();
    lab.say(format!(
        "[load] 64 new connections: {} answered by C, {} by D",
        vol(by_c),
        vol(by_d)
    ));
    lab.check(
        "the kernel spreads new connections over both sockets",
        by_c > 0 && by_d > 0 && failed.is_empty(),
        format!("C {by_c}, D {by_d}, failed {failed:?}"),
    );
    lab.note("a third process without SO_REUSEPORT on that port: refused");
    let (code, err) = run_to_end(lab, &["--listen", &addr, "--body", "256"])?;
    let listed = show_listening_on(lab, &acc_c.addrs(), &[ic, id], "still C's and D's only")?;
    lab.check(
        "SO_REUSEPORT must be set on both sides: a bind without it still fails with EADDRINUSE",
        code == 2 && err.contains("Address already in use") && listed == both,
        format!("exit {code}: {err}; listening {listed:?}"),
    );
    Ok(())
}
