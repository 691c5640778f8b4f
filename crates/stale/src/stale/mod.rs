//! `swaplab stale`: which running processes run code that is no longer what
//! is on disk, and how to restart them.
//!
//! For every process it may read (or those chosen by pid, user, or a pattern
//! on the command), the detector takes the executable and every mapped file
//! with an executable mapping (the code the process runs) from
//! `/proc/PID/maps`, and compares each with what its path names now, as the
//! process itself would see it (its mount namespace, through
//! `/proc/PID/root`):
//!
//! | what it sees | verdict | restart |
//! |---|---|---|
//! | the path names nothing | removed | required |
//! | the path names another device/inode (the mapping is usually ` (deleted)`) and the content differs | replaced | required |
//! | the same, with the same ELF build-id (or, without one, the same bytes) | reinstalled, same content | optional |
//! | the same inode, but its `PT_LOAD` segments no longer match the mappings | modified in place (the `cp` case of L11: the next call may crash) | required |
//! | the same inode, its content written (mtime) after the process started, by more than the start time's resolution | modified in place | required |
//!
//! The in-place checks know what they can: the segment check needs no clock,
//! and catches every write that moves or shortens the code. A write that
//! keeps the layout (L11's `dd conv=notrunc`) shows only in the inode's
//! modification time, which is compared with the process's start time: that is a
//! clock comparison, with the start time known to one clock tick (10 ms),
//! and it trusts that the wall clock did not jump in between. A file created
//! after the process started and then mapped (a `dlopen` of a new file) is
//! not counted as changed: the change must come after the file's birth time
//! by more than the time its installer may take to write it
//! ([`INSTALL_WRITE_NS`]), or the file must be older than the process.
//! Where the filesystem keeps no birth time (tmpfs on Debian 11's 5.10,
//! measured by `matrix --kernel`), a file written after the start with its
//! layout unchanged is not judged (counted unchecked): it may as well have
//! been installed after the start and mapped since.
//!
//! A process run by an interpreter (python, perl, ruby, node, a shell) is
//! also judged on the script its command line names (see [`scripts`](crate::scripts)):
//! replaced when the interpreter's open descriptor on it holds another
//! file than the path, or, once it closed it, when the file at the path was
//! born after the process started; modified when written (mtime) after
//! the start; removed when nothing is at the path and the interpreter
//! still holds it. The modules a script imports are not mapped and not
//! seen; compiled extension modules are mapped, and checked as libraries.
//!
//! Not reported, and counted in the summary instead:
//! - pseudo-files, which have no file on disk to compare with: memfd
//!   (`/memfd:… (deleted)`: JIT code, sealed executables), SysV shared
//!   memory (`/SYSV…`), anything under `/dev` (a shared mapping of `/dev/zero`,
//!   `(deleted)` on older kernels; `/dev/shm` holds POSIX shared memory),
//!   huge pages (`/anon_hugepage`) and `[aio]` rings;
//! - anonymous mappings (heap, stacks, `[vdso]`), which are not files;
//! - files mapped without execute permission (data, locale archives,
//!   caches): the process does not run them.
//!
//! Processes whose maps it may not read (another user's, unless root) are
//! counted and named, never dropped silently.

mod judge;
mod parents;
mod process;
mod reads;
mod scan;
mod scanner;
mod stat;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use procfs::process::Process;
use regex::Regex;

// What judge.rs, which adds to the scanner, reaches as `super::…`.
use process::inside_root;
use scanner::{clock_ns, Map, Scanner};

pub use crate::report::{
    Excluded, FileId, Group, GroupKind, Identity, Marks, Reason, Restart, Role, StaleFile,
    StaleProcess, StaleReport, UncheckedFile, UncheckedProcess, Unjudged, Unread, Unreadable,
    Urgency, PLAIN,
};
pub use crate::text::{render, render_plan, summary};
pub use reads::reads_only;
pub use scan::scan;

/// How long an installer (`install`, a package manager) may take between
/// creating a file and its last write: a file born after the process
/// started counts as modified in place only if written later than this
/// after its birth. Seen here: with a margin of one clock tick (10 ms), a
/// library that `install` had just written, on a 2-core machine busy with
/// other work, was flagged as modified in place (L07 on musl, whose
/// process maps the new file).
pub const INSTALL_WRITE_NS: i128 = 1_000_000_000;

/// Which processes to look at. Empty means every process.
#[derive(Clone, Debug, Default)]
pub struct ScanOptions {
    pub pids: Vec<i32>,
    pub user: Option<u32>,
    /// Matched against the command name and the command line.
    pub pattern: Option<Regex>,
    /// Folders that hold a dpkg database of their own (`dpkg --root`): a
    /// flagged file under one is attributed from that database, by its
    /// path inside the folder.
    pub package_roots: Vec<PathBuf>,
    /// Leave the package databases unread.
    pub skip_packages: bool,
    /// Processes to leave out (`--exclude`), counted in
    /// [`StaleReport::excluded_processes`].
    pub exclude: Vec<crate::exclude::Exclusion>,
}

/// Waits until process `pid` has run longer than the detector's time
/// resolution (two clock ticks of its start time) plus a margin, and an
/// installer's writing time ([`INSTALL_WRITE_NS`]), so that a write made
/// afterwards is measurably after the start, and after the birth of a file
/// born with the process. The margin covers
/// the file times' coarse clock, which lags the real time by a jiffy and,
/// on a busy virtual machine whose timer interrupts come late, by more:
/// one musl L11 run here saw a write two ticks after the start go
/// unflagged.
pub fn wait_until_measurably_started(pid: i32, deadline: Duration) -> Result<()> {
    const MARGIN_NS: i128 = 50_000_000;
    let tick = 1_000_000_000 / procfs::ticks_per_second().max(1) as i128;
    let stat = Process::new(pid)
        .and_then(|p| p.stat())
        .with_context(|| format!("cannot read /proc/{pid}/stat"))?;
    let start = stat.starttime as i128 * tick;
    let until = Instant::now() + deadline;
    // A file born in the tick the process started in may be younger than
    // the process by that tick's measure: its write must also come more
    // than an installer's writing time after its birth.
    let enough = start + 2 * tick + MARGIN_NS + INSTALL_WRITE_NS;
    while clock_ns(nix::time::ClockId::CLOCK_BOOTTIME) <= enough {
        if Instant::now() >= until {
            anyhow::bail!(
                "process {pid} did not age two clock ticks and {INSTALL_WRITE_NS} ns within {deadline:?}"
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}
