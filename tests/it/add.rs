//! ADD as BuildKit runs it: local archives extracted (by content, with their modes,
//! owners and times), confined to the destination; downloads from a loopback HTTP
//! server (name, mode 0600, `Last-Modified`, `--checksum`, cache keys that follow the
//! content); git repositories served over dumb HTTP (branch, tag, commit, `:subdir`,
//! `--keep-git-dir`).
//!
//! Expected values are BuildKit's, from its sources (`source/http`, `source/git`,
//! `solver/llbsolver/file/unpack*.go`), written down here.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};

use crate::cache::outcomes;
use crate::common::*;

/// One entry of an exported rootfs tar.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    kind: char,
    mode: u32,
    owner: (u64, u64),
    mtime: u64,
    data: Vec<u8>,
    link: Option<String>,
}

/// Builds `ctx` to a rootfs tar and lists it by path (directories end in `/`).
fn build_tree(k: &Kiln, ctx: &Path) -> BTreeMap<String, Entry> {
    let bytes = build_rootfs_tar(k, ctx);
    let mut ar = tar::Archive::new(bytes.as_slice());
    let mut out = BTreeMap::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut name = e.path().unwrap().display().to_string();
        name = name.trim_start_matches("./").to_string();
        let kind = match h.entry_type() {
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            _ => 'f',
        };
        if kind == 'd' && !name.ends_with('/') {
            name.push('/');
        }
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        let link = e.link_name().unwrap().map(|l| l.display().to_string());
        // A hard link's data is its target's (written earlier in the tar).
        if kind == 'h' {
            let target = link.as_deref().unwrap_or("").trim_start_matches("./");
            data = out.get(target).map(|t: &Entry| t.data.clone()).unwrap_or_default();
        }
        out.insert(
            name,
            Entry {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                owner: (h.uid().unwrap(), h.gid().unwrap()),
                mtime: h.mtime().unwrap(),
                data,
                link,
            },
        );
    }
    out
}

fn get<'a>(tree: &'a BTreeMap<String, Entry>, path: &str) -> &'a Entry {
    tree.get(path)
        .unwrap_or_else(|| panic!("`{path}` is not in the image: {:?}", tree.keys().collect::<Vec<_>>()))
}

/// A tar with `top/` (0750, 1000:1001), `top/<file>` (0640, 1234:5678), a symlink
/// and a hard link to it, with fixed times.
fn sample_tar(file: &str) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o750);
    h.set_uid(1000);
    h.set_gid(1001);
    h.set_mtime(1_600_000_000);
    h.set_size(0);
    b.append_data(&mut h, "top/", std::io::empty()).unwrap();
    let body = format!("content of {file}\n");
    let mut h = tar::Header::new_ustar();
    h.set_mode(0o640);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(1_500_000_000);
    h.set_size(body.len() as u64);
    b.append_data(&mut h, format!("top/{file}"), body.as_bytes()).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_mtime(1_400_000_000);
    h.set_size(0);
    b.append_link(&mut h, "top/link", file).unwrap();
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Link);
    h.set_mode(0o640);
    h.set_uid(1234);
    h.set_gid(5678);
    h.set_mtime(1_500_000_000);
    h.set_size(0);
    b.append_link(&mut h, "top/hard", format!("top/{file}")).unwrap();
    b.into_inner().unwrap()
}

/// Compresses `data` with a command-line tool (`gzip`, `bzip2`, `xz`, `zstd`).
fn compress(tool: &str, data: &[u8]) -> Option<Vec<u8>> {
    if !require_tool(tool) {
        return None;
    }
    let mut child = Command::new(tool)
        .args(["-c", "-q"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let input = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{tool} failed");
    Some(out.stdout)
}

fn write(dir: &Path, rel: &str, bytes: &[u8]) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

#[test]
fn local_archives_are_extracted_with_their_metadata() {
    let k = kiln();
    let ctx = context(&[]);
    let c = ctx.path();
    write(c, "a.tar", &sample_tar("plain.txt"));
    let kinds = [
        ("gzip", "b.tar.gz", "gz.txt"),
        ("bzip2", "c.tar.bz2", "bz2.txt"),
        ("xz", "d.tar.xz", "xz.txt"),
        ("zstd", "e.tar.zst", "zst.txt"),
    ];
    let mut present = Vec::new();
    for (tool, name, file) in kinds {
        if let Some(bytes) = compress(tool, &sample_tar(file)) {
            write(c, name, &bytes);
            present.push((name, file));
        }
    }
    write(c, "fake.tar.gz", b"just text, named like an archive\n");
    let mut df = String::from(
        "FROM scratch\n\
         ADD a.tar /plain\n\
         ADD fake.tar.gz /fake/\n\
         ADD --unpack=false a.tar /kept/\n\
         ADD --chown=7:8 --chmod=600 a.tar /owned/\n",
    );
    for (name, _) in &present {
        df.push_str(&format!("ADD {name} /multi/\n"));
    }
    write(c, "Dockerfile", df.as_bytes());
    let tree = build_tree(&k, c);

    // Extracted into `/plain` (a directory even without a trailing slash).
    let top = get(&tree, "plain/top/");
    assert_eq!(
        (top.kind, top.mode, top.owner, top.mtime),
        ('d', 0o750, (1000, 1001), 1_600_000_000)
    );
    // `hard` and `plain.txt` are one file (the exported tar lists it once, under the
    // first name, and the other as a hard link).
    let f = get(&tree, "plain/top/plain.txt");
    let h = get(&tree, "plain/top/hard");
    assert_eq!((h.kind, f.kind), ('f', 'h'));
    assert_eq!((f.mode, f.owner, f.mtime), (0o640, (1234, 5678), 1_500_000_000));
    assert_eq!((h.mode, h.owner, h.mtime), (0o640, (1234, 5678), 1_500_000_000));
    assert_eq!(f.data, b"content of plain.txt\n");
    let l = get(&tree, "plain/top/link");
    assert_eq!(
        (l.kind, l.link.as_deref(), l.mtime),
        ('l', Some("plain.txt"), 1_400_000_000)
    );
    assert_eq!(get(&tree, "plain/").kind, 'd');
    for (_, file) in &present {
        let f = get(&tree, &format!("multi/top/{file}"));
        assert_eq!((f.mode, f.owner, f.mtime), (0o640, (1234, 5678), 1_500_000_000));
        assert_eq!(f.data, format!("content of {file}\n").as_bytes());
    }
    // A file that is not an archive is copied as it is, whatever its name.
    assert_eq!(
        get(&tree, "fake/fake.tar.gz").data,
        b"just text, named like an archive\n"
    );
    // `--unpack=false` copies the archive.
    assert_eq!(get(&tree, "kept/a.tar").data, sample_tar("plain.txt"));
    assert!(!tree.contains_key("kept/top/"));
    // `--chown` replaces every owner; `--chmod` does not apply to extracted entries.
    let f = get(&tree, "owned/top/plain.txt");
    assert_eq!((f.mode, f.owner), (0o640, (7, 8)));
    assert_eq!(get(&tree, "owned/top/").owner, (7, 8));
}

/// A tar whose entries are written raw (the tar crate refuses `..` when building).
fn raw_tar(entries: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, body) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(*kind);
        h.set_mode(0o644);
        h.set_size(body.len() as u64);
        h.set_mtime(1_000_000_000);
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        b.append(&h, *body).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_archives_stay_inside_the_destination() {
    let k = kiln();
    use tar::EntryType::{Regular, Symlink};
    // `..` climbing out: refused, naming the line and the entry.
    let ctx = context(&[("Dockerfile", "FROM scratch\nADD evil.tar /x/\n")]);
    write(
        ctx.path(),
        "evil.tar",
        &raw_tar(&[("../../evil", Regular, "", b"pwned")]),
    );
    let err = k.fails(&["build", "-q", ctx.path().to_str().unwrap()]);
    assert!(err.contains("Dockerfile:2"), "{err}");
    assert!(
        err.contains("outside the extraction root") && err.contains("../../evil"),
        "{err}"
    );

    // A relative symlink leaving the destination, then a file through it: refused.
    let ctx = context(&[("Dockerfile", "FROM scratch\nADD evil.tar /x/\n")]);
    write(
        ctx.path(),
        "evil.tar",
        &raw_tar(&[("up", Symlink, "../..", b""), ("up/escaped", Regular, "", b"pwned")]),
    );
    let err = k.fails(&["build", "-q", ctx.path().to_str().unwrap()]);
    assert!(err.contains("points outside the extraction root"), "{err}");

    // An absolute symlink is followed with the destination as its root.
    let ctx = context(&[("Dockerfile", "FROM scratch\nADD evil.tar /x/\nADD evil.tar /x/\n")]);
    write(
        ctx.path(),
        "evil.tar",
        &raw_tar(&[("etc", Symlink, "/real", b""), ("etc/passwd", Regular, "", b"confined")]),
    );
    let tree = build_tree(&k, ctx.path());
    assert_eq!(get(&tree, "x/real/passwd").data, b"confined");
    assert_eq!(get(&tree, "x/etc").link.as_deref(), Some("/real"));
    assert!(!tree.contains_key("real/passwd") && !tree.contains_key("etc/passwd"));
}

/// What the loopback server answers for a path.
#[derive(Clone)]
struct Doc {
    body: Vec<u8>,
    headers: Vec<(String, String)>,
}

/// A small HTTP/1.1 server on loopback: `docs` by path, or files under `dirs`
/// prefixes (for dumb git). Honors `If-None-Match` against an `ETag` header.
struct Server {
    port: u16,
    docs: Arc<Mutex<HashMap<String, Doc>>>,
    dirs: Arc<Mutex<Vec<(String, PathBuf)>>>,
    /// Full bodies served, by path.
    served: Arc<Mutex<Vec<String>>>,
}

impl Server {
    fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let docs: Arc<Mutex<HashMap<String, Doc>>> = Arc::default();
        let dirs: Arc<Mutex<Vec<(String, PathBuf)>>> = Arc::default();
        let served: Arc<Mutex<Vec<String>>> = Arc::default();
        let (d, r, s) = (docs.clone(), dirs.clone(), served.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (d, r, s) = (d.clone(), r.clone(), s.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, &d, &r, &s);
                });
            }
        });
        Server {
            port,
            docs,
            dirs,
            served,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn put(&self, path: &str, body: &[u8], headers: &[(&str, &str)]) {
        self.docs.lock().unwrap().insert(
            path.to_string(),
            Doc {
                body: body.to_vec(),
                headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            },
        );
    }

    fn serve_dir(&self, prefix: &str, dir: &Path) {
        self.dirs.lock().unwrap().push((prefix.to_string(), dir.to_path_buf()));
    }

    fn served(&self, path: &str) -> usize {
        self.served.lock().unwrap().iter().filter(|p| *p == path).count()
    }
}

fn serve(
    conn: std::net::TcpStream,
    docs: &Mutex<HashMap<String, Doc>>,
    dirs: &Mutex<Vec<(String, PathBuf)>>,
    served: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/").to_string();
    let mut if_none_match = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("if-none-match") {
                if_none_match = Some(v.trim().to_string());
            }
        }
    }
    let doc = docs.lock().unwrap().get(&path).cloned().or_else(|| {
        dirs.lock().unwrap().iter().find_map(|(prefix, dir)| {
            let rel = path.strip_prefix(prefix.as_str())?;
            let file = dir.join(rel.trim_start_matches('/'));
            let body = std::fs::read(&file).ok()?;
            Some(Doc { body, headers: vec![] })
        })
    });
    let mut out = conn;
    let Some(doc) = doc else {
        return out.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    };
    let etag = doc
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("etag"))
        .map(|(_, v)| v.clone());
    let mut head = String::new();
    for (k, v) in &doc.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if etag.is_some() && etag == if_none_match {
        return out.write_all(format!("HTTP/1.1 304 Not Modified\r\n{head}Connection: close\r\n\r\n").as_bytes());
    }
    out.write_all(
        format!(
            "HTTP/1.1 200 OK\r\n{head}Content-Length: {}\r\nConnection: close\r\n\r\n",
            doc.body.len()
        )
        .as_bytes(),
    )?;
    if method != "HEAD" {
        served.lock().unwrap().push(path);
        out.write_all(&doc.body)?;
    }
    Ok(())
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(data)))
}

const LAST_MODIFIED: &str = "Wed, 21 Oct 2015 07:28:00 GMT";
const LAST_MODIFIED_UNIX: u64 = 1_445_412_480;

#[test]
fn downloads_are_named_moded_and_timed_as_buildkit() {
    let k = kiln();
    let s = Server::start();
    s.put("/files/app.bin", b"hello world\n", &[("Last-Modified", LAST_MODIFIED)]);
    s.put("/files/plain", b"no date\n", &[]);
    let archive = compress("gzip", &sample_tar("remote.txt")).unwrap_or_else(|| sample_tar("remote.txt"));
    s.put("/files/arch.tar.gz", &archive, &[]);
    let sum = sha256(b"hello world\n");
    let df = format!(
        "FROM scratch\n\
         ADD {app} /dl/\n\
         ADD {app} /renamed\n\
         ADD --chmod=755 --chown=3:4 {app} /perm/\n\
         ADD {plain} /plain/\n\
         ADD {arch} /notunpacked/\n\
         ADD --unpack=true {arch} /unpacked/\n\
         ADD --checksum={sum} {app} /sum/\n",
        app = s.url("/files/app.bin"),
        plain = s.url("/files/plain"),
        arch = s.url("/files/arch.tar.gz"),
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let tree = build_tree(&k, ctx.path());
    let f = get(&tree, "dl/app.bin");
    assert_eq!(
        (f.kind, f.mode, f.owner, f.mtime),
        ('f', 0o600, (0, 0), LAST_MODIFIED_UNIX)
    );
    assert_eq!(f.data, b"hello world\n");
    assert_eq!(get(&tree, "renamed").data, b"hello world\n");
    let f = get(&tree, "perm/app.bin");
    assert_eq!((f.mode, f.owner), (0o755, (3, 4)));
    // Without `Last-Modified` the file has the Unix epoch as its time.
    assert_eq!(get(&tree, "plain/plain").mtime, 0);
    assert_eq!(get(&tree, "notunpacked/arch.tar.gz").data, archive);
    assert!(!tree.contains_key("notunpacked/top/"));
    assert_eq!(get(&tree, "unpacked/top/remote.txt").data, b"content of remote.txt\n");
    assert_eq!(get(&tree, "sum/app.bin").data, b"hello world\n");
}

#[test]
fn a_checksum_mismatch_names_the_line_and_both_digests() {
    let k = kiln();
    let s = Server::start();
    s.put("/x.bin", b"actual bytes\n", &[]);
    let wrong = sha256(b"other bytes\n");
    let df = format!("FROM scratch\n\nADD --checksum={wrong} {} /x.bin\n", s.url("/x.bin"));
    let ctx = context(&[("Dockerfile", &df)]);
    let err = k.fails(&["build", "-q", ctx.path().to_str().unwrap()]);
    assert!(err.contains("Dockerfile:3"), "{err}");
    assert!(
        err.contains(&wrong) && err.contains(&sha256(b"actual bytes\n")),
        "{err}"
    );
    assert!(err.contains("checksum mismatch"), "{err}");
}

#[test]
fn a_download_step_reruns_exactly_when_the_content_changes() {
    let k = kiln();
    let s = Server::start();
    s.put("/data.txt", b"v1\n", &[]);
    s.put("/tagged.txt", b"t1\n", &[("ETag", "\"one\"")]);
    let df = format!(
        "FROM scratch\nADD {} /tagged.txt\nADD {} /data.txt\n",
        s.url("/tagged.txt"),
        s.url("/data.txt")
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let build = || {
        let out = run(k
            .cmd()
            .args(["build", "--progress=plain", ctx.path().to_str().unwrap()]));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        outcomes(&err)
            .into_iter()
            .map(|(d, cached)| (d.split_whitespace().next_back().unwrap_or("").to_string(), cached))
            .collect::<Vec<_>>()
    };
    let steps = build();
    assert_eq!(steps, vec![("/tagged.txt".into(), false), ("/data.txt".into(), false)]);
    let steps = build();
    assert_eq!(steps, vec![("/tagged.txt".into(), true), ("/data.txt".into(), true)]);
    // The ETag was asked about, and the body not sent again.
    assert_eq!(s.served("/tagged.txt"), 1);
    assert_eq!(s.served("/data.txt"), 2);
    s.put("/data.txt", b"v2\n", &[]);
    let steps = build();
    assert_eq!(steps, vec![("/tagged.txt".into(), true), ("/data.txt".into(), false)]);
    // Same bytes again under a new date: BuildKit keys `Last-Modified` too.
    s.put("/data.txt", b"v2\n", &[("Last-Modified", LAST_MODIFIED)]);
    let steps = build();
    assert_eq!(steps, vec![("/tagged.txt".into(), true), ("/data.txt".into(), false)]);
}

/// Runs git in `dir` with fixed identities and times.
fn git(dir: &Path, args: &[&str]) -> String {
    run_ok(
        Command::new("git")
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .args(args),
    )
    .trim()
    .to_string()
}

fn commit(dir: &Path, message: &str, time: u64) -> String {
    git(dir, &["add", "-A"]);
    run_ok(
        Command::new("git")
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .env("GIT_AUTHOR_DATE", format!("{time} +0000"))
            .env("GIT_COMMITTER_DATE", format!("{time} +0000"))
            .args(["commit", "-q", "-m", message]),
    );
    git(dir, &["rev-parse", "HEAD"])
}

/// A repository with three commits on `main` (the second tagged `v1`, annotated) and
/// a bare clone of it ready for dumb HTTP: (work tree, bare clone, first commit).
fn sample_repo(work: &Path) -> (PathBuf, PathBuf, String) {
    let src = work.join("src");
    std::fs::create_dir(&src).unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    write(&src, "a.txt", b"one\n");
    let first = commit(&src, "one", 1_600_000_000);
    write(&src, "a.txt", b"two\n");
    write(&src, "run.sh", b"#!/bin/sh\n");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(src.join("run.sh"), std::fs::Permissions::from_mode(0o775)).unwrap();
    }
    commit(&src, "two", 1_600_000_100);
    git(&src, &["tag", "-a", "v1", "-m", "v1"]);
    write(&src, "a.txt", b"three\n");
    write(&src, "sub/s.txt", b"sub\n");
    commit(&src, "three", 1_600_000_200);
    let bare = work.join("repo.git");
    run_ok(Command::new("git").args(["clone", "-q", "--bare"]).arg(&src).arg(&bare));
    git(&bare, &["update-server-info"]);
    (src, bare, first)
}

#[test]
fn git_sources_check_out_branches_tags_commits_and_subdirs() {
    if !require_tool("git") {
        return;
    }
    let k = kiln();
    let work = tempfile::tempdir().unwrap();
    let (src, bare, first) = sample_repo(work.path());
    // Served over dumb HTTP from a bare clone.
    let s = Server::start();
    s.serve_dir("/repo.git", &bare);
    let repo = s.url("/repo.git");
    let df = format!(
        "FROM scratch\n\
         ADD {repo}#main /branch/\n\
         ADD {repo}#v1 /tag/\n\
         ADD {repo}#{first} /commit/\n\
         ADD {repo}#main:sub /subdir/\n\
         ADD {repo} /head/\n\
         ADD --keep-git-dir=true {repo}#v1 /kept/\n"
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let tree = build_tree(&k, ctx.path());
    let a = get(&tree, "branch/a.txt");
    assert_eq!(a.data, b"three\n");
    // Owned by root, git's modes, the commit's time.
    assert_eq!((a.mode, a.owner, a.mtime), (0o644, (0, 0), 1_600_000_200));
    assert_eq!(get(&tree, "branch/sub/s.txt").data, b"sub\n");
    assert_eq!(get(&tree, "branch/run.sh").mode, 0o755);
    assert!(!tree.keys().any(|p| p.starts_with("branch/.git")), "no .git by default");
    assert_eq!(get(&tree, "tag/a.txt").data, b"two\n");
    assert_eq!(get(&tree, "tag/a.txt").mtime, 1_600_000_100);
    assert!(!tree.contains_key("tag/sub/"));
    assert_eq!(get(&tree, "commit/a.txt").data, b"one\n");
    assert!(!tree.contains_key("commit/run.sh"));
    assert_eq!(get(&tree, "subdir/s.txt").data, b"sub\n");
    assert!(!tree.contains_key("subdir/a.txt"));
    assert_eq!(get(&tree, "head/a.txt").data, b"three\n");
    assert_eq!(get(&tree, "kept/a.txt").data, b"two\n");
    assert!(tree.contains_key("kept/.git/HEAD"), "--keep-git-dir keeps .git");

    // The commit is the cache key: a new commit on the branch re-runs the step.
    let df = format!("FROM scratch\nADD {repo}#main /src/\n");
    let ctx = context(&[("Dockerfile", &df)]);
    let build = || {
        let out = run(k
            .cmd()
            .args(["build", "--progress=plain", ctx.path().to_str().unwrap()]));
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{err}");
        outcomes(&err).into_iter().map(|(_, c)| c).collect::<Vec<_>>()
    };
    assert_eq!(build(), vec![false]);
    assert_eq!(build(), vec![true]);
    write(&src, "a.txt", b"four\n");
    commit(&src, "four", 1_600_000_300);
    run_ok(
        Command::new("git")
            .current_dir(&src)
            .args(["push", "-q"])
            .arg(&bare)
            .arg("main"),
    );
    git(&bare, &["update-server-info"]);
    assert_eq!(build(), vec![false]);
}

/// `git daemon` on loopback, stopped when dropped.
struct GitDaemon(std::process::Child);

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn git_protocol_sources_fetch_shallow() {
    if !require_tool("git") {
        return;
    }
    let k = kiln();
    let work = tempfile::tempdir().unwrap();
    let (_src, _bare, first) = sample_repo(work.path());
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    // `git-daemon` itself (not the `git` wrapper, which would leave it running when
    // killed), with no output tied to the test's pipes.
    let exec_path = git(work.path(), &["--exec-path"]);
    let _daemon = GitDaemon(
        Command::new(Path::new(&exec_path).join("git-daemon"))
            .args(["--reuseaddr", "--export-all", "--listen=127.0.0.1"])
            .arg(format!("--port={port}"))
            .arg(format!("--base-path={}", work.path().display()))
            .arg(work.path())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    // Wait until it listens.
    let up = (0..100).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "git daemon did not start");
    let repo = format!("git://127.0.0.1:{port}/repo.git");
    let df = format!(
        "FROM scratch\n\
         ADD {repo}#v1 /tag/\n\
         ADD {repo}#{first} /commit/\n\
         ADD --keep-git-dir=true {repo}#main /kept/\n"
    );
    let ctx = context(&[("Dockerfile", &df)]);
    let tree = build_tree(&k, ctx.path());
    assert_eq!(get(&tree, "tag/a.txt").data, b"two\n");
    assert_eq!(get(&tree, "commit/a.txt").data, b"one\n");
    assert_eq!(get(&tree, "kept/a.txt").data, b"three\n");
    // The smart protocol allows a shallow fetch: one commit, no history.
    assert!(tree.contains_key("kept/.git/shallow"), "a shallow clone");
}
