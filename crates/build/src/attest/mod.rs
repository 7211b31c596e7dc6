//! Build attestations as buildx attaches them: SLSA provenance (`--provenance`,
//! `--attest type=provenance,…`) and an SPDX SBOM (`--sbom`, `--attest type=sbom,…`),
//! each an in-toto statement, in an attestation manifest next to the image manifest in
//! an image index ([`layout`]).
//!
//! [`AttestRequest`] is what the caller asked for; [`collect`] makes the predicates once
//! per build; [`layout::attach`] wraps them into statements about one written image
//! manifest and writes the index.

pub mod files;
pub mod layout;
mod provenance;
mod sbom;

use crate::error::bail;
use crate::BuildError;

pub use layout::{attach, write_index, Attached};
pub use provenance::{Facts, GitInfo};
pub use sbom::StageRoot;

type Result<T> = std::result::Result<T, BuildError>;

/// The in-toto statement type BuildKit writes.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v0.1";
pub const SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";
pub const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
pub const SPDX_PREDICATE: &str = "https://spdx.dev/Document";

/// How much the provenance says (`mode=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProvenanceMode {
    /// Timestamps, frontend, materials, source, platform; no build argument values.
    #[default]
    Min,
    /// Also the build arguments, the build definition and per-step metadata.
    Max,
}

/// The SLSA provenance version of the predicate (`version=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlsaVersion {
    #[default]
    V02,
    V1,
}

/// ProvenanceOpts is one `type=provenance` request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProvenanceOpts {
    pub mode: ProvenanceMode,
    pub version: SlsaVersion,
    /// `builder-id=`: the SLSA builder id (default: kiln's).
    pub builder_id: Option<String>,
}

/// SbomOpts is one `type=sbom` request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SbomOpts {
    /// `scan-context=true` (kiln's key): the build context is scanned too, as its own
    /// SBOM statement, as if the target declared `ARG BUILDKIT_SBOM_SCAN_CONTEXT=true`
    /// (that ARG, as BuildKit reads it, is the frontend's: `BuildPlan::sbom_scan_context`).
    pub scan_context: bool,
    /// `scan-stage=true` (kiln's key): every stage the target needs is scanned too, each
    /// as its own SBOM statement, as if each declared `ARG BUILDKIT_SBOM_SCAN_STAGE=true`.
    pub scan_stage: bool,
}

/// Provenance is the `--provenance` setting.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Provenance {
    /// Not given: buildx's default, min provenance on the outputs that hold an image
    /// index (`--push`/`type=registry`, `type=oci`), unless
    /// `BUILDX_NO_DEFAULT_ATTESTATIONS` is true.
    #[default]
    Default,
    Off,
    On(ProvenanceOpts),
}

/// AttestRequest is every attestation a build was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AttestRequest {
    pub provenance: Provenance,
    pub sbom: Option<SbomOpts>,
    /// `BUILDX_NO_DEFAULT_ATTESTATIONS` is true: no default provenance.
    pub no_default: bool,
}

fn truthy(key: &str, v: &str, flag: &str) -> Result<bool> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" | "t" => Ok(true),
        "false" | "0" | "f" => Ok(false),
        _ => bail!("invalid {flag}: `{key}` must be true or false, not `{v}`"),
    }
}

impl AttestRequest {
    /// Applies one `--attest type=…,…` value.
    pub fn parse_attest(&mut self, spec: &str) -> Result<()> {
        let flag = format!("--attest `{spec}`");
        let fields =
            kiln_frontend::csv::fields(spec).map_err(|e| BuildError::Message(format!("invalid {flag}: {e}")))?;
        let mut kind = None;
        let mut rest = Vec::new();
        for f in fields {
            match f.split_once('=') {
                Some(("type", v)) => kind = Some(v.to_string()),
                Some(_) => rest.push(f),
                None => bail!("invalid {flag}: `{f}` is not key=value"),
            }
        }
        match kind.as_deref() {
            Some("provenance") => self.provenance = parse_provenance_fields(&rest, &flag)?,
            Some("sbom") => self.sbom = parse_sbom_fields(&rest, &flag)?,
            Some(other) => bail!("invalid {flag}: unknown attestation type `{other}` (expected provenance or sbom)"),
            None => bail!("invalid {flag}: missing `type=` (provenance or sbom)"),
        }
        Ok(())
    }

    /// Applies `--provenance VALUE`: `true`, `false`, `min`, `max`, or `mode=…,version=…`.
    pub fn parse_provenance(&mut self, v: &str) -> Result<()> {
        let flag = format!("--provenance `{v}`");
        let fields = shorthand(v, "mode", &flag)?;
        self.provenance = parse_provenance_fields(&fields, &flag)?;
        Ok(())
    }

    /// Applies `--sbom VALUE`: `true`, `false`, or `key=value,…`.
    pub fn parse_sbom(&mut self, v: &str) -> Result<()> {
        let flag = format!("--sbom `{v}`");
        let fields = shorthand(v, "generator", &flag)?;
        self.sbom = parse_sbom_fields(&fields, &flag)?;
        Ok(())
    }

    /// Whether the user asked for an attestation (not only the default).
    pub fn explicit(&self) -> bool {
        matches!(self.provenance, Provenance::On(_)) || self.sbom.is_some()
    }
}

/// Reads `BUILDX_NO_DEFAULT_ATTESTATIONS` as buildx does (a bool; anything else is an error).
pub fn no_default_attestations(value: Option<&str>) -> Result<bool> {
    match value {
        None => Ok(false),
        Some(v) => truthy(
            "BUILDX_NO_DEFAULT_ATTESTATIONS",
            v,
            "environment variable BUILDX_NO_DEFAULT_ATTESTATIONS",
        ),
    }
}

/// The shorthand forms: `true`/`false`, a bare word meaning `KEY=word`, or `k=v,…`.
fn shorthand(v: &str, key: &str, flag: &str) -> Result<Vec<String>> {
    match v {
        "true" | "1" => Ok(Vec::new()),
        "false" | "0" => Ok(vec!["disabled=true".to_string()]),
        _ if !v.contains('=') => Ok(vec![format!("{key}={v}")]),
        _ => kiln_frontend::csv::fields(v).map_err(|e| BuildError::Message(format!("invalid {flag}: {e}"))),
    }
}

fn parse_provenance_fields(fields: &[String], flag: &str) -> Result<Provenance> {
    let mut p = ProvenanceOpts::default();
    for f in fields {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| BuildError::Message(format!("invalid {flag}: `{f}` is not key=value")))?;
        match k {
            "disabled" if truthy(k, v, flag)? => return Ok(Provenance::Off),
            "disabled" => {}
            "mode" => {
                p.mode = match v {
                    "min" => ProvenanceMode::Min,
                    "max" => ProvenanceMode::Max,
                    _ => bail!("invalid {flag}: mode `{v}` (expected min or max)"),
                }
            }
            "version" => {
                p.version = match v {
                    "v0.2" => SlsaVersion::V02,
                    "v1" | "v1.0" | "v1.1" => SlsaVersion::V1,
                    _ => bail!("invalid {flag}: version `{v}` (expected v0.2 or v1)"),
                }
            }
            "builder-id" => p.builder_id = Some(v.to_string()),
            // buildx's own keys, meaningful to BuildKit's daemon only.
            "inline-only" | "reproducible" => {}
            _ => bail!("invalid {flag}: unknown key `{k}` (expected mode, version, builder-id or disabled)"),
        }
    }
    Ok(Provenance::On(p))
}

fn parse_sbom_fields(fields: &[String], flag: &str) -> Result<Option<SbomOpts>> {
    let mut s = SbomOpts::default();
    for f in fields {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| BuildError::Message(format!("invalid {flag}: `{f}` is not key=value")))?;
        match k {
            "disabled" if truthy(k, v, flag)? => return Ok(None),
            "disabled" => {}
            "scan-context" => s.scan_context = truthy(k, v, flag)?,
            "scan-stage" => s.scan_stage = truthy(k, v, flag)?,
            "generator" => bail!(
                "invalid {flag}: kiln makes the SBOM itself and runs no scanner image (`generator=` is not supported)"
            ),
            _ => bail!("invalid {flag}: unknown key `{k}` (expected disabled, scan-context or scan-stage)"),
        }
    }
    Ok(Some(s))
}

/// Predicate is one attestation: its predicate type, the file name BuildKit gives it
/// beside a root filesystem (`provenance.json`, `sbom.spdx.json`, …) and the predicate.
#[derive(Debug, Clone)]
pub struct Predicate {
    pub kind: String,
    pub path: String,
    pub value: serde_json::Value,
}

/// Predicates is what [`collect`] made, in order.
#[derive(Debug, Clone, Default)]
pub struct Predicates(pub Vec<Predicate>);

/// Makes the predicates the request asks for about the built image.
pub fn collect(
    provenance: Option<&ProvenanceOpts>,
    sbom: Option<&SbomOpts>,
    stages: &[StageRoot<'_>],
    facts: &Facts<'_>,
    rootfs: Option<&std::path::Path>,
) -> Result<Predicates> {
    let mut out = Vec::new();
    if let Some(p) = provenance {
        let (kind, v) = provenance::predicate(p, facts);
        out.push(Predicate {
            kind: kind.to_string(),
            path: "provenance.json".to_string(),
            value: v,
        });
    }
    if let Some(s) = sbom {
        out.extend(sbom::predicates(s.scan_context, stages, facts, rootfs)?);
    }
    Ok(Predicates(out))
}

#[cfg(test)]
mod tests;
