//! Compiles the C side of swaplab: the `libexample.so` variants from
//! `csrc/libexample.c`, the sleeper of `swaplab bench stale`, and, where
//! `musl-gcc` is installed, musl builds of the variants and of the C twins of
//! the target programs (`csrc/target.c`). The recipe (which variants, which
//! flags) is `crates/harness/src/recipe.rs`, shared with `swaplab matrix`.
//!
//! It is the build script of the harness package (`crates/harness`), whose
//! material this is; the `-L` paths it prints reach the target programs of
//! `swaplab`, which depends on the harness.
//!
//! The `cc` crate builds static archives only, so its configured compiler
//! (honouring `CC`, `CFLAGS` and the target) is asked for a command and run
//! with `-shared -fPIC`. Each variant lands in its own folder,
//! `$OUT_DIR/libexample/<variant>/libexample.so`, so the plain-linked targets
//! can be linked with `-L <folder> -lexample` and the harness copies the
//! others into each experiment's sandbox. `SWAPLAB_VARIANTS` tells the harness
//! where they are, at compile time; `SWAPLAB_MUSL` where the musl builds are
//! (empty when there are none, and `SWAPLAB_MUSL_WHY` says why).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

include!("crates/harness/src/recipe.rs");

fn run(mut cmd: Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run the C compiler ({cmd:?}): {e}; install gcc (apt-get install -y gcc)")
    });
    assert!(status.success(), "building {what} failed: {cmd:?}");
}

/// `musl-gcc` (or `SWAPLAB_MUSL_CC`) if it can be run.
fn musl_compiler() -> Result<PathBuf, String> {
    let cc = env::var_os("SWAPLAB_MUSL_CC")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("musl-gcc"));
    match Command::new(&cc).arg("--version").output() {
        Ok(o) if o.status.success() => Ok(cc),
        Ok(_) => Err(format!("{} --version failed", cc.display())),
        Err(_) => Err(format!(
            "{} is not installed (Debian and Ubuntu: apt-get install -y musl-tools; \
             Fedora: dnf install -y musl-gcc; Arch: pacman -S musl)",
            cc.display()
        )),
    }
}

/// The C and C++ compilers of the host build, as `cc` configures them
/// (honouring `CC`, `CXX`, their flags and the target).
struct Compilers {
    c: cc::Tool,
    cxx: cc::Tool,
}

/// Builds every variant into `root` (`<root>/<name>/libexample.so`) with
/// `c` for C and linking, the host's C++ compiler for C++; `musl` skips
/// what needs libstdc++ (there is none for musl).
fn build_variants(c: &dyn Fn() -> Command, cxx: &dyn Fn() -> Command, root: &Path, musl: bool) {
    for v in VARIANTS {
        if musl && v.lang == Lang::Cxx {
            continue;
        }
        std::fs::create_dir_all(root.join(v.name)).expect("create variant folder");
        for (lang, args) in variant_steps(v, "csrc", &root.display().to_string()) {
            let mut cmd = match lang {
                Lang::C => c(),
                Lang::CxxBare | Lang::Cxx => cxx(),
            };
            cmd.args(args);
            run(
                cmd,
                &format!("libexample {}{}", v.name, if musl { " (musl)" } else { "" }),
            );
        }
    }
}

/// The musl builds: variants under `<dir>/libexample/`, twins under `<dir>/bin/`.
fn build_musl(cc: &Path, host: &Compilers, dir: &Path) {
    let lib_root = dir.join("libexample");
    build_variants(
        &|| Command::new(cc),
        &|| host.cxx.to_command(),
        &lib_root,
        true,
    );
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("create musl bin folder");
    for t in TWINS {
        let mut cmd = Command::new(cc);
        cmd.args(twin_args(
            t,
            "csrc/target.c",
            &lib_root.display().to_string(),
            &bin.join(t.0).display().to_string(),
        ));
        run(cmd, &format!("the musl twin {}", t.0));
    }
}

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // It builds the harness package (crates/harness); the C sources are the
    // repository's, two folders up.
    let package = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let repo = package.join("../..");
    env::set_current_dir(&repo).expect("the repository's folder");
    println!("cargo:rerun-if-changed={}", repo.join("csrc").display());
    println!(
        "cargo:rerun-if-changed={}",
        package.join("src/recipe.rs").display()
    );
    println!("cargo:rerun-if-env-changed=CC");
    println!("cargo:rerun-if-env-changed=CFLAGS");
    println!("cargo:rerun-if-env-changed=CXX");
    println!("cargo:rerun-if-env-changed=CXXFLAGS");
    println!("cargo:rerun-if-env-changed=SWAPLAB_MUSL_CC");
    // Installing musl-tools changes nothing cargo watches: PATH is the
    // nearest thing (and `touch build.rs` always works).
    println!("cargo:rerun-if-env-changed=PATH");

    // Fixed optimisation and no debug info: the layout (and so the offsets a
    // lab sheet shows) is the same in debug and release builds of swaplab.
    let tool = |cpp: bool| {
        cc::Build::new()
            .cpp(cpp)
            .opt_level(2)
            .debug(false)
            .pic(true)
            .warnings(true)
            .get_compiler()
    };
    let host = Compilers {
        c: tool(false),
        cxx: tool(true),
    };
    let compiler = &host.c;
    if let Err(e) = host.cxx.to_command().arg("--version").output() {
        panic!(
            "cannot run the C++ compiler {:?} ({e}): L16's C++ libraries need it; \
             install g++ (apt-get install -y g++)",
            host.cxx.path()
        );
    }

    let root = out.join("libexample");
    build_variants(
        &|| host.c.to_command(),
        &|| host.cxx.to_command(),
        &root,
        false,
    );
    // The soname target (swaplab-soname) links against `libexample.so.1`
    // by that very file name (`-l:libexample.so.1`): a folder with only it.
    let so1 = out.join("so1-link");
    std::fs::create_dir_all(&so1).expect("create so1-link");
    std::fs::copy(
        root.join("so1-v1/libexample.so"),
        so1.join("libexample.so.1"),
    )
    .expect("copy so1-v1 for linking");
    println!("cargo:rustc-link-search=native={}", so1.display());

    // The C sleeper of `swaplab bench stale`, linked against libexample v1
    // (the sandbox's lib/ is on its LD_LIBRARY_PATH at run time).
    let sleeper = out.join("swaplab-sleeper");
    let mut cmd: Command = compiler.to_command();
    cmd.arg(Path::new("csrc").join("sleeper.c"))
        .arg("-o")
        .arg(&sleeper)
        .arg(format!("-L{}", root.join("v1").display()))
        .arg("-lexample")
        .arg("-pthread");
    run(cmd, "the sleeper");
    println!("cargo:rustc-env=SWAPLAB_SLEEPER={}", sleeper.display());

    // musl: only where swaplab itself is not a musl program already (on a
    // musl-native system the host targets are the musl column).
    let target_env = env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    let musl = if target_env == "musl" {
        Err("swaplab itself is built for musl here: its own targets are the musl column".into())
    } else {
        musl_compiler()
    };
    match musl {
        Ok(cc) => {
            let dir = out.join("musl");
            build_musl(&cc, &host, &dir);
            println!("cargo:rustc-env=SWAPLAB_MUSL={}", dir.display());
            println!("cargo:rustc-env=SWAPLAB_MUSL_WHY=");
        }
        Err(why) => {
            println!("cargo:rustc-env=SWAPLAB_MUSL=");
            println!("cargo:rustc-env=SWAPLAB_MUSL_WHY={why}");
        }
    }

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
