//! Storage buffers pooled by size class, so a training step reuses last step's allocations.
//!
//! Reuse is stream-ordered: a buffer returns to the pool when its last tensor drops, possibly while
//! recorded-but-unsubmitted commands still read it. That is safe because everything that writes a
//! buffer (kernels, uploads, fills) is recorded into the same ordered command stream; nothing writes
//! through `queue.write_buffer`, which would jump ahead of the pending commands.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A new buffer id, unique in the process (bind groups are cached by buffer id, and buffers of
/// different devices must never share one).
pub(crate) fn new_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Rounds `bytes` up to its size class: four classes per power of two (at most 25% waste), 256 B minimum.
pub(crate) fn size_class(bytes: u64) -> u64 {
    let bytes = bytes.max(256);
    let pow = 63 - (bytes - 1).leading_zeros() as u64; // 2^pow < bytes <= 2^(pow+1)
    let base = 1u64 << pow;
    let step = (base / 4).max(1);
    bytes.div_ceil(step) * step
}

#[derive(Default)]
pub(crate) struct BufferPool {
    /// Free buffers by size class, by id. `take` hands out the lowest id, so which buffer an
    /// allocation gets depends only on which are free, not on the order they were freed: a
    /// training step that allocates and frees in the same order as the last one gets the same
    /// buffers back, and the runtime's bind groups (cached by buffer id) are found again.
    free: Mutex<HashMap<u64, BTreeMap<u64, wgpu::Buffer>>>,
}

impl BufferPool {
    pub(crate) fn take(&self, class: u64) -> Option<(u64, wgpu::Buffer)> {
        self.free
            .lock()
            .unwrap()
            .get_mut(&class)
            .and_then(|v| v.pop_first())
    }

    pub(crate) fn give(&self, class: u64, id: u64, buffer: wgpu::Buffer) {
        self.free
            .lock()
            .unwrap()
            .entry(class)
            .or_default()
            .insert(id, buffer);
    }

    /// Drops every cached buffer (used to recover from an out-of-memory error).
    pub(crate) fn clear(&self) -> u64 {
        let mut free = self.free.lock().unwrap();
        let bytes = free.iter().map(|(class, v)| class * v.len() as u64).sum();
        free.clear();
        bytes
    }

    pub(crate) fn cached_bytes(&self) -> u64 {
        let free = self.free.lock().unwrap();
        free.iter().map(|(class, v)| class * v.len() as u64).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::size_class;

    #[test]
    fn size_classes_cover_and_bound_waste() {
        assert_eq!(size_class(1), 256);
        assert_eq!(size_class(256), 256);
        for bytes in [257u64, 1000, 4096, 4097, 123_457, 1 << 30, (1 << 30) + 1] {
            let c = size_class(bytes);
            assert!(c >= bytes, "{bytes} -> {c}");
            assert!(c as f64 <= bytes as f64 * 1.25 + 1.0, "{bytes} -> {c}");
            assert_eq!(size_class(c), c, "classes are fixed points");
        }
    }
}
