//! Writing the built image to the outputs (`-o`): the local store (and registries
//! with push=true), archives, layout directories, the root filesystem; and the
//! `--iidfile` and `--metadata-file` files.

use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_cache::KilnRoot;
use kiln_exporter::{ArchiveImage, BuiltImage};
use kiln_image::Reference;
use kiln_worker::Worker;

use crate::error::{bail, Ctx};
use crate::outputs::{Dest, LayerOpts, Output};
use crate::{BuildError, BuildEvent, BuildProgress};

type Result<T> = std::result::Result<T, BuildError>;

fn archive_image(built: &BuiltImage, names: &[Reference]) -> ArchiveImage {
    ArchiveImage {
        manifest: built.manifest.clone(),
        config: built.config.clone(),
        layers: built.layers.iter().map(|l| l.blob.clone()).collect(),
        names: names.to_vec(),
        extra: Vec::new(),
    }
}

/// Pushes `top` (an image manifest, or an index: `what` says which for the progress
/// lines) under each of `names`; the progress lines.
pub(crate) fn push_names(
    progress: &dyn BuildProgress,
    registry: &kiln_registry::Client,
    store: &kiln_cache::ImageStore,
    content: &kiln_cache::ContentStore,
    top: &kiln_image::Descriptor,
    names: &[Reference],
    what: &str,
) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    for n in names {
        let report = crate::push::push_image(registry, store, content, top, n, &|line| {
            progress.event(BuildEvent::Push {
                reference: n.clone(),
                line,
            })
        })?;
        lines.push(format!(
            "pushing layers {} uploaded, {} mounted, {} already there done",
            report.uploaded, report.mounted, report.existed
        ));
        lines.push(format!("pushing {what} for {n}@{} done", top.digest));
    }
    Ok(lines)
}

/// Streams a docker-archive of `img` into the docker daemon at `$DOCKER_HOST`
/// (`--load`); the progress lines.
pub(crate) fn load_into_docker(content: &kiln_cache::ContentStore, img: &[ArchiveImage]) -> Result<Vec<String>> {
    let host = crate::load::parse_docker_host(std::env::var("DOCKER_HOST").ok().as_deref())?;
    let mut lines = vec!["sending tarball done".to_string()];
    lines.extend(crate::load::load(&host, |w| {
        kiln_exporter::write_docker_archive(w, content, img).map_err(BuildError::other)?;
        Ok(())
    })?);
    lines.push(format!("importing to docker at {host} done"));
    Ok(lines)
}

/// Writes `img` as `-o type=oci|docker` asks: a docker or OCI archive (`tar`) to `dest`,
/// or an OCI layout directory.
pub(crate) fn write_archive(
    content: &kiln_cache::ContentStore,
    img: &[ArchiveImage],
    dest: &Dest,
    tar: bool,
    docker: bool,
) -> Result<()> {
    match (tar, dest) {
        (true, _) => write_dest(dest, "the image archive", |w| {
            if docker {
                kiln_exporter::write_docker_archive(w, content, img).map_err(BuildError::other)?;
            } else {
                kiln_exporter::write_oci_archive(w, content, img).map_err(BuildError::other)?;
            }
            Ok(())
        }),
        (false, Dest::Path(p)) => kiln_exporter::write_oci_layout(p, content, img).map_err(BuildError::other),
        (false, Dest::Stdout) => bail!("an OCI layout directory (tar=false) cannot be written to stdout"),
    }
}

impl crate::Built {
    /// Writes the image id to `iidfile` and the metadata JSON to `metadata_file`
    /// (atomically, as [`write_dest`]), those that are given, in that order.
    #[allow(clippy::disallowed_methods, reason = "the error names the path (`ctx`)")]
    pub fn write_files(&self, iidfile: Option<&Path>, metadata_file: Option<&Path>) -> Result<()> {
        if let Some(path) = iidfile {
            std::fs::write(path, self.id().to_string())
                .ctx(|| format!("cannot write --iidfile `{}`", path.display()))?;
        }
        if let Some(path) = metadata_file {
            write_dest(&Dest::Path(path.to_path_buf()), "--metadata-file", |w| {
                serde_json::to_writer_pretty(&mut *w, &self.metadata).map_err(BuildError::other)
            })?;
        }
        Ok(())
    }
}

/// The attestations one output attaches, and the platform of the image.
pub struct AttestFor<'a> {
    pub predicates: &'a crate::attest::Predicates,
    pub platform: &'a kiln_image::Platform,
    /// SOURCE_DATE_EPOCH: the modification time of attestation files.
    pub epoch: Option<i64>,
}

/// Writes a file destination atomically: into a temp file beside it, renamed when
/// complete, so a failed export leaves nothing behind. The file is created `0666` less
/// the process umask (0644 under the usual 022), as `docker save` and buildx write
/// theirs; a temp file's own default would be 0600.
pub fn write_dest(dest: &Dest, what: &str, f: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    match dest {
        Dest::Stdout => {
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            f(&mut lock)?;
            lock.flush().ctx(|| "cannot write to stdout".to_string())?;
            Ok(())
        }
        Dest::Path(p) => {
            let dir = match p.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if p.is_dir() {
                bail!("cannot write {what} to `{}`: it is a directory", p.display());
            }
            let mut tmp = tempfile::Builder::new()
                .prefix(".kiln-")
                .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o666))
                .tempfile_in(&dir)
                .ctx(|| format!("cannot write {what} to `{}`", p.display()))?;
            {
                let mut w = std::io::BufWriter::new(kiln_cache::WriteBehind::new(tmp.as_file_mut()));
                f(&mut w)?;
                w.flush().ctx(|| format!("cannot write {what} to `{}`", p.display()))?;
            }
            tmp.as_file()
                .sync_all()
                .ctx(|| format!("cannot write {what} to `{}`", p.display()))?;
            tmp.persist(p)
                .map_err(|e| e.error)
                .ctx(|| format!("cannot write {what} to `{}`", p.display()))?;
            Ok(())
        }
    }
}

/// The names the image outputs give the image, each once, in order.
pub(crate) fn image_names(outputs: &[Output]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for o in outputs {
        if let Output::Image { names: n, .. }
        | Output::Oci { names: n, .. }
        | Output::Docker { names: n, .. }
        | Output::Load { names: n, .. } = o
        {
            for r in n {
                if !names.contains(&r.to_string()) {
                    names.push(r.to_string());
                }
            }
        }
    }
    names
}

/// The `--metadata-file` JSON, with the keys buildx writes; `index`: the image index
/// that holds the image and its attestations, which buildx reports as the image.
pub fn metadata(built: &BuiltImage, index: Option<&kiln_image::Descriptor>, outputs: &[Output]) -> serde_json::Value {
    let names = image_names(outputs);
    let top = index.unwrap_or(&built.manifest);
    let mut v = serde_json::json!({
        "containerimage.config.digest": built.config.digest,
        "containerimage.descriptor": {
            "mediaType": top.media_type,
            "digest": top.digest,
            "size": top.size,
        },
        "containerimage.digest": top.digest,
    });
    if !names.is_empty() {
        v["image.name"] = serde_json::Value::String(names.join(","));
    }
    v
}

/// `built` with its layers in the compression the output asks for (gzip when it says
/// nothing: a layer cached by a zstd build is converted back); base image layers stay
/// as pulled unless forced.
pub fn in_compression(root: &KilnRoot, worker: &Worker, built: &BuiltImage, layers: &LayerOpts) -> Result<BuiltImage> {
    let to = layers.compression.unwrap_or_default();
    kiln_exporter::recompress(root, built, to, layers.force, &worker.base_blobs()).map_err(BuildError::other)
}

/// What one output wrote: progress lines, the image as written (its manifest differs
/// from `built`'s when the output asks for another compression), and the image index
/// when attestations were attached.
pub struct Exported {
    pub lines: Vec<String>,
    pub image: Option<BuiltImage>,
    pub index: Option<kiln_image::Descriptor>,
}

/// Writes `built` to `out`, with `attest`'s attestations in an image index when given.
#[allow(clippy::too_many_arguments)]
pub fn export(
    progress: &dyn BuildProgress,
    root: &KilnRoot,
    worker: &Worker,
    registry: &kiln_registry::Client,
    built: &BuiltImage,
    out: &Output,
    attest: Option<AttestFor<'_>>,
    index_annotations: &std::collections::BTreeMap<String, String>,
) -> Result<Exported> {
    let content = root.content();
    // As BuildKit's image exporter: `index:` annotations need an index, which a
    // single-platform image has only with attestations.
    let no_index = || -> Result<()> {
        if index_annotations.is_empty() {
            return Ok(());
        }
        bail!(
            "--annotation index:…: {} gets no image index (one is written for several --platform values, or with attestations); index annotations are not supported for a single-platform image without attestations, as in BuildKit",
            match out {
                Output::Image { push: true, .. } => "--push",
                Output::Image { .. } => "the local store",
                Output::Oci { .. } => "-o type=oci",
                Output::Docker { .. } => "-o type=docker",
                Output::Load { .. } => "--load",
                Output::Local { .. } | Output::Tar { .. } => "this output",
            }
        )
    };
    let attach = |built: &BuiltImage, names: &[Reference]| -> Result<Option<crate::attest::Attached>> {
        match &attest {
            Some(a) if !a.predicates.0.is_empty() => Ok(Some(crate::attest::attach(
                &content,
                &built.manifest,
                a.platform,
                names,
                a.predicates,
                index_annotations,
            )?)),
            _ => no_index().map(|()| None),
        }
    };
    // `type=local` / `type=tar`: the statements as files beside the root filesystem.
    let statement_files = || -> Result<Vec<crate::attest::files::StatementFile>> {
        match &attest {
            Some(a) if !a.predicates.0.is_empty() => {
                let tree = worker.snapshots().merged(&built.layers).map_err(BuildError::other)?;
                crate::attest::files::statement_files(a.predicates, tree.as_deref())
            }
            _ => Ok(Vec::new()),
        }
    };
    let epoch = attest.as_ref().and_then(|a| a.epoch);
    let mut index = None;
    let (lines, image) = match out {
        Output::Image { names, push, layers } => {
            let built = in_compression(root, worker, built, layers)?;
            let attached = attach(&built, names)?;
            let top = attached.as_ref().map_or(&built.manifest, |a| &a.index).clone();
            index = attached.as_ref().map(|a| a.index.clone());
            let store = root.images();
            store.add(&top, names).map_err(BuildError::other)?;
            let mut lines: Vec<String> = names.iter().map(|n| format!("naming to {n} done")).collect();
            if *push {
                lines.extend(push_names(
                    progress, registry, &store, &content, &top, names, "manifest",
                )?);
            }
            (lines, Some(built))
        }
        Output::Oci {
            dest,
            names,
            tar,
            layers,
        }
        | Output::Docker {
            dest,
            names,
            tar,
            layers,
        } => {
            let built = in_compression(root, worker, built, layers)?;
            let docker = matches!(out, Output::Docker { .. });
            let mut img = [archive_image(&built, names)];
            // As buildx: a docker-archive holds the image alone (`docker load` reads
            // no attestations); the caller warns when some were asked for.
            if docker {
                no_index()?;
            } else {
                if let Some(a) = attach(&built, names)? {
                    img[0].extra.push(a.image.clone());
                    img[0].extra.extend(a.blobs.iter().cloned());
                    img[0].manifest = a.index.clone();
                    index = Some(a.index);
                }
            }
            write_archive(&content, &img, dest, *tar, docker)?;
            (vec![format!("sending tarball done")], Some(built))
        }
        Output::Load { names, layers } => {
            no_index()?;
            let built = in_compression(root, worker, built, layers)?;
            let lines = load_into_docker(&content, &[archive_image(&built, names)])?;
            (lines, Some(built))
        }
        Output::Local { dest } => {
            let warnings =
                kiln_exporter::write_rootfs_dir(worker.snapshots(), &built.layers, dest).map_err(BuildError::other)?;
            for w in warnings {
                progress.event(BuildEvent::Warning(w));
            }
            crate::attest::files::write_into_dir(dest, &statement_files()?, epoch)?;
            (vec![format!("copying files to {} done", dest.display())], None)
        }
        Output::Tar { dest } => {
            let now = crate::pipeline::unix_now();
            let extra: Vec<kiln_exporter::ExtraFile> = statement_files()?
                .into_iter()
                .map(|f| kiln_exporter::ExtraFile {
                    name: f.name,
                    mode: crate::attest::files::FILE_MODE,
                    mtime: epoch.unwrap_or(now),
                    bytes: f.bytes,
                })
                .collect();
            write_dest(dest, "the rootfs tarball", |w| {
                kiln_exporter::write_rootfs_tar_with(worker.snapshots(), &built.layers, w, &extra)
                    .map_err(BuildError::other)?;
                Ok(())
            })?;
            (vec!["sending tarball done".to_string()], None)
        }
    };
    Ok(Exported { lines, image, index })
}
