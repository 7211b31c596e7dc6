//! Reading a build's inputs: the Dockerfile (a file, the context's own, stdin or
//! text), `<Dockerfile>.dockerignore` or the context's `.dockerignore`.

#![allow(
    clippy::disallowed_methods,
    reason = "every call's error is wrapped with the path in its message (`ctx`, `BuildError::Message`)"
)]

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{bail, Ctx};
use crate::{BuildError, Dockerfile};

type Result<T> = std::result::Result<T, BuildError>;

pub(crate) struct Inputs {
    pub dockerfile_name: String,
    pub dockerfile: String,
    pub context: Option<PathBuf>,
    pub ignore: Vec<String>,
}

pub(crate) fn read_inputs(context: Option<&Path>, file: &Dockerfile) -> Result<Inputs> {
    let context = match context {
        None => None,
        Some(p) => {
            let md = std::fs::metadata(p).ctx(|| format!("build context `{}` does not exist", p.display()))?;
            if !md.is_dir() {
                bail!("build context `{}` is not a directory", p.display());
            }
            Some(p.to_path_buf())
        }
    };
    if context.is_none() {
        if let Dockerfile::Path(f) = file {
            bail!(
                "with `-` as the context the Dockerfile is read from stdin; `-f {}` cannot be used",
                f.display()
            );
        }
    }
    // Read at most one byte past the limit, so a huge file is refused, not loaded.
    let limit = kiln_frontend::syntax::MAX_DOCKERFILE_SIZE;
    let too_large =
        |what: &str| BuildError::Message(format!("{what} is larger than the limit of {limit} bytes (16 MiB)"));
    let (dockerfile_name, dockerfile, df_path) = match file {
        Dockerfile::Text { name, text } => (name.clone(), text.clone(), None),
        Dockerfile::Stdin => {
            let mut s = String::new();
            std::io::stdin()
                .take(limit as u64 + 1)
                .read_to_string(&mut s)
                .ctx(|| "cannot read the Dockerfile from stdin".to_string())?;
            if s.len() > limit {
                return Err(too_large("the Dockerfile on stdin"));
            }
            ("Dockerfile".to_string(), s, None)
        }
        Dockerfile::Default | Dockerfile::Path(_) => {
            let (path, bytes) = match (file, &context) {
                // The default Dockerfile is a file of the (untrusted) context: read inside it.
                (Dockerfile::Path(f), _) => (f.clone(), std::fs::File::open(f).and_then(|f| read_capped(f, limit))),
                (_, Some(c)) => (c.join("Dockerfile"), read_in_root(c, Path::new("Dockerfile"), limit)),
                (_, None) => bail!("with `-` as the context the Dockerfile is read from stdin"),
            };
            let bytes = bytes.ctx(|| format!("cannot read Dockerfile `{}`", path.display()))?;
            if bytes.len() > limit {
                return Err(too_large(&format!("Dockerfile `{}`", path.display())));
            }
            let text = String::from_utf8(bytes)
                .map_err(|_| BuildError::Message(format!("Dockerfile `{}` is not valid UTF-8", path.display())))?;
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "Dockerfile".into());
            (name, text, Some(path))
        }
    };
    // `<Dockerfile>.dockerignore` next to the Dockerfile wins over the context's.
    let mut ignore_text = None;
    if let Some(p) = &df_path {
        let specific = PathBuf::from(format!("{}.dockerignore", p.display()));
        if let (Some(dir), Some(name)) = (specific.parent(), specific.file_name()) {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            ignore_text = read_ignore(dir, Path::new(name))?;
        }
    }
    if ignore_text.is_none() {
        if let Some(c) = &context {
            ignore_text = read_ignore(c, Path::new(".dockerignore"))?;
        }
    }
    let ignore = ignore_text
        .map(|t| kiln_context::dockerignore::parse_ignore_file(&t))
        .unwrap_or_default();
    Ok(Inputs {
        dockerfile_name,
        dockerfile,
        context,
        ignore,
    })
}

/// Reads the file `rel` names below `dir` without leaving `dir`: a symlink resolves
/// inside it (a context's link to a host file reads as missing), a FIFO is refused.
fn read_in_root(dir: &Path, rel: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    read_capped(kiln_snapshotter::RootDir::open(dir)?.open_file_following(rel)?, limit)
}

/// Reads at most one byte past `limit` (the caller refuses a longer result), so a huge
/// file is never loaded whole.
fn read_capped(f: impl Read, limit: usize) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    f.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// The ignore file `rel` below `dir`, if it is there (resolved inside `dir`).
fn read_ignore(dir: &Path, rel: &Path) -> Result<Option<String>> {
    let shown = dir.join(rel);
    let limit = kiln_frontend::syntax::MAX_DOCKERFILE_SIZE;
    match read_in_root(dir, rel, limit) {
        Ok(bytes) if bytes.len() > limit => Err(BuildError::Message(format!(
            "`{}` is larger than the limit of {limit} bytes (16 MiB)",
            shown.display()
        ))),
        Ok(bytes) => String::from_utf8(bytes)
            .map(Some)
            .map_err(|_| BuildError::Message(format!("`{}` is not valid UTF-8", shown.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).ctx(|| format!("cannot read `{}`", shown.display())),
    }
}
