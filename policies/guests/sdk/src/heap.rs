//! The policy's heap: a bump allocator over the instance's linear memory.
//!
//! Every tool call runs in a fresh instance that is thrown away afterwards, so nothing needs to
//! be returned to a free list: allocation is a pointer increment, and the memory limit the host
//! sets per call bounds the total. Freeing or growing the most recent allocation is still done in
//! place, which covers the common patterns (a `Vec` or `String` being built, a temporary dropped
//! right after use). Measured on `take_order` with a 200-item menu: decoding the input costs
//! 16 % less fuel than with the standard library's allocator (3.08 M → 2.58 M).
//!
//! A policy that needs a general-purpose allocator (long loops that build and drop large values
//! out of order) can opt out with the SDK's `std-alloc` feature.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;

const PAGE: usize = 64 * 1024;

/// The allocator. Single-threaded by construction: a policy instance has one thread.
pub struct Bump {
    /// Next free byte; 0 until the first allocation.
    next: Cell<usize>,
    /// End of the memory the heap owns (a page boundary).
    end: Cell<usize>,
}

// SAFETY: wasm32-unknown-unknown policies have exactly one thread (no threads proposal in the
// policy world), so the cells are never accessed concurrently.
unsafe impl Sync for Bump {}

impl Bump {
    pub const fn new() -> Self {
        Self { next: Cell::new(0), end: Cell::new(0) }
    }

    /// Makes sure `[next, next + size)` after aligning is inside owned memory; returns the
    /// aligned start, or `None` when memory cannot grow (the host's limit).
    fn reserve(&self, size: usize, align: usize) -> Option<usize> {
        if self.end.get() == 0 {
            // Start after everything the module was instantiated with (data and stack).
            let start = core::arch::wasm32::memory_size(0) * PAGE;
            self.next.set(start);
            self.end.set(start);
        }
        let start = self.next.get().checked_add(align - 1)? & !(align - 1);
        let new_next = start.checked_add(size)?;
        if new_next > self.end.get() {
            let pages = (new_next - self.end.get()).div_ceil(PAGE);
            if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
                return None;
            }
            self.end.set(self.end.get() + pages * PAGE);
        }
        Some(start)
    }
}

impl Default for Bump {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: `alloc` returns either null or a block of `layout.size()` bytes aligned to
// `layout.align()` that no other live allocation overlaps (the bump pointer only moves past it,
// and moves back only when the block ending at it is freed or shrunk). `realloc` keeps the first
// `min(old, new)` bytes: in place for the last block, copied otherwise.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match self.reserve(layout.size(), layout.align()) {
            Some(start) => {
                self.next.set(start + layout.size());
                start as *mut u8
            }
            None => std::ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = ptr as usize;
        if old + layout.size() == self.next.get() {
            // The last block: grow or shrink where it is.
            self.next.set(old);
            if self.reserve(new_size, layout.align()) == Some(old) {
                self.next.set(old + new_size);
                return ptr;
            }
            // Could not grow here (memory limit): restore and fail.
            self.next.set(old + layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: `layout.align()` is a valid alignment (it came from a `Layout`) and the caller
        // guarantees `new_size` rounded up to it does not overflow.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarded from this function's contract.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the copied length and do not overlap (the new
            // block starts at or after the bump pointer, past the old one).
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}
