//! Which snapshots a retention policy keeps, with restic's meaning so that a policy
//! carries over unchanged: snapshots are grouped (by host and paths unless told
//! otherwise), sorted newest first, and each `--keep-*` rule keeps the newest snapshot
//! of each of its first N periods (hour, day, ISO week, month, year; "last" counts
//! snapshots), `-1` meaning every period. `--keep-within` keeps everything newer than
//! the duration before the group's newest snapshot (not before now), `--keep-within-*`
//! keeps one snapshot per period inside such a window, and `--keep-tag` keeps every
//! snapshot carrying all tags of any of the given lists. A snapshot is kept if any rule
//! keeps it, and every rule that did is reported.
//!
//! Periods are taken in the time zone recorded in the snapshot (cairn records UTC).
//! As restic 0.14 does (Debian 12's restic), a rule whose count is not used up does not
//! additionally keep the group's oldest snapshot; restic 0.16 and later do.

use time::{Date, Duration, Month, OffsetDateTime};

/// A calendar duration as restic writes it: `1y2m3d4h` (years, months, days, hours).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CalendarDuration {
    /// Years.
    pub years: i32,
    /// Months.
    pub months: i32,
    /// Days.
    pub days: i32,
    /// Hours.
    pub hours: i32,
}

impl CalendarDuration {
    /// Parse `1y2m3d4h` (any subset, in that order or not); the error says the form.
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a duration like 1y2m3d4h (years, months, days, hours)");
        let mut d = CalendarDuration::default();
        let mut num = String::new();
        if s.trim().is_empty() {
            return Err(bad());
        }
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: i32 = num.parse().map_err(|_| bad())?;
            num.clear();
            match c {
                'y' => d.years += n,
                'm' => d.months += n,
                'd' => d.days += n,
                'h' => d.hours += n,
                _ => return Err(bad()),
            }
        }
        if !num.is_empty() {
            return Err(bad());
        }
        Ok(d)
    }

    /// Whether it is zero (the rule is off).
    pub fn is_zero(&self) -> bool {
        *self == CalendarDuration::default()
    }

    /// `t` minus this duration, with calendar normalisation (31 March minus one month is
    /// 3 March, as Go's `AddDate` computes it).
    pub fn before(&self, t: OffsetDateTime) -> OffsetDateTime {
        let months = i64::from(t.year()) * 12 + i64::from(t.month() as u8)
            - 1
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let year = months.div_euclid(12) as i32;
        let month = Month::try_from((months.rem_euclid(12) + 1) as u8).unwrap_or(Month::January);
        let first = Date::from_calendar_date(year, month, 1).unwrap_or(t.date());
        let date = first + Duration::days(i64::from(t.day()) - 1 - i64::from(self.days));
        t.replace_date(date) - Duration::hours(i64::from(self.hours))
    }
}

impl std::fmt::Display for CalendarDuration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (n, u) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{u}")?;
            }
        }
        Ok(())
    }
}

/// A retention policy. Counts: 0 = rule off, -1 = every period.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// Newest N snapshots.
    pub last: i64,
    /// Newest snapshot of each of the newest N hours.
    pub hourly: i64,
    /// ... days.
    pub daily: i64,
    /// ... ISO weeks.
    pub weekly: i64,
    /// ... months.
    pub monthly: i64,
    /// ... years.
    pub yearly: i64,
    /// Everything within this of the newest snapshot.
    pub within: CalendarDuration,
    /// One per hour within this of the newest snapshot.
    pub within_hourly: CalendarDuration,
    /// One per day within ...
    pub within_daily: CalendarDuration,
    /// One per week within ...
    pub within_weekly: CalendarDuration,
    /// One per month within ...
    pub within_monthly: CalendarDuration,
    /// One per year within ...
    pub within_yearly: CalendarDuration,
    /// Keep snapshots having every tag of any of these lists (an empty list: no tags).
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    /// Whether no rule is set (then nothing may be removed).
    pub fn is_empty(&self) -> bool {
        *self == Policy::default()
    }
}

/// What a rule buckets by.
#[derive(Clone, Copy)]
enum Period {
    Snapshot,
    Hour,
    Day,
    Week,
    Month,
    Year,
}

fn bucket(p: Period, t: OffsetDateTime, nr: usize) -> i64 {
    let (y, m, d, h) = (
        i64::from(t.year()),
        i64::from(t.month() as u8),
        i64::from(t.day()),
        i64::from(t.hour()),
    );
    match p {
        Period::Snapshot => nr as i64,
        Period::Hour => ((y * 100 + m) * 100 + d) * 100 + h,
        Period::Day => (y * 100 + m) * 100 + d,
        Period::Week => {
            let (iy, iw, _) = t.to_iso_week_date();
            i64::from(iy) * 100 + i64::from(iw)
        }
        Period::Month => y * 100 + m,
        Period::Year => y,
    }
}

/// One snapshot as the policy sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Its recorded time.
    pub time: OffsetDateTime,
    /// Its tags.
    pub tags: Vec<String>,
}

/// Apply `policy` to one group. Returns, for each candidate in the given order, the
/// rules that keep it (empty: remove). An empty policy keeps everything.
pub fn apply(group: &[Candidate], policy: &Policy, now: OffsetDateTime) -> Vec<Vec<String>> {
    let mut out = vec![Vec::new(); group.len()];
    if policy.is_empty() {
        for r in &mut out {
            r.push("policy is empty".into());
        }
        return out;
    }
    // Newest first; ties keep their order.
    let mut order: Vec<usize> = (0..group.len()).collect();
    order.sort_by(|a, b| group[*b].time.cmp(&group[*a].time));
    // The newest snapshot not in the future anchors the "within" rules.
    let latest = group
        .iter()
        .map(|c| c.time)
        .filter(|t| *t < now)
        .max()
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut counted = [
        (policy.last, Period::Snapshot, None::<i64>, "last snapshot"),
        (policy.hourly, Period::Hour, None, "hourly snapshot"),
        (policy.daily, Period::Day, None, "daily snapshot"),
        (policy.weekly, Period::Week, None, "weekly snapshot"),
        (policy.monthly, Period::Month, None, "monthly snapshot"),
        (policy.yearly, Period::Year, None, "yearly snapshot"),
    ];
    let mut windowed = [
        (
            policy.within_hourly,
            Period::Hour,
            None::<i64>,
            "hourly within",
        ),
        (policy.within_daily, Period::Day, None, "daily within"),
        (policy.within_weekly, Period::Week, None, "weekly within"),
        (policy.within_monthly, Period::Month, None, "monthly within"),
        (policy.within_yearly, Period::Year, None, "yearly within"),
    ];
    for (nr, &i) in order.iter().enumerate() {
        let cur = &group[i];
        let reasons = &mut out[i];
        for list in &policy.tags {
            // As in restic, an empty list (`--keep-tag ''`) means "has no tags".
            let matches = if list.is_empty() {
                cur.tags.is_empty()
            } else {
                list.iter().all(|t| cur.tags.contains(t))
            };
            if matches {
                reasons.push(format!("has tags [{}]", list.join(", ")));
            }
        }
        if !policy.within.is_zero() && cur.time > policy.within.before(latest) {
            reasons.push(format!("within {}", policy.within));
        }
        for (count, period, last, reason) in &mut counted {
            if *count > 0 || *count == -1 {
                let v = bucket(*period, cur.time, nr);
                if Some(v) != *last {
                    *last = Some(v);
                    if *count > 0 {
                        *count -= 1;
                    }
                    reasons.push((*reason).to_string());
                }
            }
        }
        for (within, period, last, reason) in &mut windowed {
            if !within.is_zero() && cur.time > within.before(latest) {
                let v = bucket(*period, cur.time, nr);
                if Some(v) != *last {
                    *last = Some(v);
                    reasons.push(format!("{reason} {within}"));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn snaps(times: &[OffsetDateTime]) -> Vec<Candidate> {
        times
            .iter()
            .map(|t| Candidate {
                time: *t,
                tags: Vec::new(),
            })
            .collect()
    }

    fn kept(group: &[Candidate], p: &Policy) -> Vec<OffsetDateTime> {
        let now = datetime!(2030-01-01 0:00 UTC);
        let mut k: Vec<_> = apply(group, p, now)
            .iter()
            .zip(group)
            .filter(|(r, _)| !r.is_empty())
            .map(|(_, c)| c.time)
            .collect();
        k.sort();
        k
    }

    /// Two snapshots a day, 09:00 and 21:00, for `days` days from 2026-01-01.
    fn twice_daily(days: i64) -> Vec<OffsetDateTime> {
        let start = datetime!(2026-01-01 9:00 UTC);
        (0..days)
            .flat_map(|d| {
                [
                    start + Duration::days(d),
                    start + Duration::days(d) + Duration::hours(12),
                ]
            })
            .collect()
    }

    #[test]
    fn durations_parse_like_restic() {
        assert_eq!(
            CalendarDuration::parse("1y2m3d4h"),
            Ok(CalendarDuration {
                years: 1,
                months: 2,
                days: 3,
                hours: 4
            })
        );
        assert_eq!(CalendarDuration::parse("36h").map(|d| d.hours), Ok(36));
        for bad in ["", "5", "1w", "d", "1.5d"] {
            assert!(CalendarDuration::parse(bad).is_err(), "{bad}");
        }
        // Calendar arithmetic normalises like Go's AddDate.
        let t = datetime!(2026-03-31 12:00 UTC);
        let d = CalendarDuration {
            months: 1,
            ..Default::default()
        };
        assert_eq!(d.before(t), datetime!(2026-03-03 12:00 UTC));
        let d = CalendarDuration {
            years: 1,
            days: 1,
            hours: 13,
            ..Default::default()
        };
        assert_eq!(d.before(t), datetime!(2025-03-29 23:00 UTC));
    }

    // The cases below follow restic's documentation of `forget` ("Removing snapshots
    // according to a policy"), restated on series of our own.

    #[test]
    fn keep_last_keeps_the_newest_n() {
        let t = twice_daily(3);
        let p = Policy {
            last: 2,
            ..Policy::default()
        };
        assert_eq!(kept(&snaps(&t), &p), t[4..].to_vec());
    }

    #[test]
    fn keep_daily_keeps_the_newest_of_each_of_the_last_n_days() {
        let t = twice_daily(10);
        let p = Policy {
            daily: 3,
            ..Policy::default()
        };
        // The 21:00 snapshots of the last three days.
        assert_eq!(kept(&snaps(&t), &p), vec![t[15], t[17], t[19]]);
        // Fewer days than the count: the newest of each day, and nothing more (the
        // oldest snapshot is not kept in addition, as in restic 0.14).
        let p = Policy {
            daily: 30,
            ..Policy::default()
        };
        assert_eq!(kept(&snaps(&t), &p).len(), 10);
    }

    #[test]
    fn weeks_are_iso_weeks_across_the_new_year() {
        // 2025-12-29 (Monday) .. 2026-01-04 are one ISO week (2026-W01).
        let t = vec![
            datetime!(2025-12-28 12:00 UTC),
            datetime!(2025-12-29 12:00 UTC),
            datetime!(2026-01-01 12:00 UTC),
            datetime!(2026-01-04 12:00 UTC),
            datetime!(2026-01-05 12:00 UTC),
        ];
        let p = Policy {
            weekly: 3,
            ..Policy::default()
        };
        assert_eq!(kept(&snaps(&t), &p), vec![t[0], t[3], t[4]]);
    }

    #[test]
    fn monthly_and_yearly_keep_the_newest_of_each_period() {
        let t = vec![
            datetime!(2024-11-30 12:00 UTC),
            datetime!(2024-12-31 12:00 UTC),
            datetime!(2025-01-15 12:00 UTC),
            datetime!(2025-01-31 12:00 UTC),
            datetime!(2025-02-01 12:00 UTC),
        ];
        let p = Policy {
            monthly: 2,
            yearly: 5,
            ..Policy::default()
        };
        // Months: Feb 2025, Jan 2025 (the 31st). Years: 2025 (Feb 1st), 2024 (Dec 31st).
        assert_eq!(kept(&snaps(&t), &p), vec![t[1], t[3], t[4]]);
    }

    #[test]
    fn keep_within_counts_back_from_the_newest_snapshot_not_from_now() {
        let t = twice_daily(10); // newest: 2026-01-10 21:00
        let p = Policy {
            within: CalendarDuration::parse("2d").expect("d"),
            ..Policy::default()
        };
        // Strictly after 2026-01-08 21:00.
        assert_eq!(kept(&snaps(&t), &p), t[16..].to_vec());
        // A snapshot dated in the future does not move the window.
        let mut with_future = t.clone();
        with_future.push(datetime!(2031-01-01 0:00 UTC));
        assert_eq!(kept(&snaps(&with_future), &p).len(), 5);
    }

    #[test]
    fn keep_within_daily_keeps_one_a_day_inside_the_window() {
        let t = twice_daily(10);
        let p = Policy {
            within_daily: CalendarDuration::parse("3d").expect("d"),
            ..Policy::default()
        };
        assert_eq!(kept(&snaps(&t), &p), vec![t[15], t[17], t[19]]);
    }

    #[test]
    fn keep_tag_needs_every_tag_of_a_list_and_is_not_counted() {
        let mut g = snaps(&twice_daily(2));
        g[0].tags = vec!["monthly".into(), "db".into()];
        g[1].tags = vec!["monthly".into()];
        let p = Policy {
            tags: vec![vec!["monthly".into(), "db".into()]],
            last: 1,
            ..Policy::default()
        };
        let r = apply(&g, &p, datetime!(2030-01-01 0:00 UTC));
        assert_eq!(r[0], vec!["has tags [monthly, db]".to_string()]);
        assert!(r[1].is_empty());
        assert_eq!(r[3], vec!["last snapshot".to_string()]);
    }

    #[test]
    fn minus_one_keeps_every_period_and_reasons_accumulate() {
        let t = twice_daily(4);
        let p = Policy {
            daily: -1,
            last: 1,
            ..Policy::default()
        };
        let r = apply(&snaps(&t), &p, datetime!(2030-01-01 0:00 UTC));
        assert_eq!(
            r[7],
            vec!["last snapshot".to_string(), "daily snapshot".to_string()]
        );
        assert_eq!(r.iter().filter(|x| !x.is_empty()).count(), 4);
    }

    #[test]
    fn an_empty_policy_keeps_everything() {
        let t = twice_daily(2);
        assert_eq!(kept(&snaps(&t), &Policy::default()).len(), 4);
    }
}
