//! Handles of token keys found by label, so that a request does not search the token for the
//! same master key every time (a `C_FindObjects` costs SoftHSM2 a file check per object on the
//! token). A handle is kept for the pool generation it was found in (a rebuilt pool starts
//! empty), forgotten when hkms destroys the key, and everything is forgotten after a call
//! calls a handle invalid. The token belongs to this node (docs/design.md §3): nothing else is
//! expected to destroy its keys while it runs.

use std::collections::HashMap;
use std::sync::Mutex;

use cryptoki::object::ObjectHandle;

/// Most labels kept; more (a token with very many live keys) starts over.
const MAX_HANDLES: usize = 4096;

#[derive(Default)]
pub(crate) struct HandleCache {
    known: Mutex<Known>,
}

#[derive(Default)]
struct Known {
    generation: u64,
    /// Bumped by every `forget` and `clear`: a search that started before one of them must
    /// not store what it found (the key may be gone by now).
    epoch: u64,
    handles: HashMap<String, ObjectHandle>,
}

impl HandleCache {
    /// The handle found for `label` in this generation, or the epoch to pass to `put` after
    /// searching the token.
    pub(crate) fn get(&self, generation: u64, label: &str) -> Result<ObjectHandle, u64> {
        let Ok(known) = self.known.lock() else {
            return Err(u64::MAX);
        };
        match known.handles.get(label) {
            Some(handle) if known.generation == generation => Ok(*handle),
            _ => Err(known.epoch),
        }
    }

    /// Remembers `handle` for `label`, found in `generation` by a search that began at
    /// `epoch`; nothing is kept if a key was forgotten meanwhile.
    pub(crate) fn put(&self, generation: u64, epoch: u64, label: &str, handle: ObjectHandle) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
        if known.epoch != epoch {
            return;
        }
        if known.generation != generation || known.handles.len() >= MAX_HANDLES {
            known.handles.clear();
            known.generation = generation;
        }
        known.handles.insert(label.to_string(), handle);
    }

    /// Forgets `label` (its key is being destroyed).
    pub(crate) fn forget(&self, label: &str) {
        if let Ok(mut known) = self.known.lock() {
            known.handles.remove(label);
            known.epoch = known.epoch.wrapping_add(1);
        }
    }

    /// Forgets everything (a call found a handle invalid).
    pub(crate) fn clear(&self) {
        if let Ok(mut known) = self.known.lock() {
            known.handles.clear();
            known.epoch = known.epoch.wrapping_add(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handle(n: u64) -> ObjectHandle {
        // SAFETY: these handles are only compared, never passed to a PKCS#11 call.
        unsafe { ObjectHandle::new_from_raw(n) }
    }

    #[test]
    fn a_handle_is_kept_for_its_generation_only() {
        let cache = HandleCache::default();
        cache.put(1, 0, "hkms/a", handle(7));
        assert_eq!(cache.get(1, "hkms/a"), Ok(handle(7)));
        assert!(cache.get(1, "hkms/b").is_err());
        assert!(
            cache.get(2, "hkms/a").is_err(),
            "a rebuilt pool starts empty"
        );
        cache.put(2, 0, "hkms/b", handle(9));
        assert!(cache.get(2, "hkms/a").is_err());
        assert_eq!(cache.get(2, "hkms/b"), Ok(handle(9)));
    }

    #[test]
    fn forget_and_clear_drop_handles() {
        let cache = HandleCache::default();
        cache.put(0, 0, "hkms/a", handle(1));
        cache.put(0, 0, "hkms/b", handle(2));
        cache.forget("hkms/a");
        assert!(cache.get(0, "hkms/a").is_err());
        assert_eq!(cache.get(0, "hkms/b"), Ok(handle(2)));
        cache.clear();
        assert!(cache.get(0, "hkms/b").is_err());
    }

    #[test]
    fn a_search_that_overlapped_a_destroy_is_not_kept() {
        let cache = HandleCache::default();
        // A request misses, and searches the token ...
        let epoch = cache.get(0, "hkms/a").expect_err("a miss");
        // ... while another destroys that key.
        cache.forget("hkms/a");
        cache.put(0, epoch, "hkms/a", handle(3));
        assert!(
            cache.get(0, "hkms/a").is_err(),
            "a handle of a destroyed key was kept"
        );
        // A search that began afterwards is kept.
        let epoch = cache.get(0, "hkms/a").expect_err("a miss");
        cache.put(0, epoch, "hkms/a", handle(4));
        assert_eq!(cache.get(0, "hkms/a"), Ok(handle(4)));
    }
}
