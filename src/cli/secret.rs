//! Reading a secret (PIN, key component) from the operator: prompted without echo on a
//! terminal, or one line from standard input when scripted. Held in zeroized memory.

use std::io::IsTerminal;

use zeroize::Zeroizing;

/// One secret line, trimmed.
pub fn read_secret(prompt: &str) -> anyhow::Result<Zeroizing<String>> {
    let text = Zeroizing::new(if std::io::stdin().is_terminal() {
        rpassword::prompt_password(format!("{prompt} (not shown): "))?
    } else {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        line
    });
    Ok(Zeroizing::new(text.trim().to_string()))
}
