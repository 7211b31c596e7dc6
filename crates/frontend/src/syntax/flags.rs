//! Typed `--flags` of each instruction, parsed as BuildKit's `BFlags` does: `--name`
//! or `--name=value`, string flags require a value, booleans take `true`/`false`,
//! repeatable flags (`--mount`, `--exclude`) collect every value.

use crate::error::ErrorKind;

/// CopyFlags are the flags of `COPY`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CopyFlags {
    /// `--from=<stage|index|image>`.
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
}

/// AddFlags are the flags of `ADD`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddFlags {
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub checksum: Option<String>,
    pub keep_git_dir: Option<bool>,
    pub unpack: Option<bool>,
    pub exclude: Vec<String>,
}

/// FromFlags are the flags of `FROM`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FromFlags {
    /// `--platform`, unexpanded (it may use `$BUILDPLATFORM`).
    pub platform: Option<String>,
}

/// RunFlags are the flags of `RUN`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFlags {
    /// `--mount` values, unparsed.
    pub mounts: Vec<String>,
    pub network: Option<String>,
    pub security: Option<String>,
}

/// HealthcheckFlags are the flags of `HEALTHCHECK`, durations in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthcheckFlags {
    pub interval: i64,
    pub timeout: i64,
    pub start_period: i64,
    pub start_interval: i64,
    pub retries: i32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Str,
    Bool,
    List,
}

/// Parsed holds the raw flag values of one instruction after checking them.
struct Parsed {
    values: Vec<(&'static str, Vec<String>)>,
}

impl Parsed {
    fn str(&self, name: &str) -> Option<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, v)| v.last().cloned())
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }

    fn bool(&self, name: &str) -> Option<bool> {
        self.str(name).map(|v| v == "true")
    }
}

/// Checks `flags` (as written, `--name[=value]`) against the `known` ones.
fn parse(instruction: &'static str, flags: &[String], known: &[(&'static str, Kind)]) -> Result<Parsed, ErrorKind> {
    let mut parsed = Parsed { values: Vec::new() };
    for raw in flags {
        let Some(arg) = raw.strip_prefix("--") else {
            return Err(ErrorKind::FlagSyntax {
                instruction,
                arg: raw.clone(),
            });
        };
        let (name, value) = match arg.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (arg, None),
        };
        let Some(&(name, kind)) = known.iter().find(|(n, _)| *n == name) else {
            return Err(ErrorKind::UnknownFlag {
                instruction,
                flag: name.to_string(),
            });
        };
        let seen = parsed.values.iter().position(|(n, _)| *n == name);
        if seen.is_some() && kind != Kind::List {
            return Err(ErrorKind::DuplicateFlag { flag: name.to_string() });
        }
        let value = match (kind, value) {
            (Kind::Bool, None) => "true".to_string(),
            (Kind::Bool, Some(v)) => match v.to_ascii_lowercase().as_str() {
                "true" => "true".to_string(),
                "false" => "false".to_string(),
                _ => {
                    return Err(ErrorKind::FlagValue {
                        flag: name.to_string(),
                        value: v.to_string(),
                        reason: "expected `true` or `false`".to_string(),
                    })
                }
            },
            (_, None) => return Err(ErrorKind::FlagNeedsValue { flag: name.to_string() }),
            (_, Some(v)) => v.to_string(),
        };
        match seen {
            Some(i) => parsed.values[i].1.push(value),
            None => parsed.values.push((name, vec![value])),
        }
    }
    Ok(parsed)
}

/// Rejects any flag: the instruction takes none.
pub fn parse_none(instruction: &'static str, flags: &[String]) -> Result<(), ErrorKind> {
    parse(instruction, flags, &[]).map(|_| ())
}

/// Parses the flags of `COPY`.
pub fn parse_copy(flags: &[String]) -> Result<CopyFlags, ErrorKind> {
    let p = parse(
        "COPY",
        flags,
        &[
            ("from", Kind::Str),
            ("chown", Kind::Str),
            ("chmod", Kind::Str),
            ("link", Kind::Bool),
            ("parents", Kind::Bool),
            ("exclude", Kind::List),
        ],
    )?;
    Ok(CopyFlags {
        from: p.str("from"),
        chown: p.str("chown"),
        chmod: p.str("chmod"),
        link: p.bool("link").unwrap_or(false),
        parents: p.bool("parents").unwrap_or(false),
        exclude: p.list("exclude"),
    })
}

/// Parses the flags of `ADD`.
pub fn parse_add(flags: &[String]) -> Result<AddFlags, ErrorKind> {
    let p = parse(
        "ADD",
        flags,
        &[
            ("chown", Kind::Str),
            ("chmod", Kind::Str),
            ("link", Kind::Bool),
            ("keep-git-dir", Kind::Bool),
            ("checksum", Kind::Str),
            ("unpack", Kind::Bool),
            ("exclude", Kind::List),
        ],
    )?;
    Ok(AddFlags {
        chown: p.str("chown"),
        chmod: p.str("chmod"),
        link: p.bool("link").unwrap_or(false),
        checksum: p.str("checksum"),
        keep_git_dir: p.bool("keep-git-dir"),
        unpack: p.bool("unpack"),
        exclude: p.list("exclude"),
    })
}

/// Parses the flags of `FROM`.
pub fn parse_from(flags: &[String]) -> Result<FromFlags, ErrorKind> {
    let p = parse("FROM", flags, &[("platform", Kind::Str)])?;
    Ok(FromFlags {
        platform: p.str("platform"),
    })
}

/// Parses the flags of `RUN`.
pub fn parse_run(flags: &[String]) -> Result<RunFlags, ErrorKind> {
    let p = parse(
        "RUN",
        flags,
        &[("mount", Kind::List), ("network", Kind::Str), ("security", Kind::Str)],
    )?;
    Ok(RunFlags {
        mounts: p.list("mount"),
        network: p.str("network"),
        security: p.str("security"),
    })
}

/// Parses the flags of `HEALTHCHECK CMD`.
pub fn parse_healthcheck(flags: &[String]) -> Result<HealthcheckFlags, ErrorKind> {
    let p = parse(
        "HEALTHCHECK",
        flags,
        &[
            ("interval", Kind::Str),
            ("timeout", Kind::Str),
            ("start-period", Kind::Str),
            ("start-interval", Kind::Str),
            ("retries", Kind::Str),
        ],
    )?;
    let dur = |name: &str| -> Result<i64, ErrorKind> {
        match p.str(name) {
            None => Ok(0),
            Some(v) if v.is_empty() => Ok(0),
            Some(v) => {
                let bad = |reason: &str| ErrorKind::FlagValue {
                    flag: name.to_string(),
                    value: v.clone(),
                    reason: reason.to_string(),
                };
                let d = parse_go_duration(&v).ok_or_else(|| bad("expected a duration like `30s` or `1m30s`"))?;
                if d != 0 && d < 1_000_000 {
                    return Err(bad("the interval cannot be less than 1ms"));
                }
                Ok(d)
            }
        }
    };
    let retries = match p.str("retries") {
        None => 0,
        Some(v) if v.is_empty() => 0,
        Some(v) => {
            let bad = |reason: &str| ErrorKind::FlagValue {
                flag: "retries".to_string(),
                value: v.clone(),
                reason: reason.to_string(),
            };
            let n: i32 = v.parse().map_err(|_| bad("expected a whole number"))?;
            if n < 0 {
                return Err(bad("it cannot be negative"));
            }
            n
        }
    };
    Ok(HealthcheckFlags {
        interval: dur("interval")?,
        timeout: dur("timeout")?,
        start_period: dur("start-period")?,
        start_interval: dur("start-interval")?,
        retries,
    })
}

/// Parses a Go `time.ParseDuration` string (`1h2m3.5s`, `300ms`) into nanoseconds.
pub fn parse_go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest.bytes().take_while(|b| b.is_ascii_digit() || *b == b'.').count();
        if num_len == 0 {
            return None;
        }
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.bytes().take_while(|b| !(b.is_ascii_digit() || *b == b'.')).count();
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += num * unit;
    }
    if total > i64::MAX as f64 {
        return None;
    }
    let n = total.round() as i64;
    Some(if neg { -n } else { n })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_go_duration("30s"), Some(30_000_000_000));
        assert_eq!(parse_go_duration("1m30s"), Some(90_000_000_000));
        assert_eq!(parse_go_duration("1.5h"), Some(5_400_000_000_000));
        assert_eq!(parse_go_duration("0"), Some(0));
        assert_eq!(parse_go_duration("5"), None);
        assert_eq!(parse_go_duration("1x"), None);
    }

    #[test]
    fn flags_are_checked() {
        let f = parse_copy(&[
            "--from=build".into(),
            "--link".into(),
            "--exclude=a".into(),
            "--exclude=b".into(),
        ])
        .unwrap();
        assert_eq!(f.from.as_deref(), Some("build"));
        assert!(f.link);
        assert_eq!(f.exclude, vec!["a", "b"]);
        assert!(matches!(
            parse_copy(&["--bogus=1".into()]),
            Err(ErrorKind::UnknownFlag { .. })
        ));
        assert!(matches!(
            parse_copy(&["--from".into()]),
            Err(ErrorKind::FlagNeedsValue { .. })
        ));
        assert!(matches!(
            parse_copy(&["--link=maybe".into()]),
            Err(ErrorKind::FlagValue { .. })
        ));
        assert!(matches!(
            parse_copy(&["--chown=1".into(), "--chown=2".into()]),
            Err(ErrorKind::DuplicateFlag { .. })
        ));
        let h = parse_healthcheck(&["--interval=5s".into(), "--retries=3".into()]).unwrap();
        assert_eq!((h.interval, h.retries), (5_000_000_000, 3));
        assert!(parse_healthcheck(&["--timeout=1us".into()]).is_err());
    }
}
