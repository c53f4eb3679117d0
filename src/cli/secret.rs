//! Reading a secret (PIN, key component) from the operator: prompted without echo on a
//! terminal, or one line from standard input when scripted. Held in zeroized memory.

use std::io::{BufRead, IsTerminal};

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
