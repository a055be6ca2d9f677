//! Opaque pagination tokens: self-contained page positions with a keyed checksum.
//!
//! In [`TokenMode::Keyset`] a token names the last item served, so items added or aged out
//! between two calls never shift later pages. In [`TokenMode::Offset`] it holds how many items
//! of the listing were already served, counted again in the listing as it is at the next
//! call, as an offset-paginated service would. Either way it also pins what it was issued for
//! (operation, sort order, token mode, a hash of the portal and filters) and the simulator's
//! token epoch; any mismatch, edit or expiry is the same `ValidationException` the real service
//! answers for a bad token.

use crate::rng::{hex_decode, hex_encode, keyed_checksum};
use crate::TokenMode;

const VERSION: u8 = 2;
const LEN: usize = 56;

/// What a page token was issued for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenKind {
    Sessions = 0,
    Portals = 1,
    /// Organizations ListAccounts.
    Accounts = 2,
}

/// A decoded page position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PageToken {
    pub kind: TokenKind,
    /// `true` for descending order.
    pub descending: bool,
    pub mode: TokenMode,
    pub epoch: u32,
    /// Wall-clock milliseconds at issue (for the optional TTL).
    pub issued_wall_ms: u64,
    /// Keyset sessions: start of the last item served. Offset sessions: how many items were
    /// served before the next page. Portals, accounts: index of the last one served.
    pub last_start_ms: i64,
    /// Keyset sessions: id of the last item served; 0 otherwise.
    pub last_id: u128,
    /// Hash of the portal id and the filters the token was issued with.
    pub scope: u64,
}

impl PageToken {
    pub(crate) fn encode(&self, key: u64) -> String {
        let mut raw = Vec::with_capacity(LEN);
        raw.push(VERSION);
        raw.push(self.kind as u8);
        raw.push(u8::from(self.descending));
        raw.push(match self.mode {
            TokenMode::Keyset => 0,
            TokenMode::Offset => 1,
        });
        raw.extend_from_slice(&self.epoch.to_be_bytes());
        raw.extend_from_slice(&self.issued_wall_ms.to_be_bytes());
        raw.extend_from_slice(&self.last_start_ms.to_be_bytes());
        raw.extend_from_slice(&self.last_id.to_be_bytes());
        raw.extend_from_slice(&self.scope.to_be_bytes());
        let sum = keyed_checksum(key, &raw);
        raw.extend_from_slice(&sum.to_be_bytes());
        debug_assert_eq!(raw.len(), LEN);
        hex_encode(&raw)
    }

    /// `None` for anything that is not a token this key issued, unedited.
    pub(crate) fn decode(text: &str, key: u64) -> Option<PageToken> {
        let raw = hex_decode(text)?;
        if raw.len() != LEN || raw[0] != VERSION {
            return None;
        }
        let (body, sum) = raw.split_at(LEN - 8);
        if keyed_checksum(key, body).to_be_bytes() != sum {
            return None;
        }
        let kind = match raw[1] {
            0 => TokenKind::Sessions,
            1 => TokenKind::Portals,
            2 => TokenKind::Accounts,
            _ => return None,
        };
        let descending = match raw[2] {
            0 => false,
            1 => true,
            _ => return None,
        };
        let mode = match raw[3] {
            0 => TokenMode::Keyset,
            1 => TokenMode::Offset,
            _ => return None,
        };
        Some(PageToken {
            kind,
            descending,
            mode,
            epoch: u32::from_be_bytes(raw[4..8].try_into().ok()?),
            issued_wall_ms: u64::from_be_bytes(raw[8..16].try_into().ok()?),
            last_start_ms: i64::from_be_bytes(raw[16..24].try_into().ok()?),
            last_id: u128::from_be_bytes(raw[24..40].try_into().ok()?),
            scope: u64::from_be_bytes(raw[40..48].try_into().ok()?),
        })
    }
}

/// Hash of the portal and filters a token is valid for.
pub(crate) fn scope_hash(parts: &[&str]) -> u64 {
    let mut joined = Vec::new();
    for part in parts {
        joined.extend_from_slice(&(part.len() as u64).to_be_bytes());
        joined.extend_from_slice(part.as_bytes());
    }
    keyed_checksum(0x7363_6f70_6521, &joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PageToken {
        PageToken {
            kind: TokenKind::Sessions,
            descending: true,
            mode: TokenMode::Keyset,
            epoch: 3,
            issued_wall_ms: 1_700_000_000_000,
            last_start_ms: 1_764_150_000_123,
            last_id: 0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
            scope: scope_hash(&["portal", "user"]),
        }
    }

    #[test]
    fn round_trips() {
        let t = sample();
        let text = t.encode(42);
        assert!(text.len() <= 2048);
        assert!(text.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(PageToken::decode(&text, 42), Some(t));
    }

    #[test]
    fn rejects_edits_foreign_keys_and_garbage() {
        let text = sample().encode(42);
        assert_eq!(PageToken::decode(&text, 43), None);
        for i in 0..text.len() {
            let mut edited = text.clone().into_bytes();
            edited[i] = if edited[i] == b'0' { b'1' } else { b'0' };
            let edited = String::from_utf8(edited).unwrap();
            assert_eq!(PageToken::decode(&edited, 42), None, "edit at {i}");
        }
        assert_eq!(PageToken::decode("", 42), None);
        assert_eq!(PageToken::decode("not-hex", 42), None);
        assert_eq!(PageToken::decode(&text[..text.len() - 2], 42), None);
    }

    #[test]
    fn offset_tokens_round_trip_and_differ_from_keyset_ones() {
        let keyset = sample();
        let offset = PageToken {
            mode: TokenMode::Offset,
            last_start_ms: 140,
            last_id: 0,
            ..sample()
        };
        assert_eq!(PageToken::decode(&offset.encode(42), 42), Some(offset));
        let as_keyset = PageToken {
            mode: TokenMode::Keyset,
            ..offset
        };
        assert_ne!(offset.encode(42), as_keyset.encode(42));
        assert_ne!(keyset.encode(42), offset.encode(42));
    }

    #[test]
    fn scope_separates_parts() {
        assert_ne!(scope_hash(&["ab", "c"]), scope_hash(&["a", "bc"]));
    }
}
