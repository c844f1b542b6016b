//! The `fabric` binary: everything lives in the library.

fn main() -> std::process::ExitCode {
    prime_fabric::main()
}
