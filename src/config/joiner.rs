//! `[joiner]`: when a joiner's start date begins (`mailbox.start_date`).

use chrono::{FixedOffset, NaiveTime};
use serde::{Deserialize, Deserializer, de::Error};

/// When "the person's first day" begins for a start date given as a day: `start_time` on
/// that day, at `utc_offset`. A start date sent as an RFC 3339 date-time carries its own
/// instant and ignores both.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Joiner {
    /// `"HH:MM"` on the start day: the mailbox appears in the address lists then.
    #[serde(deserialize_with = "time_of_day")]
    pub start_time: NaiveTime,
    /// The organisation's offset from UTC (`"+01:00"`, `"-05:00"`, `"Z"`): a fixed offset,
    /// without daylight saving time.
    #[serde(deserialize_with = "offset")]
    pub utc_offset: FixedOffset,
}

impl Default for Joiner {
    /// Midnight UTC at the start of the day: visible before the first working morning
    /// anywhere from UTC−12 to UTC+8, and by 09:00 at the latest up to UTC+9.
    fn default() -> Self {
        Joiner {
            start_time: NaiveTime::MIN,
            utc_offset: FixedOffset::east_opt(0).unwrap_or_else(|| unreachable!()),
        }
    }
}

fn time_of_day<'de, D: Deserializer<'de>>(d: D) -> Result<NaiveTime, D::Error> {
    let text = String::deserialize(d)?;
    NaiveTime::parse_from_str(text.trim(), "%H:%M").map_err(|_| {
        D::Error::custom(format!(
            "joiner.start_time {text:?} is not a time of day as HH:MM (\"00:00\", \"07:30\")"
        ))
    })
}

fn offset<'de, D: Deserializer<'de>>(d: D) -> Result<FixedOffset, D::Error> {
    let text = String::deserialize(d)?;
    parse_offset(text.trim()).ok_or_else(|| {
        D::Error::custom(format!(
            "joiner.utc_offset {text:?} is not an offset from UTC as ±HH:MM (\"+01:00\", \"-05:00\") or \"Z\""
        ))
    })
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
    fn offsets_are_read_as_iso_8601_writes_them_and_nothing_else() {
        assert_eq!(parse_offset("+01:00"), FixedOffset::east_opt(3600));
        assert_eq!(parse_offset("-05:30"), FixedOffset::east_opt(-19800));
        assert_eq!(parse_offset("Z"), FixedOffset::east_opt(0));
        for bad in ["", "+1", "01:00", "+24:00", "+01:60", "+1:00", "CET"] {
            assert_eq!(parse_offset(bad), None, "{bad:?}");
        }
    }
}
