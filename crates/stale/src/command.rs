//! What a command returns, shared by `swaplab` and `swaplab-stale`: a
//! command prints its answer and returns [`Done`]; each binary's `main`
//! turns an [`Exit`] into the exit status, in one place.

/// Why a command did not end with status 0.
#[derive(Debug)]
pub enum Exit {
    /// Status 1: the command ran and its answer is no (a finding refuted
    /// or in error, a cell marked, a process to restart, a bench run that
    /// failed); it has printed what it found.
    Failed,
    /// Status 1: the command could not finish its work; the message (on
    /// stderr) says why.
    Aborted(String),
    /// Status 2: bad input (an argument, a report file) or something the
    /// command needs is missing (/proc, an output folder, matrix's root and
    /// debootstrap); the message (on stderr) says which.
    BadInput(String),
    /// Status 2 with nothing more to say: a monitoring plugin's CRITICAL
    /// (`swaplab stale --monitoring-plugin`), whose line is printed.
    Critical,
    /// Status 3 (a monitoring plugin's UNKNOWN): the command ran, and could
    /// not tell (`swaplab stale`: a process or a file it maps could not be
    /// judged); it has printed what it could not judge.
    Unknown,
}

impl Exit {
    /// The process exit status.
    pub fn status(&self) -> u8 {
        match self {
            Exit::Failed | Exit::Aborted(_) => 1,
            Exit::BadInput(_) | Exit::Critical => 2,
            Exit::Unknown => 3,
        }
    }

    /// What to print on stderr, if anything is left to say.
    pub fn message(&self) -> Option<&str> {
        match self {
            Exit::Failed | Exit::Critical | Exit::Unknown => None,
            Exit::Aborted(m) | Exit::BadInput(m) => Some(m),
        }
    }
}

/// What a command returns: `Ok` for status 0.
pub type Done = Result<(), Exit>;

/// [`Exit::Failed`] when `failed`, else success.
pub fn judged(failed: bool) -> Done {
    if failed {
        Err(Exit::Failed)
    } else {
        Ok(())
    }
}

/// Pretty JSON of a value that always serialises (plain data, no maps with
/// non-string keys).
pub fn pretty(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).expect("JSON")
}
