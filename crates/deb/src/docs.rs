//! The man page and the shell completions, from `swaplab-stale`'s own
//! clap definitions: they cannot say other than `--help` does.

use std::io::Write;

use anyhow::Result;
use clap::CommandFactory;
use clap_complete::Shell;
use flate2::{Compression, GzBuilder};

use swaplab_stale::program::Program;

/// `swaplab-stale.1`, compressed as Debian ships man pages (`gzip -9n`:
/// no name, no time, so the same source gives the same bytes).
pub fn man_page() -> Result<Vec<u8>> {
    let mut roff = Vec::new();
    clap_mangen::Man::new(Program::command()).render(&mut roff)?;
    let mut gz = GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), Compression::best());
    gz.write_all(&roff)?;
    Ok(gz.finish()?)
}

/// The completion script for `shell`.
pub fn completion(shell: Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Program::command(), "swaplab-stale", &mut out);
    out
}
