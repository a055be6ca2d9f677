//! Wall-clock time and calendar arithmetic on epoch milliseconds (UTC), without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Days since 1970-01-01 to a civil (year, month, day) date (proleptic Gregorian).
/// Howard Hinnant's `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// `YYYY-MM-DD`, the UTC date of an instant: the `start_date` partition value.
pub fn utc_date(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Epoch ms of a date's midnight (UTC); `None` unless `date` is a valid `YYYY-MM-DD`.
pub fn date_start_ms(date: &str) -> Option<i64> {
    let (y, rest) = date.split_once('-')?;
    let (m, d) = rest.split_once('-')?;
    let (y, m, d): (i64, i64, i64) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    // days_from_civil (Howard Hinnant), the inverse of `civil_from_days`.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let ms = (era * 146_097 + doe - 719_468) * 86_400_000;
    (utc_date(ms) == date).then_some(ms)
}

/// RFC 3339 with milliseconds, e.g. `2026-11-26T09:30:00.000Z`.
pub fn rfc3339(ms: i64) -> String {
    let ms_of_day = ms.rem_euclid(86_400_000);
    let s = ms_of_day / 1000;
    format!(
        "{}T{:02}:{:02}:{:02}.{:03}Z",
        utc_date(ms),
        s / 3600,
        (s / 60) % 60,
        s % 60,
        ms_of_day % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_known_instants() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(-1), "1969-12-31");
        // 2000-02-29T23:59:59.999Z, a leap day in a century leap year.
        assert_eq!(utc_date(951_868_799_999), "2000-02-29");
        assert_eq!(utc_date(951_868_800_000), "2000-03-01");
        // 2026-11-26T11:57:13Z
        assert_eq!(rfc3339(1_795_694_233_123), "2026-11-26T11:57:13.123Z");
    }

    #[test]
    fn date_start_is_the_inverse_of_utc_date() {
        for ms in [0i64, 951_868_800_000, 1_795_694_400_000] {
            assert_eq!(
                date_start_ms(&utc_date(ms)),
                Some(ms - ms.rem_euclid(86_400_000))
            );
        }
        assert_eq!(date_start_ms("not-a-date"), None);
        assert_eq!(date_start_ms("2026-02-30"), None);
    }

    #[test]
    fn every_day_boundary_for_sixty_years_is_consistent() {
        let mut prev = utc_date(0);
        for day in 1..(60 * 366) {
            let ms = day * 86_400_000;
            let today = utc_date(ms);
            assert_ne!(today, prev, "day {day}");
            assert_eq!(utc_date(ms - 1), prev, "day {day}");
            assert!(today > prev);
            prev = today;
        }
    }
}
