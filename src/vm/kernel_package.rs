//! A Debian release's kernel, from Debian's archive: the image of the
//! release's `linux-image-amd64` and the modules the guest needs, unpacked
//! once into swaplab's cache.
//!
//! apt does the fetching, in a state folder of its own (its sources list
//! names only that release), so the archive's signatures are checked
//! against the machine's keyring as for any apt download, and the machine's
//! own apt state is never touched. dpkg-deb unpacks the package.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::vm::apt::{deb_field, dependencies, run_step, tool, Apt};
use crate::vm::modules;

/// One release's kernel in the cache.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Kernel {
    /// The Debian codename it came from.
    pub release: String,
    /// Its package (`linux-image-6.12.117+deb13-amd64`) and version.
    pub package: String,
    pub version: String,
    /// What `uname -r` prints under it (`6.12.117+deb13-amd64`).
    pub uname: String,
    /// The modules asked for when it was gathered ([`modules::WANTED`]):
    /// an entry gathered for fewer is fetched again.
    #[serde(default)]
    pub wanted: Vec<String>,
    /// The folder: `vmlinuz`, and the modules in `modules/` with their load
    /// order in `modules/order`.
    #[serde(skip)]
    pub dir: PathBuf,
}

impl Kernel {
    pub fn image(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }
    pub fn modules(&self) -> PathBuf {
        self.dir.join("modules")
    }
}

/// The description of a finished cache entry.
const READY: &str = "kernel.json";

/// The kernel of `release`, from the cache `cache` or fetched into it.
pub fn kernel_of(cache: &Path, release: &str, mirror: &str, say: &dyn Fn(&str)) -> Result<Kernel> {
    let dir = cache.join(release);
    if let Ok(text) = std::fs::read_to_string(dir.join(READY)) {
        let mut k: Kernel = serde_json::from_str(&text).with_context(|| {
            format!("{} is not a kernel description", dir.join(READY).display())
        })?;
        k.dir = dir.clone();
        if k.wanted == modules::WANTED {
            say(&format!(
                "{release}: cached kernel {} ({})",
                k.uname,
                k.dir.display()
            ));
            return Ok(k);
        }
        say(&format!(
            "{release}: the cached kernel's modules were gathered for another list; fetching it again"
        ));
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(cache)
        .with_context(|| format!("cannot make the cache folder {}", cache.display()))?;
    // A folder of this run's own: another run fetching the same release
    // works in its own, and the first to finish makes the entry.
    let work = tempfile::Builder::new()
        .prefix(&format!("{release}.partial-"))
        .tempdir_in(cache)
        .with_context(|| format!("cannot make a folder in {}", cache.display()))?;
    let work = work.path();
    let apt = Apt::new(&work.join("apt"), release, mirror)?;
    say(&format!(
        "{release}: apt-get update ({mirror} {release} main)"
    ));
    apt.run("apt-get", &["update"], work)?;
    let package = apt.image_package()?;
    // Newer releases (sid in 2026) split the image package: the kernel in
    // linux-binary-*, the modules in linux-modules-*.
    let shown = apt.run("apt-cache", &["show", &package], Path::new("/"))?;
    let mut packages = vec![package.clone()];
    packages.extend(dependencies(&shown, &["linux-binary-", "linux-modules-"]));
    say(&format!(
        "{release}: apt-get download {}",
        packages.join(" ")
    ));
    let mut args = vec!["download"];
    args.extend(packages.iter().map(String::as_str));
    apt.run("apt-get", &args, work)?;
    let tree = work.join("tree");
    for deb in debs(work)? {
        run_step(
            Command::new(tool("dpkg-deb")?)
                .arg("-x")
                .arg(&deb)
                .arg(&tree),
            "dpkg-deb -x",
        )?;
    }
    let version = deb_field(&only_deb(work, &package)?, "Version")?;
    let (image, module_root) = image_and_modules(&tree)?;
    let uname = module_root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let out = work.join("kernel");
    std::fs::create_dir_all(&out)?;
    std::fs::copy(&image, out.join("vmlinuz"))
        .with_context(|| format!("cannot copy {}", image.display()))?;
    modules::gather(&module_root, &out.join("modules"))?;
    let k = Kernel {
        release: release.into(),
        package,
        version,
        uname,
        wanted: modules::WANTED.iter().map(|m| m.to_string()).collect(),
        dir: dir.clone(),
    };
    std::fs::write(out.join(READY), serde_json::to_string_pretty(&k)?)?;
    if !dir.join(READY).exists() {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        std::fs::rename(&out, &dir)?;
    }
    // The packages, their unpacked trees and apt's lists go with `work`.
    say(&format!(
        "{release}: kernel {} ({} {})",
        k.uname, k.package, k.version
    ));
    Ok(k)
}

/// The packages apt downloaded into `dir`.
fn debs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut debs: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    debs.sort();
    Ok(debs)
}

/// The downloaded file of `package` (`PACKAGE_VERSION_ARCH.deb`).
fn only_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let prefix = format!("{package}_");
    debs(dir)?
        .into_iter()
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .ok_or_else(|| anyhow::anyhow!("apt downloaded no {package} into {}", dir.display()))
}

/// The kernel image and the module folder (`lib/modules/VERSION`, or under
/// `usr/` after the /usr merge) of an unpacked image package. The image is
/// `boot/vmlinuz-VERSION`, or `vmlinuz` in the module folder (sid in 2026).
fn image_and_modules(tree: &Path) -> Result<(PathBuf, PathBuf)> {
    let module_root = ["lib/modules", "usr/lib/modules"]
        .iter()
        .filter_map(|d| std::fs::read_dir(tree.join(d)).ok())
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir())
        .ok_or_else(|| anyhow::anyhow!("no lib/modules/VERSION in the package"))?;
    let in_boot = std::fs::read_dir(tree.join("boot"))
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
        });
    let image = in_boot
        .or_else(|| Some(module_root.join("vmlinuz")).filter(|p| p.is_file()))
        .ok_or_else(|| {
            anyhow::anyhow!("no boot/vmlinuz-* nor lib/modules/VERSION/vmlinuz in the package")
        })?;
    Ok((image, module_root))
}
