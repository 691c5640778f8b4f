//! G03: an SCM_RIGHTS handover restarts without a client error.

use anyhow::Result;

use crate::drivers::handover::{listening_inodes, show_listening, start_load, Service, Setup, Strategy, Switch};
use crate::drivers::load::{self, Kind, Sample};
use crate::harness::finding::{Finding, Scope, Lesson};
use crate::harness::lab::{pidt, vol, Lab};
use crate::findings::GRACEFUL_RESTART;


pub const G03_SWITCHES: usize = 20;
/// Downloads from each new generation before its fds are looked at again.
const LOOK_AGAIN_AFTER: usize = 5;

pub static G03: Finding = Finding {
    id: "G03",
    slug: "an_scm_rights_handover_restarts_without_a_client_error",
    claim: "Graceful restart: the new process receives the listening socket(s) over a Unix domain socket as SCM_RIGHTS ancillary data, starts accepting, and only then the old one stops accepting and drains its open connections: no client sees an error, every download completes.",
    source: GRACEFUL_RESTART,
    steps: &[
        "start gen 1 listening on 127.0.0.1 and ::1, with a control socket run/handover.sock; the load opens 150 connections a second, each a 1 MiB download",
        "start gen 2 with --takeover: it receives both listening fds in one sendmsg, accepts, says ready; gen 1 stops accepting, drains, exits; gen 2 takes the control socket",
        "the same socket inodes in /proc/PID/fd of both; 20 switches in a row",
        "stop the load: no error of any kind; fd counts stay equal; no process runs the server any more (the process table), no control socket file",
    ],
    experiment: g03,
    scope: Scope::Host,
    lesson: Lesson {
        title: "Passing the listening socket",
        question: "Can a server be replaced by a new process without a single client noticing — no refused connection, no cut download?",
        exercise: "How many switches ran, how many downloads failed, and what shows that the new process holds the very same socket as the old one?",
        answer: "20 switches under load, 0 failed downloads, every one complete. The new process's `/proc/PID/fd` shows the same socket inodes as the old one's: the socket itself was passed, never closed. No fd leaks from generation to generation, and nothing is left behind.",
    },
    ..Finding::DEFAULTS
};

pub fn g03(lab: &mut Lab) -> Result<()> {
    let setup = Setup::new(1 << 20, 40, 0);
    let mut svc = Service::start(lab, Strategy::ScmRights, setup)?;
    let load = start_load(lab, svc.addrs(), 150.0, 32)?;
    let m = load.mark();
    load.wait_for(m, 10, "a download completed", |s| s.kind == Kind::Completed)?;
    let mut same = true;
    let mut seen = Vec::new();
    for i in 0..G03_SWITCHES {
        let old = svc.current.clone();
        let before = listening_inodes(&old);
        if i == 0 {
            lab.note("switch 1: the new process takes the sockets over (run/handover.sock)");
            show_listening(lab, &old, &before, "the old process: its listening sockets");
        }
        let sw = svc.switch(lab, i == 0)?;
        let new = svc.current.clone();
        let after = listening_inodes(&new);
        if i == 0 {
            show_listening(lab, &new, &after, "the new process: the same sockets");
        } else {
            lab.say(format!(
                "switch {}: gen {} {} -> gen {} {}, {} fds in {} message",
                i + 1,
                sw.gen - 1,
                pidt(sw.from),
                sw.gen,
                pidt(sw.to),
                sw.received.map(|r| r.0).unwrap_or(0),
                sw.received.map(|r| r.1).unwrap_or(0)
            ));
        }
        same &= before == after && !after.contains(&0);
        let m = load.mark();
        let gen = svc.current.gen;
        load.wait_for(m, LOOK_AGAIN_AFTER, &format!("a download from gen {gen} completed"), |s| {
            s.kind == Kind::Completed && s.answer.as_ref().and_then(|a| a.gen) == Some(gen)
        })?;
        svc.look_again_at_fds();
        seen.extend(svc.switches.last().cloned());
    }
    let samples = load.stop();
    let left = svc.finish(lab)?;
    let failed: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.kind != Kind::Completed)
        .collect();
    let gens: std::collections::BTreeSet<u32> = samples
        .iter()
        .filter_map(|s| s.answer.as_ref().and_then(|a| a.gen))
        .collect();
    lab.say(format!(
        "[load] {} downloads, {} failed ({}), served by {} generations",
        vol(samples.len()),
        failed.len(),
        vol(load::tally(&samples)),
        vol(gens.len())
    ));
    lab.observe("downloads", samples.len());
    lab.observe("failed", failed.len());
    lab.observe("switches", seen.len());
    lab.observe(
        "switch_ms",
        seen.iter().map(Switch::switch_ms).collect::<Vec<_>>(),
    );
    // How many fds in how many messages is what the new process says of
    // its own recvmsg calls: shown, not judged. That it holds all of them
    // is judged below, from the inodes in /proc/PID/fd.
    let received: Vec<(usize, usize)> = seen.iter().filter_map(|s| s.received).collect();
    lab.observe("received_fds_and_messages", &received);
    lab.check(
        "the new process holds the very same sockets (same inodes in /proc/PID/fd)",
        same,
        "an inode differed",
    );
    lab.check(
        format!("{G03_SWITCHES} switches under load: no client error of any kind, every download complete"),
        failed.is_empty(),
        format!(
            "{} of {}: {}",
            failed.len(),
            samples.len(),
            failed
                .iter()
                .take(3)
                .map(|s| format!("{:?} {}", s.kind, s.detail.clone().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    );
    let fds: Vec<usize> = seen.iter().map(|s| s.fds).collect();
    lab.observe("lasting_fds", &fds);
    lab.check(
        format!("no fd leaks from generation to generation (/proc/PID/fd counts at the switch and after {LOOK_AGAIN_AFTER} downloads, connections aside, stay equal)"),
        fds.iter().all(|&n| n > 0) && fds.windows(2).all(|w| w[0] == w[1]),
        format!("{fds:?}"),
    );
    lab.check(
        "nothing is left: no process runs bin/swaplab-handover (the process table), no control socket file",
        left.is_empty(),
        left.join("; "),
    );
    Ok(())
}
