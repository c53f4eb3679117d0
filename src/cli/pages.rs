//! The client's side of the API's paged lists (docs/api.md, "Paging and times"): a command
//! that shows a list asks for page after page until the node says there is no more, so that
//! it shows all of it, however long.

use std::future::Future;

/// Items per page the client asks for: the most a node gives, so a list takes few calls.
pub const PAGE_SIZE: i32 = 1000;

/// Every item of a paged list. `page(token)` asks for the page at `token` (empty for the
/// first) and gives its items and its `next_page_token`.
pub async fn all_pages<T, F, Fut>(mut page: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = anyhow::Result<(Vec<T>, String)>>,
{
    let mut items = Vec::new();
    let mut token = String::new();
    loop {
        let (mut got, next) = page(token.clone()).await?;
        items.append(&mut got);
        if next.is_empty() {
            return Ok(items);
        }
        // A node that gave the same token again would keep the client here for ever.
        if next == token {
            anyhow::bail!("the node gave the same page token twice; the list is incomplete");
        }
        token = next;
    }
}

/// A time of the API as the client shows it: RFC 3339 in UTC (`2026-03-01T09:16:03Z`), or
/// `-` when the node sent none.
pub fn time_text(t: Option<&prost_types::Timestamp>) -> String {
    t.map_or_else(|| "-".to_string(), ToString::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pages_are_asked_for_until_the_last() {
        let pages = [(vec![1, 2], "a"), (vec![3], "b"), (vec![4, 5], "")];
        let mut asked = Vec::new();
        let all = all_pages(|token| {
            asked.push(token.clone());
            let (items, next) = match token.as_str() {
                "" => pages[0].clone(),
                "a" => pages[1].clone(),
                _ => pages[2].clone(),
            };
            async move { Ok((items, next.to_string())) }
        })
        .await
        .unwrap();
        assert_eq!(all, [1, 2, 3, 4, 5]);
        assert_eq!(asked, ["", "a", "b"]);
    }

    #[tokio::test]
    async fn a_token_given_twice_stops_the_client() {
        let err = all_pages(|_| async { Ok((vec![1], "same".to_string())) })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("same page token twice"), "{err}");
    }

    #[test]
    fn times_show_as_rfc3339_utc() {
        let t = prost_types::Timestamp {
            seconds: 1_772_356_563,
            nanos: 0,
        };
        assert_eq!(time_text(Some(&t)), "2026-03-01T09:16:03Z");
        assert_eq!(time_text(None), "-");
    }
}
