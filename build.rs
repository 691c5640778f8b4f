//! Compiles the `libexample.so` variants from `csrc/libexample.c`.
//!
//! The `cc` crate builds static archives only, so its configured compiler
//! (honouring `CC`, `CFLAGS` and the target) is asked for a command and run
//! with `-shared -fPIC`. Each variant lands in its own folder,
//! `$OUT_DIR/libexample/<variant>/libexample.so`, so the plain-linked targets
//! can be linked with `-L <folder> -lexample` and the harness copies the
//! others into each experiment's sandbox. `SWAPLAB_VARIANTS` tells the crate
//! where they are, at compile time.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// (folder name, greeting, version, extra flags)
const VARIANTS: &[(&str, &str, u32, &[&str])] = &[
    ("v1", "Hell World", 1, &[]),
    ("v2", "Hello World", 2, &[]),
    ("v2-layout", "Hello World", 2, &["-DMOVED_LAYOUT"]),
    (
        "short",
        "Hello World",
        2,
        &[
            "-Os",
            "-fno-asynchronous-unwind-tables",
            "-fno-ident",
            "-Wl,-z,norelro",
            "-Wl,-z,noseparate-code",
            "-Wl,--no-eh-frame-hdr",
            "-Wl,--build-id=none",
            "-Wl,--hash-style=gnu",
            "-s",
        ],
    ),
    ("v1-nodelete", "Hell World", 1, &["-Wl,-z,nodelete"]),
];

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let source = Path::new("csrc").join("libexample.c");
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-env-changed=CFLAGS");

    // Fixed optimisation and no debug info: the layout (and so the offsets a
    // lab sheet shows) is the same in debug and release builds of swaplab.
    let compiler = cc::Build::new()
        .opt_level(2)
        .debug(false)
        .pic(true)
        .warnings(true)
        .get_compiler();

    let root = out.join("libexample");
    for (name, greeting, version, extra) in VARIANTS {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).expect("create variant folder");
        let target = dir.join("libexample.so");
        let mut cmd: Command = compiler.to_command();
        cmd.args(["-shared", "-fPIC", "-Wl,-soname,libexample.so"])
            .arg(format!("-DGREETING=\"{greeting}\""))
            .arg(format!("-DVERSION={version}"))
            .args(*extra)
            .arg(&source)
            .arg("-o")
            .arg(&target);
        let status = cmd.status().unwrap_or_else(|e| {
            panic!("cannot run the C compiler ({cmd:?}): {e}; install gcc (apt-get install -y gcc)")
        });
        assert!(
            status.success(),
            "building libexample {name} failed: {cmd:?}"
        );
    }

    // The C sleeper of `swaplab bench stale`, linked against libexample v1
    // (the sandbox's lib/ is on its LD_LIBRARY_PATH at run time).
    let sleeper = out.join("swaplab-sleeper");
    let mut cmd: Command = compiler.to_command();
    cmd.arg(Path::new("csrc").join("sleeper.c"))
        .arg("-o")
        .arg(&sleeper)
        .arg(format!("-L{}", root.join("v1").display()))
        .arg("-lexample");
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run the C compiler ({cmd:?}): {e}; install gcc (apt-get install -y gcc)")
    });
    assert!(status.success(), "building the sleeper failed: {cmd:?}");
    println!("cargo:rustc-env=SWAPLAB_SLEEPER={}", sleeper.display());

    println!("cargo:rustc-env=SWAPLAB_VARIANTS={}", root.display());
    println!("cargo:rustc-env=SWAPLAB_CC={}", compiler.path().display());
    // The plain-linked targets name `example` in a #[link] attribute; only
    // they get DT_NEEDED libexample.so. At run time the sandbox's lib/ is on
    // LD_LIBRARY_PATH: no rpath points back into the build folder.
    println!(
        "cargo:rustc-link-search=native={}",
        root.join("v1").display()
    );
}
