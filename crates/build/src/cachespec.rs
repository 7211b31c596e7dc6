//! Parsing `--cache-to` / `--cache-from` the way buildx takes them:
//! `type=local,dest=DIR|src=DIR` and `type=registry,ref=REF`, with `mode=` and
//! `ignore-error=`, split as CSV by [`kiln_frontend::csv`]. As buildx, a value with no
//! `=` at all (`--cache-from user/app:cache`) is `type=registry,ref=VALUE`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_image::Reference;

use crate::error::{bail, Ctx};
use crate::BuildError;

type Result<T> = std::result::Result<T, BuildError>;

/// `type=local|registry,KEY=VALUE,...` as a map.
fn cache_spec(flag: &str, spec: &str) -> Result<BTreeMap<String, String>> {
    let mut kv = BTreeMap::new();
    if !spec.contains('=') {
        kv.insert("type".to_string(), "registry".to_string());
        kv.insert("ref".to_string(), spec.trim().to_string());
        return Ok(kv);
    }
    let fields = kiln_frontend::csv::fields(spec).map_err(|e| BuildError::Message(format!("{flag} {spec}: {e}")))?;
    for part in &fields {
        let Some((k, v)) = part.split_once('=') else {
            bail!("{flag} {spec}: `{part}` is not KEY=VALUE (e.g. `type=local,dest=DIR`)");
        };
        kv.insert(k.trim().to_string(), v.trim().to_string());
    }
    match kv.get("type").map(String::as_str) {
        Some("local" | "registry") => Ok(kv),
        Some("inline") => {
            bail!("{flag} {spec}: type `inline` is not supported; use type=registry,ref=… for CI runners")
        }
        Some(t) => bail!("{flag} {spec}: cache type `{t}` is not supported (use type=local or type=registry)"),
        None => bail!("{flag} {spec}: no type= (use type=local or type=registry)"),
    }
}

fn cache_ref(flag: &str, spec: &str, kv: &BTreeMap<String, String>) -> Result<Reference> {
    let r = kv.get("ref").ok_or_else(|| {
        BuildError::Message(format!(
            "{flag} {spec}: ref=HOST/REPO[:TAG] is required for type=registry"
        ))
    })?;
    Reference::parse(r).ctx(|| format!("{flag} {spec}: invalid ref `{r}`"))
}

/// A parsed `--cache-to`.
#[derive(Debug, Clone)]
pub struct CacheTo {
    pub target: kiln_worker::CacheTarget,
    pub mode: kiln_worker::CacheMode,
    pub ignore_error: bool,
}

/// Parses one `--cache-to` value.
pub fn parse_cache_to(spec: &str) -> Result<CacheTo> {
    let kv = cache_spec("--cache-to", spec)?;
    let target = if kv["type"] == "registry" {
        kiln_worker::CacheTarget::Registry(cache_ref("--cache-to", spec, &kv)?)
    } else {
        let dest = kv
            .get("dest")
            .ok_or_else(|| BuildError::Message(format!("--cache-to {spec}: dest=DIR is required")))?;
        kiln_worker::CacheTarget::Dir(PathBuf::from(dest))
    };
    let mode = match kv.get("mode").map(String::as_str) {
        None | Some("min") => kiln_worker::CacheMode::Min,
        Some("max") => kiln_worker::CacheMode::Max,
        Some(m) => bail!("--cache-to {spec}: mode `{m}` is not min or max"),
    };
    let ignore_error = matches!(kv.get("ignore-error").map(String::as_str), Some("true" | "1"));
    Ok(CacheTo {
        target,
        mode,
        ignore_error,
    })
}

/// A parsed `--cache-from`: a directory or a registry reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheFrom {
    Dir(PathBuf),
    Registry(Reference),
}

impl std::fmt::Display for CacheFrom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheFrom::Dir(p) => write!(f, "{}", p.display()),
            CacheFrom::Registry(r) => write!(f, "{r}"),
        }
    }
}

/// Parses one `--cache-from` value.
pub fn parse_cache_from(spec: &str) -> Result<CacheFrom> {
    let kv = cache_spec("--cache-from", spec)?;
    if kv["type"] == "registry" {
        return Ok(CacheFrom::Registry(cache_ref("--cache-from", spec, &kv)?));
    }
    kv.get("src")
        .map(|s| CacheFrom::Dir(PathBuf::from(s)))
        .ok_or_else(|| BuildError::Message(format!("--cache-from {spec}: src=DIR is required")))
}
