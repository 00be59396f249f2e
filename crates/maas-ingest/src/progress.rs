use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Progress of a running ingestion, shared with whoever reports it (the job API).
#[derive(Debug, Default)]
pub struct Progress {
    done: AtomicU64,
    total: AtomicU64,
    phase: Mutex<String>,
}

impl Progress {
    /// Sets what is happening now and resets the byte counters.
    pub fn start_phase(&self, phase: impl Into<String>, total_bytes: u64) {
        if let Ok(mut p) = self.phase.lock() {
            *p = phase.into();
        }
        self.done.store(0, Ordering::Relaxed);
        self.total.store(total_bytes, Ordering::Relaxed);
    }
    /// Adds to the expected total (for sources that learn sizes as they go).
    pub fn add_total(&self, bytes: u64) {
        self.total.fetch_add(bytes, Ordering::Relaxed);
    }
    /// Counts bytes done.
    pub fn advance(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
    }
    /// (phase, bytes done, bytes expected; 0 when unknown).
    pub fn snapshot(&self) -> (String, u64, u64) {
        let phase = self.phase.lock().map(|p| p.clone()).unwrap_or_default();
        (
            phase,
            self.done.load(Ordering::Relaxed),
            self.total.load(Ordering::Relaxed),
        )
    }
}
