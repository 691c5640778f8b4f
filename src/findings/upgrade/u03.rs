//! U03: the nginx-style upgrade keeps every connection.

use anyhow::Result;

use crate::drivers::fleet::{finish_load, install_server_2, served_by, start_load, start_server, upgrade, SETTLE};
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::Lab;
use crate::harness::procs;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::V1;
use crate::findings::NGINX_UPGRADE;

pub static U03: Finding = Finding {
    id: "U03",
    slug: "the_nginx_style_upgrade_keeps_every_connection",
    claim: "The nginx upgrade, reproduced by the harness's own master/worker server: USR2 renames the pid file to `<pid>.oldbin`, forks and execs the new binary, which is a child of the old master and inherits the listening socket (the same socket inode in `/proc/PID/fd` of both masters; fd numbers passed in an environment variable). Both generations serve. WINCH: old workers finish gracefully, the old master stays. QUIT: the old master exits. No client connection fails through the whole sequence under load.",
    source: NGINX_UPGRADE,
    steps: &[
        "start swaplab-server 1.0.0 (a master, 2 workers, 127.0.0.1 on an ephemeral port, run/swaplab.pid); the load client opens new connections continuously",
        "install swaplab-server 2.0.0 over bin/swaplab-server",
        "kill -USR2 master: wait until the pid file names a new master with its workers; its parent (in /proc) is the old master; show the pid files, the process table, both masters' exe, the listening socket inode in both /proc/PID/fd and the fd numbers in the new master's environment; wait for answers from both generations",
        "kill -WINCH old master: wait until its workers are gone; only gen 2 answers",
        "kill -QUIT old master: wait until it exits; the pid file names the new master; stop the load: no request failed",
    ],
    experiment: u03,
    scope: Scope::Host,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "The nginx upgrade sequence under load",
        question: "Can a server be replaced by a new version of itself without a single client noticing — no refused connection, no reset, no truncated answer — and what does the process tree look like at each step of nginx's documented procedure (USR2, WINCH, QUIT)?",
        exercise: "Follow the `[load] gen N (master [PID-k]) answers` lines and the process tables: which master answers after USR2, after WINCH and after QUIT? Who is the new master's parent, and how many requests failed?",
        answer: "After USR2 both generations answer, gen 1 from master `[PID-1]` and gen 2 from the new master, whose parent (PPID) in the table is `[PID-1]`; the old master's exe is `(deleted)` and both hold the same listening socket inode. After WINCH only gen 2's workers answer; after QUIT gen 2 serves alone and the pid file names the new master. The load line says 0 requests failed.",
    },
    ..Finding::DEFAULTS
};

pub fn u03(lab: &mut Lab) -> Result<()> {
    lab.put_lib(V1, Replace::Install)?;
    let (mut s, mut fleet) = start_server(lab, 2)?;
    let old = s.pid();
    let load = start_load(lab, &fleet, 4)?;
    served_by(lab, &load, &fleet, load.mark(), old, SETTLE)?;
    lab.note(
        "the new version is installed over the running binary, then the article's three signals",
    );
    let new = upgrade(lab, &mut fleet, &load, old, SETTLE, &mut install_server_2)?;
    s.wait_exit()?;
    let samples = finish_load(lab, load, &fleet);
    let versions: Vec<(u32, String)> = {
        let mut v: Vec<(u32, String)> = samples
            .iter()
            .filter_map(|s| s.answer.as_ref())
            .filter_map(|a| Some((a.gen?, a.version.clone()?)))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    lab.check_eq(
        "gen 1 answered as version 1.0.0 and gen 2 as 2.0.0",
        versions,
        vec![(1, "1.0.0".to_string()), (2, "2.0.0".to_string())],
    );
    lab.observe(
        "new_master_ppid_after_quit",
        procs::get(new).map(|p| p.ppid),
    );
    Ok(())
}
