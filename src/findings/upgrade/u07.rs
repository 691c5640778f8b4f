//! U07: a library update needs the exec, not a worker restart.

use anyhow::Result;
use nix::sys::signal::Signal;

use crate::drivers::fleet::{finish_load, served_by, start_load, start_server, usr2, Fleet, SETTLE};
use crate::drivers::load::Sample;
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::{Lab, Stale};
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::{V1, V2};
use crate::harness::variants::{NEW, OLD};
use crate::findings::NGINX_UPGRADE;

pub static U07: Finding = Finding {
    id: "U07",
    slug: "a_library_update_needs_the_exec_not_a_worker_restart",
    claim: "A library update needs the exec: with libexample replaced on disk, a worker restart by fork (HUP) still runs the old library; USR2 (fork + exec) brings the new one.",
    source: NGINX_UPGRADE,
    steps: &[
        "install libexample v1, start the server under load",
        "install libexample v2 (the server binary stays)",
        "HUP: fresh workers, forked from the master, answer with v1's greeting and map the old library (deleted)",
        "USR2: the new master (fork + execve of the same binary) maps the new library and its workers answer with v2's greeting; no request failed",
    ],
    experiment: u07,
    scope: Scope::Host,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "A library update and a server reload",
        question: "nginx has two ways to renew its workers: HUP (reload: the master forks fresh workers) and USR2 (upgrade: fork + exec). After a library update on disk (an OpenSSL fix, say), is a reload enough?",
        exercise: "After libexample is updated, HUP makes the master fork fresh workers. Which library do they map, and what does `swaplab stale` say of them? What changes after USR2?",
        answer: "The fresh workers forked on HUP still answer with the old library and map libexample `(deleted)`; `swaplab stale` flags the old master and tells of each fresh worker to exec or restart the master, `[PID-1]`, instead. After USR2 (fork + exec) the new generation answers with the new library and the new master maps it. No request failed.",
    },
    ..Finding::DEFAULTS
};

pub fn u07(lab: &mut Lab) -> Result<()> {
    let ino1 = lab.put_lib(V1, Replace::Install)?;
    let (s, mut fleet) = start_server(lab, 2)?;
    let old = s.pid();
    let load = start_load(lab, &fleet, 4)?;
    served_by(lab, &load, &fleet, load.mark(), old, SETTLE)?;
    lab.note("libexample is updated on disk; the server binary stays as it is");
    let ino2 = lab.put_lib(V2, Replace::Install)?;
    lab.note("HUP: the master forks fresh workers (and retires the old ones)");
    let before: Vec<i32> = fleet.workers_of(old);
    lab.kill(Signal::SIGHUP, old, &format!("$(cat {})", fleet.pid_rel))?;
    let n = fleet.workers;
    let fresh = lab.wait_until("only fresh workers run", || {
        let w = fleet.workers_of(old);
        if w.len() == n && w.iter().all(|p| !before.contains(p)) {
            Ok(w)
        } else {
            Err(format!("workers {w:?}, before {before:?}"))
        }
    })?;
    fleet.note_workers(old);
    fleet.table(lab);
    let since = load.mark();
    served_by(lab, &load, &fleet, since, old, SETTLE)?;
    let hup_greetings = greetings(&load.since(since), &fleet, old);
    let m_fresh = lab.maps(fresh[0])?;
    lab.note("which processes must be restarted, and how?");
    let mut asked = vec![old];
    asked.extend(&fresh);
    let r_hup = lab.stale(&asked)?;
    lab.note("USR2: fork + execve of the same binary");
    let since = load.mark();
    let new = usr2(lab, &mut fleet, old, false)?;
    served_by(lab, &load, &fleet, since, new, SETTLE)?;
    let new_greetings = greetings(&load.since(since), &fleet, new);
    let m_new = lab.maps(new)?;
    let mut asked = vec![new];
    asked.extend(fleet.workers_of(new));
    let r_new = lab.stale(&asked)?;
    finish_load(lab, load, &fleet);
    lab.observe("greetings_after_hup", &hup_greetings);
    lab.observe("greetings_after_usr2", &new_greetings);
    lab.check_eq(
        "after HUP the fresh workers (forked) still answer with the old library",
        hup_greetings,
        vec![OLD.to_string()],
    );
    lab.check(
        "a fresh worker maps the old libexample, (deleted)",
        !m_fresh.is_empty() && m_fresh.iter().all(|m| m.deleted && m.inode == ino1),
        format!("{} mappings", m_fresh.len()),
    );
    lab.check_eq(
        "after USR2 the new generation answers with the new library",
        new_greetings,
        vec![NEW.to_string()],
    );
    lab.check(
        "the new master maps the new libexample",
        !m_new.is_empty() && m_new.iter().all(|m| !m.deleted && m.inode == ino2),
        format!("{} mappings", m_new.len()),
    );
    let lib = lab.sandbox.lib_file();
    lab.check_stale(&r_hup, "the old master", old, Stale::replaced(&lib));
    for w in &fresh {
        lab.check_stale(&r_hup, "a fresh worker (HUP)", *w, Stale::replaced(&lib).via(old));
    }
    for p in &asked {
        lab.check_stale(&r_new, "the new generation (USR2)", *p, Stale::Clean);
    }
    Ok(())
}

/// The distinct greetings in answers from `master`'s workers.
fn greetings(samples: &[Sample], fleet: &Fleet, master: i32) -> Vec<String> {
    let mut v: Vec<String> = samples
        .iter()
        .filter(|s| fleet.master_of(s) == Some(master))
        .filter_map(|s| s.answer.as_ref()?.greeting.clone())
        .collect();
    v.sort();
    v.dedup();
    v
}
