//! Handles of token keys found by label, so that a request does not search the token for the
//! same master key every time (a `C_FindObjects` costs SoftHSM2 a file check per object on the
//! token). A handle is kept for the pool generation it was found in (a rebuilt pool starts
//! empty), forgotten when hkms destroys the key, and everything is forgotten after a call
//! calls a handle invalid. The token belongs to this node (DESIGN.md §2): nothing else is
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
    handles: HashMap<String, ObjectHandle>,
}

impl HandleCache {
    /// The handle found for `label` in this generation, if any.
    pub(crate) fn get(&self, generation: u64, label: &str) -> Option<ObjectHandle> {
        let known = self.known.lock().ok()?;
        (known.generation == generation)
            .then(|| known.handles.get(label).copied())
            .flatten()
    }

    /// Remembers `handle` for `label`, found in `generation`.
    pub(crate) fn put(&self, generation: u64, label: &str, handle: ObjectHandle) {
        let Ok(mut known) = self.known.lock() else {
            return;
        };
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
        }
    }

    /// Forgets everything (a call found a handle invalid).
    pub(crate) fn clear(&self) {
        if let Ok(mut known) = self.known.lock() {
            known.handles.clear();
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
        cache.put(1, "hkms/a", handle(7));
        assert_eq!(cache.get(1, "hkms/a"), Some(handle(7)));
        assert_eq!(cache.get(1, "hkms/b"), None);
        assert_eq!(cache.get(2, "hkms/a"), None, "a rebuilt pool starts empty");
        cache.put(2, "hkms/b", handle(9));
        assert_eq!(cache.get(2, "hkms/a"), None);
        assert_eq!(cache.get(2, "hkms/b"), Some(handle(9)));
    }

    #[test]
    fn forget_and_clear_drop_handles() {
        let cache = HandleCache::default();
        cache.put(0, "hkms/a", handle(1));
        cache.put(0, "hkms/b", handle(2));
        cache.forget("hkms/a");
        assert_eq!(cache.get(0, "hkms/a"), None);
        assert_eq!(cache.get(0, "hkms/b"), Some(handle(2)));
        cache.clear();
        assert_eq!(cache.get(0, "hkms/b"), None);
    }
}
