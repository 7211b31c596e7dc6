//! The SLSA provenance predicate (v0.2, or v1 with `version=v1`), shaped as BuildKit
//! writes it: builder, build type, invocation (frontend, parameters, platform),
//! materials (base images by digest, git sources by commit, HTTP sources by checksum,
//! the context's git commit), timestamps (SOURCE_DATE_EPOCH when set), and in `max`
//! mode the build definition and where each step comes from in the Dockerfile.
//!
//! Secret values never reach it: the build knows them only by id (`--secret id=…`), and
//! only the ids are listed, in `max` mode.

use std::collections::BTreeMap;
use std::path::Path;

use base64::Engine;
use kiln_graph::{Definition, Op, SourceOp};
use kiln_image::{Digest, Platform, Reference};
use serde_json::{json, Map, Value};

use super::{ProvenanceMode, ProvenanceOpts, SlsaVersion, SLSA_V02, SLSA_V1};

/// The builder id when `builder-id=` is not given.
pub const DEFAULT_BUILDER_ID: &str = "https://example.invalid/kiln/builder";
/// BuildKit's build types: the predicate is shaped as BuildKit's, so readers of
/// BuildKit's provenance read kiln's.
const BUILD_TYPE_V02: &str = "https://mobyproject.org/buildkit@v1";
const BUILD_TYPE_V1: &str = "https://github.com/moby/buildkit/blob/master/docs/attestations/slsa-definitions.md";
const BUILDKIT_METADATA: &str = "https://mobyproject.org/buildkit@v1#metadata";

/// Facts is what the build knows that the attestations describe.
pub struct Facts<'a> {
    pub definition: &'a Definition,
    pub dockerfile_name: &'a str,
    pub dockerfile: &'a str,
    pub build_args: &'a BTreeMap<String, String>,
    pub labels: &'a BTreeMap<String, String>,
    pub target: Option<&'a str>,
    pub platform: &'a Platform,
    /// The context directory, if there is one.
    pub context: Option<&'a Path>,
    /// `--secret` ids (never their values).
    pub secret_ids: Vec<String>,
    /// The build's start and end, seconds since the epoch.
    pub started: i64,
    pub finished: i64,
    /// SOURCE_DATE_EPOCH: both timestamps are this, and the invocation id is derived
    /// from the inputs, so a reproducible build stays reproducible.
    pub epoch: Option<i64>,
    /// The context's git work tree, if it is one.
    pub git: Option<GitInfo>,
    /// What an HTTP or git source resolved to in this build (body digest, commit).
    pub resolved: &'a (dyn Fn(&SourceOp) -> Option<String> + Sync),
}

/// GitInfo is the commit (and remote) of a context that is a git work tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitInfo {
    pub commit: String,
    /// `remote.origin.url`, if set.
    pub remote: Option<String>,
    /// Uncommitted changes to tracked files.
    pub dirty: bool,
}

impl GitInfo {
    /// Reads `dir`'s git state with the `git` command, as buildx does; None when `dir`
    /// is not the top of a work tree or git is missing.
    #[allow(
        clippy::disallowed_methods,
        reason = "a path that cannot be canonicalised only means: no git information"
    )]
    pub fn read(dir: &Path) -> Option<GitInfo> {
        let git = |args: &[&str]| -> Option<String> {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .stdin(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        };
        let top = git(&["rev-parse", "--show-toplevel"])?;
        if std::fs::canonicalize(&top).ok()? != std::fs::canonicalize(dir).ok()? {
            return None;
        }
        let commit =
            git(&["rev-parse", "HEAD"]).filter(|c| c.len() >= 40 && c.bytes().all(|b| b.is_ascii_hexdigit()))?;
        let remote = git(&["config", "--get", "remote.origin.url"])
            .filter(|r| !r.is_empty())
            .map(|r| strip_credentials(&r));
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        Some(GitInfo { commit, remote, dirty })
    }
}

/// A remote URL without `user:password@` (buildx strips them too).
fn strip_credentials(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find('/').unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

#[cfg(test)]
#[test]
fn credentials_leave_remote_urls() {
    assert_eq!(
        strip_credentials("https://u:p@h.example/r.git"),
        "https://h.example/r.git"
    );
    assert_eq!(strip_credentials("https://u:p@h.example"), "https://h.example");
    assert_eq!(strip_credentials("https://h.example/a@b"), "https://h.example/a@b");
    assert_eq!(strip_credentials("git@h.example:r.git"), "git@h.example:r.git");
}

/// RFC 3339 in UTC, whole seconds, as BuildKit writes its timestamps.
pub(crate) fn rfc3339(secs: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(secs)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_string())
}

/// `pkg:docker/NAME@VERSION?platform=…`, as BuildKit's materials and subjects name images.
pub(crate) fn docker_purl(r: &Reference, platform: Option<&Platform>) -> String {
    let version = match (r.tag(), r.digest()) {
        (Some(t), _) => t.to_string(),
        (None, Some(d)) => d.to_string(),
        (None, None) => "latest".to_string(),
    };
    let mut s = format!("pkg:docker/{}@{}", r.familiar_repository(), version.replace(':', "%3A"));
    if let Some(p) = platform {
        s.push_str(&format!("?platform={}", p.to_string().replace('/', "%2F")));
    }
    s
}

fn digest_set(d: &Digest) -> Value {
    json!({ d.algorithm(): d.hex() })
}

/// The materials: every base image, git and HTTP source of the definition, and the
/// context's commit.
fn materials(f: &Facts<'_>) -> Vec<Value> {
    let mut out: Vec<Value> = Vec::new();
    let mut push = |v: Value| {
        if !out.contains(&v) {
            out.push(v);
        }
    };
    for node in f.definition.nodes.values() {
        let Op::Source(src) = &node.op else { continue };
        match src {
            SourceOp::Image { reference, platform } => {
                let Ok(r) = Reference::parse(reference) else { continue };
                let mut m = json!({ "uri": docker_purl(&r, Some(platform)) });
                if let Some(d) = r.digest() {
                    m["digest"] = digest_set(d);
                }
                push(m);
            }
            SourceOp::Git {
                remote,
                reference,
                checksum,
                ..
            } => {
                let mut uri = remote.clone();
                if !reference.is_empty() {
                    uri.push('#');
                    uri.push_str(reference);
                }
                let mut m = json!({ "uri": strip_credentials(&uri) });
                let resolved = (f.resolved)(src);
                let commit = resolved.as_deref().or(checksum.as_deref()).or(Some(reference.as_str()));
                if let Some(c) = commit.filter(|c| c.len() == 40 && c.bytes().all(|b| b.is_ascii_hexdigit())) {
                    m["digest"] = json!({ "sha1": c.to_ascii_lowercase() });
                }
                push(m);
            }
            SourceOp::Http { url, checksum, .. } => {
                let mut m = json!({ "uri": strip_credentials(url) });
                let resolved = (f.resolved)(src);
                if let Some(d) = checksum
                    .as_deref()
                    .or(resolved.as_deref())
                    .and_then(|c| c.strip_prefix("sha256:"))
                {
                    m["digest"] = json!({ "sha256": d });
                }
                push(m);
            }
            SourceOp::Scratch | SourceOp::Local { .. } => {}
        }
    }
    if let Some(g) = &f.git {
        let uri = match &g.remote {
            Some(r) => format!("{r}@{}", g.commit),
            None => format!(
                "git+file://{}@{}",
                f.context.map(|c| c.display().to_string()).unwrap_or_default(),
                g.commit
            ),
        };
        push(json!({ "uri": uri, "digest": { "sha1": g.commit } }));
    }
    out
}

/// `invocation.parameters` (v1: `externalParameters.request`).
fn parameters(p: &ProvenanceOpts, f: &Facts<'_>) -> Value {
    let mut args = Map::new();
    if p.mode == ProvenanceMode::Max {
        for (k, v) in f.build_args {
            args.insert(format!("build-arg:{k}"), json!(v));
        }
        for (k, v) in f.labels {
            args.insert(format!("label:{k}"), json!(v));
        }
    }
    if let Some(t) = f.target {
        args.insert("target".into(), json!(t));
    }
    let mut v = json!({
        "frontend": "dockerfile.v0",
        "args": args,
        "locals": [{ "name": "context" }, { "name": "dockerfile" }],
    });
    if p.mode == ProvenanceMode::Max && !f.secret_ids.is_empty() {
        v["secrets"] = Value::Array(f.secret_ids.iter().map(|id| json!({ "id": id })).collect());
    }
    v
}

fn config_source(f: &Facts<'_>, v1: bool) -> Value {
    let mut c = Map::new();
    if let Some(g) = &f.git {
        if let Some(r) = &g.remote {
            c.insert("uri".into(), json!(r));
        }
    }
    c.insert("digest".into(), digest_set(&Digest::of(f.dockerfile.as_bytes())));
    c.insert(
        (if v1 { "path" } else { "entryPoint" }).into(),
        json!(f.dockerfile_name),
    );
    Value::Object(c)
}

/// The steps of the definition reachable from its root, inputs first, named `stepN`.
fn build_config(d: &Definition) -> (Value, BTreeMap<Digest, String>) {
    let mut order: Vec<&Digest> = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    let mut stack: Vec<(&Digest, bool)> = d.root.iter().map(|r| (&r.op, false)).collect();
    while let Some((id, expanded)) = stack.pop() {
        if expanded {
            order.push(id);
            continue;
        }
        if !seen.insert(id) {
            continue;
        }
        let Some(node) = d.nodes.get(id) else { continue };
        stack.push((id, true));
        for i in node.inputs.iter().rev() {
            if !seen.contains(&i.op) {
                stack.push((&i.op, false));
            }
        }
    }
    let names: BTreeMap<Digest, String> = order
        .iter()
        .enumerate()
        .map(|(i, id)| ((*id).clone(), format!("step{i}")))
        .collect();
    let steps: Vec<Value> = order
        .iter()
        .filter_map(|id| {
            let node = d.nodes.get(*id)?;
            let inputs: Vec<Value> = node
                .inputs
                .iter()
                .filter_map(|i| names.get(&i.op).map(|n| json!(format!("{n}:{}", i.output))))
                .collect();
            let mut s = json!({
                "id": names[*id],
                "op": serde_json::to_value(&node.op).unwrap_or(Value::Null),
            });
            if !inputs.is_empty() {
                s["inputs"] = Value::Array(inputs);
            }
            Some(s)
        })
        .collect();
    let mapping: Map<String, Value> = names.iter().map(|(d, n)| (d.to_string(), json!(n))).collect();
    (json!({ "llbDefinition": steps, "digestMapping": mapping }), names)
}

/// BuildKit's own metadata: the context's git state, and in `max` mode the Dockerfile
/// and where each step comes from in it.
fn buildkit_metadata(p: &ProvenanceOpts, f: &Facts<'_>, names: &BTreeMap<Digest, String>) -> Value {
    let mut m = Map::new();
    if let Some(g) = &f.git {
        let mut vcs = Map::new();
        if let Some(r) = &g.remote {
            vcs.insert("source".into(), json!(r));
        }
        let rev = if g.dirty {
            format!("{}-dirty", g.commit)
        } else {
            g.commit.clone()
        };
        vcs.insert("revision".into(), json!(rev));
        m.insert("vcs".into(), Value::Object(vcs));
    }
    if p.mode == ProvenanceMode::Max {
        let mut locations = Map::new();
        for (id, name) in names {
            let Some(span) = f.definition.nodes.get(id).and_then(|n| n.meta.span.as_ref()) else {
                continue;
            };
            locations.insert(
                name.clone(),
                json!({ "locations": [{ "ranges": [{
                    "start": { "line": span.start_line },
                    "end": { "line": span.end_line },
                }] }] }),
            );
        }
        let mut steps = Map::new();
        for (id, name) in names {
            if let Some(n) = f.definition.nodes.get(id) {
                let mut s = json!({ "description": n.meta.description });
                if let Some(st) = &n.meta.stage {
                    s["stage"] = json!(st);
                }
                steps.insert(name.clone(), s);
            }
        }
        m.insert(
            "source".into(),
            json!({
                "locations": locations,
                "infos": [{
                    "filename": f.dockerfile_name,
                    "language": "Dockerfile",
                    "data": base64::engine::general_purpose::STANDARD.encode(f.dockerfile.as_bytes()),
                }],
            }),
        );
        m.insert("steps".into(), Value::Object(steps));
    }
    Value::Object(m)
}

/// A stable id of this invocation: derived from the inputs and the start time, so the
/// same inputs with SOURCE_DATE_EPOCH give the same id.
fn invocation_id(f: &Facts<'_>, params: &Value, started: i64) -> String {
    let mut seed = format!("{}\n{}\n{started}\n{}\n", f.dockerfile, params, f.platform);
    if f.epoch.is_none() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        seed.push_str(&format!("{nanos}:{}", std::process::id()));
    }
    Digest::of(seed.as_bytes()).hex()[..26].to_string()
}

/// The predicate type and the predicate.
pub fn predicate(p: &ProvenanceOpts, f: &Facts<'_>) -> (&'static str, Value) {
    let (started, finished) = match f.epoch {
        Some(e) => (e, e),
        None => (f.started, f.finished),
    };
    let builder_id = p.builder_id.clone().unwrap_or_else(|| DEFAULT_BUILDER_ID.to_string());
    let params = parameters(p, f);
    let invocation = invocation_id(f, &params, started);
    let max = p.mode == ProvenanceMode::Max;
    let (config, names) = if max {
        let (c, n) = build_config(f.definition);
        (Some(c), n)
    } else {
        (None, BTreeMap::new())
    };
    let bk = buildkit_metadata(p, f, &names);
    let platform = f.platform.to_string();
    match p.version {
        SlsaVersion::V02 => {
            let mut v = json!({
                "builder": { "id": builder_id },
                "buildType": BUILD_TYPE_V02,
                "materials": materials(f),
                "invocation": {
                    "configSource": config_source(f, false),
                    "parameters": params,
                    "environment": { "platform": platform },
                },
            });
            if let Some(c) = config {
                v["buildConfig"] = c;
            }
            v["metadata"] = json!({
                "buildInvocationID": invocation,
                "buildStartedOn": rfc3339(started),
                "buildFinishedOn": rfc3339(finished),
                "completeness": { "parameters": max, "environment": true, "materials": false },
                "reproducible": false,
                BUILDKIT_METADATA: bk,
            });
            (SLSA_V02, v)
        }
        SlsaVersion::V1 => {
            let mut internal = json!({ "builderPlatform": platform });
            if let Some(c) = config {
                internal["buildConfig"] = c;
            }
            let deps: Vec<Value> = materials(f);
            let v = json!({
                "buildDefinition": {
                    "buildType": BUILD_TYPE_V1,
                    "externalParameters": {
                        "configSource": config_source(f, true),
                        "request": params,
                    },
                    "internalParameters": internal,
                    "resolvedDependencies": deps,
                },
                "runDetails": {
                    "builder": { "id": builder_id },
                    "metadata": {
                        "invocationID": invocation,
                        "startedOn": rfc3339(started),
                        "finishedOn": rfc3339(finished),
                        BUILDKIT_METADATA: bk,
                    },
                },
            });
            (SLSA_V1, v)
        }
    }
}
