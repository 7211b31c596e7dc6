//! `RUN --mount` values: BuildKit's CSV grammar (`type=cache,target=/root/.cache,id=x`),
//! split by [`crate::csv`]. Their lowering is `run_mounts.rs`.

use crate::error::ErrorKind;

/// MountType is `type=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountType {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

/// MountSpec is one parsed `--mount` value, before lowering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub kind: MountType,
    pub target: Option<String>,
    pub source: Option<String>,
    pub from: Option<String>,
    pub readonly: Option<bool>,
    pub id: Option<String>,
    pub sharing: Option<String>,
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub required: Option<bool>,
    pub env: Option<String>,
}

fn parse_bool(key: &str, v: Option<&str>) -> Result<bool, String> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(format!("invalid value for {key}: {other}")),
    }
}

/// `64m`, `1g`, `512k`, `1024` (bytes), as Docker's RAMInBytes.
fn parse_size(v: &str) -> Result<u64, String> {
    let t = v.trim().to_ascii_lowercase();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("invalid size {v}"))?;
    let mult: u64 = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("invalid size {v}")),
    };
    Ok(n * mult)
}

/// Parses one `--mount` value.
pub fn parse_mount(value: &str) -> Result<MountSpec, ErrorKind> {
    let bad = |reason: String| ErrorKind::InvalidMount {
        value: value.to_string(),
        reason,
    };
    let fields = crate::csv::fields(value).map_err(|e| bad(e.to_string()))?;
    let mut m = MountSpec {
        kind: MountType::Bind,
        target: None,
        source: None,
        from: None,
        readonly: None,
        id: None,
        sharing: None,
        mode: None,
        uid: None,
        gid: None,
        size: None,
        required: None,
        env: None,
    };
    // `type` decides the defaults, wherever it appears.
    for f in &fields {
        if let Some(t) = f.trim().strip_prefix("type=") {
            m.kind = match t.to_ascii_lowercase().as_str() {
                "bind" => MountType::Bind,
                "cache" => MountType::Cache,
                "tmpfs" => MountType::Tmpfs,
                "secret" => MountType::Secret,
                "ssh" => MountType::Ssh,
                other => return Err(bad(format!("unsupported mount type \"{other}\""))),
            };
        }
    }
    for f in fields.iter().map(|f| f.trim()).filter(|f| !f.is_empty()) {
        let (key, val) = match f.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v)),
            None => (f.to_ascii_lowercase(), None),
        };
        let need = |v: Option<&str>| {
            v.map(str::to_string)
                .ok_or_else(|| bad(format!("invalid field '{f}' must be a key=value pair")))
        };
        let num = |v: Option<&str>| -> Result<u32, ErrorKind> {
            let v = need(v)?;
            v.parse().map_err(|_| bad(format!("invalid value for {key}: {v}")))
        };
        match key.as_str() {
            "type" => {}
            "target" | "dst" | "destination" => m.target = Some(need(val)?),
            "source" | "src" => m.source = Some(need(val)?),
            // An empty `from=` is no `from` (BuildKit's `mount.From == ""`): the build context.
            "from" => m.from = Some(need(val)?).filter(|f| !f.is_empty()),
            "readonly" | "ro" => m.readonly = Some(parse_bool(&key, val).map_err(bad)?),
            "readwrite" | "rw" => m.readonly = Some(!parse_bool(&key, val).map_err(bad)?),
            "id" => m.id = Some(need(val)?),
            "sharing" => {
                let v = need(val)?.to_ascii_lowercase();
                if !matches!(v.as_str(), "shared" | "private" | "locked") {
                    return Err(bad(format!("unsupported sharing value \"{v}\"")));
                }
                m.sharing = Some(v);
            }
            "mode" => {
                let v = need(val)?;
                m.mode = Some(u32::from_str_radix(&v, 8).map_err(|_| bad(format!("invalid value {v} for mode")))?);
            }
            "uid" => m.uid = Some(num(val)?),
            "gid" => m.gid = Some(num(val)?),
            "size" => m.size = Some(parse_size(&need(val)?).map_err(bad)?),
            "required" => m.required = Some(parse_bool(&key, val).map_err(bad)?),
            "env" => m.env = Some(need(val)?),
            _ => return Err(bad(format!("unexpected key '{key}' in '{f}'"))),
        }
    }
    let is = |t: MountType| m.kind == t;
    if m.source.is_some() && is(MountType::Tmpfs) {
        return Err(bad("source is not allowed for tmpfs mounts".into()));
    }
    if m.from.is_some() && !(is(MountType::Bind) || is(MountType::Cache)) {
        return Err(bad("from is only allowed for bind and cache mounts".into()));
    }
    if m.sharing.is_some() && !is(MountType::Cache) {
        return Err(bad("sharing is only allowed for cache mounts".into()));
    }
    if m.size.is_some() && !is(MountType::Tmpfs) {
        return Err(bad("size is only allowed for tmpfs mounts".into()));
    }
    if m.target.is_none() && !(is(MountType::Secret) || is(MountType::Ssh)) {
        return Err(bad("mount target must be specified".into()));
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buildkit_mount_values() {
        let m = parse_mount("type=cache,target=/root/.cache/pip,id=pip,sharing=locked,mode=0700,uid=1000").unwrap();
        assert_eq!(m.kind, MountType::Cache);
        assert_eq!(m.target.as_deref(), Some("/root/.cache/pip"));
        assert_eq!(
            (m.id.as_deref(), m.sharing.as_deref(), m.mode, m.uid),
            (Some("pip"), Some("locked"), Some(0o700), Some(1000))
        );
        let m = parse_mount("target=/src,from=build,source=/out,rw").unwrap();
        assert_eq!((m.kind, m.readonly), (MountType::Bind, Some(false)));
        assert_eq!(m.from.as_deref(), Some("build"));
        assert_eq!(parse_mount("target=/c,from=").unwrap().from, None);
        let m = parse_mount("type=tmpfs,dst=/tmp,size=64m").unwrap();
        assert_eq!(m.size, Some(64 << 20));
        let m = parse_mount("type=secret,id=aws,required").unwrap();
        assert_eq!((m.required, m.target), (Some(true), None));
        let m = parse_mount("\"type=bind\",\"target=/a,b\"").unwrap();
        assert_eq!(m.target.as_deref(), Some("/a,b"));
        for (bad, why) in [
            ("type=nfs,target=/x", "unsupported mount type \"nfs\""),
            ("target=/x,color=red", "unexpected key 'color' in 'color=red'"),
            ("type=bind", "mount target must be specified"),
            ("type=cache,target=/x,sharing=sometimes", "unsupported sharing value"),
            ("type=tmpfs,target=/x,from=a", "from is only allowed"),
            ("type=cache,target=/x,mode=9", "invalid value 9 for mode"),
            ("target=\"/x", "column 8: bare \" in non-quoted field"),
            ("\"target=/x", "column 11: extraneous or missing \" in quoted field"),
        ] {
            let e = parse_mount(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
