//! Sonames and the link that names the current file (L15): what running
//! processes map, and how switching the link decides whether a process
//! starting meanwhile finds its library.

use std::time::Duration;

use anyhow::Result;

use crate::detector::maps::Mapping;
use crate::detector::stale::Reason;
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::{vol, Lab, Stale};
use crate::harness::runtime::Libc;
use crate::harness::map_checks::{check_current, check_old_deleted};
use crate::harness::process::Program;
use crate::harness::relink::Relink;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::{So1V1, So1V2};
use crate::harness::variants::{NEW, OLD};
use crate::harness::watch::{events_during, Event};

use super::start_loop::{reasons_text, start_loop, Budget, Replacer, StartLoop, Until, NO_FILE};
use super::SHARED_LIBRARY_UPDATE;

/// The soname link, relative to the sandbox, and its name in `lib/`.
const LINK: &str = "lib/libexample.so.1";
const LINK_NAME: &str = "libexample.so.1";
/// The two files the link names in turn (names in `lib/`).
const FILE_1: &str = "libexample.so.1.0.1";
const FILE_2: &str = "libexample.so.1.0.2";

/// How many failed starts the rm + ln loop waits for: its failure rate is
/// then measured, not the luck of the first failure.
const EXPECTED: usize = 10;

/// How many failures rm + ln's window would have caused at least in an
/// atomic tool's loop, for its zero to count: a tool with that window would
/// fail none with odds of e^-5 (natively the loops reach 10: e^-10).
const AT_LEAST: usize = 5;

pub static L15: Finding = Finding {
    id: "L15",
    slug: "a_process_maps_the_file_its_soname_named_and_how_the_link_is_switched_decides_who_starts",
    claim: "Sonames and the symlink dance: libraries are installed as `libexample.so.1.0.N` with a symlink `libexample.so.1` naming the current file (what `ldconfig` and package managers keep). A running process keeps the file it opened whatever the link says later, and its maps show the file's own name, never the link's: `grep 'libexample.so.1$' /proc/*/maps` finds nothing (a plain `grep libexample.so.1` matches only because the file's name begins with the soname). How the link is switched decides whether a process starting meanwhile finds its library: busybox `ln -sf` removes the link, then creates the new one (inotify: DELETE, CREATE), a window two system calls wide; `rm -f` then `ln -s`, as scripts switch links, opens the same window for the length of a program's start, and starts in it fail with ENOENT (glibc: \"cannot open shared object file\"; musl: \"Error loading shared library\"); GNU `ln -sf` (coreutils 8.27 and later) creates the new link under a temporary name and renames it over the old one (CREATE, MOVED_TO), as `ln -s` to a temporary name then `mv -T` does: no start fails with either, over enough starts and link switches that the rm + ln window would have failed at least 5 of them (its loop runs to 10 failures, the others to as many starts and switches as it needed, within four minutes each). Under emulation (`swaplab matrix --kernel` without KVM, where a start takes 100 ms) the loops cannot get that strong in minutes: there their counts are shown, not judged.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "install v1 as lib/libexample.so.1.0.1 and link lib/libexample.so.1 to it; start S (linked against the soname libexample.so.1); call it, show its maps, grep them for the link's name",
        "install v2 as lib/libexample.so.1.0.2, switch the link with ln -sf and remove the old file, as a package upgrade does; S calls again, shows its maps; start T; swaplab stale on both",
        "switch the link once with each tool while inotify watches lib/: what each does to the folder's names",
        "start processes in a tight loop while rm -f + ln -s switches the link back and forth, until 10 starts have failed (a measured failure rate); then as many starts and switches (within four minutes) while GNU ln -sf switches it, and again with ln -s + mv -T; count the failed starts, and how many the rm + ln window would have failed",
    ],
    experiment: l15,
    scope: Scope::AnyLibc,
    needs: &[
        Need::Tool {
            program: "busybox",
            package: "busybox",
        },
        Need::Filesystem,
    ],
    lesson: Lesson {
        title: "The soname link and an upgrade",
        question: "A packaged library is not installed under the name programs ask for. The file is `libexample.so.1.0.1`; the program's `DT_NEEDED` says `libexample.so.1` (the *soname*, chosen when the library was linked); a symbolic link `libexample.so.1 -> libexample.so.1.0.1`, kept by `ldconfig` or shipped by the package, joins the two. An upgrade installs `libexample.so.1.0.2` beside it and switches the link. Two questions follow. Which name does a running process show, so that an administrator can find it? And is there a moment, while the link is switched, when a program that starts cannot find its library at all?",
        exercise: "Which file name do S's maps lines show: the soname `libexample.so.1` or the file? After the link is switched and the old file removed, what do S and T greet? In the last part, which way of switching the link made starts fail?",
        answer: "S's maps name the file itself, `libexample.so.1.0.1`, never the link (a `grep libexample.so.1` matches only because the file's name begins with it). After the switch S still greets `Hell World`, its mappings `(deleted)`; T, started after, greets `Hello World`. Only `rm -f` + `ln -s` made starts fail, each with ENOENT (\"cannot open shared object file\"); GNU `ln -sf` and `ln -s` + `mv -T` rename a new link over the old name and never remove it.",
    },
    ..Finding::DEFAULTS
};

pub fn l15(lab: &mut Lab) -> Result<()> {
    lab.part("what a running process maps: the file, not the link");
    lab.put_variant_at(So1V1, Replace::Install, &format!("lib/{FILE_1}"), ", the soname's first file")?;
    relink(lab, Relink::GnuLn, FILE_1)?;
    let ino1 = lab.inode_at(&format!("lib/{FILE_1}"))?;
    let mut s = lab.start(Program::Soname, "S")?;
    let g1 = lab.call(&mut s)?;
    let m1 = lab.maps(s.pid())?;
    let (by_link, by_prefix) = grep_link(lab, s.pid())?;
    lab.note("an upgrade: the new file beside the old, the link switched, the old file removed");
    lab.put_variant_at(So1V2, Replace::Install, &format!("lib/{FILE_2}"), ", the soname's next file")?;
    relink(lab, Relink::GnuLn, FILE_2)?;
    lab.shell(format!("rm lib/{FILE_1}"));
    std::fs::remove_file(lab.sandbox.lib_dir().join(FILE_1))?;
    let ino2 = lab.inode_at(&format!("lib/{FILE_2}"))?;
    let g2 = lab.call(&mut s)?;
    let m2 = lab.maps(s.pid())?;
    let mut t = lab.start(Program::Soname, "T")?;
    let g3 = lab.call(&mut t)?;
    let m3 = lab.maps(t.pid())?;
    let r = lab.stale(&[s.pid(), t.pid()])?;
    let file1 = lab.sandbox.lib_dir().join(FILE_1);
    lab.check_eq("S greets with v1", g1.as_str(), OLD);
    lab.check(
        format!("S's maps name the file itself, {FILE_1}, every mapping"),
        !m1.is_empty() && m1.iter().all(|m| m.path == file1),
        names(&m1),
    );
    lab.check(
        format!("no line of S's maps ends with the link's name, {LINK_NAME}"),
        by_link == 0,
        format!("{by_link} lines"),
    );
    lab.check(
        format!("a plain grep {LINK_NAME} matches every mapping all the same: the file's name begins with it"),
        by_prefix == m1.len() && !m1.is_empty(),
        format!("{by_prefix} of {} lines", m1.len()),
    );
    lab.check_eq(
        "S, after the link was switched and its file removed, still greets with v1",
        g2.as_str(),
        OLD,
    );
    check_old_deleted(lab, "S", &m2, ino1);
    lab.check_eq("T, started after, greets with v2", g3.as_str(), NEW);
    check_current(lab, "T", &m3, ino2);
    lab.check_stale(&r, "S", s.pid(), Stale::required(Reason::Removed, lab.sandbox.lib_dir().join(FILE_1)));
    lab.check_stale(&r, "T", t.pid(), Stale::Clean);

    lab.part("what each ln does to the folder");
    lab.shell("inotifywait -m -e create,delete,moved_from,moved_to lib/ &");
    // A link may name a file that is not there (yet): only the link's own
    // name matters to what the tools do.
    for (tool, target) in [
        (Relink::BusyboxLn, FILE_1),
        (Relink::GnuLn, FILE_2),
        (Relink::LnThenMv, FILE_1),
    ] {
        if tool == Relink::GnuLn {
            check_gnu_ln(lab)?;
        }
        let events = watched_relink(lab, tool, target)?;
        judge_events(lab, tool, &events);
    }
    lab.shell("kill %1");
    lab.put_variant_at(So1V1, Replace::Install, &format!("lib/{FILE_1}"), ", back for the loops")?;

    lab.part("starts while the link is switched");
    start_windows(lab)
}

/// `ln` by `tool`, pointing the link at `target`, narrated.
fn relink(lab: &mut Lab, tool: Relink, target: &str) -> Result<()> {
    lab.shell(tool.shell(target, LINK));
    tool.apply(lab.sandbox.root(), target, LINK)
}

/// `grep -c 'libexample.so.1$'` and `grep -c libexample.so.1` on
/// /proc/PID/maps, counted on the text the kernel prints, as grep reads it:
/// how many lines end with the link's name, and how many contain it
/// anywhere.
fn grep_link(lab: &mut Lab, pid: i32) -> Result<(usize, usize)> {
    let text = std::fs::read(format!("/proc/{pid}/maps"))?;
    let (at_end, anywhere) = grep_counts(&text, LINK_NAME.as_bytes());
    lab.proof(format!("$ grep -c '{LINK_NAME}$' /proc/{pid}/maps"));
    lab.proof(at_end.to_string());
    lab.proof(format!("$ grep -c {LINK_NAME} /proc/{pid}/maps"));
    lab.proof(anywhere.to_string());
    Ok((at_end, anywhere))
}

/// In the text of a maps file: how many lines end with `name` (`grep -c
/// 'name$'`), and how many contain it (`grep -c name`).
fn grep_counts(text: &[u8], name: &[u8]) -> (usize, usize) {
    let lines = || text.split(|&b| b == b'\n').filter(|l| !l.is_empty());
    let at_end = lines().filter(|l| l.ends_with(name)).count();
    let anywhere = lines()
        .filter(|l| l.windows(name.len()).any(|w| w == name))
        .count();
    (at_end, anywhere)
}

/// The file names a process's mappings name (what a check saw).
fn names(m: &[Mapping]) -> String {
    let mut n: Vec<String> = m
        .iter()
        .map(|m| m.path.file_name().unwrap_or_default().to_string_lossy().into_owned())
        .collect();
    n.dedup();
    format!("{n:?}")
}

/// `ln --version`: the claim is about GNU coreutils' `ln` from 8.27 on
/// (where it stopped removing the link first).
fn check_gnu_ln(lab: &mut Lab) -> Result<()> {
    let mut ln = std::process::Command::new("ln");
    ln.arg("--version")
        .env_clear()
        .env("LC_ALL", "C")
        .env("PATH", crate::harness::replace::TOOLS_PATH);
    let out = crate::harness::process::output_within(&mut ln, crate::harness::process::deadline())?;
    let first = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    lab.shell("ln --version | head -1");
    lab.say(vol(&first));
    let version = first
        .strip_prefix("ln (GNU coreutils) ")
        .map(|v| {
            let mut p = v.trim().split('.').map(|n| n.parse::<u32>().unwrap_or(0));
            (p.next().unwrap_or(0), p.next().unwrap_or(0))
        });
    lab.check(
        "ln is GNU coreutils' 8.27 or later",
        version.is_some_and(|v| v >= (8, 27)),
        &first,
    );
    Ok(())
}

/// Switches the link to `target` with `tool` while inotify watches `lib/`;
/// narrates what the kernel reported, a temporary name shown as such.
fn watched_relink(lab: &mut Lab, tool: Relink, target: &str) -> Result<Vec<Event>> {
    lab.shell(format!("{}   # {}", tool.shell(target, LINK), tool.name()));
    let (root, dir) = (lab.sandbox.root().to_path_buf(), lab.sandbox.lib_dir());
    let events = events_during(&dir, || tool.apply(&root, target, LINK))?;
    for e in &events {
        lab.say(format!("lib/ {} {}", e.what, shown_name(&e.name)));
    }
    Ok(events)
}

/// A name as the transcript shows it: the link's, the files', or a name a
/// tool made up (which differs from run to run).
fn shown_name(name: &str) -> String {
    let known = [LINK_NAME, FILE_1, FILE_2, &format!("{LINK_NAME}.new")];
    if known.contains(&name) {
        name.to_string()
    } else {
        "(a temporary name)".into()
    }
}

/// Judges what `tool` did to the link's name: removed and created again
/// (busybox), or renamed over from another name (GNU ln, ln + mv).
fn judge_events(lab: &mut Lab, tool: Relink, events: &[Event]) {
    let at = |what: &str| {
        events
            .iter()
            .position(|e| e.what == what && e.name == LINK_NAME)
    };
    let saw = events
        .iter()
        .map(|e| format!("{} {}", e.what, shown_name(&e.name)))
        .collect::<Vec<_>>()
        .join(", ");
    match tool {
        Relink::BusyboxLn => lab.check(
            "busybox ln -sf deletes the link, then creates it again: between the two the name is missing",
            matches!((at("DELETE"), at("CREATE")), (Some(d), Some(c)) if d < c),
            saw,
        ),
        _ => lab.check(
            format!("{} never deletes the link's name: a link made under another name is renamed over it", tool.name()),
            at("DELETE").is_none()
                && at("CREATE").is_none()
                && at("MOVED_TO").is_some()
                && events.iter().any(|e| e.what == "CREATE" && e.name != LINK_NAME),
            saw,
        ),
    };
}

/// A check on the start loops' counts: judged, or, under emulation (where
/// the loops cannot reach a useful strength), shown, not judged: the
/// verdict is then Confirmed in part, and the report names the part.
fn count_check(lab: &mut Lab, judged: bool, what: impl std::fmt::Display, ok: bool, saw: impl std::fmt::Display) {
    if judged {
        lab.check(what, ok, saw);
    } else {
        lab.show_unjudged(
            what,
            saw,
            "an emulated guest: a start takes 100 ms, and the loops cannot reach in minutes the strength the claim names",
        );
    }
}

/// A loader's error without the program's path that starts glibc's
/// (`bin/…: error while loading…`).
fn after_program(line: &str) -> &str {
    line.find("error while loading")
        .map(|at| &line[at..])
        .unwrap_or(line)
}

/// A replacer that switches the link with `tool`, to the second file, then
/// the first, and so on.
fn switching(lab: &Lab, tool: Relink) -> Replacer {
    let root = lab.sandbox.root().to_path_buf();
    Box::new(move |i: usize| {
        let target = if i.is_multiple_of(2) { FILE_2 } else { FILE_1 };
        tool.apply(&root, target, LINK)
    })
}

/// The loop of starts while `tool` switches the link, narrated.
fn counted(lab: &mut Lab, tool: Relink, max: usize, budget: Budget, until: Until) -> Result<StartLoop> {
    let r = start_loop(lab, Program::Soname, switching(lab, tool), max, budget, until)?;
    lab.note(format!(
        "{}: {} of {} starts failed ({}), {} switches",
        tool.name(),
        vol(r.failed),
        vol(r.starts),
        vol(reasons_text(&r)),
        vol(r.replacements)
    ));
    Ok(r)
}

/// The window counts: rm + ln's rate first, then as many starts as that
/// rate would fail [`EXPECTED`] of with each atomic tool.
fn start_windows(lab: &mut Lab) -> Result<()> {
    lab.note(format!("starts in a tight loop while another loop switches the link the way scripts do (rm, then ln), until {EXPECTED} starts have failed"));
    lab.shell(format!(
        "while :; do {}; {}; done &",
        Relink::RmThenLn.shell(FILE_2, LINK),
        Relink::RmThenLn.shell(FILE_1, LINK)
    ));
    lab.shell(format!("until [ $((failed)) -ge {EXPECTED} ]; do bin/swaplab-soname --once > /dev/null 2>&1 || failed=$((failed+1)); done"));
    // busybox's own window is two system calls wide: on a quiet machine
    // it made 3 of 30,301 starts fail in four minutes (with a loaded one,
    // 10 of 974), too few to compare anything with. rm + ln holds the link
    // missing while ln starts, so its failures come at once; every loop
    // is bounded to four minutes. Emulated (matrix --kernel under TCG) a
    // start takes 100 ms, and busybox's window would have failed 0.8 of
    // GNU ln's starts in four minutes: there the counts are shown, not
    // judged, in two-minute loops.
    let judged = !crate::harness::platform::emulated();
    let limit = Duration::from_secs(if judged { 240 } else { 120 });
    let budget = Budget {
        time: limit,
        starts: 0,
        cap: limit,
    };
    let bb = counted(lab, Relink::RmThenLn, usize::MAX, budget, Until::Seen(&[NO_FILE], EXPECTED))?;
    lab.shell("kill %1");
    // Each atomic tool aims at as many starts and switches as rm + ln's
    // loop needed, within three times its time (one minute at least,
    // four at most).
    let (want, switches) = (bb.starts, bb.replacements);
    let time = (Duration::from_millis(bb.millis as u64) * 3)
        .clamp(Duration::from_secs(60).min(limit), limit);
    let atomic_budget = Budget {
        time,
        starts: 0,
        cap: time,
    };
    let mut atomic = Vec::new();
    for tool in [Relink::GnuLn, Relink::LnThenMv] {
        lab.shell(format!(
            "while :; do {}; {}; done &",
            tool.shell(FILE_2, LINK),
            tool.shell(FILE_1, LINK)
        ));
        lab.shell(format!(
            "for i in $(seq {}); do bin/swaplab-soname --once > /dev/null || echo failed; done   # as many starts as the rm + ln loop, and on to as many switches",
            vol(want)
        ));
        let r = counted(lab, tool, want, atomic_budget, Until::MaxAndReplacements(switches))?;
        lab.shell("kill %1");
        atomic.push((tool, r));
    }
    lab.observe("rm_ln_loop", &bb);
    lab.observe("starts_wanted", want);
    lab.observe("switches_wanted", switches);
    let other: Vec<&String> = bb.reasons.keys().filter(|k| k.as_str() != NO_FILE).collect();
    count_check(lab, judged, 
        "with rm -f + ln -s, starts fail, each with ENOENT (the link missing)",
        bb.failed > 0 && other.is_empty(),
        format!("{} of {} failed ({})", bb.failed, bb.starts, reasons_text(&bb)),
    );
    // The loader's own words for it (glibc's and musl's differ).
    let said = bb.samples.get(NO_FILE).cloned().unwrap_or_default();
    let words = match lab.libc() {
        Libc::Glibc => "cannot open shared object file",
        Libc::Musl => "Error loading shared library",
    };
    lab.note(format!("a failed start said: {}", after_program(&said)));
    count_check(lab, judged, 
        format!("the loader says so: \"{words}\""),
        said.contains(words),
        said.clone(),
    );
    for (tool, r) in &atomic {
        lab.observe(
            if *tool == Relink::GnuLn { "gnu_ln_loop" } else { "ln_mv_loop" },
            r,
        );
        // What rm + ln's window would have failed in this loop: its
        // failures per switch, times this loop's switches (the starts run
        // all along at the same pace).
        let would = bb.failed as f64 * r.replacements as f64 / bb.replacements.max(1) as f64;
        if judged && r.failed == 0 && bb.failed > 0 && would < AT_LEAST as f64 {
            anyhow::bail!(
                "{}'s loop made too few switches in {} s for its zero to mean anything (the rm + ln window would have failed {would:.1}); the machine is too slow or too busy",
                tool.name(),
                r.millis / 1000
            );
        }
        lab.note(format!(
            "{}: the rm + ln window would have failed {} of these starts",
            tool.name(),
            vol(format!("{would:.1}"))
        ));
        count_check(lab, judged, 
            format!(
                "with {}, no start fails, over enough starts and switches that the rm + ln window would have failed {AT_LEAST} or more",
                tool.name()
            ),
            r.failed == 0 && would >= AT_LEAST as f64,
            format!(
                "{} of {} failed ({}), {} switches (the rm + ln window: {would:.1} failures)",
                r.failed,
                r.starts,
                reasons_text(r),
                r.replacements
            ),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_greps_count_the_lines_the_kernel_prints() {
        // A line for the file, one for a removed link's name (the kernel
        // appends the mark: `grep 'so.1$'` misses it), one for another
        // library whose name only contains the soname.
        let maps = b"7f00-7f01 r--p 00000000 08:01 11                         /s/lib/libexample.so.1.0.1
7f01-7f02 r-xp 00001000 08:01 12                         /s/lib/libexample.so.1 (deleted)
7f02-7f03 r--p 00000000 08:01 13                         /s/lib/libexample.so.1
7f03-7f04 rw-p 00000000 00:00 0
";
        assert_eq!(grep_counts(maps, LINK_NAME.as_bytes()), (1, 3));
        assert_eq!(grep_counts(b"", LINK_NAME.as_bytes()), (0, 0));
    }
}
