//! The `[card_limits]` section of the policy file: how many card commands (PIN UNBLOCK and PIN
//! RELOAD) a city's node makes per caller, per card and in all. A stolen or misused window
//! certificate must not turn the node into a command factory for random cards, and a real
//! service window never serves more than a few cardholders a minute.
//!
//! Deny by default: a policy without the section gets [`CardLimits::default`], not "no limit",
//! and so does a missing field. `0` means no command at all (the scope is switched off); there
//! is no "unlimited", only large numbers.

use serde::Deserialize;
use toml::Spanned;

use super::PolicyError;
use crate::hierarchy::line_of;

/// The velocity limits on card commands, from `[card_limits]`. Each counts the commands the
/// node made (those refused for any reason count nowhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CardLimits {
    /// Commands one caller identity (a service window) may get in any 60 seconds.
    pub per_window_per_minute: u32,
    /// Commands one caller identity may get in the last 24 hours.
    pub per_window_per_day: u32,
    /// Commands for one card serial, whoever asks, in the last 24 hours.
    pub per_card_per_day: u32,
    /// Commands the node makes for all callers together in any 60 seconds.
    pub per_node_per_minute: u32,
}

impl CardLimits {
    /// Default commands per window per minute: a window serves a cardholder in minutes, not
    /// seconds; 30 leaves room for retries and a queue of quick cases.
    pub const DEFAULT_PER_WINDOW_PER_MINUTE: u32 = 30;
    /// Default commands per window per day: a busy counter serves about a hundred people a day.
    pub const DEFAULT_PER_WINDOW_PER_DAY: u32 = 500;
    /// Default commands per card per day: a cardholder locks a card a few times at most.
    pub const DEFAULT_PER_CARD_PER_DAY: u32 = 10;
    /// Default commands per node per minute: every window of a large city at once, with room.
    pub const DEFAULT_PER_NODE_PER_MINUTE: u32 = 600;

    /// The limits as one line, for `hkms policy check` and people.
    pub fn describe(&self) -> String {
        format!(
            "card limits: {} per window per minute, {} per window per day, {} per card per day, \
             {} per node per minute",
            self.per_window_per_minute,
            self.per_window_per_day,
            self.per_card_per_day,
            self.per_node_per_minute
        )
    }
}

impl Default for CardLimits {
    fn default() -> Self {
        CardLimits {
            per_window_per_minute: Self::DEFAULT_PER_WINDOW_PER_MINUTE,
            per_window_per_day: Self::DEFAULT_PER_WINDOW_PER_DAY,
            per_card_per_day: Self::DEFAULT_PER_CARD_PER_DAY,
            per_node_per_minute: Self::DEFAULT_PER_NODE_PER_MINUTE,
        }
    }
}

#[derive(Debug, Deserialize)]
struct LimitsOnly {
    card_limits: Option<Spanned<CardLimits>>,
}

/// The `[card_limits]` section: the defaults when it is absent, each missing field its default.
/// Errors name the file and the line of the bad field: an unknown field, a value that is not a
/// whole number from 0 to 4294967295, a section that is not a table.
pub fn parse_card_limits(text: &str, origin: &str) -> Result<CardLimits, PolicyError> {
    // Only this section is read here (the other sections have their own parsers), so any error
    // is about it.
    let raw: LimitsOnly = toml::from_str(text).map_err(|e| PolicyError {
        origin: origin.into(),
        line: e.span().map(|s| line_of(text, s.start)),
        message: format!(
            "[card_limits]: {}; its fields are per_window_per_minute, per_window_per_day, \
             per_card_per_day and per_node_per_minute, each a whole number from 0 (no command \
             at all) to {}",
            e.message().trim_end(),
            u32::MAX
        ),
    })?;
    Ok(raw
        .card_limits
        .map_or_else(CardLimits::default, Spanned::into_inner))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;

    const DEFAULT: &str = include_str!("../../policies/default.toml");

    /// The default policy without its `[card_limits]` section (up to the next table).
    fn without_section() -> String {
        let mut out = String::new();
        let mut skipping = false;
        for line in DEFAULT.lines() {
            if line.starts_with('[') {
                skipping = line.trim() == "[card_limits]";
            }
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn with_section(section: &str) -> String {
        format!("{}\n[card_limits]\n{section}\n", without_section())
    }

    fn err(text: &str) -> String {
        Policy::parse(text, "p.toml").unwrap_err().to_string()
    }

    fn line_of(needle: &str, text: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn the_default_policy_states_the_defaults() {
        let p = Policy::parse(DEFAULT, "default.toml").unwrap();
        assert_eq!(p.card_limits, CardLimits::default());
        assert_eq!(
            CardLimits::default(),
            CardLimits {
                per_window_per_minute: 30,
                per_window_per_day: 500,
                per_card_per_day: 10,
                per_node_per_minute: 600,
            }
        );
    }

    #[test]
    fn a_missing_section_means_the_defaults_not_unlimited() {
        let text = without_section();
        assert!(!text.contains("[card_limits]"));
        let p = Policy::parse(&text, "p.toml").unwrap();
        assert_eq!(p.card_limits, CardLimits::default());
        // An empty section too.
        let p = Policy::parse(&with_section(""), "p.toml").unwrap();
        assert_eq!(p.card_limits, CardLimits::default());
    }

    #[test]
    fn a_missing_field_takes_its_default_and_zero_means_none() {
        let p = Policy::parse(
            &with_section("per_card_per_day = 2\nper_node_per_minute = 0"),
            "p.toml",
        )
        .unwrap();
        assert_eq!(
            p.card_limits,
            CardLimits {
                per_card_per_day: 2,
                per_node_per_minute: 0,
                ..CardLimits::default()
            }
        );
    }

    #[test]
    fn an_unknown_field_is_refused_with_its_line() {
        let text = with_section("per_window_per_minute = 5\nper_windw_per_day = 7");
        let e = err(&text);
        let line = line_of("per_windw_per_day", &text);
        assert!(e.starts_with(&format!("p.toml line {line}:")), "{e}");
        assert!(e.contains("unknown field `per_windw_per_day`"), "{e}");
    }

    #[test]
    fn negative_fractional_huge_and_text_values_are_refused_with_their_line() {
        for bad in ["-1", "2.5", "4294967296", "\"30\"", "true", "[1]"] {
            let text = with_section(&format!("per_card_per_day = 3\nper_window_per_day = {bad}"));
            let e = err(&text);
            let line = line_of("per_window_per_day =", &text);
            assert!(e.starts_with(&format!("p.toml line {line}:")), "{bad}: {e}");
            assert!(e.contains("a whole number from 0"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_section_that_is_not_a_table_is_refused() {
        // A top-level key, before the first table.
        let text = format!("card_limits = 5\n{}", without_section());
        let e = err(&text);
        assert!(e.contains("[card_limits]: invalid type"), "{e}");
        assert!(e.starts_with("p.toml line"), "{e}");
    }

    #[test]
    fn describe_names_every_limit() {
        assert_eq!(
            CardLimits::default().describe(),
            "card limits: 30 per window per minute, 500 per window per day, 10 per card per day, \
             600 per node per minute"
        );
    }
}
