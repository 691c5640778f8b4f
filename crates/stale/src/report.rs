//! What `swaplab stale` reports: the stale processes, their files, what to
//! restart, and what was left out. The scanner ([`super::stale`]) fills it,
//! the plan ([`super::plan`]) groups it, and the renderers print it.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use schemars::JsonSchema;
use serde::Serialize;

use crate::packages::Package;

/// Whether a restart is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Urgency {
    /// The file on disk has the same content: nothing to gain but the
    /// `(deleted)` mark going away.
    Optional,
    /// The process runs code that is no longer on disk.
    Required,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Executable,
    Library,
    /// The script an interpreter was started on (see [`scripts`]).
    Script,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// Nothing is at the path now.
    Removed,
    /// The path names another file, with other content.
    Replaced,
    /// The path names another file with the same content.
    Reinstalled,
    /// Same inode, written after the process mapped it.
    ModifiedInPlace,
    /// The script's path names a file born after the process started, or
    /// another file than the one the interpreter still reads.
    ScriptReplaced,
    /// The script's file was written after the process started.
    ScriptModified,
    /// Nothing is at the script's path now.
    ScriptRemoved,
}

impl Reason {
    pub fn word(self) -> &'static str {
        match self {
            Reason::Removed => "removed",
            Reason::Replaced => "replaced",
            Reason::Reinstalled => "reinstalled with the same content",
            Reason::ModifiedInPlace => "modified in place",
            Reason::ScriptReplaced => "replaced since the process started",
            Reason::ScriptModified => "modified since the process started",
            Reason::ScriptRemoved => "removed since the process started",
        }
    }
}

/// A file as `/proc` or `stat` names it: device (major:minor) and inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FileId {
    pub major: u32,
    pub minor: u32,
    pub inode: u64,
}

impl FileId {
    pub fn of(meta: &Metadata) -> FileId {
        let dev = meta.dev();
        FileId {
            major: nix::sys::stat::major(dev) as u32,
            minor: nix::sys::stat::minor(dev) as u32,
            inode: meta.ino(),
        }
    }
}

/// One file a process runs that is not what is on disk.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaleFile {
    pub path: PathBuf,
    pub role: Role,
    pub reason: Reason,
    pub need: Urgency,
    /// What the process maps.
    pub mapped: FileId,
    /// Whether `/proc/PID/maps` marks it ` (deleted)`.
    pub deleted: bool,
    /// What the path names now, if anything.
    pub on_disk: Option<FileId>,
    /// How the contents were compared: `build-id`, `bytes`, `segments`,
    /// `mtime`, `ctime`, `path` (nothing there), or why they could not be.
    pub evidence: String,
    /// The whole explanation, for people.
    pub detail: String,
    /// The package that installed the file at this path, where a dpkg
    /// or rpm database tells (see [`super::packages`]).
    pub package: Option<Package>,
    /// The name `/proc/PID/maps` gives, when the process knows the file by
    /// another: a chroot's file, named from the root of the namespace.
    pub path_in_maps: Option<PathBuf>,
    /// Which identity decided that the path holds the mapped file or not
    /// (see [`Identity`]).
    pub identity: Identity,
    /// Where the file's first mapping starts (0 for a script): a fork keeps
    /// it, an exec of the same program lays it out anew (ASLR).
    #[serde(skip)]
    pub address: u64,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaleProcess {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub user: String,
    pub command: String,
    pub args: String,
    /// The systemd service from the process's cgroup, if any.
    pub service: Option<String>,
    /// The process's cgroup (the unified hierarchy's, else systemd's).
    pub cgroup: Option<String>,
    /// The process's root, when it is not the scanner's: a chroot's folder,
    /// or `/proc/PID/root` for a process in another mount namespace (a
    /// container). Its files were judged there, and named as it sees them.
    pub root: Option<PathBuf>,
    /// When it started, in ns since the epoch (known to one clock tick).
    #[serde(skip)]
    pub start_ns: i128,
    /// The executable it maps, whatever became of its path.
    #[serde(skip)]
    pub exe: Option<FileId>,
    pub need: Urgency,
    pub restart: Restart,
    pub files: Vec<StaleFile>,
}

/// How the detector told whether a path still holds the file a process
/// maps: maps names a file by its superblock's device and its inode, `stat`
/// by the device the filesystem reports, and the two differ on btrfs (a
/// volume's and each subvolume's anonymous device) and on overlayfs before
/// Linux 6.8 (maps shows the real file's device and inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Identity {
    /// `stat`'s device and inode, the same device maps names.
    Stat,
    /// The superblock device of the path's mount (`/proc/PID/mountinfo`,
    /// found by `statx`'s mount id) is the one maps names: the inode
    /// decides (btrfs volumes and subvolumes).
    Mountinfo,
    /// `stat` of the mapped file itself through `/proc/PID/map_files`
    /// (root only) against `stat` of the path.
    MapFiles,
    /// The overlay's upper and lower folders (its mount options): the
    /// layer file the path resolves to is the one maps names (overlayfs
    /// before 6.8).
    OverlayLayer,
    /// A script: the interpreter's descriptor, or the file's times.
    Script,
    /// Nothing at the path to compare with.
    None,
}

/// Why a file a process maps could not be judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Unjudged {
    /// `stat` of the path was refused (a folder the scanner may not enter,
    /// a file outside the process's root).
    StatRefused,
    /// Written after the process started, and the filesystem keeps no
    /// birth time: a write cannot be told from a file installed after the
    /// start and mapped since.
    NoBirthTime,
    /// Born after the process started and written within an installer's
    /// writing time of its birth: the write may be the install itself.
    WrittenJustAfterBirth,
    /// `stat` names another device than maps, and no identity of this
    /// filesystem ties the two (not root, and no mount or layer matches).
    NoIdentity,
    /// Changed (ctime) after the process started while its mtime is older,
    /// and it has other links: a link made or removed moves the ctime as a
    /// rewrite with its old mtime set back does, and the bytes the process
    /// loaded cannot be compared.
    ChangedWithLinks,
}

impl Unjudged {
    pub fn word(self) -> &'static str {
        match self {
            Unjudged::StatRefused => "stat refused",
            Unjudged::NoBirthTime => "no birth time",
            Unjudged::WrittenJustAfterBirth => "written just after its birth",
            Unjudged::NoIdentity => "no identity from this filesystem",
            Unjudged::ChangedWithLinks => "changed (ctime) while it has other links",
        }
    }
}

/// A file a process maps that the detector could not judge, and why.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UncheckedFile {
    pub path: PathBuf,
    pub role: Role,
    pub reason: Unjudged,
    pub detail: String,
}

/// A process with files the detector could not judge: it may need a
/// restart that the report cannot tell.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UncheckedProcess {
    pub pid: i32,
    pub command: String,
    pub files: Vec<UncheckedFile>,
}

/// Why a process could not be read at all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Unread {
    /// Another user's process, and the scan is not root's.
    AnotherUser,
    /// Refused to root, or to its own user: another user namespace, or a
    /// process that forbids it (not dumpable).
    Refused,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Unreadable {
    pub pid: i32,
    pub command: String,
    pub uid: Option<u32>,
    /// The process could not be read: why.
    pub reason: Unread,
}

/// Mappings left out, by kind, and why.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Excluded {
    pub kind: &'static str,
    pub why: &'static str,
    pub processes: usize,
    pub mappings: usize,
}

#[derive(Clone, Debug, Serialize, JsonSchema)]
pub struct StaleReport {
    /// Processes whose maps were read (after the filters).
    pub scanned: usize,
    pub required: usize,
    pub optional: usize,
    pub processes: Vec<StaleProcess>,
    /// The processes grouped by what a person restarts (see
    /// [`super::plan`]).
    pub groups: Vec<Group>,
    pub unreadable: Vec<Unreadable>,
    /// Kernel threads: no executable, no mappings.
    pub kernel_threads: usize,
    /// Processes that exited while being read.
    pub vanished: usize,
    pub excluded: Vec<Excluded>,
    /// Processes `--exclude` left out: not judged, not in the status.
    pub excluded_processes: usize,
    /// Files mapped without execute permission (not code).
    pub data_files: usize,
    /// Files mapped as code that could not be judged, in every process
    /// (the sum over [`Report::unchecked`]).
    pub unchecked_files: usize,
    /// The processes with files that could not be judged, each file with
    /// its reason.
    pub unchecked: Vec<UncheckedProcess>,
    /// Package databases found that could not be read: the files they
    /// hold are not named.
    pub unread_databases: Vec<UnreadDatabase>,
    /// The effective uid the scan ran as.
    pub scanner_uid: u32,
    pub seconds: f64,
}

/// A package database that could not be read, and why.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UnreadDatabase {
    pub path: PathBuf,
    pub why: String,
}

impl StaleReport {
    /// The exit status `swaplab stale` ends with: 1 when a process needs a
    /// restart; else 3 (a monitoring plugin's UNKNOWN) when a process, or
    /// a file one maps, could not be judged; else 0 (optional restarts may
    /// be listed).
    pub fn exit_code(&self) -> u8 {
        if self.required > 0 {
            1
        } else if !self.unreadable.is_empty() || !self.unchecked.is_empty() {
            3
        } else {
            0
        }
    }

    pub fn get(&self, pid: i32) -> Option<&StaleProcess> {
        self.processes.iter().find(|p| p.pid == pid)
    }
}

/// How pids and changing values are printed (plain for the CLI; marked for
/// redaction in lab transcripts).
pub struct Marks {
    pub pid: fn(i32) -> String,
    pub vol: fn(String) -> String,
}

pub const PLAIN: Marks = Marks {
    pid: |p| p.to_string(),
    vol: |s| s,
};

/// What to restart, and how, for one process.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Restart {
    /// The process to restart: itself, or the ancestor it was forked from
    /// that runs the same stale code.
    pub at: i32,
    /// Whether re-forking this process from its parent would help (never
    /// when the parent runs the same stale code).
    pub fork_is_enough: bool,
    pub advice: String,
    /// The parent the process may have been forked from, when it could not
    /// be read or judged: whether a fork from it copies the same old code
    /// cannot be told.
    pub parent_unjudged: Option<i32>,
}

/// What kind of thing a group restarts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum GroupKind {
    /// A process whose root or mount namespace is not the host's.
    Container,
    /// A systemd system service.
    Service,
    /// A service of a user's own systemd manager (`user@UID.service`).
    UserService,
    /// A login session (`session-N.scope`): logging out and in again.
    Session,
    /// A process and the children it forked, outside any service.
    ProcessTree,
}

/// One thing to restart, and what that fixes.
#[derive(Clone, Debug, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub kind: GroupKind,
    /// The unit, the container's cgroup, or the tree's top process.
    pub name: String,
    /// The command that restarts it, where one is known (systemd).
    pub command: Option<String>,
    /// The same, for people: what to do, and why a reload may not do.
    pub action: String,
    /// Whether a fork-only restart (nginx `HUP`) keeps the old code.
    pub exec_needed: bool,
    pub need: Urgency,
    /// The flagged processes it restarts.
    pub pids: Vec<i32>,
    /// The top process of the tree (its own pid for a single process).
    pub top: i32,
    /// The top process's command name.
    pub top_command: String,
    /// The stale files it gets rid of (as the processes name them).
    pub fixes: Vec<String>,
}
