//! The `tongban` binary.

// mimalloc: the hub allocates many small, short-lived buffers across
// threads (records, payloads, HTTP bodies); glibc's allocator spent about
// 14 % of the demo's CPU and kept freed memory in per-thread arenas.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tongban::cli::main()
}
