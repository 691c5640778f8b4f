//! The ways a file on disk gets replaced, each done by the real tool a person
//! would type, so what the experiments show is what those tools do. Which
//! one is used decides what running processes see (finding L11).

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Replace {
    /// install(1): unlinks the destination, creates a new file, writes it.
    /// Not atomic: between the unlink and the end of the write the path names
    /// nothing, or a short file.
    Install,
    /// install(1) with mode 644: a new file nobody may execute (U06).
    InstallNoExec,
    /// cp(1) to a temporary name beside the destination, then mv(1), which is
    /// `rename(2)`: atomic, the path always names a complete file.
    Rename,
    /// cp(1) over the live file: `open(O_WRONLY|O_TRUNC)`, write. Same inode.
    CopyInPlace,
    /// dd(1) `conv=notrunc`: the new bytes over the old ones, no truncation.
    /// Same inode.
    WriteInPlace,
    /// `cp -p` over the live file, the source first given the destination's
    /// times (`touch -r`): new bytes with the old mtime set back, as `cp -a`,
    /// `cp -p` and `rsync -a --inplace` leave a file. Same inode; only its
    /// ctime tells.
    CopyKeepingTimes,
}

impl Replace {
    /// The commands, as argument vectors, with `src` and `dst` as given.
    fn argvs(self, src: &str, dst: &str) -> Vec<Vec<String>> {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let tmp = format!("{dst}.new");
        match self {
            Replace::Install => vec![v(&["install", "-m", "755", src, dst])],
            Replace::InstallNoExec => vec![v(&["install", "-m", "644", src, dst])],
            Replace::Rename => vec![v(&["cp", src, &tmp]), v(&["mv", &tmp, dst])],
            Replace::CopyInPlace => vec![v(&["cp", src, dst])],
            Replace::WriteInPlace => vec![v(&[
                "dd",
                &format!("if={src}"),
                &format!("of={dst}"),
                "conv=notrunc",
                "status=none",
            ])],
            Replace::CopyKeepingTimes => {
                vec![v(&["touch", "-r", dst, src]), v(&["cp", "-p", src, dst])]
            }
        }
    }

    /// The shell command line, for transcripts (paths as given).
    pub fn shell(self, src: &str, dst: &str) -> String {
        shell_line(&self.argvs(src, dst))
    }

    /// Replaces `dst` with `src` by running the tools, in folder `cwd`, with
    /// paths relative to it (as the transcript shows them).
    pub fn apply(self, cwd: &Path, src: &str, dst: &str) -> Result<()> {
        run_tools(cwd, &self.argvs(src, dst))
    }
}

/// The `PATH` the tools run with: the system's, not the caller's.
pub const TOOLS_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Runs each command of `argvs` in turn in folder `cwd` (clean
/// environment, `LC_ALL=C`), each within the harness deadline; fails with
/// the first one's error output, or when one overstays (it is killed).
pub fn run_tools(cwd: &Path, argvs: &[Vec<String>]) -> Result<()> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    for argv in argvs {
        let mut child = Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(cwd)
            .env_clear()
            .env("LC_ALL", "C")
            .env("PATH", TOOLS_PATH)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // A tool's complaint is a line or two: it cannot fill the pipe.
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot run `{}` (is {} installed?)",
                    argv.join(" "),
                    argv[0]
                )
            })?;
        // Its own group is out of the terminal's reach: Ctrl-C kills it
        // through kill_all.
        let _group = crate::process::GroupGuard::new(child.id() as i32);
        let limit = crate::process::deadline();
        let Some(status) = crate::process::wait_or_kill(&mut child, limit)? else {
            bail!("`{}` did not end within {limit:?}", argv.join(" "));
        };
        if !status.success() {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            bail!("`{}` failed ({status}): {}", argv.join(" "), err.trim());
        }
    }
    Ok(())
}

/// The commands of `argvs` as one shell line, joined by `&&`.
pub fn shell_line(argvs: &[Vec<String>]) -> String {
    argvs
        .iter()
        .map(|a| a.join(" "))
        .collect::<Vec<_>>()
        .join(" && ")
}
