//! What a PostgreSQL driver error calls for: a retry soon
//! ([`MetaError::Unavailable`]), free disk space ([`MetaError::NoSpace`]),
//! or neither ([`MetaError::Backend`]).

use super::MetaError;
use std::time::Duration;

pub(super) fn backend(e: impl std::error::Error + Send + Sync + 'static) -> MetaError {
    MetaError::Backend(Box::new(e))
}

/// A call that did not finish within the store's query timeout.
#[derive(Debug, thiserror::Error)]
#[error("PostgreSQL did not answer within {0:?}")]
pub struct TimedOut(pub Duration);

/// What a driver error calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Worth retrying soon: [`MetaError::Unavailable`].
    Unavailable,
    /// The database's disk is full: [`MetaError::NoSpace`].
    NoSpace,
    /// Anything else: [`MetaError::Backend`].
    Other,
}

/// Sorts a SQLSTATE: 08 (connection exception), 57P01-03 (admin or crash
/// shutdown, cannot connect now) and 53300 (too many connections) are
/// worth retrying; 53100 (disk full: the statement's transaction was
/// rolled back, nothing of it is stored) waits for space.
fn class_of_state(code: &str) -> Class {
    if code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03" | "53300") {
        Class::Unavailable
    } else if code == "53100" {
        Class::NoSpace
    } else {
        Class::Other
    }
}

/// Sorts a driver error: lost or refused connections, an exhausted pool and
/// a server shutting down or starting up are [`MetaError::Unavailable`]
/// (worth retrying); a full disk is [`MetaError::NoSpace`]; everything else
/// is a backend error.
pub(super) fn classify(e: sqlx::Error) -> MetaError {
    let class = match &e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => Class::Unavailable,
        sqlx::Error::Database(db) => db.code().map_or(Class::Other, |c| class_of_state(&c)),
        _ => Class::Other,
    };
    match class {
        Class::Unavailable => MetaError::Unavailable(Box::new(e)),
        Class::NoSpace => MetaError::NoSpace(Box::new(e)),
        Class::Other => backend(e),
    }
}

#[cfg(test)]
mod tests {
    use super::{class_of_state, Class};

    #[test]
    fn sqlstates_are_sorted_by_what_they_call_for() {
        for (code, class) in [
            ("08006", Class::Unavailable),
            ("08001", Class::Unavailable),
            ("57P01", Class::Unavailable),
            ("57P03", Class::Unavailable),
            ("53300", Class::Unavailable),
            ("53100", Class::NoSpace),
            ("53200", Class::Other),
            ("23505", Class::Other),
            ("40001", Class::Other),
        ] {
            assert_eq!(class_of_state(code), class, "{code}");
        }
    }
}
