//! Target: linked against libexample by its soname, `libexample.so.1`
//! (DT_NEEDED), as packaged libraries are (L15). The command protocol is in
//! `swaplab::targets::agent`.

// `-l:libexample.so.1`: build.rs puts a file of that very name on the link
// path (the so1-v1 build, whose soname it is).
#[link(name = "libexample.so.1", kind = "dylib", modifiers = "+verbatim")]
extern "C" {
    fn greeting() -> *const std::ffi::c_char;
}

fn main() {
    swaplab::targets::agent::main(Some(greeting))
}
