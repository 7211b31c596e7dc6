//! `--chmod` of COPY and ADD: an octal mode, or a symbolic one as chmod(1) takes it.
//!
//! BuildKit's rules (`dockerfile2llb/convert_copy.go`, fsutil's copier and the
//! `tonistiigi/dchapes-mode` parser it uses):
//! - a value Go's `strconv.ParseUint(v, 8, 32)` accepts is octal and must be at most
//!   `07777`; anything else that starts with a digit is a bad octal mode;
//! - otherwise it is a symbolic mode, BSD `setmode(3)` grammar with a umask of 0:
//!   comma-separated clauses `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`; no `who` means all
//!   bits; `s` is ignored for `o` alone, as is `t`;
//! - a symbolic mode is applied to each copied file's own mode; `X` adds (or, with
//!   `-`, removes) the execute bits when the source is a directory or already has an
//!   execute bit — with every operator, as Linux chmod does (fsutil since March 2025;
//!   older BuildKit honoured `X` only with `+`).
//!
//! The serialized form of an octal mode is the bare number, as before symbolic modes
//! existed, so graph digests of existing Dockerfiles do not change; a symbolic mode is
//! serialized as its text.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

const SETUID: u32 = 0o4000;
const SETGID: u32 = 0o2000;
const STICKY: u32 = 0o1000;
const EXEC: u32 = 0o111;
/// `a`: every bit but sticky (BSD `STANDARD_BITS`).
const ALL: u32 = SETUID | SETGID | 0o777;

/// Chmod is a parsed `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    /// An absolute mode, `0`..=`0o7777`.
    Octal(u32),
    /// A symbolic mode (`u+x`, `go=rX`, `g=u-w`), applied to each file's own mode.
    Symbolic(SymbolicMode),
}

/// SymbolicMode is a symbolic `--chmod` as written and the bit operations it means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymbolicMode {
    text: String,
    ops: Vec<ModeOp>,
}

/// One step of a symbolic mode, applied in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ModeOp {
    /// Sets these bits.
    Set(u32),
    /// Clears these bits.
    Clear(u32),
    /// Sets these bits when the file is a directory or has an execute bit (`+X`, `=X`).
    SetIfExec(u32),
    /// Clears these bits under the same condition (`-X`).
    ClearIfExec(u32),
    /// Copies the permission triple of class `from` (`u`, `g`, `o`) to the classes in
    /// `to` (bit 0 user, 1 group, 2 other) with operator `op`.
    Copy { from: u8, to: u8, op: u8 },
}

/// ChmodError says why a `--chmod` value is not a mode.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChmodError {
    #[error("expected an octal mode between 0 and 07777 (or a symbolic one like `u+x`)")]
    Octal,
    #[error("an empty mode is not valid")]
    Empty,
    #[error("{reason} at character {at}; a symbolic mode looks like `u+x`, `go-w` or `u=rwX,go=rX`")]
    Symbolic { at: usize, reason: &'static str },
}

impl Chmod {
    /// Parses a `--chmod` value as BuildKit does.
    pub fn parse(value: &str) -> Result<Chmod, ChmodError> {
        if value.is_empty() {
            return Err(ChmodError::Empty);
        }
        let bytes = value.as_bytes();
        if bytes.iter().all(|b| (b'0'..=b'7').contains(b)) {
            // Go's ParseUint(v, 8, 32): any length, but the value must fit 32 bits.
            return match u32::from_str_radix(value, 8) {
                Ok(m) if m <= 0o7777 => Ok(Chmod::Octal(m)),
                _ => Err(ChmodError::Octal),
            };
        }
        if bytes[0].is_ascii_digit() {
            return Err(ChmodError::Octal);
        }
        let ops = parse_symbolic(bytes)?;
        Ok(Chmod::Symbolic(SymbolicMode {
            text: value.to_string(),
            ops,
        }))
    }

    /// The mode a copied file or directory gets, from its source `mode`.
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => m & 0o7777,
            Chmod::Symbolic(s) => s.apply(mode, is_dir),
        }
    }
}

impl fmt::Display for Chmod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Chmod::Octal(m) => write!(f, "{m:o}"),
            Chmod::Symbolic(s) => f.write_str(&s.text),
        }
    }
}

impl SymbolicMode {
    /// The mode as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        let original = mode & 0o7777;
        // `X` looks at the mode before this chmod, as BSD getmode does.
        let exec_like = is_dir || original & EXEC != 0;
        let mut m = original;
        for op in &self.ops {
            match *op {
                ModeOp::Set(bits) => m |= bits,
                ModeOp::Clear(bits) => m &= !bits,
                ModeOp::SetIfExec(bits) if exec_like => m |= bits,
                ModeOp::ClearIfExec(bits) if exec_like => m &= !bits,
                ModeOp::SetIfExec(_) | ModeOp::ClearIfExec(_) => {}
                ModeOp::Copy { from, to, op } => {
                    let value = (m >> shift(from)) & 0o7;
                    let (set, clear) = (op != b'-', op != b'+');
                    // `=` clears the whole triple first; `-` clears the copied bits.
                    let clear_bits = if set { 0o7 } else { value };
                    for (i, class) in [b'u', b'g', b'o'].into_iter().enumerate() {
                        if to & (1 << i) == 0 {
                            continue;
                        }
                        if clear {
                            m &= !(clear_bits << shift(class));
                        }
                        if set {
                            m |= value << shift(class);
                        }
                    }
                }
            }
        }
        m & 0o7777
    }
}

fn shift(class: u8) -> u32 {
    match class {
        b'u' => 6,
        b'g' => 3,
        _ => 0,
    }
}

/// Builds the operations of a symbolic mode (a port of the state machine of BSD
/// `setmode`, as `dchapes-mode` has it, umask 0).
fn parse_symbolic(s: &[u8]) -> Result<Vec<ModeOp>, ChmodError> {
    let err = |at: usize, reason| ChmodError::Symbolic { at: at + 1, reason };
    let mut ops = Vec::new();
    let mut i = 0;
    let mut equal_done = false;
    loop {
        let mut who = 0u32;
        while let Some(&c) = s.get(i) {
            who |= match c {
                b'a' => ALL,
                b'u' => SETUID | 0o700,
                b'g' => SETGID | 0o070,
                b'o' => 0o007,
                _ => break,
            };
            i += 1;
        }
        // One clause may chain operators: `u+r-w`.
        loop {
            let op = match s.get(i) {
                None => return Err(err(i, "the mode ends where `+`, `-` or `=` is expected")),
                Some(&c @ (b'+' | b'-' | b'=')) => c,
                Some(_) => return Err(err(i, "expected `u`, `g`, `o`, `a`, `+`, `-` or `=`")),
            };
            i += 1;
            if op == b'=' {
                equal_done = false;
            }
            who &= !STICKY;
            let mut perm = 0u32;
            let mut perm_x = false;
            loop {
                let c = s.get(i).copied().unwrap_or(0);
                // `s` and `t` mean nothing for `o` alone.
                let special_ok = who == 0 || who & !0o007 != 0;
                match c {
                    b'r' => perm |= 0o444,
                    b'w' => perm |= 0o222,
                    b'x' => perm |= EXEC,
                    b'X' => perm_x = true,
                    b's' if special_ok => perm |= SETUID | SETGID,
                    b't' if special_ok => {
                        who |= STICKY;
                        perm |= STICKY;
                    }
                    b's' | b't' => {}
                    b'u' | b'g' | b'o' => {
                        if perm != 0 {
                            push_op(&mut ops, op, who, perm);
                            perm = 0;
                        }
                        if op == b'=' {
                            equal_done = true;
                        }
                        if perm_x {
                            push_exec(&mut ops, op, who);
                            perm_x = false;
                        }
                        ops.push(ModeOp::Copy {
                            from: c,
                            to: copy_targets(who),
                            op,
                        });
                    }
                    _ => {
                        if perm != 0 || (op == b'=' && !equal_done) {
                            if op == b'=' {
                                equal_done = true;
                            }
                            push_op(&mut ops, op, who, perm);
                        }
                        if perm_x {
                            push_exec(&mut ops, op, who);
                        }
                        break;
                    }
                }
                i += 1;
            }
            match s.get(i) {
                None => return Ok(ops),
                Some(b',') => {
                    i += 1;
                    break;
                }
                // Another operator in the same clause.
                Some(b'+' | b'-' | b'=') => {}
                Some(_) => {
                    return Err(err(
                        i,
                        "expected `r`, `w`, `x`, `X`, `s`, `t`, `u`, `g`, `o`, an operator or `,`",
                    ))
                }
            }
        }
    }
}

/// The bits an operator touches: those of `who`, or all of them when none is named.
fn masked(who: u32, bits: u32) -> u32 {
    if who == 0 {
        bits
    } else {
        who & bits
    }
}

fn push_op(ops: &mut Vec<ModeOp>, op: u8, who: u32, perm: u32) {
    match op {
        b'+' => ops.push(ModeOp::Set(masked(who, perm))),
        b'-' => ops.push(ModeOp::Clear(masked(who, perm))),
        _ => {
            ops.push(ModeOp::Clear(if who == 0 { ALL } else { who }));
            ops.push(ModeOp::Set(masked(who, perm)));
        }
    }
}

fn push_exec(ops: &mut Vec<ModeOp>, op: u8, who: u32) {
    let bits = masked(who, EXEC);
    ops.push(if op == b'-' {
        ModeOp::ClearIfExec(bits)
    } else {
        ModeOp::SetIfExec(bits)
    });
}

fn copy_targets(who: u32) -> u8 {
    if who == 0 {
        return 0b111;
    }
    u8::from(who & 0o400 != 0) | u8::from(who & 0o040 != 0) << 1 | u8::from(who & 0o004 != 0) << 2
}

impl Serialize for Chmod {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Chmod::Octal(m) => s.serialize_u32(*m),
            Chmod::Symbolic(m) => s.serialize_str(&m.text),
        }
    }
}

impl<'de> Deserialize<'de> for Chmod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Octal(u32),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Octal(m) if m <= 0o7777 => Ok(Chmod::Octal(m)),
            Raw::Octal(m) => Err(serde::de::Error::custom(format!("mode {m:o} is above 07777"))),
            Raw::Text(t) => Chmod::parse(&t).map_err(|e| serde::de::Error::custom(format!("`{t}`: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(mode: &str, from: u32, is_dir: bool) -> u32 {
        Chmod::parse(mode)
            .unwrap_or_else(|e| panic!("{mode}: {e}"))
            .apply(from, is_dir)
    }

    #[test]
    fn octal_as_buildkit_parses_it() {
        assert_eq!(Chmod::parse("755"), Ok(Chmod::Octal(0o755)));
        assert_eq!(Chmod::parse("0644"), Ok(Chmod::Octal(0o644)));
        assert_eq!(Chmod::parse("7777"), Ok(Chmod::Octal(0o7777)));
        assert_eq!(Chmod::parse("000000000755"), Ok(Chmod::Octal(0o755)));
        for bad in ["17777", "9", "08", "755a", "0o755", "1e3", "99999999999999999"] {
            assert_eq!(Chmod::parse(bad), Err(ChmodError::Octal), "{bad}");
        }
        assert_eq!(Chmod::parse(""), Err(ChmodError::Empty));
    }

    #[test]
    fn symbolic_syntax_errors() {
        // dchapes-mode's TestParseError cases, and the ones BuildKit's frontend rejects.
        for bad in [
            ",", "q+r", "z", "u", "g", "o", "go", "rwx", "u+x,", "u+q", "+7", "u+x g+w", "a+r;",
        ] {
            assert!(
                matches!(Chmod::parse(bad), Err(ChmodError::Symbolic { .. })),
                "{bad} should be rejected"
            );
        }
        assert_eq!(
            Chmod::parse("u+q"),
            Err(ChmodError::Symbolic {
                at: 3,
                reason: "expected `r`, `w`, `x`, `X`, `s`, `t`, `u`, `g`, `o`, an operator or `,`"
            })
        );
    }

    #[test]
    fn symbolic_apply_table() {
        // (mode, from, is_dir, expected): dchapes-mode's TestApply table (umask 0), the
        // chmod(1) examples, and Linux `X` with `=` and `-`.
        let cases: &[(&str, u32, bool, u32)] = &[
            ("=", 0o777, false, 0o000),
            ("+", 0o777, false, 0o777),
            ("-", 0o421, false, 0o421),
            ("+t", 0o421, false, 0o1421),
            ("-t", 0o1421, false, 0o421),
            ("u+r", 0, false, 0o400),
            ("u+w", 0, false, 0o200),
            ("u+x", 0, false, 0o100),
            ("u+X", 0, false, 0o000),
            ("u+X", 0o001, false, 0o101),
            ("u+X", 0, true, 0o100),
            ("u+s", 0, false, 0o4000),
            ("g+X", 0o100, false, 0o110),
            ("g+s", 0, false, 0o2000),
            ("o+X", 0, true, 0o001),
            ("o+s", 0, false, 0o000),
            ("+r", 0, false, 0o444),
            ("+w", 0, false, 0o222),
            ("+x", 0, false, 0o111),
            ("+x", 0o644, false, 0o755),
            ("+X", 0, false, 0o000),
            ("+X", 0o010, false, 0o111),
            ("+X", 0, true, 0o111),
            ("+s", 0, false, 0o6000),
            ("-r", 0o777, false, 0o333),
            ("-w", 0o777, false, 0o555),
            ("-x", 0o777, false, 0o666),
            ("-s", 0o6777, false, 0o777),
            ("u-r", 0o777, false, 0o377),
            ("u-s", 0o4777, false, 0o777),
            ("u=rw", 0, false, 0o600),
            ("u=rw", 0o777, false, 0o677),
            ("u=", 0o777, false, 0o077),
            ("=rw", 0o777, false, 0o666),
            ("u=g", 0o742, false, 0o442),
            ("u=g-w", 0o722, false, 0o022),
            ("u=g-w", 0o772, false, 0o572),
            ("u+o", 0o021, false, 0o121),
            ("u+g", 0o021, false, 0o221),
            ("u+go", 0o021, false, 0o321),
            ("a=r,ug=rw,u+x", 0o777, false, 0o764),
            ("o+r,g+w,a+t,g-s,u+og", 0o2100, false, 0o1724),
            ("644", 0o777, false, 0o644),
            ("go-w", 0o777, false, 0o755),
            ("u=rwx,go=rx", 0, false, 0o755),
            ("u=rwx,go=u-w", 0, false, 0o755),
            ("go=", 0o777, false, 0o700),
            ("go=u-w", 0o670, false, 0o644),
            ("go=u-w", 0o370, false, 0o311),
            ("g=u", 0o640, false, 0o660),
            // BuildKit's documented example: directories 755, files 644, executables 755.
            ("u=rwX,go=rX", 0o600, true, 0o755),
            ("u=rwX,go=rX", 0o666, false, 0o644),
            ("u=rwX,go=rX", 0o700, false, 0o755),
            ("=rw,+X", 0o766, false, 0o777),
            ("a-X", 0o755, true, 0o644),
            ("a-X", 0o644, false, 0o644),
            ("u+x,g-w,o=", 0o666, false, 0o740),
        ];
        for &(mode, from, is_dir, want) in cases {
            assert_eq!(
                apply(mode, from, is_dir),
                want,
                "{mode} on {from:o} (dir: {is_dir}): got {:o}, want {want:o}",
                apply(mode, from, is_dir)
            );
        }
    }

    #[test]
    fn octal_serializes_as_before_symbolic_as_text() {
        assert_eq!(serde_json::to_string(&Chmod::Octal(0o755)).unwrap(), "493");
        let s = Chmod::parse("go-w,+X").unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"go-w,+X\"");
        assert_eq!(serde_json::from_str::<Chmod>("\"go-w,+X\"").unwrap(), s);
        assert_eq!(serde_json::from_str::<Chmod>("420").unwrap(), Chmod::Octal(0o644));
        assert!(serde_json::from_str::<Chmod>("\"q+r\"").is_err());
        assert!(serde_json::from_str::<Chmod>("4096").is_err());
    }
}
