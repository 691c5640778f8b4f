//! `swaplab list`: every finding, whether it runs here, and its claim.

use crate::commands::{first_sentence, pretty, Done};
use crate::findings;
use crate::harness::finding::{Finding, Scope};
use crate::harness::runtime::Runtime;

/// Whether a finding runs on this machine, and if not, why: what it
/// declares it needs, checked as the run checks it.
pub fn readiness(f: &Finding) -> String {
    if let Scope::Only(libc) = f.scope {
        let here = Runtime::available()
            .into_iter()
            .any(|c| c.is_ok_and(|r| r.libc == libc));
        if !here {
            return format!("skips here: needs {}", libc.name());
        }
    }
    match f.needs.iter().find(|n| n.check(f.id).is_err()) {
        Some(need) => format!("skips here: needs {}", need.short()),
        None => "runs".into(),
    }
}

/// List every finding: ID, whether it runs here, and the claim.
#[derive(clap::Args)]
pub struct Args {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    /// Prints the findings as a table, or as JSON.
    pub fn run(self) -> Done {
        if self.json {
            let rows: Vec<_> = findings::all()
                .map(|f| {
                    serde_json::json!({
                        "id": f.id,
                        "claim": f.claim,
                        "article": f.source,
                        "test": f.test_name(),
                        "scope": f.scope,
                        // Whether `swaplab matrix --fs` runs it on each filesystem.
                        "depends_on_filesystem": f.depends_on_filesystem(),
                        "status": readiness(f),
                    })
                })
                .collect();
            println!("{}", pretty(&rows));
            return Ok(());
        }
        println!("{:<4}  {:<28}  CLAIM", "ID", "STATUS HERE");
        for f in findings::all() {
            println!(
                "{:<4}  {:<28}  {}",
                f.id,
                readiness(f),
                first_sentence(f.claim, 100)
            );
        }
        Ok(())
    }
}
