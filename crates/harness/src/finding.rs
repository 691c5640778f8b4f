//! What a finding is: its ID, the claim, where the claim comes from, the
//! steps, the experiment that observes and judges it, which C libraries it
//! runs on, and what it needs of the machine. swaplab's own findings
//! (swaplab's `findings`) and anyone else's are made of this.
//!
//! ```no_run
//! use swaplab_harness::finding::{Finding, Scope};
//! use swaplab_harness::lab::Lab;
//! use swaplab_harness::process::Program;
//! use swaplab_harness::replace::Replace;
//! use swaplab_harness::variants::Variant;
//!
//! static X02: Finding = Finding {
//!     id: "X02", // outside swaplab's series (L, U, G, D)
//!     slug: "a_started_process_maps_the_library_on_disk",
//!     claim: "A process started on a library maps the file on disk, none (deleted).",
//!     source: "ld.so(8)",
//!     steps: &["install v1; start A; show A's maps"],
//!     experiment: x02,
//!     scope: Scope::AnyLibc, // the same on glibc and musl
//!     // The rest as most findings have it: the same on musl and on every
//!     // kernel measured, no needs, no lesson.
//!     ..Finding::DEFAULTS
//! };
//!
//! fn x02(lab: &mut Lab) -> anyhow::Result<()> {
//!     let inode = lab.put_lib(Variant::V1, Replace::Install)?; // narrated as `install …`
//!     let a = lab.start(Program::Plain, "A")?;
//!     let maps = lab.maps(a.pid())?; // narrated, and part of the /proc snapshot
//!     lab.check(
//!         "A maps the file on disk, none (deleted)",
//!         !maps.is_empty() && maps.iter().all(|m| m.inode == inode && !m.deleted),
//!         format!("{} mappings", maps.len()),
//!     );
//!     Ok(())
//! }
//! ```
//!
//! [`crate::prove`] proves it in a test; `examples/own_finding.rs`
//! is a whole one.

use anyhow::Result;
use serde::Serialize;

use crate::lab::Lab;
use crate::runtime::{Libc, Runtime};

/// The experiment: observes on the [`Lab`] and judges with its checks. An
/// `Err` is a failure of the harness (a deadline, a file that could not be
/// written): the verdict is Error, not Refuted.
pub type Experiment = fn(&mut Lab) -> Result<()>;

/// Which C libraries a finding runs on (see [`crate::runtime`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Scope {
    /// Every C library, with the C twins of the targets; the same claim holds
    /// on each.
    AnyLibc,
    /// Every C library; the loaders differ, and the experiment checks each
    /// one's own expectation ([`Finding::musl`] for musl).
    PerLibc,
    /// One C library's behaviour only.
    Only(Libc),
    /// Needs swaplab's own Rust programs (servers, the tools compared by
    /// D01): runs on the host's C library only. What it shows is the
    /// kernel's, not the loader's.
    Host,
}

/// Something a finding needs of the machine, declared once with the finding
/// and checked before its experiment runs: without it the finding is
/// Skipped, with the reason and the command that would enable it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Need {
    /// Root, and why.
    Root(&'static str),
    /// An installed program, and the Debian package that brings it.
    Tool {
        program: &'static str,
        package: &'static str,
    },
    /// Network namespaces of its own, and what it does in them.
    NetNs(&'static str),
    /// IPv6 in this kernel.
    Ipv6,
    /// An unprivileged user besides the one running the experiment
    /// (`swaplab`, else `nobody`).
    SecondUser,
    /// The roots `swaplab matrix --debian` builds, of these releases.
    DebianRoots(&'static [&'static str]),
    /// A user and mount namespace of its own ([`crate::userns`]),
    /// which this kernel may refuse to an unprivileged user.
    UserNamespaces,
    /// Not a lack, a dependence: its outcome can depend on the filesystem
    /// under its sandbox (the files it replaces, their inodes, times and
    /// the detector's identity of them). Every machine has one, so the
    /// check always passes; `swaplab matrix --fs` runs the findings that
    /// declare it on fresh filesystems, and no other.
    Filesystem,
}

/// Why a finding cannot run here, and what would let it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    pub reason: String,
    pub enable: String,
}

/// The unprivileged user experiments switch to: `swaplab` if it exists,
/// else `nobody`.
pub fn second_user() -> Option<nix::unistd::User> {
    ["swaplab", "nobody"]
        .iter()
        .find_map(|n| nix::unistd::User::from_name(n).ok().flatten())
}

impl Need {
    /// What `swaplab list` says a finding needs.
    pub fn short(&self) -> String {
        match self {
            Need::Root(_) => "root".into(),
            Need::Tool { program, .. } => (*program).into(),
            Need::NetNs(_) => "root (netns)".into(),
            Need::Ipv6 => "IPv6".into(),
            Need::SecondUser => "a second user".into(),
            Need::DebianRoots(r) => format!("Debian roots ({})", r.join(", ")),
            Need::UserNamespaces => "user namespaces".into(),
            Need::Filesystem => "the filesystem under its sandbox".into(),
        }
    }

    /// Whether this machine has it, for finding `id`.
    pub fn check(&self, id: &str) -> std::result::Result<(), Missing> {
        let as_root = || {
            format!(
                "run as root: sudo swaplab run {id} (or sudo -E env PATH=\"$PATH\" cargo test {})",
                id.to_ascii_lowercase()
            )
        };
        let missing = |reason: String, enable: String| Err(Missing { reason, enable });
        match *self {
            Need::Root(why) if !nix::unistd::geteuid().is_root() => missing(
                format!(
                    "needs root: {why} (running as uid {})",
                    nix::unistd::geteuid()
                ),
                as_root(),
            ),
            Need::Tool { program, package }
                if crate::programs::find(program).is_none() =>
            {
                missing(
                    format!("{program} is not installed"),
                    format!("apt-get install -y {package}"),
                )
            }
            Need::NetNs(what) => match crate::netns::NetNs::available() {
                Err(why) => missing(
                    format!("{id} {what} inside network namespaces of its own, which this machine does not allow ({why})"),
                    as_root(),
                ),
                Ok(()) => Ok(()),
            },
            Need::Ipv6 if !std::path::Path::new("/proc/net/if_inet6").exists() => missing(
                "needs IPv6, which this kernel has disabled (no /proc/net/if_inet6)".into(),
                "boot without ipv6.disable=1".into(),
            ),
            Need::SecondUser if second_user().is_none() => missing(
                "no unprivileged user `swaplab` or `nobody` on this machine".into(),
                "useradd --system --no-create-home swaplab".into(),
            ),
            Need::UserNamespaces => match crate::userns::available() {
                Ok(()) => Ok(()),
                Err(why) => missing(
                    format!(
                        "{id} starts processes in a user and mount namespace of their own, which this machine refuses ({why}; {})",
                        crate::userns::WHY_IT_MAY_FAIL
                    ),
                    as_root(),
                ),
            },
            Need::DebianRoots(releases) => {
                let absent: Vec<&str> = releases
                    .iter()
                    .copied()
                    .filter(|r| crate::debian_roots::find(r).is_none())
                    .collect();
                if absent.is_empty() {
                    return Ok(());
                }
                let looked: Vec<String> = crate::debian_roots::candidates()
                    .iter()
                    .map(|d| d.display().to_string())
                    .collect();
                missing(
                    format!(
                        "{id} runs another Debian release's C library, from the roots swaplab matrix builds; \
                         none (with this swaplab's builds) for {} in {}",
                        absent.join(", "),
                        looked.join(", ")
                    ),
                    format!("sudo swaplab matrix --debian {}", releases.join(",")),
                )
            }
            // A dependence, not a lack: every machine has a filesystem.
            Need::Filesystem => Ok(()),
            _ => Ok(()),
        }
    }
}

/// One finding: the claim and the experiment that proves it.
pub struct Finding {
    /// Stable ID (`L04`); it names the lab sheet (`L04.md`) and the
    /// snapshot (`L04_proc.snap`).
    pub id: &'static str,
    /// The claim as a test name reads it, after the lowercase ID.
    pub slug: &'static str,
    /// The claim.
    pub claim: &'static str,
    /// Where the claim comes from (an article, an issue).
    pub source: &'static str,
    /// What the experiment does, step by step.
    pub steps: &'static [&'static str],
    /// The experiment that observes and judges it.
    pub experiment: Experiment,
    /// Which C libraries it runs on.
    pub scope: Scope,
    /// For [`Scope::PerLibc`]: what musl shows instead of the claim.
    pub musl: &'static str,
    /// What older kernels show instead of the claim, where that differs
    /// (measured by `swaplab matrix --kernel`); the experiment checks the
    /// running kernel's own expectation.
    pub older_kernels: &'static [OlderKernels],
    /// What it needs of the machine, checked before the experiment runs.
    pub needs: &'static [Need],
    /// What its lab sheet asks and answers ([`Lesson::NONE`] for a finding
    /// without one).
    pub lesson: Lesson,
}

impl Finding {
    /// The fields most findings leave as they are: every C library the
    /// same (`musl`), every kernel the same (`older_kernels`), no needs and
    /// no lesson. A finding names what differs and ends with
    /// `..Finding::DEFAULTS`.
    pub const DEFAULTS: Finding = Finding {
        id: "",
        slug: "",
        claim: "",
        source: "",
        steps: &[],
        experiment: no_experiment,
        scope: Scope::AnyLibc,
        musl: "",
        older_kernels: &[],
        needs: &[],
        lesson: Lesson::NONE,
    };
}

/// [`Finding::DEFAULTS`]'s experiment: a finding must bring its own.
fn no_experiment(_: &mut crate::lab::Lab) -> anyhow::Result<()> {
    anyhow::bail!("this finding names no experiment")
}

/// A finding as a teacher uses its lab sheet: a title and a question that
/// do not give the answer away (the claim comes after the transcript), and
/// an exercise the transcript answers, with the answer to check against.
/// The sheet's head, answer and exercise are generated from it
/// ([`crate::sheets::lesson_parts`]); `""` where there is none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lesson {
    /// The sheet's title, after the ID: the subject, not the outcome.
    pub title: &'static str,
    /// What to predict before the run (Markdown).
    pub question: &'static str,
    /// A question the transcript answers (Markdown).
    pub exercise: &'static str,
    /// The exercise's answer, as the transcript shows it (Markdown).
    pub answer: &'static str,
}

impl Lesson {
    /// No lesson: a finding whose sheet is prose of its own.
    pub const NONE: Lesson = Lesson {
        title: "",
        question: "",
        exercise: "",
        answer: "",
    };
}

/// A finding's claim on kernels before `before` (major, minor), where it
/// differs from the claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct OlderKernels {
    pub before: (u32, u32),
    pub claim: &'static str,
}

impl Finding {
    /// The older kernels' claim that holds on kernel `version`, if any:
    /// the one with the lowest bound above it.
    pub fn on_kernel(&self, version: (u32, u32)) -> Option<&'static OlderKernels> {
        self.older_kernels
            .iter()
            .filter(|k| version < k.before)
            .min_by_key(|k| k.before)
    }

    /// What the finding expects on `libc` under the running kernel: the
    /// claim, the running kernel's own, or musl's.
    pub fn claim_for(&self, libc: Libc) -> &'static str {
        if let Some(k) = crate::platform::kernel_version().and_then(|v| self.on_kernel(v)) {
            return k.claim;
        }
        match (self.scope, libc) {
            (Scope::PerLibc, Libc::Musl) => self.musl,
            _ => self.claim,
        }
    }

    /// Whether it runs on `rt` at all (and if not, why).
    pub fn runs_on(&self, rt: &Runtime) -> std::result::Result<(), String> {
        match self.scope {
            Scope::Only(l) if l != rt.libc => Err(format!(
                "{} is {}'s behaviour; this column runs {}",
                self.id,
                l.name(),
                rt.libc.name()
            )),
            Scope::Host if rt.twins => Err(format!(
                "{} needs swaplab's own Rust programs, built for the host's C library; \
                 this column has only the C twins of the library targets",
                self.id
            )),
            _ if rt.filesystem.is_some() && !self.depends_on_filesystem() => Err(format!(
                "{}'s outcome does not depend on the filesystem under its sandbox (it replaces \
                 and judges no file there); this column changes only that filesystem ({})",
                self.id,
                rt.filesystem.as_deref().unwrap_or_default()
            )),
            _ => Ok(()),
        }
    }

    /// Whether a column of C library `libc` concerns it at all: a column
    /// that is missing here is reported for the findings it concerns.
    pub fn concerns(&self, libc: Libc) -> bool {
        match self.scope {
            Scope::AnyLibc | Scope::PerLibc => true,
            Scope::Only(l) => l == libc,
            Scope::Host => false,
        }
    }

    /// Whether its outcome can depend on the filesystem under its sandbox
    /// (it declares [`Need::Filesystem`]): `swaplab matrix --fs` runs it on
    /// each filesystem, and marks the others n/a there.
    pub fn depends_on_filesystem(&self) -> bool {
        self.needs.contains(&Need::Filesystem)
    }

    /// Whether this machine has everything it needs (the first thing
    /// missing otherwise).
    pub fn ready(&self) -> std::result::Result<(), Missing> {
        self.needs.iter().try_for_each(|n| n.check(self.id))
    }

    /// The test that proves it: `l04_forked_children_keep_the_old_library`.
    pub fn test_name(&self) -> String {
        format!("{}_{}", self.id.to_ascii_lowercase(), self.slug)
    }

    /// Whether `test` is [`Finding::test_name`]: the index of findings
    /// names each test (a macro cannot build an identifier from a string),
    /// and checks with this, at compile time, that the name is the one the
    /// ID and the slug give.
    pub const fn is_proved_by(&self, test: &str) -> bool {
        let (id, slug, test) = (self.id.as_bytes(), self.slug.as_bytes(), test.as_bytes());
        if test.len() != id.len() + 1 + slug.len() || test[id.len()] != b'_' {
            return false;
        }
        let mut i = 0;
        while i < id.len() {
            if test[i] != id[i].to_ascii_lowercase() {
                return false;
            }
            i += 1;
        }
        let mut j = 0;
        while j < slug.len() {
            if test[id.len() + 1 + j] != slug[j] {
                return false;
            }
            j += 1;
        }
        true
    }

    /// The lab sheet's path, relative to the sheets' folder's parent
    /// (`experiments/L04.md`).
    pub fn sheet(&self) -> String {
        format!("experiments/{}.md", self.id)
    }
}
