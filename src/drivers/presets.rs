//! The servers `swaplab bench reload --preset` and G10 reload: real nginx,
//! haproxy and apache2 from the system's packages, each run from a copy of
//! its binary in the sandbox (so the sentinel kills it whatever happens)
//! with a configuration that keeps everything in the sandbox and listens
//! on one loopback port; and swaplab's own hand-over server under each of
//! its strategies. A real server's preset is nothing but the shell commands
//! a user would type ([`Commands`]), so `--preset` and `--start/--reload`
//! run the same code.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use crate::drivers::handover::{Service, Setup, Strategy};
use crate::drivers::nginx;
use crate::drivers::reload::{Ready, Reloadable, Url};
use crate::drivers::shell_server::{Commands, ShellServer};
use crate::harness::lab::{vol, Lab};
use crate::harness::programs;
use crate::harness::replace::Replace;
use crate::targets::keepalive::Drain;

/// A server with its reload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// nginx, `kill -HUP` of the master: new workers with the configuration
    /// read again.
    NginxHup,
    /// nginx's binary upgrade: `kill -USR2` of the master, then `kill -QUIT`
    /// of the old one once the new one answers.
    NginxUsr2,
    /// haproxy in master-worker mode, `kill -USR2` of the master.
    Haproxy,
    /// apache2, `apachectl -k graceful` with a private ServerRoot.
    Apache2Graceful,
    /// swaplab's own hand-over server under one of its strategies.
    Own(Strategy),
}

/// `--preset NAME`: the names of [`Preset::name`], in the order of
/// [`Preset::ALL`].
impl clap::ValueEnum for Preset {
    fn value_variants<'a>() -> &'a [Self] {
        &Preset::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.name()))
    }
}

/// A program a preset needs, and the Debian package that brings it.
pub struct Needed {
    pub program: &'static str,
    pub package: &'static str,
}

impl Preset {
    /// The real servers, in the order of the table.
    pub const REAL: [Preset; 4] = [
        Preset::NginxHup,
        Preset::NginxUsr2,
        Preset::Haproxy,
        Preset::Apache2Graceful,
    ];

    /// Every preset: the real servers, then swaplab's strategies.
    pub const ALL: [Preset; 9] = {
        let mut all = [Preset::NginxHup; 9];
        let mut i = 0;
        while i < all.len() {
            all[i] = if i < Preset::REAL.len() {
                Preset::REAL[i]
            } else {
                Preset::Own(Strategy::ALL[i - Preset::REAL.len()])
            };
            i += 1;
        }
        all
    };

    pub fn name(self) -> String {
        match self {
            Preset::NginxHup => "nginx-hup".into(),
            Preset::NginxUsr2 => "nginx-usr2".into(),
            Preset::Haproxy => "haproxy".into(),
            Preset::Apache2Graceful => "apache2-graceful".into(),
            Preset::Own(s) => format!("swaplab-{}", s.name()),
        }
    }

    pub fn needed(self) -> Option<Needed> {
        let (program, package) = match self {
            Preset::NginxHup | Preset::NginxUsr2 => ("nginx", "nginx"),
            Preset::Haproxy => ("haproxy", "haproxy"),
            Preset::Apache2Graceful => ("apache2", "apache2"),
            Preset::Own(_) => return None,
        };
        Some(Needed { program, package })
    }

    /// Starts the server in `lab`'s sandbox, ready for its reloads.
    /// `keep_alive`: swaplab's server keeps connections (with the drain that
    /// answers each connection's next request with `Connection: close`).
    pub fn start(self, lab: &mut Lab, keep_alive: bool) -> Result<Box<dyn Reloadable>> {
        if let Preset::Own(strategy) = self {
            let mut setup = Setup::new(64, 0, 0);
            setup.keep_alive = keep_alive.then_some(Drain::NextRequest);
            return Ok(Box::new(Service::start(lab, strategy, setup)?));
        }
        let needed = self.needed().expect("a real server");
        let system = programs::find(needed.program).with_context(|| {
            format!(
                "{} is not installed (apt-get install -y {})",
                needed.program, needed.package
            )
        })?;
        let bin = stage(lab, &system, needed.program)?;
        // The port is free when chosen, but another process may take it
        // before the server binds: then another one.
        let mut last = String::new();
        for _ in 0..5 {
            let port = nginx::free_port()?;
            let (cmds, ready) = self.write_config(lab, &bin, port)?;
            let url =
                Url::parse(&format!("http://127.0.0.1:{port}/")).map_err(anyhow::Error::msg)?;
            match ShellServer::start(lab, cmds, url, ready) {
                Ok(s) => return Ok(Box::new(s)),
                Err(e) if format!("{e:#}").contains("in use") => last = format!("{e:#}"),
                Err(e) => return Err(e),
            }
        }
        bail!(
            "{} could not bind a free loopback port in 5 tries: {last}",
            self.name()
        )
    }

    /// Writes the configuration into the sandbox and narrates it: the
    /// commands that run the server, and the evidence of a finished reload.
    fn write_config(self, lab: &mut Lab, bin: &str, port: u16) -> Result<(Commands, Ready)> {
        let root = lab.sandbox.root().to_path_buf();
        let dir = root.display().to_string();
        let (file, text, cmds, ready) = match self {
            Preset::NginxHup | Preset::NginxUsr2 => {
                let start = format!("{bin} -p {dir}/ -c conf/nginx.conf -e run/error.log");
                let usr2 = self == Preset::NginxUsr2;
                let cmds = Commands {
                    start: Some(start),
                    reload: if usr2 {
                        "kill -USR2 {pid}"
                    } else {
                        "kill -HUP {pid}"
                    }
                    .into(),
                    // The signal goes to a master that has its handler.
                    catches: Some(if usr2 {
                        Signal::SIGUSR2
                    } else {
                        Signal::SIGHUP
                    }),
                    after: usr2.then(|| "kill -QUIT {pid}".to_string()),
                    stop: Some("kill -QUIT {pid}".into()),
                    pid_file: Some("run/nginx.pid".into()),
                    log: Some("run/error.log".into()),
                    ..Commands::default()
                };
                // A binary upgrade is ready when the new master has written
                // the pid file: keep-alive clients go on with the old
                // workers until the old master QUITs, so no new one answers
                // before.
                let ready = if usr2 { Ready::PidFile } else { Ready::NewPid };
                ("conf/nginx.conf", nginx::config(port, 2), cmds, ready)
            }
            Preset::Haproxy => {
                let cmds = Commands {
                    start: Some(format!("{bin} -W -f conf/haproxy.cfg &")),
                    reload: "kill -USR2 {pid}".into(),
                    stop: Some("kill -TERM {pid}".into()),
                    pid_file: Some("run/haproxy.pid".into()),
                    // After its start and after each reload the master execs
                    // itself once more and ignores USR2 until it is set up:
                    // a USR2 sent then is lost (strace; here 1 reload in 50
                    // under keep-alive, and the first one in an emulated
                    // guest).
                    catches: Some(Signal::SIGUSR2),
                    ..Commands::default()
                };
                (
                    "conf/haproxy.cfg",
                    haproxy_config(port),
                    cmds,
                    Ready::NewPid,
                )
            }
            Preset::Apache2Graceful => {
                // Debian's apachectl runs the binary APACHE_HTTPD names
                // with `-d APACHE_CONFDIR`: the sandbox is the ServerRoot.
                let ctl = programs::find("apachectl")
                    .context("apache2's apachectl is not installed (apt-get install -y apache2)")?;
                let ctl = format!("APACHE_CONFDIR={dir} APACHE_HTTPD={bin} {}", ctl.display());
                // apachectl makes its run and lock folders (by default
                // /var/run/apache2 and /var/lock/apache2, owned by www-data)
                // as its envvars say: in the sandbox, owned by this user.
                write_shown(lab, "envvars", &apache2_envvars(&dir), port)?;
                let cmds = Commands {
                    start: Some(format!("{ctl} -k start")),
                    reload: format!("{ctl} -k graceful"),
                    stop: Some(format!("{ctl} -k stop")),
                    pid_file: Some("run/apache2.pid".into()),
                    log: Some("run/error.log".into()),
                    // apachectl -k graceful signals the parent with USR1.
                    catches: Some(Signal::SIGUSR1),
                    ..Commands::default()
                };
                // Its answers do not name the process, but its error log
                // says when a graceful restart's new generation runs.
                let ready = Ready::Log {
                    path: "run/error.log".into(),
                    text: "resuming normal operations".into(),
                };
                ("apache2.conf", apache2_config(&dir, port), cmds, ready)
            }
            Preset::Own(_) => unreachable!("swaplab's own server needs no configuration"),
        };
        write_shown(lab, file, &text, port)?;
        Ok((
            Commands {
                dir: root,
                shown_dir: Some("$LAB".into()),
                ..cmds
            },
            ready,
        ))
    }
}

/// Writes `text` to `file` in the sandbox and narrates it (`cat`), with the
/// port and the sandbox's path redacted.
fn write_shown(lab: &mut Lab, file: &str, text: &str, port: u16) -> Result<()> {
    let root = lab.sandbox.root().to_path_buf();
    let dir = root.display().to_string();
    fs::create_dir_all(root.join("conf"))?;
    fs::write(root.join(file), text)?;
    lab.shell(format!("cat {file}"));
    for l in text.lines() {
        lab.say(
            l.replace(&port.to_string(), &vol(port))
                .replace(&dir, "$LAB"),
        );
    }
    Ok(())
}

/// What Debian's apachectl reads before it runs apache2: every folder it
/// makes in the sandbox, owned by the user running it.
fn apache2_envvars(dir: &str) -> String {
    // apachectl sources this file: `$(id -u)` is whoever runs it, and the
    // file reads the same for every user.
    format!(
        "# written by swaplab: apachectl's folders in the sandbox, owned by whoever runs it
export APACHE_RUN_USER=$(id -u)
export APACHE_RUN_GROUP=$(id -g)
export APACHE_PID_FILE={dir}/run/apache2.pid
export APACHE_RUN_DIR={dir}/run
export APACHE_LOCK_DIR={dir}/lock
export APACHE_LOG_DIR={dir}/run
export LANG=C
"
    )
}

/// haproxy in master-worker mode, answering every request itself with the
/// worker's pid.
fn haproxy_config(port: u16) -> String {
    format!(
        "# written by swaplab: everything under the sandbox, loopback only
global
    master-worker
    pidfile run/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
frontend web
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain lf-string \"pid=%pid\\n\"
"
    )
}

/// apache2 with the event MPM and only the modules it needs, everything
/// in the sandbox; `/` is mod_status's page, made in memory, so that no
/// file of the sandbox must be readable by the user the children run as.
fn apache2_config(dir: &str, port: u16) -> String {
    let m = "/usr/lib/apache2/modules";
    format!(
        "# written by swaplab: everything under the sandbox, loopback only
ServerRoot {dir}
ServerName localhost
PidFile run/apache2.pid
DefaultRuntimeDir run
Mutex file:run default
Listen 127.0.0.1:{port}
ErrorLog run/error.log
LogLevel notice
User #65534
Group #65534
LoadModule mpm_event_module {m}/mod_mpm_event.so
LoadModule authz_core_module {m}/mod_authz_core.so
LoadModule status_module {m}/mod_status.so
<Location \"/\">
    SetHandler server-status
    Require all granted
</Location>
"
    )
}

/// Copies the system's `program` into the sandbox's `bin/` (the sentinel
/// kills whatever runs from there): its path, relative to the sandbox.
fn stage(lab: &mut Lab, system: &Path, program: &str) -> Result<String> {
    lab.sandbox.stage_file(system, program)?;
    let (from, to) = (format!("build/{program}"), format!("bin/{program}"));
    lab.shell(format!("cp {} {from}", system.display()));
    lab.shell(format!(
        "{}   # {program} runs from the sandbox",
        Replace::Install.shell(&from, &to)
    ));
    Replace::Install.apply(lab.sandbox.root(), &from, &to)?;
    Ok(lab.sandbox.root().join(to).display().to_string())
}
