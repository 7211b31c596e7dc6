//! Build-wide cancellation and the handle a running op logs and registers its stop through.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use crate::progress::{Event, Progress};

/// A way to stop a running op: called (once) when the build is cancelled.
pub type CancelFn = Box<dyn FnOnce() + Send>;

/// Cancel is the build-wide cancellation: the first failure (or the caller) trips it,
/// and every running op's registered stop function is called.
#[derive(Default)]
pub struct Cancel {
    tripped: AtomicBool,
    running: Mutex<HashMap<u32, Vec<CancelFn>>>,
}

impl Cancel {
    /// Whether the build is being cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.tripped.load(Ordering::SeqCst)
    }

    /// Cancels the build: stops every running op that registered a way to stop.
    pub fn cancel(&self) {
        self.tripped.store(true, Ordering::SeqCst);
        let all: Vec<CancelFn> = {
            let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
            running.drain().flat_map(|(_, v)| v).collect()
        };
        for f in all {
            f();
        }
    }

    pub(crate) fn register(&self, slot: u32, f: CancelFn) {
        if self.is_cancelled() {
            f();
            return;
        }
        self.running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(slot)
            .or_default()
            .push(f);
        // cancel() may have drained between the check and the push.
        if self.is_cancelled() {
            let fs = self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&slot);
            for f in fs.into_iter().flatten() {
                f();
            }
        }
    }

    pub(crate) fn finished(&self, slot: u32) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&slot);
    }
}

/// VertexLog lets a running op write log lines to its vertex and say how to stop it.
pub struct VertexLog<'a> {
    pub(crate) vertex: u32,
    pub(crate) slot: u32,
    pub(crate) start: Instant,
    pub(crate) progress: &'a dyn Progress,
    pub(crate) cancel: &'a Cancel,
}

impl VertexLog<'_> {
    /// Emits one line of output for this vertex.
    pub fn line(&self, line: impl Into<String>) {
        self.progress.event(Event::Log {
            vertex: self.vertex,
            elapsed: self.start.elapsed(),
            line: line.into(),
        });
    }

    /// Registers how to stop this op if the build is cancelled while it runs (called
    /// at once if it already is).
    pub fn on_cancel(&self, f: CancelFn) {
        self.cancel.register(self.slot, f);
    }

    /// Whether the build is being cancelled (long ops may check and give up).
    pub fn cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }
}
