//! The SVG timeline of one hand-over strategy under load
//! (`swaplab bench handover`): requests per 10 ms by the generation that
//! served them, failed requests marked by kind, each switch drawn from its
//! signal to the new generation accepting. Plain SVG, for a browser.

use std::fmt::Write;
use std::time::Duration;

use crate::drivers::comparison::Comparison;
use crate::drivers::load::Kind;

const BUCKET: Duration = Duration::from_millis(10);
const WIDTH: f64 = 1200.0;
const PLOT_H: f64 = 220.0;
const LEFT: f64 = 50.0;
const TOP: f64 = 40.0;
/// Colours of successive generations (cycled).
const GENS: [&str; 6] = [
    "#4e79a7", "#59a14f", "#9c755f", "#76b7b2", "#edc948", "#b07aa1",
];

fn kind_colour(k: Kind) -> &'static str {
    match k {
        Kind::Refused => "#e15759",
        Kind::Reset => "#f28e2b",
        Kind::ShortRead => "#7b3294",
        _ => "#222222",
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The timeline as an SVG document.
pub fn svg(c: &Comparison) -> String {
    let end = c.samples.iter().map(|s| s.start).max().unwrap_or_default() + BUCKET;
    let n = (end.as_nanos() / BUCKET.as_nanos()) as usize + 1;
    // Per bucket: completed per generation, failures per kind.
    let mut ok: Vec<std::collections::BTreeMap<u32, usize>> = vec![Default::default(); n];
    let mut bad: Vec<std::collections::BTreeMap<Kind, usize>> = vec![Default::default(); n];
    for s in &c.samples {
        let i = (s.start.as_nanos() / BUCKET.as_nanos()) as usize;
        if s.kind == Kind::Completed {
            let g = s.answer.as_ref().and_then(|a| a.gen).unwrap_or(0);
            *ok[i].entry(g).or_default() += 1;
        } else {
            *bad[i].entry(s.kind).or_default() += 1;
        }
    }
    let peak = ok
        .iter()
        .map(|m| m.values().sum::<usize>())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let bw = (WIDTH - LEFT - 20.0) / n as f64;
    let x =
        |t: Duration| LEFT + t.as_secs_f64() / end.as_secs_f64().max(1e-9) * (WIDTH - LEFT - 20.0);
    let base = TOP + PLOT_H;
    let height = base + 90.0;
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        o,
        r#"<text x="{LEFT}" y="20" font-size="15" font-weight="bold">{}: {} attempted, {} refused, {} reset, {} truncated, {} timed out; refusal window {:.1} ms</text>"#,
        esc(&c.name),
        c.attempted,
        c.refused,
        c.reset,
        c.truncated,
        c.timed_out,
        c.refusal_window_ms
    );
    // Bars: completed requests per bucket, stacked by generation.
    for (i, m) in ok.iter().enumerate() {
        let mut y = base;
        for (g, k) in m {
            let h = *k as f64 / peak * PLOT_H;
            y -= h;
            let _ = writeln!(
                o,
                r#"<rect x="{:.2}" y="{y:.2}" width="{:.2}" height="{h:.2}" fill="{}"><title>{} ms: {k} by gen {g}</title></rect>"#,
                LEFT + i as f64 * bw,
                bw.max(0.5),
                GENS[*g as usize % GENS.len()],
                i * 10
            );
        }
    }
    // Failures: a mark per failed request under the axis, one row per kind.
    for (i, m) in bad.iter().enumerate() {
        for (k, count) in m {
            let row = match k {
                Kind::Refused => 0.0,
                Kind::Reset => 1.0,
                Kind::ShortRead => 2.0,
                _ => 3.0,
            };
            let _ = writeln!(
                o,
                r#"<rect x="{:.2}" y="{:.2}" width="{:.2}" height="8" fill="{}"><title>{} ms: {count} {}</title></rect>"#,
                LEFT + i as f64 * bw,
                base + 8.0 + row * 10.0,
                bw.max(1.5),
                kind_colour(*k),
                i * 10,
                k.name()
            );
        }
    }
    switch_bands(&mut o, c, &x, base);
    // Axes and ticks (seconds).
    let _ = writeln!(
        o,
        r#"<line x1="{LEFT}" x2="{}" y1="{base}" y2="{base}" stroke="black"/>"#,
        WIDTH - 20.0
    );
    let step = if end.as_secs_f64() > 20.0 { 5 } else { 1 };
    let mut t = 0;
    while (t as f64) <= end.as_secs_f64() {
        let xt = x(Duration::from_secs(t));
        let _ = writeln!(
            o,
            r#"<line x1="{xt:.2}" x2="{xt:.2}" y1="{base}" y2="{}" stroke="black"/><text x="{xt:.2}" y="{}" text-anchor="middle">{t} s</text>"#,
            base + 4.0,
            base + 56.0
        );
        t += step;
    }
    let _ = writeln!(
        o,
        r#"<text x="8" y="{}" transform="rotate(-90 8,{})">per 10 ms</text><text x="{}" y="{}" text-anchor="end">{}</text>"#,
        TOP + PLOT_H / 2.0,
        TOP + PLOT_H / 2.0,
        LEFT - 4.0,
        TOP + 10.0,
        peak
    );
    let mut lx = LEFT;
    let ly = height - 12.0;
    for (label, colour) in [
        ("refused", kind_colour(Kind::Refused)),
        ("reset", kind_colour(Kind::Reset)),
        ("truncated", kind_colour(Kind::ShortRead)),
        ("timeout/other", kind_colour(Kind::Timeout)),
    ] {
        let _ = writeln!(
            o,
            r#"<rect x="{lx}" y="{}" width="10" height="10" fill="{colour}"/><text x="{}" y="{ly}">{label}</text>"#,
            ly - 9.0,
            lx + 14.0
        );
        lx += 110.0;
    }
    let _ = writeln!(
        o,
        r#"<text x="{lx}" y="{ly}">bars: completed downloads by generation (colour); grey bands: signal to new generation accepting</text>"#
    );
    o.push_str("</svg>\n");
    o
}

/// Each switch as a band from its signal to the new generation accepting
/// (a reload: from its command to ready), with a dashed line at the signal.
fn switch_bands(o: &mut String, c: &Comparison, x: &dyn Fn(Duration) -> f64, base: f64) {
    for s in &c.switches {
        let (a, b) = (x(c.at(s.signal_ns)), x(c.at(s.accepting_ns)));
        let _ = writeln!(
            o,
            r#"<rect x="{a:.2}" y="{TOP}" width="{:.2}" height="{PLOT_H}" fill="grey" fill-opacity="0.25"><title>{}: {:.1} ms from signal to accepting</title></rect>"#,
            (b - a).max(1.0),
            // A server reloaded by its own commands has no generation
            // numbers (0): its switches are reloads.
            if s.gen == 0 {
                "reload".to_string()
            } else {
                format!("switch to gen {}", s.gen)
            },
            s.switch_ms()
        );
        let _ = writeln!(
            o,
            r#"<line x1="{a:.2}" x2="{a:.2}" y1="{TOP}" y2="{base}" stroke="dimgrey" stroke-dasharray="3,3"/>"#
        );
    }
}
