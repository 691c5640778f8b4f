//! Which package owns a file, read from the package manager's database
//! directly: dpkg's ([`dpkg`]) or rpm's ([`rpm`]). Nothing is run: no
//! package manager, no hook, no interpreter (needrestart's local-root CVEs
//! came from running an interpreter on what a process named).
//!
//! A database belongs to a root: the host's (`/`), a chroot's or a
//! container's (as its processes see it, through `/proc/PID/root`), or one
//! named on the command line (a `dpkg --root` or `rpm --root` folder).
//! Paths are asked for as they are inside that root.

mod dpkg;
mod rpm;
mod rpm_header;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::in_root::{Reached, Root};

use schemars::JsonSchema;
use serde::Serialize;

pub use dpkg::log_time;

/// The package manager whose database named the package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    Dpkg,
    Rpm,
}

/// The package a file came from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Package {
    pub manager: Manager,
    pub name: String,
    /// `amd64`, `x86_64`, `all`, … where the database names it.
    pub arch: Option<String>,
    /// The version installed now (dpkg's `status`; rpm's
    /// `[EPOCH:]VERSION-RELEASE`).
    pub version: Option<String>,
    /// The version the process started on, when dpkg's log shows the
    /// upgrade that replaced it: the first upgrade of this package at or
    /// after the process's start.
    pub upgraded_from: Option<String>,
    /// When the version installed now was installed (rpm's install time,
    /// UTC, RFC 3339); dpkg keeps no such time.
    pub installed_at: Option<String>,
    /// Whether the version installed now went in after the process (or
    /// the top of its process tree) started, so that the process runs an
    /// earlier one: rpm's install time against the process's start, as
    /// `dnf needs-restarting` judges. rpm keeps no record of the version
    /// it replaced.
    pub installed_after_start: Option<bool>,
    /// The database the answer came from.
    pub database: PathBuf,
}

/// One file to attribute: its path inside the root, and when the process
/// that runs it started (ns since the epoch).
pub struct Asked<'a> {
    pub path: &'a Path,
    pub started_ns: i128,
}

/// What the databases of one root told.
#[derive(Default)]
pub struct Owners {
    /// The owner of each file asked that a package owns, by the index of
    /// the ask: what a package tells depends on each process's start.
    pub by_ask: BTreeMap<usize, Package>,
    /// A database found there that could not be read, and why.
    pub unread: Option<(PathBuf, String)>,
}

/// A root whose database is read. Its names are reached inside it (see
/// [`crate::in_root`]): in a chroot's or a container's root, a link to an
/// absolute path (`/var/lib/rpm` to `/usr/lib/sysimage/rpm`) leads to that
/// path in the same root, not to the host's database. The host's names
/// are used as they are (its dpkg index is cached by name). Only the
/// database's folder is reached so: the files in it are opened under that
/// folder as they are named (a list file linked elsewhere is not followed
/// inside the root).
struct DbRoot {
    path: PathBuf,
    inside: Option<Root>,
}

impl DbRoot {
    fn new(root: &Path) -> DbRoot {
        DbRoot {
            path: root.to_path_buf(),
            inside: (root != Path::new("/")).then(|| Root::new(root.to_path_buf())),
        }
    }

    /// `name` (absolute, as inside the root) as the database is read
    /// there: `None` when nothing can be reached at it.
    fn reach(&self, name: &str) -> Option<Reached> {
        match &self.inside {
            Some(root) => root.reach(Path::new(name)).ok(),
            None => Some(Reached::as_is(Path::new(name))),
        }
    }
}

/// The owners of `files` in the databases under `root`: dpkg's first,
/// then rpm's for the files dpkg does not list.
pub fn owners(root: &Path, files: &[Asked]) -> Owners {
    let root = &DbRoot::new(root);
    let mut by_ask = dpkg::owners(root, files);
    let rest: Vec<usize> = (0..files.len())
        .filter(|i| !by_ask.contains_key(i))
        .collect();
    let asks: Vec<Asked> = rest
        .iter()
        .map(|&i| Asked {
            path: files[i].path,
            started_ns: files[i].started_ns,
        })
        .collect();
    let mut unread = None;
    if !asks.is_empty() {
        match rpm::owners(root, &asks) {
            Ok(found) => by_ask.extend(found.into_iter().map(|(k, p)| (rest[k], p))),
            Err(why) => unread = Some(why),
        }
    }
    Owners { by_ask, unread }
}

/// A time in seconds since the epoch as the report writes it: UTC, RFC 3339.
pub fn utc_time(secs: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Whether `root` holds a database this module reads or names as unread.
pub fn has_database(root: &Path) -> bool {
    let root = DbRoot::new(root);
    let dpkg = root.reach("/var/lib/dpkg");
    dpkg.is_some_and(|d| d.path().is_dir()) || rpm::database_dir(&root).is_some()
}

/// The merged-`/usr` links of a root (`/lib -> usr/lib`, …): a database
/// lists a file under the name its package ships, which may be the other
/// one.
fn usr_aliases(root: &Path) -> Vec<(PathBuf, PathBuf)> {
    let Ok(entries) = fs::read_dir(root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let target = fs::read_link(e.path()).ok()?;
            let target = if target.is_absolute() {
                target
            } else {
                Path::new("/").join(target)
            };
            Some((Path::new("/").join(e.file_name()), target))
        })
        .collect()
}

/// Every name `path` may be listed under: itself, and the same file
/// through each merged-`/usr` link in either direction.
fn names_in_lists(path: &Path, aliases: &[(PathBuf, PathBuf)]) -> Vec<PathBuf> {
    let mut names = vec![path.to_path_buf()];
    for (link, target) in aliases {
        if let Ok(rest) = path.strip_prefix(target) {
            names.push(link.join(rest));
        } else if let Ok(rest) = path.strip_prefix(link) {
            names.push(target.join(rest));
        }
    }
    names
}
