//! `swaplab completions SHELL`: the shell's completion script, generated
//! from the same clap definitions as the command line itself.

use crate::commands::Done;

/// Print the completion script for SHELL on stdout.
#[derive(clap::Args)]
#[command(after_help = HELP)]
pub struct Args {
    /// The shell the script is for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

const HELP: &str = "\
Examples:
  swaplab completions bash > /etc/bash_completion.d/swaplab
  swaplab completions zsh > /usr/local/share/zsh/site-functions/_swaplab
  swaplab completions fish > ~/.config/fish/completions/swaplab.fish";

impl Args {
    /// Prints the script for `cli`, the whole command line, without its
    /// hidden commands (`guest`, `fs-column`: only swaplab runs them).
    pub fn run(self, cli: clap::Command) -> Done {
        let shown = cli.get_subcommands().filter(|c| !c.is_hide_set()).cloned();
        let mut cli = clap::Command::new(cli.get_name().to_string())
            .version(cli.get_version().unwrap_or_default().to_string())
            .subcommands(shown.collect::<Vec<_>>());
        let mut script = Vec::new();
        clap_complete::generate(self.shell, &mut cli, "swaplab", &mut script);
        print!("{}", String::from_utf8_lossy(&script));
        Ok(())
    }
}
