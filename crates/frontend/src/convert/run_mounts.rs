//! Lowering a `RUN --mount` value to the graph's `Mount` (its inputs appended to the
//! step's), as BuildKit's `dispatchRunMounts` does.

use kiln_graph::{CacheSharing, Input, Mount, MountKind};

use crate::error::ErrorKind;
use crate::syntax::Instruction;

use super::mounts::{parse_mount, MountType};
use super::plan::Plan;
use super::state::{normalize_path, StageState};
use super::Converter;

impl Converter<'_> {
    /// Lowers one `RUN --mount` value; inputs it needs are appended to `inputs`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn lower_mount(
        &mut self,
        st: &mut StageState,
        i: &Instruction,
        value: &str,
        from: Option<super::plan::FromSource>,
        done: &[Option<StageState>],
        plan: &Plan,
        inputs: &mut Vec<Input>,
        ssh_index: usize,
    ) -> Result<Mount, ErrorKind> {
        use super::plan::FromSource;
        let spec = parse_mount(value)?;
        let line = i.start_line;
        let mut expand = |conv: &mut Self, v: &Option<String>| -> Result<Option<String>, ErrorKind> {
            v.as_ref().map(|v| conv.expand(st, v, line)).transpose()
        };
        let target = expand(self, &spec.target)?;
        let source = expand(self, &spec.source)?;
        let id = expand(self, &spec.id)?;
        // A relative target is relative to the working directory.
        let absolute = |t: &str| normalize_path(&st.dir, t, false);
        let mut input_of = |conv: &mut Self, from: &Option<FromSource>| -> Result<u32, ErrorKind> {
            let input = conv.input_for_from(st, i, from, done, plan)?;
            inputs.push(input);
            Ok((inputs.len() - 1) as u32)
        };
        let kind = match spec.kind {
            MountType::Bind => MountKind::Bind {
                input: input_of(self, &from)?,
                source: normalize_path("/", source.as_deref().unwrap_or("/"), false),
                readonly: spec.readonly.unwrap_or(true),
            },
            MountType::Cache => {
                // As BuildKit, the default id is the target as written (`path.Clean`),
                // not made absolute: `target=rel` and `target=/w/rel` are two caches.
                let default_id = kiln_context::dockerignore::clean(target.as_deref().unwrap_or_default());
                let seed = match &from {
                    Some(_) => Some((
                        input_of(self, &from)?,
                        normalize_path("/", source.as_deref().unwrap_or("/"), false),
                    )),
                    None => None,
                };
                MountKind::Cache {
                    id: id.clone().unwrap_or(default_id),
                    sharing: match spec.sharing.as_deref() {
                        Some("private") => CacheSharing::Private,
                        Some("locked") => CacheSharing::Locked,
                        _ => CacheSharing::Shared,
                    },
                    readonly: spec.readonly.unwrap_or(false),
                    mode: spec.mode.unwrap_or(0o755),
                    uid: spec.uid.unwrap_or(0),
                    gid: spec.gid.unwrap_or(0),
                    perms: spec.mode.is_some() || spec.uid.is_some() || spec.gid.is_some(),
                    seed,
                }
            }
            MountType::Tmpfs => MountKind::Tmpfs { size: spec.size },
            MountType::Secret => {
                // As BuildKit: `source` names the secret too, and wins over `id`.
                let id = match (source.as_ref().or(id.as_ref()), &target) {
                    (Some(id), _) => id.clone(),
                    (None, Some(t)) => t.rsplit('/').next().unwrap_or_default().to_string(),
                    (None, None) => {
                        return Err(ErrorKind::InvalidMount {
                            value: value.to_string(),
                            reason: "one of target or id is required for a secret".into(),
                        })
                    }
                };
                MountKind::Secret {
                    id,
                    required: spec.required.unwrap_or(false),
                    mode: spec.mode.unwrap_or(0o400),
                    uid: spec.uid.unwrap_or(0),
                    gid: spec.gid.unwrap_or(0),
                    env: spec.env.clone(),
                }
            }
            MountType::Ssh => MountKind::Ssh {
                id: id.clone().unwrap_or_else(|| "default".into()),
                required: spec.required.unwrap_or(false),
                mode: spec.mode.unwrap_or(0o600),
                uid: spec.uid.unwrap_or(0),
                gid: spec.gid.unwrap_or(0),
            },
        };
        let target = match (&kind, &target) {
            (_, Some(t)) => absolute(t),
            // As BuildKit: with `env=` and no target the secret is only the variable.
            (MountKind::Secret { env: Some(_), .. }, None) => String::new(),
            (MountKind::Secret { id, .. }, None) => {
                format!(
                    "/run/secrets/{}",
                    id.trim_end_matches('/').rsplit('/').next().unwrap_or_default()
                )
            }
            // BuildKit numbers the step's SSH mounts from 0.
            (_, None) => format!("/run/buildkit/ssh_agent.{ssh_index}"),
        };
        Ok(Mount { target, kind })
    }
}
