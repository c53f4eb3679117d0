//! Reading a secret (PIN, key component, ID number) from the operator: prompted without echo
//! on a terminal, one line from standard input when scripted, or the first line of a file the
//! operator names. Never from the command line, where `ps` shows it to every user of the host.
//! Held in zeroized memory.

use std::io::{BufRead, IsTerminal};
use std::path::Path;

use anyhow::Context;

use anyhow::bail;
use zeroize::Zeroizing;

/// One secret line, trimmed. An empty line or no input at all is refused: sent on, an empty
/// card PIN would cost one of the card's wrong-PIN tries.
pub fn read_secret(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    if std::io::stdin().is_terminal() {
        let text = Zeroizing::new(rpassword::prompt_password(format!(
            "{prompt} (not shown): "
        ))?);
        non_empty(prompt, &text)
    } else {
        read_secret_line(prompt, &mut std::io::stdin().lock())
    }
}

/// The first line of `input`, as [`read_secret`] takes it when standard input is not a terminal.
fn read_secret_line(prompt: &str, input: &mut impl BufRead) -> anyhow::Result<Zeroizing<String>> {
    // Room enough that the line does not grow, and so leave no unzeroized copy behind.
    let mut line = Zeroizing::new(String::with_capacity(1024));
    if input.read_line(&mut line)? == 0 {
        bail!(
            "no {prompt} on standard input: pipe it in as one line, or run the command in a \
             terminal to be asked for it"
        );
    }
    non_empty(prompt, &line)
}

/// The first line of the file at `path`, trimmed, as [`read_secret`] takes a line: for scripts
/// that keep the secret in a file of their own (mode 0600) rather than pipe it.
pub fn read_secret_file(prompt: &str, path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let bytes = Zeroizing::new(
        std::fs::read(path)
            .with_context(|| format!("cannot read the {prompt} file {}", path.display()))?,
    );
    read_secret_line(prompt, &mut bytes.as_slice())
        .with_context(|| format!("in {}", path.display()))
}

fn non_empty(prompt: &str, text: &str) -> anyhow::Result<Zeroizing<String>> {
    let text = text.trim();
    if text.is_empty() {
        bail!("the {prompt} is empty; nothing was sent");
    }
    Ok(Zeroizing::new(text.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_the_first_line_trimmed() {
        let mut input = "  123456 \nrest\n".as_bytes();
        let pin = read_secret_line("card PIN", &mut input).unwrap();
        assert_eq!(pin.as_str(), "123456");
    }

    #[test]
    fn a_file_gives_its_first_line_and_an_empty_file_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id");
        std::fs::write(&path, "44010619900101123X\n").unwrap();
        let id = read_secret_file("ID number", &path).unwrap();
        assert_eq!(id.as_str(), "44010619900101123X");
        std::fs::write(&path, "").unwrap();
        let err = format!("{:#}", read_secret_file("ID number", &path).unwrap_err());
        assert!(err.contains("no ID number"), "{err}");
        let err = format!(
            "{:#}",
            read_secret_file("ID number", &dir.path().join("none")).unwrap_err()
        );
        assert!(err.contains("cannot read the ID number file"), "{err}");
    }

    #[test]
    fn refuses_end_of_input_and_an_empty_line() {
        let err = read_secret_line("card PIN", &mut "".as_bytes()).unwrap_err();
        assert!(
            err.to_string().contains("no card PIN on standard input"),
            "{err}"
        );
        for empty in ["\n", "   \r\n", " "] {
            let err = read_secret_line("card PIN", &mut empty.as_bytes()).unwrap_err();
            assert!(err.to_string().contains("card PIN is empty"), "{err}");
        }
    }
}
