//! The client's address behind a trusted proxy: `Forwarded: for=` or
//! `X-Forwarded-For` (`--behind-proxy`), else the peer.

use crate::config::ForwardedHeaders;
use actix_web::HttpRequest;
use std::net::IpAddr;

/// The client's address: the peer, or behind a proxy the address the
/// proxy saw. That is the *last* `Forwarded: for=` / `X-Forwarded-For`
/// entry: a proxy appends the peer it saw, so earlier entries are whatever
/// the client chose to send and cannot be trusted.
pub fn client_ip(req: &HttpRequest, settings: &super::HttpSettings) -> Option<IpAddr> {
    client_ip_of(req.headers(), req.peer_addr(), settings)
}

/// [`client_ip`] from the parts a middleware has at hand.
pub fn client_ip_of(
    headers: &actix_web::http::header::HeaderMap,
    peer: Option<std::net::SocketAddr>,
    settings: &super::HttpSettings,
) -> Option<IpAddr> {
    if settings.behind_proxy {
        if let Some(ip) = forwarded_for(headers, settings.forwarded) {
            return Some(ip);
        }
    }
    peer.map(|a| a.ip())
}

/// The last forwarded client address of the trusted scheme only: a
/// client's own header of the other scheme is ignored (several header
/// lines count as one list).
fn forwarded_for(
    headers: &actix_web::http::header::HeaderMap,
    scheme: ForwardedHeaders,
) -> Option<IpAddr> {
    use super::request::{forwarded_param, last_forwarded};
    match scheme {
        ForwardedHeaders::Forwarded => last_forwarded(headers, "forwarded")
            .and_then(|element| forwarded_param(&element, "for"))
            .and_then(|v| parse_ip(&v)),
        ForwardedHeaders::XForwarded => {
            last_forwarded(headers, "x-forwarded-for").and_then(|v| parse_ip(&v))
        }
    }
}

/// `1.2.3.4`, `1.2.3.4:5`, `::1`, `[::1]` or `[::1]:5`.
fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim().trim_matches('"');
    if let Ok(ip) = s.parse() {
        return Some(ip);
    }
    if let Ok(addr) = s.parse::<std::net::SocketAddr>() {
        return Some(addr.ip());
    }
    s.strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|r| r.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_forwarded_entry_is_the_client() {
        use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
        let map = |pairs: &[(&'static str, &'static str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(HeaderName::from_static(k), HeaderValue::from_static(v));
            }
            m
        };
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        use ForwardedHeaders::{Forwarded as F, XForwarded as X};
        for (scheme, headers, want) in [
            (X, map(&[("x-forwarded-for", "10.0.0.1")]), ip("10.0.0.1")),
            (
                X,
                map(&[("x-forwarded-for", "6.6.6.6, 10.0.0.1")]),
                ip("10.0.0.1"),
            ),
            (
                X,
                map(&[
                    ("x-forwarded-for", "6.6.6.6"),
                    ("x-forwarded-for", "10.0.0.1"),
                ]),
                ip("10.0.0.1"),
            ),
            (
                F,
                map(&[(
                    "forwarded",
                    "for=6.6.6.6, for=\"[2001:db8::1]:80\";proto=https",
                )]),
                ip("2001:db8::1"),
            ),
            // A client's own header of the untrusted scheme is ignored.
            (
                X,
                map(&[
                    ("forwarded", "for=6.6.6.6"),
                    ("x-forwarded-for", "10.0.0.3"),
                ]),
                ip("10.0.0.3"),
            ),
            (X, map(&[("forwarded", "for=6.6.6.6")]), None),
            (F, map(&[("x-forwarded-for", "6.6.6.6")]), None),
            (F, map(&[("forwarded", "proto=https")]), None),
            (X, map(&[("x-forwarded-for", "10.0.0.1, unknown")]), None),
            (X, map(&[]), None),
        ] {
            assert_eq!(forwarded_for(&headers, scheme), want, "{headers:?}");
        }
    }

    #[test]
    fn forwarded_addresses() {
        for (text, want) in [
            ("10.1.2.3", Some("10.1.2.3")),
            ("10.1.2.3:4567", Some("10.1.2.3")),
            ("::1", Some("::1")),
            ("[2001:db8::1]", Some("2001:db8::1")),
            ("[2001:db8::1]:80", Some("2001:db8::1")),
            ("\"[::1]:80\"", Some("::1")),
            ("unknown", None),
            ("_hidden", None),
        ] {
            let want: Option<IpAddr> = want.map(|w| w.parse().unwrap());
            assert_eq!(parse_ip(text), want, "{text}");
        }
    }
}
