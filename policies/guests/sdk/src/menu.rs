//! Finding what the caller asked for on the menu: exact names and aliases, word order and plural
//! differences, small misspellings (edit distance), and the nearest available alternatives when an
//! item is sold out ("86'd") or unknown.

use pulsara_core::config::{MenuItem, ModifierGroup, ModifierOption};

use crate::text::{edit_distance, normalize, tokens, tolerance};

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

fn key(s: &str) -> String {
    tokens(s).join(" ")
}

fn sorted_tokens(s: &str) -> Vec<String> {
    let mut t = tokens(s);
    t.sort();
    t
}

/// Looks `said` up among `menu`'s names and aliases.
pub fn find<'a>(menu: &'a [MenuItem], said: &str) -> Lookup<'a> {
    let q = key(said);
    if q.is_empty() {
        return Lookup::NotFound { suggestions: Vec::new() };
    }
    let q_sorted = sorted_tokens(said);
    // 1. Exact (after normalisation), or the same words in another order.
    if let Some(item) = menu.iter().find(|i| names(i).any(|n| key(n) == q)) {
        return Lookup::Found { item, exact: true };
    }
    if let Some(item) = menu.iter().find(|i| names(i).any(|n| sorted_tokens(n) == q_sorted)) {
        return Lookup::Found { item, exact: true };
    }
    // 2. Misspellings: the smallest edit distance within the tolerance for the name's length.
    let limit = tolerance(q.chars().count());
    let mut best: Vec<&MenuItem> = Vec::new();
    let mut best_d = usize::MAX;
    for item in menu {
        let d = names(item).map(|n| edit_distance(&key(n), &q, limit)).min().unwrap_or(usize::MAX);
        if d <= limit {
            if d < best_d {
                best_d = d;
                best.clear();
            }
            if d == best_d {
                best.push(item);
            }
        }
    }
    match best.len() {
        1 => return Lookup::Found { item: best[0], exact: false },
        n if n > 1 => return Lookup::Ambiguous(best),
        _ => {}
    }
    // 3. Partial names: every word the caller said is in the name ("margherita" → "Pizza
    //    Margherita"), allowing a one-letter slip per word.
    let q_tokens = tokens(said);
    let partial: Vec<&MenuItem> = menu
        .iter()
        .filter(|i| {
            names(i).any(|n| {
                let nt = tokens(n);
                q_tokens.iter().all(|w| nt.iter().any(|t| t == w || edit_distance(t, w, tolerance(w.len()).min(1)) <= tolerance(w.len()).min(1)))
            })
        })
        .collect();
    match partial.len() {
        1 => Lookup::Found { item: partial[0], exact: false },
        n if n > 1 => Lookup::Ambiguous(partial),
        _ => Lookup::NotFound { suggestions: suggestions(menu, said, 3) },
    }
}

/// Up to `n` available items whose names share words with or resemble `said`, best first.
pub fn suggestions<'a>(menu: &'a [MenuItem], said: &str, n: usize) -> Vec<&'a MenuItem> {
    let q = key(said);
    let q_tokens = tokens(said);
    let qlen = q.chars().count();
    let mut scored: Vec<(usize, usize, &MenuItem)> = menu
        .iter()
        .filter(|i| i.available)
        .filter_map(|i| {
            let shared = names(i)
                .map(|name| tokens(name).iter().filter(|t| q_tokens.contains(t)).count())
                .max()
                .unwrap_or(0);
            let d = names(i).map(|name| edit_distance(&key(name), &q, qlen / 2)).min().unwrap_or(usize::MAX);
            (shared > 0 || d <= qlen / 2).then_some((shared, d, i))
        })
        .collect();
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.name.cmp(&b.2.name)));
    scored.into_iter().take(n).map(|(_, _, i)| i).collect()
}

/// Up to `n` available items to offer instead of `item`: same category first, closest in price.
pub fn alternatives<'a>(menu: &'a [MenuItem], item: &MenuItem, n: usize) -> Vec<&'a MenuItem> {
    let mut candidates: Vec<&MenuItem> =
        menu.iter().filter(|i| i.available && i.id != item.id && i.category == item.category).collect();
    candidates.sort_by_key(|i| ((i.price_minor - item.price_minor).abs(), i.name.clone()));
    if candidates.len() < n {
        let shared: Vec<&MenuItem> = suggestions(menu, &item.name, n)
            .into_iter()
            .filter(|i| i.id != item.id && !candidates.iter().any(|c| c.id == i.id))
            .collect();
        candidates.extend(shared);
    }
    candidates.truncate(n);
    candidates
}

/// Finds a modifier option of `item` by what the caller said ("large", "no onions", "extra
/// cheese"), tolerating small misspellings.
pub fn find_option<'a>(item: &'a MenuItem, said: &str) -> Option<(&'a ModifierGroup, &'a ModifierOption)> {
    let q = key(said);
    if q.is_empty() {
        return None;
    }
    let all = || item.modifiers.iter().flat_map(|g| g.options.iter().map(move |o| (g, o)));
    if let Some(found) = all().find(|(_, o)| key(&o.name) == q) {
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
        .map(|(g, o)| (edit_distance(&key(&o.name), &q, limit), g, o))
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
