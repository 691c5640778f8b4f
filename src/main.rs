//! `swaplab`: run the findings and narrate them.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use swaplab::experiments::graceful::{Pace, Setup, Strategy};
use swaplab::findings::{self, Finding, FINDINGS};
use swaplab::lab::Verdict;
use swaplab::report::{self, Outcome, Platform, Report};

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
        swaplab::process::kill_all();
        swaplab::sandbox::remove_all();
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
        } => run(&ids, all, json, quiet),
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
                    workers,
                    server,
                    json,
                },
        } => bench_upgrade(
            swaplab::bench::Options {
                requests: requests as usize,
                settle: settle as usize,
                connections: connections as usize,
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
    let user = match user.as_deref().map(swaplab::stale::parse_user).transpose() {
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
    let opts = swaplab::stale::Options {
        pids,
        user,
        pattern,
    };
    let r = match swaplab::stale::scan(&opts) {
        Ok(r) => r,
        Err(e) => return fail(format!("{e:#}")),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&r).expect("JSON"));
    } else {
        for line in swaplab::stale::render(&r, &swaplab::stale::PLAIN) {
            println!("{line}");
        }
    }
    ExitCode::from(r.exit_code())
}

/// Whether a finding runs on this machine, and if not, why.
fn readiness(f: &Finding) -> String {
    if f.experiment.is_none() {
        return format!("planned ({})", f.planned);
    }
    if f.id == "L13" && !nix::unistd::geteuid().is_root() {
        return "skips here: needs root".into();
    }
    if f.id == "U08" && swaplab::experiments::nginx::find_nginx().is_none() {
        return "skips here: needs nginx".into();
    }
    if (f.id == "G05" || f.id == "G07") && swaplab::netns::NetNs::available().is_err() {
        return "skips here: needs root (netns)".into();
    }
    "runs".into()
}

fn list(json: bool) -> ExitCode {
    if json {
        let rows: Vec<_> = FINDINGS
            .iter()
            .map(|f| {
                serde_json::json!({
                    "id": f.id,
                    "claim": f.claim,
                    "article": f.article.title(),
                    "test": f.test_name(),
                    "status": readiness(f),
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&rows).expect("JSON"));
        return ExitCode::SUCCESS;
    }
    println!("{:<4}  {:<28}  CLAIM", "ID", "STATUS HERE");
    for f in FINDINGS {
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

fn run(ids: &[String], all: bool, json: bool, quiet: bool) -> ExitCode {
    let selected: Vec<&'static Finding> = if all {
        FINDINGS.iter().collect()
    } else {
        let mut v = Vec::new();
        for id in ids {
            match findings::find(id) {
                Some(f) => v.push(f),
                None => {
                    eprintln!(
                        "swaplab: unknown finding ID `{id}`; known IDs are {} (see `swaplab list`)",
                        FINDINGS.iter().map(|f| f.id).collect::<Vec<_>>().join(", ")
                    );
                    return ExitCode::from(2);
                }
            }
        }
        v
    };
    let platform = Platform::detect();
    let narrate = !json && !quiet;
    if !json {
        println!("swaplab on {}", platform.one_line());
    }
    let mut outcomes: Vec<Outcome> = Vec::new();
    for f in selected {
        if narrate {
            println!("\n== {}: {}", f.id, f.claim);
        }
        let live: Option<swaplab::lab::Sink> = if narrate {
            Some(Box::new(|line: &str| {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "  {line}");
                let _ = out.flush();
            }))
        } else {
            None
        };
        let o = report::run(f, live);
        if !json {
            print_verdict(&o, narrate);
        }
        outcomes.push(o);
    }
    let failed = outcomes.iter().any(|o| o.verdict.is_failure());
    if json {
        let r = Report {
            swaplab: env!("CARGO_PKG_VERSION"),
            platform,
            findings: outcomes,
        };
        println!("{}", serde_json::to_string_pretty(&r).expect("JSON"));
    } else if outcomes.len() > 1 {
        table(&outcomes);
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_verdict(o: &Outcome, narrate: bool) {
    match &o.verdict {
        Verdict::Confirmed if narrate => {}
        Verdict::Confirmed => println!("{}: Confirmed", o.id),
        Verdict::Refuted { saw } => {
            println!("{}: Refuted; this machine showed:", o.id);
            for s in saw {
                println!("  - {s}");
            }
        }
        Verdict::Skipped { reason, enable } => {
            println!("{}: Skipped: {reason}\n  to run it: {enable}", o.id)
        }
        Verdict::Error { message } => println!("{}: Error (no verdict): {message}", o.id),
    }
}

fn table(outcomes: &[Outcome]) {
    println!("\n{:<4}  {:<9}  {:>7}  CLAIM", "ID", "VERDICT", "TIME");
    for o in outcomes {
        let time = if o.millis > 0 {
            format!("{:.2} s", o.millis as f64 / 1000.0)
        } else {
            "-".into()
        };
        println!(
            "{:<4}  {:<9}  {:>7}  {}",
            o.id,
            o.verdict.word(),
            time,
            short(&o.claim, 90)
        );
    }
    let count = |w: &str| outcomes.iter().filter(|o| o.verdict.word() == w).count();
    println!(
        "\n{} confirmed, {} refuted, {} skipped, {} errors",
        count("Confirmed"),
        count("Refuted"),
        count("Skipped"),
        count("Error")
    );
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
            match std::fs::write(&path, swaplab::timeline::svg(c)) {
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
        println!("{}", swaplab::experiments::graceful::table(&rows));
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
