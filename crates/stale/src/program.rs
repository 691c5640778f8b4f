//! `swaplab-stale`'s command line: [`cli::Args`] as a program of its own.
//! The binary parses it; its man page and shell completions are made from
//! it (`swaplab-stale-deb`).

use crate::cli;

/// Which running processes run code that is no longer on disk (an
/// executable or library replaced, removed, or modified in place), and how
/// to restart them.
#[derive(clap::Parser)]
#[command(name = "swaplab-stale", version)]
pub struct Program {
    #[command(flatten)]
    pub args: cli::Args,
}
