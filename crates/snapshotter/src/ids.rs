//! What this process may do with file ownership: as real root, anything; as root of a
//! rootless user namespace, what its id mapping allows.

use std::sync::OnceLock;

/// How many user ids this process's user namespace maps.
fn mapped_ids() -> u64 {
    static N: OnceLock<u64> = OnceLock::new();
    *N.get_or_init(|| {
        std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| {
                m.lines()
                    .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok())
                    .sum()
            })
            .unwrap_or(0)
    })
}

/// Whether this process is in the initial user namespace (every id mapped to itself).
pub fn initial_userns() -> bool {
    mapped_ids() == u64::from(u32::MAX)
}

/// Whether files can be given the owners a layer records: root with more than a
/// single id mapped (in a single-id namespace every chown to another id fails).
pub fn can_chown() -> bool {
    rustix::process::geteuid().is_root() && mapped_ids() > 1
}

/// Whether device nodes can be created: only root of the initial user namespace.
pub fn can_mknod() -> bool {
    rustix::process::geteuid().is_root() && initial_userns()
}
