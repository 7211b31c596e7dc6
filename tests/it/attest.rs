//! Provenance and SBOM attestations (`--provenance`, `--sbom`, `--attest`), laid out as
//! BuildKit writes them: an attestation manifest per platform in the image index. The
//! SBOM is checked with the SPDX project's validator (`pyspdxtools`), the provenance
//! against SLSA v0.2 and v1 JSON schemas (testdata/slsa/, written from the published
//! specs), the pushed index with skopeo, the registry and docker.
//!
//! The testkit sets BUILDX_NO_DEFAULT_ATTESTATIONS=1 for every other module; these
//! tests remove it where they test the default.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use crate::common::*;
use kiln_testkit::{Dockerd, Registry};

const INDEX: &str = "application/vnd.oci.image.index.v1+json";
const SLSA_V02: &str = "https://slsa.dev/provenance/v0.2";
const SLSA_V1: &str = "https://slsa.dev/provenance/v1";
const SPDX: &str = "https://spdx.dev/Document";

/// An OCI archive's members, path → bytes.
fn members(archive: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut a = tar::Archive::new(archive);
    let mut out = BTreeMap::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut v = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut v).unwrap();
        out.insert(p, v);
    }
    out
}

fn blob<'a>(m: &'a BTreeMap<String, Vec<u8>>, digest: &str) -> &'a [u8] {
    let hex = digest.strip_prefix("sha256:").unwrap();
    m.get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("no blob {digest} in the archive"))
}

/// What an OCI archive with attestations holds: the index, the image manifest's
/// digest, the attestation manifest's index entry, and the statements by predicate type.
pub(crate) struct Attested {
    index: serde_json::Value,
    index_digest: String,
    image: String,
    entry: serde_json::Value,
    pub(crate) statements: Vec<serde_json::Value>,
}

pub(crate) fn attested(archive: &[u8]) -> Attested {
    let m = members(archive);
    let top = json(std::str::from_utf8(&m["index.json"]).unwrap());
    let d = &top["manifests"][0];
    assert_eq!(d["mediaType"], INDEX, "index.json names an image index: {top}");
    let index_digest = d["digest"].as_str().unwrap().to_string();
    let index: serde_json::Value = serde_json::from_slice(blob(&m, &index_digest)).unwrap();
    let list = index["manifests"].as_array().unwrap();
    assert_eq!(list.len(), 2, "one image, one attestation manifest: {index}");
    let image = list[0]["digest"].as_str().unwrap().to_string();
    assert_eq!(list[0]["platform"]["os"], "linux");
    let entry = list[1].clone();
    // BuildKit's layout, exactly.
    assert_eq!(entry["mediaType"], "application/vnd.oci.image.manifest.v1+json");
    assert_eq!(
        entry["platform"],
        serde_json::json!({"architecture": "unknown", "os": "unknown"})
    );
    assert_eq!(
        entry["annotations"]["vnd.docker.reference.type"],
        "attestation-manifest"
    );
    assert_eq!(entry["annotations"]["vnd.docker.reference.digest"], image.as_str());
    let att: serde_json::Value = serde_json::from_slice(blob(&m, entry["digest"].as_str().unwrap())).unwrap();
    let config: serde_json::Value =
        serde_json::from_slice(blob(&m, att["config"]["digest"].as_str().unwrap())).unwrap();
    assert_eq!(config["architecture"], "unknown");
    assert_eq!(config["os"], "unknown");
    let mut statements = Vec::new();
    for (i, l) in att["layers"].as_array().unwrap().iter().enumerate() {
        assert_eq!(l["mediaType"], "application/vnd.in-toto+json");
        assert_eq!(config["rootfs"]["diff_ids"][i], l["digest"]);
        let s: serde_json::Value = serde_json::from_slice(blob(&m, l["digest"].as_str().unwrap())).unwrap();
        assert_eq!(l["annotations"]["in-toto.io/predicate-type"], s["predicateType"]);
        assert_eq!(s["_type"], "https://in-toto.io/Statement/v0.1");
        assert_eq!(
            s["subject"][0]["digest"]["sha256"],
            image.strip_prefix("sha256:").unwrap()
        );
        statements.push(s);
    }
    Attested {
        index,
        index_digest,
        image,
        entry,
        statements,
    }
}

impl Attested {
    fn statement(&self, predicate_type: &str) -> &serde_json::Value {
        self.statements
            .iter()
            .find(|s| s["predicateType"] == predicate_type)
            .unwrap_or_else(|| panic!("no {predicate_type} statement: {:#?}", self.statements))
    }
}

fn schema(name: &str) -> jsonschema::Validator {
    let p = kiln_testkit::workspace_root().join("testdata/slsa").join(name);
    let v = json(&std::fs::read_to_string(&p).unwrap());
    jsonschema::options().should_validate_formats(true).build(&v).unwrap()
}

fn assert_valid(schema_name: &str, v: &serde_json::Value) {
    let s = schema(schema_name);
    let errors: Vec<String> = s
        .iter_errors(v)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{schema_name}: {errors:#?}\n{v:#}");
}

/// Checks a provenance statement against the in-toto and SLSA schemas of its version.
pub(crate) fn assert_slsa(statement: &serde_json::Value) {
    assert_valid("in-toto-statement-v0.1.schema.json", statement);
    match statement["predicateType"].as_str().unwrap() {
        SLSA_V02 => assert_valid("provenance-v0.2.schema.json", &statement["predicate"]),
        SLSA_V1 => assert_valid("provenance-v1.schema.json", &statement["predicate"]),
        other => panic!("not a provenance statement: {other}"),
    }
}

/// The schemas can fail: a predicate missing what they require is refused.
#[test]
fn the_slsa_schemas_refuse_what_the_specs_require() {
    let s = schema("provenance-v0.2.schema.json");
    assert!(!s.is_valid(&serde_json::json!({"buildType": "https://x.invalid/t"})));
    assert!(!s.is_valid(&serde_json::json!({"builder": {"id": "not a uri"}, "buildType": "https://x.invalid/t"})));
    assert!(
        s.is_valid(&serde_json::json!({"builder": {"id": "https://x.invalid/b"}, "buildType": "https://x.invalid/t"}))
    );
    let s = schema("provenance-v1.schema.json");
    assert!(!s.is_valid(&serde_json::json!({"buildDefinition": {"buildType": "https://x.invalid/t"}, "runDetails": {"builder": {"id": "https://x.invalid/b"}}})));
    assert!(!s.is_valid(&serde_json::json!({
        "buildDefinition": {"buildType": "https://x.invalid/t", "externalParameters": {}, "resolvedDependencies": [{"name": "x"}]},
        "runDetails": {"builder": {"id": "https://x.invalid/b"}}
    })));
    let s = schema("in-toto-statement-v0.1.schema.json");
    assert!(!s.is_valid(&serde_json::json!({"_type": "https://in-toto.io/Statement/v0.1", "subject": [], "predicateType": SLSA_V02, "predicate": {}})));
}

/// A busybox-based context that is a git work tree with one commit; returns it and the commit.
fn git_context(base: &str) -> Option<(tempfile::TempDir, String)> {
    if !require_tool("git") {
        return None;
    }
    let ctx = context(&[
        (
            "Dockerfile",
            &format!("FROM {base}\nARG GREETING=hi\nCOPY hello.txt /hello.txt\nRUN [\"/bin/busybox\", \"true\"]\n"),
        ),
        ("hello.txt", "hello\n"),
    ]);
    let git = |args: &[&str]| {
        run_ok(
            Command::new("git")
                .arg("-C")
                .arg(ctx.path())
                .args(["-c", "user.name=kiln", "-c", "user.email=kiln@example.invalid"])
                .args(args),
        )
    };
    git(&["init", "-q"]);
    git(&["remote", "add", "origin", "https://git.example.invalid/app.git"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "app"]);
    let commit = git(&["rev-parse", "HEAD"]).trim().to_string();
    Some((ctx, commit))
}

pub(crate) fn build_oci(k: &Kiln, ctx: &Path, extra: &[&str], no_default: bool) -> (Vec<u8>, String) {
    let out = tempfile::tempdir().unwrap();
    let dest = out.path().join("img.tar");
    let mut c = k.cmd();
    if !no_default {
        c.env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS");
    }
    let o = run(c
        .args(["build", "--progress=plain", "-o"])
        .arg(format!("type=oci,dest={}", dest.display()))
        .args(extra)
        .arg(ctx));
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{err}");
    (std::fs::read(dest).unwrap(), err)
}

#[test]
fn provenance_v02_and_v1_validate_and_name_the_base_digest_and_the_git_commit() {
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    let Some(_) = crate::registry::push_busybox(&k, &reg) else {
        return;
    };
    let base = format!("{}/busybox:1", reg.host);
    let Some((ctx, commit)) = git_context(&base) else {
        return;
    };
    let base_digest = skopeo_inspect(&format!("docker://{base}"), false).unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    for (flag, kind) in [
        ("--provenance=true", SLSA_V02),
        ("--provenance=mode=max", SLSA_V02),
        ("--provenance=mode=max,version=v1", SLSA_V1),
        ("--attest=type=provenance,mode=min,version=v1", SLSA_V1),
    ] {
        let (archive, _) = build_oci(
            &k,
            ctx.path(),
            &[flag, "-t", "app:1", "--build-arg", "GREETING=hello"],
            true,
        );
        let a = attested(&archive);
        assert_eq!(a.statements.len(), 1, "{flag}");
        let s = a.statement(kind);
        assert_slsa(s);
        assert_eq!(
            s["subject"][0]["name"], "pkg:docker/app@1?platform=linux%2Famd64",
            "{flag}"
        );
        let p = &s["predicate"];
        let (materials, config_source, params, meta) = if kind == SLSA_V02 {
            (
                &p["materials"],
                &p["invocation"]["configSource"],
                &p["invocation"]["parameters"],
                &p["metadata"],
            )
        } else {
            (
                &p["buildDefinition"]["resolvedDependencies"],
                &p["buildDefinition"]["externalParameters"]["configSource"],
                &p["buildDefinition"]["externalParameters"]["request"],
                &p["runDetails"]["metadata"],
            )
        };
        let text = materials.to_string();
        assert!(
            text.contains(base_digest.strip_prefix("sha256:").unwrap()),
            "{flag}: the base image by digest: {materials:#}"
        );
        assert!(text.contains(&commit), "{flag}: the context's commit: {materials:#}");
        assert_eq!(
            meta["https://mobyproject.org/buildkit@v1#metadata"]["vcs"]["revision"],
            commit.as_str(),
            "{flag}"
        );
        let dockerfile = std::fs::read(ctx.path().join("Dockerfile")).unwrap();
        assert_eq!(
            config_source["digest"]["sha256"],
            kiln_image_sha256(&dockerfile),
            "{flag}: the Dockerfile's digest"
        );
        assert_eq!(params["frontend"], "dockerfile.v0");
        let max = flag.contains("max");
        // As buildx: build argument values only in max mode.
        assert_eq!(
            params["args"]["build-arg:GREETING"] == "hello",
            max,
            "{flag}: {params:#}"
        );
        let build_config = if kind == SLSA_V02 {
            &p["buildConfig"]
        } else {
            &p["buildDefinition"]["internalParameters"]["buildConfig"]
        };
        assert_eq!(build_config["llbDefinition"].is_array(), max, "{flag}: {p:#}");
        if max {
            let steps = build_config["llbDefinition"].as_array().unwrap();
            assert!(steps.len() >= 3, "{steps:#?}");
            let source = &meta["https://mobyproject.org/buildkit@v1#metadata"]["source"];
            assert_eq!(source["infos"][0]["filename"], "Dockerfile");
            assert!(!source["locations"].as_object().unwrap().is_empty(), "{source:#}");
        }
    }
}

pub(crate) fn kiln_image_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[test]
fn the_default_follows_buildx_and_source_date_epoch_keeps_the_index_reproducible() {
    let Some(reg) = Registry::start() else { return };
    let k = kiln();
    let Some(_) = crate::registry::push_busybox(&k, &reg) else {
        return;
    };
    let base = format!("{}/busybox:1", reg.host);
    let ctx = context(&[(
        "Dockerfile",
        &format!("FROM {base}\nRUN [\"/bin/busybox\", \"mkdir\", \"/made\"]\n"),
    )]);
    // No flag: min provenance on type=oci, as buildx attaches it.
    let epoch = ["--build-arg", "SOURCE_DATE_EPOCH=1700000000", "--no-cache"];
    let (first, _) = build_oci(&k, ctx.path(), &epoch, false);
    let a = attested(&first);
    assert_eq!(a.statements.len(), 1);
    let s = a.statement(SLSA_V02);
    assert_slsa(s);
    assert_eq!(s["predicate"]["metadata"]["buildStartedOn"], "2023-11-14T22:13:20Z");
    assert!(s["predicate"].get("buildConfig").is_none(), "min mode");
    let (second, _) = build_oci(&k, ctx.path(), &epoch, false);
    assert_eq!(
        attested(&second).index_digest,
        a.index_digest,
        "same inputs, same SOURCE_DATE_EPOCH"
    );
    assert_eq!(first, second, "the archives are byte for byte the same");
    // BUILDX_NO_DEFAULT_ATTESTATIONS=1 (the testkit's) and --provenance=false: a plain manifest.
    for (no_default, extra) in [(true, &[][..]), (false, &["--provenance=false"][..])] {
        let (plain, _) = build_oci(&k, ctx.path(), extra, no_default);
        let top = json(&tar_member(&plain, "index.json").unwrap());
        assert_eq!(
            top["manifests"][0]["mediaType"],
            "application/vnd.oci.image.manifest.v1+json"
        );
    }
    // The local store alone gets no default provenance (as buildx's docker driver),
    // but keeps what is asked for; `kiln inspect` shows it.
    let mut c = k.cmd();
    c.env_remove("BUILDX_NO_DEFAULT_ATTESTATIONS");
    run_ok(c.args(["build", "-q", "-t", "plain:1"]).arg(ctx.path()));
    let i = json(&k.ok(&["inspect", "plain:1"]));
    assert!(i[0].get("Attestations").is_none(), "{i:#}");
    k.ok(&[
        "build",
        "-q",
        "--sbom=true",
        "-t",
        "sbom:1",
        ctx.path().to_str().unwrap(),
    ]);
    let i = json(&k.ok(&["inspect", "sbom:1"]));
    let statements = &i[0]["Attestations"][0]["Statements"];
    assert_eq!(statements[0]["PredicateType"], SPDX, "{i:#}");
    assert_eq!(
        i[0]["Index"]["manifests"][0]["digest"],
        i[0]["Attestations"][0]["ReferenceDigest"]
    );
    // `kiln prune -a` keeps every blob of the index; a build FROM it still finds it all locally.
    k.ok(&["prune", "-a"]);
    let next = context(&[("Dockerfile", "FROM sbom:1\nRUN [\"/bin/busybox\", \"true\"]\n")]);
    k.ok(&[
        "build",
        "-q",
        "--pull=never",
        "-t",
        "next:1",
        next.path().to_str().unwrap(),
    ]);
    assert!(k.ok(&["fsck"]).contains(" 0 problems"));
    // `kiln save` of it carries the index and every blob (skopeo reads it).
    let d = tempfile::tempdir().unwrap();
    let saved = d.path().join("saved.tar");
    k.ok(&["save", "-o", saved.to_str().unwrap(), "sbom:1"]);
    if require_tool("skopeo") {
        run_ok(
            Command::new("skopeo")
                .args(["inspect", "--raw"])
                .arg(format!("oci-archive:{}", saved.display())),
        );
    }
    // `scan-context=true` (the ARG BUILDKIT_SBOM_SCAN_CONTEXT route: attest_outputs.rs):
    // a second SPDX statement, of the context.
    let (archive, progress) = build_oci(
        &k,
        ctx.path(),
        &["--attest=type=sbom,scan-context=true", "--provenance=false"],
        true,
    );
    let a = attested(&archive);
    let names: Vec<&str> = a
        .statements
        .iter()
        .map(|s| s["predicate"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["image", "context"], "{progress}");
    assert!(a.statements.iter().all(|s| s["predicateType"] == SPDX));
    // type=docker: the image only, with a warning, as buildx's docker exporter.
    let dest = d.path().join("docker.tar");
    let out = run(k
        .cmd()
        .args(["build", "--sbom=true", "-o"])
        .arg(format!("type=docker,dest={}", dest.display()))
        .arg(ctx.path()));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("type=docker: the docker-archive holds the image only"),
        "{err}"
    );
    let top = json(&tar_member(&std::fs::read(&dest).unwrap(), "index.json").unwrap());
    assert_eq!(
        top["manifests"][0]["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
}

#[test]
fn bad_attestation_flags_are_refused_by_name() {
    let k = kiln();
    let ctx = context(&[("Dockerfile", "FROM scratch\n")]);
    let c = ctx.path().to_str().unwrap();
    for (flag, says) in [
        (
            "--provenance=mode=mid",
            "--provenance `mode=mid`: mode `mid` (expected min or max)",
        ),
        ("--provenance=version=v9", "version `v9` (expected v0.2 or v1)"),
        ("--attest=type=vex", "unknown attestation type `vex`"),
        ("--attest=mode=max", "missing `type=`"),
        ("--sbom=generator=docker/buildkit-syft-scanner", "runs no scanner image"),
        ("--sbom=frob=1", "--sbom `frob=1`: unknown key `frob`"),
    ] {
        let err = k.fails(&["build", flag, c]);
        assert!(err.contains(says), "{flag}: {err}");
    }
    let err = run(k
        .cmd()
        .env("BUILDX_NO_DEFAULT_ATTESTATIONS", "maybe")
        .args(["build", c]));
    assert!(String::from_utf8_lossy(&err.stderr).contains("BUILDX_NO_DEFAULT_ATTESTATIONS"));
}

/// The Debian test image with jq (apt), a pip-installed package and an npm package:
/// the SBOM validates with pyspdxtools and lists them; max provenance validates and
/// never holds the secret; the pushed index is accepted by skopeo and the registry,
/// and docker pulls the platform image.
#[test]
fn debian_sbom_lists_jq_pip_and_npm_and_the_push_carries_it() {
    let Some(reg) = Registry::start() else { return };
    let Some(base) = crate::debian::push_debian(&reg) else {
        return;
    };
    if !require_tool("pyspdxtools") {
        return;
    }
    let k = kiln();
    let ctx = context(&[
        (
            "Dockerfile",
            &format!(
                "FROM {base}\n\
                 RUN apt-get update && apt-get install -y --no-install-recommends jq && rm -rf /var/lib/apt/lists/*\n\
                 RUN --mount=type=secret,id=token test -s /run/secrets/token\n\
                 COPY site/ /usr/local/lib/python3.11/dist-packages/\n\
                 COPY node_modules/ /srv/app/node_modules/\n"
            ),
        ),
        // What `pip install requests==2.31.0` and `npm install left-pad@1.3.0` leave
        // (PyPI and npm are not reachable from RUN steps here).
        (
            "site/requests-2.31.0.dist-info/METADATA",
            "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nLicense: Apache 2.0\n",
        ),
        ("site/requests-2.31.0.dist-info/INSTALLER", "pip\n"),
        (
            "node_modules/left-pad/package.json",
            "{\"name\": \"left-pad\", \"version\": \"1.3.0\", \"license\": \"WTFPL\"}\n",
        ),
    ]);
    let secret = "s3cr3t-kiln-attest-4f9d2c";
    let app = format!("{}/jqapp:1", reg.host);
    let (archive, progress) = {
        let out = tempfile::tempdir().unwrap();
        let dest = out.path().join("img.tar");
        let o = run(k
            .cmd()
            .env("KILN_ATTEST_TOKEN", secret)
            .args([
                "build",
                "--progress=plain",
                "--sbom=true",
                "--provenance=mode=max",
                "--secret",
                "id=token,env=KILN_ATTEST_TOKEN",
                "--push",
                "-t",
                &app,
                "-o",
            ])
            .arg(format!("type=oci,dest={}", dest.display()))
            .arg(ctx.path()));
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert!(o.status.success(), "{err}");
        (std::fs::read(dest).unwrap(), err)
    };
    // The progress names what was made (and how long the scan took: shown in the
    // test's output for docs/benchmarks.md, not asserted).
    let made: Vec<&str> = progress.lines().filter(|l| l.contains("SBOM of the image:")).collect();
    assert_eq!(made.len(), 1, "{progress}");
    eprintln!("{}", made[0]);
    // The secret is in no blob and no file of the output.
    for (path, bytes) in members(&archive) {
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the secret's value is in {path}"
        );
    }
    let a = attested(&archive);
    let prov = a.statement(SLSA_V02);
    assert_slsa(prov);
    assert_eq!(
        prov["predicate"]["invocation"]["parameters"]["secrets"][0]["id"],
        "token"
    );
    // The SBOM: SPDX 2.3 accepted by the SPDX project's validator.
    let sbom = &a.statement(SPDX)["predicate"];
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("sbom.json");
    std::fs::write(&path, serde_json::to_vec_pretty(sbom).unwrap()).unwrap();
    run_ok(Command::new("pyspdxtools").arg("-i").arg(&path));
    let packages = sbom["packages"].as_array().unwrap();
    let find = |name: &str| {
        packages
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in the SBOM"))
    };
    for name in ["jq", "libjq1", "libonig5"] {
        let p = find(name);
        let version = p["versionInfo"].as_str().unwrap();
        assert!(version.contains('-'), "{name}: a Debian version: {version}");
        let purl = p["externalRefs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["referenceType"] == "purl")
            .unwrap()["referenceLocator"]
            .as_str()
            .unwrap();
        assert!(
            purl.starts_with(&format!("pkg:deb/debian/{name}@{version}?arch=")),
            "{name}: {purl}"
        );
    }
    let purl_of = |name: &str| find(name)["externalRefs"].to_string();
    assert_eq!(find("requests")["versionInfo"], "2.31.0");
    assert!(
        purl_of("requests").contains("pkg:pypi/requests@2.31.0"),
        "{}",
        purl_of("requests")
    );
    assert_eq!(find("left-pad")["versionInfo"], "1.3.0");
    assert!(
        purl_of("left-pad").contains("pkg:npm/left-pad@1.3.0"),
        "{}",
        purl_of("left-pad")
    );
    // The base image is named by digest.
    let base_digest = skopeo_inspect(&format!("docker://{base}"), false).unwrap()["Digest"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sbom.to_string().contains(base_digest.strip_prefix("sha256:").unwrap()));
    assert!(prov.to_string().contains(base_digest.strip_prefix("sha256:").unwrap()));

    // The pushed index: the same as the archive's, read by skopeo and the registry.
    let raw = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!("docker://{app}")),
    );
    assert_eq!(json(&raw), a.index, "the registry serves the index kiln wrote");
    assert_eq!(
        kiln_image_sha256(raw.as_bytes()),
        a.index_digest.strip_prefix("sha256:").unwrap()
    );
    let att_raw = run_ok(
        Command::new("skopeo")
            .args(["inspect", "--raw", "--tls-verify=false"])
            .arg(format!(
                "docker://{}@{}",
                app.rsplit_once(':').unwrap().0,
                a.entry["digest"].as_str().unwrap()
            )),
    );
    assert_eq!(json(&att_raw)["layers"].as_array().unwrap().len(), 2);
    let layout = d.path().join("copy");
    run_ok(
        Command::new("skopeo")
            .args(["copy", "-q", "--all", "--src-tls-verify=false"])
            .arg(format!("docker://{app}"))
            .arg(format!("oci:{}:x", layout.display())),
    );
    let copied = json(&std::fs::read_to_string(layout.join("index.json")).unwrap());
    assert_eq!(copied["manifests"][0]["digest"], a.index_digest.as_str());
    // `kiln push` of the stored image sends the same index again.
    let again = format!("{}/jqcopy:2", reg.host);
    let out = k.ok(&["push", "-q", &app, &again]);
    assert_eq!(out.trim(), a.index_digest);
    // docker pulls the platform image.
    let Some(dockerd) = Dockerd::start() else { return };
    run_ok(dockerd.docker().args(["pull", "-q", &app]));
    let out = run_ok(
        dockerd
            .docker()
            .args(["run", "--rm", "--network", "none", &app, "jq", "--version"]),
    );
    assert!(out.starts_with("jq-1."), "{out}");
    let _ = a.image;
}
