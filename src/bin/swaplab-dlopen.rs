//! Target: not linked against libexample; opens it at run time with dlopen
//! (libloading). The command protocol is in `swaplab::agent`.

fn main() {
    swaplab::agent::main(None)
}
