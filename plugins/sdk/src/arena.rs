//! The guest's global allocator (feature `arena`, on by default): a bump
//! allocator over a 128 KiB static arena, falling back to the standard
//! allocator when the arena is full.
//!
//! Why: every call runs in a fresh instance, so nothing is ever worth
//! freeing, and the standard allocator (dlmalloc) starts each call by
//! growing linear memory (`memory.grow`), which the host pays for with an
//! `mprotect` at the grow and another at the reset, each with a TLB
//! shootdown. The arena lives in the module's zeroed data (`.bss`), inside
//! the initial memory that the host keeps resident between calls, so a call
//! that allocates under 128 KiB never grows memory. A plugin that wants its
//! own `#[global_allocator]` turns the feature off
//! (`swapline-sdk = { …, default-features = false }`).
//!
//! wasm32-unknown-unknown guests are single-threaded, which is what makes
//! the unsynchronised cells below sound.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::UnsafeCell,
};

/// Arena size, bytes.
const ARENA_BYTES: usize = 128 * 1024;

#[repr(C, align(16))]
struct Arena {
    bytes: UnsafeCell<[u8; ARENA_BYTES]>,
    /// Offset of the first free byte.
    next: UnsafeCell<usize>,
}

// SAFETY: a wasm32-unknown-unknown guest has one thread.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena {
    bytes: UnsafeCell::new([0; ARENA_BYTES]),
    next: UnsafeCell::new(0),
};

/// Bump allocation in the arena, then [`System`]. Freeing arena memory is a
/// no-op (the instance is dropped after one call); growing the last arena
/// allocation happens in place.
pub struct BumpThenSystem;

impl BumpThenSystem {
    fn base() -> usize {
        ARENA.bytes.get() as usize
    }

    fn in_arena(ptr: *mut u8) -> bool {
        let at = ptr as usize;
        at >= Self::base() && at < Self::base() + ARENA_BYTES
    }
}

// SAFETY: blocks handed out are disjoint (the offset only moves forward),
// aligned as asked, and inside the arena; everything else is `System`'s.
unsafe impl GlobalAlloc for BumpThenSystem {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = Self::base();
        // SAFETY: single-threaded; no other reference to `next` is live.
        let next = unsafe { &mut *ARENA.next.get() };
        let block = (base + *next)
            .checked_next_multiple_of(layout.align())
            .and_then(|start| Some((start, start.checked_add(layout.size())?)));
        match block {
            Some((start, end)) if end <= base + ARENA_BYTES => {
                *next = end - base;
                start as *mut u8
            }
            // SAFETY: forwarding the caller's layout.
            _ => unsafe { System.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if !Self::in_arena(ptr) {
            // SAFETY: not an arena block, so `System` handed it out.
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let base = Self::base();
        if Self::in_arena(ptr) {
            // SAFETY: single-threaded; no other reference to `next` is live.
            let next = unsafe { &mut *ARENA.next.get() };
            let is_last = ptr as usize + layout.size() == base + *next;
            if is_last
                && (ptr as usize)
                    .checked_add(new_size)
                    .is_some_and(|end| end <= base + ARENA_BYTES)
            {
                *next = ptr as usize + new_size - base;
                return ptr;
            }
        } else {
            // SAFETY: a `System` block stays with `System`.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: `new_size` with the old alignment is a valid layout (the
        // caller's contract for `realloc`).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as for `alloc`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are live and at least this long; they do
            // not overlap (the new one starts past the old in the arena, or
            // comes from `System`).
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
        }
        new
    }
}
