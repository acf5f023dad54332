//! Heap buffers aligned for `O_DIRECT`: the address, the length of every write and the file offset
//! must all be multiples of the logical block size, or ext4 answers `EINVAL`. This file and
//! `crate::sys` are the only places with `unsafe` (the crate denies it elsewhere).

use std::alloc::{self, Layout};
use std::ptr::NonNull;

/// Alignment and I/O granularity of every direct read and write, except the WAL's writes (which
/// use the file's own direct-I/O unit, see [`crate::io::DataFile::direct_write_unit`]).
pub const BLOCK_BYTES: usize = 4096;

/// The smallest direct-I/O unit a Linux block device has (its logical sector), and the unit the
/// test file systems tear an interrupted write into: a device promises nothing larger is written
/// whole across a power loss.
pub const SECTOR_BYTES: usize = 512;

/// Rounds `n` up to a whole number of blocks.
pub fn round_up_to_block(n: usize) -> usize {
    n.div_ceil(BLOCK_BYTES) * BLOCK_BYTES
}

/// Rounds `n` down to a block boundary.
pub fn round_down_to_block(n: u64) -> u64 {
    n - n % BLOCK_BYTES as u64
}

/// A zero-initialised, block-aligned byte buffer with a fixed capacity (a multiple of
/// [`BLOCK_BYTES`]) and a length that counts the bytes in use.
///
/// All `capacity` bytes are always initialised (the allocation is zeroed), so the length can move
/// freely within the capacity without exposing uninitialised memory.
pub struct AlignedBuf {
    ptr: NonNull<u8>,
    len: usize,
    capacity: usize,
}

// SAFETY: `AlignedBuf` owns its allocation exclusively, like a `Vec<u8>`; nothing else holds the
// pointer, so moving it to another thread (the background ring) is sound.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    /// A buffer of at least `capacity` bytes (rounded up to whole blocks, at least one), all zero,
    /// with length 0.
    pub fn zeroed(capacity: usize) -> Self {
        let capacity = round_up_to_block(capacity.max(1));
        let layout = Self::layout(capacity);
        // SAFETY: `layout` has a non-zero size (at least one block).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        AlignedBuf {
            ptr,
            len: 0,
            capacity,
        }
    }

    fn layout(capacity: usize) -> Layout {
        // Capacity is a non-zero multiple of BLOCK_BYTES, a power of two: the layout is valid
        // unless the size overflows isize, which an allocation request could not satisfy anyway.
        Layout::from_size_align(capacity, BLOCK_BYTES).expect("aligned buffer size overflows isize")
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sets the length; every byte up to the capacity is initialised, so this is safe.
    ///
    /// # Panics
    /// If `len` exceeds the capacity: that is a bug in the caller's size arithmetic.
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity,
            "length {len} beyond capacity {}",
            self.capacity
        );
        self.len = len;
    }

    /// The bytes in use.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: `ptr` is valid for `capacity` initialised bytes and `len <= capacity`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes in use, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` guarantees exclusive access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Appends `bytes`; returns false (and appends nothing) if they do not fit.
    pub fn extend_from_slice(&mut self, bytes: &[u8]) -> bool {
        let end = self.len + bytes.len();
        if end > self.capacity {
            return false;
        }
        self.len = end;
        self.as_mut_slice()[end - bytes.len()..].copy_from_slice(bytes);
        true
    }

    /// Appends `count` zero bytes; returns false (and appends nothing) if they do not fit.
    pub fn extend_zeros(&mut self, count: usize) -> bool {
        let start = self.len;
        if start + count > self.capacity {
            return false;
        }
        self.len = start + count;
        self.as_mut_slice()[start..].fill(0);
        true
    }

    /// Zero-pads the buffer to a whole number of blocks, as a direct write needs.
    pub fn pad_to_block(&mut self) {
        self.pad_to(BLOCK_BYTES);
    }

    /// Zero-pads the buffer to a whole number of `unit`s (a power of two up to [`BLOCK_BYTES`]).
    pub fn pad_to(&mut self, unit: usize) {
        assert!(
            unit.is_power_of_two() && unit <= BLOCK_BYTES,
            "padding unit {unit} is not a power of two up to a block"
        );
        let padded = self.len.next_multiple_of(unit);
        let fits = self.extend_zeros(padded - self.len);
        // The capacity is a whole number of blocks, each a whole number of units, so the padded
        // length always fits.
        debug_assert!(fits);
    }
}

impl AsRef<[u8]> for AlignedBuf {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with exactly this layout.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), Self::layout(self.capacity)) }
    }
}

impl std::fmt::Debug for AlignedBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlignedBuf")
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

// SAFETY: the pointer stays valid and fixed while the buffer is owned by an in-flight operation
// (the heap allocation never moves); `bytes_init` is the length in use, `bytes_total` the capacity.
unsafe impl tokio_uring::buf::IoBuf for AlignedBuf {
    fn stable_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    fn bytes_init(&self) -> usize {
        self.len
    }

    fn bytes_total(&self) -> usize {
        self.capacity
    }
}

// SAFETY: as for `IoBuf`; `set_init` only moves the length within the always-initialised capacity.
unsafe impl tokio_uring::buf::IoBufMut for AlignedBuf {
    fn stable_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    unsafe fn set_init(&mut self, pos: usize) {
        if pos > self.len {
            self.set_len(pos);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_aligned_zeroed_and_bounded() {
        let mut buf = AlignedBuf::zeroed(5000);
        assert_eq!(buf.capacity(), 8192);
        assert_eq!(buf.as_slice().as_ptr() as usize % BLOCK_BYTES, 0);
        assert!(buf.extend_from_slice(b"abc"));
        buf.pad_to_block();
        assert_eq!(buf.len(), 4096);
        assert_eq!(&buf.as_slice()[..4], b"abc\0");
        assert!(!buf.extend_from_slice(&[1; 4097]));
        assert_eq!(buf.len(), 4096);
    }
}
