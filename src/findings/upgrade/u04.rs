//! U04: USR2 is ignored while an upgrade is in progress.

use anyhow::Result;
use nix::sys::signal::Signal;

use crate::drivers::fleet::{install_server_2, is_worker, quit, start_server, upgraded, usr2, Fleet, Passed};
use crate::drivers::nginx;
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::Lab;
use crate::harness::procs::{self, Proc};
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::V1;
use crate::findings::{NGINX, NGINX_UPGRADE};

use super::common::{at_rest, show_log};

/// `kill -SIG`, then waits until the master has handled it (`at_rest`).
pub fn signal_handled(
    lab: &mut Lab,
    sig: Signal,
    master: i32,
    how: &str,
    more: &dyn Fn() -> Result<(), String>,
) -> Result<()> {
    lab.kill(sig, master, how)?;
    lab.wait_until("the master has handled the signal", || {
        at_rest(master, more)
    })
}

/// The pids in the fleet's process group now, in tree order.
fn group_pids(fleet: &Fleet) -> Vec<i32> {
    procs::group(fleet.pgid).iter().map(|p| p.pid).collect()
}

pub static U04: Finding = Finding {
    id: "U04",
    slug: "usr2_is_ignored_while_an_upgrade_is_in_progress",
    claim: "USR2 is ignored by the old master while its new binary runs, and by the new master while the old master is alive: no process starts and the pid files stay as they are (swaplab's server and real nginx); once the old master has exited, USR2 to the new one starts the next master.",
    source: NGINX_UPGRADE,
    steps: &[
        "start the server, install 2.0.0, USR2: two masters",
        "USR2 to the old master, then to the new one, each time waiting until the master has taken the signal (not pending in /proc/PID/status) and waits in its event loop again: the process group has the same processes as before, the pid files are unchanged",
        "QUIT the old master; USR2 to the new one now forks a new master and renames the pid file to .oldbin",
        "the same on real nginx, copied into the sandbox as in U08 (Skipped without nginx)",
    ],
    experiment: u04,
    scope: Scope::Host,
    needs: &[NGINX, Need::Filesystem],
    lesson: Lesson {
        title: "USR2 sent twice",
        question: "What happens if someone sends USR2 twice — to the old master while the upgrade is in progress, or to the new master before the old one has gone?",
        exercise: "In the part `USR2 again, to either master, while both run`, what changes in the process table and the pid files after each USR2? And once the old master is gone?",
        answer: "Nothing: USR2 to the old master while its new binary runs, and USR2 to the new master while the old is alive, start no process, and the pid files stay as they were. Once the old master is gone, USR2 to the new master forks a new master again and renames the pid file to `.oldbin`. Real nginx does the same.",
    },
    ..Finding::DEFAULTS
};

pub fn u04(lab: &mut Lab) -> Result<()> {
    lab.put_lib(V1, Replace::Install)?;
    let (mut s, mut fleet) = start_server(lab, 2)?;
    let old = s.pid();
    install_server_2(lab)?;
    let new = usr2(lab, &mut fleet, old, true)?;
    usr2_while_both_run(lab, &mut fleet, old, new)?;
    s.wait_exit()?;
    drop(s);
    lab.part("the same on real nginx");
    let mut ng = nginx::start(lab, 2)?;
    let first = ng.master;
    crate::drivers::nginx::replace_binary(lab)?;
    let second = usr2(lab, &mut ng.fleet, first, true)?;
    usr2_while_both_run(lab, &mut ng.fleet, first, second)?;
    lab.note("what nginx wrote about each USR2 (shown, not judged)");
    if let Passed::ErrorLog(log) = &ng.fleet.passed {
        show_log(lab, log, &["SIGUSR2", "signal is ignored"]);
    }
    Ok(())
}

/// U04 on a fleet whose masters `old` and `new` both run: USR2 to each, and
/// what the process table and the pid files show once each has handled it;
/// then QUIT `old`, and USR2 to `new` starts a new master.
fn usr2_while_both_run(lab: &mut Lab, fleet: &mut Fleet, old: i32, new: i32) -> Result<()> {
    let (cur, oldbin) = (
        format!("$(cat {})", fleet.pid_rel),
        format!("$(cat {}.oldbin)", fleet.pid_rel),
    );
    lab.part("USR2 again, to either master, while both run");
    let before = group_pids(fleet);
    signal_handled(lab, Signal::SIGUSR2, old, &oldbin, &|| Ok(()))?;
    let after_old = group_pids(fleet);
    signal_handled(lab, Signal::SIGUSR2, new, &cur, &|| Ok(()))?;
    let after_new = group_pids(fleet);
    fleet.show_pid_files(lab);
    fleet.table(lab);
    let diff = |after: &[i32]| {
        let born: Vec<i32> = after
            .iter()
            .filter(|p| !before.contains(p))
            .copied()
            .collect();
        let gone: Vec<i32> = before
            .iter()
            .filter(|p| !after.contains(p))
            .copied()
            .collect();
        format!("started {born:?}, ended {gone:?}")
    };
    lab.check(
        "USR2 to the old master while its new binary runs starts no process (the process table is as before)",
        after_old == before,
        diff(&after_old),
    );
    lab.check(
        "USR2 to the new master while the old master is alive starts no process",
        after_new == before,
        diff(&after_new),
    );
    let (c, o) = (fleet.current(), fleet.oldbin());
    lab.check(
        "the pid files are unchanged: the pid file names the new master, .oldbin the old one",
        c == Some(new) && o == Some(old),
        format!("pid file {c:?}, .oldbin {o:?}"),
    );
    lab.part("once the old master is gone, the new one accepts USR2");
    quit(lab, old, &oldbin)?;
    let before = group_pids(fleet);
    signal_handled(lab, Signal::SIGUSR2, new, &cur, &|| Ok(()))?;
    // A child caught inside its execve has no command line yet, and would
    // pass for a worker (seen under emulation, matrix --kernel): wait until
    // every new child shows one.
    let born_now = || -> Vec<Proc> {
        procs::children(new)
            .into_iter()
            .filter(|p| !before.contains(&p.pid))
            .collect()
    };
    let born = crate::harness::process::poll_until(
        crate::harness::process::deadline(),
        std::time::Duration::from_millis(5),
        || match born_now() {
            b if !b.is_empty() && b.iter().all(|p| !p.args.is_empty()) => Ok(b),
            b => Err(b),
        },
    )
    .unwrap_or_else(|b| b);
    let o = fleet.oldbin();
    lab.check(
        "with the old master gone, USR2 to the new master forks a new master and renames the pid file to .oldbin",
        born.len() == 1 && !is_worker(&born[0]) && o == Some(new),
        format!(
            "new children {:?}, .oldbin {o:?}",
            born.iter().map(|p| (p.pid, &p.comm)).collect::<Vec<_>>()
        ),
    );
    upgraded(lab, fleet, new, false)?;
    Ok(())
}
