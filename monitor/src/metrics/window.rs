//! Time windows of the profile and drift metrics: a [`Granularity`] ("5 minutes",
//! "1 hour", "1 day", "1 week", ...) and the [`Window`] a timestamp falls in.
//!
//! Invariants: windows of one granularity tile the time line without gaps or overlaps:
//! `[start, start + width)`, start a multiple of the width counted from the Unix epoch in
//! UTC (minutes, hours and days), weeks starting on Monday 00:00 UTC (as Spark's
//! `window` and Lakehouse Monitoring). A timestamp belongs to exactly one window.

use std::fmt;

const MINUTE_MS: i64 = 60_000;
const HOUR_MS: i64 = 60 * MINUTE_MS;
const DAY_MS: i64 = 24 * HOUR_MS;
const WEEK_MS: i64 = 7 * DAY_MS;
/// 1970-01-01 was a Thursday: the first Monday 00:00 UTC is 4 days later.
const FIRST_MONDAY_MS: i64 = 4 * DAY_MS;

/// The width of the windows a table is profiled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Granularity {
    width_ms: i64,
}

impl Granularity {
    /// Parses `"<n> minute(s)|hour(s)|day(s)|week(s)"` (Lakehouse Monitoring's spelling;
    /// `n` ≥ 1, case-insensitive, the unit may also be `min`/`h`/`d`/`w`).
    pub fn parse(text: &str) -> Result<Granularity, String> {
        let bad = || {
            format!("granularity {text:?}: expected \"<n> minutes|hours|days|weeks\", e.g. \"5 minutes\", \"1 hour\", \"1 day\"")
        };
        let t = text.trim().to_ascii_lowercase();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let n: i64 = t[..split].parse().map_err(|_| bad())?;
        let unit = match t[split..].trim() {
            "minute" | "minutes" | "min" | "mins" | "m" => MINUTE_MS,
            "hour" | "hours" | "h" => HOUR_MS,
            "day" | "days" | "d" => DAY_MS,
            "week" | "weeks" | "w" => WEEK_MS,
            _ => return Err(bad()),
        };
        if !(1..=10_000).contains(&n) {
            return Err(bad());
        }
        Ok(Granularity { width_ms: n * unit })
    }

    pub fn width_ms(self) -> i64 {
        self.width_ms
    }

    /// The window holding `timestamp_ms`.
    pub fn window_of(self, timestamp_ms: i64) -> Window {
        let origin = if self.width_ms % WEEK_MS == 0 { FIRST_MONDAY_MS } else { 0 };
        let start = origin + (timestamp_ms - origin).div_euclid(self.width_ms) * self.width_ms;
        Window { start_ms: start, end_ms: start + self.width_ms }
    }

    /// A name usable in file names: `"1 hour"` → `1_hour`.
    pub fn slug(self) -> String {
        self.to_string().replace(' ', "_")
    }
}

impl fmt::Display for Granularity {
    /// The canonical spelling: the largest unit that divides the width (`"60 minutes"`
    /// prints as `"1 hour"`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (n, unit) = [(WEEK_MS, "week"), (DAY_MS, "day"), (HOUR_MS, "hour"), (MINUTE_MS, "minute")]
            .into_iter()
            .find(|(u, _)| self.width_ms % u == 0)
            .map(|(u, name)| (self.width_ms / u, name))
            .unwrap_or((self.width_ms / MINUTE_MS, "minute"));
        write!(f, "{n} {unit}{}", if n == 1 { "" } else { "s" })
    }
}

/// A half-open time interval `[start_ms, end_ms)`, milliseconds since the epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Window {
    pub start_ms: i64,
    pub end_ms: i64,
}

impl Window {
    pub fn contains(&self, timestamp_ms: i64) -> bool {
        (self.start_ms..self.end_ms).contains(&timestamp_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lakehouse_spellings() {
        assert_eq!(Granularity::parse("5 minutes").unwrap().width_ms(), 5 * MINUTE_MS);
        assert_eq!(Granularity::parse("1 hour").unwrap().width_ms(), HOUR_MS);
        assert_eq!(Granularity::parse(" 1 DAY ").unwrap().width_ms(), DAY_MS);
        assert_eq!(Granularity::parse("2 weeks").unwrap().width_ms(), 2 * WEEK_MS);
        assert_eq!(Granularity::parse("30min").unwrap().width_ms(), 30 * MINUTE_MS);
        for bad in ["", "hour", "0 hours", "1 fortnight", "-1 day", "1.5 hours", "99999999999999999999 days"] {
            assert!(Granularity::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn displays_canonically() {
        assert_eq!(Granularity::parse("60 minutes").unwrap().to_string(), "1 hour");
        assert_eq!(Granularity::parse("5 minutes").unwrap().to_string(), "5 minutes");
        assert_eq!(Granularity::parse("7 days").unwrap().to_string(), "1 week");
        assert_eq!(Granularity::parse("1 day").unwrap().slug(), "1_day");
    }

    #[test]
    fn windows_tile_the_time_line() {
        let g = Granularity::parse("5 minutes").unwrap();
        let w = g.window_of(7 * MINUTE_MS + 3);
        assert_eq!((w.start_ms, w.end_ms), (5 * MINUTE_MS, 10 * MINUTE_MS));
        assert_eq!(g.window_of(w.end_ms).start_ms, w.end_ms);
        assert_eq!(g.window_of(w.end_ms - 1), w);
        // Before the epoch too.
        assert_eq!(g.window_of(-1).start_ms, -5 * MINUTE_MS);
        // Weeks start on Monday: 2026-11-23 (a Monday) 00:00 UTC = 20780 days.
        let monday = 20_780 * DAY_MS;
        let week = Granularity::parse("1 week").unwrap();
        assert_eq!(week.window_of(monday + 3 * DAY_MS).start_ms, monday);
        assert_eq!(week.window_of(monday - 1).start_ms, monday - WEEK_MS);
    }
}
