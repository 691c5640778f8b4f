//! `swaplab bench upgrade`: the upgrade (USR2, WINCH, QUIT) and the
//! rollback (USR2, WINCH, HUP, QUIT new) of swaplab's server and of real
//! nginx, each under the load client running flat out, with every request's
//! outcome and latency split into before, during and after the switch.
//!
//! Phases are measured in requests, not seconds: `before` ends once
//! `requests` requests completed, `during` runs from the first signal to the
//! end of the last step (each step waits for `settle` answers), `after`
//! lasts until `requests` more completed.

use anyhow::Result;

use serde::Serialize;

use crate::drivers::fleet;
use crate::drivers::load::{Kind, Mark, Sample, Stats};
use crate::drivers::nginx;
use crate::harness::lab::Lab;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant;

#[derive(Clone, Debug)]
pub struct UpgradeOptions {
    /// Completed requests before, and again after, the switch.
    pub requests: usize,
    /// Answers each step of the sequence waits for.
    pub settle: usize,
    /// Load connections (threads).
    pub connections: usize,
    /// New connections per second in all; `None`: flat out.
    pub rate: Option<f64>,
    /// Workers per master.
    pub workers: usize,
    /// Which servers: `swaplab`, `nginx`.
    pub servers: Vec<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub phase: &'static str,
    #[serde(flatten)]
    pub stats: Stats,
}

#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub server: String,
    pub sequence: &'static str,
    /// Why it did not run, and what would make it run.
    pub skipped: Option<String>,
    /// A harness failure (a deadline passed): no figures.
    pub error: Option<String>,
    /// Checks of the finding that did not hold during the run.
    pub refuted: Vec<String>,
    pub phases: Vec<Phase>,
    pub total: Option<Stats>,
}

fn split(samples: &[Sample], during: Mark, after: Mark) -> Vec<Phase> {
    let pick = |f: &dyn Fn(&Sample) -> bool| -> Stats {
        let v: Vec<&Sample> = samples.iter().filter(|s| f(s)).collect();
        Stats::of(&v)
    };
    vec![
        Phase {
            phase: "before",
            stats: pick(&|s| s.start < during.at),
        },
        Phase {
            phase: "during",
            stats: pick(&|s| s.start >= during.at && s.start < after.at),
        },
        Phase {
            phase: "after",
            stats: pick(&|s| s.start >= after.at),
        },
    ]
}

fn completed(s: &Sample) -> bool {
    s.kind == Kind::Completed
}

fn one(server: &str, sequence: &'static str, o: &UpgradeOptions) -> Run {
    let mut run = Run {
        server: server.to_string(),
        sequence,
        skipped: None,
        error: None,
        refuted: Vec::new(),
        phases: Vec::new(),
        total: None,
    };
    let mut lab = match Lab::new(&format!("bench-{server}"), None) {
        Ok(l) => l,
        Err(e) => {
            run.error = Some(format!("{e:#}"));
            return run;
        }
    };
    let result = (|| -> Result<()> {
        // Whatever runs the server stays alive until the end of the run.
        let mut ours: Option<(crate::harness::process::Target, fleet::Fleet)> = None;
        let mut theirs: Option<nginx::Nginx> = None;
        type Replacer = fn(&mut Lab) -> Result<()>;
        let (fleet, first, mut replace): (&mut fleet::Fleet, i32, Replacer) = if server == "nginx" {
            if nginx::find_nginx().is_none() {
                run.skipped = Some(format!("nginx is not installed: {}", nginx::ENABLE));
                return Ok(());
            }
            let ng = nginx::start(&mut lab, o.workers)?;
            let ng = theirs.insert(ng);
            (&mut ng.fleet, ng.master, nginx::replace_binary)
        } else {
            lab.put_lib(Variant::V1, Replace::Install)?;
            let (t, fleet) = fleet::start_server(&mut lab, o.workers)?;
            let first = t.pid();
            let (_, fleet) = ours.insert((t, fleet));
            (fleet, first, fleet::install_server_2)
        };
        let mut opts = crate::drivers::load::LoadOptions::new(fleet.addr);
        opts.connections = o.connections;
        opts.rate = o.rate;
        opts.max_requests = (o.requests as u64) * 4 + 1_000_000;
        opts.max_duration = std::time::Duration::from_secs(600);
        let load = crate::drivers::load::Load::start(opts)?;
        let zero = Mark {
            at: Default::default(),
            index: 0,
        };
        load.wait_for(zero, o.requests, "completed", completed)?;
        let during = load.mark();
        if sequence == "upgrade" {
            fleet::upgrade(&mut lab, fleet, &load, first, o.settle, &mut replace)?;
        } else {
            fleet::rollback(&mut lab, fleet, &load, first, o.settle, &mut replace)?;
        }
        let after = load.mark();
        load.wait_for(after, o.requests, "completed", completed)?;
        let samples = load.stop();
        let all: Vec<&Sample> = samples.iter().collect();
        run.total = Some(Stats::of(&all));
        run.phases = split(&samples, during, after);
        Ok(())
    })();
    if let Err(e) = result {
        run.error = Some(format!("{e:#}"));
    }
    run.refuted = lab
        .checks()
        .iter()
        .filter(|c| !c.ok)
        .map(|c| format!("{}: saw {}", c.what, c.saw))
        .collect();
    run
}

/// Runs every (server, sequence) pair; `progress` hears about each.
pub fn upgrade_runs(o: &UpgradeOptions, mut progress: impl FnMut(&str)) -> Vec<Run> {
    let mut runs = Vec::new();
    for server in &o.servers {
        for sequence in ["upgrade", "rollback"] {
            progress(&format!("{server}: {sequence} ..."));
            runs.push(one(server, sequence, o));
        }
    }
    runs
}

/// The table `swaplab bench upgrade` prints.
pub fn table(runs: &[Run]) -> String {
    let mut out = format!(
        "{:<15} {:<9} {:<7} {:>9} {:>6} {:>8} {:>6} {:>6} {:>8} {:>6} {:>8} {:>8} {:>8} {:>8}\n",
        "SERVER",
        "SEQUENCE",
        "PHASE",
        "REQUESTS",
        "FAILED",
        "REFUSED",
        "RESET",
        "SHORT",
        "TIMEOUT",
        "OTHER",
        "REQ/S",
        "P50 ms",
        "P99 ms",
        "MAX ms"
    );
    for r in runs {
        if let Some(s) = &r.skipped {
            out.push_str(&format!(
                "{:<15} {:<9} skipped: {s}\n",
                r.server, r.sequence
            ));
            continue;
        }
        if let Some(e) = &r.error {
            out.push_str(&format!("{:<15} {:<9} error: {e}\n", r.server, r.sequence));
            continue;
        }
        let rows = r
            .phases
            .iter()
            .map(|p| (p.phase, &p.stats))
            .chain(r.total.iter().map(|t| ("all", t)));
        for (phase, s) in rows {
            let f = |k: &str| s.failures.get(k).copied().unwrap_or(0);
            out.push_str(&format!(
                "{:<15} {:<9} {:<7} {:>9} {:>6} {:>8} {:>6} {:>6} {:>8} {:>6} {:>8.0} {:>8.3} {:>8.3} {:>8.3}\n",
                r.server,
                r.sequence,
                phase,
                s.requests,
                s.failed,
                f("refused"),
                f("reset"),
                f("short read"),
                f("timeout"),
                f("other"),
                s.rate,
                s.p50_ms,
                s.p99_ms,
                s.max_ms
            ));
        }
        let phases: Vec<(&str, &crate::drivers::load::Stats)> =
            r.phases.iter().map(|p| (p.phase, &p.stats)).collect();
        let name = format!("{} {}", r.server, r.sequence);
        if let Some(l) = crate::drivers::load::late_line(&name, &phases) {
            out.push_str(&format!("  {l}\n"));
        }
        for c in &r.refuted {
            out.push_str(&format!("  REFUTED: {c}\n"));
        }
    }
    out
}
