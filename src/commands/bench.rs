//! `swaplab bench upgrade|stale|handover`: what each bench prints, and
//! writes, around the runs of `crate::bench`.

use std::path::{Path, PathBuf};

use crate::bench::handover::{self, HandoverOptions};
use crate::bench::reload::{self, Subject};
use crate::bench::stale::{self, StaleOptions};
use crate::bench::upgrade::{self, Options};
use crate::commands::{bench_json, cores, judged, pretty, Done, Exit};
use crate::drivers::reload::ReloadPace;
use crate::harness::platform::Platform;

/// Upgrades and rollbacks of each server under load: prints the table (or
/// JSON); fails when a run failed or refuted an expectation.
pub fn upgrade(o: Options, json: bool) -> Done {
    let platform = Platform::detect();
    let cores = cores();
    if !json {
        println!(
            "swaplab bench upgrade on {}, {cores} cores\n{} load connections{}, {} completed requests before and after each switch, {} answers per step, {} workers per master\n",
            platform.one_line(),
            o.connections,
            match o.rate {
                Some(r) => format!(
                    " to start with, {r} new connections/s on a fixed schedule (latency counts from the moment a request was due)"
                ),
                None => " flat out (a closed loop: latency counts from each send)".to_string(),
            },
            o.requests,
            o.settle,
            o.workers
        );
    }
    let runs = upgrade::upgrade_runs(&o, |what| {
        if !json {
            eprintln!("  {what}");
        }
    });
    let failed = runs
        .iter()
        .any(|r| r.error.is_some() || !r.refuted.is_empty());
    if json {
        let body = serde_json::json!({
            "options": {
                "requests": o.requests,
                "settle": o.settle,
                "connections": o.connections,
                "workers": o.workers,
            },
            "runs": runs,
        });
        println!("{}", pretty(&bench_json(&platform, cores, body)));
    } else {
        println!("\n{}", upgrade::table(&runs));
    }
    judged(failed)
}

/// `swaplab stale` against the other tools on the same sleepers: prints the
/// table (or JSON); fails when the sleepers cannot be set up.
pub fn stale(o: StaleOptions, json: bool) -> Done {
    let platform = Platform::detect();
    let uid = nix::unistd::geteuid();
    if !json {
        println!(
            "swaplab bench stale on {}, {} cores, as uid {uid}\n{} sleepers, half of them on a replaced libexample; one in {} of the others maps a memfd executable\n",
            platform.one_line(),
            cores(),
            o.processes,
            o.jit_every
        );
    }
    let b = stale::stale_bench(&o, |what| {
        if !json {
            eprintln!("  {what}");
        }
    })
    .map_err(|e| Exit::Aborted(format!("swaplab bench stale: {e:#}")))?;
    if json {
        let body = serde_json::json!({ "uid": uid.as_raw(), "bench": b });
        println!("{}", pretty(&bench_json(&platform, cores(), body)));
    } else {
        println!(
            "\n{} stale, {} on the new library ({} with a memfd); started in {:.1} s\n",
            b.stale, b.fresh, b.jit, b.setup_seconds
        );
        print!("{}", stale::stale_table(&b));
    }
    Ok(())
}

/// Every hand-over strategy through its switches under load: writes an SVG
/// timeline per strategy and handover.json into `out`, prints the table
/// (or the JSON); fails when a run failed or a file cannot be written.
pub fn handover(o: HandoverOptions, out: &Path, json: bool) -> Done {
    make_out(out)?;
    let platform = Platform::detect();
    let cores = cores();
    if !json {
        println!(
            "swaplab bench handover on {}, {cores} cores\n{} new connections/s on a fixed schedule ({} client threads, more while all are busy; latency counts from the moment a request was due), downloads of {} bytes over {} ms, a new generation starts in {} ms; {} switches per strategy\n",
            platform.one_line(),
            o.pace.rate,
            o.pace.threads,
            o.setup.body,
            o.setup.download_ms,
            o.setup.startup_ms,
            o.pace.switches
        );
    }
    let runs = handover::handover_runs(&o, |what| {
        if !json {
            eprintln!("  {what}");
        }
    });
    let body = serde_json::json!({ "setup": o.setup, "pace": o.pace, "runs": runs });
    let text = pretty(&bench_json(&platform, cores, body));
    let outcomes: Vec<RunOutcome> = runs
        .iter()
        .map(|r| (r.strategy.name(), r.error.as_deref(), r.result.as_ref()))
        .collect();
    let (written, failed) = write_outputs(&outcomes, &text, out, "handover");
    if json {
        println!("{text}");
    } else {
        let rows: Vec<_> = runs.iter().filter_map(|r| r.result.clone()).collect();
        println!("{}", crate::drivers::comparison::table(&rows));
        println!("written:");
        for p in &written {
            println!("  {}", p.display());
        }
    }
    judged(failed)
}

/// One run's name, why it has no figures, and its figures.
type RunOutcome<'a> = (
    &'a str,
    Option<&'a str>,
    Option<&'a crate::drivers::comparison::Comparison>,
);

/// Names each failed run on stderr and writes each run's SVG timeline
/// (`STEM-NAME.svg`), then `json` as `STEM.json`, into `out`: the paths
/// written, and whether a run failed or a file could not be written (named
/// on stderr).
fn write_outputs(runs: &[RunOutcome], json: &str, out: &Path, stem: &str) -> (Vec<PathBuf>, bool) {
    let mut written = Vec::new();
    let mut failed = false;
    let mut write = |path: PathBuf, text: &str| match std::fs::write(&path, text) {
        Ok(()) => written.push(path),
        Err(e) => {
            failed = true;
            eprintln!("swaplab: cannot write {}: {e}", path.display());
        }
    };
    for (name, error, c) in runs {
        if let Some(e) = error {
            eprintln!("swaplab: {name}: {e}");
        }
        if let Some(c) = c {
            let path = out.join(format!("{stem}-{name}.svg"));
            write(path, &crate::bench::timeline::svg(c));
        }
    }
    write(out.join(format!("{stem}.json")), json);
    let run_failed = runs.iter().any(|r| r.1.is_some());
    (written, failed || run_failed)
}

fn make_out(out: &Path) -> Result<(), Exit> {
    std::fs::create_dir_all(out).map_err(|e| {
        Exit::BadInput(format!(
            "swaplab: cannot make the output folder {}: {e}",
            out.display()
        ))
    })
}

/// A server reloaded again and again under load (the user's own, or the
/// presets side by side): writes an SVG timeline per server and reload.json
/// into `out`, prints the table (or the JSON); fails when a run failed or
/// a file cannot be written.
pub fn reload(subject: Subject, pace: ReloadPace, out: &Path, json: bool) -> Done {
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
