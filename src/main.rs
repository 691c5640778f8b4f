//! `swaplab`: run the findings and narrate them. This file is the command
//! line: its definitions, and the one place that turns a command's
//! [`Exit`](swaplab::commands::Exit) into the exit status. What each
//! command does is in `swaplab::commands`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use swaplab::bench::handover::HandoverOptions;
use swaplab::bench::reload::{OwnServer, Subject};
use swaplab::bench::stale::StaleOptions;
use swaplab::bench::upgrade::Options;
use swaplab::commands::{self, Done, Exit};
use swaplab::drivers::comparison::Pace;
use swaplab::drivers::handover::{Setup, Strategy};
use swaplab::drivers::load::KeepAlive;
use swaplab::drivers::presets::Preset;
use swaplab::drivers::reload::{Ready, ReloadPace, Url};
use swaplab::drivers::shell_server::Commands;

#[derive(Parser)]
#[command(
    name = "swaplab",
    version,
    about = "Shows what happens to running processes when the code under them is replaced",
    after_help = "Examples:\n  swaplab list\n  swaplab run L04\n  swaplab run --all\n  swaplab run --all --json > report.json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// List every finding: ID, whether it runs here, and the claim.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run findings and narrate each experiment, then judge it.
    Run {
        /// Finding IDs (L04, l04, ...).
        #[arg(value_name = "ID", required_unless_present = "all")]
        ids: Vec<String>,
        /// Run every finding.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Print a machine-readable report (JSON) on stdout instead of the
        /// narration.
        #[arg(long)]
        json: bool,
        /// No narration: only the verdicts.
        #[arg(long, short)]
        quiet: bool,
        /// Only these columns: a C library (`glibc`, `musl`) or a column
        /// name (`host`). By default every C library available here.
        #[arg(long, value_delimiter = ',', value_name = "LIBC")]
        libc: Vec<String>,
    },
    /// Print the platform × finding table (Markdown) of `swaplab run --json`
    /// reports, marking every cell that differs from the expectation.
    #[command(after_help = COMPARE_HELP)]
    Compare {
        /// Report files (`swaplab run --all --json > report.json`).
        #[arg(value_name = "REPORT", required = true)]
        reports: Vec<std::path::PathBuf>,
    },
    /// Run the findings on other Debian releases' glibc (`--debian`: a
    /// debootstrap root per release, the C targets compiled inside it with
    /// its own gcc, run with its own loader and C library; needs root and
    /// debootstrap), kernels (`--kernel`: the release's kernel booted in
    /// qemu on this machine's own files) or filesystems (`--fs`: each made
    /// fresh in a mount namespace of its own; needs root); writes a report
    /// per column.
    #[command(after_help = MATRIX_HELP)]
    #[command(group(clap::ArgGroup::new("columns").required(true).multiple(true).args(["debian", "kernel", "fs"])))]
    Matrix {
        /// Debian releases whose glibc makes a column (codenames).
        #[arg(long, value_delimiter = ',', value_name = "RELEASE")]
        debian: Vec<String>,
        /// Debian releases whose kernel makes a column (codenames: bullseye
        /// 5.10, bookworm 6.1, trixie 6.12, sid the newest).
        #[arg(long, value_delimiter = ',', value_name = "RELEASE")]
        kernel: Vec<String>,
        /// Filesystems made fresh for a column each, with the sandboxes of
        /// the findings that depend on the filesystem on them (needs root).
        #[arg(long, value_delimiter = ',', value_name = "FS", value_enum)]
        fs: Vec<commands::matrix::fs::Fs>,
        /// How --kernel's guests run: KVM, emulation (TCG), or KVM when it
        /// boots a guest and TCG otherwise.
        #[arg(long, value_enum, default_value = "auto")]
        accel: commands::matrix::AccelChoice,
        /// swaplab's cache folder: roots in DIR/debian, kernels in
        /// DIR/kernel (default: $SWAPLAB_CACHE, else /var/cache/swaplab for
        /// root and ~/.cache/swaplab for anyone else).
        #[arg(long, value_name = "DIR")]
        cache: Option<std::path::PathBuf>,
        /// The Debian mirror roots and kernels are downloaded from.
        #[arg(long, default_value = "http://deb.debian.org/debian")]
        mirror: String,
        /// Where the reports go (made if missing).
        #[arg(long, default_value = "swaplab-matrix")]
        out: std::path::PathBuf,
        /// Only these findings (default: every one).
        #[arg(long, value_delimiter = ',', value_name = "ID")]
        only: Vec<String>,
    },
    /// The first process of `swaplab matrix --kernel`'s guest: runs the
    /// findings, writes the report, powers the guest off.
    #[command(hide = true)]
    Guest {
        /// The folder the report goes to.
        #[arg(long)]
        out: std::path::PathBuf,
        /// The column's name.
        #[arg(long)]
        column: String,
        /// Finding IDs.
        ids: Vec<String>,
    },
    /// One column of `swaplab matrix --fs`, in the mount namespace the
    /// matrix made for it: makes the filesystem, runs the findings on it.
    #[command(hide = true, name = "fs-column")]
    FsColumn {
        #[arg(long, value_enum)]
        fs: commands::matrix::fs::Fs,
        /// The matrix's folder for it, which it mounts a tmpfs over.
        #[arg(long)]
        dir: std::path::PathBuf,
        /// The folder the report goes to.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Finding IDs.
        ids: Vec<String>,
    },
    /// Which running processes run code that is no longer on disk (an
    /// executable or library replaced, removed, or modified in place), and
    /// how to restart them.
    #[command(after_help = STALE_HELP)]
    Stale {
        /// Only this process (repeatable).
        #[arg(long = "pid", value_name = "PID", value_parser = clap::value_parser!(i32).range(1..))]
        pids: Vec<i32>,
        /// Only processes of this user (name or uid).
        #[arg(long, value_name = "USER")]
        user: Option<String>,
        /// Only processes whose name or command line matches this regular
        /// expression.
        #[arg(long = "match", value_name = "PATTERN")]
        pattern: Option<String>,
        /// Print JSON instead of the report.
        #[arg(long)]
        json: bool,
        /// Print OpenMetrics text instead of the report, for node-exporter's
        /// textfile collector.
        #[arg(long, conflicts_with = "json")]
        openmetrics: bool,
        /// Print what to restart instead: each service, container or
        /// process tree once, what it fixes, and its command.
        #[arg(long, conflicts_with_all = ["json", "openmetrics"])]
        plan: bool,
        /// A folder with a dpkg database of its own (`dpkg --root DIR`):
        /// files under it are attributed from DIR/var/lib/dpkg (repeatable).
        #[arg(long = "package-root", value_name = "DIR")]
        package_roots: Vec<std::path::PathBuf>,
        /// Print the JSON Schema of --json's output and scan nothing.
        #[arg(long, conflicts_with_all = ["json", "openmetrics", "plan", "pids", "user", "pattern", "package_roots"])]
        json_schema: bool,
    },
    /// Measure: figures for a whole sequence under load.
    Bench {
        #[command(subcommand)]
        what: Bench,
    },
}

const STALE_HELP: &str = "\
Exit status:
  0  no process needs a restart (some may be listed as optional: the file on
     disk has the same content)
  1  at least one process needs a restart
  2  bad arguments, or /proc could not be read

The kernel does not change the status (needrestart too keeps it apart): when
a newer kernel than the running one is installed (/boot/vmlinuz-*,
/usr/lib/modules/*/vmlinuz), one line says so, and --json's \"kernel\" field
tells (null when the running kernel is not among the installed ones, as in a
VM booted with a kernel from outside: then nothing can be told).

Not reported (counted in the summary): pseudo-files (memfd, SysV shared
memory, /dev, huge pages, [aio]), anonymous memory, and files mapped without
execute permission. Another user's processes cannot be read without root:
they are counted and named as unreadable.

Examples:
  swaplab stale
  sudo swaplab stale --json
  swaplab stale --user www-data --match nginx

For node-exporter's textfile collector: status 1 still wrote the whole text;
rename it into place, so the collector never reads half a file:
  swaplab stale --openmetrics > DIR/swaplab.prom.$$; [ $? -le 1 ] &&
    mv DIR/swaplab.prom.$$ DIR/swaplab.prom
Gauges: swaplab_stale_processes{need}, swaplab_stale_process{pid,command,user,
need,reason} (stale files), swaplab_stale_scanned_processes,
swaplab_stale_unreadable_processes, swaplab_kernel_outdated (when known).";

const COMPARE_HELP: &str = "\
Each report gives one column per C library it ran on (the host's, musl's,
a Debian root's). A cell is the verdict, with the C library whose expectation
held where the findings differ by C library (L06-L10). Refuted and Error
cells are marked; the findings that behave differently across the columns
are named under the table.

Exit status: 0 every cell as expected, 1 some cell marked, 2 bad input.

Example:
  swaplab run --all --json > host.json
  swaplab compare host.json swaplab-matrix/*.json";

const MATRIX_HELP: &str = "\
--debian needs root (debootstrap and chroot) and debootstrap (apt-get install
-y debootstrap). The first run of a release downloads it (about 100 MB per
release, a few minutes); later runs reuse the cached root.

--kernel needs qemu-system-x86, busybox-static, apt and dpkg, not root. The
first run of a release downloads its kernel package with apt (60 to 110 MB;
only the image and a few modules are kept). The guest mounts this machine's
files read-only and runs this swaplab on them, as the guest's root, on the
host's C library; its report gets the guest's kernel and the acceleration
used. Under emulation (TCG) one release took 6 to 9 minutes on 2 cores.

--fs needs root and, for its loop images, mkfs.ext4 (e2fsprogs), mkfs.xfs
(xfsprogs), mkfs.btrfs and btrfs (btrfs-progs). Each filesystem is made
fresh (a sparse 4 GiB image, a tmpfs, an overlay of its own layers) in a
mount namespace of its own, and the findings that depend on the filesystem
under their sandbox run with their sandboxes on it (btrfs: in a subvolume);
the others are n/a there. However the run ends (Ctrl-C, a kill), no mount,
loop device or folder is left behind.

Example:
  sudo swaplab matrix --debian bullseye,trixie
  swaplab matrix --kernel bullseye,bookworm,trixie,sid
  sudo swaplab matrix --fs ext4,xfs,btrfs,tmpfs,overlay
  swaplab compare host.json swaplab-matrix/*.json";

#[derive(Subcommand)]
enum Bench {
    /// `swaplab stale` against `grep -l '(deleted)' /proc/*/maps` and
    /// `needrestart -b` on the same processes: sleepers linked against
    /// libexample, half of them left on a replaced library; wall time of
    /// each, and whether its answer is right.
    Stale {
        /// Sleepers to start (half on the replaced library).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(2..=10_000))]
        processes: u64,
        /// One in this many sleepers on the new library also maps a memfd
        /// executable (as JIT compilers do); 0 for none.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=10_000))]
        jit_every: u64,
        /// Timed runs of swaplab stale and grep (the median is reported).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=100))]
        runs: u64,
        /// Leave needrestart -b out (it takes tens of seconds).
        #[arg(long)]
        no_needrestart: bool,
        /// Keep the sleepers as children of the bench instead of daemons
        /// (needrestart then judges them by their parent, once).
        #[arg(long)]
        children: bool,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Upgrade (USR2, WINCH, QUIT) and rollback (USR2, WINCH, HUP, QUIT new)
    /// of swaplab's server and real nginx under the load client: requests,
    /// failures by kind, p50/p99/max latency before, during and after.
    Upgrade {
        /// Completed requests before the switch, and again after it.
        #[arg(long, default_value_t = 20_000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        requests: u64,
        /// Answers each step of the sequence waits for.
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        settle: u64,
        /// Load connections, each a thread opening one connection after another.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
        connections: u64,
        /// New connections per second, in all (an open loop, as real clients
        /// arrive); without it the clients go flat out.
        #[arg(long, value_parser = parse_rate)]
        rate: Option<f64>,
        /// Workers per master.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=64))]
        workers: u64,
        /// Which servers.
        #[arg(long, value_delimiter = ',', default_value = "swaplab,nginx", value_parser = ["swaplab", "nginx"])]
        server: Vec<String>,
        /// Print JSON instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// Every hand-over strategy (stop-start, reuseport, scm-rights, exec,
    /// activation) through repeated switches under the same constant-rate
    /// download load: attempted, completed, refused, reset, truncated and
    /// timed-out connections, the refusal window, the switch time, latency
    /// before/during/after. Writes handover.json and an SVG timeline per
    /// strategy into --out.
    Handover {
        /// New connections per second (each a whole download).
        #[arg(long, default_value_t = 200.0, value_parser = parse_rate)]
        rate: f64,
        /// Client threads (enough for the downloads in flight).
        #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=256))]
        connections: u64,
        /// Switches per strategy.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=1000))]
        switches: u64,
        /// Completed downloads before the first switch and after the last.
        #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        settle: u64,
        /// Downloads the new generation completes before the next switch.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
        between: u64,
        /// Bytes per download.
        #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(64..=1 << 30))]
        body: u64,
        /// The server spreads each download over this many ms.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        download_ms: u64,
        /// A new generation takes this many ms to start (reading its
        /// configuration...): the dead time of stop-start.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(0..=60_000))]
        startup_ms: u64,
        /// Which strategies.
        #[arg(long, value_delimiter = ',', default_value = "stop-start,reuseport,scm-rights,exec,activation", value_parser = ["stop-start", "reuseport", "scm-rights", "exec", "activation"])]
        strategy: Vec<String>,
        /// Folder for handover.json and the SVG timelines (made if missing).
        #[arg(long, default_value = "swaplab-bench")]
        out: std::path::PathBuf,
        /// Print the JSON on stdout instead of the table.
        #[arg(long)]
        json: bool,
    },
    /// A server reloaded again and again under load — your own (its start,
    /// reload and stop commands) or the presets side by side (real nginx,
    /// haproxy, apache2; swaplab's strategies): new connections refused,
    /// reset, truncated, timed out; requests failed on reused keep-alive
    /// connections; latency before, during and after. Writes reload.json
    /// and an SVG timeline per server into --out. Loopback only.
    Reload(ReloadArgs),
}

/// `swaplab bench reload`'s arguments.
#[derive(clap::Args)]
struct ReloadArgs {
    /// Built-in servers, comma-separated: nginx-hup, nginx-usr2, haproxy,
    /// apache2-graceful, swaplab-{stop-start,reuseport,scm-rights,exec,activation};
    /// `all` for every one side by side, `real` for the four real servers.
    #[arg(long, value_delimiter = ',', conflicts_with_all = ["start", "reload", "url", "stop", "after", "pid_file", "ready", "drained", "catches"])]
    preset: Vec<String>,
    /// Your server: the shell command that starts it (in the foreground, or
    /// a daemon). Without it, swaplab attaches to a server that runs.
    #[arg(long)]
    start: Option<String>,
    /// The shell command that reloads it; `{pid}` is the server's pid (from
    /// --pid-file, else the start command's process).
    #[arg(long)]
    reload: Option<String>,
    /// The URL the load requests, on loopback only (http://127.0.0.1:PORT/PATH).
    #[arg(long)]
    url: Option<String>,
    /// The shell command that stops it (default: TERM to what --start left).
    #[arg(long)]
    stop: Option<String>,
    /// Run once each reload is ready, `{pid}` the pid before it (a binary
    /// upgrade QUITs the old master).
    #[arg(long)]
    after: Option<String>,
    /// The server's pid file, for `{pid}` and to wait for an old master.
    #[arg(long)]
    pid_file: Option<std::path::PathBuf>,
    /// After each reload, also wait until every process that answered
    /// before it has exited (the old workers drained).
    #[arg(long)]
    drained: bool,
    /// After each reload, also wait until the server's pid catches this
    /// signal again (`SigCgt` in /proc/PID/status), e.g. USR2 for haproxy.
    #[arg(long, value_parser = parse_signal)]
    catches: Option<nix::sys::signal::Signal>,
    /// When a reload has finished: new-pid (an answer's `pid=N` names a
    /// process that was not serving before), pid-file (--pid-file names
    /// another live process), log:PATH:TEXT (one more line with TEXT),
    /// settle:MS (a fixed wait).
    #[arg(long, default_value = "new-pid")]
    ready: String,
    /// Reloads per server.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u64).range(1..=1000))]
    reloads: u64,
    /// New connections per second (without --keep-alive).
    #[arg(long, default_value_t = 200.0, value_parser = parse_rate)]
    rate: f64,
    /// Client threads (with --keep-alive: connections).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
    clients: u64,
    /// Keep-alive clients: each keeps a connection and sends request after
    /// request on it.
    #[arg(long)]
    keep_alive: bool,
    /// With --keep-alive: the longest pause before a next request (ms).
    #[arg(long, default_value_t = 40, requires = "keep_alive", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    think_ms: u64,
    /// With --keep-alive: send a request that failed on a reused connection
    /// with no answer again, once, on a new connection.
    #[arg(long, requires = "keep_alive")]
    retry: bool,
    /// Answers completed before the first reload and after each.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    settle: u64,
    /// Folder for reload.json and the SVG timelines (made if missing).
    #[arg(long, default_value = "swaplab-bench")]
    out: std::path::PathBuf,
    /// Print the JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

impl ReloadArgs {
    fn subject(&self) -> Result<Subject, String> {
        if !self.preset.is_empty() {
            let mut presets = Vec::new();
            for name in &self.preset {
                match name.as_str() {
                    "all" => presets.extend(Preset::all()),
                    "real" => presets.extend(Preset::REAL),
                    n => presets.push(Preset::parse(n).ok_or_else(|| {
                        let names: Vec<String> = Preset::all().iter().map(|p| p.name()).collect();
                        format!(
                            "--preset {n}: not a preset ({}, all, real)",
                            names.join(", ")
                        )
                    })?),
                }
            }
            return Ok(Subject::Presets(presets));
        }
        let (Some(reload), Some(url)) = (&self.reload, &self.url) else {
            return Err("give --preset, or your server's --reload and --url (and --start, unless it runs already)".into());
        };
        let url = Url::parse(url)?;
        let ready = Ready::parse(&self.ready)?;
        if ready == Ready::PidFile && self.pid_file.is_none() {
            return Err("--ready pid-file needs --pid-file".into());
        }
        if self.start.is_none() {
            // Attach: the server must run already.
            let probe = swaplab::drivers::load::get_once(
                url.addr,
                &url.path,
                std::time::Duration::from_secs(5),
            );
            if let Err(e) = probe {
                return Err(format!(
                    "nothing answers at {}{} ({e}); give --start to start your server",
                    url.addr, url.path
                ));
            }
        }
        let dir = std::env::current_dir().map_err(|e| format!("the current folder: {e}"))?;
        if let Ready::Log { path, .. } = &ready {
            if !dir.join(path).is_file() && self.start.is_none() {
                return Err(format!("--ready: {} is not a file", path.display()));
            }
        }
        Ok(Subject::Own(Box::new(OwnServer {
            name: "server".into(),
            cmds: Commands {
                dir,
                start: self.start.clone(),
                reload: reload.clone(),
                after: self.after.clone(),
                stop: self.stop.clone(),
                pid_file: self.pid_file.clone(),
                drained: self.drained,
                catches: self.catches,
                // The log --ready reads is the one to show when a reload
                // does not finish.
                log: match &ready {
                    Ready::Log { path, .. } => Some(path.clone()),
                    _ => None,
                },
                shown_dir: None,
            },
            url,
            ready,
        })))
    }

    fn run(self) -> Done {
        let subject = self
            .subject()
            .map_err(|e| Exit::BadInput(format!("swaplab bench reload: {e}")))?;
        let pace = ReloadPace {
            reloads: self.reloads as usize,
            rate: self.rate,
            threads: self.clients as usize,
            keep_alive: self.keep_alive.then(|| KeepAlive {
                think: std::time::Duration::from_millis(self.think_ms),
                retry: self.retry,
            }),
            settle: self.settle as usize,
        };
        commands::bench::reload(subject, pace, &self.out, self.json)
    }
}

fn parse_signal(s: &str) -> Result<nix::sys::signal::Signal, String> {
    let name = s.to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse()
        .map_err(|_| format!("`{s}`: not a signal name (USR2, HUP...)"))
}

fn parse_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 100_000.0 => Ok(r),
        _ => Err(format!(
            "`{s}`: give a rate above 0 and at most 100000 connections/s"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The guest's first process forks before anything else: no handler
    // thread may be lost in its child (see commands::guest).
    let cli = match cli.command {
        Command::Guest { out, column, ids } => {
            return match commands::guest::command(&out, &column, &ids) {
                Ok(()) => ExitCode::SUCCESS,
                Err(exit) => {
                    if let Some(why) = exit.message() {
                        eprintln!("{why}");
                    }
                    ExitCode::from(exit.status())
                }
            };
        }
        // It sets TMPDIR, which only a process without threads may do.
        Command::FsColumn { fs, dir, out, ids } => {
            return match commands::matrix::fs::command(fs, &dir, &out, &ids) {
                Ok(()) => ExitCode::SUCCESS,
                Err(exit) => {
                    if let Some(why) = exit.message() {
                        eprintln!("{why}");
                    }
                    ExitCode::from(exit.status())
                }
            };
        }
        command => Cli { command },
    };
    // Ctrl-C or a TERM: kill the targets and remove the sandboxes before
    // leaving (targets also die with us through PR_SET_PDEATHSIG).
    if let Err(e) = ctrlc::set_handler(|| {
        swaplab::harness::process::INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
        swaplab::harness::process::kill_all();
        swaplab::harness::sandbox::remove_all();
        eprintln!("swaplab: interrupted; targets killed, sandboxes removed");
        std::process::exit(130);
    }) {
        eprintln!("swaplab: cannot install the interrupt handler: {e}");
    }
    leave_quietly_when_stdout_closes();
    let done = cli.command.run();
    // Interrupted: the handler kills, removes and exits 130; this thread's
    // work failing meanwhile (a column killed under it) is no answer.
    while swaplab::harness::process::INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        std::thread::park();
    }
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            if let Some(why) = exit.message() {
                eprintln!("{why}");
            }
            ExitCode::from(exit.status())
        }
    }
}

/// `swaplab list | head`: once the reader has gone, printing fails with
/// EPIPE (Rust ignores SIGPIPE, so that a reset socket is an error for the
/// load client, not the death of the harness) and `println!` panics. Leave
/// as a Unix filter does instead: targets killed, sandboxes removed, the
/// status a SIGPIPE would give (141), and no panic message. Whether the
/// reader has gone is asked of the kernel (POLLERR on stdout), not read
/// from the panic's words.
fn leave_quietly_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if stdout_reader_gone() {
            swaplab::harness::process::kill_all();
            swaplab::harness::sandbox::remove_all();
            std::process::exit(141);
        }
        default(info)
    }));
}

/// Whether stdout is a pipe or socket whose reading end is closed.
fn stdout_reader_gone() -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(&stdout),
        PollFlags::empty(),
    )];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}

impl Command {
    fn run(self) -> Done {
        match self {
            Command::List { json } => commands::list::command(json),
            Command::Stale {
                pids,
                user,
                pattern,
                json,
                openmetrics,
                plan,
                package_roots,
                json_schema,
            } => {
                if json_schema {
                    print!("{}", commands::stale::SCHEMA);
                    return Ok(());
                }
                let output = match (json, openmetrics, plan) {
                    (true, _, _) => commands::stale::Output::Json,
                    (_, true, _) => commands::stale::Output::OpenMetrics,
                    (_, _, true) => commands::stale::Output::Plan,
                    _ => commands::stale::Output::Text,
                };
                commands::stale::command(pids, user, pattern, package_roots, output)
            }
            Command::Run {
                ids,
                all,
                json,
                quiet,
                libc,
            } => commands::run::command(&ids, all, json, quiet, &libc),
            Command::Compare { reports } => commands::compare::command(&reports),
            Command::Matrix {
                debian,
                kernel,
                fs,
                accel,
                cache,
                mirror,
                out,
                only,
            } => {
                let opts = commands::matrix::Options {
                    debian,
                    kernels: kernel,
                    filesystems: fs,
                    accel,
                    cache,
                    mirror,
                    out,
                };
                commands::matrix::command(&opts, &only)
            }
            Command::Guest { .. } => unreachable!("main runs the guest's first process itself"),
            Command::FsColumn { .. } => unreachable!("main runs an fs column itself"),
            Command::Bench { what } => what.run(),
        }
    }
}

impl Bench {
    fn run(self) -> Done {
        match self {
            Bench::Stale {
                processes,
                jit_every,
                runs,
                no_needrestart,
                children,
                json,
            } => {
                let o = StaleOptions {
                    processes: processes as usize,
                    jit_every: jit_every as usize,
                    runs: runs as usize,
                    needrestart: !no_needrestart,
                    daemons: !children,
                };
                commands::bench::stale(o, json)
            }
            Bench::Upgrade {
                requests,
                settle,
                connections,
                rate,
                workers,
                server,
                json,
            } => {
                let o = Options {
                    requests: requests as usize,
                    settle: settle as usize,
                    connections: connections as usize,
                    rate,
                    workers: workers as usize,
                    servers: server,
                };
                commands::bench::upgrade(o, json)
            }
            Bench::Handover {
                rate,
                connections,
                switches,
                settle,
                between,
                body,
                download_ms,
                startup_ms,
                strategy,
                out,
                json,
            } => {
                let o = HandoverOptions {
                    setup: Setup::new(body, download_ms, startup_ms),
                    pace: Pace {
                        rate,
                        threads: connections as usize,
                        switches: switches as usize,
                        settle: settle as usize,
                        between: between as usize,
                    },
                    strategies: strategy.iter().filter_map(|s| Strategy::parse(s)).collect(),
                };
                commands::bench::handover(o, &out, json)
            }
            Bench::Reload(args) => args.run(),
        }
    }
}
