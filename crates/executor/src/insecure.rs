//! insecure holds what `RUN --security=insecure` gives a step beyond the sandbox, as
//! BuildKit's `WithInsecureSpec`: every capability, and (as real root) the host's
//! device nodes a privileged build uses (loop devices, fuse, tun, kvm, kmsg).

#![allow(
    clippy::disallowed_methods,
    reason = "these calls are probes whose error is dropped, or their error names the path or the step it failed"
)]

use std::path::Path;

use crate::sys;

/// Capability names by number (linux/capability.h), for OCI configs.
pub(crate) const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The highest capability number the running kernel knows.
pub(crate) fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40)
}

/// Every capability this process has (its permitted set): what an insecure step gets,
/// as BuildKit (kiln itself may run with fewer than the kernel knows, in a container).
pub(crate) fn current_caps() -> Vec<u32> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mask = status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    (0..=last_cap().min(63)).filter(|c| mask & (1 << c) != 0).collect()
}

/// The names of [`current_caps`].
pub(crate) fn current_cap_names() -> Vec<&'static str> {
    current_caps()
        .into_iter()
        .filter_map(|c| CAP_NAMES.get(c as usize).copied())
        .collect()
}

/// Whether an insecure step gets host devices: only as real root, as BuildKit (in a
/// user namespace they would be unusable anyway).
pub(crate) fn gets_host_devices() -> bool {
    sys::getuid() == 0 && kiln_snapshotter::ids::initial_userns()
}

/// The host device nodes (paths under `/dev`) an insecure step gets, those that exist:
/// BuildKit's list, with every existing loop device.
pub(crate) fn host_devices() -> Vec<String> {
    let mut out: Vec<String> = ["kmsg", "cuse", "fuse", "kvm", "net/tun", "loop-control"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut loops: Vec<u32> = std::fs::read_dir("/dev")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.strip_prefix("loop")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    loops.sort_unstable();
    out.extend(loops.into_iter().map(|n| format!("loop{n}")));
    out.retain(|d| Path::new("/dev").join(d).exists());
    out
}

/// Opens detached copies of the host devices of [`host_devices`], while the host's
/// `/dev` is still in reach; one that cannot be opened is left out.
pub(crate) fn open_host_devices() -> Vec<(String, libc::c_int)> {
    host_devices()
        .into_iter()
        .filter_map(|d| {
            let fd = sys::open_tree_clone(&Path::new("/dev").join(&d), false).ok()?;
            Some((d, fd))
        })
        .collect()
}

/// Attaches the devices of [`open_host_devices`] under the step's `/dev`.
pub(crate) fn bind_host_devices(devs: &[(String, libc::c_int)]) -> std::io::Result<()> {
    for (name, fd) in devs {
        let target = Path::new("/dev").join(name);
        if let Some(parent) = target.parent() {
            fs_err::create_dir_all(parent)?;
        }
        if target.symlink_metadata().is_err() {
            fs_err::File::create(&target)?;
        }
        sys::move_mount(*fd, &target)?;
    }
    Ok(())
}

/// Keeps the permitted capabilities across the switch to a non-root user, so that
/// [`raise_ambient`] can hand them on (BuildKit gives an insecure step's user every
/// capability, ambient included).
pub(crate) fn keep_caps() -> std::io::Result<()> {
    Ok(rustix::thread::set_keep_capabilities(true)?)
}

/// Makes `mask` the effective, permitted, inheritable and ambient capabilities, so that
/// a non-root user keeps them across exec.
pub(crate) fn raise_ambient(mask: u64) -> std::io::Result<()> {
    use rustix::thread::{CapabilitySet, CapabilitySets};
    let set = CapabilitySet::from_bits_retain(mask);
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: set,
            permitted: set,
            inheritable: set,
        },
    )?;
    for cap in (0..64).filter(|c| mask & (1u64 << c) != 0) {
        rustix::thread::configure_capability_in_ambient_set(CapabilitySet::from_bits_retain(1u64 << cap), true)?;
    }
    Ok(())
}
