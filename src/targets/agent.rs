//! The command loop the target programs run (`src/bin/swaplab-*.rs`).
//!
//! A target prints `ready pid=N` and then obeys one command per line on
//! stdin ([`Command`], whose module lists the commands and their answers),
//! answering each with one line that starts with a verb and `pid=N`, so the
//! harness can wait for it.
//!
//! `csrc/target.c` is this loop's C twin (the same commands and answers),
//! built for other C libraries: keep the two in step. The twin alone also
//! knows `iconv` and `user` (L18C runs it on a Debian root's glibc only).
//!
//! Failures answer `error pid=N: …`. Every target (and every child it forks)
//! sets `PR_SET_PDEATHSIG` to SIGKILL, so none outlives its parent.

use std::collections::BTreeMap;
use std::ffi::{c_char, CStr, CString};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use libloading::os::unix::{Library, Symbol, RTLD_GLOBAL, RTLD_LAZY, RTLD_LOCAL, RTLD_NOW};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{execv, fork, getpid, ForkResult, Pid};

use super::protocol::{Command, OpenFlag};

/// libexample's `const char *greeting(void)`.
pub type GreetingFn = unsafe extern "C" fn() -> *const c_char;

/// Prints one line and flushes it: one `write(2)` per line, so lines from a
/// parent and its children never interleave inside a line.
pub fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(format!("{line}\n").as_bytes());
    let _ = out.flush();
}

fn text_of(f: GreetingFn) -> String {
    // SAFETY: libexample's greeting() returns a pointer to a static,
    // NUL-terminated array.
    unsafe { CStr::from_ptr(f()) }
        .to_string_lossy()
        .into_owned()
}

fn die_with_parent() {
    // Best effort: if it fails the process-group kill still applies.
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
}

/// In a child of fork: die with `parent`. The parent may have died between
/// the fork and the prctl, before any death signal was asked for: then the
/// child has been reparented already, and leaves at once.
fn die_with(parent: Pid) {
    die_with_parent();
    if nix::unistd::getppid() != parent {
        // SAFETY: leave without running the parent's exit handlers.
        unsafe { libc::_exit(1) }
    }
}

struct Agent {
    pid: i32,
    build: &'static str,
    memory: Option<String>,
    pipes: Vec<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)>,
    linked: Option<GreetingFn>,
    exe: PathBuf,
    handles: BTreeMap<u32, Library>,
    next: u32,
    children: Vec<Pid>,
    /// Threads of `thread`, each with the sender whose drop lets it exit.
    threads: Vec<(std::thread::JoinHandle<()>, std::sync::mpsc::Sender<()>)>,
}

/// Runs a target program (build "1"). `linked` is libexample's `greeting`
/// when the program is linked against it at start-up.
pub fn main(linked: Option<GreetingFn>) -> ! {
    main_build("1", linked)
}

/// Runs a target program that says it is build `build`.
pub fn main_build(build: &'static str, linked: Option<GreetingFn>) -> ! {
    die_with_parent();
    // Children are reaped by the kernel as they die, so none lingers as a
    // zombie, whoever kills it.
    // SAFETY: setting a signal disposition to SIG_IGN has no handler to run.
    let _ =
        unsafe { nix::sys::signal::signal(Signal::SIGCHLD, nix::sys::signal::SigHandler::SigIgn) };
    let exe = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let mode = std::env::args().nth(1);
    let mut agent = Agent {
        pid: getpid().as_raw(),
        build,
        memory: None,
        pipes: Vec::new(),
        linked,
        exe,
        handles: BTreeMap::new(),
        next: 1,
        children: Vec::new(),
        threads: Vec::new(),
    };
    emit(&format!("ready pid={}", agent.pid));
    match mode.as_deref() {
        // Print the greeting and exit (for tight start loops).
        Some("--once") => {
            agent.hello();
            std::process::exit(0)
        }
        // Print the greeting and wait to be killed (children of `spawn`).
        Some("--hold") => {
            agent.hello();
            hold()
        }
        Some(other) => {
            emit(&format!(
                "error pid={}: unknown argument {other}",
                agent.pid
            ));
            std::process::exit(2)
        }
        None => {}
    }
    let stdin = std::io::stdin();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let done = match Command::parse(&line) {
            Ok(None) => continue,
            Ok(Some(Command::Exit)) => {
                agent.reap();
                emit(&format!("bye pid={}", agent.pid));
                std::process::exit(0);
            }
            Ok(Some(c)) => agent.command(c),
            Err(e) => Err(e),
        };
        if let Err(e) = done {
            emit(&format!("error pid={}: {e}", agent.pid));
        }
    }
    agent.reap();
    std::process::exit(0)
}

fn hold() -> ! {
    loop {
        nix::unistd::pause();
    }
}

impl Agent {
    fn call(&self) {
        match self.linked {
            Some(f) => emit(&format!("greeting pid={}: {}", self.pid, text_of(f))),
            None => emit(&format!(
                "error pid={}: this program is not linked against libexample",
                self.pid
            )),
        }
    }

    /// What a new process says first: its greeting if it is linked against
    /// libexample, otherwise which build it is.
    fn hello(&self) {
        match self.linked {
            Some(_) => self.call(),
            None => self.version(),
        }
    }

    fn version(&self) {
        emit(&format!("version pid={}: {}", self.pid, self.build));
    }

    fn pipe(&mut self, cloexec: bool) -> Result<(), String> {
        use std::os::fd::AsRawFd;
        let flags = if cloexec {
            nix::fcntl::OFlag::O_CLOEXEC
        } else {
            nix::fcntl::OFlag::empty()
        };
        let (r, w) = nix::unistd::pipe2(flags).map_err(|e| format!("pipe2: {e}"))?;
        emit(&format!(
            "pipe pid={} r={} w={} cloexec={}",
            self.pid,
            r.as_raw_fd(),
            w.as_raw_fd(),
            if cloexec { "yes" } else { "no" }
        ));
        self.pipes.push((r, w));
        Ok(())
    }

    fn command(&mut self, c: Command) -> Result<(), String> {
        match c {
            Command::Call => {
                self.call();
                Ok(())
            }
            Command::Version => {
                self.version();
                Ok(())
            }
            Command::Remember(text) => {
                emit(&format!("remembered pid={}: {text}", self.pid));
                self.memory = Some(text);
                Ok(())
            }
            Command::Recall => {
                let text = self.memory.as_deref().unwrap_or("(nothing)");
                emit(&format!("recall pid={}: {text}", self.pid));
                Ok(())
            }
            Command::Pipe { cloexec } => self.pipe(cloexec),
            Command::Fork => self.fork_child(),
            Command::Spawn => self.spawn_child(),
            Command::Exec => self.exec_self(),
            Command::KillChildren => {
                let n = self.reap();
                emit(&format!("reaped pid={} children={n}", self.pid));
                Ok(())
            }
            Command::Open(path, flags) => self.open(&path, &flags),
            Command::NoLoad(path) => self.noload(&path),
            Command::CallH(h) => self.callh(h),
            Command::Thread(h) => self.thread(h),
            Command::Join => {
                let n = self.join();
                emit(&format!("joined pid={} threads={n}", self.pid));
                Ok(())
            }
            Command::MOpen(path) => self.mopen(&path),
            Command::Close(h) => self.close(h),
            Command::Peek(of) => {
                self.peek(of);
                Ok(())
            }
            Command::Pseudo => {
                let r = pseudo_mappings();
                emit(&format!("pseudo pid={} {r}", self.pid));
                Ok(())
            }
            Command::Map(path) => {
                map_data(&path)?;
                emit(&format!("mapped pid={}", self.pid));
                Ok(())
            }
            // `exit` ends the loop in main_build; the C twin's own commands
            // are unknown here.
            c @ (Command::Exit | Command::Iconv { .. } | Command::User(_)) => {
                Err(format!("unknown command `{}`", c.word()))
            }
        }
    }

    fn fork_child(&mut self) -> Result<(), String> {
        // SAFETY: targets are single-threaded (the main thread reads stdin and
        // nothing else runs), so the child may allocate and print freely.
        let parent = getpid();
        match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                die_with(parent);
                let me = getpid().as_raw();
                self.pid = me;
                self.hello();
                hold()
            }
            ForkResult::Parent { child } => {
                self.children.push(child);
                emit(&format!("forked pid={} child={}", self.pid, child));
                Ok(())
            }
        }
    }

    fn spawn_child(&mut self) -> Result<(), String> {
        let path = CString::new(self.exe.as_os_str().as_encoded_bytes())
            .map_err(|_| "executable path has a NUL".to_string())?;
        let hold_arg = CString::new("--hold").expect("no NUL");
        // SAFETY: single-threaded (see fork_child); the child only sets its
        // death signal and execs, or reports and _exits.
        let parent = getpid();
        match unsafe { fork() }.map_err(|e| format!("fork: {e}"))? {
            ForkResult::Child => {
                die_with(parent);
                let err = execv(&path, &[path.as_c_str(), hold_arg.as_c_str()]).unwrap_err();
                emit(&format!("error pid={}: exec: {err}", getpid()));
                // SAFETY: leave without running the parent's exit handlers.
                unsafe { libc::_exit(127) }
            }
            ForkResult::Parent { child } => {
                self.children.push(child);
                emit(&format!("spawned pid={} child={}", self.pid, child));
                Ok(())
            }
        }
    }

    fn exec_self(&mut self) -> Result<(), String> {
        let path = CString::new(self.exe.as_os_str().as_encoded_bytes())
            .map_err(|_| "executable path has a NUL".to_string())?;
        emit(&format!("exec pid={}", self.pid));
        let err = execv(&path, &[path.as_c_str()]).unwrap_err();
        Err(format!("exec: {err}"))
    }

    /// Kills every child this process forked and waits until they are gone
    /// (SIGCHLD is ignored, so waitpid returns once the kernel reaped them);
    /// returns how many.
    fn reap(&mut self) -> usize {
        let n = self.children.len();
        for c in self.children.drain(..) {
            let _ = kill(c, Signal::SIGKILL);
            let _ = waitpid(c, None);
        }
        n
    }

    fn keep(&mut self, lib: Library) -> (u32, usize) {
        let raw = lib.into_raw();
        let h = self.next;
        self.next += 1;
        // SAFETY: `raw` came from into_raw just above.
        self.handles.insert(h, unsafe { Library::from_raw(raw) });
        (h, raw as usize)
    }

    fn open(&mut self, path: &Path, opts: &[OpenFlag]) -> Result<(), String> {
        let mut flags = RTLD_NOW;
        for o in opts {
            match o {
                OpenFlag::NoDelete => flags |= libc::RTLD_NODELETE,
                OpenFlag::Global => flags |= RTLD_GLOBAL,
                OpenFlag::Lazy => flags = (flags & !RTLD_NOW) | RTLD_LAZY,
            }
        }
        if flags & RTLD_GLOBAL == 0 {
            flags |= RTLD_LOCAL;
        }
        // SAFETY: libexample's initialisers are trivial.
        let lib =
            unsafe { Library::open(Some(path), flags) }.map_err(|e| dl_error("dlopen", &e))?;
        let (h, raw) = self.keep(lib);
        emit(&format!("opened pid={} h={h} handle={raw:#x}", self.pid));
        Ok(())
    }

    fn noload(&mut self, path: &Path) -> Result<(), String> {
        // SAFETY: RTLD_NOLOAD never runs initialisers.
        match unsafe { Library::open(Some(path), RTLD_LAZY | libc::RTLD_NOLOAD) } {
            Ok(lib) => {
                let (h, raw) = self.keep(lib);
                emit(&format!(
                    "noload pid={} loaded=yes h={h} handle={raw:#x}",
                    self.pid
                ));
            }
            Err(_) => emit(&format!("noload pid={} loaded=no", self.pid)),
        }
        Ok(())
    }

    fn callh(&mut self, h: u32) -> Result<(), String> {
        let lib = self.handles.get(&h).ok_or(format!("no handle {h}"))?;
        // SAFETY: greeting has this signature in every libexample variant.
        let f: Symbol<GreetingFn> =
            unsafe { lib.get(b"greeting\0") }.map_err(|e| dl_error("dlsym", &e))?;
        let fp: GreetingFn = *f;
        emit(&format!(
            "greeting pid={} h={h} fn={:#x}: {}",
            self.pid,
            fp as usize,
            text_of(fp)
        ));
        Ok(())
    }

    /// `greeting` through handle `h`, called on a thread of its own that
    /// answers and then waits until `join`: a thread that has used the
    /// library and is still alive (L16: what a library's thread-locals see
    /// of a thread's life). Nothing forks while such a thread lives.
    fn thread(&mut self, h: u32) -> Result<(), String> {
        let lib = self.handles.get(&h).ok_or(format!("no handle {h}"))?;
        // SAFETY: greeting has this signature in every libexample variant.
        let f: Symbol<GreetingFn> =
            unsafe { lib.get(b"greeting\0") }.map_err(|e| dl_error("dlsym", &e))?;
        let fp: GreetingFn = *f;
        let pid = self.pid;
        let (release, wait) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let tid = nix::unistd::gettid().as_raw();
            emit(&format!(
                "greeting pid={pid} h={h} fn={:#x} thread={tid}: {}",
                fp as usize,
                text_of(fp)
            ));
            let _ = wait.recv();
        });
        self.threads.push((t, release));
        Ok(())
    }

    /// Lets every waiting thread exit and joins it; returns how many.
    fn join(&mut self) -> usize {
        let n = self.threads.len();
        for (t, release) in self.threads.drain(..) {
            drop(release);
            let _ = t.join();
        }
        n
    }

    /// `dlmopen(LM_ID_NEWLM, path)`: a new link-map namespace (glibc).
    #[cfg(target_env = "gnu")]
    fn mopen(&mut self, path: &Path) -> Result<(), String> {
        let c = CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| "path has a NUL".to_string())?;
        // SAFETY: dlmopen with a valid C string; libexample's initialisers
        // are trivial. dlerror is read right after, on this thread.
        let raw = unsafe { libc::dlmopen(libc::LM_ID_NEWLM, c.as_ptr(), libc::RTLD_NOW) };
        if raw.is_null() {
            // SAFETY: dlerror returns a static or thread-local string.
            let e = unsafe { CStr::from_ptr(libc::dlerror()) }
                .to_string_lossy()
                .into_owned();
            return Err(format!("dlmopen: {e}"));
        }
        let mut lmid: libc::Lmid_t = 0;
        // SAFETY: RTLD_DI_LMID writes one Lmid_t.
        unsafe {
            libc::dlinfo(
                raw,
                libc::RTLD_DI_LMID,
                (&mut lmid as *mut libc::Lmid_t).cast(),
            )
        };
        // SAFETY: a handle dlmopen returned, closed by libloading's dlclose.
        let (h, raw) = self.keep(unsafe { Library::from_raw(raw) });
        emit(&format!(
            "opened pid={} h={h} handle={raw:#x} lmid={lmid}",
            self.pid
        ));
        Ok(())
    }

    #[cfg(not(target_env = "gnu"))]
    fn mopen(&mut self, _path: &Path) -> Result<(), String> {
        Err("dlmopen: this C library has none".into())
    }

    fn close(&mut self, h: u32) -> Result<(), String> {
        let lib = self.handles.remove(&h).ok_or(format!("no handle {h}"))?;
        lib.close().map_err(|e| dl_error("dlclose", &e))?;
        emit(&format!("closed pid={} h={h}", self.pid));
        Ok(())
    }

    fn peek(&self, of: i32) {
        match crate::detector::maps::file_mappings(of) {
            Ok(m) => emit(&format!(
                "peek pid={} of={of} ok mappings={}",
                self.pid,
                m.len()
            )),
            Err(e) => {
                let root = e.root_cause().to_string();
                emit(&format!("peek pid={} of={of} denied: {root}", self.pid))
            }
        }
    }
}

/// Maps `len` bytes of `fd` (or anonymous memory with -1) readable and
/// executable, shared; the mapping is kept for the life of the process.
fn map_exec(fd: i32, len: usize, flags: i32) -> bool {
    // SAFETY: a fresh mapping at an address the kernel chooses; nothing
    // else refers to it, and it is never unmapped.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_EXEC,
            flags,
            fd,
            0,
        )
    };
    p != libc::MAP_FAILED
}

/// The pseudo-file mappings of `pseudo`, each `name=yes` or `name=no`.
fn pseudo_mappings() -> String {
    let yes = |ok: bool| if ok { "yes" } else { "no" };
    let len = 4096;
    // A memfd, as JIT compilers use them: written, then mapped executable.
    // SAFETY: plain system calls on fds this function owns.
    let memfd = unsafe {
        let fd = libc::memfd_create(c"swaplab-jit".as_ptr(), 0);
        let ok =
            fd >= 0 && libc::ftruncate(fd, len as i64) == 0 && map_exec(fd, len, libc::MAP_SHARED);
        if fd >= 0 {
            libc::close(fd);
        }
        ok
    };
    // A SysV segment, removed at once: it lives while attached, and goes
    // away with the process. SHM_EXEC needs the segment's x bit (root
    // bypasses the check, so 0600 works for root alone).
    // SAFETY: the segment is private to this process; shmat's address is
    // kept mapped for the life of the process.
    let sysv = unsafe {
        let id = libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o700);
        let ok = id >= 0 && {
            let p = libc::shmat(id, std::ptr::null(), libc::SHM_EXEC | libc::SHM_RDONLY);
            p as isize != -1
        };
        if id >= 0 {
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
        }
        ok
    };
    // /dev/zero, shared: anonymous shared memory under a device's name
    // (`/dev/zero (deleted)` on older kernels).
    let devzero = std::fs::File::open("/dev/zero")
        .map(|f| {
            use std::os::fd::AsRawFd;
            map_exec(f.as_raw_fd(), len, libc::MAP_SHARED)
        })
        .unwrap_or(false);
    let anon = map_exec(-1, len, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS);
    format!(
        "memfd={} sysv={} devzero={} anon={}",
        yes(memfd),
        yes(sysv),
        yes(devzero),
        yes(anon)
    )
}

/// Maps the file at `path` read-only and private (data, not code).
fn map_data(path: &Path) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let len = f.metadata().map_err(|e| e.to_string())?.len().max(1) as usize;
    // SAFETY: a fresh read-only mapping, never unmapped or written.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(format!(
            "mmap {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// `what: TEXT` with the loader's own words (dlerror), which libloading
/// keeps as the error's source.
fn dl_error(what: &str, e: &libloading::Error) -> String {
    use std::error::Error;
    match e.source() {
        Some(text) => format!("{what}: {text}"),
        None => format!("{what}: {e}"),
    }
}
