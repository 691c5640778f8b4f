//! swaplab's findings, one file per finding (a series of several is a
//! folder, with what its findings share in `common.rs`): every finding's
//! definition (ID, claim, steps, scope, needs) sits right above the
//! experiment that observes and judges it. `index.rs` lists them once, with
//! the name of the test that proves each: the tests, the CLI, the JSON
//! report, the README table and the lab sheets all read this.

use crate::harness::finding::{Finding, Need};
use crate::harness::sheets::Series;

/// Article 000 (`shared/seeds/`).
pub const SHARED_LIBRARY_UPDATE: &str =
    "000: when must a process be restarted after a shared library update";
/// Article 001.
pub const NGINX_UPGRADE: &str = "001: nginx, upgrading the executable on the fly";
/// Article 002.
pub const GRACEFUL_RESTART: &str = "002: graceful restart by passing the listening socket";
/// Article 000's practical question, answered by swaplab's detector.
pub const DETECTOR: &str = "000's question answered: which running processes must be restarted";

/// The series, in the order the lab sheets are read (their index,
/// `experiments/README.md`): a finding belongs to the one its ID starts
/// with.
pub const SERIES: &[Series] = &[
    Series {
        prefix: "L",
        name: "Libraries replaced under running processes",
        about: "Article 000, *when must a process be restarted after a shared library update*, then what it left out: the loader's `dlopen`, `LD_PRELOAD`, sonames, pinned libraries, `dlmopen`, symbol versions and the C library itself. v1 of the test library greets `Hell World` (misspelt on purpose, so that the versions differ) and v2 `Hello World`.",
    },
    Series {
        prefix: "U",
        name: "Upgrading the executable on the fly",
        about: "Article 001, *nginx: upgrading the executable on the fly*: what fork and execve keep, and the master/worker upgrade with USR2, WINCH and QUIT, on swaplab's own server and on real nginx.",
    },
    Series {
        prefix: "G",
        name: "Graceful restart by passing the listening socket",
        about: "Article 002, *graceful restart by passing the listening socket*: what clients see when a server is replaced, from stop/start to SCM_RIGHTS, then keep-alive connections, UDP and the reloads of real servers.",
    },
    Series {
        prefix: "D",
        name: "Which running processes must be restarted",
        about: "Article 000's practical question answered by swaplab's detector, `swaplab stale`, and judged against the tools people use, on every case the other series show and after a real dpkg or rpm upgrade.",
    },
];

/// What the findings on real nginx need.
pub const NGINX: Need = Need::Tool {
    program: "nginx",
    package: "nginx",
};

/// Declares each series' module and lists its findings in order, each with
/// the test that proves it; `tests/findings.rs` reads the same index and
/// makes one test of each line.
macro_rules! index {
    ($($(#[$doc:meta])* $module:ident { $($id:ident $test:ident),+ $(,)? })+) => {
        $($(#[$doc])* pub mod $module;)+

        /// Every finding, in the order of the index.
        static ALL: &[&Finding] = &[$($(&$module::$id),+),+];

        // Each line's test is the one its finding names (its ID, `_`, its
        // slug): a line that disagrees does not compile.
        $($(const _: () = assert!(
            $module::$id.is_proved_by(stringify!($test)),
            concat!(
                "src/findings/index.rs: ",
                stringify!($test),
                " is not the lowercase ID, `_` and the slug of ",
                stringify!($id)
            )
        );)+)+
    };
}

include!("index.rs");

/// The start loop L11 and L15 count failed starts with.
mod start_loop;

/// Every finding, in the order of the index.
pub fn all() -> impl Iterator<Item = &'static Finding> {
    ALL.iter().copied()
}

/// Looks a finding up by ID, case-insensitively.
pub fn find(id: &str) -> Option<&'static Finding> {
    all().find(|f| f.id.eq_ignore_ascii_case(id))
}
