//! UTC calendar months for `period: month` quotas: fixed windows that start on the first of
//! each month at 00:00 UTC and last 28 to 31 days.
//!
//! A month's window index is months since January 1970; the arithmetic is Howard Hinnant's
//! `days_from_civil` / `civil_from_days` on whole days, integers only, so the Redis script
//! (`fixed_window.lua`) computes exactly the same windows.

/// Microseconds per day.
const DAY_US: u64 = 86_400_000_000;

/// The longest month, µs: what a monthly policy reports as its period (headers, TTL bounds).
pub const LONGEST_MONTH_US: u64 = 31 * DAY_US;

/// The month containing `now_us` (µs since the epoch), as months since January 1970.
pub fn month_of(now_us: u64) -> u64 {
    let (year, month) = civil_from_days(now_us / DAY_US);
    (year - 1970) * 12 + (month - 1)
}

/// The first instant (µs) of month `index` (months since January 1970).
pub fn month_start_us(index: u64) -> u64 {
    let (year, month) = (1970 + index / 12, index % 12 + 1);
    days_from_civil(year, month) * DAY_US
}

/// Days since 1970-01-01 of the first of `month` (1-12) in `year` (>= 1970).
fn days_from_civil(year: u64, month: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5; // day 1 of the month
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `(year, month)` of the day `days` since 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_start_on_the_first_at_midnight_utc() {
        // 2027-01-31 23:59:59.999 and 2027-02-01 00:00:00 UTC.
        let feb_1_2027 = 1_801_440_000 * 1_000_000;
        assert_eq!(month_of(feb_1_2027 - 1_000), (2027 - 1970) * 12);
        assert_eq!(month_of(feb_1_2027), (2027 - 1970) * 12 + 1);
        assert_eq!(month_start_us(month_of(feb_1_2027)), feb_1_2027);
        assert_eq!(month_of(0), 0);
        assert_eq!(month_start_us(1), 31 * DAY_US);
        // Every month from 1970 to 2400 starts where the one before ends, 28-31 days later.
        for index in 0..(430 * 12) {
            let (start, next) = (month_start_us(index), month_start_us(index + 1));
            assert!(
                (28 * DAY_US..=LONGEST_MONTH_US).contains(&(next - start)),
                "{index}"
            );
            assert_eq!((month_of(start), month_of(next - 1)), (index, index));
        }
        // 2024 is a leap year, 2100 is not.
        let feb = |year: u64| (year - 1970) * 12 + 1;
        assert_eq!(
            month_start_us(feb(2024) + 1) - month_start_us(feb(2024)),
            29 * DAY_US
        );
        assert_eq!(
            month_start_us(feb(2100) + 1) - month_start_us(feb(2100)),
            28 * DAY_US
        );
    }
}
