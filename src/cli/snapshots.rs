//! `cairn snapshots`: the repository's snapshots, as a table or as restic's JSON.

use super::common::{self, RepoArgs};
use super::output;
use super::stdout::{out, outln};
use anyhow::Result;
use tokio::runtime::Runtime;

/// `cairn snapshots` (it takes no arguments of its own).
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, json: bool) -> Result<i32> {
    let repo = common::open(rt, args)?;
    let list = rt.block_on(repo.list_snapshots())?;
    if json {
        let arr: Vec<_> = list
            .iter()
            .map(|e| output::snapshot_json(&e.id, &e.snapshot))
            .collect();
        outln!("{}", serde_json::Value::Array(arr))?;
    } else {
        out!("{}", output::snapshot_table(&list))?;
    }
    Ok(0)
}
