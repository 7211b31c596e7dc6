//! `--secret` and `--ssh` as buildx takes them, resolved as BuildKit's client-side
//! secret store and SSH agent provider resolve them.
//!
//! `--secret id=ID[,src=PATH|source=PATH][,env=VAR][,type=file|env]`: with neither `src`
//! nor `env`, the environment variable named ID if it is set, else the file ID;
//! `type=env` turns `src` into the variable's name. Files are read when the build
//! starts and may be at most 500 KiB (BuildKit's limit).
//!
//! `--ssh default|ID[=SOCKET]`: no socket means `$SSH_AUTH_SOCK`. buildx also takes
//! private key files and serves them from an agent of its own; kiln forwards agent
//! sockets only and says so when given a key.

#![allow(
    clippy::disallowed_methods,
    reason = "every call's error is wrapped with the path in its message (`ctx`, `BuildError::Message`)"
)]

use std::path::{Path, PathBuf};

use kiln_worker::BuildSecrets;

use crate::error::bail;
use crate::BuildError;

type Result<T> = std::result::Result<T, BuildError>;

/// BuildKit's `MaxSecretSize`.
const MAX_SECRET_SIZE: u64 = 500 * 1024;

/// One parsed `--secret`.
#[derive(Debug, Default, PartialEq, Eq)]
struct SecretSpec {
    id: String,
    src: String,
    env: String,
}

fn parse_secret(spec: &str) -> Result<SecretSpec> {
    let mut s = SecretSpec::default();
    let mut typ = None;
    let fields =
        kiln_frontend::csv::fields(spec).map_err(|e| BuildError::Message(format!("invalid --secret `{spec}`: {e}")))?;
    for field in fields {
        let Some((key, value)) = field.split_once('=') else {
            bail!("invalid --secret `{spec}`: field `{field}` must be a key=value pair");
        };
        match key.to_ascii_lowercase().as_str() {
            "type" => match value {
                "file" | "env" => typ = Some(value.to_string()),
                _ => bail!("invalid --secret `{spec}`: unsupported secret type `{value}` (use file or env)"),
            },
            "id" => s.id = value.to_string(),
            "source" | "src" => s.src = value.to_string(),
            "env" => s.env = value.to_string(),
            k => bail!("invalid --secret `{spec}`: unexpected key `{k}` (use id, src, env, type)"),
        }
    }
    if typ.as_deref() == Some("env") && s.env.is_empty() {
        s.env = std::mem::take(&mut s.src);
    }
    if s.id.is_empty() {
        bail!("invalid --secret `{spec}`: the secret has no id (id=ID)");
    }
    Ok(s)
}

/// Reads a `--secret` file, refusing what BuildKit refuses.
fn read_secret_file(spec: &str, path: &Path) -> Result<Vec<u8>> {
    let md = std::fs::metadata(path).map_err(|e| {
        BuildError::Message(format!(
            "--secret `{spec}`: cannot read the file `{}`: {e}",
            path.display()
        ))
    })?;
    if !md.is_file() {
        bail!("--secret `{spec}`: `{}` is not a file", path.display());
    }
    if md.len() > MAX_SECRET_SIZE {
        bail!(
            "--secret `{spec}`: `{}` is {} bytes; a secret may be at most 500 KiB",
            path.display(),
            md.len()
        );
    }
    std::fs::read(path).map_err(|e| {
        BuildError::Message(format!(
            "--secret `{spec}`: cannot read the file `{}`: {e}",
            path.display()
        ))
    })
}

/// The value of one `--secret`.
fn secret_value(spec: &str, s: &SecretSpec, warn: &dyn Fn(String)) -> Result<Vec<u8>> {
    let (mut env, mut src) = (s.env.clone(), s.src.clone());
    if env.is_empty() && src.is_empty() {
        if std::env::var_os(&s.id).is_some() {
            env = s.id.clone();
        } else {
            src = s.id.clone();
        }
    }
    // As BuildKit: a variable, when named, wins over a file.
    if !env.is_empty() {
        return match std::env::var_os(&env) {
            Some(v) => Ok(std::os::unix::ffi::OsStringExt::into_vec(v)),
            None => {
                warn(format!(
                    "--secret `{spec}`: environment variable `{env}` is not set; the secret is empty"
                ));
                Ok(Vec::new())
            }
        };
    }
    read_secret_file(spec, Path::new(&src))
}

/// One parsed `--ssh`: the id and its socket.
fn parse_ssh(spec: &str) -> Result<(String, PathBuf)> {
    let (id, paths) = match spec.split_once('=') {
        Some((id, p)) => (id, p.split(',').collect::<Vec<_>>()),
        None => (spec, Vec::new()),
    };
    let id = if id.is_empty() { "default" } else { id };
    let paths: Vec<PathBuf> = match paths.as_slice() {
        [] | [""] => match std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()) {
            Some(s) => vec![PathBuf::from(s)],
            None => bail!("invalid --ssh `{spec}`: no socket given and SSH_AUTH_SOCK is not set (start ssh-agent, or give --ssh {id}=SOCKET)"),
        },
        p => p.iter().map(PathBuf::from).collect(),
    };
    let mut socket = None;
    for p in paths {
        if socket.is_some() {
            bail!("invalid --ssh `{spec}`: only a single socket is allowed");
        }
        let md = std::fs::metadata(&p)
            .map_err(|e| BuildError::Message(format!("invalid --ssh `{spec}`: `{}`: {e}", p.display())))?;
        if !std::os::unix::fs::FileTypeExt::is_socket(&md.file_type()) {
            bail!(
                "invalid --ssh `{spec}`: `{}` is not a socket; kiln forwards SSH agent sockets only, not key files \
                 (load the key into an agent: `eval $(ssh-agent); ssh-add {}`, then --ssh {id})",
                p.display(),
                p.display()
            );
        }
        socket = Some(p);
    }
    match socket {
        Some(s) => Ok((id.to_string(), s)),
        None => bail!("invalid --ssh `{spec}`: no socket"),
    }
}

/// Resolves every `--secret` and `--ssh` of a build into the request's secrets;
/// `warn` hears what is not as asked (an unset variable: an empty secret).
pub fn resolve_secrets(secrets: &[String], ssh: &[String], warn: &dyn Fn(String)) -> Result<BuildSecrets> {
    let mut out = BuildSecrets::default();
    for spec in secrets {
        let s = parse_secret(spec)?;
        let value = secret_value(spec, &s, warn)?;
        out.add_secret(&s.id, value);
    }
    for spec in ssh {
        let (id, socket) = parse_ssh(spec)?;
        if out.has_ssh(&id) {
            bail!("invalid --ssh `{spec}`: SSH agent `{id}` is given twice");
        }
        out.add_ssh(&id, socket);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_specs_as_buildx_parses_them() {
        let s = |id: &str, src: &str, env: &str| SecretSpec {
            id: id.into(),
            src: src.into(),
            env: env.into(),
        };
        assert_eq!(parse_secret("id=a").unwrap(), s("a", "", ""));
        assert_eq!(parse_secret("id=a,src=/f").unwrap(), s("a", "/f", ""));
        assert_eq!(parse_secret("id=a,source=/f").unwrap(), s("a", "/f", ""));
        assert_eq!(parse_secret("ID=a,ENV=TOK").unwrap(), s("a", "", "TOK"));
        assert_eq!(parse_secret("id=a,type=env,src=TOK").unwrap(), s("a", "", "TOK"));
        assert_eq!(parse_secret("type=file,id=a,src=/f").unwrap(), s("a", "/f", ""));
        assert_eq!(parse_secret("\"id=a,b\",src=/f").unwrap(), s("a,b", "/f", ""));
        for (bad, says) in [
            ("src=/f", "has no id"),
            ("id=a,type=vault", "unsupported secret type `vault`"),
            ("id=a,dst=/x", "unexpected key `dst`"),
            ("id=a,src", "field `src` must be a key=value pair"),
            ("id=\"a", "column 4: bare \" in non-quoted field"),
        ] {
            let e = parse_secret(bad).unwrap_err().to_string();
            assert!(e.contains("--secret") && e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn secret_values_come_from_files_and_the_environment() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("tok");
        std::fs::write(&f, "from file").unwrap();
        let spec = format!("id=t,src={}", f.display());
        assert_eq!(
            secret_value(&spec, &parse_secret(&spec).unwrap(), &|_| {}).unwrap(),
            b"from file"
        );
        // PATH is always set: a bare id that names a variable reads it.
        let path = std::env::var("PATH").unwrap();
        assert_eq!(
            secret_value("id=PATH", &parse_secret("id=PATH").unwrap(), &|_| {}).unwrap(),
            path.as_bytes()
        );
        // env wins over src, as in BuildKit's store.
        let spec = format!("id=t,src={},env=PATH", f.display());
        assert_eq!(
            secret_value(&spec, &parse_secret(&spec).unwrap(), &|_| {}).unwrap(),
            path.as_bytes()
        );
        let missing = d.path().join("nope");
        let spec = format!("id=t,src={}", missing.display());
        let e = secret_value(&spec, &parse_secret(&spec).unwrap(), &|_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("--secret") && e.contains("nope"), "{e}");
        std::fs::write(&f, vec![b'x'; 500 * 1024 + 1]).unwrap();
        let spec = format!("id=t,src={}", f.display());
        let e = secret_value(&spec, &parse_secret(&spec).unwrap(), &|_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("at most 500 KiB"), "{e}");
    }

    #[test]
    fn ssh_specs_take_sockets_only() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("agent.sock");
        let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let (id, p) = parse_ssh(&format!("default={}", sock.display())).unwrap();
        assert_eq!((id.as_str(), p.as_path()), ("default", sock.as_path()));
        let (id, _) = parse_ssh(&format!("gh={}", sock.display())).unwrap();
        assert_eq!(id, "gh");
        let key = d.path().join("id_ed25519");
        std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\n").unwrap();
        let e = parse_ssh(&format!("default={}", key.display()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a socket") && e.contains("id_ed25519"), "{e}");
        let e = parse_ssh(&format!("default={},{}", sock.display(), sock.display()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("only a single socket"), "{e}");
        let e = parse_ssh("default=/nonexistent/agent").unwrap_err().to_string();
        assert!(e.contains("--ssh") && e.contains("/nonexistent/agent"), "{e}");
        let e = resolve_secrets(
            &[],
            &[format!("default={}", sock.display()), format!("={}", sock.display())],
            &|_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("given twice"), "{e}");
    }
}
