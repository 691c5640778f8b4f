//! `swaplab`: run the findings and narrate them.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use swaplab::drivers::comparison::{self, Pace};
use swaplab::drivers::handover::{Setup, Strategy};
use swaplab::findings;
use swaplab::harness::finding::{Finding, Scope};
use swaplab::harness::lab::Verdict;
use swaplab::harness::platform::Platform;
use swaplab::harness::report::{self, Outcome, Report};
use swaplab::harness::runtime::{Runtime, Unavailable};

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
    /// Run the findings on other Debian releases' glibc: builds (and caches)
    /// a debootstrap root per release, compiles the C targets inside it with
    /// its own gcc, runs them with its own loader and C library, and writes a
    /// report per release. Needs root and debootstrap.
    #[command(after_help = MATRIX_HELP)]
    Matrix {
        /// Debian releases (codenames).
        #[arg(long, value_delimiter = ',', value_name = "RELEASE", required = true)]
        debian: Vec<String>,
        /// Where the roots are cached.
        #[arg(long, value_name = "DIR")]
        cache: Option<std::path::PathBuf>,
        /// The Debian mirror debootstrap downloads from.
        #[arg(long, default_value = "http://deb.debian.org/debian")]
        mirror: String,
        /// Where the reports go (made if missing).
        #[arg(long, default_value = "swaplab-matrix")]
        out: std::path::PathBuf,
        /// Only these findings (default: every one).
        #[arg(long, value_delimiter = ',', value_name = "ID")]
        only: Vec<String>,
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

Not reported (counted in the summary): pseudo-files (memfd, SysV shared
memory, /dev, huge pages, [aio]), anonymous memory, and files mapped without
execute permission. Another user's processes cannot be read without root:
they are counted and named as unreadable.

Examples:
  swaplab stale
  sudo swaplab stale --json
  swaplab stale --user www-data --match nginx";

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
Needs root (debootstrap and chroot) and debootstrap (apt-get install -y
debootstrap). The first run of a release downloads it (about 100 MB per
release, a few minutes); later runs reuse the cached root.

Example:
  sudo swaplab matrix --debian bullseye,trixie
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
    // Ctrl-C or a TERM: kill the targets and remove the sandboxes before
    // leaving (targets also die with us through PR_SET_PDEATHSIG).
    if let Err(e) = ctrlc::set_handler(|| {
        swaplab::harness::process::kill_all();
        swaplab::harness::sandbox::remove_all();
        eprintln!("swaplab: interrupted; targets killed, sandboxes removed");
        std::process::exit(130);
    }) {
        eprintln!("swaplab: cannot install the interrupt handler: {e}");
    }
    match cli.command {
        Command::List { json } => list(json),
        Command::Stale {
            pids,
            user,
            pattern,
            json,
        } => stale(pids, user, pattern, json),
        Command::Run {
            ids,
            all,
            json,
            quiet,
            libc,
        } => run(&ids, all, json, quiet, &libc),
        Command::Compare { reports } => compare(&reports),
        Command::Matrix {
            debian,
            cache,
            mirror,
            out,
            only,
        } => matrix(&debian, cache, &mirror, &out, &only),
        Command::Bench {
            what:
                Bench::Stale {
                    processes,
                    jit_every,
                    runs,
                    no_needrestart,
                    children,
                    json,
                },
        } => bench_stale(
            swaplab::bench::StaleOptions {
                processes: processes as usize,
                jit_every: jit_every as usize,
                runs: runs as usize,
                needrestart: !no_needrestart,
                daemons: !children,
            },
            json,
        ),
        Command::Bench {
            what:
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
                },
        } => bench_handover(
            swaplab::bench::HandoverOptions {
                setup: Setup::new(body, download_ms, startup_ms),
                pace: Pace {
                    rate,
                    threads: connections as usize,
                    switches: switches as usize,
                    settle: settle as usize,
                    between: between as usize,
                },
                strategies: strategy.iter().filter_map(|s| Strategy::parse(s)).collect(),
            },
            &out,
            json,
        ),
        Command::Bench {
            what:
                Bench::Upgrade {
                    requests,
                    settle,
                    connections,
                    rate,
                    workers,
                    server,
                    json,
                },
        } => bench_upgrade(
            swaplab::bench::Options {
                requests: requests as usize,
                settle: settle as usize,
                connections: connections as usize,
                rate,
                workers: workers as usize,
                servers: server,
            },
            json,
        ),
    }
}

fn stale(pids: Vec<i32>, user: Option<String>, pattern: Option<String>, json: bool) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("swaplab stale: {msg}");
        ExitCode::from(2)
    };
    let user = match user
        .as_deref()
        .map(swaplab::detector::stale::parse_user)
        .transpose()
    {
        Ok(u) => u,
        Err(e) => return fail(e),
    };
    let pattern = match pattern.as_deref().map(regex::Regex::new).transpose() {
        Ok(p) => p,
        Err(e) => return fail(format!("--match: not a valid regular expression: {e}")),
    };
    for &pid in &pids {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return fail(format!("--pid {pid}: no such process"));
        }
    }
    let opts = swaplab::detector::stale::Options {
        pids,
        user,
        pattern,
    };
    let r = match swaplab::detector::stale::scan(&opts) {
        Ok(r) => r,
        Err(e) => return fail(format!("{e:#}")),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r).expect("JSON"));
    } else {
        for line in swaplab::detector::stale::render(&r, &swaplab::detector::stale::PLAIN) {
            println!("{line}");
        }
    }
    ExitCode::from(r.exit_code())
}

/// Whether a finding runs on this machine, and if not, why: what it
/// declares it needs, checked as the run checks it.
fn readiness(f: &Finding) -> String {
    if let Scope::Only(libc) = f.scope {
        let here = Runtime::available()
            .into_iter()
            .any(|c| c.is_ok_and(|r| r.libc == libc));
        if !here {
            return format!("skips here: needs {}", libc.name());
        }
    }
    match f.needs.iter().find(|n| n.check(f.id).is_err()) {
        Some(need) => format!("skips here: needs {}", need.short()),
        None => "runs".into(),
    }
}

fn list(json: bool) -> ExitCode {
    if json {
        let rows: Vec<_> = findings::all()
            .map(|f| {
                serde_json::json!({
                    "id": f.id,
                    "claim": f.claim,
                    "article": f.source,
                    "test": f.test_name(),
                    "scope": f.scope,
                    "status": readiness(f),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("JSON"));
        return ExitCode::SUCCESS;
    }
    println!("{:<4}  {:<28}  CLAIM", "ID", "STATUS HERE");
    for f in findings::all() {
        println!("{:<4}  {:<28}  {}", f.id, readiness(f), short(f.claim, 100));
    }
    ExitCode::SUCCESS
}

fn short(s: &str, n: usize) -> String {
    let first = s.split(". ").next().unwrap_or(s);
    if first.chars().count() <= n {
        first.trim_end_matches('.').to_string()
    } else {
        format!("{}…", first.chars().take(n - 1).collect::<String>())
    }
}

/// The findings named by `ids` (or every one), or an error message.
fn select(ids: &[String], all: bool) -> Result<Vec<&'static Finding>, String> {
    if all || ids.is_empty() {
        return Ok(findings::all().collect());
    }
    ids.iter()
        .map(|id| {
            findings::find(id).ok_or_else(|| {
                format!(
                    "unknown finding ID `{id}`; known IDs are {} (see `swaplab list`)",
                    findings::all().map(|f| f.id).collect::<Vec<_>>().join(", ")
                )
            })
        })
        .collect()
}

type Columns = Vec<Result<Runtime, Unavailable>>;

/// The columns `--libc` asks for, or an error message.
fn columns(libc: &[String]) -> Result<Columns, String> {
    let all = Runtime::available();
    if libc.is_empty() {
        return Ok(all);
    }
    let name_of = |c: &Result<Runtime, Unavailable>| match c {
        Ok(r) => (r.name.clone(), r.libc.name()),
        Err(u) => (u.name.clone(), u.libc.name()),
    };
    for want in libc {
        if !all.iter().any(|c| {
            let (n, l) = name_of(c);
            n == *want || l == want
        }) {
            return Err(format!(
                "--libc {want}: no such column; this machine has {}",
                all.iter()
                    .map(|c| {
                        let (n, l) = name_of(c);
                        format!("{n} ({l})")
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    Ok(all
        .into_iter()
        .filter(|c| {
            let (n, l) = name_of(c);
            libc.iter().any(|w| *w == n || w == l)
        })
        .collect())
}

fn run(ids: &[String], all: bool, json: bool, quiet: bool, libc: &[String]) -> ExitCode {
    let selected = match select(ids, all) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("swaplab: {e}");
            return ExitCode::from(2);
        }
    };
    let cols = match columns(libc) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("swaplab: {e}");
            return ExitCode::from(2);
        }
    };
    let platform = Platform::detect();
    let narrate = !json && !quiet;
    if !json {
        println!("swaplab on {}", platform.one_line());
        for c in &cols {
            match c {
                Ok(r) => println!("  column {}: {}, loader {}", r.name, r.label(), r.loader),
                Err(u) => println!(
                    "  column {}: Skipped: {}\n    to run it: {}",
                    u.name, u.reason, u.enable
                ),
            }
        }
    }
    let live = |f: &Finding, rt: &Runtime| -> Option<swaplab::harness::lab::Sink> {
        if !narrate {
            return None;
        }
        if f.runs_on(rt).is_ok() {
            println!("\n== {} on {}: {}", f.id, rt.label(), f.claim_for(rt.libc));
        }
        Some(Box::new(|line: &str| {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "  {line}");
            let _ = out.flush();
        }))
    };
    let outcomes = report::run_all(&selected, &cols, live, |o| {
        if !json
            && cols
                .iter()
                .any(|c| matches!(c, Ok(r) if r.name == o.runtime))
        {
            print_verdict(o, narrate);
        }
    });
    let failed = outcomes.iter().any(|o| o.verdict.is_failure());
    if json {
        let r = Report::new(&cols, outcomes);
        println!("{}", serde_json::to_string_pretty(&r).expect("JSON"));
    } else if outcomes.len() > 1 {
        table(&selected, &cols, &outcomes);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_verdict(o: &Outcome, narrate: bool) {
    let id = format!("{} [{}]", o.id, o.runtime);
    match &o.verdict {
        Verdict::Confirmed if narrate => {}
        Verdict::NotApplicable { .. } if narrate => {}
        Verdict::Confirmed => println!("{id}: Confirmed"),
        Verdict::NotApplicable { reason } => println!("{id}: n/a: {reason}"),
        Verdict::Refuted { saw } => {
            println!("{id}: Refuted; this machine showed:");
            for s in saw {
                println!("  - {s}");
            }
        }
        Verdict::Skipped { reason, enable } => {
            println!("{id}: Skipped: {reason}\n  to run it: {enable}")
        }
        Verdict::Error { message } => println!("{id}: Error (no verdict): {message}"),
    }
}

/// The verdicts, one column per C library.
fn table(selected: &[&Finding], cols: &Columns, outcomes: &[Outcome]) {
    let names: Vec<String> = cols
        .iter()
        .map(|c| match c {
            Ok(r) => format!("{} ({})", r.name, r.label()),
            Err(u) => format!("{} (-)", u.name),
        })
        .collect();
    let width = names.iter().map(|n| n.len()).max().unwrap_or(9).max(9);
    let mut head = format!("\n{:<4}", "ID");
    for n in &names {
        head.push_str(&format!("  {n:<width$}"));
    }
    println!("{head}  CLAIM");
    for f in selected {
        let mut row = format!("{:<4}", f.id);
        for c in cols {
            let name = match c {
                Ok(r) => &r.name,
                Err(u) => &u.name,
            };
            let cell = outcomes
                .iter()
                .find(|o| o.id == f.id && &o.runtime == name)
                .map(|o| {
                    if o.millis > 0 {
                        format!("{} {:.1} s", o.verdict.word(), o.millis as f64 / 1000.0)
                    } else {
                        o.verdict.word().to_string()
                    }
                })
                .unwrap_or_default();
            row.push_str(&format!("  {cell:<width$}"));
        }
        println!("{row}  {}", short(f.claim, 70));
    }
    let count = |w: &str| outcomes.iter().filter(|o| o.verdict.word() == w).count();
    println!(
        "\n{} confirmed, {} refuted, {} skipped, {} errors, {} not applicable",
        count("Confirmed"),
        count("Refuted"),
        count("Skipped"),
        count("Error"),
        count("n/a")
    );
}

/// Prints the table of `paths`; exits 1 if a cell is marked, 2 if a report
/// cannot be read.
fn print_comparison(paths: &[std::path::PathBuf], who: &str) -> ExitCode {
    let reports = match swaplab::commands::compare::load(paths) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("swaplab {who}: {e:#}");
            return ExitCode::from(2);
        }
    };
    let c = swaplab::commands::compare::Comparison::of(&reports);
    print!("{}", c.markdown());
    if c.marked() > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn compare(paths: &[std::path::PathBuf]) -> ExitCode {
    print_comparison(paths, "compare")
}

fn matrix(
    releases: &[String],
    cache: Option<std::path::PathBuf>,
    mirror: &str,
    out: &std::path::Path,
    only: &[String],
) -> ExitCode {
    let selected = match select(only, only.is_empty()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("swaplab matrix: {e}");
            return ExitCode::from(2);
        }
    };
    let opts = swaplab::commands::matrix::Options {
        releases: releases.to_vec(),
        cache,
        mirror: mirror.to_string(),
        out: out.to_path_buf(),
    };
    match swaplab::commands::matrix::run(&opts, &selected, |line| eprintln!("{line}")) {
        Ok(written) => {
            let code = print_comparison(&written, "matrix");
            println!("\nreports:");
            for p in &written {
                println!("  {}", p.display());
            }
            code
        }
        Err(e) => {
            eprintln!("swaplab matrix: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

fn bench_upgrade(o: swaplab::bench::Options, json: bool) -> ExitCode {
    let platform = Platform::detect();
    let cores = cores();
    if !json {
        println!(
            "swaplab bench upgrade on {}, {cores} cores\n{} load connections, {} completed requests before and after each switch, {} answers per step, {} workers per master\n",
            platform.one_line(),
            o.connections,
            o.requests,
            o.settle,
            o.workers
        );
    }
    let runs = swaplab::bench::upgrade_runs(&o, |what| {
        if !json {
            eprintln!("  {what}");
        }
    });
    let failed = runs
        .iter()
        .any(|r| r.error.is_some() || !r.refuted.is_empty());
    if json {
        let v = serde_json::json!({
            "swaplab": env!("CARGO_PKG_VERSION"),
            "platform": platform,
            "cores": cores,
            "options": {
                "requests": o.requests,
                "settle": o.settle,
                "connections": o.connections,
                "workers": o.workers,
            },
            "runs": runs,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
    } else {
        println!("\n{}", swaplab::bench::table(&runs));
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn bench_stale(o: swaplab::bench::StaleOptions, json: bool) -> ExitCode {
    let platform = Platform::detect();
    if !json {
        println!(
            "swaplab bench stale on {}, {} cores, as uid {}\n{} sleepers, half of them on a replaced libexample; one in {} of the others maps a memfd executable\n",
            platform.one_line(),
            cores(),
            nix::unistd::geteuid(),
            o.processes,
            o.jit_every
        );
    }
    let b = match swaplab::bench::stale_bench(&o, |what| {
        if !json {
            eprintln!("  {what}");
        }
    }) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("swaplab bench stale: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if json {
        let v = serde_json::json!({
            "swaplab": env!("CARGO_PKG_VERSION"),
            "platform": platform,
            "cores": cores(),
            "uid": nix::unistd::geteuid().as_raw(),
            "bench": b,
        });
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON"));
    } else {
        println!(
            "\n{} stale, {} on the new library ({} with a memfd); started in {:.1} s\n",
            b.stale, b.fresh, b.jit, b.setup_seconds
        );
        print!("{}", swaplab::bench::stale_table(&b));
    }
    ExitCode::SUCCESS
}

fn bench_handover(
    o: swaplab::bench::HandoverOptions,
    out: &std::path::Path,
    json: bool,
) -> ExitCode {
    if let Err(e) = std::fs::create_dir_all(out) {
        eprintln!(
            "swaplab: cannot make the output folder {}: {e}",
            out.display()
        );
        return ExitCode::from(2);
    }
    let platform = Platform::detect();
    let cores = cores();
    if !json {
        println!(
            "swaplab bench handover on {}, {cores} cores\n{} new connections/s ({} client threads), downloads of {} bytes over {} ms, a new generation starts in {} ms; {} switches per strategy\n",
            platform.one_line(),
            o.pace.rate,
            o.pace.threads,
            o.setup.body,
            o.setup.download_ms,
            o.setup.startup_ms,
            o.pace.switches
        );
    }
    let runs = swaplab::bench::handover_runs(&o, |what| {
        if !json {
            eprintln!("  {what}");
        }
    });
    let mut written = Vec::new();
    let mut failed = false;
    for r in &runs {
        if let Some(e) = &r.error {
            failed = true;
            eprintln!("swaplab: {}: {e}", r.strategy.name());
        }
        if let Some(c) = &r.result {
            let path = out.join(format!("handover-{}.svg", c.strategy.name()));
            match std::fs::write(&path, swaplab::bench::timeline::svg(c)) {
                Ok(()) => written.push(path),
                Err(e) => {
                    failed = true;
                    eprintln!("swaplab: cannot write {}: {e}", path.display());
                }
            }
        }
    }
    let v = serde_json::json!({
        "swaplab": env!("CARGO_PKG_VERSION"),
        "platform": platform,
        "cores": cores,
        "setup": o.setup,
        "pace": o.pace,
        "runs": runs,
    });
    let text = serde_json::to_string_pretty(&v).expect("JSON");
    let path = out.join("handover.json");
    match std::fs::write(&path, &text) {
        Ok(()) => written.push(path),
        Err(e) => {
            failed = true;
            eprintln!("swaplab: cannot write {}: {e}", path.display());
        }
    }
    if json {
        println!("{text}");
    } else {
        let rows: Vec<_> = runs.iter().filter_map(|r| r.result.clone()).collect();
        println!("{}", comparison::table(&rows));
        println!("written:");
        for p in &written {
            println!("  {}", p.display());
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
