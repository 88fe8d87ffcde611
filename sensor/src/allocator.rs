//! The daemon's allocator: mimalloc, tuned for a small resident set.
//!
//! Every event is a few dozen small strings built on the reader thread and freed a batch later;
//! under glibc malloc that churn (tcache misses, consolidation of each freed batch) was the
//! largest single cost in the daemon's profile. mimalloc's per-thread free lists make it cheap.
//! Its defaults favour speed over footprint (huge pages, freed pages kept committed a while),
//! which showed as a resident set twice glibc's at idle; tuned here, it is below glibc's.
use std::{
    alloc::{GlobalAlloc, Layout},
    ffi::c_void,
};

use libmimalloc_sys::{mi_free, mi_malloc, mi_option_set, mi_option_t, mi_realloc, mi_zalloc};

#[global_allocator]
static GLOBAL: WordAligned = WordAligned;

/// mimalloc, asked for alignment only when a type needs more than a word.
///
/// `mimalloc::MiMalloc` asks for every block by its aligned entry point. Above 1 KiB that
/// entry point over-allocates and takes mimalloc's slow path even for an alignment of 8, and
/// the daemon allocates such blocks per event (process-table entries, encoding buffers).
/// mimalloc's plain entry points already return word-aligned blocks.
struct WordAligned;

/// The alignment every block from `mi_malloc` has.
const WORD: usize = std::mem::size_of::<usize>();

// SAFETY: every block comes from mimalloc and goes back to it; a layout whose alignment is
// above a word is served by mimalloc's aligned entry points, which honour it.
unsafe impl GlobalAlloc for WordAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: mi_malloc returns null or a block of `size` bytes aligned to a word.
            unsafe { mi_malloc(layout.size()).cast() }
        } else {
            // SAFETY: as the caller's contract requires, `layout` has a non-zero size.
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: as mi_malloc, with the block zeroed.
            unsafe { mi_zalloc(layout.size()).cast() }
        } else {
            // SAFETY: as in `alloc`.
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from one of mimalloc's entry points, all of which mi_free takes.
        unsafe { mi_free(ptr.cast::<c_void>()) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if layout.align() <= WORD {
            // SAFETY: `ptr` is a live mimalloc block; the new one is word-aligned like any.
            unsafe { mi_realloc(ptr.cast::<c_void>(), new_size).cast() }
        } else {
            // SAFETY: as the caller's contract requires, `ptr` is live and `new_size` non-zero.
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
    }
}

/// Option numbers of the bundled mimalloc (v3, `mimalloc.h`); not exported as constants.
const ARENA_EAGER_COMMIT: mi_option_t = 4;
const PURGE_DELAY: mi_option_t = 15;
const ALLOW_THP: mi_option_t = 43;

/// How long a freed page stays committed for reuse before it goes back to the kernel.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// Call first thing in `main`.
pub fn tune() {
    // The first arena was reserved before `main`, asking for huge pages; the process-wide
    // switch overrides that: a 2 MiB page per half-used arena region is most of the daemon's
    // footprint otherwise.
    // Best effort: a kernel without the switch keeps them, which costs memory, not function.
    let _ = nix::sys::prctl::set_thp_disable(true);
    // SAFETY: options are plain integers read by the allocator; this runs on the main thread
    // before any other thread exists.
    unsafe {
        mi_option_set(ALLOW_THP, 0);
        // Commit arena memory when used, and return free pages at once while starting (see
        // `steady`).
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, 0);
    }
}

/// Call once started: freed pages go back to the kernel a moment later rather than at once.
/// Returned at once, a page the sweep of exited processes emptied was faulted back in by the
/// next exec's arguments: a fifth of the reader's time with 4,000-byte command lines. Start-up
/// frees what loading the programs took with the delay still 0: the allocator purges late
/// pages only when it is next called, so an idle daemon would keep them.
pub fn steady() {
    // SAFETY: the option is a plain integer, which the allocator reads anew each time it frees
    // a page: a thread freeing meanwhile sees 0 or the delay, both valid settings.
    unsafe { mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) }
}
