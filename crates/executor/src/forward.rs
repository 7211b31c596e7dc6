//! The rootless kiln the user started only waits for the kiln it re-executed in a user
//! namespace, which dies with it (PDEATHSIG). So that Ctrl-C (SIGINT) and SIGTERM cancel
//! the build cleanly instead of killing it, the outer kiln catches them and passes them
//! on to the inner one through a pidfd (never a pid number the inner kiln may have left
//! free). The inner kiln knows a signal from its parent by its sender
//! ([`forwarder_pid`]) and treats it as a cancel request only: a terminal's Ctrl-C
//! reaches both kilns, and the forwarded copy must not count as the second Ctrl-C that
//! kills.
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::process::Child;
use std::sync::atomic::{AtomicI32, Ordering};

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

/// The pidfd of the inner kiln; -1 until it runs.
static TARGET: AtomicI32 = AtomicI32::new(-1);
/// A signal that came before the inner kiln ran (0: none).
static PENDING: AtomicI32 = AtomicI32::new(0);

const FORWARDED: [i32; 2] = [libc::SIGINT, libc::SIGTERM];

fn send(fd: i32, sig: i32) {
    let Some(sig) = Signal::from_named_raw(sig) else { return };
    // SAFETY: `fd` is the pidfd stored by `target`, open until this process exits.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    // ESRCH: the inner kiln has ended; there is nothing to cancel.
    let _ = pidfd_send_signal(fd, sig);
}

extern "C" fn on_signal(sig: libc::c_int) {
    match TARGET.load(Ordering::SeqCst) {
        -1 => PENDING.store(sig, Ordering::SeqCst),
        fd => send(fd, sig),
    }
}

/// Catches SIGINT and SIGTERM in this (outer) kiln; call before spawning the inner one.
/// Until [`target`] names it, a signal is kept and passed on then.
pub(crate) fn install() {
    for sig in FORWARDED {
        // SAFETY: the handler only does atomic loads and stores and pidfd_send_signal,
        // all async-signal-safe. Across exec the disposition goes back to the default.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

/// Names the inner kiln as the one to pass signals on to. `child` must not have been
/// waited for. Without a pidfd (Linux before 5.3) the signals end the outer kiln as
/// before.
pub(crate) fn target(child: &Child) {
    let pidfd: Option<OwnedFd> = i32::try_from(child.id())
        .ok()
        .and_then(Pid::from_raw)
        .and_then(|pid| pidfd_open(pid, PidfdFlags::empty()).ok());
    let Some(pidfd) = pidfd else {
        for sig in FORWARDED {
            // SAFETY: restoring the default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
        if PENDING.load(Ordering::SeqCst) != 0 {
            // SAFETY: raising a signal at ourselves.
            unsafe { libc::raise(PENDING.load(Ordering::SeqCst)) };
        }
        return;
    };
    // Kept open until this process exits.
    let fd = pidfd.as_raw_fd();
    std::mem::forget(pidfd);
    TARGET.store(fd, Ordering::SeqCst);
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if pending != 0 {
        send(fd, pending);
    }
}

/// The pid of the outer kiln of a rootless build, when this process is the inner one
/// (its parent passes signals on); 0 otherwise. A signal handler compares a sender's pid
/// with it (call this before installing the handler: it is not async-signal-safe).
pub fn forwarder_pid() -> libc::pid_t {
    if std::env::var_os(crate::userns::USERNS_ENV).is_none() {
        return 0;
    }
    Pid::as_raw(rustix::process::getppid())
}

/// Gives the signals back to this process (no child to forward them to), raising one
/// that came in meanwhile.
pub(crate) fn uninstall() {
    for sig in FORWARDED {
        // SAFETY: restoring the default disposition.
        unsafe { libc::signal(sig, libc::SIG_DFL) };
    }
    let pending = PENDING.swap(0, Ordering::SeqCst);
    if pending != 0 {
        // SAFETY: raising a signal at this process.
        unsafe { libc::raise(pending) };
    }
}
