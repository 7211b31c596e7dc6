//! Typed instructions, built from parser nodes as BuildKit's `instructions.Parse`
//! does: argument counts, `name=value` pairs, JSON or shell form, heredoc sources.

use std::sync::Arc;

use crate::error::{ErrorKind, OnbuildError};

use super::flags::{self, AddFlags, CopyFlags, FromFlags, HealthcheckFlags, RunFlags};
use super::node::{Heredoc, Node};
use super::scan::{chomp_heredoc_content, parse_heredoc};

/// Instruction is one Dockerfile instruction with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    pub kind: InstructionKind,
    /// The instruction word as written (`copy`, `RUN`).
    pub keyword: String,
    /// First line (1-based).
    pub start_line: u32,
    /// Last line, heredoc bodies included.
    pub end_line: u32,
    /// The logical line: continuations joined, comment lines removed.
    pub original: String,
}

impl Instruction {
    /// The upper-case instruction name, e.g. `COPY`.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The instruction text BuildKit shows and stores: the logical line, trimmed.
    pub fn code(&self) -> &str {
        self.original.trim()
    }
}

/// Command is the command of `RUN`, `CMD`, `ENTRYPOINT` or `HEALTHCHECK CMD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// JSON array form: run as is.
    Exec(Vec<String>),
    /// Shell form: run with the current `SHELL`.
    Shell(String),
}

impl Command {
    fn from_node_args(args: Vec<String>, json: bool) -> Command {
        if json {
            Command::Exec(args)
        } else {
            Command::Shell(args.join(" "))
        }
    }
}

/// KeyValue is one `ENV` or `LABEL` pair, unexpanded (quotes still in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
    /// Written in the legacy `KEY value` form.
    pub legacy: bool,
}

/// ArgDecl is one name of an `ARG`, with its unexpanded default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// FromInstr is a `FROM` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FromInstr {
    pub flags: FromFlags,
    /// The base, unexpanded: an image reference, a stage name or `scratch`.
    pub image: String,
    /// The stage name, lower-cased as BuildKit stores it.
    pub name: Option<String>,
    /// The stage name as written.
    pub name_as_written: Option<String>,
    /// The `AS` keyword as written.
    pub as_keyword: Option<String>,
}

/// RunInstr is a `RUN` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunInstr {
    pub flags: RunFlags,
    pub command: Command,
    pub heredocs: Vec<Heredoc>,
}

/// HeredocSource is an inline file of `COPY`/`ADD` (`COPY <<EOF /dest`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocSource {
    /// The delimiter, which is also the file name.
    pub name: String,
    /// The body (leading tabs removed for `<<-`), shared with the parser node.
    pub data: Arc<String>,
    pub expand: bool,
}

/// CopyInstr holds the sources and destination of `COPY` or `ADD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyInstr<F> {
    pub flags: F,
    /// Source paths, unexpanded.
    pub sources: Vec<String>,
    pub heredocs: Vec<HeredocSource>,
    /// Destination, unexpanded.
    pub dest: String,
}

/// HealthTest is what `HEALTHCHECK` sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthTest {
    /// `HEALTHCHECK NONE`.
    None,
    /// `HEALTHCHECK [flags] CMD ...`.
    Cmd { flags: HealthcheckFlags, command: Command },
}

/// InstructionKind is an instruction with typed arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    From(FromInstr),
    Arg(Vec<ArgDecl>),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Run(RunInstr),
    Cmd(Command),
    /// `None` for `ENTRYPOINT []`.
    Entrypoint(Option<Command>),
    Shell(Vec<String>),
    Copy(CopyInstr<CopyFlags>),
    Add(CopyInstr<AddFlags>),
    Workdir(String),
    User(String),
    StopSignal(String),
    Maintainer(String),
    /// Port specs, sorted as strings.
    Expose(Vec<String>),
    Volume(Vec<String>),
    Healthcheck(HealthTest),
    /// The trigger as stored in the image config, and its instruction word.
    Onbuild {
        expression: String,
        trigger: String,
    },
}

impl InstructionKind {
    /// The upper-case instruction name.
    pub fn name(&self) -> &'static str {
        match self {
            InstructionKind::From(_) => "FROM",
            InstructionKind::Arg(_) => "ARG",
            InstructionKind::Env(_) => "ENV",
            InstructionKind::Label(_) => "LABEL",
            InstructionKind::Run(_) => "RUN",
            InstructionKind::Cmd(_) => "CMD",
            InstructionKind::Entrypoint(_) => "ENTRYPOINT",
            InstructionKind::Shell(_) => "SHELL",
            InstructionKind::Copy(_) => "COPY",
            InstructionKind::Add(_) => "ADD",
            InstructionKind::Workdir(_) => "WORKDIR",
            InstructionKind::User(_) => "USER",
            InstructionKind::StopSignal(_) => "STOPSIGNAL",
            InstructionKind::Maintainer(_) => "MAINTAINER",
            InstructionKind::Expose(_) => "EXPOSE",
            InstructionKind::Volume(_) => "VOLUME",
            InstructionKind::Healthcheck(_) => "HEALTHCHECK",
            InstructionKind::Onbuild { .. } => "ONBUILD",
        }
    }
}

/// Every instruction name, for suggestions.
pub const INSTRUCTIONS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

fn exactly_one(instruction: &'static str, args: &[String]) -> Result<String, ErrorKind> {
    match args {
        [one] => Ok(one.clone()),
        _ => Err(ErrorKind::ArgumentCount {
            instruction,
            expected: "exactly one argument",
        }),
    }
}

fn at_least_one(instruction: &'static str, args: &[String]) -> Result<(), ErrorKind> {
    if args.is_empty() {
        return Err(ErrorKind::ArgumentCount {
            instruction,
            expected: "at least one argument",
        });
    }
    Ok(())
}

fn key_values(instruction: &'static str, args: &[String]) -> Result<Vec<KeyValue>, ErrorKind> {
    at_least_one(instruction, args)?;
    let mut out = Vec::new();
    for t in args.chunks(3) {
        let [k, v, sep] = t else {
            return Err(ErrorKind::ArgumentCount {
                instruction,
                expected: "`name=value` pairs",
            });
        };
        if k.is_empty() {
            return Err(ErrorKind::BlankName { instruction });
        }
        out.push(KeyValue {
            key: k.clone(),
            value: v.clone(),
            legacy: sep.is_empty(),
        });
    }
    Ok(out)
}

fn copy_parts(
    instruction: &'static str,
    node: &Node,
    args: &[String],
) -> Result<(Vec<String>, Vec<HeredocSource>, String), ErrorKind> {
    let Some((dest, srcs)) = args.split_last().filter(|(_, s)| !s.is_empty()) else {
        return Err(ErrorKind::ArgumentCount {
            instruction,
            expected: "at least two arguments: one or more sources and a destination",
        });
    };
    if parse_heredoc(dest).is_some() {
        return Err(ErrorKind::HeredocDestination { instruction });
    }
    let mut sources = Vec::new();
    let mut heredocs = Vec::new();
    for src in srcs {
        match parse_heredoc(src) {
            Some(h) if !node.json => {
                let doc = node.heredocs.iter().find(|d| d.name == h.name);
                let mut data = doc.map(|d| d.content.clone()).unwrap_or_default();
                if h.chomp {
                    data = Arc::new(chomp_heredoc_content(&data));
                }
                heredocs.push(HeredocSource {
                    name: h.name,
                    data,
                    expand: h.expand,
                });
            }
            _ => sources.push(src.clone()),
        }
    }
    Ok((sources, heredocs, dest.clone()))
}

fn is_valid_stage_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z')) && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
}

/// Types one parser node.
pub fn from_node(node: &Node) -> Result<Instruction, ErrorKind> {
    let args = node.arg_values();
    let f = &node.flags;
    let lower = node.value.to_ascii_lowercase();
    let kind = match lower.as_str() {
        "from" => {
            let flags = flags::parse_from(f)?;
            let (name, written, as_kw) = match args.as_slice() {
                [_] => (None, None, None),
                [_, as_kw, name] if as_kw.eq_ignore_ascii_case("as") => {
                    let lower = name.to_lowercase();
                    if !is_valid_stage_name(&lower) {
                        return Err(ErrorKind::InvalidStageName { name: name.clone() });
                    }
                    (Some(lower), Some(name.clone()), Some(as_kw.clone()))
                }
                _ => {
                    return Err(ErrorKind::ArgumentCount {
                        instruction: "FROM",
                        expected: "either one or three arguments: `FROM image [AS name]`",
                    })
                }
            };
            InstructionKind::From(FromInstr {
                flags,
                image: args[0].clone(),
                name,
                name_as_written: written,
                as_keyword: as_kw,
            })
        }
        "arg" => {
            flags::parse_none("ARG", f)?;
            at_least_one("ARG", &args)?;
            let mut decls = Vec::new();
            for a in &args {
                let decl = match a.split_once('=') {
                    Some(("", _)) => return Err(ErrorKind::BlankName { instruction: "ARG" }),
                    Some((k, v)) => ArgDecl {
                        name: k.to_string(),
                        default: Some(v.to_string()),
                    },
                    None => ArgDecl {
                        name: a.clone(),
                        default: None,
                    },
                };
                decls.push(decl);
            }
            InstructionKind::Arg(decls)
        }
        "env" => {
            flags::parse_none("ENV", f)?;
            InstructionKind::Env(key_values("ENV", &args)?)
        }
        "label" => {
            flags::parse_none("LABEL", f)?;
            InstructionKind::Label(key_values("LABEL", &args)?)
        }
        "maintainer" => {
            let m = exactly_one("MAINTAINER", &args)?;
            flags::parse_none("MAINTAINER", f)?;
            InstructionKind::Maintainer(m)
        }
        "copy" => {
            let flags = flags::parse_copy(f)?;
            let (sources, heredocs, dest) = copy_parts("COPY", node, &args)?;
            InstructionKind::Copy(CopyInstr {
                flags,
                sources,
                heredocs,
                dest,
            })
        }
        "add" => {
            let flags = flags::parse_add(f)?;
            let (sources, heredocs, dest) = copy_parts("ADD", node, &args)?;
            InstructionKind::Add(CopyInstr {
                flags,
                sources,
                heredocs,
                dest,
            })
        }
        "onbuild" => {
            at_least_one("ONBUILD", &args)?;
            flags::parse_none("ONBUILD", f)?;
            let trigger = args[0].trim().to_ascii_uppercase();
            match trigger.as_str() {
                "ONBUILD" => {
                    return Err(ErrorKind::Onbuild {
                        trigger: OnbuildError::Chained,
                    })
                }
                "MAINTAINER" => {
                    return Err(ErrorKind::Onbuild {
                        trigger: OnbuildError::Forbidden("MAINTAINER"),
                    })
                }
                "FROM" => {
                    return Err(ErrorKind::Onbuild {
                        trigger: OnbuildError::Forbidden("FROM"),
                    })
                }
                "" => {
                    return Err(ErrorKind::Onbuild {
                        trigger: OnbuildError::Empty,
                    })
                }
                _ => {}
            }
            let mut expression = strip_onbuild(&node.original).to_string();
            for h in &node.heredocs {
                expression.push('\n');
                expression.push_str(&h.content);
                expression.push_str(&h.name);
            }
            InstructionKind::Onbuild { expression, trigger }
        }
        "workdir" => {
            let p = exactly_one("WORKDIR", &args)?;
            flags::parse_none("WORKDIR", f)?;
            InstructionKind::Workdir(p)
        }
        "run" => {
            let flags = flags::parse_run(f)?;
            InstructionKind::Run(RunInstr {
                flags,
                command: Command::from_node_args(args, node.json),
                heredocs: node.heredocs.clone(),
            })
        }
        "cmd" => {
            flags::parse_none("CMD", f)?;
            InstructionKind::Cmd(Command::from_node_args(args, node.json))
        }
        "entrypoint" => {
            flags::parse_none("ENTRYPOINT", f)?;
            if args.is_empty() {
                InstructionKind::Entrypoint(None)
            } else {
                InstructionKind::Entrypoint(Some(Command::from_node_args(args, node.json)))
            }
        }
        "healthcheck" => {
            at_least_one("HEALTHCHECK", &args)?;
            let kind = args[0].to_ascii_uppercase();
            let rest = &args[1..];
            if kind == "NONE" {
                if !rest.is_empty() {
                    return Err(ErrorKind::HealthcheckNoneArgs);
                }
                InstructionKind::Healthcheck(HealthTest::None)
            } else {
                let flags = flags::parse_healthcheck(f)?;
                if kind != "CMD" {
                    return Err(ErrorKind::HealthcheckType { kind: args[0].clone() });
                }
                if rest.is_empty() {
                    return Err(ErrorKind::HealthcheckMissingCommand);
                }
                InstructionKind::Healthcheck(HealthTest::Cmd {
                    flags,
                    command: Command::from_node_args(rest.to_vec(), node.json),
                })
            }
        }
        "expose" => {
            at_least_one("EXPOSE", &args)?;
            flags::parse_none("EXPOSE", f)?;
            let mut ports = args;
            ports.sort();
            InstructionKind::Expose(ports)
        }
        "user" => {
            let u = exactly_one("USER", &args)?;
            flags::parse_none("USER", f)?;
            InstructionKind::User(u)
        }
        "volume" => {
            at_least_one("VOLUME", &args)?;
            flags::parse_none("VOLUME", f)?;
            let mut vols = Vec::new();
            for v in &args {
                let v = v.trim();
                if v.is_empty() {
                    return Err(ErrorKind::EmptyVolume);
                }
                vols.push(v.to_string());
            }
            InstructionKind::Volume(vols)
        }
        // BuildKit does not check STOPSIGNAL's flags.
        "stopsignal" => InstructionKind::StopSignal(exactly_one("STOPSIGNAL", &args)?),
        "shell" => {
            flags::parse_none("SHELL", f)?;
            at_least_one("SHELL", &args)?;
            if !node.json {
                return Err(ErrorKind::NotJson { instruction: "SHELL" });
            }
            InstructionKind::Shell(args)
        }
        _ => {
            return Err(ErrorKind::UnknownInstruction {
                instruction: node.value.clone(),
                suggestion: suggest_instruction(&node.value),
            })
        }
    };
    Ok(Instruction {
        kind,
        keyword: node.value.clone(),
        start_line: node.start_line,
        end_line: node.end_line,
        original: node.original.clone(),
    })
}

/// Removes a leading `ONBUILD` keyword (`(?i)^\s*ONBUILD\s*`).
fn strip_onbuild(s: &str) -> &str {
    let t = s.trim_start();
    match t.get(..7) {
        Some(k) if k.eq_ignore_ascii_case("onbuild") => t[7..].trim_start(),
        _ => s,
    }
}

/// Suggests the closest instruction name for a misspelt one.
pub fn suggest_instruction(word: &str) -> Option<String> {
    crate::suggest::closest(&word.to_ascii_uppercase(), INSTRUCTIONS.iter().copied()).map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str) -> Result<InstructionKind, ErrorKind> {
        let mut n = super::super::node::new_node_from_line(line, '\\')?;
        n.set_lines(1, 1);
        from_node(&n).map(|i| i.kind)
    }

    #[test]
    fn types_instructions() {
        assert!(matches!(
            one("FROM a AS b"),
            Ok(InstructionKind::From(FromInstr { name: Some(_), .. }))
        ));
        assert!(matches!(one("FROM a AS 1b"), Err(ErrorKind::InvalidStageName { .. })));
        assert!(matches!(one("FROM a b"), Err(ErrorKind::ArgumentCount { .. })));
        assert_eq!(
            one("ARG a b=c").unwrap(),
            InstructionKind::Arg(vec![
                ArgDecl {
                    name: "a".into(),
                    default: None
                },
                ArgDecl {
                    name: "b".into(),
                    default: Some("c".into())
                }
            ])
        );
        assert!(matches!(one("COPY a"), Err(ErrorKind::ArgumentCount { .. })));
        assert!(matches!(one("SHELL sh -c"), Err(ErrorKind::NotJson { .. })));
        assert!(matches!(
            one("RUNN x"),
            Err(ErrorKind::UnknownInstruction {
                suggestion: Some(_),
                ..
            })
        ));
        assert!(matches!(one("CMD --x a"), Err(ErrorKind::UnknownFlag { .. })));
        assert_eq!(
            one("ONBUILD RUN echo hi").unwrap(),
            InstructionKind::Onbuild {
                expression: "RUN echo hi".into(),
                trigger: "RUN".into()
            }
        );
        assert!(matches!(one("ONBUILD ONBUILD RUN x"), Err(ErrorKind::Onbuild { .. })));
        assert_eq!(
            one("EXPOSE 9000 80").unwrap(),
            InstructionKind::Expose(vec!["80".into(), "9000".into()])
        );
    }
}
