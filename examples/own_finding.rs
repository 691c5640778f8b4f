//! A finding of one's own, proved the way swaplab proves its own: X01, "a
//! library removed while a process maps it stays mapped, marked (deleted)".
//!
//! `cargo test x01` proves it (every C library column, the lab sheet
//! `examples/experiments/X01.md`, the /proc snapshot in
//! `examples/snapshots/`); `cargo run --example own_finding` narrates it and
//! prints the verdict. docs/writing-a-finding.md walks through it.

use anyhow::Result;

use swaplab_harness::finding::{Finding, Scope};
use swaplab_harness::lab::Lab;
use swaplab_harness::map_checks::describe;
use swaplab_harness::process::Program;
use swaplab_harness::replace::Replace;
use swaplab_harness::report::run_on;
use swaplab_harness::runtime::Runtime;
use swaplab_harness::variants::Variant;

/// The finding: what it claims, and the experiment that judges the claim.
pub static X01: Finding = Finding {
    // An ID outside swaplab's series (L, U, G, D), so sheets never collide.
    id: "X01",
    // The test that proves it is named `x01_` + slug.
    slug: "a_removed_library_stays_mapped_marked_deleted",
    claim: "Removing a library with `rm` while a process maps it does not unload it: the process \
            keeps calling the removed code, and every mapping of it in `/proc/PID/maps` ends in \
            ` (deleted)` with the removed file's inode.",
    source: "unlink(2): the file is deleted once no process has it open or mapped",
    steps: &[
        "install v1 as lib/libexample.so; start A (linked at start-up); call the library; show A's maps",
        "rm lib/libexample.so while A runs; list lib/",
        "call the library in A again; show A's maps",
    ],
    experiment: x01,
    // The kernel's behaviour, the same under glibc and musl: run it on both.
    scope: Scope::AnyLibc,
    // The same on every kernel: no older kernel shows something else.
    // Root, a tool, a second user...: nothing here.
    // Its lab sheet is prose of its own: no generated question or exercise.
    ..Finding::DEFAULTS
};

/// Observes first (narrating each step as the shell command that does the
/// same), then judges: each check can fail, and one that fails makes the
/// verdict Refuted, with what it saw.
fn x01(lab: &mut Lab) -> Result<()> {
    let inode = lab.put_lib(Variant::V1, Replace::Install)?;
    let mut a = lab.start(Program::Plain, "A")?;
    let before = lab.call(&mut a)?;
    let mapped = lab.maps(a.pid())?;
    lab.note("the library is removed while A runs; nothing takes its place");
    lab.shell("rm lib/libexample.so");
    std::fs::remove_file(lab.sandbox.lib_file())?;
    let left = list(lab, "lib")?;
    let after = lab.call(&mut a)?;
    let removed = lab.maps(a.pid())?;
    lab.observe("inode", inode);
    lab.observe("greeting_after", &after);

    let v1 = Variant::V1.greeting();
    lab.check_eq("A greets with v1 before the removal", before.as_str(), v1);
    lab.check(
        "before the removal, A maps lib/libexample.so, none (deleted)",
        !mapped.is_empty() && mapped.iter().all(|m| !m.deleted),
        describe(&mapped),
    );
    lab.check(
        "no file is named libexample.so any more",
        !left.iter().any(|n| n == "libexample.so"),
        format!("lib/ holds {left:?}"),
    );
    lab.check_eq(
        "A, after the removal, still greets with v1",
        after.as_str(),
        v1,
    );
    lab.check(
        "every mapping of the library in A's maps ends in (deleted)",
        !removed.is_empty() && removed.iter().all(|m| m.deleted),
        describe(&removed),
    );
    lab.check(
        "A's mappings keep the removed file's inode",
        !removed.is_empty() && removed.iter().all(|m| m.inode == inode),
        describe(&removed),
    );
    Ok(())
}

/// `ls DIR` in the sandbox, narrated; returns the names, sorted.
fn list(lab: &mut Lab, dir: &str) -> Result<Vec<String>> {
    let mut names = std::fs::read_dir(lab.sandbox.root().join(dir))?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<Vec<String>>>()?;
    names.sort();
    lab.shell(format!("ls {dir}"));
    lab.say(if names.is_empty() {
        "(empty)".to_string()
    } else {
        names.join("  ")
    });
    Ok(names)
}

/// Narrates X01 on the host's C library and prints the verdict.
fn main() {
    let live: swaplab_harness::lab::Sink = Box::new(|line| println!("{line}"));
    let outcome = run_on(&X01, &Runtime::host(), Some(live));
    if outcome.verdict.is_failure() {
        eprintln!("{}: {:?}", X01.id, outcome.verdict);
        std::process::exit(1);
    }
}

/// Proves X01 in `cargo test`, as swaplab's own findings are proved: on
/// every C library column here, against the lab sheet and the snapshot in
/// this example's own folders.
#[test]
fn x01_a_removed_library_stays_mapped_marked_deleted() {
    use swaplab_harness::prove::Proof;
    let here = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    Proof::new(here.join("experiments"), here.join("snapshots")).prove(&X01);
}
