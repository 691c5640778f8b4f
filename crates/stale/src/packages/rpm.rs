//! rpm's database, read as a file: `rpmdb.sqlite`, the default of rpm 4.16
//! and later (Fedora, RHEL 9, and Debian's own `rpm`). Its `Basenames`
//! table gives the packages that hold a file's base name; each package's
//! header (a `Packages` row) gives the full names, the version and the
//! install time. rpm keeps no record of the version an upgrade replaced:
//! what it tells is whether the version installed now went in after the
//! process started.
//!
//! What it cannot read, and says so: Berkeley DB (`Packages`, rpm before
//! 4.16) and the ndb format (`Packages.db`, openSUSE).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::rpm_header::{self as tag, Header};
use super::{names_in_lists, usr_aliases, utc_time, Asked, DbRoot, Manager, Package};
use crate::in_root::Reached;
use crate::sqlite::{Db, Value};

/// Where rpm keeps its database inside a root: Fedora 36 and later in
/// `/usr/lib/sysimage/rpm` (with `/var/lib/rpm` a link to it), else
/// `/var/lib/rpm`.
const DIRS: [&str; 2] = ["usr/lib/sysimage/rpm", "var/lib/rpm"];

/// The folder under `root` that holds an rpm database of any format.
pub(super) fn database_dir(root: &DbRoot) -> Option<Reached> {
    DIRS.iter()
        .filter_map(|d| root.reach(&format!("/{d}")))
        .find(|d| {
            ["rpmdb.sqlite", "Packages", "Packages.db"]
                .iter()
                .any(|f| d.path().join(f).is_file())
        })
}

/// The owners of `files` in the rpm database under `root`, by the index
/// of the file asked; empty when there is none. An error names the
/// database that could not be read, and why.
pub(super) fn owners(
    root: &DbRoot,
    files: &[Asked],
) -> Result<BTreeMap<usize, Package>, (PathBuf, String)> {
    let Some(dir) = database_dir(root) else {
        return Ok(BTreeMap::new());
    };
    let (sqlite, shown) = (
        dir.path().join("rpmdb.sqlite"),
        dir.shown().join("rpmdb.sqlite"),
    );
    if !sqlite.is_file() {
        let why = if dir.path().join("Packages.db").is_file() {
            "rpm's ndb format (openSUSE), which swaplab does not read"
        } else {
            "a Berkeley DB database (rpm before 4.16), which swaplab does not read"
        };
        return Err((dir.shown().to_path_buf(), why.to_string()));
    }
    // The reader's errors name the file it opened: shown as the reader
    // knows it, never as this process's descriptor.
    read(root, (&sqlite, &shown), files).map_err(|e| {
        let why = format!("{e:#}").replace(&*sqlite.to_string_lossy(), &shown.to_string_lossy());
        (shown.clone(), why)
    })
}

/// The owners of `files` in the database at `sqlite` (read there, shown
/// as `shown`).
fn read(
    root: &DbRoot,
    (sqlite, shown): (&Path, &Path),
    files: &[Asked],
) -> Result<BTreeMap<usize, Package>> {
    let db = Db::open(sqlite)?;
    let aliases = usr_aliases(&root.path);
    // Each name a file may be listed under, by its base name.
    let mut wanted: HashMap<Vec<u8>, Vec<(usize, PathBuf)>> = HashMap::new();
    for (i, f) in files.iter().enumerate() {
        for name in names_in_lists(f.path, &aliases) {
            if let Some(base) = name.file_name() {
                let base = base.as_encoded_bytes().to_vec();
                wanted.entry(base).or_default().push((i, name));
            }
        }
    }
    // (package, index in its file list) for each base name asked.
    let mut hits: BTreeSet<(i64, usize)> = BTreeSet::new();
    db.each_row(db.table_root("Basenames")?, 3, |row| {
        if let [Value::Text(key), Value::Int(hnum), Value::Int(idx), ..] = row.values.as_slice() {
            if wanted.contains_key(key) {
                hits.insert((*hnum, usize::try_from(*idx).unwrap_or(usize::MAX)));
            }
        }
        true
    })?;
    let packages = db.table_root("Packages")?;
    let mut out = BTreeMap::new();
    let hnums: BTreeSet<i64> = hits.iter().map(|(h, _)| *h).collect();
    for hnum in hnums {
        let row = db
            .row(packages, hnum, 2)?
            .with_context(|| format!("package {hnum} is indexed but not stored"))?;
        let Some(Value::Blob(blob)) = row.values.get(1) else {
            continue;
        };
        let header = Header::parse(blob).with_context(|| format!("package {hnum}"))?;
        let paths = file_paths(&header)?;
        for &(_, idx) in hits.range((hnum, 0)..=(hnum, usize::MAX)) {
            let Some(path) = paths.get(idx) else { continue };
            let base = path.file_name().unwrap_or_default().as_encoded_bytes();
            for (i, name) in wanted.get(base).into_iter().flatten() {
                if name == path && !out.contains_key(i) {
                    out.insert(*i, package(&header, shown, files[*i].started_ns)?);
                }
            }
        }
    }
    Ok(out)
}

/// The full name of each file in a header: its directory (by index) and
/// its base name, as bytes (a name need not be UTF-8).
fn file_paths(h: &Header) -> Result<Vec<PathBuf>> {
    use std::os::unix::ffi::OsStringExt;
    let bases = h.strings(tag::BASENAMES)?;
    let dirs = h.strings(tag::DIRNAMES)?;
    let index = h.int32s(tag::DIRINDEXES)?;
    anyhow::ensure!(
        bases.len() == index.len(),
        "{} file names but {} directory indexes",
        bases.len(),
        index.len()
    );
    bases
        .iter()
        .zip(&index)
        .map(|(base, &d)| {
            let dir = dirs
                .get(d as usize)
                .with_context(|| format!("directory index {d} of {}", dirs.len()))?;
            let mut full = dir.to_vec();
            full.extend_from_slice(base);
            Ok(PathBuf::from(std::ffi::OsString::from_vec(full)))
        })
        .collect()
}

/// The package a header describes, judged against a start time.
fn package(h: &Header, database: &Path, started_ns: i128) -> Result<Package> {
    let name = h.string(tag::NAME)?.unwrap_or_default();
    let version = h.string(tag::VERSION)?.map(|v| {
        let release = h.string(tag::RELEASE).ok().flatten();
        let epoch = h.int32s(tag::EPOCH).ok().and_then(|e| e.first().copied());
        let mut full = epoch.map_or(String::new(), |e| format!("{e}:"));
        full.push_str(&v);
        if let Some(r) = release {
            full.push('-');
            full.push_str(&r);
        }
        full
    });
    let installed = h.int32s(tag::INSTALLTIME)?.first().copied();
    Ok(Package {
        manager: Manager::Rpm,
        name,
        arch: h.string(tag::ARCH)?,
        version,
        upgraded_from: None,
        installed_at: installed.map(|s| utc_time(s.into())),
        // rpm keeps whole seconds: an install in the second the process
        // started counts as after it, as dpkg's log does.
        installed_after_start: installed
            .map(|s| i128::from(s) >= started_ns.div_euclid(1_000_000_000)),
        database: database.to_path_buf(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn asked(path: &Path) -> [Asked<'_>; 1] {
        [Asked {
            path,
            started_ns: 0,
        }]
    }

    #[test]
    fn a_database_in_a_format_not_read_says_so_and_none_is_no_answer() {
        let dir = tempfile::tempdir().unwrap();
        let lib = Path::new("/usr/lib/libx.so");
        let root = DbRoot::new(dir.path());
        assert!(owners(&root, &asked(lib)).unwrap().is_empty());
        let rpm = dir.path().join("var/lib/rpm");
        std::fs::create_dir_all(&rpm).unwrap();
        std::fs::write(rpm.join("Packages"), b"\0\x06\x15\x61").unwrap();
        let (path, why) = owners(&root, &asked(lib)).unwrap_err();
        assert_eq!(path, rpm);
        assert!(why.contains("Berkeley DB"), "{why}");
        std::fs::write(rpm.join("rpmdb.sqlite"), [b'x'; 4096]).unwrap();
        let (path, why) = owners(&root, &asked(lib)).unwrap_err();
        assert_eq!(path, rpm.join("rpmdb.sqlite"));
        assert!(why.contains("not an SQLite"), "{why}");
        assert!(!why.contains("/proc/self/fd"), "{why}");
    }
}
