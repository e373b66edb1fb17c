//! What the layers' error enums share: a boxed cause, and a cause with the
//! step that met it.

use std::fmt;

/// The cause of a backend error, kept as the error's `source`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A cause with the step that met it ("blocking task failed: …"): shown as
/// `context: cause`, with the cause as its `source`.
#[derive(Debug)]
pub struct Context {
    context: String,
    source: BoxError,
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.source)
    }
}

impl std::error::Error for Context {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// `source`, met while doing `context`.
pub fn caused(context: impl Into<String>, source: impl Into<BoxError>) -> BoxError {
    Box::new(Context {
        context: context.into(),
        source: source.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_shows_the_step_and_keeps_the_cause() {
        let io = std::io::Error::other("disk on fire");
        let e = caused("opening the log", io);
        assert_eq!(e.to_string(), "opening the log: disk on fire");
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("disk on fire")
        );
    }
}
