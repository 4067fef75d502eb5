//! Formatting for people: byte sizes, UTC timestamps, error messages.

use state_core::StateError;

/// `532 B`, `1.2 KiB`, `3.0 MiB`.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    // Precision loss is irrelevant for a one-decimal display.
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Milliseconds since the Unix epoch as RFC 3339 UTC with milliseconds:
/// `2026-11-22T00:15:03.120Z`.
pub(crate) fn timestamp(millis: u64) -> String {
    let secs = millis / 1000;
    let ms = millis % 1000;
    // u64::MAX / 86_400 fits in i64.
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The proleptic Gregorian (year, month, day) of a day count since
/// 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // 1 <= d <= 31 and 1 <= m <= 12.
    (y, m as u32, d as u32)
}

/// A state error for a person: invalid-argument errors without their
/// `invalid argument:` prefix (they already say what is wrong with which path).
pub(crate) fn error(err: &StateError) -> String {
    match err {
        StateError::InvalidArgument(msg) => msg.clone(),
        other => other.to_string(),
    }
}

/// A state error as an `anyhow` error, formatted by [`error`].
pub(crate) fn anyhow(err: StateError) -> anyhow::Error {
    anyhow::Error::msg(error(&err))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1024), "1.0 KiB");
        assert_eq!(size(1_258_291), "1.2 MiB");
        assert_eq!(size(u64::MAX), "16384.0 PiB");
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(1_795_306_503_120), "2026-11-22T00:15:03.120Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(4_107_542_399_999), "2100-02-28T23:59:59.999Z");
        // No panic at the far end.
        assert!(timestamp(u64::MAX).ends_with('Z'));
    }

    #[test]
    fn invalid_argument_loses_its_prefix() {
        let e = StateError::invalid("/x does not exist");
        assert_eq!(error(&e), "/x does not exist");
        let e = StateError::corrupted("chk-1/_metadata", "bad");
        assert_eq!(error(&e), "corrupted chk-1/_metadata: bad");
    }
}
