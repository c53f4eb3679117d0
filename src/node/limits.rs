//! Velocity limits on card commands, counted in the node's memory: per caller identity (a
//! service window) per minute and per day, per card serial per day, and for the whole node per
//! minute. The values come from the policy in force ([`CardLimits`]) at every command, so a
//! reload applies new limits at once while the counts carry over; a restart starts every count
//! at zero (nothing is stored).
//!
//! Counting: a sliding window cut into slots (1 s for the minute, 10 min for the day). A
//! command counts in its slot until the slot leaves the window: for exactly 60 s in a minute
//! limit, for 23 h 50 min to 24 h in a day limit. Memory per counter is bounded by the number
//! of slots (60 or 144), whatever the limit's value; the maps of callers and card serials are
//! pruned of counters that fell silent and capped ([`MAX_TRACKED_CALLERS`],
//! [`MAX_TRACKED_CARDS`]). At a cap, a caller or card the node does not track yet is refused:
//! a flood of random serials must not grow memory, nor push real cards' counts out.
//!
//! Only admitted commands count: a command refused here counts nowhere (otherwise a flood
//! would keep a window blocked for good, and an honest window's budget would pay for it).
//!
//! Time is given by the caller (unix seconds), so tests need no clock.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::{Mutex, PoisonError};

use crate::policy::CardLimits;

/// Most caller identities counted at once. Callers come from certificates of the programme's
/// CA, so a real city has a few hundred; the cap only bounds memory (about 2.5 KB each at most).
pub const MAX_TRACKED_CALLERS: usize = 10_000;

/// Most card serials counted at once (those with a command in the last 24 hours): ten times the
/// daily PIN services of a large city. About 20 MB at most.
pub const MAX_TRACKED_CARDS: usize = 100_000;

/// How often silent counters are dropped from the maps.
const SWEEP_EVERY_SECS: u64 = 60;

/// A window of time cut into slots.
#[derive(Debug, Clone, Copy)]
struct Span {
    /// Seconds per slot.
    slot_secs: u64,
    /// Slots in the window.
    slots: u64,
}

impl Span {
    /// The slot of a unix time.
    fn slot(self, now: u64) -> u64 {
        now / self.slot_secs
    }

    /// When a command counted in `slot` stops counting.
    fn expiry(self, slot: u64) -> u64 {
        slot.saturating_add(self.slots)
            .saturating_mul(self.slot_secs)
    }

    /// The whole window in seconds: the alert period of a limit over it.
    fn secs(self) -> u64 {
        self.slot_secs * self.slots
    }
}

/// Any 60 seconds, to the second.
const MINUTE: Span = Span {
    slot_secs: 1,
    slots: 60,
};

/// The last 24 hours, in 10-minute slots.
const DAY: Span = Span {
    slot_secs: 600,
    slots: 144,
};

/// The commands counted in one window: the non-empty slots, oldest first.
#[derive(Debug, Default)]
struct Recent {
    slots: VecDeque<(u64, u32)>,
}

impl Recent {
    /// Forgets the slots that left the window at `now`.
    fn prune(&mut self, span: Span, now: u64) {
        while self
            .slots
            .front()
            .is_some_and(|&(slot, _)| span.expiry(slot) <= now)
        {
            self.slots.pop_front();
        }
    }

    fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Commands in the window (call [`Recent::prune`] first).
    fn count(&self) -> u64 {
        self.slots.iter().map(|&(_, n)| u64::from(n)).sum()
    }

    /// Counts one command at `now`. A clock that went back counts it in the newest slot.
    fn add(&mut self, span: Span, now: u64) {
        let slot = span.slot(now);
        match self.slots.back_mut() {
            Some((last, n)) if *last >= slot => *n = n.saturating_add(1),
            _ => self.slots.push_back((slot, 1)),
        }
    }

    /// When the count falls below `limit` again; `None` when it never will (a limit of 0).
    fn frees_at(&self, span: Span, limit: u64) -> Option<u64> {
        if limit == 0 {
            return None;
        }
        let must_leave = (self.count() + 1).saturating_sub(limit);
        let mut left = 0u64;
        for &(slot, n) in &self.slots {
            left += u64::from(n);
            if left >= must_leave {
                return Some(span.expiry(slot));
            }
        }
        // Under the limit already.
        Some(0)
    }
}

/// A limit a card command can run into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CardLimit {
    /// `[card_limits] per_window_per_minute`.
    PerWindowPerMinute,
    /// `[card_limits] per_window_per_day`.
    PerWindowPerDay,
    /// `[card_limits] per_card_per_day`.
    PerCardPerDay,
    /// `[card_limits] per_node_per_minute`.
    PerNodePerMinute,
    /// The node counts [`MAX_TRACKED_CALLERS`] callers already.
    TrackedWindows,
    /// The node counts [`MAX_TRACKED_CARDS`] card serials already.
    TrackedCards,
}

/// Every limit, in the order they are checked (a caller's own limits first, so that a refusal
/// names the limit the caller ran into itself).
const LIMITS: [CardLimit; 6] = [
    CardLimit::PerWindowPerMinute,
    CardLimit::PerWindowPerDay,
    CardLimit::TrackedWindows,
    CardLimit::PerCardPerDay,
    CardLimit::TrackedCards,
    CardLimit::PerNodePerMinute,
];

impl CardLimit {
    /// The limit's name: its `[card_limits]` field, or `tracked_windows` / `tracked_cards`.
    /// Metrics and records use it as a label.
    pub fn as_str(self) -> &'static str {
        match self {
            CardLimit::PerWindowPerMinute => "per_window_per_minute",
            CardLimit::PerWindowPerDay => "per_window_per_day",
            CardLimit::PerCardPerDay => "per_card_per_day",
            CardLimit::PerNodePerMinute => "per_node_per_minute",
            CardLimit::TrackedWindows => "tracked_windows",
            CardLimit::TrackedCards => "tracked_cards",
        }
    }

    fn index(self) -> usize {
        LIMITS.iter().position(|l| *l == self).unwrap_or(0)
    }

    /// The window the limit counts over (the caps: how often their alert repeats).
    fn span(self) -> Span {
        match self {
            CardLimit::PerWindowPerDay | CardLimit::PerCardPerDay => DAY,
            _ => MINUTE,
        }
    }

    /// The limit's value in `limits` (the caps are constants).
    fn value(self, limits: &CardLimits) -> u64 {
        match self {
            CardLimit::PerWindowPerMinute => limits.per_window_per_minute.into(),
            CardLimit::PerWindowPerDay => limits.per_window_per_day.into(),
            CardLimit::PerCardPerDay => limits.per_card_per_day.into(),
            CardLimit::PerNodePerMinute => limits.per_node_per_minute.into(),
            CardLimit::TrackedWindows => MAX_TRACKED_CALLERS as u64,
            CardLimit::TrackedCards => MAX_TRACKED_CARDS as u64,
        }
    }

    /// What the limit counts, for people.
    fn what(self) -> &'static str {
        match self {
            CardLimit::PerWindowPerMinute => "commands per caller in any 60 seconds",
            CardLimit::PerWindowPerDay => "commands per caller in 24 hours",
            CardLimit::PerCardPerDay => "commands for one card in 24 hours",
            CardLimit::PerNodePerMinute => "commands for all callers in any 60 seconds",
            CardLimit::TrackedWindows => "callers with commands in the last 24 hours",
            CardLimit::TrackedCards => "cards with commands in the last 24 hours",
        }
    }
}

impl fmt::Display for CardLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A card command refused by a limit: which limit, its value and when it frees up. The message
/// names no card, PIN or ID number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitRefusal {
    /// The limit the command ran into.
    pub limit: CardLimit,
    /// Its value when the command was refused.
    pub value: u64,
    /// Unix seconds from when a command is counted again; `None` while the value is 0.
    pub frees_at: Option<u64>,
    /// The seconds from the refusal until then.
    pub wait_secs: Option<u64>,
}

impl fmt::Display for LimitRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (limit, value) = (self.limit, self.value);
        let source = match limit {
            CardLimit::TrackedWindows | CardLimit::TrackedCards => "a fixed cap of the node",
            _ => "[card_limits] in the policy",
        };
        write!(
            f,
            "card command refused: limit {limit} reached ({value} {}, {source})",
            limit.what()
        )?;
        match (self.frees_at, self.wait_secs) {
            (Some(at), Some(wait)) => {
                let at = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(at),
                );
                match limit {
                    CardLimit::TrackedWindows | CardLimit::TrackedCards => write!(
                        f,
                        "; it frees up as the counted ones fall silent, by {at} at the latest \
                         (in {wait} s)"
                    ),
                    _ => write!(f, "; the next command is counted from {at} (in {wait} s)"),
                }
            }
            _ => f.write_str(
                "; a limit of 0 allows no command: it frees up only when the policy raises it",
            ),
        }
    }
}

/// The alert state of one limit for one caller: logged once per limit period.
#[derive(Debug, Default, Clone, Copy)]
struct Alert {
    /// Unix seconds before which no new alert is logged.
    quiet_until: u64,
    /// Refusals since the last alert line.
    unlogged: u64,
}

impl Alert {
    /// Counts a refusal at `now`; returns how many went unlogged before it when this one is
    /// to be logged.
    fn refused(&mut self, now: u64, period: u64) -> Option<u64> {
        if now >= self.quiet_until {
            let before = std::mem::take(&mut self.unlogged);
            self.quiet_until = now.saturating_add(period);
            Some(before)
        } else {
            self.unlogged = self.unlogged.saturating_add(1);
            None
        }
    }

    fn is_quiet(&self, now: u64) -> bool {
        now >= self.quiet_until
    }
}

/// One caller's counts and alerts.
#[derive(Debug, Default)]
struct Caller {
    minute: Recent,
    day: Recent,
    alerts: [Alert; LIMITS.len()],
}

impl Caller {
    fn prune(&mut self, now: u64) {
        self.minute.prune(MINUTE, now);
        self.day.prune(DAY, now);
    }

    fn is_silent(&self, now: u64) -> bool {
        self.minute.is_empty() && self.day.is_empty() && self.alerts.iter().all(|a| a.is_quiet(now))
    }
}

#[derive(Debug, Default)]
struct Counts {
    node: Recent,
    callers: HashMap<String, Caller>,
    cards: HashMap<[u8; 8], Recent>,
    /// Alerts of the caps, for the node as a whole (the refused caller may have no entry).
    cap_alerts: [Alert; 2],
    last_sweep: u64,
}

impl Counts {
    /// Drops counters that count nothing any more.
    fn sweep(&mut self, now: u64) {
        self.last_sweep = now;
        self.callers.retain(|_, c| {
            c.prune(now);
            !c.is_silent(now)
        });
        self.cards.retain(|_, r| {
            r.prune(DAY, now);
            !r.is_empty()
        });
    }

    /// Sweeps when due, or when a map is full (at most once per second then).
    fn sweep_if_due(&mut self, now: u64, full: bool) {
        let due = now >= self.last_sweep.saturating_add(SWEEP_EVERY_SECS);
        if due || (full && now > self.last_sweep) {
            self.sweep(now);
        }
    }
}

/// The node's card command counters.
#[derive(Debug, Default)]
pub struct CardLimiter {
    counts: Mutex<Counts>,
}

impl CardLimiter {
    /// Counts one card command by `caller` (an identity URI) for the card `serial` at `now`
    /// (unix seconds) when every limit of `limits` allows it; otherwise counts nothing and says
    /// which limit refused it. Logs an alert the first time a caller runs into a limit in that
    /// limit's period (60 s or 24 h), not at every refusal.
    pub fn admit(
        &self,
        limits: &CardLimits,
        caller: &str,
        serial: &[u8; 8],
        now: u64,
    ) -> Result<(), LimitRefusal> {
        // The counts are plain numbers: a panic elsewhere cannot leave them unusable.
        let mut counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        let counts = &mut *counts;
        let full =
            counts.callers.len() >= MAX_TRACKED_CALLERS || counts.cards.len() >= MAX_TRACKED_CARDS;
        counts.sweep_if_due(now, full);
        counts.node.prune(MINUTE, now);
        let refused = check(counts, limits, caller, serial, now);
        match refused {
            None => {
                counts.node.add(MINUTE, now);
                let c = counts.callers.entry(caller.to_string()).or_default();
                c.minute.add(MINUTE, now);
                c.day.add(DAY, now);
                counts.cards.entry(*serial).or_default().add(DAY, now);
                Ok(())
            }
            Some(refusal) => {
                alert(counts, caller, &refusal, now);
                Err(refusal)
            }
        }
    }

    /// How many callers and cards are counted now (for tests and diagnostics).
    pub fn tracked(&self) -> (usize, usize) {
        let counts = self.counts.lock().unwrap_or_else(PoisonError::into_inner);
        (counts.callers.len(), counts.cards.len())
    }
}

/// The first limit that refuses the command, if any. Changes no count.
fn check(
    counts: &mut Counts,
    limits: &CardLimits,
    caller: &str,
    serial: &[u8; 8],
    now: u64,
) -> Option<LimitRefusal> {
    let refusal = |limit: CardLimit, recent: Option<&Recent>| {
        let value = limit.value(limits);
        let frees_at = recent
            .and_then(|r| r.frees_at(limit.span(), value))
            .map(|t| t.max(now));
        Some(LimitRefusal {
            limit,
            value,
            frees_at,
            wait_secs: frees_at.map(|t| t - now),
        })
    };
    let over = |recent: Option<&Recent>, limit: CardLimit| {
        recent.map_or(0, Recent::count) >= limit.value(limits)
    };
    // A cap frees up when a counted caller or card falls silent: within 24 hours, since
    // nothing new is counted while the map is full.
    let cap = |limit: CardLimit| {
        Some(LimitRefusal {
            limit,
            value: limit.value(limits),
            frees_at: Some(now.saturating_add(DAY.secs())),
            wait_secs: Some(DAY.secs()),
        })
    };
    let callers_full = counts.callers.len() >= MAX_TRACKED_CALLERS;
    let c = counts.callers.get_mut(caller).map(|c| {
        c.prune(now);
        &*c
    });
    for (limit, recent) in [
        (CardLimit::PerWindowPerMinute, c.map(|c| &c.minute)),
        (CardLimit::PerWindowPerDay, c.map(|c| &c.day)),
    ] {
        if over(recent, limit) {
            return refusal(limit, recent);
        }
    }
    if c.is_none() && callers_full {
        return cap(CardLimit::TrackedWindows);
    }
    let card = counts.cards.get_mut(serial).map(|r| {
        r.prune(DAY, now);
        &*r
    });
    if over(card, CardLimit::PerCardPerDay) {
        return refusal(CardLimit::PerCardPerDay, card);
    }
    if card.is_none() && counts.cards.len() >= MAX_TRACKED_CARDS {
        return cap(CardLimit::TrackedCards);
    }
    if over(Some(&counts.node), CardLimit::PerNodePerMinute) {
        return refusal(CardLimit::PerNodePerMinute, Some(&counts.node));
    }
    None
}

/// Logs the refusal as an alert if it is the first of its caller and limit in the limit's
/// period (for the caps: the first of the node in a minute).
fn alert(counts: &mut Counts, caller: &str, refusal: &LimitRefusal, now: u64) {
    let limit = refusal.limit;
    let period = limit.span().secs();
    let state = match limit {
        CardLimit::TrackedWindows => &mut counts.cap_alerts[0],
        CardLimit::TrackedCards => &mut counts.cap_alerts[1],
        _ if counts.callers.contains_key(caller) || counts.callers.len() < MAX_TRACKED_CALLERS => {
            let c = counts.callers.entry(caller.to_string()).or_default();
            &mut c.alerts[limit.index()]
        }
        // No room to remember the alert: the tracked-windows alert covers it.
        _ => &mut counts.cap_alerts[0],
    };
    if let Some(unlogged) = state.refused(now, period) {
        tracing::warn!(
            caller,
            limit = limit.as_str(),
            value = refusal.value,
            frees_in_secs = refusal.wait_secs,
            refused_unlogged_before = unlogged,
            "card command limit reached; further refusals of this caller and limit are not \
             logged for {period} s (each is in the ceremony log and the metrics)"
        );
    }
}

/// Unix seconds now (0 for a clock before 1970, which then counts in the oldest slot).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    const W1: &str = "hkms://window/municipal/440100/counter-1";
    const W2: &str = "hkms://window/municipal/440100/counter-2";
    /// 2026-03-02T08:00:00Z: a slot boundary of both spans.
    const T0: u64 = 1_772_438_400;

    fn card(n: u64) -> [u8; 8] {
        n.to_be_bytes()
    }

    fn limits(minute: u32, day: u32, card: u32, node: u32) -> CardLimits {
        CardLimits {
            per_window_per_minute: minute,
            per_window_per_day: day,
            per_card_per_day: card,
            per_node_per_minute: node,
        }
    }

    #[test]
    fn a_window_gets_its_minute_limit_and_then_a_refusal_that_says_when() {
        let l = limits(3, 100, 100, 100);
        let lim = CardLimiter::default();
        for i in 0..3 {
            lim.admit(&l, W1, &card(i), T0 + i).unwrap();
        }
        let r = lim.admit(&l, W1, &card(9), T0 + 10).unwrap_err();
        assert_eq!(r.limit, CardLimit::PerWindowPerMinute);
        assert_eq!(r.value, 3);
        // The first command (at T0) stops counting 60 s later.
        assert_eq!(r.frees_at, Some(T0 + 60));
        assert_eq!(r.wait_secs, Some(50));
        let msg = r.to_string();
        assert!(msg.contains("per_window_per_minute"), "{msg}");
        assert!(msg.contains("(3 commands per caller"), "{msg}");
        assert!(msg.contains("2026-03-02T08:01:00Z (in 50 s)"), "{msg}");
        // Still refused a second before, allowed at that time: a sliding minute.
        assert!(lim.admit(&l, W1, &card(9), T0 + 59).is_err());
        lim.admit(&l, W1, &card(9), T0 + 60).unwrap();
        assert!(lim.admit(&l, W1, &card(10), T0 + 60).is_err());
        lim.admit(&l, W1, &card(10), T0 + 61).unwrap();
    }

    #[test]
    fn another_window_is_not_affected() {
        let l = limits(2, 100, 100, 100);
        let lim = CardLimiter::default();
        lim.admit(&l, W1, &card(1), T0).unwrap();
        lim.admit(&l, W1, &card(2), T0).unwrap();
        assert!(lim.admit(&l, W1, &card(3), T0).is_err());
        lim.admit(&l, W2, &card(3), T0).unwrap();
        lim.admit(&l, W2, &card(4), T0).unwrap();
    }

    #[test]
    fn the_day_limit_counts_24_hours_in_ten_minute_slots() {
        let l = limits(100, 2, 100, 100);
        let lim = CardLimiter::default();
        lim.admit(&l, W1, &card(1), T0 + 599).unwrap();
        lim.admit(&l, W1, &card(2), T0 + 3600).unwrap();
        let r = lim.admit(&l, W1, &card(3), T0 + 7200).unwrap_err();
        assert_eq!(r.limit, CardLimit::PerWindowPerDay);
        // The first command's slot (T0..T0+600) leaves the window 24 h after it began.
        assert_eq!(r.frees_at, Some(T0 + 86_400));
        assert!(lim.admit(&l, W1, &card(3), T0 + 86_399).is_err());
        lim.admit(&l, W1, &card(3), T0 + 86_400).unwrap();
    }

    #[test]
    fn a_card_is_limited_across_windows() {
        let l = limits(100, 100, 2, 100);
        let lim = CardLimiter::default();
        lim.admit(&l, W1, &card(7), T0).unwrap();
        lim.admit(&l, W2, &card(7), T0 + 5).unwrap();
        let r = lim.admit(&l, W1, &card(7), T0 + 6).unwrap_err();
        assert_eq!((r.limit, r.value), (CardLimit::PerCardPerDay, 2));
        assert!(lim.admit(&l, W2, &card(7), T0 + 7).is_err());
        // Other cards go on.
        lim.admit(&l, W1, &card(8), T0 + 8).unwrap();
    }

    #[test]
    fn the_node_limit_counts_every_caller() {
        let l = limits(100, 100, 100, 3);
        let lim = CardLimiter::default();
        lim.admit(&l, W1, &card(1), T0).unwrap();
        lim.admit(&l, W2, &card(2), T0 + 1).unwrap();
        lim.admit(&l, "hkms://window/municipal/440100/c3", &card(3), T0 + 2)
            .unwrap();
        let r = lim.admit(&l, W1, &card(4), T0 + 3).unwrap_err();
        assert_eq!(r.limit, CardLimit::PerNodePerMinute);
        assert_eq!(r.frees_at, Some(T0 + 60));
        lim.admit(&l, W1, &card(4), T0 + 60).unwrap();
    }

    #[test]
    fn a_refused_command_counts_nowhere() {
        let l = limits(2, 100, 100, 100);
        let lim = CardLimiter::default();
        lim.admit(&l, W1, &card(1), T0).unwrap();
        lim.admit(&l, W1, &card(2), T0).unwrap();
        for i in 0..50 {
            assert!(lim.admit(&l, W1, &card(100 + i), T0 + 30).is_err());
        }
        // Refused serials were not counted, so they left no entry either.
        assert_eq!(lim.tracked(), (1, 2));
        // And the window's budget is back a minute after its commands, not after its refusals.
        lim.admit(&l, W1, &card(3), T0 + 60).unwrap();
    }

    #[test]
    fn zero_allows_nothing_and_never_frees_up_by_itself() {
        for (l, limit) in [
            (limits(0, 100, 100, 100), CardLimit::PerWindowPerMinute),
            (limits(100, 0, 100, 100), CardLimit::PerWindowPerDay),
            (limits(100, 100, 0, 100), CardLimit::PerCardPerDay),
            (limits(100, 100, 100, 0), CardLimit::PerNodePerMinute),
        ] {
            let lim = CardLimiter::default();
            let r = lim.admit(&l, W1, &card(1), T0).unwrap_err();
            assert_eq!((r.limit, r.value, r.frees_at), (limit, 0, None));
            assert!(
                r.to_string().contains("only when the policy raises it"),
                "{r}"
            );
            assert!(lim.admit(&l, W1, &card(1), T0 + 10 * 86_400).is_err());
        }
    }

    #[test]
    fn new_limits_apply_at_once_and_the_counts_carry_over() {
        let lim = CardLimiter::default();
        let old = limits(5, 100, 100, 100);
        for i in 0..3 {
            lim.admit(&old, W1, &card(i), T0).unwrap();
        }
        // A reload lowers the limit below the count: refused at once.
        let lower = limits(3, 100, 100, 100);
        assert!(lim.admit(&lower, W1, &card(9), T0 + 1).is_err());
        // A reload raises it: the three already made still count.
        let higher = limits(4, 100, 100, 100);
        lim.admit(&higher, W1, &card(9), T0 + 2).unwrap();
        let r = lim.admit(&higher, W1, &card(10), T0 + 3).unwrap_err();
        assert_eq!(r.value, 4);
    }

    #[test]
    fn silent_counters_are_swept_away() {
        let l = limits(100, 100, 100, 1000);
        let lim = CardLimiter::default();
        for i in 0..50 {
            lim.admit(&l, W1, &card(i), T0).unwrap();
        }
        assert_eq!(lim.tracked(), (1, 50));
        // A day later (and a sweep due), the first commands left every window.
        lim.admit(&l, W2, &card(1000), T0 + 86_400 + 600).unwrap();
        assert_eq!(lim.tracked(), (1, 1));
    }

    #[test]
    fn a_flood_of_random_serials_stops_at_the_card_cap() {
        // Every limit out of the way but the cap.
        let l = limits(u32::MAX, u32::MAX, u32::MAX, u32::MAX);
        let lim = CardLimiter::default();
        let mut rng = 0x9E37_79B9_7F4A_7C15u64;
        let mut refused = None;
        for i in 0..(MAX_TRACKED_CARDS as u64 + 10) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            // All within one minute's worth of seconds: nothing expires meanwhile.
            if let Err(r) = lim.admit(&l, W1, &card(rng), T0 + i % 30) {
                refused = Some(r);
                break;
            }
        }
        let r = refused.expect("the cap refuses");
        assert_eq!(r.limit, CardLimit::TrackedCards);
        assert!(r.to_string().contains("at the latest"), "{r}");
        assert_eq!(lim.tracked().1, MAX_TRACKED_CARDS);
        // A card already counted is still served.
        let known = {
            let mut x = 0x9E37_79B9_7F4A_7C15u64;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        lim.admit(&l, W1, &card(known), T0 + 31).unwrap();
        // A day later they have all left, and new cards are counted again.
        lim.admit(&l, W1, &card(1), T0 + 2 * 86_400).unwrap();
        assert_eq!(lim.tracked().1, 1);
    }

    #[test]
    fn a_clock_that_goes_back_neither_panics_nor_frees_anything() {
        let l = limits(2, 100, 100, 100);
        let lim = CardLimiter::default();
        lim.admit(&l, W1, &card(1), T0 + 100).unwrap();
        lim.admit(&l, W1, &card(2), T0).unwrap();
        let r = lim.admit(&l, W1, &card(3), T0 - 50).unwrap_err();
        assert_eq!(r.limit, CardLimit::PerWindowPerMinute);
        assert!(r.wait_secs.is_some());
        assert!(lim.admit(&l, W1, &card(3), 0).is_err());
    }

    #[test]
    fn alerts_are_logged_once_per_caller_and_limit_period() {
        let mut a = Alert::default();
        assert_eq!(a.refused(T0, 60), Some(0));
        for t in 1..60 {
            assert_eq!(a.refused(T0 + t, 60), None);
        }
        assert_eq!(a.refused(T0 + 60, 60), Some(59));
        assert_eq!(a.refused(T0 + 61, 60), None);
    }

    #[test]
    fn a_refusal_names_no_card() {
        let l = limits(100, 100, 1, 100);
        let lim = CardLimiter::default();
        let serial = *b"\x12\x34\x56\x78\x90\xAB\xCD\xEF";
        lim.admit(&l, W1, &serial, T0).unwrap();
        let msg = lim.admit(&l, W1, &serial, T0).unwrap_err().to_string();
        assert!(!msg.to_uppercase().contains("1234567890ABCDEF"), "{msg}");
        assert!(msg.contains("per_card_per_day"), "{msg}");
    }

    #[test]
    fn every_limit_has_its_own_name() {
        let names: std::collections::BTreeSet<_> = LIMITS.iter().map(|l| l.as_str()).collect();
        assert_eq!(names.len(), LIMITS.len());
        for (i, l) in LIMITS.iter().enumerate() {
            assert_eq!(l.index(), i);
        }
    }
}
