//! The `hkms` binary; everything lives in the library.

/// mimalloc for hkms's own allocations: in glibc's malloc they took about a tenth of the
/// server's CPU per request (docs/benchmarks.md). Every freed block is wiped first, so the
/// PINs, components and ID numbers that passed through TLS, HTTP/2 and protobuf buffers do
/// not outlive their requests. C libraries in the process (SoftHSM2, SQLite) keep glibc's
/// malloc.
#[global_allocator]
static ALLOCATOR: hkms::wiping_alloc::WipeOnFree<mimalloc::MiMalloc> =
    hkms::wiping_alloc::WipeOnFree(mimalloc::MiMalloc);

fn main() -> std::process::ExitCode {
    hkms::cli::main()
}
