//! The `hkms` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    hkms::cli::main()
}
