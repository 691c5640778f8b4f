//! Target for U03–U07: the nginx-style master/worker server, version 1.0.0.
//! `swaplab-server-2` is the same code built as version 2.0.0, the binary an
//! experiment installs over this one. See `swaplab::targets::server`.

#[link(name = "example")]
extern "C" {
    fn greeting() -> *const std::ffi::c_char;
}

fn main() {
    swaplab::targets::server::main("1.0.0", greeting)
}
