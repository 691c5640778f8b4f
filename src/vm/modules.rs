//! The kernel modules the guest loads before it mounts the host's files:
//! found in the unpacked package, with what each depends on (its
//! `.modinfo`), decompressed (busybox's insmod takes plain ELF), and put in
//! the order they must load.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use object::read::elf::ElfFile64;
use object::{Endianness, Object, ObjectSection};

/// What the guest needs beyond the kernel image: virtio's PCI transport and
/// 9p (the host's files), veth (G07), overlay (D01's overlays of a
/// process's own), and the socket-diag modules that answer the netlink
/// queries of `ss` and of swaplab's listener views. Each is skipped where
/// the kernel has it built in.
pub const WANTED: [&str; 10] = [
    "virtio_pci",
    "9pnet_virtio",
    "9p",
    "veth",
    "overlay",
    "inet_diag",
    "tcp_diag",
    "udp_diag",
    "unix_diag",
    "netlink_diag",
];

/// The file that lists the modules in load order, one file name a line.
pub const ORDER: &str = "order";

/// Copies [`WANTED`] and everything they depend on from `root`
/// (`lib/modules/VERSION`) into `out`, decompressed, with the [`ORDER`] file.
pub fn gather(root: &Path, out: &Path) -> Result<()> {
    let files = module_files(&root.join("kernel"))?;
    // Without modules.builtin (sid's split packages of 2026 ship only the
    // modules), a module that is not there is taken as built in: if it is
    // not, the guest says which mount failed.
    let builtin = match std::fs::read_to_string(root.join("modules.builtin")) {
        Ok(text) => Some(text.lines().filter_map(module_name).collect::<Vec<_>>()),
        Err(_) => None,
    };
    std::fs::create_dir_all(out)?;
    let mut order = Vec::new();
    for name in WANTED {
        add(name, &files, &builtin, out, &mut order, 0)?;
    }
    let lines: String = order.iter().map(|n| format!("{n}.ko\n")).collect();
    std::fs::write(out.join(ORDER), lines)?;
    Ok(())
}

/// Adds `name` after what it depends on (depth-first), unless built in or
/// added already.
fn add(
    name: &str,
    files: &BTreeMap<String, PathBuf>,
    builtin: &Option<Vec<String>>,
    out: &Path,
    order: &mut Vec<String>,
    depth: usize,
) -> Result<()> {
    let name = normal(name);
    let built_in = match builtin {
        Some(list) => list.contains(&name),
        None => !files.contains_key(&name),
    };
    if order.contains(&name) || built_in {
        return Ok(());
    }
    if depth > 32 {
        bail!("module dependencies nest deeper than 32 at {name}: a cycle?");
    }
    let Some(file) = files.get(&name) else {
        bail!("the kernel has no module {name} and does not build it in");
    };
    let bytes = decompressed(file)?;
    for dep in depends(&bytes).with_context(|| format!("reading {}", file.display()))? {
        add(&dep, files, builtin, out, order, depth + 1)?;
    }
    std::fs::write(out.join(format!("{name}.ko")), &bytes)?;
    order.push(name);
    Ok(())
}

/// A module's name as the kernel knows it: `-` and `_` are the same.
fn normal(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a path such as `kernel/fs/9p/9p.ko.xz`.
fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = file
        .split(".ko")
        .next()
        .filter(|s| !s.is_empty() && file.contains(".ko"))?;
    Some(normal(stem))
}

/// Every module file under `dir`, by module name.
fn module_files(dir: &Path) -> Result<BTreeMap<String, PathBuf>> {
    let mut found = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                todo.push(p);
            } else if let Some(name) = p.to_str().and_then(module_name) {
                found.insert(name, p);
            }
        }
    }
    Ok(found)
}

/// The module's ELF bytes: as stored, or unpacked from xz (Debian compresses
/// modules since 6.x).
fn decompressed(file: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let name = file.to_string_lossy();
    if name.ends_with(".ko") {
        return Ok(raw);
    }
    if name.ends_with(".ko.xz") {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut raw.as_slice(), &mut out)
            .map_err(|e| anyhow::anyhow!("cannot unpack {name}: {e:?}"))?;
        return Ok(out);
    }
    bail!("{name}: a module compression swaplab does not unpack (only .ko and .ko.xz)")
}

/// The `depends=` entry of a module's `.modinfo` section.
fn depends(elf: &[u8]) -> Result<Vec<String>> {
    let file = ElfFile64::<Endianness>::parse(elf).context("not a 64-bit ELF module")?;
    let info = file
        .section_by_name(".modinfo")
        .ok_or_else(|| anyhow::anyhow!("no .modinfo section"))?
        .data()?;
    Ok(info
        .split(|&b| b == 0)
        .filter_map(|kv| kv.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_names_come_from_paths_with_either_dash() {
        assert_eq!(module_name("kernel/fs/9p/9p.ko.xz").as_deref(), Some("9p"));
        assert_eq!(
            module_name("kernel/net/9p/9pnet_virtio.ko").as_deref(),
            Some("9pnet_virtio")
        );
        assert_eq!(
            module_name("kernel/drivers/x/snd-hda.ko.zst").as_deref(),
            Some("snd_hda")
        );
        assert_eq!(module_name("kernel/fs/README"), None);
    }
}
