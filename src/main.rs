//! The `tongban` binary.

// mimalloc: the hub allocates many small, short-lived buffers across
// threads (records, payloads, HTTP bodies); glibc's allocator spent about
// 14 % of the demo's CPU and kept freed memory in per-thread arenas.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its place in `mi_option_e`, mimalloc
/// v3's `mimalloc.h`; the crate names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> std::process::ExitCode {
    // Give freed pages back to the OS at once rather than 10 ms later: the
    // hub frees much in bursts (a page of records, a batch of payloads), and
    // with the delay a 30k-person demo peaked 44 MB (16 %) higher, no faster.
    // SAFETY: an option set before any other thread starts.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    tongban::cli::main()
}
