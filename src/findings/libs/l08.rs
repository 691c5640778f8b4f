//! L08: a pinned library survives `dlclose` and keeps the old code.

use anyhow::Result;

use crate::detector::maps;
use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::map_checks::{check_current, check_old_deleted, check_two_copies, describe, only_inode};
use crate::harness::lab::{Lab, Stale};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::runtime::Libc;
use crate::harness::variants::Variant::*;
use crate::harness::variants::{NEW, OLD};
use crate::findings::SHARED_LIBRARY_UPDATE;
use crate::targets::protocol::Command;

/// How a library is pinned in one L08 case.
#[derive(Clone, Copy, PartialEq)]
enum Pin {
    Needed,
    NoDeleteLink,
    NoDeleteFlag,
    SecondHandle,
    NoLoadProbe,
}

fn pinned_case(lab: &mut Lab, pin: Pin) -> Result<()> {
    let (title, variant, program, opts) = match pin {
        Pin::Needed => ("linked at start-up (DT_NEEDED)", V1, Program::Plain, ""),
        Pin::NoDeleteLink => ("built with -z nodelete", V1NoDelete, Program::Dlopen, ""),
        Pin::NoDeleteFlag => ("opened with RTLD_NODELETE", V1, Program::Dlopen, "nodelete"),
        Pin::SecondHandle => ("a second handle still open", V1, Program::Dlopen, ""),
        Pin::NoLoadProbe => ("an RTLD_NOLOAD probe not balanced", V1, Program::Dlopen, ""),
    };
    lab.part(format!("pinned: {title}"));
    let ino1 = lab.put_lib(variant, Replace::Install)?;
    let lib = lab.sandbox.lib_file();
    let mut d = lab.start(program, "D")?;
    let (h1, _) = lab.open(&mut d, &lib, opts)?;
    let (g1, _) = lab.callh(&mut d, h1)?;
    let extra = match pin {
        Pin::SecondHandle => Some(lab.open(&mut d, &lib, "")?.0),
        Pin::NoLoadProbe => {
            let line = lab.ask(&mut d, Command::NoLoad(lib.clone()))?;
            lab.check(
                "the RTLD_NOLOAD probe finds the loaded library",
                line.contains("loaded=yes"),
                &line,
            );
            Some(crate::targets::protocol::field_u32(&line, "h")?)
        }
        _ => None,
    };
    lab.close(&mut d, h1)?;
    let m_closed = lab.maps(d.pid())?;
    let ino2 = lab.put_lib(V2, Replace::Install)?;
    let (h3, _) = lab.open(&mut d, &lib, "")?;
    let (g3, _) = lab.callh(&mut d, h3)?;
    let m3 = lab.maps(d.pid())?;
    let r3 = lab.stale(&[d.pid()])?;
    lab.check_eq(format!("[{title}] D greets with v1"), g1.as_str(), OLD);
    lab.check(
        format!("[{title}] after dlclose the library stays mapped"),
        only_inode(&m_closed, ino1),
        describe(&m_closed),
    );
    let musl = lab.libc() == Libc::Musl;
    if musl {
        lab.check_eq(
            format!(
                "[{title}] musl: dlopen after the update loads the new file (v2) as a second copy"
            ),
            g3.as_str(),
            NEW,
        );
        check_two_copies(lab, &format!("[{title}] D"), &m3, ino1, ino2);
    } else {
        lab.check_eq(
            format!("[{title}] dlopen after the update still greets with v1"),
            g3.as_str(),
            OLD,
        );
        check_old_deleted(lab, &format!("[{title}] D"), &m3, ino1);
    }
    lab.check_stale(
        &r3,
        &format!("[{title}] D"),
        d.pid(),
        Stale::replaced(lab.sandbox.lib_file()),
    );
    lab.observe(&format!("{title}: greeting after reopen"), &g3);
    if let Some(h2) = extra {
        lab.note("balance every reference: dlclose each handle; then open again");
        lab.close(&mut d, h2)?;
        lab.close(&mut d, h3)?;
        let m_gone = lab.maps(d.pid())?;
        let (h4, _) = lab.open(&mut d, &lib, "")?;
        let (g4, _) = lab.callh(&mut d, h4)?;
        let m4 = lab.maps(d.pid())?;
        let r4 = lab.stale(&[d.pid()])?;
        lab.check_eq(
            format!("[{title}] and dlopen then greets with v2"),
            g4.as_str(),
            NEW,
        );
        if musl {
            lab.check(
                format!("[{title}] musl: with every handle closed both copies stay mapped"),
                maps::inodes(&m_gone) == maps::inodes(&m3),
                describe(&m_gone),
            );
            check_two_copies(lab, &format!("[{title}] D"), &m4, ino1, ino2);
            lab.check_stale(
                &r4,
                &format!("[{title}] D, the old copy still mapped"),
                d.pid(),
                Stale::replaced(lab.sandbox.lib_file()),
            );
        } else {
            lab.check(
                format!("[{title}] once every handle is closed the library is unmapped"),
                m_gone.is_empty(),
                describe(&m_gone),
            );
            check_current(lab, &format!("[{title}] D"), &m4, ino2);
            lab.check_stale(
                &r4,
                &format!("[{title}] D, reloaded"),
                d.pid(),
                Stale::Clean,
            );
        }
    }
    lab.stop(&mut d)
}

/// What musl shows instead of L08's claim.
const MUSL_L08: &str = "On musl pinning changes nothing: every `dlclose` leaves the library mapped, and a `dlopen` after the replacement loads the new file (v2) as a second copy, whatever pins the old one; with every handle closed both copies stay mapped.";

pub static L08: Finding = Finding {
    id: "L08",
    slug: "a_pinned_library_survives_dlclose_and_keeps_the_old_code",
    claim: "`dlclose` does not unload, and a later `dlopen` keeps the old code, when the library is pinned: also linked at start-up (DT_NEEDED), built with `-z nodelete`, opened with `RTLD_NODELETE`, or another handle is still open (reference count). A successful `RTLD_NOLOAD` probe adds a reference too (measured): a probe must be balanced by a `dlclose`.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "for each pin (DT_NEEDED, -z nodelete, RTLD_NODELETE, a second handle, an RTLD_NOLOAD probe), in a fresh process:",
        "dlopen v1 and call it; dlclose; the mappings stay",
        "install v2; dlopen again and call: still v1",
        "for the counted pins, dlclose every handle: the mappings go, and dlopen loads v2",
    ],
    experiment: l08,
    scope: Scope::PerLibc,
    musl: MUSL_L08,
    needs: &[Need::Filesystem],
    lesson: Lesson {
        title: "dlclose of a pinned library",
        question: "When does `dlclose` not unload a library, so that a reopen after an update keeps the old code?",
        exercise: "In each `--- pinned: … ---` part, does D's library stay mapped after `dlclose`, and which greeting does the reopen after the update give? What does the last part, after every reference is balanced, show?",
        answer: "In every pinned part the library stays mapped after `dlclose` and the reopen after the update still greets `Hell World`, with every mapping on the old inode `(deleted)`; `swaplab stale` flags D each time. Once each handle is closed (the reference count balanced), the next `dlopen` loads the file on disk.",
    },
    ..Finding::DEFAULTS
};

pub fn l08(lab: &mut Lab) -> Result<()> {
    for pin in [
        Pin::Needed,
        Pin::NoDeleteLink,
        Pin::NoDeleteFlag,
        Pin::SecondHandle,
        Pin::NoLoadProbe,
    ] {
        pinned_case(lab, pin)?;
    }
    Ok(())
}
