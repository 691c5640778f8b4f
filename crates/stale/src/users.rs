//! A user named on the command line (`--user`, `--exclude user=`).

/// A user name or a numeric uid, as its uid.
pub fn parse_user(s: &str) -> std::result::Result<u32, String> {
    if let Ok(uid) = s.parse::<u32>() {
        return Ok(uid);
    }
    match nix::unistd::User::from_name(s) {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!("--user {s}: no such user")),
        Err(e) => Err(format!("--user {s}: cannot look the user up: {e}")),
    }
}
