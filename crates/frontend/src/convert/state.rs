//! The state of a stage while it is lowered, and the small formatting helpers that
//! make descriptions and history match BuildKit's byte for byte.

use std::collections::BTreeSet;

use kiln_graph::{ChownOpt, Input, UserSpec};
use kiln_image::{History, ImageConfig, Platform};

use crate::shell::Env;
use crate::syntax::dump::go_quote;

/// The `PATH` BuildKit sets when an image has none (`system.DefaultPathEnv("linux")`).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// EnvList is an ordered environment; setting a key replaces it in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvList(pub Vec<(String, String)>);

impl EnvList {
    /// The value of `key`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Sets `key`, keeping its position when it exists.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.0.iter_mut().find(|(k, _)| k == key) {
            Some(kv) => kv.1 = value.to_string(),
            None => self.0.push((key.to_string(), value.to_string())),
        }
    }

    /// The keys, in order.
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(k, _)| k.as_str())
    }

    /// `KEY=value` strings, in order.
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|(k, v)| format!("{k}={v}")).collect()
    }

    /// Parses `KEY=value` strings (an image config's `Env`).
    pub fn from_strings(env: &[String]) -> EnvList {
        let mut l = EnvList::default();
        for e in env {
            let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
            l.set(k, v);
        }
        l
    }
}

impl Env for EnvList {
    fn get(&self, name: &str) -> Option<&str> {
        self.value(name)
    }
}

/// Tracks where an instruction that should appear once per stage last appeared.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tracker {
    pub line: Option<u32>,
}

/// StageState is one stage being lowered: its filesystem, run environment and image
/// config so far.
#[derive(Debug, Clone)]
pub struct StageState {
    /// The name shown in descriptions (`build`, `stage-1`), empty for a one-stage build.
    pub display: String,
    /// The stage's `AS` name, lower-cased (what `--no-cache-filter` names).
    pub name: Option<String>,
    /// The current filesystem.
    pub fs: Input,
    pub env: EnvList,
    pub dir: String,
    pub user: Option<String>,
    pub platform: Platform,
    pub image: ImageConfig,
    /// ARGs declared in this stage (and inherited from its base stage), in order.
    pub build_args: Vec<(String, Option<String>)>,
    pub cmd_total: usize,
    pub cmd_index: usize,
    pub is_onbuild: bool,
    pub workdir_set: bool,
    pub cmd: Tracker,
    pub entrypoint: Tracker,
    pub healthcheck: Tracker,
    /// Variables this stage's instructions read.
    pub used: BTreeSet<String>,
    /// Descriptions start with the platform (a multi-platform build).
    pub platform_prefix: bool,
}

impl StageState {
    /// BuildKit's `prefixCommand`: `[stage 2/5] COPY a b`, numbering each layer step.
    pub fn prefix(&mut self, text: &str) -> String {
        if self.cmd_total == 0 {
            return text.to_string();
        }
        self.cmd_index += 1;
        let display = match self.platform_prefix {
            true => platform_display(&self.platform, target_from_env(&self.env), &self.display),
            false => self.display.clone(),
        };
        prefix_command(&display, self.cmd_index, self.cmd_total, self.is_onbuild, text)
    }
}

/// The target platform a stage's TARGET* variables name, if it declared any
/// (BuildKit's `platformFromEnv`).
fn target_from_env(env: &EnvList) -> Option<Platform> {
    let get = |k: &str| env.value(k).filter(|v| !v.is_empty());
    if let Some(p) = get("TARGETPLATFORM").and_then(Platform::parse) {
        return Some(p);
    }
    let (os, arch) = (get("TARGETOS"), get("TARGETARCH"));
    if os.is_none() && arch.is_none() {
        return None;
    }
    Some(Platform {
        os: os.unwrap_or_default().to_string(),
        architecture: arch.unwrap_or_default().to_string(),
        variant: get("TARGETVARIANT").map(str::to_string),
    })
}

/// `linux/amd64 build`, or `linux/amd64->arm64 build` for a stage running on one
/// platform for another (BuildKit's `prefixCommand` with `formatTargetPlatform`).
pub fn platform_display(platform: &Platform, target: Option<Platform>, display: &str) -> String {
    let mut out = platform.to_string();
    if let Some(mut t) = target {
        if t.os.is_empty() {
            t.os = platform.os.clone();
        }
        if t.architecture.is_empty() {
            t.architecture = platform.architecture.clone();
        }
        let t = t.normalized();
        if t.os == platform.os && t.architecture != platform.architecture {
            out.push_str("->");
            out.push_str(&t.architecture);
            if let Some(v) = &t.variant {
                out.push('/');
                out.push_str(v);
            }
        } else if t.os != platform.os {
            out.push_str("->");
            out.push_str(&t.to_string());
        }
    }
    if !display.is_empty() {
        out.push(' ');
        out.push_str(display);
    }
    out
}

/// Formats `[display index/total] [ONBUILD ]text`, the index padded to the width of
/// the total; no prefix when the stage has no steps.
pub fn prefix_command(display: &str, index: usize, total: usize, onbuild: bool, text: &str) -> String {
    if total == 0 {
        return text.to_string();
    }
    let width = total.to_string().len();
    let mut out = String::from("[");
    if !display.is_empty() {
        out.push_str(display);
        out.push(' ');
    }
    out.push_str(&format!("{index:>width$}/{total}] "));
    if onbuild {
        out.push_str("ONBUILD ");
    }
    out.push_str(text);
    out
}

/// Upper-cases the first word (BuildKit `uppercaseCmd`).
pub fn uppercase_cmd(s: &str) -> String {
    match s.split_once(' ') {
        Some((a, b)) => format!("{} {b}", a.to_uppercase()),
        None => s.to_uppercase(),
    }
}

/// Expands `$NAME` and `${NAME}` that are set in `env`, leaving everything else as
/// written: how BuildKit renders an instruction for progress output (raw quotes,
/// unset variables kept).
pub fn display_expand(s: &str, env: &dyn Env) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    let mut last = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            i += 2;
            continue;
        }
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        let (name, end) = if b.get(i + 1) == Some(&b'{') {
            match s[i + 2..].find('}') {
                Some(j) if is_name(&s[i + 2..i + 2 + j]) => (&s[i + 2..i + 2 + j], i + 3 + j),
                _ => {
                    i += 1;
                    continue;
                }
            }
        } else {
            let n = s[i + 1..]
                .bytes()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == b'_')
                .count();
            (&s[i + 1..i + 1 + n], i + 1 + n)
        };
        match env.get(name).filter(|_| !name.is_empty()) {
            Some(v) => {
                out.push_str(&s[last..i]);
                out.push_str(v);
                last = end;
                i = end;
            }
            None => i += 1,
        }
    }
    out.push_str(&s[last..]);
    out
}

fn is_name(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Go's `%q` of a `[]string`: `["a" "b"]`.
pub fn go_quote_list(v: &[String]) -> String {
    let q: Vec<String> = v.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", q.join(" "))
}

/// Go's `%q` of an integer: a quoted rune literal (`'\x03'`, `'A'`).
pub fn go_quote_rune(v: i32) -> String {
    match u32::try_from(v).ok().and_then(char::from_u32) {
        Some('\'') => "'\\''".to_string(),
        Some('\\') => "'\\\\'".to_string(),
        Some('\x07') => "'\\a'".to_string(),
        Some('\x08') => "'\\b'".to_string(),
        Some('\x0c') => "'\\f'".to_string(),
        Some('\n') => "'\\n'".to_string(),
        Some('\r') => "'\\r'".to_string(),
        Some('\t') => "'\\t'".to_string(),
        Some('\x0b') => "'\\v'".to_string(),
        Some(c) if (c as u32) < 0x20 || c as u32 == 0x7f => format!("'\\x{:02x}'", c as u32),
        Some(c) if c.is_control() => format!("'\\u{:04x}'", c as u32),
        Some(c) => format!("'{c}'"),
        None => "'\\ufffd'".to_string(),
    }
}

/// Go's `%v` of a `[]string`: `[a b]`.
pub fn go_list(v: &[String]) -> String {
    format!("[{}]", v.join(" "))
}

/// Go's `time.Duration.String()`.
pub fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".to_string();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    let frac = |v: u64, div: u64| -> String {
        let (i, f) = (v / div, v % div);
        if f == 0 {
            return i.to_string();
        }
        let digits = div.to_string().len() - 1;
        let s = format!("{f:0digits$}");
        format!("{i}.{}", s.trim_end_matches('0'))
    };
    if u < 1_000_000_000 {
        let (unit, div) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", frac(u, div));
    }
    let h = u / 3_600_000_000_000;
    let rem = u % 3_600_000_000_000;
    let m = rem / 60_000_000_000;
    let s = rem % 60_000_000_000;
    let mut out = sign.to_string();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if h > 0 || m > 0 {
        out.push_str(&format!("{m}m"));
    }
    out.push_str(&frac(s, 1_000_000_000));
    out.push('s');
    out
}

/// Go's `path.Clean`.
pub use kiln_context::dockerignore::clean as clean_path;

/// Resolves `p` against `dir` as BuildKit's `NormalizePath` does; `keep_slash` keeps
/// a trailing `/` (or `/.`) that says "a directory".
pub fn normalize_path(dir: &str, p: &str, keep_slash: bool) -> String {
    let joined = if p.starts_with('/') {
        p.to_string()
    } else {
        format!("{}/{p}", if dir.is_empty() { "/" } else { dir })
    };
    let mut cleaned = clean_path(&joined);
    if keep_slash && (p.ends_with('/') || p.ends_with("/.") || p == ".") && !cleaned.ends_with('/') {
        cleaned.push('/');
    }
    cleaned
}

/// Parses a `user[:group]` owner (numeric ids or names) as BuildKit's `llb.WithUser`:
/// an empty part, and `root`, are id 0 (`--chown=:` is 0:0, `--chown=1000:` is 1000:0);
/// without `:` the group is the user's.
pub fn parse_chown(s: &str) -> ChownOpt {
    let spec = |v: &str| match v.parse::<u32>() {
        Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => UserSpec::Id(n),
        _ if v.is_empty() || v == "root" => UserSpec::Id(0),
        _ => UserSpec::Name(v.to_string()),
    };
    let (user, group) = match s.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (s, None),
    };
    ChownOpt {
        user: spec(user),
        group: group.map(spec),
    }
}

/// The comment BuildKit puts on every history entry it writes.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// Appends a history entry.
pub fn commit(st: &mut StageState, created_by: String, layer: bool) {
    st.image.history.push(History {
        created: None,
        created_by: Some(created_by),
        author: None,
        comment: Some(HISTORY_COMMENT.to_string()),
        empty_layer: !layer,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_formats() {
        assert_eq!(go_duration(30_000_000_000), "30s");
        assert_eq!(go_duration(90_000_000_000), "1m30s");
        assert_eq!(go_duration(3_600_000_000_000), "1h0m0s");
        assert_eq!(go_duration(1_500_000), "1.5ms");
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_quote_list(&["a".into(), "b c".into()]), r#"["a" "b c"]"#);
        assert_eq!(go_list(&["/a".into(), "/b".into()]), "[/a /b]");
    }

    #[test]
    fn paths() {
        assert_eq!(clean_path("/a/../b/./c/"), "/b/c");
        assert_eq!(normalize_path("/app", "bin/", true), "/app/bin/");
        assert_eq!(normalize_path("/app", ".", true), "/app/");
        assert_eq!(normalize_path("/app", "/x/../y", true), "/y");
        assert_eq!(normalize_path("/", "a/", false), "/a");
    }

    #[test]
    fn chown() {
        assert_eq!(
            parse_chown("1000:1000"),
            ChownOpt {
                user: UserSpec::Id(1000),
                group: Some(UserSpec::Id(1000))
            }
        );
        assert_eq!(parse_chown("app").user, UserSpec::Name("app".into()));
        let id = |u, g: Option<u32>| ChownOpt {
            user: UserSpec::Id(u),
            group: g.map(UserSpec::Id),
        };
        assert_eq!(parse_chown(":"), id(0, Some(0)));
        assert_eq!(parse_chown("1000:"), id(1000, Some(0)));
        assert_eq!(parse_chown("root"), id(0, None));
        assert_eq!(parse_chown(":x").group, Some(UserSpec::Name("x".into())));
    }

    #[test]
    fn display_expansion_keeps_unset_and_quotes() {
        let mut env = EnvList::default();
        env.set("A", "1");
        assert_eq!(display_expand("echo \"$A\" ${A} $B", &env), "echo \"1\" 1 $B");
    }
}
