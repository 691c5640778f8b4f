//! What a tool does to a folder, as the kernel reports it (inotify): the
//! names created, deleted and renamed, in order. L15 shows with it how each
//! `ln` switches a link.

use std::path::Path;

use anyhow::{Context, Result};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

/// One change to a name in the watched folder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// `CREATE`, `DELETE`, `MOVED_FROM` or `MOVED_TO`.
    pub what: &'static str,
    pub name: String,
}

/// Runs `act` while watching folder `dir`; returns what happened to its
/// names, in the kernel's order.
pub fn events_during(dir: &Path, act: impl FnOnce() -> Result<()>) -> Result<Vec<Event>> {
    let ino =
        Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).context("inotify_init")?;
    let kinds = [
        (AddWatchFlags::IN_CREATE, "CREATE"),
        (AddWatchFlags::IN_DELETE, "DELETE"),
        (AddWatchFlags::IN_MOVED_FROM, "MOVED_FROM"),
        (AddWatchFlags::IN_MOVED_TO, "MOVED_TO"),
    ];
    let mask = kinds
        .iter()
        .fold(AddWatchFlags::empty(), |m, (k, _)| m | *k);
    ino.add_watch(dir, mask)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    act()?;
    let mut out = Vec::new();
    // The tool has exited: every event is queued already. A read that
    // would block means the queue is empty.
    loop {
        match ino.read_events() {
            Ok(batch) => {
                for e in batch {
                    let what = kinds
                        .iter()
                        .find(|(k, _)| e.mask.contains(*k))
                        .map(|(_, w)| *w);
                    if let (Some(what), Some(name)) = (what, e.name) {
                        out.push(Event {
                            what,
                            name: name.to_string_lossy().into_owned(),
                        });
                    }
                }
            }
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => return Err(e).context("reading inotify events"),
        }
    }
    Ok(out)
}
