//! Outputs of a build, and parsing `-o/--output` the way buildx does: `type=…,dest=…,name=…`, CSV quoting,
//! `-o DIR` as a local export and `-o -` as a tarball on stdout.

use std::path::PathBuf;

use kiln_image::Reference;

use crate::error::{bail, Ctx};
use crate::BuildError;

type Result<T> = std::result::Result<T, BuildError>;

/// LayerOpts is how an image output stores its layers (`compression=`,
/// `compression-level=`, `force-compression=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LayerOpts {
    /// None: as built (gzip, base layers as pulled).
    pub compression: Option<kiln_snapshotter::Compression>,
    /// Convert base image layers too.
    pub force: bool,
}

/// Output is one export of the build result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The local image store, and with `push` the registries the names point at.
    Image {
        names: Vec<Reference>,
        push: bool,
        layers: LayerOpts,
    },
    /// OCI image layout: a tarball (`tar=true`, default) or a directory.
    Oci {
        dest: Dest,
        names: Vec<Reference>,
        tar: bool,
        layers: LayerOpts,
    },
    /// docker-archive (loadable by `docker load`), or an OCI layout dir with `tar=false`.
    Docker {
        dest: Dest,
        names: Vec<Reference>,
        tar: bool,
        layers: LayerOpts,
    },
    /// docker-archive streamed into the Docker Engine at `$DOCKER_HOST` (`--load`,
    /// `type=docker` without `dest=`).
    Load { names: Vec<Reference>, layers: LayerOpts },
    /// The root filesystem as a directory.
    Local { dest: PathBuf },
    /// The root filesystem as a tarball.
    Tar { dest: Dest },
}

/// Dest is a file path or standard output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dest {
    Stdout,
    Path(PathBuf),
}

fn parse_bool(key: &str, v: &str, spec: &str) -> Result<bool> {
    match v {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => bail!("invalid output `{spec}`: `{key}` must be true or false, not `{v}`"),
    }
}

/// Parses one `--output` value; `tags` (from `-t`) name images when `name=` is absent.
pub fn parse(spec: &str, tags: &[Reference]) -> Result<Output> {
    if !spec.contains('=') {
        return Ok(if spec == "-" {
            Output::Tar { dest: Dest::Stdout }
        } else {
            Output::Local {
                dest: PathBuf::from(spec),
            }
        });
    }
    let mut kind = None;
    let mut dest = None;
    let mut names: Option<Vec<Reference>> = None;
    let mut tar = true;
    let mut push = false;
    let mut compression: Option<String> = None;
    let mut level: Option<i32> = None;
    let mut force = false;
    let fields =
        kiln_frontend::csv::fields(spec).map_err(|e| BuildError::Message(format!("invalid output `{spec}`: {e}")))?;
    for field in fields {
        let (k, v) = field
            .split_once('=')
            .ok_or_else(|| BuildError::Message(format!("invalid output `{spec}`: `{field}` is not key=value")))?;
        match k.trim() {
            "type" => kind = Some(v.to_string()),
            "dest" => dest = Some(v.to_string()),
            "name" => {
                let mut list = Vec::new();
                for n in v.split(',').filter(|n| !n.is_empty()) {
                    list.push(Reference::parse(n).ctx(|| format!("invalid output `{spec}`"))?);
                }
                names = Some(list);
            }
            "tar" => tar = parse_bool("tar", v, spec)?,
            "push" => push = parse_bool("push", v, spec)?,
            "compression" => compression = Some(v.to_string()),
            "compression-level" => {
                level = Some(v.parse().map_err(|_| {
                    BuildError::Message(format!(
                        "invalid output `{spec}`: compression-level `{v}` is not a number"
                    ))
                })?)
            }
            "force-compression" => force = parse_bool("force-compression", v, spec)?,
            // Accepted for compatibility: kiln always writes OCI media types, and with
            // SOURCE_DATE_EPOCH always clamps the new layers' times.
            "oci-mediatypes" | "rewrite-timestamp" => {}
            other => bail!("invalid output `{spec}`: unknown key `{other}`"),
        }
    }
    let names = names.unwrap_or_else(|| tags.to_vec());
    let layers = LayerOpts {
        compression: match &compression {
            Some(c) => Some(
                kiln_snapshotter::Compression::parse(c, level)
                    .map_err(|e| BuildError::Message(format!("invalid output `{spec}`: {e}")))?,
            ),
            None if level.is_some() => Some(
                kiln_snapshotter::Compression::parse("gzip", level)
                    .map_err(|e| BuildError::Message(format!("invalid output `{spec}`: {e}")))?,
            ),
            None => None,
        },
        force,
    };
    let kind = kind.ok_or_else(|| BuildError::Message(format!("invalid output `{spec}`: missing `type=`")))?;
    let need_dest = |dest: Option<String>| -> Result<Dest> {
        match dest.as_deref() {
            None | Some("") => bail!("invalid output `{spec}`: type `{kind}` needs `dest=`"),
            Some("-") => Ok(Dest::Stdout),
            Some(p) => Ok(Dest::Path(PathBuf::from(p))),
        }
    };
    Ok(match kind.as_str() {
        "image" => Output::Image { names, push, layers },
        // As buildx: `type=registry` is `type=image,push=true`.
        "registry" => Output::Image {
            names,
            push: true,
            layers,
        },
        "oci" => Output::Oci {
            dest: need_dest(dest)?,
            names,
            tar,
            layers,
        },
        // As buildx: no destination loads the image into the docker daemon.
        "docker" if tar && dest.as_deref().is_none_or(str::is_empty) => Output::Load { names, layers },
        "docker" => Output::Docker {
            dest: need_dest(dest)?,
            names,
            tar,
            layers,
        },
        "tar" => Output::Tar { dest: need_dest(dest)? },
        "local" => match need_dest(dest)? {
            Dest::Path(p) => Output::Local { dest: p },
            Dest::Stdout => bail!("invalid output `{spec}`: type `local` cannot write to stdout; use type=tar"),
        },
        other => bail!(
            "invalid output `{spec}`: unknown type `{other}` (expected image, registry, oci, docker, local or tar)"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildx_forms() {
        let tags = vec![Reference::parse("app:1").unwrap()];
        assert_eq!(parse("out", &tags).unwrap(), Output::Local { dest: "out".into() });
        assert_eq!(parse("-", &tags).unwrap(), Output::Tar { dest: Dest::Stdout });
        assert_eq!(
            parse("type=oci,dest=a.tar", &tags).unwrap(),
            Output::Oci {
                dest: Dest::Path("a.tar".into()),
                names: tags.clone(),
                tar: true,
                layers: LayerOpts::default(),
            }
        );
        let o = parse("type=docker,dest=-,\"name=x:1,y:2\"", &tags).unwrap();
        let Output::Docker { names, dest, .. } = o else {
            panic!()
        };
        assert_eq!(dest, Dest::Stdout);
        assert_eq!(names.len(), 2);
        assert!(parse("type=oci", &tags)
            .unwrap_err()
            .to_string()
            .contains("needs `dest=`"));
        assert_eq!(
            parse("type=docker", &tags).unwrap(),
            Output::Load {
                names: tags.clone(),
                layers: LayerOpts::default()
            }
        );
        assert!(parse("type=docker,tar=false", &tags)
            .unwrap_err()
            .to_string()
            .contains("needs `dest=`"));
        assert!(parse("type=bogus,dest=x", &tags)
            .unwrap_err()
            .to_string()
            .contains("unknown type"));
        let o = parse(
            "type=image,compression=zstd,compression-level=5,force-compression=true",
            &tags,
        )
        .unwrap();
        let Output::Image { layers, .. } = o else { panic!() };
        assert_eq!(layers.compression, Some(kiln_snapshotter::Compression::Zstd(5)));
        assert!(layers.force);
        assert!(parse("type=oci,dest=x,compression=lz4", &tags)
            .unwrap_err()
            .to_string()
            .contains("unknown compression `lz4`"));
        assert!(parse("type=oci,dest=x,frob=1", &tags)
            .unwrap_err()
            .to_string()
            .contains("unknown key"));
    }
}
