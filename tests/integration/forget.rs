//! `forget` thins a series exactly as restic does: the same snapshot times, the same
//! policy, restic (Debian's, which CI installs) run on a repository of its own, and the
//! kept times compared. Then the real removal, and every remaining snapshot restores.

use crate::support;

use std::collections::BTreeSet;
use std::process::Command;
use support::{Env, Kind, restored};

/// Snapshot times over six simulated weeks across a month end: one or two a day, at
/// varying hours, some days skipped.
fn series() -> Vec<String> {
    let mut out = Vec::new();
    let mut day = time::macros::date!(2026 - 01 - 10);
    for n in 0..42u32 {
        if n % 5 != 3 {
            out.push(format!("{day} {:02}:{:02}:00", (n * 5) % 24, (n * 7) % 60));
            if n % 3 == 0 {
                out.push(format!("{day} 23:{:02}:00", (n * 11) % 60));
            }
        }
        day = day.next_day().expect("date");
    }
    out
}

const POLICY: &[&str] = &[
    "--keep-last",
    "3",
    "--keep-daily",
    "7",
    "--keep-weekly",
    "4",
    "--keep-monthly",
    "6",
    "--keep-within",
    "2d",
];

fn kept_times(json: &serde_json::Value) -> BTreeSet<String> {
    json.as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["keep"].as_array().cloned().unwrap_or_default())
        .map(|s| {
            let t = s["time"].as_str().expect("time");
            let parsed =
                time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339)
                    .expect("rfc3339")
                    .to_offset(time::UtcOffset::UTC);
            format!(
                "{} {:02}:{:02}:{:02}",
                parsed.date(),
                parsed.hour(),
                parsed.minute(),
                parsed.second()
            )
        })
        .collect()
}

#[test]
fn forget_thins_a_series_as_restic_does_and_what_remains_restores() {
    let env = Env::init_on(Kind::S3);
    let src = env.path("src");
    std::fs::create_dir_all(&src).expect("mkdir");
    let times = series();
    for (i, t) in times.iter().enumerate() {
        std::fs::write(src.join("counter.txt"), format!("{i}\n")).expect("write");
        let rfc = format!("{}Z", t.replacen(' ', "T", 1));
        env.ok(&["backup", "--time", &rfc, src.to_str().expect("utf8")]);
    }
    let mut args = vec!["forget", "--dry-run", "--json"];
    args.extend_from_slice(POLICY);
    let ours: serde_json::Value = serde_json::from_str(&env.ok(&args)).expect("json");
    let kept = kept_times(&ours);
    assert!(!kept.is_empty() && kept.len() < times.len(), "{kept:?}");
    // Every kept snapshot says why.
    for r in ours[0]["reasons"].as_array().expect("reasons") {
        assert!(!r["matches"].as_array().expect("matches").is_empty());
    }

    if Command::new("restic").arg("version").output().is_ok() {
        let repo = env.path("restic-repo");
        let restic = |args: &[&str]| {
            let out = Command::new("restic")
                .args(args)
                .env("RESTIC_REPOSITORY", &repo)
                .env("RESTIC_PASSWORD", "pw")
                .env("TZ", "UTC")
                .current_dir(env.dir.path())
                .output()
                .expect("restic");
            assert!(
                out.status.success(),
                "restic {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        restic(&["init"]);
        for t in &times {
            restic(&["backup", "-q", "--time", t, "--host", "h", "src"]);
        }
        let mut args = vec!["forget", "--dry-run", "--json", "--no-lock"];
        args.extend_from_slice(POLICY);
        let theirs: serde_json::Value =
            serde_json::from_slice(&restic(&args)).expect("restic json");
        assert_eq!(
            kept,
            kept_times(&theirs),
            "cairn and restic keep different snapshots"
        );
    } else {
        eprintln!("restic is not installed: comparison skipped (CI installs it)");
    }

    // The real thing: exactly the kept snapshots remain, and each restores.
    let mut args = vec!["forget"];
    args.extend_from_slice(POLICY);
    env.ok(&args);
    let left: serde_json::Value =
        serde_json::from_str(&env.ok(&["snapshots", "--json"])).expect("json");
    let left_times: BTreeSet<String> = kept_times(&serde_json::json!([{ "keep": left }]));
    assert_eq!(left_times, kept);
    let oldest = left
        .as_array()
        .expect("array")
        .iter()
        .min_by_key(|s| s["time"].as_str().unwrap_or("").to_string())
        .expect("one");
    let target = env.path("oldest");
    env.ok(&[
        "restore",
        oldest["id"].as_str().expect("id"),
        "--target",
        target.to_str().expect("utf8"),
    ]);
    let n: usize = std::fs::read_to_string(restored(&target, &src).join("counter.txt"))
        .expect("counter")
        .trim()
        .parse()
        .expect("number");
    assert_eq!(
        format!("{} {}", &times[n][..10], &times[n][11..]),
        *left_times.iter().next().expect("first")
    );
    env.restore_latest_and_compare(&src, "latest");

    // Mistakes are named.
    let out = env.run(&["forget"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no policy given"));
    let out = env.run(&["forget", "--keep-daily", "-2"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("-1 for every period"));
}
