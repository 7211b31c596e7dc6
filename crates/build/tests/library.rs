//! The build library called in-process, as a program embedding kiln would: a
//! `FROM scratch` + `COPY` build (no RUN, so no sandbox and no root needed) exported
//! as an OCI layout, its config and layer read back; the events it reported.

#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use std::io::Read;
use std::path::Path;
use std::sync::Mutex;

use kiln_build::{BuildEvent, BuildProgress, BuildRequest, BuildResult, Dest, NoControl, Output};
use kiln_solver::Event;

#[derive(Default)]
struct Recorder(Mutex<Vec<BuildEvent>>);

impl BuildProgress for Recorder {
    fn event(&self, e: BuildEvent) {
        self.0.lock().unwrap().push(e);
    }
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(layout: &Path, digest: &str) -> std::path::PathBuf {
    let (alg, hex) = digest.split_once(':').unwrap();
    layout.join("blobs").join(alg).join(hex)
}

#[test]
fn scratch_copy_build_in_process() {
    let tmp = tempfile::tempdir().unwrap();
    let context = tmp.path().join("ctx");
    std::fs::create_dir(&context).unwrap();
    std::fs::write(
        context.join("Dockerfile"),
        "FROM scratch\nCOPY hello.txt /greeting/\nLABEL org.example.k=v\nCMD [\"/hello\"]\n",
    )
    .unwrap();
    std::fs::write(context.join("hello.txt"), "hello from the library\n").unwrap();
    let layout = tmp.path().join("layout");
    let mut req = BuildRequest::new(tmp.path().join("root"), Some(context));
    req.outputs = vec![Output::Oci {
        dest: Dest::Path(layout.clone()),
        names: Vec::new(),
        tar: false,
        layers: Default::default(),
    }];
    // A stage that is not there: a warning, reported as an event, not printed.
    req.no_cache_filter = vec!["nosuch".into()];
    req.epoch = Some(1_700_000_000);
    // No provenance (buildx's default would attach it to type=oci): the layout's one
    // entry is then the image manifest itself.
    req.attest.provenance = kiln_build::attest::Provenance::Off;
    let events = Recorder::default();
    let result =
        kiln_build::build(&req, &events, &NoControl).unwrap_or_else(|e| panic!("{}", kiln_build::chain_text(&e)));
    let BuildResult::Built(built) = result else {
        panic!("a build, not a check")
    };
    let (image, metadata) = (built.image, built.metadata);

    // The layout's one manifest is the image the library says it built.
    let index = json(&layout.join("index.json"));
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    assert_eq!(metadata["containerimage.digest"], manifest_digest);
    let manifest = json(&blob(&layout, manifest_digest));
    let config_digest = manifest["config"]["digest"].as_str().unwrap();
    assert_eq!(config_digest, image.id().to_string());
    let config = json(&blob(&layout, config_digest));
    assert_eq!(config["config"]["Cmd"], serde_json::json!(["/hello"]));
    assert_eq!(config["config"]["Labels"]["org.example.k"], "v");
    assert_eq!(config["rootfs"]["diff_ids"].as_array().unwrap().len(), 1);
    assert_eq!(config["created"], "2023-11-14T22:13:20Z");

    // The one layer: the copied file, owned by root, mtime clamped to the epoch.
    let layers = manifest["layers"].as_array().unwrap();
    assert_eq!(layers.len(), 1);
    let gz = std::fs::File::open(blob(&layout, layers[0]["digest"].as_str().unwrap())).unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut files = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        let (uid, gid, mtime) = (
            entry.header().uid().unwrap(),
            entry.header().gid().unwrap(),
            entry.header().mtime().unwrap(),
        );
        let mut body = String::new();
        entry.read_to_string(&mut body).unwrap();
        files.push((path, uid, gid, mtime <= 1_700_000_000, body));
    }
    let names: Vec<&str> = files.iter().map(|f| f.0.trim_end_matches('/')).collect();
    assert_eq!(names, ["greeting", "greeting/hello.txt"], "{files:?}");
    let hello = &files[1];
    assert_eq!((hello.1, hello.2, hello.3), (0, 0, true), "{files:?}");
    assert_eq!(hello.4, "hello from the library\n");

    // Progress: the solver's steps and the build's own, and the warning, as events.
    let events = events.0.into_inner().unwrap();
    let started: Vec<&str> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Step(Event::Started { name, .. } | Event::Cached { name, .. }) => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(
        started.first(),
        Some(&"[internal] load build definition from Dockerfile"),
        "{started:?}"
    );
    assert!(
        started.iter().any(|n| n.starts_with("[1/1] COPY hello.txt")),
        "{started:?}"
    );
    assert_eq!(started.last(), Some(&"exporting to oci image format"), "{started:?}");
    let warnings: Vec<&String> = events
        .iter()
        .filter_map(|e| match e {
            BuildEvent::Warning(w) => Some(w),
            _ => None,
        })
        .collect();
    assert_eq!(
        warnings,
        ["--no-cache-filter nosuch: no stage of this build is named `nosuch`"],
        "{events:?}"
    );
}
