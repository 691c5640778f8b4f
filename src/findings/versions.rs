//! Symbol versions (L18): a process that still maps the old library cannot
//! load a plugin built for the new one, although it has not crashed.

use anyhow::Result;

use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::{Lab, Stale};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::runtime::Libc;
use crate::harness::symbols::{version_needs, version_nodes};
use crate::harness::variants::Variant::{Plugin, VerV1, VerV2};
use crate::harness::variants::OLD;

use super::SHARED_LIBRARY_UPDATE;

/// The plugin, relative to the sandbox.
const PLUGIN: &str = "lib/libexample-plugin.so";
/// The version node version 2 adds, and the function in it.
const NODE_2: &str = "EXAMPLE_2";
const FEATURE: &str = "example_feature";

/// What musl shows instead of L18's claim.
const MUSL_L18: &str = "On musl the plugin fails to load into the old process too, but not on its version: musl's loader checks no version nodes, and fails on the symbol the old library lacks (\"Error relocating …: example_feature: symbol not found\"); the old process goes on running the old code, and a fresh one loads the plugin.";

pub static L18: Finding = Finding {
    id: "L18",
    slug: "a_process_on_the_old_library_cannot_load_a_plugin_built_for_the_new_one",
    claim: "A process running an old library breaks later, when it loads a plugin built for the new one: after an update of a library with symbol versions (version nodes EXAMPLE_1, and EXAMPLE_2 for what version 2 adds), `dlopen` of a plugin that needs the new node fails in a process that still maps the old library (glibc: \"version `EXAMPLE_2' not found (required by …)\"), while the process goes on running the old code, and works in a fresh process. This is why a library update needs restarts before anything crashes: `swaplab stale` flags the old process. L18C shows the same question with the real C library.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "install the versioned v1 as lib/libexample.so; show the version nodes of both builds and what the plugin needs (readelf -V)",
        "start P (linked against libexample); call it",
        "update: rename the versioned v2 over lib/libexample.so and install the plugin; P dlopens the plugin; P calls the library again",
        "start Q; Q dlopens the plugin and calls it; swaplab stale on both",
    ],
    experiment: l18,
    scope: Scope::PerLibc,
    musl: MUSL_L18,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "A plugin built for the new library",
        question: "L02 showed that a running process keeps the old library after an update and goes on working. Is it then safe to leave it running until it is convenient to restart? Not if it loads code later: a plugin, a module, anything `dlopen`ed after the update was built against the new library. What happens when such a plugin meets the old library still in the process?",
        exercise: "After the update, what happens when P, still on the old library, loads the plugin built for the new one? Is P still alive afterwards, and what does Q, started after the update, do with the same plugin?",
        answer: "On glibc P's `dlopen` of the plugin fails: version `EXAMPLE_2' not found (on musl: the missing symbol `example_feature`). P does not crash: it still greets `Hell World` with the old code. Q loads the plugin and runs \"the feature of version 2\". `swaplab stale` flags P, not Q.",
    },
    ..Finding::DEFAULTS
};

pub fn l18(lab: &mut Lab) -> Result<()> {
    lab.put_variant_at(VerV1, Replace::Install, "lib/libexample.so", ", with the version node EXAMPLE_1")?;
    show_versions(lab)?;
    let mut p = lab.start(Program::Plain, "P")?;
    let g1 = lab.call(&mut p)?;
    lab.note("the update: version 2 of the library, and a plugin built against it");
    lab.put_variant_at(VerV2, Replace::Rename, "lib/libexample.so", ", which adds EXAMPLE_2")?;
    lab.put_variant_at(Plugin, Replace::Install, PLUGIN, ", the plugin")?;
    let plugin = lab.sandbox.root().join(PLUGIN);
    let in_old = lab.try_open(&mut p, &plugin)?;
    let g2 = lab.call(&mut p)?;
    let mut q = lab.start(Program::Plain, "Q")?;
    let in_new = lab.try_open(&mut q, &plugin)?;
    let feature = match in_new {
        Ok(h) => Some(lab.callh(&mut q, h)?.0),
        Err(_) => None,
    };
    let r = lab.stale(&[p.pid(), q.pid()])?;
    lab.observe("plugin_in_the_old_process", format!("{in_old:?}"));
    lab.check_eq("P greets with v1", g1.as_str(), OLD);
    let failure = in_old.as_ref().err().cloned().unwrap_or_default();
    match lab.libc() {
        Libc::Glibc => lab.check(
            format!("glibc: the plugin's dlopen fails in P: version `{NODE_2}' not found"),
            failure.contains(&format!("version `{NODE_2}' not found")),
            format!("{in_old:?}"),
        ),
        Libc::Musl => lab.check(
            format!("musl: the plugin's dlopen fails in P on the missing symbol {FEATURE}, not on a version"),
            failure.contains(FEATURE) && failure.contains("symbol not found"),
            format!("{in_old:?}"),
        ),
    };
    lab.check_eq(
        "P has not crashed: it still answers, with the old code",
        g2.as_str(),
        OLD,
    );
    lab.check_eq(
        "Q, started after the update, loads the plugin and runs the new feature",
        feature.as_deref(),
        Some(Plugin.greeting()),
    );
    lab.check_stale(&r, "P", p.pid(), Stale::replaced(lab.sandbox.lib_file()));
    lab.check_stale(&r, "Q", q.pid(), Stale::Clean);
    Ok(())
}

/// `readelf -V`, shortened: the version nodes each build defines, and the
/// ones the plugin needs (read with the ELF reader).
fn show_versions(lab: &mut Lab) -> Result<()> {
    let mut defined = Vec::new();
    for v in [VerV1, VerV2] {
        let file = lab.sandbox.stage(v)?;
        let nodes = version_nodes(&file)?;
        lab.shell(format!(
            "readelf -V {} | grep -o 'Name: EXAMPLE_[0-9]*'",
            lab.sandbox.rel(&file)
        ));
        for n in &nodes {
            lab.say(format!("Name: {n}"));
        }
        defined.push(nodes);
    }
    let plugin = lab.sandbox.stage(Plugin)?;
    lab.shell(format!(
        "readelf -V {} | grep -E 'File: libexample|Name: EXAMPLE'",
        lab.sandbox.rel(&plugin)
    ));
    let needs: Vec<(String, String)> = version_needs(&plugin)?
        .into_iter()
        .filter(|(_, node)| node.starts_with("EXAMPLE"))
        .collect();
    for (file, node) in &needs {
        lab.say(format!("File: {file}  Name: {node}"));
    }
    lab.check_eq(
        "version 1 defines EXAMPLE_1; version 2 EXAMPLE_1 and EXAMPLE_2",
        defined,
        vec![vec!["EXAMPLE_1".to_string()], vec!["EXAMPLE_1".into(), NODE_2.into()]],
    );
    lab.check_eq(
        "the plugin needs EXAMPLE_2 of libexample.so",
        needs,
        vec![("libexample.so".to_string(), NODE_2.to_string())],
    );
    Ok(())
}
