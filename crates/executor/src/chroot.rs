//! The weaker isolation levels' pieces: `/proc` for `nosandbox-pid`, and the whole of
//! `chroot` (no namespace at all: root in a container under Docker's default seccomp).
//!
//! `chroot` makes no mount. The helper puts what a step needs into the step's copy
//! snapshot itself, through descriptors that never follow a symlink of the tree:
//! device nodes in `/dev` (mknod; CAP_MKNOD is in Docker's default set), the build's
//! `/etc/hosts` and `/etc/resolv.conf` in place of the image's. After the step it takes
//! them out again (the image's files come back with their bytes and times), so the
//! layer holds what it holds with `namespaces`.

use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, CWD};

use crate::helper::{fail, Context};
use crate::{sys, ExecSpec, Network};

/// Binds the existing `/proc` (and the mounts on it: Docker's masks) on `target`,
/// read-only and nodev: for a step in kiln's own pid namespace.
pub(crate) fn bind_proc(target: &Path) -> io::Result<()> {
    sys::mount(Some(c"/proc"), target, None, libc::MS_BIND | libc::MS_REC, None)?;
    sys::set_nodev(target, true)
}

/// Device nodes of `/dev`: name, major, minor.
const NODES: &[(&str, u32, u32)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
    ("tty", 5, 0),
];

/// Runs the step chrooted into its copy snapshot; returns its exit code.
pub(crate) fn run(spec: &ExecSpec) -> i32 {
    refuse_what_needs_mounts(spec);
    let r = &spec.rootfs;
    if !r.lower.is_empty() {
        fail("isolation `chroot` needs the copy snapshotter (`--snapshotter copy`)");
    }
    let mut undo = Undo::prepare(&r.upper, spec).or_fail(|| format!("cannot prepare {}", r.upper.display()));
    let pid = sys::fork().or_fail(|| "cannot fork".into());
    if pid == 0 {
        let _ = sys::kill_with_parent();
        sys::chroot(&r.upper).or_fail(|| format!("cannot chroot into {}", r.upper.display()));
        std::env::set_current_dir("/").or_fail(|| "chdir /".into());
        crate::helper::run_step(spec, Vec::new())
    }
    let code = sys::wait(pid).or_fail(|| "cannot wait for the step".into());
    undo.restore();
    code
}

/// What `chroot` cannot give a step is an error naming it, never a silent weaker step.
fn refuse_what_needs_mounts(spec: &ExecSpec) {
    let why = "which isolation `chroot` cannot give (no mount namespace can be made here; see docs/security.md)";
    if let Some(m) = spec.mounts.first() {
        fail(format!("RUN --mount (target {}) needs a mount, {why}", m.target));
    }
    if spec.secrets_dir.is_some() || !spec.secret_env.is_empty() {
        fail(format!("RUN secrets need a private tmpfs, {why}"));
    }
    if spec.network == Network::None {
        fail(format!("RUN --network=none needs a network namespace, {why}"));
    }
}

/// A file of the image that was replaced for the step: its bytes and times.
struct Saved {
    name: &'static str,
    data: Vec<u8>,
    times: Timestamps,
}

struct Undo {
    dev: Option<(OwnedFd, Option<Timestamps>)>,
    etc: Option<(OwnedFd, Option<Timestamps>)>,
    made_nodes: Vec<&'static str>,
    made_etc: Vec<&'static str>,
    saved: Vec<Saved>,
}

fn times(fd: impl AsFd) -> io::Result<Timestamps> {
    let st = rustix::fs::fstat(fd)?;
    Ok(Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    })
}

fn missing(dir: impl AsFd, name: &str) -> io::Result<bool> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(_) => Ok(false),
        Err(rustix::io::Errno::NOENT) => Ok(true),
        Err(e) => Err(e.into()),
    }
}

/// Opens directory `name` of `parent` (never through a symlink), making it if missing
/// (as runc makes a missing mount point, it stays in the layer). `None`: `name` is
/// something else, left alone. The times are those from before (none if just made).
fn dir(parent: impl AsFd, name: &str) -> io::Result<Option<(OwnedFd, Option<Timestamps>)>> {
    let made = missing(&parent, name)?;
    if made {
        rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))?;
    }
    match rustix::fs::openat(
        &parent,
        name,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
        Mode::empty(),
    ) {
        Ok(fd) => {
            let t = if made { None } else { Some(times(&fd)?) };
            Ok(Some((fd, t)))
        }
        Err(rustix::io::Errno::NOTDIR | rustix::io::Errno::LOOP) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn file(dir: impl AsFd, name: &str, flags: OFlags) -> io::Result<std::fs::File> {
    let fd = rustix::fs::openat(
        dir,
        name,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )?;
    Ok(std::fs::File::from(fd))
}

impl Undo {
    fn prepare(upper: &Path, spec: &ExecSpec) -> io::Result<Undo> {
        let root = rustix::fs::openat(CWD, upper, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        for d in ["proc", "sys"] {
            dir(&root, d)?;
        }
        let mut undo = Undo {
            dev: dir(&root, "dev")?,
            etc: dir(&root, "etc")?,
            made_nodes: Vec::new(),
            made_etc: Vec::new(),
            saved: Vec::new(),
        };
        if let Some((dev, _)) = &undo.dev {
            for &(name, major, minor) in NODES {
                if !missing(dev, name)? {
                    continue;
                }
                let node = rustix::fs::mknodat(
                    dev,
                    name,
                    FileType::CharacterDevice,
                    Mode::from_raw_mode(0o666),
                    rustix::fs::makedev(major, minor),
                );
                match node {
                    Ok(()) => {}
                    // Without CAP_MKNOD: /dev/null as a plain file that is dropped
                    // afterwards (what the step writes there goes nowhere in the end).
                    Err(_) if name == "null" => drop(file(dev, name, OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY)?),
                    Err(_) => continue,
                }
                rustix::fs::chmodat(dev, name, Mode::from_raw_mode(0o666), AtFlags::empty())?;
                undo.made_nodes.push(name);
            }
        }
        if let Some((etc, _)) = &undo.etc {
            for (name, src) in [("hosts", &spec.hosts), ("resolv.conf", &spec.resolv_conf)] {
                let data = fs_err::read(src)?;
                if missing(etc, name)? {
                    file(etc, name, OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY)?.write_all(&data)?;
                    undo.made_etc.push(name);
                    continue;
                }
                // A symlink or anything but a plain file is the image's business.
                let Ok(mut f) = file(etc, name, OFlags::RDWR) else {
                    continue;
                };
                if !f.metadata()?.is_file() {
                    continue;
                }
                let t = times(&f)?;
                let mut old = Vec::new();
                f.read_to_end(&mut old)?;
                f.set_len(0)?;
                f.rewind()?;
                f.write_all(&data)?;
                undo.saved.push(Saved {
                    name,
                    data: old,
                    times: t,
                });
            }
        }
        Ok(undo)
    }

    /// Takes out what [`Undo::prepare`] put in. Best effort: the step may have changed
    /// any of it.
    fn restore(&mut self) {
        if let Some((dev, t)) = &self.dev {
            for name in self.made_nodes.drain(..) {
                let _ = rustix::fs::unlinkat(dev, name, AtFlags::empty());
            }
            if let Some(t) = t {
                let _ = rustix::fs::futimens(dev, t);
            }
        }
        if let Some((etc, t)) = &self.etc {
            // As with `namespaces`, where the mount point is made: an empty file stays.
            for name in self.made_etc.drain(..) {
                let _ = file(etc, name, OFlags::WRONLY | OFlags::TRUNC);
            }
            for s in self.saved.drain(..) {
                if let Ok(mut f) = file(etc, s.name, OFlags::WRONLY | OFlags::TRUNC) {
                    let _ = f.write_all(&s.data);
                    let _ = rustix::fs::futimens(&f, &s.times);
                }
            }
            if let Some(t) = t {
                let _ = rustix::fs::futimens(etc, t);
            }
        }
    }
}
