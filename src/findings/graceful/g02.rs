//! G02: a stop/start restart refuses and truncates.

use std::time::Duration;

use anyhow::Result;

use crate::drivers::handover::{listening_inodes, start_load, Service, Setup, Strategy};
use crate::drivers::load::{Kind, Sample};
use crate::harness::finding::{Finding, Scope, Lesson};
use crate::harness::lab::{vol, Lab};
use crate::targets::handover::mono_ns;
use crate::findings::GRACEFUL_RESTART;

use super::common::{show_listening_on, sorted};

pub static G02: Finding = Finding {
    id: "G02",
    slug: "a_stop_start_restart_refuses_and_truncates",
    claim: "Stop/start restart: during the dead time clients get ECONNREFUSED (the article's `system:111`), and downloads in flight end early (the article's `asio.misc:2`, EOF).",
    source: GRACEFUL_RESTART,
    steps: &[
        "start gen 1 (2 MiB downloads, each spread over 300 ms) on 127.0.0.1 and ::1; the load opens 100 connections a second",
        "once downloads are in flight, TERM gen 1: it exits at once",
        "wait until a client is refused (the dead time): the kernel's list of listening sockets (sock_diag, what `ss -lt` shows) has none on the addresses; then start gen 2 on the same addresses (new socket inodes)",
        "stop the load once gen 2 has served: every refusal lies in the dead time, and downloads begun before the stop were cut short; resets are counted, not judged",
    ],
    experiment: g02,
    scope: Scope::Host,
    lesson: Lesson {
        title: "Stop, then start",
        question: "What exactly do clients see when a server is restarted the ordinary way — stopped, then started again — while they are connecting and downloading?",
        exercise: "Read the `[load] around the restart` line and the checks: what did clients get during the dead time, and what happened to downloads in flight when the old process exited?",
        answer: "During the dead time no socket listens (the kernel lists none): clients are refused (ECONNREFUSED, the article's `system:111`), and only then. Downloads in flight when the old process exits end early, EOF before the whole body (the article's `asio.misc:2`); some are reset.",
    },
    ..Finding::DEFAULTS
};

/// The article's stop/start restart, with its dead time made visible: the
/// new process starts only once a client has been refused.
pub fn g02(lab: &mut Lab) -> Result<()> {
    let setup = Setup::new(2 << 20, 300, 0);
    let mut svc = Service::start(lab, Strategy::StopStart, setup)?;
    let old = svc.current.pid;
    let addrs = svc.addrs();
    let load = start_load(lab, addrs.clone(), 100.0, 64)?;
    // CLOCK_MONOTONIC of the load's start: the servers' at_ns on its clock.
    let zero_ns = mono_ns().saturating_sub(load.now().as_nanos() as u64);
    let m = load.mark();
    load.wait_for(m, 10, "a download from gen 1 completed", |s| {
        s.kind == Kind::Completed
    })?;
    lab.wait_until("downloads are in flight", || {
        let n = load.in_flight();
        if n >= 2 {
            Ok(())
        } else {
            Err(format!("{n} in flight"))
        }
    })?;
    let gen1 = listening_inodes(&svc.current);
    let before = show_listening_on(lab, &addrs, &gen1, "gen 1's sockets")?;
    lab.note("stop: the old process exits at once (the article's Ctrl-C)");
    let stop = load.mark();
    svc.stop_now(lab)?;
    let exited = load.now();
    lab.note("dead time: nobody listens; the new process starts once a client has been refused");
    load.wait_for(stop, 1, "a connection was refused", |s| {
        s.kind == Kind::Refused
    })?;
    let dead = show_listening_on(lab, &addrs, &gen1, "the dead time")?;
    svc.start_again(lab)?;
    let gen2 = svc.current.gen;
    // Gen 2 listened before it said `accepting`: no refusal begins later.
    let listening = Duration::from_nanos(svc.current.at_ns.saturating_sub(zero_ns));
    let gen2_fds = listening_inodes(&svc.current);
    let again = show_listening_on(lab, &addrs, &gen2_fds, "gen 2's")?;
    let m = load.mark();
    load.wait_for(m, 10, "a download from gen 2 completed", |s| {
        s.kind == Kind::Completed && s.answer.as_ref().and_then(|a| a.gen) == Some(gen2)
    })?;
    let samples = load.stop();
    let after: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.end() >= stop.at)
        .collect();
    let of = |k: Kind| -> Vec<&Sample> { after.iter().filter(|s| s.kind == k).copied().collect() };
    let (refused, truncated, reset) = (of(Kind::Refused), of(Kind::ShortRead), of(Kind::Reset));
    lab.say(format!(
        "[load] around the restart: {} refused, {} truncated (EOF early), {} reset, {} completed",
        vol(refused.len()),
        vol(truncated.len()),
        vol(reset.len()),
        vol(of(Kind::Completed).len())
    ));
    let first = |v: &[&Sample]| v.first().and_then(|s| s.detail.clone()).unwrap_or_default();
    lab.observe("refused", refused.len());
    lab.observe("truncated", truncated.len());
    lab.observe("reset", reset.len());
    lab.observe("old_pid", old);
    lab.observe("first_refused", first(&refused));
    lab.observe("first_truncated", first(&truncated));
    lab.observe("first_reset", first(&reset));
    lab.check(
        "during the dead time the kernel lists no listening socket on the addresses: gen 1's closed when it exited, gen 2 binds new ones",
        before == sorted(gen1.clone())
            && dead.is_empty()
            && again == sorted(gen2_fds.clone())
            && again.iter().all(|i| !before.contains(i)),
        format!("gen 1 {before:?}, dead time {dead:?}, gen 2 {again:?}"),
    );
    // Over the whole run: a refusal that ended before the stop, or began
    // after gen 2 listened, would not be the dead time's.
    let outside: Vec<String> = samples
        .iter()
        .filter(|s| s.kind == Kind::Refused)
        .filter(|s| s.end() < stop.at || s.sent() >= listening)
        .map(|s| format!("at {:?}: {}", s.sent(), s.detail.clone().unwrap_or_default()))
        .collect();
    lab.check(
        "the refused connections (ECONNREFUSED, the article's system:111) are the dead time's: none ended before the stop or began after gen 2 listened",
        outside.is_empty(),
        format!(
            "{} refused outside the dead time ({:?} to {listening:?}): {}",
            outside.len(),
            stop.at,
            outside.join("; ")
        ),
    );
    let late: Vec<&&Sample> = truncated.iter().filter(|s| s.sent() >= exited).collect();
    lab.check(
        "downloads in flight when the old process exits end early (EOF before the whole body, the article's asio.misc:2): some did, and only those begun before it exited",
        !truncated.is_empty() && late.is_empty(),
        format!(
            "{} truncated ({}), {} of them begun after gen 1 exited",
            truncated.len(),
            first(&truncated),
            late.len()
        ),
    );
    Ok(())
}
