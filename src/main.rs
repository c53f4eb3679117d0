//! The `hkms` binary; everything lives in the library.

/// mimalloc for hkms's own allocations: in glibc's malloc they took about a tenth of the
/// server's CPU per request (docs/benchmarks.md). C libraries in the process (SoftHSM2,
/// SQLite) keep glibc's malloc.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    hkms::cli::main()
}
