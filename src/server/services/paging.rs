//! The API's lists, one page at a time (docs/api.md, "Paging and times"): how many items a
//! page holds, the page token that says where the next one starts, and the cap on the size of
//! an answer.
//!
//! A page token is base64url (no padding) of a small JSON object: the list it belongs to, a
//! hash of the request's filters, and the place of the last item of the page before (the
//! store's sort key, `store::KeysAfter` and its siblings). It is opaque to clients but not a
//! secret and not a capability: every page is authorised on its own, and a changed token can
//! only move where a page starts. The filters' hash is there so that a token given with other
//! filters, or to another list, is refused (INVALID_ARGUMENT) instead of silently starting
//! somewhere that means nothing for them.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::node::{NodeError, Request};

/// Items in a page when the request says 0.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// The most items in a page; a larger `page_size` is taken as this.
pub const MAX_PAGE_SIZE: usize = 1000;

/// The longest page token the node gives or takes, in characters. Tokens hold a sort key of a
/// few dozen characters; the bound keeps the answer's room for its token fixed.
const MAX_TOKEN_CHARS: usize = 1024;

/// What a token holds.
#[derive(Serialize, Deserialize)]
struct Token<C> {
    /// The format, 1.
    v: u8,
    /// The RPC whose list it continues.
    list: String,
    /// The hash of the filters it was given with.
    filters: String,
    /// The place of the last item of the page before.
    after: C,
}

/// The paging of one request to a list: its RPC and filters, from which its tokens are made
/// and against which the token it brings is checked.
pub struct Pager {
    list: &'static str,
    filters: String,
}

/// One page as a request asks for it.
pub struct Asked<C> {
    /// How many items at most.
    pub size: usize,
    /// Where the page starts: after this place, or at the start.
    pub after: Option<C>,
}

impl Pager {
    /// The paging of a request to `list` with these filters (name and value as sent, every
    /// filter of the RPC, empty ones too).
    pub fn new(list: &'static str, filters: &[(&str, &str)]) -> Pager {
        let mut h = Sha256::new();
        h.update(list.as_bytes());
        for (name, value) in filters {
            for part in [name, value] {
                h.update((part.len() as u64).to_be_bytes());
                h.update(part.as_bytes());
            }
        }
        Pager {
            list,
            filters: hex::encode(&h.finalize()[..8]),
        }
    }

    /// Reads `page_size` and `page_token` as sent, recording them: 0 is the default size, more
    /// than the most is the most, a negative size or a token this request cannot continue is
    /// INVALID_ARGUMENT.
    pub fn ask<C: DeserializeOwned>(
        &self,
        req: &mut Request,
        page_size: i32,
        page_token: &str,
    ) -> Result<Asked<C>, NodeError> {
        if page_size != 0 {
            req.param("page_size", page_size.to_string());
        }
        if !page_token.is_empty() {
            req.param("page_token", page_token);
        }
        let size = match usize::try_from(page_size) {
            Err(_) => {
                return Err(NodeError::InvalidArgument(format!(
                    "page_size {page_size} is negative; give 1 to {MAX_PAGE_SIZE}, or 0 for \
                     {DEFAULT_PAGE_SIZE}"
                )));
            }
            Ok(0) => DEFAULT_PAGE_SIZE,
            Ok(n) => n.min(MAX_PAGE_SIZE),
        };
        let after = if page_token.is_empty() {
            None
        } else {
            Some(self.read_token(page_token)?)
        };
        Ok(Asked { size, after })
    }

    fn read_token<C: DeserializeOwned>(&self, text: &str) -> Result<C, NodeError> {
        let malformed = || {
            NodeError::InvalidArgument(format!(
                "page_token is not a page token this node gave for {}: give the \
                 next_page_token of the previous answer as it came, or none for the first page",
                self.list
            ))
        };
        if text.len() > MAX_TOKEN_CHARS {
            return Err(malformed());
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text.as_bytes())
            .map_err(|_| malformed())?;
        // The list and filters first: a token of another list does not hold this one's places.
        #[derive(Deserialize)]
        struct Head {
            v: u8,
            list: String,
            filters: String,
        }
        let head: Head = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
        if head.v != 1 {
            return Err(malformed());
        }
        if head.list != self.list {
            return Err(NodeError::InvalidArgument(format!(
                "page_token continues {}, not {}: start {} without a page_token",
                crate::untrusted_text::escape(&head.list.chars().take(32).collect::<String>()),
                self.list,
                self.list
            )));
        }
        if head.filters != self.filters {
            return Err(NodeError::InvalidArgument(format!(
                "page_token was given for other filters: send the filters of the first page \
                 with it, or start {} again without a page_token",
                self.list
            )));
        }
        let token: Token<C> = serde_json::from_slice(&bytes).map_err(|_| malformed())?;
        Ok(token.after)
    }

    /// The token of the page after one whose last item is at `next`; empty when no page
    /// follows.
    pub fn token<C: Serialize>(&self, next: Option<&C>) -> Result<String, NodeError> {
        let Some(after) = next else {
            return Ok(String::new());
        };
        let json = serde_json::to_vec(&Token {
            v: 1,
            list: self.list.to_string(),
            filters: self.filters.clone(),
            after,
        })
        .map_err(|e| NodeError::Internal(format!("making a page token: {e}")))?;
        let token = URL_SAFE_NO_PAD.encode(json);
        if token.len() > MAX_TOKEN_CHARS {
            return Err(NodeError::Internal(format!(
                "a page token of {} would be {} characters, more than the {MAX_TOKEN_CHARS} \
                 the node takes back",
                self.list,
                token.len()
            )));
        }
        Ok(token)
    }
}

/// The room left in one answer, in bytes of encoded message: a list stops a page early when
/// its next item would pass it.
pub struct Budget {
    left: usize,
}

impl Budget {
    /// The room of an answer of at most `max` bytes, less room for its page token.
    pub fn new(max: usize) -> Budget {
        Budget {
            left: max.saturating_sub(field_len(MAX_TOKEN_CHARS)),
        }
    }

    /// Takes room for `item` as one element of the answer's list, if there is room: whether
    /// it fits.
    pub fn fits(&mut self, item: &impl prost::Message) -> bool {
        self.take(item.encoded_len())
    }

    /// Takes room for a field of `len` bytes (a repeated item, or one more field of the
    /// answer), if there is room: whether it fits.
    pub fn take(&mut self, len: usize) -> bool {
        let needed = field_len(len);
        if needed > self.left {
            return false;
        }
        self.left -= needed;
        true
    }
}

/// The encoded size of a length-delimited field of `len` bytes, its key counted as the two
/// bytes of a field number up to 2047.
fn field_len(len: usize) -> usize {
    2 + prost::encoding::encoded_len_varint(len as u64) + len
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MIN_ANSWER_BYTES;
    use crate::store::KeysAfter;

    fn req() -> Request {
        let caller = crate::policy::Identity::from_uri("hkms://auditor/national/000000/a").unwrap();
        Request::new(caller, "node", "ListKeys", "r-1")
    }

    fn after() -> KeysAfter {
        KeysAfter {
            created_at: "2026-03-01T09:00:00Z".into(),
            id: format!("k-{}", "ab".repeat(16)),
        }
    }

    #[test]
    fn a_token_continues_the_list_and_filters_it_was_made_for() {
        let pager = Pager::new("ListKeys", &[("region", "440000"), ("key_type", "")]);
        let token = pager.token(Some(&after())).unwrap();
        assert!(!token.is_empty() && token.len() <= MAX_TOKEN_CHARS);
        assert!(
            token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        let asked: Asked<KeysAfter> = pager.ask(&mut req(), 10, &token).unwrap();
        assert_eq!((asked.size, asked.after), (10, Some(after())));
        assert_eq!(pager.token::<KeysAfter>(None).unwrap(), "");
    }

    #[test]
    fn a_token_with_other_filters_or_of_another_list_is_refused() {
        let token = Pager::new("ListKeys", &[("region", "440000")])
            .token(Some(&after()))
            .unwrap();
        for (pager, says) in [
            (
                Pager::new("ListKeys", &[("region", "440100")]),
                "other filters",
            ),
            (
                Pager::new("ListKeys", &[("region", "4400"), ("00", "")]),
                "other filters",
            ),
            (
                Pager::new("ListCeremonies", &[("region", "440000")]),
                "continues ListKeys",
            ),
        ] {
            let err = pager
                .ask::<KeysAfter>(&mut req(), 0, &token)
                .err()
                .expect("refused");
            assert!(
                matches!(&err, NodeError::InvalidArgument(m) if m.contains(says)),
                "{err}"
            );
        }
    }

    #[test]
    fn what_is_no_token_is_refused() {
        let pager = Pager::new("ListKeys", &[]);
        let long = "A".repeat(MAX_TOKEN_CHARS + 1);
        for bad in ["not a token", "e30", "eyJ2IjoyfQ", long.as_str()] {
            let err = pager.ask::<KeysAfter>(&mut req(), 0, bad).err().expect(bad);
            assert!(matches!(err, NodeError::InvalidArgument(_)), "{bad}: {err}");
        }
    }

    #[test]
    fn page_sizes_default_clamp_and_refuse_negatives() {
        let pager = Pager::new("ListKeys", &[]);
        let size = |n| pager.ask::<KeysAfter>(&mut req(), n, "").map(|a| a.size);
        assert_eq!(size(0).unwrap(), DEFAULT_PAGE_SIZE);
        assert_eq!(size(1).unwrap(), 1);
        assert_eq!(size(5000).unwrap(), MAX_PAGE_SIZE);
        assert!(matches!(size(-1), Err(NodeError::InvalidArgument(_))));
    }

    #[test]
    fn a_budget_holds_what_fits_with_room_for_the_token() {
        let mut b = Budget::new(MIN_ANSWER_BYTES);
        let mut taken = 0;
        while b.take(300) {
            taken += field_len(300);
        }
        assert!(taken + field_len(MAX_TOKEN_CHARS) <= MIN_ANSWER_BYTES);
        assert!(taken + 2 * field_len(300) + field_len(MAX_TOKEN_CHARS) > MIN_ANSWER_BYTES);
    }
}
