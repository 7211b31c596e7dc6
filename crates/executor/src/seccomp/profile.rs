//! Docker's default seccomp profile as data: which system calls a RUN step may make, by
//! name, and the rules that depend on the step's capabilities and the host's
//! architecture (moby's `profiles/seccomp`, the same rules; names are resolved to
//! numbers per architecture in [`super::table`]).

/// What a matching rule does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Allow,
    /// Fail the call with this errno.
    Errno(u16),
}

/// How an argument is compared (unsigned, as libseccomp does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Lt,
    Gt,
    /// `arg & mask == value`.
    MaskedEq(u64),
}

/// Arg is one condition on a system call argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arg {
    pub index: u8,
    pub cmp: Cmp,
    pub value: u64,
}

/// The host architectures kiln supports (the profile's `arches` names `amd64`, `arm64`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    Amd64,
    Arm64,
}

/// Rule is one entry of the profile: these names get this action when the arguments
/// match, if the step's capabilities and the host allow the rule at all.
#[derive(Debug)]
pub struct Rule {
    pub names: &'static [&'static str],
    pub action: Action,
    /// All must hold (an empty list always matches).
    pub args: &'static [Arg],
    /// The rule applies only with all of these capabilities (`includes.caps`).
    pub with_caps: &'static [u32],
    /// The rule applies only without any of these (`excludes.caps`).
    pub without_caps: &'static [u32],
    /// The rule applies only on these hosts (`includes.arches`; empty: every host).
    pub hosts: &'static [Host],
}

const fn allow(names: &'static [&'static str]) -> Rule {
    Rule {
        names,
        action: Action::Allow,
        args: &[],
        with_caps: &[],
        without_caps: &[],
        hosts: &[],
    }
}

const fn allow_with(names: &'static [&'static str], cap: &'static [u32]) -> Rule {
    Rule {
        with_caps: cap,
        ..allow(names)
    }
}

const fn allow_arg(name: &'static [&'static str], args: &'static [Arg]) -> Rule {
    Rule { args, ..allow(name) }
}

const fn eq(index: u8, value: u64) -> Arg {
    Arg {
        index,
        cmp: Cmp::Eq,
        value,
    }
}

// Capability numbers (linux/capability.h).
const CAP_DAC_READ_SEARCH: u32 = 2;
const CAP_SYS_MODULE: u32 = 16;
const CAP_SYS_RAWIO: u32 = 17;
const CAP_SYS_CHROOT: u32 = 18;
const CAP_SYS_PTRACE: u32 = 19;
const CAP_SYS_PACCT: u32 = 20;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_SYS_BOOT: u32 = 22;
const CAP_SYS_NICE: u32 = 23;
const CAP_SYS_TIME: u32 = 25;
const CAP_SYS_TTY_CONFIG: u32 = 26;
const CAP_SYSLOG: u32 = 34;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;
const ENOSYS: u16 = libc::ENOSYS as u16;
/// The namespace flags `clone` may not take without CAP_SYS_ADMIN.
const CLONE_NAMESPACES: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// The errno of every call no rule allows.
pub const DEFAULT_ERRNO: u16 = libc::EPERM as u16;

/// Docker's default profile, in its order. Rules for hosts kiln does not run on (ppc64le,
/// s390x, riscv64, mips, loongarch64) are left out.
pub const RULES: &[Rule] = &[
    allow(ALWAYS),
    // Docker adds these only on kernels from 4.8 (seccomp could be bypassed with ptrace
    // before); kiln's sandbox needs 5.2 (open_tree) anyway.
    allow(&["process_vm_readv", "process_vm_writev", "ptrace"]),
    // Every address family but AF_ALG (38) and AF_VSOCK (40).
    allow_arg(
        &["socket"],
        &[Arg {
            index: 0,
            cmp: Cmp::Lt,
            value: AF_ALG,
        }],
    ),
    allow_arg(&["socket"], &[eq(0, AF_ALG + 1)]),
    allow_arg(
        &["socket"],
        &[Arg {
            index: 0,
            cmp: Cmp::Gt,
            value: AF_VSOCK,
        }],
    ),
    // personality: PER_LINUX, PER_LINUX32, UNAME26, UNAME26|PER_LINUX32, and the query.
    allow_arg(&["personality"], &[eq(0, 0)]),
    allow_arg(&["personality"], &[eq(0, 0x0008)]),
    allow_arg(&["personality"], &[eq(0, 0x20000)]),
    allow_arg(&["personality"], &[eq(0, 0x20008)]),
    allow_arg(&["personality"], &[eq(0, 0xffff_ffff)]),
    Rule {
        hosts: &[Host::Arm64],
        ..allow(&[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ])
    },
    Rule {
        hosts: &[Host::Amd64],
        ..allow(&["arch_prctl"])
    },
    Rule {
        hosts: &[Host::Amd64],
        ..allow(&["modify_ldt"])
    },
    allow_with(&["open_by_handle_at"], &[CAP_DAC_READ_SEARCH]),
    allow_with(
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "lsm_get_self_attr",
            "lsm_list_modules",
            "lsm_set_self_attr",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
        &[CAP_SYS_ADMIN],
    ),
    // Without CAP_SYS_ADMIN: clone without namespace flags (s390's argument order is
    // another rule, not needed here); clone3's flags are behind a pointer, so it fails
    // with ENOSYS and the C library falls back to clone.
    Rule {
        without_caps: &[CAP_SYS_ADMIN],
        ..allow_arg(
            &["clone"],
            &[Arg {
                index: 0,
                cmp: Cmp::MaskedEq(CLONE_NAMESPACES),
                value: 0,
            }],
        )
    },
    Rule {
        action: Action::Errno(ENOSYS),
        without_caps: &[CAP_SYS_ADMIN],
        ..allow(&["clone3"])
    },
    allow_with(&["reboot"], &[CAP_SYS_BOOT]),
    allow_with(&["chroot"], &[CAP_SYS_CHROOT]),
    allow_with(&["delete_module", "init_module", "finit_module"], &[CAP_SYS_MODULE]),
    allow_with(&["acct"], &[CAP_SYS_PACCT]),
    allow_with(
        &[
            "kcmp",
            "pidfd_getfd",
            "process_madvise",
            "process_vm_readv",
            "process_vm_writev",
            "ptrace",
        ],
        &[CAP_SYS_PTRACE],
    ),
    allow_with(&["iopl", "ioperm"], &[CAP_SYS_RAWIO]),
    allow_with(
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
        &[CAP_SYS_TIME],
    ),
    allow_with(&["vhangup"], &[CAP_SYS_TTY_CONFIG]),
    allow_with(
        &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
        &[CAP_SYS_NICE],
    ),
    allow_with(&["syslog"], &[CAP_SYSLOG]),
    allow_with(&["bpf"], &[CAP_BPF]),
    allow_with(&["perf_event_open"], &[CAP_PERFMON]),
];

/// The system calls every step may make, whatever its capabilities.
const ALWAYS: &[&str] = &[
    "accept",
    "accept4",
    "access",
    "adjtimex",
    "alarm",
    "bind",
    "brk",
    "cachestat",
    "capget",
    "capset",
    "chdir",
    "chmod",
    "chown",
    "chown32",
    "clock_adjtime",
    "clock_adjtime64",
    "clock_getres",
    "clock_getres_time64",
    "clock_gettime",
    "clock_gettime64",
    "clock_nanosleep",
    "clock_nanosleep_time64",
    "close",
    "close_range",
    "connect",
    "copy_file_range",
    "creat",
    "dup",
    "dup2",
    "dup3",
    "epoll_create",
    "epoll_create1",
    "epoll_ctl",
    "epoll_ctl_old",
    "epoll_pwait",
    "epoll_pwait2",
    "epoll_wait",
    "epoll_wait_old",
    "eventfd",
    "eventfd2",
    "execve",
    "execveat",
    "exit",
    "exit_group",
    "faccessat",
    "faccessat2",
    "fadvise64",
    "fadvise64_64",
    "fallocate",
    "fanotify_mark",
    "fchdir",
    "fchmod",
    "fchmodat",
    "fchmodat2",
    "fchown",
    "fchown32",
    "fchownat",
    "fcntl",
    "fcntl64",
    "fdatasync",
    "fgetxattr",
    "flistxattr",
    "flock",
    "fork",
    "fremovexattr",
    "fsetxattr",
    "fstat",
    "fstat64",
    "fstatat64",
    "fstatfs",
    "fstatfs64",
    "fsync",
    "ftruncate",
    "ftruncate64",
    "futex",
    "futex_requeue",
    "futex_time64",
    "futex_wait",
    "futex_waitv",
    "futex_wake",
    "futimesat",
    "getcpu",
    "getcwd",
    "getdents",
    "getdents64",
    "getegid",
    "getegid32",
    "geteuid",
    "geteuid32",
    "getgid",
    "getgid32",
    "getgroups",
    "getgroups32",
    "getitimer",
    "getpeername",
    "getpgid",
    "getpgrp",
    "getpid",
    "getppid",
    "getpriority",
    "getrandom",
    "getresgid",
    "getresgid32",
    "getresuid",
    "getresuid32",
    "getrlimit",
    "get_robust_list",
    "getrusage",
    "getsid",
    "getsockname",
    "getsockopt",
    "get_thread_area",
    "gettid",
    "gettimeofday",
    "getuid",
    "getuid32",
    "getxattr",
    "getxattrat",
    "inotify_add_watch",
    "inotify_init",
    "inotify_init1",
    "inotify_rm_watch",
    "io_cancel",
    "ioctl",
    "io_destroy",
    "io_getevents",
    "io_pgetevents",
    "io_pgetevents_time64",
    "ioprio_get",
    "ioprio_set",
    "io_setup",
    "io_submit",
    "ipc",
    "kill",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lchown",
    "lchown32",
    "lgetxattr",
    "link",
    "linkat",
    "listen",
    "listmount",
    "listxattr",
    "listxattrat",
    "llistxattr",
    "_llseek",
    "lremovexattr",
    "lseek",
    "lsetxattr",
    "lstat",
    "lstat64",
    "madvise",
    "map_shadow_stack",
    "membarrier",
    "memfd_create",
    "memfd_secret",
    "mincore",
    "mkdir",
    "mkdirat",
    "mknod",
    "mknodat",
    "mlock",
    "mlock2",
    "mlockall",
    "mmap",
    "mmap2",
    "mprotect",
    "mq_getsetattr",
    "mq_notify",
    "mq_open",
    "mq_timedreceive",
    "mq_timedreceive_time64",
    "mq_timedsend",
    "mq_timedsend_time64",
    "mq_unlink",
    "mremap",
    "mseal",
    "msgctl",
    "msgget",
    "msgrcv",
    "msgsnd",
    "msync",
    "munlock",
    "munlockall",
    "munmap",
    "name_to_handle_at",
    "nanosleep",
    "newfstatat",
    "_newselect",
    "open",
    "openat",
    "openat2",
    "pause",
    "pidfd_open",
    "pidfd_send_signal",
    "pipe",
    "pipe2",
    "pkey_alloc",
    "pkey_free",
    "pkey_mprotect",
    "poll",
    "ppoll",
    "ppoll_time64",
    "prctl",
    "pread64",
    "preadv",
    "preadv2",
    "prlimit64",
    "process_mrelease",
    "pselect6",
    "pselect6_time64",
    "pwrite64",
    "pwritev",
    "pwritev2",
    "read",
    "readahead",
    "readlink",
    "readlinkat",
    "readv",
    "recv",
    "recvfrom",
    "recvmmsg",
    "recvmmsg_time64",
    "recvmsg",
    "remap_file_pages",
    "removexattr",
    "removexattrat",
    "rename",
    "renameat",
    "renameat2",
    "restart_syscall",
    "riscv_hwprobe",
    "rmdir",
    "rseq",
    "rt_sigaction",
    "rt_sigpending",
    "rt_sigprocmask",
    "rt_sigqueueinfo",
    "rt_sigreturn",
    "rt_sigsuspend",
    "rt_sigtimedwait",
    "rt_sigtimedwait_time64",
    "rt_tgsigqueueinfo",
    "sched_getaffinity",
    "sched_getattr",
    "sched_getparam",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_getscheduler",
    "sched_rr_get_interval",
    "sched_rr_get_interval_time64",
    "sched_setaffinity",
    "sched_setattr",
    "sched_setparam",
    "sched_setscheduler",
    "sched_yield",
    "seccomp",
    "select",
    "semctl",
    "semget",
    "semop",
    "semtimedop",
    "semtimedop_time64",
    "send",
    "sendfile",
    "sendfile64",
    "sendmmsg",
    "sendmsg",
    "sendto",
    "setfsgid",
    "setfsgid32",
    "setfsuid",
    "setfsuid32",
    "setgid",
    "setgid32",
    "setgroups",
    "setgroups32",
    "setitimer",
    "setpgid",
    "setpriority",
    "setregid",
    "setregid32",
    "setresgid",
    "setresgid32",
    "setresuid",
    "setresuid32",
    "setreuid",
    "setreuid32",
    "setrlimit",
    "set_robust_list",
    "setsid",
    "setsockopt",
    "set_thread_area",
    "set_tid_address",
    "setuid",
    "setuid32",
    "setxattr",
    "setxattrat",
    "shmat",
    "shmctl",
    "shmdt",
    "shmget",
    "shutdown",
    "sigaltstack",
    "signalfd",
    "signalfd4",
    "sigprocmask",
    "sigreturn",
    "socketcall",
    "socketpair",
    "splice",
    "stat",
    "stat64",
    "statfs",
    "statfs64",
    "statmount",
    "statx",
    "symlink",
    "symlinkat",
    "sync",
    "sync_file_range",
    "syncfs",
    "sysinfo",
    "tee",
    "tgkill",
    "time",
    "timer_create",
    "timer_delete",
    "timer_getoverrun",
    "timer_gettime",
    "timer_gettime64",
    "timer_settime",
    "timer_settime64",
    "timerfd_create",
    "timerfd_gettime",
    "timerfd_gettime64",
    "timerfd_settime",
    "timerfd_settime64",
    "times",
    "tkill",
    "truncate",
    "truncate64",
    "ugetrlimit",
    "umask",
    "uname",
    "unlink",
    "unlinkat",
    "uretprobe",
    "utime",
    "utimensat",
    "utimensat_time64",
    "utimes",
    "vfork",
    "vmsplice",
    "wait4",
    "waitid",
    "waitpid",
    "write",
    "writev",
];
