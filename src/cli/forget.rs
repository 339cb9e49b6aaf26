//! `cairn forget`: remove snapshots by id or by a retention policy (restic's options and
//! meaning). Only snapshot objects are deleted; the data they referenced stays until a
//! prune.

use super::common::{RepoArgs, open};
use super::output;
use super::stdout::outln;
use anyhow::{Context, Result, bail};
use cairn::backend::{FileType, Handle};
use cairn::repo::{Repository, SnapshotEntry};
use cairn::retention::{CalendarDuration, Candidate, Policy, apply};
use std::collections::BTreeMap;
use tokio::runtime::Runtime;

/// `cairn forget` arguments.
#[derive(Debug, clap::Args)]
pub struct ForgetArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub repo: super::RepoArgs,
    /// Snapshots to remove by id (instead of a policy).
    pub snapshots: Vec<String>,
    /// Keep the newest N snapshots.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_last: Option<i64>,
    /// Keep the newest snapshot of each of the newest N hours (-1: every hour).
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_hourly: Option<i64>,
    /// ... of each of the newest N days.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_daily: Option<i64>,
    /// ... of each of the newest N ISO weeks.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_weekly: Option<i64>,
    /// ... of each of the newest N months.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_monthly: Option<i64>,
    /// ... of each of the newest N years.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub keep_yearly: Option<i64>,
    /// Keep every snapshot within this duration (1y2m3d4h) of the group's newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<String>,
    /// Keep one snapshot an hour within this duration of the newest.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_hourly: Option<String>,
    /// ... one a day.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_daily: Option<String>,
    /// ... one a week.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_weekly: Option<String>,
    /// ... one a month.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_monthly: Option<String>,
    /// ... one a year.
    #[arg(long, value_name = "DURATION")]
    pub keep_within_yearly: Option<String>,
    /// Keep snapshots with these tags (comma-separated: all of them; repeatable: any list).
    #[arg(long = "keep-tag", value_name = "TAGS")]
    pub keep_tags: Vec<String>,
    /// Which snapshots a policy considers.
    #[command(flatten)]
    pub filter: super::select::SnapshotFilter,
    /// Group snapshots by these fields before applying the policy: any of host, paths,
    /// tags, comma-separated ("" for one group).
    #[arg(long, default_value = "host,paths")]
    pub group_by: String,
    /// Only say what would be removed.
    #[arg(short = 'n', long)]
    pub dry_run: bool,
    /// Set from the global `--json`.
    #[arg(skip)]
    pub json: bool,
    /// Also remove the data no snapshot needs any more.
    #[arg(long)]
    pub prune: bool,
}

fn count(name: &str, v: Option<i64>) -> Result<i64> {
    match v {
        None => Ok(0),
        Some(n) if n >= -1 => Ok(n),
        Some(n) => bail!("--{name} {n}: give a count, or -1 for every period"),
    }
}

fn duration(name: &str, v: &Option<String>) -> Result<CalendarDuration> {
    match v {
        None => Ok(CalendarDuration::default()),
        Some(s) => CalendarDuration::parse(s).map_err(|e| anyhow::anyhow!("--{name}: {e}")),
    }
}

impl ForgetArgs {
    fn policy(&self) -> Result<Policy> {
        Ok(Policy {
            last: count("keep-last", self.keep_last)?,
            hourly: count("keep-hourly", self.keep_hourly)?,
            daily: count("keep-daily", self.keep_daily)?,
            weekly: count("keep-weekly", self.keep_weekly)?,
            monthly: count("keep-monthly", self.keep_monthly)?,
            yearly: count("keep-yearly", self.keep_yearly)?,
            within: duration("keep-within", &self.keep_within)?,
            within_hourly: duration("keep-within-hourly", &self.keep_within_hourly)?,
            within_daily: duration("keep-within-daily", &self.keep_within_daily)?,
            within_weekly: duration("keep-within-weekly", &self.keep_within_weekly)?,
            within_monthly: duration("keep-within-monthly", &self.keep_within_monthly)?,
            within_yearly: duration("keep-within-yearly", &self.keep_within_yearly)?,
            tags: super::select::tag_lists(&self.keep_tags),
        })
    }

    fn group_key(&self, e: &SnapshotEntry) -> Result<(String, serde_json::Value)> {
        let s = &e.snapshot;
        let mut key = Vec::new();
        let mut json = serde_json::Map::new();
        for field in self
            .group_by
            .split(',')
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            match field {
                "host" => {
                    key.push(format!("host {}", s.hostname));
                    json.insert("host".into(), s.hostname.clone().into());
                }
                "paths" => {
                    let mut p = s.paths.clone();
                    p.sort();
                    key.push(format!("paths [{}]", p.join(", ")));
                    json.insert("paths".into(), p.into());
                }
                "tags" => {
                    let mut t = s.tags.clone();
                    t.sort();
                    key.push(format!("tags [{}]", t.join(", ")));
                    json.insert("tags".into(), t.into());
                }
                other => bail!("--group-by {other:?}: use host, paths and/or tags"),
            }
        }
        Ok((key.join(", "), serde_json::Value::Object(json)))
    }
}

/// `cairn forget`.
pub fn run(rt: &Runtime, args: &RepoArgs, f: &ForgetArgs) -> Result<i32> {
    let policy = f.policy()?;
    let repo = open(rt, args)?;
    let all = rt.block_on(repo.list_snapshots())?;
    let mut remove: Vec<&SnapshotEntry> = Vec::new();
    let mut report = Vec::new();
    if !f.snapshots.is_empty() {
        if !policy.is_empty() {
            bail!("give snapshot ids or a --keep-* policy, not both");
        }
        for spec in &f.snapshots {
            let found = rt.block_on(repo.find_snapshot(spec))?;
            if let Some(e) = all.iter().find(|e| e.id == found.id) {
                remove.push(e);
            }
        }
    } else {
        if policy.is_empty() {
            bail!(
                "no policy given, so nothing is removed: use --keep-last, --keep-daily, --keep-within, ... (see `cairn forget --help`), or name snapshot ids"
            );
        }
        let mut groups: BTreeMap<String, (serde_json::Value, Vec<&SnapshotEntry>)> =
            BTreeMap::new();
        for e in all.iter().filter(|e| f.filter.matches(&e.snapshot)) {
            let (k, j) = f.group_key(e)?;
            groups.entry(k).or_insert_with(|| (j, Vec::new())).1.push(e);
        }
        let now = time::OffsetDateTime::now_utc();
        for (key, (gjson, members)) in groups {
            let candidates = members
                .iter()
                .map(|e| {
                    let time = time::OffsetDateTime::parse(
                        &e.snapshot.time,
                        &time::format_description::well_known::Rfc3339,
                    )
                    .with_context(|| format!("snapshot {} has an unreadable time", e.id.short()))?;
                    Ok(Candidate {
                        time,
                        tags: e.snapshot.tags.clone(),
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            let reasons = apply(&candidates, &policy, now);
            let mut order: Vec<usize> = (0..members.len()).collect();
            order.sort_by(|a, b| candidates[*a].time.cmp(&candidates[*b].time));
            let keep: Vec<(usize, &Vec<String>)> = order
                .iter()
                .filter(|i| !reasons[**i].is_empty())
                .map(|i| (*i, &reasons[*i]))
                .collect();
            let gone: Vec<usize> = order
                .iter()
                .copied()
                .filter(|i| reasons[*i].is_empty())
                .collect();
            for i in &gone {
                remove.push(members[*i]);
            }
            report.push((
                key,
                gjson,
                members.clone(),
                keep.iter()
                    .map(|(i, r)| (*i, (*r).clone()))
                    .collect::<Vec<_>>(),
                gone,
            ));
        }
    }
    if f.json {
        let groups: Vec<serde_json::Value> = report
            .iter()
            .map(|(_, gjson, members, keep, gone)| {
                let mut g = gjson.clone();
                g["keep"] = keep
                    .iter()
                    .map(|(i, _)| output::snapshot_json(&members[*i].id, &members[*i].snapshot))
                    .collect();
                g["remove"] = gone
                    .iter()
                    .map(|i| output::snapshot_json(&members[*i].id, &members[*i].snapshot))
                    .collect();
                g["reasons"] = keep
                    .iter()
                    .map(|(i, r)| {
                        serde_json::json!({
                            "snapshot": output::snapshot_json(&members[*i].id, &members[*i].snapshot),
                            "matches": r,
                        })
                    })
                    .collect();
                g
            })
            .collect();
        outln!("{}", serde_json::Value::Array(groups))?;
    } else {
        for (key, _, members, keep, gone) in &report {
            outln!(
                "snapshots for {}:",
                if key.is_empty() { "all" } else { key }
            )?;
            outln!("keep {} snapshot(s):", keep.len())?;
            for (i, r) in keep {
                let s = &members[*i];
                outln!(
                    "  {}  {}  {}",
                    s.id.short(),
                    output::short_time(&s.snapshot.time),
                    r.join(", ")
                )?;
            }
            outln!("remove {} snapshot(s):", gone.len())?;
            for i in gone {
                let s = &members[*i];
                outln!(
                    "  {}  {}",
                    s.id.short(),
                    output::short_time(&s.snapshot.time)
                )?;
            }
            outln!()?;
        }
    }
    if f.dry_run {
        if !f.json {
            outln!("dry run: {} snapshot(s) would be removed", remove.len())?;
        }
        return Ok(0);
    }
    let mut locked = 0;
    for e in &remove {
        if !remove_snapshot(rt, &repo, e)? {
            locked += 1;
        }
    }
    let removed = remove.len() - locked;
    if !f.json {
        outln!(
            "removed {} snapshot(s){}",
            removed,
            if f.prune {
                ""
            } else {
                "; the data they alone used stays stored until `cairn prune`"
            }
        )?;
    }
    if f.prune {
        super::prune::prune_after_forget(rt, args, f.json)?;
    }
    Ok(0)
}

/// Delete a snapshot object, unless S3 Object Lock protects it: then say until when it
/// stays, and answer `false`.
pub(super) fn remove_snapshot(rt: &Runtime, repo: &Repository, e: &SnapshotEntry) -> Result<bool> {
    let h = Handle::new(FileType::Snapshot, e.id.to_hex());
    if let Some(until) = rt.block_on(repo.backend().locked_until(&h))? {
        eprintln!(
            "snapshot {} is protected by S3 Object Lock until {}: it stays until then",
            e.id.short(),
            time::OffsetDateTime::from(until)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default()
        );
        return Ok(false);
    }
    rt.block_on(repo.backend().delete(&h))
        .with_context(|| format!("removing snapshot {}", e.id.short()))?;
    Ok(true)
}
