//! Target: linked against libexample at start-up (DT_NEEDED), as the
//! article's `test`.
//! The command protocol is in `swaplab::targets::agent`.

#[link(name = "example")]
extern "C" {
    fn greeting() -> *const std::ffi::c_char;
}

fn main() {
    swaplab::targets::agent::main(Some(greeting))
}
