//! Small deterministic helpers: the splitmix64 PRNG, a keyed checksum, hex and UUID text.
//!
//! No external crates: the simulator's data must be reproducible from a seed, and none of this
//! needs to be cryptographically strong (the checksum only has to catch edited tokens).

/// The splitmix64 finaliser: a strong 64-bit bit mixer.
pub(crate) fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// splitmix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for synthetic data.
#[derive(Clone, Debug)]
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix64(self.0)
    }

    pub(crate) fn next_u128(&mut self) -> u128 {
        (u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())
    }

    /// Uniform in `0..n` (`n > 0`); Lemire's multiply-shift, bias is negligible here.
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        debug_assert!(n > 0);
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`; returns `lo` when the range is empty.
    pub(crate) fn range_i64(&mut self, lo: i64, hi: i64) -> i64 {
        if hi <= lo {
            return lo;
        }
        let span = (hi - lo) as u64;
        if span == u64::MAX {
            return lo.wrapping_add(self.next_u64() as i64);
        }
        lo + self.below(span + 1) as i64
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// A keyed 64-bit checksum over `data`: detects edits of a token by anyone without the key.
pub(crate) fn keyed_checksum(key: u64, data: &[u8]) -> u64 {
    let mut h = mix64(key ^ 0x5851_F42D_4C95_7F2D);
    for chunk in data.chunks(8) {
        let mut word = [0u8; 8];
        word[..chunk.len()].copy_from_slice(chunk);
        h = mix64(h ^ u64::from_le_bytes(word)).wrapping_add(0x9E37_79B9_7F4A_7C15);
    }
    mix64(h ^ data.len() as u64 ^ key.rotate_left(29))
}

const HEX: &[u8; 16] = b"0123456789abcdef";

pub(crate) fn hex_encode(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(HEX[usize::from(b >> 4)] as char);
        out.push(HEX[usize::from(b & 0xf)] as char);
    }
    out
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

pub(crate) fn hex_decode(text: &str) -> Option<Vec<u8>> {
    let raw = text.as_bytes();
    if !raw.len().is_multiple_of(2) {
        return None;
    }
    raw.chunks(2)
        .map(|pair| Some((hex_val(pair[0])? << 4) | hex_val(pair[1])?))
        .collect()
}

/// A random UUID (version 4 bits set), as a number: its text form sorts like the number.
pub(crate) fn random_uuid(rng: &mut SplitMix64) -> u128 {
    let raw = rng.next_u128();
    (raw & !(0xF000u128 << 64) & !(0xC000u128 << 48)) | (0x4000u128 << 64) | (0x8000u128 << 48)
}

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`, lowercase: 36 characters.
pub(crate) fn uuid_string(id: u128) -> String {
    let mut out = String::with_capacity(36);
    for i in 0..32 {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        let nibble = (id >> (124 - 4 * i)) & 0xf;
        out.push(HEX[nibble as usize] as char);
    }
    out
}

/// The inverse of [`uuid_string`]; only the canonical lowercase form parses.
pub(crate) fn parse_uuid(text: &str) -> Option<u128> {
    let raw = text.as_bytes();
    if raw.len() != 36 {
        return None;
    }
    let mut id = 0u128;
    for (i, &c) in raw.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        id = (id << 4) | u128::from(v);
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_round_trips_and_sorts_like_the_number() {
        let mut rng = SplitMix64::new(7);
        let mut ids: Vec<u128> = (0..200).map(|_| random_uuid(&mut rng)).collect();
        for &id in &ids {
            let s = uuid_string(id);
            assert_eq!(s.len(), 36);
            assert_eq!(&s[14..15], "4");
            assert_eq!(parse_uuid(&s), Some(id));
        }
        ids.sort();
        let texts: Vec<String> = ids.iter().map(|&i| uuid_string(i)).collect();
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(texts, sorted);
        assert_eq!(parse_uuid("ABCDEF00-0000-4000-8000-000000000000"), None);
    }

    #[test]
    fn hex_round_trips() {
        let data = [0u8, 1, 0x7f, 0x80, 0xff];
        assert_eq!(hex_decode(&hex_encode(&data)).unwrap(), data);
        assert!(hex_decode("abc").is_none());
        assert!(hex_decode("zz").is_none());
    }

    #[test]
    fn checksum_depends_on_key_and_every_byte() {
        let data = b"0123456789abcdefXYZ";
        let base = keyed_checksum(1, data);
        assert_ne!(base, keyed_checksum(2, data));
        for i in 0..data.len() {
            let mut edited = data.to_vec();
            edited[i] ^= 1;
            assert_ne!(base, keyed_checksum(1, &edited));
        }
    }

    #[test]
    fn range_stays_in_bounds() {
        let mut rng = SplitMix64::new(3);
        for _ in 0..1000 {
            let v = rng.range_i64(-5, 5);
            assert!((-5..=5).contains(&v));
            let u = rng.unit_f64();
            assert!((0.0..1.0).contains(&u));
        }
        assert_eq!(rng.range_i64(9, 3), 9);
    }
}
