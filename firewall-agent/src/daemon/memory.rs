//! Giving memory back once the daemon is idle. A start or a change at
//! 100,000 rules parses and compiles tens of MiB that are freed at once,
//! but glibc's allocator keeps such pages resident (68 MiB after a
//! 100,000-rule start, 19 MiB after a trim); and the policy file kept
//! split for quick CLI changes (`edit.rs`) holds about 18 MiB at that
//! size. So the daemon trims its heap a second after its start and, after
//! each change, on the next stats tick; and it drops the kept file when
//! no CLI change has used it for a while.

use std::time::{Duration, Instant};

use super::state::Daemon;

/// How long the policy file is kept after the CLI change that
/// wrote it: a burst of changes edits it in place; after that the next
/// change parses the file again.
pub(super) const KEEP_PARSED_FOR: Duration = Duration::from_secs(30);

/// When the first trim after a start runs (then one per stats tick).
pub(super) const SETTLE_AFTER_START: Duration = Duration::from_secs(1);

/// Returns the heap's free pages to the kernel (glibc's `malloc_trim`; a
/// no-op with other allocators).
fn release_free_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only walks and shrinks the allocator's own free
    // lists; it takes its own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Daemon {
    /// Called on every stats tick: drops the kept policy file when no
    /// CLI change used it for [`KEEP_PARSED_FOR`], and trims the heap when
    /// anything was freed since the last tick.
    pub(super) fn release_idle_memory(&mut self) {
        let now = Instant::now();
        if self
            .native_file
            .as_ref()
            .is_some_and(|kept| !still_kept(kept.kept_at, now))
        {
            self.native_file = None;
            self.heap_to_trim = true;
        }
        if std::mem::take(&mut self.heap_to_trim) {
            release_free_heap();
        }
    }
}

/// Whether a file kept at `kept_at` is still kept at `now`.
fn still_kept(kept_at: Instant, now: Instant) -> bool {
    now.saturating_duration_since(kept_at) < KEEP_PARSED_FOR
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parsed_file_is_kept_for_a_burst_of_changes_then_dropped() {
        let kept_at = Instant::now();
        assert!(still_kept(kept_at, kept_at));
        assert!(still_kept(kept_at, kept_at + Duration::from_secs(29)));
        assert!(!still_kept(kept_at, kept_at + KEEP_PARSED_FOR));
        // A clock read before the change (another thread's) keeps it.
        assert!(still_kept(kept_at + Duration::from_secs(1), kept_at));
    }
}
