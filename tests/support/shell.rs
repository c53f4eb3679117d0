//! The `hkms` binary as a user runs it: from a folder outside the repository (no `.hkms/`
//! dev PKI to fall back on), with every file named on the command line, none from `HKMS_*`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tempfile::TempDir;

use super::{TestNode, hkms_bin};

/// The variables that would give the CLI a file or a node the test did not name.
const HKMS_VARS: [&str; 7] = [
    "HKMS_SERVER",
    "HKMS_CERT",
    "HKMS_KEY",
    "HKMS_CA",
    "HKMS_CONFIG",
    "HKMS_POLICY",
    "CLICOLOR_FORCE",
];

/// A caller's certificate and key, issued by `hkms pki issue`.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The hkms:// identity.
    pub identity: String,
    /// The certificate file.
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
}

/// What one run printed and how it ended.
#[derive(Debug)]
pub struct Run {
    /// What the command line was (for messages).
    pub line: String,
    /// The exit code.
    pub code: Option<i32>,
    /// Standard output.
    pub out: String,
    /// Standard error.
    pub err: String,
}

impl Run {
    /// Requires exit 0; the standard output.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self}");
        &self.out
    }

    /// Requires exit 0 and standard output that is one JSON value; the value.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(self.ok()).unwrap_or_else(|e| panic!("not JSON ({e}): {self}"))
    }

    /// Requires exit `code` and a standard error that says each of `needles`.
    pub fn fails(&self, code: i32, needles: &[&str]) -> &Run {
        assert_eq!(self.code, Some(code), "{self}");
        for n in needles {
            assert!(self.err.contains(n), "stderr lacks `{n}`: {self}");
        }
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`hkms {}` exited {:?}\n--- stdout\n{}--- stderr\n{}",
            self.line, self.code, self.out, self.err
        )
    }
}

/// A working folder outside the repository, where each command runs.
pub struct Shell {
    /// The working folder.
    pub cwd: TempDir,
    /// SOFTHSM2_CONF for the local admin tools (`token`, `keys orphans`).
    pub softhsm_conf: Option<PathBuf>,
}

impl Shell {
    /// A fresh working folder, outside the repository.
    pub fn new() -> Shell {
        let cwd = tempfile::tempdir().expect("tempdir");
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        assert!(
            !cwd.path().starts_with(repo),
            "the working folder must be outside the repository"
        );
        Shell {
            cwd,
            softhsm_conf: None,
        }
    }

    /// A path in the working folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.cwd.path().join(name)
    }

    /// Runs `hkms ARGS` in the working folder with `input` on standard input (none: closed).
    /// No output may hold an ANSI escape: it is not a terminal.
    pub fn run_with_input(&self, args: &[&str], input: Option<&str>) -> Run {
        let mut cmd = Command::new(hkms_bin());
        cmd.args(args).current_dir(self.cwd.path());
        for var in HKMS_VARS {
            cmd.env_remove(var);
        }
        match &self.softhsm_conf {
            Some(conf) => cmd.env("SOFTHSM2_CONF", conf),
            None => cmd.env_remove("SOFTHSM2_CONF"),
        };
        let mut child = cmd
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run hkms");
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            use std::io::Write;
            stdin.write_all(text.as_bytes()).expect("write stdin");
        }
        let o = child.wait_with_output().expect("run hkms");
        let run = Run {
            line: args.join(" "),
            code: o.status.code(),
            out: String::from_utf8_lossy(&o.stdout).into_owned(),
            err: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        assert!(
            !run.out.contains('\x1b') && !run.err.contains('\x1b'),
            "ANSI escape in output that is not a terminal: {run}"
        );
        run
    }

    /// Runs `hkms ARGS` in the working folder.
    pub fn run_args(&self, args: &[&str]) -> Run {
        self.run_with_input(args, None)
    }

    /// Runs `hkms LINE` in the working folder, `line` split at white space (no quoting).
    pub fn run(&self, line: &str) -> Run {
        self.run_with_input(&words(line), None)
    }

    /// Runs the client command `hkms ARGS` against `node` as `who`, with `--server`,
    /// `--cert`, `--key` and `--ca` given.
    pub fn client_with_input(
        &self,
        node: &TestNode,
        who: &Caller,
        args: &[&str],
        input: Option<&str>,
    ) -> Run {
        let ca = node.dir.path().join("pki/ca.pem");
        let url = node.url();
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--server", &url]);
        all.extend(["--cert", who.cert.to_str().expect("utf-8 path")]);
        all.extend(["--key", who.key.to_str().expect("utf-8 path")]);
        all.extend(["--ca", ca.to_str().expect("utf-8 path")]);
        self.run_with_input(&all, input)
    }

    /// [`Shell::client_with_input`] with standard input closed, `line` split at white space.
    pub fn client(&self, node: &TestNode, who: &Caller, line: &str) -> Run {
        self.client_with_input(node, who, &words(line), None)
    }

    /// [`Shell::client_with_input`], `line` split at white space.
    pub fn client_input(&self, node: &TestNode, who: &Caller, line: &str, input: &str) -> Run {
        self.client_with_input(node, who, &words(line), Some(input))
    }

    /// Issues a certificate for `identity` with the node's CA through `hkms pki issue --json`
    /// (files `STEM.pem` and `STEM.key` in the node's PKI folder, not the dev PKI's names).
    pub fn caller(&self, node: &TestNode, identity: &str, stem: &str) -> Caller {
        let dir = node.dir.path().join("pki");
        let issued = self
            .run_args(&[
                "pki",
                "issue",
                "--dir",
                dir.to_str().expect("utf-8 path"),
                "--identity",
                identity,
                "--out",
                stem,
                "--days",
                "1",
                "--json",
            ])
            .json();
        assert_eq!(issued["identity"], identity);
        let file = |field: &str| PathBuf::from(issued[field].as_str().expect("a path"));
        let caller = Caller {
            identity: identity.to_string(),
            cert: file("cert"),
            key: file("key"),
        };
        assert!(caller.cert.is_file() && caller.key.is_file(), "{caller:?}");
        caller
    }
}

/// Every leaf command of `hkms`, as `hkms --help` and each command's `--help` list them
/// (`["keys", "list"]`, `["serve"]`, ...), without clap's `help`.
pub fn leaf_commands(shell: &Shell) -> Vec<Vec<String>> {
    fn walk(shell: &Shell, path: Vec<String>, out: &mut Vec<Vec<String>>) {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = shell.run_args(&args);
        let text = help.ok();
        let subs: Vec<String> = text
            .lines()
            .skip_while(|l| l.trim() != "Commands:")
            .skip(1)
            .take_while(|l| !l.trim().is_empty())
            // A command starts its line at two spaces; a wrapped description goes deeper.
            .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|c| *c != "help")
            .map(String::from)
            .collect();
        if subs.is_empty() {
            out.push(path);
            return;
        }
        for s in subs {
            let mut p = path.clone();
            p.push(s);
            walk(shell, p, out);
        }
    }
    let mut out = Vec::new();
    walk(shell, Vec::new(), &mut out);
    out
}

/// A command line's words (split at white space; no quoting).
pub fn words(line: &str) -> Vec<&str> {
    line.split_whitespace().collect()
}
