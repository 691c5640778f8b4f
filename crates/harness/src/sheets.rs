//! Lab sheets (`experiments/ID.md`) and the README's findings table: the
//! prose is written by people, the transcript block and the table are
//! generated from what the experiments show, and the tests fail when they
//! drift. `SWAPLAB_BLESS=1 cargo test` rewrites them from a fresh run.

use std::path::{Path, PathBuf};

use crate::finding::{Finding, Scope};

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

/// The repository this swaplab was built from (this package is
/// `crates/harness` in it).
pub fn repo() -> &'static Path {
    let package = Path::new(env!("CARGO_MANIFEST_DIR"));
    package.ancestors().nth(2).unwrap_or(package)
}

/// Where `f`'s lab sheet is in the sheets' folder `dir`.
pub fn sheet_in(dir: &Path, f: &Finding) -> PathBuf {
    dir.join(format!("{}.md", f.id))
}

/// Whether to bless: rewrite what is generated (lab sheets, /proc
/// snapshots, the README's table, the indexes) from a fresh run. The one
/// switch is `SWAPLAB_BLESS=1`, and it never applies on CI (`CI` set).
pub fn blessing() -> bool {
    std::env::var_os("SWAPLAB_BLESS").is_some_and(|v| v == "1") && !crate::ci::on_ci()
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
        // The claim in short, as its test name reads; the sheet's own title
        // asks the question instead.
        let mut title = slug_sentence(f.slug).replace('|', "\\|");
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

/// A slug as a sentence:
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

/// A series of findings, for the index of the lab sheets: the letter its
/// IDs start with, its name, and what it is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    pub prefix: &'static str,
    pub name: &'static str,
    pub about: &'static str,
}

/// The series finding `f` belongs to: the one its ID starts with.
pub fn series_of<'a>(series: &'a [Series], f: &Finding) -> Option<&'a Series> {
    series.iter().find(|s| f.id.starts_with(s.prefix))
}

/// The start of a part of a sheet generated from the finding's definition
/// (`head`, `answer`, `exercise`).
pub fn lesson_begin(part: &str) -> String {
    format!(
        "<!-- {part}: generated from the finding's definition (src/findings); refresh with `SWAPLAB_BLESS=1 cargo test` -->"
    )
}

/// The end of such a part.
pub fn lesson_end(part: &str) -> String {
    format!("<!-- end of {part} -->")
}

/// The parts of `f`'s sheet generated from its definition, read as a book:
/// the head (title, where it stands among the sheets, the question to
/// predict), the answer (the claim, after the transcript) and the exercise
/// (with its answer for the teacher). `prev` and `next` are its neighbours
/// in the index.
pub fn lesson_parts(
    f: &Finding,
    series: Option<&Series>,
    prev: Option<&Finding>,
    next: Option<&Finding>,
) -> Vec<(&'static str, String)> {
    let l = &f.lesson;
    let mut nav = Vec::new();
    if let Some(s) = series {
        nav.push(format!("*{}*", s.name));
    }
    nav.push("[all lab sheets](README.md)".to_string());
    if let Some(p) = prev {
        nav.push(format!("previous: [{}]({}.md)", p.id, p.id));
    }
    if let Some(n) = next {
        nav.push(format!("next: [{}]({}.md)", n.id, n.id));
    }
    let head = format!(
        "# {}: {}\n\n{}\n\n## The question\n\n{}\n\n\
         Write down what you expect before you run it: the claim the run is judged against \
         comes after the transcript, under **Answer**.",
        f.id,
        l.title,
        nav.join(" · "),
        l.question
    );
    let mut answer = format!("## Answer\n\n> {}", f.claim);
    for k in f.older_kernels {
        answer.push_str(&format!(
            "\n\n> **Before Linux {}.{}:** {}",
            k.before.0, k.before.1, k.claim
        ));
    }
    if f.scope == Scope::PerLibc && !f.musl.is_empty() {
        answer.push_str(&format!("\n\n> **On musl:** {}", f.musl));
    }
    let exercise = format!(
        "## Exercise\n\n{}\n\n<details><summary>Answer, for the teacher</summary>\n\n{}\n\n</details>",
        l.exercise, l.answer
    );
    vec![("head", head), ("answer", answer), ("exercise", exercise)]
}

/// The sheet text with each generated part replaced by `parts`' (None if a
/// part's markers are missing).
pub fn with_lesson(text: &str, parts: &[(&'static str, String)]) -> Option<String> {
    let mut out = text.to_string();
    for (name, body) in parts {
        let (b, e) = (lesson_begin(name), lesson_end(name));
        let (x, y, _) = between(&out, &b, &e)?;
        out = format!("{}{b}\n{body}\n{e}{}", &out[..x], &out[y..]);
    }
    Some(out)
}

/// The index of the lab sheets (`experiments/README.md`), by series in
/// reading order, each sheet with its title (which, like the sheet's top,
/// does not give the answer away: no claim, no status).
pub fn sheets_index<'a>(
    series: &[Series],
    findings: impl IntoIterator<Item = &'a Finding>,
) -> String {
    let findings: Vec<&Finding> = findings.into_iter().collect();
    let mut out = vec![
        INDEX_NOTE.to_string(),
        "# The lab sheets".to_string(),
        String::new(),
        "Each sheet asks a question to predict, runs the experiment that answers it (its \
         transcript, checked by `cargo test`), then gives the answer, why it holds, and an \
         exercise the transcript answers (with the answer for the teacher). Read them in this \
         order: a sheet leans on the ones before it."
            .to_string(),
    ];
    for s in series {
        out.push(String::new());
        out.push(format!("## {}: {}", s.prefix, s.name));
        out.push(String::new());
        out.push(s.about.to_string());
        out.push(String::new());
        for f in findings.iter().filter(|f| series_of(series, f) == Some(s)) {
            out.push(format!("1. [{}: {}]({}.md)", f.id, f.lesson.title, f.id));
        }
    }
    out.join("\n") + "\n"
}

/// The first line of the index: it is generated.
pub const INDEX_NOTE: &str =
    "<!-- index of the lab sheets: generated from the findings (src/findings); refresh with `SWAPLAB_BLESS=1 cargo test` -->";
