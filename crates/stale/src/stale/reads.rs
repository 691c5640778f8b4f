//! The per-process reads a scan makes of /proc, and nothing judged:
//! `swaplab bench stale` times them beside the scan, as the floor a scan
//! of this design cannot go below on the machine it runs on. Left out:
//! what a scan reads once per mapped file (its state on disk, its link
//! count, the mounts), cached across processes.

use std::collections::BTreeSet;

use anyhow::Result;

use super::process::{args_of, cgroup_of, proc_dir, uid_of, ProcDir};
use super::scan::on_every_core;
use super::scanner::Scanner;
use super::ScanOptions;
use crate::maps;

/// Makes the reads [`super::scan`] makes of every process /proc lists, on
/// as many threads, and of the processes in `flagged` (those a scan
/// reports) what the report shows of them; judges nothing. Returns how
/// many processes could be read.
pub fn reads_only(flagged: &BTreeSet<i32>) -> Result<usize> {
    let parts = on_every_core(&ScanOptions::default(), Scanner::new, |s, pid| {
        s.make_reads(pid, flagged)
    })?;
    Ok(parts
        .iter()
        .map(|(read, _)| read.iter().filter(|&&r| r).count())
        .sum())
}

impl Scanner {
    /// The reads [`Scanner::one`] makes of process `pid` when no option
    /// filters: its stat, its file mappings, how it sees files; for a
    /// process in `flagged`, its command line, root, cgroup and owner.
    /// Whether it could be read.
    fn make_reads(&self, pid: i32, flagged: &BTreeSet<i32>) -> bool {
        let Some(ProcDir { dir, .. }) = proc_dir(pid) else {
            return false;
        };
        let lines = match maps::read_file_lines(&dir) {
            Ok(lines) => lines,
            // Another user's: its owner is read for the report.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                std::hint::black_box(uid_of(pid));
                return true;
            }
            Err(_) => return false,
        };
        // A kernel thread: nothing more is read of it.
        if lines.is_empty() {
            return true;
        }
        let view = self.view_of(&dir);
        if flagged.contains(&pid) {
            std::hint::black_box((args_of(&dir), cgroup_of(&dir), uid_of(pid)));
            std::hint::black_box(self.name_in_root(pid, &dir, &view, &mut []));
        }
        true
    }
}
