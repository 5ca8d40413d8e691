//! Statement shapes. A statement that carries a list (a multi-row insert, an `IN (…)`) has a
//! different text for every length of that list, and every text is a statement of its own to
//! whatever keeps prepared statements: on PostgreSQL the server parses and plans each new text,
//! and sqlx keeps, per connection, the text and a description of each of its parameters (a
//! 256-request batch's job insert has thousands). Batches of every length from 1 to 256 made
//! hundreds of texts per table, and the connections' caches held megabytes of them.
//!
//! So lists go out in a few lengths only: up to [`SMALL`] as they are, longer ones as powers of
//! two. An `IN` list is padded to its length by repeating its last item (which changes nothing
//! it matches); the rows of an insert are split into runs of those lengths.

/// Lists up to this long are sent as they are: batches under a steady load are about this size
/// (one per client waiting), and each would otherwise go out as two or three statements, a
/// round trip each. Their descriptions are small.
pub(super) const SMALL: usize = 16;
/// The longest run of rows in one insert.
const LONGEST_RUN: usize = 256;

/// The length an `IN` list of `n` items is sent as.
fn padded_len(n: usize) -> usize {
    if n <= SMALL { n } else { n.next_power_of_two() }
}

/// `items` padded to one of the few lengths, by repeating the last one.
pub(super) fn padded<T: Clone>(mut items: Vec<T>) -> Vec<T> {
    if let Some(last) = items.last().cloned() {
        items.resize(padded_len(items.len()), last);
    }
    items
}

/// `items` padded to one of the few lengths, by repeating the last one.
pub(super) fn padded_from<T: Clone>(items: impl IntoIterator<Item = T>) -> Vec<T> {
    padded(items.into_iter().collect())
}

/// The lengths of the runs `n` rows are inserted in: powers of two while more than [`SMALL`]
/// are left, the rest in one run.
fn run_lengths(n: usize) -> Vec<usize> {
    let mut left = n;
    let mut runs = Vec::new();
    while left > SMALL {
        let run = (1usize << left.ilog2()).min(LONGEST_RUN);
        runs.push(run);
        left -= run;
    }
    if left > 0 {
        runs.push(left);
    }
    runs
}

/// `rows` split into runs of the few lengths, in order.
pub(super) fn runs<T>(rows: Vec<T>) -> Vec<Vec<T>> {
    let mut rows = rows.into_iter();
    run_lengths(rows.len())
        .into_iter()
        .map(|len| rows.by_ref().take(len).collect())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_length_up_to_a_thousand_goes_out_in_a_few_shapes() {
        let mut shapes = BTreeSet::new();
        for n in 0..=1_000 {
            let items: Vec<usize> = (0..n).collect();
            let out = runs(items.clone());
            assert_eq!(
                out.concat(),
                items,
                "rows kept in order, none lost or doubled"
            );
            assert!(out.len() <= 8, "{n} rows in {} statements", out.len());
            shapes.extend(out.iter().map(Vec::len));

            let list = padded(items.clone());
            shapes.extend((n > 0).then_some(list.len()));
            assert!(list.len() >= n && list.len() < 2 * n.max(1) + SMALL);
            let distinct: BTreeSet<_> = list.iter().collect();
            assert_eq!(distinct, items.iter().collect(), "padding adds no new item");
        }
        // 1..=16, then 32, 64, …, 1024 (padded lists) — not a thousand texts.
        assert!(shapes.len() <= 22, "{shapes:?}");
    }
}
