//! The block cache: checked data blocks by (table number, block index), least recently used out
//! first, bounded in bytes. Lives on the serving ring; no I/O.

use std::rc::Rc;

use lru::LruCache;

use super::block::SearchableBlock;

/// See the module documentation.
pub struct BlockCache {
    blocks: LruCache<(u64, u32), Rc<SearchableBlock>>,
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

    /// A cached block.
    pub fn get(&mut self, table: u64, block: u32) -> Option<Rc<SearchableBlock>> {
        let found = self.blocks.get(&(table, block)).cloned();
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    /// A cached block, for a scan: neither counted nor moved to the front, so that a scan
    /// reading through many blocks does not change what the point reads keep cached.
    pub fn peek(&self, table: u64, block: u32) -> Option<Rc<SearchableBlock>> {
        self.blocks.peek(&(table, block)).cloned()
    }

    /// Caches `searchable`, charged at its resident bytes.
    pub fn insert(&mut self, table: u64, block: u32, searchable: Rc<SearchableBlock>) {
        let charged = searchable.resident_bytes();
        if charged > self.capacity_bytes {
            return;
        }
        self.bytes += charged;
        if let Some((_, old)) = self.blocks.push((table, block), searchable) {
            self.bytes -= old.resident_bytes();
        }
        while self.bytes > self.capacity_bytes {
            match self.blocks.pop_lru() {
                Some((_, evicted)) => self.bytes -= evicted.resident_bytes(),
                None => break,
            }
        }
    }

    /// Bytes of blocks held (entries and their starts).
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
    use crate::sst::block::{decode, BlockBuilder, Compression};
    use bytes::Bytes;

    /// A block of one entry whose value has `value_len` bytes.
    fn block(value_len: usize) -> Rc<SearchableBlock> {
        let mut builder = BlockBuilder::default();
        builder.add(b"k", 1, Some(&vec![b'v'; value_len]));
        let (entries, count) = decode(Bytes::from(builder.finish(Compression::None)), 2).unwrap();
        Rc::new(SearchableBlock::new(entries, count).unwrap())
    }

    #[test]
    fn evicts_least_recently_used_within_capacity() {
        let each = block(10).resident_bytes();
        let mut cache = BlockCache::new(2 * each + 1);
        cache.insert(1, 0, block(10));
        cache.insert(1, 1, block(10));
        assert!(cache.get(1, 0).is_some());
        cache.insert(2, 0, block(10));
        assert_eq!(cache.bytes(), 2 * each);
        assert!(cache.get(1, 1).is_none(), "least recently used is evicted");
        assert!(cache.get(1, 0).is_some());
        cache.insert(3, 0, block(2 * each));
        assert!(cache.get(3, 0).is_none(), "a block above capacity is not cached");
        assert_eq!(cache.hit_counts(), (2, 2));
    }
}
