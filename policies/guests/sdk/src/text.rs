//! Text helpers for matching what a caller said (as transcribed) against restaurant data:
//! normalisation, word tokens and edit distance.

/// Lower-case, ASCII-folded for common Latin accents, punctuation removed, single spaces.
pub fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut space = true;
    for c in s.chars() {
        let c = fold(c);
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
            space = false;
        } else if c == '\'' || c == '’' {
            // "chef's" → "chefs"
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

fn fold(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ä' | 'ã' | 'å' => 'a',
        'è' | 'é' | 'ê' | 'ë' => 'e',
        'ì' | 'í' | 'î' | 'ï' => 'i',
        'ò' | 'ó' | 'ô' | 'ö' | 'õ' => 'o',
        'ù' | 'ú' | 'û' | 'ü' => 'u',
        'ñ' => 'n',
        'ç' => 'c',
        'À' | 'Á' | 'Â' | 'Ä' => 'a',
        'È' | 'É' | 'Ê' | 'Ë' => 'e',
        _ => c,
    }
}

/// Words of [`normalize`]d text, with a trailing plural `s` removed from words longer than three
/// letters ("pizzas" → "pizza", "ribs" stays).
pub fn tokens(s: &str) -> Vec<String> {
    normalize(s).split(' ').filter(|w| !w.is_empty()).map(|w| singular(w).to_owned()).collect()
}

fn singular(w: &str) -> &str {
    if w.len() > 4 && w.ends_with("es") && (w.ends_with("ches") || w.ends_with("shes")) {
        &w[..w.len() - 2]
    } else if w.len() > 3 && w.ends_with('s') && !w.ends_with("ss") {
        &w[..w.len() - 1]
    } else {
        w
    }
}

/// Levenshtein distance over chars, giving up (returning `limit + 1`) once it exceeds `limit`.
pub fn edit_distance(a: &str, b: &str, limit: usize) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > limit {
        return limit + 1;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        let mut row_min = cur[0];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
            row_min = row_min.min(cur[j + 1]);
        }
        if row_min > limit {
            return limit + 1;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()].min(limit + 1)
}

/// How many edits a name of this length may be off by and still count as a match.
pub fn tolerance(len: usize) -> usize {
    match len {
        0..=3 => 0,
        4..=5 => 1,
        6..=10 => 2,
        _ => 3,
    }
}

/// Joins with commas and a final "or"/"and": `["a","b","c"]` → `"a, b or c"`.
pub fn join_words(items: &[String], last: &str) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., tail] => format!("{} {last} {tail}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(normalize("  Crème-Brûlée!! "), "creme brulee");
        assert_eq!(normalize("Chef's  Special"), "chefs special");
        assert_eq!(tokens("Two Pizzas, extra cheeses"), vec!["two", "pizza", "extra", "cheese"]);
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("margherita", "margarita", 5), 2);
        assert_eq!(edit_distance("kitten", "sitting", 5), 3);
        assert_eq!(edit_distance("abc", "abc", 0), 0);
        assert_eq!(edit_distance("a", "abcdef", 2), 3);
        assert_eq!(edit_distance("", "ab", 5), 2);
    }

    #[test]
    fn joins() {
        let v: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(join_words(&v, "or"), "a, b or c");
        assert_eq!(join_words(&v[..1], "or"), "a");
    }
}
