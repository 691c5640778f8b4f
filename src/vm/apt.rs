//! apt and dpkg-deb, as `matrix --kernel` runs them: apt with a state of
//! its own that knows one release (its lists, its downloads, a sources list
//! with only that release), so the machine's own apt state is never read or
//! touched, and the archive's signatures are checked against Debian's
//! keyring as for any apt download. Every step has a deadline and dies with
//! swaplab.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::harness::process::{die_with_parent, last_lines, output_within};
use crate::harness::programs;

/// apt and dpkg-deb steps get this long each (a slow mirror included).
const STEP: Duration = Duration::from_secs(15 * 60);

/// Debian's archive keyring (debian-archive-keyring): named in the sources
/// list where it exists, so an Ubuntu machine checks Debian's signatures too.
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

pub fn tool(name: &str) -> Result<PathBuf> {
    programs::find(name).ok_or_else(|| {
        anyhow::anyhow!("{name} is not installed (matrix --kernel needs apt and dpkg: a Debian or Ubuntu machine)")
    })
}

/// Runs `cmd` to its end within [`STEP`]; its stdout, or why it failed.
pub fn run_step(cmd: &mut Command, what: &str) -> Result<String> {
    die_with_parent(cmd)
        .env("LC_ALL", "C")
        .stdin(std::process::Stdio::null());
    let out = output_within(cmd, STEP).with_context(|| format!("{what} did not finish"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}",
            out.status,
            last_lines(&String::from_utf8_lossy(&out.stderr), 6)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// apt, with a state of its own that knows one release.
pub struct Apt {
    options: Vec<String>,
    config: PathBuf,
}

impl Apt {
    pub fn new(root: &Path, release: &str, mirror: &str) -> Result<Apt> {
        for d in ["lists/partial", "archives/partial", "parts"] {
            std::fs::create_dir_all(root.join(d))?;
        }
        let signed_by = if Path::new(DEBIAN_KEYRING).is_file() {
            format!(" signed-by={DEBIAN_KEYRING}")
        } else {
            String::new()
        };
        std::fs::write(
            root.join("sources.list"),
            format!("deb [arch=amd64{signed_by}] {mirror} {release} main\n"),
        )?;
        std::fs::write(root.join("status"), "")?;
        // apt reads the configuration parts before any -o: only a file
        // named by APT_CONFIG, read first, keeps the machine's apt.conf.d
        // (appstream and contents indexes, hooks) out.
        std::fs::write(
            root.join("apt.conf"),
            format!("Dir::Etc::Parts \"{}\";\n", root.join("parts").display()),
        )?;
        let at = |p: &str| root.join(p).display().to_string();
        let options = [
            ("Dir::Etc::SourceList", at("sources.list")),
            ("Dir::Etc::SourceParts", at("parts")),
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
            config: root.join("apt.conf"),
        })
    }

    pub fn run(&self, program: &str, args: &[&str], cwd: &Path) -> Result<String> {
        let mut cmd = Command::new(tool(program)?);
        cmd.env("APT_CONFIG", &self.config)
            .arg("-q")
            .args(&self.options)
            .args(args)
            .current_dir(cwd);
        run_step(&mut cmd, &format!("{program} {}", args.join(" ")))
    }

    /// The image package `linux-image-amd64` depends on.
    pub fn image_package(&self) -> Result<String> {
        let shown = self.run("apt-cache", &["show", "linux-image-amd64"], Path::new("/"))?;
        image_dependency(&shown).ok_or_else(|| {
            anyhow::anyhow!("linux-image-amd64 names no linux-image-* package:\n{shown}")
        })
    }
}

/// The packages of the first `Depends:` line of `apt-cache show` output
/// whose names start with one of `prefixes`.
pub fn dependencies(shown: &str, prefixes: &[&str]) -> Vec<String> {
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

/// The `linux-image-*` package in the first `Depends:` of `apt-cache show`
/// output (sid's names `linux-base-amd64` too).
fn image_dependency(shown: &str) -> Option<String> {
    dependencies(shown, &["linux-image-"]).into_iter().next()
}

/// A control field of a downloaded package.
pub fn deb_field(deb: &Path, field: &str) -> Result<String> {
    let out = run_step(
        Command::new(tool("dpkg-deb")?)
            .arg("-f")
            .arg(deb)
            .arg(field),
        "dpkg-deb -f",
    )?;
    Ok(out.trim().to_string())
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
