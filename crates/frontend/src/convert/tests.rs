//! Unit tests of lowering: each pins one BuildKit behaviour.

use kiln_graph::{FileAction, NetworkMode, Op, SourceOp};
use kiln_image::Platform;

use super::{build_plan, BuildOptions, BuildPlan};
use crate::ErrorKind;

fn opts() -> BuildOptions {
    let p = Platform::parse("linux/amd64").expect("platform");
    let mut o = BuildOptions::new("Dockerfile");
    o.platform = p.clone();
    o.build_platform = p;
    o
}

fn plan(df: &str) -> BuildPlan {
    build_plan(df, &opts()).unwrap_or_else(|e| panic!("{e}"))
}

/// A plan with every entitlement granted (`--allow network.host,security.insecure`).
fn plan_allowed(df: &str) -> BuildPlan {
    let mut o = opts();
    o.allow = kiln_graph::Entitlement::ALL.into_iter().collect();
    build_plan(df, &o).unwrap_or_else(|e| panic!("{e}"))
}

fn root_op(p: &BuildPlan) -> &Op {
    let root = p.definition.root.as_ref().expect("root");
    &p.definition.node(&root.op).expect("root node").op
}

fn history(p: &BuildPlan) -> Vec<String> {
    p.image
        .history
        .iter()
        .map(|h| h.created_by.clone().unwrap_or_default())
        .collect()
}

#[test]
fn scratch_has_buildkit_defaults() {
    let p = plan("FROM scratch\n");
    assert_eq!(p.image.config.working_dir.as_deref(), Some("/"));
    assert_eq!(p.image.config.env, vec![format!("PATH={}", super::DEFAULT_PATH)]);
    assert!(matches!(root_op(&p), Op::Source(SourceOp::Scratch)));
    assert!(p.image.history.is_empty());
}

#[test]
fn entrypoint_resets_inherited_cmd_only() {
    // CMD set in the base stage is cleared by ENTRYPOINT in the child...
    let p = plan("FROM scratch AS a\nCMD [\"x\"]\nFROM a\nENTRYPOINT [\"e\"]\n");
    assert_eq!(p.image.config.cmd, None);
    // ...but not when this stage set CMD before ENTRYPOINT.
    let p = plan("FROM scratch\nCMD [\"x\"]\nENTRYPOINT [\"e\"]\n");
    assert_eq!(p.image.config.cmd, Some(vec!["x".to_string()]));
    assert!(p.image.config.args_escaped);
}

#[test]
fn stage_inherits_config_and_history() {
    let p = plan("FROM scratch AS base\nENV A=1\nLABEL l=v\nFROM base\nENV B=2\n");
    assert_eq!(history(&p), vec!["ENV A=1", "LABEL l=v", "ENV B=2"]);
    assert!(p.image.config.env.contains(&"A=1".to_string()));
    assert_eq!(p.image.config.labels.get("l").map(String::as_str), Some("v"));
}

#[test]
fn onbuild_triggers_run_in_child_stage() {
    let p = plan("FROM scratch AS base\nONBUILD WORKDIR /trig\nFROM base\n");
    assert_eq!(p.image.config.on_build, None, "triggers do not carry over");
    assert_eq!(p.image.config.working_dir.as_deref(), Some("/trig"));
    let Op::File(f) = root_op(&p) else { panic!("a mkdir") };
    assert!(matches!(&f.actions[0], FileAction::Mkdir { path, .. } if path == "/trig"));
}

#[test]
fn shell_form_uses_current_shell() {
    let p = plan_allowed("FROM scratch\nSHELL [\"/bin/bash\", \"-c\"]\nCMD echo hi\nRUN --network=host make\n");
    assert_eq!(
        p.image.config.cmd,
        Some(vec!["/bin/bash".into(), "-c".into(), "echo hi".into()])
    );
    let Op::Exec(e) = root_op(&p) else { panic!("an exec") };
    assert_eq!(e.args, vec!["/bin/bash", "-c", "make"]);
    assert_eq!(e.network, NetworkMode::Host);
    assert_eq!(
        history(&p).last().map(String::as_str),
        Some("RUN /bin/bash -c make # buildkit")
    );
}

#[test]
fn build_args_reach_run_env_and_history() {
    let mut o = opts();
    o.build_args.insert("V".into(), "cli".into());
    let p = build_plan("FROM scratch\nARG V=default\nRUN echo $V\n", &o).expect("plan");
    let Op::Exec(e) = root_op(&p) else { panic!("an exec") };
    assert!(e.env.contains(&"V=cli".to_string()));
    assert_eq!(history(&p)[1], "RUN |1 V=cli /bin/sh -c echo $V # buildkit");
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
}

#[test]
fn unused_build_args_are_reported() {
    let mut o = opts();
    o.build_args.insert("NOPE".into(), "1".into());
    o.build_args.insert("HTTP_PROXY".into(), "x".into());
    let p = build_plan("FROM scratch\n", &o).expect("plan");
    assert_eq!(p.warnings.len(), 1);
    assert_eq!(p.warnings[0].message, "One or more build-args [NOPE] were not consumed");
}

#[test]
fn target_selects_stage_case_insensitively() {
    let mut o = opts();
    o.target = Some("Build".into());
    let p = build_plan("FROM scratch AS build\nENV X=1\nFROM scratch\nENV Y=2\n", &o).expect("plan");
    assert_eq!(p.target_stage, "build");
    assert_eq!(history(&p), vec!["ENV X=1"]);
}

#[test]
fn descriptions_number_layer_steps() {
    let p = plan("FROM scratch AS a\nWORKDIR /x\nCOPY f .\nFROM a\nWORKDIR /\n");
    let mut d: Vec<String> = p
        .definition
        .nodes
        .values()
        .filter(|n| !n.meta.hidden)
        .map(|n| n.meta.description.clone())
        .collect();
    d.sort();
    assert_eq!(d, vec!["[a 1/2] WORKDIR /x", "[a 2/2] COPY f ."]);
    // WORKDIR / makes no layer but is still a history entry.
    assert_eq!(p.image.history.last().map(|h| h.empty_layer), Some(true));
}

#[test]
fn errors_name_line_and_source() {
    let e = build_plan("FROM scratch\n\nCOPPY a /\n", &opts()).unwrap_err();
    assert_eq!(
        e.to_string(),
        "Dockerfile:3: unknown instruction \"COPPY\" (did you mean \"COPY\"?)"
    );
    assert_eq!(e.line(), Some(3));
    assert_eq!(e.source_line(), Some("COPPY a /"));
    let e = build_plan("FROM scratch\nCOPY http://x/y /\n", &opts()).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::CopyFromUrl { .. }));
    assert_eq!(e.line(), Some(2));
    let e = build_plan("", &opts()).unwrap_err();
    assert_eq!(e.line(), None);
}

#[test]
fn copy_heredoc_writes_a_file() {
    let p = plan("FROM scratch\nCOPY <<EOF /a.txt\nhi\nEOF\n");
    let Op::File(f) = root_op(&p) else { panic!("a copy") };
    let FileAction::Copy(c) = &f.actions[0] else {
        panic!("a copy")
    };
    assert_eq!(
        (c.src.as_str(), c.dest.as_str(), c.dest_is_dir),
        ("/EOF", "/a.txt", false)
    );
    assert_eq!(history(&p), vec!["COPY <<EOF /a.txt # buildkit"]);
}

#[test]
fn label_option_applies_last() {
    let mut o = opts();
    o.labels.insert("k".into(), "cli".into());
    let p = build_plan("FROM scratch\nLABEL k=file\n", &o).expect("plan");
    assert_eq!(p.image.config.labels.get("k").map(String::as_str), Some("cli"));
}

/// A resolver with one known image, counting what it was asked for.
#[derive(Debug, Default)]
struct FakeResolver {
    asked: std::sync::Mutex<Vec<String>>,
}

impl super::ImageResolver for FakeResolver {
    fn resolve(&self, reference: &str, _: &Platform) -> Result<super::ResolvedImage, String> {
        self.asked.lock().unwrap().push(reference.to_string());
        if reference != "docker.io/library/base:1" {
            return Err("manifest unknown (HTTP 404)".to_string());
        }
        let mut config = kiln_image::ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            created: Some("2024-01-01T00:00:00Z".into()),
            ..Default::default()
        };
        config.config.env = vec!["PATH=/opt/bin:/usr/bin".into(), "BASE=1".into()];
        config.config.working_dir = Some("/srv".into());
        config.config.user = Some("app".into());
        config.config.cmd = Some(vec!["serve".into()]);
        config.config.on_build = Some(vec!["ENV TRIGGERED=yes".into(), "WORKDIR sub".into()]);
        config.history = vec![kiln_image::History {
            created: Some("2024-01-01T00:00:00Z".into()),
            created_by: Some("base layer".into()),
            ..Default::default()
        }];
        config.rootfs.diff_ids = vec![kiln_image::Digest::of(b"layer")];
        let pinned = format!("{reference}@{}", kiln_image::Digest::of(b"manifest"));
        Ok(super::ResolvedImage {
            reference: pinned,
            config,
        })
    }
}

fn plan_with(df: &str, resolver: &std::sync::Arc<FakeResolver>) -> Result<BuildPlan, crate::FrontendError> {
    let mut o = opts();
    o.resolver = Some(resolver.clone());
    build_plan(df, &o)
}

#[test]
fn image_base_inherits_config_and_runs_its_onbuild_triggers() {
    // BuildKit: the base config (Env, WorkingDir, User, Cmd, history) carries over, the
    // base's ONBUILD triggers run before the stage's own instructions and are cleared
    // from the new image, and the image source is pinned to the resolved digest.
    let r = std::sync::Arc::new(FakeResolver::default());
    let p = plan_with("FROM base:1\nENV OWN=1\n", &r).unwrap();
    let c = &p.image.config;
    assert_eq!(c.env, ["PATH=/opt/bin:/usr/bin", "BASE=1", "TRIGGERED=yes", "OWN=1"]);
    assert_eq!(c.working_dir.as_deref(), Some("/srv/sub"));
    assert_eq!(c.user.as_deref(), Some("app"));
    assert_eq!(c.cmd.as_deref(), Some(&["serve".to_string()][..]));
    assert_eq!(c.on_build, None);
    assert!(p.image.rootfs.diff_ids.is_empty(), "layers come from the solve");
    assert_eq!(p.image.created, None);
    assert_eq!(
        history(&p),
        ["base layer", "ENV TRIGGERED=yes", "WORKDIR /srv/sub", "ENV OWN=1"]
    );
    let sources: Vec<&String> = p
        .definition
        .nodes
        .values()
        .filter_map(|n| match &n.op {
            Op::Source(SourceOp::Image { reference, .. }) => Some(reference),
            _ => None,
        })
        .collect();
    assert_eq!(sources.len(), 1);
    assert!(
        sources[0].starts_with("docker.io/library/base:1@sha256:"),
        "{}",
        sources[0]
    );
}

#[test]
fn only_needed_stages_are_resolved_and_failures_name_the_line() {
    let r = std::sync::Arc::new(FakeResolver::default());
    plan_with("FROM unused:9 AS other\nFROM base:1\nENV A=1\n", &r).unwrap();
    assert_eq!(*r.asked.lock().unwrap(), ["docker.io/library/base:1"]);
    let err = plan_with("FROM scratch\nFROM missing:2\n", &r).unwrap_err();
    assert_eq!(err.line(), Some(2));
    let msg = err.to_string();
    assert!(
        msg.contains("Dockerfile:2") && msg.contains("missing:2") && msg.contains("HTTP 404"),
        "{msg}"
    );
}

/// The inputs and copy actions of the root file op.
fn root_copies(p: &BuildPlan) -> Vec<(Op, kiln_graph::CopyAction)> {
    let root = p.definition.root.as_ref().expect("root");
    let node = p.definition.node(&root.op).expect("root node");
    let Op::File(f) = &node.op else { panic!("a file op") };
    f.actions
        .iter()
        .filter_map(|a| match a {
            FileAction::Copy(c) => {
                let input = &node.inputs[c.input as usize];
                Some((p.definition.node(&input.op).expect("input").op.clone(), c.clone()))
            }
            _ => None,
        })
        .collect()
}

#[test]
fn add_url_downloads_into_a_source_op() {
    let sum = format!("sha256:{}", "0".repeat(64));
    let p = plan(&format!(
        "FROM scratch\nADD --checksum={sum} --chmod=644 https://example.com/dl/app.tar.gz /opt/\n"
    ));
    let copies = root_copies(&p);
    assert_eq!(copies.len(), 1);
    let (op, c) = &copies[0];
    assert_eq!(
        op,
        &Op::Source(SourceOp::Http {
            url: "https://example.com/dl/app.tar.gz".into(),
            filename: "app.tar.gz".into(),
            checksum: Some(sum.clone()),
        })
    );
    // Downloads are not extracted unless `--unpack=true`; no build context is read.
    assert_eq!(
        (c.src.as_str(), c.dest.as_str(), c.unpack),
        ("/app.tar.gz", "/opt/", false)
    );
    assert_eq!(p.definition.nodes.len(), 3, "scratch, the download and the copy");
    let p = plan("FROM scratch\nADD --unpack=true https://example.com/a.tgz /x/\n");
    assert!(root_copies(&p)[0].1.unpack);
    assert_eq!(history(&p), vec!["ADD https://example.com/a.tgz /x/ # buildkit"]);
}

#[test]
fn add_local_unpacks_unless_told_not_to() {
    let p = plan("FROM scratch\nADD a.tar /x/\n");
    assert!(root_copies(&p)[0].1.unpack);
    let p = plan("FROM scratch\nADD --unpack=false a.tar /x/\n");
    assert!(!root_copies(&p)[0].1.unpack);
    let p = plan("FROM scratch\nCOPY a.tar /x/\n");
    assert!(!root_copies(&p)[0].1.unpack);
}

#[test]
fn add_git_checks_out_a_ref() {
    let p = plan("FROM scratch\nADD --keep-git-dir=true https://example.com/r.git#v1:docs /src\n");
    let (op, c) = &root_copies(&p)[0];
    assert_eq!(
        op,
        &Op::Source(SourceOp::Git {
            remote: "https://example.com/r.git".into(),
            reference: "v1".into(),
            subdir: "docs".into(),
            keep_git_dir: true,
            checksum: None,
            skip_submodules: false,
        })
    );
    assert_eq!((c.src.as_str(), c.dest.as_str(), c.unpack), ("/", "/src", false));
}

#[test]
fn add_flag_errors_name_the_line() {
    let sum = format!("sha256:{}", "0".repeat(64));
    let e = build_plan(&format!("FROM scratch\n\nADD --checksum={sum} a.txt /\n"), &opts()).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::ChecksumNeedsRemote));
    assert_eq!(e.line(), Some(3));
    let e = build_plan(
        &format!("FROM scratch\nADD --checksum={sum} https://h/a https://h/b /\n"),
        &opts(),
    )
    .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::ChecksumSeveralSources));
    let e = build_plan("FROM scratch\nADD --checksum=sha256:12 https://h/a /\n", &opts()).unwrap_err();
    assert!(e.to_string().contains("--checksum"), "{e}");
    let e = build_plan(
        "FROM scratch\nADD --keep-git-dir=false https://h/r.git?keep-git-dir=true /\n",
        &opts(),
    )
    .unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::InvalidGitSource { .. }), "{e}");
    let e = build_plan("FROM scratch\nCOPY git@github.com:a/b.git /\n", &opts()).unwrap_err();
    assert!(matches!(e.kind(), ErrorKind::CopyFromUrl { .. }));
}

#[test]
fn run_network_host_needs_the_entitlement() {
    let e = build_plan("FROM scratch\nRUN --network=host make\n", &opts()).expect_err("not entitled");
    assert_eq!(e.line(), Some(2), "{e}");
    assert!(
        e.to_string()
            .contains("`RUN --network=host` needs `--allow network.host`"),
        "{e}"
    );
}

#[test]
fn run_security_insecure_needs_the_entitlement() {
    let e = build_plan("FROM scratch\nRUN true\nRUN --security=insecure make\n", &opts()).expect_err("not entitled");
    assert_eq!(e.line(), Some(3), "{e}");
    assert!(
        e.to_string()
            .contains("`RUN --security=insecure` needs `--allow security.insecure`"),
        "{e}"
    );
    let p = plan_allowed("FROM scratch\nRUN --security=insecure make\n");
    let Op::Exec(x) = root_op(&p) else { panic!("an exec") };
    assert_eq!(x.security, kiln_graph::SecurityMode::Insecure);
    let e = build_plan("FROM scratch\nRUN --security=root make\n", &opts()).expect_err("bad value");
    assert!(e.to_string().contains("invalid `RUN --security` value `root`"), "{e}");
}

#[test]
fn sandbox_security_keeps_the_op_digest() {
    // `--security=sandbox` is the default and must not change what is encoded (cache
    // keys of every existing step stay valid).
    let a = plan("FROM scratch\nRUN make\n");
    let b = plan("FROM scratch\nRUN --security=sandbox make\n");
    assert_eq!(a.definition.root, b.definition.root);
    let encoded = serde_json::to_string(root_op(&a)).expect("encodes");
    assert!(!encoded.contains("security"), "{encoded}");
}

#[test]
fn multi_platform_descriptions_name_the_platform_as_buildkit() {
    let mut o = opts();
    o.multi_platform = true;
    o.platform = Platform::parse("linux/arm64").expect("platform");
    let df = "FROM --platform=$BUILDPLATFORM scratch AS build\nARG TARGETARCH\nCOPY a /a-$TARGETARCH\n\
              FROM scratch\nCOPY --from=build /a-arm64 /a\n";
    let plan = build_plan(df, &o).unwrap_or_else(|e| panic!("{e}"));
    let mut shown: Vec<String> = plan
        .definition
        .nodes
        .values()
        .filter(|n| !n.meta.hidden)
        .map(|n| n.meta.description.clone())
        .collect();
    shown.sort();
    assert_eq!(
        shown,
        [
            "[linux/amd64->arm64 build 1/1] COPY a /a-arm64",
            "[linux/arm64 stage-1 1/1] COPY --from=build /a-arm64 /a",
        ]
    );
    // One platform: no prefix, as before.
    o.multi_platform = false;
    let plan = build_plan(df, &o).unwrap_or_else(|e| panic!("{e}"));
    assert!(plan
        .definition
        .nodes
        .values()
        .any(|n| n.meta.description == "[build 1/1] COPY a /a-arm64"));
}

/// The stages marked for the SBOM, by name (BuildKit's dockerfile_sbom_test.go cases).
fn scanned(p: &BuildPlan) -> Vec<&str> {
    p.stages
        .iter()
        .filter(|s| s.sbom_scan)
        .map(|s| s.name.as_str())
        .collect()
}

#[test]
fn sbom_scan_stage_marks_built_stages_that_declare_it() {
    // BuildKit's TestSBOMScannerArgs second Dockerfile: `base2` is not built, the
    // target is the image; a global ARG marks every stage for the context.
    let df = "ARG BUILDKIT_SBOM_SCAN_CONTEXT=true\n\
              FROM scratch AS file\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY a /file\n\
              FROM scratch AS base\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY --from=file /file /foo\n\
              FROM scratch AS base2\nARG BUILDKIT_SBOM_SCAN_STAGE=true\nCOPY --from=file /file /bar\n\
              FROM base\nARG BUILDKIT_SBOM_SCAN_STAGE=true\n";
    let p = plan(df);
    assert_eq!(scanned(&p), ["file", "base"]);
    assert!(p.stages.iter().all(|s| s.name != "base2" && s.name != "stage-3"));
    assert!(p.sbom_scan_context);
    // --build-arg overrides the declared ARGs: false turns every one off.
    let mut o = opts();
    o.build_args.insert("BUILDKIT_SBOM_SCAN_STAGE".into(), "false".into());
    o.build_args.insert("BUILDKIT_SBOM_SCAN_CONTEXT".into(), "false".into());
    let p = build_plan(df, &o).expect("plan");
    assert!(scanned(&p).is_empty());
    assert!(!p.sbom_scan_context);
    // A list of stage names marks those stages only.
    let mut o = opts();
    o.build_args
        .insert("BUILDKIT_SBOM_SCAN_STAGE".into(), "base,nope".into());
    assert_eq!(scanned(&build_plan(df, &o).expect("plan")), ["base"]);
}

#[test]
fn sbom_scan_build_args_without_an_arg_do_nothing() {
    // BuildKit's TestSBOMScannerArgs first case: build args alone add no SBOM.
    let mut o = opts();
    o.build_args.insert("BUILDKIT_SBOM_SCAN_STAGE".into(), "true".into());
    o.build_args.insert("BUILDKIT_SBOM_SCAN_CONTEXT".into(), "true".into());
    let p = build_plan("FROM scratch AS base\nCOPY a /foo\nFROM base\n", &o).expect("plan");
    assert_eq!(p.stages.len(), 1);
    assert!(scanned(&p).is_empty());
    assert!(!p.sbom_scan_context);
    // A global ARG without a value takes the build arg; every stage sees it.
    let p = build_plan(
        "ARG BUILDKIT_SBOM_SCAN_STAGE\nFROM scratch\nCOPY a /foo\nFROM scratch AS b\nCOPY --from=0 /foo /foo\n",
        &o,
    )
    .expect("plan");
    assert_eq!(scanned(&p), ["stage-0"]);
}
