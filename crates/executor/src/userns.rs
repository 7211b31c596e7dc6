//! Rootless kiln: a non-root user's kiln re-executes itself inside a user namespace in
//! which it is root, as `buildah unshare` and `podman` do. With a subordinate id range
//! (`/etc/subuid`, `/etc/subgid`) and `newuidmap`/`newgidmap` the whole range is mapped,
//! so `chown`, `useradd` and package installs work and files keep their ids in layers;
//! without one only the user's own id is mapped (to root) and kiln says what will fail.

#![allow(
    clippy::disallowed_methods,
    reason = "these calls are probes whose error is dropped, or their error names the path or the step it failed"
)]
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Set in the re-executed kiln: `full` or `single`.
pub const USERNS_ENV: &str = "KILN_USERNS";

/// The id mapper's word for a child that never asked to be mapped (its unshare failed).
const NOT_STARTED: &str = "the re-executed kiln did not start";

/// A subordinate id range: `start` and `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub start: u32,
    pub count: u32,
}

/// The first range for `name` (or numeric `id`) in a subuid/subgid file.
pub fn subid_range(file: &Path, name: &str, id: u32) -> Option<IdRange> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let owner = f.next()?;
        if owner != name && owner.parse::<u32>().ok() != Some(id) {
            return None;
        }
        let start = f.next()?.trim().parse().ok()?;
        let count = f.next()?.trim().parse().ok()?;
        (count > 0).then_some(IdRange { start, count })
    })
}

/// Why this non-root kiln could not make its user namespace (set by
/// [`reexec_rootless`] when it carries on without one).
static UNAVAILABLE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Why no user namespace could be made, if kiln runs as a non-root user without one.
pub fn unavailable() -> Option<&'static str> {
    UNAVAILABLE.get().map(String::as_str)
}

/// Whether this process runs in kiln's single-id user namespace.
pub fn single_id() -> bool {
    std::env::var(USERNS_ENV).is_ok_and(|v| v == "single")
}

fn user_name(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[0].to_string())
            })
        })
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string())
}

fn default_root() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("kiln");
    }
    let home = std::env::var_os("HOME").unwrap_or_else(|| "/".into());
    PathBuf::from(home).join(".local/share/kiln")
}

fn which(tool: &str) -> Option<PathBuf> {
    ["/usr/bin", "/usr/sbin", "/bin", "/sbin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// For a non-root user, re-runs this command inside a user namespace and exits with
/// its status; returns when already root (in any namespace), and when no user
/// namespace can be made (then [`unavailable`] says why, with the errno, and a RUN step
/// fails with that; everything else carries on as the user). Call it first thing in
/// `main`, while the process is single-threaded. `warn` says whether a missing subuid
/// range is worth a warning for this command.
pub fn reexec_rootless(warn: bool) {
    reexec(warn, None)
}

/// [`reexec_rootless`]; `mapping_failed` is why newuidmap/newgidmap could not map the
/// range on a first try: then only the user's own id is mapped, as Podman falls back.
fn reexec(warn: bool, mapping_failed: Option<String>) {
    // SAFETY: no preconditions.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if uid == 0 || std::env::var_os(USERNS_ENV).is_some() {
        return;
    }
    let name = user_name(uid);
    let subuid = subid_range(Path::new("/etc/subuid"), &name, uid);
    let subgid = subid_range(Path::new("/etc/subgid"), &name, uid);
    let tools = (which("newuidmap"), which("newgidmap"));
    let full = match (subuid, subgid, &tools, &mapping_failed) {
        (Some(u), Some(g), (Some(nu), Some(ng)), None) => Some((u, g, nu.clone(), ng.clone())),
        _ => None,
    };
    // Said once the user namespace exists (without one, the RUN error says more).
    let warning = mapping_failed.as_ref().map(|why| {
        format!(
            "WARN: rootless with a single id: {why}. RUN steps that switch to another user or \
             chown to one will fail. newuidmap/newgidmap need their file capabilities (or \
             set-user-id bit) to count: no `no_new_privs` (docker --security-opt \
             no-new-privileges, Kubernetes allowPrivilegeEscalation: false) and CAP_SETUID and \
             CAP_SETGID in the bounding set (not --cap-drop ALL)."
        )
    });
    let warning = warning.or_else(|| {
        (full.is_none() && warn).then(|| {
            let why = match (
                subuid.is_some() && subgid.is_some(),
                tools.0.is_some() && tools.1.is_some(),
            ) {
                (false, _) => format!("user `{name}` has no subordinate id range in /etc/subuid and /etc/subgid"),
                (true, _) => "newuidmap/newgidmap are not installed (Debian: apt-get install uidmap)".to_string(),
            };
            format!(
                "WARN: rootless with a single id: {why}. RUN steps that switch to another user or \
             chown to one (useradd, adduser, most package installs) will fail. To fix it, add \
             `{name}:100000:65536` to /etc/subuid and /etc/subgid and install newuidmap/newgidmap."
            )
        })
    });

    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(std::env::args_os().skip(1));
    cmd.env(USERNS_ENV, if full.is_some() { "full" } else { "single" });
    if std::env::var_os("KILN_ROOT").is_none_or(|r| r.is_empty()) {
        cmd.env("KILN_ROOT", default_root());
    }
    let fail = |msg: String| -> ! {
        eprintln!("ERROR: rootless: {msg}");
        std::process::exit(1)
    };
    // Both pipes are set up before fork; the child only uses raw syscalls.
    let mut ready = [0; 2];
    let mut go = [0; 2];
    // SAFETY: valid out arrays.
    if unsafe { libc::pipe2(ready.as_mut_ptr(), libc::O_CLOEXEC) } < 0
        // SAFETY: as above.
        || unsafe { libc::pipe2(go.as_mut_ptr(), libc::O_CLOEXEC) } < 0
    {
        fail(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let single_maps: [(CString, CString); 3] = [
        (c"/proc/self/setgroups".into(), c"deny".into()),
        (
            c"/proc/self/uid_map".into(),
            CString::new(format!("0 {uid} 1")).expect("no NUL"),
        ),
        (
            c"/proc/self/gid_map".into(),
            CString::new(format!("0 {gid} 1")).expect("no NUL"),
        ),
    ];
    let is_full = full.is_some();
    let (ready_w, go_r) = (ready[1], go[0]);
    // SAFETY: only async-signal-safe system calls run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The re-executed kiln gets only stdin, stdout and stderr.
            crate::sys::cloexec_from_raw(3);
            if libc::unshare(libc::CLONE_NEWUSER) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if is_full {
                let b = libc::getpid().to_ne_bytes();
                libc::write(ready_w, b.as_ptr().cast(), b.len());
                let mut r = [0u8];
                if libc::read(go_r, r.as_mut_ptr().cast(), 1) != 1 || r[0] != 1 {
                    return Err(std::io::Error::other("the id mapping failed"));
                }
            } else {
                for (path, data) in &single_maps {
                    let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    let bytes = data.as_bytes();
                    let n = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
                    libc::close(fd);
                    if n < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
            Ok(())
        });
    }
    // Command::spawn returns only once the child has exec'd, and the child waits for its
    // mapping first: the mapping is done from a thread, with the pid the child sends.
    let (ready_r, go_w) = (ready[0], go[1]);
    let mapper = full.map(|(u, g, newuidmap, newgidmap)| {
        std::thread::spawn(move || -> Result<(), String> {
            let mut b = [0u8; 4];
            // SAFETY: reading into a valid buffer.
            let n = unsafe { libc::read(ready_r, b.as_mut_ptr().cast(), b.len()) };
            let result = if n != 4 {
                Err(NOT_STARTED.to_string())
            } else {
                let pid = i32::from_ne_bytes(b).to_string();
                [(&newuidmap, uid, u), (&newgidmap, gid, g)]
                    .into_iter()
                    .try_for_each(|(tool, id, r)| {
                        let o = Command::new(tool)
                            .args([
                                &pid,
                                "0",
                                &id.to_string(),
                                "1",
                                "1",
                                &r.start.to_string(),
                                &r.count.to_string(),
                            ])
                            .output()
                            .map_err(|e| format!("cannot run {}: {e}", tool.display()))?;
                        if o.status.success() {
                            Ok(())
                        } else {
                            Err(format!(
                                "{} failed: {}",
                                tool.display(),
                                String::from_utf8_lossy(&o.stderr).trim()
                            ))
                        }
                    })
            };
            let b = [u8::from(result.is_ok())];
            // SAFETY: writing one byte from a valid buffer.
            unsafe { libc::write(go_w, b.as_ptr().cast(), 1) };
            result
        })
    });
    // Ctrl-C and SIGTERM go on to the inner kiln, which cancels cleanly.
    crate::forward::install();
    let spawned = cmd.spawn();
    if let Ok(c) = &spawned {
        crate::forward::target(c);
    }
    // SAFETY: closing the child's ends in the parent.
    unsafe {
        libc::close(ready[1]);
        libc::close(go[0]);
    }
    let mapped = mapper.map(|t| t.join().unwrap_or_else(|_| Err("the id mapper panicked".into())));
    // A child that never started (unshare refused) is the cause; the mapper's "did not
    // start" only follows from it.
    // The range could not be mapped (newuidmap refused): once more with the user's own
    // id only, which needs no helper.
    let retry = |e: String| {
        crate::forward::uninstall();
        // SAFETY: closing the parent's ends of this attempt's pipes.
        unsafe {
            libc::close(ready[0]);
            libc::close(go[1]);
        }
        reexec(warn, Some(e));
    };
    let mut child = match (spawned, mapped) {
        (Ok(c), Some(Err(e))) => {
            let mut c = c;
            let _ = c.kill();
            let _ = c.wait();
            retry(e);
            return;
        }
        (Ok(c), _) => {
            if let Some(w) = warning {
                eprintln!("{w}");
            }
            c
        }
        // The id mapping (newuidmap) failed: its error, not the child's echo of it
        // (which std reports as EINVAL).
        (Err(_), Some(Err(m))) if m != NOT_STARTED => {
            retry(m);
            return;
        }
        (Err(e), _) => {
            crate::forward::uninstall();
            let _ = UNAVAILABLE.set(format!("cannot create a user namespace (unshare): {e}"));
            return;
        }
    };
    let status = match child.wait() {
        Ok(s) => s,
        Err(e) => fail(format!("wait: {e}")),
    };
    use std::os::unix::process::ExitStatusExt;
    std::process::exit(status.code().unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
