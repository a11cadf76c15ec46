//! Is an address on this machine? Test-only switches (a pinned clock, plain `ws://` for local
//! Stream URLs) are refused unless every address involved is loopback; this is the one check they
//! all use.

use std::net::{IpAddr, SocketAddr};

/// Whether `addr` names this machine: a loopback IP (`127.0.0.0/8`, `::1`) or `localhost` (any
/// case), written bare, as `host:port`, as `[v6]:port`, or as a URL (`scheme://authority/…`,
/// any scheme; the caller checks the scheme it needs).
///
/// `127.0.0.1:8080`, `[::1]:80`, `localhost:1`, `https://127.0.0.1:9/x` → true;
/// `0.0.0.0:8080`, `https://127.0.0.1.example.com`, `http://localhost@example.com` → false.
pub fn is_loopback(addr: &str) -> bool {
    // Only a real scheme (RFC 3986: a letter, then letters, digits, `+`, `-`, `.`) is skipped, so
    // `example.com/x://127.0.0.1` stays a path on example.com.
    let rest = match addr.split_once("://") {
        Some((scheme, r)) if is_scheme(scheme) => r,
        _ => addr,
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if let Ok(sock) = authority.parse::<SocketAddr>() {
        return sock.ip().is_loopback();
    }
    if let Ok(ip) = authority.parse::<IpAddr>() {
        return ip.is_loopback();
    }
    let host = match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => authority,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn is_scheme(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_in_every_written_form() {
        for addr in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "127.1.2.3:1",
            "[::1]:80",
            "[::1]",
            "::1",
            "localhost",
            "localhost:1",
            "LocalHost:8787",
            "https://127.0.0.1:9/x",
            "http://localhost:8787",
            "http://localhost/path?q#f",
            "wss://127.0.0.1:4000/media",
            "wss://[::1]:4000/media",
            "ws://localhost?x",
        ] {
            assert!(is_loopback(addr), "{addr}");
        }
    }

    #[test]
    fn other_hosts_and_look_alikes_are_not_loopback() {
        for addr in [
            "",
            "0.0.0.0:8080",
            "10.0.0.5:80",
            "[::]:80",
            "https://bridge.example.com",
            "https://127.0.0.1.example.com:443",
            "http://localhost.example.com",
            "http://localhost@example.com",
            "wss://10.0.0.1/media",
            "localhost:notaport",
            "128.0.0.1",
            "example.com/x://127.0.0.1",
            "wss://example.com/x://127.0.0.1",
            "https://example.com#@127.0.0.1",
        ] {
            assert!(!is_loopback(addr), "{addr}");
        }
    }
}
