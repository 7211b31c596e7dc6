//! kiln-testkit: what kiln's tests share: temp kiln roots, the built `kiln` binary,
//! probes for tools and privileges, and a private `dockerd`.
//!
//! A test that needs something the machine lacks calls [`require`]: it skips with a
//! reason, unless `KILN_TEST_STRICT=1` (set by `.ci/run`) turns the skip into a failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Whether skips are failures (`KILN_TEST_STRICT=1`).
pub fn strict() -> bool {
    std::env::var("KILN_TEST_STRICT").is_ok_and(|v| v == "1")
}

/// Returns true when `ok`; otherwise prints why the test skips and returns false, or
/// panics in strict mode.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if strict() {
        panic!("KILN_TEST_STRICT=1 but the test cannot run: {what}");
    }
    eprintln!("SKIPPED: {what}");
    false
}

/// The path of an executable on PATH.
pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(tool)).find(|p| p.is_file())
}

/// Probes a tool; see [`require`].
pub fn require_tool(tool: &str) -> bool {
    require(which(tool).is_some(), &format!("`{tool}` is not installed"))
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Runs a command, returning its output; panics if it cannot be started.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command and panics with its output unless it succeeds; returns stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Kiln is the `kiln` binary with a private `$KILN_ROOT`.
pub struct Kiln {
    bin: PathBuf,
    root: tempfile::TempDir,
}

impl Kiln {
    /// A fresh root for the binary at `bin` (pass `env!("CARGO_BIN_EXE_kiln")`).
    pub fn new(bin: &str) -> Self {
        let root = tempfile::Builder::new()
            .prefix("kiln-root-")
            .tempdir()
            .expect("temp root");
        Kiln {
            bin: PathBuf::from(bin),
            root,
        }
    }

    /// The `$KILN_ROOT` of this instance.
    pub fn root(&self) -> &Path {
        self.root.path()
    }

    /// A `kiln` command with this root.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("KILN_ROOT", self.root.path())
            .env_remove("SOURCE_DATE_EPOCH")
            // Default provenance off, as a buildx user sets it: a test sees the image
            // manifest it builds; tests/it/attest.rs removes it to test the default.
            .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "1")
            .stdin(Stdio::null());
        c
    }

    /// Runs `kiln ARGS`, panicking with the output unless it succeeds; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        run_ok(self.cmd().args(args))
    }

    /// Runs `kiln ARGS` expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = run(self.cmd().args(args));
        assert!(
            !out.status.success(),
            "kiln {args:?} should fail but succeeded:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Runs `kiln ARGS` with `input` on stdin.
    pub fn with_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn kiln");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kiln output")
    }

    /// A listing of every file under the root with its size, for before/after checks
    /// (temp files excluded: they are private to a running build).
    pub fn snapshot_store(&self) -> Vec<(String, u64)> {
        let mut out = Vec::new();
        walk(self.root.path(), self.root.path(), &mut out);
        out.retain(|(p, _)| !p.starts_with("tmp/") && p != "lock" && p != "store.lock");
        out.sort();
        out
    }
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, u64)>) {
    let Ok(rd) = fs_err::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().into_owned();
        match e.file_type() {
            Ok(t) if t.is_dir() => walk(root, &p, out),
            _ => out.push((rel, e.metadata().map(|m| m.len()).unwrap_or(0))),
        }
    }
}

/// Dockerd is a private Docker daemon (no iptables, no bridge, vfs storage) on its
/// own socket, stopped when dropped.
pub struct Dockerd {
    child: Child,
    dir: tempfile::TempDir,
    // One daemon at a time: tests run in parallel threads of one process.
    _turn: std::sync::MutexGuard<'static, ()>,
}

static DOCKERD_TURN: std::sync::Mutex<()> = std::sync::Mutex::new(());

impl Dockerd {
    /// Starts dockerd if it is installed and we are root; `None` (or a strict-mode
    /// panic) otherwise.
    pub fn start() -> Option<Dockerd> {
        if !require(
            which("dockerd").is_some() && which("docker").is_some(),
            "dockerd/docker are not installed",
        ) || !require(is_root(), "dockerd needs root")
        {
            return None;
        }
        let turn = DOCKERD_TURN.lock().unwrap_or_else(|p| p.into_inner());
        let dir = tempfile::Builder::new()
            .prefix("kiln-dockerd-")
            .tempdir()
            .expect("temp dir");
        let d = dir.path();
        let log: std::fs::File = fs_err::File::create(d.join("log")).expect("log file").into();
        let child = Command::new("dockerd")
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--storage-driver=vfs",
            ])
            .arg("--data-root")
            .arg(d.join("data"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("pid"))
            .arg("-H")
            .arg(format!("unix://{}", d.join("sock").display()))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let me = Dockerd {
            child,
            dir,
            _turn: turn,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if me
                .docker()
                .arg("info")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
            {
                return Some(me);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let log = fs_err::read_to_string(me.dir.path().join("log")).unwrap_or_default();
        panic!("dockerd did not come up within 60s:\n{log}");
    }

    /// This daemon's address, as `DOCKER_HOST` names it (`unix://…/sock`).
    pub fn host(&self) -> String {
        format!("unix://{}", self.dir.path().join("sock").display())
    }

    /// A `docker` command talking to this daemon.
    pub fn docker(&self) -> Command {
        let mut c = Command::new("docker");
        c.arg("-H")
            .arg(format!("unix://{}", self.dir.path().join("sock").display()));
        c
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        // SIGTERM lets dockerd unmount and stop its containerd.
        let _ = Command::new("kill").arg(self.child.id().to_string()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut exited = false;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                exited = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if !exited {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // dockerd 20.10 leaves its `exec/netns/default` mounted: the temp dir (a GiB of
        // vfs layers) could not be removed with it.
        unmount_below(self.dir.path());
    }
}

/// Detaches every mount at or below `dir`, deepest first.
fn unmount_below(dir: &Path) {
    let mounts = fs_err::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split(' ').nth(1))
        .filter(|p| Path::new(p).starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = rustix::mount::unmount(p, rustix::mount::UnmountFlags::DETACH);
    }
}

/// Runs a `docker` command made by `make` until it succeeds, at most three times, and
/// returns its stdout. dockerd 20.10's BuildKit, the tests' oracle, now and then fails a
/// build on its own side when the machine is loaded (seen in CI: `failed to stat
/// …/buildkit-mount…/rootfs/bin/shuf: no such file or directory` while sending a
/// context full of symlinks, and runc's `stat /bin/sh: no such file or directory`); such
/// a failure says nothing about kiln. Each failure is printed; the third fails the test.
pub fn docker_ok(make: impl Fn() -> Command) -> String {
    let mut failures = Vec::new();
    for attempt in 1..=3 {
        let mut cmd = make();
        let out = run(&mut cmd);
        if out.status.success() {
            return String::from_utf8_lossy(&out.stdout).into_owned();
        }
        let failure = format!(
            "{cmd:?} failed ({}), attempt {attempt} of 3:\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("{failure}");
        failures.push(failure);
    }
    panic!("docker failed three times:\n{}", failures.join("\n---\n"));
}

/// The workspace root (where `testdata/` lives).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// Registry is Debian's `docker-registry` serving a temp directory on a loopback port,
/// stopped when dropped.
pub struct Registry {
    child: Child,
    dir: tempfile::TempDir,
    /// `127.0.0.1:PORT`
    pub host: String,
}

impl Registry {
    /// Starts a registry if `docker-registry` is installed; `None` (or a strict-mode
    /// panic) otherwise.
    pub fn start() -> Option<Registry> {
        Self::start_with_auth(None)
    }

    /// Starts a registry that requires `user`/`password` (htpasswd basic auth).
    pub fn start_with_htpasswd(user: &str, password: &str) -> Option<Registry> {
        if !require(
            which("htpasswd").is_some(),
            "`htpasswd` (apache2-utils) is not installed",
        ) {
            return None;
        }
        Self::start_with_auth(Some((user, password)))
    }

    /// Starts a registry serving HTTPS with a self-signed certificate for 127.0.0.1
    /// (written to `ca_out` as PEM) and htpasswd auth.
    pub fn start_tls_htpasswd(user: &str, password: &str, ca_out: &Path) -> Option<Registry> {
        if !require(which("openssl").is_some(), "`openssl` is not installed")
            || !require(
                which("htpasswd").is_some(),
                "`htpasswd` (apache2-utils) is not installed",
            )
        {
            return None;
        }
        Self::start_full(Some((user, password)), Some(ca_out))
    }

    fn start_with_auth(auth: Option<(&str, &str)>) -> Option<Registry> {
        Self::start_full(auth, None)
    }

    fn start_full(auth: Option<(&str, &str)>, tls: Option<&Path>) -> Option<Registry> {
        if !require(which("docker-registry").is_some(), "`docker-registry` is not installed") {
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("kiln-registry-")
            .tempdir()
            .expect("temp dir");
        // Find a free port: bind to 0, read it, release it for the registry.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let host = format!("127.0.0.1:{port}");
        let mut config = format!(
            "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n",
            dir.path().join("data").display()
        );
        if let Some((user, password)) = auth {
            let line = run_ok(Command::new("htpasswd").args(["-Bbn", user, password]));
            let path = dir.path().join("htpasswd");
            fs_err::write(&path, line.trim()).expect("htpasswd file");
            config.push_str(&format!(
                "auth:\n  htpasswd:\n    realm: kiln-test\n    path: {}\n",
                path.display()
            ));
        }
        config.push_str(&format!("http:\n  addr: {host}\n"));
        if let Some(ca_out) = tls {
            // A CA and a leaf for 127.0.0.1 signed by it (webpki refuses a CA
            // certificate as the server's own).
            let d = dir.path();
            let (cert, key) = (d.join("cert.pem"), d.join("key.pem"));
            let ca_cert = d.join("ca.pem");
            let ossl = |args: &[&str]| run_ok(Command::new("openssl").current_dir(d).args(args));
            ossl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                "/CN=kiln test CA",
                "-keyout",
                "ca-key.pem",
                "-out",
                "ca.pem",
            ]);
            ossl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                "/CN=127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "leaf.csr",
            ]);
            fs_err::write(
                d.join("leaf.ext"),
                "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            )
            .expect("ext file");
            ossl(&[
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca-key.pem",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                "leaf.ext",
                "-out",
                "cert.pem",
            ]);
            fs_err::copy(&ca_cert, ca_out).expect("copy CA");
            // `http:` is the last key of the config, so `tls:` nests under it.
            config.push_str(&format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                cert.display(),
                key.display()
            ));
        }
        fs_err::write(dir.path().join("config.yml"), config).expect("registry config");
        let log: std::fs::File = fs_err::File::create(dir.path().join("log")).expect("log").into();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let me = Registry { child, dir, host };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if std::net::TcpStream::connect(&me.host).is_ok() {
                return Some(me);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("docker-registry did not listen on {} within 30s", me.host);
    }
}

impl Registry {
    /// Every request the registry has answered so far, as `METHOD /v2/…` (query
    /// strings dropped), read from its access log.
    pub fn requests(&self) -> Vec<String> {
        let log = fs_err::read_to_string(self.dir.path().join("log")).unwrap_or_default();
        let field = |line: &str, key: &str| -> Option<String> {
            let rest = &line[line.find(key)? + key.len()..];
            let v = match rest.strip_prefix('"') {
                Some(q) => &q[..q.find('"')?],
                None => rest.split(' ').next()?,
            };
            Some(v.split('?').next().unwrap_or(v).to_string())
        };
        log.lines()
            .filter(|l| l.contains("response completed"))
            .filter_map(|l| {
                Some(format!(
                    "{} {}",
                    field(l, "http.request.method=")?,
                    field(l, "http.request.uri=")?
                ))
            })
            .collect()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends signal `sig` (`libc::SIGKILL`, …) to process `pid`, a child the test started;
/// a process that is already gone is not an error.
pub fn kill(pid: u32, sig: i32) {
    let sig = rustix::process::Signal::from_named_raw(sig).unwrap_or_else(|| panic!("no signal {sig}"));
    let pid = i32::try_from(pid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .expect("a process id");
    match rustix::process::kill_process(pid, sig) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => {}
        Err(e) => panic!("kill {pid:?}: {e}"),
    }
}

/// Drops `files` from the page cache (fsync, then `POSIX_FADV_DONTNEED`), for tests of
/// what kiln does with files on the disk; false when the file system keeps them in
/// memory anyway (tmpfs): the first file's first byte is still readable without waiting
/// (`RWF_NOWAIT`). Use with [`require`].
pub fn evict_from_page_cache(files: &[PathBuf]) -> bool {
    for p in files {
        let f = fs_err::File::open(p).unwrap_or_else(|e| panic!("{e}"));
        f.sync_all()
            .unwrap_or_else(|e| panic!("cannot sync {}: {e}", p.display()));
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)
            .unwrap_or_else(|e| panic!("cannot fadvise {}: {e}", p.display()));
    }
    let Some(first) = files.first() else { return true };
    let f = fs_err::File::open(first).unwrap_or_else(|e| panic!("{e}"));
    let mut b = [0u8; 1];
    let cached = rustix::io::preadv2(
        &f,
        &mut [std::io::IoSliceMut::new(&mut b)],
        0,
        rustix::io::ReadWriteFlags::NOWAIT,
    );
    cached == Err(rustix::io::Errno::AGAIN)
}
