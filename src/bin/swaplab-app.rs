//! Target for U01/U02, build 1: a small program (not linked against
//! libexample) that says which build it is; `swaplab-app-2` is build 2.

fn main() {
    swaplab::targets::agent::main_build("1", None)
}
