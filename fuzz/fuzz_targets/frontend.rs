//! Parse + expand + lower any input: the frontend must return Ok or an error, never
//! panic, hang or overflow. The first byte picks options so ARG/--target paths run too.
#![no_main]

use kiln_frontend::{build_plan, BuildOptions};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (flags, rest) = match data.split_first() {
        Some((f, r)) => (*f, r),
        None => (0, data),
    };
    let Ok(text) = std::str::from_utf8(rest) else { return };
    let mut opts = BuildOptions::new("Dockerfile");
    if flags & 1 != 0 {
        opts.build_args.insert("A".into(), "x y".into());
        opts.build_args.insert("BASE".into(), "scratch".into());
    }
    if flags & 2 != 0 {
        opts.target = Some("build".into());
    }
    if flags & 4 != 0 {
        opts.ignore_patterns = vec!["*.log".into(), "!keep.log".into()];
    }
    let _ = build_plan(text, &opts);
    // Word expansion on its own, with both escape characters.
    let env: std::collections::BTreeMap<String, String> = [("A".to_string(), "a b".to_string())].into();
    let escape = if flags & 8 != 0 { '`' } else { '\\' };
    let lexer = kiln_frontend::shell::Lexer::new(escape);
    let _ = lexer.expand_word(text, &env);
    let _ = lexer.expand_words(text, &env);
    if let Ok(m) = kiln_context::dockerignore::PatternMatcher::new(&kiln_context::dockerignore::parse_ignore_file(text)) {
        let _ = m.is_excluded("a/b/c.log");
        let _ = m.can_skip_dir("a");
    }
});
