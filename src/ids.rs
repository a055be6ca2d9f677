//! Random identifiers: a state's id (in every file name it writes), a process's tag (in its
//! staged files' names) and a run's nonce (in its lease and state uploads).

/// `n` random bytes from the OS, as lowercase hex.
pub fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    // The OS random source failing is not something a batch job can work around.
    getrandom::fill(&mut bytes).expect("the OS random number generator failed");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A new state's id: 48 random bits, 12 hex digits.
pub fn state_id() -> String {
    random_hex(6)
}

/// Unique to this process, fixed for its life: 64 random bits.
pub fn process_tag() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| random_hex(8))
}

/// A value unique to one use: 128 random bits.
pub fn nonce() -> String {
    random_hex(16)
}

/// A random `u64` (backoff jitter).
pub fn random_u64() -> u64 {
    getrandom::u64().expect("the OS random number generator failed")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_length_and_differ() {
        assert_eq!(state_id().len(), 12);
        assert_eq!(nonce().len(), 32);
        assert_ne!(nonce(), nonce());
        assert_eq!(process_tag(), process_tag());
        assert!(state_id().bytes().all(|b| b.is_ascii_hexdigit()));
    }
}
