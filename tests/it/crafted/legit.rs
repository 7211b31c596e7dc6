//! The crafted suite's legitimate case: the formats a layer may use, which must unpack
//! to exactly the tree they describe (run by `suite` in each mode, with the hostile
//! cases).

use super::*;

/// Long names (GNU `L`/`K`, PAX path/linkpath, over 100 and over 255 bytes), PAX size,
/// mtime, uid/gid and xattrs, hard links within the layer and to a lower layer,
/// symlinks, whiteouts and an opaque directory over a lower layer, a directory replaced
/// by a file: RUN sees exactly that tree, and a COPY and a RUN on it make the same
/// layers with both snapshotters.
pub(super) fn legit_case(s: &Suite) {
    let who = s.mode.label;
    let (a, b, cc) = ("a".repeat(120), "b".repeat(120), "c".repeat(60));
    let (g, d, e) = ("g".repeat(200), "d".repeat(150), "e".repeat(150));
    let long1 = format!("data/gnu/{g}");
    let long2 = format!("data/long/{a}/{b}/{cc}");
    let long3 = format!("data/gnu2/{d}/{e}");
    let mut lower = Tar::default();
    lower
        .dir("data/")
        .file("data/lower.txt", "lower")
        .file("data/gone.txt", "gone")
        .dir("data/opaque/")
        .file("data/opaque/old.txt", "old")
        .dir("data/opaque/olddir/")
        .file("data/opaque/olddir/f", "f")
        .dir("data/replaced/")
        .file("data/replaced/x", "x");
    let mut t = Tar::gnu();
    t.dir("data/gnu/")
        .gnu_long(b'L', &long1)
        .file(&long1[..100], "gnu-long")
        .dir("data/gnu2/")
        .gnu_long(b'L', &format!("data/gnu2/{d}/"))
        .dir("data/gnu2/ddd/")
        .gnu_long(b'L', &long3)
        .file("data/gnu2/placeholder", "gnu-long2")
        .gnu_long(b'K', &format!("gnu/{g}"))
        .symlink("data/gnulink", "placeholder")
        .dir("data/long/")
        .pax(&[("path", format!("data/long/{a}/").as_bytes())])
        .dir("data/long/aaa/")
        .pax(&[("path", format!("data/long/{a}/{b}/").as_bytes())])
        .dir("data/long/aaa/bbb/")
        .pax(&[("path", long2.as_bytes())])
        .file("data/long/placeholder", "pax-long")
        .pax(&[("linkpath", format!("/{long2}").as_bytes())])
        .symlink("data/longlink", "placeholder")
        .pax(&[("linkpath", long2.as_bytes())])
        .hardlink("data/hl-long", "placeholder")
        .pax(&[("size", b"11")])
        .entry(
            b'0',
            "data/pax-size",
            "",
            b"sized-by-px",
            Meta {
                size: Some(0),
                ..meta(0o644)
            },
        )
        .pax(&[("mtime", b"1234567890.5")])
        .entry(
            b'0',
            "data/pax-mtime",
            "",
            b"mtime",
            Meta {
                mtime: 0,
                ..meta(0o644)
            },
        )
        .pax(&[("uid", b"3000"), ("gid", b"4000")])
        .file("data/pax-owner", "owner")
        .pax(&[("uid", b"2500000"), ("gid", b"2500000")])
        .file("data/pax-biguid", "big");
    let mut xattrs: Vec<(&str, &[u8])> = vec![("SCHILY.xattr.user.kiln-test", b"hello")];
    if !s.mode.rootless() {
        xattrs.push(("SCHILY.xattr.security.capability", &CAP_NET_RAW_EP));
    }
    t.pax(&xattrs)
        .file("data/xattr", "xattrs")
        .file("data/hl-a", "hl")
        .hardlink("data/hl-b", "data/hl-a")
        .hardlink("data/hl-c", "/data/hl-a")
        .hardlink("data/hl-lower", "data/lower.txt")
        .symlink("data/sym-rel", "lower.txt")
        .symlink("data/sym-abs", "/data/lower.txt")
        .symlink("data/sym-dangling", "/nowhere")
        .file("data/.wh.gone.txt", "")
        .file("data/opaque/.wh..wh..opq", "")
        .file("data/opaque/new.txt", "new")
        .file("data/replaced", "now a file")
        .entry(
            b'5',
            "data/modes/",
            "",
            b"",
            Meta {
                mtime: 1_500_000_000,
                ..meta(0o750)
            },
        )
        .entry(b'0', "data/modes/setuid", "", b"s", meta(0o4755));
    let layers = [lower.finish(), t.finish()];

    let script = "cd /data\n\
         find . | sort | while read -r f; do\n\
           if [ -L \"$f\" ]; then echo \"ls:L $f -> $(readlink \"$f\")\";\n\
           elif [ -d \"$f\" ]; then stat -c 'ls:D %n %a %u:%g' \"$f\";\n\
           else stat -c 'ls:F %n %a %u:%g %h %s' \"$f\"; fi\n\
         done\n\
         for f in longlink gnulink sym-rel sym-abs hl-long hl-lower pax-size replaced; do echo \"cat:$f=$(cat $f)\"; done\n\
         stat -c 'time:%n %Y' pax-mtime modes\n";
    let rest = format!(
        "{RUN_CHECK}\
         COPY ctx.txt /data/long/{a}/{b}/\n\
         RUN chmod 640 /data/xattr /data/pax-owner && rm /data/hl-b /data/sym-rel && echo more > /data/gnu/{g} \\\n\
          && mkdir /data/opaque/olddir && ln -s {cc} /data/long/{a}/{b}/new-link && rm -r /data/gnu2\n"
    );
    let owner = |ids: &str| {
        if s.mode.single_id() {
            "0:0".to_string()
        } else {
            ids.to_string()
        }
    };
    let big = if s.mode.rootless() { "0:0" } else { "2500000:2500000" };
    let mut want: Vec<String> = [
        "ls:D . 755 0:0".to_string(),
        "ls:D ./gnu 755 0:0".into(),
        format!("ls:F ./gnu/{g} 644 0:0 1 8"),
        "ls:D ./gnu2 755 0:0".into(),
        format!("ls:D ./gnu2/{d} 755 0:0"),
        format!("ls:F ./gnu2/{d}/{e} 644 0:0 1 9"),
        format!("ls:L ./gnulink -> gnu/{g}"),
        "ls:F ./hl-a 644 0:0 3 2".into(),
        "ls:F ./hl-b 644 0:0 3 2".into(),
        "ls:F ./hl-c 644 0:0 3 2".into(),
        "ls:F ./hl-long 644 0:0 2 8".into(),
        "ls:F ./hl-lower 644 0:0 2 5".into(),
        "ls:D ./long 755 0:0".into(),
        format!("ls:D ./long/{a} 755 0:0"),
        format!("ls:D ./long/{a}/{b} 755 0:0"),
        format!("ls:F ./long/{a}/{b}/{cc} 644 0:0 2 8"),
        format!("ls:L ./longlink -> /{long2}"),
        "ls:F ./lower.txt 644 0:0 2 5".into(),
        "ls:D ./modes 750 0:0".into(),
        "ls:F ./modes/setuid 4755 0:0 1 1".into(),
        "ls:D ./opaque 755 0:0".into(),
        "ls:F ./opaque/new.txt 644 0:0 1 3".into(),
        format!("ls:F ./pax-biguid 644 {big} 1 3"),
        "ls:F ./pax-mtime 644 0:0 1 5".into(),
        format!("ls:F ./pax-owner 644 {} 1 5", owner("3000:4000")),
        "ls:F ./pax-size 644 0:0 1 11".into(),
        "ls:F ./replaced 644 0:0 1 10".into(),
        "ls:L ./sym-abs -> /data/lower.txt".into(),
        "ls:L ./sym-dangling -> /nowhere".into(),
        "ls:L ./sym-rel -> lower.txt".into(),
        "ls:F ./xattr 644 0:0 1 6".into(),
    ]
    .to_vec();
    want.sort();
    let mut layer_sets = Vec::new();
    for snapshotter in SNAPSHOTTERS {
        let out = s.mode.work.join(format!("legit-{snapshotter}.tar"));
        let bl = s.build(
            snapshotter,
            &layers,
            &rest,
            &[("ctx.txt", "from the context\n"), ("check.sh", script)],
            Some(&out),
        );
        assert!(bl.ok, "{who}/{snapshotter}: {}", bl.stderr);
        let mut seen: Vec<String> = bl.lines.iter().filter(|l| l.starts_with("ls:")).cloned().collect();
        seen.sort();
        if seen != want {
            let missing: Vec<&String> = want.iter().filter(|w| !seen.contains(w)).collect();
            let extra: Vec<&String> = seen.iter().filter(|w| !want.contains(w)).collect();
            panic!(
                "{who}/{snapshotter}: RUN saw another tree\nmissing: {missing:#?}\nunexpected: {extra:#?}\n{}",
                bl.stderr
            );
        }
        for w in [
            "cat:longlink=pax-long",
            "cat:gnulink=gnu-long",
            "cat:sym-rel=lower",
            "cat:sym-abs=lower",
            "cat:hl-long=pax-long",
            "cat:hl-lower=lower",
            "cat:pax-size=sized-by-px",
            "cat:replaced=now a file",
            "time:pax-mtime 1234567890",
            "time:modes 1500000000",
        ] {
            assert!(
                bl.lines.iter().any(|l| l == w),
                "{who}/{snapshotter}: RUN must see `{w}`:\n{}",
                bl.stderr
            );
        }
        if s.mode.label == SUB_USER {
            assert!(
                bl.stderr
                    .contains("`data/pax-biguid` kept by root: id 2500000:2500000 is not mapped"),
                "{}",
                bl.stderr
            );
        }
        let layers = archive_layers(&out);
        assert_eq!(layers.len(), 6, "busybox, two crafted, the checking RUN, COPY, RUN");
        let listings: Vec<Vec<String>> = layers.iter().map(|l| entries_with_xattrs(l)).collect();
        // The xattrs reached the snapshot: the RUN that chmods the file writes them.
        let run_layer = &listings[5];
        let mut want_x = format!("user.kiln-test={}", hex::encode("hello"));
        if !s.mode.rootless() {
            want_x = format!("security.capability={},{want_x}", hex::encode(CAP_NET_RAW_EP));
        }
        let xattr_line = format!("data/xattr 640 0/0 6 None [{want_x}]");
        assert!(
            run_layer.contains(&xattr_line),
            "{who}/{snapshotter}: want `{xattr_line}` in {run_layer:#?}"
        );
        let copied = format!("data/long/{a}/{b}/ctx.txt 644 0/0 17 None []");
        assert!(listings[4].contains(&copied), "{who}/{snapshotter}: {:#?}", listings[4]);
        layer_sets.push(listings);
    }
    let (overlay, copy) = (&layer_sets[0], &layer_sets[1]);
    for (i, (lo, lc)) in overlay.iter().zip(copy).enumerate() {
        if lo != lc {
            let only_o: Vec<&String> = lo.iter().filter(|x| !lc.contains(x)).collect();
            let only_c: Vec<&String> = lc.iter().filter(|x| !lo.contains(x)).collect();
            panic!(
                "{who}: layer {i} differs between overlay and copy\noverlay only: {only_o:#?}\ncopy only: {only_c:#?}"
            );
        }
    }
}
