//! Text that comes from outside (certificate fields, request values) on its way into the text
//! log, the ceremony log and reports. A newline in a certificate's SAN URI would split a log
//! line; a right-to-left override in a window operator's name would make a report say what it
//! does not. Names the node records refuse such characters outright; everything else is
//! shown escaped.

use std::borrow::Cow;
use std::fmt::Write;

/// Characters that are invisible or change how the text around them is shown: controls (C0,
/// DEL, C1) and the format characters of Unicode that hide text or reorder it (bidi embeddings,
/// overrides and isolates, zero-width characters, the byte order mark, tag characters, ...).
pub fn is_invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{061C}'
                | '\u{115F}'..='\u{1160}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// Whether `text` holds a character of [`is_invisible`].
pub fn has_invisible(text: &str) -> bool {
    text.chars().any(is_invisible)
}

/// `text` with every [`is_invisible`] character written as a Rust escape (`\n`, `\u{202e}`),
/// so that it stays on one line and reads as it is. Borrowed when there is nothing to escape.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !has_invisible(text) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if is_invisible(c) {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\0' => out.push_str("\\0"),
                _ => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_are_escaped_and_the_rest_kept() {
        assert_eq!(
            escape("hkms://officer/x\ny\tz\0"),
            "hkms://officer/x\\ny\\tz\\0"
        );
        assert_eq!(escape("Li \u{202E}ieW"), "Li \\u{202e}ieW");
        assert_eq!(escape("a\u{1b}[31mred"), "a\\u{1b}[31mred");
        assert_eq!(
            escape("a\u{200B}b\u{FEFF}c\u{2066}"),
            "a\\u{200b}b\\u{feff}c\\u{2066}"
        );
        assert!(matches!(
            escape("李伟 counter-1"),
            Cow::Borrowed("李伟 counter-1")
        ));
    }

    #[test]
    fn printable_text_of_any_script_is_not_invisible() {
        for s in ["Li Wei", "李伟", "Zoë", "עברית", "عربي", "a-b_c.d", "🙂"] {
            assert!(!has_invisible(s), "{s}");
        }
        for c in [
            '\u{7f}',
            '\u{85}',
            '\u{200E}',
            '\u{2067}',
            '\u{E0041}',
            '\u{061C}',
        ] {
            assert!(is_invisible(c), "{:x}", c as u32);
        }
    }

    proptest::proptest! {
        #[test]
        fn escaped_text_holds_nothing_invisible_and_keeps_the_visible_in_order(
            text in "\\PC*|.*|[\\x00-\\x20\\u{200b}-\\u{200f}\\u{202a}-\\u{202e}a]*"
        ) {
            let shown = escape(&text);
            proptest::prop_assert!(!has_invisible(&shown));
            let mut rest = shown.chars();
            for c in text.chars().filter(|c| !is_invisible(*c)) {
                proptest::prop_assert!(rest.any(|s| s == c), "{c:?} lost from {text:?}");
            }
            proptest::prop_assert_eq!(has_invisible(&text), matches!(shown, Cow::Owned(_)));
        }
    }
}
