//! The `fabric` binary: everything lives in the library.

/// Many small allocations (parsed snapshots, strings) on several threads:
/// mimalloc handles them markedly faster than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    prime_fabric::main()
}
