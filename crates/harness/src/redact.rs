//! Named redactions, kept in one place, for snapshots and lab sheets:
//!
//! | token | replaces |
//! |---|---|
//! | `[LAB]` | the sandbox's path |
//! | `[ADDR]` | an address range in a maps line, any `0x…` value |
//! | `[DEV]` | the device in a maps line |
//! | `[INODE-1]`, `[INODE-2]`, … | inodes, numbered by first appearance: equal inodes keep equal tokens, so "same file" and "new file" still show. Numbering starts afresh at each part of an experiment (a `# --- … ---` line): a file freed in one part may hand its inode number to a file of the next (ext4 reuses numbers at once), which would make the tokens differ from run to run |
//! | `[PID-1]`, `[PID-2]`, … | process ids: `pid=N`, `child=N`, `of=N`, `thread=N` (a thread id), `/proc/N/`, the pid argument of `peek`, and the pids the experiment marked with [`crate::lab::pidv`] (process tables). Numbered by first appearance over the whole transcript (not afresh at each part, unlike inodes: a process lives across parts), so equal pids keep equal tokens and a reader tells the parent from its child, and a table still shows who is whose parent |
//! | `pipe:[INODE-k]`, `socket:[INODE-k]` | the inodes of pipes and sockets in `/proc/PID/fd`, numbered with the file inodes |
//! | `[PORT]` | the port of a loopback address (`127.0.0.1:[PORT]`, `[::1]:[PORT]`) |
//! | `at_ns=[NS]` | a CLOCK_MONOTONIC time printed by the hand-over server |
//! | `[N] downloads` | a count of downloads: in flight at a hand-over, or waited for |
//! | `[UID]` | `uid=N` |
//! | `(user [USER])` | `(user NAME)` and `(user NAME, UNIT.service)` in `swaplab stale`'s lines: who runs the test, and the systemd service (if any) around it, not what the test made |
//! | `build-id=[BUILD-1]`, … | ELF build-ids, numbered by first appearance over the whole transcript (they depend on the compiler) |
//! | `[N]` | values the experiment marked as changing from run to run (counts, times) |

use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

use regex::{Captures, Regex};

/// How a transcript line that starts a part of an experiment begins.
pub const PART: &str = "# --- ";

struct Rules {
    vol: Regex,
    maps: Regex,
    inode: Regex,
    pid: Regex,
    proc_pid: Regex,
    hex: Regex,
    uid: Regex,
    pidv: Regex,
    fd_inode: Regex,
    port: Regex,
    ns: Regex,
    downloads: Regex,
    build_id: Regex,
    user: Regex,
}

fn rules() -> &'static Rules {
    static RULES: OnceLock<Rules> = OnceLock::new();
    RULES.get_or_init(|| Rules {
        vol: Regex::new("\u{1}[^\u{2}]*\u{2}").expect("valid"),
        maps: Regex::new(
            r"\b[0-9a-f]{8,16}-[0-9a-f]{8,16} ([r-][w-][x-][ps]) ([0-9a-f]{8}) [0-9a-f]{2,}:[0-9a-f]{2,} (\d+) +",
        )
        .expect("valid"),
        inode: Regex::new(r"\binode=(\d+)").expect("valid"),
        pid: Regex::new(r"\b(pid|child|of|thread)=(\d+)").expect("valid"),
        proc_pid: Regex::new(r"(< peek )(\d+)|/proc/(\d+)/").expect("valid"),
        hex: Regex::new(r"\b0x[0-9a-f]+\b").expect("valid"),
        uid: Regex::new(r"\buid=\d+").expect("valid"),
        pidv: Regex::new("\u{3} *(\\d+)\u{4}").expect("valid"),
        fd_inode: Regex::new(r"\b(pipe|socket):\[(\d+)\]").expect("valid"),
        port: Regex::new(r"(\b127\.\d+\.\d+\.\d+|\[::1\]):[1-9]\d*").expect("valid"),
        ns: Regex::new(r"\bat_ns=\d+").expect("valid"),
        downloads: Regex::new(r"\b\d+ downloads\b").expect("valid"),
        build_id: Regex::new(r"\bbuild-id=([0-9a-f]+)").expect("valid"),
        user: Regex::new(r"\(user [^,()\s]+(, [^,()\s]+\.service)?\)").expect("valid"),
    })
}

/// Redacts transcript lines; `root` is the sandbox path.
pub fn redact(lines: &[String], root: &Path) -> Vec<String> {
    let r = rules();
    let root = root.display().to_string();
    let mut inodes: HashMap<String, usize> = HashMap::new();
    let mut pids: HashMap<String, usize> = HashMap::new();
    let mut builds: HashMap<String, usize> = HashMap::new();
    lines
        .iter()
        .map(|line| {
            if line.starts_with(PART) {
                inodes.clear();
            }
            let mut token = |ino: &str| -> String {
                let next = inodes.len() + 1;
                let k = *inodes.entry(ino.to_string()).or_insert(next);
                format!("[INODE-{k}]")
            };
            let s = line.replace(&root, "[LAB]");
            let mut pid_token = |pid: &str| -> String {
                let next = pids.len() + 1;
                let k = *pids.entry(pid.to_string()).or_insert(next);
                format!("[PID-{k}]")
            };
            let s = r.pidv.replace_all(&s, |c: &Captures| pid_token(&c[1]));
            let s = r.vol.replace_all(&s, "[N]");
            let s = r.build_id.replace_all(&s, |c: &Captures| {
                let next = builds.len() + 1;
                let k = *builds.entry(c[1].to_string()).or_insert(next);
                format!("build-id=[BUILD-{k}]")
            });
            let s = r.port.replace_all(&s, "$1:[PORT]");
            let s = r.ns.replace_all(&s, "at_ns=[NS]");
            let s = r.downloads.replace_all(&s, "[N] downloads");
            let s = r
                .fd_inode
                .replace_all(&s, |c: &Captures| format!("{}:{}", &c[1], token(&c[2])));
            let s = r.maps.replace_all(&s, |c: &Captures| {
                format!("[ADDR] {} {} [DEV] {}   ", &c[1], &c[2], token(&c[3]))
            });
            let s = r
                .inode
                .replace_all(&s, |c: &Captures| format!("inode={}", token(&c[1])));
            let s = r
                .pid
                .replace_all(&s, |c: &Captures| format!("{}={}", &c[1], pid_token(&c[2])));
            let s = r.proc_pid.replace_all(&s, |c: &Captures| match c.get(1) {
                Some(peek) => format!("{}{}", peek.as_str(), pid_token(&c[2])),
                None => format!("/proc/{}/", pid_token(&c[3])),
            });
            let s = r.hex.replace_all(&s, "[ADDR]");
            let s = r.uid.replace_all(&s, "uid=[UID]");
            let s = r.user.replace_all(&s, "(user [USER])");
            s.into_owned()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_inodes_keep_equal_tokens() {
        let lines: Vec<String> = [
            "inode=14844378",
            "7fee12576000-7fee12577000 r-xp 00000000 00:0f 14844378                   /x/lib/libexample.so (deleted)",
            "/proc/17343/maps:7f9413f52000-7f9413f53000 r-xp 00000000 00:0f 14844475                   /x/lib/libexample.so",
            "greeting pid=17248 h=1 fn=0x7f87d27ff120: \u{1}3\u{2} of \u{1}100\u{2}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = redact(&lines, Path::new("/x"));
        assert_eq!(out[0], "inode=[INODE-1]");
        assert_eq!(
            out[1],
            "[ADDR] r-xp 00000000 [DEV] [INODE-1]   [LAB]/lib/libexample.so (deleted)"
        );
        assert_eq!(
            out[2],
            "/proc/[PID-1]/maps:[ADDR] r-xp 00000000 [DEV] [INODE-2]   [LAB]/lib/libexample.so"
        );
        assert_eq!(out[3], "greeting pid=[PID-2] h=1 fn=[ADDR]: [N] of [N]");
    }

    #[test]
    fn inode_numbering_starts_afresh_at_each_part() {
        let lines: Vec<String> = [
            "inode=5",
            "inode=7",
            "# --- next ---",
            "inode=7",
            "[U] < peek 4242",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = redact(&lines, Path::new("/x"));
        assert_eq!(out[1], "inode=[INODE-2]");
        assert_eq!(out[3], "inode=[INODE-1]");
        assert_eq!(out[4], "[U] < peek [PID-1]");
    }

    #[test]
    fn equal_pids_keep_equal_tokens_over_the_whole_transcript() {
        let lines: Vec<String> = [
            "[P] forked pid=300 child=301",
            "# --- next ---",
            "$ grep libexample /proc/301/maps",
            "[P] greeting pid=300: Hell World",
            "\u{3}    300\u{4} \u{3}      1\u{4}  swaplab-fork",
            "$ kill -TERM $(cat run/p.pid)   # \u{3}301\u{4}",
            "thread=302 of=300",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = redact(&lines, Path::new("/x"));
        assert_eq!(out[0], "[P] forked pid=[PID-1] child=[PID-2]");
        assert_eq!(out[2], "$ grep libexample /proc/[PID-2]/maps");
        assert_eq!(out[3], "[P] greeting pid=[PID-1]: Hell World");
        assert_eq!(out[4], "[PID-1] [PID-3]  swaplab-fork");
        assert_eq!(out[5], "$ kill -TERM $(cat run/p.pid)   # [PID-2]");
        assert_eq!(out[6], "thread=[PID-4] of=[PID-1]");
    }

    #[test]
    fn who_runs_the_test_does_not_show() {
        let lines: Vec<String> = [
            "7 swaplab-plain (user root): restart required: exec it again or restart it",
            "7 swaplab-plain (user swaplab, ci-run.service): restart required",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let out = redact(&lines, Path::new("/x"));
        assert_eq!(
            out[0],
            "7 swaplab-plain (user [USER]): restart required: exec it again or restart it"
        );
        assert_eq!(out[1], "7 swaplab-plain (user [USER]): restart required");
    }
}
