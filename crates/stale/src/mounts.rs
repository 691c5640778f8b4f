//! The mounts of a mount namespace, as `/proc/PID/mountinfo` tells: each
//! mount's superblock device (the one maps names its files by), its type,
//! where it is mounted and, for an overlay, its layers; and which other
//! namespaces still mount something under a folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One mount of a mount namespace, as `mountinfo` tells.
#[derive(Clone, Debug)]
pub struct Mount {
    /// The superblock's device: the one maps names its files by.
    pub dev: (u32, u32),
    pub fs_type: String,
    /// Where it is mounted, as the namespace's processes name it.
    pub point: PathBuf,
    /// An overlay's layers, the upper first.
    pub layers: Vec<PathBuf>,
}

/// The mounts of one mount namespace, by mount id.
#[derive(Clone, Debug, Default)]
pub struct Mounts(HashMap<u64, Mount>);

impl Mounts {
    /// The mounts `/proc/.../mountinfo` in `proc_dir` lists (a process's
    /// or a thread's folder); empty when it cannot be read.
    pub fn of(proc_dir: &Path) -> Mounts {
        let Ok(p) = procfs::process::Process::new_with_root(proc_dir.to_path_buf()) else {
            return Mounts::default();
        };
        let Ok(all) = p.mountinfo() else {
            return Mounts::default();
        };
        Mounts(
            all.into_iter()
                .filter_map(|m| {
                    let (major, minor) = m.majmin.split_once(':')?;
                    let layers = if m.fs_type == "overlay" {
                        overlay_layers(&m.super_options)
                    } else {
                        Vec::new()
                    };
                    Some((
                        m.mnt_id as u64,
                        Mount {
                            dev: (major.parse().ok()?, minor.parse().ok()?),
                            fs_type: m.fs_type,
                            point: m.mount_point,
                            layers,
                        },
                    ))
                })
                .collect(),
        )
    }

    pub fn get(&self, id: u64) -> Option<&Mount> {
        self.0.get(&id)
    }

    /// Every mount, in no order.
    pub fn all(&self) -> impl Iterator<Item = &Mount> {
        self.0.values()
    }
}

/// An overlay's `upperdir` then each `lowerdir` (colon-separated, `\:`
/// escaping a colon in a name).
fn overlay_layers(opts: &HashMap<String, Option<String>>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(Some(upper)) = opts.get("upperdir") {
        out.push(PathBuf::from(upper));
    }
    if let Some(Some(lower)) = opts.get("lowerdir") {
        let mut cur = String::new();
        let mut chars = lower.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => cur.extend(chars.next()),
                ':' => out.push(PathBuf::from(std::mem::take(&mut cur))),
                c => cur.push(c),
            }
        }
        if !cur.is_empty() {
            out.push(PathBuf::from(cur));
        }
    }
    out
}

/// The processes whose mount namespace (not this process's) has a mount at
/// or under `dir`: one process per such namespace. A folder must not be
/// removed while one has: removing a mount point from another namespace
/// detaches its mounts lazily, and a loop device mounted under them then
/// stays attached for good, with no mount left to undo (measured on 6.18).
pub fn mounted_under(dir: &Path) -> Vec<i32> {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let mine = ns("self");
    let mut seen = Vec::new();
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<i32>() else {
            continue;
        };
        let Some(id) = ns(&name) else { continue };
        if Some(&id) == mine.as_ref() || seen.contains(&id) {
            continue;
        }
        seen.push(id);
        let mounts = Mounts::of(Path::new(&format!("/proc/{pid}")));
        if mounts.0.values().any(|m| m.point.starts_with(dir)) {
            found.push(pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_layers_come_upper_first_and_unescape_colons() {
        let mut opts = HashMap::new();
        opts.insert("upperdir".to_string(), Some("/u".to_string()));
        opts.insert("lowerdir".to_string(), Some("/l1:/l\\:2".to_string()));
        let got = overlay_layers(&opts);
        let want: Vec<PathBuf> = ["/u", "/l1", "/l:2"].iter().map(PathBuf::from).collect();
        assert_eq!(got, want);
    }
}
