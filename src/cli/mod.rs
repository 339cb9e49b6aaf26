//! Command implementations for the `cairn` binary: each turns parsed arguments into
//! library calls and prints results. `anyhow` lives only here.

pub mod commands;
pub mod output;
pub mod password;

use std::path::PathBuf;

/// Options every repository command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct RepoArgs {
    /// Repository location: a path or local:PATH.
    #[arg(short = 'r', long = "repo", env = "CAIRN_REPOSITORY", global = true)]
    pub repo: Option<String>,
    /// File whose first line is the passphrase.
    #[arg(long = "password-file", global = true)]
    pub password_file: Option<PathBuf>,
    /// Backend option KEY=VALUE, e.g. -o s3.region=garage (repeatable; see README).
    #[arg(short = 'o', long = "option", global = true)]
    pub options: Vec<String>,
}

impl RepoArgs {
    /// Backend options from the defaults and every `-o`.
    pub fn backend_options(&self) -> anyhow::Result<cairn::backend::BackendOptions> {
        let mut o = cairn::backend::BackendOptions::default();
        o.apply(&self.options).map_err(anyhow::Error::msg)?;
        Ok(o)
    }
}

/// This machine's host name, as recorded in snapshots and keys.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: buf is writable for its whole length; gethostname NUL-terminates within it
    // or truncates, and we stop at the first NUL.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// The invoking user's name, for snapshots and keys.
pub fn username() -> String {
    if let Ok(u) = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")) {
        return u;
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer refers to live, writable memory of the given size; on success
    // `result` points at `pwd`, whose strings live in `buf`.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc == 0 && !result.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: pw_name is a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    format!("uid {uid}")
}

/// Now, as RFC 3339 UTC with nanoseconds, so that `latest` is well defined even for
/// snapshots taken within one second.
pub fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| "1970-01-01T00:00:00Z".into())
}
