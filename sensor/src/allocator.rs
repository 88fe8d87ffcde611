//! The daemon's allocator: mimalloc, tuned to hand freed memory back at once.
//!
//! Every event is a few dozen small strings built on the reader thread and freed a batch later;
//! under glibc malloc that churn (tcache misses, consolidation of each freed batch) was the
//! largest single cost in the daemon's profile. mimalloc's per-thread free lists make it cheap.
//! Its defaults favour speed over footprint (huge pages, freed pages kept committed a while),
//! which showed as a resident set twice glibc's at idle; tuned here, it is below glibc's.
use libmimalloc_sys::{mi_option_set, mi_option_t};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Option numbers of the bundled mimalloc (v3, `mimalloc.h`); not exported as constants.
const ARENA_EAGER_COMMIT: mi_option_t = 4;
const PURGE_DELAY: mi_option_t = 15;
const ALLOW_THP: mi_option_t = 43;

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
        // Commit arena memory when used, and return free pages at once.
        mi_option_set(ARENA_EAGER_COMMIT, 0);
        mi_option_set(PURGE_DELAY, 0);
    }
}
