//! Times on the wire: every time field of the API is a `google.protobuf.Timestamp`
//! (docs/api.md, "Paging and times"). The registry keeps its times as RFC 3339 text (UTC, to
//! the second) and a ceremony's expiry as unix seconds; they become Timestamps here, and the
//! Timestamps a request sends become instants (`node::input::timestamp`), refused when they
//! name no time.

use prost_types::Timestamp;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::node::{NodeError, Request, input};

/// The Timestamp of a time the registry holds as RFC 3339 text; `what` names it for the error
/// a corrupt registry gives.
pub fn stored(what: &str, text: &str) -> Result<Timestamp, NodeError> {
    let t = OffsetDateTime::parse(text, &Rfc3339).map_err(|_| {
        NodeError::Internal(format!(
            "the registry holds {what} as `{}`, which is not an RFC 3339 time",
            crate::untrusted_text::escape(&text.chars().take(64).collect::<String>())
        ))
    })?;
    Ok(of_instant(t))
}

/// The Timestamp of unix seconds (a ceremony's expiry).
pub fn of_unix_seconds(seconds: u64) -> Timestamp {
    Timestamp {
        seconds: i64::try_from(seconds).unwrap_or(i64::MAX),
        nanos: 0,
    }
}

fn of_instant(t: OffsetDateTime) -> Timestamp {
    Timestamp {
        seconds: t.unix_timestamp(),
        nanos: i32::try_from(t.nanosecond()).unwrap_or(0),
    }
}

/// A request's time field `name`, as sent: recorded (as RFC 3339, or as its numbers when it
/// names no time) and read as an instant; unset is `None`.
pub fn sent(
    req: &mut Request,
    name: &str,
    value: Option<&Timestamp>,
) -> Result<Option<OffsetDateTime>, NodeError> {
    let Some(ts) = value else {
        return Ok(None);
    };
    let read = input::timestamp(name, ts.seconds, ts.nanos);
    match &read {
        Ok(t) => req.param(name, of_instant(*t).to_string()),
        Err(_) => req.param(name, format!("seconds {} nanos {}", ts.seconds, ts.nanos)),
    }
    read.map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_times_become_the_instants_they_name() {
        let ts = stored("created_at", "2026-03-01T09:16:03Z").unwrap();
        assert_eq!((ts.seconds, ts.nanos), (1_772_356_563, 0));
        assert_eq!(ts.to_string(), "2026-03-01T09:16:03Z");
        let ms = stored("time", "2026-03-01T09:16:03.789Z").unwrap();
        assert_eq!(ms.nanos, 789_000_000);
        assert!(matches!(
            stored("created_at", "yesterday"),
            Err(NodeError::Internal(_))
        ));
        assert_eq!(of_unix_seconds(1_772_356_563), ts);
    }
}
