//! Registry credentials as docker and podman keep them: `$REGISTRY_AUTH_FILE`, then
//! `$DOCKER_CONFIG/config.json` (or `~/.docker/config.json`); `auths` entries
//! (base64 `user:password`), `credHelpers` per host and `credsStore`, whose
//! `docker-credential-<name> get` helpers are run with the host on stdin.

#![allow(
    clippy::disallowed_methods,
    reason = "every call's error names the path in its message, or is dropped (an optional file)"
)]

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        write!(
            f,
            "Credentials {{ username: {:?}, password: <redacted> }}",
            self.username
        )
    }
}

/// The docker config file kiln reads and `kiln login` writes.
pub fn docker_config_path() -> PathBuf {
    match std::env::var_os("DOCKER_CONFIG").filter(|v| !v.is_empty()) {
        Some(d) => PathBuf::from(d).join("config.json"),
        None => PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".docker/config.json"),
    }
}

fn files() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(p) = std::env::var_os("REGISTRY_AUTH_FILE").filter(|v| !v.is_empty()) {
        v.push(PathBuf::from(p));
    }
    v.push(docker_config_path());
    v
}

/// The keys an `auths` entry for `host` may have.
fn keys(host: &str) -> Vec<String> {
    let mut k = vec![
        host.to_string(),
        format!("https://{host}"),
        format!("http://{host}"),
        format!("https://{host}/v1/"),
    ];
    if host == "docker.io" || host == "registry-1.docker.io" {
        k.push("https://index.docker.io/v1/".to_string());
        k.push("index.docker.io".to_string());
    }
    k
}

/// Looks up credentials for `host`; `Ok(None)` when none are configured.
pub fn lookup(host: &str) -> Result<Option<Credentials>, String> {
    for path in files() {
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("cannot parse `{}`: {e}", path.display()))?;
        if let Some(helper) = v["credHelpers"][host].as_str() {
            return helper_get(helper, host);
        }
        for k in keys(host) {
            if let Some(auth) = v["auths"][&k]["auth"].as_str() {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(auth.trim())
                    .map_err(|e| format!("`{}`: bad auth for `{k}`: {e}", path.display()))?;
                let s =
                    String::from_utf8(raw).map_err(|_| format!("`{}`: auth for `{k}` is not UTF-8", path.display()))?;
                let (u, p) = s
                    .split_once(':')
                    .ok_or_else(|| format!("`{}`: auth for `{k}` is not user:password", path.display()))?;
                return Ok(Some(Credentials {
                    username: u.to_string(),
                    password: p.to_string(),
                }));
            }
        }
        if let Some(store) = v["credsStore"].as_str() {
            return helper_get(store, host);
        }
    }
    Ok(None)
}

fn helper_get(helper: &str, host: &str) -> Result<Option<Credentials>, String> {
    let prog = format!("docker-credential-{helper}");
    let mut child = Command::new(&prog)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run credential helper `{prog}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(host.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("credential helper `{prog}`: {e}"))?;
    if !out.status.success() {
        // Helpers say "credentials not found in native keychain" when they have none.
        return Ok(None);
    }
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).map_err(|e| format!("credential helper `{prog}` answered badly: {e}"))?;
    match (v["Username"].as_str(), v["Secret"].as_str()) {
        (Some(u), Some(s)) => Ok(Some(Credentials {
            username: u.to_string(),
            password: s.to_string(),
        })),
        _ => Ok(None),
    }
}

/// Writes (or removes, with `None`) the `auths` entry for `host` in the docker config.
pub fn store(host: &str, creds: Option<&Credentials>) -> Result<PathBuf, String> {
    let path = docker_config_path();
    let mut v: serde_json::Value = match std::fs::read_to_string(&path) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| format!("cannot parse `{}`: {e}", path.display()))?,
        Err(_) => serde_json::json!({}),
    };
    if !v.is_object() {
        return Err(format!("`{}` is not a JSON object", path.display()));
    }
    if !v["auths"].is_object() {
        v["auths"] = serde_json::json!({});
    }
    let auths = v["auths"].as_object_mut().expect("object");
    match creds {
        Some(c) => {
            let enc = base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
            auths.insert(host.to_string(), serde_json::json!({ "auth": enc }));
        }
        None => {
            if auths.remove(host).is_none() {
                return Err(format!("not logged in to `{host}`"));
            }
        }
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(&v).expect("serialises");
    {
        let mut f = std::fs::File::create(&tmp).map_err(|e| format!("cannot write `{}`: {e}", tmp.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
        }
        f.write_all(&bytes)
            .map_err(|e| format!("cannot write `{}`: {e}", tmp.display()))?;
    }
    std::fs::rename(&tmp, &path).map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    Ok(path)
}

/// `Basic base64(user:password)`.
pub fn basic_header(c: &Credentials) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
    )
}
