//! Working days (工作日) on China's public calendar: Saturdays and Sundays
//! are rest days, except the make-up working days (调休上班) the State
//! Council publishes each year; the public holidays are rest days. The
//! offices' deadlines (CDPF 2021-10 §5: 3, 10 and 7 working days) are
//! counted on it.
//!
//! The year tables are data (`calendar/cn-YYYY.toml`, one per year);
//! [`Calendar::parse_year`] reads one. A year without a table counts only
//! weekends as rest days: [`Calendar::covers`] says which years have one,
//! so that `tongban check` can warn before a year starts without its table.

use chrono::{Datelike, NaiveDate, Weekday};
use std::collections::{BTreeMap, BTreeSet};

/// A working-day calendar: the year tables it has.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Calendar {
    years: BTreeMap<i32, Year>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Year {
    holidays: BTreeSet<NaiveDate>,
    working_weekends: BTreeSet<NaiveDate>,
}

/// What is wrong with a year table.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CalendarError {
    /// Not TOML, or not the table's fields.
    #[error("{0}")]
    Toml(String),
    /// A date that is not `YYYY-MM-DD`.
    #[error("{list}: {value:?} is not a date (YYYY-MM-DD)")]
    Date {
        /// `holidays` or `working_weekends`.
        list: &'static str,
        /// The text.
        value: String,
    },
    /// A date of another year than the table's.
    #[error("{list}: {date} is not in {year}")]
    OtherYear {
        /// `holidays` or `working_weekends`.
        list: &'static str,
        /// The date.
        date: NaiveDate,
        /// The table's year.
        year: i32,
    },
    /// A make-up working day that is not a Saturday or a Sunday.
    #[error("working_weekends: {0} is a {1}, not a Saturday or Sunday")]
    NotWeekend(NaiveDate, Weekday),
    /// A day that is both a holiday and a working day.
    #[error("{0} is both a holiday and a working weekend day")]
    Both(NaiveDate),
    /// Two tables of one year.
    #[error("two tables for {0}")]
    Duplicate(i32),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct YearTable {
    year: i32,
    #[serde(default)]
    holidays: Vec<String>,
    #[serde(default)]
    working_weekends: Vec<String>,
}

impl Calendar {
    /// Adds one year's table (its TOML text) to the calendar.
    pub fn parse_year(&mut self, text: &str) -> Result<i32, CalendarError> {
        let t: YearTable = toml::from_str(text).map_err(|e| CalendarError::Toml(e.to_string()))?;
        let dates = |list: &'static str, v: &[String]| {
            v.iter()
                .map(|s| {
                    let date = NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
                        CalendarError::Date {
                            list,
                            value: s.clone(),
                        }
                    })?;
                    if date.year() != t.year {
                        return Err(CalendarError::OtherYear {
                            list,
                            date,
                            year: t.year,
                        });
                    }
                    Ok(date)
                })
                .collect::<Result<BTreeSet<_>, _>>()
        };
        let year = Year {
            holidays: dates("holidays", &t.holidays)?,
            working_weekends: dates("working_weekends", &t.working_weekends)?,
        };
        for d in &year.working_weekends {
            if !is_weekend(*d) {
                return Err(CalendarError::NotWeekend(*d, d.weekday()));
            }
            if year.holidays.contains(d) {
                return Err(CalendarError::Both(*d));
            }
        }
        if self.years.insert(t.year, year).is_some() {
            return Err(CalendarError::Duplicate(t.year));
        }
        Ok(t.year)
    }

    /// Whether the calendar has a table for `year`.
    pub fn covers(&self, year: i32) -> bool {
        self.years.contains_key(&year)
    }

    /// Whether `d` is a working day.
    pub fn is_working(&self, d: NaiveDate) -> bool {
        match self.years.get(&d.year()) {
            Some(y) if y.working_weekends.contains(&d) => true,
            Some(y) if y.holidays.contains(&d) => false,
            _ => !is_weekend(d),
        }
    }

    /// The `n`th working day after `d` (`d` itself not counted: a deadline
    /// of n working days from a day's receipt ends with that day); `d`
    /// itself for 0.
    pub fn add_working_days(&self, d: NaiveDate, n: u32) -> NaiveDate {
        let mut day = d;
        let mut left = n;
        while left > 0 {
            day = day.succ_opt().unwrap_or(day);
            if self.is_working(day) {
                left -= 1;
            }
        }
        day
    }

    /// Working days after `from` up to and including `to` (0 when `to` is
    /// not after `from`).
    pub fn working_days_between(&self, from: NaiveDate, to: NaiveDate) -> u32 {
        let mut n = 0;
        let mut day = from;
        while day < to {
            day = day.succ_opt().unwrap_or(to);
            n += u32::from(self.is_working(day));
        }
        n
    }
}

fn is_weekend(d: NaiveDate) -> bool {
    matches!(d.weekday(), Weekday::Sat | Weekday::Sun)
}

/// The end of a day in China time (the next day's 00:00 +08:00), ms since
/// the epoch: a deadline that falls on `d` has passed from this instant.
pub fn end_of_day_ms(d: NaiveDate) -> i64 {
    let next = d.succ_opt().unwrap_or(d);
    next.and_hms_opt(0, 0, 0)
        .map(|t| t.and_utc().timestamp_millis() - 8 * 3_600_000)
        .unwrap_or(0)
}

/// The day (China time) of an instant in ms since the epoch.
pub fn china_day(ms: i64) -> NaiveDate {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .with_timezone(&super::china_tz())
        .date_naive()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn shipped() -> Calendar {
        let mut c = Calendar::default();
        for y in ["2025", "2026"] {
            let path = format!("{}/calendar/cn-{y}.toml", env!("CARGO_MANIFEST_DIR"));
            c.parse_year(&std::fs::read_to_string(path).unwrap())
                .unwrap();
        }
        c
    }

    #[test]
    fn the_shipped_tables_count_248_working_days_in_2025_and_2026() {
        let c = shipped();
        // 261 weekdays each year; 18 (2025) and 19 (2026) of them holidays;
        // 5 and 6 make-up weekend days worked: 248 working days each.
        let count = |y: i32| {
            let mut d = NaiveDate::from_ymd_opt(y, 1, 1).unwrap();
            let mut n = 0;
            while d.year() == y {
                n += u32::from(c.is_working(d));
                d = d.succ_opt().unwrap();
            }
            n
        };
        assert_eq!(count(2025), 248);
        assert_eq!(count(2026), 248);
    }

    #[test]
    fn deadlines_skip_weekends_and_holidays_and_count_make_up_days() {
        let c = shipped();
        // Received on Tuesday 2026-09-29: 30 Sep is a working day, 1–7 Oct
        // the National Day holiday, Thursday 8 and Friday 9 work, Saturday
        // 10 is a make-up working day.
        assert_eq!(c.add_working_days(day("2026-09-29"), 1), day("2026-09-30"));
        assert_eq!(c.add_working_days(day("2026-09-29"), 2), day("2026-10-08"));
        assert_eq!(c.add_working_days(day("2026-09-29"), 4), day("2026-10-10"));
        assert_eq!(c.add_working_days(day("2026-09-29"), 5), day("2026-10-12"));
        // Received on a Friday: three working days end on Wednesday.
        assert_eq!(c.add_working_days(day("2026-12-04"), 3), day("2026-12-09"));
        // Received on a holiday: counted from the next working day.
        assert_eq!(c.add_working_days(day("2026-02-16"), 1), day("2026-02-24"));
        assert_eq!(c.add_working_days(day("2026-02-16"), 0), day("2026-02-16"));
        // Sunday 2026-01-04 is worked; Saturday 2026-01-03 is a holiday.
        assert!(c.is_working(day("2026-01-04")));
        assert!(!c.is_working(day("2026-01-03")));
        assert_eq!(
            c.working_days_between(day("2026-09-29"), day("2026-10-12")),
            5
        );
        assert_eq!(
            c.working_days_between(day("2026-10-12"), day("2026-09-29")),
            0
        );
    }

    #[test]
    fn a_year_without_a_table_rests_on_weekends_only() {
        let c = shipped();
        assert!(!c.covers(2027));
        // 1 January 2027 is a Friday: a working day until 2027's table comes.
        assert!(c.is_working(day("2027-01-01")));
        assert!(!c.is_working(day("2027-01-02")));
    }

    #[test]
    fn a_bad_table_says_what_is_wrong() {
        let mut c = Calendar::default();
        let e = |c: &mut Calendar, t: &str| c.parse_year(t).unwrap_err().to_string();
        assert_eq!(
            e(&mut c, "year = 2026\nholidays = [\"2026-13-01\"]"),
            "holidays: \"2026-13-01\" is not a date (YYYY-MM-DD)"
        );
        assert_eq!(
            e(&mut c, "year = 2026\nholidays = [\"2025-10-01\"]"),
            "holidays: 2025-10-01 is not in 2026"
        );
        assert_eq!(
            e(&mut c, "year = 2026\nworking_weekends = [\"2026-10-09\"]"),
            "working_weekends: 2026-10-09 is a Fri, not a Saturday or Sunday"
        );
        assert_eq!(
            e(
                &mut c,
                "year = 2026\nholidays = [\"2026-10-10\"]\nworking_weekends = [\"2026-10-10\"]"
            ),
            "2026-10-10 is both a holiday and a working weekend day"
        );
        c.parse_year("year = 2026").unwrap();
        assert_eq!(e(&mut c, "year = 2026"), "two tables for 2026");
    }

    #[test]
    fn the_end_of_a_day_is_midnight_in_china() {
        let end = end_of_day_ms(day("2026-12-04"));
        assert_eq!(china_day(end - 1), day("2026-12-04"));
        assert_eq!(china_day(end), day("2026-12-05"));
        // 2026-12-04T16:00:00Z is midnight in Beijing.
        assert_eq!(end, 1_796_400_000_000);
    }
}
