//! Target: linked against libexample at start-up (DT_NEEDED), as the
//! article's `test`.
//! The command protocol is in `swaplab::agent`.

#[link(name = "example")]
extern "C" {
    fn greeting() -> *const std::ffi::c_char;
}

fn main() {
    swaplab::agent::main(Some(greeting))
}
