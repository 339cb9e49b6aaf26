//! cairn: an encrypted, deduplicating backup tool for S3-compatible buckets and local
//! directories.
//!
//! Pipeline (backup): [`backup`] walks the sources, [`chunker`] splits changed files,
//! [`crypto`] names and seals blobs, [`pack`] and [`packer`] group them into packs, and a
//! [`backend::Backend`] stores them; [`repo`] owns the stored object types in [`format`].
//! Restore runs the other way through [`restore`]. `docs/FORMAT.md` specifies the layout.

pub mod backend;
pub mod backup;
pub mod blob_writer;
pub mod bufset;
pub mod cache;
pub mod changes;
pub mod check;
pub mod chunker;
pub mod compression;
pub mod copy;
pub mod crypto;
pub mod daemon;
pub mod diff;
pub mod dump;
pub mod error;
pub mod exclude;
pub mod external;
pub mod files_from;
pub mod find;
pub mod format;
pub mod fsmeta;
pub mod hash;
pub mod heal;
pub mod host;
pub mod human;
pub mod index;
pub mod limits;
pub mod ls;
pub mod notify;
pub mod pack;
pub mod packer;
pub mod password_command;
pub mod progress;
pub mod prune;
pub mod read_plan;
pub mod referenced;
pub mod repo;
pub mod restore;
pub mod retention;
pub mod rewrite;
pub mod scan;
pub mod secret;
pub mod stats;
pub mod tree_loader;
pub mod tree_rewrite;
pub mod verify;
pub mod warm;

pub use error::{Error, Result};
