//! Schedules: a job spec submitted on a cron schedule, with its data months relative to the run
//! date (the course retrained monthly with `0 3 2 * *`, on the months before).
//!
//! Data URIs may contain `{month}` (the run date's month, `YYYY-MM`) and `{month-N}` (N months
//! earlier); they are expanded when the job is submitted.

use std::str::FromStr as _;

use chrono::{DateTime, Datelike, Utc};

use crate::error::{Error, Result};

/// A parsed five-field cron expression (minute hour day-of-month month day-of-week, UTC).
#[derive(Debug, Clone)]
pub struct Cron {
    text: String,
    schedule: cron::Schedule,
}

impl Cron {
    /// Parses `0 3 2 * *`. Errors name the field `cron`.
    pub fn parse(text: &str) -> Result<Self> {
        let fields = text.split_whitespace().count();
        if fields != 5 {
            return Err(Error::invalid(
                "cron",
                format!("{text:?} has {fields} fields; expected 5 (minute hour day-of-month month day-of-week)"),
            ));
        }
        // The cron crate wants seconds first.
        let schedule = cron::Schedule::from_str(&format!("0 {text}"))
            .map_err(|e| Error::invalid("cron", format!("{text:?}: {e}")))?;
        Ok(Self { text: text.to_owned(), schedule })
    }

    /// The expression as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first run strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedule.after(&after).next()
    }
}

/// Replaces `{month}` and `{month-N}` in `template` with months relative to `date`.
pub fn expand_months(template: &str, date: DateTime<Utc>) -> Result<String> {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find("{month") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            return Err(Error::invalid("spec", format!("{template:?}: unclosed {{month placeholder")));
        };
        let inner = &rest[start + 1..start + end];
        let back: u32 = match inner.strip_prefix("month") {
            Some("") => 0,
            Some(offset) => offset
                .strip_prefix('-')
                .and_then(|n| n.parse().ok())
                .ok_or_else(|| Error::invalid("spec", format!("{template:?}: expected {{month}} or {{month-N}}")))?,
            None => 0,
        };
        let months = date.year() * 12 + date.month0() as i32 - back as i32;
        out.push_str(&format!("{:04}-{:02}", months.div_euclid(12), months.rem_euclid(12) + 1));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn the_course_schedule_runs_monthly_on_the_second() {
        let cron = Cron::parse("0 3 2 * *").expect("cron");
        let after = Utc.with_ymd_and_hms(2026, 11, 27, 16, 0, 0).single().expect("date");
        let next = cron.next_after(after).expect("next");
        assert_eq!(next, Utc.with_ymd_and_hms(2026, 12, 2, 3, 0, 0).single().expect("date"));
        let error = Cron::parse("0 3 2 *").expect_err("four fields").to_string();
        assert!(error.starts_with("cron:"), "{error}");
        assert!(Cron::parse("0 25 2 * *").is_err(), "hour 25");
    }

    #[test]
    fn months_are_relative_to_the_run_date() {
        let date = Utc.with_ymd_and_hms(2023, 2, 2, 3, 0, 0).single().expect("date");
        let uri = "https://d37ci6vzurychx.cloudfront.net/trip-data/green_tripdata_{month-2}.parquet";
        assert_eq!(
            expand_months(uri, date).expect("expand"),
            "https://d37ci6vzurychx.cloudfront.net/trip-data/green_tripdata_2022-12.parquet"
        );
        assert_eq!(expand_months("{month}/{month-1}/{month-14}", date).expect("expand"), "2023-02/2023-01/2021-12");
        assert!(expand_months("{month+1}", date).is_err());
        assert_eq!(expand_months("plain.parquet", date).expect("plain"), "plain.parquet");
    }
}
