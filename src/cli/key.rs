//! `cairn key list|add|remove|passwd`: the passphrases that open the repository. Each
//! passphrase wraps the same master keys in a key object of its own, so adding or
//! removing one never rewrites data.

use super::common::{self, RepoArgs};
use super::password;
use super::stdout::outln;
use anyhow::{Result, bail};
use cairn::crypto::KdfParams;
use std::path::{Path, PathBuf};
use tokio::runtime::Runtime;

/// `cairn key` arguments: which key action.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyArgs {
    /// Where the repository is and how to open it.
    #[command(flatten)]
    pub(crate) repo: super::RepoArgs,
    #[command(subcommand)]
    action: KeyCommand,
}

#[derive(Debug, clap::Subcommand)]
enum KeyCommand {
    /// List keys; `*` marks the one in use.
    List,
    /// Add a key for another passphrase.
    Add {
        /// File holding the new passphrase.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
    /// Remove a key (not the one in use).
    Remove {
        /// Key id or unique prefix.
        id: String,
    },
    /// Change the passphrase of the key in use.
    Passwd {
        /// File holding the new passphrase.
        #[arg(long)]
        new_password_file: Option<PathBuf>,
    },
}

/// `cairn key ...`: the chosen action on the repository the global options name.
pub(crate) fn run(rt: &Runtime, args: &RepoArgs, k: &KeyArgs, json: bool) -> Result<i32> {
    match &k.action {
        KeyCommand::List => list(rt, args, json),
        KeyCommand::Add { new_password_file } => add(rt, args, new_password_file.as_deref(), json),
        KeyCommand::Remove { id } => remove(rt, args, id, json),
        KeyCommand::Passwd { new_password_file } => {
            passwd(rt, args, new_password_file.as_deref(), json)
        }
    }
}

/// `cairn key list`.
fn list(rt: &Runtime, args: &RepoArgs, json: bool) -> Result<i32> {
    let repo = common::open(rt, args)?;
    let keys = rt.block_on(repo.list_keys())?;
    if json {
        let arr: Vec<_> = keys
            .iter()
            .map(|k| {
                serde_json::json!({
                    "id": k.id.to_hex(), "current": k.current, "userName": k.file.username,
                    "hostName": k.file.hostname, "created": k.file.created,
                })
            })
            .collect();
        outln!("{}", serde_json::Value::Array(arr))?;
        return Ok(0);
    }
    outln!(" {:<8}  {:<16}  {:<20}  Created", "ID", "User", "Host")?;
    outln!("{}", "-".repeat(72))?;
    for k in keys {
        outln!(
            "{}{:<8}  {:<16}  {:<20}  {}",
            if k.current { "*" } else { " " },
            k.id.short(),
            k.file.username,
            k.file.hostname,
            super::output::short_time(&k.file.created)
        )?;
    }
    Ok(0)
}

/// The one result line of a key command, as text or JSON.
fn key_done(json: bool, action: &str, id: &str, text: &str) -> Result<()> {
    if json {
        outln!(
            "{}",
            serde_json::json!({"message_type": "summary", "action": action, "key_id": id})
        )?;
    } else {
        outln!("{text} {id}")?;
    }
    Ok(())
}

/// `cairn key add`.
fn add(rt: &Runtime, args: &RepoArgs, new_file: Option<&Path>, json: bool) -> Result<i32> {
    let repo = common::open(rt, args)?;
    let new = password::resolve_new(new_file)?;
    let id = rt.block_on(repo.add_key(&new, KdfParams::DEFAULT, &common::init_options_here()))?;
    key_done(json, "added", &id.to_hex(), "saved new key")?;
    Ok(0)
}

/// `cairn key remove`.
fn remove(rt: &Runtime, args: &RepoArgs, id: &str, json: bool) -> Result<i32> {
    let repo = common::open(rt, args)?;
    let key = rt.block_on(repo.find_key(id))?;
    rt.block_on(repo.remove_key(key))?;
    key_done(json, "removed", &key.to_hex(), "removed key")?;
    Ok(0)
}

/// `cairn key passwd`.
fn passwd(rt: &Runtime, args: &RepoArgs, new_file: Option<&Path>, json: bool) -> Result<i32> {
    let mut repo = common::open(rt, args)?;
    let new = password::resolve_new(new_file)?;
    if new.is_empty() {
        bail!("the new passphrase is empty");
    }
    let id = rt.block_on(repo.change_passphrase(
        &new,
        KdfParams::DEFAULT,
        &common::init_options_here(),
    ))?;
    key_done(json, "changed", &id.to_hex(), "changed passphrase; new key")?;
    Ok(0)
}
