//! What one request gave ([`Sample`]: how it ended, who answered) and the
//! figures of many ([`Stats`], [`tally`], [`late_line`]).

use std::time::Duration;

use serde::Serialize;

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A 200 response with the whole body.
    Completed,
    /// The connection was refused (nobody listening).
    Refused,
    /// The connection was reset (RST, or a broken pipe while sending).
    Reset,
    /// The connection ended (EOF) before the whole response arrived.
    ShortRead,
    /// No connection or no answer within the request timeout.
    Timeout,
    /// Anything else: another status code, another error.
    Other,
}

impl Kind {
    pub const ALL: [Kind; 6] = [
        Kind::Completed,
        Kind::Refused,
        Kind::Reset,
        Kind::ShortRead,
        Kind::Timeout,
        Kind::Other,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Completed => "completed",
            Kind::Refused => "refused",
            Kind::Reset => "reset",
            Kind::ShortRead => "short read",
            Kind::Timeout => "timeout",
            Kind::Other => "other",
        }
    }
}

/// Who answered a completed request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Answer {
    pub pid: i32,
    pub gen: Option<u32>,
    pub version: Option<String>,
    pub greeting: Option<String>,
}

impl Answer {
    /// Parses a body such as `pid=7 gen=1 version=1.0.0 greeting=Hell World`.
    pub fn parse(body: &str) -> Option<Answer> {
        let line = body.lines().next()?;
        let (head, greeting) = match line.split_once(" greeting=") {
            Some((h, g)) => (h, Some(g.to_string())),
            None => (line, None),
        };
        let mut a = Answer {
            greeting,
            ..Answer::default()
        };
        let mut has_pid = false;
        for w in head.split_whitespace() {
            match w.split_once('=') {
                Some(("pid", v)) => {
                    a.pid = v.parse().ok()?;
                    has_pid = true;
                }
                Some(("gen", v)) => a.gen = v.parse().ok(),
                Some(("version", v)) => a.version = Some(v.to_string()),
                _ => {}
            }
        }
        has_pid.then_some(a)
    }
}

/// A request that went out later than this after its slot on the
/// schedule went out late (every client thread was busy, or the machine
/// did not run the client in time).
pub const LATE: Duration = Duration::from_millis(10);

/// One request.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// When it was due, from the start of the load: its slot on the
    /// schedule (open loop), else when it was sent.
    pub start: Duration,
    /// From `start` to its end: with a schedule, the wait for a late send
    /// included.
    pub latency: Duration,
    /// How long after its slot it was sent (open loop).
    #[serde(skip_serializing_if = "Duration::is_zero")]
    pub late: Duration,
    pub kind: Kind,
    pub answer: Option<Answer>,
    /// What went wrong, for failures.
    pub detail: Option<String>,
    /// Body bytes received.
    pub bytes: u64,
    /// Sent on a connection that had already carried a request (keep-alive).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
    /// The first attempt failed on a reused connection before any byte of
    /// an answer, and the request was sent again on a new connection (the
    /// client's retry of an idempotent request): `kind` is the retry's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub retried: bool,
    /// Any byte of an answer arrived (a failure without one: the server
    /// never answered this request).
    pub answered: bool,
    /// The answer said `Connection: close` (the server ends the
    /// connection after it).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub closed: bool,
}

impl Sample {
    /// When it was sent, from the start of the load.
    pub fn sent(&self) -> Duration {
        self.start + self.late
    }

    /// When it ended, from the start of the load.
    pub fn end(&self) -> Duration {
        self.start + self.latency
    }

    /// It went out more than [`LATE`] after its slot.
    pub fn went_out_late(&self) -> bool {
        self.late > LATE
    }

    /// A request that failed on a connection that had carried one before:
    /// the server closed it under the client (G08).
    pub fn failed_on_reused(&self) -> bool {
        self.reused && self.kind != Kind::Completed
    }
}

/// `completed 812, reset 1` (kinds seen, most common first), and how many
/// went out late, failed on a reused connection and were retried, if any.
pub fn tally(samples: &[Sample]) -> String {
    let mut t = kinds(samples);
    let late = samples.iter().filter(|s| s.went_out_late()).count();
    if late > 0 {
        t.push_str(&format!(
            " ({late} sent over {} ms after their slot)",
            LATE.as_millis()
        ));
    }
    let reused = samples.iter().filter(|s| s.failed_on_reused()).count();
    if reused > 0 {
        t.push_str(&format!(" ({reused} failed on a reused connection)"));
    }
    let retried = samples.iter().filter(|s| s.retried).count();
    if retried > 0 {
        t.push_str(&format!(" ({retried} retried on a new connection)"));
    }
    t
}

fn kinds(samples: &[Sample]) -> String {
    let mut parts: Vec<(usize, Kind)> = Kind::ALL
        .iter()
        .map(|k| (samples.iter().filter(|s| s.kind == *k).count(), *k))
        .filter(|(n, _)| *n > 0)
        .collect();
    parts.sort_by_key(|p| std::cmp::Reverse(p.0));
    if parts.is_empty() {
        return "none".into();
    }
    parts
        .iter()
        .map(|(n, k)| format!("{} {n}", k.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Latency figures of a set of samples.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Stats {
    pub requests: usize,
    /// Failures by kind (every kind but completed).
    pub failures: std::collections::BTreeMap<String, usize>,
    pub failed: usize,
    /// Requests sent over [`LATE`] after their slot on the schedule (open
    /// loop): the client could not keep its rate.
    pub late: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Requests per second over the span the samples cover.
    pub rate: f64,
}

impl Stats {
    pub fn of(samples: &[&Sample]) -> Stats {
        let mut lat: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
        lat.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let pick = |q: f64| -> f64 {
            if lat.is_empty() {
                return 0.0;
            }
            let i = ((lat.len() as f64 * q).ceil() as usize).clamp(1, lat.len()) - 1;
            ms(lat[i])
        };
        let mut failures = std::collections::BTreeMap::new();
        for k in Kind::ALL.iter().filter(|k| **k != Kind::Completed) {
            failures.insert(
                k.name().to_string(),
                samples.iter().filter(|s| s.kind == *k).count(),
            );
        }
        let span = match (
            samples.iter().map(|s| s.start).min(),
            samples.iter().map(|s| s.end()).max(),
        ) {
            (Some(a), Some(b)) if b > a => (b - a).as_secs_f64(),
            _ => 0.0,
        };
        let failed = failures.values().sum();
        Stats {
            requests: samples.len(),
            failures,
            failed,
            late: samples.iter().filter(|s| s.went_out_late()).count(),
            p50_ms: pick(0.50),
            p99_ms: pick(0.99),
            max_ms: lat.last().copied().map(ms).unwrap_or(0.0),
            rate: if span > 0.0 {
                samples.len() as f64 / span
            } else {
                0.0
            },
        }
    }
}

/// `NAME: requests sent over 10 ms after their slot: 0/412/0 (before,
/// during, after)`, for a table's foot; `None` when none was late.
pub fn late_line(name: &str, phases: &[(&str, &Stats)]) -> Option<String> {
    if phases.iter().all(|(_, s)| s.late == 0) {
        return None;
    }
    let counts: Vec<String> = phases.iter().map(|(_, s)| s.late.to_string()).collect();
    let names: Vec<&str> = phases.iter().map(|(n, _)| *n).collect();
    Some(format!(
        "{name}: requests sent over {} ms after their slot: {} ({})",
        LATE.as_millis(),
        counts.join("/"),
        names.join(", ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_name_who_answered() {
        let a = Answer::parse("pid=42 gen=2 version=2.0.0 greeting=Hello World\n").unwrap();
        assert_eq!(a.pid, 42);
        assert_eq!(a.gen, Some(2));
        assert_eq!(a.version.as_deref(), Some("2.0.0"));
        assert_eq!(a.greeting.as_deref(), Some("Hello World"));
        let n = Answer::parse("pid=7 nginx=1.22.1\n").unwrap();
        assert_eq!((n.pid, n.gen), (7, None));
        assert!(Answer::parse("hello").is_none());
    }
}
