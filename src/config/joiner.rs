//! `[joiner]`: when a joiner's start date begins (`mailbox.start_date`).

use chrono::{FixedOffset, NaiveTime};
use serde::Deserialize;

use super::ConfigError;

/// When "the person's first day" begins for a start date given as a day: `start_time` on
/// that day, at `utc_offset`. A start date sent as an RFC 3339 date-time carries its own
/// instant and ignores both. Kept as written and read by [`Joiner::start_of_day`], which
/// `Settings::validate` runs at start, so a wrong value stops the start with its reason.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Joiner {
    /// `"HH:MM"` on the start day: the mailbox appears in the address lists then.
    pub start_time: String,
    /// The organisation's offset from UTC (`"+01:00"`, `"-05:00"`, `"Z"`): a fixed offset,
    /// without daylight saving time.
    pub utc_offset: String,
}

impl Default for Joiner {
    /// Midnight UTC at the start of the day: visible before the first working morning
    /// anywhere from UTC−12 to UTC+8, and by 09:00 at the latest up to UTC+9.
    fn default() -> Self {
        Joiner {
            start_time: "00:00".into(),
            utc_offset: "+00:00".into(),
        }
    }
}

/// `[joiner]` read: when a start day begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartOfDay {
    pub time: NaiveTime,
    pub offset: FixedOffset,
}

impl Joiner {
    /// The time and offset a start day begins at, or which setting is wrong and why.
    pub fn start_of_day(&self) -> Result<StartOfDay, ConfigError> {
        let time = NaiveTime::parse_from_str(self.start_time.trim(), "%H:%M").map_err(|_| {
            ConfigError::Invalid {
                key: "joiner.start_time",
                reason: format!(
                    "{:?} is not a time of day as HH:MM (\"00:00\", \"07:30\")",
                    self.start_time
                ),
            }
        })?;
        let offset = parse_offset(self.utc_offset.trim()).ok_or_else(|| ConfigError::Invalid {
            key: "joiner.utc_offset",
            reason: format!(
                "{:?} is not an offset from UTC as ±HH:MM (\"+01:00\", \"-05:00\") or \"Z\"",
                self.utc_offset
            ),
        })?;
        Ok(StartOfDay { time, offset })
    }
}

/// `Z`, or `±HH:MM` within ±23:59.
fn parse_offset(text: &str) -> Option<FixedOffset> {
    if text == "Z" {
        return FixedOffset::east_opt(0);
    }
    let (sign, rest) = match text.split_at_checked(1)? {
        ("+", rest) => (1, rest),
        ("-", rest) => (-1, rest),
        _ => return None,
    };
    let (h, m) = rest.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (i32, i32) = (h.parse().ok()?, m.parse().ok()?);
    if !(0..24).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    FixedOffset::east_opt(sign * (h * 3600 + m * 60))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_start_of_day_is_midnight_utc_and_a_wrong_value_names_its_key() {
        let d = Joiner::default()
            .start_of_day()
            .expect("the defaults are valid");
        assert_eq!((d.time, d.offset.local_minus_utc()), (NaiveTime::MIN, 0));
        let wrong = Joiner {
            start_time: "7am".into(),
            ..Joiner::default()
        };
        let err = wrong.start_of_day().expect_err("7am is refused");
        assert!(err.to_string().contains("joiner.start_time"), "{err}");
    }

    #[test]
    fn offsets_are_read_as_iso_8601_writes_them_and_nothing_else() {
        assert_eq!(parse_offset("+01:00"), FixedOffset::east_opt(3600));
        assert_eq!(parse_offset("-05:30"), FixedOffset::east_opt(-19800));
        assert_eq!(parse_offset("Z"), FixedOffset::east_opt(0));
        for bad in ["", "+1", "01:00", "+24:00", "+01:60", "+1:00", "CET"] {
            assert_eq!(parse_offset(bad), None, "{bad:?}");
        }
    }
}
