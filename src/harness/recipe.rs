// The recipe for the C side of swaplab: the libexample variants and the C
// twins of the target programs. build.rs includes this file (`include!`) to
// build them for the host (and with musl-gcc); `swaplab matrix` uses the same
// tables to build them inside a Debian root with its own gcc. One recipe, so
// every C library gets the same builds.

/// What the old builds (v1) greet with: the article's bug.
pub const OLD: &str = "Hell World";
/// What the fixed builds (v2 and its kin) greet with.
pub const NEW: &str = "Hello World";

/// The libexample variants: (folder name, greeting, version, extra flags).
pub const VARIANTS: &[(&str, &str, u32, &[&str])] = &[
    ("v1", OLD, 1, &[]),
    ("v2", NEW, 2, &[]),
    ("v2-layout", NEW, 2, &["-DMOVED_LAYOUT"]),
    (
        "short",
        NEW,
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
    ("v1-nodelete", OLD, 1, &["-Wl,-z,nodelete"]),
];

/// The C twins of the agent programs (`csrc/target.c`): (file name, linked
/// against libexample at start-up, the build it says it is).
pub const TWINS: &[(&str, bool, &str)] = &[
    ("swaplab-plain", true, "1"),
    ("swaplab-fork", true, "1"),
    ("swaplab-dlopen", false, "1"),
    ("swaplab-app", false, "1"),
    ("swaplab-app-2", false, "2"),
];

/// Compiler arguments (after the compiler itself) that build one variant
/// from `source` into `out`.
pub fn variant_args(variant: &(&str, &str, u32, &[&str]), source: &str, out: &str) -> Vec<String> {
    let (_, greeting, version, extra) = variant;
    // An ELF build-id in every build (musl-gcc and some distributions' gcc
    // add none by default): `swaplab stale` then compares the old and new
    // content by build-id, which an unprivileged user can read from the
    // process's memory, where comparing bytes needs root
    // (/proc/PID/map_files). `short` turns it off again (its extra flags
    // come later): the build without one.
    let mut a: Vec<String> = [
        "-O2",
        "-Wall",
        "-shared",
        "-fPIC",
        "-Wl,-soname,libexample.so",
        "-Wl,--build-id",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    a.push(format!("-DGREETING=\"{greeting}\""));
    a.push(format!("-DVERSION={version}"));
    a.extend(extra.iter().map(|s| s.to_string()));
    a.extend([source.to_string(), "-o".to_string(), out.to_string()]);
    a
}

/// Compiler arguments that build one twin from `source` into `out`; the
/// linked ones link against the libexample in folder `v1`.
pub fn twin_args(twin: &(&str, bool, &str), source: &str, v1: &str, out: &str) -> Vec<String> {
    let (_, linked, build) = twin;
    let mut a: Vec<String> = vec![
        "-O2".into(),
        "-Wall".into(),
        "-Wl,--build-id".into(),
        format!("-DBUILD=\"{build}\""),
        source.into(),
        "-o".into(),
        out.into(),
    ];
    if *linked {
        a.extend(["-DLINKED".into(), format!("-L{v1}"), "-lexample".into()]);
    }
    // dlopen lives in libdl before glibc 2.34 (and in libc since; the
    // library is then an empty stub, and musl's libdl.a is one too).
    a.push("-ldl".into());
    a
}
