//! Thin, checked wrappers over the system calls the helper needs.
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
    let target = cstr(target)?;
    let ptr = |c: Option<&CStr>| c.map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is a valid NUL-terminated string or null.
    check(unsafe {
        libc::mount(
            ptr(source),
            target.as_ptr(),
            ptr(fstype),
            flags,
            ptr(data).cast::<libc::c_void>(),
        )
    })
    .map(drop)
}

pub fn umount_detach(target: &Path) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid C string.
    check(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) }).map(drop)
}

pub fn pivot_root_dot() -> io::Result<()> {
    let dot = c".";
    // SAFETY: valid C strings; pivot_root has no libc wrapper.
    let r = unsafe { libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), dot.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn prctl(option: libc::c_int, arg: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(option, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) }).map(drop)
}

pub fn sethostname(name: &str) -> io::Result<()> {
    // SAFETY: pointer and length describe `name`.
    check(unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) }).map(drop)
}

pub fn setgroups(groups: &[libc::gid_t]) -> io::Result<()> {
    // SAFETY: pointer and length describe `groups`.
    check(unsafe { libc::setgroups(groups.len(), groups.as_ptr()) }).map(drop)
}

pub fn setresgid(gid: libc::gid_t) -> io::Result<()> {
    // SAFETY: raw syscall so it applies to this (only) thread without libc's broadcast.
    let r = unsafe { libc::syscall(libc::SYS_setresgid, gid, gid, gid) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

pub fn setresuid(uid: libc::uid_t) -> io::Result<()> {
    // SAFETY: as above.
    let r = unsafe { libc::syscall(libc::SYS_setresuid, uid, uid, uid) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Sets effective and permitted capabilities to `mask`, inheritable to none.
pub fn capset(mask: u64) -> io::Result<()> {
    let hdr = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: header and two data structs as capset(2) v3 expects.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
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
    let mut status = 0;
    loop {
        // SAFETY: status is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if libc::WIFEXITED(status) {
            return Ok(libc::WEXITSTATUS(status));
        }
        if libc::WIFSIGNALED(status) {
            return Ok(128 + libc::WTERMSIG(status));
        }
    }
}

pub fn dup2(from: libc::c_int, to: libc::c_int) -> io::Result<()> {
    // SAFETY: plain fd operation.
    check(unsafe { libc::dup2(from, to) }).map(drop)
}

pub fn set_cloexec(fd: libc::c_int) -> io::Result<()> {
    // SAFETY: plain fd operation.
    check(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).map(drop)
}

/// A detached copy of the mount at `path` (`open_tree(OPEN_TREE_CLONE)`), to be attached
/// with [`move_mount`] after the host root is gone.
pub fn open_tree_clone(path: &Path, recursive: bool) -> io::Result<libc::c_int> {
    let p = cstr(path)?;
    let mut flags = 1 /* OPEN_TREE_CLONE */ | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: valid C string; open_tree has no libc wrapper.
    let r = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, p.as_ptr(), flags) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as libc::c_int)
    }
}

/// Attaches the detached mount `fd` at `target`.
pub fn move_mount(fd: libc::c_int, target: &Path) -> io::Result<()> {
    let t = cstr(target)?;
    // SAFETY: valid C strings; MOVE_MOUNT_F_EMPTY_PATH moves `fd` itself.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            t.as_ptr(),
            0x4 as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
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
    // SAFETY: always succeeds.
    unsafe { libc::getuid() }
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
    use std::os::fd::FromRawFd;
    let mut fds = [0; 2];
    // SAFETY: fds is a valid out array of two ints.
    check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: pipe2 returned two fresh descriptors we now own.
    Ok(unsafe {
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    })
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
    let fds: Vec<libc::c_int> = std::fs::read_dir("/proc/self/fd")?
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
    // SAFETY: zeroed statvfs is a valid out value.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: valid C string and out pointer.
    check(unsafe { libc::statvfs(t.as_ptr(), &mut st) })?;
    let mut flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_NODEV;
    for (st_flag, ms_flag) in [
        (libc::ST_RDONLY, libc::MS_RDONLY),
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    if readonly {
        flags |= libc::MS_RDONLY;
    }
    mount(None, target, None, flags, None)
}
