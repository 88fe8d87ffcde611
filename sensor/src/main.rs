//! `custos`: the Custos sensor daemon and its command-line tools (see the library's `cli`).
fn main() -> std::process::ExitCode {
    custos::cli::main()
}
