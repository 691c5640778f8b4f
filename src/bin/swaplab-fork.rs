//! Target: linked against libexample at start-up (DT_NEEDED); forks children
//! on command, each calling the library, as the article's `test-fork`.
//! The command protocol is in `swaplab::targets::agent`.

#[link(name = "example")]
extern "C" {
    fn greeting() -> *const std::ffi::c_char;
}

fn main() {
    swaplab::targets::agent::main(Some(greeting))
}
