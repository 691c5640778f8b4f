//! `swaplab matrix --fs ext4,xfs,btrfs,tmpfs,overlay`: the findings whose
//! outcome can depend on the filesystem under their sandbox
//! ([`Finding::depends_on_filesystem`]) on fresh filesystems, one column
//! each; the others are n/a there.
//!
//! Nothing may be left behind, however the run ends. So every mount lives
//! in a mount namespace that only one process of the matrix owns:
//! - the matrix makes an owner-locked folder (`swaplab-fs-NAME-…`, see
//!   [`sandbox::scratch`]) guarded by `swaplab-sentinel` (which removes it
//!   if the matrix dies), and runs itself as `swaplab fs-column` (hidden)
//!   in a new mount namespace where `/` is recursively private, dying with
//!   the matrix (`PR_SET_PDEATHSIG`) and killed by its Ctrl-C (its process
//!   group is registered for [`process::kill_all`]);
//! - that column mounts a tmpfs over the folder, makes the image (sparse,
//!   on that tmpfs) or the layers there, mounts the filesystem on it
//!   (`mount -o loop` sets the loop device to clear itself), points
//!   `TMPDIR` at it and runs the findings, whose sandboxes go there;
//! - when the column's last process dies, however it dies, its namespace
//!   goes, and with it every mount; the loop device then detaches itself
//!   and the tmpfs (image included) is freed.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::commands::matrix::{write_report, Args, Columns};
use crate::commands::{run::select, Done, Exit};
use crate::harness::finding::Finding;
use crate::harness::platform::filesystem_of;
use crate::harness::process::{self, GroupGuard, Sentinel};
use crate::harness::report::{self, RunReport};
use crate::harness::runtime::Runtime;
use crate::harness::sandbox;

/// A filesystem `--fs` can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Fs {
    /// A loop image made with mkfs.ext4.
    Ext4,
    /// A loop image made with mkfs.xfs.
    Xfs,
    /// A loop image made with mkfs.btrfs; the sandboxes in a subvolume.
    Btrfs,
    /// A tmpfs of its own.
    Tmpfs,
    /// An overlay whose lower, upper and work layers are its own.
    Overlay,
}

impl Fs {
    /// Its name, as `--fs` and the kernel call it.
    pub fn name(self) -> &'static str {
        match self {
            Fs::Ext4 => "ext4",
            Fs::Xfs => "xfs",
            Fs::Btrfs => "btrfs",
            Fs::Tmpfs => "tmpfs",
            Fs::Overlay => "overlay",
        }
    }

    /// Its column: `fs-ext4`.
    pub fn column(self) -> String {
        format!("fs-{}", self.name())
    }

    /// The programs it is made with, and the Debian package of each.
    fn tools(self) -> &'static [(&'static str, &'static str)] {
        const MOUNT: (&str, &str) = ("mount", "mount");
        match self {
            Fs::Ext4 => &[("mkfs.ext4", "e2fsprogs"), MOUNT],
            Fs::Xfs => &[("mkfs.xfs", "xfsprogs"), MOUNT],
            Fs::Btrfs => &[
                ("mkfs.btrfs", "btrfs-progs"),
                ("btrfs", "btrfs-progs"),
                MOUNT,
            ],
            Fs::Tmpfs | Fs::Overlay => &[MOUNT],
        }
    }
}

/// The size of a loop image: sparse, so only what is written takes memory
/// (mkfs.xfs wants at least 300 MB). A debug build's target programs are
/// 80 MB each, and D01 copies seven of them into one sandbox: 512 MB ran
/// out of room.
const IMAGE_BYTES: u64 = 4 << 30;

/// How long one tool (mkfs, mount) may take.
const TOOL_LIMIT: Duration = Duration::from_secs(120);

/// How long one column may take: every finding that depends on the
/// filesystem, the long start loops of L11 and L15 included.
const COLUMN_LIMIT: Duration = Duration::from_secs(60 * 60);

/// The first tool `filesystems` need that is not installed, as an error
/// that names its package.
fn check_tools(filesystems: &[Fs]) -> Result<()> {
    for fs in filesystems {
        for (tool, package) in fs.tools() {
            if crate::harness::programs::find(tool).is_none() {
                bail!(
                    "--fs {}: {tool} is not installed (apt-get install -y {package})",
                    fs.name()
                );
            }
        }
    }
    Ok(())
}

/// Checks what `--fs` needs before anything is made: root and the tools.
pub fn preflight(filesystems: &[Fs]) -> Result<()> {
    if !nix::unistd::geteuid().is_root() {
        let names: Vec<&str> = filesystems.iter().map(|f| f.name()).collect();
        bail!(
            "--fs needs root: it makes fresh filesystems (loop images, a tmpfs, an overlay) and \
             mounts them in a mount namespace of its own; run it as root \
             (sudo swaplab matrix --fs {})",
            names.join(",")
        );
    }
    check_tools(filesystems)
}

/// Makes `cmd`'s process start in a mount namespace of its own in which
/// `/` is recursively private: no mount it makes reaches this namespace,
/// and every one goes with the namespace's last process.
fn in_private_mount_namespace(cmd: &mut Command) -> &mut Command {
    // SAFETY: only async-signal-safe system calls (unshare, mount) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWNS) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::MS_REC | libc::MS_PRIVATE;
            let none = std::ptr::null();
            if libc::mount(c"none".as_ptr(), c"/".as_ptr(), none, flags, none.cast()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Runs each filesystem's column (`swaplab fs-column` in a mount namespace
/// of its own) on `selected`; each writes `report-fs-NAME.json` into
/// `opts.out`. A column that fails is said and listed; the others still run.
pub fn run(opts: &Args, selected: &[&Finding], say: &dyn Fn(&str)) -> Result<Columns> {
    let exe = std::env::current_exe().context("cannot tell which swaplab runs")?;
    let out = std::path::absolute(&opts.out)
        .with_context(|| format!("cannot resolve {}", opts.out.display()))?;
    std::fs::create_dir_all(&out)
        .with_context(|| format!("cannot make the output folder {}", out.display()))?;
    let ids: Vec<&str> = selected.iter().map(|f| f.id).collect();
    let mut done = Columns::default();
    for &fs in &opts.filesystems {
        match column(&exe, fs, &out, &ids, say) {
            Ok(path) => done.written.push(path),
            Err(e) => {
                say(&format!("{}: failed: {e:#}", fs.column()));
                done.failed.push(format!("{}: {e:#}", fs.column()));
            }
        }
    }
    Ok(done)
}

/// One column: the folder, its sentinel, and `swaplab fs-column` in a mount
/// namespace of its own, to its end; the report it wrote.
fn column(exe: &Path, fs: Fs, out: &Path, ids: &[&str], say: &dyn Fn(&str)) -> Result<PathBuf> {
    let report = out.join(crate::commands::compare::file_name(&fs.column()));
    if report.exists() {
        std::fs::remove_file(&report)
            .with_context(|| format!("cannot remove the old {}", report.display()))?;
    }
    let dir = sandbox::scratch(&fs.column())?;
    // If this process dies, the sentinel removes the folder.
    let sentinel = Sentinel::start(dir.path())?;
    say(&format!(
        "{}: making it in {}",
        fs.column(),
        dir.path().display()
    ));
    let ran = run_column(exe, fs, dir.path(), out, ids);
    // The folder goes once the column's namespace has (its last process
    // may be a target still dying): before, removing it would leak the
    // loop device (see sandbox::wait_unmounted).
    let gone = sandbox::wait_unmounted(dir.path(), sandbox::UNMOUNT_LIMIT);
    drop(sentinel);
    if let Err(e) = gone {
        // Left for a later sweep, which waits for the mounts too.
        std::mem::forget(dir);
        return Err(e.context(format!("{} is left in place", fs.column())));
    }
    drop(dir);
    ran?;
    if !report.exists() {
        bail!("it ended without writing {}", report.display());
    }
    Ok(report)
}

/// `swaplab fs-column` for `fs` in `dir`, in a mount namespace of its own,
/// to its end.
fn run_column(exe: &Path, fs: Fs, dir: &Path, out: &Path, ids: &[&str]) -> Result<()> {
    let mut cmd = Command::new(exe);
    cmd.arg("fs-column")
        .args(["--fs", fs.name()])
        .arg("--dir")
        .arg(dir)
        .arg("--out")
        .arg(out)
        .args(ids)
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .stderr(Stdio::piped())
        // Out of the terminal's reach: Ctrl-C kills it through kill_all.
        .process_group(0);
    process::die_with_parent(&mut cmd);
    in_private_mount_namespace(&mut cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {} fs-column", exe.display()))?;
    let _group = GroupGuard::new(child.id() as i32);
    // Its lines are passed on as they come; the last ones say why it
    // failed, if it does.
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let stderr = child.stderr.take().expect("stderr is piped");
    let kept = Arc::clone(&tail);
    let (done, reader) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{line}");
            let mut t = kept.lock().unwrap_or_else(|p| p.into_inner());
            t.push_back(line);
            if t.len() > 5 {
                t.pop_front();
            }
        }
        let _ = done.send(());
    });
    let status = process::poll_until(COLUMN_LIMIT, Duration::from_millis(50), || {
        match child.try_wait() {
            Ok(None) => Err(()),
            Ok(Some(s)) => Ok(Some(s)),
            Err(_) => Ok(None),
        }
    });
    let status = match status {
        Ok(Some(s)) => s,
        Ok(None) => bail!("cannot wait for its fs-column process"),
        Err(()) => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait();
            bail!(
                "it did not end within {} minutes; killed",
                COLUMN_LIMIT.as_secs() / 60
            );
        }
    };
    // Its last lines, unless something it left keeps the pipe open: then
    // the reader is left behind rather than the matrix hung.
    let _ = reader.recv_timeout(Duration::from_secs(10));
    if !status.success() {
        let tail = tail.lock().unwrap_or_else(|p| p.into_inner());
        let last: Vec<&str> = tail.iter().map(String::as_str).collect();
        bail!(
            "its process ended with {}; its last lines:\n{}",
            process::describe_status(&status),
            process::last_lines(&last.join("\n"), 5)
        );
    }
    Ok(())
}

/// Runs `program args` to its end within [`TOOL_LIMIT`]; fails with its
/// words when it fails.
fn tool(program: &str, args: &[&str]) -> Result<String> {
    let shown = format!("{program} {}", args.join(" "));
    let path = crate::harness::programs::find(program)
        .ok_or_else(|| anyhow::anyhow!("{program} is not installed"))?;
    let mut cmd = Command::new(path);
    cmd.args(args).env("LC_ALL", "C").stdin(Stdio::null());
    let out = process::output_within(&mut cmd, TOOL_LIMIT).with_context(|| format!("`{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}):\n{}",
            process::describe_status(&out.status),
            process::last_lines(String::from_utf8_lossy(&out.stderr).trim(), 5)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn text(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", p.display()))
}

/// A folder for the sandboxes, open to every user as /tmp is (L13 runs a
/// target as a second user).
fn open_folder(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).with_context(|| format!("cannot make {}", p.display()))?;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o1777))
        .with_context(|| format!("cannot open {} to all", p.display()))
}

/// Makes `fs` fresh in `dir` (a tmpfs of this namespace's own): the folder
/// the sandboxes go to.
fn make(fs: Fs, dir: &Path) -> Result<PathBuf> {
    let mnt = dir.join("m");
    std::fs::create_dir(&mnt)?;
    let m = text(&mnt)?;
    match fs {
        Fs::Ext4 | Fs::Xfs | Fs::Btrfs => {
            // Named after the folder: `losetup -a` tells this run's image
            // from any other, even once the folder is gone.
            let name = dir.file_name().unwrap_or_default().to_string_lossy();
            let image = dir.join(format!("{name}.img"));
            std::fs::File::create(&image)
                .and_then(|f| f.set_len(IMAGE_BYTES))
                .with_context(|| format!("cannot make the image {}", image.display()))?;
            let i = text(&image)?;
            match fs {
                Fs::Ext4 => tool("mkfs.ext4", &["-q", "-F", "-L", "swaplab", i])?,
                Fs::Xfs => tool("mkfs.xfs", &["-q", "-f", "-L", "swaplab", i])?,
                _ => tool("mkfs.btrfs", &["-q", "-f", "-L", "swaplab", i])?,
            };
            tool("mount", &["-t", fs.name(), "-o", "loop", i, m])?;
            std::fs::set_permissions(&mnt, std::fs::Permissions::from_mode(0o755))?;
            if fs == Fs::Btrfs {
                let sub = mnt.join("sub");
                tool("btrfs", &["subvolume", "create", text(&sub)?])?;
                open_folder(&sub)?;
                return Ok(sub);
            }
            open_folder(&mnt)?;
            Ok(mnt)
        }
        Fs::Tmpfs => {
            tool(
                "mount",
                &["-t", "tmpfs", "-o", "mode=1777", "swaplab-fs-tmpfs", m],
            )?;
            Ok(mnt)
        }
        Fs::Overlay => {
            let (lower, upper, work) = (dir.join("lower"), dir.join("upper"), dir.join("work"));
            // The sandboxes' folder comes from the lower layer: a merged
            // folder, as /tmp would be in a container.
            open_folder(&lower.join("tmp"))?;
            std::fs::create_dir(&upper)?;
            std::fs::create_dir(&work)?;
            let options = format!(
                "lowerdir={},upperdir={},workdir={}",
                text(&lower)?,
                text(&upper)?,
                text(&work)?
            );
            tool(
                "mount",
                &["-t", "overlay", "-o", &options, "swaplab-fs-overlay", m],
            )?;
            Ok(mnt.join("tmp"))
        }
    }
}

/// Whether this process has a mount namespace of its own (not its
/// parent's).
fn own_mount_namespace() -> bool {
    let ns = |p: &str| std::fs::read_link(p).ok();
    let parent = nix::unistd::getppid();
    let mine = ns("/proc/self/ns/mnt");
    mine.is_some() && mine != ns(&format!("/proc/{parent}/ns/mnt"))
}

/// One column of `swaplab matrix --fs`, in the mount namespace the
/// matrix made for it: makes the filesystem, runs the findings on it.
#[derive(clap::Args)]
#[command(hide = true, name = "fs-column")]
pub struct ColumnArgs {
    #[arg(long, value_enum)]
    pub fs: Fs,
    /// The matrix's folder for it, which it mounts a tmpfs over.
    #[arg(long)]
    pub dir: PathBuf,
    /// The folder the report goes to.
    #[arg(long)]
    pub out: PathBuf,
    /// Finding IDs.
    pub ids: Vec<String>,
}

impl ColumnArgs {
    /// `swaplab fs-column` (hidden): one column of `matrix --fs`, in the mount
    /// namespace its matrix made for it. Makes `fs` in `dir`, runs the
    /// findings `ids` with their sandboxes on it, writes `report-fs-NAME.json`
    /// into `out`. Main runs it before any thread starts: it sets `TMPDIR`.
    pub fn run(self) -> Done {
        let ColumnArgs { fs, dir, out, ids } = &self;
        let (fs, dir, out) = (*fs, dir.as_path(), out.as_path());
        let bad = |e: String| Exit::BadInput(format!("swaplab fs-column: {e}"));
        let named = dir
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("swaplab-fs-"));
        if !dir.is_absolute() || !named || !dir.is_dir() {
            return Err(bad(format!(
                "{} is not a folder of swaplab matrix --fs",
                dir.display()
            )));
        }
        if !nix::unistd::geteuid().is_root() || !own_mount_namespace() {
            return Err(bad(
            "runs only as a column of swaplab matrix --fs, as root, in a mount namespace of its own"
                .into(),
        ));
        }
        // Its matrix made every mount private already; made sure here, so that
        // no mount of this column can reach another namespace however it was
        // started.
        let none: Option<&str> = None;
        nix::mount::mount(
            none,
            "/",
            none,
            nix::mount::MsFlags::MS_REC | nix::mount::MsFlags::MS_PRIVATE,
            none,
        )
        .map_err(|e| bad(format!("cannot make its mounts private: {e}")))?;
        let selected = select(ids, ids.is_empty()).map_err(bad)?;
        check_tools(&[fs]).map_err(|e| bad(format!("{e:#}")))?;
        let column = fs.column();
        let failed = |e: anyhow::Error| Exit::Aborted(format!("{column}: {e:#}"));
        let d = text(dir).map_err(failed)?;
        tool(
            "mount",
            &["-t", "tmpfs", "-o", "mode=0755", "swaplab-fs-scratch", d],
        )
        .map_err(failed)?;
        let tmp = make(fs, dir).map_err(failed)?;
        // SAFETY (of the environment): main runs this before any thread.
        std::env::set_var("TMPDIR", &tmp);
        // A column must not run on another filesystem than its name says.
        let under = filesystem_of(&std::env::temp_dir());
        match &under {
            Some(f) if f.fstype == fs.name() => {
                eprintln!(
                    "{column}: sandboxes in {} on {}",
                    tmp.display(),
                    f.one_line()
                )
            }
            other => {
                return Err(failed(anyhow::anyhow!(
                    "the temp folder {} is not on {} but on {}",
                    tmp.display(),
                    fs.name(),
                    other
                        .as_ref()
                        .map_or("an unknown filesystem".into(), |f| f.one_line())
                )))
            }
        }
        let mut rt = Runtime::host();
        rt.name = column.clone();
        rt.filesystem = Some(fs.name().into());
        let columns = [Ok(rt)];
        let outcomes = report::run_all(
            &selected,
            &columns,
            |_, _| None,
            |o| eprintln!("  {} [{}]: {}", o.id, o.runtime, o.word()),
        );
        let r = RunReport::new(&columns, outcomes);
        let json = serde_json::to_value(&r).map_err(|e| failed(e.into()))?;
        write_report(out, &column, &json).map_err(failed)?;
        Ok(())
    }
}
