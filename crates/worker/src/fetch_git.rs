//! Git checkouts for `ADD <git url>`, made with the `git` binary as BuildKit's git
//! source does (`source/git/source.go`):
//! - the reference resolves to a commit with `git ls-remote` (a full commit hash is
//!   taken as is); a branch wins over a tag of the same name, an annotated tag counts
//!   as the commit it points to; that commit is the cache key;
//! - the commit is fetched shallow where the server allows it (dumb HTTP does not:
//!   then the whole history of the ref is fetched), checked out, and submodules are
//!   checked out too (unless `?submodules=false`);
//! - `.git` is removed unless `--keep-git-dir=true`; with a `:subdir` only that
//!   directory is kept (resolved inside the checkout);
//! - files get git's modes (0644, or 0755 when executable; directories 0755, as git
//!   under BuildKit's umask 022), and every file, link and directory the commit's time
//!   as mtime — BuildKit's reproducible `mtime=commit` mode rather than its default
//!   checkout time, so a checkout always makes the same layer.
//!
//! Git never prompts (`GIT_TERMINAL_PROMPT=0`); credentials come from the user's git
//! and ssh configuration.

#![allow(
    clippy::disallowed_methods,
    reason = "io errors here become `WorkerError::Io { path }` or name the path in their message"
)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use kiln_cache::KilnRoot;

use crate::fetch_http::redact;
use crate::WorkerError;

/// A resolved reference: the commit and the ref to fetch it by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Resolved {
    pub commit: String,
    /// `refs/heads/…`, `refs/tags/…`, `HEAD`, or the commit itself.
    pub fetch: String,
}

/// A checked out tree (`root`, inside `dir`).
#[derive(Debug, Clone)]
pub(crate) struct Checkout {
    pub dir: Arc<tempfile::TempDir>,
    pub root: PathBuf,
}

fn fail(remote: &str, message: impl Into<String>) -> WorkerError {
    WorkerError::Git {
        remote: redact(remote),
        message: message.into(),
    }
}

fn git() -> Command {
    let mut c = Command::new("git");
    c.env("GIT_TERMINAL_PROMPT", "0")
        .env("LC_ALL", "C")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .stdin(std::process::Stdio::null());
    c
}

/// Runs git and returns its stdout; a failure carries git's last words.
fn run(remote: &str, cmd: &mut Command) -> Result<String, WorkerError> {
    let out = cmd
        .output()
        .map_err(|e| fail(remote, format!("cannot run `git`: {e}")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
        let tail = tail[tail.len().saturating_sub(3)..].join("; ");
        const SUBCOMMANDS: [&str; 8] = [
            "ls-remote",
            "init",
            "remote",
            "fetch",
            "checkout",
            "submodule",
            "log",
            "cat-file",
        ];
        let what = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .find(|a| SUBCOMMANDS.contains(&a.as_str()))
            .unwrap_or_default();
        return Err(fail(remote, format!("git {what} failed: {}", redact(&tail))));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn is_commit_hash(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Resolves `reference` (empty: the remote's HEAD) to a commit, and checks it
/// against `checksum` (a full or abbreviated commit hash).
pub(crate) fn resolve(remote: &str, reference: &str, checksum: Option<&str>) -> Result<Resolved, WorkerError> {
    let resolved = if is_commit_hash(reference) {
        Resolved {
            commit: reference.to_ascii_lowercase(),
            fetch: reference.to_ascii_lowercase(),
        }
    } else {
        let pattern = if reference.is_empty() { "HEAD" } else { reference };
        let out = run(remote, git().args(["ls-remote", "--", remote, pattern]))?;
        pick_ref(&out, pattern).ok_or_else(|| fail(remote, format!("repository does not contain ref `{pattern}`")))?
    };
    if let Some(c) = checksum {
        if !resolved.commit.starts_with(&c.to_ascii_lowercase()) {
            return Err(fail(
                remote,
                format!(
                    "`{}` is commit `{}`, but the checksum expects `{c}`",
                    if reference.is_empty() { "HEAD" } else { reference },
                    resolved.commit
                ),
            ));
        }
    }
    Ok(resolved)
}

/// Picks the commit for `reference` from `git ls-remote` output (BuildKit's rules:
/// an exact `refs/…` name, else a branch, else a tag, its peeled `^{}` line winning).
fn pick_ref(ls_remote: &str, reference: &str) -> Option<Resolved> {
    let partial = format!("refs/{}", reference.trim_start_matches("refs/"));
    let head = format!("refs/heads/{}", reference.trim_start_matches("refs/heads/"));
    let tag = format!("refs/tags/{}", reference.trim_start_matches("refs/tags/"));
    let peeled = format!("{tag}^{{}}");
    let (mut exact, mut branch, mut tagged) = (None, None, None);
    for line in ls_remote.lines() {
        let Some((sha, name)) = line.split_once('\t') else {
            continue;
        };
        let sha = sha.trim().to_string();
        if reference == "HEAD" && name == "HEAD" {
            exact = Some((sha, name.to_string()));
        } else if name == head {
            branch = Some((sha, name.to_string()));
        } else if name == tag || name == peeled {
            tagged = Some((sha, tag.clone()));
        } else if name == partial {
            exact = Some((sha, name.to_string()));
        }
    }
    let (commit, fetch) = exact.or(branch).or(tagged)?;
    Some(Resolved { commit, fetch })
}

/// Fetches and checks out `r.commit` of `remote` into a fresh directory of the
/// kiln root, and returns the tree to copy (`subdir` of it, when given).
pub(crate) fn checkout(
    root: &KilnRoot,
    remote: &str,
    r: &Resolved,
    subdir: &str,
    keep_git_dir: bool,
    submodules: bool,
) -> Result<Checkout, WorkerError> {
    let tmp = root.tmp_dir();
    let dir = tempfile::Builder::new()
        .prefix("add-git-")
        .tempdir_in(&tmp)
        .map_err(|source| WorkerError::Io { path: tmp, source })?;
    let repo = dir.path().join("checkout");
    let repo_s = repo.to_string_lossy().into_owned();
    run(remote, git().args(["init", "-q", &repo_s]))?;
    let in_repo = || {
        let mut c = git();
        c.arg("-C").arg(&repo);
        c
    };
    run(remote, in_repo().args(["remote", "add", "origin", remote]))?;
    let has_commit = |c: &str| {
        in_repo()
            .args(["cat-file", "-e", &format!("{c}^{{commit}}")])
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    // Shallow first; dumb HTTP and servers that refuse a bare commit need more.
    let attempts: [&[&str]; 3] = [
        &["fetch", "-q", "--no-tags", "--depth=1", "origin", &r.fetch],
        &["fetch", "-q", "--no-tags", "origin", &r.fetch],
        &[
            "fetch",
            "-q",
            "origin",
            "+refs/heads/*:refs/remotes/origin/*",
            "+refs/tags/*:refs/tags/*",
        ],
    ];
    let mut last = None;
    for args in attempts {
        match run(remote, in_repo().args(args)) {
            Ok(_) if has_commit(&r.commit) => {
                last = None;
                break;
            }
            Ok(_) => last = Some(fail(remote, format!("commit `{}` was not fetched", r.commit))),
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        return Err(e);
    }
    run(
        remote,
        in_repo().args(["-c", "advice.detachedHead=false", "checkout", "-q", &r.commit]),
    )?;
    if submodules && repo.join(".gitmodules").exists() {
        let shallow = run(
            remote,
            in_repo().args(["submodule", "update", "-q", "--init", "--recursive", "--depth=1"]),
        );
        if shallow.is_err() {
            run(
                remote,
                in_repo().args(["submodule", "update", "-q", "--init", "--recursive"]),
            )?;
        }
    }
    let time = run(remote, in_repo().args(["log", "-1", "--format=%ct", &r.commit]))?;
    let time: i64 = time
        .trim()
        .parse()
        .map_err(|_| fail(remote, format!("cannot read the time of commit `{}`", r.commit)))?;
    if !keep_git_dir {
        let git_dir = repo.join(".git");
        std::fs::remove_dir_all(&git_dir).map_err(|source| WorkerError::Io { path: git_dir, source })?;
    }
    let tree = if subdir.is_empty() || crate::copy::clean_abs(subdir).as_os_str().is_empty() {
        repo.clone()
    } else {
        let rel = crate::copy::clean_abs(subdir);
        let p = kiln_snapshotter::resolve_in_root(&repo, &rel, true)
            .map_err(|reason| fail(remote, format!("subdir `{subdir}`: {reason}")))?;
        if !p.is_dir() {
            return Err(fail(
                remote,
                format!("subdir `{subdir}` is not a directory of the commit"),
            ));
        }
        p
    };
    normalize(&tree, time).map_err(|(path, source)| WorkerError::Io { path, source })?;
    Ok(Checkout {
        dir: Arc::new(dir),
        root: tree,
    })
}

/// Gives the tree git's modes (outside `.git`) and every entry the commit time.
fn normalize(root: &Path, time: i64) -> Result<(), (PathBuf, std::io::Error)> {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs = Vec::new();
    let walk = walkdir::WalkDir::new(root).follow_links(false);
    for e in walk {
        let e = e.map_err(|e| {
            let p = e.path().map(Path::to_path_buf).unwrap_or_default();
            (p, std::io::Error::other(e.to_string()))
        })?;
        let p = e.path();
        let md = e.path().symlink_metadata().map_err(|err| (p.to_path_buf(), err))?;
        let in_git = p
            .strip_prefix(root)
            .ok()
            .and_then(|r| r.components().next())
            .is_some_and(|c| c.as_os_str() == ".git");
        let ft = md.file_type();
        if !in_git && !ft.is_symlink() {
            let mode = if ft.is_dir() || md.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            };
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).map_err(|err| (p.to_path_buf(), err))?;
        }
        if ft.is_dir() {
            dirs.push(p.to_path_buf());
        } else {
            kiln_snapshotter::set_mtime(p, time).map_err(|err| (p.to_path_buf(), err))?;
        }
    }
    // Children first, so writing them does not move their directory's time.
    for d in dirs.iter().rev() {
        kiln_snapshotter::set_mtime(d, time).map_err(|err| (d.clone(), err))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refs_resolve_as_buildkit_does() {
        let out = "aaaa\tHEAD\nbbbb\trefs/heads/main\ncccc\trefs/tags/v1\ndddd\trefs/tags/v1^{}\neeee\trefs/heads/v1\n";
        let r = |name| pick_ref(out, name).map(|r| (r.commit, r.fetch));
        assert_eq!(r("HEAD"), Some(("aaaa".into(), "HEAD".into())));
        assert_eq!(r("main"), Some(("bbbb".into(), "refs/heads/main".into())));
        // A branch wins over a tag of the same name.
        assert_eq!(r("v1"), Some(("eeee".into(), "refs/heads/v1".into())));
        // An annotated tag is the commit it points to.
        assert_eq!(r("refs/tags/v1"), Some(("dddd".into(), "refs/tags/v1".into())));
        assert_eq!(r("nope"), None);
        assert!(is_commit_hash(&"a".repeat(40)));
        assert!(!is_commit_hash("abc123"));
    }
}
