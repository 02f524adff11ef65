//! HTTP syntax rules (RFC 9110) that config validation and the request path both apply.

/// RFC 9110 §5.6.2: a token (a header or protocol name, a cookie name).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The value of one hexadecimal digit (a chunk size's), or `None`.
pub fn hex_digit(b: u8) -> Option<u64> {
    match b {
        b'0'..=b'9' => Some(u64::from(b - b'0')),
        b'a'..=b'f' => Some(u64::from(b - b'a' + 10)),
        b'A'..=b'F' => Some(u64::from(b - b'A' + 10)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        assert!(is_token("x-a.b~c"));
        assert!(!is_token("a/b") && !is_token("") && !is_token("a b"));
    }
}
