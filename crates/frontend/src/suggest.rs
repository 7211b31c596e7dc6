//! Suggest finds the closest known word to a misspelt one ("did you mean").

/// Levenshtein distance between two strings, by characters.
pub fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The option closest to `word`, if one is close enough to be a likely typo: at most
/// two edits, and fewer edits than `word` has characters.
pub fn closest<'a>(word: &str, options: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = 2.min(word.chars().count().saturating_sub(1));
    let mut best: Option<(usize, &'a str)> = None;
    for o in options {
        let d = distance(word, o);
        if d == 0 {
            continue;
        }
        let better = match best {
            Some((bd, _)) => d < bd,
            None => true,
        };
        if d <= limit && better {
            best = Some((d, o));
        }
    }
    best.map(|(_, o)| o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_typos_only() {
        assert_eq!(closest("RUNN", ["RUN", "COPY"]), Some("RUN"));
        assert_eq!(closest("COPPY", ["RUN", "COPY"]), Some("COPY"));
        assert_eq!(closest("XYZZY", ["RUN", "COPY"]), None);
    }
}
