//! `/proc/PID/stat`, the fields the scan uses, parsed as procfs parses
//! them without building its 52 fields (a string each, and a copy of the
//! whole line, for every process).

/// The fields of `/proc/PID/stat` the scan uses.
#[derive(Clone, Debug)]
pub(super) struct Stat {
    /// The command name, between the first `(` and the last `)` (it may
    /// hold either), lossily UTF-8.
    pub(super) comm: String,
    pub(super) state: char,
    pub(super) ppid: i32,
    /// `PF_*` flags.
    pub(super) flags: u32,
    pub(super) num_threads: i64,
    /// Clock ticks after boot.
    pub(super) starttime: u64,
    pub(super) startcode: u64,
}

impl Stat {
    /// `None` where procfs would fail too: no parentheses, a field missing
    /// or not a number.
    pub(super) fn parse(line: &[u8]) -> Option<Stat> {
        let line = line.trim_ascii();
        let open = line.iter().position(|&b| b == b'(')?;
        let close = line.iter().rposition(|&b| b == b')')?;
        let comm = String::from_utf8_lossy(line.get(open + 1..close)?).into_owned();
        // After `) `: state, then the numbers from ppid on.
        let mut fields = line.get(close + 2..)?.split(|&b| b == b' ');
        let state = *fields.next()?.first()? as char;
        let mut at = 1;
        let mut nth = |i: usize| -> Option<&[u8]> {
            let skip = i.checked_sub(at)?;
            at = i + 1;
            fields.nth(skip)
        };
        fn num<T: std::str::FromStr>(f: Option<&[u8]>) -> Option<T> {
            std::str::from_utf8(f?).ok()?.parse().ok()
        }
        let ppid = num(nth(1))?;
        let flags = num(nth(6))?;
        let num_threads = num(nth(17))?;
        let starttime = num(nth(19))?;
        let startcode = num(nth(23))?;
        Some(Stat {
            comm,
            state,
            ppid,
            flags,
            num_threads,
            starttime,
            startcode,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::FromRead;

    /// The same fields as procfs's, for this process and for a command
    /// name holding parentheses, spaces and invalid UTF-8.
    #[test]
    fn fields_are_procfs_fields() {
        let mine = std::fs::read("/proc/self/stat").unwrap();
        let close = mine.iter().rposition(|&b| b == b')').unwrap();
        let mut odd = b"42 (a) b\xff(".to_vec();
        odd.extend_from_slice(&mine[close..]);
        for line in [mine, odd] {
            let p = procfs::process::Stat::from_read(&line[..]).unwrap();
            let s = Stat::parse(&line).unwrap();
            assert_eq!(
                (s.comm, s.state, s.ppid, s.flags, s.num_threads),
                (p.comm, p.state, p.ppid, p.flags, p.num_threads)
            );
            assert_eq!((s.starttime, s.startcode), (p.starttime, p.startcode));
        }
        assert!(Stat::parse(b"1 (x) S 0").is_none());
    }
}
