//! ADD's remote sources in the worker: HTTP(S) downloads and git checkouts.
//!
//! As in BuildKit, a remote source is keyed before anything is built from it: a
//! download by its body's digest (fetched to know it, unless `--checksum` names it) and
//! `Last-Modified`, a git source by the commit its reference resolves to. The tree a
//! step copies from is made only when that step runs, so a cached step with
//! `--checksum` or a known commit fetches nothing more. Files of remote sources are
//! owned by 0:0 unless `--chown` (the copy treats them as build-context files).
//! Fetching is in [`crate::fetch_http`] and [`crate::fetch_git`]; archive extraction
//! (`--unpack`) in [`crate::unpack`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kiln_graph::SourceOp;
use kiln_image::Digest;

use crate::{fetch_git, fetch_http, Value, Worker, WorkerError};

/// Remote is the value of an HTTP or git source op.
#[derive(Debug)]
pub struct Remote {
    op: SourceOp,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// What keying the op found out (the download itself, or the commit).
    resolved: Option<Resolved>,
    /// The tree copies read, once made (kept alive by the directory guard).
    tree: Option<(Arc<tempfile::TempDir>, PathBuf)>,
}

#[derive(Debug, Clone)]
pub(crate) enum Resolved {
    Http(fetch_http::Download),
    Git(fetch_git::Resolved),
}

/// RemoteMemo hands what keying a remote op found out to its run.
#[derive(Debug, Default)]
pub(crate) struct RemoteMemo(Mutex<HashMap<Digest, Resolved>>);

impl RemoteMemo {
    fn put(&self, op: &SourceOp, r: Resolved) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(op_key(op), r);
    }

    fn get(&self, op: &SourceOp) -> Option<Resolved> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&op_key(op))
            .cloned()
    }
}

fn op_key(op: &SourceOp) -> Digest {
    Digest::of(&serde_json::to_vec(op).expect("graph types serialise"))
}

impl Remote {
    /// How copy errors name this source.
    pub(crate) fn label(&self) -> String {
        match &self.op {
            SourceOp::Http { url, .. } => format!("the download `{}`", fetch_http::redact(url)),
            SourceOp::Git { remote, .. } => format!("git repository `{}`", fetch_http::redact(remote)),
            _ => "a remote source".to_string(),
        }
    }
}

impl Worker {
    /// What an HTTP or git source op resolved to in this build, once keyed: the body's
    /// digest (`sha256:…`), or the commit (provenance materials).
    pub fn resolved_source(&self, op: &SourceOp) -> Option<String> {
        match self.remote.get(op)? {
            Resolved::Http(d) => Some(d.digest.to_string()),
            Resolved::Git(g) => Some(g.commit),
        }
    }

    /// The content key of an HTTP or git source op (`None` for other ops).
    pub(crate) fn remote_content_key(&self, op: &SourceOp) -> Result<Option<Digest>, WorkerError> {
        let key = match op {
            SourceOp::Http {
                url,
                filename,
                checksum,
            } => match checksum {
                Some(c) => format!("http\n{filename}\nchecksum {c}\n"),
                None => {
                    let d = fetch_http::download(&self.root, url, filename, None)?;
                    let key = format!(
                        "http\n{filename}\ndigest {}\nlast-modified {}\n",
                        d.digest,
                        d.last_modified.as_deref().unwrap_or("")
                    );
                    self.remote.put(op, Resolved::Http(d));
                    key
                }
            },
            SourceOp::Git {
                remote,
                reference,
                checksum,
                ..
            } => {
                let r = fetch_git::resolve(remote, reference, checksum.as_deref())?;
                let key = format!("git\ncommit {}\n", r.commit);
                self.remote.put(op, Resolved::Git(r));
                key
            }
            _ => return Ok(None),
        };
        Ok(Some(Digest::of(key.as_bytes())))
    }

    /// The value of an HTTP or git source op: nothing is fetched yet.
    pub(crate) fn remote_value(&self, op: &SourceOp) -> Value {
        Value::Remote(Arc::new(Remote {
            op: op.clone(),
            state: Mutex::new(State {
                resolved: self.remote.get(op),
                tree: None,
            }),
        }))
    }

    /// The directory a copy from `r` reads, fetched on first use.
    pub(crate) fn remote_tree(&self, r: &Remote) -> Result<(Arc<tempfile::TempDir>, PathBuf), WorkerError> {
        let mut st = r.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = &st.tree {
            return Ok(t.clone());
        }
        let tree = match &r.op {
            SourceOp::Http {
                url,
                filename,
                checksum,
            } => {
                let d = match &st.resolved {
                    Some(Resolved::Http(d)) => d.clone(),
                    _ => {
                        let expect = match checksum {
                            Some(c) => Some(
                                c.parse::<Digest>()
                                    .map_err(|e| WorkerError::Malformed(format!("checksum `{c}` of `{url}`: {e}")))?,
                            ),
                            None => None,
                        };
                        fetch_http::download(&self.root, url, filename, expect.as_ref())?
                    }
                };
                let root = d.dir.path().to_path_buf();
                (d.dir, root)
            }
            SourceOp::Git {
                remote,
                reference,
                subdir,
                keep_git_dir,
                checksum,
                skip_submodules,
            } => {
                let resolved = match &st.resolved {
                    Some(Resolved::Git(g)) => g.clone(),
                    _ => fetch_git::resolve(remote, reference, checksum.as_deref())?,
                };
                let c = fetch_git::checkout(&self.root, remote, &resolved, subdir, *keep_git_dir, !skip_submodules)?;
                (c.dir, c.root)
            }
            other => return Err(WorkerError::Malformed(format!("not a remote source: {other:?}"))),
        };
        st.tree = Some(tree.clone());
        Ok(tree)
    }
}
