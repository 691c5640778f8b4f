//! What every finding test does: find the finding the test is named after,
//! and prove it with swaplab's own lab sheets and snapshots
//! ([`swaplab::harness::prove`]).

use swaplab::findings;
use swaplab::harness::finding::Finding;
use swaplab::harness::prove::Proof;
use swaplab::harness::sheets;

/// The finding a test proves, from its name (`l04_…` → L04); the name must be
/// the one the finding's definition gives.
fn finding_of(test: &str) -> &'static Finding {
    let id = test.split('_').next().unwrap_or_default();
    let f = findings::find(id).unwrap_or_else(|| panic!("no finding {id} for test {test}"));
    assert_eq!(
        test,
        f.test_name(),
        "the test for {} must be named after its definition in src/findings/",
        f.id
    );
    f
}

/// Proves the finding the test `test` is named after.
pub fn prove(test: &str) {
    Proof::for_project(sheets::repo()).prove(finding_of(test));
}
