//! How an error is shown whole: its message and each of its sources, joined by `: `.
//!
//! Every error of this crate says its own context only and leaves its cause to its
//! source (`cannot read trace t` → `No such file or directory`), so a message printed
//! on its own lacks the cause. Wherever an error is shown to a person (stderr, a log
//! field, `/status`, an Event, a validation problem), it is shown through [`chain`], the
//! one place that joins the causes, and each cause is read once.
//!
//! A Kubernetes client error never enters a chain: `kube::call::CallError` and
//! `record::RecordError` carry it and show it as `kube::call::describe` says it, which
//! withholds the server's message and URLs. (Named, not linked: this module depends on
//! no other module of the crate.)

use std::error::Error;
use std::fmt;

/// Bound on the causes shown; error chains are short, the bound only guards against a
/// pathological cycle.
const MAX_DEPTH: usize = 32;

/// An error shown with its sources; see [`chain`].
#[derive(Clone, Copy)]
pub struct Chain<'a>(&'a (dyn Error + 'static));

/// `error` and each of its sources, joined by `: `, as [`fmt::Display`]: use it as
/// `{}` in a message, `%` in a log field, or `.to_string()`.
pub fn chain<'a>(error: &'a (dyn Error + 'static)) -> Chain<'a> {
    Chain(error)
}

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut next = self.0.source();
        for _ in 0..MAX_DEPTH {
            let Some(cause) = next else { break };
            write!(f, ": {cause}")?;
            next = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("cannot read trace {path}")]
    struct Read {
        path: &'static str,
        source: std::io::Error,
    }

    #[derive(Debug, thiserror::Error)]
    #[error("simulate")]
    struct Outer {
        #[source]
        inner: Read,
    }

    fn absent() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::NotFound, "no such file")
    }

    #[test]
    fn each_cause_is_joined_once_in_order() {
        let read = Read {
            path: "/t",
            source: absent(),
        };
        assert_eq!(
            read.to_string(),
            "cannot read trace /t",
            "its own context only"
        );
        assert_eq!(
            chain(&read).to_string(),
            "cannot read trace /t: no such file"
        );
        let nested = Outer {
            inner: Read {
                path: "/t",
                source: absent(),
            },
        };
        assert_eq!(
            chain(&nested).to_string(),
            "simulate: cannot read trace /t: no such file"
        );
        assert_eq!(format!("{:?}", chain(&nested)), chain(&nested).to_string());
    }

    #[test]
    fn a_cause_that_repeats_words_of_the_message_is_still_shown() {
        // The chain is joined, never deduplicated by text: a cause whose words the
        // message happens to contain is a cause all the same.
        #[derive(Debug, thiserror::Error)]
        #[error("no such file or directory: cannot read trace")]
        struct Odd {
            source: std::io::Error,
        }
        let odd = Odd { source: absent() };
        assert_eq!(
            chain(&odd).to_string(),
            "no such file or directory: cannot read trace: no such file"
        );
    }
}
