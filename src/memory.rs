//! Giving freed heap memory back to the system.
//!
//! glibc's allocator keeps what a thread freed in that thread's arena and only returns the top of
//! each arena to the kernel. rollcache's bursts (listing a large history: Helm payloads are
//! base64 → gzip → JSON → YAML, decoded and dropped; rebuilding plan and report after a change)
//! leave freed pages between the long-lived facts, so the resident size would stay at the
//! burst's high-water mark. `malloc_trim(0)` walks every arena and returns whole free pages with
//! `madvise`; it is called once things have been quiet for a moment after a burst, on a blocking
//! thread, never in the middle of one.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Makes every thread allocate from one glibc arena, unless `MALLOC_ARENA_MAX` says otherwise.
/// By default glibc gives each thread that allocates its own arena (up to 8 per core), and each
/// arena keeps its own partly used pages: with one, the resident size at 10,000 revisions is
/// about 10 % lower (BENCHMARKS.md). rollcache's threads mostly wait on the network, so the
/// shared arena's lock is not contended. Call it first thing in `main`, before threads start.
pub fn use_one_arena() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        rollcache_malloc_tune::set_arena_max(1);
    }
}

/// Returns freed memory `quiet` after the last change of `changes` (each reconcile pass publishes
/// a status: a burst of passes is followed by one trim), until `cancel`.
pub async fn trim_after_bursts<T: Send + Sync>(
    changes: watch::Receiver<T>,
    quiet: Duration,
    cancel: CancellationToken,
) {
    after_bursts(
        changes,
        quiet,
        cancel,
        rollcache_malloc_tune::release_free_memory,
    )
    .await
}

async fn after_bursts<T: Send + Sync>(
    mut changes: watch::Receiver<T>,
    quiet: Duration,
    cancel: CancellationToken,
    trim: fn() -> bool,
) {
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = changes.changed() => if r.is_err() { return },
        }
        // Wait until `quiet` passes without another change.
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = changes.changed() => if r.is_err() { return } else { continue },
                _ = tokio::time::sleep(quiet) => break,
            }
        }
        let started = std::time::Instant::now();
        let released = tokio::task::spawn_blocking(trim).await.unwrap_or(false);
        tracing::debug!(
            released,
            millis = started.elapsed().as_millis() as u64,
            "returned freed memory to the system"
        );
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    static TRIMS: AtomicUsize = AtomicUsize::new(0);

    fn counting_trim() -> bool {
        TRIMS.fetch_add(1, Ordering::SeqCst);
        true
    }

    #[tokio::test]
    async fn one_trim_per_burst_after_the_quiet_period() {
        let (tx, rx) = watch::channel(0u32);
        let cancel = CancellationToken::new();
        let quiet = Duration::from_secs(1);
        let task = tokio::spawn(after_bursts(rx, quiet, cancel.clone(), counting_trim));
        // A burst of changes 50 ms apart for 1.5 s: no trim while it lasts.
        for i in 1..=30 {
            tx.send_replace(i);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(TRIMS.load(Ordering::SeqCst), 0, "trimmed mid-burst");
        // Quiet: exactly one trim, and none more while nothing changes.
        tokio::time::sleep(quiet * 3).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 1);
        // The next burst gets its own.
        tx.send_replace(31);
        tokio::time::sleep(quiet * 3).await;
        assert_eq!(TRIMS.load(Ordering::SeqCst), 2);
        cancel.cancel();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("stops when cancelled")
            .expect("did not panic");
    }
}
