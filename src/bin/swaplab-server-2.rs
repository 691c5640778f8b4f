//! Target for U03–U07: the upgrade of `swaplab-server`, version 2.0.0.

#[link(name = "example")]
extern "C" {
    fn greeting() -> *const std::ffi::c_char;
}

fn main() {
    swaplab::targets::server::main("2.0.0", greeting)
}
