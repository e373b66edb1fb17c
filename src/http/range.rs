//! `Range: bytes=…` for downloads: a single range is honoured; several
//! ranges are answered with the whole body, as RFC 9110 allows.

/// Outcome of evaluating a `Range` header against a body of `len` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOutcome {
    /// Serve everything (no header, an unknown unit, several ranges).
    Full,
    /// Serve `start..end` (end exclusive) with 206.
    Partial { start: u64, end: u64 },
    /// Answer 416.
    Unsatisfiable,
}

pub fn evaluate(header: Option<&str>, len: u64) -> RangeOutcome {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeOutcome::Full;
    };
    if spec.contains(',') {
        return RangeOutcome::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeOutcome::Unsatisfiable;
    };
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match num(suffix) {
            Some(n) if n > 0 && len > 0 => RangeOutcome::Partial {
                start: len.saturating_sub(n),
                end: len,
            },
            _ => RangeOutcome::Unsatisfiable,
        },
        (start, last) => {
            let Some(start) = num(start) else {
                return RangeOutcome::Unsatisfiable;
            };
            if start >= len {
                return RangeOutcome::Unsatisfiable;
            }
            let end = match last {
                "" => len,
                l => match num(l) {
                    Some(l) if l >= start => l.saturating_add(1).min(len),
                    _ => return RangeOutcome::Unsatisfiable,
                },
            };
            RangeOutcome::Partial { start, end }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RangeOutcome::*;
    use super::*;

    #[test]
    fn table() {
        let cases: &[(Option<&str>, u64, RangeOutcome)] = &[
            (None, 10, Full),
            (Some("bytes=0-4"), 10, Partial { start: 0, end: 5 }),
            (Some("bytes=5-"), 10, Partial { start: 5, end: 10 }),
            (Some("bytes=-3"), 10, Partial { start: 7, end: 10 }),
            (Some("bytes=-30"), 10, Partial { start: 0, end: 10 }),
            (Some("bytes=8-100"), 10, Partial { start: 8, end: 10 }),
            (Some("bytes=10-"), 10, Unsatisfiable),
            (Some("bytes=5-4"), 10, Unsatisfiable),
            (Some("bytes=-0"), 10, Unsatisfiable),
            (Some("bytes=x-1"), 10, Unsatisfiable),
            (Some("bytes=0-1,3-4"), 10, Full),
            (Some("items=0-1"), 10, Full),
            (Some("bytes=0-"), 0, Unsatisfiable),
        ];
        for (header, len, want) in cases {
            assert_eq!(evaluate(*header, *len), *want, "{header:?} of {len}");
        }
    }
}
