//! Target: not linked against libexample; opens it at run time with dlopen
//! (libloading). The command protocol is in `swaplab::targets::agent`.

fn main() {
    swaplab::targets::agent::main(None)
}
