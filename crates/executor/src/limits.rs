//! Resource limits of RUN steps: `--ulimit NAME=SOFT[:HARD]` (docker's names and
//! grammar, `-1` for unlimited) applied with setrlimit before the step's exec, and the
//! per-step process limit (`--pids-limit`), which is a pids cgroup where kiln can make
//! one and `RLIMIT_NPROC` where it cannot.

use serde::{Deserialize, Serialize};

/// The process limit of a step when none is given: stops a fork bomb long before the
/// host runs out of pids (32768 by default), far above what `make -j` on a big machine
/// starts (podman's default is 2048).
pub const DEFAULT_PIDS_LIMIT: u64 = 4096;

/// Docker's ulimit names and the resources they set.
const NAMES: &[(&str, rustix::process::Resource, &str)] = {
    use rustix::process::Resource as R;
    &[
        ("core", R::Core, "RLIMIT_CORE"),
        ("cpu", R::Cpu, "RLIMIT_CPU"),
        ("data", R::Data, "RLIMIT_DATA"),
        ("fsize", R::Fsize, "RLIMIT_FSIZE"),
        ("locks", R::Locks, "RLIMIT_LOCKS"),
        ("memlock", R::Memlock, "RLIMIT_MEMLOCK"),
        ("msgqueue", R::Msgqueue, "RLIMIT_MSGQUEUE"),
        ("nice", R::Nice, "RLIMIT_NICE"),
        ("nofile", R::Nofile, "RLIMIT_NOFILE"),
        ("nproc", R::Nproc, "RLIMIT_NPROC"),
        ("rss", R::Rss, "RLIMIT_RSS"),
        ("rtprio", R::Rtprio, "RLIMIT_RTPRIO"),
        ("rttime", R::Rttime, "RLIMIT_RTTIME"),
        ("sigpending", R::Sigpending, "RLIMIT_SIGPENDING"),
        ("stack", R::Stack, "RLIMIT_STACK"),
    ]
};

/// Ulimit is one `--ulimit`: a resource and its soft and hard limits (`None` is
/// unlimited).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ulimit {
    /// Docker's name of the resource (`nofile`, `nproc`, …).
    pub name: String,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

/// UlimitError is a `--ulimit` value that is not `NAME=SOFT[:HARD]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UlimitError {
    #[error("expected NAME=SOFT[:HARD], e.g. nofile=1024:4096")]
    Syntax,
    #[error("unknown resource `{name}` (expected one of: {})", names().join(", "))]
    UnknownName { name: String },
    #[error("`{value}` is not a number (a limit is a whole number, or -1 for unlimited)")]
    NotANumber { value: String },
    #[error("soft limit {soft} is above the hard limit {hard}")]
    SoftAboveHard { soft: String, hard: String },
}

fn names() -> Vec<&'static str> {
    NAMES.iter().map(|(n, _, _)| *n).collect()
}

fn parse_limit(v: &str) -> Result<Option<u64>, UlimitError> {
    if v == "-1" {
        return Ok(None);
    }
    v.parse::<u64>()
        .map(Some)
        .map_err(|_| UlimitError::NotANumber { value: v.to_string() })
}

fn show(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".to_string(), |n| n.to_string())
}

impl Ulimit {
    /// Parses `NAME=SOFT[:HARD]` as `docker build --ulimit` does; one value sets both.
    pub fn parse(s: &str) -> Result<Ulimit, UlimitError> {
        let (name, value) = s.split_once('=').ok_or(UlimitError::Syntax)?;
        if !NAMES.iter().any(|(n, _, _)| *n == name) {
            return Err(UlimitError::UnknownName { name: name.to_string() });
        }
        let (soft, hard) = match value.split_once(':') {
            Some((s, h)) => (parse_limit(s)?, parse_limit(h)?),
            None => {
                let v = parse_limit(value)?;
                (v, v)
            }
        };
        if let (Some(s), Some(h)) = (soft, hard) {
            if s > h {
                return Err(UlimitError::SoftAboveHard {
                    soft: show(soft),
                    hard: show(hard),
                });
            }
        }
        if soft.is_none() && hard.is_some() {
            return Err(UlimitError::SoftAboveHard {
                soft: show(soft),
                hard: show(hard),
            });
        }
        Ok(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }

    fn entry(&self) -> Option<&'static (&'static str, rustix::process::Resource, &'static str)> {
        NAMES.iter().find(|(n, _, _)| *n == self.name)
    }

    /// The OCI runtime config's name (`RLIMIT_NOFILE`).
    pub(crate) fn oci_name(&self) -> Option<&'static str> {
        self.entry().map(|e| e.2)
    }

    /// The limits as setrlimit and the OCI config take them (`u64::MAX` is unlimited).
    pub(crate) fn raw(&self) -> (u64, u64) {
        (self.soft.unwrap_or(u64::MAX), self.hard.unwrap_or(u64::MAX))
    }

    /// Sets the limit on the calling process.
    pub(crate) fn apply(&self) -> std::io::Result<()> {
        let Some((_, resource, _)) = self.entry() else {
            return Err(std::io::Error::other(format!("unknown resource `{}`", self.name)));
        };
        rustix::process::setrlimit(
            *resource,
            rustix::process::Rlimit {
                current: self.soft,
                maximum: self.hard,
            },
        )
        .map_err(std::io::Error::from)
    }
}

impl std::fmt::Display for Ulimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}={}:{}", self.name, show(self.soft), show(self.hard))
    }
}

/// Limits are the resource limits of every RUN step of a build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `--ulimit`s, in the order given (a later one for the same resource wins).
    pub ulimits: Vec<Ulimit>,
    /// The most processes (threads included) a step may have at once; `None` is no
    /// limit.
    pub pids: Option<u64>,
    /// `--shm-size`: the size of the step's `/dev/shm` tmpfs in bytes; `None` is
    /// [`DEFAULT_SHM_SIZE`].
    #[serde(default)]
    pub shm_size: Option<u64>,
}

/// Docker's default size of `/dev/shm`: 64 MiB.
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            ulimits: Vec::new(),
            pids: Some(DEFAULT_PIDS_LIMIT),
            shm_size: None,
        }
    }
}

impl Limits {
    /// The `size=` option of the step's `/dev/shm` tmpfs, in KiB as Docker writes it.
    pub fn shm_option(&self) -> String {
        format!("size={}k", self.shm_size.unwrap_or(DEFAULT_SHM_SIZE).div_ceil(1024))
    }

    /// Whether an explicit `--ulimit nproc` was given (it then wins over the process
    /// limit's `RLIMIT_NPROC` fallback).
    pub(crate) fn has_nproc(&self) -> bool {
        self.ulimits.iter().any(|u| u.name == "nproc")
    }
}

/// StepPids is how a step's process limit is enforced: a pids cgroup of its own where
/// kiln can make one, else `RLIMIT_NPROC` (unless `--ulimit nproc` sets that), which
/// the kernel counts per user and user namespace rather than per step, and does not
/// enforce for root of the initial user namespace at all.
pub(crate) struct StepPids {
    _cgroup: Option<crate::cgroup::PidsCgroup>,
    raw: RawPids,
}

/// RawPids is what the forked helper does to enter its limit: plain values, usable
/// between fork and exec.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawPids {
    procs: Option<libc::c_int>,
    nproc: Option<u64>,
}

impl StepPids {
    pub(crate) fn new(limits: &Limits) -> StepPids {
        let Some(n) = limits.pids else {
            return StepPids {
                _cgroup: None,
                raw: RawPids {
                    procs: None,
                    nproc: None,
                },
            };
        };
        let cgroup = crate::cgroup::PidsCgroup::create(n);
        let nproc = match &cgroup {
            Some(_) => None,
            None if limits.has_nproc() => None,
            // Never above the hard limit kiln has (rootless kiln cannot raise it).
            None => {
                let hard = rustix::process::getrlimit(rustix::process::Resource::Nproc).maximum;
                Some(hard.map_or(n, |h| h.min(n)))
            }
        };
        StepPids {
            raw: RawPids {
                procs: cgroup.as_ref().map(|c| c.procs_fd()),
                nproc,
            },
            _cgroup: cgroup,
        }
    }

    pub(crate) fn raw(&self) -> RawPids {
        self.raw
    }
}

impl RawPids {
    /// In the forked helper: joins the step's cgroup, or sets `RLIMIT_NPROC` (soft and
    /// hard: the step must not raise it again).
    pub(crate) fn enter(&self) -> std::io::Result<()> {
        if let Some(fd) = self.procs {
            crate::cgroup::PidsCgroup::join_raw(fd)?;
        }
        if let Some(n) = self.nproc {
            rustix::process::setrlimit(
                rustix::process::Resource::Nproc,
                rustix::process::Rlimit {
                    current: Some(n),
                    maximum: Some(n),
                },
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dockers_grammar() {
        let u = Ulimit::parse("nofile=1024:4096").unwrap();
        assert_eq!((u.soft, u.hard), (Some(1024), Some(4096)));
        let u = Ulimit::parse("nproc=10").unwrap();
        assert_eq!((u.soft, u.hard), (Some(10), Some(10)));
        let u = Ulimit::parse("core=-1").unwrap();
        assert_eq!((u.soft, u.hard), (None, None));
        assert_eq!(u.raw(), (u64::MAX, u64::MAX));
        let u = Ulimit::parse("core=0:-1").unwrap();
        assert_eq!((u.soft, u.hard), (Some(0), None));
        assert_eq!(u.oci_name(), Some("RLIMIT_CORE"));
    }

    #[test]
    fn rejects_bad_values_with_the_reason() {
        assert_eq!(Ulimit::parse("nofile"), Err(UlimitError::Syntax));
        assert_eq!(
            Ulimit::parse("files=1"),
            Err(UlimitError::UnknownName { name: "files".into() })
        );
        assert_eq!(
            Ulimit::parse("nofile=1:x"),
            Err(UlimitError::NotANumber { value: "x".into() })
        );
        assert_eq!(
            Ulimit::parse("nofile=-2"),
            Err(UlimitError::NotANumber { value: "-2".into() })
        );
        assert!(matches!(
            Ulimit::parse("nofile=10:5"),
            Err(UlimitError::SoftAboveHard { .. })
        ));
        assert!(matches!(
            Ulimit::parse("nofile=-1:5"),
            Err(UlimitError::SoftAboveHard { .. })
        ));
        let msg = Ulimit::parse("bogus=1").unwrap_err().to_string();
        assert!(
            msg.starts_with("unknown resource `bogus` (expected one of: core, cpu,"),
            "{msg}"
        );
    }
}
