//! Lab sheets (`experiments/ID.md`) and the README's findings table: the
//! prose is written by people, the transcript block and the table are
//! generated from what the experiments show, and the tests fail when they
//! drift. `SWAPLAB_BLESS=1 cargo test` rewrites them from a fresh run.

use std::path::{Path, PathBuf};

use crate::harness::finding::Finding;

pub const BEGIN: &str =
    "<!-- transcript: generated from the experiment; refresh with `SWAPLAB_BLESS=1 cargo test` -->";
pub const END: &str = "<!-- end of transcript -->";
/// The start of a transcript block for another C library than the default
/// (glibc): `<!-- transcript on musl: … -->`.
pub fn begin(block: &str) -> String {
    if block.is_empty() {
        BEGIN.to_string()
    } else {
        format!(
            "<!-- transcript on {block}: generated from the experiment; refresh with `SWAPLAB_BLESS=1 cargo test` -->"
        )
    }
}
pub const TABLE_BEGIN: &str =
    "<!-- findings table: generated; refresh with `SWAPLAB_BLESS=1 cargo test` -->";
pub const TABLE_END: &str = "<!-- end of findings table -->";

/// The repository this swaplab was built from.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Where `f`'s lab sheet is in the sheets' folder `dir`.
pub fn sheet_in(dir: &Path, f: &Finding) -> PathBuf {
    dir.join(format!("{}.md", f.id))
}

/// Whether blessing (rewriting generated parts) was asked for.
pub fn blessing() -> bool {
    std::env::var_os("SWAPLAB_BLESS").is_some_and(|v| v == "1")
}

fn block(begin: &str, lines: &[String]) -> String {
    format!("{begin}\n```console\n{}\n```\n{END}", lines.join("\n"))
}

fn between<'a>(text: &'a str, begin: &str, end: &str) -> Option<(usize, usize, &'a str)> {
    let a = text.find(begin)?;
    let b = a + text[a..].find(end)? + end.len();
    Some((a, b, &text[a..b]))
}

/// The transcript a sheet shows (the default block: glibc's).
pub fn transcript_in(text: &str) -> Option<Vec<String>> {
    transcript_in_block(text, "")
}

/// The transcript of block `block` (`""` for glibc's, `"musl"`).
pub fn transcript_in_block(text: &str, block: &str) -> Option<Vec<String>> {
    let (_, _, blk) = between(text, &begin(block), END)?;
    let inner = blk.split_once("```console\n")?.1.rsplit_once("```")?.0;
    Some(inner.lines().map(str::to_string).collect())
}

/// The sheet text with block `block` replaced by `lines`.
pub fn with_transcript_block(text: &str, name: &str, lines: &[String]) -> Option<String> {
    let head = begin(name);
    let (a, b, _) = between(text, &head, END)?;
    Some(format!(
        "{}{}{}",
        &text[..a],
        block(&head, lines),
        &text[b..]
    ))
}

/// The verdict a sheet's transcript ends with (`verdict: Confirmed`); for a
/// sheet with only a musl block (L10), that one's, marked `(musl)`.
pub fn verdict_in(text: &str) -> Option<String> {
    let last = |lines: Vec<String>| {
        lines
            .iter()
            .rev()
            .find_map(|l| l.strip_prefix("verdict: ").map(str::to_string))
    };
    match transcript_in(text) {
        Some(lines) => last(lines),
        None => last(transcript_in_block(text, "musl")?).map(|v| format!("{v} (musl)")),
    }
}

/// The README's findings table: ID (linked to its sheet), the sheet's title
/// (one short sentence; the claim is on the sheet), and the status the sheet
/// (in the project at `root`) records.
pub fn readme_table<'a>(root: &Path, findings: impl IntoIterator<Item = &'a Finding>) -> String {
    let mut out = vec![
        TABLE_BEGIN.to_string(),
        "| ID | Finding | Status here |".to_string(),
        "|---|---|---|".to_string(),
    ];
    for f in findings {
        let sheet = std::fs::read_to_string(root.join(f.sheet())).ok();
        let mut title = sheet
            .as_deref()
            .and_then(|t| title_in(t, f.id))
            .unwrap_or_else(|| slug_sentence(f.slug))
            .replace('|', "\\|");
        for k in f.older_kernels {
            title.push_str(&format!(
                " (differs before Linux {}.{})",
                k.before.0, k.before.1
            ));
        }
        let status = sheet
            .as_deref()
            .and_then(verdict_in)
            .unwrap_or_else(|| "no sheet yet".into());
        let row = format!("| [{}]({}) | {title} | {status} |", f.id, f.sheet());
        out.push(row);
    }
    out.push(TABLE_END.to_string());
    out.join("\n")
}

/// A sheet's title: its first line, `# L04: Forked children keep the old
/// library`, without the `# L04: `.
pub fn title_in(text: &str, id: &str) -> Option<String> {
    let first = text.lines().next()?;
    let title = first.strip_prefix(&format!("# {id}: "))?.trim();
    (!title.is_empty()).then(|| title.to_string())
}

/// A slug as a sentence, for a finding with no sheet yet:
/// `forked_children_keep_the_old_library` → `Forked children keep the old
/// library`.
fn slug_sentence(slug: &str) -> String {
    let words = slug.replace('_', " ");
    let mut chars = words.chars();
    match chars.next() {
        Some(c) => c.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The README text with its findings table replaced by `table`.
pub fn readme_with_table(text: &str, table: &str) -> Option<String> {
    let (a, b, _) = between(text, TABLE_BEGIN, TABLE_END)?;
    Some(format!("{}{}{}", &text[..a], table, &text[b..]))
}
