//! Thin, checked wrappers over the system calls the helper needs.
//!
//! rustix's safe wrappers where rustix 1.x has them (mount, umount, pivot_root,
//! prctl options, sethostname, setgroups/setres[ug]id of this thread, capset, waitpid,
//! dup2 onto stdin, open_tree/move_mount, pipe2, getuid, statvfs). Raw libc calls stay
//! (unsafe, each with its reason) where rustix has none or only an unsafe one:
//! `unshare` (rustix's is `unshare_unsafe`), `fork`, `execve`, `_exit`, `fcntl` and
//! `write` on raw descriptor numbers the helper does not own, the loopback interface
//! ioctls, `close_range(CLOSE_RANGE_CLOEXEC)`, `keyctl` and `mount_setattr`.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub fn cstr(p: impl AsRef<std::ffi::OsStr>) -> io::Result<CString> {
    CString::new(p.as_ref().as_bytes()).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn unshare(flags: libc::c_int) -> io::Result<()> {
    // SAFETY: plain system call; the helper is single-threaded.
    check(unsafe { libc::unshare(flags) }).map(drop)
}

pub fn mount(
    source: Option<&CStr>,
    target: &Path,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> io::Result<()> {
    use rustix::mount::{MountFlags, MountPropagationFlags};
    const PROPAGATION: libc::c_ulong = libc::MS_PRIVATE | libc::MS_SHARED | libc::MS_SLAVE | libc::MS_UNBINDABLE;
    let bits = u32::try_from(flags).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // Each form passes the kernel the same arguments as mount(2) with NULL for what
    // it does not use.
    let r = if flags & libc::MS_REMOUNT != 0 {
        // mount(NULL, target, NULL, MS_REMOUNT | flags, data); a bind remount ignores data.
        let rest = MountFlags::from_bits_retain(bits & !(libc::MS_REMOUNT as u32));
        rustix::mount::mount_remount(target, rest, data.unwrap_or(c""))
    } else if flags & PROPAGATION != 0 && source.is_none() && fstype.is_none() {
        rustix::mount::mount_change(target, MountPropagationFlags::from_bits_retain(bits))
    } else if let (Some(source), None, libc::MS_BIND) = (source, fstype, flags) {
        rustix::mount::mount_bind(source, target)
    } else if let (Some(source), None) = (source, fstype) {
        if flags != libc::MS_BIND | libc::MS_REC {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a mount without a file system type is a bind",
            ));
        }
        rustix::mount::mount_bind_recursive(source, target)
    } else {
        let (Some(source), Some(fstype)) = (source, fstype) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a mount needs a source and a file system type",
            ));
        };
        rustix::mount::mount(source, target, fstype, MountFlags::from_bits_retain(bits), data)
    };
    r.map_err(io::Error::from)
}

pub fn umount_detach(target: &Path) -> io::Result<()> {
    Ok(rustix::mount::unmount(target, rustix::mount::UnmountFlags::DETACH)?)
}

pub fn pivot_root_dot() -> io::Result<()> {
    Ok(rustix::process::pivot_root(c".", c".")?)
}

/// `prctl(PR_SET_PDEATHSIG, SIGKILL)`: this process dies with its parent.
pub fn kill_with_parent() -> io::Result<()> {
    Ok(rustix::process::set_parent_process_death_signal(Some(
        rustix::process::Signal::KILL,
    ))?)
}

/// `prctl(PR_SET_NO_NEW_PRIVS, 1)`.
pub fn set_no_new_privs() -> io::Result<()> {
    Ok(rustix::thread::set_no_new_privs(true)?)
}

/// `prctl(PR_CAPBSET_DROP, cap)`.
pub fn drop_bounding_cap(cap: u32) -> io::Result<()> {
    let set = 1u64
        .checked_shl(cap)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
    Ok(rustix::thread::remove_capability_from_bounding_set(
        rustix::thread::CapabilitySet::from_bits_retain(set),
    )?)
}

pub fn sethostname(name: &str) -> io::Result<()> {
    Ok(rustix::system::sethostname(name.as_bytes())?)
}

/// The supplementary groups of this (the helper's only) thread.
pub fn setgroups(groups: &[libc::gid_t]) -> io::Result<()> {
    let groups: Vec<rustix::process::Gid> = groups.iter().map(|g| rustix::process::Gid::from_raw(*g)).collect();
    Ok(rustix::thread::set_thread_groups(&groups)?)
}

/// setresgid of this thread only (the raw system call, without libc's broadcast).
pub fn setresgid(gid: libc::gid_t) -> io::Result<()> {
    let gid = rustix::process::Gid::from_raw(gid);
    Ok(rustix::thread::set_thread_res_gid(gid, gid, gid)?)
}

/// setresuid of this thread only, as [`setresgid`].
pub fn setresuid(uid: libc::uid_t) -> io::Result<()> {
    let uid = rustix::process::Uid::from_raw(uid);
    Ok(rustix::thread::set_thread_res_uid(uid, uid, uid)?)
}

/// Sets effective and permitted capabilities to `mask`, inheritable to none.
pub fn capset(mask: u64) -> io::Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let set = CapabilitySet::from_bits_retain(mask);
    Ok(rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: set,
            permitted: set,
            inheritable: CapabilitySet::empty(),
        },
    )?)
}

pub fn fork() -> io::Result<libc::pid_t> {
    // SAFETY: the helper is single-threaded, so the child may run arbitrary code.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(pid)
    }
}

/// Waits for `pid`; returns its exit code, or 128 + signal.
pub fn wait(pid: libc::pid_t) -> io::Result<i32> {
    let pid = rustix::process::Pid::from_raw(pid).ok_or_else(|| io::Error::from_raw_os_error(libc::ECHILD))?;
    loop {
        let status = match rustix::process::waitpid(Some(pid), rustix::process::WaitOptions::empty()) {
            Err(rustix::io::Errno::INTR) | Ok(None) => continue,
            Err(e) => return Err(e.into()),
            Ok(Some((_, status))) => status,
        };
        if let Some(code) = status.exit_status() {
            return Ok(code);
        }
        if let Some(sig) = status.terminating_signal() {
            return Ok(128 + sig);
        }
    }
}

/// Makes `fd` this process's standard input.
pub fn dup2_stdin(fd: impl std::os::fd::AsFd) -> io::Result<()> {
    Ok(rustix::stdio::dup2_stdin(fd)?)
}

/// Marks a raw descriptor number close-on-exec (one this process does not own as an
/// `OwnedFd`: rustix would need an unsafe `BorrowedFd::borrow_raw` for it).
pub fn set_cloexec(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: plain fd operation.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).map(drop)
}

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`), to be attached
/// with [`move_mount`] after the host root is gone.
/// The descriptor stays open (close-on-exec) until it is attached: it is returned as a
/// raw number, as the helper keeps it past the point its host paths disappear.
pub fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<libc::c_int> {
    use rustix::mount::OpenTreeFlags;
    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    let fd = rustix::mount::open_tree(rustix::fs::CWD, path, flags)?;
    Ok(std::os::fd::IntoRawFd::into_raw_fd(fd))
}

/// Attaches the detached mount `fd` (from [`open_tree_clone`]) at `target`.
pub fn move_mount(fd: libc::c_int, target: &Path) -> io::Result<()> {
    // SAFETY: `fd` came from open_tree_clone and is never closed before exec.
    let from = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    Ok(rustix::mount::move_mount(
        from,
        c"",
        rustix::fs::CWD,
        target,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )?)
}

/// Gives every signal its default disposition and unblocks all, for the step's process
/// (as runc starts a container's): an ignored signal survives execve, and kiln's helper,
/// a Rust program, ignores SIGPIPE (and may inherit more from whoever started kiln).
/// Raw rt_sigaction/rt_sigprocmask, so that glibc's reserved signals (32, 33) are reset
/// too; errors (SIGKILL, SIGSTOP) are ignored.
pub fn default_signals() {
    // An all-zero kernel `struct sigaction` is SIG_DFL with no flags and an empty mask,
    // whatever the architecture's field order; 32 bytes cover every layout Linux has.
    let dfl = [0u64; 4];
    let empty = [0u64; 1];
    for sig in 1..=64 {
        // SAFETY: a valid pointer to a zeroed sigaction; no old action is read back.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                sig as libc::c_long,
                dfl.as_ptr(),
                std::ptr::null::<u64>(),
                8 as libc::c_long,
            )
        };
    }
    // SAFETY: a valid pointer to an empty 64-bit signal set.
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK as libc::c_long,
            empty.as_ptr(),
            std::ptr::null::<u64>(),
            8 as libc::c_long,
        )
    };
}

pub fn execve(path: &CStr, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|c| c.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|c| c.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the call.
    unsafe { libc::execve(path.as_ptr(), a.as_ptr(), e.as_ptr()) };
    io::Error::last_os_error()
}

/// Brings the loopback interface up (in a fresh network namespace it starts down).
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: a datagram socket used only for the interface ioctls, closed below.
    let sock = check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: zeroed ifreq is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: req is a valid ifreq for SIOCGIFFLAGS/SIOCSIFFLAGS.
    let r = unsafe {
        let mut r = libc::ioctl(sock, libc::SIOCGIFFLAGS, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            r = libc::ioctl(sock, libc::SIOCSIFFLAGS, &req);
        }
        r
    };
    let err = io::Error::last_os_error();
    // SAFETY: closing the socket opened above.
    unsafe { libc::close(sock) };
    if r < 0 {
        Err(err)
    } else {
        Ok(())
    }
}

pub fn getuid() -> libc::uid_t {
    rustix::process::getuid().as_raw()
}

pub fn write_fd(fd: libc::c_int, data: &[u8]) {
    let mut off = 0;
    while off < data.len() {
        // SAFETY: pointer and length describe the rest of `data`.
        let n = unsafe { libc::write(fd, data[off..].as_ptr().cast(), data.len() - off) };
        if n <= 0 {
            return;
        }
        off += n as usize;
    }
}

pub fn exit(code: i32) -> ! {
    // SAFETY: ends the process without running atexit handlers (fork child).
    unsafe { libc::_exit(code) }
}

/// A pipe whose ends are closed on exec.
pub fn pipe() -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd)> {
    Ok(rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?)
}

/// Passes each line read from `from` to `output` until end of file. A carriage return
/// redraws a line (progress bars): the last state is what is shown.
pub fn stream_lines(from: std::os::fd::OwnedFd, output: &mut dyn FnMut(&str)) -> io::Result<()> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(std::fs::File::from(from));
    let mut buf = Vec::new();
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        output(line.rsplit('\r').next().unwrap_or(line));
    }
}

/// Marks every descriptor from `first` up close-on-exec with one system call
/// (`close_range(CLOSE_RANGE_CLOEXEC)`, Linux 5.11); returns the raw result. Only a
/// system call: safe between fork and exec.
pub fn cloexec_from_raw(first: libc::c_uint) -> libc::c_long {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOEXEC only changes descriptor flags; nothing is closed.
    unsafe { libc::syscall(libc::SYS_close_range, first, libc::c_uint::MAX, CLOSE_RANGE_CLOEXEC) }
}

/// Marks every descriptor from `first` up close-on-exec, so that nothing this process
/// inherited (a host file a shell opened on fd 7) reaches what it executes. Older
/// kernels without `close_range` get the same from a walk of `/proc/self/fd`.
pub fn cloexec_from(first: libc::c_int) -> io::Result<()> {
    let Ok(from) = libc::c_uint::try_from(first) else {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    };
    if cloexec_from_raw(from) == 0 {
        return Ok(());
    }
    let fds: Vec<libc::c_int> = fs_err::read_dir("/proc/self/fd")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // The directory's own descriptor is gone by now: EBADF is fine.
        if let Err(e) = set_cloexec(fd) {
            if e.raw_os_error() != Some(libc::EBADF) {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// Joins a new, empty anonymous session keyring (`KEYCTL_JOIN_SESSION_KEYRING` with no
/// name), so that the keys of the session kiln was started in are not the step's. A
/// kernel without keys (ENOSYS) has no keyring to leak.
pub fn join_new_session_keyring() -> io::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: keyctl with a NULL name pointer asks for a new anonymous keyring.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r >= 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ENOSYS) {
        return Ok(());
    }
    Err(e)
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NODEV: u64 = 0x4;

/// `mount_setattr(target, AT_RECURSIVE, nodev [+ rdonly])`; returns the raw result.
/// Only a system call: safe between fork and exec.
pub fn set_nodev_raw(target: &CStr, readonly: bool) -> libc::c_long {
    let mut set = MOUNT_ATTR_NODEV;
    if readonly {
        set |= MOUNT_ATTR_RDONLY;
    }
    let attr = MountAttr {
        attr_set: set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: valid C string and a mount_attr of the size passed.
    unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            target.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    }
}

/// Makes the mount at `target` and every mount below it `nodev` (and read-only when
/// `readonly`), leaving their other flags as they are (`mount_setattr`, Linux 5.12;
/// older kernels get a remount of the top mount that keeps its flags).
pub fn set_nodev(target: &Path, readonly: bool) -> io::Result<()> {
    let t = cstr(target)?;
    let r = set_nodev_raw(&t, readonly);
    if r == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() != Some(libc::ENOSYS) {
        return Err(e);
    }
    // A remount replaces the flags: keep the ones the mount has (in a user namespace
    // the kernel refuses to clear them).
    use rustix::fs::StatVfsMountFlags as St;
    let st = rustix::fs::statvfs(t.as_c_str())?;
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NODEV;
    for (st_flag, ms_flag) in [
        (St::RDONLY, libc::MS_RDONLY),
        (St::NOSUID, libc::MS_NOSUID),
        (St::NOEXEC, libc::MS_NOEXEC),
        (St::NOATIME, libc::MS_NOATIME),
        (St::NODIRATIME, libc::MS_NODIRATIME),
        (St::RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag.contains(st_flag) {
            flags |= ms_flag;
        }
    }
    if readonly {
        flags |= libc::MS_RDONLY;
    }
    mount(None, target, None, flags, None)
}

/// `chroot(path)` (CAP_SYS_CHROOT).
pub fn chroot(path: &Path) -> io::Result<()> {
    Ok(rustix::process::chroot(path)?)
}
