//! Real nginx, for U04, U06, U08 and `bench upgrade`: a copy of the
//! system's binary started from a private prefix in the sandbox (config, pid
//! file, logs, temp folders) on a loopback port, so that the same upgrade
//! steps and load client as for swaplab's own server drive it.

use std::collections::HashMap;
use std::fs;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{bail, Context, Result};

use crate::drivers::fleet::{Fleet, Passed};
use crate::harness::lab::{vol, Lab, Shown};
use crate::harness::process::{hermetic, GroupGuard, Sentinel};
use crate::harness::procs;
use crate::harness::replace::Replace;

/// What would make U08 run where nginx is missing.
pub const ENABLE: &str = "apt-get install -y nginx";

/// The nginx binary: `SWAPLAB_NGINX`, or `nginx` on PATH or in the sbin
/// folders where distributions put it (the need that U04, U06 and U08
/// declare looks the same way).
pub fn find_nginx() -> Option<PathBuf> {
    crate::harness::programs::find("nginx")
}

/// A running nginx: the fleet, plus the guards that kill it whatever
/// happens (it daemonizes, so it is neither our child nor in our group).
pub struct Nginx {
    pub fleet: Fleet,
    pub master: i32,
    // Dropped in this order: the group first, then the sentinel sweeps.
    _group: GroupGuard,
    _sentinel: Sentinel,
}

pub fn config(port: u16, workers: usize) -> String {
    format!(
        "# written by swaplab: everything under the sandbox, loopback only
daemon on;
master_process on;
worker_processes {workers};
pid run/nginx.pid;
error_log run/error.log notice;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path run/client_body;
    proxy_temp_path run/proxy;
    fastcgi_temp_path run/fastcgi;
    uwsgi_temp_path run/uwsgi;
    scgi_temp_path run/scgi;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 \"pid=$pid version=$nginx_version\\n\"; }}
    }}
}}
"
    )
}

pub fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free port")?;
    Ok(l.local_addr()?.port())
}

/// Starts nginx from `bin/nginx` (a copy of the system's) with a config in
/// the sandbox. Findings that use it declare nginx as a need, so that it is
/// there; the benches check for it first.
pub fn start(lab: &mut Lab, workers: usize) -> Result<Nginx> {
    let system = find_nginx().with_context(|| format!("nginx is not installed ({ENABLE})"))?;
    let root = lab.sandbox.root().to_path_buf();
    let sentinel = Sentinel::start(&root)?;
    lab.sandbox.stage_file(&system, "nginx")?;
    lab.shell(format!("cp {} build/nginx", system.display()));
    lab.shell(format!(
        "{}   # nginx runs from the sandbox",
        Replace::Install.shell("build/nginx", "bin/nginx")
    ));
    Replace::Install.apply(&root, "build/nginx", "bin/nginx")?;
    fs::create_dir_all(root.join("conf"))?;
    let bin = root.join("bin/nginx");
    let args = [
        "-p".to_string(),
        format!("{}/", root.display()),
        "-c".into(),
        "conf/nginx.conf".into(),
        "-e".into(),
        "run/error.log".into(),
    ];
    // The port is free when chosen, but another process may take it before
    // nginx binds: then try another.
    let mut last = String::new();
    let mut started = None;
    for _ in 0..5 {
        let port = free_port()?;
        fs::write(root.join("conf/nginx.conf"), config(port, workers))?;
        let err_path = root.join("run/start.err");
        let mut cmd = hermetic(&bin, &lab.sandbox.lib_dir());
        cmd.current_dir(&root)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err_path)?);
        let mut child = crate::harness::process::spawn_retrying(&mut cmd)
            .with_context(|| format!("cannot run {}", bin.display()))?;
        let limit = crate::harness::process::deadline();
        let Some(status) = crate::harness::process::wait_or_kill(&mut child, limit)? else {
            bail!("nginx did not daemonize within the deadline");
        };
        last = fs::read_to_string(&err_path).unwrap_or_default();
        if status.success() {
            started = Some(port);
            break;
        }
        if !last.contains("Address already in use") {
            bail!("nginx failed to start ({status}):\n{last}");
        }
    }
    let Some(port) = started else {
        bail!("nginx could not bind a free loopback port in 5 tries:\n{last}");
    };
    lab.shell("cat conf/nginx.conf");
    for l in config(port, workers).lines() {
        lab.say(l.replace(&port.to_string(), &vol(port)));
    }
    lab.shell(format!("bin/nginx {}", args.join(" ")));
    let pid_file = root.join("run/nginx.pid");
    let master = lab.wait_until("nginx writes its pid file", || {
        fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
            .filter(|p| procs::alive(*p))
            .ok_or_else(|| "no pid file".to_string())
    })?;
    // The daemon leads a session and process group of its own (setsid);
    // every generation stays in that group. Read it once it holds.
    let pgid = lab.wait_until(
        "nginx's master leads its own process group",
        || match procs::get(master) {
            Some(p) if p.pgrp == p.pid => Ok(p.pgrp),
            Some(p) => Err(format!("master {} in group {}", p.pid, p.pgrp)),
            None => Err(format!("master {master} is gone")),
        },
    )?;
    let group = GroupGuard::new(pgid);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
    let mut fleet = Fleet {
        pid_rel: "run/nginx.pid".into(),
        pid_file,
        workers,
        pgid,
        shown: Shown::Args,
        addr,
        env_var: "NGINX",
        passed: Passed::ErrorLog(root.join("run/error.log")),
        who: HashMap::new(),
        gens: HashMap::from([(master, 1)]),
    };
    fleet.first_look(lab, master)?;
    Ok(Nginx {
        fleet,
        master,
        _group: group,
        _sentinel: sentinel,
    })
}

/// Installs another copy of nginx over `bin/nginx` (the running master's
/// file becomes `(deleted)`).
pub fn replace_binary(lab: &mut Lab) -> Result<()> {
    lab.shell(format!(
        "{}   # a new copy of the binary",
        Replace::Install.shell("build/nginx", "bin/nginx")
    ));
    Replace::Install.apply(lab.sandbox.root(), "build/nginx", "bin/nginx")
}
