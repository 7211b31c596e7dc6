//! The default network of RUN is private (issue 18, item 6): a step reaches the outside
//! but neither the host's loopback services nor its abstract unix sockets, as root,
//! rootless and with `--runtime runc`; `--network=host` (and `RUN --network=host` with
//! `--allow network.host`) share the host's. Host services are started by the test: a
//! TCP server on 127.0.0.1, one on this machine's own non-loopback address, and an
//! abstract unix socket (listed in `/proc/net/unix` only within its network namespace).

use std::io::Write;
use std::net::{IpAddr, TcpListener};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::rootless::{User, SUB_USER};
use crate::run::{busybox_base, busybox_context, step_lines};

/// A TCP server on `ip` that answers every connection with `token` and closes it.
fn token_server(ip: IpAddr, token: &str) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    let token = format!("{token}\n");
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(token.as_bytes());
        }
    });
    port
}

/// The host's services for one test: loopback and primary-address TCP servers and an
/// abstract unix socket, each with its own token.
struct HostServices {
    token: String,
    loopback: u16,
    primary: Option<(IpAddr, u16)>,
    abstract_name: String,
    _abstract: UnixListener,
}

impl HostServices {
    fn start(tag: &str) -> HostServices {
        let token = format!("kiln-net-{tag}-{}", std::process::id());
        let loopback = token_server(IpAddr::from([127, 0, 0, 1]), &format!("{token}-loopback"));
        let primary = primary_address().map(|ip| (ip, token_server(ip, &format!("{token}-primary"))));
        let abstract_name = format!("{token}-abstract");
        let addr = SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        let listener = UnixListener::bind_addr(&addr).unwrap();
        HostServices {
            token,
            loopback,
            primary,
            abstract_name,
            _abstract: listener,
        }
    }

    /// A RUN line that prints what the step reaches: `lo=` the loopback server's answer
    /// (on 127.0.0.1 and on the step's default gateway, which user-mode networks may map
    /// to the host's loopback), `abstract=` how many sockets of that name it sees, and
    /// `primary=` the answer of the server on the host's own address.
    fn probe(&self) -> String {
        let mut s = format!(
            "RUN echo ran-{t}; p={lp}; \
             (nc -w 3 127.0.0.1 $p </dev/null 2>&1 | sed 's/^/lo=/'); \
             gw=$(ip route 2>/dev/null | awk '/^default/ {{print $3}}'); \
             if [ -n \"$gw\" ]; then (nc -w 3 $gw $p </dev/null 2>&1 | sed 's/^/lo=/'); fi; \
             echo abstract=$(grep -c '@{a}$' /proc/net/unix)",
            t = self.token,
            lp = self.loopback,
            a = self.abstract_name,
        );
        if let Some((ip, port)) = self.primary {
            s.push_str(&format!(
                "; (nc -w 5 {ip} {port} </dev/null 2>&1 | sed 's/^/primary=/')"
            ));
        }
        s.push('\n');
        s
    }

    /// Asserts that the probe ran and what it reached: the host's loopback and abstract
    /// socket only with `host`, the host's own address always.
    fn check(&self, progress: &str, host: bool) {
        let lines = step_lines(progress);
        assert!(lines.contains(&format!("ran-{}", self.token)), "{progress}");
        let lo = format!("lo={}-loopback", self.token);
        let abs = if host { "abstract=1" } else { "abstract=0" };
        if host {
            assert!(
                lines.contains(&lo),
                "the host network must reach the host's loopback:\n{progress}"
            );
        } else {
            assert!(
                !progress.contains(&format!("{}-loopback", self.token)),
                "a step on the default network reached a service on the host's loopback:\n{progress}"
            );
        }
        assert!(lines.contains(&abs.to_string()), "want {abs}:\n{progress}");
        if self.primary.is_some() {
            let want = format!("primary={}-primary", self.token);
            assert!(
                lines.contains(&want),
                "no outbound access to this host's own address:\n{progress}"
            );
        }
    }
}

/// This machine's own address on its default route (from the routing table; nothing is
/// sent), never a loopback one.
fn primary_address() -> Option<IpAddr> {
    if !require_tool("ip") {
        return None;
    }
    let out = run(Command::new("ip").args(["-4", "route", "get", "1.1.1.1"]));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let ip = words.by_ref().find(|w| *w == "src").and_then(|_| words.next())?;
    let ip: IpAddr = ip.parse().ok()?;
    require(!ip.is_loopback(), "this machine has no non-loopback address").then_some(ip)
}

fn root() -> bool {
    require(kiln_testkit::is_root(), "the root network tests need root") && require_tool("slirp4netns")
}

fn build(k: &Kiln, dockerfile: &str, extra: &[&str]) -> std::process::Output {
    let ctx = context(&[("Dockerfile", dockerfile)]);
    let mut args = vec!["build", "--progress=plain", "--no-cache"];
    args.extend_from_slice(extra);
    args.push(ctx.path().to_str().unwrap());
    run(k.cmd().args(&args))
}

fn build_ok(k: &Kiln, dockerfile: &str, extra: &[&str]) -> String {
    let out = build(k, dockerfile, extra);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "build {extra:?} failed:\n{err}");
    err
}

#[test]
fn default_network_is_private_with_outbound_access_as_root() {
    if !root() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let host = HostServices::start("root");
    let df = format!("FROM {base}\n{}", host.probe());
    host.check(&build_ok(&k, &df, &[]), false);
    host.check(&build_ok(&k, &df, &["--network=default"]), false);
    host.check(&build_ok(&k, &df, &["--network=host"]), true);

    // `RUN --network=host` needs the entitlement, and then shares the host's network.
    let df_host = format!(
        "FROM {base}\n{}",
        host.probe().replacen("RUN ", "RUN --network=host ", 1)
    );
    let out = build(&k, &df_host, &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("network.host"), "{err}");
    host.check(&build_ok(&k, &df_host, &["--allow", "network.host"]), true);
    // `RUN --network=default` is the build's default: private.
    let df_default = format!(
        "FROM {base}\n{}",
        host.probe().replacen("RUN ", "RUN --network=default ", 1)
    );
    host.check(&build_ok(&k, &df_default, &[]), false);
}

/// Root without CAP_NET_ADMIN (a container given `--cap-add SYS_ADMIN` only: Docker
/// drops NET_ADMIN) cannot bring `lo` up in a namespace its own user namespace owns; the
/// step's namespace is then made inside a user namespace root owns (was: `cannot bring
/// up lo in the step's network namespace: Operation not permitted` at the first RUN).
#[test]
fn default_network_is_private_for_root_without_net_admin() {
    if !root() || !require_tool("capsh") {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let host = HostServices::start("nonetadmin");
    let df = format!("FROM {base}\n{}", host.probe());
    let ctx = context(&[("Dockerfile", &df)]);
    let out = run(Command::new("capsh")
        .env("KILN_ROOT", k.root())
        .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")
        .stdin(Stdio::null())
        .args([
            "--drop=cap_net_admin",
            "--",
            "-c",
            "grep CapEff /proc/self/status >&2; exec \"$0\" \"$@\"",
            env!("CARGO_BIN_EXE_kiln"),
            "build",
            "--progress=plain",
            "--no-cache",
        ])
        .arg(ctx.path()));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    // CAP_NET_ADMIN is bit 12: really gone from the kiln that built.
    let eff = err
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .expect("CapEff line");
    assert_eq!(eff & (1 << 12), 0, "{err}");
    host.check(&err, false);
}

#[test]
fn default_network_is_private_with_runc() {
    if !root() || !require_tool("runc") {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let host = HostServices::start("runc");
    let df = format!("FROM {base}\n{}", host.probe());
    host.check(&build_ok(&k, &df, &["--runtime", "runc"]), false);
    host.check(&build_ok(&k, &df, &["--runtime", "runc", "--network=host"]), true);
}

#[test]
fn default_network_is_private_with_outbound_access_rootless() {
    if !require_tool("slirp4netns") {
        return;
    }
    let Some(u) = User::get(SUB_USER, true) else { return };
    let Some(base) = u.busybox_base() else { return };
    let host = HostServices::start("rootless");
    let df = format!("FROM {base}\n{}", host.probe());
    let ctx = u.context("net", &df);
    let ctx = ctx.to_str().unwrap();
    host.check(&u.kiln_ok(&["build", "--progress=plain", "--no-cache", ctx]), false);
    host.check(
        &u.kiln_ok(&["build", "--progress=plain", "--no-cache", "--network=host", ctx]),
        true,
    );
}

/// A directory holding only links to the tools kiln may need besides the user-mode
/// network (so that it is "not installed").
fn path_without_slirp4netns() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    for tool in ["runc", "newuidmap", "newgidmap"] {
        if let Some(p) = kiln_testkit::which(tool) {
            std::os::unix::fs::symlink(p, d.path().join(tool)).unwrap();
        }
    }
    d
}

#[test]
fn missing_slirp4netns_fails_the_first_run_and_names_the_way_out() {
    if !require(kiln_testkit::is_root(), "the root network tests need root") {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    let path = path_without_slirp4netns();
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN echo ran-$((1+1))\nRUN true\n"))]);
    let out = run(k
        .cmd()
        .env("PATH", path.path())
        .args(["build", "--progress=plain", ctx.path().to_str().unwrap()]));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(
        err.contains("slirp4netns") && err.contains("--network=host") && err.contains("--network=none"),
        "{err}"
    );
    // Never a silent fallback to the host's network.
    assert!(!step_lines(&err).contains(&"ran-2".to_string()), "{err}");
    // The ways out work without it.
    for net in ["--network=none", "--network=host"] {
        let out = run(k.cmd().env("PATH", path.path()).args([
            "build",
            "--progress=plain",
            "--no-cache",
            net,
            ctx.path().to_str().unwrap(),
        ]));
        assert!(out.status.success(), "{net}: {}", String::from_utf8_lossy(&out.stderr));
    }
}

/// Every process below `pid`, as (pid, command name).
pub fn descendants(pid: u32) -> Vec<(u32, String)> {
    let mut procs = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(p) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`; comm may hold spaces and parentheses.
        let Some((head, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let comm = head.split_once(" (").map(|(_, c)| c.to_string()).unwrap_or_default();
        let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok());
        procs.push((p, ppid.unwrap_or(0), comm));
    }
    let mut out: Vec<(u32, String)> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for (p, pp, comm) in &procs {
            if *pp == parent && !out.iter().any(|(q, _)| q == p) {
                out.push((*p, comm.clone()));
                frontier.push(*p);
            }
        }
    }
    out
}

pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// Runs a build whose step sleeps `secs`, seen from outside while it runs, and ends it
/// with `end` (`None`: it ends by itself); asserts that the step had a slirp4netns and
/// that every process the build started is gone afterwards.
fn no_process_outlives(k: &Kiln, base: &str, step: &str, end: Option<i32>, ok: bool) {
    let ctx = context(&[("Dockerfile", &format!("FROM {base}\nRUN {step}\n"))]);
    let mut child = k
        .cmd()
        .args(["build", "--progress=plain", ctx.path().to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let kiln_pid = child.id();
    let t0 = Instant::now();
    let mut seen: Vec<(u32, String)>;
    loop {
        seen = descendants(kiln_pid);
        if seen.iter().any(|(_, c)| c == "sleep") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the step never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "kiln ended before the step started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        seen.iter().any(|(_, c)| c == "slirp4netns"),
        "the step has no user-mode network: {seen:?}"
    );
    if let Some(sig) = end {
        kiln_testkit::kill(kiln_pid, sig);
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.success(), ok, "{step}: {err}");
    let t0 = Instant::now();
    loop {
        let left: Vec<&(u32, String)> = seen.iter().filter(|(p, _)| alive(*p)).collect();
        if left.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{step} (signal {end:?}): processes outlived the build: {left:?}\n{err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let root = k.root().display().to_string();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap();
    assert!(mounts.lines().all(|l| !l.contains(&root)), "{mounts}");
}

#[test]
fn the_network_helpers_end_with_the_step() {
    if !root() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    no_process_outlives(&k, base, "sleep 1", None, true);
    no_process_outlives(&k, base, "sleep 1; exit 3", None, false);
    no_process_outlives(&k, base, "sleep 1000", Some(libc::SIGINT), false);
    no_process_outlives(&k, base, "sleep 1001", Some(libc::SIGKILL), false);
}

/// The step's resolv.conf names a resolver it can reach from its own namespace (the
/// host's may be on its loopback or, as here, anywhere).
#[test]
fn the_private_network_resolves_names_through_its_own_forwarder() {
    if !root() {
        return;
    }
    let Some(ctx) = busybox_context() else { return };
    let k = kiln();
    k.ok(&["build", "-q", "-t", "bb:1", ctx.path().to_str().unwrap()]);
    let progress = build_ok(&k, "FROM bb:1\nRUN sed 's/^/conf=/' /etc/resolv.conf\n", &[]);
    let servers: Vec<String> = step_lines(&progress)
        .into_iter()
        .filter_map(|l| l.strip_prefix("conf=nameserver ").map(|s| s.trim().to_string()))
        .collect();
    assert_eq!(servers, ["10.0.2.3"], "{progress}");
}

/// The private networks of finished steps are reused by later steps of the build (as
/// BuildKit pools its namespaces), but never carry anything from one step to the next:
/// a server a step left running is gone, and a `--security=insecure` step (which may
/// change the namespace's addresses) never hands its namespace on. With `--runtime runc`
/// too.
#[test]
fn pooled_networks_carry_nothing_between_steps() {
    if !root() {
        return;
    }
    let k = kiln();
    let Some(base) = busybox_base(&k) else { return };
    // Step 2 leaves a listener on port 7777 (0x1E61) in the background; step 3 must see
    // no listener. Step 4 (insecure) adds an address; step 5 must not see it.
    let df = format!(
        "FROM {base}\n\
         RUN echo ns1=$(readlink /proc/self/ns/net)\n\
         RUN (nc -l -p 7777 </dev/null >/dev/null 2>&1 &); sleep 0.3; \
             echo listening=$(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -c ':1E61 0*:0000 0A')\n\
         RUN echo ns3=$(readlink /proc/self/ns/net); \
             echo left=$(cat /proc/net/tcp /proc/net/tcp6 2>/dev/null | grep -c ':1E61 0*:0000 0A')\n\
         RUN --security=insecure ip addr add 10.9.9.9/32 dev lo && echo added=$(ip addr show lo | grep -c 10.9.9.9) \
             && echo ns4=$(readlink /proc/self/ns/net)\n\
         RUN echo ns5=$(readlink /proc/self/ns/net); echo seen=$(ip addr show lo | grep -c 10.9.9.9)\n"
    );
    for extra in [&[][..], &["--runtime", "runc"][..]] {
        if extra.len() == 2 && !require_tool("runc") {
            continue;
        }
        let mut args = vec!["--allow", "security.insecure", "--jobs", "1"];
        args.extend_from_slice(extra);
        let err = build_ok(&k, &df, &args);
        let lines = step_lines(&err);
        let value = |key: &str| -> String {
            lines
                .iter()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .unwrap_or_else(|| panic!("{extra:?}: no {key}= line in\n{err}"))
                .to_string()
        };
        assert_eq!(value("listening"), "1", "{extra:?}: {err}");
        assert_eq!(value("left"), "0", "{extra:?}: a step's server outlived it:\n{err}");
        assert_eq!(value("added"), "1", "{extra:?}: {err}");
        assert_eq!(
            value("seen"),
            "0",
            "{extra:?}: the insecure step's address leaked:\n{err}"
        );
        // Reused: steps 1 and 3 ran in one namespace; the insecure step's was its own and
        // step 5 did not get it.
        assert_eq!(
            value("ns1"),
            value("ns3"),
            "{extra:?}: the network was not reused:\n{err}"
        );
        assert_ne!(value("ns4"), value("ns5"), "{extra:?}: {err}");
    }
}
