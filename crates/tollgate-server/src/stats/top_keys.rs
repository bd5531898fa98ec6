//! The most limited keys of a policy, in fixed memory: a Space-Saving sketch (Metwally,
//! Agrawal and El Abbadi, "Efficient computation of frequent and top-k elements in data
//! streams", 2005).
//!
//! The sketch watches at most [`CAPACITY`] keys. A watched key's count goes up by one per
//! observation; an unwatched key takes the place of the watched key with the smallest count
//! `m`, starting at `m + 1` with an error of `m`. So every count is at most its error above the
//! truth, never below it, and any key seen more than `n / CAPACITY` times in `n` observations is
//! watched. Memory is allocated once, at construction, whatever the number of distinct keys.
//!
//! The smallest count is found through a min-heap of slots and a key through a hash table of
//! slots: an observation costs a hash, a probe and at most `log2(CAPACITY)` swaps.

use std::hash::{BuildHasher, RandomState};

use hashbrown::HashTable;

/// Keys watched per sketch.
pub const CAPACITY: usize = 256;

/// Longest key kept, in bytes: the longest identifier the store keeps as it is (longer ones
/// are shown in their hashed form, as the store sees them).
pub const MAX_KEY_BYTES: usize = tollgate_redis::keys::MAX_PLAIN_IDENTIFIER;

/// A key, stored inline so replacing one allocates nothing.
#[derive(Clone, Copy)]
struct KeyBytes {
    len: u8,
    bytes: [u8; MAX_KEY_BYTES],
}

impl KeyBytes {
    const EMPTY: KeyBytes = KeyBytes {
        len: 0,
        bytes: [0; MAX_KEY_BYTES],
    };

    /// `key`, cut at [`MAX_KEY_BYTES`] on a character boundary (callers pass keys that fit).
    fn set(&mut self, key: &str) {
        let mut len = key.len().min(MAX_KEY_BYTES);
        while !key.is_char_boundary(len) {
            len -= 1;
        }
        self.bytes[..len].copy_from_slice(&key.as_bytes()[..len]);
        // MAX_KEY_BYTES fits in a u8.
        self.len = len as u8;
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    fn as_str(&self) -> &str {
        // Only whole characters are ever copied in.
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }
}

/// One watched key.
struct Entry {
    key: KeyBytes,
    /// Hash of `key`, to find its place in the table when it is replaced.
    hash: u64,
    /// Observations counted, plus `error`.
    count: u64,
    /// How much of `count` may belong to keys this one replaced.
    error: u64,
    /// Where this slot is in the heap.
    heap_position: u32,
}

/// A key of the sketch's answer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TopKey {
    /// The key.
    pub key: String,
    /// Observations counted: at least the true number, at most `error` more.
    pub count: u64,
    /// The most `count` may exceed the true number by.
    pub error: u64,
}

/// A Space-Saving sketch over [`CAPACITY`] keys.
pub struct TopKeys {
    entries: Vec<Entry>,
    /// Slots ordered as a min-heap on their count.
    heap: Vec<u32>,
    /// Slots, found by their key.
    slots: HashTable<u32>,
    hasher: RandomState,
    /// Observations so far.
    observed: u64,
}

impl Default for TopKeys {
    fn default() -> Self {
        TopKeys::new()
    }
}

impl std::fmt::Debug for TopKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TopKeys")
            .field("watched", &self.entries.len())
            .field("observed", &self.observed)
            .finish()
    }
}

impl TopKeys {
    /// An empty sketch, with all its memory allocated.
    pub fn new() -> TopKeys {
        TopKeys {
            entries: Vec::with_capacity(CAPACITY),
            heap: Vec::with_capacity(CAPACITY),
            slots: HashTable::with_capacity(CAPACITY),
            hasher: RandomState::new(),
            observed: 0,
        }
    }

    /// Bytes this sketch holds, whatever it has seen: its entries, heap and table.
    pub fn memory_bytes() -> usize {
        // hashbrown allocates a power of two of buckets, at least 8/7 of the capacity, with one
        // control byte per bucket plus a group's worth.
        let buckets = (CAPACITY * 8 / 7).next_power_of_two();
        CAPACITY * (size_of::<Entry>() + size_of::<u32>()) + buckets * (size_of::<u32>() + 1) + 16
    }

    /// Observations so far.
    pub fn observed(&self) -> u64 {
        self.observed
    }

    /// Count one observation of `key`.
    pub fn observe(&mut self, key: &str) {
        self.observed += 1;
        let mut stored = KeyBytes::EMPTY;
        stored.set(key);
        let hash = self.hasher.hash_one(stored.as_bytes());
        let entries = &self.entries;
        if let Some(&slot) = self.slots.find(hash, |&s| {
            entries[s as usize].key.as_bytes() == stored.as_bytes()
        }) {
            let entry = &mut self.entries[slot as usize];
            entry.count += 1;
            let position = entry.heap_position as usize;
            self.sift_down(position);
        } else if self.entries.len() < CAPACITY {
            let slot = self.entries.len() as u32;
            self.entries.push(Entry {
                key: stored,
                hash,
                count: 1,
                error: 0,
                heap_position: self.heap.len() as u32,
            });
            self.heap.push(slot);
            self.sift_up(self.heap.len() - 1);
            let entries = &self.entries;
            self.slots
                .insert_unique(hash, slot, |&s| entries[s as usize].hash);
        } else {
            self.replace_smallest(stored, hash);
        }
    }

    /// The `n` keys with the highest counts, highest first.
    pub fn top(&self, n: usize) -> Vec<TopKey> {
        let mut order: Vec<&Entry> = self.entries.iter().collect();
        order.sort_unstable_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then_with(|| a.error.cmp(&b.error))
                .then_with(|| a.key.as_bytes().cmp(b.key.as_bytes()))
        });
        order
            .into_iter()
            .take(n)
            .map(|e| TopKey {
                key: e.key.as_str().to_owned(),
                count: e.count,
                error: e.error,
            })
            .collect()
    }

    /// The unwatched `key` takes the slot of the smallest count.
    fn replace_smallest(&mut self, key: KeyBytes, hash: u64) {
        let slot = self.heap[0];
        let old_hash = self.entries[slot as usize].hash;
        if let Ok(found) = self.slots.find_entry(old_hash, |&s| s == slot) {
            found.remove();
        }
        let entry = &mut self.entries[slot as usize];
        entry.key = key;
        entry.hash = hash;
        entry.error = entry.count;
        entry.count += 1;
        self.sift_down(0);
        let entries = &self.entries;
        self.slots
            .insert_unique(hash, slot, |&s| entries[s as usize].hash);
    }

    fn count_at(&self, position: usize) -> u64 {
        self.entries[self.heap[position] as usize].count
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.entries[self.heap[a] as usize].heap_position = a as u32;
        self.entries[self.heap[b] as usize].heap_position = b as u32;
    }

    /// Move a count that grew down the heap.
    fn sift_down(&mut self, mut position: usize) {
        loop {
            let left = 2 * position + 1;
            let right = left + 1;
            let mut smallest = position;
            if left < self.heap.len() && self.count_at(left) < self.count_at(smallest) {
                smallest = left;
            }
            if right < self.heap.len() && self.count_at(right) < self.count_at(smallest) {
                smallest = right;
            }
            if smallest == position {
                return;
            }
            self.swap(position, smallest);
            position = smallest;
        }
    }

    /// Move a new entry up the heap.
    fn sift_up(&mut self, mut position: usize) {
        while position > 0 {
            let parent = (position - 1) / 2;
            if self.count_at(parent) <= self.count_at(position) {
                return;
            }
            self.swap(position, parent);
            position = parent;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// splitmix64: a small, well-mixed, reproducible generator.
    struct SplitMix(u64);

    impl SplitMix {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        /// Uniform in [0, 1).
        fn unit(&mut self) -> f64 {
            (self.next() >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Ids 1..=`ids` drawn with probability proportional to `rank^-exponent`, by inverting
    /// the cumulative distribution.
    fn zipf(ids: usize, exponent: f64, draws: usize, seed: u64) -> Vec<usize> {
        let mut cumulative = Vec::with_capacity(ids);
        let mut total = 0.0;
        for rank in 1..=ids {
            total += (rank as f64).powf(-exponent);
            cumulative.push(total);
        }
        let mut random = SplitMix(seed);
        (0..draws)
            .map(|_| {
                let target = random.unit() * total;
                cumulative.partition_point(|&c| c <= target).min(ids - 1) + 1
            })
            .collect()
    }

    #[test]
    fn finds_the_true_top_10_of_a_zipf_stream_in_fixed_memory() {
        const DRAWS: usize = 1_000_000;
        const IDS: usize = 100_000;
        let stream = zipf(IDS, 1.1, DRAWS, 20);
        let mut sketch = TopKeys::new();
        let mut truth: HashMap<usize, u64> = HashMap::new();
        for &id in &stream {
            sketch.observe(&format!("user-{id}"));
            *truth.entry(id).or_default() += 1;
        }
        assert!(
            truth.len() > 50_000,
            "the stream must hold far more ids than the sketch watches: {}",
            truth.len()
        );
        assert_eq!(sketch.entries.len(), CAPACITY);
        assert!(sketch.entries.capacity() == CAPACITY && sketch.heap.capacity() == CAPACITY);

        let mut true_order: Vec<(usize, u64)> = truth.iter().map(|(&k, &v)| (k, v)).collect();
        true_order.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let true_top: Vec<String> = true_order[..10]
            .iter()
            .map(|(id, _)| format!("user-{id}"))
            .collect();
        let found = sketch.top(10);
        let found_keys: Vec<String> = found.iter().map(|k| k.key.clone()).collect();
        assert_eq!(found_keys, true_top, "the top 10, in order");

        let mut worst_relative = 0.0f64;
        let mut worst_absolute = 0;
        for key in &found {
            let id: usize = key.key["user-".len()..].parse().unwrap();
            let actual = truth[&id];
            assert!(
                key.count >= actual,
                "{key:?} counts below the truth {actual}"
            );
            assert!(
                key.count - key.error <= actual,
                "{key:?}: error bound broken"
            );
            worst_absolute = worst_absolute.max(key.count - actual);
            worst_relative = worst_relative.max((key.count - actual) as f64 / actual as f64);
        }
        eprintln!(
            "Space-Saving, {CAPACITY} keys, {} bytes: {} distinct ids in {DRAWS} draws; top 10 exact; \
             largest overcount {worst_absolute} ({:.3} %); guaranteed bound n/capacity = {}",
            TopKeys::memory_bytes(),
            truth.len(),
            worst_relative * 100.0,
            DRAWS / CAPACITY
        );
        assert_eq!(sketch.observed(), DRAWS as u64);
    }

    #[test]
    fn counts_exactly_while_it_has_room_and_bounds_the_error_after() {
        let mut sketch = TopKeys::new();
        for i in 0..CAPACITY {
            for _ in 0..=(i % 3) {
                sketch.observe(&format!("k{i}"));
            }
        }
        assert!(sketch.top(CAPACITY).iter().all(|k| k.error == 0));
        assert_eq!(sketch.top(1)[0].count, 3);
        // A new key takes the place of a count-1 key and inherits its count as error.
        sketch.observe("newcomer");
        let newcomer = sketch
            .top(CAPACITY)
            .into_iter()
            .find(|k| k.key == "newcomer")
            .expect("watched");
        assert_eq!((newcomer.count, newcomer.error), (2, 1));
        // The evicted key is no longer findable, the table still finds every watched key.
        for key in sketch.top(CAPACITY) {
            let hash = sketch.hasher.hash_one(key.key.as_bytes());
            assert!(
                sketch
                    .slots
                    .find(hash, |&s| sketch.entries[s as usize].key.as_str()
                        == key.key)
                    .is_some()
            );
        }
        assert_eq!(sketch.slots.len(), CAPACITY);
    }

    #[test]
    fn long_keys_are_cut_on_a_character_boundary() {
        let mut sketch = TopKeys::new();
        let long = "é".repeat(100);
        sketch.observe(&long);
        let kept = &sketch.top(1)[0].key;
        assert_eq!(kept.len(), MAX_KEY_BYTES);
        assert!(long.starts_with(kept.as_str()));
    }
}
