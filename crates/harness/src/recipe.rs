// The recipe for the C side of swaplab: the libexample variants and the C
// twins of the target programs. build.rs includes this file (`include!`) to
// build them for the host (and with musl-gcc); `swaplab matrix` uses the same
// tables to build them inside a Debian root with its own gcc. One recipe, so
// every C library gets the same builds.

/// What the old builds (v1) greet with: the article's bug.
pub const OLD: &str = "Hell World";
/// What the fixed builds (v2 and its kin) greet with.
pub const NEW: &str = "Hello World";

/// How a build is compiled and linked.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// C, by the C compiler.
    C,
    /// C++ that needs no C++ runtime: compiled by the C++ compiler (`-c`),
    /// linked by the C compiler, so it links against any C library
    /// (musl-gcc included).
    CxxBare,
    /// C++ that needs libstdc++: compiled and linked by the C++ compiler
    /// (glibc only: musl-tools has no C++ library).
    Cxx,
}

/// One build of a shared library in `<dir>/<name>/libexample.so`.
pub struct Build {
    pub name: &'static str,
    pub greeting: &'static str,
    pub version: u32,
    /// The source file in `csrc/`.
    pub source: &'static str,
    pub lang: Lang,
    /// Extra flags; `{src}` is the folder of the sources, `{out}` the
    /// folder of all builds (a build after another may link against it).
    pub flags: &'static [&'static str],
}

const fn c(
    name: &'static str,
    greeting: &'static str,
    version: u32,
    flags: &'static [&'static str],
) -> Build {
    Build {
        name,
        greeting,
        version,
        source: "libexample.c",
        lang: Lang::C,
        flags,
    }
}

/// The libexample variants, in build order (the plugin links against
/// `ver-v2`).
pub const VARIANTS: &[Build] = &[
    c("v1", OLD, 1, &[]),
    c("v2", NEW, 2, &[]),
    c("v2-layout", NEW, 2, &["-DMOVED_LAYOUT"]),
    c(
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
    c("v1-nodelete", OLD, 1, &["-Wl,-z,nodelete"]),
    // L15: the soname a package gives its library (the last -soname wins).
    c("so1-v1", OLD, 1, &["-Wl,-soname,libexample.so.1"]),
    c("so1-v2", NEW, 2, &["-Wl,-soname,libexample.so.1"]),
    // L16: the kinds of library that may or may not unload.
    c("tls-v1", OLD, 1, &["-DTHREAD_COUNTER"]),
    c("tls-v2", NEW, 2, &["-DTHREAD_COUNTER"]),
    Build {
        name: "unique-v1",
        greeting: OLD,
        version: 1,
        source: "unique.cpp",
        lang: Lang::CxxBare,
        flags: &[],
    },
    Build {
        name: "unique-v2",
        greeting: NEW,
        version: 2,
        source: "unique.cpp",
        lang: Lang::CxxBare,
        flags: &[],
    },
    Build {
        name: "thread_local-v1",
        greeting: OLD,
        version: 1,
        source: "thread_local.cpp",
        lang: Lang::Cxx,
        flags: &[],
    },
    Build {
        name: "thread_local-v2",
        greeting: NEW,
        version: 2,
        source: "thread_local.cpp",
        lang: Lang::Cxx,
        flags: &[],
    },
    // L18: symbol versions, and a plugin that needs version 2's node.
    c(
        "ver-v1",
        OLD,
        1,
        &["-Wl,--version-script={src}/libexample-1.map"],
    ),
    c(
        "ver-v2",
        NEW,
        2,
        &["-DFEATURE", "-Wl,--version-script={src}/libexample-2.map"],
    ),
    Build {
        name: "plugin",
        greeting: "the feature of version 2",
        version: 2,
        source: "plugin.c",
        lang: Lang::C,
        flags: &["-L{out}/ver-v2", "-lexample"],
    },
];

/// The sources the variants and twins are built from (for a build
/// elsewhere, as in a Debian root): name in `csrc/`, text.
pub const SOURCES: &[&str] = &[
    "libexample.c",
    "libexample-1.map",
    "libexample-2.map",
    "plugin.c",
    "unique.cpp",
    "thread_local.cpp",
    "target.c",
];

/// Which libexample a twin is linked against at start-up.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Linked {
    /// None: it opens libraries with dlopen only.
    No,
    /// `libexample.so` (v1's soname).
    Example,
    /// `libexample.so.1` (L15's soname).
    Soname,
}

/// The C twins of the agent programs (`csrc/target.c`): (file name, what
/// it is linked against at start-up, the build it says it is).
pub const TWINS: &[(&str, Linked, &str)] = &[
    ("swaplab-plain", Linked::Example, "1"),
    ("swaplab-fork", Linked::Example, "1"),
    ("swaplab-dlopen", Linked::No, "1"),
    ("swaplab-app", Linked::No, "1"),
    ("swaplab-app-2", Linked::No, "2"),
    ("swaplab-soname", Linked::Soname, "1"),
];

/// Replaces `{src}` and `{out}` in a flag.
fn expand(flag: &str, src_dir: &str, out_dir: &str) -> String {
    flag.replace("{src}", src_dir).replace("{out}", out_dir)
}

/// Compiler arguments (after the compiler itself) that build `b`: for
/// [`Lang::CxxBare`] the C++ compile step (`-c`, into `out` + `.o`) and the
/// C link step, else one step. `src_dir` holds the sources, `out_dir` the
/// builds (`<out_dir>/<name>/libexample.so`).
pub fn variant_steps(b: &Build, src_dir: &str, out_dir: &str) -> Vec<(Lang, Vec<String>)> {
    let out = format!("{out_dir}/{}/libexample.so", b.name);
    // An ELF build-id in every build (musl-gcc and some distributions' gcc
    // add none by default): `swaplab stale` then compares the old and new
    // content by build-id, which an unprivileged user can read from the
    // process's memory, where comparing bytes needs root
    // (/proc/PID/map_files). `short` turns it off again (its extra flags
    // come later): the build without one.
    let link: Vec<String> = [
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
    let mut defines = vec![
        format!("-DGREETING=\"{}\"", b.greeting),
        format!("-DVERSION={}", b.version),
    ];
    let flags: Vec<String> = b
        .flags
        .iter()
        .map(|f| expand(f, src_dir, out_dir))
        .collect();
    let source = format!("{src_dir}/{}", b.source);
    match b.lang {
        Lang::CxxBare => {
            let obj = format!("{out}.o");
            let mut compile: Vec<String> = [
                "-O2",
                "-Wall",
                "-fPIC",
                "-fno-exceptions",
                "-fno-rtti",
                "-c",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            compile.append(&mut defines);
            compile.extend([source, "-o".into(), obj.clone()]);
            let mut ld = link;
            ld.extend(flags);
            ld.extend([obj, "-o".into(), out]);
            vec![(Lang::CxxBare, compile), (Lang::C, ld)]
        }
        lang => {
            // Libraries after the source: the linker binds a reference to a
            // library named after it (the plugin's to libexample 2).
            let mut a = link;
            a.append(&mut defines);
            a.extend([source, "-o".into(), out]);
            a.extend(flags);
            vec![(lang, a)]
        }
    }
}

/// Compiler arguments that build one twin from `source` into `out`; a
/// linked one links against its libexample among the builds in `out_dir`.
pub fn twin_args(
    twin: &(&str, Linked, &str),
    source: &str,
    out_dir: &str,
    out: &str,
) -> Vec<String> {
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
    let folder = match linked {
        Linked::No => None,
        Linked::Example => Some("v1"),
        Linked::Soname => Some("so1-v1"),
    };
    if let Some(folder) = folder {
        a.extend([
            "-DLINKED".into(),
            format!("-L{out_dir}/{folder}"),
            "-lexample".into(),
        ]);
    }
    // dlopen lives in libdl and threads in libpthread before glibc 2.34
    // (in libc since; the libraries are then empty stubs, and musl's are
    // too).
    a.extend(["-ldl".into(), "-pthread".into()]);
    a
}
