//! Text a device (or any peer) chose, made safe to show: in failure reasons, state reasons,
//! reports and log lines.
//!
//! A kernel command line, an IMA path, event data or a hostname can hold newlines (a forged
//! log line), ANSI escape sequences (a rewritten operator terminal), bidirectional overrides (a
//! reason that reads differently from what it says) or bytes that are not UTF-8. Each such
//! character is written as a Rust-style escape (`\n`, `\u{1b}`, `\u{202e}`), each byte that is
//! not UTF-8 as `\xNN`. Everything else, backslashes included, is kept as it is: the escaped form
//! holds no character this module would escape, so escaping twice changes nothing (a reason
//! escaped when it was made and again when it is shown stays the same).

use std::borrow::Cow;
use std::fmt::{self, Write as _};

/// Characters that must not reach a reason or a log raw: control characters (C0, DEL, C1) and the
/// invisible or direction-changing format characters (zero-width, bidi embeddings, overrides and
/// isolates, line and paragraph separators, the byte-order mark).
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2069}'
                | '\u{feff}'
        )
}

fn push_escaped(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        _ => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
    }
}

/// `text` with every character that could forge or hide output escaped.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.chars().any(must_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().saturating_add(16));
    for c in text.chars() {
        if must_escape(c) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Device bytes as text: valid UTF-8 escaped as [`escape`] does, every other byte as `\xNN`.
pub fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for chunk in bytes.utf8_chunks() {
        out.push_str(&escape(chunk.valid()));
        for byte in chunk.invalid() {
            let _ = write!(out, "\\x{byte:02x}");
        }
    }
    out
}

/// Escapes on display, for log fields that may carry peer text: `reason = %Escaped(&error)`.
#[derive(Debug, Clone, Copy)]
pub struct Escaped<T>(pub T);

impl<T: fmt::Display> fmt::Display for Escaped<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&escape(&self.0.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newlines_ansi_escapes_and_bidi_overrides_are_escaped() {
        let hostile = "console=ttyS0\n2026-12-04T01:00:00Z INFO device trusted\x1b[2J\x1b[32mOK\u{202e}txt.exe\u{7f}\u{85}";
        let escaped = escape(hostile);
        assert_eq!(
            escaped,
            "console=ttyS0\\n2026-12-04T01:00:00Z INFO device trusted\\u{1b}[2J\\u{1b}[32mOK\\u{202e}txt.exe\\u{7f}\\u{85}"
        );
        assert!(!escaped.chars().any(must_escape));
    }

    #[test]
    fn plain_text_is_borrowed_and_escaping_twice_changes_nothing() {
        let plain = "/usr/bin/bash root=/dev/sda1 ro quiet \\x41 \u{e9}";
        assert!(matches!(escape(plain), Cow::Borrowed(_)));
        let once = escape("a\r\nb\u{200b}c\td").into_owned();
        assert_eq!(once, "a\\r\\nb\\u{200b}c\\td");
        assert_eq!(escape(&once), once);
    }

    #[test]
    fn bytes_that_are_not_utf8_are_shown_as_hex_escapes() {
        let bytes = b"/tmp/\xff\xfeevil\n\xe2\x80\xaeok";
        assert_eq!(escape_bytes(bytes), "/tmp/\\xff\\xfeevil\\n\\u{202e}ok");
        assert_eq!(escape_bytes(b"plain"), "plain");
    }

    #[test]
    fn a_log_field_is_escaped_on_display() {
        let error = "refused: hostname \"gw\"\n\x1b[31mforged";
        assert_eq!(
            Escaped(error).to_string(),
            "refused: hostname \"gw\"\\n\\u{1b}[31mforged"
        );
    }
}
