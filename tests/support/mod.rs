//! What every finding test does: find the finding by the ID its test names,
//! and prove it with swaplab's own lab sheets and snapshots
//! ([`swaplab::harness::prove`]).

use swaplab::findings;
use swaplab::harness::prove::Proof;
use swaplab::harness::sheets;

/// Proves the finding `id` (its test is named after it: the index's
/// compile-time check makes sure).
pub fn prove(id: &str) {
    let f = findings::find(id).unwrap_or_else(|| panic!("no finding {id}"));
    Proof::for_project(sheets::repo()).prove(f);
}
