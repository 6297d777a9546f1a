//! Compile-fail UI tests: the `.stderr` snapshots in `tests/ui/` pin the compiler's message for
//! a job that cannot run on every executor, so that the advice text (not only the error code)
//! stays what a user sees.

#[test]
fn compile_errors_say_the_fix() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    // A pass case makes trybuild run `cargo build` rather than `cargo check`: the capturing
    // closure error is a post-monomorphization const assertion that `cargo check` never reaches.
    t.pass("tests/ui/pass/*.rs");
}
