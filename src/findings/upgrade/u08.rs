//! U08: real nginx upgrades and rolls back without errors.

use anyhow::Result;

use crate::drivers::fleet::{finish_load, quit, rollback, served_by, start_load, upgrade, SETTLE};
use crate::drivers::nginx;
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::Lab;
use crate::findings::{NGINX, NGINX_UPGRADE};

pub static U08: Finding = Finding {
    id: "U08",
    slug: "real_nginx_upgrades_and_rolls_back_without_errors",
    claim: "The same sequence against real nginx (the system's package) shows the article's process tables: the new master's parent is the old master, `.oldbin` appears, the old master's exe is `(deleted)`, both masters hold the same listening socket, and no request fails under load; the rollback path works too.",
    source: NGINX_UPGRADE,
    steps: &[
        "copy nginx into the sandbox (bin/nginx), write a config (daemon on, master_process on, 2 workers, 127.0.0.1 on a free port, pid file, logs and temp folders in the sandbox) and start it; the load client opens new connections continuously",
        "upgrade: install another copy over bin/nginx; USR2 (new master, child of the old; .oldbin; old exe (deleted); one listening socket inode in both masters; the fd numbers the new master logs as inherited through NGINX); both generations serve; WINCH; QUIT the old master",
        "rollback: install another copy; USR2; WINCH; HUP the old master (its workers come back, forked from the old image); QUIT the new master: the pid file is renamed back",
        "stop the load: no request failed; QUIT nginx",
    ],
    experiment: u08,
    scope: Scope::Host,
    needs: &[NGINX, Need::Filesystem],
    lesson: Lesson {
        title: "Real nginx upgraded and rolled back",
        question: "Does real nginx — the system's package (recorded with Debian 12's nginx 1.22.1), not a model of it — behave as the article reads its source, and does it keep every connection through an upgrade and a rollback?",
        exercise: "Follow the process tables and `[load]` lines through the upgrade and the rollback: who is the new master's parent, where does nginx pass the listening fd numbers, and which generation serves at the end of each part?",
        answer: "In both parts the new master's parent is the old master, the old master's exe ends in `(deleted)`, both hold the same listening socket, and the fd numbers travel in the `NGINX` environment variable. After the upgrade gen 2 serves alone; after the rollback the old generation does; no request fails.",
    },
    ..Finding::DEFAULTS
};

pub fn u08(lab: &mut Lab) -> Result<()> {
    let mut ng = nginx::start(lab, 2)?;
    let first = ng.master;
    let load = start_load(lab, &ng.fleet, 4)?;
    served_by(lab, &load, &ng.fleet, load.mark(), first, SETTLE)?;
    lab.part("upgrade: USR2, WINCH, QUIT");
    let second = upgrade(
        lab,
        &mut ng.fleet,
        &load,
        first,
        SETTLE,
        &mut nginx::replace_binary,
    )?;
    lab.part("rollback: USR2, WINCH, HUP the old master, QUIT the new one");
    rollback(
        lab,
        &mut ng.fleet,
        &load,
        second,
        SETTLE,
        &mut nginx::replace_binary,
    )?;
    lab.part("the end");
    finish_load(lab, load, &ng.fleet);
    quit(lab, second, "$(cat run/nginx.pid)")?;
    Ok(())
}
