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
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::harness::process::output_within;
use crate::harness::programs;
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

/// apt and dpkg-deb steps get this long each (a slow mirror included).
const STEP: Duration = Duration::from_secs(15 * 60);

/// The kernel of `release`, from the cache `cache` or fetched into it.
pub fn kernel_of(cache: &Path, release: &str, mirror: &str, say: &dyn Fn(&str)) -> Result<Kernel> {
    let dir = cache.join(release);
    if let Ok(text) = std::fs::read_to_string(dir.join(READY)) {
        let mut k: Kernel = serde_json::from_str(&text).with_context(|| {
            format!("{} is not a kernel description", dir.join(READY).display())
        })?;
        k.dir = dir;
        say(&format!(
            "{release}: cached kernel {} ({})",
            k.uname,
            k.dir.display()
        ));
        return Ok(k);
    }
    let work = cache.join(format!("{release}.partial"));
    if work.exists() {
        std::fs::remove_dir_all(&work)
            .with_context(|| format!("cannot remove {}", work.display()))?;
    }
    std::fs::create_dir_all(&work)
        .with_context(|| format!("cannot make the cache folder {}", work.display()))?;
    let apt = Apt::new(&work.join("apt"), release, mirror)?;
    say(&format!(
        "{release}: apt-get update ({mirror} {release} main)"
    ));
    apt.run("apt-get", &["update"], &work)?;
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
    apt.run("apt-get", &args, &work)?;
    let tree = work.join("tree");
    for deb in debs(&work)? {
        run_step(
            Command::new(tool("dpkg-deb")?)
                .arg("-x")
                .arg(&deb)
                .arg(&tree),
            "dpkg-deb -x",
        )?;
    }
    let version = deb_field(&only_deb(&work, &package)?, "Version")?;
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
        dir: dir.clone(),
    };
    std::fs::write(out.join(READY), serde_json::to_string_pretty(&k)?)?;
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::rename(&out, &dir)?;
    // The package, its unpacked tree and apt's lists are not needed again.
    std::fs::remove_dir_all(&work)?;
    say(&format!(
        "{release}: kernel {} ({} {})",
        k.uname, k.package, k.version
    ));
    Ok(k)
}

fn tool(name: &str) -> Result<PathBuf> {
    programs::find(name).ok_or_else(|| {
        anyhow::anyhow!("{name} is not installed (matrix --kernel needs apt and dpkg: a Debian or Ubuntu machine)")
    })
}

/// Runs `cmd` to its end within [`STEP`]; its stdout, or why it failed.
fn run_step(cmd: &mut Command, what: &str) -> Result<String> {
    cmd.env("LC_ALL", "C").stdin(std::process::Stdio::null());
    let out = output_within(cmd, STEP).with_context(|| format!("{what} did not finish"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(6).collect();
        bail!(
            "{what} failed ({}):\n  {}",
            out.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n  ")
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// apt, with a state of its own that knows one release.
struct Apt {
    options: Vec<String>,
}

impl Apt {
    fn new(root: &Path, release: &str, mirror: &str) -> Result<Apt> {
        for d in ["lists/partial", "archives/partial", "parts"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        let sources = root.join("sources.list");
        std::fs::write(
            &sources,
            format!("deb [arch=amd64] {mirror} {release} main\n"),
        )?;
        std::fs::write(root.join("status"), "")?;
        let at = |p: &str| root.join(p).display().to_string();
        let options = [
            ("Dir::Etc::SourceList", at("sources.list")),
            ("Dir::Etc::SourceParts", at("parts")),
            // The machine's apt.conf.d would add indexes to fetch
            // (appstream, contents): only the package lists are wanted.
            ("Dir::Etc::Parts", at("parts")),
            ("Dir::Etc::Preferences", at("parts/none")),
            ("Dir::Etc::PreferencesParts", at("parts")),
            ("Dir::State::Lists", at("lists")),
            ("Dir::State::status", at("status")),
            ("Dir::Cache", root.display().to_string()),
            ("Dir::Cache::archives", at("archives")),
            ("APT::Architecture", "amd64".into()),
            ("APT::Architectures", "amd64".into()),
            ("Acquire::Languages", "none".into()),
            // Its own folders: no lock on the machine's apt is needed.
            ("Debug::NoLocking", "1".into()),
        ];
        Ok(Apt {
            options: options
                .iter()
                .flat_map(|(k, v)| ["-o".to_string(), format!("{k}={v}")])
                .collect(),
        })
    }

    fn run(&self, program: &str, args: &[&str], cwd: &Path) -> Result<String> {
        let mut cmd = Command::new(tool(program)?);
        cmd.arg("-q")
            .args(&self.options)
            .args(args)
            .current_dir(cwd);
        run_step(&mut cmd, &format!("{program} {}", args.join(" ")))
    }

    /// The image package `linux-image-amd64` depends on.
    fn image_package(&self) -> Result<String> {
        let shown = self.run("apt-cache", &["show", "linux-image-amd64"], Path::new("/"))?;
        image_dependency(&shown).ok_or_else(|| {
            anyhow::anyhow!("linux-image-amd64 names no linux-image-* package:\n{shown}")
        })
    }
}

/// The `linux-image-*` package in the first `Depends:` of `apt-cache show`
/// output (sid's names `linux-base-amd64` too).
fn image_dependency(shown: &str) -> Option<String> {
    dependencies(shown, &["linux-image-"]).into_iter().next()
}

/// The packages of the first `Depends:` line of `apt-cache show` output
/// whose names start with one of `prefixes`.
fn dependencies(shown: &str, prefixes: &[&str]) -> Vec<String> {
    let Some(depends) = shown.lines().find_map(|l| l.strip_prefix("Depends:")) else {
        return Vec::new();
    };
    depends
        .split(',')
        .filter_map(|d| d.split_whitespace().next())
        .filter(|name| prefixes.iter().any(|p| name.starts_with(p)))
        .map(str::to_string)
        .collect()
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

fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let out = run_step(
        Command::new(tool("dpkg-deb")?)
            .arg("-f")
            .arg(deb)
            .arg(field),
        "dpkg-deb -f",
    )?;
    Ok(out.trim().to_string())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_is_the_linux_image_dependency_wherever_it_stands() {
        let bookworm = "Package: linux-image-amd64\nVersion: 6.1.176-1\nDepends: linux-image-6.1.0-50-amd64 (= 6.1.176-1)\n";
        assert_eq!(
            image_dependency(bookworm).as_deref(),
            Some("linux-image-6.1.0-50-amd64")
        );
        let sid =
            "Depends: linux-base-amd64 (= 7.2.13-1), linux-image-7.2.13+deb14-amd64 (= 7.2.13-1)\n";
        assert_eq!(
            image_dependency(sid).as_deref(),
            Some("linux-image-7.2.13+deb14-amd64")
        );
        assert_eq!(image_dependency("Package: x\nDepends: libc6\n"), None);
        let split = "Depends: dracut | initramfs-tools (>= 0.120+deb8u2) | linux-initramfs-tool, linux-base-7.2.13+deb14-amd64 (= 7.2.13-1), linux-binary-7.2.13+deb14-amd64 (= 7.2.13-1), linux-modules-7.2.13+deb14-amd64 (= 7.2.13-1)\n";
        assert_eq!(
            dependencies(split, &["linux-binary-", "linux-modules-"]),
            [
                "linux-binary-7.2.13+deb14-amd64",
                "linux-modules-7.2.13+deb14-amd64"
            ]
        );
    }
}
