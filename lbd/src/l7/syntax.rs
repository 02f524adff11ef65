//! HTTP syntax rules (RFC 9110) that config validation and the request path both apply.

/// RFC 9110 §5.6.2: a token (a header or protocol name, a cookie name).
pub fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
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
