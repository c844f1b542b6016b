//! The `fabric` binary: everything lives in the library.

/// Many small allocations (parsed snapshots, strings) on several threads:
/// mimalloc handles them markedly faster than the system allocator. Built
/// with `no_thp`: mimalloc would otherwise ask for transparent huge pages on
/// its 1 GiB arena, and every first touch of a 2 MiB page made the kernel
/// zero all of it: half of a one-file rerun over 10,000 files went there
/// (benches/README.md, P1b). Commands fabric starts are not affected.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    prime_fabric::main()
}
