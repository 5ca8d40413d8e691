//! `GrantDuration`: how long access lasts, parsed from `90s`, `15m`, `1h30m`, `1d12h`.

use std::fmt;

/// A positive length of time, written as one or more `<n><unit>` parts (units `s m h d`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GrantDuration(u64);

/// Why a duration did not parse; the message is shown to people as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("`{0}` is not a duration; write it like 90s, 15m, 1h30m or 1d")]
    Malformed(String),
    #[error("a duration must be longer than zero")]
    Zero,
    #[error("`{0}` is too long a duration")]
    TooLong(String),
}

/// Longest duration accepted anywhere (a year): keeps arithmetic on timestamps far from overflow.
const MAX_SECS: u64 = 366 * 86_400;

impl GrantDuration {
    pub fn from_secs(secs: u64) -> Option<Self> {
        (secs > 0 && secs <= MAX_SECS).then_some(Self(secs))
    }

    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let text = text.trim();
        let malformed = || DurationError::Malformed(text.to_string());
        if text.is_empty() {
            return Err(malformed());
        }
        let mut total: u64 = 0;
        let mut number: Option<u64> = None;
        for c in text.chars() {
            if let Some(digit) = c.to_digit(10) {
                let n = number.unwrap_or(0);
                number = Some(
                    n.checked_mul(10)
                        .and_then(|n| n.checked_add(u64::from(digit)))
                        .ok_or_else(|| DurationError::TooLong(text.to_string()))?,
                );
                continue;
            }
            let unit = match c.to_ascii_lowercase() {
                's' => 1,
                'm' => 60,
                'h' => 3_600,
                'd' => 86_400,
                _ => return Err(malformed()),
            };
            let n = number.take().ok_or_else(malformed)?;
            total = n
                .checked_mul(unit)
                .and_then(|part| total.checked_add(part))
                .ok_or_else(|| DurationError::TooLong(text.to_string()))?;
        }
        if number.is_some() {
            // digits with no unit at the end, such as `15`
            return Err(malformed());
        }
        if total == 0 {
            return Err(DurationError::Zero);
        }
        if total > MAX_SECS {
            return Err(DurationError::TooLong(text.to_string()));
        }
        Ok(Self(total))
    }

    pub fn secs(self) -> u64 {
        self.0
    }

    pub fn std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.0)
    }
}

impl fmt::Display for GrantDuration {
    /// The shortest spelling that parses back: `1h30m`, `2d`, `45s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if rest >= size {
                write!(f, "{}{unit}", rest / size)?;
                rest %= size;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spellings_people_use() {
        assert_eq!(GrantDuration::parse("90s").unwrap().secs(), 90);
        assert_eq!(GrantDuration::parse("15m").unwrap().secs(), 900);
        assert_eq!(GrantDuration::parse("1h30m").unwrap().secs(), 5_400);
        assert_eq!(GrantDuration::parse("1D12H").unwrap().secs(), 129_600);
    }

    #[test]
    fn refuses_zero_negative_and_junk() {
        assert_eq!(GrantDuration::parse("0m"), Err(DurationError::Zero));
        for bad in [
            "",
            "-5m",
            "15",
            "h",
            "1x",
            "1.5h",
            "99999999999999999999999d",
            "400d",
        ] {
            assert!(GrantDuration::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn displays_in_a_form_that_parses_back() {
        for text in ["1h30m", "2d", "45s", "1d1h1m1s"] {
            assert_eq!(GrantDuration::parse(text).unwrap().to_string(), text);
        }
    }
}
