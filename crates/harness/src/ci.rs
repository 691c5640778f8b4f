//! What CI demands of a run: on CI every finding must run, except what
//! `SWAPLAB_ALLOW_SKIP` lists.

/// Whether this runs on CI (`CI` set, and not to `false` or `0`).
pub fn on_ci() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether `what` (a finding ID, a column such as `musl`, or a tool such as
/// `needrestart`) may be missing on CI: `SWAPLAB_ALLOW_SKIP` lists them,
/// comma-separated, for distributions that do not package something (the
/// workflow sets it per distribution). Elsewhere on CI every finding must run.
pub fn may_skip(what: &str) -> bool {
    std::env::var("SWAPLAB_ALLOW_SKIP")
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .any(|w| {
            what.eq_ignore_ascii_case(w)
                || what
                    .split_whitespace()
                    .next()
                    .is_some_and(|first| first.eq_ignore_ascii_case(w))
        })
}
