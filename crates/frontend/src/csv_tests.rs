#![allow(
    clippy::disallowed_methods,
    reason = "test code: a failing call fails the test at its line"
)]

use super::*;

/// One case of Go's `TestRead` table (testdata/go-encoding-csv/README.md).
#[derive(serde::Deserialize)]
struct GoCase {
    name: String,
    input: String,
    output: Option<Vec<Vec<String>>>,
    error: Option<String>,
}

/// Go's `makePositions`: the input without its markers, and where `∑` was (line, column).
fn strip_markers(text: &str) -> (String, Option<(usize, usize)>) {
    let (mut out, mut err) = (String::new(), None);
    let (mut line, mut col) = (1, 1);
    for c in text.chars() {
        match c {
            '\n' => {
                line += 1;
                col = 1;
                out.push(c);
            }
            '§' | '¶' => {}
            '∑' => err = Some((line, col)),
            c => {
                out.push(c);
                col += c.len_utf8();
            }
        }
    }
    (out, err)
}

#[test]
fn go_encoding_csv_reader_cases() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../testdata/go-encoding-csv/reader_test_cases.json"
    );
    let cases: Vec<GoCase> = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert!(cases.len() >= 35, "{} cases", cases.len());
    for c in &cases {
        let (input, at) = strip_markers(&c.input);
        let got = records(&input);
        match (&c.output, c.error.as_deref()) {
            (Some(want), None) => assert_eq!(got.as_ref(), Ok(want), "{}: {input:?}", c.name),
            (None, Some(kind)) => {
                let (line, column) = at.unwrap_or_else(|| panic!("{}: no ∑ marker", c.name));
                let want = match kind {
                    "ErrQuote" => CsvError::Quote { line, column },
                    "ErrBareQuote" => CsvError::BareQuote { line, column },
                    k => panic!("{}: unknown error {k}", c.name),
                };
                assert_eq!(got, Err(want), "{}: {input:?}", c.name);
            }
            _ => panic!("{}: a case has an output or an error", c.name),
        }
    }
}

#[test]
fn one_value_is_one_record() {
    // Go's default Reader on a single line (the cases go-csvvalue checks itself against).
    let ok: &[(&str, &[&str])] = &[
        ("foo,bar,baz", &["foo", "bar", "baz"]),
        ("foo,bar,baz\n", &["foo", "bar", "baz"]),
        ("foo,bar,baz\r\n", &["foo", "bar", "baz"]),
        (" ", &[" "]),
        ("   foo,bar,baz", &["   foo", "bar", "baz"]),
        (r#"a,"b,cc ,ddd",e"#, &["a", "b,cc ,ddd", "e"]),
        (r#""""#, &[""]),
        (r#"type=bind,"target=/a,b""#, &["type=bind", "target=/a,b"]),
        (r#""src=a""b",id=x"#, &[r#"src=a"b"#, "id=x"]),
    ];
    for (input, want) in ok {
        assert_eq!(fields(input).unwrap(), *want, "{input:?}");
    }
    let bad: &[(&str, CsvError)] = &[
        ("", CsvError::Empty),
        ("\n", CsvError::Empty),
        (r#"""#, CsvError::Quote { line: 1, column: 2 }),
        (r#"""""#, CsvError::Quote { line: 1, column: 4 }),
        (r#"foo,aa"bb,cc"#, CsvError::BareQuote { line: 1, column: 7 }),
        (r#"id=a,src="x,y""#, CsvError::BareQuote { line: 1, column: 10 }),
        (r#""a"b"#, CsvError::Quote { line: 1, column: 3 }),
        ("a\nb", CsvError::ExtraRecord { line: 2 }),
        ("a\n\nb\n", CsvError::ExtraRecord { line: 3 }),
    ];
    for (input, want) in bad {
        assert_eq!(fields(input).as_ref(), Err(want), "{input:?}");
    }
    // A line break inside quotes is part of the field.
    assert_eq!(fields("\"a\nb\",c").unwrap(), ["a\nb", "c"]);
    assert_eq!(
        CsvError::BareQuote { line: 1, column: 10 }.to_string(),
        "column 10: bare \" in non-quoted field (a quote only quotes a whole field: \"key=a,b\")"
    );
}
