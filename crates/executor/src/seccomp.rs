//! seccomp compiles Docker's default seccomp profile into a BPF filter for RUN steps and
//! writes it as an OCI `linux.seccomp` section for external runtimes.
//!
//! The filter is what runc builds from Docker's profile with libseccomp: calls the
//! profile allows pass; `clone` only without namespace flags; `clone3` fails with ENOSYS
//! (the C library then falls back to `clone`); every other call fails with EPERM, except
//! numbers above the highest one the profile names, which fail with ENOSYS (runc's
//! stub, so that programs probing newer calls fall back). The host's other ABIs are
//! filtered the same way (i386 and x32 on x86_64, arm on aarch64), as Docker's `archMap`
//! does; any other architecture is killed.
//!
//! seccompiler (firecracker's) was the preferred crate, but it cannot express this
//! profile: one match action per filter (no ENOSYS next to ALLOW and EPERM), only
//! x86_64/aarch64/riscv64 (no i386, x32 or arm), and no range rule for newer calls. The
//! program here (about 1,900 instructions on x86_64, a binary search per ABI) is built by
//! each step's helper just before it is installed, and checked by unit tests against an
//! interpreter.

mod bpf;
mod profile;
mod table;

use std::collections::BTreeMap;
use std::io;

use bpf::{Asm, Label, SockFilter, JMP_JEQ_K, JMP_JGE_K, JMP_JGT_K};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator,
    LinuxSyscallBuilder,
};
use oci_spec::OciSpecError;
use profile::{Action, Arg, Cmp, Host, Rule, DEFAULT_ERRNO, RULES};

/// One system call ABI a filter decides for.
#[derive(Debug, Clone, Copy)]
struct Abi {
    /// `AUDIT_ARCH_*`, what `seccomp_data.arch` says.
    audit: u32,
    /// The column of [`table::SYSCALLS`].
    column: usize,
    /// Added to every number (x32's `__X32_SYSCALL_BIT`).
    nr_bit: u32,
    /// Arguments are 64 bits wide (32-bit ABIs compare the low half only, as libseccomp).
    wide: bool,
    /// The OCI / libseccomp name.
    oci: Arch,
}

const X86_64: Abi = Abi {
    audit: 0xc000_003e,
    column: 0,
    nr_bit: 0,
    wide: true,
    oci: Arch::ScmpArchX86_64,
};
const X32_BIT: u32 = 0x4000_0000;
const X32: Abi = Abi {
    audit: 0xc000_003e,
    column: 1,
    nr_bit: X32_BIT,
    wide: false,
    oci: Arch::ScmpArchX32,
};
const I386: Abi = Abi {
    audit: 0x4000_0003,
    column: 2,
    nr_bit: 0,
    wide: false,
    oci: Arch::ScmpArchX86,
};
const AARCH64: Abi = Abi {
    audit: 0xc000_00b7,
    column: 3,
    nr_bit: 0,
    wide: true,
    oci: Arch::ScmpArchAarch64,
};
const ARM: Abi = Abi {
    audit: 0x4000_0028,
    column: 4,
    nr_bit: 0,
    wide: false,
    oci: Arch::ScmpArchArm,
};

/// The architecture kiln runs on (its own binary's).
fn host() -> Host {
    if cfg!(target_arch = "aarch64") {
        Host::Arm64
    } else {
        Host::Amd64
    }
}

/// The ABIs a host's filter covers, native first.
fn abis(host: Host) -> &'static [Abi] {
    match host {
        Host::Amd64 => &[X86_64, X32, I386],
        Host::Arm64 => &[AARCH64, ARM],
    }
}

/// The rules of the profile that apply to a step with capabilities `caps` on `host`.
fn select(caps: &[u32], host: Host) -> impl Iterator<Item = &'static Rule> + '_ {
    RULES.iter().filter(move |r| {
        r.with_caps.iter().all(|c| caps.contains(c))
            && !r.without_caps.iter().any(|c| caps.contains(c))
            && (r.hosts.is_empty() || r.hosts.contains(&host))
    })
}

/// What one system call number does: the first alternative whose arguments match.
type Alternatives = Vec<(&'static [Arg], Action)>;

/// The profile's rules for one ABI, by number.
fn resolve(caps: &[u32], host: Host, abi: Abi) -> BTreeMap<u32, Alternatives> {
    let mut by_nr: BTreeMap<u32, Alternatives> = BTreeMap::new();
    for rule in select(caps, host) {
        for name in rule.names {
            let Some(nr) = number(name, abi) else { continue };
            by_nr.entry(nr).or_default().push((rule.args, rule.action));
        }
    }
    // As libseccomp: a rule without arguments supersedes conditional ones.
    for alts in by_nr.values_mut() {
        if let Some(&plain) = alts.iter().find(|(args, _)| args.is_empty()) {
            *alts = vec![plain];
        }
    }
    by_nr
}

/// The number of `name` in `abi`, if it has that call.
fn number(name: &str, abi: Abi) -> Option<u32> {
    let i = table::SYSCALLS.binary_search_by(|(n, _)| n.cmp(&name)).ok()?;
    let (_, nrs) = table::SYSCALLS[i];
    u32::try_from(nrs[abi.column]).ok().map(|n| n | abi.nr_bit)
}

fn ret(action: Action) -> u32 {
    match action {
        Action::Allow => bpf::RET_ALLOW,
        Action::Errno(e) => bpf::RET_ERRNO | u32::from(e),
    }
}

/// Filter is a compiled seccomp program.
#[derive(Debug, Clone)]
pub struct Filter(Vec<SockFilter>);

impl Filter {
    /// Docker's default profile for a step with capabilities `caps`, for this host.
    pub fn docker_default(caps: &[u32]) -> Filter {
        compile(caps, host())
    }

    /// Number of instructions.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.len()
    }

    /// Loads the filter into the calling thread; everything it execs keeps it. Needs
    /// `no_new_privs` (or CAP_SYS_ADMIN).
    #[allow(unsafe_code)]
    pub fn install(&self) -> io::Result<()> {
        #[repr(C)]
        struct SockFprog {
            len: libc::c_ushort,
            filter: *const SockFilter,
        }
        let len = libc::c_ushort::try_from(self.0.len()).map_err(|_| io::Error::from_raw_os_error(libc::E2BIG))?;
        let prog = SockFprog {
            len,
            filter: self.0.as_ptr(),
        };
        // SAFETY: `prog` points at `len` instructions laid out as `struct sock_filter`,
        // alive for the call; the kernel copies them.
        let r = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const SockFprog,
            )
        };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }
}

fn compile(caps: &[u32], host: Host) -> Filter {
    let mut asm = Asm::default();
    let abis = abis(host);
    let sections: Vec<Label> = abis.iter().map(|_| asm.label()).collect();
    asm.load(bpf::OFF_ARCH);
    let mut seen = Vec::new();
    for (abi, l) in abis.iter().zip(&sections) {
        // x32 shares x86_64's audit arch: the native section sends it on by number.
        if !seen.contains(&abi.audit) {
            seen.push(abi.audit);
            asm.jump_if(JMP_JEQ_K, abi.audit, *l);
        }
    }
    asm.ret(bpf::RET_KILL_PROCESS);
    for (abi, l) in abis.iter().zip(&sections) {
        asm.bind(*l);
        asm.load(bpf::OFF_NR);
        if abi.audit == X86_64.audit && abi.nr_bit == 0 {
            if let Some(x32) = abis.iter().position(|a| a.nr_bit == X32_BIT) {
                asm.jump_if(JMP_JGE_K, X32_BIT, sections[x32]);
            }
        }
        section(&mut asm, &resolve(caps, host, *abi), abi.wide);
    }
    Filter(
        asm.finish()
            .unwrap_or_else(|| unreachable!("every label is bound ahead of its jumps")),
    )
}

/// One ABI's part of the program: the syscall number is in A.
fn section(asm: &mut Asm, rules: &BTreeMap<u32, Alternatives>, wide: bool) {
    let deny = asm.label();
    let enosys = asm.label();
    if let Some(&max) = rules.keys().next_back() {
        asm.jump_if(JMP_JGT_K, max, enosys);
    }
    // Calls with one unconditional action share its return; the others get a body.
    let mut plain: Vec<(Action, Label)> = Vec::new();
    let mut bodies: Vec<(Label, &Alternatives)> = Vec::new();
    let mut targets: Vec<(u32, Label)> = Vec::new();
    for (&nr, alts) in rules {
        let l = match alts.as_slice() {
            [([], action)] => match plain.iter().find(|(a, _)| a == action) {
                Some(&(_, l)) => l,
                None => {
                    let l = asm.label();
                    plain.push((*action, l));
                    l
                }
            },
            _ => {
                let l = asm.label();
                bodies.push((l, alts));
                l
            }
        };
        targets.push((nr, l));
    }
    let plain_of = |l: Label| plain.iter().find(|(_, p)| *p == l).map(|(a, _)| *a);
    tree(asm, &targets, &plain_of);
    for (l, alts) in bodies {
        asm.bind(l);
        for (args, action) in alts {
            let next = asm.label();
            for a in *args {
                condition(asm, a, wide, next);
            }
            asm.ret(ret(*action));
            asm.bind(next);
        }
        asm.jump(deny);
    }
    for (action, l) in plain {
        asm.bind(l);
        asm.ret(ret(action));
    }
    asm.bind(enosys);
    asm.ret(ret(Action::Errno(libc::ENOSYS as u16)));
    asm.bind(deny);
    asm.ret(ret(Action::Errno(DEFAULT_ERRNO)));
}

/// A binary search over sorted `targets` (A holds the number; it is not changed).
/// A leaf compares up to [`LEAF`] numbers and jumps near to its own copies of the
/// returns (`plain_of` says which labels are a plain return) or on to a body.
fn tree(asm: &mut Asm, targets: &[(u32, Label)], plain_of: &dyn Fn(Label) -> Option<Action>) {
    if targets.len() <= LEAF {
        let mut local: Vec<(Label, Label)> = Vec::new();
        for &(nr, l) in targets {
            let near = match local.iter().find(|(t, _)| *t == l) {
                Some(&(_, n)) => n,
                None => {
                    let n = asm.label();
                    local.push((l, n));
                    n
                }
            };
            asm.jump_near_if(JMP_JEQ_K, nr, near);
        }
        asm.ret(ret(Action::Errno(DEFAULT_ERRNO)));
        for (target, near) in local {
            asm.bind(near);
            match plain_of(target) {
                Some(action) => asm.ret(ret(action)),
                None => asm.jump(target),
            }
        }
        return;
    }
    let mid = targets.len() / 2;
    let right = asm.label();
    asm.jump_if(JMP_JGE_K, targets[mid].0, right);
    tree(asm, &targets[..mid], plain_of);
    asm.bind(right);
    tree(asm, &targets[mid..], plain_of);
}

/// Most numbers a leaf of the search tree compares one by one.
const LEAF: usize = 6;

/// Goes to `fail` unless argument `a` holds (A is clobbered).
fn condition(asm: &mut Asm, a: &Arg, wide: bool, fail: Label) {
    let (lo, hi) = (a.value as u32, (a.value >> 32) as u32);
    let (off_lo, off_hi) = (bpf::off_arg_lo(a.index), bpf::off_arg_hi(a.index));
    match a.cmp {
        Cmp::Eq => {
            if wide {
                asm.load(off_hi);
                asm.jump_unless(JMP_JEQ_K, hi, fail);
            }
            asm.load(off_lo);
            asm.jump_unless(JMP_JEQ_K, lo, fail);
        }
        Cmp::MaskedEq(mask) => {
            if wide {
                asm.load(off_hi);
                asm.and((mask >> 32) as u32);
                asm.jump_unless(JMP_JEQ_K, hi, fail);
            }
            asm.load(off_lo);
            asm.and(mask as u32);
            asm.jump_unless(JMP_JEQ_K, lo, fail);
        }
        Cmp::Lt => {
            let ok = asm.label();
            if wide {
                asm.load(off_hi);
                asm.jump_if(JMP_JGT_K, hi, fail);
                asm.jump_unless(JMP_JEQ_K, hi, ok);
            }
            asm.load(off_lo);
            asm.jump_if(JMP_JGE_K, lo, fail);
            asm.bind(ok);
        }
        Cmp::Gt => {
            let ok = asm.label();
            if wide {
                asm.load(off_hi);
                asm.jump_if(JMP_JGT_K, hi, ok);
                asm.jump_unless(JMP_JEQ_K, hi, fail);
            }
            asm.load(off_lo);
            asm.jump_unless(JMP_JGT_K, lo, fail);
            asm.bind(ok);
        }
    }
}

/// The same profile as an OCI runtime config's `linux.seccomp` (runc resolves the
/// names with libseccomp and adds the same ENOSYS stub for newer calls).
pub fn oci_profile(caps: &[u32]) -> Result<LinuxSeccomp, OciSpecError> {
    let host = host();
    let syscalls = select(caps, host)
        .map(|r| {
            let mut b = LinuxSyscallBuilder::default()
                .names(r.names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .action(LinuxSeccompAction::ScmpActAllow);
            if let Action::Errno(e) = r.action {
                b = b.action(LinuxSeccompAction::ScmpActErrno).errno_ret(u32::from(e));
            }
            if !r.args.is_empty() {
                let args = r
                    .args
                    .iter()
                    .map(|a| {
                        let (value, value_two, op) = match a.cmp {
                            Cmp::MaskedEq(mask) => (mask, a.value, LinuxSeccompOperator::ScmpCmpMaskedEq),
                            Cmp::Lt => (a.value, 0, LinuxSeccompOperator::ScmpCmpLt),
                            Cmp::Gt => (a.value, 0, LinuxSeccompOperator::ScmpCmpGt),
                            Cmp::Eq => (a.value, 0, LinuxSeccompOperator::ScmpCmpEq),
                        };
                        LinuxSeccompArgBuilder::default()
                            .index(usize::from(a.index))
                            .value(value)
                            .value_two(value_two)
                            .op(op)
                            .build()
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                b = b.args(args);
            }
            b.build()
        })
        .collect::<Result<Vec<_>, _>>()?;
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(u32::from(DEFAULT_ERRNO))
        .architectures(abis(host).iter().map(|a| a.oci).collect::<Vec<_>>())
        .syscalls(syscalls)
        .build()
}

#[cfg(test)]
mod tests;
