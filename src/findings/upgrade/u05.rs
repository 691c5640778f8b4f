//! U05: rollback brings the old generation back without errors.

use anyhow::Result;

use crate::drivers::fleet::{finish_load, install_server_2, rollback, served_by, start_load, start_server, SETTLE};
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::Lab;
use crate::harness::procs;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::V1;
use crate::findings::NGINX_UPGRADE;

pub static U05: Finding = Finding {
    id: "U05",
    slug: "rollback_brings_the_old_generation_back_without_errors",
    claim: "Rollback: HUP to the old master starts old workers again (forked from the old image); QUIT/TERM to the new master; the pid file is renamed back and the old generation serves; no client connection fails.",
    source: NGINX_UPGRADE,
    steps: &[
        "start the server under load; install 2.0.0; USR2; WINCH the old master",
        "HUP the old master: it forks fresh workers from the old image",
        "QUIT the new master: it exits, the old master renames .oldbin back to the pid file",
        "only version 1.0.0 answers; no request failed",
    ],
    experiment: u05,
    scope: Scope::Host,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "Rolling an upgrade back",
        question: "The new version is running and the old workers are gone (after WINCH), but the new version misbehaves. Can the old one come back, without a client noticing?",
        exercise: "After HUP to the old master, whose workers answer, and from which image (see the process table's exe)? Which master does the pid file name after QUIT to the new one?",
        answer: "HUP brings the old master's workers back, forked from the old image: their exe is `(deleted)`. After QUIT to the new master the pid file names the old master again, no `.oldbin` remains, and every answer comes from version 1.0.0, with no failed request.",
    },
    ..Finding::DEFAULTS
};

pub fn u05(lab: &mut Lab) -> Result<()> {
    lab.put_lib(V1, Replace::Install)?;
    let (s, mut fleet) = start_server(lab, 2)?;
    let old = s.pid();
    let load = start_load(lab, &fleet, 4)?;
    served_by(lab, &load, &fleet, load.mark(), old, SETTLE)?;
    lab.note("the new version is installed; USR2 and WINCH as for an upgrade, then the way back");
    rollback(lab, &mut fleet, &load, old, SETTLE, &mut install_server_2)?;
    let since = load.mark();
    served_by(lab, &load, &fleet, since, old, SETTLE)?;
    let last = load.since(since);
    let vs: Vec<String> = {
        let mut v: Vec<String> = last
            .iter()
            .filter_map(|s| s.answer.as_ref()?.version.clone())
            .collect();
        v.sort();
        v.dedup();
        v
    };
    lab.check_eq(
        "after the rollback every answer comes from version 1.0.0",
        vs,
        vec!["1.0.0".to_string()],
    );
    finish_load(lab, load, &fleet);
    lab.check("the old master still runs", procs::alive(old), "gone");
    drop(s);
    Ok(())
}
