//! The block cache: checked data blocks by (table number, block index), least recently used out
//! first, bounded in bytes. Lives on the serving ring; no I/O.

use bytes::Bytes;
use lru::LruCache;

/// See the module documentation.
pub struct BlockCache {
    blocks: LruCache<(u64, u32), (Bytes, u32)>,
    bytes: usize,
    capacity_bytes: usize,
    hits: u64,
    misses: u64,
}

impl BlockCache {
    pub fn new(capacity_bytes: usize) -> Self {
        BlockCache {
            blocks: LruCache::unbounded(),
            bytes: 0,
            capacity_bytes,
            hits: 0,
            misses: 0,
        }
    }

    /// A cached block and its entry count.
    pub fn get(&mut self, table: u64, block: u32) -> Option<(Bytes, u32)> {
        let found = self.blocks.get(&(table, block)).cloned();
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    /// A cached block, for a scan: neither counted nor moved to the front, so that a scan
    /// reading through many blocks does not change what the point reads keep cached.
    pub fn peek(&self, table: u64, block: u32) -> Option<(Bytes, u32)> {
        self.blocks.peek(&(table, block)).cloned()
    }

    pub fn insert(&mut self, table: u64, block: u32, bytes: Bytes, count: u32) {
        if bytes.len() > self.capacity_bytes {
            return;
        }
        self.bytes += bytes.len();
        if let Some((_, (old, _))) = self.blocks.push((table, block), (bytes, count)) {
            self.bytes -= old.len();
        }
        while self.bytes > self.capacity_bytes {
            match self.blocks.pop_lru() {
                Some((_, (evicted, _))) => self.bytes -= evicted.len(),
                None => break,
            }
        }
    }

    /// Bytes of blocks held.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// `(hits, misses)` since start.
    pub fn hit_counts(&self) -> (u64, u64) {
        (self.hits, self.misses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let mut cache = BlockCache::new(10);
        cache.insert(1, 0, Bytes::from_static(b"aaaa"), 1);
        cache.insert(1, 1, Bytes::from_static(b"bbbb"), 1);
        assert!(cache.get(1, 0).is_some());
        cache.insert(2, 0, Bytes::from_static(b"cccc"), 1);
        assert_eq!(cache.bytes(), 8);
        assert!(cache.get(1, 1).is_none(), "least recently used is evicted");
        assert!(cache.get(1, 0).is_some());
        cache.insert(3, 0, Bytes::from(vec![0; 11]), 1);
        assert!(cache.get(3, 0).is_none(), "a block above capacity is not cached");
        assert_eq!(cache.hit_counts(), (2, 2));
    }
}
