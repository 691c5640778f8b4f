//! Target for U01/U02, build 2: the upgrade of `swaplab-app`.

fn main() {
    swaplab::targets::agent::main_build("2", None)
}
