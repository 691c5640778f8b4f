//! The guest's initial root: a static busybox, the kernel's modules, the
//! init script (`init.sh`) and the job (what swaplab runs once the host's
//! files are the root), packed as the newc cpio archive the kernel unpacks.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use cpio::newc::ModeFileType;
use cpio::NewcBuilder;

use crate::vm::kernel_package::Kernel;
use crate::vm::modules::ORDER;

const INIT: &str = include_str!("init.sh");

/// The static busybox the guest starts with: the host's dynamically linked
/// one would need the host's libraries before they are mounted.
pub fn static_busybox() -> Result<PathBuf> {
    let missing = || {
        anyhow::anyhow!(
            "no static busybox (apt-get install -y busybox-static): the guest's first process"
        )
    };
    let path = crate::harness::programs::find("busybox").ok_or_else(missing)?;
    if crate::detector::elf::interpreter(&path).is_some() {
        bail!(
            "{} is linked dynamically; the guest needs a static one (apt-get install -y busybox-static)",
            path.display()
        );
    }
    Ok(path)
}

/// A word quoted for sh: the job's command line, whatever the paths hold.
pub fn sh_quote(word: &str) -> String {
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// Writes the archive for `kernel` to `out`; `command` is what init execs,
/// after `switch_root /host`, as the guest's PID 1, and `exe` the swaplab
/// it runs (init checks that the guest sees it).
pub fn write(
    kernel: &Kernel,
    busybox: &Path,
    exe: &str,
    command: &[String],
    out: &Path,
) -> Result<()> {
    let quoted: Vec<String> = command.iter().map(|w| sh_quote(w)).collect();
    let job = format!(
        "exe={}\nrun() {{\n  exec switch_root /host {}\n}}\n",
        sh_quote(exe),
        quoted.join(" ")
    );
    let mut entries: Vec<(NewcBuilder, Cursor<Vec<u8>>)> = Vec::new();
    for dir in ["bin", "proc", "sys", "dev", "host", "modules"] {
        entries.push((
            entry(dir, 0o755, ModeFileType::Directory),
            Cursor::new(Vec::new()),
        ));
    }
    let file = |name: &str, mode: u32, bytes: Vec<u8>| {
        (entry(name, mode, ModeFileType::Regular), Cursor::new(bytes))
    };
    let bb =
        std::fs::read(busybox).with_context(|| format!("cannot read {}", busybox.display()))?;
    entries.push(file("bin/busybox", 0o755, bb));
    entries.push(file("init", 0o755, INIT.as_bytes().to_vec()));
    entries.push(file("job", 0o644, job.into_bytes()));
    let order = std::fs::read_to_string(kernel.modules().join(ORDER))?;
    entries.push(file(
        &format!("modules/{ORDER}"),
        0o644,
        order.clone().into_bytes(),
    ));
    for m in order.lines() {
        let bytes = std::fs::read(kernel.modules().join(m))?;
        entries.push(file(&format!("modules/{m}"), 0o644, bytes));
    }
    let sink =
        std::fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
    let mut written = cpio::write_cpio(entries.into_iter(), std::io::BufWriter::new(sink))?;
    written.flush()?;
    Ok(())
}

fn entry(name: &str, mode: u32, kind: ModeFileType) -> NewcBuilder {
    NewcBuilder::new(name)
        .uid(0)
        .gid(0)
        .mode(mode)
        .set_mode_file_type(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_words_survive_quotes_and_spaces() {
        assert_eq!(sh_quote("/a b/swaplab"), "'/a b/swaplab'");
        assert_eq!(sh_quote("it's"), r"'it'\''s'");
    }
}
