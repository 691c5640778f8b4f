//! The target programs' protocol: the commands they read on stdin
//! ([`Command`], written and parsed here only, by the agent and by the
//! harness's `Lab`), and their answer lines (`greeting pid=N: TEXT`,
//! `ready pid=N gen=G`): how a field is read from one, by the programs and
//! by the experiments.
//!
//! A target prints `ready pid=N` and then obeys one command per line on
//! stdin, answering each with one line that starts with a verb (the
//! command's [`Command::answer`]) and `pid=N`, so the harness can wait for
//! it:
//!
//! | command | answer |
//! |---|---|
//! | `call` | `greeting pid=N: TEXT` (the linked libexample's `greeting()`) |
//! | `fork` | `forked pid=N child=M`; the child prints `greeting pid=M: TEXT` (or, if the program is not linked against libexample, `version pid=M: BUILD`) and waits to be killed |
//! | `spawn` | `spawned pid=N child=M`; the child execs this program with `--hold`: `ready pid=M`, `greeting pid=M: TEXT` |
//! | `exec` | `exec pid=N`, then the new image prints `ready pid=N` |
//! | `kill-children` | `reaped pid=N children=K` |
//! | `open PATH [nodelete] [global] [lazy]` | `opened pid=N h=H handle=0x…` (dlopen) |
//! | `noload PATH` | `noload pid=N loaded=yes h=H handle=0x…` or `noload pid=N loaded=no` |
//! | `callh H` | `greeting pid=N h=H fn=0x…: TEXT` |
//! | `thread H` | the same, called on a new thread, which then waits: `greeting pid=N h=H fn=0x… thread=TID: TEXT` |
//! | `join` | the waiting threads exit and are joined: `joined pid=N threads=K` |
//! | `mopen PATH` | `opened pid=N h=H handle=0x… lmid=K` (dlmopen into a new link-map namespace, glibc only; `error pid=N: dlmopen: …` elsewhere) |
//! | `close H` | `closed pid=N h=H` (dlclose) |
//! | `peek PID` | `peek pid=N of=M ok mappings=K` or `peek pid=N of=M denied: …` |
//! | `version` | `version pid=N: BUILD` (which build of the program runs) |
//! | `remember TEXT` | `remembered pid=N: TEXT` (kept in memory only) |
//! | `recall` | `recall pid=N: TEXT`, or `recall pid=N: (nothing)` |
//! | `pipe [cloexec]` | `pipe pid=N r=FD w=FD cloexec=yes/no` (a pipe kept open) |
//! | `pseudo` | `pseudo pid=N memfd=… sysv=… devzero=… anon=…`: maps, executable, a memfd, a SysV shared memory segment, `/dev/zero` shared, and anonymous memory (what `swaplab stale` must not report) |
//! | `map PATH` | `mapped pid=N` (PATH mapped read-only, as data) |
//! | `exit` | `bye pid=N`, children killed, exit 0 |
//! | `iconv TO FROM` | the C twin only: `iconv pid=N ok bytes=K` or `iconv pid=N failed: TEXT` |
//! | `user NAME` | the C twin only: `user pid=N name=NAME uid=U` or `user pid=N name=NAME missing: TEXT` |
//!
//! Failures answer `error pid=N: …`. `csrc/target.c`, the agent's C twin,
//! obeys the same words: keep the two in step (a test checks that the twin
//! knows every word).
//!
//! It is a package of its own so that both sides can stand on it: the
//! target programs (in `swaplab`) and the harness (`swaplab-harness`),
//! neither importing the other. [`sentinel`] holds what the harness tells
//! the sentinel program, and the limits it waits by.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, Result};

pub mod sentinel;

/// A command of the target programs: one line on their stdin. Its
/// [`Display`](fmt::Display) is the line sent (and shown in transcripts as
/// `[P] < fork`), [`Command::parse`] reads one back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `call`: libexample's `greeting()`, as linked at start-up.
    Call,
    /// `version`: which build of the program runs.
    Version,
    /// `remember TEXT`: keep TEXT in memory.
    Remember(String),
    /// `recall`: what `remember` kept.
    Recall,
    /// `pipe [cloexec]`: a pipe kept open.
    Pipe { cloexec: bool },
    /// `fork`: a child that says hello and waits.
    Fork,
    /// `spawn`: a child that execs the program with `--hold`.
    Spawn,
    /// `exec`: the program execs itself.
    Exec,
    /// `kill-children`: every child is killed and reaped.
    KillChildren,
    /// `open PATH [nodelete] [global] [lazy]`: dlopen.
    Open(PathBuf, Vec<OpenFlag>),
    /// `noload PATH`: dlopen with RTLD_NOLOAD.
    NoLoad(PathBuf),
    /// `callh H`: `greeting()` through handle H.
    CallH(u32),
    /// `thread H`: the same on a new thread that waits for `join`.
    Thread(u32),
    /// `join`: the waiting threads exit.
    Join,
    /// `mopen PATH`: dlmopen into a new namespace.
    MOpen(PathBuf),
    /// `close H`: dlclose.
    Close(u32),
    /// `peek PID`: read another process's maps.
    Peek(i32),
    /// `pseudo`: map what `swaplab stale` must not report.
    Pseudo,
    /// `map PATH`: PATH mapped read-only, as data.
    Map(PathBuf),
    /// `exit`: children killed, goodbye.
    Exit,
    /// `iconv TO FROM` (the C twin only).
    Iconv { to: String, from: String },
    /// `user NAME` (the C twin only).
    User(String),
}

/// An option of `open`: a dlopen flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenFlag {
    /// `nodelete`: RTLD_NODELETE.
    NoDelete,
    /// `global`: RTLD_GLOBAL.
    Global,
    /// `lazy`: RTLD_LAZY instead of RTLD_NOW.
    Lazy,
}

impl OpenFlag {
    /// Its word on the command line.
    pub fn word(self) -> &'static str {
        match self {
            OpenFlag::NoDelete => "nodelete",
            OpenFlag::Global => "global",
            OpenFlag::Lazy => "lazy",
        }
    }

    /// The option its word names.
    pub fn parse(word: &str) -> Result<OpenFlag, String> {
        [OpenFlag::NoDelete, OpenFlag::Global, OpenFlag::Lazy]
            .into_iter()
            .find(|o| o.word() == word)
            .ok_or_else(|| format!("unknown open option `{word}`"))
    }
}

impl Command {
    /// Its word, the first on the line: `kill-children`.
    pub fn word(&self) -> &'static str {
        match self {
            Command::Call => "call",
            Command::Version => "version",
            Command::Remember(_) => "remember",
            Command::Recall => "recall",
            Command::Pipe { .. } => "pipe",
            Command::Fork => "fork",
            Command::Spawn => "spawn",
            Command::Exec => "exec",
            Command::KillChildren => "kill-children",
            Command::Open(..) => "open",
            Command::NoLoad(_) => "noload",
            Command::CallH(_) => "callh",
            Command::Thread(_) => "thread",
            Command::Join => "join",
            Command::MOpen(_) => "mopen",
            Command::Close(_) => "close",
            Command::Peek(_) => "peek",
            Command::Pseudo => "pseudo",
            Command::Map(_) => "map",
            Command::Exit => "exit",
            Command::Iconv { .. } => "iconv",
            Command::User(_) => "user",
        }
    }

    /// The verb its answer starts with (`reaped pid=N children=K`), or
    /// `error pid=N: …` when it fails.
    pub fn answer(&self) -> &'static str {
        match self {
            Command::Call | Command::CallH(_) | Command::Thread(_) => "greeting",
            Command::Remember(_) => "remembered",
            Command::Fork => "forked",
            Command::Spawn => "spawned",
            Command::KillChildren => "reaped",
            Command::Open(..) | Command::MOpen(_) => "opened",
            Command::Join => "joined",
            Command::Close(_) => "closed",
            Command::Map(_) => "mapped",
            Command::Exit => "bye",
            Command::Version
            | Command::Recall
            | Command::Pipe { .. }
            | Command::Exec
            | Command::NoLoad(_)
            | Command::Peek(_)
            | Command::Pseudo
            | Command::Iconv { .. }
            | Command::User(_) => self.word(),
        }
    }

    /// Reads a command line: `Ok(None)` for a blank line, `Err` with the
    /// words of the `error pid=N: …` answer for one that is not a command.
    pub fn parse(line: &str) -> Result<Option<Command>, String> {
        let w: Vec<&str> = line.split_whitespace().collect();
        let Some(&word) = w.first() else {
            return Ok(None);
        };
        let arg = |i: usize| -> Result<&str, String> {
            w.get(i)
                .copied()
                .ok_or_else(|| format!("`{word}` needs an argument"))
        };
        let handle = |i: usize| -> Result<u32, String> {
            let s = arg(i)?;
            s.parse().map_err(|_| format!("bad handle `{s}`"))
        };
        let path = |i: usize| arg(i).map(PathBuf::from);
        Ok(Some(match word {
            "call" => Command::Call,
            "version" => Command::Version,
            "remember" => Command::Remember(w[1..].join(" ")),
            "recall" => Command::Recall,
            "pipe" => match &w[1..] {
                [] => Command::Pipe { cloexec: false },
                ["cloexec"] => Command::Pipe { cloexec: true },
                opts => return Err(format!("unknown pipe options {opts:?}")),
            },
            "fork" => Command::Fork,
            "spawn" => Command::Spawn,
            "exec" => Command::Exec,
            "kill-children" => Command::KillChildren,
            "open" => Command::Open(
                path(1)?,
                w[2..]
                    .iter()
                    .map(|o| OpenFlag::parse(o))
                    .collect::<Result<_, _>>()?,
            ),
            "noload" => Command::NoLoad(path(1)?),
            "callh" => Command::CallH(handle(1)?),
            "thread" => Command::Thread(handle(1)?),
            "join" => Command::Join,
            "mopen" => Command::MOpen(path(1)?),
            "close" => Command::Close(handle(1)?),
            "peek" => Command::Peek(arg(1)?.parse().map_err(|_| "bad pid".to_string())?),
            "pseudo" => Command::Pseudo,
            "map" => Command::Map(path(1)?),
            "exit" => Command::Exit,
            "iconv" => Command::Iconv {
                to: arg(1)?.to_string(),
                from: arg(2)?.to_string(),
            },
            "user" => Command::User(arg(1)?.to_string()),
            other => return Err(format!("unknown command `{other}`")),
        }))
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())?;
        match self {
            Command::Remember(text) if !text.is_empty() => write!(f, " {text}"),
            Command::Pipe { cloexec: true } => f.write_str(" cloexec"),
            Command::Open(path, flags) => {
                write!(f, " {}", path.display())?;
                flags.iter().try_for_each(|o| write!(f, " {}", o.word()))
            }
            Command::NoLoad(path) | Command::MOpen(path) | Command::Map(path) => {
                write!(f, " {}", path.display())
            }
            Command::CallH(h) | Command::Thread(h) | Command::Close(h) => write!(f, " {h}"),
            Command::Peek(pid) => write!(f, " {pid}"),
            Command::Iconv { to, from } => write!(f, " {to} {from}"),
            Command::User(name) => write!(f, " {name}"),
            _ => Ok(()),
        }
    }
}

/// The text after `": "` in an answer line.
pub fn after_colon(line: &str) -> String {
    line.split_once(": ")
        .map(|(_, t)| t.to_string())
        .unwrap_or_default()
}

/// The value of `key=value` in an answer line.
pub fn field(line: &str, key: &str) -> Result<String> {
    let want = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&want))
        .map(|v| v.trim_end_matches(':').to_string())
        .ok_or_else(|| anyhow::anyhow!("no `{key}=` in `{line}`"))
}

/// The number `key=N` in an answer line.
pub fn field_u32(line: &str, key: &str) -> Result<u32> {
    field(line, key)?
        .parse()
        .with_context(|| format!("`{key}` in `{line}` is not a number"))
}

/// The signed number `key=N` in an answer line.
pub fn field_i32(line: &str, key: &str) -> Result<i32> {
    field(line, key)?
        .parse()
        .with_context(|| format!("`{key}` in `{line}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::{Command, OpenFlag};
    use std::path::PathBuf;

    /// One of each command, with arguments.
    fn every() -> Vec<Command> {
        let lib = || PathBuf::from("lib/libexample.so");
        vec![
            Command::Call,
            Command::Version,
            Command::Remember("the flag is set".into()),
            Command::Recall,
            Command::Pipe { cloexec: false },
            Command::Pipe { cloexec: true },
            Command::Fork,
            Command::Spawn,
            Command::Exec,
            Command::KillChildren,
            Command::Open(lib(), vec![]),
            Command::Open(
                lib(),
                vec![OpenFlag::NoDelete, OpenFlag::Global, OpenFlag::Lazy],
            ),
            Command::NoLoad(lib()),
            Command::CallH(1),
            Command::Thread(2),
            Command::Join,
            Command::MOpen(lib()),
            Command::Close(3),
            Command::Peek(42),
            Command::Pseudo,
            Command::Map(lib()),
            Command::Exit,
            Command::Iconv {
                to: "UTF-16".into(),
                from: "UTF-8".into(),
            },
            Command::User("root".into()),
        ]
    }

    #[test]
    fn every_command_reads_back_as_it_is_written() {
        for c in every() {
            assert_eq!(Command::parse(&c.to_string()), Ok(Some(c.clone())), "{c}");
        }
        assert_eq!(Command::parse("  "), Ok(None));
        assert_eq!(
            Command::parse("open lib/x.so eager"),
            Err("unknown open option `eager`".to_string())
        );
        assert_eq!(
            Command::parse("callh"),
            Err("`callh` needs an argument".to_string())
        );
    }

    #[test]
    fn the_c_twin_obeys_every_word() {
        let twin = include_str!("../../../csrc/target.c");
        for c in every() {
            let word = format!("\"{}\"", c.word());
            assert!(twin.contains(&word), "csrc/target.c does not know {word}");
        }
    }
}
