//! The command line's values, as `kiln build` and the store commands take them, made
//! into typed parts of a [`BuildRequest`]: the value parsers clap calls (`--ulimit`,
//! `--annotation`, `--add-host`, `--shm-size`, `--pids-limit`, `--allow`), the
//! conversion of the string flags of [`BuildFlags`] in [`BuildFlags::request`]
//! (`--build-arg`/`--label` pairs, SOURCE_DATE_EPOCH, the `--platform` list, `-o`,
//! `--cache-to/--cache-from`, attestations, build contexts, the registry client), and
//! which commands a rootless kiln runs in its user namespace ([`needs_userns`]). The
//! CLI declares the flags (clap) and renders; the grammar of their values is here.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_executor::{Isolation, Ulimit, UlimitError};
use kiln_graph::{Entitlement, ExtraHost};
use kiln_image::{Platform, Reference};
use kiln_worker::{PullPolicy, SnapshotterKind};

use crate::error::{bail, Ctx};
use crate::{BuildError, BuildEvent, BuildProgress, BuildRequest, Dockerfile, NetworkMode};

type Result<T> = std::result::Result<T, BuildError>;

/// The flags of `kiln build`, as the command line gives them: strings where the value
/// still needs parsing, typed where clap parsed it already (with the parsers below).
#[derive(Debug, Clone)]
pub struct BuildFlags {
    /// The context directory, or `-` (a Dockerfile on stdin, no context).
    pub context: String,
    /// `-f`: a path, `-` for stdin; None: the context's `Dockerfile`.
    pub file: Option<String>,
    pub tags: Vec<String>,
    /// `--build-arg`: `KEY=VALUE`, or `KEY` taken from the environment.
    pub build_args: Vec<String>,
    pub secrets: Vec<String>,
    pub ssh: Vec<String>,
    pub target: Option<String>,
    pub labels: Vec<String>,
    pub outputs: Vec<String>,
    pub build_contexts: Vec<String>,
    pub push: bool,
    /// `--load`: an `-o type=docker` output added after the others.
    pub load: bool,
    /// `--platform` values, each comma-separated.
    pub platforms: Vec<String>,
    pub insecure_registries: Vec<String>,
    pub tls_ca: Option<PathBuf>,
    pub pull: PullPolicy,
    pub network: NetworkMode,
    pub entitlements: Vec<Entitlement>,
    pub cache_to: Vec<String>,
    pub cache_from: Vec<String>,
    pub annotations: Vec<(AnnotationKind, String, String)>,
    pub provenance: Option<String>,
    pub sbom: Option<String>,
    pub attest: Vec<String>,
    pub extra_hosts: Vec<ExtraHost>,
    pub jobs: Option<u32>,
    pub no_cache: bool,
    pub no_cache_filter: Vec<String>,
    pub runtime: Option<String>,
    pub snapshotter: SnapshotterKind,
    /// None: `auto`.
    pub isolation: Option<Isolation>,
    pub ulimits: Vec<Ulimit>,
    /// `--pids-limit`: -1 or 0 for no limit.
    pub pids_limit: i64,
    pub shm_size: Option<u64>,
    /// `--check`: run the build checks only.
    pub check: bool,
}

impl BuildFlags {
    /// The typed request the flags describe; warnings (of `--secret`) go to `progress`.
    pub fn request(&self, root: &Path, progress: &dyn BuildProgress) -> Result<BuildRequest> {
        let tags = self
            .tags
            .iter()
            .map(|t| Reference::parse(t).ctx(|| format!("invalid tag `{t}`")))
            .collect::<Result<Vec<_>>>()?;
        let mut outputs = self
            .outputs
            .iter()
            .map(|o| crate::parse_output(o, &tags))
            .collect::<Result<Vec<_>>>()?;
        if self.load {
            outputs.push(crate::parse_output("type=docker", &tags)?);
        }
        let build_args = kv(&self.build_args, "--build-arg", true)?;
        let labels = kv(&self.labels, "--label", false)?;
        let secrets = crate::resolve_secrets(&self.secrets, &self.ssh, &|w| progress.event(BuildEvent::Warning(w)))?;
        let platforms = platforms(&self.platforms)?;
        let epoch = epoch(&build_args)?;
        let (context, dockerfile) = match (self.context.as_str(), self.file.as_deref()) {
            ("-", None | Some("-")) => (None, Dockerfile::Stdin),
            ("-", Some(f)) => (None, Dockerfile::Path(PathBuf::from(f))),
            (c, Some("-")) => (Some(PathBuf::from(c)), Dockerfile::Stdin),
            (c, Some(f)) => (Some(PathBuf::from(c)), Dockerfile::Path(PathBuf::from(f))),
            (c, None) => (Some(PathBuf::from(c)), Dockerfile::Default),
        };
        let registry = std::sync::Arc::new(crate::store::registry_client(
            self.insecure_registries.clone(),
            self.tls_ca.as_deref(),
        )?);
        let cache_to = self
            .cache_to
            .iter()
            .map(|s| crate::parse_cache_to(s))
            .collect::<Result<Vec<_>>>()?;
        let cache_from = self
            .cache_from
            .iter()
            .map(|s| crate::parse_cache_from(s))
            .collect::<Result<Vec<_>>>()?;
        let mut attest = crate::AttestRequest {
            no_default: crate::attest::no_default_attestations(
                std::env::var("BUILDX_NO_DEFAULT_ATTESTATIONS").ok().as_deref(),
            )?,
            ..Default::default()
        };
        for spec in &self.attest {
            attest.parse_attest(spec)?;
        }
        if let Some(v) = &self.provenance {
            attest.parse_provenance(v)?;
        }
        if let Some(v) = &self.sbom {
            attest.parse_sbom(v)?;
        }
        let mut build_contexts = BTreeMap::new();
        for spec in &self.build_contexts {
            let (name, context) = crate::parse_build_context(spec)?;
            build_contexts.insert(name, context);
        }
        Ok(BuildRequest {
            root: root.to_path_buf(),
            context,
            dockerfile,
            build_args,
            labels,
            target: self.target.clone(),
            platforms,
            tags,
            outputs,
            push: self.push,
            cache_to,
            cache_from,
            extra_hosts: self.extra_hosts.clone(),
            annotations: self
                .annotations
                .iter()
                .filter(|(kind, _, _)| *kind == AnnotationKind::Manifest)
                .map(|(_, k, v)| (k.clone(), v.clone()))
                .collect(),
            index_annotations: self
                .annotations
                .iter()
                .filter(|(kind, _, _)| *kind == AnnotationKind::Index)
                .map(|(_, k, v)| (k.clone(), v.clone()))
                .collect(),
            build_contexts,
            secrets,
            network: self.network,
            entitlements: self.entitlements.clone(),
            limits: kiln_executor::Limits {
                ulimits: self.ulimits.clone(),
                pids: u64::try_from(self.pids_limit).ok().filter(|n| *n > 0),
                shm_size: self.shm_size,
            },
            runtime: self.runtime.clone(),
            snapshotter: self.snapshotter,
            isolation: self.isolation,
            pull: self.pull,
            jobs: self.jobs.map(|n| n as usize),
            no_cache: self.no_cache,
            no_cache_filter: self.no_cache_filter.clone(),
            epoch,
            registry,
            attest,
            mode: if self.check {
                crate::Mode::Check
            } else {
                crate::Mode::Build
            },
        })
    }
}

/// `--build-arg`/`--label` values: `KEY=VALUE`; with `from_env`, a bare `KEY` takes
/// the environment's value if it is set.
fn kv(list: &[String], flag: &str, from_env: bool) -> Result<BTreeMap<String, String>> {
    let mut m = BTreeMap::new();
    for item in list {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                m.insert(k.to_string(), v.to_string());
            }
            None if from_env && !item.is_empty() => {
                // Docker takes a bare `--build-arg KEY` from the environment, if set.
                if let Ok(v) = std::env::var(item) {
                    m.insert(item.clone(), v);
                }
            }
            _ => bail!("invalid {flag} `{item}`: expected KEY=VALUE"),
        }
    }
    Ok(m)
}

/// SOURCE_DATE_EPOCH: the build arg, else the environment variable.
fn epoch(build_args: &BTreeMap<String, String>) -> Result<Option<i64>> {
    match build_args
        .get("SOURCE_DATE_EPOCH")
        .cloned()
        .or_else(|| std::env::var("SOURCE_DATE_EPOCH").ok())
        .filter(|s| !s.is_empty())
    {
        Some(s) => Ok(Some(s.parse::<i64>().ctx(|| {
            format!("invalid SOURCE_DATE_EPOCH `{s}`: expected seconds since 1970")
        })?)),
        None => Ok(None),
    }
}

/// `--platform`: comma-separated and repeatable, each normalised as containerd does
/// (`aarch64` → `linux/arm64`), repeats dropped; none: the host's.
fn platforms(flags: &[String]) -> Result<Vec<Platform>> {
    let mut out: Vec<Platform> = Vec::new();
    for p in flags.iter().flat_map(|f| f.split(',')).map(str::trim) {
        let Some(parsed) = Platform::parse(p) else {
            bail!("invalid --platform `{p}`: expected os/arch[/variant]");
        };
        if parsed.os != "linux" {
            bail!("--platform `{p}`: kiln builds Linux images only");
        }
        if !out.contains(&parsed) {
            out.push(parsed);
        }
    }
    Ok(out)
}

/// Parses one `--ulimit` value.
pub fn parse_ulimit(s: &str) -> std::result::Result<Ulimit, UlimitError> {
    Ulimit::parse(s)
}

/// Where an `--annotation` goes, as buildx's types name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnnotationKind {
    /// `manifest:` or no type: each image manifest.
    Manifest,
    /// `index:`: the image index (several platforms, or an image with attestations).
    Index,
}

/// Parses one `--annotation`: `[TYPE:]KEY=VALUE`, split at the first `=`; the types
/// kiln writes are `manifest` (buildx's default) and `index`.
pub fn parse_annotation(s: &str) -> std::result::Result<(AnnotationKind, String, String), String> {
    let (key, value) = s
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| format!("`{s}` is not KEY=VALUE"))?;
    let (kind, key) = match key.split_once(':') {
        Some(("manifest", k)) => (AnnotationKind::Manifest, k),
        Some(("index", k)) => (AnnotationKind::Index, k),
        Some((t, _))
            if ["manifest-descriptor", "index-descriptor"].contains(&t.split('[').next().unwrap_or(t))
                || t.starts_with("manifest[")
                || t.starts_with("index[") =>
        {
            return Err(format!(
                "`{s}`: annotation type `{t}` is not supported; kiln writes `manifest` and `index` annotations"
            ))
        }
        _ => (AnnotationKind::Manifest, key),
    };
    if key.is_empty() {
        return Err(format!("`{s}` has no key (expected KEY=VALUE)"));
    }
    Ok((kind, key.to_string(), value.to_string()))
}

/// Parses one `--add-host`: `HOST=IP`, else `HOST:IP` split at the first colon (so an
/// IPv6 address keeps its colons).
pub fn parse_add_host(s: &str) -> std::result::Result<ExtraHost, String> {
    let (host, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| format!("`{s}` is not HOST:IP"))?;
    if host.is_empty() {
        return Err(format!("`{s}` has no host name (expected HOST:IP)"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control() || c == '#') {
        return Err(format!("host name `{host}` has a space, control character or `#`"));
    }
    if ip == "host-gateway" {
        return Err(format!(
            "`{s}`: `host-gateway` is not supported (kiln has no daemon host gateway); give the address"
        ));
    }
    let ip = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("`{ip}` is not an IP address (expected HOST:IP)"))?;
    Ok(ExtraHost {
        host: host.to_string(),
        ip,
    })
}

/// Parses `--shm-size` as Docker's RAMInBytes: a number with an optional binary unit
/// (`b`, `k`, `m`, `g`, `t`, with or without a trailing `b`/`ib`).
pub fn parse_shm_size(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let shift = match unit
        .strip_suffix("ib")
        .or_else(|| unit.strip_suffix('b'))
        .unwrap_or(unit)
    {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("`{s}` is not a size (e.g. `64m`, `1g` or bytes)")),
    };
    match n.parse::<u64>().ok().and_then(|n| n.checked_mul(1 << shift)) {
        Some(0) => Err(format!("`{s}`: the size must be more than 0")),
        Some(b) => Ok(b),
        None => Err(format!("`{s}` is not a size (e.g. `64m`, `1g` or bytes)")),
    }
}

/// Parses `--pids-limit`: a positive number, or -1 (as docker, 0 too) for no limit.
pub fn parse_pids_limit(s: &str) -> std::result::Result<i64, String> {
    match s.parse::<i64>() {
        Ok(n) if n >= -1 => Ok(n),
        _ => Err(format!(
            "`{s}` is not a process count (a whole number, or -1 for no limit)"
        )),
    }
}

/// Parses one `--allow` value.
pub fn parse_entitlement(s: &str) -> std::result::Result<Entitlement, String> {
    Entitlement::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Entitlement::ALL.iter().map(|e| e.name()).collect();
        format!("unknown entitlement `{s}` (expected one of: {})", names.join(", "))
    })
}

/// The subcommand: the first argument that is not a global option.
pub fn subcommand(args: &[String]) -> Option<&str> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--root" {
            it.next();
        } else if !a.starts_with('-') {
            return Some(a);
        }
    }
    None
}

/// Whether a rootless kiln needs its user namespace for this command: not for help,
/// the version, or commands that only read the store, talk to a registry, or write
/// blobs and names (all files of the user's own).
pub fn needs_userns(args: &[String]) -> bool {
    let before_dashes = args.iter().take_while(|a| *a != "--");
    if before_dashes
        .into_iter()
        .any(|a| matches!(a.as_str(), "-h" | "--help" | "-V" | "--version"))
    {
        return false;
    }
    !matches!(
        subcommand(args),
        None | Some("help" | "login" | "logout" | "images" | "inspect" | "push" | "pull" | "tag" | "save")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn only_commands_that_touch_snapshots_need_the_user_namespace() {
        for yes in [
            "build .",
            "--root /r build .",
            "prune -a",
            "du",
            "fsck",
            "rmi x",
            "build -t a -- --help",
        ] {
            assert!(needs_userns(&args(yes)), "{yes}");
        }
        for no in [
            "",
            "--version",
            "-V",
            "--help",
            "build --help",
            "build -h",
            "help build",
            "--root /r images",
            "inspect x",
            "push x",
            "pull x",
            "login r",
            "logout r",
            "tag a b",
            "save a",
        ] {
            assert!(!needs_userns(&args(no)), "{no}");
        }
    }

    #[test]
    fn value_parsers_take_dockers_and_buildxs_forms() {
        assert_eq!(parse_shm_size("64m"), Ok(64 << 20));
        assert_eq!(parse_shm_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_shm_size("0"), Err("`0`: the size must be more than 0".into()));
        assert_eq!(parse_pids_limit("-1"), Ok(-1));
        assert!(parse_pids_limit("-2").is_err());
        assert_eq!(
            parse_annotation("manifest:a=b=c"),
            Ok((AnnotationKind::Manifest, "a".into(), "b=c".into()))
        );
        assert_eq!(
            parse_annotation("index:a=b"),
            Ok((AnnotationKind::Index, "a".into(), "b".into()))
        );
        assert!(parse_annotation("index-descriptor:a=b")
            .unwrap_err()
            .contains("`index-descriptor` is not supported"));
        assert!(parse_annotation("index[linux/amd64]:a=b").is_err());
        let h = parse_add_host("db:::1").unwrap();
        assert_eq!((h.host.as_str(), h.ip.to_string()), ("db", "::1".into()));
        assert_eq!(parse_add_host("a=[10.0.0.1]").unwrap().ip.to_string(), "10.0.0.1");
        assert!(parse_entitlement("network.host").is_ok());
        assert!(parse_entitlement("x")
            .unwrap_err()
            .starts_with("unknown entitlement `x`"));
    }

    #[test]
    fn platforms_are_normalised_and_repeats_dropped() {
        let p = platforms(&["linux/amd64,x86_64".into(), "aarch64".into()]).unwrap();
        assert_eq!(
            p.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            ["linux/amd64", "linux/arm64"]
        );
        assert_eq!(
            platforms(&["windows/amd64".into()]).unwrap_err().to_string(),
            "--platform `windows/amd64`: kiln builds Linux images only"
        );
        assert_eq!(
            kv(&["a".into()], "--label", false).unwrap_err().to_string(),
            "invalid --label `a`: expected KEY=VALUE"
        );
    }
}
