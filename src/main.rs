//! `swaplab`: run the findings and narrate them. This file is the command
//! line's top: the list of commands, and the one place that turns a
//! command's [`Exit`](swaplab::commands::Exit) into the exit status. Each
//! command's arguments, help and work are in its module of
//! `swaplab::commands`.

use std::process::ExitCode;
use std::sync::atomic::Ordering;

use clap::{CommandFactory, Parser, Subcommand};

use swaplab::commands::{self, Done};
use swaplab::harness::{process, sandbox};

#[derive(Parser)]
#[command(
    name = "swaplab",
    version,
    about = "Shows what happens to running processes when the code under them is replaced",
    after_help = "Examples:\n  swaplab list\n  swaplab run L04\n  swaplab run --all\n  swaplab run --all --json > report.json"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The commands, in the order of `swaplab --help`; each one's help is its
/// `Args`' own.
#[derive(Subcommand)]
enum Command {
    List(commands::list::Args),
    Run(commands::run::Args),
    Compare(commands::compare::Args),
    Matrix(commands::matrix::Args),
    Guest(commands::guest::Args),
    FsColumn(commands::matrix::fs::ColumnArgs),
    Stale(commands::stale::Args),
    Bench(commands::bench::Args),
    Completions(commands::completions::Args),
    Man(commands::man::Args),
}

impl Command {
    fn run(self) -> Done {
        match self {
            Command::List(a) => a.run(),
            Command::Run(a) => a.run(),
            Command::Compare(a) => a.run(),
            Command::Matrix(a) => a.run(),
            Command::Guest(a) => a.run(),
            Command::FsColumn(a) => a.run(),
            Command::Stale(a) => a.run(),
            Command::Bench(a) => a.run(),
            Command::Completions(a) => a.run(Cli::command()),
            Command::Man(a) => a.run(Cli::command()),
        }
    }
}

fn main() -> ExitCode {
    let command = swaplab::detector::plugin::parse_args::<Cli>().command;
    let done = match command {
        // The guest's first process forks before anything else: no handler
        // thread may be lost in its child (see commands::guest). An fs
        // column sets TMPDIR, which only a process without threads may do.
        Command::Guest(_) | Command::FsColumn(_) => command.run(),
        command => run_interruptible(command),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(exit) => {
            if let Some(why) = exit.message() {
                eprintln!("{why}");
            }
            ExitCode::from(exit.status())
        }
    }
}

/// Runs `command` so that Ctrl-C or a TERM kills the targets and removes
/// the sandboxes before leaving (targets also die with us through
/// PR_SET_PDEATHSIG), and a reader that leaves early ends it quietly.
fn run_interruptible(command: Command) -> Done {
    if let Err(e) = ctrlc::set_handler(|| {
        process::INTERRUPTED.store(true, Ordering::SeqCst);
        process::kill_all();
        sandbox::remove_all();
        eprintln!("swaplab: interrupted; targets killed, sandboxes removed");
        std::process::exit(130);
    }) {
        eprintln!("swaplab: cannot install the interrupt handler: {e}");
    }
    leave_quietly_when_stdout_closes();
    let done = command.run();
    // Interrupted: the handler kills, removes and exits 130; this thread's
    // work failing meanwhile (a column killed under it) is no answer.
    while process::INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::park();
    }
    done
}

/// `swaplab list | head`: once the reader has gone, printing fails with
/// EPIPE (Rust ignores SIGPIPE, so that a reset socket is an error for the
/// load client, not the death of the harness) and `println!` panics. Leave
/// as a Unix filter does instead: targets killed, sandboxes removed, the
/// status a SIGPIPE would give (141), and no panic message. Whether the
/// reader has gone is asked of the kernel (POLLERR on stdout), not read
/// from the panic's words.
fn leave_quietly_when_stdout_closes() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if stdout_reader_gone() {
            process::kill_all();
            sandbox::remove_all();
            std::process::exit(141);
        }
        default(info)
    }));
}

/// Whether stdout is a pipe or socket whose reading end is closed.
fn stdout_reader_gone() -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let stdout = std::io::stdout();
    let mut fds = [PollFd::new(
        std::os::fd::AsFd::as_fd(&stdout),
        PollFlags::empty(),
    )];
    poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLERR | PollFlags::POLLHUP))
}
