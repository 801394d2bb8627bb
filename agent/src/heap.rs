//! Keeping the allocator's resident memory down: fewer arenas, free pages
//! handed back to the kernel.

/// glibc's malloc keeps freed memory resident inside its arenas. Every sync
/// round decodes the whole entry list again (10,000 entries: about 5 MB, all
/// freed at the round's end) and signing leaves keys, CSRs and responses
/// behind, among the SVIDs it stores: with 10,000 SVIDs cached that free
/// memory was about 1 KiB of RSS per SVID on top of the 1.5 KiB they use.
/// `malloc_trim` returns every whole free page of every arena; about 1.7 ms
/// with 10,000 SVIDs, 50 µs with a few. Other C libraries: nothing to do.
pub fn release_free_pages() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointer; it walks glibc's own free lists
    // under their arenas' locks.
    unsafe {
        nix::libc::malloc_trim(0);
    }
}

/// glibc gives a thread that meets a locked arena a new one, up to eight per
/// core, and keeps each arena's freed memory resident. The agent's threads
/// change under connection churn (each attestation's `block_in_place` hands
/// its worker's core to a pool thread), so with the default the RSS grew with
/// every new pool thread's arena (about 0.3 MiB each) for hundreds of
/// thousands of connections before it levelled off. One arena per core keeps
/// it where the first connections left it, and gives each runtime worker one.
/// An operator's `MALLOC_ARENA_MAX` wins. Call before the first thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let arenas = nix::libc::c_int::try_from(cores).unwrap_or(nix::libc::c_int::MAX);
        // SAFETY: mallopt takes no pointer; it sets a limit glibc reads under
        // its own lock when a thread needs an arena.
        unsafe {
            nix::libc::mallopt(nix::libc::M_ARENA_MAX, arenas);
        }
    }
}
