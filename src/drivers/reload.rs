//! Reloading a server under load: swaplab's own hand-over server through a
//! [`Service`], or any server through the shell commands that start, reload
//! and stop it ([`ShellServer`]: the user's own, and the real servers of
//! G10 and `swaplab bench reload --preset`). [`run_reloads`] drives the
//! same load through every reload, waiting each time for the evidence that
//! the reload finished ([`Ready`]), and tells what the clients saw as a
//! [`Comparison`].

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;

use crate::drivers::comparison::{compare, Comparison};
use crate::drivers::handover::{Service, Switch};
use crate::drivers::load::{self, KeepAlive, Kind, Load, Sample, Stats};
use crate::harness::lab::{vol, Lab};
use crate::targets::handover::mono_ns;

/// A loopback HTTP URL: `http://127.0.0.1:8080/path`, `http://[::1]:8080/`,
/// `http://localhost:8080/`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Url {
    pub addr: SocketAddr,
    pub path: String,
}

impl Url {
    /// Parses `text`; refuses any address outside loopback (127.0.0.0/8,
    /// ::1), any scheme but http, and a URL without a port.
    pub fn parse(text: &str) -> Result<Url, String> {
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("--url {text}: only http:// URLs (plain HTTP/1.1)"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, p),
            _ => {
                return Err(format!(
                    "--url {text}: give the port (http://127.0.0.1:PORT/)"
                ))
            }
        };
        let port: u16 = port
            .parse()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| format!("--url {text}: `{port}` is not a port"))?;
        let ip: IpAddr = match host {
            "localhost" => IpAddr::V4(Ipv4Addr::LOCALHOST),
            h => h
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse()
                .map_err(|_| {
                    format!("--url {text}: `{h}` is not an IP address (loopback only: 127.0.0.0/8, ::1, localhost)")
                })?,
        };
        if !ip.is_loopback() {
            return Err(format!(
                "--url {text}: swaplab sends traffic to loopback only (127.0.0.0/8, ::1), not {ip}"
            ));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("--url {text}: the path holds spaces"));
        }
        Ok(Url {
            addr: SocketAddr::new(ip, port),
            path: path.to_string(),
        })
    }
}

/// The evidence that a reload has finished.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Ready {
    /// An answer names (`pid=N` in its body) a process that had answered
    /// no request before the reload.
    NewPid,
    /// The pid file names another process, alive (a new master: keep-alive
    /// clients may go on talking to the old one's workers until it quits).
    PidFile,
    /// The log file has one more line holding `text` than before the reload.
    Log { path: PathBuf, text: String },
    /// A fixed time after the reload command ended (the user's word).
    Settle(Duration),
}

impl Ready {
    /// `new-pid`, `log:PATH:TEXT` or `settle:MS`.
    pub fn parse(text: &str) -> Result<Ready, String> {
        match text {
            "new-pid" => return Ok(Ready::NewPid),
            "pid-file" => return Ok(Ready::PidFile),
            _ => {}
        }
        if let Some(rest) = text.strip_prefix("log:") {
            return match rest.split_once(':') {
                Some((p, t)) if !p.is_empty() && !t.is_empty() => Ok(Ready::Log {
                    path: PathBuf::from(p),
                    text: t.to_string(),
                }),
                _ => Err(format!("--ready {text}: log:PATH:TEXT")),
            };
        }
        if let Some(ms) = text.strip_prefix("settle:") {
            return match ms.parse::<u64>() {
                Ok(ms @ 1..=600_000) => Ok(Ready::Settle(Duration::from_millis(ms))),
                _ => Err(format!("--ready {text}: settle:MS, 1 to 600000 ms")),
            };
        }
        Err(format!(
            "--ready {text}: new-pid, pid-file, log:PATH:TEXT or settle:MS"
        ))
    }
}

/// How the load drives the reloads.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct ReloadPace {
    pub reloads: usize,
    /// New connections per second (without keep-alive).
    pub rate: f64,
    /// Client threads (keep-alive: connections).
    pub threads: usize,
    pub keep_alive: Option<KeepAlive>,
    /// Answers completed before the first reload, after each and after the
    /// last.
    pub settle: usize,
}

/// A server the harness reloads.
pub trait Reloadable {
    fn url(&self) -> Url;
    /// One reload, returned once it finished; `narrate`: show each step.
    fn reload(&mut self, lab: &mut Lab, load: &Load, narrate: bool) -> Result<Switch>;
    /// Stops the server (if the harness started it): what is left behind.
    fn finish(&mut self, lab: &mut Lab) -> Result<Vec<String>>;
    fn strategy(&self) -> Option<crate::drivers::handover::Strategy> {
        None
    }
}

impl Reloadable for Service {
    fn url(&self) -> Url {
        Url {
            addr: self.addrs()[0],
            path: "/".into(),
        }
    }

    fn reload(&mut self, lab: &mut Lab, _load: &Load, narrate: bool) -> Result<Switch> {
        self.switch(lab, narrate)
    }

    fn finish(&mut self, lab: &mut Lab) -> Result<Vec<String>> {
        Service::finish(self, lab)
    }

    fn strategy(&self) -> Option<crate::drivers::handover::Strategy> {
        Some(self.strategy)
    }
}

/// `127.0.0.1:[PORT]/path` for the narration: the port varies by run.
fn shown_url(url: &Url) -> String {
    let host = match url.addr {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    format!("{host}:{}{}", vol(url.addr.port()), url.path)
}

/// The inodes of the sockets listening on `addr`'s port at its address or
/// at the wildcard one (a server bound to 0.0.0.0 answers on 127.0.0.1).
pub fn listening_inodes(addr: std::net::SocketAddr) -> Vec<u64> {
    let port = addr.port();
    let wild4 = std::net::SocketAddr::from(([0, 0, 0, 0], port));
    let wild6 = std::net::SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port));
    [addr, wild4, wild6]
        .into_iter()
        .filter_map(crate::harness::procs::listening_inode)
        .collect()
}

/// Starts the load of `pace` on `url`.
fn start_load(lab: &mut Lab, url: &Url, pace: &ReloadPace) -> Result<Load> {
    let mut o = load::LoadOptions::new(url.addr);
    o.path = url.path.clone();
    o.connections = pace.threads;
    o.max_duration = Duration::from_secs(1800);
    o.max_requests = 10_000_000;
    match pace.keep_alive {
        Some(ka) => {
            o.keep_alive = Some(ka);
            lab.note(format!(
                "load: {} keep-alive clients on {}, each on a connection of its own; the next request goes a random 0 to {} ms after the last answer, without first looking whether the server closed the connection (a closed loop: latency counts from each send)",
                pace.threads,
                shown_url(url),
                ka.think.as_millis()
            ));
        }
        None => {
            o.rate = Some(pace.rate);
            lab.note(format!(
                "load: {} new connections a second on {} ({} clients), one request each, {}",
                pace.rate,
                shown_url(url),
                pace.threads,
                o.pace().says()
            ));
        }
    }
    Load::start(o)
}

/// Reloads `server` `pace.reloads` times under the load; `name` names the
/// row.
pub fn run_reloads(
    lab: &mut Lab,
    name: &str,
    server: &mut dyn Reloadable,
    pace: &ReloadPace,
) -> Result<Comparison> {
    let url = server.url();
    let first_listening = listening_inodes(url.addr);
    let load = start_load(lab, &url, pace)?;
    let zero_ns = mono_ns().saturating_sub(load.now().as_nanos() as u64);
    let completed = |s: &load::Sample| s.kind == Kind::Completed;
    let m = load.mark();
    load.wait_for(m, pace.settle, "an answer completed", completed)?;
    let mut switches = Vec::new();
    for i in 0..pace.reloads {
        let sw = server
            .reload(lab, &load, i == 0)
            .with_context(|| format!("reload {} of {}", i + 1, pace.reloads))?;
        if i == 0 {
            lab.note(format!(
                "the next {} reloads the same way, each once the one before has finished and {} answers completed after it",
                pace.reloads.saturating_sub(1),
                pace.settle
            ));
        }
        switches.push(sw);
        let m = load.mark();
        load.wait_for(
            m,
            pace.settle,
            "an answer completed after the reload",
            completed,
        )?;
    }
    let last_listening = listening_inodes(url.addr);
    let samples = load.stop();
    let left = server.finish(lab)?;
    let mut c = compare(name, server.strategy(), switches, samples, zero_ns, left);
    c.first_listening = first_listening;
    c.last_listening = last_listening;
    lab.say(format!(
        "[load] {} reloads, {} requests: {}",
        c.switches.len(),
        vol(c.attempted),
        vol(load::tally(&c.samples))
    ));
    Ok(c)
}

/// What the clients saw of one server's reloads: failures on new
/// connections by kind, apart from those on reused ones.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Summary {
    pub reloads: usize,
    pub requests: usize,
    /// Requests on new connections that failed, by kind.
    pub new_connections: BTreeMap<String, usize>,
    /// Per reload, the requests on new connections due from its command to
    /// the next reload's (the last: to the end of the load).
    pub new_per_reload: Vec<usize>,
    /// Requests that failed on a reused (keep-alive) connection.
    pub failed_on_reused: usize,
    pub retried: usize,
    pub before: Stats,
    pub during: Stats,
    pub after: Stats,
    /// The listening socket's inode(s) before the first reload and after
    /// the last (/proc/net/tcp).
    pub first_listening: Vec<u64>,
    pub last_listening: Vec<u64>,
    pub left_behind: Vec<String>,
}

/// The figures of `c`: failures on new connections by kind apart from
/// those on reused ones.
pub fn summary(c: &Comparison) -> Summary {
    let mut new_connections = BTreeMap::new();
    for k in [
        Kind::Refused,
        Kind::Reset,
        Kind::ShortRead,
        Kind::Timeout,
        Kind::Other,
    ] {
        let n = c
            .samples
            .iter()
            .filter(|s: &&Sample| !s.reused && s.kind == k)
            .count();
        new_connections.insert(k.name().to_string(), n);
    }
    Summary {
        reloads: c.switches.len(),
        requests: c.attempted,
        new_connections,
        new_per_reload: c.per_switch(|s| !s.reused),
        failed_on_reused: c.failed_on_reused,
        retried: c.retried,
        before: c.before.clone(),
        during: c.during.clone(),
        after: c.after.clone(),
        first_listening: c.first_listening.clone(),
        last_listening: c.last_listening.clone(),
        left_behind: c.left_behind.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_loopback_only() {
        let u = Url::parse("http://127.0.0.1:8080/x?y=1").unwrap();
        assert_eq!((u.addr.port(), u.path.as_str()), (8080, "/x?y=1"));
        assert_eq!(Url::parse("http://[::1]:81").unwrap().path, "/");
        assert!(Url::parse("http://localhost:80/").is_ok());
        assert!(Url::parse("http://127.0.0.2:80/").is_ok());
        for bad in [
            "http://192.0.2.1:80/",
            "http://example.com:80/",
            "https://127.0.0.1:443/",
            "http://127.0.0.1/",
            "http://127.0.0.1:0/",
            "http://[2001:db8::1]:80/",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn readiness_is_parsed() {
        assert_eq!(Ready::parse("new-pid"), Ok(Ready::NewPid));
        assert_eq!(
            Ready::parse("settle:250"),
            Ok(Ready::Settle(Duration::from_millis(250)))
        );
        assert!(matches!(
            Ready::parse("log:run/e.log:resuming"),
            Ok(Ready::Log { .. })
        ));
        for bad in ["", "settle:0", "settle:x", "log:only", "soon"] {
            assert!(Ready::parse(bad).is_err(), "{bad}");
        }
    }
}
