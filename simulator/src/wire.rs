//! What the simulator's two wire protocols share (restJson1 in [`crate::http`], awsQuery and
//! JSON 1.1 in [`crate::rpc`]): the response body type, percent-decoding of paths, queries and
//! form bodies, and AWS's message for expired credentials.

use bytes::Bytes;
use http_body_util::Full;

/// Every response body: small, and whole before it is sent.
pub(crate) type Body = Full<Bytes>;

/// What AWS says of expired temporary credentials.
pub(crate) const EXPIRED_MESSAGE: &str = "The security token included in the request is expired";

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a path label or query component; `None` for bad escapes or non-UTF-8.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hi = hex_digit(*b.get(i + 1)?)?;
                let lo = hex_digit(*b.get(i + 2)?)?;
                out.push((hi << 4) | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b.com", false).unwrap(), "a@b.com");
        assert_eq!(percent_decode("a+b", true).unwrap(), "a b");
        assert_eq!(percent_decode("a+b", false).unwrap(), "a+b");
        assert!(percent_decode("%4", false).is_none());
        assert!(percent_decode("%zz", false).is_none());
        assert!(percent_decode("%ff", false).is_none());
    }
}
