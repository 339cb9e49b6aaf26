//! Every integration test, in one binary: each file here is a module (named as the
//! area it covers), and `support` holds what they share. One binary, not one per file,
//! because building forty (each compiling the shared support and the S3 test server
//! again, then linking) took most of CI's time. Run one area with
//! `cargo test --test integration alerts::`.
//!
//! Four tests stay binaries of their own (tests/memory_bound.rs, hostile.rs,
//! hostile_objects.rs, trust.rs): they measure their children's peak memory with
//! wait4, and a child's peak includes the memory of the process that started it at
//! exec time, so they need a small process of their own, not this one.

mod support;

mod alerts;
mod backup_restore;
mod bandwidth;
mod compression;
mod concurrency;
mod config_check;
mod crash_safety;
mod daemon;
mod daemon_destinations;
mod daemon_sources;
mod daemon_status;
mod databases;
mod destinations;
mod destinations_journal;
mod excludes;
mod forget;
mod format_vectors;
mod front_door;
mod help;
mod human_output;
mod layout;
mod object_lock;
mod packaging;
mod password_command;
mod power_loss;
mod prune;
mod readme;
mod repository_errors;
mod restic_verbs;
mod s3_contract;
mod s3_errors;
mod s3_in_flight;
mod s3_requests;
mod secrets;
mod shared_repository;
mod stream_backup;
mod tamper;
mod torture;
mod ux;
