//! `hkms completions SHELL`: a script for each shell that knows every command.

mod support;

#[test]
fn every_shell_gets_a_script_naming_every_command() {
    for shell in ["bash", "zsh", "fish"] {
        let out = std::process::Command::new(support::hkms_bin())
            .args(["completions", shell])
            .output()
            .expect("run hkms");
        assert!(out.status.success(), "{shell}: {}", support::stderr(&out));
        let script = support::stdout(&out);
        for command in [
            "keys",
            "ceremony",
            "package",
            "audit",
            "transport",
            "card",
            "token",
        ] {
            assert!(script.contains(command), "{shell} lacks {command}");
        }
        assert!(
            script.contains("enter-component"),
            "{shell}: subcommands too"
        );
    }
    let out = std::process::Command::new(support::hkms_bin())
        .args(["completions", "tcsh-9"])
        .output()
        .expect("run hkms");
    assert_eq!(
        out.status.code(),
        Some(2),
        "an unknown shell is a usage error"
    );
}
