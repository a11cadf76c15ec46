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

/// [`tokens`] joined by single spaces: the form names are compared in. One pass over ASCII
/// text (menu indexes build this for every name, so it is the hot path of a lookup-heavy
/// policy).
pub fn match_key(s: &str) -> String {
    if !s.is_ascii() {
        return tokens(s).join(" ");
    }
    let mut key = String::with_capacity(s.len());
    let mut word_start: Option<usize> = None;
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() {
            if word_start.is_none() {
                if !key.is_empty() {
                    key.push(' ');
                }
                word_start = Some(key.len());
            }
            key.push(char::from(b.to_ascii_lowercase()));
        } else if b == b'\'' {
            // "chef's" → "chefs": the word goes on.
        } else if let Some(start) = word_start.take() {
            let keep = start + singular(&key[start..]).len();
            key.truncate(keep);
        }
    }
    if let Some(start) = word_start {
        let keep = start + singular(&key[start..]).len();
        key.truncate(keep);
    }
    key
}

/// The [`Letters`] bucket of a char: `a`–`z` case-insensitive, digits together, everything else
/// but spaces together.
fn bucket(c: char) -> Option<usize> {
    match c {
        ' ' => None,
        'a'..='z' => Some(c as usize - 'a' as usize),
        'A'..='Z' => Some(c as usize - 'A' as usize),
        '0'..='9' => Some(26),
        _ => Some(27),
    }
}

/// How often each letter occurs in a text: a cheap lower bound on the edit distance between two
/// texts, used to skip most of a menu before computing real distances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Letters([u8; 28]);

impl Letters {
    /// Counts `a`–`z` (case-insensitive), digits together, and everything else but spaces
    /// together (counts saturate at 255).
    pub fn of(s: &str) -> Self {
        let mut counts = [0u8; 28];
        for c in s.chars() {
            if let Some(bucket) = bucket(c) {
                counts[bucket] = counts[bucket].saturating_add(1);
            }
        }
        Self(counts)
    }

    /// Which buckets of [`Letters::of`]`(s)` occur at all, one bit each, without counting.
    pub fn mask_of(s: &str) -> u32 {
        if s.is_ascii() {
            s.bytes().filter_map(|b| bucket(char::from(b))).fold(0, |m, b| m | 1 << b)
        } else {
            s.chars().filter_map(bucket).fold(0, |m, b| m | 1 << b)
        }
    }

    /// Which buckets occur at all, one bit each (as [`Letters::mask_of`]).
    pub fn mask(&self) -> u32 {
        self.0.iter().enumerate().fold(0, |m, (i, &n)| if n > 0 { m | 1 << i } else { m })
    }

    /// A weaker but much cheaper lower bound than [`Letters::distance_bound`], from two
    /// [`Letters::mask`]s: every letter one text has and the other lacks takes an edit.
    pub fn mask_bound(a: u32, b: u32) -> usize {
        (a & !b).count_ones().max((b & !a).count_ones()) as usize
    }

    /// A lower bound on [`edit_distance`] between the two texts: an insertion or deletion
    /// changes one count by one, a substitution moves one count from a letter to another.
    pub fn distance_bound(&self, other: &Letters) -> usize {
        let (mut more, mut fewer) = (0usize, 0usize);
        for (a, b) in self.0.iter().zip(&other.0) {
            if a > b {
                more += usize::from(a - b);
            } else {
                fewer += usize::from(b - a);
            }
        }
        more.max(fewer)
    }
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
    if a.is_ascii() && b.is_ascii() {
        // Menu text is almost always ASCII after `normalize`: compare bytes, no allocation.
        levenshtein(a.as_bytes(), b.as_bytes(), limit)
    } else {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        levenshtein(&a, &b, limit)
    }
}

/// Rows up to this length live on the stack.
const STACK_ROW: usize = 64;

/// Levenshtein distance capped at `limit + 1`, computing only the diagonal band of width
/// `2 * limit + 1` (cells further off cannot be within the limit).
fn levenshtein<T: PartialEq>(a: &[T], b: &[T], limit: usize) -> usize {
    let over = limit + 1;
    if a.len().abs_diff(b.len()) > limit {
        return over;
    }
    let mut heap_rows;
    let mut stack_rows = [0usize; 2 * (STACK_ROW + 2)];
    let width = b.len() + 2;
    let rows: &mut [usize] = if b.len() <= STACK_ROW {
        &mut stack_rows[..2 * width]
    } else {
        heap_rows = vec![0usize; 2 * width];
        &mut heap_rows
    };
    let (mut prev, mut cur) = rows.split_at_mut(width);
    // Row 0: j insertions; index b.len() + 1 is a sentinel outside the band.
    for (j, cell) in prev.iter_mut().enumerate() {
        *cell = j.min(over);
    }
    prev[b.len() + 1] = over;
    for (i, ca) in a.iter().enumerate() {
        let row = i + 1;
        let lo = row.saturating_sub(limit).max(1);
        let hi = (row + limit).min(b.len());
        cur[lo - 1] = if lo == 1 { row.min(over) } else { over };
        let mut row_min = cur[lo - 1];
        for j in lo..=hi {
            let cost = usize::from(*ca != b[j - 1]);
            let cell = (prev[j - 1] + cost).min(prev[j] + 1).min(cur[j - 1] + 1).min(over);
            cur[j] = cell;
            row_min = row_min.min(cell);
        }
        cur[hi + 1] = over;
        if row_min > limit {
            return over;
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()].min(over)
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
        assert_eq!(normalize("  Fish & Chips, (LARGE)!"), "fish chips large");
        assert_eq!(normalize("Fish & Chips ’n’ Peas"), "fish chips n peas");
        assert_eq!(tokens("Two Pizzas, extra cheeses"), vec!["two", "pizza", "extra", "cheese"]);
        assert_eq!(match_key(" Two Pizzas,  extra cheeses!"), "two pizza extra cheese");
        assert_eq!(match_key("!!"), "");
        for text in ["Chef's Specials", "  FISH & chips ", "Crème Brûlées", "dishes of 3 boxes", "gas", "it's"] {
            let key = match_key(text);
            assert_eq!(key, tokens(text).join(" "), "{text:?}");
            assert_eq!(Letters::mask_of(&key), Letters::of(&key).mask(), "{text:?}");
        }
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("margherita", "margarita", 5), 2);
        assert_eq!(edit_distance("kitten", "sitting", 5), 3);
        assert_eq!(edit_distance("abc", "abc", 0), 0);
        assert_eq!(edit_distance("a", "abcdef", 2), 3);
        assert_eq!(edit_distance("", "ab", 5), 2);
        assert_eq!(edit_distance("crème", "creme", 2), 1);
        let long_a = "a".repeat(80);
        let long_b = format!("{}b", "a".repeat(79));
        assert_eq!(edit_distance(&long_a, &long_b, 3), 1);
    }

    /// The textbook full-matrix distance, as the oracle for the banded one.
    fn reference(a: &str, b: &str) -> usize {
        let a: Vec<char> = a.chars().collect();
        let b: Vec<char> = b.chars().collect();
        let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
        for (i, row) in d.iter_mut().enumerate() {
            row[0] = i;
        }
        for j in 0..=b.len() {
            d[0][j] = j;
        }
        for i in 1..=a.len() {
            for j in 1..=b.len() {
                let cost = usize::from(a[i - 1] != b[j - 1]);
                d[i][j] = (d[i - 1][j - 1] + cost).min(d[i - 1][j] + 1).min(d[i][j - 1] + 1);
            }
        }
        d[a.len()][b.len()]
    }

    #[test]
    fn banded_distance_matches_reference_and_letters_bound_it() {
        // Every pair of short strings over a small alphabet, at every limit.
        let alphabet = ['a', 'b', 'é'];
        let mut words = vec![String::new()];
        for _ in 0..4 {
            let longer: Vec<String> =
                words.iter().flat_map(|w| alphabet.iter().map(move |c| format!("{w}{c}"))).collect();
            words.extend(longer.into_iter().filter(|w| w.chars().count() <= 4));
            words.sort();
            words.dedup();
        }
        for a in &words {
            for b in &words {
                let exact = reference(a, b);
                let (la, lb) = (Letters::of(a), Letters::of(b));
                assert!(la.distance_bound(&lb) <= exact, "{a:?} {b:?}");
                assert!(Letters::mask_bound(la.mask(), lb.mask()) <= la.distance_bound(&lb), "{a:?} {b:?}");
                for limit in 0..5 {
                    assert_eq!(edit_distance(a, b, limit), exact.min(limit + 1), "{a:?} {b:?} limit {limit}");
                }
            }
        }
    }

    #[test]
    fn joins() {
        let v: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        assert_eq!(join_words(&v, "or"), "a, b or c");
        assert_eq!(join_words(&v[..1], "or"), "a");
    }
}
