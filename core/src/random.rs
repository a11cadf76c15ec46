//! The one source of random ids, nonces and secrets: bytes from the operating system's random
//! source (`getrandom`), and the hex token shape most callers want. Callers that need another
//! alphabet (base64 API keys, `whsec_` webhook secrets) encode [`bytes`] themselves.
//!
//! Behind the `random` feature, off by default: policy guests build this crate for
//! `wasm32-unknown-unknown` with no random source. The Cloudflare Worker enables `getrandom`'s
//! `js` backend (`crypto.getRandomValues`) in its own manifest.

/// `N` bytes from the operating system's random source.
///
/// # Panics
/// When the random source fails (as `rand::rngs::OsRng` does): a key or secret must never be
/// made from anything weaker. Use [`nonce_hex`] where uniqueness is enough.
pub fn bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    if let Err(e) = getrandom::getrandom(&mut b) {
        panic!("the operating system's random source failed: {e}");
    }
    b
}

/// `n` random bytes as `2 * n` lower-case hex digits: ids, nonces, generated secrets.
///
/// # Panics
/// When the random source fails, like [`bytes`].
pub fn hex_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    if let Err(e) = getrandom::getrandom(&mut b) {
        panic!("the operating system's random source failed: {e}");
    }
    hex::encode(b)
}

/// 16 random bytes as 32 hex digits, for request nonces. Uniqueness is all a nonce needs, so if
/// the random source fails, `fallback` supplies the 16 bytes (the shell's time and a counter).
pub fn nonce_hex(fallback: impl FnOnce() -> [u8; 16]) -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        b = fallback();
    }
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_tokens_have_the_asked_length_and_alphabet_and_differ() {
        for n in [0, 6, 12, 16, 32] {
            let t = hex_token(n);
            assert_eq!(t.len(), 2 * n);
            assert!(
                t.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
                "{t}"
            );
        }
        assert_ne!(hex_token(16), hex_token(16));
        assert_ne!(bytes::<32>(), bytes::<32>());
    }

    #[test]
    fn nonces_are_32_hex_digits_and_the_fallback_is_unused_while_the_source_works() {
        let n = nonce_hex(|| unreachable!("the OS random source works in tests"));
        assert_eq!(n.len(), 32);
        assert!(n.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_ne!(n, nonce_hex(|| [0; 16]));
    }
}
