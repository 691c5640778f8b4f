//! `swaplab bench reload`: a server reloaded again and again under load —
//! the user's own (its start, reload and stop commands), or the presets
//! (real nginx, haproxy and apache2; swaplab's own strategies) side by side.

use serde::Serialize;

use crate::drivers::comparison::Comparison;
use crate::drivers::load::{late_line, Kind, Stats};
use crate::drivers::presets::Preset;
use crate::drivers::reload::{run_reloads, summary, Ready, ReloadPace, Summary, Url};
use crate::drivers::shell_server::{Commands, ShellServer};
use crate::harness::lab::Lab;

/// What is reloaded: presets, or the user's own server.
#[derive(Clone, Debug)]
pub enum Subject {
    Presets(Vec<Preset>),
    Own(Box<OwnServer>),
}

/// The user's own server: how to run it, where to load it, when a reload
/// has finished.
#[derive(Clone, Debug)]
pub struct OwnServer {
    pub name: String,
    pub cmds: Commands,
    pub url: Url,
    pub ready: Ready,
}

#[derive(Clone, Debug, Serialize)]
pub struct ReloadRun {
    pub server: String,
    /// Why the run has no figures: the server is missing, or a harness
    /// failure (a deadline passed).
    pub error: Option<String>,
    pub result: Option<Comparison>,
    pub summary: Option<Summary>,
}

fn one(name: String, start: impl FnOnce(&mut Lab) -> anyhow::Result<Comparison>) -> ReloadRun {
    let result = Lab::new("bench-reload", None).and_then(|mut lab| start(&mut lab));
    match result {
        Ok(c) => ReloadRun {
            server: name,
            error: None,
            summary: Some(summary(&c)),
            result: Some(c),
        },
        Err(e) => ReloadRun {
            server: name,
            error: Some(format!("{e:#}")),
            result: None,
            summary: None,
        },
    }
}

/// Runs each server of `subject` through the reloads, one sandbox each.
pub fn reload_runs(
    subject: &Subject,
    pace: &ReloadPace,
    mut progress: impl FnMut(&str),
) -> Vec<ReloadRun> {
    let load = match pace.keep_alive {
        Some(_) => "a keep-alive load".to_string(),
        None => format!("{} new connections/s", pace.rate),
    };
    match subject {
        Subject::Presets(presets) => presets
            .iter()
            .map(|p| {
                progress(&format!(
                    "{}: {} reloads under {load}",
                    p.name(),
                    pace.reloads
                ));
                one(p.name(), |lab| {
                    let mut server = p.start(lab, pace.keep_alive.is_some())?;
                    run_reloads(lab, &p.name(), server.as_mut(), pace)
                })
            })
            .collect(),
        Subject::Own(own) => {
            let OwnServer {
                name,
                cmds,
                url,
                ready,
            } = own.as_ref();
            progress(&format!("{name}: {} reloads under {load}", pace.reloads));
            vec![one(name.clone(), |lab| {
                let mut server = ShellServer::start(lab, cmds.clone(), url.clone(), ready.clone())?;
                run_reloads(lab, name, &mut server, pace)
            })]
        }
    }
}

/// The side-by-side table (Markdown), one row per server.
pub fn table(runs: &[ReloadRun]) -> String {
    let mut out = String::from(
        "| server | reloads | requests | new conn. refused | reset | truncated | timed out | other | failed on reused conn. | retried | p50/p99/max ms before | during | after |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|\n",
    );
    let lat = |s: &Stats| format!("{:.1}/{:.1}/{:.1}", s.p50_ms, s.p99_ms, s.max_ms);
    for r in runs {
        let Some(s) = &r.summary else {
            let why = r.error.as_deref().unwrap_or_default();
            let why: String = why
                .lines()
                .next()
                .unwrap_or_default()
                .chars()
                .take(100)
                .collect();
            out.push_str(&format!(
                "| {} | no figures: {why} |||||||||||| \n",
                r.server
            ));
            continue;
        };
        let n = |k: Kind| s.new_connections.get(k.name()).copied().unwrap_or(0);
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            r.server,
            s.reloads,
            s.requests,
            n(Kind::Refused),
            n(Kind::Reset),
            n(Kind::ShortRead),
            n(Kind::Timeout),
            n(Kind::Other),
            s.failed_on_reused,
            s.retried,
            lat(&s.before),
            lat(&s.during),
            lat(&s.after),
        ));
    }
    let late: Vec<String> = runs
        .iter()
        .filter_map(|r| {
            let s = r.summary.as_ref()?;
            let phases = [
                ("before", &s.before),
                ("during", &s.during),
                ("after", &s.after),
            ];
            late_line(&r.server, &phases)
        })
        .collect();
    if !late.is_empty() {
        out.push_str(&format!("\n{}\n", late.join("\n")));
    }
    out
}
