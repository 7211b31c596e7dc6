//! The registry auth flows: `WWW-Authenticate: Bearer realm=…,service=…,scope=…`
//! answered with a token from the realm, or `Basic` with stored credentials.

use std::collections::HashMap;
use std::sync::Mutex;

use kiln_image::Reference;

/// Auth remembers the Authorization header per registry and repository.
#[derive(Debug, Default)]
pub struct Auth {
    headers: Mutex<HashMap<String, String>>,
}

fn key(r: &Reference) -> String {
    r.repository()
}

/// Parses `Bearer realm="…",service="…"` into its scheme and parameters.
fn parse_challenge(c: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = c.trim().split_once(' ').unwrap_or((c.trim(), ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else { break };
        let k = k.trim().trim_start_matches(',').trim().to_lowercase();
        let (v, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (&q[..end], &q[end + 1..]),
                None => (q, ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (&after[..end], &after[end..]),
                None => (after, ""),
            }
        };
        params.insert(k, v.to_string());
        rest = next.trim_start_matches(',').trim();
    }
    (scheme.to_lowercase(), params)
}

impl Auth {
    pub fn header(&self, r: &Reference) -> Option<String> {
        self.headers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key(r))
            .cloned()
    }

    /// Answers a challenge; anonymous unless credentials are configured. `actions` is
    /// the scope asked for when the challenge names none (`pull`, `pull,push`).
    /// Answers `challenge`; a token request must complete within `total` and its
    /// response be at most [`crate::MAX_TOKEN_BYTES`].
    pub fn login(
        &self,
        agent: &ureq::Agent,
        r: &Reference,
        challenge: &str,
        actions: &str,
        total: std::time::Duration,
    ) -> Result<(), String> {
        let (scheme, params) = parse_challenge(challenge);
        let creds = crate::creds::lookup(r.domain())?;
        match scheme.as_str() {
            "basic" => {
                let c = creds.ok_or_else(|| {
                    format!(
                        "unauthorized: `{}` needs credentials (kiln login {})",
                        r.domain(),
                        r.domain()
                    )
                })?;
                self.headers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key(r), crate::creds::basic_header(&c));
                Ok(())
            }
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or("the registry's auth challenge has no realm")?;
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:{actions}", r.path()));
                let mut req = agent.get(realm.as_str()).query("scope", &scope);
                if let Some(s) = params.get("service") {
                    req = req.query("service", s);
                }
                if let Some(c) = &creds {
                    req = req.header("Authorization", crate::creds::basic_header(c));
                }
                let mut resp = req
                    .config()
                    .timeout_per_call(Some(total))
                    .build()
                    .call()
                    .map_err(|e| match e {
                        ureq::Error::Timeout(_) => format!(
                            "token server `{realm}` did not answer within {}",
                            crate::limits::secs(total)
                        ),
                        e => format!("cannot get a token from `{realm}`: {e}"),
                    })?;
                if resp.status().as_u16() != 200 {
                    return Err(format!(
                        "token request to `{realm}` was refused (HTTP {})",
                        resp.status().as_u16()
                    ));
                }
                let body = crate::limits::read_capped(&mut resp.body_mut().as_reader(), crate::MAX_TOKEN_BYTES)
                    .map_err(|e| format!("cannot read the token from `{realm}`: {e}"))?
                    .ok_or_else(|| {
                        format!(
                            "the token response of `{realm}` exceeds {}",
                            crate::limits::human(crate::MAX_TOKEN_BYTES)
                        )
                    })?;
                let v: serde_json::Value =
                    serde_json::from_slice(&body).map_err(|e| format!("bad token response: {e}"))?;
                let token = v["token"]
                    .as_str()
                    .or(v["access_token"].as_str())
                    .ok_or("token response has no token")?;
                self.headers
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key(r), format!("Bearer {token}"));
                Ok(())
            }
            other => Err(format!("unsupported auth scheme `{other}`")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_challenge;

    #[test]
    fn parses_bearer_challenges() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#,
        );
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.example/token");
        assert_eq!(p["service"], "registry.example");
        assert_eq!(p["scope"], "repository:a/b:pull");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#);
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "Registry Realm");
    }
}
