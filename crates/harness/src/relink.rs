//! The ways a symbolic link gets switched to another file, each done by the
//! real tool a person (or a package manager) would run: the soname link
//! `libexample.so.1 -> libexample.so.1.0.N` of L15. Which one is used
//! decides whether a process starting meanwhile finds the library.

use std::path::Path;

use anyhow::Result;

use crate::replace::{run_tools, shell_line};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Relink {
    /// GNU `ln -sf` (coreutils): since 8.27 it makes the new link under a
    /// temporary name and renames it over the old one.
    GnuLn,
    /// busybox `ln -sf`: unlinks the old link, then creates the new one.
    BusyboxLn,
    /// `ln -s` to a temporary name, then `mv -T` over the link: rename(2).
    LnThenMv,
    /// `rm -f` the link, then `ln -s` it again: what scripts do, and what
    /// GNU `ln -sf` did inside one process before coreutils 8.27.
    RmThenLn,
}

impl Relink {
    /// What the transcript calls it.
    pub fn name(self) -> &'static str {
        match self {
            Relink::GnuLn => "GNU ln -sf",
            Relink::BusyboxLn => "busybox ln -sf",
            Relink::LnThenMv => "ln -s + mv -T",
            Relink::RmThenLn => "rm -f + ln -s",
        }
    }

    /// The commands that point `link` at `target` (a name in the link's
    /// folder), as argument vectors.
    fn argvs(self, target: &str, link: &str) -> Vec<Vec<String>> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let tmp = format!("{link}.new");
        match self {
            Relink::GnuLn => vec![v(&["ln", "-sf", target, link])],
            Relink::BusyboxLn => vec![v(&["busybox", "ln", "-sf", target, link])],
            Relink::LnThenMv => vec![
                v(&["ln", "-sfn", target, &tmp]),
                v(&["mv", "-T", &tmp, link]),
            ],
            Relink::RmThenLn => vec![v(&["rm", "-f", link]), v(&["ln", "-s", target, link])],
        }
    }

    /// The shell command line, for transcripts.
    pub fn shell(self, target: &str, link: &str) -> String {
        shell_line(&self.argvs(target, link))
    }

    /// Points `link` at `target` by running the tools in folder `cwd`.
    pub fn apply(self, cwd: &Path, target: &str, link: &str) -> Result<()> {
        run_tools(cwd, &self.argvs(target, link))
    }
}
