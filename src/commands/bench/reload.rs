//! `swaplab bench reload`: a server reloaded again and again under load,
//! the user's own or the presets; its arguments checked (the user's server
//! probed) before anything starts.

use std::path::{Path, PathBuf};

use crate::bench::reload::{self, OwnServer, Subject};
use crate::commands::bench::{make_out, parse_rate, write_outputs, RunOutcome};
use crate::commands::{bench_json, cores, judged, pretty, Done, Exit};
use crate::drivers::load::KeepAlive;
use crate::drivers::presets::Preset;
use crate::drivers::reload::{Ready, ReloadPace, Url};
use crate::drivers::shell_server::Commands;
use crate::harness::platform::Platform;

/// A server reloaded again and again under load — your own (its start,
/// reload and stop commands) or the presets side by side (real nginx,
/// haproxy, apache2; swaplab's strategies): new connections refused,
/// reset, truncated, timed out; requests failed on reused keep-alive
/// connections; latency before, during and after. Writes reload.json
/// and an SVG timeline per server into --out. Loopback only.
#[derive(clap::Args)]
pub struct Args {
    /// Built-in servers, comma-separated; `all` for every one side by
    /// side, `real` for the four real servers.
    #[arg(long, value_enum, value_delimiter = ',', conflicts_with_all = ["start", "reload", "url", "stop", "after", "pid_file", "ready", "drained", "catches"])]
    preset: Vec<Presets>,
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
    pid_file: Option<PathBuf>,
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
    out: PathBuf,
    /// Print the JSON on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// What `--preset` names: one preset, or a group of them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Presets {
    One(Preset),
    /// Every preset side by side.
    All,
    /// The real servers.
    Real,
}

impl Presets {
    /// Every preset, then the groups: `--preset`'s values in their order.
    const CHOICES: [Presets; Preset::ALL.len() + 2] = {
        let mut choices = [Presets::All; Preset::ALL.len() + 2];
        let mut i = 0;
        while i < Preset::ALL.len() {
            choices[i] = Presets::One(Preset::ALL[i]);
            i += 1;
        }
        choices[i] = Presets::All;
        choices[i + 1] = Presets::Real;
        choices
    };

    fn presets(&self) -> Vec<Preset> {
        match self {
            Presets::One(p) => vec![*p],
            Presets::All => Preset::ALL.to_vec(),
            Presets::Real => Preset::REAL.to_vec(),
        }
    }
}

impl clap::ValueEnum for Presets {
    fn value_variants<'a>() -> &'a [Self] {
        &Presets::CHOICES
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let name = match self {
            Presets::One(p) => p.name(),
            Presets::All => "all".into(),
            Presets::Real => "real".into(),
        };
        Some(clap::builder::PossibleValue::new(name))
    }
}

impl Args {
    fn subject(&self) -> Result<Subject, String> {
        if !self.preset.is_empty() {
            let presets = self.preset.iter().flat_map(Presets::presets).collect();
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
            let probe = crate::drivers::load::get_once(
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

    pub fn run(self) -> Done {
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
        bench(subject, pace, &self.out, self.json)
    }
}

/// A signal's name, with or without `SIG`, in any case.
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

/// A server reloaded again and again under load (the user's own, or the
/// presets side by side): writes an SVG timeline per server and reload.json
/// into `out`, prints the table (or the JSON); fails when a run failed or
/// a file cannot be written.
fn bench(subject: Subject, pace: ReloadPace, out: &Path, json: bool) -> Done {
    make_out(out)?;
    let platform = Platform::detect();
    let cores = cores();
    if !json {
        let load = match pace.keep_alive {
            Some(ka) => format!(
                "{} keep-alive clients, each next request a random 0 to {} ms after the last answer (a closed loop: latency counts from each send){}",
                pace.threads,
                ka.think.as_millis(),
                if ka.retry { ", retried once on a new connection after a failure on a reused one" } else { "" }
            ),
            None => format!(
                "{} new connections/s on a fixed schedule ({} client threads, more while all are busy), one request each; latency counts from the moment a request was due",
                pace.rate, pace.threads
            ),
        };
        println!(
            "swaplab bench reload on {}, {cores} cores\n{load}; {} reloads per server, each waited for, then {} answers\n",
            platform.one_line(),
            pace.reloads,
            pace.settle
        );
    }
    let runs = reload::reload_runs(&subject, &pace, |what| {
        if !json {
            eprintln!("  {what}");
        }
    });
    let body = serde_json::json!({ "pace": pace, "runs": runs });
    let text = pretty(&bench_json(&platform, cores, body));
    let outcomes: Vec<RunOutcome> = runs
        .iter()
        .map(|r| (r.server.as_str(), r.error.as_deref(), r.result.as_ref()))
        .collect();
    let (written, mut failed) = write_outputs(&outcomes, &text, out, "reload");
    for r in runs
        .iter()
        .filter_map(|r| r.summary.as_ref().map(|s| (&r.server, s)))
    {
        if !r.1.left_behind.is_empty() {
            failed = true;
            eprintln!(
                "swaplab: {}: left behind: {}",
                r.0,
                r.1.left_behind.join("; ")
            );
        }
    }
    if json {
        println!("{text}");
    } else {
        println!("{}", reload::table(&runs));
        println!("written:");
        for p in &written {
            println!("  {}", p.display());
        }
    }
    judged(failed)
}
