//! The one definition of every finding: ID, the claim, its source article,
//! the steps, and the experiment that observes and judges it. The tests, the
//! CLI, the JSON report, the README table and the lab sheets all read this.

use anyhow::Result;

use crate::harness::lab::Lab;
use crate::harness::runtime::Libc;

/// The source articles (`shared/seeds/`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Article {
    /// 000: when must a process be restarted after a shared library update.
    SharedLibraryUpdate,
    /// 001: nginx's "upgrading executable on the fly".
    NginxUpgrade,
    /// 002: graceful restart by passing the listening socket (SCM_RIGHTS).
    GracefulRestart,
    /// Article 000's practical question, answered by swaplab's detector.
    Detector,
}

impl Article {
    pub fn title(self) -> &'static str {
        match self {
            Article::SharedLibraryUpdate => {
                "000: when must a process be restarted after a shared library update"
            }
            Article::NginxUpgrade => "001: nginx, upgrading the executable on the fly",
            Article::GracefulRestart => "002: graceful restart by passing the listening socket",
            Article::Detector => {
                "000's question answered: which running processes must be restarted"
            }
        }
    }
}

pub type Experiment = fn(&mut Lab) -> Result<()>;

/// Which C libraries a finding runs on (see [`crate::harness::runtime`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Scope {
    /// Every C library, with the C twins of the targets; the same claim holds
    /// on each.
    AnyLibc,
    /// Every C library; the loaders differ, and the experiment checks each
    /// one's own expectation ([`Finding::musl`] for musl).
    PerLibc,
    /// One C library's behaviour only.
    Only(Libc),
    /// Needs swaplab's own Rust programs (servers, the tools compared by
    /// D01): runs on the host's C library only. What it shows is the
    /// kernel's, not the loader's.
    Host,
}

pub struct Finding {
    /// Stable ID (`L04`).
    pub id: &'static str,
    /// The claim as a test name reads it, after the lowercase ID.
    pub slug: &'static str,
    /// The claim, as FINDINGS.md states it.
    pub claim: &'static str,
    pub article: Article,
    /// What the experiment does, step by step.
    pub steps: &'static [&'static str],
    /// The experiment that observes and judges it.
    pub experiment: Experiment,
    /// Which C libraries it runs on.
    pub scope: Scope,
    /// For [`Scope::PerLibc`]: what musl shows instead of the claim.
    pub musl: &'static str,
}

impl Finding {
    /// What the finding expects on `libc`: the claim, or musl's own.
    pub fn claim_for(&self, libc: Libc) -> &'static str {
        match (self.scope, libc) {
            (Scope::PerLibc, Libc::Musl) => self.musl,
            _ => self.claim,
        }
    }

    /// Whether it runs on `libc` at all (and if not, why).
    pub fn runs_on(
        &self,
        rt: &crate::harness::runtime::Runtime,
    ) -> std::result::Result<(), String> {
        match self.scope {
            Scope::Only(l) if l != rt.libc => Err(format!(
                "{} is {}'s behaviour; this column runs {}",
                self.id,
                l.name(),
                rt.libc.name()
            )),
            Scope::Host if rt.twins => Err(format!(
                "{} needs swaplab's own Rust programs, built for the host's C library; \
                 this column has only the C twins of the library targets",
                self.id
            )),
            _ => Ok(()),
        }
    }

    /// The test that proves it: `l04_forked_children_keep_the_old_library`.
    pub fn test_name(&self) -> String {
        format!("{}_{}", self.id.to_ascii_lowercase(), self.slug)
    }

    /// The lab sheet's path, relative to the repository.
    pub fn sheet(&self) -> String {
        format!("experiments/{}.md", self.id)
    }
}

/// Looks a finding up by ID, case-insensitively.
pub fn find(id: &str) -> Option<&'static Finding> {
    FINDINGS.iter().find(|f| f.id.eq_ignore_ascii_case(id))
}

pub mod detect;
pub mod graceful;
pub mod libs;
pub mod upgrade;

use crate::drivers::nginx;

/// What musl shows instead of L06's claim.
const MUSL_L06: &str = "On musl, `dlopen` of the same path after the last `dlclose` also loads the new version, but as a second copy: `dlclose` left the old one mapped (`(deleted)`), and the handle differs.";
/// What musl shows instead of L07's claim.
const MUSL_L07: &str = "musl matches by device + inode, not by the path string: `dlopen` of the same path while a handle is still open loads the new file as a second copy, with another handle and the new code; the old copy stays mapped beside it.";
/// What musl shows instead of L08's claim.
const MUSL_L08: &str = "On musl pinning changes nothing: every `dlclose` leaves the library mapped, and a `dlopen` after the replacement loads the new file (v2) as a second copy, whatever pins the old one; with every handle closed both copies stay mapped.";

pub static FINDINGS: &[Finding] = &[
    Finding {
        id: "L01",
        slug: "a_process_started_after_the_replacement_runs_the_new_library",
        claim: "A process started after the library file is replaced runs the new version; its maps show the new inode and no `(deleted)`.",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "install v1 as lib/libexample.so; start A (linked at start-up), call the library, show its maps; stop A",
            "install v2 over it (install(1): unlink + create)",
            "start B; call the library; show its maps",
        ],
        experiment: libs::l01,
        scope: Scope::AnyLibc,
        musl: "",
    },
    Finding {
        id: "L02",
        slug: "a_running_process_keeps_the_old_library_marked_deleted",
        claim: "A process running across the replacement keeps the old code: calling into the library again still gives the old output, and every mapping of the library in `/proc/PID/maps` ends in ` (deleted)` with the old inode.",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "install v1; start A; call the library; show its maps",
            "install v2 over it while A runs",
            "call the library in A again; show A's maps",
        ],
        experiment: libs::l02,
        scope: Scope::AnyLibc,
        musl: "",
    },
    Finding {
        id: "L03",
        slug: "old_and_new_run_side_by_side_and_grep_finds_both",
        claim: "Old and new run side by side: `grep libexample /proc/*/maps` (the article's detection command) finds both processes; only the old one's lines carry `(deleted)`, and the two inodes differ.",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "install v1; start A; call the library",
            "install v2; start B; call the library",
            "grep libexample /proc/*/maps",
        ],
        experiment: libs::l03,
        scope: Scope::AnyLibc,
        musl: "",
    },
    Finding {
        id: "L04",
        slug: "forked_children_keep_the_old_library",
        claim: "Children forked after the replacement run the old version (they inherit the parent's mappings); restarting only the children is not enough.",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "install v1; start the forking program P; fork a child, which calls the library",
            "install v2",
            "fork another child: it calls the library; show its maps",
            "kill the children and fork a fresh one (a children-only restart)",
            "start a new process N (a full restart)",
        ],
        experiment: libs::l04,
        scope: Scope::AnyLibc,
        musl: "",
    },
    Finding {
        id: "L05",
        slug: "exec_after_the_replacement_loads_the_new_library",
        claim: "A fork + execve (or an execve in place) after the replacement loads the new version: exec runs the dynamic loader again.",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "install v1; start A; call the library",
            "install v2; A still calls v1",
            "A forks a child that execs A's program: the child calls the library; show its maps",
            "A execs its own program in place (same pid): call the library; show its maps",
        ],
        experiment: libs::l05,
        scope: Scope::AnyLibc,
        musl: "",
    },
    Finding {
        id: "L06",
        slug: "dlopen_after_the_last_dlclose_loads_the_new_library",
        claim: "The article's open question, answered for glibc: after the last `dlclose`, `dlopen` of the same path loads the new version. The handle and the load address may come back identical (measured): only the inode in maps shows the reload.",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "install v1; start D (dlopen program); dlopen lib/libexample.so, call it, show maps",
            "dlclose it: the mappings go",
            "install v2; dlopen the same path again, call it, show maps; compare handle, address and inode",
        ],
        experiment: libs::l06,
        scope: Scope::PerLibc,
        musl: MUSL_L06,
    },
    Finding {
        id: "L07",
        slug: "dlopen_of_the_same_path_with_a_handle_open_returns_the_old_library",
        claim: "glibc matches an already-loaded library by the path string first: `dlopen` of the same path while a handle is still open returns the same handle and the old code, even though the file on disk is new.",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "install v1; start D; dlopen lib/libexample.so and call it",
            "install v2; dlopen the same path again while the first handle is open",
            "call through the second handle; show maps",
        ],
        experiment: libs::l07,
        scope: Scope::PerLibc,
        musl: MUSL_L07,
    },
    Finding {
        id: "L08",
        slug: "a_pinned_library_survives_dlclose_and_keeps_the_old_code",
        claim: "`dlclose` does not unload, and a later `dlopen` keeps the old code, when the library is pinned: also linked at start-up (DT_NEEDED), built with `-z nodelete`, opened with `RTLD_NODELETE`, or another handle is still open (reference count). A successful `RTLD_NOLOAD` probe adds a reference too (measured): a probe must be balanced by a `dlclose`.",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "for each pin (DT_NEEDED, -z nodelete, RTLD_NODELETE, a second handle, an RTLD_NOLOAD probe), in a fresh process:",
            "dlopen v1 and call it; dlclose; the mappings stay",
            "install v2; dlopen again and call: still v1",
            "for the counted pins, dlclose every handle: the mappings go, and dlopen loads v2",
        ],
        experiment: libs::l08,
        scope: Scope::PerLibc,
        musl: MUSL_L08,
    },
    Finding {
        id: "L09",
        slug: "dlopen_of_a_copy_at_a_new_path_loads_the_new_version_beside_the_old",
        claim: "`dlopen` of a copy at a new, unique path loads the new version beside the old one: both are mapped and callable (the hot-reload trick).",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "install v1; start D; dlopen lib/libexample.so and call it",
            "replace it with v2 (rename); copy it to a new, unique path",
            "dlopen the copy and call it; call the first handle again; show maps",
        ],
        experiment: libs::l09,
        scope: Scope::AnyLibc,
        musl: "",
    },
    Finding {
        id: "L10",
        slug: "musl_dlclose_never_unloads_and_dlopen_matches_by_inode",
        claim: "musl differs (measured): `dlclose` never unloads, and `dlopen` of a path matches by device + inode, so after a replacement it loads the new file as a second copy while the old stays mapped.",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "on musl: install v1; start D (dlopen program, built with musl-gcc); dlopen lib/libexample.so and call it",
            "hard-link the file to another name and dlopen that: the same handle (same device and inode)",
            "install v2; dlopen the same path while the first handle is open: another handle, v2; the first still gives v1",
            "dlclose every handle: both copies stay mapped",
        ],
        experiment: libs::l10,
        scope: Scope::Only(Libc::Musl),
        musl: "",
    },
    Finding {
        id: "L11",
        slug: "how_the_file_is_replaced_decides_what_running_processes_see",
        claim: "How the file is replaced matters. `install` unlinks then creates (not atomic): a process starting in that window fails both ways: ENOENT (nothing at the path) and \"file too short\" (musl: \"Exec format error\"; the new file not written yet), and now and then it is killed by SIGBUS (a file still being written); every failed start is one of these. `rename(2)` is atomic: no start fails, over as many starts as install's measured failure rate would fail 20 of. `cp` over the live file (same inode, `O_TRUNC`) is accepted by the kernel (no ETXTBSY for a mapped `.so`) and the running process crashes on its next call into the library (SIGSEGV; SIGBUS when the new file is shorter than the mapping). A same-layout in-place write without truncation makes the running process silently run the new code. Neither in-place case shows `(deleted)`.",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "start processes in a tight loop while another loop replaces the library with install, until starts have failed both ways (ENOENT, file too short) and 20 in all (a measured failure rate); then, with rename, as many starts as that rate would fail 20 of; count the failed starts by kind",
            "rename v2 over a running A: A keeps v1, its maps say (deleted)",
            "cp the re-laid-out v2 over a running B (O_TRUNC, same inode); B calls the library",
            "cp the short v2 over a running C; C calls the library",
            "write v2 over a running D without truncating; D calls the library",
        ],
        experiment: libs::l11,
        scope: Scope::AnyLibc,
        musl: "",
    },
    Finding {
        id: "L12",
        slug: "a_running_executable_cannot_be_written_but_can_be_replaced",
        claim: "Writing into a running executable fails with ETXTBSY on current kernels (6.11 and 6.12 allowed it; 6.13 denies it again); replacing it by install/rename works and `/proc/PID/exe` then reads `… (deleted)`.",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "copy a target program to bin/app and start it",
            "open bin/app for writing (expect ETXTBSY, except on kernels 6.11 and 6.12)",
            "install a new copy over bin/app; read /proc/PID/exe; start the new file",
        ],
        experiment: libs::l12,
        scope: Scope::AnyLibc,
        musl: "",
    },
    Finding {
        id: "L13",
        slug: "an_unprivileged_user_cannot_read_another_users_maps",
        claim: "An unprivileged user cannot read `/proc/PID/maps` of another user's process (why the article uses `sudo grep`); its own processes it can.",
        article: Article::SharedLibraryUpdate,
        steps: &[
            "as root, start A; start U as an unprivileged user",
            "U reads /proc/A/maps (another user's) and /proc/U/maps (its own)",
            "root reads both",
        ],
        experiment: libs::l13,
        scope: Scope::AnyLibc,
        musl: "",
    },
    Finding {
        id: "U01",
        slug: "a_child_forked_after_the_executable_is_replaced_runs_the_old_program",
        claim: "`fork` copies the running image: a child forked after the executable file is replaced runs the old program; its `/proc/PID/exe` ends in `(deleted)`.",
        article: Article::NginxUpgrade,
        steps: &[
            "start A (bin/swaplab-app, build 1); ask its build; readlink /proc/A/exe",
            "install build 2 over bin/swaplab-app (install(1): unlink + create)",
            "A forks a child: it says build 1 and its /proc/PID/exe ends in (deleted)",
            "A forks a child that execs the same path: it says build 2, its exe is the file on disk",
        ],
        experiment: upgrade::u01,
        scope: Scope::AnyLibc,
        musl: "",
    },
    Finding {
        id: "U02",
        slug: "execve_runs_the_new_file_and_keeps_pid_and_open_fds",
        claim: "`execve` starts the program now on disk, keeps the pid and every fd not marked close-on-exec, and keeps no memory (flags, state); close-on-exec fds are gone.",
        article: Article::NginxUpgrade,
        steps: &[
            "start A (build 1); it remembers a flag, opens a plain pipe and a close-on-exec pipe; ls -l /proc/A/fd",
            "install build 2 over the program; A calls execve on its own path",
            "A prints ready with the same pid, says build 2, has forgotten the flag; /proc/A/fd still shows stdin/stdout/stderr and the plain pipe (same inodes) and no close-on-exec pipe",
        ],
        experiment: upgrade::u02,
        scope: Scope::AnyLibc,
        musl: "",
    },
    Finding {
        id: "U03",
        slug: "the_nginx_style_upgrade_keeps_every_connection",
        claim: "The nginx upgrade, reproduced by the harness's own master/worker server: USR2 renames the pid file to `<pid>.oldbin`, forks and execs the new binary, which is a child of the old master and inherits the listening socket (the same socket inode in `/proc/PID/fd` of both masters; fd numbers passed in an environment variable). Both generations serve. WINCH: old workers finish gracefully, the old master stays. QUIT: the old master exits. No client connection fails through the whole sequence under load.",
        article: Article::NginxUpgrade,
        steps: &[
            "start swaplab-server 1.0.0 (a master, 2 workers, 127.0.0.1 on an ephemeral port, run/swaplab.pid); the load client opens new connections continuously",
            "install swaplab-server 2.0.0 over bin/swaplab-server",
            "kill -USR2 master: wait until the pid file names a new master with its workers; its parent (in /proc) is the old master; show the pid files, the process table, both masters' exe, the listening socket inode in both /proc/PID/fd and the fd numbers in the new master's environment; wait for answers from both generations",
            "kill -WINCH old master: wait until its workers are gone; only gen 2 answers",
            "kill -QUIT old master: wait until it exits; the pid file names the new master; stop the load: no request failed",
        ],
        experiment: upgrade::u03,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "U04",
        slug: "usr2_is_ignored_while_an_upgrade_is_in_progress",
        claim: "USR2 is ignored by the old master while its new binary runs, and by the new master while the old master is alive: no process starts and the pid files stay as they are (swaplab's server and real nginx); once the old master has exited, USR2 to the new one starts the next master.",
        article: Article::NginxUpgrade,
        steps: &[
            "start the server, install 2.0.0, USR2: two masters",
            "USR2 to the old master, then to the new one, each time waiting until the master has taken the signal (not pending in /proc/PID/status) and waits in its event loop again: the process group has the same processes as before, the pid files are unchanged",
            "QUIT the old master; USR2 to the new one now forks a new master and renames the pid file to .oldbin",
            "the same on real nginx, copied into the sandbox as in U08 (Skipped without nginx)",
        ],
        experiment: upgrade::u04,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "U05",
        slug: "rollback_brings_the_old_generation_back_without_errors",
        claim: "Rollback: HUP to the old master starts old workers again (forked from the old image); QUIT/TERM to the new master; the pid file is renamed back and the old generation serves; no client connection fails.",
        article: Article::NginxUpgrade,
        steps: &[
            "start the server under load; install 2.0.0; USR2; WINCH the old master",
            "HUP the old master: it forks fresh workers from the old image",
            "QUIT the new master: it exits, the old master renames .oldbin back to the pid file",
            "only version 1.0.0 answers; no request failed",
        ],
        experiment: upgrade::u05,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "U06",
        slug: "a_failed_exec_leaves_the_old_master_serving",
        claim: "If the new binary cannot be executed, the old master keeps serving and renames the pid file back (swaplab's server and real nginx).",
        article: Article::NginxUpgrade,
        steps: &[
            "start the server under load",
            "install 2.0.0 with mode 644 (nobody may execute it); watch run/ for renames (inotify)",
            "USR2; wait until the master has handled it and the exit of the child it forked (nothing pending, nothing unreaped, waiting in its event loop)",
            "inotify saw the pid file renamed to .oldbin and back; the pid file names the old master; it is the only master and keeps the same workers; clients are answered by them; no request failed",
            "the same on real nginx, copied into the sandbox as in U08 (Skipped without nginx)",
        ],
        experiment: upgrade::u06,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "U07",
        slug: "a_library_update_needs_the_exec_not_a_worker_restart",
        claim: "A library update needs the exec: with libexample replaced on disk, a worker restart by fork (HUP) still runs the old library; USR2 (fork + exec) brings the new one.",
        article: Article::NginxUpgrade,
        steps: &[
            "install libexample v1, start the server under load",
            "install libexample v2 (the server binary stays)",
            "HUP: fresh workers, forked from the master, answer with v1's greeting and map the old library (deleted)",
            "USR2: the new master (fork + execve of the same binary) maps the new library and its workers answer with v2's greeting; no request failed",
        ],
        experiment: upgrade::u07,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "U08",
        slug: "real_nginx_upgrades_and_rolls_back_without_errors",
        claim: "The same sequence against real nginx (the system's package) shows the article's process tables: the new master's parent is the old master, `.oldbin` appears, the old master's exe is `(deleted)`, both masters hold the same listening socket, and no request fails under load; the rollback path works too.",
        article: Article::NginxUpgrade,
        steps: &[
            "copy nginx into the sandbox (bin/nginx), write a config (daemon on, master_process on, 2 workers, 127.0.0.1 on a free port, pid file, logs and temp folders in the sandbox) and start it; the load client opens new connections continuously",
            "upgrade: install another copy over bin/nginx; USR2 (new master, child of the old; .oldbin; old exe (deleted); one listening socket inode in both masters; the fd numbers the new master logs as inherited through NGINX); both generations serve; WINCH; QUIT the old master",
            "rollback: install another copy; USR2; WINCH; HUP the old master (its workers come back, forked from the old image); QUIT the new master: the pid file is renamed back",
            "stop the load: no request failed; QUIT nginx",
        ],
        experiment: nginx::u08,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "G01",
        slug: "a_second_bind_fails_with_eaddrinuse_unless_reuseport",
        claim: "A second process cannot bind a port that a listening socket holds (EADDRINUSE), unless both use SO_REUSEPORT.",
        article: Article::GracefulRestart,
        steps: &[
            "start A listening on 127.0.0.1 (an ephemeral port)",
            "start a second process on the same address: it fails with EADDRINUSE",
            "start C and D on one port, both with SO_REUSEPORT: two listening sockets (two inodes); new connections reach both",
            "a third process without SO_REUSEPORT on that port: EADDRINUSE",
        ],
        experiment: graceful::g01,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "G02",
        slug: "a_stop_start_restart_refuses_and_truncates",
        claim: "Stop/start restart: during the dead time clients get ECONNREFUSED (the article's `system:111`), and downloads in flight end early (the article's `asio.misc:2`, EOF).",
        article: Article::GracefulRestart,
        steps: &[
            "start gen 1 (2 MiB downloads, each spread over 300 ms) on 127.0.0.1 and ::1; the load opens 100 connections a second",
            "once downloads are in flight, TERM gen 1: it exits at once",
            "wait until a client is refused (the dead time): the kernel's list of listening sockets (sock_diag, what `ss -lt` shows) has none on the addresses; then start gen 2 on the same addresses (new socket inodes)",
            "stop the load once gen 2 has served: every refusal lies in the dead time, and downloads begun before the stop were cut short; resets are counted, not judged",
        ],
        experiment: graceful::g02,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "G03",
        slug: "an_scm_rights_handover_restarts_without_a_client_error",
        claim: "Graceful restart: the new process receives the listening socket(s) over a Unix domain socket as SCM_RIGHTS ancillary data, starts accepting, and only then the old one stops accepting and drains its open connections: no client sees an error, every download completes.",
        article: Article::GracefulRestart,
        steps: &[
            "start gen 1 listening on 127.0.0.1 and ::1, with a control socket run/handover.sock; the load opens 150 connections a second, each a 1 MiB download",
            "start gen 2 with --takeover: it receives both listening fds in one sendmsg, accepts, says ready; gen 1 stops accepting, drains, exits; gen 2 takes the control socket",
            "the same socket inodes in /proc/PID/fd of both; 20 switches in a row",
            "stop the load: no error of any kind; fd counts stay equal; no process runs the server any more (the process table), no control socket file",
        ],
        experiment: graceful::g03,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "G04",
        slug: "queued_connections_wait_while_any_fd_holds_the_socket",
        claim: "Connections that arrive while nobody calls `accept` wait in the listening socket's queue and are served later, as long as some process still holds the socket; closing the last fd of the listening socket resets them: every queued client is served through a dup passed by SCM_RIGHTS, and every one gets ECONNRESET, never EOF, when the last fd closes.",
        article: Article::GracefulRestart,
        steps: &[
            "start A listening but not accepting; 20 clients connect and send a request: they wait in the accept queue (Recv-Q of the listening socket in `ss -lt`)",
            "B takes the socket over by SCM_RIGHTS; A exits: B serves every one of them",
            "start C listening but not accepting; 20 clients connect; C exits (the last fd closes): every one is reset",
        ],
        experiment: graceful::g04,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "G05",
        slug: "a_reuseport_overlap_drops_queued_connections_unless_migrated",
        claim: "SO_REUSEPORT overlap with separate sockets: closing the old process's socket resets exactly the connections queued on it (the HAProxy reload problem), unless `net.ipv4.tcp_migrate_req=1` migrates them to the socket that stays: then none is reset and every one is served (set inside a fresh network namespace — the setting is per namespace, the host's stays untouched).",
        article: Article::GracefulRestart,
        steps: &[
            "in a fresh network namespace (tcp_migrate_req=0, read back inside it): A and B listen on one port with SO_REUSEPORT, neither accepting; 200 clients connect and send a request; `ss -lt` (sock_diag) shows how many wait on each socket",
            "A closes its socket; B accepts: exactly the connections queued on A's socket were reset, B served the rest",
            "again in another fresh namespace with tcp_migrate_req=1: none reset, B serves every one",
            "the host's net.ipv4.tcp_migrate_req is unchanged",
        ],
        experiment: graceful::g05,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "G06",
        slug: "handover_strategies_side_by_side",
        claim: "Side by side, under the same load: stop/start, SO_REUSEPORT, SCM_RIGHTS hand-over, exec inheritance (nginx style) and socket activation (`LISTEN_FDS`/`LISTEN_PID`): refused, reset and truncated connections, the refusal window, and latency (p50/p99/max) around the switch.",
        article: Article::GracefulRestart,
        steps: &[
            "for each strategy: start gen 1; the load opens 200 connections a second (256 KiB downloads over 30 ms); a new generation takes 30 ms to start",
            "switch generations 3 times: stop-start (TERM, start again), reuseport (a new socket beside the old, QUIT old), scm-rights (take-over), exec (USR2, QUIT old), activation (HUP the holder)",
            "count attempted, refused, reset, truncated and timed-out connections, the refusal window and the switch time; compare the listening socket inodes of the first and the last generation (/proc/PID/fd); QUIT the last generation; no process runs the server any more",
        ],
        experiment: graceful::g06,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "G07",
        slug: "ipv6_link_local_needs_a_scope_id",
        claim: "IPv6 link-local addresses need a scope id: connecting to `fe80::…` without `%ifname` fails with EINVAL, a wrong scope id gives ENETUNREACH, and with the right one it succeeds (shown between two network namespaces joined by a veth pair).",
        article: Article::GracefulRestart,
        steps: &[
            "make two network namespaces A and B and a veth pair swl-a (in A) / swl-b (in B); bring both up",
            "duplicate address detection off inside both (accept_dad=0: the two ends are alone on the link); wait until both link-local addresses are usable",
            "B listens on [::] and answers every connection until the end (with a deadline); from A connect to B's fe80:: address without a scope id, with %lo, with %swl-a (connects and reads with deadlines)",
            "B accepted exactly one connection, from A's link-local address",
        ],
        experiment: graceful::g07,
        scope: Scope::Host,
        musl: "",
    },
    Finding {
        id: "D01",
        slug: "swaplab_stale_finds_exactly_the_processes_to_restart",
        claim: "`swaplab stale` flags exactly the processes that run code no longer on disk, in every case the experiments show (library replaced or removed, forked children, in-place writes with and without a new layout, a pinned dlopen, the executable replaced, a path mounted over) and none that run what is on disk (started after the update, reloaded by dlopen, memfd/SysV/`/dev` pseudo-files); an identical reinstall is optional. `grep '(deleted)' /proc/*/maps`, `lsof` (its `DEL` entries, and `+L1`) and needrestart (its per-process verdicts, `-v`, run as root with its own pseudo-file list but without its `/tmp` and `/run` exclusions, where the processes run) each get some of these cases wrong.",
        article: Article::Detector,
        steps: &[
            "one process per case, each on its own copy of libexample (lib/a … lib/m): replaced, removed, a child forked after the update, cp and dd over the live file, reinstalled identical (same build-id), started after the update, dlopen reloaded, dlopen pinned, the executable replaced, pseudo-file mappings, a bind mount over the path in the process's own user and mount namespaces",
            "run swaplab stale, grep -l '(deleted)' /proc/PID/maps, lsof (DEL entries and +L1) and needrestart -v (its per-process verdicts) on them",
            "call every process to see what it really runs; print the case × tool table against that truth",
        ],
        experiment: detect::d01,
        scope: Scope::Host,
        musl: "",
    },
];
