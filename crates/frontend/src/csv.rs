//! The one CSV splitter: a flag or `--mount` value split into fields as Go's
//! `encoding/csv` Reader splits a record with its default settings (comma `,`, no
//! comment character, `LazyQuotes` and `TrimLeadingSpace` off). BuildKit and buildx
//! parse `RUN --mount`, `-o/--output`, `--secret`, `--cache-to/--cache-from` (and
//! `ADD` git fragments) this way: `csv.NewReader(..).Read()` in Docker 20.10's
//! BuildKit, `csvvalue.Fields` with the same defaults today.
//!
//! The rules: `,` separates fields; a field that *starts* with `"` is quoted and may
//! hold `,`, line breaks and `""` (one `"`); a quote anywhere else is an error
//! (`id=a,src="x,y"` is refused: quote the whole field, `id=a,"src=x,y"`); text after a
//! closing quote other than `,` is an error; a trailing line break (`\n`, `\r\n`) and a
//! trailing `\r` are dropped; `\r\n` inside a quoted field becomes `\n`.
//!
//! One difference on purpose: a value is one record. Where Go's `Read` would return the
//! first line and drop the rest, [`fields`] says there is a second line.

use std::fmt;

/// CsvError is why a value is not one CSV record. `line` and `column` are 1-based,
/// the column counted in bytes, as Go's `ParseError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CsvError {
    /// A `"` inside a field that does not start with one.
    BareQuote { line: usize, column: usize },
    /// A quoted field whose closing `"` is missing or followed by something else than `,`.
    Quote { line: usize, column: usize },
    /// Nothing but line breaks.
    Empty,
    /// A line break outside quotes followed by more text.
    ExtraRecord { line: usize },
}

impl fmt::Display for CsvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |f: &mut fmt::Formatter<'_>, line: usize, column: usize| {
            if line == 1 {
                write!(f, "column {column}: ")
            } else {
                write!(f, "line {line}, column {column}: ")
            }
        };
        match *self {
            CsvError::BareQuote { line, column } => {
                at(f, line, column)?;
                write!(
                    f,
                    "bare \" in non-quoted field (a quote only quotes a whole field: \"key=a,b\")"
                )
            }
            CsvError::Quote { line, column } => {
                at(f, line, column)?;
                write!(f, "extraneous or missing \" in quoted field")
            }
            CsvError::Empty => write!(f, "empty value"),
            CsvError::ExtraRecord { line } => {
                write!(
                    f,
                    "line {line}: a second line (a line break outside quotes ends the value)"
                )
            }
        }
    }
}

/// Splits `s` into the fields of its one CSV record.
pub fn fields(s: &str) -> Result<Vec<String>, CsvError> {
    let mut r = Reader::new(s);
    let first = r.record()?.ok_or(CsvError::Empty)?;
    match r.record()? {
        None => Ok(first),
        Some(_) => Err(CsvError::ExtraRecord { line: r.start }),
    }
}

/// Every record of `s` (Go's `ReadAll`); the test vectors have several per input.
#[cfg(test)]
fn records(s: &str) -> Result<Vec<Vec<String>>, CsvError> {
    let mut r = Reader::new(s);
    let mut out = Vec::new();
    while let Some(rec) = r.record()? {
        out.push(rec);
    }
    Ok(out)
}

/// Reader walks the input line by line, as Go's `readLine` does.
struct Reader<'a> {
    rest: &'a str,
    /// The number of the last line read (1-based).
    line: usize,
    /// The line the last record started on.
    start: usize,
}

impl<'a> Reader<'a> {
    fn new(s: &'a str) -> Self {
        Reader {
            rest: s,
            line: 0,
            start: 0,
        }
    }

    /// The next line with its `\n` (`\r\n` normalised to `\n`; a `\r` right before the
    /// end of the input dropped), or None at the end.
    fn read_line(&mut self) -> Option<String> {
        if self.rest.is_empty() {
            return None;
        }
        let end = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
        let (line, rest) = self.rest.split_at(end);
        self.rest = rest;
        self.line += 1;
        let mut line = line.to_string();
        if line.ends_with("\r\n") {
            line.truncate(line.len() - 2);
            line.push('\n');
        } else if !line.ends_with('\n') && line.ends_with('\r') {
            line.pop();
        }
        Some(line)
    }

    /// The next record, skipping empty lines; None at the end.
    fn record(&mut self) -> Result<Option<Vec<String>>, CsvError> {
        let mut line = loop {
            match self.read_line() {
                None => return Ok(None),
                Some(l) if l.is_empty() || l == "\n" => continue,
                Some(l) => break l,
            }
        };
        self.start = self.line;
        let nl = |l: &str| usize::from(l.ends_with('\n'));
        let mut out = Vec::new();
        // Byte offset of `line` in the current physical line (0-based).
        let mut col = 0usize;
        let mut pos = 0usize;
        'fields: loop {
            let rest = &line[pos..];
            if !rest.starts_with('"') {
                // A plain field: up to the next comma or the end of the line.
                let end = rest.find(',');
                let field = &rest[..end.unwrap_or(rest.len() - nl(rest))];
                if let Some(j) = field.find('"') {
                    return Err(CsvError::BareQuote {
                        line: self.line,
                        column: col + j + 1,
                    });
                }
                out.push(field.to_string());
                match end {
                    Some(i) => {
                        pos += i + 1;
                        col += i + 1;
                        continue 'fields;
                    }
                    None => break 'fields,
                }
            }
            // A quoted field, possibly over several lines.
            let mut field = String::new();
            pos += 1;
            col += 1;
            loop {
                let rest = &line[pos..];
                if let Some(i) = rest.find('"') {
                    field.push_str(&rest[..i]);
                    pos += i + 1;
                    col += i + 1;
                    let after = &line[pos..];
                    if after.starts_with('"') {
                        field.push('"');
                        pos += 1;
                        col += 1;
                    } else if after.starts_with(',') {
                        pos += 1;
                        col += 1;
                        out.push(field);
                        continue 'fields;
                    } else if after.len() == nl(after) {
                        out.push(field);
                        break 'fields;
                    } else {
                        return Err(CsvError::Quote {
                            line: self.line,
                            column: col,
                        });
                    }
                } else if !rest.is_empty() {
                    // The field goes on on the next line.
                    field.push_str(rest);
                    col += rest.len();
                    pos = line.len();
                    if let Some(next) = self.read_line() {
                        line = next;
                        pos = 0;
                        col = 0;
                    }
                } else {
                    return Err(CsvError::Quote {
                        line: self.line,
                        column: col + 1,
                    });
                }
            }
        }
        Ok(Some(out))
    }
}

#[cfg(test)]
#[path = "csv_tests.rs"]
mod tests;
