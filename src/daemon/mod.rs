//! The backup daemon: watches the sources and keeps every destination within seconds of
//! them.

pub mod config;
