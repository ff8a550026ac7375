//! Quoting the user's text (and libraries' messages about it) in errors: control
//! characters escaped, long text cut with a note, so that no message carries raw bytes or
//! kilobytes of a file to a terminal or a log.

use kube_failover_core::text::{MAX_QUOTE_CHARS, cut_note};

/// Longest message built from someone else's text (a parser's, a library's).
pub(super) const MAX_MESSAGE_CHARS: usize = 400;

/// `text` with control and other invisible characters escaped as Rust does (`\0`,
/// `\u{1b}`, `\n`), and, past `max` characters, cut with a note saying so.
pub fn printable(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max {
            out.push_str(&cut_note(text.chars().count()));
            break;
        }
        push_printable(&mut out, c);
    }
    out
}

pub(super) fn push_printable(out: &mut String, c: char) {
    match c {
        // Readable as they are; escape_debug would add a backslash.
        '"' | '\'' | '\\' => out.push(c),
        _ => out.extend(c.escape_debug()),
    }
}

/// A library's message about the user's text: control characters escaped everywhere,
/// each `backticked` quote cut to [`MAX_QUOTE_CHARS`] (serde quotes unknown keys and
/// values that way, and lists the valid ones after them), and the whole bounded.
pub(super) fn tame_message(message: &str) -> String {
    let mut out = String::new();
    for (i, part) in message.split('`').enumerate() {
        if i > 0 {
            out.push('`');
        }
        let quoted = i % 2 == 1;
        out.push_str(&printable(
            part,
            if quoted {
                MAX_QUOTE_CHARS
            } else {
                MAX_MESSAGE_CHARS
            },
        ));
    }
    cut(&out, 2 * MAX_MESSAGE_CHARS)
}

/// `text` cut after `max` characters, with a note; no escaping.
fn cut(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((at, _)) => format!("{}… (cut)", &text[..at]),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printable_escapes_and_cuts() {
        assert_eq!(
            printable("a\0b\u{1b}c\u{202e}\"'\\é", 100),
            "a\\0b\\u{1b}c\\u{202e}\"'\\é"
        );
        assert_eq!(printable("abcdef", 3), "abc… (cut, 6 characters in all)");
        assert_eq!(printable("abc", 3), "abc");
    }
}
