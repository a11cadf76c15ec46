//! Finding what the caller asked for on the menu: exact names and aliases, word order and plural
//! differences, small misspellings (edit distance), and the nearest available alternatives when an
//! item is sold out ("86'd") or unknown.

use std::cell::OnceCell;

use pulsara_core::config::{MenuItem, ModifierGroup, ModifierOption};

use crate::text::{edit_distance, match_key, normalize, tokens, tolerance, Letters};

/// The outcome of looking a spoken name up on the menu.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// One item matches. `exact` is false when it was found through a misspelling or a partial
    /// name, so the read-back should say the menu's name.
    Found { item: &'a MenuItem, exact: bool },
    /// Several items match equally well (e.g. "pizza"); ask which one.
    Ambiguous(Vec<&'a MenuItem>),
    /// Nothing matches; the closest names, if any resemble the request.
    NotFound { suggestions: Vec<&'a MenuItem> },
}

fn names(item: &MenuItem) -> impl Iterator<Item = &str> {
    std::iter::once(item.name.as_str()).chain(item.aliases.iter().map(String::as_str))
}

fn sorted_tokens(s: &str) -> Vec<String> {
    let mut t = tokens(s);
    t.sort();
    t
}

/// One name or alias of an item, normalised once.
#[derive(Clone)]
struct Name {
    item: usize,
    /// Its words, singular, joined by single spaces ([`match_key`]).
    key: String,
    /// [`Letters::mask_of`] `key`: a cheap first test before letter counts and distances.
    mask: u32,
    /// Length of `key` in chars.
    len: usize,
}

impl Name {
    fn new(item: usize, name: &str) -> Self {
        let key = match_key(name);
        let mask = Letters::mask_of(&key);
        let len = if key.is_ascii() { key.len() } else { key.chars().count() };
        Self { item, key, mask, len }
    }

    /// Whether the name could be within `limit` edits of a query with this length and letters:
    /// the cheap tests first (length, letters present), then letter counts.
    fn may_be_within(&self, limit: usize, q_len: usize, q_letters: &Letters, q_mask: u32) -> bool {
        self.len.abs_diff(q_len) <= limit
            && Letters::mask_bound(self.mask, q_mask) <= limit
            && Letters::of(&self.key).distance_bound(q_letters) <= limit
    }

    fn words(&self) -> impl Iterator<Item = &str> {
        self.key.split(' ')
    }
}

/// The words of a key in sorted order, joined: equal for the same words in any order.
fn sorted_key(key: &str) -> String {
    let mut words: Vec<&str> = key.split(' ').collect();
    words.sort_unstable();
    words.join(" ")
}

/// The letters [`singular`](crate::text::tokens) may drop from a word's end (`s`, `es`).
const PLURAL_LETTERS: u32 = 1 << (b's' - b'a') | 1 << (b'e' - b'a');

/// The [`Letters::mask_of`] the raw text's letters and digits would give, without normalising
/// it (ASCII only; `None` otherwise).
fn raw_mask(name: &str) -> Option<u32> {
    let mut mask = 0u32;
    for b in name.bytes() {
        match b {
            b'a'..=b'z' => mask |= 1 << (b - b'a'),
            b'A'..=b'Z' => mask |= 1 << (b - b'A'),
            b'0'..=b'9' => mask |= 1 << 26,
            0x80.. => return None,
            _ => {}
        }
    }
    Some(mask)
}

/// The first byte of `name`'s [`match_key`] when it can be read off cheaply (ASCII up to the
/// first letter or digit), `None` when the key must be computed to know.
fn first_key_byte(name: &str) -> Option<u8> {
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            return Some(b.to_ascii_lowercase());
        }
        if !b.is_ascii() {
            return None;
        }
    }
    None
}

/// One name or alias as written, what can be read off it without normalising, and its
/// normalised form once something needed it.
struct Entry<'a> {
    item: usize,
    text: &'a str,
    first: Option<u8>,
    mask: Option<u32>,
    name: OnceCell<Name>,
}

/// A menu prepared for lookups. Each name and alias is normalised at most once per index, and
/// only when a lookup needs it: exact names, reordered words and misspellings skip the names
/// that cannot start like the request or whose raw letters rule a match out; partial names and
/// suggestions normalise the rest. Build one per tool call; [`find`] and friends build one each
/// time.
pub struct MenuIndex<'a> {
    menu: &'a [MenuItem],
    entries: OnceCell<Vec<Entry<'a>>>,
}

impl<'a> MenuIndex<'a> {
    pub fn new(menu: &'a [MenuItem]) -> Self {
        Self { menu, entries: OnceCell::new() }
    }

    fn entries(&self) -> &[Entry<'a>] {
        self.entries.get_or_init(|| {
            let mut entries = Vec::with_capacity(self.menu.len() * 2);
            for (item, entry) in self.menu.iter().enumerate() {
                for text in names(entry) {
                    entries.push(Entry {
                        item,
                        text,
                        first: first_key_byte(text),
                        mask: raw_mask(text),
                        name: OnceCell::new(),
                    });
                }
            }
            entries
        })
    }

    fn name<'s>(&self, e: &'s Entry<'a>) -> &'s Name {
        e.name.get_or_init(|| Name::new(e.item, e.text))
    }

    /// Every name and alias, normalised.
    fn all<'s>(&'s self) -> impl Iterator<Item = &'s Name> + use<'a, 's> {
        self.entries().iter().map(|e| self.name(e))
    }

    /// How many names and aliases have been normalised so far.
    #[cfg(test)]
    fn normalised(&self) -> usize {
        self.entries.get().map_or(0, |v| v.iter().filter(|e| e.name.get().is_some()).count())
    }

    /// The names that may be within `limit` edits of a request whose key has `q_len` chars and
    /// letter mask `q_mask`. A name not normalised yet is first judged from its raw text (its
    /// letters and length), and only normalised when that cannot rule it out.
    fn near(&self, q_len: usize, q_mask: u32, limit: usize) -> Vec<&Name> {
        let mut near = Vec::new();
        for e in self.entries() {
            if e.name.get().is_none() {
                if let Some(raw) = e.mask {
                    // The key is never longer than the raw text, and has the raw letters except
                    // perhaps an `s` or `e` a plural lost.
                    let missing = (q_mask & !raw).count_ones();
                    let extra = (raw & !q_mask & !PLURAL_LETTERS).count_ones();
                    if e.text.len() + limit < q_len || missing.max(extra) as usize > limit {
                        continue;
                    }
                }
            }
            let n = self.name(e);
            if n.len.abs_diff(q_len) <= limit && Letters::mask_bound(n.mask, q_mask) <= limit {
                near.push(n);
            }
        }
        near
    }

    /// The item with a name or alias whose key is `q`.
    fn exact(&self, q: &str) -> Option<&'a MenuItem> {
        let first = q.as_bytes().first().copied();
        self.entries()
            .iter()
            .filter(|e| e.first.is_none_or(|b| Some(b) == first))
            .find(|e| self.name(e).key == q)
            .map(|e| &self.menu[e.item])
    }

    /// The menu this index was built over.
    pub fn menu(&self) -> &'a [MenuItem] {
        self.menu
    }

    /// Looks `said` up among the menu's names and aliases.
    pub fn find(&self, said: &str) -> Lookup<'a> {
        let q = match_key(said);
        let q_letters = Letters::of(&q);
        if q.is_empty() {
            return Lookup::NotFound { suggestions: Vec::new() };
        }
        // 1. Exact (after normalisation), or the same words in another order (same words means
        //    the same key length, which rules out nearly every name before sorting).
        if let Some(item) = self.exact(&q) {
            return Lookup::Found { item, exact: true };
        }
        let q_len = q.chars().count();
        let q_mask = q_letters.mask();
        let q_sorted = sorted_key(&q);
        if let Some(n) = self
            .near(q_len, q_mask, 0)
            .iter()
            .find(|n| n.key.len() == q.len() && sorted_key(&n.key) == q_sorted)
        {
            return Lookup::Found { item: &self.menu[n.item], exact: true };
        }
        // 2. Misspellings: the smallest edit distance within the tolerance for the name's length.
        let limit = tolerance(q_len);
        let mut best: Vec<usize> = Vec::new();
        let mut best_d = limit;
        for n in self.near(q_len, q_mask, limit) {
            if !n.may_be_within(best_d, q_len, &q_letters, q_mask) {
                continue;
            }
            let d = edit_distance(&n.key, &q, best_d);
            if d > best_d {
                continue;
            }
            if d < best_d {
                best_d = d;
                best.clear();
            }
            if !best.contains(&n.item) {
                best.push(n.item);
            }
        }
        match best.len() {
            1 => return Lookup::Found { item: &self.menu[best[0]], exact: false },
            n if n > 1 => return Lookup::Ambiguous(best.into_iter().map(|i| &self.menu[i]).collect()),
            _ => {}
        }
        // 3. Partial names: every word the caller said is in the name ("margherita" → "Pizza
        //    Margherita"), allowing a one-letter slip per word.
        let mut partial: Vec<usize> = Vec::new();
        for n in self.all() {
            if partial.contains(&n.item) {
                continue;
            }
            let all_in = q.split(' ').all(|w| {
                let slip = tolerance(w.len()).min(1);
                n.words().any(|t| t == w || edit_distance(t, w, slip) <= slip)
            });
            if all_in {
                partial.push(n.item);
            }
        }
        match partial.len() {
            1 => Lookup::Found { item: &self.menu[partial[0]], exact: false },
            n if n > 1 => Lookup::Ambiguous(partial.into_iter().map(|i| &self.menu[i]).collect()),
            _ => Lookup::NotFound { suggestions: self.suggestions(said, 3) },
        }
    }

    /// Up to `n` available items whose names share words with or resemble `said`, best first.
    pub fn suggestions(&self, said: &str, n: usize) -> Vec<&'a MenuItem> {
        let q = match_key(said);
        let q_letters = Letters::of(&q);
        let q_words: Vec<&str> = q.split(' ').filter(|w| !w.is_empty()).collect();
        let q_len = q.chars().count();
        let limit = q_len / 2;
        let q_mask = q_letters.mask();
        // (words shared, edit distance) per item: the best over its names.
        let mut best: Vec<Option<(usize, usize)>> = vec![None; self.menu.len()];
        for name in self.all() {
            if !self.menu[name.item].available {
                continue;
            }
            let shared = name.words().filter(|t| q_words.contains(t)).count();
            let d = if name.may_be_within(limit, q_len, &q_letters, q_mask) {
                edit_distance(&name.key, &q, limit)
            } else {
                limit + 1
            };
            let slot = &mut best[name.item];
            *slot = Some(match *slot {
                None => (shared, d),
                Some((s, e)) => (s.max(shared), e.min(d)),
            });
        }
        let mut scored: Vec<(usize, usize, &'a MenuItem)> = best
            .into_iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|(shared, d)| (shared, d, &self.menu[i])))
            .filter(|&(shared, d, _)| shared > 0 || d <= limit)
            .collect();
        scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.name.cmp(&b.2.name)));
        scored.into_iter().take(n).map(|(_, _, i)| i).collect()
    }

    /// Up to `n` available items to offer instead of `item`: same category first, closest in
    /// price, then names that resemble it.
    pub fn alternatives(&self, item: &MenuItem, n: usize) -> Vec<&'a MenuItem> {
        let mut candidates: Vec<&'a MenuItem> =
            self.menu.iter().filter(|i| i.available && i.id != item.id && i.category == item.category).collect();
        candidates.sort_by(|a, b| {
            (a.price_minor - item.price_minor)
                .abs()
                .cmp(&(b.price_minor - item.price_minor).abs())
                .then_with(|| a.name.cmp(&b.name))
        });
        if candidates.len() < n {
            let shared: Vec<&'a MenuItem> = self
                .suggestions(&item.name, n)
                .into_iter()
                .filter(|i| i.id != item.id && !candidates.iter().any(|c| c.id == i.id))
                .collect();
            candidates.extend(shared);
        }
        candidates.truncate(n);
        candidates
    }
}

/// Looks `said` up among `menu`'s names and aliases (see [`MenuIndex::find`]; build a
/// [`MenuIndex`] instead when looking up several names in one call).
pub fn find<'a>(menu: &'a [MenuItem], said: &str) -> Lookup<'a> {
    MenuIndex::new(menu).find(said)
}

/// Up to `n` available items whose names share words with or resemble `said`, best first.
pub fn suggestions<'a>(menu: &'a [MenuItem], said: &str, n: usize) -> Vec<&'a MenuItem> {
    MenuIndex::new(menu).suggestions(said, n)
}

/// Up to `n` available items to offer instead of `item`: same category first, closest in price.
pub fn alternatives<'a>(menu: &'a [MenuItem], item: &MenuItem, n: usize) -> Vec<&'a MenuItem> {
    MenuIndex::new(menu).alternatives(item, n)
}

/// Finds a modifier option of `item` by what the caller said ("large", "no onions", "extra
/// cheese"), tolerating small misspellings.
pub fn find_option<'a>(item: &'a MenuItem, said: &str) -> Option<(&'a ModifierGroup, &'a ModifierOption)> {
    let q = match_key(said);
    if q.is_empty() {
        return None;
    }
    let all = || item.modifiers.iter().flat_map(|g| g.options.iter().map(move |o| (g, o)));
    if let Some(found) = all().find(|(_, o)| match_key(&o.name) == q) {
        return Some(found);
    }
    // "size large" / "large size": the group name plus the option name.
    if let Some(found) = all().find(|(g, o)| {
        let combined = format!("{} {}", g.name, o.name);
        sorted_tokens(&combined) == sorted_tokens(said)
    }) {
        return Some(found);
    }
    let limit = tolerance(q.chars().count());
    all()
        .map(|(g, o)| (edit_distance(&match_key(&o.name), &q, limit), g, o))
        .filter(|(d, _, _)| *d <= limit)
        .min_by_key(|(d, _, _)| *d)
        .map(|(_, g, o)| (g, o))
}

/// A short spoken description: `"Pizza Margherita"`, or with options `"Pizza Margherita (large, extra basil)"`.
pub fn describe(name: &str, options: &[String]) -> String {
    if options.is_empty() {
        name.to_owned()
    } else {
        format!("{name} ({})", options.join(", "))
    }
}

/// Normalised form used to compare what was said with menu text.
pub fn normalized(s: &str) -> String {
    normalize(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pulsara_core::config::ModifierOption;

    fn item(id: &str, name: &str, aliases: &[&str], cat: &str, price: i64, available: bool) -> MenuItem {
        MenuItem {
            id: id.into(),
            name: name.into(),
            aliases: aliases.iter().map(|s| s.to_string()).collect(),
            category: cat.into(),
            description: String::new(),
            price_minor: price,
            available,
            modifiers: vec![ModifierGroup {
                name: "Size".into(),
                required: true,
                min: 1,
                max: 1,
                options: vec![
                    ModifierOption { name: "Small".into(), price_minor: 0, available: true },
                    ModifierOption { name: "Large".into(), price_minor: 300, available: true },
                ],
            }],
        }
    }

    fn menu() -> Vec<MenuItem> {
        vec![
            item("1", "Pizza Margherita", &["margherita"], "pizza", 900, true),
            item("2", "Pizza Diavola", &["pepperoni pizza"], "pizza", 1100, true),
            item("3", "Quattro Formaggi", &["four cheese"], "pizza", 1200, false),
            item("4", "Tiramisu", &[], "dessert", 600, true),
            item("5", "Pizza Capricciosa", &[], "pizza", 1250, true),
        ]
    }

    #[test]
    fn exact_alias_and_order() {
        let m = menu();
        assert!(matches!(find(&m, "margherita"), Lookup::Found { item, exact: true } if item.id == "1"));
        assert!(matches!(find(&m, "Margherita Pizza"), Lookup::Found { item, exact: true } if item.id == "1"));
        assert!(matches!(find(&m, "pepperoni pizzas"), Lookup::Found { item, exact: true } if item.id == "2"));
    }

    #[test]
    fn exact_matches_before_and_after_the_full_index_is_built() {
        let mut m = menu();
        m.push(item("6", "Àrancini (3 pcs)", &["'suppli' balls"], "starter", 500, true));
        let index = MenuIndex::new(&m);
        // Exact hits go through the cheap path (nothing normalised up front)…
        assert!(matches!(index.find("arancini 3 pcs"), Lookup::Found { item, exact: true } if item.id == "6"));
        assert!(matches!(index.find("suppli ball"), Lookup::Found { item, exact: true } if item.id == "6"));
        let total = m.len() + m.iter().map(|i| i.aliases.len()).sum::<usize>();
        assert!(index.normalised() < total / 2, "{} of {total}", index.normalised());
        // …so do misspellings (only names whose raw letters could match are normalised)…
        assert!(matches!(index.find("tiramissu"), Lookup::Found { item, exact: false } if item.id == "4"));
        assert!(index.normalised() < total, "{} of {total}", index.normalised());
        // …an unknown name normalises the rest (suggestions need them), and lookups then reuse them.
        assert!(matches!(index.find("sushi"), Lookup::NotFound { .. }));
        assert_eq!(index.normalised(), total);
        assert!(matches!(index.find("arancini 3 pcs"), Lookup::Found { item, exact: true } if item.id == "6"));
        assert!(matches!(index.find("Pepperoni Pizza"), Lookup::Found { item, exact: true } if item.id == "2"));
    }

    fn outcome(l: &Lookup<'_>) -> String {
        match l {
            Lookup::Found { item, exact } => format!("found {} {exact}", item.id),
            Lookup::Ambiguous(v) => format!("ambiguous {:?}", v.iter().map(|i| &i.id).collect::<Vec<_>>()),
            Lookup::NotFound { suggestions } => {
                format!("not found {:?}", suggestions.iter().map(|i| &i.id).collect::<Vec<_>>())
            }
        }
    }

    #[test]
    fn raw_text_shortcuts_agree_with_the_full_index() {
        let mut m = menu();
        m.push(item("6", "Dishes of the Day", &["daily dishes", "chef's choice"], "mains", 1500, true));
        m.push(item("7", "Crème Brûlée", &["burnt cream"], "dessert", 700, true));
        m.push(item("8", "Fish & Chips (2 pcs)", &["chippy"], "mains", 1300, true));
        let queries = [
            "margherita", "margarita", "margheritas", "pizza margarita", "margherita pizzas", "diavolla",
            "dish of the days", "day of the dishes", "days of dish", "dailly dish", "chefs choice", "chef choise",
            "creme brulee", "cream burnt", "burnt creams", "fish chip 2 pc", "chips fish 2 pcs", "chipy",
            "tiramisu", "tiramisus", "tirramisu", "pizza", "quatro formagi", "four cheeses", "pizza hawaii", "sushi",
        ];
        for q in queries {
            let fresh = MenuIndex::new(&m);
            let built = MenuIndex::new(&m);
            assert_eq!(built.all().count(), built.normalised());
            assert_eq!(outcome(&fresh.find(q)), outcome(&built.find(q)), "{q:?}");
        }
    }

    #[test]
    fn misspelling_and_partial() {
        let m = menu();
        assert!(matches!(find(&m, "tiramissu"), Lookup::Found { item, exact: false } if item.id == "4"));
        assert!(matches!(find(&m, "margarita"), Lookup::Found { item, exact: false } if item.id == "1"));
        assert!(matches!(find(&m, "diavola"), Lookup::Found { item, exact: false } if item.id == "2"));
        assert!(matches!(find(&m, "pizza"), Lookup::Ambiguous(v) if v.len() == 3));
    }

    #[test]
    fn unknown_gives_suggestions() {
        match find(&m_ref(), "pizza hawaii") {
            Lookup::NotFound { suggestions } => {
                assert!(!suggestions.is_empty());
                assert!(suggestions.iter().all(|i| i.available));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(find(&m_ref(), "sushi"), Lookup::NotFound { suggestions } if suggestions.is_empty()));
    }

    fn m_ref() -> Vec<MenuItem> {
        menu()
    }

    #[test]
    fn alternatives_same_category_nearest_price() {
        let m = menu();
        let alts = alternatives(&m, &m[2], 2);
        let ids: Vec<&str> = alts.iter().map(|i| i.id.as_str()).collect();
        assert_eq!(ids, vec!["5", "2"]);
    }

    #[test]
    fn options() {
        let m = menu();
        assert_eq!(find_option(&m[0], "large").map(|(_, o)| o.name.as_str()), Some("Large"));
        assert_eq!(find_option(&m[0], "large size").map(|(_, o)| o.name.as_str()), Some("Large"));
        assert_eq!(find_option(&m[0], "smal").map(|(_, o)| o.name.as_str()), Some("Small"));
        assert!(find_option(&m[0], "gluten free").is_none());
    }
}
