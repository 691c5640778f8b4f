//! G04: queued connections wait while any fd holds the socket.

use anyhow::Result;
use nix::sys::signal::Signal;

use crate::drivers::handover::CONTROL;
use crate::harness::finding::{Finding, Scope, Lesson};
use crate::harness::lab::{pidt, Lab};
use crate::harness::process::Program;
use crate::findings::GRACEFUL_RESTART;

use super::common::{accept_queue, listening_addr, queue_clients, read_all, show_queue};

const QUEUED: usize = 20;

pub static G04: Finding = Finding {
    id: "G04",
    slug: "queued_connections_wait_while_any_fd_holds_the_socket",
    claim: "Connections that arrive while nobody calls `accept` wait in the listening socket's queue and are served later, as long as some process still holds the socket; closing the last fd of the listening socket resets them: every queued client is served through a dup passed by SCM_RIGHTS, and every one gets ECONNRESET, never EOF, when the last fd closes.",
    source: GRACEFUL_RESTART,
    steps: &[
        "start A listening but not accepting; 20 clients connect and send a request: they wait in the accept queue (Recv-Q of the listening socket in `ss -lt`)",
        "B takes the socket over by SCM_RIGHTS; A exits: B serves every one of them",
        "start C listening but not accepting; 20 clients connect; C exits (the last fd closes): every one is reset",
    ],
    experiment: g04,
    scope: Scope::Host,
    lesson: Lesson {
        title: "Connections waiting in the accept queue",
        question: "Between the moment the old process stops accepting and the moment the new one starts, where do new connections go — and when are they lost?",
        exercise: "In the first part nobody accepts while 20 clients connect; what happens to them once B holds the socket? In the second part, what do the 20 queued clients get when C, the last holder, exits?",
        answer: "The 20 connections queued while nobody accepted are served by B, which received the socket over SCM_RIGHTS. When the last fd of the listening socket closes, every queued client gets ECONNRESET, never EOF.",
    },
    ..Finding::DEFAULTS
};

pub fn g04(lab: &mut Lab) -> Result<()> {
    let args = [
        "--paused",
        "--control",
        CONTROL,
        "--listen",
        "127.0.0.1:0",
        "--body",
        "256",
    ];
    let mut a = lab.start_with(Program::Handover, "A", &args, |_| String::new())?;
    let pid_a = a.pid();
    lab.expect(&mut a, &format!("notice pid={pid_a}: paused"))?;
    let line = a.wait_line(|l| l.contains(": listening fd="), "`listening`")?;
    let addr = listening_addr(&line)?;
    lab.note(format!(
        "{QUEUED} clients connect and send a request; A does not accept"
    ));
    let clients = queue_clients(addr, QUEUED)?;
    let q = lab.wait_until("the connections wait in A's accept queue", || {
        let q = accept_queue(None, addr).map_err(|e| format!("{e:#}"))?;
        match q.first() {
            Some((_, n)) if *n as usize >= QUEUED => Ok(q),
            other => Err(format!("{other:?}")),
        }
    })?;
    let _ = q;
    show_queue(lab, None, addr)?;
    lab.note("B takes the listening socket over (SCM_RIGHTS); A, released, exits");
    let mut b = lab.start_with(
        Program::Handover,
        "B",
        &["--takeover", CONTROL, "--body", "256"],
        |_| String::new(),
    )?;
    let pid_b = b.pid();
    lab.expect(&mut b, &format!("notice pid={pid_b}: received"))?;
    lab.expect(&mut a, &format!("notice pid={pid_a}: drained"))?;
    a.wait_exit()?;
    let got = read_all(clients);
    let by_b = got
        .iter()
        .filter(|r| r.as_ref().ok() == Some(&b.pid()))
        .count();
    lab.say(format!(
        "[clients] {by_b} of {QUEUED} queued clients served by B {}",
        pidt(b.pid())
    ));
    lab.observe("served_after_handover", by_b);
    lab.check(
        "connections queued while nobody accepted are served by the process that received the socket",
        by_b == QUEUED,
        format!("{got:?}"),
    );

    lab.part("the last fd closes");
    let args = ["--paused", "--listen", "127.0.0.1:0", "--body", "256"];
    let mut c = lab.start_with(Program::Handover, "C", &args, |_| String::new())?;
    let line = c.wait_line(|l| l.contains(": listening fd="), "`listening`")?;
    let addr = listening_addr(&line)?;
    lab.note(format!(
        "{QUEUED} clients connect and send a request; C does not accept"
    ));
    let clients = queue_clients(addr, QUEUED)?;
    let pid_c = c.pid();
    lab.wait_until(
        "the connections wait in C's accept queue",
        || match accept_queue(None, addr)
            .map_err(|e| format!("{e:#}"))?
            .first()
        {
            Some((_, n)) if *n as usize >= QUEUED => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )?;
    show_queue(lab, None, addr)?;
    lab.note("C exits: the last fd of the listening socket closes");
    lab.kill(Signal::SIGTERM, pid_c, "$C")?;
    c.wait_exit()?;
    let got = read_all(clients);
    let reset = got
        .iter()
        .filter(|r| matches!(r, Err(e) if e.contains("reset")))
        .count();
    let eof = got
        .iter()
        .filter(|r| matches!(r, Err(e) if e == "EOF"))
        .count();
    lab.say(format!(
        "[clients] {reset} of {QUEUED} reset (ECONNRESET), {eof} EOF"
    ));
    lab.observe("reset_when_closed", reset);
    lab.check(
        "closing the last fd of the listening socket resets every queued connection (ECONNRESET, never EOF)",
        reset == QUEUED && eof == 0,
        format!("{got:?}"),
    );
    Ok(())
}
