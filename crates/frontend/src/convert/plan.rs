//! Planning: global ARGs, stages, `FROM` and `COPY --from` resolution, the target
//! and the stages it needs, and the file-level lint checks.
//!
//! BuildKit semantics kept here (from `dockerfile2llb/convert.go`):
//! - ARGs before the first `FROM` are global: usable in `FROM` lines; a stage sees
//!   one only after re-declaring it (`ARG NAME`). `--build-arg` overrides defaults.
//! - The predefined platform ARGs (`TARGETPLATFORM`, `BUILDARCH`, ...) and
//!   `TARGETSTAGE` are global ARGs without a declaration.
//! - `FROM name` refers to an earlier stage by name (case-insensitively), otherwise to
//!   an image; `FROM scratch` is the empty filesystem.
//! - `COPY --from` takes a stage name, a stage index, or an image; it cannot expand
//!   variables. A stage can only copy from a stage defined before it.
//! - Only the target stage and the stages it depends on are lowered.

use std::collections::BTreeSet;

use kiln_image::{Platform, Reference};

use crate::error::{ErrorKind, SyntaxError};
use crate::lint::{msg, Rule};
use crate::syntax::{self, Dockerfile, Instruction, InstructionKind};

use super::state::EnvList;
use super::Converter;

/// The ARGs BuildKit predefines for every build.
pub const PLATFORM_ARGS: &[&str] = &[
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDOSVERSION",
    "BUILDARCH",
    "BUILDVARIANT",
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETOSVERSION",
    "TARGETARCH",
    "TARGETVARIANT",
    "TARGETSTAGE",
];

/// Base is what a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    Scratch,
    /// An earlier stage, by index.
    Stage(usize),
    /// A registry image, by normalised reference.
    Image(String),
}

/// FromSource is what `COPY --from` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromSource {
    Stage(usize),
    Image(String),
    /// A named local context (`--build-context NAME=DIR`), by local source name.
    Local(String),
}

/// Cmd is one instruction of a stage, with its resolved `--from`.
#[derive(Debug, Clone)]
pub struct Cmd {
    pub instr: Instruction,
    /// An `ONBUILD` trigger inherited from the base stage.
    pub onbuild: bool,
    pub from: Option<FromSource>,
    /// `RUN --mount … from=` of each mount, resolved (None: no `from`).
    pub mount_froms: Vec<Option<FromSource>>,
}

/// StagePlan is a stage with its base resolved.
#[derive(Debug, Clone)]
pub struct StagePlan {
    pub from: Instruction,
    /// The base as written, variables expanded (BuildKit's `BaseName`).
    pub base_name: String,
    pub name: Option<String>,
    pub base: Base,
    pub platform: Option<Platform>,
    pub commands: Vec<Cmd>,
    /// Steps shown with a number: an image base, RUN, COPY, ADD, WORKDIR.
    pub cmd_total: usize,
}

impl StagePlan {
    /// The stage's name in descriptions: its `AS` name or `stage-N`.
    pub fn stage_name(&self, index: usize) -> String {
        self.name.clone().unwrap_or_else(|| format!("stage-{index}"))
    }
}

/// Plan is every stage, the target and the stages it needs.
#[derive(Debug, Clone)]
pub struct Plan {
    pub stages: Vec<StagePlan>,
    pub target: usize,
    pub reachable: BTreeSet<usize>,
    /// Stages plus images named by `COPY --from` (BuildKit counts both to decide
    /// whether descriptions carry a stage name).
    pub state_count: usize,
    /// Base images resolved through `BuildOptions::resolver`, by stage index.
    pub resolved: std::collections::BTreeMap<usize, super::ResolvedImage>,
}

fn at(i: &Instruction, kind: ErrorKind) -> SyntaxError {
    SyntaxError::at(i.start_line, i.end_line, kind)
}

/// Plans the build of `df`.
pub(crate) fn plan(c: &mut Converter<'_>, df: &Dockerfile) -> Result<Plan, SyntaxError> {
    let mut meta_args = Vec::new();
    let mut groups: Vec<(Instruction, Vec<Instruction>)> = Vec::new();
    for i in &df.instructions {
        match (&i.kind, groups.last_mut()) {
            (InstructionKind::From(_), _) => groups.push((i.clone(), Vec::new())),
            (_, Some((_, cmds))) => cmds.push(i.clone()),
            (InstructionKind::Arg(_), None) => meta_args.push(i.clone()),
            (_, None) => {
                return Err(at(
                    i,
                    ErrorKind::InstructionBeforeFrom {
                        instruction: i.name().to_string(),
                    },
                ))
            }
        }
    }
    if groups.is_empty() {
        return Err(SyntaxError::whole_file(ErrorKind::NoStage));
    }
    file_lints(c, df, &groups);

    let names: Vec<Option<String>> = groups
        .iter()
        .map(|(f, _)| match &f.kind {
            InstructionKind::From(fi) => fi.name.clone(),
            _ => None,
        })
        .collect();
    let target_name = match &c.opts.target {
        Some(t) => t.to_lowercase(),
        None => names.last().cloned().flatten().unwrap_or_default(),
    };
    c.global = default_args(c.opts, &target_name);
    let predefined = c.global.clone();
    c.check_default_bases(&predefined, &meta_args, df);
    let mut declared = BTreeSet::new();
    for a in &meta_args {
        let InstructionKind::Arg(decls) = &a.kind else { continue };
        for d in decls {
            declared.insert(d.name.clone());
            c.consumed.insert(d.name.clone());
            let value = match (c.opts.build_args.get(&d.name), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => {
                    let r = c
                        .lexer
                        .expand_word(def, &c.global)
                        .map_err(|source| at(a, ErrorKind::expansion(def, source)))?;
                    Some(r.value)
                }
                (None, None) => None,
            };
            if let Some(v) = value {
                c.global.set(&d.name, &v);
            }
        }
    }

    let mut stages: Vec<StagePlan> = Vec::new();
    for (idx, (from_i, cmds)) in groups.iter().enumerate() {
        let InstructionKind::From(fi) = &from_i.kind else {
            continue;
        };
        let expanded = c
            .lexer
            .expand_word(&fi.image, &c.global)
            .map_err(|source| at(from_i, ErrorKind::expansion(&fi.image, source)))?;
        c.check_from_args(&expanded, &declared, from_i.start_line);
        let base_name = expanded.value;
        if base_name.is_empty() {
            return Err(at(from_i, ErrorKind::BlankBaseName { base: fi.image.clone() }));
        }
        let platform = match &fi.flags.platform {
            None => None,
            Some(p) => {
                let r = c
                    .lexer
                    .expand_word(p, &c.global)
                    .map_err(|source| at(from_i, ErrorKind::expansion(p, source)))?;
                c.check_from_args(&r, &declared, from_i.start_line);
                c.check_from_platform(p, &r, fi.name.as_deref(), from_i.start_line);
                let v = r.value;
                Some(Platform::parse(&v).ok_or_else(|| at(from_i, ErrorKind::InvalidPlatform { value: v.clone() }))?)
            }
        };
        let lower = base_name.to_lowercase();
        let base = if let Some(named) = c.opts.named_contexts.get(&lower) {
            match named {
                super::NamedContext::Image(r) => Base::Image(r.clone()),
                super::NamedContext::Local(_) => {
                    return Err(at(
                        from_i,
                        ErrorKind::LocalContextAsBase {
                            name: base_name.clone(),
                        },
                    ));
                }
            }
        } else if base_name.starts_with("oci-layout://") {
            Base::Image(base_name.clone())
        } else if base_name == "scratch" {
            Base::Scratch
        } else if let Some(j) = names[..idx].iter().rposition(|n| n.as_deref() == Some(lower.as_str())) {
            Base::Stage(j)
        } else {
            let r = Reference::parse(&base_name).map_err(|source| {
                at(
                    from_i,
                    ErrorKind::InvalidReference {
                        reference: base_name.clone(),
                        source,
                    },
                )
            })?;
            Base::Image(r.to_string())
        };
        let mut commands = Vec::new();
        if let Base::Stage(j) = base {
            for trigger in groups[j].1.iter().filter_map(|i| match &i.kind {
                InstructionKind::Onbuild { expression, .. } => Some(expression),
                _ => None,
            }) {
                commands.push(Cmd {
                    instr: parse_trigger(trigger, from_i)?,
                    onbuild: true,
                    from: None,
                    mount_froms: Vec::new(),
                });
            }
        }
        commands.extend(cmds.iter().map(|i| Cmd {
            instr: i.clone(),
            onbuild: false,
            from: None,
            mount_froms: Vec::new(),
        }));
        let steps = commands.iter().filter(|cmd| is_step(&cmd.instr)).count();
        stages.push(StagePlan {
            base_name: base_name.clone(),
            from: from_i.clone(),
            name: fi.name.clone(),
            cmd_total: steps + usize::from(matches!(base, Base::Image(_))),
            base,
            platform,
            commands,
        });
    }

    let target = match &c.opts.target {
        None => stages.len() - 1,
        Some(t) => {
            let lower = t.to_lowercase();
            names
                .iter()
                .rposition(|n| n.as_deref() == Some(lower.as_str()))
                .ok_or_else(|| {
                    let known: Vec<&str> = names.iter().flatten().map(String::as_str).collect();
                    SyntaxError::whole_file(ErrorKind::TargetNotFound {
                        target: t.clone(),
                        suggestion: crate::suggest::closest(&lower, known).map(str::to_string),
                    })
                })?
        }
    };

    // Resolve `COPY --from` in every stage, as BuildKit does before choosing what to
    // build: a bad reference fails the build even in a stage the target does not need.
    let mut state_count = stages.len();
    for cmd in stages.iter_mut().flat_map(|s| s.commands.iter_mut()) {
        if let InstructionKind::Run(r) = &cmd.instr.kind {
            let mut froms = Vec::new();
            for m in &r.flags.mounts {
                let spec = super::mounts::parse_mount(m).map_err(|kind| at(&cmd.instr, kind))?;
                let from = match &spec.from {
                    Some(f) => Some(resolve_from(c, f, &names).map_err(|kind| at(&cmd.instr, kind))?),
                    None => None,
                };
                if matches!(from, Some(FromSource::Image(_))) {
                    state_count += 1;
                }
                froms.push(from);
            }
            cmd.mount_froms = froms;
            continue;
        }
        let InstructionKind::Copy(ci) = &cmd.instr.kind else {
            continue;
        };
        let Some(from) = &ci.flags.from else { continue };
        let source = resolve_from(c, from, &names).map_err(|kind| at(&cmd.instr, kind))?;
        if matches!(source, FromSource::Image(_)) {
            state_count += 1;
        }
        cmd.from = Some(source);
    }

    let deps = |s: &StagePlan| -> Vec<usize> {
        let mut d: Vec<usize> = s
            .commands
            .iter()
            .flat_map(|c| c.mount_froms.iter().chain(std::iter::once(&c.from)))
            .filter_map(|f| match f {
                Some(FromSource::Stage(j)) => Some(*j),
                _ => None,
            })
            .collect();
        if let Base::Stage(j) = s.base {
            d.push(j);
        }
        d
    };
    for start in 0..stages.len() {
        // Depth-first search for a path back to `start`.
        let mut stack = deps(&stages[start]);
        let mut seen = BTreeSet::new();
        while let Some(n) = stack.pop() {
            if n == start {
                return Err(at(
                    &stages[start].from,
                    ErrorKind::CircularDependency {
                        stage: stages[start].stage_name(start),
                    },
                ));
            }
            if seen.insert(n) {
                stack.extend(deps(&stages[n]));
            }
        }
    }
    let mut reachable = BTreeSet::new();
    let mut stack = if c.all_stages {
        (0..stages.len()).collect()
    } else {
        vec![target]
    };
    while let Some(n) = stack.pop() {
        if reachable.insert(n) {
            stack.extend(deps(&stages[n]));
        }
    }
    // Resolve the base images of the stages that are built (and only those), and queue
    // their ONBUILD triggers first, as BuildKit does.
    let mut resolved = std::collections::BTreeMap::new();
    if let Some(resolver) = c.opts.resolver.clone() {
        for &i in &reachable {
            let stage = &mut stages[i];
            let Base::Image(reference) = &stage.base else { continue };
            let platform = stage.platform.clone().unwrap_or_else(|| c.opts.platform.clone());
            let r = resolver.resolve(reference, &platform).map_err(|reason| {
                at(
                    &stage.from,
                    ErrorKind::ResolveImage {
                        reference: reference.clone(),
                        reason,
                    },
                )
            })?;
            let mut triggers = Vec::new();
            for t in r.config.config.on_build.iter().flatten() {
                triggers.push(Cmd {
                    instr: parse_trigger(t, &stage.from)?,
                    onbuild: true,
                    from: None,
                    mount_froms: Vec::new(),
                });
            }
            stage.cmd_total += triggers.iter().filter(|c| is_step(&c.instr)).count();
            let actual = Platform {
                os: r.config.os.clone(),
                architecture: r.config.architecture.clone(),
                variant: r.config.variant.clone(),
            };
            let (name, line) = (stage.base_name.clone(), stage.from.start_line);
            // BuildKit builds a base without layers as scratch and does not check it.
            let scratch_like = r.config.rootfs.diff_ids.is_empty() && r.config.history.iter().all(|h| h.empty_layer);
            stage.commands.splice(0..0, triggers);
            resolved.insert(i, r);
            if !scratch_like {
                c.check_base_platform(&name, &platform, &actual, line);
            }
        }
    }
    Ok(Plan {
        stages,
        target,
        reachable,
        state_count,
        resolved,
    })
}

/// Whether an instruction is a numbered step in descriptions (`[2/5] COPY …`).
fn is_step(i: &Instruction) -> bool {
    matches!(
        i.kind,
        InstructionKind::Run(_) | InstructionKind::Copy(_) | InstructionKind::Add(_) | InstructionKind::Workdir(_)
    )
}

/// Resolves a `COPY --from` value to a stage or an image.
fn resolve_from(c: &Converter<'_>, from: &str, names: &[Option<String>]) -> Result<FromSource, ErrorKind> {
    let env = EnvList::default();
    let expanded = c.lexer.expand_word(from, &env).map(|r| r.value).unwrap_or_default();
    if expanded != from {
        return Err(ErrorKind::FromExpansion {
            value: from.to_string(),
        });
    }
    if let Ok(index) = from.parse::<i64>() {
        return match usize::try_from(index) {
            Ok(i) if i < names.len() => Ok(FromSource::Stage(i)),
            _ => Err(ErrorKind::StageIndex {
                index: from.to_string(),
                count: names.len(),
            }),
        };
    }
    let lower = from.to_lowercase();
    match c.opts.named_contexts.get(&lower) {
        Some(super::NamedContext::Image(r)) => return Ok(FromSource::Image(r.clone())),
        Some(super::NamedContext::Local(name)) => return Ok(FromSource::Local(name.clone())),
        None => {}
    }
    if let Some(j) = names.iter().rposition(|n| n.as_deref() == Some(lower.as_str())) {
        return Ok(FromSource::Stage(j));
    }
    if from.starts_with("oci-layout://") {
        return Ok(FromSource::Image(from.to_string()));
    }
    let r = Reference::parse(from).map_err(|source| ErrorKind::InvalidReference {
        reference: from.to_string(),
        source,
    })?;
    Ok(FromSource::Image(r.to_string()))
}

/// Parses an `ONBUILD` trigger of a base stage; it runs at the child's `FROM` line.
fn parse_trigger(expression: &str, from: &Instruction) -> Result<Instruction, SyntaxError> {
    let relocate = |e: SyntaxError| at(from, e.kind);
    let df = syntax::parse(expression).map_err(relocate)?;
    let mut instrs = df.instructions;
    if instrs.len() != 1 {
        return Err(at(
            from,
            ErrorKind::Onbuild {
                trigger: crate::error::OnbuildError::Empty,
            },
        ));
    }
    let mut i = instrs.remove(0);
    i.start_line = from.start_line;
    i.end_line = from.end_line;
    Ok(i)
}

/// The predefined ARGs (BuildKit `defaultArgs`), overridable by `--build-arg`.
fn default_args(opts: &super::BuildOptions, target: &str) -> EnvList {
    let bp = &opts.build_platform;
    let tp = &opts.platform;
    let values = [
        ("BUILDPLATFORM", bp.to_string()),
        ("BUILDOS", bp.os.clone()),
        ("BUILDOSVERSION", String::new()),
        ("BUILDARCH", bp.architecture.clone()),
        ("BUILDVARIANT", bp.variant.clone().unwrap_or_default()),
        ("TARGETPLATFORM", tp.to_string()),
        ("TARGETOS", tp.os.clone()),
        ("TARGETOSVERSION", String::new()),
        ("TARGETARCH", tp.architecture.clone()),
        ("TARGETVARIANT", tp.variant.clone().unwrap_or_default()),
        ("TARGETSTAGE", target.to_string()),
    ];
    let mut env = EnvList::default();
    for (k, v) in values {
        let v = opts.build_args.get(k).cloned().unwrap_or(v);
        env.set(k, &v);
    }
    env
}

/// The checks BuildKit runs over the whole file, reachable or not.
fn file_lints(c: &mut Converter<'_>, df: &Dockerfile, groups: &[(Instruction, Vec<Instruction>)]) {
    let all: Vec<&Instruction> = groups
        .iter()
        .flat_map(|(f, cmds)| std::iter::once(f).chain(cmds))
        .collect();
    let consistent = |s: &str| s == s.to_lowercase() || s == s.to_uppercase();
    let lower = all
        .iter()
        .filter(|i| consistent(&i.keyword) && i.keyword == i.keyword.to_lowercase())
        .count();
    let upper = all
        .iter()
        .filter(|i| consistent(&i.keyword) && i.keyword != i.keyword.to_lowercase())
        .count();
    let majority_lower = lower > upper;
    for i in &all {
        let k = &i.keyword;
        let correct = if majority_lower && *k != k.to_lowercase() {
            Some("lowercase")
        } else if !majority_lower && *k != k.to_uppercase() {
            Some("uppercase")
        } else {
            None
        };
        if let Some(correct) = correct {
            c.lint
                .report(Rule::ConsistentInstructionCasing, msg::casing(k, correct), i.start_line);
        }
    }
    let mut seen_names = BTreeSet::new();
    for (f, cmds) in groups {
        if let InstructionKind::From(fi) = &f.kind {
            if let (Some(written), Some(as_kw)) = (&fi.name_as_written, &fi.as_keyword) {
                if *written != written.to_lowercase() {
                    c.lint
                        .report(Rule::StageNameCasing, msg::stage_name_casing(written), f.start_line);
                }
                let kw = &f.keyword;
                let from_lower = *kw == kw.to_lowercase();
                let from_upper = *kw == kw.to_uppercase();
                let mismatch = (from_lower && *as_kw != as_kw.to_lowercase())
                    || (!from_lower && from_upper && *as_kw != as_kw.to_uppercase());
                if mismatch {
                    c.lint
                        .report(Rule::FromAsCasing, msg::from_as_casing(kw, as_kw), f.start_line);
                }
            }
            if let Some(name) = &fi.name {
                c.check_stage_name(name, f.start_line);
                if !seen_names.insert(name.clone()) {
                    c.lint
                        .report(Rule::DuplicateStageName, msg::duplicate_stage(name), f.start_line);
                }
            }
        }
        for i in cmds {
            if matches!(i.kind, InstructionKind::Maintainer(_)) {
                c.lint
                    .report(Rule::MaintainerDeprecated, msg::maintainer(), i.start_line);
            }
        }
    }
    for line in &df.empty_continuations {
        c.lint
            .report(Rule::NoEmptyContinuation, msg::empty_continuation(), *line);
    }
}
