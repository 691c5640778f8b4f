//! Which script an interpreter process runs, read from `/proc` alone: the
//! interpreter from the process's executable (`/proc/PID/exe`), the script
//! from its command line (`/proc/PID/cmdline`, interpreter options
//! skipped), reached through the process's own working directory and root
//! (`/proc/PID/cwd`, `/proc/PID/root`), and the descriptor it still reads
//! it from, if any (shells read a script as they go: bash keeps it as fd
//! 255). Nothing is run. [`crate::stale`] judges what is found.
//!
//! The limit: only the script named on the command line. The modules it
//! imports (Python's, Perl's, Ruby's, Node's) are read and closed, not
//! mapped, and their names are nowhere in `/proc`; compiled extension
//! modules are mapped files, checked as libraries already.

use std::ffi::{OsStr, OsString};
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use crate::identity::{self, Facts};
use crate::in_root;
use crate::report::FileId;

/// The script a process runs.
pub struct Script {
    /// The name as the process knows it, made absolute.
    pub path: PathBuf,
    /// The same name under `/proc/PID/...`, as the scanner shows it.
    pub real: PathBuf,
    /// What the name holds now, looked up as the process sees it: links
    /// followed inside its root (see [`crate::in_root`]).
    pub now: std::io::Result<Facts>,
    /// The descriptor the interpreter still reads the script from.
    pub held: Option<Held>,
}

/// An open descriptor on the script, and the file it holds.
pub struct Held {
    pub fd: u32,
    pub file: Metadata,
}

/// How an interpreter's command line is read: the option letters after
/// which no script file follows (code given inline, a module, stdin), and
/// those that take the next argument when nothing follows them in the
/// same word.
struct Syntax {
    no_script: &'static str,
    takes_arg: &'static str,
    long_no_script: &'static [&'static str],
    long_takes_arg: &'static [&'static str],
}

const PYTHON: Syntax = Syntax {
    no_script: "cmh",
    takes_arg: "WX",
    long_no_script: &["--help", "--version"],
    long_takes_arg: &["--check-hash-based-pycs"],
};
const PERL: Syntax = Syntax {
    no_script: "eEvh",
    takes_arg: "I",
    long_no_script: &["--help", "--version"],
    long_takes_arg: &[],
};
const RUBY: Syntax = Syntax {
    no_script: "ehv",
    takes_arg: "IrCE",
    long_no_script: &["--help", "--version"],
    long_takes_arg: &[],
};
const NODE: Syntax = Syntax {
    no_script: "epvh",
    takes_arg: "rC",
    long_no_script: &["--eval", "--print", "--help", "--version", "--interactive"],
    long_takes_arg: &[
        "--require",
        "--import",
        "--loader",
        "--experimental-loader",
        "--conditions",
        "--title",
    ],
};
const SHELL: Syntax = Syntax {
    no_script: "cs",
    takes_arg: "oO",
    long_no_script: &["--help", "--version"],
    long_takes_arg: &["--rcfile", "--init-file"],
};

/// The interpreter an executable's name says it is (`python3.11`,
/// `perl5.36`, `ruby3.1`, `node`, `nodejs`, and the shells).
fn syntax(exe: &Path) -> Option<&'static Syntax> {
    let name = exe.file_name()?.to_str()?;
    let name = name.strip_suffix(" (deleted)").unwrap_or(name);
    let family = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    match family {
        "python" | "pypy" => Some(&PYTHON),
        "perl" => Some(&PERL),
        "ruby" => Some(&RUBY),
        "node" | "nodejs" => Some(&NODE),
        "sh" | "dash" | "bash" | "zsh" | "ksh" | "mksh" | "ash" => Some(&SHELL),
        _ => None,
    }
}

/// The script argument of `argv` (without argv\[0\]), or `None` when the
/// interpreter runs inline code, a module or its standard input.
fn script_arg<'a>(syn: &Syntax, argv: &'a [OsString]) -> Option<&'a OsStr> {
    let mut args = argv.iter();
    while let Some(a) = args.next() {
        let text = a.as_bytes();
        if text == b"--" {
            return args.next().map(OsString::as_os_str);
        }
        if text == b"-" {
            return None;
        }
        if text.starts_with(b"--") {
            let name = a.to_str()?;
            let key = name.split('=').next().unwrap_or(name);
            if syn.long_no_script.contains(&key) {
                return None;
            }
            if syn.long_takes_arg.contains(&key) && !name.contains('=') {
                args.next();
            }
            continue;
        }
        // Shells take `+o option` as well as `-o option`.
        if !(text.starts_with(b"-") || text.starts_with(b"+")) {
            return Some(a.as_os_str());
        }
        for (i, &c) in text.iter().enumerate().skip(1) {
            if syn.no_script.as_bytes().contains(&c) {
                return None;
            }
            if syn.takes_arg.as_bytes().contains(&c) {
                if i + 1 == text.len() {
                    args.next();
                }
                break;
            }
        }
    }
    None
}

/// `path` without `.` components (`..` is left: a symbolic link may stand
/// before it).
fn tidy(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

/// The script process `pid` (running `exe`) was started on, if it is an
/// interpreter given a script file. `None` also when the process's command
/// line, directory or root cannot be read.
pub fn script_of(pid: i32, exe: &Path) -> Option<Script> {
    let syn = syntax(exe)?;
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let argv: Vec<OsString> = cmdline
        .split(|&b| b == 0)
        .map(|w| OsStr::from_bytes(w).to_os_string())
        .collect();
    let arg = Path::new(script_arg(syn, argv.get(1..)?)?);
    let root_dir = PathBuf::from(format!("/proc/{pid}/root"));
    let root = in_root::Root::new(root_dir.clone());
    // `name`: the script as the process names it from its root, where
    // that can be told.
    let (path, real, name) = if arg.is_absolute() {
        let rel = arg.strip_prefix("/").unwrap_or(arg);
        (tidy(arg), root_dir.join(rel), Some(arg.to_path_buf()))
    } else {
        let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        // Both links name from the scanner's root: the working directory
        // inside the process's root is the part after the root's name,
        // if that name still leads to it (a directory renamed or removed
        // since is reached through /proc/PID/cwd alone).
        let cwd_inside = fs::read_link(&root_dir)
            .ok()
            .and_then(|r| cwd.strip_prefix(&r).ok().map(|c| Path::new("/").join(c)))
            .filter(|c| {
                let seen = root.reach(c).and_then(|r| identity::facts(r.path()));
                let held = identity::facts(Path::new(&format!("/proc/{pid}/cwd")));
                matches!((seen, held), (Ok(a), Ok(b)) if a.id == b.id)
            });
        (
            tidy(&cwd.join(arg)),
            PathBuf::from(format!("/proc/{pid}/cwd")).join(arg),
            cwd_inside.map(|c| c.join(arg)),
        )
    };
    // A descriptor or kernel file (`bash <(…)` runs `bash /dev/fd/63`):
    // no file on disk whose replacement matters, and /dev/fd reached
    // through /proc/PID/root is the reader's own descriptors, not the
    // process's.
    if path.starts_with("/dev") || path.starts_with("/proc") {
        return None;
    }
    let now = match &name {
        Some(name) => root.reach(name).and_then(|r| identity::facts(r.path())),
        None => identity::facts(&real),
    };
    let held = held(pid, &path, now.as_ref().ok().map(|f| f.id));
    Some(Script {
        path,
        real,
        now,
        held,
    })
}

/// The descriptor the process reads the script from: one that holds the
/// file now at the path, or else one whose target is the path with the
/// kernel's ` (deleted)` mark and whose file has no link left (a file
/// merely named so has links).
fn held(pid: i32, path: &Path, now: Option<FileId>) -> Option<Held> {
    let mut unlinked = path.as_os_str().to_os_string();
    unlinked.push(" (deleted)");
    let mut by_name = None;
    for entry in fs::read_dir(format!("/proc/{pid}/fd")).ok()?.flatten() {
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        if target != path && target.as_os_str() != unlinked {
            continue;
        }
        let Ok(file) = fs::metadata(entry.path()) else {
            continue;
        };
        if now == Some(FileId::of(&file)) {
            return Some(Held { fd, file });
        }
        if file.nlink() == 0 && by_name.is_none() {
            by_name = Some(Held { fd, file });
        }
    }
    by_name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arg(syn: &Syntax, words: &[&str]) -> Option<String> {
        let argv: Vec<OsString> = words.iter().map(OsString::from).collect();
        script_arg(syn, &argv).map(|a| a.to_string_lossy().into_owned())
    }

    #[test]
    fn options_are_skipped_and_inline_code_has_no_script() {
        assert_eq!(
            arg(&PYTHON, &["-u", "-O", "a.py", "-c"]).as_deref(),
            Some("a.py")
        );
        assert_eq!(
            arg(&PYTHON, &["-W", "error", "a.py"]).as_deref(),
            Some("a.py")
        );
        assert_eq!(arg(&PYTHON, &["-Werror", "a.py"]).as_deref(), Some("a.py"));
        assert_eq!(arg(&PYTHON, &["-uc", "print(1)"]), None);
        assert_eq!(arg(&PYTHON, &["-m", "http.server"]), None);
        assert_eq!(arg(&PERL, &["-w", "-e", "1"]), None);
        assert_eq!(arg(&PERL, &["-I", "lib", "x.pl"]).as_deref(), Some("x.pl"));
        assert_eq!(
            arg(&NODE, &["--require", "m", "app.js"]).as_deref(),
            Some("app.js")
        );
        assert_eq!(arg(&NODE, &["--eval=1"]), None);
        assert_eq!(
            arg(&SHELL, &["-e", "+o", "posix", "s.sh"]).as_deref(),
            Some("s.sh")
        );
        assert_eq!(arg(&SHELL, &["-c", "sleep 1", "s.sh"]), None);
        assert_eq!(arg(&SHELL, &["--", "-s.sh"]).as_deref(), Some("-s.sh"));
        assert_eq!(arg(&SHELL, &[]), None);
    }

    #[test]
    fn the_interpreter_is_named_by_its_executable() {
        assert!(syntax(Path::new("/usr/bin/python3.11")).is_some());
        assert!(syntax(Path::new("/usr/bin/dash (deleted)")).is_some());
        assert!(syntax(Path::new("/usr/bin/sleep")).is_none());
        assert!(syntax(Path::new("/usr/bin/pythonista")).is_none());
    }
}
