//! Dispatch lowers one instruction of a stage: config changes with their history
//! entries, `RUN` as an exec op, `WORKDIR` as a mkdir.
//!
//! BuildKit semantics kept here (from `dockerfile2llb/convert.go`):
//! - Word expansion applies to ENV, LABEL, WORKDIR, USER, VOLUME, STOPSIGNAL, EXPOSE,
//!   COPY/ADD and ARG defaults, against the stage's environment (its ENVs and the
//!   ARGs declared so far). RUN, CMD, ENTRYPOINT, HEALTHCHECK, SHELL, MAINTAINER and
//!   ONBUILD are stored as written; the shell expands them at run time.
//! - ARG values join the run environment of later RUNs; RUN history lists them as
//!   `RUN |2 A=1 B=2 /bin/sh -c …`.
//! - History: `created_by` is the instruction as BuildKit prints it, `comment` is
//!   `buildkit.dockerfile.v0`; only RUN, COPY, ADD and WORKDIR (except `/`) make a
//!   layer; ONBUILD adds none.
//! - CMD sets `ArgsEscaped`; ENTRYPOINT clears a CMD inherited from the base unless
//!   this stage set CMD before it.

use kiln_graph::{Entitlement, ExecOp, FileAction, FileOp, Mount, MountKind, NetworkMode, Op, OpMeta, SecurityMode};
use kiln_image::{Empty, HealthConfig};

use crate::error::ErrorKind;
use crate::lint::{msg, Rule};
use crate::shell::Env;
use crate::syntax::scan::{chomp_heredoc_content, parse_heredoc};
use crate::syntax::{Command, HealthTest, Instruction, InstructionKind, RunInstr};

use super::plan::{Cmd, Plan};
use super::state::{
    clean_path, commit, display_expand, go_duration, go_list, go_quote_list, go_quote_rune, parse_chown, uppercase_cmd,
    StageState, Tracker,
};
use super::Converter;

/// Names BuildKit never reports as undefined.
const NON_ENV_ARGS: &[&str] = &["BUILDKIT_SBOM_SCAN_CONTEXT", "BUILDKIT_SBOM_SCAN_STAGE"];

impl Converter<'_> {
    /// Expands one word in the stage's environment, reporting undefined variables.
    pub fn expand(&mut self, st: &mut StageState, word: &str, line: u32) -> Result<String, ErrorKind> {
        let r = self
            .lexer
            .expand_word(word, &st.env)
            .map_err(|source| ErrorKind::expansion(word, source))?;
        self.step_vars.extend(r.used.iter().cloned());
        st.used.extend(r.used);
        self.report_unmatched(st, r.unmatched.iter().map(String::as_str), line);
        Ok(r.value)
    }

    /// Expands one word into several (EXPOSE).
    fn expand_words(&mut self, st: &mut StageState, word: &str, line: u32) -> Result<Vec<String>, ErrorKind> {
        let r = self
            .lexer
            .expand_words(word, &st.env)
            .map_err(|source| ErrorKind::expansion(word, source))?;
        st.used.extend(r.used);
        self.report_unmatched(st, r.unmatched.iter().map(String::as_str), line);
        Ok(r.words)
    }

    pub(super) fn report_unmatched<'n>(&mut self, st: &StageState, names: impl Iterator<Item = &'n str>, line: u32) {
        for name in names {
            if st.build_args.iter().any(|(k, _)| k == name) || NON_ENV_ARGS.contains(&name) {
                continue;
            }
            let suggestion = crate::suggest::closest(name, st.env.keys());
            self.lint
                .report(Rule::UndefinedVar, msg::undefined_var(name, suggestion), line);
        }
    }

    /// The description of a step: `[stage 2/5] COPY a /b` with variables expanded.
    pub fn describe(&self, st: &mut StageState, i: &Instruction) -> String {
        let text = uppercase_cmd(&display_expand(i.code(), &st.env));
        st.prefix(&text)
    }

    /// Lowers one instruction.
    pub(crate) fn dispatch(
        &mut self,
        st: &mut StageState,
        cmd: &Cmd,
        done: &[Option<StageState>],
        plan: &Plan,
    ) -> Result<(), ErrorKind> {
        let i = &cmd.instr;
        let line = i.start_line;
        match &i.kind {
            InstructionKind::From(_) => {}
            InstructionKind::Maintainer(m) => {
                st.image.author = Some(m.clone());
                commit(st, format!("MAINTAINER {m}"), false);
            }
            InstructionKind::Env(kvs) => {
                let mut pairs = Vec::new();
                for kv in kvs {
                    pairs.push((self.expand(st, &kv.key, line)?, self.expand(st, &kv.value, line)?));
                    if kv.legacy {
                        self.lint
                            .report(Rule::LegacyKeyValueFormat, msg::legacy_key_value("ENV"), line);
                    }
                    if let Some((k, _)) = pairs.last() {
                        let k = k.clone();
                        self.check_secret_key("ENV", &k, line);
                    }
                }
                let mut created_by = String::from("ENV");
                for (k, v) in pairs {
                    created_by.push_str(&format!(" {k}={v}"));
                    st.env.set(&k, &v);
                    add_env(&mut st.image.config.env, &k, &v);
                }
                commit(st, created_by, false);
            }
            InstructionKind::Label(kvs) => {
                let mut pairs = Vec::new();
                for kv in kvs {
                    pairs.push((self.expand(st, &kv.key, line)?, self.expand(st, &kv.value, line)?));
                    if kv.legacy {
                        self.lint
                            .report(Rule::LegacyKeyValueFormat, msg::legacy_key_value("LABEL"), line);
                    }
                }
                let mut created_by = String::from("LABEL");
                for (k, v) in pairs {
                    created_by.push_str(&format!(" {k}={v}"));
                    st.image.config.labels.insert(k, v);
                }
                commit(st, created_by, false);
            }
            InstructionKind::Arg(decls) => {
                let mut parts = Vec::new();
                for d in decls {
                    self.check_secret_key("ARG", &d.name, line);
                    self.consumed.insert(d.name.clone());
                    st.used.insert(d.name.clone());
                    let value = match (self.opts.build_args.get(&d.name), &d.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(def)) => Some(self.expand(st, def, line)?),
                        (None, None) => self.global.value(&d.name).map(str::to_string),
                    };
                    if let Some(v) = &value {
                        if !NON_ENV_ARGS.contains(&d.name.as_str()) {
                            st.env.set(&d.name, v);
                        }
                    }
                    parts.push(match &value {
                        Some(v) => format!("{}={v}", d.name),
                        None => d.name.clone(),
                    });
                    st.build_args.push((d.name.clone(), value));
                }
                commit(st, format!("ARG {}", parts.join(" ")), false);
            }
            InstructionKind::Workdir(p) => {
                let p = self.expand(st, p, line)?;
                self.workdir(st, i, &p)?;
            }
            InstructionKind::User(u) => {
                let u = self.expand(st, u, line)?;
                st.user = Some(u.clone());
                st.image.config.user = Some(u.clone());
                commit(st, format!("USER {u}"), false);
            }
            InstructionKind::Cmd(c) => {
                self.used_once(st.cmd, "CMD", line);
                st.cmd.line = Some(line);
                let args = self.shell_args(st, c, "CMD", line);
                commit(st, format!("CMD {}", go_quote_list(&args)), false);
                st.image.config.cmd = Some(args);
                st.image.config.args_escaped = true;
            }
            InstructionKind::Entrypoint(c) => {
                self.used_once(st.entrypoint, "ENTRYPOINT", line);
                st.entrypoint.line = Some(line);
                let args = c.as_ref().map(|c| self.shell_args(st, c, "ENTRYPOINT", line));
                commit(
                    st,
                    format!("ENTRYPOINT {}", go_quote_list(args.as_deref().unwrap_or(&[]))),
                    false,
                );
                st.image.config.entrypoint = args;
                if st.cmd.line.is_none() {
                    st.image.config.cmd = None;
                }
            }
            InstructionKind::Healthcheck(h) => {
                self.used_once(st.healthcheck, "HEALTHCHECK", line);
                st.healthcheck.line = Some(line);
                let hc = match h {
                    HealthTest::None => HealthConfig {
                        test: vec!["NONE".to_string()],
                        ..HealthConfig::default()
                    },
                    HealthTest::Cmd { flags, command } => {
                        let test = match command {
                            Command::Exec(v) => std::iter::once("CMD".to_string()).chain(v.iter().cloned()).collect(),
                            Command::Shell(s) => vec!["CMD-SHELL".to_string(), s.clone()],
                        };
                        HealthConfig {
                            test,
                            interval: flags.interval,
                            timeout: flags.timeout,
                            start_period: flags.start_period,
                            start_interval: flags.start_interval,
                            retries: flags.retries,
                        }
                    }
                };
                // BuildKit formats the config with Go's `%q`: a pointer to a struct prints
                // as `&{...}`, strings and durations quoted, the retry count as a rune.
                let created_by = format!(
                    "HEALTHCHECK &{{{} \"{}\" \"{}\" \"{}\" \"{}\" {}}}",
                    go_quote_list(&hc.test),
                    go_duration(hc.interval),
                    go_duration(hc.timeout),
                    go_duration(hc.start_period),
                    go_duration(hc.start_interval),
                    go_quote_rune(hc.retries)
                );
                st.image.config.healthcheck = Some(hc);
                commit(st, created_by, false);
            }
            InstructionKind::Expose(ports) => {
                let mut words = Vec::new();
                for p in ports {
                    words.extend(self.expand_words(st, p, line)?);
                }
                let mut specs = Vec::new();
                for w in &words {
                    self.check_expose(w, line);
                    specs.extend(super::copy::parse_port_spec(w)?);
                }
                for s in &specs {
                    st.image.config.exposed_ports.insert(s.clone(), Empty {});
                }
                commit(st, format!("EXPOSE {}", go_list(&specs)), false);
            }
            InstructionKind::Volume(vols) => {
                let mut out = Vec::new();
                for v in vols {
                    let v = self.expand(st, v, line)?;
                    if v.is_empty() {
                        return Err(ErrorKind::EmptyVolume);
                    }
                    out.push(v);
                }
                for v in &out {
                    st.image.config.volumes.insert(v.clone(), Empty {});
                }
                commit(st, format!("VOLUME {}", go_list(&out)), false);
            }
            InstructionKind::StopSignal(s) => {
                let s = self.expand(st, s, line)?;
                if !valid_signal(&s) {
                    return Err(ErrorKind::InvalidSignal { signal: s });
                }
                st.image.config.stop_signal = Some(s.clone());
                commit(st, format!("STOPSIGNAL {s}"), false);
            }
            InstructionKind::Shell(sh) => {
                st.image.config.shell = Some(sh.clone());
                commit(st, format!("SHELL {}", go_list(sh)), false);
            }
            InstructionKind::Onbuild { expression, .. } => {
                st.image
                    .config
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(expression.clone());
            }
            InstructionKind::Run(r) => self.lower_run(st, i, r, cmd, done, plan)?,
            InstructionKind::Copy(_) | InstructionKind::Add(_) => self.copy(st, cmd, done, plan)?,
        }
        Ok(())
    }

    /// Reports an instruction used twice in a stage, at the ignored one.
    /// `line` is the instruction being lowered: its `# check=` comment applies.
    fn used_once(&mut self, prev: Tracker, name: &str, line: u32) {
        if let Some(l) = prev.line {
            self.lint
                .report_for(Rule::MultipleInstructionsDisallowed, msg::multiple(name), l, line);
        }
    }

    /// CMD/ENTRYPOINT arguments: exec form as is, shell form wrapped in the shell.
    fn shell_args(&mut self, st: &StageState, c: &Command, name: &str, line: u32) -> Vec<String> {
        match c {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                if shell_unset(st) {
                    self.lint.report(Rule::JsonArgsRecommended, msg::json_args(name), line);
                }
                with_shell(st, s)
            }
        }
    }

    /// WORKDIR: resolve against the current directory; create it (owned by the
    /// current USER) unless it is `/`.
    fn workdir(&mut self, st: &mut StageState, i: &Instruction, p: &str) -> Result<(), ErrorKind> {
        if !st.workdir_set && !p.starts_with('/') {
            self.lint
                .report(Rule::WorkdirRelativePath, msg::workdir_relative(p), i.start_line);
        }
        st.workdir_set = true;
        let current = st.image.config.working_dir.clone().unwrap_or_default();
        let wd = if p.starts_with('/') {
            clean_path(p)
        } else {
            clean_path(&format!("{}/{p}", if current.is_empty() { "/" } else { &current }))
        };
        st.image.config.working_dir = Some(wd.clone());
        st.dir = wd.clone();
        let layer = wd != "/";
        if layer {
            let chown = st
                .image
                .config
                .user
                .as_deref()
                .filter(|u| !u.is_empty())
                .map(parse_chown);
            let description = self.describe(st, i);
            st.fs = self.def.add(
                Op::File(FileOp {
                    base: Some(0),
                    actions: vec![FileAction::Mkdir {
                        path: wd.clone(),
                        mode: 0o755,
                        chown,
                    }],
                }),
                vec![st.fs.clone()],
                OpMeta {
                    description,
                    span: self.span(i),
                    hidden: false,
                    stage: st.name.clone(),
                    vars: Vec::new(),
                },
            );
        }
        commit(st, format!("WORKDIR {wd}"), layer);
        Ok(())
    }

    /// RUN: an exec op over the stage's filesystem.
    fn lower_run(
        &mut self,
        st: &mut StageState,
        i: &Instruction,
        r: &RunInstr,
        cmd: &Cmd,
        done: &[Option<StageState>],
        plan: &Plan,
    ) -> Result<(), ErrorKind> {
        let mut inputs = vec![st.fs.clone()];
        let mut mounts = Vec::new();
        let mut ssh_count = 0;
        for (n, value) in r.flags.mounts.iter().enumerate() {
            let from = cmd.mount_froms.get(n).cloned().flatten();
            let m = self.lower_mount(st, i, value, from, done, plan, &mut inputs, ssh_count)?;
            if matches!(m.kind, MountKind::Ssh { .. }) {
                ssh_count += 1;
            }
            mounts.push(m);
        }
        let security = match r.flags.security.as_deref() {
            None | Some("sandbox") => SecurityMode::Sandbox,
            Some("insecure") => SecurityMode::Insecure,
            Some(v) => return Err(ErrorKind::InvalidSecurity { value: v.to_string() }),
        };
        let network = match r.flags.network.as_deref() {
            None | Some("default") => NetworkMode::Default,
            Some("none") => NetworkMode::None,
            Some("host") => NetworkMode::Host,
            Some(v) => return Err(ErrorKind::InvalidNetwork { value: v.to_string() }),
        };
        // The Dockerfile is untrusted: what it cannot take by itself, the person
        // running the build grants with `--allow` (BuildKit's entitlements).
        if network == NetworkMode::Host {
            self.entitled(Entitlement::NetworkHost, "RUN --network=host")?;
        }
        if security == SecurityMode::Insecure {
            self.entitled(Entitlement::SecurityInsecure, "RUN --security=insecure")?;
        }
        let (mut args, mut prepend_shell) = match &r.command {
            Command::Exec(v) => (v.clone(), false),
            Command::Shell(s) => (vec![s.clone()], true),
        };
        let mut description = self.describe(st, i);
        if !r.heredocs.is_empty() {
            let cmd = args.first().cloned().unwrap_or_default();
            if prepend_shell && parse_heredoc(&cmd).is_some() {
                let doc = &r.heredocs[0];
                let data = if doc.chomp {
                    chomp_heredoc_content(&doc.content)
                } else {
                    String::clone(&doc.content)
                };
                description.push_str(&format!(" ({})", summarize_heredoc(&doc.content)));
                if data.starts_with("#!") {
                    // As BuildKit: the script is a file at /dev/pipes/<name>, run by
                    // its interpreter line, never part of the layer.
                    let target = format!("/dev/pipes/{}", doc.name);
                    mounts.push(Mount {
                        target: target.clone(),
                        kind: MountKind::File { data, mode: 0o755 },
                    });
                    args = vec![target];
                    prepend_shell = false;
                } else {
                    args = vec![data];
                }
            } else {
                let mut s = cmd;
                for doc in &r.heredocs {
                    s.push('\n');
                    s.push_str(&doc.content);
                    s.push_str(&doc.name);
                }
                args = vec![s];
            }
        }
        if prepend_shell {
            args = with_shell(st, &args.join(" "));
        }
        st.fs = self.def.add(
            Op::Exec(ExecOp {
                args: args.clone(),
                env: st.env.to_strings(),
                cwd: st.dir.clone(),
                user: st.user.clone(),
                network,
                security,
                platform: st.platform.clone(),
                mounts,
                extra_hosts: self.opts.extra_hosts.clone(),
            }),
            inputs,
            OpMeta {
                description,
                span: self.span(i),
                hidden: false,
                stage: st.name.clone(),
                vars: Vec::new(),
            },
        );
        let created_by = format!("RUN {} # buildkit", run_command_string(&args, st));
        commit(st, created_by, true);
        Ok(())
    }
}

/// Whether the stage has no SHELL of its own.
fn shell_unset(st: &StageState) -> bool {
    match &st.image.config.shell {
        None => true,
        Some(s) => s.is_empty(),
    }
}

/// Prepends the stage's SHELL (default `/bin/sh -c`) to a shell-form command.
fn with_shell(st: &StageState, cmd: &str) -> Vec<String> {
    let mut v = match &st.image.config.shell {
        Some(s) if !s.is_empty() => s.clone(),
        _ => vec!["/bin/sh".to_string(), "-c".to_string()],
    };
    v.push(cmd.to_string());
    v
}

/// BuildKit's `runCommandString`: `|N K=V … args`, ARG values as the run sees them.
fn run_command_string(args: &[String], st: &StageState) -> String {
    let mut build_env: Vec<(String, String)> = Vec::new();
    for (k, v) in &st.build_args {
        let value = st
            .env
            .get(k)
            .map(str::to_string)
            .unwrap_or_else(|| v.clone().unwrap_or_default());
        match build_env.iter_mut().find(|(ek, _)| ek == k) {
            Some(e) => e.1 = value,
            None => build_env.push((k.clone(), value)),
        }
    }
    let mut parts: Vec<String> = Vec::new();
    if !build_env.is_empty() {
        parts.push(format!("|{}", build_env.len()));
        parts.extend(build_env.into_iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(args.iter().cloned());
    parts.join(" ")
}

/// The first line of a heredoc, with `...` when there are more.
fn summarize_heredoc(doc: &str) -> String {
    let doc = doc.trim();
    let mut lines = doc.split('\n');
    let first = lines.next().unwrap_or_default().trim_end_matches('\r').to_string();
    if lines.next().is_some() {
        format!("{first}...")
    } else {
        first
    }
}

/// Sets `k=v` in an image Env, replacing an existing `k` in place.
fn add_env(env: &mut Vec<String>, k: &str, v: &str) {
    let entry = format!("{k}={v}");
    match env
        .iter_mut()
        .find(|e| e.split_once('=').map_or(e.as_str(), |(ek, _)| ek) == k)
    {
        Some(e) => *e = entry,
        None => env.push(entry),
    }
}

/// Whether `s` is a signal `docker stop` understands (moby `signal.ParseSignal`).
fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<i64>() {
        return n > 0 && n <= 64;
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE", "POLL",
        "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1",
        "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ", "RTMIN", "RTMAX", "UNUSED",
    ];
    if NAMES.contains(&name) {
        return true;
    }
    let offset = |p: &str, sep: char| {
        name.strip_prefix(p)
            .and_then(|r| r.strip_prefix(sep))
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|n| (1..=15).contains(&n) || (sep == '-' && n == 14))
    };
    offset("RTMIN", '+') || offset("RTMAX", '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals() {
        assert!(valid_signal("SIGTERM"));
        assert!(valid_signal("int"));
        assert!(valid_signal("9"));
        assert!(valid_signal("SIGRTMIN+3"));
        assert!(!valid_signal("SIGFOO"));
        assert!(!valid_signal("0"));
    }

    #[test]
    fn env_replaced_in_place() {
        let mut env = vec!["A=1".to_string(), "B=2".to_string()];
        add_env(&mut env, "A", "3");
        add_env(&mut env, "C", "4");
        assert_eq!(env, vec!["A=3", "B=2", "C=4"]);
    }

    #[test]
    fn heredoc_summary() {
        assert_eq!(summarize_heredoc("echo hi\n"), "echo hi");
        assert_eq!(summarize_heredoc("a\nb\n"), "a...");
    }
}
