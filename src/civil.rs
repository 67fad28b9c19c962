//! Calendar dates ↔ Unix time in UTC, for KITTI timestamps and drive manifests (the crate
//! has no date library; this is the proleptic Gregorian day count, exact for all i64 days).

/// Days since 1970-01-01 of a proleptic Gregorian date.
pub(crate) fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let m = i64::from(month);
    let day_of_year = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// `(year, month, day)` of a day count since 1970-01-01.
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `2024-05-01T12:34:56.789Z` (millisecond precision) for Unix nanoseconds.
pub(crate) fn rfc3339_utc(unix_ns: u64) -> String {
    let secs = (unix_ns / 1_000_000_000) as i64;
    let millis = (unix_ns % 1_000_000_000) / 1_000_000;
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let second_of_day = secs.rem_euclid(86_400);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        second_of_day % 3600 / 60,
        second_of_day % 60
    )
}

/// Parses `YYYY-MM-DD HH:MM:SS[.fraction]` (also with `T`, optional trailing `Z`) as UTC
/// Unix nanoseconds; the fraction may have up to 9 digits.
pub(crate) fn parse_datetime_ns(text: &str) -> Option<i64> {
    let text = text.trim().trim_end_matches('Z');
    let (date, time) = text.split_once([' ', 'T'])?;
    let mut date_parts = date.split('-');
    let year: i64 = date_parts.next()?.parse().ok()?;
    let month: u32 = date_parts.next()?.parse().ok()?;
    let day: u32 = date_parts.next()?.parse().ok()?;
    if date_parts.next().is_some() || !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    let (hms, fraction) = time.split_once('.').unwrap_or((time, ""));
    let mut time_parts = hms.split(':');
    let hour: i64 = time_parts.next()?.parse().ok()?;
    let minute: i64 = time_parts.next()?.parse().ok()?;
    let second: i64 = time_parts.next()?.parse().ok()?;
    if time_parts.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let frac_ns = fraction_to_ns(fraction)?;
    let secs = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

fn fraction_to_ns(fraction: &str) -> Option<i64> {
    if fraction.len() > 9 || !fraction.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if fraction.is_empty() {
        return Some(0);
    }
    let value: i64 = fraction.parse().ok()?;
    Some(value * 10_i64.pow(9 - fraction.len() as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_counts_round_trip_and_match_known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
        for days in [-800_000, -1, 0, 59, 60, 11_016, 19_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn kitti_timestamp_parses_to_unix_ns() {
        // date -u -d '2011-09-26 13:02:25' +%s → 1317042145
        let ns = parse_datetime_ns("2011-09-26 13:02:25.964389445").unwrap();
        assert_eq!(ns, 1_317_042_145_964_389_445);
        assert_eq!(
            parse_datetime_ns("2011-09-26T13:02:25Z").unwrap(),
            1_317_042_145_000_000_000
        );
        assert_eq!(
            parse_datetime_ns("2011-09-26 13:02:25.5").unwrap() % 1_000_000_000,
            500_000_000
        );
        assert!(parse_datetime_ns("2011-13-26 13:02:25").is_none());
        assert!(parse_datetime_ns("yesterday").is_none());
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(
            rfc3339_utc(1_317_042_145_964_389_445),
            "2011-09-26T13:02:25.964Z"
        );
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
    }
}
