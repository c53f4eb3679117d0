//! One page of a listing: what a caller asked for ([`PageAsk`]: how many items at most, after
//! which place, and whether one more still fits the answer) and what the use case found
//! ([`Page`]: the items and, when more follow, the place of the last one).
//!
//! [`fill`] reads the store a chunk at a time from the place given, keeps what the caller may
//! see, and stops at the page size or when the next item would not fit the answer. Listings
//! whose items the policy filters one by one (keys) may read several chunks for one page; the
//! chunks are the page size plus one, so a page never reads the whole list.

use super::NodeError;

/// What a caller asked of one page of a listing whose places are `C`.
pub struct PageAsk<'a, T, C> {
    /// At most this many items (at least 1).
    pub size: usize,
    /// The page starts after this place; the first page has none.
    pub after: Option<C>,
    /// Whether an item still fits the answer (it counts the item in when it does). The first
    /// item of a page is taken even when it does not, so that every page moves on.
    pub fits: &'a mut dyn FnMut(&T) -> bool,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T, C> {
    /// The items, in the listing's order.
    pub items: Vec<T>,
    /// When more items follow: the place of the last item here, where the next page starts.
    pub next: Option<C>,
}

impl<T, C> Page<T, C> {
    /// The same page with each item turned into another value.
    pub fn map<U>(self, f: impl FnMut(T) -> U) -> Page<U, C> {
        Page {
            items: self.items.into_iter().map(f).collect(),
            next: self.next,
        }
    }
}

/// Fills one page: `read(after, n)` gives at most `n` items after a place, in order (fewer
/// only at the end of the list); `place` gives an item's place; `keep` says whether the caller
/// may see an item (those it may not are passed over, and do not count).
pub fn fill<T, C: Clone>(
    ask: PageAsk<'_, T, C>,
    mut read: impl FnMut(Option<&C>, usize) -> Result<Vec<T>, NodeError>,
    place: impl Fn(&T) -> C,
    keep: impl Fn(&T) -> bool,
) -> Result<Page<T, C>, NodeError> {
    let size = ask.size.max(1);
    let chunk = size.saturating_add(1);
    let mut items: Vec<T> = Vec::new();
    let mut read_to = ask.after;
    loop {
        let batch = read(read_to.as_ref(), chunk)?;
        let exhausted = batch.len() < chunk;
        for item in batch {
            read_to = Some(place(&item));
            if !keep(&item) {
                continue;
            }
            // One more the caller may see, but the page is full or the answer would pass its
            // size with it: the page ends at the item before it.
            if items.len() == size || (!(ask.fits)(&item) && !items.is_empty()) {
                let next = items.last().map(&place);
                return Ok(Page { items, next });
            }
            items.push(item);
        }
        if exhausted {
            return Ok(Page { items, next: None });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The numbers 1..=n as a store would read them: after a place, at most `limit`.
    fn numbers(n: u32) -> impl FnMut(Option<&u32>, usize) -> Result<Vec<u32>, NodeError> {
        move |after, limit| {
            let from = after.map_or(1, |a| a + 1);
            Ok((from..=n).take(limit).collect())
        }
    }

    /// Every page of 1..=n, `size` at a time, keeping what `keep` keeps, each page at most
    /// `budget` (each number costs its value).
    fn pages(n: u32, size: usize, budget: u32, keep: fn(&u32) -> bool) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let mut left = budget;
            let mut fits = |x: &u32| {
                let ok = *x <= left;
                left = left.saturating_sub(*x);
                ok
            };
            let page = fill(
                PageAsk {
                    size,
                    after,
                    fits: &mut fits,
                },
                numbers(n),
                |x| *x,
                keep,
            )
            .unwrap();
            out.push(page.items);
            match page.next {
                Some(next) => after = Some(next),
                None => return out,
            }
        }
    }

    #[test]
    fn pages_of_a_size_cover_the_list_once_in_order() {
        let got = pages(25, 10, u32::MAX, |_| true);
        assert_eq!(got.iter().map(Vec::len).collect::<Vec<_>>(), [10, 10, 5]);
        assert_eq!(got.concat(), (1..=25).collect::<Vec<_>>());
    }

    #[test]
    fn a_list_that_ends_with_a_full_page_says_so_on_that_page() {
        let got = pages(20, 10, u32::MAX, |_| true);
        assert_eq!(got.len(), 2);
        assert!(pages(0, 10, u32::MAX, |_| true) == [Vec::<u32>::new()]);
    }

    #[test]
    fn items_the_caller_may_not_see_are_passed_over_and_do_not_count() {
        let got = pages(100, 7, u32::MAX, |x| x % 3 == 0);
        assert!(got.iter().all(|p| p.len() == 7 || p.len() == 33 % 7));
        assert_eq!(
            got.concat(),
            (1..=100).filter(|x| x % 3 == 0).collect::<Vec<_>>()
        );
        // None to see: one empty page, which reads the whole list in chunks.
        assert_eq!(pages(100, 7, u32::MAX, |_| false), [Vec::<u32>::new()]);
    }

    #[test]
    fn a_page_ends_early_when_the_next_item_would_not_fit() {
        let got = pages(30, 100, 50, |_| true);
        for page in &got {
            let sum: u32 = page.iter().sum();
            assert!(sum <= 50 || page.len() == 1, "{page:?}");
        }
        assert_eq!(got.concat(), (1..=30).collect::<Vec<_>>());
        // 1..=9 is 45; 10 would pass 50.
        assert_eq!(got[0], (1..=9).collect::<Vec<_>>());
    }

    #[test]
    fn an_item_bigger_than_the_answer_comes_alone() {
        let got = pages(5, 10, 3, |_| true);
        assert_eq!(got, [vec![1, 2], vec![3], vec![4], vec![5]]);
    }
}
