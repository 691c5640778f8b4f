//! One test per finding, named as the claim it proves: `cargo test l04` runs
//! exactly L04. Each runs the real experiment (processes, files, /proc) and
//! fails unless the finding is Confirmed on this machine. The tests are the
//! lines of the findings' index (`src/findings/index.rs`), whose test names
//! src/findings/mod.rs checks at compile time against the findings' IDs and
//! slugs (`Finding::test_name`).

macro_rules! index {
    ($($(#[$doc:meta])* $module:ident { $($id:ident $test:ident),+ $(,)? })+) => {
        $($(
            #[test]
            fn $test() {
                crate::support::prove(stringify!($id));
            }
        )+)+
    };
}

include!("../src/findings/index.rs");
