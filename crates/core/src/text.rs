//! Quoting the user's text in messages: escaped like `{:?}`, cut to a bound, and the
//! choice among named values with a message that lists the valid ones. Shared by the
//! policy types here and the configuration loader of the daemon. Also a stable hash of
//! a name, for what must come out the same on every start and build.

/// FNV-1a of `text`: the same on every start and build (unlike std's hasher), spread
/// well over many short names.
pub fn stable_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Longest piece of the user's text (a value, a key, a line of the file) that a message
/// quotes; the rest is cut, and the message says so.
pub const MAX_QUOTE_CHARS: usize = 60;

/// The note appended to a quote that was cut.
pub fn cut_note(total_chars: usize) -> String {
    format!("… (cut, {total_chars} characters in all)")
}

/// A value from the user's file, quoted for a message: escaped like `{:?}` and cut.
pub fn shown(value: &str) -> String {
    let cut = value.chars().count() > MAX_QUOTE_CHARS;
    let head: String = value.chars().take(MAX_QUOTE_CHARS).collect();
    let mut out = format!("{head:?}");
    if cut {
        out.push_str(&cut_note(value.chars().count()));
    }
    out
}

/// The choice among `all` whose name is `value`, or a message listing the valid names.
/// (The config crate's own message for an unknown enum value lists none.)
pub fn choose<T: Copy>(value: &str, all: &[T], name: fn(T) -> &'static str) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|c| name(*c) == value)
        .ok_or_else(|| {
            let valid: Vec<String> = all.iter().map(|c| format!("\"{}\"", name(*c))).collect();
            format!(
                "unknown value {}: use one of {}",
                shown(value),
                valid.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_escaped_and_cut() {
        assert_eq!(shown("a\u{1b}b"), "\"a\\u{1b}b\"");
        let long = "x".repeat(100);
        assert!(shown(&long).ends_with("… (cut, 100 characters in all)"));
    }

    #[test]
    fn unknown_choice_lists_the_valid_ones() {
        let names = |b: bool| if b { "yes" } else { "no" };
        assert_eq!(choose("yes", &[true, false], names), Ok(true));
        assert_eq!(
            choose("maybe", &[true, false], names),
            Err("unknown value \"maybe\": use one of \"yes\", \"no\"".to_string())
        );
    }
}
