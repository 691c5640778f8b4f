//! swaplab's findings. Each module holds a series: every finding's
//! definition (ID, claim, steps, scope, needs) sits right above the
//! experiment that observes and judges it. `index.rs` lists them once, with
//! the name of the test that proves each: the tests, the CLI, the JSON
//! report, the README table and the lab sheets all read this.

use crate::harness::finding::{Finding, Need};

/// Article 000 (`shared/seeds/`).
pub const SHARED_LIBRARY_UPDATE: &str =
    "000: when must a process be restarted after a shared library update";
/// Article 001.
pub const NGINX_UPGRADE: &str = "001: nginx, upgrading the executable on the fly";
/// Article 002.
pub const GRACEFUL_RESTART: &str = "002: graceful restart by passing the listening socket";
/// Article 000's practical question, answered by swaplab's detector.
pub const DETECTOR: &str = "000's question answered: which running processes must be restarted";

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
