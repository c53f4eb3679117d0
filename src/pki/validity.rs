//! The validity period of an issued certificate.

use time::{Duration, OffsetDateTime, PrimitiveDateTime};

/// When an issued certificate is valid: from `not_before` to `not_after` (UTC; stored in the
/// certificate to the second).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    /// The first moment the certificate is valid.
    pub not_before: OffsetDateTime,
    /// The last moment the certificate is valid.
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// Valid from one hour ago (to tolerate clock skew) until `days` days from now. A `days`
    /// beyond the year 9999 is cut there.
    pub fn days(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::hours(1),
            not_after: now
                .checked_add(Duration::days(i64::from(days)))
                .unwrap_or(PrimitiveDateTime::MAX.assume_utc()),
        }
    }

    /// Already expired: valid from ten days ago until one day ago. For tests that a server
    /// refuses expired client certificates.
    pub fn expired() -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - Duration::days(10),
            not_after: now - Duration::days(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_starts_an_hour_ago_and_ends_n_days_ahead() {
        let v = Validity::days(2);
        assert_eq!(
            v.not_after - v.not_before,
            Duration::days(2) + Duration::hours(1)
        );
        assert!(v.not_before < OffsetDateTime::now_utc());
    }

    #[test]
    fn expired_ended_yesterday() {
        let v = Validity::expired();
        assert!(v.not_before < v.not_after);
        assert!(v.not_after < OffsetDateTime::now_utc() - Duration::hours(23));
    }

    #[test]
    fn huge_day_counts_do_not_overflow() {
        let v = Validity::days(u32::MAX);
        assert!(v.not_after > v.not_before);
    }
}
