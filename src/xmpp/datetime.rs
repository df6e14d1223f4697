//! XEP-0082 date-time profiles: UTC timestamps as `YYYY-MM-DDThh:mm:ss[.fff]Z` and back.

/// Formats unix seconds as an XEP-0082 DateTime in UTC.
pub fn format(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// A number of exactly `len` ASCII digits.
fn digits(s: &str, len: usize) -> Option<i64> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Parses an XEP-0082 DateTime (`CCYY-MM-DDThh:mm:ss[.sss]TZD`, any offset, optional
/// fraction) into unix seconds. The year has four digits (0000–9999), so peer input can never
/// overflow the arithmetic; anything else is `None`.
pub fn parse(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, time) = s.split_once('T')?;
    let mut dp = date.splitn(3, '-');
    let y = digits(dp.next()?, 4)?;
    let m = digits(dp.next()?, 2)?;
    let d = digits(dp.next()?, 2)?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || time.len() < 8 {
        return None;
    }
    let (clock, zone) = match time.find(['Z', '+', '-']) {
        Some(i) => time.split_at(i),
        None => return None,
    };
    let (clock, fraction) = match clock.split_once('.') {
        Some((c, f)) => (c, Some(f)),
        None => (clock, None),
    };
    if fraction.is_some_and(|f| f.is_empty() || !f.bytes().all(|b| b.is_ascii_digit())) {
        return None;
    }
    let mut cp = clock.splitn(3, ':');
    let hh = digits(cp.next()?, 2)?;
    let mm = digits(cp.next()?, 2)?;
    let ss = digits(cp.next()?, 2)?;
    if hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let offset = if zone == "Z" {
        0
    } else {
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let (oh, om) = zone.get(1..)?.split_once(':')?;
        let (oh, om) = (digits(oh, 2)?, digits(om, 2)?);
        if oh > 23 || om > 59 {
            return None;
        }
        sign * (oh * 3600 + om * 60)
    };
    days_from_civil(y, m as u32, d as u32)?
        .checked_mul(86_400)?
        .checked_add(hh * 3600 + mm * 60 + ss)?
        .checked_sub(offset)
}

/// Howard Hinnant's days-from-civil (proleptic Gregorian); `None` on overflow.
fn days_from_civil(y: i64, m: u32, d: u32) -> Option<i64> {
    let y = if m <= 2 { y.checked_sub(1)? } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era.checked_mul(146_097)?
        .checked_add(doe)?
        .checked_sub(719_468)
}

/// Howard Hinnant's civil-from-days.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_known_instants() {
        assert_eq!(format(0), "1970-01-01T00:00:00Z");
        assert_eq!(format(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format(1_795_000_000), "2026-11-18T11:06:40Z");
        for t in [0, 951_782_400, 1_795_000_000, -86_400] {
            assert_eq!(parse(&format(t)), Some(t));
        }
        assert_eq!(
            parse("2002-09-10T23:08:25.123-06:00"),
            parse("2002-09-11T05:08:25Z")
        );
        assert_eq!(parse("nonsense"), None);
        assert_eq!(parse("2002-13-10T23:08:25Z"), None);
    }

    #[test]
    fn out_of_profile_values_are_refused_not_overflowed() {
        assert_eq!(parse("9999-12-31T23:59:59Z"), Some(253_402_300_799));
        assert_eq!(parse("0000-03-01T00:00:00Z"), Some(-62_162_035_200));
        for bad in [
            "999999999999-01-01T00:00:00Z",
            "-99999999999-01-01T00:00:00Z",
            "99999999999999999999-01-01T00:00:00Z",
            "+2020-01-01T00:00:00Z",
            "20-01-01T00:00:00Z",
            "2020-1-01T00:00:00Z",
            "2020-01-01T0:00:00:00Z",
            "2020-01-01T00:00:00.Z",
            "2020-01-01T00:00:00.x1Z",
            "2020-01-01T00:00:00+99:00",
            "2020-01-01T00:00:00+01",
            "2020-01-01T00:00:00+aa:bb",
            "2020-01-01T00:00:00",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
