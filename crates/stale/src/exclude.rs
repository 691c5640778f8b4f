//! `--exclude`: processes an operator has decided not to be told about, as
//! needrestart's blacklist and checkrestart's `-e` and `-b` do. They are
//! left out of the verdict, the plan and the status, and counted in the
//! summary, never dropped silently.

use std::path::Path;

use regex::Regex;

/// One rule of `--exclude KIND=VALUE`.
#[derive(Clone, Debug)]
pub enum Exclusion {
    /// `name=REGEX`: the command name or the executable's path matches
    /// (the path it was started from, also once it was replaced).
    Name(Regex),
    /// `user=USER`: the process's owner (a name or a uid).
    User(u32),
    /// `unit=UNIT`: the systemd service it runs in (`nginx` or
    /// `nginx.service`), from its cgroup.
    Unit(String),
}

/// What a rule is judged on, as /proc shows it.
pub struct Candidate<'a> {
    pub command: &'a str,
    pub exe: Option<&'a Path>,
    pub uid: Option<u32>,
    /// The systemd service it runs in, if any.
    pub unit: Option<&'a str>,
}

impl Exclusion {
    /// Reads `KIND=VALUE` (clap's value parser for `--exclude`).
    pub fn parse(s: &str) -> Result<Exclusion, String> {
        let Some((kind, value)) = s.split_once('=') else {
            return Err("expected KIND=VALUE: name=REGEX, user=USER or unit=UNIT".into());
        };
        if value.is_empty() {
            return Err(format!("{kind}= names nothing"));
        }
        match kind {
            "name" => Regex::new(value)
                .map(Exclusion::Name)
                .map_err(|e| format!("name={value}: not a valid regular expression: {e}")),
            "user" => crate::users::parse_user(value).map(Exclusion::User),
            "unit" => Ok(Exclusion::Unit(match value.ends_with(".service") {
                true => value.to_string(),
                false => format!("{value}.service"),
            })),
            _ => Err(format!(
                "{kind}: not a kind of exclusion (name, user or unit)"
            )),
        }
    }

    /// Whether the rule leaves `c` out.
    pub fn matches(&self, c: &Candidate) -> bool {
        match self {
            Exclusion::Name(re) => {
                re.is_match(c.command) || c.exe.is_some_and(|e| re.is_match(&e.to_string_lossy()))
            }
            Exclusion::User(uid) => c.uid == Some(*uid),
            Exclusion::Unit(unit) => c.unit == Some(unit.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nginx(unit: Option<&str>) -> Candidate<'_> {
        Candidate {
            command: "nginx",
            exe: Some(Path::new("/usr/sbin/nginx")),
            uid: Some(33),
            unit,
        }
    }

    #[test]
    fn each_kind_matches_its_own_field_only() {
        let rule = |s: &str| Exclusion::parse(s).unwrap();
        assert!(rule("name=^nginx$").matches(&nginx(None)));
        assert!(rule("name=^/usr/sbin/").matches(&nginx(None)));
        assert!(!rule("name=^apache").matches(&nginx(None)));
        assert!(rule("user=33").matches(&nginx(None)));
        assert!(!rule("user=0").matches(&nginx(None)));
        // The unit as plan::service_in reads it from the cgroup.
        let unit = crate::plan::service_in("/system.slice/nginx.service").map(|(u, _)| u);
        let candidate = nginx(unit.as_deref());
        assert!(rule("unit=nginx").matches(&candidate));
        assert!(rule("unit=nginx.service").matches(&candidate));
        assert!(!rule("unit=nginx").matches(&nginx(None)));
        assert!(!rule("unit=apache2").matches(&candidate));
    }

    #[test]
    fn a_bad_rule_says_what_is_wrong() {
        let err = |s: &str| Exclusion::parse(s).unwrap_err();
        assert!(err("nginx").contains("KIND=VALUE"), "{}", err("nginx"));
        assert!(err("pid=1").contains("not a kind"));
        assert!(err("name=(").contains("regular expression"));
        assert!(err("user=").contains("names nothing"));
        assert!(err("user=no-such-user-here").contains("no such user"));
    }
}
