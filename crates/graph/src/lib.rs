//! kiln-graph is the build IR: a content-addressed DAG of operations.
//!
//! The frontend lowers a Dockerfile into a [`Definition`]; the solver executes it. An
//! op's digest is the sha256 of its canonical JSON encoding (op + inputs), so identical
//! work in two stages has one digest and runs once. Metadata that does not change the
//! result (descriptions, source spans) lives beside the op and is not hashed.

use std::collections::BTreeMap;

use kiln_image::{Digest, Platform};
use serde::{Deserialize, Serialize};

mod chmod;
pub use chmod::{Chmod, ChmodError, SymbolicMode};

/// Input names one output of another op by that op's digest.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Input {
    pub op: Digest,
    #[serde(default)]
    pub output: u32,
}

/// Op is one unit of work.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Produces a filesystem from outside the graph.
    Source(SourceOp),
    /// Changes a filesystem without running a container (COPY, WORKDIR's mkdir).
    File(FileOp),
    /// Runs a process in a container over its first input (RUN).
    Exec(ExecOp),
}

/// SourceOp names where a filesystem comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceOp {
    /// The empty filesystem (`FROM scratch`).
    Scratch,
    /// A registry image, by normalised reference, for a platform.
    Image { reference: String, platform: Platform },
    /// A local directory handed to the build, e.g. `context`; `exclude` holds the
    /// .dockerignore patterns, `include` narrows the transfer to what the build reads.
    Local {
        name: String,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        include: Vec<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        exclude: Vec<String>,
    },
    /// One file downloaded over HTTP(S) (`ADD <url>`), named `filename`, mode 0600,
    /// owned by 0:0, its mtime the response's `Last-Modified` (BuildKit's `llb.HTTP`).
    Http {
        url: String,
        filename: String,
        /// `--checksum`: the `sha256:` digest the body must have.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
    },
    /// A git repository checked out at `reference` (a branch, tag or commit; empty for
    /// the remote's HEAD), or only its `subdir` (`ADD <git url>`, BuildKit's `llb.Git`).
    Git {
        remote: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reference: String,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        subdir: String,
        #[serde(default, skip_serializing_if = "is_false")]
        keep_git_dir: bool,
        /// `--checksum` (or `?checksum=`): the commit the reference must resolve to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        checksum: Option<String>,
        /// `?submodules=false`: submodules are not checked out.
        #[serde(default, skip_serializing_if = "is_false")]
        skip_submodules: bool,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// FileOp applies actions, in order, to a copy of its base filesystem.
///
/// `base` is the index in the node's inputs of the filesystem changed, or `None` to
/// start from scratch. Copy actions read from other inputs by index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOp {
    pub base: Option<u32>,
    pub actions: Vec<FileAction>,
}

/// Owner is a user and group for created files; names are resolved in the base image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserSpec {
    Id(u32),
    Name(String),
}

/// ChownOpt is a parsed `--chown=user[:group]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChownOpt {
    pub user: UserSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<UserSpec>,
}

/// FileAction is one step of a FileOp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileAction {
    /// Copies `src` (a path or glob, relative to the root of input `input`) to `dest`
    /// (absolute). Docker rules: a directory source copies its contents; a `dest` ending
    /// in `/`, or several sources, make `dest` a directory.
    Copy(CopyAction),
    /// Creates a directory (WORKDIR), with parents.
    Mkdir {
        path: String,
        mode: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chown: Option<ChownOpt>,
    },
    /// Writes a file with the given bytes (COPY heredocs); shared with the frontend's
    /// parse, since a heredoc body may be megabytes.
    Mkfile {
        path: String,
        mode: u32,
        data: std::sync::Arc<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        chown: Option<ChownOpt>,
    },
}

/// CopyAction is a COPY/ADD of one source path or glob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyAction {
    pub input: u32,
    pub src: String,
    pub dest: String,
    /// `dest` names a directory even for a single file source.
    pub dest_is_dir: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chown: Option<ChownOpt>,
    /// `--chmod`: applied to every copied file and directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chmod: Option<Chmod>,
    /// The source may contain `*`, `?` and `[...]` globs.
    pub allow_wildcard: bool,
    /// A glob matching nothing is not an error.
    pub allow_empty_wildcard: bool,
    /// Patterns (relative to the source root) left out of the copy (`--exclude`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// `ADD`: a source file that is a tar archive (plain, gzip, bzip2, xz or zstd, told
    /// by its content) is extracted into `dest` instead of copied.
    #[serde(default, skip_serializing_if = "is_false")]
    pub unpack: bool,
    /// `COPY --parents`: `src` is then the directory the kept paths start from (the
    /// part before a `/./`, else the root), and this the pattern below it of what is
    /// copied; each match lands at `dest/<its path below src>`, with the directories
    /// on the way copied from the source (BuildKit's include pattern).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parents: Option<String>,
}

/// ExecOp runs a command over input 0 (RUN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecOp {
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    pub network: NetworkMode,
    /// `RUN --security`: `insecure` runs the step without the sandbox's restrictions
    /// (needs the `security.insecure` entitlement). Not encoded when `sandbox`, so the
    /// digests of ordinary steps do not change.
    #[serde(default, skip_serializing_if = "SecurityMode::is_sandbox")]
    pub security: SecurityMode,
    pub platform: Platform,
    /// `RUN --mount`s (and a heredoc script), in Dockerfile order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<Mount>,
    /// `--add-host` entries, added to the step's `/etc/hosts` in order; part of the
    /// digest as BuildKit's ExecOp extra hosts are (not encoded when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_hosts: Vec<ExtraHost>,
}

/// One `--add-host`: a name and the address it resolves to in the step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExtraHost {
    pub host: String,
    pub ip: std::net::IpAddr,
}

/// Mount is one `RUN --mount`: what appears at `target` while the step runs (never in
/// its layer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub target: String,
    #[serde(flatten)]
    pub kind: MountKind,
}

/// The kinds of `RUN --mount`, as BuildKit has them (`File` carries a heredoc script).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MountKind {
    /// A path of another input (the build context, a stage, an image).
    Bind { input: u32, source: String, readonly: bool },
    /// A directory kept between builds, by id.
    Cache {
        id: String,
        sharing: CacheSharing,
        readonly: bool,
        mode: u32,
        uid: u32,
        gid: u32,
        /// Seeded from this input path when first created.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        seed: Option<(u32, String)>,
        /// `mode`, `uid` or `gid` was given. BuildKit then makes the cache on top of a
        /// directory it creates with them, so it is a different cache from the same id
        /// without them (one on top of a ref, like a seeded one).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        perms: bool,
    },
    /// An empty tmpfs.
    Tmpfs {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        size: Option<u64>,
    },
    /// A secret file given to the build (`--secret id=…`).
    Secret {
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        env: Option<String>,
    },
    /// An SSH agent socket given to the build (`--ssh`).
    Ssh {
        id: String,
        required: bool,
        mode: u32,
        uid: u32,
        gid: u32,
    },
    /// A read-only file with this content (a RUN heredoc run by its `#!` interpreter).
    File { data: String, mode: u32 },
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheSharing {
    Shared,
    Private,
    Locked,
}

/// NetworkMode is a RUN step's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

/// SecurityMode is a RUN step's `--security`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityMode {
    /// The sandbox's full set of restrictions (the default).
    #[default]
    Sandbox,
    /// All capabilities, no seccomp filter, as BuildKit's `security.insecure`.
    Insecure,
}

impl SecurityMode {
    /// Whether this is the default mode.
    pub fn is_sandbox(&self) -> bool {
        *self == SecurityMode::Sandbox
    }
}

/// Entitlement is a privilege a Dockerfile cannot take by itself: the person running the
/// build grants it with `--allow`, as with BuildKit's entitlements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entitlement {
    /// `RUN --network=host`: the step shares the host's network namespace.
    NetworkHost,
    /// `RUN --security=insecure`: the step runs without seccomp and with every capability.
    SecurityInsecure,
}

impl Entitlement {
    /// Every entitlement, in `--allow` order.
    pub const ALL: [Entitlement; 2] = [Entitlement::NetworkHost, Entitlement::SecurityInsecure];

    /// The name `--allow` takes (BuildKit's).
    pub fn name(&self) -> &'static str {
        match self {
            Entitlement::NetworkHost => "network.host",
            Entitlement::SecurityInsecure => "security.insecure",
        }
    }

    /// Parses an `--allow` value.
    pub fn parse(s: &str) -> Option<Entitlement> {
        Entitlement::ALL.into_iter().find(|e| e.name() == s)
    }
}

/// SourceSpan locates what produced an op: a file name and 1-based line range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceSpan {
    pub file: String,
    pub start_line: u32,
    pub end_line: u32,
}

/// OpMeta carries what is shown to the user about an op; it is not hashed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OpMeta {
    /// e.g. `[stage-1 2/4] COPY app /app`.
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub span: Option<SourceSpan>,
    /// Whether progress shows this op (internal ops are hidden).
    #[serde(default)]
    pub hidden: bool,
    /// The (lower-cased) name of the Dockerfile stage the op belongs to, if it has one
    /// (`--no-cache-filter`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
    /// The build variables (ARG/ENV) the instruction used: those its words expanded,
    /// or for RUN its whole environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vars: Vec<String>,
}

/// Node is an op with its inputs and metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<Input>,
    pub meta: OpMeta,
}

#[derive(Serialize)]
struct Hashed<'a> {
    op: &'a Op,
    inputs: &'a [Input],
}

impl Node {
    /// The content address of this node: sha256 of the canonical encoding of op + inputs.
    pub fn digest(&self) -> Digest {
        self.digest_and_len().0
    }

    /// The digest and the length of the canonical encoding, which is hashed as it is
    /// written rather than held in memory (an op may carry a large heredoc).
    pub fn digest_and_len(&self) -> (Digest, u64) {
        let mut w = kiln_image::Sha256Writer::new(std::io::sink());
        serde_json::to_writer(
            &mut w,
            &Hashed {
                op: &self.op,
                inputs: &self.inputs,
            },
        )
        .expect("graph types always serialise");
        let (digest, len, _) = w.finish();
        (digest, len)
    }
}

/// GraphError is a malformed definition.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    #[error("op `{op}` refers to unknown input `{input}`")]
    MissingInput { op: Digest, input: Digest },
    #[error("definition has no op `{0}` for its root")]
    MissingRoot(Digest),
}

/// Definition is a whole build graph: nodes by digest and the output that is the result.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Definition {
    pub nodes: BTreeMap<Digest, Node>,
    pub root: Option<Input>,
    /// The summed encoding lengths of the nodes added, for the frontend's size cap.
    #[serde(skip)]
    encoded: u64,
}

impl Definition {
    /// An empty definition.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node (deduplicated by digest) and returns a reference to its output 0.
    /// When an identical node exists, the first one's metadata is kept.
    pub fn add(&mut self, op: Op, inputs: Vec<Input>, meta: OpMeta) -> Input {
        let node = Node { op, inputs, meta };
        let (digest, len) = node.digest_and_len();
        if let std::collections::btree_map::Entry::Vacant(e) = self.nodes.entry(digest.clone()) {
            self.encoded += len;
            e.insert(node);
        }
        Input { op: digest, output: 0 }
    }

    /// The summed lengths of the canonical encodings of the nodes added with
    /// [`Definition::add`]: what hashing them cost, and about what they hold.
    pub fn encoded_len(&self) -> u64 {
        self.encoded
    }

    /// Looks up a node.
    pub fn node(&self, digest: &Digest) -> Option<&Node> {
        self.nodes.get(digest)
    }

    /// Checks every input and the root refer to nodes of this definition.
    pub fn validate(&self) -> Result<(), GraphError> {
        for (d, n) in &self.nodes {
            for i in &n.inputs {
                if !self.nodes.contains_key(&i.op) {
                    return Err(GraphError::MissingInput {
                        op: d.clone(),
                        input: i.op.clone(),
                    });
                }
            }
        }
        if let Some(r) = &self.root {
            if !self.nodes.contains_key(&r.op) {
                return Err(GraphError::MissingRoot(r.op.clone()));
            }
        }
        Ok(())
    }

    /// The digests reachable from the root, inputs before the ops that use them.
    pub fn topo_order(&self) -> Vec<Digest> {
        self.topo_order_from(self.root.as_slice())
    }

    /// The digests reachable from any of `roots` (each once), inputs before the ops
    /// that use them: one multi-platform build solves every platform's root together.
    pub fn topo_order_from(&self, roots: &[Input]) -> Vec<Digest> {
        let mut out = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for r in roots {
            // Iterative post-order DFS: deep graphs must not overflow the stack.
            let mut stack = vec![(r.op.clone(), false)];
            while let Some((d, expanded)) = stack.pop() {
                if expanded {
                    out.push(d);
                    continue;
                }
                if !seen.insert(d.clone()) {
                    continue;
                }
                stack.push((d.clone(), true));
                if let Some(n) = self.nodes.get(&d) {
                    for i in n.inputs.iter().rev() {
                        if !seen.contains(&i.op) {
                            stack.push((i.op.clone(), false));
                        }
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(d: &str) -> OpMeta {
        OpMeta {
            description: d.into(),
            ..Default::default()
        }
    }

    #[test]
    fn identical_ops_share_a_digest_regardless_of_meta() {
        let mut def = Definition::new();
        let a = def.add(Op::Source(SourceOp::Scratch), vec![], meta("a"));
        let b = def.add(Op::Source(SourceOp::Scratch), vec![], meta("b"));
        assert_eq!(a, b);
        assert_eq!(def.nodes.len(), 1);
    }

    #[test]
    fn topo_order_puts_inputs_first() {
        let mut def = Definition::new();
        let s = def.add(Op::Source(SourceOp::Scratch), vec![], meta("s"));
        let ctx = def.add(
            Op::Source(SourceOp::Local {
                name: "context".into(),
                include: vec![],
                exclude: vec![],
            }),
            vec![],
            meta("ctx"),
        );
        let copy = def.add(
            Op::File(FileOp {
                base: Some(0),
                actions: vec![FileAction::Mkdir {
                    path: "/a".into(),
                    mode: 0o755,
                    chown: None,
                }],
            }),
            vec![s.clone(), ctx.clone()],
            meta("copy"),
        );
        def.root = Some(copy.clone());
        def.validate().unwrap();
        let order = def.topo_order();
        assert_eq!(order.len(), 3);
        assert_eq!(order.last(), Some(&copy.op));
    }
}
