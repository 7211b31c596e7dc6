//! Isolation levels of the built-in sandbox, and the probe that picks the strongest one
//! the environment allows (`--isolation auto`).
//!
//! | level | needs | a step gets |
//! | --- | --- | --- |
//! | `namespaces` | mount, pid, ipc, uts namespaces and a fresh procfs | today's sandbox |
//! | `nosandbox-pid` | the namespaces, but no fresh procfs (Docker's masked `/proc`) | the outer pid namespace, its `/proc` bound read-only and masked |
//! | `chroot` | root with CAP_SYS_CHROOT, no namespace at all (Docker's default seccomp) | a chroot into its copy snapshot, device nodes in `/dev`, no `/proc`, no mounts |
//!
//! Each probe runs in a re-executed child (`<exe> __kiln-probe LEVEL`), so nothing it
//! does reaches kiln.

#![allow(
    clippy::disallowed_methods,
    reason = "these calls are probes whose error is dropped, or their error names the path or the step it failed"
)]

use std::io;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::sys;

/// The argument that turns a re-executed binary into an isolation probe.
pub const PROBE_ARG: &str = "__kiln-probe";

/// Isolation is how a RUN step is separated from the environment kiln runs in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Isolation {
    /// Mount, pid, ipc and uts namespaces (and a network one), a fresh `/proc`.
    #[default]
    Namespaces,
    /// As `namespaces` but in kiln's own pid namespace, with its `/proc` bound
    /// read-only with Docker's masked paths masked (BuildKit's "no process sandbox").
    NosandboxPid,
    /// No namespace: `chroot` into the step's copy snapshot.
    Chroot,
}

impl Isolation {
    /// Strongest first: the order `auto` tries them in.
    pub const ALL: [Isolation; 3] = [Isolation::Namespaces, Isolation::NosandboxPid, Isolation::Chroot];

    pub fn name(self) -> &'static str {
        match self {
            Isolation::Namespaces => "namespaces",
            Isolation::NosandboxPid => "nosandbox-pid",
            Isolation::Chroot => "chroot",
        }
    }

    fn from_name(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|l| l.name() == s)
    }
}

impl std::fmt::Display for Isolation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// NoIsolation is an environment where no level works: what was tried and the fix.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct NoIsolation(pub String);

/// Choice is the level `auto` picked and, when it is not `namespaces`, the one line
/// that says why.
#[derive(Debug, Clone, Default)]
pub struct Choice {
    pub level: Isolation,
    pub note: Option<String>,
}

/// Probes the levels strongest first and returns the first that works. Cheap: one
/// re-executed child per level tried.
pub fn choose() -> Result<Choice, NoIsolation> {
    let mut tried: Vec<(Isolation, String)> = Vec::new();
    if let Some(e) = crate::userns::unavailable() {
        // Not root and no user namespace: no level can work.
        return Err(nothing_works(&[], Some(e)));
    }
    for level in Isolation::ALL {
        match probe(level) {
            Ok(()) => {
                let note = (!tried.is_empty()).then(|| {
                    let why: Vec<String> = tried.iter().map(|(l, e)| format!("{l}: {e}")).collect();
                    let copy = if level == Isolation::Chroot {
                        ", with the copy snapshotter"
                    } else {
                        ""
                    };
                    format!(
                        "NOTE: RUN steps use isolation `{level}`{copy} ({}); see docs/security.md",
                        why.join("; ")
                    )
                });
                return Ok(Choice { level, note });
            }
            Err(e) => tried.push((level, e)),
        }
    }
    Err(nothing_works(&tried, None))
}

/// Runs the probe of `level` in a re-executed child; the error says what failed, with
/// the errno.
pub fn probe(level: Isolation) -> Result<(), String> {
    let out = Command::new("/proc/self/exe")
        .arg(PROBE_ARG)
        .arg(level.name())
        .env_clear()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| format!("cannot start the probe: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
    Err(if msg.is_empty() {
        format!("the probe failed ({})", out.status)
    } else {
        msg
    })
}

/// The probe child: tries what `level` needs and exits 0 if it works.
pub(crate) fn probe_main(level: Option<&str>) -> i32 {
    let Some(level) = level.and_then(Isolation::from_name) else {
        eprintln!("{PROBE_ARG}: internal probe, started by kiln only");
        return 2;
    };
    match try_level(level) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e}");
            1
        }
    }
}

fn try_level(level: Isolation) -> Result<(), String> {
    let ctx = |what: &'static str| move |e: io::Error| format!("{what}: {e}");
    let private = || {
        sys::mount(None, Path::new("/"), None, libc::MS_REC | libc::MS_PRIVATE, None)
            .map_err(ctx("cannot make mounts private"))
    };
    // The sandbox pivot_roots into the step's root. Docker's default seccomp profile
    // refuses pivot_root even to a process with CAP_SYS_ADMIN (`--cap-add SYS_ADMIN`),
    // where the namespaces themselves can be made: try it here, on a tmpfs over this
    // probe's own /dev (in its private mount namespace), so `auto` goes on to `chroot`.
    let pivot = || {
        sys::mount(
            Some(c"tmpfs"),
            Path::new("/dev"),
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            None,
        )
        .map_err(ctx("cannot mount a tmpfs"))?;
        std::env::set_current_dir("/dev").map_err(ctx("cannot enter the tmpfs"))?;
        sys::pivot_root_dot().map_err(ctx("cannot pivot_root"))
    };
    match level {
        Isolation::Namespaces => {
            sys::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS)
                .map_err(ctx("cannot create namespaces (unshare)"))?;
            // Only a child is in the new pid namespace.
            let pid = sys::fork().map_err(ctx("cannot fork"))?;
            if pid == 0 {
                let r = private()
                    .and_then(|()| {
                        sys::mount(
                            Some(c"proc"),
                            Path::new("/proc"),
                            Some(c"proc"),
                            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                            None,
                        )
                        .map_err(ctx("cannot mount a fresh /proc"))
                    })
                    .and_then(|()| pivot());
                if let Err(e) = r {
                    eprintln!("{e}");
                    sys::exit(1)
                }
                sys::exit(0)
            }
            match sys::wait(pid).map_err(ctx("cannot wait"))? {
                0 => Ok(()),
                _ => Err(String::new()),
            }
        }
        Isolation::NosandboxPid => {
            sys::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS)
                .map_err(ctx("cannot create namespaces (unshare)"))?;
            private()?;
            crate::chroot::bind_proc(Path::new("/proc")).map_err(ctx("cannot bind /proc read-only"))?;
            pivot()
        }
        Isolation::Chroot => {
            if sys::getuid() != 0 {
                return Err("needs root".into());
            }
            sys::chroot(Path::new("/")).map_err(ctx("cannot chroot (CAP_SYS_CHROOT)"))
        }
    }
}

fn read_sysctl(path: &str) -> Option<i64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// The one setting that would let this environment run steps.
fn fix() -> String {
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone") == Some(0) {
        return "set the sysctl `kernel.unprivileged_userns_clone=1` (user namespaces are off for \
                non-root users), or run kiln as root"
            .into();
    }
    if read_sysctl("/proc/sys/user/max_user_namespaces") == Some(0) {
        return "set the sysctl `user.max_user_namespaces=15000` (it is 0), or run kiln as root".into();
    }
    if read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == Some(1) {
        return "set the sysctl `kernel.apparmor_restrict_unprivileged_userns=0` or give kiln an \
                AppArmor profile that allows `userns`, or run kiln as root"
            .into();
    }
    if Path::new("/.dockerenv").exists() || Path::new("/run/.containerenv").exists() {
        return "run the container with `--security-opt seccomp=unconfined --security-opt \
                apparmor=unconfined` (Docker's default seccomp profile forbids `unshare` without \
                CAP_SYS_ADMIN), or run kiln as root in it (then steps are `chroot`ed)"
            .into();
    }
    "allow user namespaces (`user.max_user_namespaces` > 0; seccomp must allow `unshare`), or \
     run kiln as root"
        .into()
}

fn nothing_works(tried: &[(Isolation, String)], userns: Option<&str>) -> NoIsolation {
    let mut msg = String::from("no isolation for RUN steps can be set up here; tried:");
    if let Some(e) = userns {
        msg.push_str(&format!("\n  user namespace (kiln runs as uid {}): {e}", sys::getuid()));
        for l in Isolation::ALL {
            msg.push_str(&format!("\n  {l}: needs root or a user namespace"));
        }
    }
    for (l, e) in tried {
        msg.push_str(&format!("\n  {l}: {e}"));
    }
    if userns.is_none() && sys::getuid() == 0 && !tried.is_empty() {
        msg.push_str(
            "\nTo fix: give kiln CAP_SYS_CHROOT (`--cap-add SYS_CHROOT`) for `chroot`, or \
             CAP_SYS_ADMIN and `--security-opt seccomp=unconfined` for `namespaces`.",
        );
    } else {
        msg.push_str(&format!("\nTo fix: {}.", fix()));
    }
    NoIsolation(msg)
}

/// The level for a build: `forced` as given (no probe), or the one [`choose`] finds.
/// A non-root kiln without a user namespace gets the error for every level.
pub fn resolve(forced: Option<Isolation>) -> Result<Choice, NoIsolation> {
    match forced {
        None => choose(),
        Some(_) if crate::userns::unavailable().is_some() => Err(nothing_works(&[], crate::userns::unavailable())),
        Some(level) => Ok(Choice { level, note: None }),
    }
}
