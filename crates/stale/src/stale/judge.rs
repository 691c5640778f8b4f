//! One mapped file of one process, judged: where its name is now, whether
//! the path still holds it (see [`crate::identity`]), and if so
//! whether it was rewritten in place; else whether the new file has the
//! same content.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{inside_root, Map, Scanner, INSTALL_WRITE_NS};
use crate::elf::{self, Where};
use crate::identity::{self, Ask, Facts, Holds};
use crate::in_root::{Reached, Root};
use crate::maps;
use crate::mounts::Mounts;
use crate::regular;
use crate::report::{FileId, Identity, Reason, Role, StaleFile, UncheckedFile, Unjudged, Urgency};
use crate::scripts::Script;

/// What a path names now (cached per path for processes that share the
/// scanner's mount namespace).
#[derive(Clone)]
pub(super) enum OnDisk {
    File(Facts),
    Missing,
    Unreadable,
}

pub(super) fn on_disk(p: &Path) -> OnDisk {
    state_of(identity::facts(p).as_ref())
}

/// What a lookup's answer says of the name.
pub(super) fn state_of(found: Result<&Facts, &std::io::Error>) -> OnDisk {
    match found {
        Ok(f) => OnDisk::File(*f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => OnDisk::Missing,
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => OnDisk::Missing,
        Err(_) => OnDisk::Unreadable,
    }
}

/// `path`, reached (see [`in_root`]), and what it names now; a name that
/// could not be reached is shown as `shown`.
fn reached_state(reached: std::io::Result<Reached>, shown: &Path) -> (Reached, OnDisk) {
    match reached {
        Ok(r) => {
            let state = on_disk(r.path());
            (r, state)
        }
        Err(e) => (Reached::as_is(shown), state_of(Err(&e))),
    }
}

/// How two contents compared.
#[derive(Clone, Debug)]
pub(super) enum Compared {
    Same(String),
    Differ(String),
    Unknown(String),
}

/// What became of one file.
pub(super) enum Judged {
    Current,
    Stale(Box<StaleFile>),
    Unchecked(UncheckedFile),
}

/// When a file was written (or changed), against a process's start.
enum Written {
    /// Not measurably after the start.
    Before,
    /// This long after the start, by more than its resolution.
    After(i128),
    /// After the start, but born after it too and within an installer's
    /// writing time of its birth: the install itself, maybe.
    JustAfterBirth,
    /// After the start, on a filesystem that keeps no birth time.
    Unborn,
}

pub(super) struct FileCtx<'a> {
    pub pid: i32,
    /// The process's folder in /proc (a live thread's, when the main
    /// thread has exited).
    pub dir: &'a Path,
    pub role: Role,
    /// What the printed name may stand for.
    pub readings: &'a [maps::Reading],
    pub mapped: FileId,
    /// The mappings of the loaded image only (see [`super::scanner::loaded_image`]).
    pub maps: &'a [Map],
    pub own_ns: bool,
    /// `/proc/PID/root`'s link, for a process in another mount namespace.
    pub root_link: Option<&'a Path>,
    pub start_ns: i128,
    /// The mounts of the process's mount namespace, read when first asked
    /// for.
    pub mounts: &'a dyn Fn() -> Arc<Mounts>,
    /// Its root, where names are looked up for a process in another
    /// mount namespace (opened when first used).
    pub root: &'a Root,
}

impl FileCtx<'_> {
    /// `/proc/PID/map_files/` of the image's first mapping.
    fn map_file(&self) -> PathBuf {
        let (start, end) = self.maps.first().map_or((0, 0), |m| (m.start, m.end));
        PathBuf::from(format!("/proc/{}/map_files/{start:x}-{end:x}", self.pid))
    }
}

/// Where [`Scanner::locate`] found the mapped file's name.
struct Located {
    /// The name as the process knows it.
    path: PathBuf,
    /// The same name as the scanner reaches it.
    real: Reached,
    state: OnDisk,
    /// Whether the path holds the mapped file, and which identity said.
    holds: Holds,
    /// Whether the name was unlinked from the mapped file.
    deleted: bool,
    /// How that was told, when the file is not at its name.
    unlinked_by: Option<String>,
    /// The mapped file's links, where `/proc/PID/map_files` tells (root).
    links: Option<u64>,
}

impl Scanner {
    /// Where the process itself would find `path`: the same path when it
    /// shares the scanner's mount namespace (maps show paths from the
    /// reader's root), else through `/proc/PID/root`.
    fn resolve(&mut self, ctx: &FileCtx, path: &Path) -> (Reached, OnDisk) {
        if ctx.own_ns {
            let state = match self.paths.get(path) {
                Some(known) => known.clone(),
                None => {
                    let state = on_disk(path);
                    self.paths.insert(path.to_path_buf(), state.clone());
                    state
                }
            };
            return (Reached::as_is(path), state);
        }
        match inside(ctx, path) {
            None => (Reached::as_is(&ctx.dir.join("root")), OnDisk::Unreadable),
            Some(name) => {
                let shown = ctx
                    .dir
                    .join("root")
                    .join(name.strip_prefix("/").unwrap_or(&name));
                reached_state(ctx.root.reach(&name), &shown)
            }
        }
    }

    /// The name the mapped file went by, what that name holds now, and
    /// whether that is the mapped file. A reading of the printed name that
    /// holds it settles it: the file is current there, whatever its name
    /// ends with, unless the name ends with the kernel's ` (deleted)` mark
    /// and the name without it holds another file: then a link named like
    /// the mark (a hard link to the old file, made by anyone) would hide
    /// a replacement, and the kernel's meaning is taken. Otherwise the file
    /// is at none of them: its name was unlinked (the kernel's mark,
    /// confirmed by the link count of the mapped file itself where
    /// `/proc/PID/map_files` is readable, that is as root), and that name
    /// is compared with what it holds now.
    fn locate(&mut self, ctx: &FileCtx) -> Located {
        let mut states = Vec::with_capacity(ctx.readings.len());
        for r in ctx.readings {
            let (real, state) = self.resolve(ctx, &r.path);
            let holds = match &state {
                OnDisk::File(f) => identity::holds(&Ask {
                    mapped: ctx.mapped,
                    path: f,
                    named: &r.path,
                    mounts: ctx.mounts,
                    map_file: &|| ctx.map_file(),
                    stat: &|p: &Path| stat_as_seen(ctx, p),
                }),
                _ => Holds::Other(Identity::None),
            };
            states.push((real, state, holds));
        }
        let other_at_twin = |i: usize| {
            ctx.readings.get(i + 1).is_some_and(|twin| twin.unlinked)
                && matches!(states[i + 1], (_, OnDisk::File(_), Holds::Other(_)))
        };
        // A literal reading with the mark, whose twin without it holds
        // another file, does not count.
        let hidden = |i: usize| !ctx.readings[i].unlinked && other_at_twin(i);
        let current =
            (0..states.len()).find(|&i| matches!(states[i].2, Holds::Same(_)) && !hidden(i));
        if let Some(i) = current {
            let (real, state, holds) = states.swap_remove(i);
            return Located {
                path: ctx.readings[i].path.clone(),
                real,
                state,
                holds,
                deleted: false,
                unlinked_by: None,
                links: None,
            };
        }
        let nothing_at_any = states
            .iter()
            .all(|(_, st, _)| matches!(st, OnDisk::Missing));
        if nothing_at_any {
            let seen = identity::through_layer(
                &(ctx.mounts)(),
                &ctx.readings[0].path,
                ctx.mapped,
                &|p: &Path| stat_as_seen(ctx, p),
            );
            if let Some(found) = seen {
                return self.locate_at(ctx, found);
            }
        }
        let links = self.links_of(ctx);
        let pick = ctx.readings.iter().position(|r| r.unlinked).unwrap_or(0);
        let unlinked = ctx.readings[pick].unlinked;
        let (deleted, how) = match links {
            Some(0) => (true, "map_files: the mapped file has no link left".to_string()),
            Some(n) => (
                unlinked,
                format!("map_files: the mapped file has {n} links, none at this name"),
            ),
            None => (
                unlinked,
                "maps text checked with stat (map_files is root's): no reading of the name holds the mapped inode".to_string(),
            ),
        };
        let (real, state, holds) = states.swap_remove(pick);
        Located {
            path: ctx.readings[pick].path.clone(),
            real,
            state,
            holds,
            deleted,
            unlinked_by: Some(how),
            links,
        }
    }

    /// The mapped file's link count, where `/proc/PID/map_files` tells
    /// (root). Asked once per file among the processes of the scanner's
    /// mount namespace: there the name maps prints and the device and
    /// inode together tell one file (a device and inode alone do not:
    /// btrfs snapshots share the device maps names and repeat inodes).
    fn links_of(&mut self, ctx: &FileCtx) -> Option<u64> {
        let key = ctx
            .own_ns
            .then(|| (ctx.mapped, ctx.readings[0].path.clone()));
        if let Some(&n) = key.as_ref().and_then(|k| self.links.get(k)) {
            return Some(n);
        }
        ctx.maps.first()?;
        let n = std::fs::metadata(ctx.map_file()).ok()?.nlink();
        if let Some(k) = key {
            self.links.insert(k, n);
        }
        Some(n)
    }

    /// The mapped file found under an overlay's mount point (see
    /// [`identity::through_layer`]), which says whether that path still shows
    /// it.
    fn locate_at(&mut self, ctx: &FileCtx, (path, holds): (PathBuf, Holds)) -> Located {
        let (real, state) = self.resolve(ctx, &path);
        Located {
            path,
            real,
            state,
            holds,
            deleted: false,
            unlinked_by: Some(
                "overlay layer: maps names the file from its layer's own mount".into(),
            ),
            links: None,
        }
    }

    pub(super) fn check(&mut self, ctx: &FileCtx) -> Judged {
        let at = self.locate(ctx);
        let identity = match at.holds {
            Holds::Same(i) | Holds::Other(i) => i,
            Holds::Unknown => Identity::None,
        };
        let file = |reason: Reason, need, on_disk, evidence: String, detail: String| {
            Judged::Stale(Box::new(StaleFile {
                path: at.path.clone(),
                role: ctx.role,
                reason,
                need,
                mapped: ctx.mapped,
                deleted: at.deleted,
                on_disk,
                evidence: match &at.unlinked_by {
                    Some(how) => format!("{evidence}; identity: {how}"),
                    None => evidence,
                },
                detail,
                package: None,
                path_in_maps: None,
                identity,
                address: ctx.maps.first().map_or(0, |m| m.start),
            }))
        };
        let unchecked = |reason: Unjudged, detail: String| {
            Judged::Unchecked(UncheckedFile {
                path: at.path.clone(),
                role: ctx.role,
                reason,
                detail,
            })
        };
        let marked = if at.deleted {
            "the mapping is (deleted)"
        } else {
            "the mapping is not marked (deleted)"
        };
        let facts = match (&at.state, at.holds) {
            (OnDisk::Unreadable, _) => {
                return unchecked(
                    Unjudged::StatRefused,
                    format!("stat of {} was refused", at.real.shown().display()),
                )
            }
            // Not unlinked (the kernel marks an unlinked name, and a renamed
            // file shows its new name), yet its name reaches nothing from
            // the process's root: the kernel named it from a mount the
            // process cannot see (a layer of a nested overlay).
            (OnDisk::Missing, _) if !at.deleted => {
                return unchecked(
                    Unjudged::NoIdentity,
                    format!(
                        "the mapping is not marked (deleted){}, but its name reaches nothing from the process's root: the kernel names it from a mount the process cannot see (a layer of a nested overlay)",
                        at.links.map_or(String::new(), |n| format!(" and the file has {n} links"))
                    ),
                )
            }
            (OnDisk::Missing, _) => {
                return file(
                    Reason::Removed,
                    Urgency::Required,
                    None,
                    "path".into(),
                    format!("{marked}; nothing is at the path now"),
                )
            }
            (OnDisk::File(f), Holds::Unknown) => {
                return unchecked(
                    Unjudged::NoIdentity,
                    format!(
                        "maps names device {}:{} inode={}, stat of the path device {}:{} inode={}, and no mount, layer or map_files ties them",
                        ctx.mapped.major, ctx.mapped.minor, ctx.mapped.inode, f.id.major, f.id.minor, f.id.inode
                    ),
                )
            }
            (OnDisk::File(f), Holds::Other(_)) => *f,
            (OnDisk::File(f), Holds::Same(_)) => {
                return self.check_current(ctx, (&at.path, at.real.path()), f, identity)
            }
        };
        let how = self.compare(ctx, at.real.path(), facts.id, facts.ctime_ns);
        let (reason, need, evidence, what) = match how {
            Compared::Same(by) => (
                Reason::Reinstalled,
                Urgency::Optional,
                by.clone(),
                format!("the same content ({by})"),
            ),
            Compared::Differ(by) => (
                Reason::Replaced,
                Urgency::Required,
                by.clone(),
                format!("another content ({by})"),
            ),
            Compared::Unknown(why) => (
                Reason::Replaced,
                Urgency::Required,
                format!("not compared: {why}"),
                format!("content not compared: {why}"),
            ),
        };
        file(
            reason,
            need,
            Some(facts.id),
            evidence,
            format!(
                "{marked}; mapped inode={}, the path names inode={}: {what}",
                ctx.mapped.inode, facts.id.inode
            ),
        )
    }

    /// Judges a file the path still holds: rewritten in place when its
    /// segments no longer match the mappings (no clock needed), when its
    /// content was written (mtime) after the process started, or when its
    /// inode changed (ctime) after the start while its mtime says earlier:
    /// `cp -p`, `cp -a` and `rsync -a --inplace` write the bytes and set the
    /// old mtime back, and nobody can set a ctime back. The bytes the
    /// process loaded cannot be compared with the new ones: a private file
    /// mapping shares the page cache, which holds only the new. So a ctime
    /// moved by a chmod or a chown is flagged too, and the detail says so;
    /// a file with other links is not judged by its ctime (a link made or
    /// removed moves it: ostree deployments, `cp -al` backups).
    fn check_current(
        &mut self,
        ctx: &FileCtx,
        (path, real): (&Path, &Path),
        f: &Facts,
        identity: Identity,
    ) -> Judged {
        let stale = |evidence: &str, detail: String| {
            Judged::Stale(Box::new(StaleFile {
                path: path.to_path_buf(),
                role: ctx.role,
                reason: Reason::ModifiedInPlace,
                need: Urgency::Required,
                mapped: ctx.mapped,
                deleted: false,
                on_disk: Some(f.id),
                evidence: evidence.into(),
                detail,
                package: None,
                path_in_maps: None,
                identity,
                address: ctx.maps.first().map_or(0, |m| m.start),
            }))
        };
        let unjudged = |w: Written, what: &str| unjudged(ctx.role, path, w, what);
        if let Some(why) = self.segments_differ(ctx, real, f) {
            stale(
                "segments",
                format!(
                    "same inode={}, rewritten: {why} (its next call into it may crash, L11)",
                    f.id.inode
                ),
            )
        } else {
            match self.written(ctx.start_ns, f.mtime_ns, f.btime_ns) {
                Written::After(ns) => stale(
                    "mtime",
                    format!(
                        "same inode={}, written (mtime) {} ms after the process started",
                        f.id.inode,
                        ns / 1_000_000
                    ),
                ),
                // A file born after the start (by more than the start's
                // tick) had its ctime moved by its own install (dpkg sets the
                // package's mtime, then renames).
                Written::Before if f.btime_ns.is_some_and(|b| b - ctx.start_ns > self.tick_ns) => {
                    Judged::Current
                }
                Written::Before => match self.written(ctx.start_ns, f.ctime_ns, f.btime_ns) {
                    Written::After(ns) if f.nlink > 1 => Judged::Unchecked(UncheckedFile {
                        path: path.to_path_buf(),
                        role: ctx.role,
                        reason: Unjudged::ChangedWithLinks,
                        detail: format!(
                            "same inode={}, changed (ctime) {} ms after the process started while its mtime is older, and it has {} links: a link made or removed moves the ctime as a rewrite with its old mtime set back does, and the bytes it loaded cannot be compared",
                            f.id.inode,
                            ns / 1_000_000,
                            f.nlink
                        ),
                    }),
                    Written::After(ns) => stale(
                        "ctime",
                        format!(
                            "same inode={}, changed (ctime) {} ms after the process started while its mtime is older: rewritten with its old mtime set back (cp -p, cp -a, rsync -a --inplace), or its mode or owner changed; the bytes it loaded are gone from the page cache and cannot be compared",
                            f.id.inode,
                            ns / 1_000_000
                        ),
                    ),
                    Written::Before => Judged::Current,
                    other => unjudged(other, "changed (ctime)"),
                },
                other => unjudged(other, "written (mtime)"),
            }
        }
    }

    /// When a file was written (`at_ns`: its mtime or ctime) against a
    /// process's start (`start_ns`, known to one tick): measurably after
    /// it by more than the tick, to a file that existed before the process
    /// or was written well after it was made (an installer's own writing
    /// is no change).
    fn written(&self, start_ns: i128, at_ns: i128, btime_ns: Option<i128>) -> Written {
        let after = at_ns - start_ns;
        if after <= self.tick_ns {
            return Written::Before;
        }
        match btime_ns {
            None => Written::Unborn,
            Some(b) if b < start_ns || at_ns - b > INSTALL_WRITE_NS => Written::After(after),
            Some(_) => Written::JustAfterBirth,
        }
    }
}

/// A file the path holds whose write after the start could not be judged.
fn unjudged(role: Role, path: &Path, w: Written, what: &str) -> Judged {
    let (reason, detail) = match w {
        Written::Unborn => (
            Unjudged::NoBirthTime,
            format!("{what} after the process started, on a filesystem without birth times: it may as well have been installed after the start and mapped since"),
        ),
        _ => (
            Unjudged::WrittenJustAfterBirth,
            format!("born after the process started and {what} within {} ms of its birth: the write may be its install", INSTALL_WRITE_NS / 1_000_000),
        ),
    };
    Judged::Unchecked(UncheckedFile {
        path: path.to_path_buf(),
        role,
        reason,
        detail,
    })
}

/// `path` as process `ctx` names it, from its own root: a chroot's
/// folder taken off in front. A process that chrooted inside its
/// namespace after it loaded its libraries maps files outside its root:
/// nothing reaches them from here (`None`), and they are not called
/// removed.
fn inside(ctx: &FileCtx, path: &Path) -> Option<PathBuf> {
    match ctx.root_link {
        Some(r) if r != Path::new("/") => inside_root(path, r),
        _ => Some(path.to_path_buf()),
    }
}

/// The facts of `path` as process `ctx` sees it: itself in the scanner's
/// mount namespace, else looked up inside the process's root (see
/// [`in_root`]); a name outside that root is looked up as it is.
fn stat_as_seen(ctx: &FileCtx, path: &Path) -> std::io::Result<Facts> {
    if ctx.own_ns {
        return identity::facts(path);
    }
    match inside(ctx, path) {
        Some(name) => identity::facts(ctx.root.reach(&name)?.path()),
        None => identity::facts(path),
    }
}

impl Scanner {
    /// Judges the script an interpreter runs. Where the interpreter still
    /// reads it from a descriptor, that file is compared with the one at
    /// the path (device and inode); where it does not (it read the script
    /// and closed it), the file at the path must be older than the
    /// process (its birth time, more than the start's tick after the
    /// start: replaced) and unwritten since (its mtime, as for libraries:
    /// modified).
    pub(super) fn check_script(&mut self, script: &Script, start_ns: i128) -> Judged {
        let held = script.held.as_ref().map(|h| (h.fd, FileId::of(&h.file)));
        let read_from = match held {
            Some((fd, _)) => format!("the interpreter reads it from fd {fd}"),
            None => "the interpreter holds it open no more".to_string(),
        };
        let file = |reason, on_disk: Option<FileId>, evidence: String, what: String| {
            let Some(mapped) = held.map(|(_, id)| id).or(on_disk) else {
                return Judged::Current;
            };
            Judged::Stale(Box::new(StaleFile {
                path: script.path.clone(),
                role: Role::Script,
                reason,
                need: Urgency::Required,
                mapped,
                deleted: script.held.as_ref().is_some_and(|h| h.file.nlink() == 0),
                on_disk,
                evidence,
                detail: format!("{read_from}; {what}"),
                package: None,
                path_in_maps: None,
                identity: Identity::Script,
                address: 0,
            }))
        };
        let unchecked = |reason, detail: String| {
            Judged::Unchecked(UncheckedFile {
                path: script.path.clone(),
                role: Role::Script,
                reason,
                detail,
            })
        };
        match state_of(script.now.as_ref()) {
            OnDisk::Unreadable => unchecked(
                Unjudged::StatRefused,
                format!("stat of {} was refused", script.real.display()),
            ),
            // Without a descriptor, a name relative to a directory the
            // process has left may name nothing: no evidence of removal.
            OnDisk::Missing => match held {
                Some((fd, id)) => file(
                    Reason::ScriptRemoved,
                    None,
                    format!("fd {fd}"),
                    format!("it holds inode={}, nothing is at the path now", id.inode),
                ),
                None => Judged::Current,
            },
            OnDisk::File(f) if held.is_some_and(|(_, h)| h != f.id) => {
                let Some((fd, was)) = held else {
                    return Judged::Current;
                };
                file(
                    Reason::ScriptReplaced,
                    Some(f.id),
                    format!("fd {fd}"),
                    format!(
                        "it holds inode={}, the path names inode={}",
                        was.inode, f.id.inode
                    ),
                )
            }
            OnDisk::File(f) => {
                if let Some(born) = f.btime_ns.filter(|b| b - start_ns > self.tick_ns) {
                    return file(
                        Reason::ScriptReplaced,
                        Some(f.id),
                        "btime".into(),
                        format!(
                            "the path names inode={}, born {} ms after the process started",
                            f.id.inode,
                            (born - start_ns) / 1_000_000
                        ),
                    );
                }
                match self.written(start_ns, f.mtime_ns, f.btime_ns) {
                    Written::Before => Judged::Current,
                    Written::After(ns) => file(
                        Reason::ScriptModified,
                        Some(f.id),
                        "mtime".into(),
                        format!(
                            "inode={}, written (mtime) {} ms after the process started",
                            f.id.inode,
                            ns / 1_000_000
                        ),
                    ),
                    Written::Unborn => unchecked(
                        Unjudged::NoBirthTime,
                        "written (mtime) after the process started, on a filesystem without birth times".into(),
                    ),
                    Written::JustAfterBirth => unchecked(
                        Unjudged::WrittenJustAfterBirth,
                        "born and written just after the process started".into(),
                    ),
                }
            }
        }
    }

    /// Whether the ELF segments of the file now on disk still match the
    /// process's mappings of it; `Some(what differs)` when they do not. The
    /// size comes first: a file cut short (a killed `cp`, a full disk) has
    /// no ELF headers left to read, and is still a rewrite.
    fn segments_differ(&mut self, ctx: &FileCtx, real: &Path, f: &Facts) -> Option<String> {
        let (id, size) = (f.id, f.size);
        let page = self.page;
        let down = |v: u64| v & !(page - 1);
        let up = |v: u64| (v + page - 1) & !(page - 1);
        for m in ctx.maps {
            let len = m.end - m.start;
            if m.offset + len > up(size) {
                return Some(format!(
                    "the file is now {size} bytes, shorter than the mapping of offset {:#x}+{len:#x}",
                    m.offset
                ));
            }
        }
        // A file that is no ELF image (a JIT's cache mapped executable)
        // has no segments to compare.
        // Borrowed, not cloned: every process on a library asks again.
        let loads = self
            .segments
            .entry((id, f.ctime_ns, size))
            .or_insert_with(|| {
                regular::open(real)
                    .ok()
                    .and_then(|file| elf::read(&file, Where::File))
                    .map(|e| e.loads)
            })
            .as_deref()?;
        let first = ctx.maps.iter().find(|m| m.offset == 0)?;
        let seg0 = loads.iter().find(|s| s.offset == 0)?;
        let base = first.start.wrapping_sub(down(seg0.vaddr));
        for m in ctx.maps {
            let len = m.end - m.start;
            let rel = m.start.wrapping_sub(base);
            // The loader maps the whole image from the first segment, then
            // makes the holes between segments inaccessible: such a hole
            // (`---p`, at the offset that first mapping gave it) holds
            // nothing the process runs or reads.
            let hole = m.perms.starts_with(b"---")
                && m.offset.wrapping_sub(down(seg0.offset)) == rel.wrapping_sub(down(seg0.vaddr));
            if hole {
                continue;
            }
            let fits = loads.iter().any(|s| {
                let (lo, hi) = (down(s.vaddr), up(s.vaddr + s.memsz));
                let r = &m.perms;
                rel >= lo
                    && rel + len <= hi
                    && m.offset.wrapping_sub(down(s.offset)) == rel - lo
                    && (r[2] == b'x') == s.executable()
                    && (r[0] == b'r') == s.readable()
                    && (r[1] != b'w' || s.writable())
            });
            if !fits {
                return Some(format!(
                    "no segment of the file now maps offset {:#x} at {:#x} {}",
                    m.offset,
                    rel,
                    String::from_utf8_lossy(&m.perms[..3])
                ));
            }
        }
        None
    }

    /// Compares the content the process maps with the file at `real`.
    fn compare(&mut self, ctx: &FileCtx, real: &Path, now: FileId, ctime_ns: i128) -> Compared {
        let key = (ctx.mapped, now, ctime_ns);
        if let Some(c) = self.compared.get(&key) {
            return c.clone();
        }
        let c = compare_contents(ctx, real);
        self.compared.insert(key, c.clone());
        c
    }
}

/// The old content: the mapped file itself through `/proc/PID/map_files`
/// (root only), or `/proc/PID/exe` for the executable; failing both, the
/// process's memory, which holds the build-id note but not the whole file.
fn compare_contents(ctx: &FileCtx, real: &Path) -> Compared {
    let Ok(new) = regular::open(real) else {
        return Compared::Unknown("the file on disk cannot be opened".into());
    };
    let first = ctx.maps.iter().find(|m| m.offset == 0).or(ctx.maps.first());
    let Some(first) = first else {
        return Compared::Unknown("no mapping".into());
    };
    let old_file = File::open(format!(
        "/proc/{}/map_files/{:x}-{:x}",
        ctx.pid, first.start, first.end
    ))
    .ok()
    .or_else(|| {
        (ctx.role == Role::Executable)
            .then(|| File::open(ctx.dir.join("exe")).ok())
            .flatten()
    });
    let new_elf = elf::read(&new, Where::File);
    let old_elf = match &old_file {
        Some(f) => elf::read(f, Where::File),
        None if first.offset == 0 => File::open(ctx.dir.join("mem")).ok().and_then(|m| {
            elf::read(
                &m,
                Where::Memory {
                    header_at: first.start,
                },
            )
        }),
        None => None,
    };
    let ids = (
        old_elf.as_ref().and_then(|e| e.build_id.clone()),
        new_elf.as_ref().and_then(|e| e.build_id.clone()),
    );
    if let (Some(a), Some(b)) = &ids {
        return if a == b {
            Compared::Same(format!("build-id={}", elf::hex(a)))
        } else {
            Compared::Differ(format!(
                "build-id={} -> build-id={}",
                elf::hex(a),
                elf::hex(b)
            ))
        };
    }
    match old_file {
        Some(old) => match same_bytes(&old, &new) {
            Ok(true) => Compared::Same("same bytes".into()),
            Ok(false) => Compared::Differ("other bytes".into()),
            Err(e) => Compared::Unknown(format!("reading failed: {e}")),
        },
        None => Compared::Unknown(
            "no build-id, and the old file is readable only by root (/proc/PID/map_files)".into(),
        ),
    }
}

fn same_bytes(a: &File, b: &File) -> std::io::Result<bool> {
    use std::io::Read;
    if a.metadata()?.len() != b.metadata()?.len() {
        return Ok(false);
    }
    let (mut ra, mut rb) = (std::io::BufReader::new(a), std::io::BufReader::new(b));
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = ra.read(&mut ba)?;
        if n == 0 {
            let m = rb.read(&mut bb)?;
            return Ok(m == 0);
        }
        rb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}
