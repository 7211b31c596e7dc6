//! Progress events and their sinks.

use std::time::Duration;

/// Event is one progress event, numbered per vertex like BuildKit's `#N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Started {
        vertex: u32,
        name: String,
    },
    Log {
        vertex: u32,
        elapsed: Duration,
        line: String,
    },
    /// A status line of the vertex itself (no timestamp), e.g. `exporting layers done`.
    Status {
        vertex: u32,
        line: String,
    },
    Cached {
        vertex: u32,
        name: String,
    },
    Done {
        vertex: u32,
        elapsed: Duration,
    },
    Error {
        vertex: u32,
        message: String,
    },
    /// The op was stopped because another one failed (BuildKit's `CANCELED`).
    Canceled {
        vertex: u32,
    },
}

/// Progress receives events; renderers implement it.
pub trait Progress: Sync {
    fn event(&self, e: Event);
}

/// A no-op progress sink.
pub struct NoProgress;

impl Progress for NoProgress {
    fn event(&self, _: Event) {}
}
