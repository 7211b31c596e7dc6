//! SIGINT/SIGTERM during a build: the first one asks for a clean cancel, a second one of
//! the same kind kills. In the inner kiln of a rootless build, what the outer kiln passes
//! on only asks for the cancel: a terminal's Ctrl-C reaches both, and its forwarded copy
//! is not a second Ctrl-C.
// rustix has no safe sigaction: installing the handler and reading its siginfo stay unsafe.
#![allow(unsafe_code)]

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);
/// Per signal (SIGINT, SIGTERM): one came from elsewhere than the forwarder.
static SEEN: [AtomicBool; 2] = [AtomicBool::new(false), AtomicBool::new(false)];
/// The outer kiln's pid in a rootless build, else 0.
static FORWARDER: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    REQUESTED.store(true, Ordering::SeqCst);
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let sender = unsafe { info.as_ref().map_or(0, |i| i.si_pid()) };
    let forwarder = FORWARDER.load(Ordering::SeqCst);
    if forwarder != 0 && sender == forwarder {
        return;
    }
    let seen = &SEEN[usize::from(sig == libc::SIGTERM)];
    if seen.swap(true, Ordering::SeqCst) {
        // SAFETY: signal() and raise() are async-signal-safe: the default action ends us.
        unsafe {
            libc::signal(sig, libc::SIG_DFL);
            libc::raise(sig);
        }
    }
}

/// Installs the SIGINT and SIGTERM handlers (a build calls it as its solve starts).
pub fn install() {
    FORWARDER.store(crate::forward::forwarder_pid(), Ordering::SeqCst);
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is valid; the handler only touches atomics and
        // calls async-signal-safe functions.
        unsafe {
            let mut act: libc::sigaction = std::mem::zeroed();
            act.sa_sigaction = on_signal as *const () as libc::sighandler_t;
            act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART;
            libc::sigemptyset(&mut act.sa_mask);
            libc::sigaction(sig, &act, std::ptr::null_mut());
        }
    }
}

/// Whether a SIGINT or SIGTERM asked for a cancel.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
