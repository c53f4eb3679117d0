//! What callers send, read into the typed values the use cases take, with the errors callers
//! see (INVALID_ARGUMENT, saying what is wrong). The gRPC services record each field as it was
//! sent (`Request::param`) and then read it here, so a request refused for a malformed field
//! still has a record that shows what came.

use std::collections::BTreeMap;

use crate::hierarchy::{CardSerial, KeyFilter, KeyId, KeyState, KeyTypeName, Region, Tier};
use crate::policy::Operation;

use super::{CeremonyAction, CeremonyId, CeremonyState, InField, NodeError, Request};

/// A key id (`k-` and 32 hex digits).
pub fn key_id(text: &str) -> Result<KeyId, NodeError> {
    Ok(KeyId::parse(text)?)
}

/// A GB/T 2260 region code.
pub fn region(text: &str) -> Result<Region, NodeError> {
    Ok(Region::parse(text)?)
}

/// A key type's name (whether the policy declares it is the use case's to say).
pub fn key_type(text: &str) -> Result<KeyTypeName, NodeError> {
    Ok(KeyTypeName::parse(text)?)
}

/// A key's lifecycle state, for the field `what` names.
pub fn key_state(what: &str, text: &str) -> Result<KeyState, NodeError> {
    text.parse()
        .map_err(|e| NodeError::InvalidArgument(format!("{what}: {e}")))
}

/// An instant written in RFC 3339, with `Z` or an offset (`2026-03-01T09:00:00Z`,
/// `2026-03-01T17:00:00.250+08:00`): audit time filters compare instants, never text.
pub fn instant(text: &str) -> Result<time::OffsetDateTime, NodeError> {
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .map_err(|_| {
            NodeError::InvalidArgument(format!(
                "`{}` is not an RFC 3339 time; write e.g. 2026-03-01T09:00:00Z or \
                 2026-03-01T17:00:00+08:00",
                crate::untrusted_text::escape(&text.chars().take(64).collect::<String>())
            ))
        })
}

/// The last second a time field may name: 9999-12-31T23:59:59Z, as google.protobuf.Timestamp
/// allows.
pub const LATEST_SECOND: i64 = 253_402_300_799;

/// An instant sent as a `google.protobuf.Timestamp` (`seconds` since 1970 in UTC, `nanos`
/// into that second), for the field `what`. Before 1970, after 9999, or with nanos outside
/// 0..=999999999 is refused: such a value is a client's slip, never a time it means.
pub fn timestamp(what: &str, seconds: i64, nanos: i32) -> Result<time::OffsetDateTime, NodeError> {
    let refused = |why: &str| {
        NodeError::InvalidArgument(format!(
            "{what} (seconds {seconds}, nanos {nanos}) is not a time: {why}; give seconds from \
             0 (1970-01-01T00:00:00Z) to {LATEST_SECOND} (9999-12-31T23:59:59Z) and nanos from \
             0 to 999999999"
        ))
    };
    if !(0..=999_999_999).contains(&nanos) {
        return Err(refused("nanos is outside 0..999999999"));
    }
    if !(0..=LATEST_SECOND).contains(&seconds) {
        return Err(refused("it is before 1970 or after 9999"));
    }
    time::OffsetDateTime::from_unix_timestamp(seconds)
        .map(|t| t + time::Duration::nanoseconds(i64::from(nanos)))
        .map_err(|_| refused("it is out of range"))
}

/// A card's application serial number (16 hex digits).
pub fn card_serial(text: &str) -> Result<CardSerial, NodeError> {
    CardSerial::parse(text)
        .map_err(|_| NodeError::InvalidArgument(crate::card::CardError::Serial.to_string()))
}

/// A ceremony id as the node makes them (`c-` and 32 hex digits).
pub fn ceremony_id(text: &str) -> Result<CeremonyId, NodeError> {
    CeremonyId::parse(text)
}

/// A ceremony state filter; empty is none.
pub fn ceremony_state(text: &str) -> Result<Option<CeremonyState>, NodeError> {
    if text.is_empty() {
        return Ok(None);
    }
    CeremonyState::parse(text).map(Some).map_err(|_| {
        NodeError::InvalidArgument(format!(
            "unknown ceremony state `{text}` (open, running, done, failed, cancelled, expired, used)"
        ))
    })
}

/// The filters of a key listing; an empty field filters nothing.
pub fn key_filter(
    tier: &str,
    region: &str,
    key_type: &str,
    state: &str,
) -> Result<KeyFilter, NodeError> {
    let some = |s: &str| (!s.is_empty()).then(|| s.to_string());
    Ok(KeyFilter {
        tier: some(tier)
            .map(|t| t.parse::<Tier>())
            .transpose()
            .map_err(|e| NodeError::invalid_field("tier", format!("tier filter: {e}")))?,
        region: some(region)
            .as_deref()
            .map(|r| Region::parse(r).map_err(NodeError::from))
            .transpose()
            .field("region")?,
        key_type: some(key_type)
            .as_deref()
            .map(|k| KeyTypeName::parse(k).map_err(NodeError::from))
            .transpose()
            .field("key_type")?,
        state: some(state)
            .map(|s| s.parse::<KeyState>())
            .transpose()
            .map_err(|e| NodeError::invalid_field("state", format!("state filter: {e}")))?,
    })
}

/// The action of a ceremony to open: its operation and parameters, recorded as sent (a
/// handful at most: more is refused before the record lists them) and read as one action.
pub fn ceremony_action(
    req: &mut Request,
    operation: &str,
    params: &BTreeMap<String, String>,
) -> Result<CeremonyAction, NodeError> {
    req.param("operation", operation);
    const MAX_PARAMS: usize = 8;
    if params.len() > MAX_PARAMS {
        return Err(NodeError::invalid_field(
            "params",
            format!(
                "{} ceremony parameters; a ceremony takes at most {MAX_PARAMS}",
                params.len()
            ),
        ));
    }
    for (k, v) in params {
        req.param(k, v.clone());
    }
    let op: Operation = operation
        .parse()
        .map_err(|e: String| NodeError::invalid_field("operation", e))?;
    CeremonyAction::parse_new(op, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_input_is_refused_as_invalid_argument() {
        for e in [
            key_id("k-1").unwrap_err(),
            region("4401").unwrap_err(),
            key_type("Card Master").unwrap_err(),
            key_state("state", "gone").unwrap_err(),
            card_serial("12").unwrap_err(),
            ceremony_id("c-1").unwrap_err(),
            ceremony_state("finished").unwrap_err(),
            key_filter("county", "", "", "").unwrap_err(),
        ] {
            assert_eq!(
                e.class(),
                super::super::ErrorClass::InvalidArgument,
                "{e:?}"
            );
        }
        for (filter, field) in [
            (key_filter("county", "", "", ""), "tier"),
            (key_filter("", "4401", "", ""), "region"),
            (key_filter("", "", "Card Master", ""), "key_type"),
            (key_filter("", "", "", "gone"), "state"),
        ] {
            assert_eq!(filter.unwrap_err().field(), Some(field));
        }
        for (seconds, nanos) in [(0, -1), (0, 1_000_000_000), (-1, 0), (LATEST_SECOND + 1, 0)] {
            let e = timestamp("since", seconds, nanos).unwrap_err();
            assert!(matches!(e, NodeError::InvalidArgument(_)), "{e:?}");
        }
        assert_eq!(key_filter("", "", "", "").unwrap(), KeyFilter::default());
        assert_eq!(ceremony_state("").unwrap(), None);
    }

    #[test]
    fn a_timestamp_is_the_instant_it_names_to_the_nanosecond() {
        let t = timestamp("since", 1_772_356_563, 789_000_000).unwrap();
        assert_eq!(t, instant("2026-03-01T09:16:03.789Z").unwrap());
        assert_eq!(t, instant("2026-03-01T17:16:03.789+08:00").unwrap());
        assert!(timestamp("until", 0, 0).is_ok());
        assert!(timestamp("until", LATEST_SECOND, 999_999_999).is_ok());
    }
}
