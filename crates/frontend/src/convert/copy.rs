//! COPY and ADD lowering, and EXPOSE port specs.
//!
//! BuildKit semantics kept here (from `dockerfile2llb/convert_copy.go`):
//! - sources are paths relative to the root of the build context (or of the `--from`
//!   stage), globs allowed; a glob matching nothing is not an error;
//! - the destination is relative to WORKDIR; a trailing `/` (or several sources)
//!   makes it a directory;
//! - `--chown` and `--chmod` are expanded; `--chmod` is octal up to `07777` or a
//!   symbolic chmod(1) mode (`u+x`, `go=rX`; see [`kiln_graph::Chmod`]);
//! - `COPY --parents`: a source `a/./b/c` keeps `b/c` below the destination (the part
//!   after the first `/./`, or the whole path when there is none), matched as a
//!   pattern below `a` (or the root) with `*`, `?`, `[…]` and `**`; the destination is
//!   always a directory;
//! - a heredoc source (`COPY <<EOF /dest`) is a file named after its delimiter,
//!   mode 0644, written into an empty filesystem and copied from there;
//! - history: `COPY [--parents] [--chown=…] [--chmod=…] src… dest # buildkit` (no
//!   `--from`).

use kiln_graph::{Chmod, CopyAction, FileAction, FileOp, Input, Op, OpMeta, SourceOp};

use crate::error::ErrorKind;
use crate::syntax::flags::AddFlags;
use crate::syntax::instruction::HeredocSource;
use crate::syntax::InstructionKind;

use super::plan::{Cmd, FromSource, Plan};
use super::state::commit;
use super::state::{normalize_path, parse_chown, StageState};
use super::Converter;

/// The parts of COPY and ADD lowering shares.
struct CopySpec<'a> {
    is_add: bool,
    sources: &'a [String],
    heredocs: &'a [HeredocSource],
    dest: &'a str,
    chown: Option<&'a str>,
    chmod: Option<&'a str>,
    exclude: &'a [String],
    parents: bool,
    /// ADD's own flags (`None` for COPY).
    add: Option<&'a AddFlags>,
}

impl Converter<'_> {
    /// Lowers `COPY` or `ADD` into a file op.
    pub(crate) fn copy(
        &mut self,
        st: &mut StageState,
        cmd: &Cmd,
        done: &[Option<StageState>],
        plan: &Plan,
    ) -> Result<(), ErrorKind> {
        let i = &cmd.instr;
        let spec = match &i.kind {
            InstructionKind::Copy(c) => CopySpec {
                is_add: false,
                sources: &c.sources,
                heredocs: &c.heredocs,
                dest: &c.dest,
                chown: c.flags.chown.as_deref(),
                chmod: c.flags.chmod.as_deref(),
                exclude: &c.flags.exclude,
                parents: c.flags.parents,
                add: None,
            },
            InstructionKind::Add(a) => CopySpec {
                is_add: true,
                sources: &a.sources,
                heredocs: &a.heredocs,
                dest: &a.dest,
                chown: a.flags.chown.as_deref(),
                chmod: a.flags.chmod.as_deref(),
                exclude: &a.flags.exclude,
                parents: false,
                add: Some(&a.flags),
            },
            _ => return Ok(()),
        };
        let line = i.start_line;
        let chown = match spec.chown {
            Some(c) => Some(self.expand(st, c, line)?),
            None => None,
        };
        let chmod = match spec.chmod {
            Some(c) => Some(self.expand(st, c, line)?),
            None => None,
        };
        let mut sources = Vec::new();
        for s in spec.sources {
            sources.push(self.expand(st, s, line)?);
        }
        let dest_written = self.expand(st, spec.dest, line)?;
        let mut exclude = Vec::new();
        for e in spec.exclude {
            exclude.push(self.expand(st, e, line)?);
        }
        // URLs and git repositories are ADD's only (see `add.rs`).
        let mut kinds = Vec::new();
        for s in &sources {
            let kind = super::add::classify(s)?;
            if !spec.is_add && !kind.is_local() {
                return Err(ErrorKind::CopyFromUrl { source_url: s.clone() });
            }
            if kind.is_local() && cmd.from.is_none() {
                self.check_copy_source(spec.is_add, s, line);
            }
            kinds.push((s.clone(), kind));
        }
        let checksum = match spec.add.and_then(|f| f.checksum.as_deref()) {
            Some(c) => Some(self.expand(st, c, line)?),
            None => None,
        };
        super::add::check_checksum(checksum.as_deref(), &kinds)?;
        let any_local = kinds.iter().any(|(_, k)| k.is_local());
        let chown_opt = match &chown {
            Some(c) if !c.is_empty() => Some(parse_chown(c)),
            _ => None,
        };
        let chmod_mode = match &chmod {
            Some(m) if !m.is_empty() => Some(parse_chmod(m)?),
            _ => None,
        };
        let mut heredocs = Vec::new();
        for h in spec.heredocs {
            let data = if h.expand {
                std::sync::Arc::new(self.expand_raw(st, &h.data, line)?)
            } else {
                h.data.clone()
            };
            heredocs.push((h.name.clone(), data));
        }

        let src_input = if any_local || !spec.is_add {
            Some(self.input_for_from(st, i, &cmd.from, done, plan)?)
        } else {
            None
        };

        let dest = normalize_path(&st.dir, &dest_written, true);
        let dest_is_dir = dest.ends_with('/') || sources.len() + heredocs.len() > 1;
        let mut inputs: Vec<Input> = vec![st.fs.clone()];
        let mut actions = Vec::new();
        if let (true, Some(src_input)) = (any_local, src_input) {
            inputs.push(src_input);
        }
        for (s, kind) in &kinds {
            let remote = match spec.add {
                Some(flags) => self.add_remote_source(st, i, kind, flags, checksum.as_deref())?,
                None => None,
            };
            if let Some((input, src, unpack)) = remote {
                let idx = u32::try_from(inputs.len()).unwrap_or(u32::MAX);
                inputs.push(input);
                actions.push(FileAction::Copy(CopyAction {
                    input: idx,
                    src,
                    dest: dest.clone(),
                    dest_is_dir,
                    chown: chown_opt.clone(),
                    chmod: chmod_mode.clone(),
                    allow_wildcard: false,
                    allow_empty_wildcard: false,
                    exclude: exclude.clone(),
                    parents: None,
                    unpack,
                }));
                continue;
            }
            let (src, parents) = if spec.parents {
                let (from, pattern) = parents_source(s);
                (from, Some(pattern))
            } else {
                (normalize_path("/", s, false), None)
            };
            actions.push(FileAction::Copy(CopyAction {
                input: 1,
                src,
                dest: dest.clone(),
                // `--parents` copies into `dest` as a directory, always.
                dest_is_dir: dest_is_dir || parents.is_some(),
                chown: chown_opt.clone(),
                chmod: chmod_mode.clone(),
                allow_wildcard: true,
                allow_empty_wildcard: true,
                exclude: exclude.clone(),
                parents,
                // ADD extracts local archives unless `--unpack=false`.
                unpack: spec.add.is_some_and(|f| f.unpack.unwrap_or(true)),
            }));
        }
        for (name, data) in &heredocs {
            let file = normalize_path("/", name, false);
            let doc = self.def.add(
                Op::File(FileOp {
                    base: None,
                    actions: vec![FileAction::Mkfile {
                        path: file.clone(),
                        mode: 0o644,
                        data: std::sync::Arc::clone(data),
                        chown: None,
                    }],
                }),
                Vec::new(),
                OpMeta {
                    description: "preparing inline document".to_string(),
                    span: self.span(i),
                    hidden: true,
                    stage: st.name.clone(),
                    vars: Vec::new(),
                },
            );
            let idx = u32::try_from(inputs.len()).unwrap_or(u32::MAX);
            inputs.push(doc);
            actions.push(FileAction::Copy(CopyAction {
                input: idx,
                src: file,
                dest: dest.clone(),
                dest_is_dir,
                chown: chown_opt.clone(),
                chmod: chmod_mode.clone(),
                allow_wildcard: false,
                allow_empty_wildcard: false,
                exclude: Vec::new(),
                parents: None,
                unpack: false,
            }));
        }
        let description = self.describe(st, i);
        st.fs = self.def.add(
            Op::File(FileOp { base: Some(0), actions }),
            inputs,
            OpMeta {
                description,
                span: self.span(i),
                hidden: false,
                stage: st.name.clone(),
                vars: Vec::new(),
            },
        );
        let mut created_by = String::from(if spec.is_add { "ADD" } else { "COPY" });
        if spec.parents {
            created_by.push_str(" --parents");
        }
        if let Some(c) = chown.as_deref().filter(|c| !c.is_empty()) {
            created_by.push_str(&format!(" --chown={c}"));
        }
        if let Some(m) = chmod.as_deref().filter(|m| !m.is_empty()) {
            created_by.push_str(&format!(" --chmod={m}"));
        }
        for s in &sources {
            created_by.push(' ');
            created_by.push_str(s);
        }
        for (name, _) in &heredocs {
            created_by.push_str(&format!(" <<{name}"));
        }
        created_by.push(' ');
        created_by.push_str(&dest_written);
        created_by.push_str(" # buildkit");
        commit(st, created_by, true);
        Ok(())
    }

    /// Expands variables in a heredoc body without treating quotes specially
    /// (BuildKit's `ExpandRaw`: a lexer with `SkipProcessQuotes`).
    fn expand_raw(&mut self, st: &mut StageState, data: &str, line: u32) -> Result<String, ErrorKind> {
        let lexer = self.lexer.with_escape('\\');
        let r = lexer
            .expand_raw(data, &st.env)
            .map_err(|source| ErrorKind::expansion(data, source))?;
        st.used.extend(r.used);
        self.report_unmatched(st, r.unmatched.iter().map(String::as_str), line);
        Ok(r.value)
    }
}

impl Converter<'_> {
    /// The input a `--from` names: the build context (none), an earlier stage, or an
    /// image source op.
    pub(super) fn input_for_from(
        &mut self,
        st: &StageState,
        i: &crate::syntax::Instruction,
        from: &Option<FromSource>,
        done: &[Option<StageState>],
        plan: &Plan,
    ) -> Result<Input, ErrorKind> {
        Ok(match from {
            None => self.context(),
            Some(FromSource::Stage(j)) => match done.get(*j).and_then(Option::as_ref) {
                Some(s) => s.fs.clone(),
                None => {
                    return Err(ErrorKind::StageNotDefinedYet {
                        from: plan.stages[*j].stage_name(*j),
                        stage: plan_stage_name(st, plan),
                    })
                }
            },
            Some(FromSource::Local(name)) => self.named_local(name),
            Some(FromSource::Image(reference)) => self.def.add(
                Op::Source(SourceOp::Image {
                    reference: reference.clone(),
                    // BuildKit resolves a `--from` image for the target platform.
                    platform: self.opts.platform.clone(),
                }),
                Vec::new(),
                OpMeta {
                    description: format!("FROM {reference}"),
                    span: self.span(i),
                    hidden: false,
                    stage: st.name.clone(),
                    vars: Vec::new(),
                },
            ),
        })
    }
}

pub(super) fn plan_stage_name(st: &StageState, plan: &Plan) -> String {
    if st.display.is_empty() {
        plan.stages
            .get(plan.target)
            .map(|s| s.stage_name(plan.target))
            .unwrap_or_default()
    } else {
        st.display.clone()
    }
}

/// Parses a `--chmod` value: octal up to `07777`, or a symbolic mode (BuildKit's
/// `convert_copy.go` with `dchapes-mode`).
fn parse_chmod(m: &str) -> Result<Chmod, ErrorKind> {
    Chmod::parse(m).map_err(|e| ErrorKind::FlagValue {
        flag: "chmod".to_string(),
        value: m.to_string(),
        reason: e.to_string(),
    })
}

/// Splits a `COPY --parents` source at its first `/./` into the directory the kept
/// path starts from and the pattern below it (BuildKit: `strings.Cut(src, "/./")`;
/// without a `/./` the directory is the root and the pattern the whole path).
fn parents_source(s: &str) -> (String, String) {
    let (from, pattern) = match s.split_once("/./") {
        Some((from, pattern)) => (from, pattern),
        None => ("/", s),
    };
    let pattern = normalize_path("/", pattern, false);
    (
        normalize_path("/", from, false),
        pattern.trim_start_matches('/').to_string(),
    )
}

/// Parses an EXPOSE port spec (`80`, `80/udp`, `8000-8002/tcp`, `[ip:]host:container`)
/// into `port/proto` keys (BuildKit `parsePortSpec`).
pub fn parse_port_spec(raw: &str) -> Result<Vec<String>, ErrorKind> {
    let bad = |reason: String| ErrorKind::InvalidPort {
        port: raw.to_string(),
        reason,
    };
    let parts: Vec<&str> = raw.split(':').collect();
    let (host_port, container) = match parts.as_slice() {
        [c] => ("", *c),
        [h, c] => (*h, *c),
        [.., h, c] => (*h, *c),
        [] => ("", ""),
    };
    let (port, proto) = container.split_once('/').unwrap_or((container, ""));
    if port.is_empty() {
        return Err(bad("no port specified".to_string()));
    }
    let proto = match proto.to_ascii_lowercase().as_str() {
        "" => "tcp".to_string(),
        p @ ("tcp" | "udp" | "sctp") => p.to_string(),
        p => return Err(bad(format!("invalid protocol `{p}`"))),
    };
    let range = |s: &str| -> Option<(u32, u32)> {
        let parse = |p: &str| p.parse::<u16>().ok().map(u32::from);
        match s.split_once('-') {
            None => parse(s).map(|p| (p, p)),
            Some((a, b)) => {
                let (a, b) = (parse(a)?, parse(b)?);
                (b >= a).then_some((a, b))
            }
        }
    };
    let (start, end) = range(port).ok_or_else(|| bad("expected a port or a range like `8000-8010`".to_string()))?;
    if !host_port.is_empty() {
        let (hs, he) = range(host_port).ok_or_else(|| bad(format!("invalid host port `{host_port}`")))?;
        if end - start != he - hs && end != start {
            return Err(bad("the container and host port ranges differ in size".to_string()));
        }
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports() {
        assert_eq!(parse_port_spec("80").unwrap(), vec!["80/tcp"]);
        assert_eq!(parse_port_spec("9000-9001/udp").unwrap(), vec!["9000/udp", "9001/udp"]);
        assert_eq!(parse_port_spec("8080:80").unwrap(), vec!["80/tcp"]);
        assert!(parse_port_spec("abc").is_err());
        assert!(parse_port_spec("80/xyz").is_err());
        assert!(parse_port_spec("90-80").is_err());
    }

    #[test]
    fn chmod() {
        assert_eq!(parse_chmod("755").unwrap(), Chmod::Octal(0o755));
        assert_eq!(parse_chmod("0644").unwrap(), Chmod::Octal(0o644));
        assert_eq!(parse_chmod("u+x").unwrap().to_string(), "u+x");
        assert_eq!(parse_chmod("u=rwX,go=rX").unwrap().apply(0o600, true), 0o755);
        for bad in ["17777", "9", "rwx", "u", "a+r,", "+7"] {
            let e = parse_chmod(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("`{bad}`")), "{e}");
        }
    }

    #[test]
    fn parents_pivot() {
        let split = |s: &str| {
            let (a, b) = parents_source(s);
            (a, b)
        };
        assert_eq!(split("./src/./pkg/a.go"), ("/src".into(), "pkg/a.go".into()));
        assert_eq!(split("x/a.txt"), ("/".into(), "x/a.txt".into()));
        assert_eq!(split("./x/./y/*.txt"), ("/x".into(), "y/*.txt".into()));
        assert_eq!(split("/./usr/lib/"), ("/".into(), "usr/lib".into()));
        assert_eq!(split("a/./b/./c"), ("/a".into(), "b/c".into()));
        assert_eq!(split("src/**/*.txt"), ("/".into(), "src/**/*.txt".into()));
    }
}
