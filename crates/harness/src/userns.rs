//! Namespaces of a process's own, made without root: a user namespace
//! that maps the caller's uid and gid to 0, a private mount namespace, and
//! in it bind mounts or a chroot. The same for root and for an
//! unprivileged user (where the kernel allows unprivileged user
//! namespaces), so a process made this way stays its caller's.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::{Context, Result};

/// Why a start in namespaces of its own may fail, for error messages.
pub const WHY_IT_MAY_FAIL: &str = "unprivileged user namespaces may be off: sysctl kernel.unprivileged_userns_clone, user.max_user_namespaces, kernel.apparmor_restrict_unprivileged_userns";

/// Whether a process may be started in namespaces of its own here, with a
/// private mount namespace (tried with `true`); the error if not.
pub fn available() -> std::result::Result<(), String> {
    let mut cmd = std::process::Command::new("true");
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    in_own_namespaces(&mut cmd, &Inside::default()).map_err(|e| e.to_string())?;
    let limit = crate::process::deadline();
    match cmd
        .spawn()
        .and_then(|mut c| crate::process::wait_or_kill(&mut c, limit))
    {
        Ok(Some(s)) if s.success() => Ok(()),
        Ok(Some(s)) => Err(format!("a trial start ended {s}")),
        Ok(None) => Err("a trial start did not end".into()),
        Err(e) => Err(format!("a trial start failed: {e}")),
    }
}

/// What to set up in the new mount namespace before the program runs.
#[derive(Clone, Debug, Default)]
pub struct Inside {
    /// `mount --bind FROM TO`, in order.
    pub binds: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    /// `chroot DIR` after the binds (and `chdir /`).
    pub chroot: Option<std::path::PathBuf>,
    /// Stay in the caller's mount namespace (no binds then): a chroot the
    /// way `sudo chroot` makes one.
    pub keep_mounts: bool,
    /// Overlays to mount first, in order.
    pub overlays: Vec<Overlay>,
    /// Stay in the caller's user namespace (a mount namespace only): root's
    /// way, where a kernel before 5.11 refuses an overlay to a user
    /// namespace.
    pub keep_user: bool,
}

/// An overlay of the namespace's own: a tmpfs on `rw` holding its upper
/// and work folders (`rw/upper`, `rw/work`), then `mount -t overlay overlay
/// -o lowerdir=LOWER,upperdir=RW/upper,workdir=RW/work MERGED`. Its upper
/// layer is never the filesystem under the sandbox (an overlay cannot be
/// the upper layer of another), and it ends with the namespace.
#[derive(Clone, Debug)]
pub struct Overlay {
    pub lower: std::path::PathBuf,
    pub rw: std::path::PathBuf,
    pub merged: std::path::PathBuf,
}

impl Overlay {
    fn upper(&self) -> std::path::PathBuf {
        self.rw.join("upper")
    }

    fn work(&self) -> std::path::PathBuf {
        self.rw.join("work")
    }

    /// Its mount options (`lowerdir=…,upperdir=…,workdir=…`).
    pub fn options(&self) -> String {
        format!(
            "lowerdir={},upperdir={},workdir={}",
            self.lower.display(),
            self.upper().display(),
            self.work().display()
        )
    }
}

/// What the new namespace mounts for one overlay, made before the fork.
struct OverlayMount {
    rw: CString,
    upper: CString,
    work: CString,
    merged: CString,
    options: CString,
}

fn c_path(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).with_context(|| format!("{} holds a NUL", p.display()))
}

/// Makes `cmd` start in a user namespace of its own (its caller's uid and
/// gid mapped to 0) with a private mount namespace, set up as `inside`
/// says: `unshare --user --map-root-user --mount --propagation private`
/// (without `--mount` when it keeps the mounts), then the binds and the
/// chroot.
pub fn in_own_namespaces(cmd: &mut std::process::Command, inside: &Inside) -> Result<()> {
    let uid_map = format!("0 {} 1\n", nix::unistd::getuid());
    let gid_map = format!("0 {} 1\n", nix::unistd::getgid());
    let binds: Vec<(CString, CString)> = inside
        .binds
        .iter()
        .map(|(from, to)| Ok((c_path(from)?, c_path(to)?)))
        .collect::<Result<_>>()?;
    let chroot = inside.chroot.as_deref().map(c_path).transpose()?;
    let overlays: Vec<OverlayMount> = inside
        .overlays
        .iter()
        .map(|o| {
            Ok(OverlayMount {
                rw: c_path(&o.rw)?,
                upper: c_path(&o.upper())?,
                work: c_path(&o.work())?,
                merged: c_path(&o.merged)?,
                options: CString::new(o.options())?,
            })
        })
        .collect::<Result<_>>()?;
    anyhow::ensure!(
        (binds.is_empty() && overlays.is_empty()) || !inside.keep_mounts,
        "bind mounts and overlays need a mount namespace of their own"
    );
    let user = if inside.keep_user {
        0
    } else {
        libc::CLONE_NEWUSER
    };
    let flags = if inside.keep_mounts {
        user
    } else {
        user | libc::CLONE_NEWNS
    };
    // SAFETY: unshare, open, write, close, mount, mkdir, chroot and chdir are
    // plain system calls, safe between fork and exec; every string was made
    // before the fork and nothing is allocated here.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(cmd, move || {
            let fail = || Err(std::io::Error::last_os_error());
            let put = |path: &std::ffi::CStr, text: &str| -> std::io::Result<()> {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let n = libc::write(fd, text.as_ptr().cast(), text.len());
                let err = std::io::Error::last_os_error();
                libc::close(fd);
                if n != text.len() as isize {
                    return Err(err);
                }
                Ok(())
            };
            if libc::unshare(flags) != 0 {
                return fail();
            }
            if flags & libc::CLONE_NEWUSER != 0 {
                put(c"/proc/self/setgroups", "deny")?;
                put(c"/proc/self/uid_map", &uid_map)?;
                put(c"/proc/self/gid_map", &gid_map)?;
            }
            let none = std::ptr::null();
            if flags & libc::CLONE_NEWNS != 0
                && libc::mount(
                    none,
                    c"/".as_ptr(),
                    none,
                    libc::MS_REC | libc::MS_PRIVATE,
                    none.cast(),
                ) != 0
            {
                return fail();
            }
            for o in &overlays {
                let (tmpfs, kind) = (c"tmpfs".as_ptr(), c"overlay".as_ptr());
                if libc::mount(tmpfs, o.rw.as_ptr(), tmpfs, 0, none.cast()) != 0
                    || libc::mkdir(o.upper.as_ptr(), 0o755) != 0
                    || libc::mkdir(o.work.as_ptr(), 0o755) != 0
                    || libc::mount(kind, o.merged.as_ptr(), kind, 0, o.options.as_ptr().cast()) != 0
                {
                    return fail();
                }
            }
            for (from, to) in &binds {
                if libc::mount(from.as_ptr(), to.as_ptr(), none, libc::MS_BIND, none.cast()) != 0 {
                    return fail();
                }
            }
            if let Some(dir) = &chroot {
                if libc::chroot(dir.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                    return fail();
                }
            }
            Ok(())
        });
    }
    Ok(())
}
