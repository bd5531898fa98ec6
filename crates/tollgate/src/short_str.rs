//! Equality of the short strings every check compares: the identifier against the map's key and
//! the policy name against the slot's.
//!
//! `str == str` calls libc's `memcmp` for any length; for the 1-16 bytes most identifiers and
//! policy names have, two overlapping word loads compare them in a few instructions without the
//! call (callgrind: about a tenth of a memory-store check). Longer strings still use `memcmp`.
//! [`KeyString`] is the memory store's map key: a [`CompactString`] (inline up to 24 bytes)
//! whose lookups by `&str` ([`KeyStr`]) compare this way.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};

use compact_str::CompactString;

/// Whether `a` and `b` hold the same bytes.
#[inline]
pub(crate) fn eq(a: &str, b: &str) -> bool {
    bytes_eq(a.as_bytes(), b.as_bytes())
}

#[inline]
fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    // Two loads cover any length from one word to two, overlapping in the middle.
    if (8..=16).contains(&n) {
        return word::<8>(a, 0) == word::<8>(b, 0) && word::<8>(a, n - 8) == word::<8>(b, n - 8);
    }
    if (4..8).contains(&n) {
        return word::<4>(a, 0) == word::<4>(b, 0) && word::<4>(a, n - 4) == word::<4>(b, n - 4);
    }
    if n < 4 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    a == b
}

/// The `N` bytes of `s` from `at` (callers keep `at + N <= s.len()`; past the end reads as 0,
/// which the equal lengths make harmless, and never happens).
#[inline(always)]
fn word<const N: usize>(s: &[u8], at: usize) -> [u8; N] {
    s.get(at..)
        .and_then(|rest| rest.first_chunk::<N>())
        .copied()
        .unwrap_or([0; N])
}

/// An owned map key, inline up to 24 bytes. Hashes as its `str` does, so lookups by
/// [`KeyStr`] find it.
#[derive(Debug)]
pub(crate) struct KeyString(CompactString);

impl KeyString {
    pub(crate) fn new(s: &str) -> KeyString {
        KeyString(CompactString::from(s))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for KeyString {
    #[inline]
    fn eq(&self, other: &KeyString) -> bool {
        eq(&self.0, &other.0)
    }
}

impl Eq for KeyString {}

impl Hash for KeyString {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_str().hash(state);
    }
}

/// A borrowed map key: what lookups pass.
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct KeyStr(str);

impl PartialEq for KeyStr {
    #[inline]
    fn eq(&self, other: &KeyStr) -> bool {
        eq(&self.0, &other.0)
    }
}

impl Eq for KeyStr {}

impl KeyStr {
    #[inline]
    pub(crate) fn new(s: &str) -> &KeyStr {
        // SAFETY: `KeyStr` is `repr(transparent)` over `str`, so the two references have the
        // same layout and the same validity.
        unsafe { &*(s as *const str as *const KeyStr) }
    }
}

impl Hash for KeyStr {
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl Borrow<KeyStr> for KeyString {
    #[inline]
    fn borrow(&self) -> &KeyStr {
        KeyStr::new(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    /// Every length from 0 to 40, equal and differing in each position, agrees with `==`.
    #[test]
    fn agrees_with_str_eq_at_every_length_and_position() {
        let text: String = (0..40u8).map(|i| char::from(b'a' + i % 26)).collect();
        for n in 0..=40 {
            let a = &text[..n];
            assert!(eq(a, &text[..n]), "{n}");
            for i in 0..n {
                let mut other = a.as_bytes().to_vec();
                other[i] = b'#';
                let b = std::str::from_utf8(&other).unwrap();
                assert!(!eq(a, b), "{n} at {i}");
            }
            if n > 0 {
                assert!(!eq(a, &text[..n - 1]), "{n} vs shorter");
            }
        }
    }

    /// A borrowed key hashes and compares as its owned form: map lookups by `&str` work.
    #[test]
    fn borrowed_and_owned_keys_hash_alike() {
        let state = foldhash::fast::FixedState::with_seed(7);
        for s in ["", "a", "user-123", "a-key-of-more-than-twenty-four-bytes"] {
            let owned = KeyString::new(s);
            assert_eq!(
                state.hash_one(&owned),
                state.hash_one(KeyStr::new(s)),
                "{s}"
            );
            assert_eq!(Borrow::<KeyStr>::borrow(&owned), KeyStr::new(s));
        }
    }
}
