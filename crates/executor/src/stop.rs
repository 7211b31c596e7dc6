//! Stopping a step: the function the solver calls to kill a running step's helper.
//!
//! The helper is signalled through a pidfd opened right after the spawn, while the
//! helper cannot have been reaped yet (only the sandbox waits for it). A pid number
//! is free again the moment the helper is reaped, and a stop that comes after that
//! (the solver cancels from another thread at any time) would signal whatever process
//! got the number next; a pidfd names this one process, and signalling it once it is
//! gone fails with ESRCH instead.

#![allow(
    clippy::disallowed_methods,
    reason = "these calls are probes whose error is dropped, or their error names the path or the step it failed"
)]

use std::os::fd::OwnedFd;
use std::process::Child;
use std::sync::Arc;

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags, Signal};

/// StepKiller kills the sandbox helper it was made for, and never another process.
#[derive(Debug, Clone)]
pub(crate) struct StepKiller {
    pidfd: Arc<OwnedFd>,
}

impl StepKiller {
    /// Opens a pidfd for `child`, which must not have been waited for.
    pub(crate) fn new(child: &Child) -> std::io::Result<Self> {
        let pid = i32::try_from(child.id())
            .ok()
            .and_then(Pid::from_raw)
            .ok_or_else(|| std::io::Error::other(format!("invalid pid {}", child.id())))?;
        let pidfd = pidfd_open(pid, PidfdFlags::empty())
            .map_err(|e| std::io::Error::other(format!("pidfd_open (Linux 5.3 or later is needed): {e}")))?;
        Ok(StepKiller { pidfd: Arc::new(pidfd) })
    }

    /// Sends SIGKILL to the helper; nothing when it is already gone.
    pub(crate) fn kill(&self) {
        // ESRCH: the helper has exited (and maybe been reaped); nothing to stop.
        let _ = pidfd_send_signal(&*self.pidfd, Signal::KILL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    const NS_LAST_PID: &str = "/proc/sys/kernel/ns_last_pid";

    /// Starts `sleep` as the pid `want` (by setting the last pid the kernel handed out),
    /// or None when other processes keep taking it first.
    fn spawn_with_pid(want: u32) -> Option<Child> {
        for _ in 0..100 {
            std::fs::write(NS_LAST_PID, (want - 1).to_string()).ok()?;
            let mut c = Command::new("sleep").arg("1000").spawn().unwrap();
            if c.id() == want {
                return Some(c);
            }
            c.kill().unwrap();
            c.wait().unwrap();
        }
        None
    }

    /// The window the sandbox cannot close with a flag: the solver's stop function runs
    /// after the helper was reaped (its pid is free again) and before anything could
    /// record that. A process that got the same pid must not be signalled.
    #[test]
    fn a_stop_after_the_reap_leaves_a_process_that_reuses_the_pid_alone() {
        let settable = kiln_testkit::is_root() && std::fs::OpenOptions::new().write(true).open(NS_LAST_PID).is_ok();
        if !kiln_testkit::require(
            settable,
            "reusing a pid on purpose needs root and a writable ns_last_pid",
        ) {
            return;
        }
        let mut helper = Command::new("sleep").arg("1000").spawn().unwrap();
        let pid = helper.id();
        let killer = StepKiller::new(&helper).unwrap();
        helper.kill().unwrap();
        helper.wait().unwrap();
        let Some(mut other) = spawn_with_pid(pid) else {
            kiln_testkit::require(false, "could not get the freed pid back (a busy machine)");
            return;
        };
        killer.kill();
        // Had the stop signalled `other`, its SIGKILL (queued first) is how it ends.
        let other_pid = Pid::from_raw(other.id() as i32).unwrap();
        rustix::process::kill_process(other_pid, Signal::TERM).unwrap();
        let status = other.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGTERM),
            "the stop function signalled pid {pid}, now another process ({status})"
        );
    }
}
