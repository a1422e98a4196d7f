//! Dates as days since the Unix epoch: the Avro `date` logical type, and
//! how dates on certificates and ID numbers are compared.

/// Days from 0001-01-01 (CE day 1) to 1970-01-01.
pub const UNIX_EPOCH_CE_DAYS: i32 = 719_163;

/// Converts days since the Unix epoch to a date.
pub fn date_from_days(days: i32) -> Option<chrono::NaiveDate> {
    chrono::NaiveDate::from_num_days_from_ce_opt(days.checked_add(UNIX_EPOCH_CE_DAYS)?)
}

/// Converts a date to days since the Unix epoch.
pub fn days_from_date(d: chrono::NaiveDate) -> i32 {
    use chrono::Datelike;
    d.num_days_from_ce() - UNIX_EPOCH_CE_DAYS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_days_round_trip() {
        let d = chrono::NaiveDate::from_ymd_opt(2026, 11, 2).unwrap();
        assert_eq!(date_from_days(days_from_date(d)), Some(d));
        assert_eq!(
            days_from_date(chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap()),
            0
        );
    }
}
