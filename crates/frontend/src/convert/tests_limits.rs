//! Unit tests of the limits that keep a hostile Dockerfile from exhausting memory:
//! each failure names the line and the variable.

use std::sync::Arc;

use kiln_graph::{FileAction, Op};
use kiln_image::Platform;

use super::{build_plan, BuildOptions, BuildPlan};
use crate::shell::{ShellError, MAX_GROWTH};
use crate::syntax::MAX_DOCKERFILE_SIZE;
use crate::{ErrorKind, FrontendError};

fn opts() -> BuildOptions {
    let p = Platform::parse("linux/amd64").expect("platform");
    let mut o = BuildOptions::new("Dockerfile");
    o.platform = p.clone();
    o.build_platform = p;
    o
}

fn fails(df: &str) -> FrontendError {
    match build_plan(df, &opts()) {
        Ok(_) => panic!("the plan should fail"),
        Err(e) => e,
    }
}

fn too_long_var(e: &FrontendError) -> Option<String> {
    match e.kind() {
        ErrorKind::Expansion {
            source: ShellError::TooLong { name, .. },
            ..
        } => name.clone(),
        _ => None,
    }
}

/// `ARG A=$A$A` doubling, starting from 1 KiB: line 2 + 11 is the first value over 1 MiB.
fn doubling(keyword: &str, before_from: bool) -> String {
    let mut df = String::new();
    if !before_from {
        df.push_str("FROM scratch\n");
    }
    df.push_str(&format!("{keyword} A={}\n", "a".repeat(1024)));
    for _ in 0..30 {
        df.push_str(&format!("{keyword} A=$A$A\n"));
    }
    if before_from {
        df.push_str("FROM scratch\n");
    }
    df
}

#[test]
fn doubling_arg_stops_at_its_line() {
    let e = fails(&doubling("ARG", false));
    assert_eq!(e.line(), Some(13), "{e}");
    assert_eq!(too_long_var(&e).as_deref(), Some("A"), "{e}");
    let msg = e.to_string();
    assert!(
        msg.starts_with("Dockerfile:13: cannot expand `$A$A`: substituting `A`"),
        "{msg}"
    );
    assert!(msg.contains("1 MiB"), "{msg}");
}

#[test]
fn doubling_env_and_global_arg_stop_at_their_line() {
    let e = fails(&doubling("ENV", false));
    assert_eq!((e.line(), too_long_var(&e).as_deref()), (Some(13), Some("A")), "{e}");
    // A global ARG (before FROM) is expanded by the planner, not the converter.
    let e = fails(&doubling("ARG", true));
    assert_eq!((e.line(), too_long_var(&e).as_deref()), (Some(12), Some("A")), "{e}");
}

#[test]
fn values_just_under_the_limit_pass() {
    // 1 KiB doubled 10 times is exactly 1 MiB: allowed.
    let mut df = format!("FROM scratch\nARG A={}\n", "a".repeat(1024));
    for _ in 0..10 {
        df.push_str("ARG A=$A$A\n");
    }
    df.push_str("ENV B=$A\n");
    let p = build_plan(&df, &opts()).unwrap_or_else(|e| panic!("{e}"));
    let b = p.image.config.env.iter().find(|e| e.starts_with("B=")).expect("B");
    assert_eq!(b.len(), 2 + MAX_GROWTH);
}

#[test]
fn replacing_every_character_is_capped() {
    // Each of 1,100 characters replaced by the 1,100-character value: 1.2 MB.
    let df = format!("FROM scratch\nARG A={}\nENV B=${{A//?/$A}}\n", "x".repeat(1100));
    let e = fails(&df);
    assert_eq!((e.line(), too_long_var(&e).as_deref()), (Some(3), Some("A")), "{e}");
    // The template form (`\$0` is the match) multiplies the same way.
    let df = format!(
        "FROM scratch\nARG A={}\nENV B=${{A//?/{}}}\n",
        "x".repeat(1100),
        "\\$0".repeat(600)
    );
    assert_eq!(fails(&df).line(), Some(3));
}

#[test]
fn heredoc_expansion_may_grow_by_one_mib() {
    let big = "b".repeat(600 * 1024);
    // Two references (1.2 MB) in a short body: over the body's length + 1 MiB.
    let df = format!("FROM scratch\nARG A={big}\nCOPY <<EOF /f\n$A\n$A\nEOF\n");
    let e = fails(&df);
    assert_eq!((e.line(), too_long_var(&e).as_deref()), (Some(3), Some("A")), "{e}");
    // The message shows the start of the body, not all of it.
    assert!(e.to_string().len() < 400, "{e}");
    // A long body that expands a little is fine.
    let body = "line of text\n".repeat(200_000);
    let df = format!("FROM scratch\nARG A={big}\nCOPY <<EOF /f\n{body}$A\nEOF\n");
    build_plan(&df, &opts()).unwrap_or_else(|e| panic!("{e}"));
}

fn mkfile_data(p: &BuildPlan) -> Vec<Arc<String>> {
    p.definition
        .nodes
        .values()
        .filter_map(|n| match &n.op {
            Op::File(f) => Some(f.actions.iter()),
            _ => None,
        })
        .flatten()
        .filter_map(|a| match a {
            FileAction::Mkfile { data, .. } => Some(data.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn heredoc_quotes_are_plain_characters() {
    // BuildKit's ExpandRaw: quotes are kept, escapes and references are processed.
    let df = "FROM scratch\nARG V=v\nCOPY <<EOF /f\nit's \"$V\" \\$V a\\'b '$V'\nEOF\n";
    let p = build_plan(df, &opts()).unwrap_or_else(|e| panic!("{e}"));
    let data = mkfile_data(&p);
    assert_eq!(data.len(), 1);
    assert_eq!(data[0].as_str(), "it's \"v\" $V a'b 'v'\n");
}

#[test]
fn dockerfile_size_is_capped() {
    let mut df = String::from("FROM scratch\nCOPY <<'EOF' /f\n");
    df.push_str(&"x".repeat(MAX_DOCKERFILE_SIZE));
    df.push_str("\nEOF\n");
    let e = fails(&df);
    assert!(matches!(e.kind(), ErrorKind::DockerfileTooLarge { .. }), "{e}");
    assert!(e.to_string().contains("16 MiB"), "{e}");
}

#[test]
fn environment_copied_into_every_step_is_capped() {
    // 4 MiB of environment (four 1 MiB values), then steps that each carry a copy.
    let mut df = format!("FROM scratch\nENV A={}\n", "a".repeat(1024));
    for _ in 0..10 {
        df.push_str("ENV A=$A$A\n");
    }
    df.push_str("ENV B=$A C=$A D=$A\n");
    let first_run = df.lines().count() + 1;
    df.push_str(&"RUN a\n".repeat(100));
    // The real limit (256 MiB) takes a minute to reach in a debug build; the same
    // check with 10 MiB: 4 MiB per step, the third step crosses it.
    let mut o = opts();
    assert_eq!(o.max_graph_size, super::MAX_GRAPH_SIZE);
    o.max_graph_size = 10 << 20;
    let Err(e) = build_plan(&df, &o) else {
        panic!("the plan should fail")
    };
    assert!(matches!(e.kind(), ErrorKind::GraphTooLarge { .. }), "{e}");
    assert_eq!(e.line(), Some(first_run + 2), "{e}");
    assert!(e.to_string().contains("grew past the limit of 10485760 bytes"), "{e}");
}
