//! dpkg's database: the `info/*.list` files for the owner (found through
//! [`dpkg_index`]), `status` for the installed version, and dpkg's log for
//! the version an upgrade replaced.
//!
//! What it cannot tell: files dpkg diverted (`dpkg-divert`) are named by
//! their diverted name in the lists and are not followed.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;

use super::{names_in_lists, usr_aliases, Asked, DbRoot, Manager, Package};
use crate::{dpkg_index, regular};

/// The most read of any one database file: dpkg's status is a few MB on
/// a large machine; a file larger than this is no database of dpkg's.
const CAP: u64 = 256 << 20;

/// The owners of `files` in the dpkg database under `root`, by the index
/// of the file asked (each with its own start); files no package owns are
/// left out. Empty when `root` holds no dpkg database.
pub(super) fn owners(root: &DbRoot, files: &[Asked]) -> BTreeMap<usize, Package> {
    let Some(reached) = root.reach("/var/lib/dpkg") else {
        return BTreeMap::new();
    };
    let admin = reached.path();
    let Some(index) = dpkg_index::load(admin) else {
        return BTreeMap::new();
    };
    let aliases = usr_aliases(&root.path);
    // The index proposes list files by a hash of the name; each is read
    // (once) to confirm the name is there.
    let mut lists: HashMap<&str, Option<HashSet<Vec<u8>>>> = HashMap::new();
    let mut owner: BTreeMap<usize, (String, Option<String>)> = BTreeMap::new();
    for (i, f) in files.iter().enumerate() {
        let names = names_in_lists(f.path, &aliases);
        let found = names.iter().find_map(|name| {
            let name = name.as_os_str().as_encoded_bytes();
            index.candidates(name).find(|list| {
                lists
                    .entry(list)
                    .or_insert_with(|| read_list(admin, list))
                    .as_ref()
                    .is_some_and(|l| l.contains(name))
            })
        });
        if let Some(list) = found {
            let (pkg, arch) = match list.split_once(':') {
                Some((p, a)) => (p.to_string(), Some(a.to_string())),
                None => (list.to_string(), None),
            };
            owner.insert(i, (pkg, arch));
        }
    }
    if owner.is_empty() {
        return BTreeMap::new();
    }
    let names: BTreeSet<&str> = owner.values().map(|(p, _)| p.as_str()).collect();
    let versions = installed_versions(&admin.join("status"), &names);
    // The folder reached, not the log: its rotated log is named beside it.
    let upgrades = root
        .reach("/var/log")
        .map(|logs| upgrades(&logs.path().join("dpkg.log"), &names))
        .unwrap_or_default();
    owner
        .into_iter()
        .map(|(i, (name, arch))| {
            let version = versions
                .get(&(name.clone(), arch.clone()))
                .or_else(|| versions.get(&(name.clone(), None)))
                .cloned();
            let started = log_time(files[i].started_ns);
            let upgraded_from = upgrades
                .iter()
                .filter(|u| u.package == name && (arch.is_none() || u.arch == arch))
                .find(|u| u.when >= started)
                .map(|u| u.from.clone());
            (
                i,
                Package {
                    manager: Manager::Dpkg,
                    name,
                    arch,
                    version,
                    upgraded_from,
                    installed_at: None,
                    installed_after_start: None,
                    database: reached.shown().to_path_buf(),
                },
            )
        })
        .collect()
}

/// The names one list file holds.
fn read_list(admin: &Path, list: &str) -> Option<HashSet<Vec<u8>>> {
    let text = regular::read(&admin.join("info").join(format!("{list}.list")), CAP).ok()?;
    Some(text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect())
}

/// `(package, arch)` → installed version, from dpkg's `status` file, for
/// the packages named.
fn installed_versions(
    status: &Path,
    names: &BTreeSet<&str>,
) -> BTreeMap<(String, Option<String>), String> {
    let Ok(text) = regular::read(status, CAP).map(|b| String::from_utf8_lossy(&b).into_owned())
    else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for stanza in text.split("\n\n") {
        let field = |key: &str| {
            stanza.lines().find_map(|l| {
                l.strip_prefix(key)
                    .and_then(|v| v.strip_prefix(':'))
                    .map(str::trim)
            })
        };
        let (Some(name), Some(version)) = (field("Package"), field("Version")) else {
            continue;
        };
        if !names.contains(name) {
            continue;
        }
        let installed = field("Status").is_some_and(|s| s.ends_with(" installed"));
        if !installed {
            continue;
        }
        let arch = field("Architecture").map(str::to_string);
        out.insert((name.to_string(), arch), version.to_string());
        out.insert((name.to_string(), None), version.to_string());
    }
    out
}

/// One `upgrade` line of dpkg's log.
struct Upgrade {
    when: String,
    package: String,
    arch: Option<String>,
    from: String,
}

/// The upgrades of the packages named, in the log's (time) order:
/// `2026-11-29 14:05:37 upgrade libexample:amd64 1.0 2.0`.
fn upgrades(log: &Path, names: &BTreeSet<&str>) -> Vec<Upgrade> {
    // The log rotated last (dpkg.log.1) holds the older lines.
    let mut text = String::new();
    for file in [log.with_extension("log.1"), log.to_path_buf()] {
        if let Ok(b) = regular::read(&file, CAP) {
            text.push_str(&String::from_utf8_lossy(&b));
        }
    }
    text.lines()
        .filter_map(|line| {
            let mut w = line.split(' ');
            let (date, time, what, pkg, from) =
                (w.next()?, w.next()?, w.next()?, w.next()?, w.next()?);
            if what != "upgrade" {
                return None;
            }
            let (package, arch) = match pkg.split_once(':') {
                Some((p, a)) => (p, Some(a.to_string())),
                None => (pkg, None),
            };
            names.contains(package).then(|| Upgrade {
                when: format!("{date} {time}"),
                package: package.to_string(),
                arch,
                from: from.to_string(),
            })
        })
        .collect()
}

/// A wall-clock time (ns since the epoch) as dpkg's log writes it: local
/// time, to the second, rounded down.
pub fn log_time(epoch_ns: i128) -> String {
    let secs = (epoch_ns.div_euclid(1_000_000_000)) as libc::time_t;
    // SAFETY: localtime_r writes only into `tm`, which lives on the stack.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let ok = unsafe { !libc::localtime_r(&secs, &mut tm).is_null() };
    if !ok {
        return String::new();
    }
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A local time (`YYYY-MM-DD HH:MM:SS`) in ns since the epoch, as
    /// date(1) reads it in this process's time zone.
    fn local_ns(when: &str) -> i128 {
        let out = std::process::Command::new("date")
            .arg(format!("--date={when}"))
            .arg("+%s")
            .output()
            .expect("date(1) runs");
        let secs: i128 = String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        secs * 1_000_000_000
    }

    /// A dpkg database written by hand, as dpkg writes it.
    fn database(dir: &Path) {
        let admin = dir.join("var/lib/dpkg");
        fs::create_dir_all(admin.join("info")).unwrap();
        fs::create_dir_all(dir.join("var/log")).unwrap();
        fs::create_dir_all(dir.join("usr/lib")).unwrap();
        std::os::unix::fs::symlink("usr/lib", dir.join("lib")).unwrap();
        fs::write(
            admin.join("info/libfoo1:amd64.list"),
            "/.\n/lib\n/lib/libfoo.so.1\n",
        )
        .unwrap();
        fs::write(
            admin.join("info/bar.list"),
            "/.\n/usr/bin/bar\n/usr/bin/bar.d\n",
        )
        .unwrap();
        fs::write(
            admin.join("status"),
            "Package: bar\nStatus: install ok installed\nArchitecture: all\nVersion: 3\n\n\
             Package: libfoo1\nStatus: install ok installed\nArchitecture: amd64\nVersion: 2.0-1\n",
        )
        .unwrap();
        // The older upgrade in the log dpkg's logrotate rotated.
        fs::write(
            dir.join("var/log/dpkg.log.1"),
            "2026-01-01 10:00:00 upgrade libfoo1:amd64 0.9-1 1.0-1\n",
        )
        .unwrap();
        fs::write(
            dir.join("var/log/dpkg.log"),
            "2026-01-02 10:00:00 upgrade libfoo1:amd64 1.0-1 2.0-1\n",
        )
        .unwrap();
    }

    #[test]
    fn owners_follow_merged_usr_names_versions_and_the_upgrade_after_the_start() {
        let dir = tempfile::tempdir().unwrap();
        database(dir.path());
        let asked = [
            Asked {
                path: Path::new("/usr/lib/libfoo.so.1"),
                started_ns: local_ns("2026-01-01 12:00:00"),
            },
            Asked {
                path: Path::new("/usr/bin/bar"),
                started_ns: local_ns("2026-01-01 12:00:00"),
            },
            Asked {
                path: Path::new("/usr/bin/ba"),
                started_ns: local_ns("2026-01-01 12:00:00"),
            },
            // The same library for a process started before both upgrades.
            Asked {
                path: Path::new("/usr/lib/libfoo.so.1"),
                started_ns: local_ns("2026-01-01 09:00:00"),
            },
        ];
        let got = owners(&DbRoot::new(dir.path()), &asked);
        let foo = &got[&0];
        assert_eq!(foo.name, "libfoo1");
        assert_eq!(foo.arch.as_deref(), Some("amd64"));
        assert_eq!(foo.version.as_deref(), Some("2.0-1"));
        assert_eq!(foo.upgraded_from.as_deref(), Some("1.0-1"));
        // Each process is judged by its own start, not the first one's.
        assert_eq!(got[&3].upgraded_from.as_deref(), Some("0.9-1"));
        let bar = &got[&1];
        assert_eq!(
            (bar.name.as_str(), bar.version.as_deref()),
            ("bar", Some("3"))
        );
        assert_eq!(bar.upgraded_from, None);
        // A prefix of a listed name is not that name.
        assert!(!got.contains_key(&2));
    }

    /// In another root, a database folder linked to an absolute path is
    /// read at that path inside the root, not at the host's path of that
    /// name: another database there (a decoy) tells nothing.
    #[test]
    fn an_absolute_link_to_the_database_is_followed_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        // A path the host holds too: under the temporary folder.
        let elsewhere = dir.path().join("elsewhere");
        database(&root.join(elsewhere.strip_prefix("/").unwrap()));
        database(&elsewhere);
        fs::write(
            elsewhere.join("var/lib/dpkg/status"),
            "Package: bar\nStatus: install ok installed\nArchitecture: all\nVersion: 9-decoy\n",
        )
        .unwrap();
        fs::create_dir_all(root.join("var/lib")).unwrap();
        std::os::unix::fs::symlink(elsewhere.join("var/lib/dpkg"), root.join("var/lib/dpkg"))
            .unwrap();
        let db_root = DbRoot::new(&root);
        if !db_root.reach("/var/lib/dpkg").unwrap().opened() {
            eprintln!("{}", crate::in_root::SKIP_WITHOUT_OPENAT2);
            return;
        }
        let asked = [Asked {
            path: Path::new("/usr/bin/bar"),
            started_ns: 0,
        }];
        let bar = &owners(&db_root, &asked)[&0];
        assert_eq!(bar.version.as_deref(), Some("3"), "{bar:?}");
        assert_eq!(bar.database, root.join("var/lib/dpkg"));
    }

    #[test]
    fn no_database_no_owner() {
        let dir = tempfile::tempdir().unwrap();
        let asked = [Asked {
            path: Path::new("/usr/bin/bar"),
            started_ns: 0,
        }];
        assert!(owners(&DbRoot::new(dir.path()), &asked).is_empty());
    }

    #[test]
    fn log_time_is_local_time_to_the_second() {
        // As date(1) prints the same moment in this process's time zone
        // (dpkg writes its log the same way), the fraction dropped.
        let when: i64 = 1_700_000_000;
        let date = std::process::Command::new("date")
            .arg(format!("--date=@{when}"))
            .arg("+%Y-%m-%d %H:%M:%S")
            .output()
            .expect("date(1) runs");
        let want = String::from_utf8(date.stdout).unwrap();
        assert_eq!(
            log_time(when as i128 * 1_000_000_000 + 999_999_999),
            want.trim_end()
        );
    }
}
