//! L13: an unprivileged user cannot read another user's maps.

use std::os::unix::process::CommandExt;

use anyhow::{Context, Result};

use crate::harness::finding::{Finding, Need, Scope, Lesson};
use crate::harness::map_checks::describe;
use crate::harness::lab::{vol, Lab};
use crate::harness::process::Program;
use crate::harness::replace::Replace;
use crate::harness::variants::Variant::*;
use crate::findings::SHARED_LIBRARY_UPDATE;
use crate::targets::protocol::Command;

pub static L13: Finding = Finding {
    id: "L13",
    slug: "an_unprivileged_user_cannot_read_another_users_maps",
    claim: "An unprivileged user cannot read `/proc/PID/maps` of another user's process (why the article uses `sudo grep`); its own processes it can.",
    source: SHARED_LIBRARY_UPDATE,
    steps: &[
        "as root, start A; start U as an unprivileged user",
        "U reads /proc/A/maps (another user's) and /proc/U/maps (its own)",
        "root reads both",
    ],
    experiment: l13,
    scope: Scope::AnyLibc,
    needs: &[
        Need::Root("it starts a process as a second, unprivileged user"),
        Need::SecondUser,
        Need::Filesystem,
    ],
    lesson: Lesson {
        title: "Another user's maps",
        question: "The article runs `sudo grep … /proc/*/maps`. What can an unprivileged user see?",
        exercise: "Which pid token is A's (root's) and which U's (the unprivileged user's)? What did U's `peek` answer for each, and what could root read?",
        answer: "A is `[PID-1]`, U is `[PID-2]`. U's `peek [PID-1]` is denied (Permission Denied on `/proc/[PID-1]/maps`), while `peek [PID-2]`, its own process, reads its mappings. Root reads both processes' maps. That is why the article runs `sudo grep`: unprivileged, a detector sees only its own user's processes.",
    },
    ..Finding::DEFAULTS
};

pub fn l13(lab: &mut Lab) -> Result<()> {
    // Root and the second user are L13's declared needs, checked before.
    let user = crate::harness::finding::second_user().context("L13 needs a second user")?;
    lab.sandbox.open_to_all()?;
    lab.put_lib(V1, Replace::Install)?;
    let a = lab.start(Program::Plain, "A")?;
    let (uid, gid) = (user.uid, user.gid);
    let name = user.name.clone();
    let mut u = lab.start_with(Program::Plain, "U", &[], move |cmd| {
        cmd.uid(uid.as_raw()).gid(gid.as_raw());
        format!("sudo -u {}", vol(&name))
    })?;
    lab.observe("user", &user.name);
    lab.note(format!("U runs as {}; A as root", vol(&user.name)));
    let other = lab.ask(&mut u, Command::Peek(a.pid()))?;
    let own_pid = u.pid();
    let own = lab.ask(&mut u, Command::Peek(own_pid))?;
    lab.note("root reads both");
    let ma = lab.maps(a.pid())?;
    let mu = lab.maps(u.pid())?;
    lab.observe("unprivileged_reads_other", &other);
    lab.observe("unprivileged_reads_own", &own);
    lab.check(
        "the unprivileged user cannot read /proc/PID/maps of root's process",
        other.contains(" denied: "),
        &other,
    );
    lab.check(
        "the unprivileged user reads the maps of its own process",
        own.contains(" ok "),
        &own,
    );
    lab.check(
        "root reads both processes' maps",
        !ma.is_empty() && !mu.is_empty(),
        format!("A: {}, U: {}", describe(&ma), describe(&mu)),
    );
    Ok(())
}
