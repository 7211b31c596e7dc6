//! The SPDX 2.3 JSON document, shaped as syft (BuildKit's default scanner) writes it:
//! `SPDXRef-DOCUMENT` DESCRIBES one root element that CONTAINS every package found and
//! DESCENDANT_OF each base image.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};
use time::macros::format_description;
use time::OffsetDateTime;

use crate::license::Licenses;
use crate::{purl_escape, BaseImage, Package, SbomError, ScanOptions};

/// The SPDX licence list version the identifiers are taken from.
const LICENSE_LIST_VERSION: &str = "3.22";

/// SpdxDocument is one SPDX 2.3 document describing a root file system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpdxDocument {
    pub name: String,
    /// A URI unique to this content: derived from the document's own bytes, so the same
    /// tree and options give the same namespace.
    pub namespace: String,
    /// `creationInfo.created`, RFC 3339 in UTC.
    pub created: String,
    pub creators: Vec<String>,
    /// The root element first, then base images, then the packages found, sorted.
    pub packages: Vec<SpdxPackage>,
    pub relationships: Vec<Relationship>,
    /// `LicenseRef-…` identifiers used by the packages, with the text they stand for.
    pub extracted_licenses: Vec<(String, String)>,
}

/// SpdxPackage is one `packages[]` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpdxPackage {
    pub spdx_id: String,
    pub name: String,
    pub version: Option<String>,
    /// A valid SPDX licence expression or `NOASSERTION`.
    pub license_declared: String,
    pub purl: Option<String>,
    pub source_info: Option<String>,
    /// `primaryPackagePurpose` (`CONTAINER`, `FILE`, …), if one is stated.
    pub purpose: Option<&'static str>,
    pub sha256: Option<String>,
}

/// Relationship is one `relationships[]` element.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relationship {
    pub element: String,
    pub kind: &'static str,
    pub related: String,
}

impl SpdxDocument {
    /// The document as SPDX 2.3 JSON (pretty-printed, fields in a fixed order).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(&self.to_value()).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The document as a JSON value.
    pub fn to_value(&self) -> Value {
        let packages: Vec<Value> = self.packages.iter().map(SpdxPackage::to_value).collect();
        let mut doc = Map::new();
        doc.insert("spdxVersion".into(), json!("SPDX-2.3"));
        doc.insert("dataLicense".into(), json!("CC0-1.0"));
        doc.insert("SPDXID".into(), json!("SPDXRef-DOCUMENT"));
        doc.insert("name".into(), json!(self.name));
        doc.insert("documentNamespace".into(), json!(self.namespace));
        doc.insert(
            "creationInfo".into(),
            json!({
                "licenseListVersion": LICENSE_LIST_VERSION,
                "creators": self.creators,
                "created": self.created,
            }),
        );
        doc.insert("packages".into(), Value::Array(packages));
        if !self.extracted_licenses.is_empty() {
            let refs: Vec<Value> = self
                .extracted_licenses
                .iter()
                .map(|(id, text)| json!({"licenseId": id, "extractedText": text}))
                .collect();
            doc.insert("hasExtractedLicensingInfos".into(), Value::Array(refs));
        }
        let rels: Vec<Value> = self
            .relationships
            .iter()
            .map(|r| json!({"spdxElementId": r.element, "relatedSpdxElement": r.related, "relationshipType": r.kind}))
            .collect();
        doc.insert("relationships".into(), Value::Array(rels));
        Value::Object(doc)
    }
}

impl SpdxPackage {
    fn to_value(&self) -> Value {
        let mut p = Map::new();
        p.insert("name".into(), json!(self.name));
        p.insert("SPDXID".into(), json!(self.spdx_id));
        if let Some(v) = &self.version {
            p.insert("versionInfo".into(), json!(v));
        }
        p.insert("supplier".into(), json!("NOASSERTION"));
        p.insert("downloadLocation".into(), json!("NOASSERTION"));
        p.insert("filesAnalyzed".into(), json!(false));
        if let Some(h) = &self.sha256 {
            p.insert("checksums".into(), json!([{"algorithm": "SHA256", "checksumValue": h}]));
        }
        if let Some(s) = &self.source_info {
            p.insert("sourceInfo".into(), json!(s));
        }
        p.insert("licenseConcluded".into(), json!("NOASSERTION"));
        p.insert("licenseDeclared".into(), json!(self.license_declared));
        p.insert("copyrightText".into(), json!("NOASSERTION"));
        if let Some(purl) = &self.purl {
            p.insert(
                "externalRefs".into(),
                json!([{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": purl}]),
            );
        }
        if let Some(purpose) = self.purpose {
            p.insert("primaryPackagePurpose".into(), json!(purpose));
        }
        Value::Object(p)
    }
}

/// Builds the document for `packages` (already sorted) and the options.
pub(crate) fn document(opts: &ScanOptions, packages: Vec<Package>) -> Result<SpdxDocument, SbomError> {
    let created = match opts.created {
        Some(t) => OffsetDateTime::from_unix_timestamp(t).map_err(|_| SbomError::Timestamp(t))?,
        None => OffsetDateTime::now_utc(),
    };
    let created = created
        .format(format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z"))
        .map_err(|_| SbomError::Timestamp(created.unix_timestamp()))?;
    let name = if opts.name.is_empty() {
        "rootfs".to_string()
    } else {
        opts.name.clone()
    };
    let root_id = format!("SPDXRef-DocumentRoot-Directory-{}", id_part(&name));
    let mut ids = BTreeSet::new();
    let mut out = vec![SpdxPackage {
        spdx_id: root_id.clone(),
        name: name.clone(),
        version: None,
        license_declared: "NOASSERTION".into(),
        purl: None,
        source_info: None,
        purpose: Some("FILE"),
        sha256: None,
    }];
    let mut rels = vec![Relationship {
        element: "SPDXRef-DOCUMENT".into(),
        kind: "DESCRIBES",
        related: root_id.clone(),
    }];
    for b in &opts.base_images {
        let id = unique(
            &mut ids,
            format!("SPDXRef-BaseImage-{}", &short_hash(&b.name, &b.digest.to_string())),
        );
        out.push(base_image(b, id.clone()));
        rels.push(Relationship {
            element: root_id.clone(),
            kind: "DESCENDANT_OF",
            related: id,
        });
    }
    let mut licenses = Licenses::default();
    for p in packages {
        let id = unique(
            &mut ids,
            format!(
                "SPDXRef-Package-{}-{}-{}",
                p.kind.as_str(),
                id_part(&p.name),
                short_hash(&p.purl, &p.path)
            ),
        );
        let license_declared = match &p.license {
            Some(l) => licenses.expression(l),
            None => "NOASSERTION".into(),
        };
        out.push(SpdxPackage {
            spdx_id: id.clone(),
            name: p.name,
            version: Some(p.version),
            license_declared,
            purl: Some(p.purl),
            source_info: Some(format!("acquired package info from {}: {}", p.source, p.path)),
            purpose: None,
            sha256: None,
        });
        rels.push(Relationship {
            element: root_id.clone(),
            kind: "CONTAINS",
            related: id,
        });
    }
    let mut doc = SpdxDocument {
        name: name.clone(),
        namespace: String::new(),
        created,
        creators: vec![format!("Tool: kiln-{}", env!("CARGO_PKG_VERSION"))],
        packages: out,
        relationships: rels,
        extracted_licenses: licenses.refs.into_iter().collect(),
    };
    let digest = kiln_image::sha256_hex(doc.to_json().as_bytes());
    doc.namespace = format!("https://kiln.invalid/spdx/{}-{}", purl_escape(&name), &digest[..32]);
    Ok(doc)
}

/// The package standing for a base image: its digest as version and checksum, an OCI purl.
fn base_image(b: &BaseImage, spdx_id: String) -> SpdxPackage {
    // `registry:5000/library/debian:bookworm@sha256:…` → repository and tag.
    let without_digest = b.name.split('@').next().unwrap_or_default();
    let (repo, tag) = match without_digest.rsplit_once(':') {
        Some((r, t)) if !t.contains('/') => (r, Some(t)),
        _ => (without_digest, None),
    };
    let short = repo.rsplit('/').next().unwrap_or(repo).to_ascii_lowercase();
    let mut q = vec![format!("repository_url={}", purl_escape(repo))];
    if let Some(t) = tag {
        q.push(format!("tag={}", purl_escape(t)));
    }
    if let Some(p) = &b.platform {
        q.push(format!("arch={}", purl_escape(&p.architecture)));
    }
    SpdxPackage {
        spdx_id,
        name: b.name.clone(),
        version: Some(b.digest.to_string()),
        license_declared: "NOASSERTION".into(),
        purl: Some(format!(
            "pkg:oci/{}@{}?{}",
            purl_escape(&short),
            purl_escape(&b.digest.to_string()),
            q.join("&")
        )),
        source_info: Some("base image of the build".into()),
        purpose: Some("CONTAINER"),
        sha256: (b.digest.algorithm() == "sha256").then(|| b.digest.hex().to_string()),
    }
}

/// `s` with every byte an SPDX id may not hold replaced by `-`, at most 64 bytes.
fn id_part(s: &str) -> String {
    s.bytes()
        .take(64)
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' {
                b as char
            } else {
                '-'
            }
        })
        .collect()
}

fn short_hash(a: &str, b: &str) -> String {
    kiln_image::sha256_hex(format!("{a}\n{b}").as_bytes())[..16].to_string()
}

fn unique(ids: &mut BTreeSet<String>, id: String) -> String {
    let mut candidate = id.clone();
    let mut n = 1;
    while !ids.insert(candidate.clone()) {
        n += 1;
        candidate = format!("{id}-{n}");
    }
    candidate
}
