//! The guides cannot drift from the code: every code block in README.md,
//! ARCHITECTURE.md and docs/*.md is compiled, run or checked here.
//!
//! - `rust` blocks are doctests: `src/lib.rs` includes each guide under
//!   `#[cfg(doctest)]`, so `cargo test --doc` compiles them;
//! - `console` and `crontab` blocks: every `swaplab` command in them (also
//!   as `sudo swaplab`, `target/release/swaplab` or `cargo run -- …`) is
//!   given to the real binary with `--help` appended, which clap answers
//!   with exit 0 only if every subcommand, flag and value before it parses;
//!   other programs are named below, each with why it is not run;
//! - `toml` blocks must agree with Cargo.toml, `markdown` blocks (a lab
//!   sheet's skeleton) must hold the transcript markers, and `text` blocks
//!   are output or diagrams, shown and not run.
//!
//! Inline code that starts with `swaplab ` or `sudo swaplab ` is checked
//! like a console line.

use std::path::{Path, PathBuf};
use std::process::Command;

use swaplab::harness::sheets;

/// The guides: the README, the architecture, and docs/*.md.
fn guides() -> Vec<PathBuf> {
    let root = sheets::repo();
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root.join("docs"))
        .expect("docs/")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    docs.sort();
    let mut all = vec![root.join("README.md"), root.join("ARCHITECTURE.md")];
    all.extend(docs);
    all
}

fn relative(p: &Path) -> String {
    p.strip_prefix(sheets::repo())
        .unwrap_or(p)
        .display()
        .to_string()
}

/// A fenced code block: its language (`rust,no_run` → `rust`), the line its
/// fence is on, and its lines without the fence's indentation.
struct Block {
    lang: String,
    attrs: String,
    line: usize,
    body: Vec<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut open: Option<(usize, Block)> = None;
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        match open.take() {
            None => {
                if let Some(info) = trimmed.strip_prefix("```") {
                    let info = info.trim();
                    let lang = info.split(',').next().unwrap_or_default().to_string();
                    let block = Block {
                        lang,
                        attrs: info.to_string(),
                        line: n + 1,
                        body: Vec::new(),
                    };
                    open = Some((indent, block));
                }
            }
            Some((ind, mut block)) => {
                if trimmed == "```" {
                    out.push(block);
                } else {
                    let cut = line.len() - line.trim_start().len();
                    block.body.push(line[cut.min(ind)..].to_string());
                    open = Some((ind, block));
                }
            }
        }
    }
    assert!(open.is_none(), "a code block is never closed");
    out
}

/// Shell words of one line: quotes kept together, operators (`;`, `&&`,
/// `|`, `>`, `2>&1`…) as words of their own, a `#` word and what follows
/// dropped.
fn shell_words(line: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false; // the current word had quotes (`''` is a word)
    let mut chars = line.chars().peekable();
    let flush = |word: &mut String, quoted: &mut bool, words: &mut Vec<String>| {
        if !word.is_empty() || *quoted {
            words.push(std::mem::take(word));
        }
        *quoted = false;
    };
    while let Some(c) = chars.next() {
        match c {
            '\'' | '"' => {
                quoted = true;
                for d in chars.by_ref() {
                    if d == c {
                        break;
                    }
                    word.push(d);
                }
            }
            '\\' => {
                if let Some(d) = chars.next() {
                    word.push(d);
                }
            }
            c if c.is_whitespace() => flush(&mut word, &mut quoted, &mut words),
            '#' if word.is_empty() && !quoted => break,
            ';' | '|' | '&' | '>' | '<' => {
                // `2>` and `2>&1`: the fd number belongs to the operator.
                let mut op =
                    if c == '>' && !word.is_empty() && word.chars().all(|d| d.is_ascii_digit()) {
                        std::mem::take(&mut word)
                    } else {
                        flush(&mut word, &mut quoted, &mut words);
                        String::new()
                    };
                op.push(c);
                while let Some(&d) = chars.peek() {
                    if matches!(d, '|' | '&' | '>') || (op.ends_with('&') && d.is_ascii_digit()) {
                        op.push(d);
                        chars.next();
                    } else {
                        break;
                    }
                }
                words.push(op);
            }
            c => word.push(c),
        }
    }
    flush(&mut word, &mut quoted, &mut words);
    words
}

/// The simple commands of a shell line, without redirections, variable
/// assignments in front, and `sudo`.
fn simple_commands(line: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut cmd: Vec<String> = Vec::new();
    let mut words = shell_words(line).into_iter();
    while let Some(w) = words.next() {
        let is_op = w.starts_with([';', '|', '&']) || w.contains(['>', '<']);
        if !is_op {
            cmd.push(w);
        } else if w.contains(['>', '<']) {
            if !w.ends_with(|c: char| c == '&' || c.is_ascii_digit()) {
                words.next(); // the file it redirects to
            }
        } else {
            out.push(std::mem::take(&mut cmd));
        }
    }
    out.push(cmd);
    out.into_iter()
        .map(|c| {
            c.into_iter()
                .skip_while(|w| {
                    w == "sudo" || (w.contains('=') && !w.starts_with('-') && !w.starts_with('='))
                })
                .collect::<Vec<_>>()
        })
        .filter(|c| !c.is_empty())
        .collect()
}

/// Programs in the guides that are not swaplab, and why they are not run.
const NOT_RUN: &[(&str, &str)] = &[
    ("apt-get", "installs packages: the machine's, not swaplab's"),
    ("printf", "writes the policy-rc.d of the Quick start"),
    ("tee", "writes the policy-rc.d of the Quick start"),
    ("chmod", "makes the policy-rc.d executable"),
    ("rm", "removes the policy-rc.d"),
    ("curl", "downloads rustup"),
    ("sh", "runs rustup's installer"),
    (".", "loads rustup's environment into the shell"),
    ("git", "the reader's own review of a diff"),
    ("pip", "installs a checker of the workflow's syntax"),
    (
        "check-jsonschema",
        "checks the workflow's syntax; needs the network",
    ),
    ("useradd", "creates the user L13 runs a target as"),
    ("mv", "moves a report into the collector's folder"),
    ("[", "a shell test of the exit status"),
    (
        "dpkg",
        "installs the detector's package on the reader's machine",
    ),
    ("systemctl", "shows the reader's timers"),
];

/// The workspace package a `cargo run -p NAME` names, if it is one (the
/// packager: it is checked by building it in tests/package.rs).
fn workspace_package(words: &[String]) -> Option<&str> {
    let i = words.iter().position(|w| w == "-p" || w == "--package")?;
    let name = words.get(i + 1)?.as_str();
    let dir = name
        .strip_prefix("swaplab-stale-")
        .map(|rest| format!("crates/{rest}"))?;
    let manifest = std::fs::read_to_string(sheets::repo().join(dir).join("Cargo.toml")).ok()?;
    manifest
        .contains(&format!("name = \"{name}\""))
        .then_some(name)
}

/// What is wrong with one command, if anything (None: checked, or not
/// swaplab's and named in NOT_RUN). `inline`: a command named in prose,
/// where a flag may be named without its value (`swaplab matrix --fs`) and
/// `…` stands for values.
fn check_command(words: &[String], inline: bool) -> Option<String> {
    let prog = words[0].as_str();
    let args: Option<&[String]> = if prog == "swaplab" || prog.ends_with("/swaplab") {
        Some(&words[1..])
    } else if prog == "cargo" && words.get(1).is_some_and(|w| w == "run") {
        if let Some(i) = words.iter().position(|w| w == "--example") {
            let name = words.get(i + 1)?;
            let path = sheets::repo().join("examples").join(format!("{name}.rs"));
            return (!path.exists()).then(|| format!("no example {}", path.display()));
        }
        if workspace_package(words).is_some() {
            return None;
        }
        match words.iter().position(|w| w == "--") {
            Some(i) => Some(&words[i + 1..]),
            None => return Some("`cargo run` without `--`".into()),
        }
    } else if prog == "cargo" {
        // cargo's own commands (build, test, doc): the suite runs as `cargo test`.
        return None;
    } else if NOT_RUN.iter().any(|(p, _)| *p == prog) {
        return None;
    } else {
        return Some(format!(
            "`{prog}` is neither swaplab nor named in NOT_RUN (tests/docs.rs) with a reason"
        ));
    };
    let args: Vec<&String> = args?.iter().filter(|a| !inline || *a != "…").collect();
    let out = Command::new(assert_cmd::cargo::cargo_bin!("swaplab"))
        .args(&args)
        .arg("--help")
        .output()
        .expect("swaplab runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let named_flag = inline && stderr.contains("a value is required for");
    (!out.status.success() && !named_flag).then(|| {
        format!(
            "`swaplab {} --help` exits {:?}: {}",
            args.iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            out.status.code(),
            stderr.trim()
        )
    })
}

/// The shell lines of a block: `$ ` lines (with `\` continuations) in a
/// console block, every line but comments in a crontab (without the five
/// time fields).
fn shell_lines(block: &Block) -> Vec<String> {
    let mut lines = Vec::new();
    let mut pending: Option<String> = None;
    for l in &block.body {
        let l = match pending.take() {
            Some(head) => format!("{head} {}", l.trim()),
            None if block.lang == "crontab" => {
                if l.starts_with('#') || l.trim().is_empty() {
                    continue;
                }
                l.split_whitespace().skip(5).collect::<Vec<_>>().join(" ")
            }
            None => match l.strip_prefix("$ ") {
                Some(cmd) => cmd.to_string(),
                None => continue, // output
            },
        };
        match l.strip_suffix('\\') {
            Some(head) => pending = Some(head.trim_end().to_string()),
            None => lines.push(l),
        }
    }
    lines
}

/// Inline code spans that are swaplab commands (a span may go on over a
/// line break).
fn inline_commands(text: &str) -> Vec<String> {
    let mut prose = Vec::new();
    let mut in_block = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block;
        } else if !in_block {
            prose.push(line.trim());
        }
    }
    prose
        .join(" ")
        .split('`')
        .enumerate()
        .filter(|(i, span)| {
            i % 2 == 1 && (span.starts_with("swaplab ") || span.starts_with("sudo swaplab "))
        })
        .map(|(_, span)| span.to_string())
        .collect()
}

#[test]
fn every_code_block_in_the_guides_is_checked() {
    let lib = std::fs::read_to_string(sheets::repo().join("src/lib.rs")).unwrap();
    let cargo_toml = std::fs::read_to_string(sheets::repo().join("Cargo.toml")).unwrap();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for path in guides() {
        let name = relative(&path);
        let text = std::fs::read_to_string(&path).unwrap();
        for b in blocks(&text) {
            let at = format!("{name}:{}", b.line);
            match b.lang.as_str() {
                "rust" => {
                    if !lib.contains(&format!("include_str!(\"../{name}\")")) {
                        wrong.push(format!("{at}: a rust block, but src/lib.rs does not include {name} as a doctest"));
                    }
                    if b.attrs.contains("ignore") {
                        wrong.push(format!("{at}: `ignore` keeps the block from compiling"));
                    }
                }
                "console" | "crontab" => {
                    for line in shell_lines(&b) {
                        for cmd in simple_commands(&line) {
                            checked += 1;
                            if let Some(e) = check_command(&cmd, false) {
                                wrong.push(format!("{at}: {line}\n    {e}"));
                            }
                        }
                    }
                }
                "toml" => {
                    for l in b.body.iter().filter(|l| l.contains(" = ")) {
                        let (key, value) = l.split_once(" = ").unwrap();
                        let value = value.split(" #").next().unwrap().trim();
                        let ok = if key.trim().starts_with("swaplab") {
                            // A package of this workspace, at the path given
                            // from a checkout named `swaplab` beside.
                            let dir = value
                                .split("path = \"../swaplab")
                                .nth(1)
                                .and_then(|p| p.split('"').next())
                                .unwrap_or_default()
                                .trim_start_matches('/');
                            let manifest = sheets::repo().join(dir).join("Cargo.toml");
                            std::fs::read_to_string(manifest)
                                .is_ok_and(|m| m.contains(&format!("name = \"{}\"", key.trim())))
                        } else {
                            cargo_toml.lines().any(|c| {
                                c.starts_with(&format!("{} = ", key.trim())) && c.contains(value)
                            })
                        };
                        if !ok {
                            wrong.push(format!("{at}: `{l}` is not what Cargo.toml has"));
                        }
                    }
                }
                "markdown" => {
                    let body = b.body.join("\n");
                    if !body.contains(sheets::BEGIN) || !body.contains(sheets::END) {
                        wrong.push(format!(
                            "{at}: a sheet without the transcript markers the tests look for"
                        ));
                    }
                }
                // Output and diagrams: shown, not run.
                "text" => {}
                "" => wrong.push(format!(
                    "{at}: a block without a language (rustdoc would compile it as Rust)"
                )),
                other => wrong.push(format!("{at}: a `{other}` block, which no test checks")),
            }
        }
        for span in inline_commands(&text) {
            for cmd in simple_commands(&span) {
                checked += 1;
                if let Some(e) = check_command(&cmd, true) {
                    wrong.push(format!("{name}: `{span}`\n    {e}"));
                }
            }
        }
    }
    eprintln!("{checked} commands checked in the guides");
    assert!(checked > 50, "only {checked} commands found in the guides");
    assert!(
        wrong.is_empty(),
        "the guides drifted:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_shell_words_are_read_as_a_shell_reads_them() {
    assert_eq!(
        simple_commands("sudo swaplab stale --json > stale.json   # all"),
        vec![vec!["swaplab", "stale", "--json"]]
    );
    assert_eq!(
        simple_commands("D=/x; swaplab stale --openmetrics > $D/a.$$; [ $? -ne 2 ] && mv a b"),
        vec![
            vec!["swaplab", "stale", "--openmetrics"],
            vec!["[", "$?", "-ne", "2", "]"],
            vec!["mv", "a", "b"],
        ]
    );
    assert_eq!(
        simple_commands("swaplab bench reload --start 'nginx -c a.conf' 2>&1 | tee log"),
        vec![
            vec!["swaplab", "bench", "reload", "--start", "nginx -c a.conf"],
            vec!["tee", "log"],
        ]
    );
}

#[test]
fn a_misspelt_flag_is_caught() {
    // The check must be able to fail: a flag that does not exist.
    let words: Vec<String> = ["swaplab", "run", "--al"].map(String::from).to_vec();
    assert!(check_command(&words, false).is_some());
    assert!(check_command(&words, true).is_some());
    let words: Vec<String> = ["swaplab", "run", "--all"].map(String::from).to_vec();
    assert_eq!(check_command(&words, false), None);
    // In prose a flag may be named without its value, but not in a block.
    let words: Vec<String> = ["swaplab", "matrix", "--fs"].map(String::from).to_vec();
    assert!(check_command(&words, false).is_some());
    assert_eq!(check_command(&words, true), None);
}

#[test]
fn every_guide_is_a_doctest_module() {
    let lib = std::fs::read_to_string(sheets::repo().join("src/lib.rs")).unwrap();
    for path in guides() {
        let name = relative(&path);
        assert!(
            lib.contains(&format!("include_str!(\"../{name}\")")),
            "src/lib.rs does not include {name} under #[cfg(doctest)]"
        );
    }
}

#[test]
fn architecture_names_only_paths_that_exist() {
    let text = std::fs::read_to_string(sheets::repo().join("ARCHITECTURE.md")).unwrap();
    let path = regex::Regex::new(
        r"(?:^|[\s`(\[])((?:src|csrc|tests|docs|experiments|examples|\.ci|\.github)/[\w./-]*)",
    )
    .unwrap();
    let missing: Vec<String> = path
        .captures_iter(&text)
        .map(|c| c[1].trim_end_matches('.').to_string())
        .filter(|p| !sheets::repo().join(p).exists())
        .collect();
    assert!(missing.is_empty(), "ARCHITECTURE.md names {missing:?}");
}
