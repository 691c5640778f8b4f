//! `swaplab man`: the manual page (roff), generated from the same clap
//! definitions as the command line itself.

use std::path::PathBuf;

use crate::commands::{Done, Exit};

/// Print the manual page (roff) on stdout, or write one per command.
#[derive(clap::Args)]
#[command(after_help = HELP)]
pub struct Args {
    /// Write a page per command into DIR (swaplab.1, swaplab-stale.1, ...)
    /// instead, made if missing.
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
}

const HELP: &str = "\
Examples:
  swaplab man | man -l -
  swaplab man --out /usr/local/share/man/man1";

impl Args {
    /// Prints or writes the pages of `cli`, the whole command line.
    pub fn run(self, cli: clap::Command) -> Done {
        let Some(dir) = self.out else {
            let mut page = Vec::new();
            clap_mangen::Man::new(cli)
                .render(&mut page)
                .map_err(|e| Exit::Aborted(format!("swaplab man: {e}")))?;
            print!("{}", String::from_utf8_lossy(&page));
            return Ok(());
        };
        let bad = |e: std::io::Error| {
            Exit::BadInput(format!(
                "swaplab man: cannot write into {}: {e}",
                dir.display()
            ))
        };
        std::fs::create_dir_all(&dir).map_err(bad)?;
        clap_mangen::generate_to(cli, &dir).map_err(bad)?;
        Ok(())
    }
}
