//! "Did you mean …" suggestions for names a user typed wrong.
//!
//! Every error about an unknown name (environment, repo, service, task, key,
//! verb, flag) goes through here so suggestions read the same everywhere.

/// Edit distance between two strings, counted in characters
/// (Damerau–Levenshtein with adjacent transpositions).
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let (n, m) = (a.len(), b.len());
    let mut d = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            d[i][j] = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                d[i][j] = d[i][j].min(d[i - 2][j - 2] + 1);
            }
        }
    }
    d[n][m]
}

/// The candidates close enough to `input` to be what the user meant, best first.
///
/// Case is ignored for the distance; a candidate that starts with the input
/// (or contains it) also counts, so `sys` suggests `systemManagementServer`.
pub fn closest<'a, I>(input: &str, candidates: I) -> Vec<&'a str>
where
    I: IntoIterator<Item = &'a str>,
{
    let needle = input.to_lowercase();
    let mut scored: Vec<(usize, &'a str)> = candidates
        .into_iter()
        .filter_map(|c| {
            let lc = c.to_lowercase();
            let distance = edit_distance(&needle, &lc);
            let limit = (needle.chars().count().max(lc.chars().count()) / 3).max(1);
            if distance <= limit {
                Some((distance, c))
            } else if needle.chars().count() >= 2 && lc.contains(&needle) {
                Some((limit + 1, c))
            } else {
                None
            }
        })
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.cmp(b.1)));
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().map(|(_, c)| c).take(3).collect()
}

/// A sentence ending an error about an unknown name: "did you mean `x`?" when
/// something is close, otherwise the list of valid names (or "there are none").
pub fn hint<'a, I>(input: &str, candidates: I) -> String
where
    I: IntoIterator<Item = &'a str> + Clone,
{
    let close = closest(input, candidates.clone());
    match close.as_slice() {
        [one] => format!("did you mean `{one}`?"),
        [first, rest @ ..] if !rest.is_empty() => {
            let others: Vec<String> = rest.iter().map(|c| format!("`{c}`")).collect();
            format!("did you mean `{first}` (or {})?", others.join(", "))
        }
        _ => {
            let mut all: Vec<&str> = candidates.into_iter().collect();
            all.sort_unstable();
            all.dedup();
            if all.is_empty() {
                "there are none defined".to_string()
            } else {
                let listed: Vec<String> = all.iter().map(|c| format!("`{c}`")).collect();
                format!("known: {}", listed.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typo_suggests_the_close_name() {
        assert_eq!(
            closest("devlop", ["develop", "staging", "production"]),
            vec!["develop"]
        );
        assert_eq!(
            hint("biuld", ["build", "plan", "status"]),
            "did you mean `build`?"
        );
    }

    #[test]
    fn case_and_prefix_are_forgiven() {
        assert_eq!(
            closest("systemmanagement", ["systemManagementServer", "gateway"]),
            vec!["systemManagementServer"]
        );
    }

    #[test]
    fn nothing_close_lists_every_known_name() {
        assert_eq!(hint("zzz", ["b", "a"]), "known: `a`, `b`");
        assert_eq!(
            hint("zzz", std::iter::empty::<&str>()),
            "there are none defined"
        );
    }

    #[test]
    fn transposition_counts_as_one_edit() {
        assert_eq!(edit_distance("ab", "ba"), 1);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
