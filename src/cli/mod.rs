//! The `hkms` command: `serve`, the key client, and local admin tools that open the node's
//! token and registry directly (orphan check, attribute audit).

mod admin;
mod audit;
mod card;
mod ceremony;
mod client;
mod keys;
mod logging;
mod node_init;
mod output;
mod pages;
mod pki;
mod policy;
mod secret;
mod transport;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// hkms: a hierarchical key management service in front of PKCS#11 HSMs.
#[derive(Debug, Parser)]
#[command(name = "hkms", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: open its token and registry and serve gRPC.
    Serve {
        /// The node config file.
        #[arg(long, env = "HKMS_CONFIG")]
        config: PathBuf,
        /// Log as JSON lines instead of text (also `[log] json = true` in the config).
        #[arg(long)]
        log_json: bool,
    },
    /// Keys of the hierarchy (client of a running node).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Card services at a service window: unblock or reset a card's PIN.
    Card {
        #[command(subcommand)]
        command: card::CardCommand,
    },
    /// Ceremonies under dual control: open, approve, enter components, cancel, list.
    Ceremony {
        #[command(subcommand)]
        command: ceremony::CeremonyCommand,
    },
    /// The ceremony log: export a bundle, verify it offline, report on it.
    Audit {
        #[command(subcommand)]
        command: audit::AuditCommand,
    },
    /// The policy: check a file, explain a decision, show or reload a node's.
    Policy {
        #[command(subcommand)]
        command: policy::PolicyCommand,
    },
    /// Transport key cards: issue (ministry, province), load (recipient), list.
    Transport {
        #[command(subcommand)]
        command: transport::TransportCommand,
    },
    /// Key packages: export a sub-key for its region, import, inspect.
    Package {
        #[command(subcommand)]
        command: transport::PackageCommand,
    },
    /// Set up a node: `hkms node init --dir DIR --region CODE ...`.
    Node {
        #[command(subcommand)]
        command: node_init::NodeCommand,
    },
    /// A dev and test PKI: CA, server and caller certificates.
    Pki {
        #[command(subcommand)]
        command: pki::PkiCommand,
    },
    /// The node's token (local admin; opens the token directly).
    Token {
        #[command(subcommand)]
        command: admin::TokenCommand,
    },
    /// Print a shell completion script: `hkms completions bash > /etc/bash_completion.d/hkms`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Runs the command line; the process exit code is the result.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = match cli.command {
        // Before any thread starts: it sets this process's SOFTHSM2_CONF.
        Command::Node { command } => return exit_code(command.run()),
        other => other,
    };
    if matches!(command, Command::Serve { .. }) {
        limit_malloc_arenas();
        raise_open_file_limit();
        forbid_core_dumps();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("hkms: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match command {
            Command::Node { .. } => Err(anyhow::anyhow!("`hkms node` runs before the runtime")),
            Command::Serve { config, log_json } => serve(config, log_json).await,
            Command::Keys { command } => command.run().await,
            Command::Policy { command } => command.run().await,
            Command::Ceremony { command } => command.run().await,
            Command::Card { command } => command.run().await,
            Command::Audit { command } => command.run().await,
            Command::Pki { command } => command.run(),
            Command::Transport { command } => command.run().await,
            Command::Package { command } => command.run().await,
            Command::Token { command } => command.run(),
            Command::Completions { shell } => {
                use clap::CommandFactory;
                use std::io::Write;
                // Made in memory first: a closed pipe (`| head`) is an error, not a panic.
                let mut script = Vec::new();
                clap_complete::generate(shell, &mut Cli::command(), "hkms", &mut script);
                match std::io::stdout().write_all(&script) {
                    Ok(()) => Ok(ExitCode::SUCCESS),
                    Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
                    Err(e) => Err(anyhow::anyhow!("cannot write the completion script: {e}")),
                }
            }
        }
    });
    exit_code(result)
}

/// A command's result as the process's exit code, its error printed.
fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hkms: {}", error_text(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line. Most of our errors embed their cause in their own
/// message, so a cause already said is not said again; a context such as "cannot read the
/// package FILE" gets its cause ("No such file or directory") after it.
pub(crate) fn error_text(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

/// For commands whose exit code 1 is an answer (broken, found, refused): an error that kept
/// the command from answering is exit 2, printed as `main` prints errors.
pub(crate) fn exit_2_on_error(result: anyhow::Result<ExitCode>) -> ExitCode {
    result.unwrap_or_else(|e| {
        eprintln!("hkms: {}", error_text(&e));
        ExitCode::from(2)
    })
}

/// Caps glibc's malloc (SoftHSM2's and SQLite's; hkms's own allocations go to mimalloc, see
/// `main.rs`) at two arenas for the server, before any thread starts. Many blocking
/// threads each got an arena of their own, and the memory SoftHSM2 frees when it is initialised
/// again (`hsm/recovery.rs`) stayed fragmented across them: in a 400,000-card run, RSS
/// levelled at 62 MB with two arenas and was still climbing past 78 MB without the cap.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallopt only sets an allocator parameter; no thread exists yet.
        let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, 2) };
    }
}

/// Raises the server's soft limit of open files to its hard limit: each client connection is a
/// file, and at a soft limit of 1,024 a burst of idle connections would starve clients and the
/// node's own files (registry, token) alike.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Keeps the server's memory off the disk and out of other processes: key components, PINs
/// and unwrapped packages pass through it. No core dump is written, and the process cannot be
/// traced or read through `/proc` by another process of the same user.
fn forbid_core_dumps() {
    let none = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct passed; prctl(PR_SET_DUMPABLE) takes plain integers.
    unsafe {
        let _ = libc::setrlimit(libc::RLIMIT_CORE, &none);
        #[cfg(target_os = "linux")]
        let _ = libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
}

async fn serve(config: PathBuf, log_json: bool) -> anyhow::Result<ExitCode> {
    // Whatever the server creates (registry, journals, exports, checkpoints) is its user's
    // alone; the files that matter also set their modes themselves.
    // SAFETY: umask only swaps the process's file mode mask.
    unsafe {
        libc::umask(0o077);
    }
    let config = crate::config::NodeConfig::load(&config)?;
    logging::init(log_json || config.log_json);
    crate::server::serve(config, shutdown_signal()).await?;
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_names_its_cause_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let e = anyhow::Error::new(io).context("cannot read the package /x/p.pkg");
        assert_eq!(
            error_text(&e),
            "cannot read the package /x/p.pkg: No such file or directory"
        );
        // A message that already says its cause does not say it twice.
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::new(io).context("cannot read /x: gone");
        assert_eq!(error_text(&e), "cannot read /x: gone");
    }
}
