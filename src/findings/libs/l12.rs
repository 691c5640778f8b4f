//! L12: a running executable cannot be written but can be replaced.

use std::fs;

use anyhow::{Context, Result};

use crate::detector::maps;
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::lab::{inode_of, vol, Lab};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::*;
use crate::harness::variants::OLD;
use crate::findings::SHARED_LIBRARY_UPDATE;

pub static L12: Finding = Finding {
    id: "L12",
    slug: "a_running_executable_cannot_be_written_but_can_be_replaced",
    claim: "Writing into a running executable fails with ETXTBSY, on every kernel measured: Debian's 5.10.223, 6.1.176, 6.12.117 and 7.2.13 (`swaplab matrix --kernel`) and this project's 6.18. Replacing the file by install/rename works and `/proc/PID/exe` then reads `… (deleted)`.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "copy a target program to bin/app and start it",
        "open bin/app for writing (expect ETXTBSY)",
        "install a new copy over bin/app; read /proc/PID/exe; start the new file",
    ],
    experiment: l12,
    scope: Scope::AnyLibc,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "Writing to a running executable",
        question: "Can you overwrite the executable of a running program, as `cp` did to the library in L11?",
        exercise: "What does the kernel answer to opening A's running executable for writing, and what does `readlink /proc/PID/exe` show for A and for B after the `install`?",
        answer: "The open fails with ETXTBSY (on this kernel; 6.11 and 6.12 allowed it). `install` replaces the file with a new inode instead: A keeps running and its exe now ends in `(deleted)`; B, started from the new file, has an exe that is not `(deleted)`.",
    },
    ..Finding::DEFAULTS
};

pub fn l12(lab: &mut Lab) -> Result<()> {
    let (major, minor) = crate::harness::platform::kernel_version().unwrap_or_default();
    lab.observe("kernel", format!("{major}.{minor}"));
    lab.put_lib(V1, Replace::Install)?;
    let app = lab.sandbox.bin_dir().join("app");
    let src = lab.sandbox.built(Program::Plain)?;
    lab.sandbox.program(Program::Plain)?;
    lab.shell("cp bin/swaplab-plain bin/app");
    fs::copy(&src, &app).context("cannot copy the target program")?;
    let ino1 = inode_of(&app)?;
    let mut a = lab.start_exe(&app, "A", &[], |_| String::new())?;
    lab.call(&mut a)?;
    lab.note(format!(
        "open the running executable for writing (kernel {}: expect ETXTBSY)",
        vol(format!("{major}.{minor}"))
    ));
    lab.shell(
        "dd if=/dev/null of=bin/app conv=notrunc status=none   # open(O_WRONLY), writes nothing",
    );
    let opened = fs::OpenOptions::new().write(true).open(&app);
    let busy = matches!(&opened, Err(e) if e.raw_os_error() == Some(libc::ETXTBSY));
    lab.say(format!(
        "dd: {}",
        vol(match &opened {
            Ok(_) => "(opened for writing)".to_string(),
            Err(e) => format!("failed to open 'bin/app': {e}"),
        })
    ));
    drop(opened);
    lab.observe("write_open", if busy { "ETXTBSY" } else { "allowed" });
    let exe_before = maps::exe_of(a.pid())?;
    lab.note("replace it with a new file instead");
    lab.shell("install -m 755 bin/swaplab-plain bin/app");
    Replace::Install.apply(lab.sandbox.root(), "bin/swaplab-plain", "bin/app")?;
    let ino2 = inode_of(&app)?;
    let exe_after = maps::exe_of(a.pid())?;
    lab.proof(format!("$ readlink /proc/{}/exe", a.pid()));
    lab.proof(format!(
        "{}{}",
        exe_after.path.display(),
        if exe_after.deleted { " (deleted)" } else { "" }
    ));
    let g = lab.call(&mut a)?;
    let mut b = lab.start_exe(&app, "B", &[], |_| String::new())?;
    let exe_b = maps::exe_of(b.pid())?;
    lab.proof(format!("$ readlink /proc/{}/exe", b.pid()));
    lab.proof(exe_b.path.display().to_string());
    lab.call(&mut b)?;
    lab.check(
        "the kernel refuses to open the running executable for writing (ETXTBSY)",
        busy,
        format!(
            "kernel {major}.{minor}: {}",
            if busy {
                "ETXTBSY"
            } else {
                "the open succeeded"
            }
        ),
    );
    lab.check(
        "before the replacement /proc/PID/exe is not (deleted)",
        !exe_before.deleted,
        format!("{exe_before:?}"),
    );
    lab.check(
        "install replaced it: a new inode",
        ino1 != ino2,
        format!("{ino1} -> {ino2}"),
    );
    lab.check(
        "A's /proc/PID/exe now ends in (deleted)",
        exe_after.deleted && exe_after.path == app,
        format!("{exe_after:?}"),
    );
    lab.check_eq("A keeps running", g.as_str(), OLD);
    lab.check(
        "B, started from the new file, has an exe that is not (deleted)",
        !exe_b.deleted && exe_b.path == app,
        format!("{exe_b:?}"),
    );
    Ok(())
}
