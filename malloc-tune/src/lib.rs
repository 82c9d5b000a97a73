//! The two calls rollcache makes into glibc's allocator, behind a safe API: the only unsafe code
//! rollcache has, kept out of the main crate so that it can `forbid(unsafe_code)`.
//! On other C libraries (musl) and systems both do nothing.
#![deny(unsafe_op_in_unsafe_fn)]

/// Asks glibc to return the free memory it holds to the system (`malloc_trim(0)`: every arena,
/// whole free pages with `madvise`). Returns whether anything was released; false elsewhere.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn release_free_memory() -> bool {
    // SAFETY: malloc_trim takes a plain integer, touches only the allocator's own state (under
    // its locks) and has no precondition on the caller.
    unsafe { libc::malloc_trim(0) != 0 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn release_free_memory() -> bool {
    false
}

/// Caps the number of glibc malloc arenas (`mallopt(M_ARENA_MAX, n)`). Call it before other
/// threads start allocating. Returns whether glibc accepted it; false elsewhere.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn set_arena_max(n: u16) -> bool {
    // SAFETY: mallopt takes two plain integers and only changes the allocator's own settings
    // (under its lock); M_ARENA_MAX is a valid parameter on every glibc since 2.10.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, i32::from(n)) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn set_arena_max(_n: u16) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_holes_are_returned() {
        // Freed blocks between live ones: holes that only a trim returns (glibc returns the top
        // of the heap by itself).
        let mut burst: Vec<Vec<u8>> = (0..200).map(|i| vec![i as u8; 64 * 1024]).collect();
        let kept: Vec<Vec<u8>> = burst.iter_mut().step_by(2).map(std::mem::take).collect();
        drop(burst);
        let released = release_free_memory();
        assert_eq!(kept.len(), 100);
        assert_eq!(released, cfg!(all(target_os = "linux", target_env = "gnu")));
    }

    #[test]
    fn arena_cap_is_accepted() {
        assert_eq!(
            set_arena_max(8),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
