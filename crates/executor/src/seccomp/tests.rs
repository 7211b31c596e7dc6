use super::bpf::{run, Data, RET_ALLOW, RET_ERRNO, RET_KILL_PROCESS};
use super::*;
use crate::helper::DEFAULT_CAPS;
use serde_json::json;

const EPERM: u32 = RET_ERRNO | libc::EPERM as u32;
const ENOSYS: u32 = RET_ERRNO | libc::ENOSYS as u32;
const CAP_SYS_ADMIN: u32 = 21;

fn call(f: &Filter, abi: Abi, name_or_nr: Result<&str, u32>, args: &[u64]) -> u32 {
    let nr = match name_or_nr {
        Ok(name) => number(name, abi).unwrap_or_else(|| panic!("{name} has no number in {:?}", abi.oci)),
        Err(nr) => nr,
    };
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    run(
        &f.0,
        &Data {
            nr,
            arch: abi.audit,
            args: a,
        },
    )
}

#[test]
fn every_profile_name_has_numbers() {
    assert!(
        table::SYSCALLS.windows(2).all(|w| w[0].0 < w[1].0),
        "table.rs is sorted"
    );
    for rule in RULES {
        for name in rule.names {
            assert!(
                table::SYSCALLS.iter().any(|(n, _)| n == name),
                "{name} is missing from table.rs"
            );
        }
    }
}

#[test]
fn amd64_default_caps_follow_dockers_profile() {
    let f = compile(DEFAULT_CAPS, Host::Amd64);
    assert!(f.len() < 4096, "{} instructions", f.len());
    let c = |name: &str, args: &[u64]| call(&f, X86_64, Ok(name), args);
    assert_eq!(c("read", &[]), RET_ALLOW);
    assert_eq!(c("execve", &[]), RET_ALLOW);
    assert_eq!(c("chroot", &[]), RET_ALLOW, "CAP_SYS_CHROOT is a default capability");
    assert_eq!(c("arch_prctl", &[]), RET_ALLOW);
    assert_eq!(c("removexattrat", &[]), RET_ALLOW);
    for denied in [
        "unshare",
        "mount",
        "setns",
        "perf_event_open",
        "bpf",
        "open_tree",
        "fsopen",
    ] {
        assert_eq!(c(denied, &[]), EPERM, "{denied}");
    }
    assert_eq!(call(&f, X86_64, Err(250), &[]), EPERM, "keyctl");
    assert_eq!(call(&f, X86_64, Err(248), &[]), EPERM, "add_key");
    assert_eq!(call(&f, X86_64, Err(323), &[]), EPERM, "userfaultfd");
    assert_eq!(call(&f, X86_64, Err(425), &[]), EPERM, "io_uring_setup");
    assert_eq!(c("clone3", &[]), ENOSYS);
    assert_eq!(call(&f, X86_64, Err(467), &[]), ENOSYS, "newer than the profile");
    assert_eq!(call(&f, X86_64, Err(0x3fff_ffff), &[]), ENOSYS);
    let sigchld = libc::SIGCHLD as u64;
    assert_eq!(c("clone", &[sigchld]), RET_ALLOW);
    assert_eq!(c("clone", &[0x0011_0000 | sigchld]), RET_ALLOW, "CLONE_THREAD|CLONE_FS");
    for ns in [
        libc::CLONE_NEWUSER,
        libc::CLONE_NEWNS,
        libc::CLONE_NEWPID,
        libc::CLONE_NEWNET,
        libc::CLONE_NEWCGROUP,
        libc::CLONE_NEWIPC,
        libc::CLONE_NEWUTS,
    ] {
        assert_eq!(c("clone", &[ns as u64 | sigchld]), EPERM, "{ns:#x}");
    }
    // socket: every family but AF_ALG (38) and AF_VSOCK (40); 64-bit compares.
    for (family, want) in [
        (1, RET_ALLOW),
        (2, RET_ALLOW),
        (37, RET_ALLOW),
        (38, EPERM),
        (39, RET_ALLOW),
    ] {
        assert_eq!(c("socket", &[family]), want, "family {family}");
    }
    for (family, want) in [
        (40, EPERM),
        (41, RET_ALLOW),
        (1 << 32 | 2, RET_ALLOW),
        (1 << 32 | 38, RET_ALLOW),
    ] {
        assert_eq!(c("socket", &[family]), want, "family {family:#x}");
    }
    for (p, want) in [
        (0, RET_ALLOW),
        (8, RET_ALLOW),
        (0x20000, RET_ALLOW),
        (0x20008, RET_ALLOW),
        (0xffff_ffff, RET_ALLOW),
        (0x0040000, EPERM),
        (u64::MAX, EPERM),
        (1 << 32, EPERM),
    ] {
        assert_eq!(c("personality", &[p]), want, "personality {p:#x}");
    }
    // Another architecture is killed.
    assert_eq!(
        run(
            &f.0,
            &Data {
                nr: 0,
                arch: AARCH64.audit,
                args: [0; 6]
            }
        ),
        RET_KILL_PROCESS
    );
}

#[test]
fn amd64_filters_i386_and_x32_too() {
    let f = compile(DEFAULT_CAPS, Host::Amd64);
    assert_eq!(call(&f, I386, Err(288), &[]), EPERM, "i386 keyctl");
    assert_eq!(call(&f, I386, Err(20), &[]), RET_ALLOW, "i386 getpid");
    assert_eq!(call(&f, I386, Ok("socketcall"), &[]), RET_ALLOW);
    assert_eq!(call(&f, I386, Ok("modify_ldt"), &[]), RET_ALLOW);
    assert_eq!(call(&f, I386, Ok("clone"), &[libc::CLONE_NEWUSER as u64]), EPERM);
    assert_eq!(call(&f, I386, Ok("clone3"), &[]), ENOSYS);
    // 32-bit ABIs compare the low half only (it is all they have).
    assert_eq!(call(&f, I386, Ok("personality"), &[0xffff_ffff]), RET_ALLOW);
    assert_eq!(call(&f, I386, Ok("socket"), &[40]), EPERM);
    assert_eq!(call(&f, X32, Err(X32_BIT), &[]), RET_ALLOW, "x32 read");
    assert_eq!(call(&f, X32, Err(X32_BIT | 514), &[]), RET_ALLOW, "x32 ioctl");
    assert_eq!(call(&f, X32, Err(X32_BIT | 250), &[]), EPERM, "x32 keyctl");
    assert_eq!(call(&f, X32, Err(X32_BIT | 600), &[]), ENOSYS);
    assert_eq!(call(&f, X32, Err(u32::MAX), &[]), ENOSYS);
}

#[test]
fn arm64_filters_aarch64_and_arm() {
    let f = compile(DEFAULT_CAPS, Host::Arm64);
    assert_eq!(call(&f, AARCH64, Err(63), &[]), RET_ALLOW, "read");
    assert_eq!(call(&f, AARCH64, Err(219), &[]), EPERM, "keyctl");
    assert_eq!(call(&f, AARCH64, Ok("clone"), &[libc::CLONE_NEWUSER as u64]), EPERM);
    assert_eq!(call(&f, AARCH64, Ok("clone3"), &[]), ENOSYS);
    assert_eq!(number("set_tls", AARCH64), None);
    assert_eq!(call(&f, ARM, Ok("set_tls"), &[]), RET_ALLOW);
    assert_eq!(call(&f, ARM, Ok("cacheflush"), &[]), RET_ALLOW);
    assert_eq!(call(&f, ARM, Err(311), &[]), EPERM, "arm keyctl");
    assert_eq!(number("arch_prctl", ARM), None);
    // arm's private calls (cacheflush, set_tls: 0xf0002, 0xf0005) are the highest, so a
    // number between the tables is denied, as runc's stub does it.
    assert_eq!(call(&f, ARM, Err(500), &[]), EPERM);
    assert_eq!(call(&f, ARM, Err(0xf_0100), &[]), ENOSYS);
    assert_eq!(
        run(
            &f.0,
            &Data {
                nr: 0,
                arch: X86_64.audit,
                args: [0; 6]
            }
        ),
        RET_KILL_PROCESS
    );
}

#[test]
fn sys_admin_lifts_the_namespace_rules() {
    let mut caps = DEFAULT_CAPS.to_vec();
    caps.push(CAP_SYS_ADMIN);
    let f = compile(&caps, Host::Amd64);
    let c = |name: &str, args: &[u64]| call(&f, X86_64, Ok(name), args);
    assert_eq!(c("clone", &[libc::CLONE_NEWUSER as u64]), RET_ALLOW);
    assert_eq!(c("clone3", &[]), RET_ALLOW);
    assert_eq!(c("unshare", &[]), RET_ALLOW);
    assert_eq!(c("mount", &[]), RET_ALLOW);
    assert_eq!(call(&f, X86_64, Err(250), &[]), EPERM, "keyctl");
}

/// Every number of every ABI decides as a plain walk over the resolved rules would.
#[test]
fn the_search_tree_agrees_with_the_rules() {
    for (host, caps) in [
        (Host::Amd64, DEFAULT_CAPS.to_vec()),
        (Host::Arm64, DEFAULT_CAPS.to_vec()),
        (Host::Amd64, vec![]),
        (Host::Amd64, (0..41).collect()),
    ] {
        let f = compile(&caps, host);
        for &abi in abis(host) {
            let rules = resolve(&caps, host, abi);
            let max = *rules.keys().next_back().unwrap();
            for n in 0..700u32 {
                let nr = n | abi.nr_bit;
                let want = match rules.get(&nr) {
                    None if nr > max => ENOSYS,
                    None => EPERM,
                    Some(alts) => alts
                        .iter()
                        .find(|(args, _)| args.is_empty())
                        .map(|(_, a)| ret(*a))
                        .unwrap_or(RET_ALLOW),
                };
                // Arguments of all zero: every conditional rule here allows them.
                let got = call(&f, abi, Err(nr), &[]);
                assert_eq!(got, want, "{host:?} {:?} nr {n}", abi.oci);
            }
        }
    }
}

#[test]
fn oci_profile_is_dockers() {
    let p = serde_json::to_value(oci_profile(DEFAULT_CAPS).unwrap()).unwrap();
    assert_eq!(p["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(p["defaultErrnoRet"], 1);
    let rules = p["syscalls"].as_array().unwrap();
    let clone3 = rules.iter().find(|r| r["names"] == json!(["clone3"])).unwrap();
    assert_eq!(clone3["action"], "SCMP_ACT_ERRNO");
    assert_eq!(clone3["errnoRet"], libc::ENOSYS);
    let clone = rules.iter().find(|r| r["names"] == json!(["clone"])).unwrap();
    assert_eq!(clone["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
    assert_eq!(clone["args"][0]["value"], 0x7e02_0000u64);
    assert!(!rules
        .iter()
        .any(|r| r["names"].as_array().unwrap().contains(&json!("unshare"))));
    if cfg!(target_arch = "x86_64") {
        assert_eq!(
            p["architectures"],
            json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X32", "SCMP_ARCH_X86"])
        );
    }
}
