//! The server's log: text (one line per event) or JSON. Field values quote what callers and
//! certificates sent, so the text form escapes anything invisible in them (a newline in a SAN
//! URI would otherwise start a forged line), and colours are used only on a terminal.

use std::fmt;
use std::io::IsTerminal;

use tracing::field::Field;
use tracing_subscriber::field::MakeExt;
use tracing_subscriber::fmt::format::Writer;

/// Installs the log for `hkms serve`: `HKMS_LOG` filters (default `info`), on standard error.
pub fn init(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HKMS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    // A second init (tests in one process) keeps the first subscriber.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(write_field).delimited(" "))
            .try_init()
    };
}

/// One field of a text line: `name=value`, the message bare, anything invisible escaped.
fn write_field(w: &mut Writer<'_>, field: &Field, value: &dyn fmt::Debug) -> fmt::Result {
    let text = format!("{value:?}");
    let text = crate::untrusted_text::escape(&text);
    match field.name() {
        "message" => write!(w, "{text}"),
        name => write!(w, "{name}={text}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_newline_or_override_in_a_field_stays_inside_its_line() {
        let out = Lines::default();
        let sink = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .fmt_fields(tracing_subscriber::fmt::format::debug_fn(write_field).delimited(" "))
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let error = "identity `hkms://x\nINFO forged: ok`\u{202E}";
            tracing::warn!(error = %error, rpc = "GetKey", "unauthenticated");
        });
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.contains("error=identity `hkms://x\\nINFO forged: ok`\\u{202e}"),
            "{text}"
        );
        assert!(text.contains("rpc=\"GetKey\""), "{text}");
        assert!(text.contains("unauthenticated"), "{text}");
    }
}
