//! The layer tars and OCI layouts of the crafted-layer suite, written header by header
//! so that nothing on the way checks or cleans a name; and readers for what kiln exports.

use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use serde_json::json;

use crate::common::*;

pub(super) const MTIME: u64 = 1_600_000_000;
/// `cap_net_raw+ep` as a version 2 `security.capability` value.
pub(super) const CAP_NET_RAW_EP: [u8; 20] = [1, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];

/// Entry metadata as the header records it.
#[derive(Clone, Copy)]
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: u64,
    /// The header's size field when it must differ from the data's (PAX `size`).
    pub(super) size: Option<u64>,
    pub(super) dev: (u32, u32),
}

pub(super) fn meta(mode: u32) -> Meta {
    Meta {
        mode,
        uid: 0,
        gid: 0,
        mtime: MTIME,
        size: None,
        dev: (0, 0),
    }
}

/// Tar is a layer written header by header, so nothing checks or cleans the names.
#[derive(Default)]
pub(super) struct Tar {
    bytes: Vec<u8>,
    /// Write GNU magic (`ustar  `) rather than POSIX ustar.
    gnu: bool,
}

fn put(field: &mut [u8], v: &[u8]) {
    let n = v.len().min(field.len());
    field[..n].copy_from_slice(&v[..n]);
}

fn octal(field: &mut [u8], v: u64) {
    let s = format!("{v:0w$o}", w = field.len() - 1);
    assert!(s.len() < field.len(), "{v} does not fit a header field");
    put(field, s.as_bytes());
}

impl Tar {
    pub(super) fn gnu() -> Tar {
        Tar {
            bytes: Vec::new(),
            gnu: true,
        }
    }

    fn header(&mut self, kind: u8, name: &[u8], link: &[u8], size: u64, m: &Meta) {
        let mut h = [0u8; 512];
        put(&mut h[0..100], name);
        octal(&mut h[100..108], u64::from(m.mode));
        octal(&mut h[108..116], m.uid);
        octal(&mut h[116..124], m.gid);
        octal(&mut h[124..136], size);
        octal(&mut h[136..148], m.mtime);
        h[156] = kind;
        put(&mut h[157..257], link);
        put(&mut h[257..265], if self.gnu { b"ustar  \0" } else { b"ustar\x0000" });
        put(&mut h[265..297], b"root");
        put(&mut h[297..329], b"root");
        octal(&mut h[329..337], u64::from(m.dev.0));
        octal(&mut h[337..345], u64::from(m.dev.1));
        h[148..156].fill(b' ');
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        put(&mut h[148..156], format!("{sum:06o}\0 ").as_bytes());
        self.bytes.extend_from_slice(&h);
    }

    pub(super) fn entry(&mut self, kind: u8, name: &str, link: &str, data: &[u8], m: Meta) -> &mut Self {
        self.header(
            kind,
            name.as_bytes(),
            link.as_bytes(),
            m.size.unwrap_or(data.len() as u64),
            &m,
        );
        self.bytes.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.bytes.extend(std::iter::repeat_n(0u8, pad));
        self
    }

    pub(super) fn file(&mut self, name: &str, data: &str) -> &mut Self {
        self.entry(b'0', name, "", data.as_bytes(), meta(0o644))
    }

    pub(super) fn dir(&mut self, name: &str) -> &mut Self {
        self.entry(b'5', name, "", b"", meta(0o755))
    }

    pub(super) fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(b'2', name, target, b"", meta(0o777))
    }

    pub(super) fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        self.entry(b'1', name, target, b"", meta(0o644))
    }

    /// A PAX extended header (`x`) for the next entry.
    pub(super) fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (k, v) in records {
            // `LEN KEY=VALUE\n`, where LEN counts its own digits.
            let rest = k.len() + v.len() + 3;
            let mut len = rest;
            loop {
                let n = rest + len.to_string().len();
                if n == len {
                    break;
                }
                len = n;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        self.entry(b'x', "PaxHeaders.0/entry", "", &body, meta(0o644))
    }

    /// A GNU long name (`L`) or long link name (`K`) for the next entry.
    pub(super) fn gnu_long(&mut self, kind: u8, value: &str) -> &mut Self {
        let mut body = value.as_bytes().to_vec();
        body.push(0);
        self.entry(kind, "././@LongLink", "", &body, meta(0o644))
    }

    pub(super) fn finish(&self) -> Vec<u8> {
        let mut v = self.bytes.clone();
        v.extend_from_slice(&[0u8; 1024]);
        v
    }
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b))
}

/// The busybox layer (the tree of [`crate::run::busybox_context`]) as an uncompressed tar.
pub(super) fn busybox_layer() -> Option<&'static [u8]> {
    static LAYER: OnceLock<Vec<u8>> = OnceLock::new();
    if !require(
        Path::new("/bin/busybox").is_file(),
        "busybox-static (/bin/busybox) is not installed",
    ) {
        return None;
    }
    Some(LAYER.get_or_init(|| {
        let mut t = Tar::default();
        for d in ["bin/", "etc/", "proc/", "dev/", "sys/", "root/", "home/"] {
            t.dir(d);
        }
        t.entry(b'5', "tmp/", "", b"", meta(0o1777));
        t.entry(
            b'0',
            "bin/busybox",
            "",
            &std::fs::read("/bin/busybox").unwrap(),
            meta(0o755),
        );
        let list = run_ok(Command::new("/bin/busybox").arg("--list"));
        for applet in list.lines().filter(|a| *a != "busybox") {
            t.symlink(&format!("bin/{applet}"), "busybox");
        }
        t.file(
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        );
        t.file("etc/group", "root:x:0:\nnogroup:x:65534:\n");
        t.file("root/.profile", "# root\n");
        t.finish()
    }))
}

/// Writes an OCI layout at `dir` holding one image tagged `1`: the busybox layer, then
/// `layers` (uncompressed). Returns the digests (`sha256:…`) of `layers`.
pub(super) fn write_layout(dir: &Path, layers: &[Vec<u8>]) -> Vec<String> {
    let bb = busybox_layer().expect("probed by the caller");
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let store = |bytes: &[u8]| {
        let hex = sha256_hex(bytes);
        std::fs::write(blobs.join(&hex), bytes).unwrap();
        (format!("sha256:{hex}"), bytes.len())
    };
    let descs: Vec<(String, usize)> = std::iter::once(bb)
        .chain(layers.iter().map(Vec::as_slice))
        .map(store)
        .collect();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        a => a,
    };
    let config = json!({
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"]
        },
        "rootfs": {"type": "layers", "diff_ids": descs.iter().map(|d| d.0.clone()).collect::<Vec<_>>()},
        "history": descs.iter().enumerate().map(|(i, _)| json!({"created_by": format!("crafted layer {i}")})).collect::<Vec<_>>()
    });
    let (config_digest, config_size) = store(&serde_json::to_vec(&config).unwrap());
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size
        },
        "layers": descs.iter().map(|(d, s)| json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar",
            "digest": d,
            "size": s
        })).collect::<Vec<_>>()
    });
    let (manifest_digest, manifest_size) = store(&serde_json::to_vec(&manifest).unwrap());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "annotations": {"org.opencontainers.image.ref.name": "1"}
        }]
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    descs[1..].iter().map(|d| d.0.clone()).collect()
}

/// The uncompressed layer tars of an OCI archive, in order.
pub(super) fn archive_layers(archive: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(archive).unwrap();
    crate::run::archive_layer_descriptors(&bytes)
        .iter()
        .map(|l| {
            let name = format!("blobs/sha256/{}", l["digest"].as_str().unwrap().replace("sha256:", ""));
            let mut ar = tar::Archive::new(bytes.as_slice());
            let blob = ar
                .entries()
                .unwrap()
                .map(|e| e.unwrap())
                .find_map(|mut e| {
                    (e.path().unwrap().to_str() == Some(name.as_str())).then(|| {
                        let mut v = Vec::new();
                        std::io::Read::read_to_end(&mut e, &mut v).unwrap();
                        v
                    })
                })
                .unwrap();
            if blob.starts_with(&[0x1f, 0x8b]) {
                let mut v = Vec::new();
                std::io::Read::read_to_end(&mut flate2::read::MultiGzDecoder::new(blob.as_slice()), &mut v).unwrap();
                v
            } else {
                blob
            }
        })
        .collect()
}

/// `name mode uid/gid size link [xattrs]` for every entry of a layer tar (no times).
pub(super) fn entries_with_xattrs(layer: &[u8]) -> Vec<String> {
    let mut ar = tar::Archive::new(layer);
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let mut xattrs: Vec<String> = match e.pax_extensions().unwrap() {
                Some(exts) => exts
                    .flatten()
                    .filter_map(|x| {
                        let k = x.key().ok()?.strip_prefix("SCHILY.xattr.")?.to_string();
                        Some(format!("{k}={}", hex::encode(x.value_bytes())))
                    })
                    .collect(),
                None => Vec::new(),
            };
            xattrs.sort();
            let h = e.header();
            format!(
                "{} {:o} {}/{} {} {:?} [{}]",
                e.path().unwrap().display(),
                h.mode().unwrap(),
                h.uid().unwrap(),
                h.gid().unwrap(),
                h.size().unwrap(),
                e.link_name().unwrap(),
                xattrs.join(",")
            )
        })
        .collect()
}
