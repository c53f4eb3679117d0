//! An allocator that wipes every block it frees. Secrets reach the server in buffers hkms does
//! not own (rustls records, HTTP/2 frames, protobuf bodies, cryptoki's copies of a PIN), and
//! those buffers end as ordinary frees: wiping them there is the one place that catches them
//! all. hkms's own secret types are `Zeroizing` as well, so they are wiped even where this
//! allocator is not installed (tests, other programs using the library).
//!
//! What it cannot wipe: memory still in use (a live connection's receive buffer holds its last
//! record until it is overwritten or the connection closes), memory C libraries allocate with
//! their own `malloc` (SoftHSM2 wipes its secure buffers itself), and stack frames.

use std::alloc::{GlobalAlloc, Layout};

/// Wraps allocator `A`; zeroes each block before `A` frees it.
///
/// `realloc` is left to the default (allocate, copy, free), so a block that moves is wiped at
/// its old place too, which `A`'s in-place `realloc` would not do.
pub struct WipeOnFree<A>(pub A);

// SAFETY: every method forwards to `A` with the caller's own arguments; `dealloc` writes only
// inside the block it is handed back (`layout.size()` bytes from `ptr`, which the caller
// allocated with this layout) before `A` frees it.
unsafe impl<A: GlobalAlloc> GlobalAlloc for WipeOnFree<A> {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc`, passed on.
        unsafe { self.0.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as above.
        unsafe { self.0.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes from this allocator.
        unsafe {
            std::ptr::write_bytes(ptr, 0, layout.size());
            // The block counts as read after the wipe, so the wipe of memory about to be freed
            // cannot be optimised away.
            std::hint::black_box(ptr);
            self.0.dealloc(ptr, layout)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;
    use std::cell::RefCell;

    /// Records what each freed block held when it was freed.
    struct Spy {
        freed: RefCell<Vec<Vec<u8>>>,
    }

    // SAFETY: test-only, used from one thread.
    unsafe impl Sync for Spy {}

    unsafe impl GlobalAlloc for Spy {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            let held = unsafe { std::slice::from_raw_parts(ptr, layout.size()) }.to_vec();
            self.freed.borrow_mut().push(held);
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[test]
    fn a_freed_block_is_zero_when_the_inner_allocator_gets_it_back() {
        let a = WipeOnFree(Spy {
            freed: RefCell::new(Vec::new()),
        });
        let layout = Layout::from_size_align(24, 8).unwrap();
        unsafe {
            let p = a.alloc(layout);
            assert!(!p.is_null());
            std::ptr::copy_nonoverlapping(b"PIN 123456 and an ID no.".as_ptr(), p, 24);
            a.dealloc(p, layout);
        }
        assert_eq!(a.0.freed.borrow().as_slice(), &[vec![0u8; 24]]);
    }

    #[test]
    fn a_block_that_grows_elsewhere_is_wiped_at_its_old_place() {
        let a = WipeOnFree(Spy {
            freed: RefCell::new(Vec::new()),
        });
        let layout = Layout::from_size_align(16, 8).unwrap();
        unsafe {
            let p = a.alloc(layout);
            std::ptr::copy_nonoverlapping(b"secret component".as_ptr(), p, 16);
            let q = a.realloc(p, layout, 4096);
            assert_eq!(std::slice::from_raw_parts(q, 16), b"secret component");
            a.dealloc(q, Layout::from_size_align(4096, 8).unwrap());
        }
        let freed = a.0.freed.borrow();
        assert_eq!(freed.len(), 2);
        assert!(freed.iter().all(|b| b.iter().all(|x| *x == 0)));
    }
}
