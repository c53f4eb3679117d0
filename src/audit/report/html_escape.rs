//! Text from records on its way into the HTML report. Records carry what callers sent (names,
//! messages, parameters): `<script>` in a caller's name must show as text, a quote must not end
//! an attribute, and a newline, a control or a bidi override must be shown, never obeyed.

/// `text` for HTML element content or a double-quoted attribute value: invisible characters
/// escaped as [`crate::untrusted_text::escape`] shows them, then `& < > " '` as entities.
pub fn esc(text: &str) -> String {
    let shown = crate::untrusted_text::escape(text);
    let mut out = String::with_capacity(shown.len() + 8);
    for c in shown.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

/// `text` as a `<code>` element (`(empty)` for nothing, as the Markdown report says it).
pub fn code(text: &str) -> String {
    if text.is_empty() {
        return "<span class=\"empty\">(empty)</span>".into();
    }
    format!("<code>{}</code>", esc(text))
}

/// An identity URI as a `<code>` element; `(unauthenticated)` for the empty actor.
pub fn actor(uri: &str) -> String {
    if uri.is_empty() {
        return "<span class=\"empty\">(unauthenticated)</span>".into();
    }
    code(uri)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_quotes_and_invisible_characters_are_text() {
        assert_eq!(
            esc("<script>alert(\"x\")</script>"),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
        );
        assert_eq!(esc("a'b&c"), "a&#39;b&amp;c");
        assert_eq!(esc("Li \u{202E}ieW\n<b>"), "Li \\u{202e}ieW\\n&lt;b&gt;");
        assert_eq!(esc("李伟"), "李伟");
        assert_eq!(code(""), "<span class=\"empty\">(empty)</span>");
        assert_eq!(actor(""), "<span class=\"empty\">(unauthenticated)</span>");
    }
}
