//! Lowering: typed instructions → a [`kiln_graph::Definition`] and the image config
//! skeleton, with the semantics of BuildKit's `dockerfile2llb` (what `docker buildx
//! build` does).
//!
//! - [`plan`] splits the file into global `ARG`s and stages, resolves `FROM` and
//!   `COPY --from` references, the target and what it needs;
//! - [`dispatch`] lowers the instructions that change the config or run commands;
//! - [`copy`] lowers `COPY` and `ADD`; [`add`] tells ADD's git, URL and local sources
//!   apart and lowers the remote ones to source ops;
//! - [`state`] holds a stage's state and BuildKit's formatting helpers.

mod add;
mod checks;
mod copy;
mod dispatch;
mod mounts;
mod plan;
mod run_mounts;
mod sbom;
mod state;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_limits;
#[cfg(test)]
mod tests_lint;

use std::collections::{BTreeMap, BTreeSet};

use kiln_graph::{Definition, Entitlement, Input, Op, OpMeta, SourceOp, SourceSpan};
use kiln_image::{ImageConfig, Platform};
use serde::Serialize;

use crate::error::{ErrorKind, FrontendError, SyntaxError};
use crate::lint::{CheckConfig, Linter, Warning};
use crate::shell::Lexer;
use crate::syntax::{self, Instruction};

use plan::{Base, Plan};
pub use sbom::BuiltStage;
use state::{EnvList, StageState, DEFAULT_PATH};

/// ImageResolver looks up a base image's config while lowering (BuildKit's "resolve
/// image config" step). The frontend defines it and the worker implements it over the
/// registry and the local store, so the frontend stays free of I/O.
pub trait ImageResolver: std::fmt::Debug + Send + Sync {
    /// The config of `reference` (normalised) for `platform`, and the reference pinned
    /// to the digest that was resolved. The error is shown after the Dockerfile line.
    fn resolve(&self, reference: &str, platform: &Platform) -> Result<ResolvedImage, String>;
}

/// ResolvedImage is a base image's config and its pinned reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// e.g. `docker.io/library/alpine:3.20@sha256:…`; the source op uses it.
    pub reference: String,
    pub config: ImageConfig,
}

/// MAX_GRAPH_SIZE is the largest build graph (the summed canonical encodings of its ops)
/// a Dockerfile may lower to: 256 MiB, far above any real build, well below what
/// would exhaust the builder.
pub const MAX_GRAPH_SIZE: u64 = 256 << 20;

/// BuildOptions are the inputs of a build besides the Dockerfile text.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The Dockerfile's name for spans and errors, e.g. `Dockerfile`.
    pub dockerfile_name: String,
    /// `--build-arg` values.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to build; the last stage when `None`.
    pub target: Option<String>,
    /// The platform the image is for.
    pub platform: Platform,
    /// The platform the build runs on.
    pub build_platform: Platform,
    /// `--label` values, applied to the final image last.
    pub labels: BTreeMap<String, String>,
    /// `.dockerignore` patterns (cleaned), excluded from the build context.
    pub ignore_patterns: Vec<String>,
    /// Looks up base images' configs; without one, a stage `FROM` an image starts
    /// from an empty config.
    pub resolver: Option<std::sync::Arc<dyn ImageResolver>>,
    /// `--build-context NAME=…` by lowercase name: used for `FROM NAME` and
    /// `--from=NAME` before stages and images of that name, as BuildKit does.
    pub named_contexts: BTreeMap<String, NamedContext>,
    /// Entitlements granted with `--allow`; a RUN that needs another one is an error
    /// naming its line.
    pub allow: BTreeSet<Entitlement>,
    /// The largest build graph the Dockerfile may lower to, normally
    /// [`MAX_GRAPH_SIZE`] (tests lower it).
    pub max_graph_size: u64,
    /// `--add-host` entries for every RUN step's `/etc/hosts`.
    pub extra_hosts: Vec<kiln_graph::ExtraHost>,
    /// The build is for more than one platform: step descriptions name their platform
    /// (`[linux/arm64 2/3] RUN …`, BuildKit's `MultiPlatformRequested`).
    pub multi_platform: bool,
}

/// NamedContext is what a `--build-context` name stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// An image: a normalised reference, or `oci-layout://DIR[:TAG|@DIGEST]`.
    Image(String),
    /// A local directory, by the worker's local source name.
    Local(String),
}

impl BuildOptions {
    /// Options for a build of `dockerfile_name` on and for the host platform.
    pub fn new(dockerfile_name: impl Into<String>) -> Self {
        BuildOptions {
            dockerfile_name: dockerfile_name.into(),
            build_args: BTreeMap::new(),
            target: None,
            platform: Platform::host(),
            build_platform: Platform::host(),
            labels: BTreeMap::new(),
            ignore_patterns: Vec::new(),
            resolver: None,
            named_contexts: BTreeMap::new(),
            allow: BTreeSet::new(),
            max_graph_size: MAX_GRAPH_SIZE,
            extra_hosts: Vec::new(),
            multi_platform: false,
        }
    }
}

/// BuildPlan is what the frontend hands the solver and the exporter.
#[derive(Debug, Clone, Serialize)]
pub struct BuildPlan {
    /// The build graph; its root is the target stage's final filesystem.
    pub definition: Definition,
    /// The image config skeleton with history; `rootfs` empty and `created` unset (the
    /// exporter fills them). A stage built `FROM` a registry image starts from an
    /// empty config here: the base image's config is merged in when it is pulled.
    pub image: ImageConfig,
    /// Lint warnings and unused `--build-arg`s.
    pub warnings: Vec<Warning>,
    /// The name of the stage built: its `AS` name, or `stage-N`.
    pub target_stage: String,
    /// The other stages the target needs, for `BUILDKIT_SBOM_SCAN_STAGE`.
    pub stages: Vec<BuiltStage>,
    /// `BUILDKIT_SBOM_SCAN_CONTEXT` is enabled for the target (as BuildKit reads it).
    pub sbom_scan_context: bool,
}

/// Lowers `dockerfile` into a build plan.
pub fn build_plan(dockerfile: &str, opts: &BuildOptions) -> Result<BuildPlan, FrontendError> {
    let (result, warnings) = lower(dockerfile, opts, false);
    let (definition, image, target) = result?;
    Ok(BuildPlan {
        definition,
        image,
        warnings,
        target_stage: target.name,
        stages: target.stages,
        sbom_scan_context: target.sbom_scan_context,
    })
}

/// CheckReport is what `kiln build --check` shows: the rule warnings of every stage
/// and the error that would stop the build, if any.
#[derive(Debug)]
pub struct CheckReport {
    /// Warnings of BuildKit's rules (no build option notes), in the order reported.
    pub warnings: Vec<Warning>,
    pub error: Option<FrontendError>,
}

/// Runs the checks only, as BuildKit's lint subrequest (`docker build --check`):
/// without a target every stage is lowered (BuildKit: "no target means all targets"),
/// with one the stages it needs; nothing is built.
pub fn check(dockerfile: &str, opts: &BuildOptions) -> CheckReport {
    let (result, warnings) = lower(dockerfile, opts, opts.target.is_none());
    let error = result.err();
    let warnings = match error.as_ref().map(FrontendError::kind) {
        Some(ErrorKind::Lint { warnings, .. }) => warnings.clone(),
        _ => warnings,
    };
    CheckReport {
        warnings: warnings.into_iter().filter(|w| w.rule.is_some()).collect(),
        error,
    }
}

/// The check configuration: the `BUILDKIT_DOCKERFILE_CHECK` build arg when given (it
/// replaces the directive, as in BuildKit's dockerui), else the `# check=` directive.
fn check_config(df: &syntax::Dockerfile, opts: &BuildOptions) -> Result<CheckConfig, SyntaxError> {
    if let Some(v) = opts.build_args.get("BUILDKIT_DOCKERFILE_CHECK") {
        return CheckConfig::parse(v).map_err(|reason| SyntaxError::whole_file(ErrorKind::InvalidCheckArg { reason }));
    }
    match &df.directives.check {
        Some(check) => CheckConfig::parse(check).map_err(|reason| {
            SyntaxError::at(
                1,
                1,
                ErrorKind::InvalidCheckDirective {
                    value: check.clone(),
                    reason,
                },
            )
        }),
        None => Ok(CheckConfig::default()),
    }
}

type Lowered = (Definition, ImageConfig, Target);

/// Target is what lowering says about the stage built besides its image and root.
struct Target {
    name: String,
    stages: Vec<BuiltStage>,
    sbom_scan_context: bool,
}

/// Lowers the target's stages (every stage with `all_stages`); the warnings reported
/// up to the end or the error.
fn lower(dockerfile: &str, opts: &BuildOptions, all_stages: bool) -> (Result<Lowered, FrontendError>, Vec<Warning>) {
    let locate = |e: SyntaxError| e.into_frontend(&opts.dockerfile_name, dockerfile);
    let df = match syntax::parse(dockerfile) {
        Ok(df) => df,
        Err(e) => return (Err(locate(e)), Vec::new()),
    };
    let spans: Vec<(u32, u32)> = df.instructions.iter().map(|i| (i.start_line, i.end_line)).collect();
    let lint = match check_config(&df, opts) {
        Ok(config) => Linter {
            config,
            scoped: crate::lint::instruction_checks(dockerfile, &spans),
            ..Linter::default()
        },
        Err(e) => return (Err(locate(e)), Vec::new()),
    };
    let mut c = Converter {
        opts,
        lexer: Lexer::new(df.directives.escape),
        def: Definition::new(),
        lint,
        context: None,
        global: EnvList::default(),
        consumed: BTreeSet::new(),
        step_vars: BTreeSet::new(),
        all_stages,
        ignore: None,
    };
    let result = plan::plan(&mut c, &df).and_then(|plan| c.run(&plan));
    let (image, root, target) = match result {
        Ok(r) => r,
        Err(e) => return (Err(locate(e)), c.lint.warnings),
    };
    c.def.root = Some(root);
    c.finish_warnings();
    if let Some(rules) = c.lint.violation() {
        let err = SyntaxError::whole_file(ErrorKind::Lint {
            rules,
            warnings: c.lint.warnings.clone(),
        });
        return (Err(locate(err)), c.lint.warnings);
    }
    (Ok((c.def, image, target)), c.lint.warnings)
}

/// Converter holds what lowering shares across stages.
pub(crate) struct Converter<'a> {
    pub opts: &'a BuildOptions,
    pub lexer: Lexer,
    pub def: Definition,
    pub lint: Linter,
    /// The build context source, once an instruction reads it.
    pub context: Option<Input>,
    /// Global ARGs (and the predefined platform ARGs) as FROM lines see them.
    pub global: EnvList,
    /// Build arg names some ARG declared.
    pub consumed: BTreeSet<String>,
    /// Variables the instruction being lowered expanded (recorded on its op).
    pub step_vars: BTreeSet<String>,
    /// Lower every stage, not only those the target needs (`--check`).
    pub all_stages: bool,
    /// The .dockerignore matcher for CopyIgnoredFile, compiled on first use.
    pub ignore: Option<Option<kiln_context::dockerignore::PatternMatcher>>,
}

impl Converter<'_> {
    /// Fails unless `--allow` granted `e`, which `what` needs.
    pub fn entitled(&self, e: Entitlement, what: &'static str) -> Result<(), ErrorKind> {
        if self.opts.allow.contains(&e) {
            Ok(())
        } else {
            Err(ErrorKind::NotEntitled {
                what,
                entitlement: e.name(),
            })
        }
    }

    /// The span of an instruction.
    pub fn span(&self, i: &Instruction) -> Option<SourceSpan> {
        Some(SourceSpan {
            file: self.opts.dockerfile_name.clone(),
            start_line: i.start_line,
            end_line: i.end_line,
        })
    }

    /// The source op of a named local context (`--build-context NAME=DIR`).
    pub fn named_local(&mut self, name: &str) -> Input {
        self.def.add(
            Op::Source(SourceOp::Local {
                name: name.to_string(),
                include: Vec::new(),
                exclude: Vec::new(),
            }),
            Vec::new(),
            OpMeta {
                description: format!("load build context {name}"),
                span: None,
                hidden: true,
                stage: None,
                vars: Vec::new(),
            },
        )
    }

    /// The shared build-context source.
    pub fn context(&mut self) -> Input {
        if let Some(c) = &self.context {
            return c.clone();
        }
        let input = self.def.add(
            Op::Source(SourceOp::Local {
                name: "context".to_string(),
                include: Vec::new(),
                exclude: self.opts.ignore_patterns.clone(),
            }),
            Vec::new(),
            OpMeta {
                description: "load build context".to_string(),
                span: None,
                hidden: true,
                stage: None,
                vars: Vec::new(),
            },
        );
        self.context = Some(input.clone());
        input
    }

    /// Lowers every stage the target needs; returns the target's image, root, name and
    /// the other stages built.
    fn run(&mut self, plan: &Plan) -> Result<(ImageConfig, Input, Target), SyntaxError> {
        let mut done: Vec<Option<StageState>> = vec![None; plan.stages.len()];
        for (i, stage) in plan.stages.iter().enumerate() {
            if !plan.reachable.contains(&i) {
                continue;
            }
            let from_lines = (stage.from.start_line, stage.from.end_line);
            let mut st = self
                .init_stage(plan, i, &done)
                .map_err(|k| SyntaxError::at(from_lines.0, from_lines.1, k))?;
            for cmd in &stage.commands {
                st.is_onbuild = cmd.onbuild;
                let lines = if cmd.onbuild {
                    from_lines
                } else {
                    (cmd.instr.start_line, cmd.instr.end_line)
                };
                self.step_vars.clear();
                self.lint.in_trigger = cmd.onbuild;
                let before = st.fs.clone();
                self.dispatch(&mut st, cmd, &done, plan)
                    .map_err(|k| SyntaxError::at(lines.0, lines.1, k))?;
                // Each op carries its own copy of the environment, so a 1 MiB ENV
                // and a million `RUN a` lines would need a terabyte: stop at the line.
                if self.def.encoded_len() > self.opts.max_graph_size {
                    return Err(SyntaxError::at(
                        lines.0,
                        lines.1,
                        ErrorKind::GraphTooLarge {
                            limit: self.opts.max_graph_size,
                        },
                    ));
                }
                // The variables a step used, on its op (not hashed: the expanded values
                // already are). RUN sees its whole environment.
                if st.fs != before {
                    let vars: Vec<String> = if matches!(cmd.instr.kind, crate::syntax::InstructionKind::Run(_)) {
                        st.env
                            .to_strings()
                            .iter()
                            .filter_map(|e| e.split_once('=').map(|(k, _)| k.to_string()))
                            .collect()
                    } else {
                        self.step_vars.iter().cloned().collect()
                    };
                    if let Some(n) = self.def.nodes.get_mut(&st.fs.op) {
                        n.meta.vars = vars;
                    }
                }
            }
            done[i] = Some(st);
        }
        let mut stages = Vec::new();
        for (i, st) in done.iter().enumerate() {
            let (false, Some(st)) = (i == plan.target, st) else {
                continue;
            };
            let name = plan.stages[i].stage_name(i);
            let sbom_scan = sbom::marked(&name, sbom::SCAN_STAGE, &self.global, &st.build_args);
            stages.push(BuiltStage {
                name,
                fs: st.fs.clone(),
                sbom_scan,
            });
        }
        let target = done
            .get_mut(plan.target)
            .and_then(Option::take)
            .ok_or_else(|| SyntaxError::whole_file(ErrorKind::NoStage))?;
        let mut image = target.image;
        for (k, v) in &self.opts.labels {
            image.config.labels.insert(k.clone(), v.clone());
        }
        image.os = self.opts.platform.os.clone();
        image.architecture = self.opts.platform.architecture.clone();
        if self.opts.platform.variant.is_some() {
            image.variant = self.opts.platform.variant.clone();
        }
        let name = plan.stages[plan.target].stage_name(plan.target);
        let sbom_scan_context = sbom::marked(&name, sbom::SCAN_CONTEXT, &self.global, &target.build_args);
        Ok((
            image,
            target.fs,
            Target {
                name,
                stages,
                sbom_scan_context,
            },
        ))
    }

    /// Starts a stage from its base: scratch, an earlier stage, or an image.
    fn init_stage(&mut self, plan: &Plan, i: usize, done: &[Option<StageState>]) -> Result<StageState, ErrorKind> {
        let stage = &plan.stages[i];
        let display = if plan.state_count == 1 {
            String::new()
        } else {
            stage.stage_name(i)
        };
        let platform = stage.platform.clone().unwrap_or_else(|| self.opts.platform.clone());
        let mut st = match &stage.base {
            Base::Stage(j) => {
                let Some(base) = done.get(*j).and_then(Option::as_ref) else {
                    return Err(ErrorKind::NoStage);
                };
                let mut st = base.clone();
                st.image.config.on_build = None;
                st.display = display;
                st.cmd = Default::default();
                st.entrypoint = Default::default();
                st.healthcheck = Default::default();
                st.used = BTreeSet::new();
                st
            }
            Base::Scratch => {
                let fs = self.def.add(
                    Op::Source(SourceOp::Scratch),
                    Vec::new(),
                    OpMeta {
                        description: "FROM scratch".to_string(),
                        span: None,
                        hidden: true,
                        stage: None,
                        vars: Vec::new(),
                    },
                );
                let mut image = empty_image(&platform);
                image.config.working_dir = Some("/".to_string());
                image.config.env = vec![format!("PATH={DEFAULT_PATH}")];
                new_state(display, fs, platform.clone(), image)
            }
            Base::Image(reference) => {
                let resolved = plan.resolved.get(&i);
                let reference = resolved.map(|r| &r.reference).unwrap_or(reference);
                let shown = match self.opts.multi_platform {
                    true => state::platform_display(&platform, None, &display),
                    false => display.clone(),
                };
                let description =
                    state::prefix_command(&shown, 1, stage.cmd_total, false, &format!("FROM {reference}"));
                let fs = self.def.add(
                    Op::Source(SourceOp::Image {
                        reference: reference.clone(),
                        platform: platform.clone(),
                    }),
                    Vec::new(),
                    OpMeta {
                        description,
                        span: self.span(&stage.from),
                        hidden: false,
                        stage: stage.name.as_ref().map(|n| n.to_ascii_lowercase()),
                        vars: Vec::new(),
                    },
                );
                let image = match resolved {
                    // The base's config and history carry over; its layers come back
                    // from the solve, and its triggers were queued by the plan.
                    Some(r) => {
                        let mut image = r.config.clone();
                        image.rootfs = Default::default();
                        image.created = None;
                        image.config.on_build = None;
                        image
                    }
                    None => empty_image(&platform),
                };
                new_state(display, fs, platform.clone(), image)
            }
        };
        st.cmd_total = stage.cmd_total;
        st.platform_prefix = self.opts.multi_platform;
        st.name = stage.name.as_ref().map(|n| n.to_ascii_lowercase());
        st.cmd_index = if matches!(stage.base, Base::Image(_)) { 1 } else { 0 };
        // The run environment is the image's Env on top of what the base stage's ARGs
        // and ENVs left in it.
        for (k, v) in EnvList::from_strings(&st.image.config.env).0 {
            st.env.set(&k, &v);
        }
        if let Some(wd) = st.image.config.working_dir.clone().filter(|w| !w.is_empty()) {
            st.dir = wd;
        }
        if let Some(u) = st.image.config.user.clone().filter(|u| !u.is_empty()) {
            st.user = Some(u);
        }
        Ok(st)
    }

    /// Adds the unused `--build-arg` warning.
    fn finish_warnings(&mut self) {
        let unused: Vec<String> = self
            .opts
            .build_args
            .keys()
            .filter(|k| !self.consumed.contains(*k) && !is_builtin_arg(k))
            .cloned()
            .collect();
        if !unused.is_empty() {
            self.lint.note(format!(
                "One or more build-args {} were not consumed",
                state::go_list(&unused)
            ));
        }
    }
}

fn new_state(display: String, fs: Input, platform: Platform, image: ImageConfig) -> StageState {
    StageState {
        display,
        name: None,
        fs,
        env: EnvList::default(),
        dir: "/".to_string(),
        user: None,
        platform,
        image,
        build_args: Vec::new(),
        cmd_total: 0,
        cmd_index: 0,
        is_onbuild: false,
        workdir_set: false,
        cmd: Default::default(),
        entrypoint: Default::default(),
        healthcheck: Default::default(),
        used: BTreeSet::new(),
        platform_prefix: false,
    }
}

/// An image config for `platform` with nothing set (BuildKit `emptyImage` without
/// the defaults, which `FROM scratch` adds).
fn empty_image(platform: &Platform) -> ImageConfig {
    ImageConfig {
        architecture: platform.architecture.clone(),
        os: platform.os.clone(),
        variant: platform.variant.clone(),
        ..ImageConfig::default()
    }
}

/// Build args BuildKit consumes itself, never reported as unused.
fn is_builtin_arg(k: &str) -> bool {
    let proxies = ["HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY", "ALL_PROXY"];
    proxies.iter().any(|p| p.eq_ignore_ascii_case(k))
        || k.starts_with("BUILDKIT_")
        || k == "SOURCE_DATE_EPOCH"
        || plan::PLATFORM_ARGS.contains(&k)
}
