//! The runc `config.json` kiln writes, pinned for representative steps: compared as
//! parsed JSON (key order and the order of capability sets do not matter to runc) with
//! the goldens in `crates/executor/testdata/runc-config/`. `KILN_UPDATE_GOLDEN=1`
//! rewrites them; review the diff by eye.
//!
//! Host-dependent parts of an insecure step (kiln's own capabilities, the host's device
//! nodes) are checked against what the host has and then replaced by a placeholder.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::OciRuntime;
use crate::{ExecSpec, Limits, Network, Rootfs, SecretFile, Security, SpecMount, SpecMountKind, Ulimit};

fn lower() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(d.path().join("etc")).unwrap();
    std::fs::write(
        d.path().join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("etc/group"),
        "root:x:0:\napp:x:1000:\nwheel:x:10:app\naudio:x:29:app\n",
    )
    .unwrap();
    d
}

fn spec(lower: &Path) -> ExecSpec {
    ExecSpec {
        args: vec!["/bin/sh".into(), "-c".into(), "echo hi".into()],
        env: vec!["A=b".into()],
        cwd: "/work".into(),
        user: None,
        hostname: "kiln-step".into(),
        network: Network::None,
        rootfs: Rootfs {
            lower: vec![lower.to_path_buf()],
            upper: "/state/step/upper".into(),
            work: "/state/step/work".into(),
            target: "/state/step/rootfs".into(),
        },
        hosts: "/state/step/hosts".into(),
        resolv_conf: "/state/step/resolv.conf".into(),
        mounts: vec![],
        secrets: vec![],
        secrets_dir: None,
        secret_env: vec![],
        limits: Limits {
            ulimits: vec![],
            pids: None,
            shm_size: None,
        },
        netns: None,
        security: Security::Sandbox,
        isolation: Default::default(),
    }
}

fn config_json(spec: &ExecSpec) -> Value {
    let rt = OciRuntime {
        binary: PathBuf::from("/usr/bin/runc"),
    };
    serde_json::to_value(rt.config(spec).unwrap()).unwrap()
}

/// Sorts capability lists; checks and replaces an insecure step's host-dependent parts.
fn normalise(mut v: Value, insecure: bool) -> Value {
    let mut host_caps: Vec<String> = crate::insecure::current_cap_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    host_caps.sort();
    if let Some(caps) = v["process"]["capabilities"].as_object_mut() {
        for (set, list) in caps.iter_mut() {
            let mut names: Vec<String> = serde_json::from_value(list.take()).unwrap();
            names.sort();
            *list = if insecure && !names.is_empty() {
                assert_eq!(names, host_caps, "insecure {set}: kiln's own capabilities");
                Value::String("<kiln's capabilities>".into())
            } else {
                serde_json::json!(names)
            };
        }
    }
    if insecure {
        let devices = v["linux"]["devices"].take();
        let paths: Vec<String> = devices
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d["path"].as_str().unwrap().to_string())
            .collect();
        let host: Vec<String> = crate::insecure::host_devices()
            .iter()
            .map(|d| format!("/dev/{d}"))
            .filter(|p| {
                use std::os::unix::fs::FileTypeExt;
                std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device() || m.file_type().is_char_device())
            })
            .collect();
        assert_eq!(paths, host, "insecure devices: the host's");
        v["linux"]["devices"] = Value::String("<host devices>".into());
    }
    v
}

fn check(name: &str, spec: &ExecSpec) {
    let got = normalise(config_json(spec), spec.security == Security::Insecure);
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/runc-config")
        .join(format!("{name}.json"));
    if std::env::var_os("KILN_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(&got).unwrap() + "\n").unwrap();
    }
    let want: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert!(
        got == want,
        "{name}: config.json differs from {}:\n{}",
        path.display(),
        serde_json::to_string_pretty(&got).unwrap()
    );
}

#[test]
fn root_step() {
    let l = lower();
    check("root", &spec(l.path()));
}

#[test]
fn non_root_user_with_groups_and_private_network() {
    let l = lower();
    let mut s = spec(l.path());
    s.user = Some("app".into());
    s.cwd = String::new();
    s.network = Network::Private;
    s.netns = Some("/run/kiln/netns/step".into());
    check("user", &s);
}

#[test]
fn host_network_with_limits() {
    let l = lower();
    let mut s = spec(l.path());
    s.user = Some("1000:10".into());
    s.network = Network::Host;
    s.limits = Limits {
        ulimits: vec![
            Ulimit::parse("nofile=1024:4096").unwrap(),
            Ulimit::parse("nproc=-1").unwrap(),
            Ulimit::parse("core=0").unwrap(),
        ],
        pids: Some(25),
        shm_size: None,
    };
    check("limits", &s);
}

#[test]
fn mounts_and_secrets() {
    let l = lower();
    let mut s = spec(l.path());
    s.mounts = vec![
        SpecMount {
            target: "/cache".into(),
            kind: SpecMountKind::Bind {
                source: "/state/cache/a".into(),
                readonly: false,
            },
        },
        SpecMount {
            target: "/ctx".into(),
            kind: SpecMountKind::Bind {
                source: "/state/ctx".into(),
                readonly: true,
            },
        },
        SpecMount {
            target: "/run/secrets/a".into(),
            kind: SpecMountKind::Secret {
                index: 0,
                executable: false,
            },
        },
        SpecMount {
            target: "/usr/local/bin/tool".into(),
            kind: SpecMountKind::Secret {
                index: 1,
                executable: true,
            },
        },
        SpecMount {
            target: "/tmp".into(),
            kind: SpecMountKind::Tmpfs { size: None },
        },
        SpecMount {
            target: "/big".into(),
            kind: SpecMountKind::Tmpfs { size: Some(1 << 20) },
        },
    ];
    let secret = |data: &[u8]| SecretFile {
        data: data.to_vec(),
        mode: 0o400,
        uid: 0,
        gid: 0,
    };
    s.secrets = vec![secret(b"one"), secret(b"two"), secret(b"token-value")];
    s.secrets_dir = Some("/state/secrets".into());
    s.secret_env = vec![("TOKEN".into(), 2), ("A".into(), 0)];
    check("mounts", &s);
}

#[test]
fn insecure_step() {
    let l = lower();
    let mut s = spec(l.path());
    s.security = Security::Insecure;
    s.limits.pids = Some(4096);
    check("insecure", &s);
}

#[test]
fn insecure_non_root_step() {
    let l = lower();
    let mut s = spec(l.path());
    s.security = Security::Insecure;
    s.user = Some("app".into());
    check("insecure-user", &s);
}
