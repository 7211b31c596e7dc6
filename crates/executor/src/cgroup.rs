//! A pids cgroup per step, where kiln may make one: the only limit on a step's
//! processes that also holds for root (`RLIMIT_NPROC` is not enforced for uid 0 of the
//! initial user namespace). Used when the pids controller is mounted as a cgroup v1
//! hierarchy, or on cgroup v2 when kiln's own cgroup already delegates `pids` to its
//! children; kiln never changes the host's cgroup configuration. Rootless kiln cannot
//! write the host's cgroups and uses `RLIMIT_NPROC` instead (see [`crate::limits`]).

#![allow(
    clippy::disallowed_methods,
    reason = "these calls are probes whose error is dropped, or their error names the path or the step it failed"
)]
#![allow(unsafe_code)]

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static NEXT: AtomicU64 = AtomicU64::new(0);

/// PidsCgroup is a step's pids cgroup; it is removed when dropped.
#[derive(Debug)]
pub(crate) struct PidsCgroup {
    dir: PathBuf,
    procs: OwnedFd,
}

/// The directory of this process's cgroup in the pids hierarchy, if kiln may make
/// children with a pids limit there.
fn own_pids_cgroup() -> Option<PathBuf> {
    let cgroups = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let v1 = cgroups.lines().find_map(|l| {
        let mut f = l.splitn(3, ':');
        let (_, controllers, path) = (f.next()?, f.next()?, f.next()?);
        controllers.split(',').any(|c| c == "pids").then_some(path)
    });
    let v2 = cgroups.lines().find_map(|l| l.strip_prefix("0::"));
    for line in mountinfo.lines() {
        // `id parent dev root mountpoint opts [optional…] - fstype source superopts`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let left: Vec<&str> = left.split(' ').collect();
        let right: Vec<&str> = right.split(' ').collect();
        let (Some(root), Some(point), Some(fstype)) = (left.get(3), left.get(4), right.first()) else {
            continue;
        };
        let path = match *fstype {
            "cgroup" if right.get(2).is_some_and(|o| o.split(',').any(|c| c == "pids")) => v1,
            "cgroup2" if v1.is_none() => v2,
            _ => None,
        };
        let Some(path) = path else { continue };
        let Ok(rel) = Path::new(path).strip_prefix(root) else {
            continue;
        };
        let dir = Path::new(&point.replace("\\040", " ")).join(rel);
        if *fstype == "cgroup2" {
            // v2: only where kiln's cgroup already hands `pids` to its children.
            let delegated = std::fs::read_to_string(dir.join("cgroup.subtree_control"))
                .is_ok_and(|s| s.split_whitespace().any(|c| c == "pids"));
            if !delegated {
                return None;
            }
        }
        return Some(dir);
    }
    None
}

/// Removes the empty step cgroups of kiln processes that are gone (killed before they
/// could clean up).
fn remove_stale(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("kiln-"))
            .and_then(|n| n.split('-').next())
        else {
            continue;
        };
        if !Path::new("/proc").join(pid).exists() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

impl PidsCgroup {
    /// A new cgroup with `pids.max` = `limit`, or None where kiln cannot make one
    /// (no pids controller, not delegated, not writable: rootless).
    pub(crate) fn create(limit: u64) -> Option<PidsCgroup> {
        let parent = own_pids_cgroup()?;
        remove_stale(&parent);
        let dir = parent.join(format!(
            "kiln-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&dir).ok()?;
        let cg = (|| {
            std::fs::write(dir.join("pids.max"), limit.to_string()).ok()?;
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
                .ok()?;
            Some(OwnedFd::from(procs))
        })();
        match cg {
            Some(procs) => Some(PidsCgroup { dir, procs }),
            None => {
                let _ = std::fs::remove_dir(&dir);
                None
            }
        }
    }

    /// Moves the calling process into the cgroup. Only a write(2): safe between fork
    /// and exec.
    pub(crate) fn join_raw(procs: libc::c_int) -> std::io::Result<()> {
        // SAFETY: writing two bytes from a static buffer to a descriptor we own.
        let n = unsafe { libc::write(procs, b"0\n".as_ptr().cast(), 2) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// The descriptor of the cgroup's `cgroup.procs`, for [`PidsCgroup::join_raw`].
    pub(crate) fn procs_fd(&self) -> libc::c_int {
        self.procs.as_raw_fd()
    }
}

impl Drop for PidsCgroup {
    fn drop(&mut self) {
        // The step's processes are gone once its pid 1 is; the cgroup may take a moment
        // to notice.
        for _ in 0..100 {
            match std::fs::remove_dir(&self.dir) {
                Ok(()) => return,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(_) => return,
            }
        }
    }
}
